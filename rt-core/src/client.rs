//! [`Client`]: one link to a server, reconnected by a supervisor task.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use jsonlink_proto::{CloseReason, Connection, ConnectionParams, Identity, Payload, Secret, Side};
use rustls_pki_types::ServerName;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tracing::Instrument as _;

use crate::config::{LinkOptions, proto_setters, saturate_durations};
use crate::dispatch::Handlers;
use crate::driver::{Driver, DriverSetup, LinkCtx, LinkHooks, Outcome, new_link};
use crate::error::Error;
use crate::event::{Event, EventKind, EventStream};
use crate::link::{CloseOrder, Link, clamp_deadline, deadline_after, with_deadline};
use crate::reconnect::Reconnect;
use crate::runtime::{Runtime, TlsStream};
use crate::stats::{Counters, Stats, bump, drop_one};

/// How long a command waits for a link.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// Until there is one (or the client closes).
    Forever,
    /// Until this instant.
    Until(Instant),
    /// For this long from the first wait (the clock is read only then).
    For(Duration),
}

/// Configures and starts a [`Client`].
pub struct ClientBuilder {
    rt: Arc<dyn Runtime>,
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    config: jsonlink_proto::Config,
    options: LinkOptions,
    handlers: Handlers,
    reconnect: Reconnect,
    wait_for_reconnect: bool,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("addr", &self.addr)
            .field("server_name", &self.server_name)
            .field("config", &self.config)
            .field("options", &self.options)
            .field("reconnect", &self.reconnect)
            .field("wait_for_reconnect", &self.wait_for_reconnect)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// A builder with every default: reconnect with
    /// [`Reconnect::default`] (exponential backoff, full jitter), commands
    /// while disconnected fail at once with [`Error::NotConnected`].
    pub fn new(
        rt: Arc<dyn Runtime>,
        addr: SocketAddr,
        tls: impl Into<Arc<rustls::ClientConfig>>,
        server_name: ServerName<'static>,
        secret: Secret,
        identity: Identity,
    ) -> Self {
        Self {
            rt,
            addr,
            tls: crate::certs::require_ems_client(tls.into()),
            server_name,
            config: jsonlink_proto::Config::new(secret, identity),
            options: LinkOptions::default(),
            handlers: Handlers::new(),
            reconnect: Reconnect::default(),
            wait_for_reconnect: false,
        }
    }

    proto_setters!();

    /// The reconnect policy. Default [`Reconnect::default`].
    pub fn reconnect(mut self, policy: Reconnect) -> Self {
        self.reconnect = policy;
        self
    }

    /// Opt-in: while disconnected, `send` and `request` wait for the next
    /// link up to their own timeout (then fail with [`Error::Timeout`])
    /// instead of failing at once with [`Error::NotConnected`]. Nothing is
    /// queued meanwhile: each caller waits itself. Default `false`.
    pub fn wait_for_reconnect(mut self, on: bool) -> Self {
        self.wait_for_reconnect = on;
        self
    }

    /// Starts the client: connecting (and reconnecting per the policy)
    /// happens in the background; see [`Client::wait_connected`].
    ///
    /// Failures that may pass (connection refused, a timeout, a dropped
    /// link) are retried per the policy and reported as
    /// [`Event::Error`] once per outage. Failures that retrying cannot fix
    /// end the client instead: the server rejecting our credentials
    /// ([`Error::Auth`]), and, until the client has authenticated once, a
    /// TLS configuration error ([`Error::TlsConfig`]: the server's
    /// certificate is from a CA the client does not trust, not valid for
    /// the server name, expired, …; its text says what to fix). After a
    /// first authentication a TLS configuration error is reported once per
    /// outage and retried, so a fleet of clients rides out a server whose
    /// certificate is being replaced.
    pub fn start(self) -> Client {
        self.spawn(None)
    }

    /// Starts the client and waits for the first link: the first attempt
    /// must succeed (its error is returned — a TLS configuration problem as
    /// [`Error::TlsConfig`], saying what to fix — and the client is
    /// closed); later drops reconnect per the policy, as for
    /// [`start`](Self::start).
    pub async fn connect(self) -> Result<Client, Error> {
        let (tx, rx) = oneshot::channel();
        let client = self.spawn(Some(tx));
        match rx.await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Closed),
        }
    }

    fn spawn(mut self, first: Option<oneshot::Sender<Result<(), Error>>>) -> Client {
        saturate_durations(&mut self.config);
        let (events_tx, events_rx) = if self.options.events {
            let (tx, rx) = crate::event_queue::channel(self.options.event_capacity);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let ctx = Arc::new(LinkCtx {
            rt: self.rt.clone(),
            handlers: self.handlers.clone(),
            events: events_tx,
            counters: Arc::new(Counters::default()),
            options: self.options,
            report_handshake_errors: false,
        });
        let shared = Arc::new(ClientShared {
            rt: self.rt.clone(),
            ctx,
            config: Arc::new(self.config),
            addr: self.addr,
            tls: self.tls,
            server_name: self.server_name,
            reconnect: self.reconnect,
            wait_for_reconnect: self.wait_for_reconnect,
            state: Mutex::new(State::Connecting),
            changed: event_listener::Event::new(),
            first: Mutex::new(first),
            closing: AtomicBool::new(false),
        });
        let (order_tx, order_rx) = async_channel::bounded(1);
        let span = tracing::info_span!("jsonlink.client", server = %self.addr);
        self.rt.spawn(Box::pin(
            supervise(shared.clone(), order_rx).instrument(span),
        ));
        Client {
            inner: Arc::new(ClientInner {
                shared,
                events: EventStream::new(events_rx),
                order_tx,
                handlers: self.handlers,
            }),
        }
    }
}

#[derive(Debug, Clone)]
enum State {
    Connecting,
    Connected(Link),
    Disconnected,
    /// Ended; `Some` when it ended on an error that retrying cannot fix.
    Closed(Option<Fatal>),
}

/// Why a client stopped by itself, for good: what `wait_connected` and
/// the commands then return.
#[derive(Debug, Clone)]
enum Fatal {
    /// The server rejected our credentials ([`Error::Auth`]).
    Auth(CloseReason),
    /// A TLS configuration error before the first authentication
    /// ([`Error::TlsConfig`]).
    Tls {
        error: rustls::Error,
        fix: &'static str,
    },
}

impl Fatal {
    /// `e`, if the client stops on it.
    fn of(e: &Error) -> Option<Self> {
        match e {
            Error::Auth(r) => Some(Self::Auth(r.clone())),
            Error::TlsConfig { error, fix } => Some(Self::Tls {
                error: error.clone(),
                fix,
            }),
            _ => None,
        }
    }

    fn error(&self) -> Error {
        match self {
            Self::Auth(r) => Error::Auth(r.clone()),
            Self::Tls { error, fix } => Error::TlsConfig {
                error: error.clone(),
                fix,
            },
        }
    }
}

type FirstSlot = Mutex<Option<oneshot::Sender<Result<(), Error>>>>;

struct ClientShared {
    rt: Arc<dyn Runtime>,
    ctx: Arc<LinkCtx>,
    config: Arc<jsonlink_proto::Config>,
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    reconnect: Reconnect,
    wait_for_reconnect: bool,
    state: Mutex<State>,
    /// Notified on every state change.
    changed: event_listener::Event,
    /// `connect()` waits on this for the first attempt's outcome.
    first: FirstSlot,
    /// The owner called `close`: a link refusing commands is closing for
    /// good, and they fail with [`Error::Closed`].
    closing: AtomicBool,
}

impl ClientShared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the state unless the client has already closed.
    fn set_state(&self, new: State) {
        {
            let mut s = self.state();
            if matches!(*s, State::Closed(_)) {
                return;
            }
            *s = new;
        }
        self.changed.notify(usize::MAX);
    }

    fn take_first(&self) -> Option<oneshot::Sender<Result<(), Error>>> {
        self.first.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

fn closed_error(fatal: &Option<Fatal>) -> Error {
    fatal.as_ref().map_or(Error::Closed, Fatal::error)
}

/// Connects, runs the link, and reconnects per the policy, until the
/// client is closed or dropped (its order channel closes).
async fn supervise(shared: Arc<ClientShared>, order_rx: async_channel::Receiver<CloseOrder>) {
    let rt = shared.rt.clone();
    let mut attempt: u32 = 0;
    // The kind of error last reported in this outage, so a long outage
    // reports "connection refused" once, not once per attempt.
    let mut reported: Option<String> = None;
    let mut stopped = false;
    let mut fatal = None;
    let mut draining = Draining::default();
    // Until then, a TLS configuration error ends the client: nothing
    // suggests it will go away. After it, it may be a server rotating its
    // certificate: reported once per outage, retried.
    let mut authenticated_once = false;
    loop {
        shared.set_state(State::Connecting);
        let result = run_attempt(&shared, &order_rx, &mut stopped, &mut draining).await;
        let error = match result {
            Ok(o) if o.authenticated => {
                authenticated_once = true;
                attempt = 0;
                reported = None;
                tracing::info!(reason = %o.reason, "disconnected");
                None
            }
            Ok(o) => Some(Error::from_handshake_close(o.reason)),
            Err(e) => Some(e),
        };
        if stopped {
            break;
        }
        if let Some(e) = error {
            if let Some(first) = shared.take_first() {
                tracing::warn!(error = %e, "connect failed");
                fatal = Fatal::of(&e);
                let _ = first.send(Err(e));
                break;
            }
            if e.is_auth() || (e.is_tls_config() && !authenticated_once) {
                // Retrying with the same secret, or the same TLS
                // configuration before it ever worked, cannot succeed.
                tracing::warn!(error = %e, "connect failed; not reconnecting");
                fatal = Fatal::of(&e);
                shared.ctx.emit_lossy(Event::Error {
                    peer_addr: Some(shared.addr),
                    error: e,
                });
                break;
            }
            let key = error_key(&e);
            if reported.as_deref() != Some(key.as_str()) {
                tracing::warn!(error = %e, "connect failed");
                reported = Some(key);
                shared.ctx.emit_lossy(Event::Error {
                    peer_addr: Some(shared.addr),
                    error: e,
                });
            } else {
                tracing::debug!(error = %e, "connect failed again");
            }
        }
        shared.set_state(State::Disconnected);
        let Some(delay) = shared.reconnect.next_delay(attempt) else {
            break;
        };
        attempt = attempt.saturating_add(1);
        tracing::debug!(attempt, ?delay, "reconnecting");
        shared
            .ctx
            .emit_lossy(Event::ReconnectAttempt { attempt, delay });
        let until = deadline_after(rt.now(), delay);
        if let Some(order) = with_deadline(&*rt, until, order_rx.recv()).await {
            // Closed (or dropped) during backoff: stop at once (links still
            // draining get the order too).
            draining.forward(&owner_order(&shared, order.ok()));
            break;
        }
    }
    // Links still draining after a going-away notice end by their own
    // deadline (or the owner's, forwarded to them); the client has stopped
    // once they have.
    loop {
        let listener = shared.changed.listen();
        if draining.prune() == 0 {
            break;
        }
        listener.await;
    }
    {
        let mut s = shared.state();
        *s = State::Closed(fatal);
    }
    shared.changed.notify(usize::MAX);
    if let Some(first) = shared.take_first() {
        let _ = first.send(Err(Error::Closed));
    }
    tracing::debug!("client stopped");
}

/// What kind of failure `e` is, for reporting once per outage.
fn error_key(e: &Error) -> String {
    match e {
        Error::Io(io) => format!("io:{:?}", io.kind()),
        Error::Handshake(r) => format!("handshake:{}", r.code()),
        Error::TlsConfig { error, .. } => format!("tls:{error:?}"),
        other => format!("{:?}", std::mem::discriminant(other)),
    }
}

/// Links of a client still draining after the server's going-away notice,
/// each driven by a task of its own while the client reconnects.
#[derive(Default)]
struct Draining {
    /// Their order channels (closed once a link's driver has ended).
    links: Vec<async_channel::Sender<CloseOrder>>,
}

impl Draining {
    /// Forgets the links that have ended; how many drain still.
    fn prune(&mut self) -> usize {
        self.links.retain(|tx| !tx.is_closed());
        self.links.len()
    }

    /// Passes the owner's order (close, or the client dropped) on.
    fn forward(&mut self, order: &CloseOrder) {
        self.prune();
        for tx in &self.links {
            let _ = tx.try_send(order.clone());
        }
    }
}

/// The owner's order, or the one for a client whose every handle is gone
/// (`None`).
fn owner_order(shared: &ClientShared, order: Option<CloseOrder>) -> CloseOrder {
    order.unwrap_or_else(|| CloseOrder {
        reason: "client dropped",
        deadline: deadline_after(shared.rt.now(), shared.config.close_timeout),
    })
}

/// Wakes the supervisor when a draining link's task ends (or is dropped).
struct DrainEnded(Arc<ClientShared>);

impl Drop for DrainEnded {
    fn drop(&mut self) {
        self.0.changed.notify(usize::MAX);
    }
}

/// One attempt: TCP + TLS (bounded by the handshake deadline), then the
/// driver until the link ends, or until the server's going-away notice
/// (a `close` with code `normal`) when the policy reconnects: then the
/// link goes on draining in a task of its own (its in-flight requests,
/// what the server's handlers still send) and the attempt returns, so the
/// client reconnects at once. An order on `order_rx` (or its closing)
/// during the attempt sets `stopped` and is forwarded to the link and to
/// those still draining.
async fn run_attempt(
    shared: &Arc<ClientShared>,
    order_rx: &async_channel::Receiver<CloseOrder>,
    stopped: &mut bool,
    draining: &mut Draining,
) -> Result<Outcome, Error> {
    let rt = shared.rt.clone();
    let start = rt.now();
    let deadline = deadline_after(start, shared.config.handshake_timeout);
    bump(&shared.ctx.counters.connections_total, 1);
    let connect = rt.connect_tls(shared.addr, shared.tls.clone(), shared.server_name.clone());
    enum Connect {
        Order(Option<CloseOrder>),
        Done(Option<std::io::Result<TlsStream>>),
    }
    let step = futures_lite::future::or(
        async { Connect::Order(order_rx.recv().await.ok()) },
        async { Connect::Done(with_deadline(&*rt, deadline, connect).await) },
    )
    .await;
    let tls = match step {
        Connect::Order(order) => {
            *stopped = true;
            draining.forward(&owner_order(shared, order));
            return Err(Error::Closed);
        }
        Connect::Done(None) => return Err(Error::HandshakeTimeout),
        Connect::Done(Some(Err(e))) => return Err(Error::from_connect(e)),
        Connect::Done(Some(Ok(tls))) => tls,
    };
    let params = ConnectionParams {
        channel_binding: tls.channel_binding,
        ..ConnectionParams::default()
    };
    let conn = Connection::new(shared.config.clone(), Side::Client, start, params);
    let link = new_link(
        rt.clone(),
        0,
        tls.peer_addr,
        shared.config.request_timeout,
        &shared.ctx.options,
    );
    let (link_order_tx, link_order_rx) = async_channel::bounded(1);
    // Without reconnecting there is nothing to do meanwhile: the link
    // drains here, and the client ends with it.
    let reconnects = shared.reconnect.ceiling(0).is_some();
    let (notice_tx, notice_rx) = oneshot::channel();
    bump(&shared.ctx.counters.connections, 1);
    let driver = Driver::new(DriverSetup {
        conn,
        stream: tls.stream,
        link,
        order_rx: link_order_rx,
        ctx: shared.ctx.clone(),
        hooks: Box::new(ClientHooks {
            shared: shared.clone(),
            link: None,
            notice: reconnects.then_some(notice_tx),
            released: false,
        }),
    });
    let mut driver = Box::pin(driver.run());
    let mut notice = Some(notice_rx);
    enum Step {
        Ended(Outcome),
        Order(Option<CloseOrder>),
        Notice(Option<CloseReason>),
    }
    loop {
        let listen = !*stopped;
        let step = futures_lite::future::or(
            async { Step::Ended(driver.as_mut().await) },
            futures_lite::future::or(
                async {
                    if listen {
                        Step::Order(order_rx.recv().await.ok())
                    } else {
                        std::future::pending().await
                    }
                },
                async {
                    match notice.as_mut() {
                        Some(rx) => Step::Notice(rx.await.ok()),
                        None => std::future::pending().await,
                    }
                },
            ),
        )
        .await;
        match step {
            Step::Ended(outcome) => return Ok(outcome),
            Step::Order(order) => {
                *stopped = true;
                let order = owner_order(shared, order);
                draining.forward(&order);
                let _ = link_order_tx.try_send(order);
            }
            // The link ended without one, or the owner is closing the
            // client anyway: it drains here.
            Step::Notice(None) => notice = None,
            Step::Notice(Some(_)) if *stopped => notice = None,
            Step::Notice(Some(reason)) => {
                tracing::info!(
                    reason = %reason,
                    "going-away notice: reconnecting while the link drains"
                );
                let ended = DrainEnded(shared.clone());
                rt.spawn(Box::pin(
                    async move {
                        let _ended = ended;
                        let _ = driver.await;
                    }
                    .instrument(tracing::Span::current()),
                ));
                draining.links.push(link_order_tx);
                return Ok(Outcome {
                    authenticated: true,
                    reason,
                });
            }
        }
    }
}

struct ClientHooks {
    shared: Arc<ClientShared>,
    /// The link, once authenticated.
    link: Option<Link>,
    /// Tells the attempt of the server's going-away notice (when the
    /// client reconnects).
    notice: Option<oneshot::Sender<CloseReason>>,
    released: bool,
}

impl ClientHooks {
    /// Whether `link` is the client's current link.
    fn is_current(&self, link: &Link) -> bool {
        matches!(&*self.shared.state(), State::Connected(l) if Arc::ptr_eq(&l.inner, &link.inner))
    }

    fn release(&mut self) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        drop_one(&self.shared.ctx.counters.connections);
        // Only this link: after a going-away notice the next one may be
        // current already.
        if self.link.as_ref().is_some_and(|l| self.is_current(l)) {
            self.shared.set_state(State::Disconnected);
        }
    }
}

impl LinkHooks for ClientHooks {
    fn authenticated(&mut self, link: &Link) {
        self.link = Some(link.clone());
        self.shared.set_state(State::Connected(link.clone()));
        if let Some(first) = self.shared.take_first() {
            let _ = first.send(Ok(()));
        }
    }

    fn closing(&mut self, link: &Link, draining: Option<&CloseReason>) {
        // A closing link takes no more commands: no longer the client's
        // link (commands fail NotConnected or wait for the next one).
        if self.is_current(link) {
            self.shared.set_state(State::Disconnected);
        }
        // The server's going-away notice, with work still in flight.
        if let Some(reason) = draining
            && matches!(reason, CloseReason::Remote { .. })
            && reason.is_graceful()
            && let Some(notice) = self.notice.take()
        {
            let _ = notice.send(reason.clone());
        }
    }

    fn closed(&mut self, _link: &Link, _reason: &CloseReason) {
        self.release();
    }
}

impl Drop for ClientHooks {
    fn drop(&mut self) {
        self.release();
    }
}

/// A jsonlink client: one authenticated link to a server at a time,
/// reconnected in the background per its [`Reconnect`] policy. Cheap to
/// clone; dropping the last clone closes the link gracefully and stops the
/// background task.
///
/// Requests are never replayed: those in flight when a link drops fail
/// with [`Error::ConnectionLost`]; those made while disconnected — or
/// while the link is closing, which starts nothing more — fail with
/// [`Error::NotConnected`] (or wait, see
/// [`ClientBuilder::wait_for_reconnect`]). [`Error::Closed`] means the
/// client itself was closed.
///
/// When the server closes gracefully (its going-away notice, e.g.
/// [`Server::shutdown`](crate::Server::shutdown)) while requests are in
/// flight either way, the client does not wait for them: it starts
/// reconnecting at once (per its policy, unless that is
/// [`Reconnect::Never`]) while the old link drains in the background — its
/// requests still get their answers, its handlers may still send on it —
/// so the next link's [`Event::Authenticated`] may come before the old
/// one's [`Event::Closed`].
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    shared: Arc<ClientShared>,
    events: EventStream,
    order_tx: async_channel::Sender<CloseOrder>,
    handlers: Handlers,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.order_tx.close();
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.inner.shared.addr)
            .field("state", &*self.inner.shared.state())
            .finish()
    }
}

impl Client {
    /// Starts configuring a client of the server at `addr`, verified as
    /// `server_name` by `tls`.
    pub fn builder(
        rt: Arc<dyn Runtime>,
        addr: SocketAddr,
        tls: impl Into<Arc<rustls::ClientConfig>>,
        server_name: ServerName<'static>,
        secret: Secret,
        identity: Identity,
    ) -> ClientBuilder {
        ClientBuilder::new(rt, addr, tls, server_name, secret, identity)
    }

    /// The handlers by op (the server can send requests and messages too).
    pub fn handlers(&self) -> &Handlers {
        &self.inner.handlers
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.inner.shared.ctx.counters.snapshot()
    }

    /// The current authenticated link, if any (`None` once it has begun
    /// closing).
    pub fn link(&self) -> Option<Link> {
        match &*self.inner.shared.state() {
            State::Connected(l) if l.takes_commands() => Some(l.clone()),
            _ => None,
        }
    }

    /// Whether a link is authenticated now and takes commands.
    pub fn is_connected(&self) -> bool {
        self.link().is_some()
    }

    /// Whether the client has stopped for good.
    pub fn is_closed(&self) -> bool {
        matches!(*self.inner.shared.state(), State::Closed(_))
    }

    /// Waits until a link is authenticated. Fails with [`Error::Closed`]
    /// if the client is closed first, with [`Error::Auth`] if the server
    /// rejected our credentials, and with [`Error::TlsConfig`] (at once,
    /// on the first attempt) if the TLS handshake fails on a configuration
    /// error before the client has ever authenticated: an unknown CA, a
    /// certificate not valid for the server name, … (its text says what
    /// to fix); the client has then stopped. After a first authentication
    /// the same error is only reported ([`Event::Error`], once per outage)
    /// and retried, and this waits on.
    pub async fn wait_connected(&self) -> Result<Link, Error> {
        self.current_link(&mut Wait::Forever, true, None).await
    }

    /// The current link, other than `closing` (one that refused a command
    /// because it is closing: until it ends, the client has no usable
    /// link).
    async fn current_link(
        &self,
        deadline: &mut Wait,
        wait: bool,
        closing: Option<&Link>,
    ) -> Result<Link, Error> {
        let shared = &self.inner.shared;
        // The state as it is now; `None` means wait for a change.
        let check = || -> Option<Result<Link, Error>> {
            match &*shared.state() {
                State::Connected(l)
                    if l.takes_commands()
                        && !closing.is_some_and(|c| Arc::ptr_eq(&c.inner, &l.inner)) =>
                {
                    Some(Ok(l.clone()))
                }
                State::Closed(r) => Some(Err(closed_error(r))),
                // Between the owner's close() and the end: Closed already.
                _ if shared.closing.load(Ordering::Acquire) => Some(Err(Error::Closed)),
                _ if !wait => Some(Err(Error::NotConnected)),
                _ => None,
            }
        };
        loop {
            // Fast path (every command on a connected client): no listener.
            if let Some(r) = check() {
                return r;
            }
            // Register, then re-check, so a change in between is not missed.
            let listener = shared.changed.listen();
            if let Some(r) = check() {
                return r;
            }
            let deadline = match *deadline {
                Wait::Forever => None,
                Wait::Until(d) => Some(d),
                // Read the clock only when about to wait: the fast path
                // (a connected client) needs no deadline.
                Wait::For(t) => {
                    let d = deadline_after(shared.rt.now(), t);
                    *deadline = Wait::Until(d);
                    Some(d)
                }
            };
            match deadline {
                None => listener.await,
                Some(d) => {
                    if with_deadline(&*shared.rt, d, listener).await.is_none() {
                        return Err(Error::Timeout);
                    }
                }
            }
        }
    }

    /// The link for a command due by `deadline` (not `closing`).
    async fn link_for(&self, deadline: &mut Wait, closing: Option<&Link>) -> Result<Link, Error> {
        let wait = self.inner.shared.wait_for_reconnect;
        self.current_link(deadline, wait, closing).await
    }

    /// A command failed on `link` with `e`. [`Error::Closed`] there means
    /// the link is closing (a close from either side, or a protocol error)
    /// and [`Error::NotConnected`] that it has ended; either way nothing
    /// was sent. If the owner closed the client, that is [`Error::Closed`];
    /// otherwise there is no link for now: in wait-for-reconnect mode the
    /// command may go to the next link (`Ok(link)`: the one to skip), else
    /// it fails with [`Error::NotConnected`].
    fn retry_after(&self, link: Link, e: Error) -> Result<Link, Error> {
        let shared = &self.inner.shared;
        match e {
            Error::Closed | Error::NotConnected => {
                if shared.closing.load(Ordering::Acquire) {
                    Err(Error::Closed)
                } else if shared.wait_for_reconnect {
                    Ok(link)
                } else {
                    Err(Error::NotConnected)
                }
            }
            e => Err(e),
        }
    }

    /// How long a command without its own timeout waits for a link.
    fn default_wait(&self) -> Wait {
        Wait::For(self.inner.shared.config.request_timeout)
    }

    /// Sends a message on the current link.
    pub async fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        let body = serde_json::value::to_raw_value(value).map_err(Error::Encode)?;
        self.send_raw(Arc::from(body)).await
    }

    /// Sends a message given as raw JSON.
    pub async fn send_raw(&self, body: Arc<RawValue>) -> Result<(), Error> {
        let mut deadline = self.default_wait();
        let mut closing = None;
        loop {
            let link = self.link_for(&mut deadline, closing.as_ref()).await?;
            match link.send_raw(body.clone()).await {
                Err(e) => closing = Some(self.retry_after(link, e)?),
                Ok(()) => return Ok(()),
            }
        }
    }

    /// Pings the server with optional data (see [`Link::ping`]).
    pub async fn ping<T: Serialize + ?Sized>(&self, data: Option<&T>) -> Result<(), Error> {
        let mut deadline = self.default_wait();
        let mut closing = None;
        loop {
            let link = self.link_for(&mut deadline, closing.as_ref()).await?;
            match link.ping(data).await {
                Err(e) => closing = Some(self.retry_after(link, e)?),
                Ok(()) => return Ok(()),
            }
        }
    }

    /// Sends a request with the default timeout and deserializes the
    /// response into `R` (`serde_json::Value` for untyped).
    pub async fn request<R, T>(&self, value: &T) -> Result<R, Error>
    where
        R: DeserializeOwned,
        T: Serialize + ?Sized,
    {
        let timeout = self.inner.shared.config.request_timeout;
        self.request_with_timeout(value, timeout).await
    }

    /// [`request`](Self::request) with its own timeout (which also bounds
    /// the wait for a link in wait-for-reconnect mode); one of about 30
    /// years or more (`Duration::MAX`) means none.
    pub async fn request_with_timeout<R, T>(&self, value: &T, timeout: Duration) -> Result<R, Error>
    where
        R: DeserializeOwned,
        T: Serialize + ?Sized,
    {
        let body = serde_json::value::to_raw_value(value).map_err(Error::Encode)?;
        let payload = self.request_raw(body, Some(timeout)).await?;
        payload.parse().map_err(Error::Decode)
    }

    /// Sends a request given as raw JSON; the response as raw JSON.
    pub async fn request_raw(
        &self,
        body: Box<RawValue>,
        timeout: Option<Duration>,
    ) -> Result<Payload, Error> {
        let timeout = timeout.unwrap_or(self.inner.shared.config.request_timeout);
        let deadline = deadline_after(self.inner.shared.rt.now(), timeout);
        let mut closing = None;
        let mut body = Some(body);
        loop {
            let link = self
                .link_for(&mut Wait::Until(deadline), closing.as_ref())
                .await?;
            let Some(this) = body.take() else {
                return Err(Error::NotConnected);
            };
            // Kept for another link only where commands wait for one.
            if self.inner.shared.wait_for_reconnect {
                body = Some(this.clone());
            }
            match link.request_by(this, deadline).await {
                Err(e) => closing = Some(self.retry_after(link, e)?),
                ok => return ok,
            }
        }
    }

    /// The next event; `None` when the event stream is off. Messages and
    /// requests no handler takes arrive here only if the builder declared
    /// a consumer ([`LinkOptions::consume_events`]).
    pub async fn next_event(&self) -> Option<Event> {
        self.inner.events.next().await
    }

    /// Waits for the next event, then moves it and up to `max - 1` more
    /// that are already waiting into `out` (appended); returns how many, 0
    /// when the event stream is off or has ended. For consumers of many
    /// events: one wait per batch instead of one per event, as tokio's
    /// `mpsc::Receiver::recv_many`.
    pub async fn next_events(&self, out: &mut Vec<Event>, max: usize) -> usize {
        self.inner.events.next_many(out, max).await
    }

    /// The next event if one is waiting.
    pub fn try_next_event(&self) -> Option<Event> {
        self.inner.events.try_next()
    }

    /// Waits for the next event of `kind`, discarding others.
    pub async fn wait_for(&self, kind: EventKind) -> Option<Event> {
        self.inner.events.wait_for(kind).await
    }

    /// Closes gracefully with the configured close timeout; see
    /// [`close_by`](Self::close_by).
    pub async fn close(&self) {
        let shared = &self.inner.shared;
        let deadline = deadline_after(shared.rt.now(), shared.config.close_timeout);
        self.close_by(deadline).await;
    }

    /// Closes gracefully: sends a close frame, lets requests in flight
    /// finish until `deadline` (the rest fail with
    /// [`Error::ShuttingDown`]), and stops reconnecting. During a reconnect
    /// backoff it stops at once, and callers waiting for a link get
    /// [`Error::Closed`]. Links still draining after a going-away notice
    /// get the same deadline. Returns when the client has stopped (those
    /// links included), or shortly after `deadline` (the link's linger
    /// time at most). A deadline about 30 years ahead or more is none.
    pub async fn close_by(&self, deadline: Instant) {
        let shared = &self.inner.shared;
        let deadline = clamp_deadline(shared.rt.now(), deadline);
        shared.closing.store(true, Ordering::Release);
        let _ = self.inner.order_tx.try_send(CloseOrder {
            reason: "client closed",
            deadline,
        });
        let stopped = async {
            loop {
                let listener = shared.changed.listen();
                if matches!(*shared.state(), State::Closed(_)) {
                    return;
                }
                listener.await;
            }
        };
        let until = deadline_after(deadline, shared.ctx.options.linger);
        let _ = with_deadline(&*shared.rt, until, stopped).await;
    }
}
