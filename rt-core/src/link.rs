//! [`Link`]: a cheap handle to one connection, talking to its driver task
//! through a bounded queue.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use jsonlink_proto::{Authenticated, Identity, RawJson};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::deadline::with_deadline;
use crate::error::Error;
use crate::queue::{PushError, Queue};
use crate::runtime::Runtime;

/// A command from a handle to a link's driver.
pub(crate) enum Command {
    /// A message. Fire-and-forget: the handle checked the link before
    /// queueing it; one the core refuses after all (it began closing
    /// meanwhile) is dropped, like any message queued just before a close.
    Send { body: Arc<RawValue> },
    /// A request with an absolute deadline.
    Request {
        body: Box<RawValue>,
        deadline: Instant,
        reply: oneshot::Sender<Result<RawJson, Error>>,
    },
    /// A ping with optional data (a JSON object); `ack` learns whether the
    /// core accepted it.
    Ping {
        data: Option<Box<RawValue>>,
        ack: oneshot::Sender<Result<(), Error>>,
    },
    /// Close this link gracefully.
    Close { reason: String },
    /// A command for a relayed client's virtual link, queued on its relay
    /// link's one queue (PROTOCOL.md §18): the relay link's driver gives
    /// it to the core as the `client_*` command for `client`.
    Relayed {
        client: jsonlink_proto::ClientId,
        cmd: Box<Self>,
    },
}

impl Command {
    /// The command itself, without a relayed client's tag.
    pub(crate) fn unwrap_relayed(&self) -> &Self {
        match self {
            Self::Relayed { cmd, .. } => cmd.unwrap_relayed(),
            c => c,
        }
    }

    /// As [`unwrap_relayed`](Self::unwrap_relayed), by value.
    pub(crate) fn into_unwrapped(self) -> Self {
        match self {
            Self::Relayed { cmd, .. } => cmd.into_unwrapped(),
            c => c,
        }
    }
}

/// Where a relayed client's virtual link sends its commands: its relay
/// link, tagged with the client id.
#[derive(Clone)]
pub(crate) struct RelayRoute {
    pub(crate) relay: Link,
    pub(crate) client: jsonlink_proto::ClientId,
}

/// A close order from the owner (server shutdown, client close). Sent on a
/// separate channel so a full command queue cannot delay it; all its
/// senders dropped means the owner is gone, which closes the link too.
#[derive(Debug, Clone)]
pub(crate) struct CloseOrder {
    pub(crate) reason: &'static str,
    pub(crate) deadline: Instant,
}

pub(crate) struct LinkInner {
    pub(crate) id: u64,
    pub(crate) peer_addr: SocketAddr,
    pub(crate) auth: OnceLock<Authenticated>,
    pub(crate) cmd: Queue<Command>,
    pub(crate) rt: Arc<dyn Runtime>,
    pub(crate) request_timeout: Duration,
    /// The link's protocol configuration (for checks before queueing).
    pub(crate) config: Arc<jsonlink_proto::Config>,
    /// What the core takes now ([`TAKES_ALL`], [`TAKES_MESSAGES`] or
    /// [`TAKES_NOTHING`]); kept by the driver so handles can refuse early.
    pub(crate) accepting: std::sync::atomic::AtomicU8,
    /// On a server, the server (weakly: see [`Link::server`]).
    pub(crate) server: Option<std::sync::Weak<crate::server::ServerInner>>,
    /// This link's own counters.
    pub(crate) counters: crate::stats::LinkCounters,
    /// Set when a [`Multiplexer`](crate::Multiplexer) owns the link: its
    /// entry and the Multiplexer's id for it.
    pub(crate) tag: OnceLock<MuxTag>,
    /// Set on a relayed client's virtual link: its commands go through
    /// the relay link's queue.
    pub(crate) relay: Option<RelayRoute>,
}

/// Which [`Multiplexer`](crate::Multiplexer) entry a link belongs to, and
/// the Multiplexer's own id for it.
#[derive(Debug, Clone)]
pub(crate) struct MuxTag {
    pub(crate) id: u64,
    pub(crate) entry: Arc<str>,
    /// Weak, as [`Link::server`]: links never keep the Multiplexer alive.
    pub(crate) mux: std::sync::Weak<crate::multiplexer::MuxInner>,
}

/// Not authenticated yet, or ended: the core takes no command.
pub(crate) const TAKES_NOTHING: u8 = 0;
/// Draining after a graceful close (either side's): messages only, so
/// that handlers still running get what they send through (PROTOCOL.md
/// §13.3); no new requests or pings.
pub(crate) const TAKES_MESSAGES: u8 = 1;
/// Authenticated and not closing.
pub(crate) const TAKES_ALL: u8 = 2;

/// A handle to one link: an authenticated jsonlink session over one TLS
/// connection (on a server: one client; on a client: the current link to
/// the server). Cheap to clone; commands go to the
/// link's driver task through a queue bounded in commands and in bytes
/// ([`LinkOptions::command_capacity`](crate::LinkOptions::command_capacity),
/// [`command_bytes`](crate::LinkOptions::command_bytes)), so a slow peer
/// makes them wait (backpressure) instead of queueing without bound.
///
/// Holding a `Link` does not keep the connection open: when it closes,
/// commands fail with [`Error::Closed`] or [`Error::NotConnected`].
#[derive(Clone)]
pub struct Link {
    pub(crate) inner: Arc<LinkInner>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("id", &self.id())
            .field("mux_id", &self.inner.tag.get().map(|t| t.id))
            .field("entry", &self.entry())
            .field("peer_addr", &self.inner.peer_addr)
            .field("peer", &self.peer())
            .field("via_relay", &self.via_relay())
            .finish()
    }
}

impl Link {
    /// The link id: assigned by the server, counting from 1 on each
    /// server, shared by direct links, relay links and relayed clients and
    /// never reused (on a client, the id the server announced; 0 before
    /// authentication). Unique only within one server: links of a
    /// [`Multiplexer`](crate::Multiplexer) also have its own id,
    /// [`mux_id`](Self::mux_id), unique across all its entries.
    pub fn id(&self) -> u64 {
        self.inner
            .auth
            .get()
            .map_or(self.inner.id, |a| a.connection_id)
    }

    /// The id a [`Multiplexer`](crate::Multiplexer) gave this link
    /// (unique across all its entries, never reused; see
    /// [`MuxLinkId`](crate::MuxLinkId)); `None` outside a Multiplexer.
    pub fn mux_id(&self) -> Option<crate::MuxLinkId> {
        self.inner.tag.get().map(|t| crate::MuxLinkId(t.id))
    }

    /// The name of the [`Multiplexer`](crate::Multiplexer) entry this link
    /// belongs to; `None` outside a Multiplexer.
    pub fn entry(&self) -> Option<&str> {
        self.inner.tag.get().map(|t| &*t.entry)
    }

    /// The [`Multiplexer`](crate::Multiplexer) this link belongs to, so a
    /// handler can reach its other entries and links
    /// (`link.multiplexer().map(|m| m.broadcast(&note))`); `None` outside
    /// a Multiplexer and once the application has dropped its last handle
    /// of it (links keep only a weak reference, as with
    /// [`server`](Self::server)).
    pub fn multiplexer(&self) -> Option<crate::Multiplexer> {
        self.inner
            .tag
            .get()
            .and_then(|t| crate::Multiplexer::from_weak(&t.mux))
    }

    /// This link's own counters (a server's or client's
    /// [`Stats`](crate::Stats) add up all its links).
    pub fn stats(&self) -> crate::LinkStats {
        self.inner.counters.snapshot()
    }

    /// The peer's socket address (for a relayed client, the address its
    /// relay reported; see [`via_relay`](Self::via_relay)).
    pub fn peer_addr(&self) -> SocketAddr {
        self.inner.peer_addr
    }

    /// The identity the peer announced, once authenticated.
    pub fn peer(&self) -> Option<&Identity> {
        self.inner.auth.get().map(|a| &a.peer)
    }

    /// The handshake outcome, once authenticated.
    pub fn auth(&self) -> Option<&Authenticated> {
        self.inner.auth.get()
    }

    /// On a server, the [`Server`](crate::Server) this link belongs to, so
    /// a handler can broadcast or reach other links:
    /// `link.server().map(|s| s.broadcast(&note))`. `None` on a client, and
    /// once the application has dropped its last `Server` handle: links
    /// (and the handlers holding them) keep only a weak reference, so they
    /// never keep the listener alive. Hold the returned handle only as long
    /// as needed, for the same reason.
    pub fn server(&self) -> Option<crate::Server> {
        self.inner
            .server
            .as_ref()
            .and_then(crate::Server::from_weak)
    }

    /// Whether the link's driver has ended (for a relayed client: whether
    /// its virtual link has ended).
    pub fn is_closed(&self) -> bool {
        self.inner.cmd.is_closed()
    }

    /// For a client reached through a relay (PROTOCOL.md §18): the link id
    /// of the relay's own link to this server; `None` for a direct link.
    /// A relayed client's [`peer_addr`](Self::peer_addr) is the address
    /// the relay reported in its `join` (the relay's own address if that
    /// did not parse).
    pub fn via_relay(&self) -> Option<u64> {
        self.inner.relay.as_ref().map(|r| r.relay.id())
    }

    /// The queue this link's commands go to: its own, or its relay link's.
    fn queue(&self) -> &Queue<Command> {
        match &self.inner.relay {
            Some(r) => &r.relay.inner.cmd,
            None => &self.inner.cmd,
        }
    }

    /// `cmd` as queued on [`queue`](Self::queue): tagged with the client
    /// id on a relayed client's link.
    fn wrap(&self, cmd: Command) -> Command {
        match &self.inner.relay {
            Some(r) => Command::Relayed {
                client: r.client,
                cmd: Box::new(cmd),
            },
            None => cmd,
        }
    }

    send_methods! {
        /// Sends a fire-and-forget message. Returns once the message is queued
        /// on the link; waits while the link's command queue is full (the
        /// outbound buffer is at its bound: backpressure). As with any
        /// fire-and-forget message, one queued just before the link drops is
        /// lost.
        ///
        /// While the link drains after a graceful close — ours
        /// ([`Server::shutdown`](crate::Server::shutdown),
        /// [`Client::close`](crate::Client::close), [`close`](Self::close)) or
        /// the peer's — messages are still sent, so a handler still running
        /// (a job's last `progress`, its `done`) reaches the peer, which keeps
        /// reading until it ends. The link drains while requests are in flight
        /// either way (a request's handler sending before it answers is
        /// covered), until the close deadline at most.
        ///
        /// # Errors
        ///
        /// Nothing is sent on any of them: [`Error::Encode`] if `value` does
        /// not serialize; [`Error::Send`] with
        /// [`SendError::TooDeep`](jsonlink_proto::SendError::TooDeep) for a
        /// value nested deeper than `max_depth`, or
        /// [`SendError::DuplicateOp`](jsonlink_proto::SendError::DuplicateOp)
        /// for a body with `op` twice (the peer would refuse either);
        /// [`Error::FrameTooLarge`] if the frame could exceed the peer's
        /// limit; [`Error::NotConnected`] if the link has ended,
        /// [`Error::Closed`] while it is ending.
    }

    /// Sends a message given as raw JSON (see [`send`](Self::send)).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), without [`Error::Encode`].
    pub async fn send_raw(&self, body: Arc<RawValue>) -> Result<(), Error> {
        self.check_send(&body)?;
        let weight = body.get().len();
        self.queue()
            .push(self.wrap(Command::Send { body }), weight)
            .await
            .map_err(|_| Error::NotConnected)
    }

    /// Whether the link takes commands: authenticated and not closing (kept
    /// by its driver).
    pub(crate) fn takes_commands(&self) -> bool {
        self.takes() == TAKES_ALL
    }

    fn takes(&self) -> u8 {
        self.inner
            .accepting
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Refuses a message the link cannot take, before queueing it.
    fn check_send(&self, body: &RawValue) -> Result<(), Error> {
        if self.takes() < TAKES_MESSAGES {
            return Err(if self.inner.cmd.is_closed() {
                Error::NotConnected
            } else {
                Error::Closed
            });
        }
        // What the core would refuse when it takes the message from the
        // queue, refused now, where the caller can still see it.
        self.inner
            .config
            .check_body(body)
            .map_err(Error::from_send)?;
        if let Some(auth) = self.auth() {
            let size = auth.message_frame_bound(body.get().len());
            if size > auth.peer_max_frame {
                return Err(Error::FrameTooLarge {
                    size,
                    limit: auth.peer_max_frame,
                });
            }
        }
        Ok(())
    }

    /// Sends a ping carrying `data` (a JSON object, like zetta-rpc's
    /// `pingDataObject`), or a bare ping for `None`. The peer sees
    /// [`Event::Ping`](crate::Event::Ping) and answers with a pong
    /// ([`Event::Pong`](crate::Event::Pong) here). Not on a relayed
    /// client's link ([`via_relay`](Self::via_relay)): PROTOCOL.md §18
    /// carries no pings for relayed clients, so it fails with
    /// [`Error::Send`] ([`SendError::NotRelay`](jsonlink_proto::SendError::NotRelay)).
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] if `data` does not serialize; [`Error::Send`] if
    /// it is not a JSON object; [`Error::Closed`] while the link is
    /// closing (it sends no pings then); [`Error::NotConnected`] if it has
    /// ended.
    pub async fn ping<T: Serialize + ?Sized>(&self, data: Option<&T>) -> Result<(), Error> {
        let data = data
            .map(serde_json::value::to_raw_value)
            .transpose()
            .map_err(Error::Encode)?;
        let (tx, rx) = oneshot::channel();
        let weight = data.as_ref().map_or(0, |d| d.get().len());
        self.queue()
            .push(self.wrap(Command::Ping { data, ack: tx }), weight)
            .await
            .map_err(|_| Error::NotConnected)?;
        rx.await.unwrap_or(Err(Error::NotConnected))
    }

    /// Queues a message without waiting; `false` if the command queue is
    /// full or the link is gone (used by broadcast).
    pub(crate) fn try_send_raw(&self, body: Arc<RawValue>) -> bool {
        let weight = body.get().len();
        if self.inner.relay.is_some() && !self.takes_commands() {
            return false;
        }
        self.queue()
            .try_push(self.wrap(Command::Send { body }), weight)
            .is_ok()
    }

    request_methods! {
        ///
        /// # Errors
        ///
        /// Before anything is sent: [`Error::NotConnected`] if the link has
        /// ended, [`Error::Closed`] while it is closing (it starts no new
        /// requests), [`Error::Busy`] at the in-flight limit,
        /// [`Error::FrameTooLarge`] past the peer's frame limit. After it was
        /// sent, exactly one of: [`Error::Timeout`] (no answer in time, also
        /// while waiting for room in the link's queue),
        /// [`Error::ConnectionLost`] (the link ended first),
        /// [`Error::ShuttingDown`] (we closed the link and its close deadline
        /// passed), or the peer's error answer: [`Error::NoHandler`],
        /// [`Error::HandlerDropped`], [`Error::Remote`].
    }

    /// The default timeout of requests.
    fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    fn clock(&self) -> &dyn Runtime {
        &*self.inner.rt
    }

    pub(crate) async fn request_by(
        &self,
        body: Box<RawValue>,
        deadline: Instant,
    ) -> Result<RawJson, Error> {
        let (tx, rx) = oneshot::channel();
        let weight = body.get().len();
        if self.inner.relay.is_some() && self.inner.cmd.is_closed() {
            return Err(Error::NotConnected);
        }
        let cmd = self.wrap(Command::Request {
            body,
            deadline,
            reply: tx,
        });
        // Fast path: room in the command queue. The core times the
        // request out at `deadline` (and the driver fails a request it holds
        // back for backpressure at its deadline), so no timer is needed here.
        let cmd = match self.queue().try_push(cmd, weight) {
            Ok(()) => return rx.await.unwrap_or(Err(Error::ConnectionLost)),
            Err(PushError::Closed(_)) => return Err(Error::NotConnected),
            Err(PushError::Full(cmd)) => cmd,
        };
        // The queue is full (backpressure): bound the wait for room too.
        let exchange = async {
            self.queue()
                .push(cmd, weight)
                .await
                .map_err(|_| Error::NotConnected)?;
            rx.await.unwrap_or(Err(Error::ConnectionLost))
        };
        with_deadline(&*self.inner.rt, deadline, exchange)
            .await
            .unwrap_or(Err(Error::Timeout))
    }

    /// Closes this link gracefully: a close frame, then requests in flight
    /// get up to the close timeout to finish (messages may still be sent
    /// meanwhile, see [`send`](Self::send)).
    pub async fn close(&self, reason: &str) {
        if self.inner.relay.is_some() && self.inner.cmd.is_closed() {
            return;
        }
        let _ = self
            .queue()
            .push(
                self.wrap(Command::Close {
                    reason: reason.to_owned(),
                }),
                reason.len(),
            )
            .await;
    }
}

/// A typed request: `value` encoded, sent by `send`, and its answer
/// decoded into `R`.
pub(crate) async fn typed_request<R, T, F, Fut>(value: &T, send: F) -> Result<R, Error>
where
    R: DeserializeOwned,
    T: Serialize + ?Sized,
    F: FnOnce(Box<RawValue>) -> Fut,
    Fut: Future<Output = Result<RawJson, Error>>,
{
    let body = serde_json::value::to_raw_value(value).map_err(Error::Encode)?;
    send(body).await?.parse().map_err(Error::Decode)
}

/// `send` and `send_op` of [`Link`] and [`Client`](crate::Client), over
/// their own `send_raw`; the attributes given are `send`'s docs.
macro_rules! send_methods {
    ($(#[$doc:meta])*) => {
        $(#[$doc])*
        pub async fn send<T: serde::Serialize + ?Sized>(
            &self,
            value: &T,
        ) -> Result<(), $crate::Error> {
            let body = serde_json::value::to_raw_value(value).map_err($crate::Error::Encode)?;
            self.send_raw(std::sync::Arc::from(body)).await
        }

        /// Sends the message `{"op": op, <args>}` with typed arguments
        /// (PROTOCOL.md §11.5; see [`call`](Self::call) for the shape): a
        /// `handle_message` handler on the other side gets exactly `args`.
        ///
        /// # Errors
        ///
        /// As [`send`](Self::send).
        pub async fn send_op<A: serde::Serialize + ?Sized>(
            &self,
            op: &str,
            args: &A,
        ) -> Result<(), $crate::Error> {
            let body = $crate::RawJson::call(op, args).map_err($crate::Error::Encode)?;
            self.send_raw(std::sync::Arc::from(body.into_raw())).await
        }
    };
}

pub(crate) use send_methods;

/// The request methods of [`Link`] and [`Client`](crate::Client), over
/// their own `request_by(body, deadline)`, `request_timeout()` (the
/// default) and `clock()`; the attributes given are the rest of
/// `request_raw`'s docs (its errors).
macro_rules! request_methods {
    ($(#[$errors:meta])*) => {
        /// Sends a request given as raw JSON; the response as raw JSON.
        /// `timeout` defaults to the configured request timeout.
        $(#[$errors])*
        pub async fn request_raw(
            &self,
            body: Box<serde_json::value::RawValue>,
            timeout: Option<std::time::Duration>,
        ) -> Result<$crate::RawJson, $crate::Error> {
            let timeout = timeout.unwrap_or_else(|| self.request_timeout());
            let deadline = $crate::deadline::deadline_after(self.clock().now(), timeout);
            self.request_by(body, deadline).await
        }

        /// Sends a request with the configured default timeout and
        /// deserializes the response into `R` (`serde_json::Value` for
        /// untyped). A response that does not fit `R` fails only this
        /// call.
        ///
        /// # Errors
        ///
        /// As [`request_raw`](Self::request_raw), and
        /// [`Error::Encode`](crate::Error::Encode) if `value` does not
        /// serialize, [`Error::Decode`](crate::Error::Decode) if the answer
        /// does not fit `R`.
        pub async fn request<R, T>(&self, value: &T) -> Result<R, $crate::Error>
        where
            R: serde::de::DeserializeOwned,
            T: serde::Serialize + ?Sized,
        {
            $crate::link::typed_request(value, |body| self.request_raw(body, None)).await
        }

        /// [`request`](Self::request) with its own timeout (which also
        /// bounds a client's wait for a link in wait-for-reconnect mode);
        /// one of about 30 years or more (`Duration::MAX`) means none: the
        /// request waits for its answer or the end of the link.
        ///
        /// # Errors
        ///
        /// As [`request`](Self::request).
        pub async fn request_with_timeout<R, T>(
            &self,
            value: &T,
            timeout: std::time::Duration,
        ) -> Result<R, $crate::Error>
        where
            R: serde::de::DeserializeOwned,
            T: serde::Serialize + ?Sized,
        {
            $crate::link::typed_request(value, |body| self.request_raw(body, Some(timeout))).await
        }

        /// Calls `op` with typed arguments: sends the request
        /// `{"op": op, <args>}` (PROTOCOL.md §11.5: an object's members
        /// beside `op`, zetta-rpc's flat shape, or `{"op": op, "args":
        /// args}` for any other value) with the configured default timeout,
        /// and deserializes the answer into `R`. A typed handler on the
        /// other side (`handle_request`) gets exactly `args`.
        ///
        /// # Errors
        ///
        /// As [`request`](Self::request).
        pub async fn call<R, A>(&self, op: &str, args: &A) -> Result<R, $crate::Error>
        where
            R: serde::de::DeserializeOwned,
            A: serde::Serialize + ?Sized,
        {
            let body = $crate::RawJson::call(op, args).map_err($crate::Error::Encode)?;
            self.request_raw(body.into_raw(), None)
                .await?
                .parse()
                .map_err($crate::Error::Decode)
        }

        /// [`call`](Self::call) with its own timeout (as
        /// [`request_with_timeout`](Self::request_with_timeout)).
        ///
        /// # Errors
        ///
        /// As [`request`](Self::request).
        pub async fn call_with_timeout<R, A>(
            &self,
            op: &str,
            args: &A,
            timeout: std::time::Duration,
        ) -> Result<R, $crate::Error>
        where
            R: serde::de::DeserializeOwned,
            A: serde::Serialize + ?Sized,
        {
            let body = $crate::RawJson::call(op, args).map_err($crate::Error::Encode)?;
            self.request_raw(body.into_raw(), Some(timeout))
                .await?
                .parse()
                .map_err($crate::Error::Decode)
        }
    };
}

pub(crate) use request_methods;
