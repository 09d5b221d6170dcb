//! The HTTP gateway: any path and method, the body a CallRequest, the
//! outcome in the CallResponse body's `code` (HTTP status 200).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use jsonlink_rpc::{CallRequest, CallResponse, Origin, Registry, Transport};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::ToSocketAddrs;
use tower::ServiceExt;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::{Cors, GatewayConfig};
use crate::core::{self, ConnGuard, Core, Stream};

/// The HTTP status and CallResponse code of a body over `max_body_bytes`.
pub const PAYLOAD_TOO_LARGE: u16 = 413;
/// The HTTP status and CallResponse code of a body not received within
/// `body_timeout`.
pub const REQUEST_TIMEOUT: u16 = 408;

/// A running HTTP gateway (HTTP/1.1 and HTTP/2, plain or TLS).
///
/// ```no_run
/// # async fn f(registry: jsonlink_rpc::Registry) -> std::io::Result<()> {
/// use jsonlink_gateway::{GatewayConfig, HttpGateway};
/// let gw = HttpGateway::bind("127.0.0.1:9876", registry, GatewayConfig::default()).await?;
/// println!("POST http://{}/ with a CallRequest", gw.local_addr());
/// gw.shutdown().await;
/// # Ok(()) }
/// ```
pub struct HttpGateway {
    local_addr: SocketAddr,
    core: Arc<Core>,
}

impl std::fmt::Debug for HttpGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpGateway")
            .field("local_addr", &self.local_addr)
            .field("connections", &self.core.connections())
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
struct Peer(SocketAddr);

impl HttpGateway {
    /// Binds `addr` and starts serving calls to `registry`.
    ///
    /// # Errors
    ///
    /// If the address cannot be resolved or bound.
    pub async fn bind(
        addr: impl ToSocketAddrs,
        registry: Registry,
        config: GatewayConfig,
    ) -> io::Result<Self> {
        let addr = resolve(addr).await?;
        let tls = core::acceptor(&config, &[b"h2", b"http/1.1"]);
        let core = Core::new(registry, config);
        let router = router(core.clone());
        let mut builder = auto::Builder::new(TokioExecutor::new());
        let limits = &core.config.limits;
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(
                u32::try_from(limits.max_in_flight_per_connection).unwrap_or(u32::MAX),
            )
            .max_header_list_size(64 << 10);
        let builder = Arc::new(builder);
        let c = core.clone();
        let local_addr = core::listen(addr, core.clone(), tls, move |stream, peer, guard| {
            serve_connection(
                c.clone(),
                builder.clone(),
                router.clone(),
                stream,
                peer,
                guard,
            )
        })
        .await?;
        Ok(Self { local_addr, core })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.core.connections()
    }

    /// Graceful shutdown: stops accepting, lets the calls in flight finish
    /// within `Limits::shutdown_grace`, closes idle keep-alive connections,
    /// then drops whatever is left. Returns when every task has ended.
    pub async fn shutdown(self) {
        self.core.shutdown().await;
    }
}

impl Drop for HttpGateway {
    fn drop(&mut self) {
        self.core.shutdown.cancel();
        self.core.force.cancel();
    }
}

pub(crate) async fn resolve(addr: impl ToSocketAddrs) -> io::Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to bind"))
}

fn router(core: Arc<Core>) -> Router {
    let cors = core.config.cors.clone();
    let router = Router::new().fallback(handle).with_state(core);
    match cors {
        None => router,
        Some(cors) => {
            let origin = match cors {
                Cors::AnyOrigin => AllowOrigin::any(),
                Cors::Origins(list) => AllowOrigin::list(
                    list.iter()
                        .filter_map(|o| HeaderValue::from_str(o).ok())
                        .collect::<Vec<_>>(),
                ),
            };
            router.layer(
                CorsLayer::new()
                    .allow_origin(origin)
                    .allow_methods(tower_http::cors::Any)
                    .allow_headers([header::CONTENT_TYPE]),
            )
        }
    }
}

async fn serve_connection(
    core: Arc<Core>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: Router,
    stream: Stream,
    peer: SocketAddr,
    _guard: ConnGuard,
) {
    let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        router.clone().oneshot(req.map(Body::new))
    });
    // hyper reads the first bytes (HTTP/1.1 or the HTTP/2 preface) with no
    // timeout of its own: a connection that never sends one is closed after
    // `header_timeout` (after that, HTTP/1.1's header read timeout applies,
    // idle keep-alive included).
    let seen = Arc::new(AtomicBool::new(false));
    let io = FirstRead {
        inner: stream,
        seen: seen.clone(),
    };
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let first_byte = async {
        tokio::time::sleep(core.config.limits.header_timeout).await;
        if seen.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
            return;
        }
        () = first_byte => {
            tracing::debug!(%peer, "no request within header_timeout: closing");
            return;
        }
        () = core.shutdown.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// A stream that notes when its first byte arrives.
struct FirstRead {
    inner: Stream,
    seen: Arc<AtomicBool>,
}

impl AsyncRead for FirstRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.seen.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for FirstRead {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn json(status: StatusCode, resp: &CallResponse) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        resp.to_vec(),
    )
        .into_response()
}

/// Closes the connection after this response (the rest of the body is
/// not read).
fn closing(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

async fn handle(State(core): State<Arc<Core>>, req: Request) -> Response {
    if req.uri().path() == "/health" {
        return (StatusCode::OK, "ok").into_response();
    }
    let limits = &core.config.limits;
    let peer = req.extensions().get::<Peer>().map(|p| p.0);
    let real_ip = req.headers().get("x-real-ip").and_then(|v| v.to_str().ok());
    let (ip, remote) = match peer {
        Some(p) => {
            let ip = core.config.client_ip(p.ip(), real_ip);
            (
                ip,
                if ip == p.ip() {
                    p
                } else {
                    SocketAddr::new(ip, 0)
                },
            )
        }
        None => {
            let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
            (unspecified.ip(), unspecified)
        }
    };
    let too_large = || {
        closing(json(
            StatusCode::PAYLOAD_TOO_LARGE,
            &CallResponse::error(
                PAYLOAD_TOO_LARGE,
                format!("body larger than {} bytes", limits.max_body_bytes),
            ),
        ))
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return too_large();
    }
    if req.method() == Method::OPTIONS && core.config.cors.is_none() {
        // No CORS configured: a preflight gets nothing to go on.
        return StatusCode::NO_CONTENT.into_response();
    }
    let body = Limited::new(req.into_body(), limits.max_body_bytes);
    let bytes = match tokio::time::timeout(limits.body_timeout, body.collect()).await {
        Err(_) => {
            return closing(json(
                StatusCode::REQUEST_TIMEOUT,
                &CallResponse::error(
                    REQUEST_TIMEOUT,
                    format!("body not received within {:?}", limits.body_timeout),
                ),
            ));
        }
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return too_large();
            }
            return closing(json(
                StatusCode::BAD_REQUEST,
                &CallResponse::error(jsonlink_rpc::code::BAD_REQUEST, "body could not be read"),
            ));
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    let call = match CallRequest::from_slice(&bytes, &limits.parse) {
        Err(resp) => return json(StatusCode::OK, &resp),
        Ok(c) => c,
    };
    let origin = Origin {
        transport: Transport::Http,
        remote_addr: Some(remote),
        connection_id: None,
        peer: None,
        deadline: None,
    };
    let resp = core.call(call, origin, ip).await;
    json(StatusCode::OK, &resp)
}
