//! [`Client`]: one link to a server at a time, reconnected by a supervisor
//! task; its [`ClientBuilder`] and connect [`Target`].

mod builder;
mod hooks;
mod shared;
mod supervisor;
mod target;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use jsonlink_proto::{Identity, RawJson, Secret};
use rustls_pki_types::ServerName;
use serde::Serialize;
use serde_json::value::RawValue;

pub use builder::ClientBuilder;
pub use target::Target;

use crate::config::LinkOptions;
use crate::deadline::{clamp_deadline, deadline_after, with_deadline};
use crate::dispatch::Handlers;
use crate::error::Error;
use crate::event::{EventStream, event_stream_methods};
use crate::link::{CloseOrder, Link, request_methods, send_methods};
use crate::reconnect::Reconnect;
use crate::runtime::Runtime;
use crate::stats::Stats;
use shared::{ClientShared, State, closed_error};

#[cfg(doc)]
use crate::Event;

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
/// client itself was closed. To restore what a new link needs (a
/// subscription, state the server keeps per link), give the builder an
/// [`on_connect`](ClientBuilder::on_connect) hook.
///
/// When the server closes gracefully (its going-away notice, e.g.
/// [`Server::shutdown`](crate::Server::shutdown)) while requests are in
/// flight either way, the client does not wait for them: it starts
/// reconnecting at once (per its policy, unless that is
/// [`Reconnect::Never`]) while the old link drains in the background — its
/// requests still get their answers, its handlers may still send on it —
/// so the next link's [`Event::Authenticated`] may come before the old
/// one's [`Event::Closed`].
///
/// # Errors
///
/// Every command may fail with [`Error::NotConnected`] (no link now: the
/// client is connecting, backing off, or its link is closing), with
/// [`Error::Timeout`] instead in wait-for-reconnect mode when no link
/// came in time, and, once the client has stopped, with [`Error::Closed`]
/// — or the error it stopped on ([`Error::Auth`], [`Error::TlsConfig`],
/// [`Error::InvalidTarget`]). Each method lists what it adds.
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
            .field("server", &format_args!("{}", self.inner.shared.target))
            .field("state", &*self.inner.shared.state())
            .finish()
    }
}

impl Client {
    /// Starts configuring a client of the server at `target` (a
    /// [`SocketAddr`](std::net::SocketAddr), a list of them, `"host:port"`,
    /// `(host, port)`: see [`Target`]), whose certificate `tls` checks for
    /// `server_name` — or, given `None`, for the target's own
    /// [`server_name`](Target::server_name) (the host). Every other option
    /// has its default: reconnect with [`Reconnect::default`] (exponential
    /// backoff, full jitter), commands while disconnected fail at once
    /// with [`Error::NotConnected`].
    pub fn builder(
        rt: Arc<dyn Runtime>,
        target: impl Into<Target>,
        tls: impl Into<Arc<rustls::ClientConfig>>,
        server_name: impl Into<Option<ServerName<'static>>>,
        secret: Secret,
        identity: Identity,
    ) -> ClientBuilder {
        ClientBuilder {
            rt,
            target: target.into(),
            tls: crate::certs::require_ems_client(tls.into()),
            server_name: server_name.into(),
            config: jsonlink_proto::Config::new(secret, identity),
            options: LinkOptions::default(),
            handlers: Handlers::new(),
            reconnect: Reconnect::default(),
            wait_for_reconnect: false,
            on_connect: None,
            observer: None,
        }
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
    /// closing, and while an [`on_connect`](ClientBuilder::on_connect)
    /// hook runs on a new one).
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

    /// Waits until a link is authenticated (and its
    /// [`on_connect`](ClientBuilder::on_connect) hook has returned).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the client is closed first; [`Error::Auth`] if
    /// the server rejected our credentials; [`Error::InvalidTarget`] if
    /// there is nothing to connect to; [`Error::TlsConfig`] (at once, on
    /// the first attempt) if the TLS handshake fails on a configuration
    /// error before the client has ever authenticated: an unknown CA, a
    /// certificate not valid for the server name, … (its text says what
    /// to fix). The client has then stopped. After a first authentication
    /// the same TLS error is only reported ([`Event::Error`], once per
    /// outage) and retried, and this waits on.
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

    /// Runs `command` on the current link (waiting for one until
    /// `deadline` in wait-for-reconnect mode), and again on the next link
    /// if this one turns out to be closing and the mode waits.
    async fn on_link<T, F, Fut>(&self, mut deadline: Wait, mut command: F) -> Result<T, Error>
    where
        F: FnMut(Link) -> Fut,
        // The link comes back with the outcome, for the retry.
        Fut: Future<Output = (Link, Result<T, Error>)>,
    {
        let wait = self.inner.shared.wait_for_reconnect;
        let mut closing = None;
        loop {
            let link = self
                .current_link(&mut deadline, wait, closing.as_ref())
                .await?;
            match command(link).await {
                (link, Err(e)) => closing = Some(self.retry_after(link, e)?),
                (_, done) => return done,
            }
        }
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

    send_methods! {
        /// Sends a message on the current link (see [`Link::send`]).
        ///
        /// # Errors
        ///
        /// Those of every command (see [Errors](Self#errors)), and
        /// [`Error::Encode`] if `value` does not serialize,
        /// [`Error::FrameTooLarge`] if the frame could exceed the server's
        /// limit.
    }

    /// Sends a message given as raw JSON.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), without [`Error::Encode`].
    pub async fn send_raw(&self, body: Arc<RawValue>) -> Result<(), Error> {
        self.on_link(self.default_wait(), |link| {
            let body = body.clone();
            async move {
                let sent = link.send_raw(body).await;
                (link, sent)
            }
        })
        .await
    }

    /// Pings the server with optional data (see [`Link::ping`]).
    ///
    /// # Errors
    ///
    /// Those of every command (see [Errors](Self#errors)), and
    /// [`Error::Encode`] if `data` does not serialize, [`Error::Send`] if
    /// it is not a JSON object.
    pub async fn ping<T: Serialize + ?Sized>(&self, data: Option<&T>) -> Result<(), Error> {
        self.on_link(self.default_wait(), |link| async move {
            let pinged = link.ping(data).await;
            (link, pinged)
        })
        .await
    }

    request_methods! {
        ///
        /// # Errors
        ///
        /// Those of every command (see [Errors](Self#errors)), and those of
        /// [`Link::request_raw`]: [`Error::Timeout`], [`Error::ConnectionLost`],
        /// [`Error::ShuttingDown`], [`Error::Busy`], [`Error::FrameTooLarge`],
        /// and the server's answers [`Error::NoHandler`],
        /// [`Error::HandlerDropped`], [`Error::Remote`].
    }

    /// The default timeout of requests.
    fn request_timeout(&self) -> Duration {
        self.inner.shared.config.request_timeout
    }

    fn clock(&self) -> &dyn Runtime {
        &*self.inner.shared.rt
    }

    /// A request due by `deadline`, on the current link (or the next, in
    /// wait-for-reconnect mode).
    async fn request_by(&self, body: Box<RawValue>, deadline: Instant) -> Result<RawJson, Error> {
        // Kept for another link only where commands wait for one.
        let keep = self.inner.shared.wait_for_reconnect;
        let mut body = Some(body);
        self.on_link(Wait::Until(deadline), |link| {
            let this = body.take();
            if keep {
                body.clone_from(&this);
            }
            async move {
                let answered = match this {
                    Some(this) => link.request_by(this, deadline).await,
                    None => Err(Error::NotConnected),
                };
                (link, answered)
            }
        })
        .await
    }

    event_stream_methods!();

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
