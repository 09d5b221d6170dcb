//! [`Server`]: accepts TLS connections, authenticates them, and runs one
//! driver task per link.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use jsonlink_proto::{CloseReason, Connection, ConnectionParams, Identity, Secret, Side};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument as _;

use crate::config::{DEFAULT_MAX_CONNECTIONS, LinkOptions, proto_setters, saturate_durations};
use crate::context::LinkCtx;
use crate::deadline::{clamp_deadline, deadline_after, with_deadline};
use crate::dispatch::Handlers;
use crate::driver::{Driver, DriverSetup, LinkHooks, new_link};
use crate::error::Error;
use crate::event::{Event, EventStream, event_stream_methods};
use crate::link::{CloseOrder, Link};
use crate::runtime::{Accepted, Listener, Runtime};
use crate::stats::{Stats, bump, drop_one};

/// Pause after a failed `accept` (e.g. out of file descriptors) before
/// trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Configures and binds a [`Server`]; made by [`Server::builder`].
///
/// ```
/// # smol::block_on(demo(jsonlink_smol::runtime())).unwrap();
/// # async fn demo(rt: std::sync::Arc<dyn jsonlink_rt::Runtime>) -> Result<(), Box<dyn std::error::Error>> {
/// use jsonlink_rt::{DevPki, Identity, Secret, Server};
/// let pki = DevPki::generate()?;
/// let server = Server::builder(rt, pki.server_config()?, Secret::generate()?, Identity::new("s1", "demo"))
///     .max_connections(1000)
///     .bind(([127, 0, 0, 1], 0).into())
///     .await?;
/// server.handlers().handle_request("add", |_link, v: serde_json::Value| async move {
///     Ok(v["a"].as_i64().unwrap_or(0) + v["b"].as_i64().unwrap_or(0))
/// });
/// # server.shutdown(std::time::Instant::now()).await;
/// # Ok(()) }
/// ```
pub struct ServerBuilder {
    rt: Arc<dyn Runtime>,
    tls: Arc<rustls::ServerConfig>,
    config: jsonlink_proto::Config,
    options: LinkOptions,
    handlers: Handlers,
    max_connections: usize,
    max_connections_per_ip: Option<usize>,
    pub(crate) observer: Option<Arc<dyn crate::driver::LinkObserver>>,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .field("options", &self.options)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    proto_setters!();

    /// Connections open at once (including those still in TLS or
    /// authentication); past it new ones are closed at once. Default
    /// [`DEFAULT_MAX_CONNECTIONS`].
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Connections open at once from one IP address. Default: no limit.
    pub fn max_connections_per_ip(mut self, n: Option<usize>) -> Self {
        self.max_connections_per_ip = n;
        self
    }

    /// Accepts relays (PROTOCOL.md §18): a connection authenticating with
    /// one of these secrets (and offering the `relay` extension) is a relay
    /// link, and each client its relay announces (`join`) becomes a
    /// [`Link`] of its own — a server-wide link id, its identity and
    /// address from the join, [`Link::via_relay`] naming the relay link,
    /// the same handlers, events, [`Server::send`], [`Server::request`] and
    /// [`Server::broadcast`] as a direct client. Relayed clients count
    /// against [`max_connections`](Self::max_connections) and, by the
    /// address in their join, [`max_connections_per_ip`](Self::max_connections_per_ip);
    /// past either the join is refused (`leave` with code `refused`, and an
    /// [`Event::Error`] with [`Error::Refused`]). At most 16 secrets, none
    /// equal to the client secret (checked by [`bind`](Self::bind)).
    /// Default: none (no relays accepted).
    pub fn relay_secrets(mut self, secrets: Vec<Secret>) -> Self {
        self.config.relay_secrets = secrets;
        self
    }

    /// The relayed clients one relay connection may have live at once;
    /// past it a join is refused (`leave` with code `refused`). Default
    /// [`DEFAULT_MAX_RELAYED_CLIENTS`](jsonlink_proto::DEFAULT_MAX_RELAYED_CLIENTS)
    /// (16384).
    pub fn max_relayed_clients(mut self, n: usize) -> Self {
        self.config.max_relayed_clients = n;
        self
    }

    /// The requests of all clients of one relay connection awaiting our
    /// answer at once; past it a new one is answered `busy`. Default
    /// [`DEFAULT_MAX_RELAYED_INCOMING`](jsonlink_proto::DEFAULT_MAX_RELAYED_INCOMING)
    /// (65536).
    pub fn max_relayed_incoming(mut self, n: usize) -> Self {
        self.config.max_relayed_incoming = n;
        self
    }

    /// Binds the listener and starts accepting.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the address cannot be bound (in use, not
    /// local, not permitted); [`Error::RelaySecrets`] if the
    /// [`relay_secrets`](Self::relay_secrets) are unusable.
    pub async fn bind(self, addr: SocketAddr) -> Result<Server, Error> {
        let (server, _) = self.bind_inner(addr, false).await?;
        Ok(server)
    }

    /// Binds as [`bind`](Self::bind), with the event stream handed to the
    /// caller instead of kept in the handle (whose `next_event` then
    /// returns `None`): a [`Multiplexer`](crate::Multiplexer) forwards it
    /// without holding the server, so it ends when the server has.
    pub(crate) async fn bind_detached_events(
        self,
        addr: SocketAddr,
    ) -> Result<(Server, EventStream), Error> {
        let (server, events) = self.bind_inner(addr, true).await?;
        Ok((server, events.unwrap_or_else(|| EventStream::new(None))))
    }

    async fn bind_inner(
        mut self,
        addr: SocketAddr,
        detach_events: bool,
    ) -> Result<(Server, Option<EventStream>), Error> {
        saturate_durations(&mut self.config);
        self.config
            .check_relay_secrets()
            .map_err(Error::RelaySecrets)?;
        let listener = self.rt.bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (ctx, events) = LinkCtx::new(
            self.rt.clone(),
            self.handlers.clone(),
            self.options,
            true,
            self.observer,
        );
        let shared = Arc::new(ServerShared {
            rt: self.rt.clone(),
            ctx,
            config: Arc::new(self.config),
            tls: RwLock::new(self.tls),
            registry: Mutex::new(Registry::default()),
            changed: event_listener::Event::new(),
            next_id: AtomicU64::new(1),
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            shutting_down: AtomicBool::new(false),
            listening: AtomicBool::new(true),
            local_addr,
            handle: std::sync::OnceLock::new(),
        });
        let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
        let (events, detached) = if detach_events {
            (EventStream::new(None), Some(events))
        } else {
            (events, None)
        };
        let inner = Arc::new(ServerInner {
            shared: shared.clone(),
            events,
            stop_tx,
            handlers: self.handlers,
        });
        // Before the first accept, so that every link reaches its server.
        let _ = shared.handle.set(Arc::downgrade(&inner));
        let span = tracing::info_span!("jsonlink.server", addr = %local_addr);
        self.rt.spawn(Box::pin(
            accept_loop(shared, listener, stop_rx).instrument(span),
        ));
        tracing::info!(addr = %local_addr, "listening");
        Ok((Server { inner }, detached))
    }
}

#[derive(Default)]
struct Registry {
    links: HashMap<u64, Entry>,
    per_ip: HashMap<IpAddr, usize>,
    closed: bool,
}

struct Entry {
    /// `None` once the server handle is gone (which closes the link).
    close_order: Option<async_channel::Sender<CloseOrder>>,
    /// Set when the link authenticates.
    link: Option<Link>,
}

struct ServerShared {
    rt: Arc<dyn Runtime>,
    ctx: Arc<LinkCtx>,
    config: Arc<jsonlink_proto::Config>,
    tls: RwLock<Arc<rustls::ServerConfig>>,
    registry: Mutex<Registry>,
    /// Notified whenever a link leaves the registry.
    changed: event_listener::Event,
    next_id: AtomicU64,
    max_connections: usize,
    max_connections_per_ip: Option<usize>,
    shutting_down: AtomicBool,
    /// The listening socket is open (cleared, and `changed` notified, when
    /// the accept task drops it).
    listening: AtomicBool,
    local_addr: SocketAddr,
    /// The server's handle, for its links' [`Link::server`]: weak, so
    /// links and the handlers holding them do not keep the listener alive.
    handle: std::sync::OnceLock<std::sync::Weak<ServerInner>>,
}

impl ServerShared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn admit(self: &Arc<Self>, accepted: Box<dyn Accepted>) {
        let start = self.rt.now();
        let peer_addr = accepted.peer_addr();
        let ip = peer_addr.ip();
        let counters = &self.ctx.counters;
        bump(&counters.connections_total, 1);
        let mut reg = self.registry();
        if reg.closed || self.shutting_down.load(Ordering::Acquire) {
            return;
        }
        let refused = if reg.links.len() >= self.max_connections {
            Some("max_connections")
        } else if self
            .max_connections_per_ip
            .is_some_and(|max| reg.per_ip.get(&ip).copied().unwrap_or(0) >= max)
        {
            Some("max_connections_per_ip")
        } else {
            None
        };
        if let Some(limit) = refused {
            drop(reg);
            // Dropping the accepted socket closes it at once.
            drop(accepted);
            bump(&counters.connections_refused, 1);
            tracing::warn!(peer = %peer_addr, limit, "connection refused");
            self.ctx.emit_lossy(Event::Error {
                peer_addr: Some(peer_addr),
                error: Error::Refused { limit },
            });
            return;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (order_tx, order_rx) = async_channel::bounded(1);
        reg.links.insert(
            id,
            Entry {
                close_order: Some(order_tx),
                link: None,
            },
        );
        *reg.per_ip.entry(ip).or_default() += 1;
        drop(reg);
        bump(&counters.connections, 1);
        let hooks = ServerHooks {
            shared: self.clone(),
            id,
            ip,
            released: false,
        };
        tracing::debug!(conn = id, peer = %peer_addr, "accepted");
        let span = tracing::info_span!("jsonlink.accept", conn = id, peer = %peer_addr);
        self.rt.spawn(Box::pin(
            serve(self.clone(), accepted, id, start, order_rx, hooks).instrument(span),
        ));
    }
}

async fn accept_loop(
    shared: Arc<ServerShared>,
    listener: Box<dyn Listener>,
    stop: async_channel::Receiver<()>,
) {
    /// Reports the listener closed when the accept task ends (or is
    /// dropped with its runtime).
    struct Closed(Arc<ServerShared>);
    impl Drop for Closed {
        fn drop(&mut self) {
            self.0.listening.store(false, Ordering::Release);
            self.0.changed.notify(usize::MAX);
        }
    }
    let closed = Closed(shared.clone());
    loop {
        let next = futures_lite::future::or(
            async {
                let _ = stop.recv().await;
                None
            },
            async { Some(listener.accept().await) },
        )
        .await;
        match next {
            None => break,
            Some(Ok(accepted)) => shared.admit(accepted),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "accept failed");
                let until = shared.rt.now() + ACCEPT_ERROR_PAUSE;
                if with_deadline(&*shared.rt, until, stop.recv())
                    .await
                    .is_some()
                {
                    break;
                }
            }
        }
    }
    drop(listener);
    drop(closed);
    tracing::info!("listener closed");
}

/// TLS, then the driver. The handshake deadline counts from `start`
/// (accept) and covers TLS and authentication.
async fn serve(
    shared: Arc<ServerShared>,
    accepted: Box<dyn Accepted>,
    id: u64,
    start: Instant,
    order_rx: async_channel::Receiver<CloseOrder>,
    hooks: ServerHooks,
) {
    let rt = shared.rt.clone();
    let peer_addr = accepted.peer_addr();
    let deadline = deadline_after(start, shared.config.handshake_timeout);
    let tls_config = shared.tls.read().unwrap_or_else(|e| e.into_inner()).clone();
    let tls = futures_lite::future::or(
        async {
            // A close order or the server gone: abandon the handshake.
            let _ = order_rx.recv().await;
            None
        },
        async { Some(with_deadline(&*rt, deadline, accepted.tls(tls_config)).await) },
    )
    .await;
    let tls = match tls {
        None => return,
        Some(None) => {
            tracing::debug!("TLS handshake timed out");
            // Release the connection slot before reporting, so a caller who
            // sees the event sees the count already back.
            drop(hooks);
            shared.ctx.emit_lossy(Event::Error {
                peer_addr: Some(peer_addr),
                error: Error::HandshakeTimeout,
            });
            return;
        }
        Some(Some(Err(e))) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            drop(hooks);
            shared.ctx.emit_lossy(Event::Error {
                peer_addr: Some(peer_addr),
                error: Error::Io(e),
            });
            return;
        }
        Some(Some(Ok(tls))) => tls,
    };
    let params = ConnectionParams {
        channel_binding: tls.channel_binding,
        connection_id: id,
    };
    let conn = Connection::new(shared.config.clone(), Side::Server, start, params);
    let link = new_link(
        rt.clone(),
        id,
        peer_addr,
        &shared.config,
        &shared.ctx.options,
        shared.handle.get().cloned(),
    );
    let driver = Driver::new(DriverSetup {
        conn,
        stream: tls.stream,
        link,
        order_rx,
        ctx: shared.ctx.clone(),
        hooks: Box::new(hooks),
    });
    driver.run().await;
}

/// Keeps the registry and the connection count in step with one link.
struct ServerHooks {
    shared: Arc<ServerShared>,
    id: u64,
    ip: IpAddr,
    released: bool,
}

impl ServerHooks {
    fn release(&mut self) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        {
            let mut reg = self.shared.registry();
            reg.links.remove(&self.id);
            if let Some(n) = reg.per_ip.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    reg.per_ip.remove(&self.ip);
                }
            }
        }
        drop_one(&self.shared.ctx.counters.connections);
        self.shared.changed.notify(usize::MAX);
    }
}

impl ServerShared {
    /// Admits a relayed client joining from `addr` on `relay`: a
    /// server-wide link id and a registry entry, within the connection
    /// limits (counted by the join's address).
    fn admit_relayed(
        self: &Arc<Self>,
        addr: SocketAddr,
    ) -> Result<crate::driver::Admitted, &'static str> {
        let ip = addr.ip();
        let counters = &self.ctx.counters;
        bump(&counters.connections_total, 1);
        let mut reg = self.registry();
        if reg.closed || self.shutting_down.load(Ordering::Acquire) {
            return Err("server shutting down");
        }
        if reg.links.len() >= self.max_connections {
            return Err("max_connections");
        }
        if self
            .max_connections_per_ip
            .is_some_and(|max| reg.per_ip.get(&ip).copied().unwrap_or(0) >= max)
        {
            return Err("max_connections_per_ip");
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        reg.links.insert(
            id,
            Entry {
                // The relay link's own close order covers its clients.
                close_order: None,
                link: None,
            },
        );
        *reg.per_ip.entry(ip).or_default() += 1;
        drop(reg);
        bump(&counters.connections, 1);
        let hooks = ServerHooks {
            shared: self.clone(),
            id,
            ip,
            released: false,
        };
        Ok(crate::driver::Admitted {
            id,
            hooks: Box::new(hooks),
        })
    }
}

impl LinkHooks for ServerHooks {
    fn join(
        &mut self,
        _relay: &Link,
        addr: SocketAddr,
    ) -> Result<crate::driver::Admitted, &'static str> {
        self.shared.admit_relayed(addr)
    }

    fn authenticated(&mut self, link: &Link) {
        if let Some(e) = self.shared.registry().links.get_mut(&self.id) {
            e.link = Some(link.clone());
        }
    }

    fn closed(&mut self, _link: &Link, _reason: &CloseReason) {
        self.release();
    }
}

impl Drop for ServerHooks {
    fn drop(&mut self) {
        self.release();
    }
}

/// A jsonlink server: a TCP listener, TLS, authentication, and one driver
/// task per link. Cheap to clone; when the last clone is dropped the
/// listener closes and every link closes gracefully (no task or socket is
/// leaked).
///
/// Events arrive through [`next_event`](Self::next_event) (see
/// [`LinkOptions::events`] and [`LinkOptions::consume_events`]); requests
/// and messages with an `op` go to the handlers of
/// [`handlers`](Self::handlers).
#[derive(Clone)]
pub struct Server {
    inner: Arc<ServerInner>,
}

impl Server {
    /// The server a link's [`Link::server`] reaches, while a user handle
    /// keeps it.
    pub(crate) fn from_weak(weak: &std::sync::Weak<ServerInner>) -> Option<Self> {
        weak.upgrade().map(|inner| Self { inner })
    }
}

pub(crate) struct ServerInner {
    shared: Arc<ServerShared>,
    events: EventStream,
    stop_tx: async_channel::Sender<()>,
    handlers: Handlers,
}

impl Drop for ServerInner {
    fn drop(&mut self) {
        self.stop_tx.close();
        let mut reg = self.shared.registry();
        reg.closed = true;
        for e in reg.links.values_mut() {
            // Closing the order channel tells the driver its owner is gone.
            e.close_order = None;
        }
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.inner.shared.local_addr)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Server {
    /// Starts configuring a server with every default. `tls` may require
    /// client certificates (see
    /// [`DevPki::server_config_requiring_client_cert`](crate::DevPki::server_config_requiring_client_cert)).
    pub fn builder(
        rt: Arc<dyn Runtime>,
        tls: impl Into<Arc<rustls::ServerConfig>>,
        secret: Secret,
        identity: Identity,
    ) -> ServerBuilder {
        ServerBuilder {
            rt,
            tls: crate::certs::require_ems_server(tls.into()),
            config: jsonlink_proto::Config::new(secret, identity),
            options: LinkOptions::default(),
            handlers: Handlers::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: None,
            observer: None,
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.shared.local_addr
    }

    /// The handlers by op; edit them while running.
    pub fn handlers(&self) -> &Handlers {
        &self.inner.handlers
    }

    /// The authenticated links, ordered by link id.
    pub fn links(&self) -> Vec<Link> {
        let reg = self.inner.shared.registry();
        let mut v: Vec<Link> = reg.links.values().filter_map(|e| e.link.clone()).collect();
        v.sort_by_key(Link::id);
        v
    }

    /// The authenticated link with this link id.
    pub fn link(&self, id: u64) -> Option<Link> {
        let reg = self.inner.shared.registry();
        reg.links.get(&id).and_then(|e| e.link.clone())
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.inner.shared.ctx.counters.snapshot()
    }

    /// Replaces the TLS configuration (e.g. a renewed certificate): new
    /// handshakes use it, established links are untouched.
    pub fn set_tls_config(&self, tls: impl Into<Arc<rustls::ServerConfig>>) {
        *self
            .inner
            .shared
            .tls
            .write()
            .unwrap_or_else(|e| e.into_inner()) = crate::certs::require_ems_server(tls.into());
        tracing::info!("TLS configuration replaced");
    }

    /// Sends a message to one link.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownLink`] if no authenticated link has this id; else
    /// as [`Link::send`].
    pub async fn send<T: Serialize + ?Sized>(&self, id: u64, value: &T) -> Result<(), Error> {
        self.known_link(id)?.send(value).await
    }

    /// Pings one link with optional data (see [`Link::ping`]).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownLink`] if no authenticated link has this id; else
    /// as [`Link::ping`].
    pub async fn ping<T: Serialize + ?Sized>(
        &self,
        id: u64,
        data: Option<&T>,
    ) -> Result<(), Error> {
        self.known_link(id)?.ping(data).await
    }

    /// Sends a request to one link and deserializes the response.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownLink`] if no authenticated link has this id; else
    /// as [`Link::request`].
    pub async fn request<R, T>(&self, id: u64, value: &T) -> Result<R, Error>
    where
        R: DeserializeOwned,
        T: Serialize + ?Sized,
    {
        self.known_link(id)?.request(value).await
    }

    /// [`request`](Self::request) with its own timeout.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request).
    pub async fn request_with_timeout<R, T>(
        &self,
        id: u64,
        value: &T,
        timeout: Duration,
    ) -> Result<R, Error>
    where
        R: DeserializeOwned,
        T: Serialize + ?Sized,
    {
        self.known_link(id)?
            .request_with_timeout(value, timeout)
            .await
    }

    fn known_link(&self, id: u64) -> Result<Link, Error> {
        self.link(id).ok_or(Error::UnknownLink(id))
    }

    /// Sends a message to every authenticated link (relayed clients
    /// included, relay links themselves not) without waiting: the
    /// value is encoded once; a link whose command queue is full is
    /// skipped (counted in [`Stats::broadcast_skipped`]), so one slow
    /// reader cannot stall the rest. Returns how many links it was queued
    /// to.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] if `value` does not serialize (then it went to
    /// none).
    pub fn broadcast<T: Serialize + ?Sized>(&self, value: &T) -> Result<usize, Error> {
        let body: Arc<serde_json::value::RawValue> =
            Arc::from(serde_json::value::to_raw_value(value).map_err(Error::Encode)?);
        let mut queued = 0;
        // A relay's own link is skipped: its clients are links of their own.
        for link in self
            .links()
            .into_iter()
            .filter(|l| !l.auth().is_some_and(|a| a.relay))
        {
            if link.try_send_raw(body.clone()) {
                queued += 1;
            } else {
                bump(&self.inner.shared.ctx.counters.broadcast_skipped, 1);
            }
        }
        Ok(queued)
    }

    event_stream_methods!();

    /// Shuts down gracefully: stops accepting, sends every link a close
    /// frame (the going-away notice), lets requests in flight (both ways)
    /// finish until `deadline`, then fails ours with
    /// [`Error::ShuttingDown`]. While a link drains, handlers still running
    /// may send messages on it ([`Link::send`] still works), so what a job
    /// reports before it answers (its last progress, its result) reaches
    /// the client; a [`Client`](crate::Client) that gets the notice starts
    /// reconnecting at once while its old link drains. Returns when every
    /// link has ended, or at `deadline`, whichever is first; in any case
    /// not before the listening socket is closed (which happens before any
    /// notice is sent), so connections attempted after it returns are
    /// refused, and a server restarted on the same address can bind it
    /// while the old links drain. A deadline about 30 years ahead or more
    /// is none: the links drain until done.
    pub async fn shutdown(&self, deadline: Instant) {
        let shared = &self.inner.shared;
        let deadline = clamp_deadline(shared.rt.now(), deadline);
        shared.shutting_down.store(true, Ordering::Release);
        self.inner.stop_tx.close();
        // The accept task closes the socket on its next turn (not bounded
        // by `deadline`, which may be now: it takes no longer than that).
        loop {
            let listener = shared.changed.listen();
            if !shared.listening.load(Ordering::Acquire) {
                break;
            }
            listener.await;
        }
        {
            let reg = shared.registry();
            tracing::info!(links = reg.links.len(), "shutting down");
            for e in reg.links.values() {
                if let Some(ctl) = &e.close_order {
                    let _ = ctl.try_send(CloseOrder {
                        reason: "server shutting down",
                        deadline,
                    });
                }
            }
        }
        let all_gone = async {
            loop {
                let listener = shared.changed.listen();
                if shared.registry().links.is_empty() {
                    return;
                }
                listener.await;
            }
        };
        let _ = with_deadline(&*shared.rt, deadline, all_gone).await;
    }
}
