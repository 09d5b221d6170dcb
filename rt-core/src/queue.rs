//! A link's command queue (and, unbounded, its answer queue): many handles
//! push, one driver takes in batches.
//!
//! Bounded twice, by a number of commands and by the body bytes they carry.
//! A command counts against both from the moment it is pushed until the
//! driver has *applied* it ([`Queue::release`]), not merely taken it, so
//! the batch a driver holds while the core pushes back still counts and the
//! bounds hold for everything queued on the link.
//!
//! Why not a channel: a channel hands items over one at a time, and each
//! pop wakes one waiting sender, so under load (more callers than free
//! slots) every message costs a listener registration, a lock and a task
//! wake; here the driver takes everything in one lock, wakes its senders
//! once per batch, and the driver itself is woken only by the push that
//! finds it parked.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// Why [`Queue::try_push`] refused an item (which it gives back).
#[derive(Debug)]
pub(crate) enum PushError<T> {
    /// No room now.
    Full(T),
    /// The driver has closed the queue: the link has ended.
    Closed(T),
}

/// What [`Queue::poll_take`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Take {
    /// Items were moved into the batch.
    Taken,
    /// The queue is closed and empty.
    Closed,
}

#[derive(Debug)]
struct State<T> {
    /// Pushed, not yet taken: each item with its weight (body bytes).
    items: VecDeque<(T, usize)>,
    /// Items pushed and not yet released (taken or not).
    count: usize,
    /// Their bytes.
    bytes: usize,
    closed: bool,
    /// The driver, parked on an empty queue.
    waker: Option<Waker>,
}

/// A bounded multi-producer, single-consumer queue; see the module docs.
#[derive(Debug)]
pub(crate) struct Queue<T> {
    state: Mutex<State<T>>,
    max_count: usize,
    max_bytes: usize,
    /// Senders waiting for room (or for the close).
    room: event_listener::Event,
}

impl<T> Queue<T> {
    /// At most `max_count` commands (at least 1) and `max_bytes` of body
    /// bytes; one command heavier than `max_bytes` is still taken when
    /// nothing else is queued.
    pub(crate) fn new(max_count: usize, max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                count: 0,
                bytes: 0,
                closed: false,
                waker: None,
            }),
            max_count: max_count.max(1),
            max_bytes,
            room: event_listener::Event::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding the lock; recover if it ever did.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Pushes `item` weighing `weight` bytes if there is room.
    pub(crate) fn try_push(&self, item: T, weight: usize) -> Result<(), PushError<T>> {
        let waker = {
            let mut s = self.lock();
            if s.closed {
                return Err(PushError::Closed(item));
            }
            let fits = s.count < self.max_count
                && (s.count == 0 || s.bytes.saturating_add(weight) <= self.max_bytes);
            if !fits {
                return Err(PushError::Full(item));
            }
            s.count += 1;
            s.bytes += weight;
            s.items.push_back((item, weight));
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Pushes `item`, waiting for room; gives it back if the queue closes.
    pub(crate) async fn push(&self, item: T, weight: usize) -> Result<(), T> {
        let mut item = item;
        loop {
            match self.try_push(item, weight) {
                Ok(()) => return Ok(()),
                Err(PushError::Closed(i)) => return Err(i),
                Err(PushError::Full(i)) => item = i,
            }
            // Register, then re-check, so a release in between is not missed.
            let listener = self.room.listen();
            match self.try_push(item, weight) {
                Ok(()) => return Ok(()),
                Err(PushError::Closed(i)) => return Err(i),
                Err(PushError::Full(i)) => item = i,
            }
            listener.await;
        }
    }

    /// Moves every waiting item into `batch` (the driver's); registers the
    /// driver's waker when there is none. Taken items still count against
    /// the bounds until [`release`](Self::release).
    pub(crate) fn poll_take(
        &self,
        cx: &Context<'_>,
        batch: &mut VecDeque<(T, usize)>,
    ) -> Poll<Take> {
        let mut s = self.lock();
        if !s.items.is_empty() {
            if batch.is_empty() {
                // Swap rather than copy: the driver's buffer, empty, keeps
                // its capacity for the handles' next pushes.
                std::mem::swap(&mut s.items, batch);
            } else {
                batch.append(&mut s.items);
            }
            return Poll::Ready(Take::Taken);
        }
        if s.closed {
            return Poll::Ready(Take::Closed);
        }
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// The driver has applied (or dropped) `count` taken items weighing
    /// `bytes`: their room goes back to the senders.
    pub(crate) fn release(&self, count: usize, bytes: usize) {
        if count == 0 {
            return;
        }
        {
            let mut s = self.lock();
            s.count = s.count.saturating_sub(count);
            s.bytes = s.bytes.saturating_sub(bytes);
        }
        // A woken sender that still finds no room (bytes) listens again.
        self.room.notify_additional(count);
    }

    /// Refuses further pushes and wakes every waiting sender; returns what
    /// was queued and not yet taken.
    pub(crate) fn close(&self) -> VecDeque<(T, usize)> {
        let rest = {
            let mut s = self.lock();
            s.closed = true;
            s.waker = None;
            s.count = 0;
            s.bytes = 0;
            std::mem::take(&mut s.items)
        };
        self.room.notify(usize::MAX);
        rest
    }

    /// Whether [`close`](Self::close) ran.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting_waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn bounds_count_and_bytes_until_released() {
        let q = Queue::new(3, 100);
        q.try_push(1, 60).unwrap();
        // 60 + 50 > 100 bytes.
        assert!(matches!(q.try_push(2, 50), Err(PushError::Full(2))));
        q.try_push(2, 40).unwrap();
        q.try_push(3, 0).unwrap();
        // 3 commands.
        assert!(matches!(q.try_push(4, 0), Err(PushError::Full(4))));

        let (_, w) = counting_waker();
        let cx = Context::from_waker(&w);
        let mut batch = VecDeque::new();
        assert_eq!(q.poll_take(&cx, &mut batch), Poll::Ready(Take::Taken));
        assert_eq!(batch.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1, 2, 3]);
        // Taken is not released: still full.
        assert!(matches!(q.try_push(4, 0), Err(PushError::Full(4))));
        q.release(1, 60);
        q.try_push(4, 10).unwrap();
        assert!(matches!(q.try_push(5, 0), Err(PushError::Full(5))));
    }

    #[test]
    fn one_heavy_item_passes_alone() {
        let q = Queue::new(8, 10);
        q.try_push("big", 1_000).unwrap();
        assert!(matches!(q.try_push("small", 1), Err(PushError::Full(_))));
        q.release(1, 1_000);
        q.try_push("small", 1).unwrap();
    }

    #[test]
    fn driver_is_woken_once_per_parking() {
        let q = Queue::new(16, 1 << 20);
        let (count, w) = counting_waker();
        let cx = Context::from_waker(&w);
        let mut batch = VecDeque::new();
        assert_eq!(q.poll_take(&cx, &mut batch), Poll::Pending);
        for i in 0..5 {
            q.try_push(i, 1).unwrap();
        }
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(q.poll_take(&cx, &mut batch), Poll::Ready(Take::Taken));
        assert_eq!(batch.len(), 5);
    }

    #[test]
    fn close_returns_the_rest_and_refuses_pushes() {
        let q = Queue::new(4, 1 << 20);
        q.try_push(1, 1).unwrap();
        q.try_push(2, 1).unwrap();
        let rest = q.close();
        assert_eq!(rest.len(), 2);
        assert!(q.is_closed());
        assert!(matches!(q.try_push(3, 1), Err(PushError::Closed(3))));
        let (_, w) = counting_waker();
        let cx = Context::from_waker(&w);
        let mut batch = VecDeque::new();
        assert_eq!(q.poll_take(&cx, &mut batch), Poll::Ready(Take::Closed));
    }

    #[test]
    fn waiting_senders_get_room_on_release_and_fail_on_close() {
        let q = Arc::new(Queue::new(1, 1 << 20));
        q.try_push(0, 1).unwrap();
        let waiter = {
            let q = q.clone();
            std::thread::spawn(move || futures_lite::future::block_on(q.push(1, 1)))
        };
        let closer = {
            let q = q.clone();
            std::thread::spawn(move || {
                futures_lite::future::block_on(async {
                    // Waits behind the first waiter until the close.
                    q.push(2, 1).await
                })
            })
        };
        // Release the first item: exactly one waiter gets the slot.
        let (_, w) = counting_waker();
        let cx = Context::from_waker(&w);
        let mut batch = VecDeque::new();
        assert_eq!(q.poll_take(&cx, &mut batch), Poll::Ready(Take::Taken));
        batch.clear();
        q.release(1, 1);
        // One of the two gets in (the driver is woken by its push); the
        // other waits until the close.
        let taken =
            futures_lite::future::block_on(std::future::poll_fn(|cx| q.poll_take(cx, &mut batch)));
        assert_eq!(taken, Take::Taken);
        let got: Vec<_> = batch.drain(..).map(|(i, _)| i).collect();
        assert_eq!(got.len(), 1);
        q.close();
        let results = [waiter.join().unwrap(), closer.join().unwrap()];
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
    }
}
