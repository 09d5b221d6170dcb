//! The HTTP and WebSocket transports of the procedure layer's client
//! ([`jsonlink_rpc::client::RpcClient`]), feature `client`.
//!
//! When they fall back (the [`RpcTransport`] contract): a transport reports
//! [`TransportError::Unavailable`] only when the call was certainly not
//! sent — the TCP connection, TLS handshake or WebSocket upgrade failed
//! (or, for HTTP, the request could not be written on a fresh
//! connection). Everything after the call was sent (the connection lost
//! before the answer, the answer not a CallResponse, the timeout) is
//! [`TransportError::Failed`] and never retried.
//!
//! Streams: the @therms wire has none, so both transports keep the trait's
//! default `stream` (unavailable: `RpcClient::stream` goes on to a
//! transport that streams, such as the jsonlink link).
//!
//! Identity: [`HttpTransport`] sends it with every call (HTTP is
//! stateless); [`WsTransport`] sends it once per connection, first thing
//! after connecting, and again after every reconnect.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Uri;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonlink_rpc::client::{RpcTransport, TransportError};
use jsonlink_rpc::{BoxFuture, CallRequest, CallResponse, Identity};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::either::Either;

/// Largest answer a transport accepts, by default (1 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1 << 20;
/// A call's timeout, by default (30 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a transport could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    /// The URL does not parse or has no host.
    #[error("bad URL {0:?}: {1}")]
    Url(String, String),
    /// `https`/`wss` without a TLS configuration.
    #[error("{0} needs a TLS configuration (with_tls)")]
    NoTls(String),
}

/// The HTTP transport: one POST per call, the identity in every body.
/// HTTP/1.1 keep-alive, or HTTP/2 (`http2_only`, prior knowledge over
/// plain TCP, ALPN over TLS).
pub struct HttpTransport {
    uri: Uri,
    client: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    identity: Mutex<Option<Identity>>,
    timeout: Duration,
    max_response_bytes: usize,
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport")
            .field("uri", &self.uri)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Options of an [`HttpTransport`] or a [`WsTransport`].
#[derive(Clone, Default)]
pub struct TransportOptions {
    /// TLS for `https`/`wss` URLs (rustls with ring); required for them.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// HTTP only: speak HTTP/2 only.
    pub http2_only: bool,
    /// A call's timeout (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Option<Duration>,
    /// Largest answer accepted (default [`DEFAULT_MAX_RESPONSE_BYTES`]).
    pub max_response_bytes: Option<usize>,
}

impl fmt::Debug for TransportOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportOptions")
            .field("tls", &self.tls.is_some())
            .field("http2_only", &self.http2_only)
            .field("timeout", &self.timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

fn parse_uri(url: &str, secure: &str) -> Result<(Uri, bool), ClientConfigError> {
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| ClientConfigError::Url(url.into(), e.to_string()))?;
    if uri.host().is_none() {
        return Err(ClientConfigError::Url(url.into(), "no host".into()));
    }
    let tls = uri.scheme_str() == Some(secure);
    Ok((uri, tls))
}

impl HttpTransport {
    /// A transport posting calls to `url` (`http://host:port/path` or
    /// `https://...`).
    ///
    /// # Errors
    ///
    /// A bad URL, or `https` without [`TransportOptions::tls`].
    pub fn new(url: &str, options: TransportOptions) -> Result<Self, ClientConfigError> {
        let (uri, tls) = parse_uri(url, "https")?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let connector = match (&options.tls, tls) {
            (Some(cfg), _) => {
                let b = builder.with_tls_config((**cfg).clone()).https_or_http();
                if options.http2_only {
                    b.enable_http2().wrap_connector(http)
                } else {
                    b.enable_all_versions().wrap_connector(http)
                }
            }
            (None, true) => return Err(ClientConfigError::NoTls(url.into())),
            (None, false) => {
                // Plain HTTP only: a TLS config that is never used.
                let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| ClientConfigError::Url(url.into(), e.to_string()))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
                builder
                    .with_tls_config(cfg)
                    .https_or_http()
                    .enable_all_versions()
                    .wrap_connector(http)
            }
        };
        let mut b = HyperClient::builder(TokioExecutor::new());
        b.http2_only(options.http2_only);
        Ok(Self {
            uri,
            client: b.build(connector),
            identity: Mutex::new(None),
            timeout: options.timeout.unwrap_or(DEFAULT_TIMEOUT),
            max_response_bytes: options
                .max_response_bytes
                .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES),
        })
    }

    async fn send(&self, mut req: CallRequest) -> Result<CallResponse, TransportError> {
        if req.identity.is_none() {
            req.identity.clone_from(&lock(&self.identity));
        }
        let body = serde_json::to_vec(&req)
            .map_err(|e| TransportError::Failed(format!("does not serialize: {e}")))?;
        let request = http::Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| TransportError::Failed(e.to_string()))?;
        let exchange = async {
            let resp = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    TransportError::Unavailable(format!("connect: {e}"))
                } else {
                    TransportError::Failed(format!("HTTP: {e}"))
                }
            })?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), self.max_response_bytes)
                .collect()
                .await
                .map_err(|e| TransportError::Failed(format!("reading the answer: {e}")))?
                .to_bytes();
            serde_json::from_slice::<CallResponse>(&bytes).map_err(|e| {
                TransportError::Failed(format!("HTTP {status}: not a CallResponse: {e}"))
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| TransportError::Failed("timed out".into()))?
    }
}

impl RpcTransport for HttpTransport {
    fn name(&self) -> &str {
        "http"
    }

    fn set_identity(&self, identity: Option<Identity>) {
        *lock(&self.identity) = identity;
    }

    fn call(&self, req: CallRequest) -> BoxFuture<'_, Result<CallResponse, TransportError>> {
        Box::pin(self.send(req))
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<CallResponse>>>>;

/// One open WebSocket connection of a [`WsTransport`].
struct WsConn {
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    /// Dropped (closing the reader's receiver) when the connection ends.
    alive: Arc<tokio::sync::Notify>,
    closed: Arc<std::sync::atomic::AtomicBool>,
    /// Becomes `true` when the reader saw the connection end.
    ended: tokio::sync::watch::Receiver<bool>,
    /// The identity this connection set (at connect or re-sent since).
    sent: Option<Identity>,
}

/// The WebSocket transport: one connection, opened on the first call and
/// again on the first call after it was lost; the identity is sent first
/// on every new connection. Calls are correlated by a `correlationId` of
/// its own (the caller's is restored in the answer). Server messages
/// (`{"serverMessage": ...}`) are delivered to [`WsTransport::server_messages`].
pub struct WsTransport {
    uri: Uri,
    tls: Option<TlsConnector>,
    timeout: Duration,
    max_response_bytes: usize,
    identity: Mutex<Option<Identity>>,
    conn: tokio::sync::Mutex<Option<WsConn>>,
    next_id: AtomicU64,
    connects: AtomicU64,
    server_tx: mpsc::UnboundedSender<Value>,
    server_rx: Mutex<Option<mpsc::UnboundedReceiver<Value>>>,
}

impl fmt::Debug for WsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsTransport")
            .field("uri", &self.uri)
            .field("connects", &self.connects.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl WsTransport {
    /// A transport to `url` (`ws://host:port/` or `wss://...`); it connects
    /// on the first call.
    ///
    /// # Errors
    ///
    /// A bad URL, or `wss` without [`TransportOptions::tls`].
    pub fn new(url: &str, options: TransportOptions) -> Result<Self, ClientConfigError> {
        let (uri, tls) = parse_uri(url, "wss")?;
        let tls = match (tls, &options.tls) {
            (false, _) => None,
            (true, Some(cfg)) => Some(TlsConnector::from(cfg.clone())),
            (true, None) => return Err(ClientConfigError::NoTls(url.into())),
        };
        let (server_tx, server_rx) = mpsc::unbounded_channel();
        Ok(Self {
            uri,
            tls,
            timeout: options.timeout.unwrap_or(DEFAULT_TIMEOUT),
            max_response_bytes: options
                .max_response_bytes
                .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES),
            identity: Mutex::new(None),
            conn: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
            connects: AtomicU64::new(0),
            server_tx,
            server_rx: Mutex::new(Some(server_rx)),
        })
    }

    /// The server messages received, in order (once; `None` after the
    /// first call).
    pub fn server_messages(&self) -> Option<mpsc::UnboundedReceiver<Value>> {
        lock(&self.server_rx).take()
    }

    /// Whether a connection is open now.
    pub async fn is_connected(&self) -> bool {
        self.conn
            .lock()
            .await
            .as_ref()
            .is_some_and(|c| !c.closed.load(Ordering::Acquire))
    }

    /// Waits until the current connection (if any) has ended, e.g. closed
    /// by the server; the next call then connects afresh.
    pub async fn disconnected(&self) {
        let ended = self.conn.lock().await.as_ref().map(|c| c.ended.clone());
        if let Some(mut ended) = ended {
            let _ = ended.wait_for(|e| *e).await;
        }
    }

    /// How many connections it has opened so far.
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// Sends `{"clientMessage": message}` on the current connection
    /// (connecting first if there is none); no answer comes.
    ///
    /// # Errors
    ///
    /// Unavailable when it cannot connect.
    pub async fn send_client_message(&self, message: Value) -> Result<(), TransportError> {
        let (out, _) = self.connection().await?;
        let mut m = serde_json::Map::new();
        m.insert("clientMessage".into(), message);
        out.send(Message::text(Value::Object(m).to_string()))
            .map_err(|_| TransportError::Unavailable("connection closed".into()))
    }

    /// The current connection's sender and pending table, connecting (and
    /// sending the identity) if there is none.
    async fn connection(
        &self,
    ) -> Result<(mpsc::UnboundedSender<Message>, Pending), TransportError> {
        let mut guard = self.conn.lock().await;
        let wanted = lock(&self.identity).clone();
        if let Some(c) = guard.as_mut()
            && !c.closed.load(Ordering::Acquire)
        {
            if c.sent == wanted {
                return Ok((c.out.clone(), c.pending.clone()));
            }
            // The identity changed since this connection set its own: the
            // gateway takes a first one or the same authorization again
            // (sent before the call, so it applies to it); a different
            // authorization needs a new connection.
            let same_credential = match (&c.sent, &wanted) {
                (None, _) => true,
                (Some(a), Some(b)) => a.authorization == b.authorization,
                (Some(_), None) => false,
            };
            if same_credential && let Some(identity) = &wanted {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let frame = serde_json::json!({"identity": identity, "correlationId": id});
                if c.out.send(Message::text(frame.to_string())).is_ok() {
                    c.sent.clone_from(&wanted);
                    return Ok((c.out.clone(), c.pending.clone()));
                }
            }
            c.closed.store(true, Ordering::Release);
            c.alive.notify_one();
        }
        *guard = None;
        let c = self.connect(wanted).await?;
        let r = (c.out.clone(), c.pending.clone());
        *guard = Some(c);
        Ok(r)
    }

    async fn connect(&self, identity: Option<Identity>) -> Result<WsConn, TransportError> {
        let unavailable =
            |what: &str, e: &dyn fmt::Display| TransportError::Unavailable(format!("{what}: {e}"));
        let host = self
            .uri
            .host()
            .unwrap_or("localhost")
            .trim_matches(['[', ']']);
        let port = self
            .uri
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let connect = async {
            let tcp = TcpStream::connect((host, port))
                .await
                .map_err(|e| unavailable("connect", &e))?;
            let _ = tcp.set_nodelay(true);
            let stream = match &self.tls {
                None => Either::Left(tcp),
                Some(tls) => {
                    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                        .map_err(|e| unavailable("server name", &e))?;
                    Either::Right(
                        tls.connect(name, tcp)
                            .await
                            .map_err(|e| unavailable("TLS", &e))?,
                    )
                }
            };
            let mut cfg = WebSocketConfig::default();
            cfg.max_message_size = Some(self.max_response_bytes);
            cfg.max_frame_size = Some(self.max_response_bytes);
            let (ws, _) = tokio_tungstenite::client_async_with_config(
                self.uri.to_string(),
                stream,
                Some(cfg),
            )
            .await
            .map_err(|e| unavailable("WebSocket upgrade", &e))?;
            Ok::<_, TransportError>(ws)
        };
        let ws = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| TransportError::Unavailable("connect timed out".into()))??;
        self.connects.fetch_add(1, Ordering::Relaxed);
        let (mut sink, mut stream) = ws.split();
        let (out, mut rx) = mpsc::unbounded_channel::<Message>();
        let pending: Pending = Arc::default();
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let alive = Arc::new(tokio::sync::Notify::new());
        // The identity goes first on every new connection.
        let sent = identity.clone();
        let identity_id = identity
            .as_ref()
            .map(|_| self.next_id.fetch_add(1, Ordering::Relaxed));
        let identity_answer = identity_id.map(|id| {
            let (tx, rx) = oneshot::channel();
            lock(&pending).insert(id, tx);
            rx
        });
        if let (Some(identity), Some(id)) = (identity, identity_id) {
            let frame = serde_json::json!({"identity": identity, "correlationId": id});
            let _ = out.send(Message::text(frame.to_string()));
        }
        let writer_closed = closed.clone();
        let writer_alive = alive.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    () = writer_alive.notified() => break,
                    m = rx.recv() => m,
                };
                let Some(msg) = msg else { break };
                if sink.send(msg).await.is_err() {
                    break;
                }
            }
            writer_closed.store(true, Ordering::Release);
            let _ = sink.close().await;
        });
        let (ended_tx, ended) = tokio::sync::watch::channel(false);
        let reader_pending = pending.clone();
        let reader_closed = closed.clone();
        let reader_alive = alive.clone();
        let server_tx = self.server_tx.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(t) = msg else { continue };
                let Ok(Value::Object(mut m)) = serde_json::from_str::<Value>(t.as_str()) else {
                    continue;
                };
                if let Some(sm) = m.remove("serverMessage") {
                    let _ = server_tx.send(sm);
                    continue;
                }
                let id = m.get("correlationId").and_then(Value::as_u64);
                let Ok(resp) = serde_json::from_value::<CallResponse>(Value::Object(m)) else {
                    continue;
                };
                if let Some(tx) = id.and_then(|id| lock(&reader_pending).remove(&id)) {
                    let _ = tx.send(resp);
                }
            }
            reader_closed.store(true, Ordering::Release);
            reader_alive.notify_one();
            // Calls still waiting fail now (their senders dropped).
            lock(&reader_pending).clear();
            let _ = ended_tx.send(true);
        });
        if let Some(answer) = identity_answer {
            let resp = tokio::time::timeout(self.timeout, answer)
                .await
                .map_err(|_| TransportError::Unavailable("identity not answered in time".into()))?
                .map_err(|_| {
                    TransportError::Unavailable("connection lost while setting the identity".into())
                })?;
            if !resp.success {
                return Err(TransportError::Failed(format!(
                    "identity refused: {}",
                    resp.message.unwrap_or_default()
                )));
            }
        }
        Ok(WsConn {
            out,
            pending,
            alive,
            closed,
            ended,
            sent,
        })
    }

    async fn send(&self, mut req: CallRequest) -> Result<CallResponse, TransportError> {
        let (out, pending) = self.connection().await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let theirs = req.correlation_id.replace(Value::from(id));
        let (tx, rx) = oneshot::channel();
        lock(&pending).insert(id, tx);
        let text = serde_json::to_string(&req)
            .map_err(|e| TransportError::Failed(format!("does not serialize: {e}")))?;
        if out.send(Message::text(text)).is_err() {
            lock(&pending).remove(&id);
            return Err(TransportError::Unavailable(
                "connection closed before sending".into(),
            ));
        }
        let answer = tokio::time::timeout(self.timeout, rx).await;
        lock(&pending).remove(&id);
        let mut resp = answer
            .map_err(|_| TransportError::Failed("timed out".into()))?
            .map_err(|_| TransportError::Failed("connection lost before the answer".into()))?;
        resp.correlation_id = theirs;
        Ok(resp)
    }
}

impl Drop for WsTransport {
    fn drop(&mut self) {
        if let Some(c) = self.conn.get_mut().take() {
            c.alive.notify_one();
        }
    }
}

impl RpcTransport for WsTransport {
    fn name(&self) -> &str {
        "ws"
    }

    /// Stores the identity; the next call applies it before it is sent: on
    /// the open connection when the gateway accepts it there (no identity
    /// yet, or the same authorization: device name and metadata replaced),
    /// else (a different authorization, which the gateway would answer 400
    /// and close) on a new connection.
    fn set_identity(&self, identity: Option<Identity>) {
        *lock(&self.identity) = identity;
    }

    fn call(&self, req: CallRequest) -> BoxFuture<'_, Result<CallResponse, TransportError>> {
        Box::pin(self.send(req))
    }
}
