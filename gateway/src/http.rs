//! The HTTP gateway: any path and method, the body a CallRequest, the
//! outcome in the CallResponse body's `code` (HTTP status 200).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use jsonlink_rpc::{CallRequest, CallResponse, Origin, Registry, Transport};
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
            .max_buf_size(limits.max_header_bytes.max(8192))
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(
                u32::try_from(limits.max_in_flight_per_connection).unwrap_or(u32::MAX),
            )
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
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
    let activity = Arc::new(Activity {
        running: AtomicUsize::new(0),
        idle_since: Mutex::new(Instant::now()),
    });
    let a = activity.clone();
    let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        let running = Running::start(a.clone());
        let answer = router.clone().oneshot(req.map(Body::new));
        async move {
            let r = answer.await;
            drop(running);
            r
        }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let idle = core.config.limits.header_timeout;
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
            return;
        }
        () = activity.idle_for(idle) => {
            tracing::debug!(%peer, "no request within header_timeout: closing");
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(idle, conn).await;
            return;
        }
        () = core.shutdown.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// The calls running on one HTTP connection and since when none has.
/// hyper has no timeout for the first bytes of a connection (HTTP/1.1 or
/// the HTTP/2 preface) nor for an idle HTTP/2 connection: a connection
/// with no call running for `header_timeout` is closed gracefully
/// (HTTP/1.1's own header read timeout applies too).
struct Activity {
    running: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    fn idle_since(&self) -> Instant {
        *self
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves once no call has run for `t`.
    async fn idle_for(&self, t: Duration) {
        loop {
            if self.running.load(Ordering::Acquire) > 0 {
                tokio::time::sleep(t).await;
                continue;
            }
            let Some(due) = self.idle_since().checked_add(t) else {
                // Too far to represent: never idle out.
                return std::future::pending().await;
            };
            tokio::time::sleep_until(due.into()).await;
            if self.running.load(Ordering::Acquire) == 0 && self.idle_since().elapsed() >= t {
                return;
            }
        }
    }
}

/// One call counted as running on its connection while it lives.
struct Running(Arc<Activity>);

impl Running {
    fn start(a: Arc<Activity>) -> Self {
        a.running.fetch_add(1, Ordering::AcqRel);
        Self(a)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        *self
            .0
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.0.running.fetch_sub(1, Ordering::AcqRel);
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

/// Closes an HTTP/1.x connection after this response (the rest of the
/// body is not read); HTTP/2 has no such header (the stream is reset).
fn closing(version: http::Version, mut r: Response) -> Response {
    if version < http::Version::HTTP_2 {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
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
    let version = req.version();
    let too_large = || {
        closing(
            version,
            json(
                StatusCode::PAYLOAD_TOO_LARGE,
                &CallResponse::error(
                    PAYLOAD_TOO_LARGE,
                    format!("body larger than {} bytes", limits.max_body_bytes),
                ),
            ),
        )
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
            return closing(
                version,
                json(
                    StatusCode::REQUEST_TIMEOUT,
                    &CallResponse::error(
                        REQUEST_TIMEOUT,
                        format!("body not received within {:?}", limits.body_timeout),
                    ),
                ),
            );
        }
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return too_large();
            }
            return closing(
                version,
                json(
                    StatusCode::BAD_REQUEST,
                    &CallResponse::error(jsonlink_rpc::code::BAD_REQUEST, "body could not be read"),
                ),
            );
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
