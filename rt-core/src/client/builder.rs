//! [`ClientBuilder`]: a client's configuration, and how it starts.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use futures_channel::oneshot;
use rustls_pki_types::ServerName;
use tracing::Instrument as _;

use crate::client::shared::{ClientShared, Fatal, OnConnect, State, closed_error};
use crate::client::supervisor::supervise;
use crate::client::{Client, ClientInner, Target};
use crate::config::{LinkOptions, proto_setters, saturate_durations};
use crate::context::LinkCtx;
use crate::dispatch::Handlers;
use crate::error::Error;
use crate::event::{Event, EventStream};
use crate::link::Link;
use crate::reconnect::Reconnect;
use crate::runtime::Runtime;

/// Configures and starts a [`Client`]; made by [`Client::builder`].
pub struct ClientBuilder {
    pub(super) rt: Arc<dyn Runtime>,
    pub(super) target: Target,
    pub(super) tls: Arc<rustls::ClientConfig>,
    pub(super) server_name: Option<ServerName<'static>>,
    pub(super) config: jsonlink_proto::Config,
    pub(super) options: LinkOptions,
    pub(super) handlers: Handlers,
    pub(super) reconnect: Reconnect,
    pub(super) wait_for_reconnect: bool,
    pub(super) on_connect: Option<OnConnect>,
    pub(crate) observer: Option<Arc<dyn crate::driver::LinkObserver>>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("target", &self.target)
            .field("server_name", &self.server_name)
            .field("config", &self.config)
            .field("options", &self.options)
            .field("reconnect", &self.reconnect)
            .field("wait_for_reconnect", &self.wait_for_reconnect)
            .field("on_connect", &self.on_connect.is_some())
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
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

    /// Runs `hook` on every link right after it authenticates — the first
    /// and each one after a reconnect — to re-subscribe, or to send the
    /// state the server should have, before anything else uses the link.
    ///
    /// The hook runs in a task of its own and gets the new [`Link`] (its
    /// commands work at once). Only once its future has returned does the
    /// link become the client's: until then [`Client::link`] is `None`,
    /// [`Client::wait_connected`] and [`connect`](Self::connect) wait, and
    /// the client's own commands fail with [`Error::NotConnected`] (or
    /// wait, with [`wait_for_reconnect`](Self::wait_for_reconnect)), so
    /// nothing the application sends through the client overtakes what
    /// the hook sends. [`Event::Authenticated`] may arrive while it runs.
    /// A hook that never returns keeps the client from using the link; one
    /// that panics is logged, and the link is the client's anyway. If the
    /// link closes while the hook runs, the client goes on reconnecting
    /// per its policy, and the next link gets the hook again.
    pub fn on_connect<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Link) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_connect = Some(Arc::new(move |link| Box::pin(hook(link))));
        self
    }

    /// Starts the client: connecting (and reconnecting per the policy)
    /// happens in the background; see [`Client::wait_connected`].
    ///
    /// Failures that may pass (a host that does not resolve, connection
    /// refused, a timeout, a dropped link) are retried per the policy and
    /// reported as [`Event::Error`] once per outage. Failures that
    /// retrying cannot fix end the client instead: an invalid target
    /// ([`Error::InvalidTarget`], at once), the server rejecting our
    /// credentials ([`Error::Auth`]), and, until the client has
    /// authenticated once, a TLS configuration error
    /// ([`Error::TlsConfig`]: the server's certificate is from a CA the
    /// client does not trust, not valid for the server name, expired, …;
    /// its text says what to fix). After a first authentication a TLS
    /// configuration error is reported once per outage and retried, so a
    /// fleet of clients rides out a server whose certificate is being
    /// replaced.
    pub fn start(self) -> Client {
        self.spawn(None, false).0
    }

    /// Starts as [`start`](Self::start), with the event stream handed to
    /// the caller instead of kept in the handle (whose `next_event` then
    /// returns `None`): a [`Multiplexer`](crate::Multiplexer) forwards it
    /// without holding the client, so it ends when the client has.
    pub(crate) fn start_detached_events(self) -> (Client, EventStream) {
        let (client, events) = self.spawn(None, true);
        (client, events.unwrap_or_else(|| EventStream::new(None)))
    }

    /// Starts the client and waits for the first link (and its
    /// [`on_connect`](Self::on_connect) hook): the first attempt must
    /// succeed, and later drops reconnect per the policy, as for
    /// [`start`](Self::start).
    ///
    /// # Errors
    ///
    /// The first attempt's failure, after which the client is closed:
    /// [`Error::InvalidTarget`], [`Error::Resolve`], [`Error::Io`] (TCP or
    /// TLS), [`Error::TlsConfig`] (saying what to fix),
    /// [`Error::HandshakeTimeout`], [`Error::Auth`], [`Error::Handshake`];
    /// [`Error::Closed`] if the client's runtime stopped it first.
    pub async fn connect(self) -> Result<Client, Error> {
        let (tx, rx) = oneshot::channel();
        let (client, _) = self.spawn(Some(tx), false);
        match rx.await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Closed),
        }
    }

    fn spawn(
        mut self,
        first: Option<oneshot::Sender<Result<(), Error>>>,
        detach_events: bool,
    ) -> (Client, Option<EventStream>) {
        saturate_durations(&mut self.config);
        let (ctx, events) = LinkCtx::new(
            self.rt.clone(),
            self.handlers.clone(),
            self.options,
            false,
            self.observer.take(),
        );
        let server_name = self.target.tls_name(self.server_name.take());
        let shared = Arc::new(ClientShared {
            rt: self.rt.clone(),
            ctx,
            config: Arc::new(self.config),
            target: self.target,
            tls: self.tls,
            // Unused when there is none: the client then does not start.
            server_name: server_name.as_ref().map_or(
                ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into()),
                Clone::clone,
            ),
            reconnect: self.reconnect,
            wait_for_reconnect: self.wait_for_reconnect,
            on_connect: self.on_connect,
            state: Mutex::new(State::Connecting),
            changed: event_listener::Event::new(),
            first: Mutex::new(first),
            closing: AtomicBool::new(false),
        });
        let (order_tx, order_rx) = async_channel::bounded(1);
        match server_name {
            Ok(_) => {
                let span = tracing::info_span!("jsonlink.client", server = %shared.target);
                self.rt.spawn(Box::pin(
                    supervise(shared.clone(), order_rx).instrument(span),
                ));
            }
            Err(e) => {
                // Nothing to connect to: the client ends before it starts.
                tracing::warn!(error = %e, "client not started");
                let fatal = Fatal::of(&e);
                shared.ctx.emit_lossy(Event::Error {
                    peer_addr: None,
                    error: closed_error(&fatal),
                });
                shared.set_closed(fatal);
                shared.first_outcome(Err(e));
            }
        }
        let (events, detached) = if detach_events {
            (EventStream::new(None), Some(events))
        } else {
            (events, None)
        };
        let client = Client {
            inner: Arc::new(ClientInner {
                shared,
                events,
                order_tx,
                handlers: self.handlers,
            }),
        };
        (client, detached)
    }
}
