//! The driver: one task per link that **owns** its [`Connection`] and its
//! TLS stream, written once as a hand-written [`Future`] so it runs on any
//! executor.
//!
//! Each round of a wake runs five steps, in order (after finishing a
//! delivery that was waiting: room in the event stream, a handler slot):
//!
//! 1. [`take_input`](Driver::take_input): the owner's orders (close);
//!    then the responders' answers are taken, the commands queued by
//!    handles taken all at once and given to the core in order, and the
//!    answers given after them (what a handler sent before it answered
//!    goes out before its answer). A command the core refuses with
//!    `Blocked` is held back with those behind it (they still count
//!    against the queue's bounds, so the queue pushes back on
//!    `send().await`);
//! 2. [`read`](Driver::read): one read into a buffer shared by the
//!    thread's links, handed to `handle_input`/`handle_eof`, only while
//!    `conn.wants_input()` and no delivery is waiting;
//! 3. [`fire_timers`](Driver::fire_timers): what is due now — the core's
//!    timers and request deadlines, and the deadlines of requests held
//!    back (one timer is armed at the earliest of them);
//! 4. [`forward_events`](Driver::forward_events): the core's events to the
//!    dispatcher (handlers by op, the event stream), the request table, or
//!    the link's own lifecycle;
//! 5. [`transmit`](Driver::transmit): write what `poll_transmit` gives
//!    (called only when the write buffer is empty; unwritten bytes stay
//!    across `Pending`), then flush.
//!
//! Then the round publishes what the link takes now and its counters,
//! advances the link's [`Life`], and re-arms the timer. Rounds repeat while
//! any of them made progress, at most [`ROUNDS_PER_WAKE`] times, then the
//! driver yields.
//!
//! After the core closes, the driver delivers its last events, flushes the
//! last bytes (close frame) and closes the TLS stream, bounded by
//! [`LinkOptions::linger`], then releases its slot (hooks), fails leftover
//! commands, emits the final event and ends.

mod inbox;
mod relayed;
mod requests;
mod timer;
mod transport;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use async_channel::Receiver;
use jsonlink_proto::{CloseReason, Connection};
use tracing::Instrument as _;

use crate::config::LinkOptions;
use crate::context::LinkCtx;
use crate::deadline::deadline_after;
use crate::dispatch::Dispatcher;
use crate::error::Error;
use crate::event::Event;
use crate::link::{CloseOrder, Link, LinkInner, TAKES_ALL, TAKES_MESSAGES, TAKES_NOTHING};
use crate::queue::Queue;
use crate::runtime::{BoxStream, Runtime};
use crate::stats::bump;

use inbox::Inbox;
pub(crate) use relayed::Admitted;
use relayed::Virtual;
use requests::Requests;
use timer::Timer;
use transport::Transport;

/// Rounds of work per wake before the driver yields to the executor.
const ROUNDS_PER_WAKE: usize = 32;

/// The owner's view of a link's life: a server keeps its registry, a
/// client its current link. `closed` runs once, before the final event, so
/// counts are back to baseline by the time anyone sees `Closed`; dropping
/// the hooks must release whatever they hold too (the driver may be
/// dropped by a runtime shutting down).
pub(crate) trait LinkHooks: Send {
    fn authenticated(&mut self, link: &Link);
    /// The authenticated link stopped taking commands: a close from either
    /// side began (`draining` says why while it drains requests in flight:
    /// [`CloseReason::Remote`] with code `normal` is the peer's going-away
    /// notice), or it ended at once (`None`).
    fn closing(&mut self, _link: &Link, _draining: Option<&CloseReason>) {}
    fn closed(&mut self, link: &Link, reason: &CloseReason);
    /// On a relay link (PROTOCOL.md §18): a relayed client joined from
    /// `addr`; the owner admits it as a link of its own (its id and hooks)
    /// or refuses it, naming the limit.
    fn join(
        &mut self,
        _relay: &Link,
        _addr: std::net::SocketAddr,
    ) -> Result<Admitted, &'static str> {
        Err("relayed clients not accepted")
    }
}

/// What a [`Multiplexer`](crate::Multiplexer) learns of every link of
/// its entries, from the link's driver: created (before the handshake and
/// before any event or handler call), authenticated, closed (released,
/// before its final event). Whether it takes commands the Multiplexer
/// reads from the link itself.
pub(crate) trait LinkObserver: Send + Sync {
    fn created(&self, link: &Link);
    fn authenticated(&self, link: &Link);
    fn closed(&self, link: &Link, reason: &CloseReason);
}

/// How a link ended.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) authenticated: bool,
    pub(crate) reason: CloseReason,
}

/// Makes a link handle with its command queue (which its driver takes
/// from through the handle it holds).
pub(crate) fn new_link(
    rt: Arc<dyn Runtime>,
    id: u64,
    peer_addr: std::net::SocketAddr,
    config: &Arc<jsonlink_proto::Config>,
    options: &LinkOptions,
    server: Option<std::sync::Weak<crate::server::ServerInner>>,
) -> Link {
    Link {
        inner: Arc::new(LinkInner {
            id,
            peer_addr,
            auth: std::sync::OnceLock::new(),
            cmd: Queue::new(options.command_capacity, options.command_bytes),
            rt,
            request_timeout: config.request_timeout,
            config: config.clone(),
            accepting: std::sync::atomic::AtomicU8::new(TAKES_NOTHING),
            server,
            counters: crate::stats::LinkCounters::default(),
            tag: std::sync::OnceLock::new(),
            relay: None,
        }),
    }
}

/// Makes the virtual link of a relayed client (PROTOCOL.md §18) that
/// joined on the relay link `relay`, authenticated as `auth` (its
/// `connection_id` the server-wide link id). Its own command queue is
/// never filled (its commands go through the relay link's queue); it is
/// closed when the client leaves, which is what
/// [`Link::is_closed`] reads.
pub(crate) fn new_virtual_link(
    relay: &Link,
    client: jsonlink_proto::ClientId,
    peer_addr: std::net::SocketAddr,
    auth: jsonlink_proto::Authenticated,
) -> Link {
    let r = &relay.inner;
    let link = Link {
        inner: Arc::new(LinkInner {
            id: auth.connection_id,
            peer_addr,
            auth: std::sync::OnceLock::new(),
            cmd: Queue::new(1, 0),
            rt: r.rt.clone(),
            request_timeout: r.request_timeout,
            config: r.config.clone(),
            accepting: std::sync::atomic::AtomicU8::new(TAKES_NOTHING),
            server: r.server.clone(),
            counters: crate::stats::LinkCounters::default(),
            tag: std::sync::OnceLock::new(),
            relay: Some(crate::link::RelayRoute {
                relay: relay.clone(),
                client,
            }),
        }),
    };
    let _ = link.inner.auth.set(auth);
    link
}

/// Everything a driver starts with.
pub(crate) struct DriverSetup {
    pub(crate) conn: Connection,
    pub(crate) stream: BoxStream,
    pub(crate) link: Link,
    pub(crate) order_rx: Receiver<CloseOrder>,
    pub(crate) ctx: Arc<LinkCtx>,
    pub(crate) hooks: Box<dyn LinkHooks>,
}

/// Where a link is in its life. Each state holds what only it needs, so
/// no combination of flags can contradict another.
#[derive(Debug)]
enum Life {
    /// The core runs: handshake, established, or draining after a graceful
    /// close.
    Running,
    /// The core has ended for `reason` (its `Closed` event is taken): the
    /// events it left are being delivered.
    Ending { reason: CloseReason },
    /// Everything is delivered: the close frame is flushed and the stream
    /// closed, until `until` at most.
    Lingering { reason: CloseReason, until: Instant },
    /// Released: hooks run, leftovers failed, the final event emitted.
    Finished,
}

/// What one round of work came to.
#[derive(Debug)]
enum Round {
    /// Something moved: run another round.
    Progress,
    /// Nothing can move until a waker fires.
    Idle,
    /// The link has ended.
    Ended(Outcome),
}

/// One link's driver; a [`Future`] that ends when the link has closed.
pub(crate) struct Driver {
    rt: Arc<dyn Runtime>,
    ctx: Arc<LinkCtx>,
    conn: Connection,
    link: Link,
    span: tracing::Span,
    /// What handles and the owner send the link: orders, commands,
    /// answers.
    inbox: Inbox,
    /// Our requests the core has taken, until their outcome.
    requests: Requests,
    /// Where the peer's messages and requests go.
    dispatch: Dispatcher,
    /// The TLS stream and the bytes on their way to it.
    transport: Transport,
    /// Armed at the next deadline (the core's, a held request's, linger).
    timer: Timer,
    /// The owner's hooks, until released.
    hooks: Option<Box<dyn LinkHooks>>,
    /// The core's counters as last added to the owner's.
    last_stats: jsonlink_proto::Stats,
    /// This link's counts, published to its handle every round.
    counts: crate::stats::LinkStats,
    life: Life,
    /// On a relay link: the relayed clients' virtual links, by client id.
    virtuals: std::collections::HashMap<u64, Virtual>,
    /// Virtual links that left, until what they dispatched is delivered.
    leaving: Vec<Virtual>,
    /// Why each virtual link in `leaving` ended.
    left_reasons: std::collections::HashMap<u64, CloseReason>,
    /// The virtual links touched since their last flush (events staged, a
    /// delivery waiting, counters changed): only these are visited each
    /// round, so an idle relayed client costs its relay link nothing.
    dirty: std::collections::HashSet<u64>,
    /// Whether a virtual link's delivery waits (room in the event stream).
    virtual_waiting: bool,
}

impl Driver {
    pub(crate) fn new(setup: DriverSetup) -> Self {
        let DriverSetup {
            conn,
            stream,
            link,
            order_rx,
            ctx,
            hooks,
        } = setup;
        let span = tracing::info_span!(
            "jsonlink.link",
            conn = link.inner.id,
            peer = %link.inner.peer_addr,
            side = ?conn.side(),
        );
        if let Some(o) = &ctx.observer {
            o.created(&link);
        }
        let inbox = Inbox::new(order_rx);
        let dispatch = Dispatcher::new(
            ctx.clone(),
            link.clone(),
            span.clone(),
            inbox.answer_queue(),
        );
        Self {
            rt: ctx.rt.clone(),
            ctx,
            conn,
            link,
            span,
            inbox,
            requests: Requests::default(),
            dispatch,
            transport: Transport::new(stream),
            timer: Timer::default(),
            hooks: Some(hooks),
            last_stats: jsonlink_proto::Stats::default(),
            counts: crate::stats::LinkStats::default(),
            life: Life::Running,
            virtuals: std::collections::HashMap::new(),
            leaving: Vec::new(),
            left_reasons: std::collections::HashMap::new(),
            dirty: std::collections::HashSet::new(),
            virtual_waiting: false,
        }
    }

    /// Runs the driver to its end; the outcome of the link.
    pub(crate) fn run(self) -> impl Future<Output = Outcome> + Send {
        let span = self.span.clone();
        self.instrument(span)
    }

    fn round(&mut self, cx: &mut Context<'_>) -> Round {
        if matches!(self.life, Life::Finished) {
            // Polled after its end: nothing more will happen.
            return Round::Idle;
        }
        let now = self.rt.now();
        let mut progress = self.dispatch.poll_waiting(cx);
        if !self.dirty.is_empty() || !self.leaving.is_empty() {
            progress |= self.poll_virtuals(cx);
        }
        progress |= self.take_input(cx, now);
        progress |= self.read(cx, now);
        progress |= self.fire_timers(now);
        progress |= self.forward_events();
        progress |= self.transmit(cx, now);
        self.sync_stats();
        self.sync_accepting();
        if let Some(outcome) = self.advance(cx, now) {
            return Round::Ended(outcome);
        }
        progress |= self.arm_timer(cx, now);
        if progress {
            Round::Progress
        } else {
            Round::Idle
        }
    }

    // ------------------------------------------------------------- steps

    /// Step 2: one read, handed to the core (see [`Transport::read`]).
    fn read(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        if self.delivery_waiting() || !self.conn.wants_input() {
            return false;
        }
        let size = self.ctx.options.read_buffer.max(512);
        self.transport.read(cx, now, &mut self.conn, size)
    }

    /// Step 3: fires what is due at `now` — the core's timers and request
    /// deadlines, and the requests held back whose deadline passed.
    fn fire_timers(&mut self, now: Instant) -> bool {
        let mut fired = false;
        if self.conn.poll_timeout().is_some_and(|t| now >= t) {
            self.conn.handle_timeout(now);
            fired = true;
        }
        fired | self.inbox.expire_held(&self.link, now)
    }

    /// Step 4: hands the core's events on, until none is left or a
    /// delivery must wait.
    fn forward_events(&mut self) -> bool {
        use jsonlink_proto::Event as E;
        let mut progress = self.dispatch.flush();
        while !self.delivery_waiting() {
            let Some(ev) = self.conn.poll_event() else {
                break;
            };
            progress = true;
            match ev {
                E::Authenticated(info) => self.on_authenticated(info),
                E::Message { op, body } => self.dispatch.message(op, body),
                E::Request { id, op, body } => {
                    if let Some(answer) = self.dispatch.request(id, op, body) {
                        self.inbox.answer_now(&mut self.conn, answer);
                    }
                }
                E::Response { id, body } => self.requests.complete(&self.ctx, id, Ok(body)),
                E::RequestFailed { id, error } => {
                    self.requests
                        .complete(&self.ctx, id, Err(Error::from_request(error)));
                }
                E::Ping { data } => {
                    let link = self.link.clone();
                    self.dispatch.emit(Event::Ping { link, data });
                }
                E::Pong => {
                    let link = self.link.clone();
                    self.dispatch.emit(Event::Pong { link });
                }
                E::Closed(reason) => self.on_core_closed(reason),
                E::Joined(joined) => self.on_joined(joined),
                E::ClientMessage { client, op, body } => {
                    if let Some(v) = self.virtuals.get_mut(&client.0) {
                        v.dispatch.message(op, body);
                        self.virtual_waiting |= v.dispatch.is_waiting();
                        self.dirty.insert(client.0);
                    }
                }
                E::ClientRequest {
                    client,
                    id,
                    op,
                    body,
                } => match self.virtuals.get_mut(&client.0) {
                    Some(v) => {
                        let answer = v.dispatch.request(id, op, body);
                        self.virtual_waiting |= v.dispatch.is_waiting();
                        self.dirty.insert(client.0);
                        if let Some(answer) = answer {
                            self.inbox.answer_now(&mut self.conn, answer);
                        }
                    }
                    None => self.answer_unknown_client(client, id),
                },
                E::ClientResponse { client, id, body } => {
                    if let Some(v) = self.virtuals.get_mut(&client.0) {
                        v.requests.complete(&self.ctx, id, Ok(body));
                    }
                }
                E::ClientRequestFailed { client, id, error } => {
                    if let Some(v) = self.virtuals.get_mut(&client.0) {
                        v.requests
                            .complete(&self.ctx, id, Err(Error::from_request(error)));
                    }
                }
                E::Left { client, reason } => self.on_left(client, reason),
                _ => {}
            }
        }
        self.dispatch.flush();
        self.flush_virtuals();
        progress
    }

    /// Step 5: writes and flushes what the core has to send.
    fn transmit(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        self.transport.write(cx, now, &mut self.conn)
    }

    /// Arms the one timer at the earliest deadline: the core's, a held
    /// request's, or the end of lingering; whether it has fired already.
    fn arm_timer(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let linger = match &self.life {
            Life::Lingering { until, .. } => Some(*until),
            _ => None,
        };
        let next = [self.conn.poll_timeout(), self.inbox.next_deadline(), linger]
            .into_iter()
            .flatten()
            .min();
        self.timer.poll_at(&*self.rt, cx, now, next)
    }

    // --------------------------------------------------------- lifecycle

    fn on_authenticated(&mut self, info: jsonlink_proto::Authenticated) {
        let _ = self.link.inner.auth.set(info.clone());
        // Before anyone can see the link as connected.
        self.link
            .inner
            .accepting
            .store(self.takes(), Ordering::Release);
        bump(&self.ctx.counters.authenticated, 1);
        tracing::info!(
            conn = info.connection_id,
            node = %info.peer.node,
            designation = %info.peer.designation,
            signing = info.signing,
            encryption = info.encryption,
            "authenticated"
        );
        if let Some(h) = self.hooks.as_mut() {
            h.authenticated(&self.link);
        }
        if let Some(o) = &self.ctx.observer {
            o.authenticated(&self.link);
        }
        let link = self.link.clone();
        self.dispatch.emit(Event::Authenticated { link, info });
    }

    fn on_core_closed(&mut self, reason: CloseReason) {
        if reason == CloseReason::KeepaliveTimeout && self.link.auth().is_some() {
            tracing::info!("keepalive timed out");
            self.dispatch.emit(Event::KeepaliveTimeout {
                link: self.link.clone(),
            });
        }
        self.life = Life::Ending { reason };
    }

    /// What the core takes now, for handles.
    fn takes(&self) -> u8 {
        if self.conn.is_established() {
            TAKES_ALL
        } else if self.conn.closing_reason().is_some() {
            TAKES_MESSAGES
        } else {
            TAKES_NOTHING
        }
    }

    /// Publishes what the core takes. Runs before every command (so a
    /// command refused because an earlier one closed the link is answered
    /// only after handles see the link as closing: a caller told
    /// `NotConnected` never finds the closing link still current) and at
    /// the end of each round.
    fn sync_accepting(&mut self) {
        let takes = self.takes();
        let was = self.link.inner.accepting.swap(takes, Ordering::AcqRel);
        if was == TAKES_ALL
            && takes != TAKES_ALL
            && let Some(h) = self.hooks.as_mut()
        {
            h.closing(&self.link, self.conn.closing_reason());
        }
    }

    /// Adds what the core counted since the last round to the owner's
    /// counters, and publishes the link's own.
    fn sync_stats(&mut self) {
        let s = self.conn.stats();
        let last = std::mem::replace(&mut self.last_stats, s);
        let c = &self.ctx.counters;
        bump(&c.bytes_in, s.bytes_in.saturating_sub(last.bytes_in));
        bump(&c.bytes_out, s.bytes_out.saturating_sub(last.bytes_out));
        bump(
            &c.dropped_responses,
            s.dropped_responses.saturating_sub(last.dropped_responses),
        );
        bump(
            &c.responses_too_large,
            s.responses_too_large
                .saturating_sub(last.responses_too_large),
        );
        // Joins the core refused itself (a relay's `max_relayed_clients`).
        bump(
            &c.connections_refused,
            s.relay_joins_refused
                .saturating_sub(last.relay_joins_refused),
        );
        let counts = &mut self.counts;
        counts.messages_in = self.dispatch.messages_in;
        counts.requests_in = self.dispatch.requests_in;
        counts.bytes_in = s.bytes_in;
        counts.bytes_out = s.bytes_out;
        self.link.inner.counters.publish(counts);
    }

    /// Moves the link's life on once the core has ended: deliveries done →
    /// linger (flush, close the stream) → finished. The outcome once
    /// finished.
    fn advance(&mut self, cx: &mut Context<'_>, now: Instant) -> Option<Outcome> {
        if let Life::Ending { reason } = &self.life {
            if !self.dispatch.is_idle() || !self.leaving.is_empty() {
                return None;
            }
            let reason = reason.clone();
            let until = deadline_after(now, self.ctx.options.linger);
            self.life = Life::Lingering { reason, until };
        }
        let Life::Lingering { until, .. } = self.life else {
            return None;
        };
        let over = now >= until;
        if !self.transport.poll_close(cx, &self.conn, over) {
            return None;
        }
        let Life::Lingering { reason, .. } = std::mem::replace(&mut self.life, Life::Finished)
        else {
            return None;
        };
        self.release(&reason);
        self.report_end(&reason);
        Some(self.outcome(reason))
    }

    /// Releases what the link holds, once, however it ends (finished, or
    /// the driver dropped by a runtime shutting down): the handles' queue
    /// closes, the owner's hooks run, and whatever never got an outcome
    /// fails — commands never applied with [`Error::NotConnected`], our
    /// requests in flight with [`Error::ConnectionLost`].
    fn release(&mut self, reason: &CloseReason) {
        let leftovers = self.link.inner.cmd.close();
        self.release_virtuals(reason);
        if let Some(mut hooks) = self.hooks.take() {
            hooks.closed(&self.link, reason);
            if let Some(o) = &self.ctx.observer {
                o.closed(&self.link, reason);
            }
        }
        self.requests.fail_all(&self.ctx);
        self.inbox.close(leftovers);
        self.timer = Timer::default();
    }

    /// The final event: `Closed` for an authenticated link; for one that
    /// never authenticated, an `Error` where the owner wants them (a
    /// server; a client reports its attempts itself).
    fn report_end(&self, reason: &CloseReason) {
        if self.link.auth().is_some() {
            tracing::info!(reason = %reason, "closed");
            self.ctx.emit_lossy(Event::Closed {
                link: self.link.clone(),
                reason: reason.clone(),
            });
        } else if self.ctx.report_handshake_errors {
            tracing::info!(reason = %reason, "closed before authenticating");
            self.ctx.emit_lossy(Event::Error {
                peer_addr: Some(self.link.peer_addr()),
                error: Error::from_handshake_close(reason.clone()),
            });
        }
    }

    fn outcome(&self, reason: CloseReason) -> Outcome {
        Outcome {
            authenticated: self.link.auth().is_some(),
            reason,
        }
    }
}

impl Future for Driver {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let this = self.get_mut();
        for _ in 0..ROUNDS_PER_WAKE {
            match this.round(cx) {
                Round::Ended(outcome) => return Poll::Ready(outcome),
                Round::Progress => {}
                Round::Idle => return Poll::Pending,
            }
        }
        // Work remains: let other tasks run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Dropped before finishing (runtime shutting down): release the
        // owner's slot; waiters see their channels close or fail.
        let reason = match &self.life {
            Life::Finished => return,
            Life::Running => CloseReason::UnexpectedEof,
            Life::Ending { reason } | Life::Lingering { reason, .. } => reason.clone(),
        };
        self.release(&reason);
    }
}
