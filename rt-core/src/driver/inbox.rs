//! What reaches a link's driver from outside its socket: the owner's close
//! orders, the commands its handles queue, and its responders' answers —
//! taken in batches and given to the core in order, with what the core
//! pushes back (`Blocked`) held until it takes more.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use async_channel::Receiver;
use futures_lite::Stream;
use jsonlink_proto::{ClientId, CloseCode, Connection, SendError};

use crate::dispatch::Answer;
use crate::error::Error;
use crate::link::{CloseOrder, Command, Link};
use crate::queue::{Queue, Take};
use crate::stats::bump;

use super::Driver;

/// Command slots a link's backlog keeps between bursts.
const BACKLOG_KEEP: usize = 16;

/// The owner's orders, the handles' commands and the responders' answers
/// of one link.
pub(super) struct Inbox {
    /// The owner's close orders; `None` once every sender is gone.
    orders: Option<Pin<Box<Receiver<CloseOrder>>>>,
    /// Answers from this link's [`Responder`](crate::Responder)s
    /// (unbounded: at most one per peer request the core lets be in
    /// flight), taken in batches.
    answers: Arc<Queue<Answer>>,
    /// Answers taken, not yet accepted by the core.
    answer_batch: VecDeque<(Answer, usize)>,
    /// Commands taken, not yet accepted by the core.
    backlog: Backlog,
}

impl Inbox {
    pub(super) fn new(orders: Receiver<CloseOrder>) -> Self {
        Self {
            orders: Some(Box::pin(orders)),
            // Unbounded but bounded in practice: each responder sends at
            // most one answer, and at most `max_incoming_requests`
            // responders are alive. It holds no memory while empty.
            answers: Arc::new(Queue::new(usize::MAX, usize::MAX)),
            answer_batch: VecDeque::new(),
            backlog: Backlog::default(),
        }
    }

    /// The queue this link's responders answer through.
    pub(super) fn answer_queue(&self) -> Arc<Queue<Answer>> {
        self.answers.clone()
    }

    /// Takes an owner's order to close (or the news that the owner is
    /// gone, which closes too) while the core runs.
    fn poll_orders(&mut self, cx: &mut Context<'_>, now: Instant, conn: &mut Connection) -> bool {
        if conn.is_closed() {
            return false;
        }
        let Some(orders) = self.orders.as_mut() else {
            return false;
        };
        match orders.as_mut().poll_next(cx) {
            Poll::Ready(Some(order)) => {
                tracing::debug!(reason = order.reason, "closing on owner's order");
                conn.close_by(now, order.reason, order.deadline);
                true
            }
            Poll::Ready(None) => {
                self.orders = None;
                tracing::debug!("owner dropped; closing");
                conn.close(now, "owner dropped");
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
    fn apply_answers(&mut self, conn: &mut Connection) -> bool {
        let mut progress = false;
        while let Some((answer, weight)) = self.answer_batch.pop_front() {
            if let Some(back) = answer.give_to(conn) {
                self.answer_batch.push_front((back, weight));
                break;
            }
            progress = true;
        }
        progress
    }

    /// An inline handler's answer: given to the core at once, unless
    /// answers taken earlier are still waiting (then it waits behind them).
    pub(super) fn answer_now(&mut self, conn: &mut Connection, answer: Answer) {
        let waiting = if self.answer_batch.is_empty() {
            answer.give_to(conn)
        } else {
            Some(answer)
        };
        if let Some(answer) = waiting {
            self.answer_batch.push_back((answer, 0));
        }
    }

    /// The earliest deadline of a request held back, if any.
    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
        self.backlog.next_deadline()
    }

    /// Fails the requests held back whose deadline has passed (and those
    /// whose caller gave up), giving their room in `link`'s queue back;
    /// whether there were any.
    pub(super) fn expire_held(&mut self, link: &Link, now: Instant) -> bool {
        if self.backlog.next_deadline().is_none_or(|at| now < at) {
            return false;
        }
        let (count, bytes) = self.backlog.expire(now);
        link.inner.cmd.release(count, bytes);
        count > 0
    }

    /// The link has ended: no more orders or answers; every command never
    /// applied (held back, or `leftovers` still queued) fails.
    pub(super) fn close(&mut self, leftovers: VecDeque<(Command, usize)>) {
        if let Some(orders) = self.orders.as_mut() {
            orders.close();
        }
        drop(self.answers.close());
        self.answer_batch.clear();
        for (cmd, _) in self.backlog.items.drain(..).chain(leftovers) {
            fail_command(cmd);
        }
    }
}

impl Driver {
    /// Step 1: the owner's orders, then the answers and commands queued by
    /// now. Answers are taken before commands and applied after them:
    /// what a handler sent before answering (queued before its answer)
    /// goes out before the answer, which may be the last thing a draining
    /// link waits for.
    pub(super) fn take_input(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let mut progress = self.inbox.poll_orders(cx, now, &mut self.conn);
        progress |= self.inbox.take_answers(cx);
        progress |= self.take_commands(cx, now);
        progress | self.inbox.apply_answers(&mut self.conn)
    }

    /// Gives the commands held back to the core, then takes what handles
    /// queued since (one take per round: a batch is everything queued at
    /// that moment) and gives those, until the core pushes back.
    fn take_commands(&mut self, cx: &Context<'_>, now: Instant) -> bool {
        let mut progress = false;
        let mut took = false;
        loop {
            let (mut applied, mut bytes) = (0, 0);
            while let Some((cmd, weight)) = self.inbox.backlog.pop_front() {
                if let Some(back) = self.apply(cmd, now) {
                    self.inbox.backlog.push_front(back, weight);
                    break;
                }
                applied += 1;
                bytes += weight;
            }
            if applied > 0 {
                self.link.inner.cmd.release(applied, bytes);
                progress = true;
            }
            if took {
                break;
            }
            // Taken even while the core pushes back: still counted against
            // the queue's bounds, and a request among them then fails at
            // its deadline (`expire_held`).
            let stalled = !self.inbox.backlog.is_empty();
            match self.inbox.backlog.take_from(&self.link.inner.cmd, cx) {
                Poll::Ready(Take::Taken) => {
                    // Progress even when stalled: the next round takes
                    // again, and so registers the waker once it is empty.
                    took = true;
                    progress = true;
                    if stalled {
                        break;
                    }
                }
                // Closed only once the link has ended.
                Poll::Ready(Take::Closed) | Poll::Pending => break,
            }
        }
        progress
    }

    /// Gives one command to the core; gives it back if the core pushes
    /// back (`Blocked`).
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
                    Ok(()) => {
                        bump(&self.ctx.counters.messages_out, 1);
                        self.counts.messages_out += 1;
                    }
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
                        self.counts.requests_out += 1;
                        self.requests.insert(&self.ctx, id, reply);
                    }
                    Err(SendError::Blocked) => {
                        return Some(Command::Request {
                            body,
                            deadline,
                            reply,
                        });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Error::from_send(e)));
                    }
                }
                None
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
            Command::Relayed { client, cmd } => {
                self.apply_relayed(client, *cmd, now)
                    .map(|cmd| Command::Relayed {
                        client,
                        cmd: Box::new(cmd),
                    })
            }
        }
    }

    /// Gives a relayed client's command to the core as its `client_*`
    /// command; gives it back if the core pushes back. A client that has
    /// left fails it with [`Error::NotConnected`].
    fn apply_relayed(&mut self, client: ClientId, cmd: Command, now: Instant) -> Option<Command> {
        let gone = |e: SendError| match e {
            SendError::UnknownClient(_) => Error::NotConnected,
            e => Error::from_send(e),
        };
        match cmd {
            Command::Send { body } => {
                match self.conn.client_send(client, &body) {
                    Err(SendError::Blocked) => return Some(Command::Send { body }),
                    Ok(()) => {
                        bump(&self.ctx.counters.messages_out, 1);
                        if let Some(v) = self.virtuals.get_mut(&client.0) {
                            v.counts.messages_out += 1;
                            self.dirty.insert(client.0);
                        }
                    }
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
                let timeout = deadline.saturating_duration_since(now);
                match self.conn.client_request(now, client, &body, Some(timeout)) {
                    Ok(id) => match self.virtuals.get_mut(&client.0) {
                        Some(v) => {
                            v.counts.requests_out += 1;
                            v.requests.insert(&self.ctx, id, reply);
                            self.dirty.insert(client.0);
                        }
                        None => {
                            let _ = reply.send(Err(Error::ConnectionLost));
                        }
                    },
                    Err(SendError::Blocked) => {
                        return Some(Command::Request {
                            body,
                            deadline,
                            reply,
                        });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(gone(e)));
                    }
                }
                None
            }
            Command::Ping { ack, .. } => {
                // §18 carries no pings for relayed clients.
                let _ = ack.send(Err(Error::Send(SendError::NotRelay)));
                None
            }
            Command::Close { reason } => {
                let _ = self.conn.leave(now, client, CloseCode::Normal, &reason);
                None
            }
            Command::Relayed { cmd, .. } => {
                fail_command(*cmd);
                None
            }
        }
    }
}

/// Commands taken from the link's queue that the core has not accepted
/// yet: the first was refused `Blocked`, those behind it wait in order.
/// They count against the queue's bounds until applied or failed. The
/// requests among them fail at their deadline: the driver's timer is armed
/// at the earliest ([`next_deadline`](Self::next_deadline)).
#[derive(Default)]
struct Backlog {
    items: VecDeque<(Command, usize)>,
    /// The earliest deadline of the requests among `items`, as last
    /// computed; `None` when `items` changed since.
    earliest: Option<Option<Instant>>,
}

impl Backlog {
    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn pop_front(&mut self) -> Option<(Command, usize)> {
        let item = self.items.pop_front()?;
        self.earliest = None;
        if self.items.is_empty() {
            // The buffer goes back to the queue at the next take: keep a
            // burst's capacity from staying with an idle link.
            self.items.shrink_to(BACKLOG_KEEP);
        }
        Some(item)
    }

    fn push_front(&mut self, cmd: Command, weight: usize) {
        self.items.push_front((cmd, weight));
        self.earliest = None;
    }

    /// Takes everything queued on `queue` now, behind what is held.
    fn take_from(&mut self, queue: &Queue<Command>, cx: &Context<'_>) -> Poll<Take> {
        let taken = queue.poll_take(cx, &mut self.items);
        if taken.is_ready() {
            self.earliest = None;
        }
        taken
    }

    /// The earliest deadline of a request held back.
    fn next_deadline(&mut self) -> Option<Instant> {
        if self.items.is_empty() {
            return None;
        }
        *self.earliest.get_or_insert_with(|| {
            self.items
                .iter()
                .filter_map(|(c, _)| match c.unwrap_relayed() {
                    Command::Request { deadline, .. } => Some(*deadline),
                    _ => None,
                })
                .min()
        })
    }

    /// Fails the requests due by `now` (and those whose caller gave up)
    /// with [`Error::Timeout`]; how many, and their bytes.
    fn expire(&mut self, now: Instant) -> (usize, usize) {
        let expired = |c: &Command| {
            matches!(c.unwrap_relayed(), Command::Request { deadline, reply, .. }
                if now >= *deadline || reply.is_canceled())
        };
        let (mut count, mut bytes) = (0, 0);
        let mut kept = VecDeque::with_capacity(self.items.len());
        for (cmd, weight) in self.items.drain(..) {
            if !expired(&cmd) {
                kept.push_back((cmd, weight));
                continue;
            }
            if let Command::Request { reply, .. } = cmd.into_unwrapped() {
                let _ = reply.send(Err(Error::Timeout));
            }
            count += 1;
            bytes += weight;
        }
        self.items = kept;
        self.earliest = None;
        (count, bytes)
    }
}

/// A command that never reached the core.
fn fail_command(cmd: Command) {
    match cmd {
        Command::Send { .. } | Command::Close { .. } => {}
        Command::Relayed { cmd, .. } => fail_command(*cmd),
        Command::Request { reply, .. } => {
            let _ = reply.send(Err(Error::NotConnected));
        }
        Command::Ping { ack, .. } => {
            let _ = ack.send(Err(Error::NotConnected));
        }
    }
}
