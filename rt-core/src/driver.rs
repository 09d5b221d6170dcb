//! The driver: one task per link that **owns** its [`Connection`] and its
//! TLS stream, written once as a hand-written [`Future`] so it runs on any
//! executor.
//!
//! Each round of a wake, in order:
//! 1. finish a delivery that was waiting (event-stream room, handler slot);
//! 2. take owner orders (close) and answers from responders;
//! 3. take the commands queued by handles, all at once, and give them to
//!    the core in order (a command the core refuses with `Blocked` is kept
//!    and retried with those behind it; they still count against the
//!    queue's bounds, so the queue pushes back on `send().await`, and a
//!    request among them fails at its deadline); then the answers taken in
//!    step 2 (taken before the commands, applied after them: what a handler
//!    sent before it answered goes out before its answer);
//! 4. read into a reused buffer → `handle_input`/`handle_eof`, only while
//!    `conn.wants_input()` and no delivery is waiting;
//! 5. fire the core's timer when `runtime.now() >= poll_timeout()`;
//! 6. dispatch the core's events (handlers by op — message handlers through
//!    the link's ordered lane, request handlers as tasks or inline —,
//!    request table, event stream);
//! 7. write what `poll_transmit` gives (called only when the write buffer is
//!    empty; unwritten bytes stay across `Pending`), then flush;
//! 8. arm the timer at the next deadline.
//!
//! Rounds repeat while any of them made progress, at most
//! [`ROUNDS_PER_WAKE`] times, then the driver yields.
//!
//! After the core closes, the driver flushes the last bytes (close frame)
//! and closes the TLS stream, bounded by [`LinkOptions::linger`], then
//! releases its slot (hooks), fails leftover commands, emits the final
//! event and ends.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use async_channel::Receiver;
use futures_channel::oneshot;
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::Stream;
use jsonlink_proto::{
    CloseReason, Connection, Op, Payload, PeerRequestId, RemoteError, RequestId, SendError,
};
use rustc_hash::FxHashMap;
use tracing::Instrument as _;

use crate::config::LinkOptions;
use crate::dispatch::{
    Answer, BudgetGuard, BudgetLimits, HandlerBudget, Handlers, InlineFn, Lane, LaneCall, Message,
    MessageFn, MessageRoute, Request, RequestRoute, Responder,
};
use crate::error::Error;
use crate::event::Event;
use crate::event_queue::{EventSender, Pushed};
use crate::link::{
    CloseOrder, Command, Link, LinkInner, NO_DEADLINE, TAKES_ALL, TAKES_MESSAGES, TAKES_NOTHING,
    deadline_after,
};
use crate::queue::{Queue, Take};
use crate::runtime::{BoxFuture, BoxStream, Runtime};
use crate::stats::{Counters, bump, drop_one};

thread_local! {
    /// The read buffer, one per thread rather than one per link: a driver
    /// reads into it and hands the bytes to its core in the same call (the
    /// core copies only a partial line), so an idle link holds no read
    /// buffer. Sized by [`LinkOptions::read_buffer`]; it lives as long as
    /// the thread.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Command slots a link's batch buffer keeps between bursts.
const BATCH_KEEP: usize = 16;

/// Rounds of work per wake before the driver yields to the executor.
pub(crate) const ROUNDS_PER_WAKE: usize = 32;
/// Commands (or answers) taken per round.
const BATCH: usize = 64;

/// What every link of one server or client shares.
pub(crate) struct LinkCtx {
    pub(crate) rt: Arc<dyn Runtime>,
    pub(crate) handlers: Handlers,
    pub(crate) events: Option<EventSender>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) options: LinkOptions,
    /// Whether a link that ends before authenticating emits
    /// [`Event::Error`] itself (the server); a client's supervisor reports
    /// failed attempts instead, once per outage.
    pub(crate) report_handshake_errors: bool,
}

impl LinkCtx {
    /// Emits a lifecycle event without waiting: when the stream holds its
    /// capacity of lifecycle events, the oldest is dropped and counted.
    pub(crate) fn emit_lossy(&self, ev: Event) {
        debug_assert!(ev.is_lifecycle(), "data events wait for room");
        if let Some(tx) = &self.events {
            let mut dropped = 0;
            // A closed stream (its receiver gone) needs no count.
            let _ = tx.push_batch(&mut VecDeque::from([ev]), &mut dropped);
            bump(&self.counters.dropped_events, dropped as u64);
        }
    }
}

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
    request_timeout: std::time::Duration,
    options: &LinkOptions,
) -> Link {
    Link {
        inner: Arc::new(LinkInner {
            id,
            peer_addr,
            auth: std::sync::OnceLock::new(),
            cmd: Queue::new(options.command_capacity, options.command_bytes),
            rt,
            request_timeout,
            accepting: std::sync::atomic::AtomicU8::new(TAKES_NOTHING),
        }),
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Finished,
}

/// One link's driver; a [`Future`] that ends when the link has closed.
pub(crate) struct Driver {
    rt: Arc<dyn Runtime>,
    ctx: Arc<LinkCtx>,
    conn: Connection,
    stream: Option<BoxStream>,
    link: Link,
    span: tracing::Span,
    cmd_done: bool,
    /// Commands taken from the link's queue and not yet applied (the
    /// first refused `Blocked` when the core pushes back); they count
    /// against the queue's bounds until applied.
    cmd_batch: VecDeque<(Command, usize)>,
    order_rx: Pin<Box<Receiver<CloseOrder>>>,
    ctl_done: bool,
    /// Answers from this link's [`Responder`]s (unbounded: at most one per
    /// peer request the core lets be in flight), taken in batches.
    answers: Arc<Queue<Answer>>,
    /// Answers taken, not yet accepted by the core.
    answer_batch: VecDeque<(Answer, usize)>,
    /// Keyed by the core's own sequential request ids, never the peer's:
    /// an unkeyed fast hash is safe.
    table: FxHashMap<RequestId, oneshot::Sender<Result<Payload, Error>>>,
    budget: Arc<HandlerBudget>,
    /// Where this link's ordered message handler calls wait and run, one
    /// at a time.
    lane: Arc<Lane>,
    hooks: Option<Box<dyn LinkHooks>>,
    /// A delivery the link waits for before reading or dispatching more.
    pending: Option<BoxFuture<'static, ()>>,
    /// Events of this round not yet pushed to the event stream (pushed
    /// in batches of up to [`BATCH`], and at the end of each round).
    staged: VecDeque<Event>,
    read_done: bool,
    wbuf: Vec<u8>,
    wpos: usize,
    need_flush: bool,
    write_dead: bool,
    sleep: Option<(Instant, BoxFuture<'static, ()>)>,
    linger_until: Option<Instant>,
    final_reason: Option<CloseReason>,
    last_stats: jsonlink_proto::Stats,
    phase: Phase,
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
        Self {
            rt: ctx.rt.clone(),
            ctx,
            conn,
            stream: Some(stream),
            link,
            span,
            cmd_done: false,
            cmd_batch: VecDeque::new(),
            order_rx: Box::pin(order_rx),
            ctl_done: false,
            // Unbounded but bounded in practice: each responder sends at
            // most one answer, and at most `max_incoming_requests` responders
            // are alive. It holds no memory while empty.
            answers: Arc::new(Queue::new(usize::MAX, usize::MAX)),
            answer_batch: VecDeque::new(),
            table: FxHashMap::default(),
            budget: Arc::new(HandlerBudget::default()),
            lane: Arc::new(Lane::default()),
            hooks: Some(hooks),
            pending: None,
            staged: VecDeque::new(),
            read_done: false,
            wbuf: Vec::new(),
            wpos: 0,
            need_flush: false,
            write_dead: false,
            sleep: None,
            linger_until: None,
            final_reason: None,
            last_stats: jsonlink_proto::Stats::default(),
            phase: Phase::Running,
        }
    }

    /// Runs the driver to its end; the outcome of the link.
    pub(crate) fn run(self) -> impl Future<Output = Outcome> + Send {
        let span = self.span.clone();
        self.instrument(span)
    }

    fn round(&mut self, cx: &mut Context<'_>) -> Option<bool> {
        let now = self.rt.now();
        let mut progress = false;
        if let Some(p) = self.pending.as_mut()
            && p.as_mut().poll(cx).is_ready()
        {
            self.pending = None;
            progress = true;
        }
        if self.phase == Phase::Finished {
            return if self.pending.is_none() {
                None
            } else {
                Some(progress)
            };
        }
        progress |= self.poll_ctl(cx, now);
        // Answers are taken before commands and applied after them: what
        // a handler sent before answering (queued before its answer) goes
        // out before the answer, which may be the last thing a draining
        // link waits for.
        progress |= self.take_answers(cx);
        progress |= self.poll_commands(cx, now);
        progress |= self.apply_answers();
        if !self.cmd_batch.is_empty() {
            progress |= self.expire_held(now);
        }
        progress |= self.poll_read(cx, now);
        if self.conn.poll_timeout().is_some_and(|t| now >= t) {
            self.conn.handle_timeout(now);
            progress = true;
        }
        progress |= self.drain_events();
        progress |= self.poll_write(cx, now);
        self.sync_stats();
        self.sync_accepting();
        progress |= self.poll_close(cx, now);
        if self.phase == Phase::Finished {
            return Some(true);
        }
        progress |= self.poll_timer(cx, now);
        Some(progress)
    }

    // ------------------------------------------------------------ inputs

    fn poll_ctl(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        if self.ctl_done || self.conn.is_closed() {
            return false;
        }
        match self.order_rx.as_mut().poll_next(cx) {
            Poll::Ready(Some(ctl)) => {
                tracing::debug!(reason = ctl.reason, "closing on owner's order");
                self.conn.close_by(now, ctl.reason, ctl.deadline);
                true
            }
            Poll::Ready(None) => {
                self.ctl_done = true;
                tracing::debug!("owner dropped; closing");
                self.conn.close(now, "owner dropped");
                true
            }
            Poll::Pending => false,
        }
    }

    /// Takes the answers queued by now (one take per round), behind any
    /// the core pushed back.
    fn take_answers(&mut self, cx: &Context<'_>) -> bool {
        let before = self.answer_batch.len();
        match self.answers.poll_take(cx, &mut self.answer_batch) {
            Poll::Ready(Take::Taken) => {
                // Unbounded: the room is given back at once.
                self.answers
                    .release(self.answer_batch.len().saturating_sub(before), 0);
                true
            }
            _ => false,
        }
    }

    /// Gives the answers taken to the core, in order, until it pushes back.
    fn apply_answers(&mut self) -> bool {
        let mut progress = false;
        while let Some((a, w)) = self.answer_batch.pop_front() {
            let r = match a.too_large {
                Some(size) => self.conn.respond_too_large(a.id, size),
                None => self.conn.respond(a.id, a.result.as_ref().map(|b| &**b)),
            };
            match r {
                Err(SendError::Blocked) => {
                    self.answer_batch.push_front((a, w));
                    return progress;
                }
                Ok(()) => {
                    if let Some(size) = a.too_large {
                        let limit = self.conn.peer_max_frame();
                        warn_too_large(a.id, a.op.as_deref(), size, limit);
                    }
                }
                Err(SendError::ResponseTooLarge { size, limit }) => {
                    warn_too_large(a.id, a.op.as_deref(), size, limit);
                }
                Err(e) => tracing::debug!(id = %a.id, error = %e, "answer not sent"),
            }
            progress = true;
        }
        progress
    }

    fn poll_commands(&mut self, cx: &Context<'_>, now: Instant) -> bool {
        let mut progress = false;
        // One take per round: a batch is everything queued at that moment.
        let mut took = false;
        loop {
            let (mut applied, mut bytes) = (0, 0);
            while let Some((cmd, weight)) = self.cmd_batch.pop_front() {
                if let Some(back) = self.apply(cmd, now) {
                    self.cmd_batch.push_front((back, weight));
                    break;
                }
                applied += 1;
                bytes += weight;
            }
            if applied > 0 {
                self.link.inner.cmd.release(applied, bytes);
                progress = true;
            }
            if self.cmd_batch.is_empty() {
                // The buffer goes back to the queue at the next take: keep
                // a burst's capacity from staying with an idle link.
                self.cmd_batch.shrink_to(BATCH_KEEP);
            }
            if self.cmd_done || took {
                break;
            }
            // Taken even while the core pushes back: still counted against
            // the queue's bounds, and a request among them is then failed
            // at its deadline (`expire_held`).
            let stalled = !self.cmd_batch.is_empty();
            match self.link.inner.cmd.poll_take(cx, &mut self.cmd_batch) {
                Poll::Ready(Take::Taken) => {
                    // Progress even when stalled: the next round takes
                    // again, and so registers the waker once it is empty.
                    took = true;
                    progress = true;
                    if stalled {
                        break;
                    }
                }
                Poll::Ready(Take::Closed) => {
                    self.cmd_done = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        progress
    }

    /// Fails the requests held back by backpressure whose deadline passed
    /// (or whose caller gave up); whether there were any.
    fn expire_held(&mut self, now: Instant) -> bool {
        let expired = |c: &Command| {
            matches!(c, Command::Request { deadline, reply, .. }
                if now >= *deadline || reply.is_canceled())
        };
        if !self.cmd_batch.iter().any(|(c, _)| expired(c)) {
            return false;
        }
        let (mut count, mut bytes) = (0, 0);
        let mut kept = VecDeque::with_capacity(self.cmd_batch.len());
        for (cmd, weight) in self.cmd_batch.drain(..) {
            match cmd {
                cmd if expired(&cmd) => {
                    if let Command::Request { reply, .. } = cmd {
                        let _ = reply.send(Err(Error::Timeout));
                    }
                    count += 1;
                    bytes += weight;
                }
                cmd => kept.push_back((cmd, weight)),
            }
        }
        self.cmd_batch = kept;
        self.link.inner.cmd.release(count, bytes);
        true
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
        let was = self
            .link
            .inner
            .accepting
            .swap(takes, std::sync::atomic::Ordering::AcqRel);
        if was == TAKES_ALL
            && takes != TAKES_ALL
            && let Some(h) = self.hooks.as_mut()
        {
            h.closing(&self.link, self.conn.closing_reason());
        }
    }

    /// Gives one command to the core; returns it if the core is `Blocked`.
    fn apply(&mut self, cmd: Command, now: Instant) -> Option<Command> {
        self.sync_accepting();
        if self.conn.is_closed() {
            fail_command(cmd);
            return None;
        }
        match cmd {
            Command::Send { body } => {
                match self.conn.send(&body) {
                    Err(SendError::Blocked) => return Some(Command::Send { body }),
                    Ok(()) => bump(&self.ctx.counters.messages_out, 1),
                    // The core began closing after the handle's check: the
                    // message is dropped, as one queued just before a close.
                    Err(_) => {}
                }
                None
            }
            Command::Request {
                body,
                deadline,
                reply,
            } => {
                if reply.is_canceled() {
                    return None;
                }
                if now >= deadline {
                    let _ = reply.send(Err(Error::Timeout));
                    return None;
                }
                match self.conn.request_until(&body, deadline) {
                    Ok(id) => {
                        bump(&self.ctx.counters.requests_out, 1);
                        bump(&self.ctx.counters.requests_in_flight, 1);
                        self.table.insert(id, reply);
                        None
                    }
                    Err(SendError::Blocked) => Some(Command::Request {
                        body,
                        deadline,
                        reply,
                    }),
                    Err(e) => {
                        let _ = reply.send(Err(Error::from_send(e)));
                        None
                    }
                }
            }
            Command::Ping { data, ack } => {
                match self.conn.ping(data.as_deref()) {
                    Err(SendError::Blocked) => return Some(Command::Ping { data, ack }),
                    r => {
                        let _ = ack.send(r.map_err(Error::from_send));
                    }
                }
                None
            }
            Command::Close { reason } => {
                self.conn.close(now, &reason);
                None
            }
        }
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        if self.read_done || self.pending.is_some() || !self.conn.wants_input() {
            return false;
        }
        let size = self.ctx.options.read_buffer.max(512);
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => self.read_into(cx, now, &mut buf, size),
            // Only if a read ever ran inside another (it does not today).
            Err(_) => self.read_into(cx, now, &mut Vec::new(), size),
        })
    }

    /// One read into `buf` (grown to `size` once), handed to the core at
    /// once: the core keeps only what it needs (a partial line), so the
    /// buffer can be shared by every link of the thread.
    fn read_into(
        &mut self,
        cx: &mut Context<'_>,
        now: Instant,
        buf: &mut Vec<u8>,
        size: usize,
    ) -> bool {
        let Some(stream) = self.stream.as_mut() else {
            return false;
        };
        if buf.len() < size {
            buf.resize(size, 0);
        }
        let Some(buf) = buf.get_mut(..size) else {
            return false;
        };
        let r = loop {
            match Pin::new(&mut *stream).poll_read(cx, buf) {
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match r {
            Poll::Pending => false,
            Poll::Ready(Ok(0)) => {
                tracing::debug!("end of stream");
                self.read_done = true;
                self.conn.handle_eof(now);
                true
            }
            Poll::Ready(Ok(n)) => {
                if let Some(data) = buf.get(..n) {
                    self.conn.handle_input(now, data);
                }
                true
            }
            Poll::Ready(Err(e)) => {
                tracing::debug!(error = %e, "read failed");
                self.read_done = true;
                self.conn.handle_eof(now);
                true
            }
        }
    }

    // ----------------------------------------------------------- outputs

    fn drain_events(&mut self) -> bool {
        let mut progress = self.flush_events();
        while self.pending.is_none() {
            let Some(ev) = self.conn.poll_event() else {
                break;
            };
            progress = true;
            self.dispatch(ev);
        }
        self.flush_events();
        progress
    }

    /// Pushes the staged events to the stream. A data event that finds no
    /// room makes the link wait ([`pending`](Self::pending)) for room, then
    /// the next round pushes the rest; lifecycle events always go in (the
    /// oldest unread ones dropped and counted past the bound); if the
    /// stream's receiver is gone the events are undeliverable. Whether
    /// anything moved.
    fn flush_events(&mut self) -> bool {
        if self.staged.is_empty() || self.pending.is_some() {
            return false;
        }
        let Some(tx) = self.ctx.events.as_ref() else {
            for ev in self.staged.drain(..) {
                undeliverable(&self.ctx, ev);
            }
            return true;
        };
        let before = self.staged.len();
        let mut dropped = 0;
        match tx.push_batch(&mut self.staged, &mut dropped) {
            Pushed::All => {}
            Pushed::Full => {
                let tx = tx.clone();
                self.pending = Some(Box::pin(async move { tx.room().await }));
            }
            Pushed::Closed => {
                for ev in self.staged.drain(..) {
                    undeliverable(&self.ctx, ev);
                }
            }
        }
        if dropped > 0 {
            bump(&self.ctx.counters.dropped_events, dropped as u64);
        }
        self.staged.len() != before
    }

    fn dispatch(&mut self, ev: jsonlink_proto::Event) {
        use jsonlink_proto::Event as E;
        match ev {
            E::Authenticated(info) => {
                let _ = self.link.inner.auth.set(info.clone());
                // Before anyone can see the link as connected.
                self.link
                    .inner
                    .accepting
                    .store(self.takes(), std::sync::atomic::Ordering::Release);
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
                let link = self.link.clone();
                self.emit(Event::Authenticated { link, info });
            }
            E::Message { op, body } => {
                bump(&self.ctx.counters.messages_in, 1);
                let handler = op
                    .as_deref()
                    .and_then(|op| self.ctx.handlers.message_handler(op));
                let msg = Message {
                    link: self.link.clone(),
                    op,
                    body,
                };
                match handler {
                    Some(MessageRoute::Ordered(h)) => {
                        let bytes = msg.body.get().len();
                        self.run_handler(Job::Ordered(h, msg), bytes);
                    }
                    Some(MessageRoute::Concurrent(h)) => {
                        let bytes = msg.body.get().len();
                        self.run_handler(Job::Task(h(msg)), bytes);
                    }
                    None => self.emit(Event::Message(msg)),
                }
            }
            E::Request { id, op, body } => {
                bump(&self.ctx.counters.requests_in, 1);
                let handler = op
                    .as_deref()
                    .and_then(|op| self.ctx.handlers.request_handler(op));
                let handler = match handler {
                    Some(RequestRoute::Inline(f)) => {
                        self.answer_inline(id, op, &*f, body);
                        return;
                    }
                    Some(RequestRoute::Task(f)) => Some(f),
                    None => None,
                };
                // Only a declared consumer gets requests: without one,
                // nothing waits for a reader.
                let to_stream = self.ctx.events.is_some()
                    && self.ctx.options.consume_events
                    && (op.is_none() || self.ctx.options.unhandled_ops_to_events);
                let req = Request {
                    link: self.link.clone(),
                    responder: Responder::new(
                        id,
                        self.answers.clone(),
                        self.link.clone(),
                        op.clone(),
                    ),
                    op,
                    body,
                };
                match handler {
                    Some(h) => {
                        let bytes = req.body.get().len();
                        self.run_handler(Job::Task(h(req)), bytes);
                    }
                    None if to_stream => self.emit(Event::Request(req)),
                    None => no_handler(req),
                }
            }
            E::Response { id, body } => {
                if let Some(reply) = self.table.remove(&id) {
                    drop_one(&self.ctx.counters.requests_in_flight);
                    let _ = reply.send(Ok(body));
                }
            }
            E::RequestFailed { id, error } => {
                if let Some(reply) = self.table.remove(&id) {
                    drop_one(&self.ctx.counters.requests_in_flight);
                    let _ = reply.send(Err(Error::from_request(error)));
                }
            }
            E::Ping { data } => {
                let link = self.link.clone();
                self.emit(Event::Ping { link, data });
            }
            E::Pong => {
                let link = self.link.clone();
                self.emit(Event::Pong { link });
            }
            E::Closed(reason) => {
                if reason == CloseReason::KeepaliveTimeout && self.link.auth().is_some() {
                    tracing::info!("keepalive timed out");
                    self.emit(Event::KeepaliveTimeout {
                        link: self.link.clone(),
                    });
                }
                self.final_reason = Some(reason);
            }
            _ => {}
        }
    }

    /// Serves a request with an inline handler: called here, in the
    /// link's task, and answered at once (or after the answers already
    /// waiting, if the core is pushing back). A panicking handler is
    /// answered `internal`; an answer too large for the peer is replaced
    /// as a [`Responder`]'s is.
    fn answer_inline(&mut self, id: PeerRequestId, op: Option<Op>, f: &InlineFn, body: Payload) {
        let link = &self.link;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(link, body)))
            .unwrap_or_else(|_| {
                tracing::warn!(id = %id, "inline request handler panicked");
                Err(RemoteError::new(
                    RemoteError::INTERNAL,
                    "the request handler failed",
                ))
            })
            .map(Payload::into_raw);
        let over = crate::dispatch::too_large(&self.link, id, &result);
        if self.answer_batch.is_empty() {
            let r = match over {
                Some((size, _)) => self.conn.respond_too_large(id, size),
                None => self.conn.respond(id, result.as_ref().map(|b| &**b)),
            };
            match r {
                Err(SendError::Blocked) => {}
                Ok(()) => {
                    if let Some((size, limit)) = over {
                        warn_too_large(id, op.as_deref(), size, limit);
                    }
                    return;
                }
                Err(SendError::ResponseTooLarge { size, limit }) => {
                    warn_too_large(id, op.as_deref(), size, limit);
                    return;
                }
                Err(e) => {
                    tracing::debug!(id = %id, error = %e, "answer not sent");
                    return;
                }
            }
        }
        let too_large = over.map(|(size, _)| size);
        self.answer_batch.push_back((
            Answer {
                id,
                result,
                op,
                too_large,
            },
            0,
        ));
    }

    /// Delivers to the event stream: data only to a declared consumer, and
    /// then it waits for room (the link stops reading meanwhile);
    /// lifecycle events never wait (the oldest unread are dropped).
    fn emit(&mut self, ev: Event) {
        if self.ctx.events.is_none() || (!ev.is_lifecycle() && !self.ctx.options.consume_events) {
            undeliverable(&self.ctx, ev);
            return;
        }
        self.staged.push_back(ev);
        if self.staged.len() >= BATCH {
            self.flush_events();
        }
    }

    /// Admits a handler call, counting `bytes` of body against the link's
    /// handler budget, and starts it (a task of its own, or a place in the
    /// link's ordered lane); past the budget the link stops reading
    /// (`pending`) until an admitted call finishes, and dispatches nothing
    /// more meanwhile, so the lane keeps arrival order.
    fn run_handler(&mut self, job: Job, bytes: usize) {
        let limits = BudgetLimits {
            tasks: self.ctx.options.max_handler_tasks,
            bytes: self.ctx.options.max_handler_bytes,
        };
        match self.budget.try_acquire(limits, bytes) {
            Some(guard) => start_job(&self.rt, &self.lane, &self.span, job, guard),
            None => {
                let budget = self.budget.clone();
                let rt = self.rt.clone();
                let lane = self.lane.clone();
                let span = self.span.clone();
                self.pending = Some(Box::pin(async move {
                    let guard = budget.acquire(limits, bytes).await;
                    start_job(&rt, &lane, &span, job, guard);
                }));
            }
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let mut progress = false;
        if self.write_dead || self.stream.is_none() {
            // Nowhere to write: discard, so the core's buffer cannot grow.
            self.wbuf.clear();
            self.wpos = 0;
            if self.conn.poll_transmit(&mut self.wbuf) > 0 {
                progress = true;
            }
            self.wbuf.clear();
            return progress;
        }
        let mut failed = None;
        if let Some(stream) = self.stream.as_mut() {
            for _ in 0..BATCH {
                if self.wpos >= self.wbuf.len() {
                    self.wbuf.clear();
                    self.wpos = 0;
                    if self.conn.poll_transmit(&mut self.wbuf) == 0 {
                        break;
                    }
                    self.need_flush = true;
                    progress = true;
                }
                let Some(chunk) = self.wbuf.get(self.wpos..) else {
                    break;
                };
                match Pin::new(&mut *stream).poll_write(cx, chunk) {
                    Poll::Ready(Ok(0)) => {
                        failed = Some(io::Error::from(io::ErrorKind::WriteZero));
                        break;
                    }
                    Poll::Ready(Ok(n)) => {
                        self.wpos += n;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Poll::Ready(Err(e)) => {
                        failed = Some(e);
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            if failed.is_none() && self.need_flush && self.wpos >= self.wbuf.len() {
                match Pin::new(&mut *stream).poll_flush(cx) {
                    Poll::Ready(Ok(())) => {
                        self.need_flush = false;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => failed = Some(e),
                    Poll::Pending => {}
                }
            }
        }
        if let Some(e) = failed {
            tracing::debug!(error = %e, "write failed");
            self.write_dead = true;
            self.need_flush = false;
            self.wbuf.clear();
            self.wpos = 0;
            self.conn.handle_eof(now);
            progress = true;
        }
        progress
    }

    /// After the core closed: flush, close the stream (bounded by the
    /// linger time), then finish.
    fn poll_close(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        if !self.conn.is_closed()
            || self.final_reason.is_none()
            || self.pending.is_some()
            || !self.staged.is_empty()
        {
            return false;
        }
        let linger_until = *self
            .linger_until
            .get_or_insert_with(|| deadline_after(now, self.ctx.options.linger));
        let over = now >= linger_until;
        if let Some(stream) = self.stream.as_mut() {
            let flushed = self.write_dead
                || (self.wpos >= self.wbuf.len()
                    && !self.need_flush
                    && self.conn.outbound_len() == 0);
            if !flushed && !over {
                return false;
            }
            if !over && !self.write_dead && Pin::new(&mut **stream).poll_close(cx).is_pending() {
                return false;
            }
            self.stream = None;
        }
        self.finish();
        true
    }

    fn finish(&mut self) {
        let reason = self
            .final_reason
            .clone()
            .unwrap_or(CloseReason::UnexpectedEof);
        let authenticated = self.link.auth().is_some();
        if let Some(mut hooks) = self.hooks.take() {
            hooks.closed(&self.link, &reason);
        }
        let rest = self.link.inner.cmd.close();
        self.order_rx.close();
        drop(self.answers.close());
        self.answer_batch.clear();
        for (_, reply) in self.table.drain() {
            drop_one(&self.ctx.counters.requests_in_flight);
            let _ = reply.send(Err(Error::ConnectionLost));
        }
        for (cmd, _) in self.cmd_batch.drain(..).chain(rest) {
            fail_command(cmd);
        }
        self.sleep = None;
        self.linger_until = None;
        if authenticated {
            tracing::info!(reason = %reason, "closed");
            self.ctx.emit_lossy(Event::Closed {
                link: self.link.clone(),
                reason,
            });
        } else if self.ctx.report_handshake_errors {
            tracing::info!(reason = %reason, "closed before authenticating");
            self.ctx.emit_lossy(Event::Error {
                peer_addr: Some(self.link.peer_addr()),
                error: Error::from_handshake_close(reason),
            });
        }
        self.phase = Phase::Finished;
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        // A request held back by backpressure fails at its own deadline.
        let held = self
            .cmd_batch
            .iter()
            .filter_map(|(c, _)| match c {
                Command::Request { deadline, .. } => Some(*deadline),
                _ => None,
            })
            .min();
        let next = [self.conn.poll_timeout(), self.linger_until, held]
            .into_iter()
            .flatten()
            .min();
        let Some(at) = next else {
            self.sleep = None;
            return false;
        };
        if self.sleep.as_ref().is_none_or(|(d, _)| *d != at) {
            // A deadline that far ahead is none (a timeout of
            // `Duration::MAX`): a timer at the horizon, which no runtime's
            // arithmetic overflows, and it is re-armed when it fires.
            let until = at.min(deadline_after(now, NO_DEADLINE));
            self.sleep = Some((at, self.rt.sleep_until(until)));
        }
        if let Some((_, s)) = self.sleep.as_mut()
            && s.as_mut().poll(cx).is_ready()
        {
            self.sleep = None;
            return true;
        }
        false
    }

    fn sync_stats(&mut self) {
        let s = self.conn.stats();
        let c = &self.ctx.counters;
        bump(
            &c.bytes_in,
            s.bytes_in.saturating_sub(self.last_stats.bytes_in),
        );
        bump(
            &c.bytes_out,
            s.bytes_out.saturating_sub(self.last_stats.bytes_out),
        );
        bump(
            &c.dropped_responses,
            s.dropped_responses
                .saturating_sub(self.last_stats.dropped_responses),
        );
        bump(
            &c.responses_too_large,
            s.responses_too_large
                .saturating_sub(self.last_stats.responses_too_large),
        );
        self.last_stats = s;
    }

    fn outcome(&self) -> Outcome {
        Outcome {
            authenticated: self.link.auth().is_some(),
            reason: self
                .final_reason
                .clone()
                .unwrap_or(CloseReason::UnexpectedEof),
        }
    }
}

impl Future for Driver {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let this = self.get_mut();
        for _ in 0..ROUNDS_PER_WAKE {
            match this.round(cx) {
                None => return Poll::Ready(this.outcome()),
                Some(true) => {}
                Some(false) => return Poll::Pending,
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
        // owner's slot; waiters see their channels close.
        if let Some(mut hooks) = self.hooks.take() {
            let reason = self
                .final_reason
                .clone()
                .unwrap_or(CloseReason::UnexpectedEof);
            hooks.closed(&self.link, &reason);
        }
        for (cmd, _) in self.cmd_batch.drain(..).chain(self.link.inner.cmd.close()) {
            fail_command(cmd);
        }
    }
}

/// A handler call the driver admits.
enum Job {
    /// A request or concurrent message handler's future, run as a task.
    Task(BoxFuture<'static, ()>),
    /// An ordered message handler and its message, for the link's lane.
    Ordered(Arc<MessageFn>, Message),
}

/// Starts an admitted call: spawns its task, or queues it in the lane
/// (spawning the lane's task if none is draining it).
fn start_job(
    rt: &Arc<dyn Runtime>,
    lane: &Arc<Lane>,
    span: &tracing::Span,
    job: Job,
    guard: BudgetGuard,
) {
    match job {
        Job::Task(fut) => {
            let fut = fut.instrument(span.clone());
            rt.spawn(Box::pin(async move {
                let _guard = guard;
                fut.await;
            }));
        }
        Job::Ordered(handler, message) => {
            let call = LaneCall {
                handler,
                message,
                guard,
            };
            if let Some(drain) = lane.push(call) {
                rt.spawn(Box::pin(drain.instrument(span.clone())));
            }
        }
    }
}

/// A command that never reached the core.
fn fail_command(cmd: Command) {
    match cmd {
        Command::Send { .. } | Command::Close { .. } => {}
        Command::Request { reply, .. } => {
            let _ = reply.send(Err(Error::NotConnected));
        }
        Command::Ping { ack, .. } => {
            let _ = ack.send(Err(Error::NotConnected));
        }
    }
}

/// The one warning for an answer too large for the peer, which was
/// replaced by an error answer. The op is the peer's text: clipped, and
/// logged escaped.
fn warn_too_large(id: PeerRequestId, op: Option<&str>, size: usize, limit: usize) {
    let op: String = op.unwrap_or("").chars().take(64).collect();
    tracing::warn!(
        id = %id,
        op = ?op,
        size,
        limit,
        "answer too large for the requester's max_frame: answered with an error instead"
    );
}

fn no_handler(req: Request) {
    let op = req.op.as_deref().unwrap_or("");
    let op: String = op.chars().take(64).collect();
    let _ = req.responder.respond_error(RemoteError::new(
        RemoteError::NO_HANDLER,
        format!("no handler for op `{op}`"),
    ));
}

/// An event with nowhere to go (no stream, no declared consumer, or the
/// stream's receiver gone): answer requests `no_handler`, count messages.
fn undeliverable(ctx: &LinkCtx, ev: Event) {
    match ev {
        Event::Request(req) => no_handler(req),
        Event::Message(m) => {
            tracing::debug!(op = ?m.op.as_deref(), "message dropped: no handler, no event consumer");
            bump(&ctx.counters.dropped_messages, 1);
        }
        _ => {}
    }
}
