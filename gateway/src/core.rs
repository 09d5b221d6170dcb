//! What both gateways share: the accept loop with its connection limit and
//! TLS handshake, the per-IP rate limit, and running one call under its
//! deadline.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use jsonlink_rpc::{CallRequest, CallResponse, Origin, Registry, code};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::GatewayConfig;

/// A connection's byte stream: plain TCP or TLS over TCP.
pub(crate) type Stream = Either<TcpStream, TlsStream<TcpStream>>;

/// The state one gateway's tasks share.
pub(crate) struct Core {
    pub(crate) registry: Registry,
    pub(crate) config: GatewayConfig,
    rate: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Cancelled when a graceful shutdown starts: stop accepting, finish
    /// the calls in flight.
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when the shutdown grace is over: drop every connection.
    pub(crate) force: CancellationToken,
    /// Every task of the gateway (accept loop, connections, calls).
    pub(crate) tasks: TaskTracker,
    connections: AtomicUsize,
    /// Open connections per TCP peer IP, when `max_connections_per_ip` is set.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl Core {
    pub(crate) fn new(registry: Registry, config: GatewayConfig) -> Arc<Self> {
        let rate = config
            .limits
            .rate_limit
            .map(|r| RateLimiter::keyed(Quota::per_second(r.per_second).allow_burst(r.burst)));
        Arc::new(Self {
            registry,
            config,
            rate,
            shutdown: CancellationToken::new(),
            force: CancellationToken::new(),
            tasks: TaskTracker::new(),
            connections: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Open connections.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Whether a call from `ip` is within the rate limit (and counts it).
    pub(crate) fn rate_ok(&self, ip: IpAddr) -> bool {
        self.rate.as_ref().is_none_or(|r| r.check_key(&ip).is_ok())
    }

    /// Runs one call: the rate limit, then the registry under the call
    /// deadline. Never panics; always echoes the correlation id.
    pub(crate) fn call(
        self: &Arc<Self>,
        req: CallRequest,
        mut origin: Origin,
        ip: IpAddr,
    ) -> impl Future<Output = CallResponse> + Send + 'static {
        let cid = req.correlation_id.clone();
        let limited = !self.rate_ok(ip);
        let deadline = self.config.limits.call_deadline;
        // A deadline too far to represent is no deadline, never a panic.
        origin.deadline = Instant::now().checked_add(deadline);
        let fut = (!limited).then(|| self.registry.call(req, origin));
        async move {
            let Some(fut) = fut else {
                return CallResponse::error(
                    code::TOO_MANY_REQUESTS,
                    "rate limit exceeded for this client IP",
                )
                .with_correlation_id(cid);
            };
            match tokio::time::timeout(deadline, fut).await {
                Ok(resp) => resp,
                Err(_) => CallResponse::error(code::INTERNAL, "deadline exceeded")
                    .with_correlation_id(cid),
            }
        }
    }

    /// Starts a graceful shutdown and waits for it: no new connection, the
    /// calls in flight get `shutdown_grace`, then every connection is dropped.
    pub(crate) async fn shutdown(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(self.config.limits.shutdown_grace, self.tasks.wait())
            .await
            .is_err()
        {
            self.force.cancel();
            // Every task watches `force`; they end promptly.
            let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
        }
        self.force.cancel();
    }

    /// Forgets rate-limit state of IPs that are back to a full bucket, so
    /// the table is bounded by the IPs active within the refill period.
    fn trim_rate_table(&self) {
        if let Some(r) = &self.rate {
            r.retain_recent();
            r.shrink_to_fit();
        }
    }
}

/// Counts one open connection (and, with a per-IP limit, one of its IP's)
/// for as long as it lives.
pub(crate) struct ConnGuard(Arc<Core>, Option<IpAddr>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.1 {
            let mut m = self.0.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = m.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
    }
}

impl Core {
    /// Takes a per-IP connection slot for `ip`; `false` when it has
    /// `max_connections_per_ip` already.
    fn take_ip_slot(&self, ip: IpAddr, limit: usize) -> bool {
        let mut m = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        let n = m.entry(ip).or_insert(0);
        if *n >= limit {
            if *n == 0 {
                m.remove(&ip);
            }
            return false;
        }
        *n += 1;
        true
    }
}

/// Binds `addr`, then runs the accept loop on a task of `core`: every
/// accepted connection within `max_connections` gets its TLS handshake (if
/// configured) and is handed to `serve` on a task of its own.
pub(crate) async fn listen<F, Fut>(
    addr: SocketAddr,
    core: Arc<Core>,
    tls: Option<TlsAcceptor>,
    serve: F,
) -> io::Result<SocketAddr>
where
    F: Fn(Stream, SocketAddr, ConnGuard) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let tasks = core.tasks.clone();
    tasks.spawn(accept_loop(listener, core, tls, serve));
    Ok(local)
}

async fn accept_loop<F, Fut>(
    listener: TcpListener,
    core: Arc<Core>,
    tls: Option<TlsAcceptor>,
    serve: F,
) where
    F: Fn(Stream, SocketAddr, ConnGuard) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let serve = Arc::new(serve);
    let mut trim = tokio::time::interval(Duration::from_secs(10));
    loop {
        let accepted = tokio::select! {
            () = core.shutdown.cancelled() => return,
            _ = trim.tick() => { core.trim_rate_table(); continue; }
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of fds or a connection reset before accept: back off
                // a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let limit = core.config.limits.max_connections;
        if core.connections.fetch_add(1, Ordering::Relaxed) >= limit {
            core.connections.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(%peer, limit, "connection refused: max_connections");
            drop(tcp);
            continue;
        }
        let per_ip = core.config.limits.max_connections_per_ip;
        if let Some(n) = per_ip
            && !core.take_ip_slot(peer.ip(), n)
        {
            core.connections.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(%peer, limit = n, "connection refused: max_connections_per_ip");
            drop(tcp);
            continue;
        }
        let guard = ConnGuard(core.clone(), per_ip.map(|_| peer.ip()));
        let _ = tcp.set_nodelay(true);
        let serve = serve.clone();
        let tls = tls.clone();
        let handshake = core.config.limits.tls_handshake_timeout;
        let force = core.force.clone();
        core.tasks.spawn(async move {
            let stream = match tls {
                None => Either::Left(tcp),
                Some(acceptor) => {
                    match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => Either::Right(s),
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            tokio::select! {
                () = force.cancelled() => {}
                () = serve(stream, peer, guard) => {}
            }
        });
    }
}

/// A TLS acceptor from `config`, with `alpn` filled in when it has none.
pub(crate) fn acceptor(config: &GatewayConfig, alpn: &[&[u8]]) -> Option<TlsAcceptor> {
    config.tls.as_ref().map(|c| {
        if c.alpn_protocols.is_empty() {
            let mut c = (**c).clone();
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            TlsAcceptor::from(Arc::new(c))
        } else {
            TlsAcceptor::from(c.clone())
        }
    })
}
