//! The event stream's queue: links push events in batches, the
//! application takes them.
//!
//! Bounded by [`LinkOptions::event_capacity`](crate::LinkOptions) events of
//! each kind, data and lifecycle, counted separately in one queue (so the
//! order in which events were pushed is the order they are taken):
//!
//! - data events (messages, requests) wait for room among data events: a
//!   link whose event does not fit stops reading until the application
//!   catches up; lifecycle events never take their room;
//! - lifecycle events never wait: when `capacity` of them are queued, the
//!   oldest is dropped (and counted) to make room for the new one, so a
//!   stream nobody reads holds the latest ones and never blocks a link;
//! - once the receiving [`EventStream`](crate::event::EventStream) is
//!   dropped, pushes fail and give their events back (requests are then
//!   answered `no_handler`, messages counted as dropped);
//! - the stream ends when every sender is gone and the queue is empty.
//!
//! Why not a channel: a channel takes a lock-free slot and a wake-up check
//! per event, and when the consumer has caught up (the usual case on a
//! fast consumer) each event's send takes the listener lock to wake it.
//! A link's driver turns one socket read into many events; here it pushes
//! all of them under one lock and wakes the consumer once per batch.
//! Producers waiting for room are woken once the queue has drained to half
//! its capacity of data events, not per freed slot.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::event::Event;

/// What the queue needs to know of an item: whether it may be dropped
/// when there is no room.
pub(crate) trait Item {
    /// Lifecycle events never wait: the oldest is dropped (and counted)
    /// when their bound is reached; data events wait.
    fn is_lifecycle(&self) -> bool;
}

impl Item for Event {
    fn is_lifecycle(&self) -> bool {
        Self::is_lifecycle(self)
    }
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    /// Data items in `items`.
    data: usize,
    /// Lifecycle items in `items`.
    lifecycle: usize,
    /// Live [`EventSender`]s.
    senders: usize,
    /// The receiver was dropped.
    closed: bool,
}

#[derive(Debug)]
struct Shared<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    /// Receivers waiting for an event or the end.
    ready: event_listener::Event,
    /// Senders waiting for room or the close.
    room: event_listener::Event,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding the lock; recover if it ever did.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// After taking data events from a queue that held `before` of them
    /// and now holds `after`: wakes the waiting senders once it has
    /// drained to half its capacity.
    fn taken(&self, before: usize, after: usize) {
        let half = self.capacity / 2;
        if before > half && after <= half {
            self.room.notify(usize::MAX);
        }
    }
}

impl<T: Item> State<T> {
    /// Takes the front item, keeping the counts.
    fn pop(&mut self) -> Option<T> {
        let item = self.items.pop_front()?;
        if item.is_lifecycle() {
            self.lifecycle -= 1;
        } else {
            self.data -= 1;
        }
        Some(item)
    }
}

/// A bounded queue of `capacity` events of each kind (at least 1).
pub(crate) fn channel<T>(capacity: usize) -> (EventSender<T>, EventReceiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            data: 0,
            lifecycle: 0,
            senders: 1,
            closed: false,
        }),
        capacity: capacity.max(1),
        ready: event_listener::Event::new(),
        room: event_listener::Event::new(),
    });
    (EventSender(shared.clone()), EventReceiver(shared))
}

/// What a push left behind.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Every event went in (a lifecycle event may have pushed out the
    /// oldest one; see the count).
    All,
    /// A data event at the front found no room; it and those behind it
    /// are still in the batch.
    Full,
    /// The receiver is gone; the batch is untouched.
    Closed,
}

/// The producing side; clones count as senders.
#[derive(Debug)]
pub(crate) struct EventSender<T = Event>(Arc<Shared<T>>);

impl<T> Clone for EventSender<T> {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Self(self.0.clone())
    }
}

impl<T> Drop for EventSender<T> {
    fn drop(&mut self) {
        let last = {
            let mut s = self.0.lock();
            s.senders -= 1;
            s.senders == 0
        };
        if last {
            self.0.ready.notify(usize::MAX);
        }
    }
}

impl<T: Item> EventSender<T> {
    /// Moves events from the front of `batch` into the queue while there
    /// is room for data events; a lifecycle event always goes in, pushing
    /// out the oldest lifecycle event when `capacity` of them are queued
    /// (counted in `dropped`). One lock and at most one wake-up for the
    /// batch.
    pub(crate) fn push_batch(&self, batch: &mut VecDeque<T>, dropped: &mut usize) -> Pushed {
        let capacity = self.0.capacity;
        // Dropped outside the lock.
        let mut evicted = Vec::new();
        let moved = {
            let mut s = self.0.lock();
            if s.closed {
                return Pushed::Closed;
            }
            let mut moved = 0;
            while let Some(ev) = batch.pop_front() {
                if ev.is_lifecycle() {
                    if s.lifecycle >= capacity
                        && let Some(i) = s.items.iter().position(Item::is_lifecycle)
                        && let Some(old) = s.items.remove(i)
                    {
                        s.lifecycle -= 1;
                        evicted.push(old);
                        *dropped += 1;
                    }
                    s.lifecycle += 1;
                } else if s.data < capacity {
                    s.data += 1;
                } else {
                    batch.push_front(ev);
                    break;
                }
                s.items.push_back(ev);
                moved += 1;
            }
            moved
        };
        drop(evicted);
        if moved > 0 {
            self.0.ready.notify(moved);
        }
        if batch.is_empty() {
            Pushed::All
        } else {
            Pushed::Full
        }
    }

    /// Waits until the queue has room for a data event or its receiver is
    /// gone.
    pub(crate) async fn room(&self) {
        wait_until(&self.0.room, || {
            let s = self.0.lock();
            (s.closed || s.data < self.0.capacity).then_some(())
        })
        .await;
    }
}

/// The consuming side (one per server or client).
#[derive(Debug)]
pub(crate) struct EventReceiver<T = Event>(Arc<Shared<T>>);

impl<T> Drop for EventReceiver<T> {
    fn drop(&mut self) {
        let rest = {
            let mut s = self.0.lock();
            s.closed = true;
            s.data = 0;
            s.lifecycle = 0;
            std::mem::take(&mut s.items)
        };
        self.0.room.notify(usize::MAX);
        // Outside the lock: dropping a request answers it.
        drop(rest);
    }
}

impl<T: Item> EventReceiver<T> {
    /// Moves up to `max` waiting events into `out`; how many, or, when
    /// none are waiting, whether the stream has ended.
    fn try_take(&self, out: &mut Vec<T>, max: usize) -> Result<usize, bool> {
        let (before, after, n) = {
            let mut s = self.0.lock();
            if s.items.is_empty() {
                return Err(s.senders == 0);
            }
            let before = s.data;
            let mut n = 0;
            while n < max
                && let Some(ev) = s.pop()
            {
                out.push(ev);
                n += 1;
            }
            (before, s.data, n)
        };
        self.0.taken(before, after);
        Ok(n)
    }

    /// One waiting event, or, when none is, whether the stream has ended.
    fn try_one(&self) -> Result<T, bool> {
        let (ev, before, after) = {
            let mut s = self.0.lock();
            let before = s.data;
            match s.pop() {
                Some(ev) => (ev, before, s.data),
                None => return Err(s.senders == 0),
            }
        };
        self.0.taken(before, after);
        Ok(ev)
    }

    /// One waiting event, if any.
    pub(crate) fn try_recv(&self) -> Option<T> {
        self.try_one().ok()
    }

    /// Waits for at least one event, then moves up to `max` (at least 1)
    /// into `out`; 0 once the stream has ended.
    pub(crate) async fn recv_many(&self, out: &mut Vec<T>, max: usize) -> usize {
        let max = max.max(1);
        wait_until(&self.0.ready, || match self.try_take(out, max) {
            Ok(n) => Some(n),
            Err(ended) => ended.then_some(0),
        })
        .await
    }

    /// Waits for one event; `None` once the stream has ended.
    pub(crate) async fn recv(&self) -> Option<T> {
        wait_until(&self.0.ready, || match self.try_one() {
            Ok(ev) => Some(Some(ev)),
            Err(ended) => ended.then_some(None),
        })
        .await
    }
}

/// Tries `attempt` until it gives an answer, waiting on `event` in between;
/// the listener is registered before the second try, so a notification
/// between a failed try and the wait is not missed.
async fn wait_until<R>(event: &event_listener::Event, mut attempt: impl FnMut() -> Option<R>) -> R {
    loop {
        if let Some(r) = attempt() {
            return r;
        }
        let listener = event.listen();
        if let Some(r) = attempt() {
            return r;
        }
        listener.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    /// Data items are positive, lifecycle items negative.
    impl Item for i32 {
        fn is_lifecycle(&self) -> bool {
            *self < 0
        }
    }

    fn poll<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn data_waits_for_room_and_lifecycle_pushes_out_its_oldest() {
        let (tx, rx) = channel::<i32>(3);
        let mut batch: VecDeque<i32> = [1, -1, 2, -2, 3, 4, 5].into();
        let mut dropped = 0;
        // 1, 2, 3 fill the room for data (lifecycle items take none of
        // it); 4 waits with everything behind.
        assert_eq!(tx.push_batch(&mut batch, &mut dropped), Pushed::Full);
        assert_eq!(dropped, 0);
        assert_eq!(Vec::from(batch.clone()), [4, 5]);
        // Lifecycle items go in even now; past three of them the oldest
        // is pushed out and counted.
        assert_eq!(
            tx.push_batch(&mut [-3, -4, -5].into(), &mut dropped),
            Pushed::All
        );
        assert_eq!(dropped, 2);
        let mut out = Vec::new();
        assert_eq!(futures_lite::future::block_on(rx.recv_many(&mut out, 8)), 6);
        assert_eq!(out, [1, 2, 3, -3, -4, -5]);
        assert_eq!(tx.push_batch(&mut batch, &mut dropped), Pushed::All);
        assert!(batch.is_empty());
        assert_eq!(rx.try_recv(), Some(4));
        assert_eq!(rx.try_recv(), Some(5));
        assert_eq!(rx.try_recv(), None);
    }

    #[test]
    fn an_unread_stream_keeps_the_latest_lifecycle_events() {
        let (tx, rx) = channel::<i32>(4);
        let mut dropped = 0;
        for i in 1..=100 {
            assert_eq!(tx.push_batch(&mut [-i].into(), &mut dropped), Pushed::All);
        }
        assert_eq!(dropped, 96);
        // Data still finds its whole room.
        let mut batch: VecDeque<i32> = (1..=4).collect();
        assert_eq!(tx.push_batch(&mut batch, &mut dropped), Pushed::All);
        let mut out = Vec::new();
        assert_eq!(
            futures_lite::future::block_on(rx.recv_many(&mut out, 16)),
            8
        );
        assert_eq!(out, [-97, -98, -99, -100, 1, 2, 3, 4]);
    }

    #[test]
    fn taking_lifecycle_events_frees_no_room_for_data() {
        let (tx, rx) = channel::<i32>(2);
        assert_eq!(
            tx.push_batch(&mut [-1, 1, 2, 3].into(), &mut 0),
            Pushed::Full
        );
        let mut room = pin!(tx.room());
        assert!(poll(room.as_mut()).is_pending());
        assert_eq!(rx.try_recv(), Some(-1));
        assert!(poll(room.as_mut()).is_pending());
        assert_eq!(rx.try_recv(), Some(1));
        assert!(poll(room.as_mut()).is_ready());
    }

    #[test]
    fn a_full_sender_waits_until_half_is_drained() {
        let (tx, rx) = channel::<i32>(4);
        let mut batch: VecDeque<i32> = (1..=5).collect();
        assert_eq!(tx.push_batch(&mut batch, &mut 0), Pushed::Full);
        let mut room = pin!(tx.room());
        assert!(poll(room.as_mut()).is_pending());
        // One free slot is not enough to wake the waiter: that happens
        // once half the queue is free.
        assert_eq!(rx.try_recv(), Some(1));
        assert!(poll(room.as_mut()).is_pending());
        assert_eq!(rx.try_recv(), Some(2));
        assert!(poll(room.as_mut()).is_ready());
        // A new waiter on a queue with room returns at once.
        assert!(poll(pin!(tx.room())).is_ready());
        assert_eq!(tx.push_batch(&mut batch, &mut 0), Pushed::All);
        let mut b: VecDeque<i32> = [6, 7].into();
        assert_eq!(tx.push_batch(&mut b, &mut 0), Pushed::Full);
        let mut room = pin!(tx.room());
        assert!(poll(room.as_mut()).is_pending());
        let mut out = Vec::new();
        assert_eq!(futures_lite::future::block_on(rx.recv_many(&mut out, 2)), 2);
        assert_eq!(out, [3, 4]);
        assert!(poll(room.as_mut()).is_ready());
    }

    #[test]
    fn a_dropped_receiver_closes_and_drops_what_was_queued() {
        let (tx, rx) = channel::<i32>(4);
        assert_eq!(tx.push_batch(&mut [1].into(), &mut 0), Pushed::All);
        let mut batch: VecDeque<i32> = [2, 3].into();
        drop(rx);
        assert_eq!(tx.push_batch(&mut batch, &mut 0), Pushed::Closed);
        assert_eq!(batch.len(), 2, "the batch is given back");
        // A waiting sender is released by the close.
        futures_lite::future::block_on(tx.room());
    }

    #[test]
    fn the_stream_ends_after_the_last_sender_once_drained() {
        let (tx, rx) = channel::<i32>(4);
        let tx2 = tx.clone();
        assert_eq!(tx.push_batch(&mut [1].into(), &mut 0), Pushed::All);
        drop(tx);
        let mut next = pin!(rx.recv());
        assert_eq!(poll(next.as_mut()), Poll::Ready(Some(1)));
        let mut next = pin!(rx.recv());
        assert!(poll(next.as_mut()).is_pending(), "one sender is left");
        drop(tx2);
        assert_eq!(poll(next.as_mut()), Poll::Ready(None));
        let mut out = Vec::new();
        assert_eq!(futures_lite::future::block_on(rx.recv_many(&mut out, 4)), 0);
    }

    #[test]
    fn a_waiting_receiver_is_woken_by_a_batch() {
        let (tx, rx) = channel::<i32>(8);
        let rx = Arc::new(rx);
        let rx2 = rx.clone();
        let t = std::thread::spawn(move || {
            let mut out = Vec::new();
            futures_lite::future::block_on(rx2.recv_many(&mut out, 8));
            out
        });
        let mut batch: VecDeque<i32> = [1, 2, 3].into();
        assert_eq!(tx.push_batch(&mut batch, &mut 0), Pushed::All);
        let got = t.join().unwrap();
        assert!(!got.is_empty() && got.len() <= 3);
        assert_eq!(got[0], 1);
        drop(rx);
    }
}
