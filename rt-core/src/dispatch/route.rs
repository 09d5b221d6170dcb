//! The dispatch policy of one link ([`Dispatcher`]): where each message
//! and request the core decodes goes — a handler by its op (in the link's
//! ordered lane, as a task, or inline), the event stream, or nowhere (a
//! request then answered `no_handler`, a message counted as dropped) — and
//! how the link waits when a handler slot or room in the stream is
//! missing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Context;

use jsonlink_proto::{Op, PeerRequestId, RawJson, RemoteError};
use tracing::Instrument as _;

use crate::context::LinkCtx;
use crate::dispatch::{
    Answer, BudgetGuard, BudgetLimits, HandlerBudget, InlineFn, Lane, LaneCall, Message, MessageFn,
    MessageRoute, Request, RequestRoute, Responder,
};
use crate::event::Event;
use crate::event_queue::Pushed;
use crate::link::Link;
use crate::queue::Queue;
use crate::runtime::{BoxFuture, Runtime};
use crate::stats::bump;

/// Events staged for the stream before a push (they are pushed in
/// batches of up to this many, and at the end of each round).
const EVENT_BATCH: usize = 64;

/// Where one link's decoded messages and requests go, and the deliveries
/// it waits for.
pub(crate) struct Dispatcher {
    ctx: Arc<LinkCtx>,
    link: Link,
    span: tracing::Span,
    /// Where this link's [`Responder`]s send their answers (taken by the
    /// driver).
    answers: Arc<Queue<Answer>>,
    budget: Arc<HandlerBudget>,
    /// Where this link's ordered message handler calls wait and run, one
    /// at a time.
    lane: Arc<Lane>,
    /// A delivery the link waits for (a handler slot, room in the event
    /// stream) before it dispatches or reads more.
    waiting: Option<BoxFuture<'static, ()>>,
    /// Events not yet pushed to the event stream.
    staged: VecDeque<Event>,
    /// Messages and requests this link received (for its
    /// [`LinkStats`](crate::LinkStats), published by the driver).
    pub(crate) messages_in: u64,
    pub(crate) requests_in: u64,
    /// A relayed client's dispatcher: past the handler budget its requests
    /// are answered `busy` and its messages dropped (counted), instead of
    /// the link waiting, so one slow client never stops its relay link
    /// from reading for the others.
    shed: bool,
}

impl Dispatcher {
    pub(crate) fn new(
        ctx: Arc<LinkCtx>,
        link: Link,
        span: tracing::Span,
        answers: Arc<Queue<Answer>>,
    ) -> Self {
        Self {
            ctx,
            link,
            span,
            answers,
            budget: Arc::new(HandlerBudget::default()),
            lane: Arc::new(Lane::default()),
            waiting: None,
            staged: VecDeque::new(),
            messages_in: 0,
            requests_in: 0,
            shed: false,
        }
    }

    /// A relayed client's dispatcher (see the `shed` field): past the
    /// handler budget it sheds instead of waiting.
    pub(crate) fn shedding(mut self) -> Self {
        self.shed = true;
        self
    }

    /// Whether a shedding dispatcher has no room for a handler call of
    /// `bytes` now (room only grows until the driver admits a call, so
    /// the admission that follows a `false` cannot wait).
    fn over_budget(&self, bytes: usize) -> bool {
        if !self.shed {
            return false;
        }
        let limits = BudgetLimits {
            tasks: self.ctx.options.max_handler_tasks,
            bytes: self.ctx.options.max_handler_bytes,
        };
        self.budget.try_acquire(limits, bytes).is_none()
    }

    /// Whether a delivery is waiting: the link then neither reads nor
    /// dispatches.
    pub(crate) fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// Whether everything dispatched so far has been delivered.
    pub(crate) fn is_idle(&self) -> bool {
        self.waiting.is_none() && self.staged.is_empty()
    }

    /// Polls the delivery the link waits for; whether it completed.
    pub(crate) fn poll_waiting(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(w) = self.waiting.as_mut() else {
            return false;
        };
        if w.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.waiting = None;
        true
    }

    /// A message from the peer: to the handler of its op (the link's
    /// ordered lane, or a task of its own), else to the event stream.
    pub(crate) fn message(&mut self, op: Option<Op>, body: RawJson) {
        bump(&self.ctx.counters.messages_in, 1);
        self.messages_in += 1;
        let handler = op
            .as_deref()
            .and_then(|op| self.ctx.handlers.message_handler(op));
        let msg = Message {
            link: self.link.clone(),
            op,
            body,
        };
        let bytes = msg.body.get().len();
        if handler.is_some() && self.over_budget(bytes) {
            tracing::debug!(op = ?msg.op.as_deref(), "relayed client over its handler budget: message dropped");
            bump(&self.ctx.counters.dropped_messages, 1);
            return;
        }
        match handler {
            Some(MessageRoute::Ordered(h)) => self.run_handler(Job::Ordered(h, msg), bytes),
            Some(MessageRoute::Concurrent(h)) => self.run_handler(Job::Task(h(msg)), bytes),
            None => self.emit(Event::Message(msg)),
        }
    }

    /// A request from the peer: to the handler of its op (a task of its
    /// own, or inline: then its answer is returned, for the driver to give
    /// the core at once), else to the event stream where a consumer is
    /// declared, else answered `no_handler`.
    pub(crate) fn request(
        &mut self,
        id: PeerRequestId,
        op: Option<Op>,
        body: RawJson,
    ) -> Option<Answer> {
        bump(&self.ctx.counters.requests_in, 1);
        self.requests_in += 1;
        let handler = match op
            .as_deref()
            .and_then(|op| self.ctx.handlers.request_handler(op))
        {
            Some(RequestRoute::Inline(f)) => return Some(self.answer_inline(id, op, &*f, body)),
            Some(RequestRoute::Task(f)) => Some(f),
            None => None,
        };
        let options = &self.ctx.options;
        // Only a declared consumer gets requests: without one, nothing
        // waits for a reader.
        let to_stream = self.ctx.events.is_some()
            && options.consume_events
            && (op.is_none() || options.unhandled_ops_to_events);
        let responder = Responder::new(id, self.answers.clone(), self.link.clone(), op.clone());
        let req = Request {
            link: self.link.clone(),
            responder,
            op,
            body,
        };
        if handler.is_some() && self.over_budget(req.body.get().len()) {
            let _ = req.responder.respond_error(RemoteError::new(
                RemoteError::BUSY,
                "too many requests in progress for this client",
            ));
            return None;
        }
        match handler {
            Some(h) => {
                let bytes = req.body.get().len();
                self.run_handler(Job::Task(h(req)), bytes);
            }
            None if to_stream => self.emit(Event::Request(req)),
            None => no_handler(req),
        }
        None
    }

    /// Calls an inline handler here, in the link's task. A panicking
    /// handler is answered `internal`; an answer too large for the peer is
    /// replaced as a [`Responder`]'s is.
    fn answer_inline(
        &self,
        id: PeerRequestId,
        op: Option<Op>,
        f: &InlineFn,
        body: RawJson,
    ) -> Answer {
        let link = &self.link;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(link, body)))
            .unwrap_or_else(|_| {
                tracing::warn!(id = %id, "inline request handler panicked");
                Err(RemoteError::new(
                    RemoteError::INTERNAL,
                    "the request handler failed",
                ))
            })
            .map(RawJson::into_raw);
        Answer::new(link, id, result, op)
    }

    /// Delivers to the event stream: data only to a declared consumer, and
    /// then it waits for room (the link stops reading meanwhile);
    /// lifecycle events never wait (the oldest unread are dropped).
    pub(crate) fn emit(&mut self, ev: Event) {
        if self.ctx.events.is_none() || (!ev.is_lifecycle() && !self.ctx.options.consume_events) {
            undeliverable(&self.ctx, ev);
            return;
        }
        self.staged.push_back(ev);
        if self.staged.len() >= EVENT_BATCH {
            self.flush();
        }
    }

    /// Pushes the staged events to the stream. A data event that finds no
    /// room makes the link wait for room, then a later round pushes the
    /// rest; lifecycle events always go in (the oldest unread ones dropped
    /// and counted past the bound); if the stream's receiver is gone the
    /// events are undeliverable. Whether anything moved.
    pub(crate) fn flush(&mut self) -> bool {
        if self.staged.is_empty() || self.waiting.is_some() {
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
                self.waiting = Some(Box::pin(async move { tx.room().await }));
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

    /// Admits a handler call, counting `bytes` of body against the link's
    /// handler budget, and starts it (a task of its own, or a place in the
    /// link's ordered lane); past the budget the link waits until an
    /// admitted call finishes, and dispatches nothing more meanwhile, so
    /// the lane keeps arrival order.
    fn run_handler(&mut self, job: Job, bytes: usize) {
        let limits = BudgetLimits {
            tasks: self.ctx.options.max_handler_tasks,
            bytes: self.ctx.options.max_handler_bytes,
        };
        match self.budget.try_acquire(limits, bytes) {
            Some(guard) => job.start(&self.ctx.rt, &self.lane, &self.span, guard),
            None => {
                let budget = self.budget.clone();
                let rt = self.ctx.rt.clone();
                let lane = self.lane.clone();
                let span = self.span.clone();
                self.waiting = Some(Box::pin(async move {
                    let guard = budget.acquire(limits, bytes).await;
                    job.start(&rt, &lane, &span, guard);
                }));
            }
        }
    }
}

/// A handler call the link admits.
enum Job {
    /// A request or concurrent message handler's future, run as a task.
    Task(BoxFuture<'static, ()>),
    /// An ordered message handler and its message, for the link's lane.
    Ordered(Arc<MessageFn>, Message),
}

impl Job {
    /// Starts an admitted call: spawns its task, or queues it in the lane
    /// (spawning the lane's task if none is draining it).
    fn start(
        self,
        rt: &Arc<dyn Runtime>,
        lane: &Arc<Lane>,
        span: &tracing::Span,
        guard: BudgetGuard,
    ) {
        match self {
            Self::Task(fut) => {
                let fut = fut.instrument(span.clone());
                rt.spawn(Box::pin(async move {
                    let _guard = guard;
                    fut.await;
                }));
            }
            Self::Ordered(handler, message) => {
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
}

/// Answers a request no handler takes `no_handler` (naming its op,
/// clipped).
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
