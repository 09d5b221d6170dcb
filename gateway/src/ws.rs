//! The WebSocket gateway: connection identity, calls answered out of order
//! by correlation id, client messages, server messages, hooks.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use jsonlink_rpc::{CallRequest, CallResponse, Identity, Origin, Registry, Transport, code};
use serde_json::{Map, Value};
use tokio::net::ToSocketAddrs;
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::core::{self, ConnGuard, Core, Stream};

/// How long a closing connection waits for the client's close frame
/// before its socket is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// A WebSocket connection as the hooks and [`WsGateway::connections`] see
/// it. The identity's authorization is redacted in `Debug`.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The connection's id (unique within the gateway, never reused).
    pub connection_id: u64,
    /// The identity set by the client, if any.
    pub identity: Option<Identity>,
    /// The client's IP (from `X-Real-IP` only behind a trusted proxy).
    pub ip: IpAddr,
}

type ConnHook = Arc<dyn Fn(&ConnectionInfo) + Send + Sync>;
type MessageHook = Arc<dyn Fn(&ConnectionInfo, &Value) + Send + Sync>;

/// The WebSocket gateway's hooks, called on the connection's own task:
/// keep them short (spawn for longer work); a panicking hook is caught and
/// logged.
#[derive(Clone, Default)]
pub struct WsHooks {
    on_connect: Option<ConnHook>,
    on_disconnect: Option<ConnHook>,
    on_identity_changed: Option<ConnHook>,
    on_client_message: Option<MessageHook>,
}

impl fmt::Debug for WsHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsHooks")
            .field("on_connect", &self.on_connect.is_some())
            .field("on_disconnect", &self.on_disconnect.is_some())
            .field("on_identity_changed", &self.on_identity_changed.is_some())
            .field("on_client_message", &self.on_client_message.is_some())
            .finish()
    }
}

impl WsHooks {
    /// No hooks.
    pub fn new() -> Self {
        Self::default()
    }

    /// A client connected (`onClientConnect`).
    #[must_use]
    pub fn on_client_connect(
        mut self,
        f: impl Fn(&ConnectionInfo) + Send + Sync + 'static,
    ) -> Self {
        self.on_connect = Some(Arc::new(f));
        self
    }

    /// A client disconnected (`onClientDisconnect`).
    #[must_use]
    pub fn on_client_disconnect(
        mut self,
        f: impl Fn(&ConnectionInfo) + Send + Sync + 'static,
    ) -> Self {
        self.on_disconnect = Some(Arc::new(f));
        self
    }

    /// A client set or re-sent its identity
    /// (`onClientConnectionIdentityChanged`).
    #[must_use]
    pub fn on_identity_changed(
        mut self,
        f: impl Fn(&ConnectionInfo) + Send + Sync + 'static,
    ) -> Self {
        self.on_identity_changed = Some(Arc::new(f));
        self
    }

    /// A client sent `{"clientMessage": ...}` (`onClientMessage`); the
    /// second argument is the message.
    #[must_use]
    pub fn on_client_message(
        mut self,
        f: impl Fn(&ConnectionInfo, &Value) + Send + Sync + 'static,
    ) -> Self {
        self.on_client_message = Some(Arc::new(f));
        self
    }
}

fn run_hook(name: &str, f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        tracing::error!(hook = name, "a WebSocket gateway hook panicked");
    }
}

/// Why a server message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No open connection has this id.
    #[error("no open WebSocket connection with this id")]
    NoSuchConnection,
    /// The connection's write queue is over `max_write_queue_bytes`: the
    /// connection is being closed.
    #[error("the connection's write queue is full; it is being closed")]
    QueueFull,
}

/// Counts of what the WebSocket gateway's limits did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WsStats {
    /// Connections closed because their write queue passed
    /// `max_write_queue_bytes` (clients not reading).
    pub queue_full_closes: u64,
    /// Calls answered 429 because their connection had
    /// `max_in_flight_per_connection` calls running.
    pub in_flight_refusals: u64,
}

#[derive(Default)]
struct Counters {
    queue_full_closes: AtomicU64,
    in_flight_refusals: AtomicU64,
}

/// One connection's shared state.
struct Conn {
    stats: Arc<Counters>,
    id: u64,
    ip: IpAddr,
    remote: SocketAddr,
    identity: Mutex<Option<Identity>>,
    out: mpsc::UnboundedSender<Message>,
    queued: AtomicUsize,
    max_queued: usize,
    /// Cancelled to drop the connection at once (and the calls it runs).
    kill: CancellationToken,
    /// Cancelled to close the connection with 1000 ([`WsGateway::disconnect`]).
    close_requested: CancellationToken,
    in_flight: Arc<Semaphore>,
}

impl Conn {
    fn info(&self) -> ConnectionInfo {
        ConnectionInfo {
            connection_id: self.id,
            identity: self.identity().clone(),
            ip: self.ip,
        }
    }

    fn identity(&self) -> std::sync::MutexGuard<'_, Option<Identity>> {
        self.identity.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a message for the writer. Past `max_write_queue_bytes` the
    /// connection is killed: a client that does not read costs no more.
    fn push(&self, msg: Message) -> Result<(), SendError> {
        if self.kill.is_cancelled() {
            return Err(SendError::NoSuchConnection);
        }
        let n = msg.len();
        let before = self.queued.fetch_add(n, Ordering::AcqRel);
        if before + n > self.max_queued {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            tracing::debug!(
                connection = self.id,
                "write queue full: closing the connection"
            );
            self.stats.queue_full_closes.fetch_add(1, Ordering::Relaxed);
            self.kill.cancel();
            return Err(SendError::QueueFull);
        }
        // The writer gone means the connection is closing anyway.
        self.out.send(msg).map_err(|_| SendError::NoSuchConnection)
    }

    fn push_response(&self, resp: &CallResponse) {
        let text = serde_json::to_string(resp).unwrap_or_else(|_| {
            r#"{"code":500,"success":false,"message":"unserializable response"}"#.to_owned()
        });
        let _ = self.push(Message::text(text));
    }
}

struct WsShared {
    stats: Arc<Counters>,
    core: Arc<Core>,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    hooks: WsHooks,
}

impl WsShared {
    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running WebSocket gateway.
///
/// ```no_run
/// # async fn f(registry: jsonlink_rpc::Registry) -> std::io::Result<()> {
/// use jsonlink_gateway::{GatewayConfig, WsGateway, WsHooks};
/// let hooks = WsHooks::new()
///     .on_client_connect(|c| println!("connected: {} from {}", c.connection_id, c.ip))
///     .on_client_message(|c, m| println!("{}: {m}", c.connection_id));
/// let gw = WsGateway::bind("127.0.0.1:9877", registry, GatewayConfig::default(), hooks).await?;
/// for c in gw.connections() {
///     let _ = gw.send_message_to_client(c.connection_id, serde_json::json!({"hello": 1}));
/// }
/// gw.shutdown().await;
/// # Ok(()) }
/// ```
pub struct WsGateway {
    local_addr: SocketAddr,
    shared: Arc<WsShared>,
}

impl fmt::Debug for WsGateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsGateway")
            .field("local_addr", &self.local_addr)
            .field("connections", &self.shared.core.connections())
            .finish_non_exhaustive()
    }
}

impl WsGateway {
    /// Binds `addr` and starts serving WebSocket clients calling `registry`.
    ///
    /// # Errors
    ///
    /// If the address cannot be resolved or bound.
    pub async fn bind(
        addr: impl ToSocketAddrs,
        registry: Registry,
        config: GatewayConfig,
        hooks: WsHooks,
    ) -> io::Result<Self> {
        let addr = crate::http::resolve(addr).await?;
        let tls = core::acceptor(&config, &[b"http/1.1"]);
        let core = Core::new(registry, config);
        let shared = Arc::new(WsShared {
            stats: Arc::default(),
            core: core.clone(),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            hooks,
        });
        let s = shared.clone();
        let local_addr = core::listen(addr, core, tls, move |stream, peer, guard| {
            serve(s.clone(), stream, peer, guard)
        })
        .await?;
        Ok(Self { local_addr, shared })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Pushes `{"serverMessage": message}` to the connection `connection_id`
    /// (`sendMessageToClient`).
    ///
    /// # Errors
    ///
    /// [`SendError::NoSuchConnection`] if it is not open,
    /// [`SendError::QueueFull`] if its client is not reading (it is then
    /// closed).
    pub fn send_message_to_client(
        &self,
        connection_id: u64,
        message: Value,
    ) -> Result<(), SendError> {
        let conn = self
            .shared
            .conns()
            .get(&connection_id)
            .cloned()
            .ok_or(SendError::NoSuchConnection)?;
        let mut m = Map::new();
        m.insert("serverMessage".into(), message);
        conn.push(Message::text(Value::Object(m).to_string()))
    }

    /// Closes the connection `connection_id` (close code 1000, "closed by
    /// the server"); its calls in flight are dropped. Returns whether it
    /// was open.
    pub fn disconnect(&self, connection_id: u64) -> bool {
        let Some(conn) = self.shared.conns().get(&connection_id).cloned() else {
            return false;
        };
        conn.close_requested.cancel();
        true
    }

    /// The open connections (those past the WebSocket handshake) with their
    /// identity and IP, in connection-id order.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let mut v: Vec<ConnectionInfo> = self.shared.conns().values().map(|c| c.info()).collect();
        v.sort_by_key(|c| c.connection_id);
        v
    }

    /// What the limits did so far.
    pub fn stats(&self) -> WsStats {
        let c = &self.shared.stats;
        WsStats {
            queue_full_closes: c.queue_full_closes.load(Ordering::Relaxed),
            in_flight_refusals: c.in_flight_refusals.load(Ordering::Relaxed),
        }
    }

    /// Graceful shutdown: stops accepting and reading new frames, lets the
    /// calls in flight finish and be answered within
    /// `Limits::shutdown_grace`, closes every connection with 1001 (going
    /// away), then drops whatever is left. Returns when every task ended.
    pub async fn shutdown(self) {
        self.shared.core.shutdown().await;
    }
}

impl Drop for WsGateway {
    fn drop(&mut self) {
        self.shared.core.shutdown.cancel();
        self.shared.core.force.cancel();
    }
}

async fn serve(shared: Arc<WsShared>, stream: Stream, peer: SocketAddr, guard: ConnGuard) {
    let core = shared.core.clone();
    let limits = &core.config.limits;
    let mut ws_config = WebSocketConfig::default();
    ws_config.max_message_size = Some(limits.max_frame_bytes);
    ws_config.max_frame_size = Some(limits.max_frame_bytes);
    // tungstenite holds at most this plus one frame; our queue bounds the
    // rest (`max_write_queue_bytes`).
    ws_config.write_buffer_size = 16 << 10;
    ws_config.max_write_buffer_size = usize::MAX;
    ws_config.read_buffer_size = 8 << 10;
    let mut real_ip: Option<String> = None;
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        real_ip = req
            .headers()
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(resp)
    };
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config));
    let ws = match tokio::time::timeout(limits.header_timeout, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "WebSocket handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "WebSocket handshake timed out");
            return;
        }
    };
    let ip = core.config.client_ip(peer.ip(), real_ip.as_deref());
    let remote = if ip == peer.ip() {
        peer
    } else {
        SocketAddr::new(ip, 0)
    };
    let (sink, stream) = ws.split();
    let (tx, rx) = mpsc::unbounded_channel();
    let conn = Arc::new(Conn {
        stats: shared.stats.clone(),
        id: shared.next_id.fetch_add(1, Ordering::Relaxed),
        ip,
        remote,
        identity: Mutex::new(None),
        out: tx,
        queued: AtomicUsize::new(0),
        max_queued: limits.max_write_queue_bytes,
        kill: core.force.child_token(),
        close_requested: CancellationToken::new(),
        in_flight: Arc::new(Semaphore::new(limits.max_in_flight_per_connection)),
    });
    shared.conns().insert(conn.id, conn.clone());
    if let Some(h) = &shared.hooks.on_connect {
        run_hook("on_client_connect", || h(&conn.info()));
    }
    let writer = core.tasks.spawn(write_loop(sink, rx, conn.clone()));
    read_loop(&shared, &conn, stream).await;
    // Let the writer send what is queued (the close frame last), bounded.
    if tokio::time::timeout(CLOSE_LINGER, writer).await.is_err() {
        tracing::debug!(connection = conn.id, "writer did not finish: dropping");
    }
    conn.kill.cancel();
    shared.conns().remove(&conn.id);
    // The connection's slots are free before the hook says it is gone.
    drop(guard);
    if let Some(h) = &shared.hooks.on_disconnect {
        run_hook("on_client_disconnect", || h(&conn.info()));
    }
}

async fn write_loop(
    mut sink: SplitSink<WebSocketStream<Stream>, Message>,
    mut rx: mpsc::UnboundedReceiver<Message>,
    conn: Arc<Conn>,
) {
    loop {
        let msg = tokio::select! {
            () = conn.kill.cancelled() => return,
            m = rx.recv() => m,
        };
        let Some(msg) = msg else { return };
        let n = msg.len();
        let is_close = matches!(msg, Message::Close(_));
        // Batch: flush only when nothing else is queued.
        let written = tokio::select! {
            () = conn.kill.cancelled() => return,
            r = async {
                sink.feed(msg).await?;
                if rx.is_empty() { sink.flush().await } else { Ok(()) }
            } => r,
        };
        conn.queued.fetch_sub(n, Ordering::AcqRel);
        if written.is_err() || is_close {
            let _ = tokio::time::timeout(CLOSE_LINGER, sink.flush()).await;
            return;
        }
    }
}

/// How the read loop ends.
enum End {
    /// The client closed or the socket failed: nothing more to send.
    Gone,
    /// We close with this code and reason (after the calls in flight when
    /// shutting down).
    Close(CloseCode, &'static str),
}

async fn read_loop(
    shared: &Arc<WsShared>,
    conn: &Arc<Conn>,
    mut stream: SplitStream<WebSocketStream<Stream>>,
) {
    let core = &shared.core;
    let end = loop {
        let next = tokio::select! {
            () = conn.kill.cancelled() => break End::Gone,
            () = core.shutdown.cancelled() => break End::Close(CloseCode::Away, "server shutting down"),
            () = conn.close_requested.cancelled() => break End::Close(CloseCode::Normal, "closed by the server"),
            n = stream.next() => n,
        };
        let msg = match next {
            None => break End::Gone,
            Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(e))) => {
                tracing::debug!(connection = conn.id, error = %e, "frame over max_frame_bytes");
                break End::Close(CloseCode::Size, "message larger than the frame limit");
            }
            Some(Err(e)) => {
                tracing::debug!(connection = conn.id, error = %e, "WebSocket read failed");
                break End::Gone;
            }
            Some(Ok(m)) => m,
        };
        match msg {
            Message::Text(t) => {
                if let Some(end) = on_text(shared, conn, t.as_str()) {
                    break end;
                }
            }
            Message::Binary(_) => conn.push_response(&CallResponse::error(
                code::BAD_REQUEST,
                "binary frames are not supported: send CallRequests as text frames",
            )),
            Message::Close(_) => break End::Gone,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    };
    let End::Close(close_code, reason) = end else {
        conn.kill.cancel();
        return;
    };
    if close_code == CloseCode::Away {
        // Graceful shutdown: the calls in flight are answered first.
        let all =
            u32::try_from(core.config.limits.max_in_flight_per_connection).unwrap_or(u32::MAX);
        tokio::select! {
            () = conn.kill.cancelled() => return,
            _ = conn.in_flight.acquire_many(all) => {}
        }
    }
    let _ = conn.push(Message::Close(Some(CloseFrame {
        code: close_code,
        reason: reason.into(),
    })));
    // Wait (bounded) for the client's close frame so it reads everything
    // we sent before the socket goes.
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(m)) = stream.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Handles one text frame; `Some` ends the connection.
fn on_text(shared: &Arc<WsShared>, conn: &Arc<Conn>, text: &str) -> Option<End> {
    let core = &shared.core;
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            conn.push_response(&CallResponse::error(
                code::BAD_REQUEST,
                format!("frame is not JSON: {e}"),
            ));
            return None;
        }
    };
    let Value::Object(mut map) = value else {
        conn.push_response(&CallResponse::error(
            code::BAD_REQUEST,
            "a frame must be a JSON object",
        ));
        return None;
    };
    if !map.contains_key("procedure") {
        if let Some(message) = map.remove("clientMessage") {
            if let Some(h) = &shared.hooks.on_client_message {
                run_hook("on_client_message", || h(&conn.info(), &message));
            }
            return None;
        }
        if map.contains_key("identity")
            && map.keys().all(|k| k == "identity" || k == "correlationId")
        {
            return set_identity(shared, conn, map);
        }
    }
    let mut req = match CallRequest::from_value(Value::Object(map), &core.config.limits.parse) {
        Ok(r) => r,
        Err(resp) => {
            conn.push_response(&resp);
            return None;
        }
    };
    if req.identity.is_none() {
        req.identity.clone_from(&conn.identity());
    }
    let Ok(permit) = conn.in_flight.clone().try_acquire_owned() else {
        conn.stats
            .in_flight_refusals
            .fetch_add(1, Ordering::Relaxed);
        conn.push_response(
            &CallResponse::error(
                code::TOO_MANY_REQUESTS,
                format!(
                    "too many calls in flight on this connection (limit {})",
                    core.config.limits.max_in_flight_per_connection
                ),
            )
            .with_correlation_id(req.correlation_id),
        );
        return None;
    };
    let origin = Origin {
        transport: Transport::WebSocket,
        remote_addr: Some(conn.remote),
        connection_id: Some(conn.id),
        peer: None,
        deadline: None,
    };
    // A call that completes at its first poll (most do: no I/O) is
    // answered here, without the cost of a task; the others get one. A
    // task's first poll comes right after the spawn, so the wakers that
    // the no-op poll registered are replaced at once.
    let mut call = Box::pin(core.call(req, origin, conn.ip));
    if let Some(resp) = (&mut call).now_or_never() {
        conn.push_response(&resp);
        return None;
    }
    let c = conn.clone();
    core.tasks.spawn(async move {
        tokio::select! {
            () = c.kill.cancelled() => {}
            resp = call => c.push_response(&resp),
        }
        drop(permit);
    });
    None
}

fn set_identity(
    shared: &Arc<WsShared>,
    conn: &Arc<Conn>,
    mut map: Map<String, Value>,
) -> Option<End> {
    let cid = map.remove("correlationId");
    let identity = match Identity::from_value(map.remove("identity").unwrap_or(Value::Null)) {
        Ok(i) => i,
        Err(message) => {
            conn.push_response(
                &CallResponse::error(code::BAD_REQUEST, message).with_correlation_id(cid),
            );
            return None;
        }
    };
    {
        let mut current = conn.identity();
        if let Some(old) = current.as_ref()
            && old.authorization != identity.authorization
        {
            drop(current);
            conn.push_response(
                &CallResponse::error(
                    code::BAD_REQUEST,
                    "identity authorization differs from the one set on this connection: closing",
                )
                .with_correlation_id(cid),
            );
            return Some(End::Close(CloseCode::Policy, "identity changed"));
        }
        *current = Some(identity);
    }
    let mut ok = CallResponse::ok(Value::Null).with_correlation_id(cid);
    ok.data = None;
    conn.push_response(&ok);
    if let Some(h) = &shared.hooks.on_identity_changed {
        run_hook("on_identity_changed", || h(&conn.info()));
    }
    None
}
