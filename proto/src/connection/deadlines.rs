//! The deadlines of our pending requests (PROTOCOL.md §11.2): which
//! request times out next, kept cheap for the usual case of one timeout for
//! every request and answers in order.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Instant;

use rustc_hash::FxHashMap;

/// The deadlines of our pending requests, with lazy removal: a queue for
/// deadlines that arrive in order, and a min-heap for the others.
///
/// With one timeout for every request (the usual case) each deadline is at
/// or after the previous one, so it is appended to the queue, and answers
/// mostly come back in that order, so each is dropped from the queue's
/// front: both O(1), where a heap costs a sift of log₂(in flight) levels
/// each way, which shows at many requests in flight. A deadline earlier
/// than the queue's last (a shorter per-request timeout) goes to the heap;
/// the earliest deadline is the smaller of the two fronts.
///
/// An answered request is dropped at once when it is the earliest entry
/// (answers in order); otherwise it stays until it is (then
/// [`pop_expired`](Self::pop_expired) drops it when its deadline passes,
/// so [`first`](Self::first) may be an answered request's deadline: a timer
/// that fires for nothing, never one that fires late) or until dead entries
/// outnumber live ones and are all dropped (so it holds at most about twice
/// the requests in flight). Expiry order is that of an ordered set: by
/// deadline, then id.
///
/// Generic over the time type only so that its tests can use plain numbers.
#[derive(Debug, Clone)]
pub(super) struct Deadlines<T = Instant> {
    /// Entries in ascending order, each at or after the one before.
    queue: VecDeque<(T, u64)>,
    /// Entries that were earlier than the queue's last when inserted.
    heap: BinaryHeap<Reverse<(T, u64)>>,
}

impl<T: Ord> Default for Deadlines<T> {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
            heap: BinaryHeap::new(),
        }
    }
}

impl<T: Ord + Copy> Deadlines<T> {
    pub(super) fn insert(&mut self, deadline: T, id: u64) {
        let entry = (deadline, id);
        if self.queue.back().is_none_or(|last| *last <= entry) {
            self.queue.push_back(entry);
        } else {
            self.heap.push(Reverse(entry));
        }
    }

    /// The earliest entry, live or not, and whether it is the queue's.
    fn front(&self) -> Option<((T, u64), bool)> {
        match (self.queue.front(), self.heap.peek()) {
            (Some(q), Some(Reverse(h))) if h < q => Some((*h, false)),
            (Some(q), _) => Some((*q, true)),
            (None, Some(Reverse(h))) => Some((*h, false)),
            (None, None) => None,
        }
    }

    /// The earliest deadline held: the earliest live one, or earlier (an
    /// answered request's, not yet dropped), so a timer set for it may
    /// fire for nothing, never late.
    pub(super) fn first(&self) -> Option<T> {
        self.front().map(|((d, _), _)| d)
    }

    /// Forgets `(deadline, id)`, just removed from `pending` (a request
    /// with no deadline was never here). With answers in deadline order it
    /// is the front, dropped at once with no lookup; otherwise it stays
    /// until [`settle`](Self::settle) or a compaction drops it.
    pub(super) fn remove(&mut self, deadline: Option<T>, id: u64, pending: &Pending<T>) {
        if let Some(deadline) = deadline {
            let entry = (deadline, id);
            if self.queue.front() == Some(&entry) {
                self.queue.pop_front();
            } else if self.heap.peek() == Some(&Reverse(entry)) {
                self.heap.pop();
            }
        }
        self.compact(pending);
    }

    /// The deadline of the earliest live request if it is `now` or before
    /// (the one [`pop_expired`](Self::pop_expired) would take).
    pub(super) fn first_expired(&mut self, now: T, pending: &Pending<T>) -> Option<T> {
        self.settle(pending);
        self.first().filter(|d| *d <= now)
    }

    /// Takes the earliest request whose deadline is `now` or before.
    pub(super) fn pop_expired(&mut self, now: T, pending: &Pending<T>) -> Option<u64> {
        self.settle(pending);
        match self.front() {
            Some(((d, id), in_queue)) if d <= now => {
                if in_queue {
                    self.queue.pop_front();
                } else {
                    self.heap.pop();
                }
                Some(id)
            }
            _ => None,
        }
    }

    /// Drops dead entries from both fronts, so the earliest entry is live.
    fn settle(&mut self, pending: &Pending<T>) {
        while self.queue.front().is_some_and(|e| !is_live(e, pending)) {
            self.queue.pop_front();
        }
        while self
            .heap
            .peek()
            .is_some_and(|Reverse(e)| !is_live(e, pending))
        {
            self.heap.pop();
        }
    }

    /// Drops every dead entry once they outnumber the live ones, which
    /// bounds the entries held to about twice the requests in flight at an
    /// amortized cost of one lookup per removal.
    fn compact(&mut self, pending: &Pending<T>) {
        if self.len() > 2 * pending.len() + 32 {
            self.queue.retain(|e| is_live(e, pending));
            self.heap.retain(|Reverse(e)| is_live(e, pending));
        }
    }

    /// Entries held, live or not.
    fn len(&self) -> usize {
        self.queue.len() + self.heap.len()
    }

    pub(super) fn clear(&mut self) {
        self.queue.clear();
        self.heap.clear();
    }
}

/// Our pending requests, by id, with their deadlines (`None`: none): the
/// connection's table, which tells live entries from dead ones.
type Pending<T> = FxHashMap<u64, Option<T>>;

/// Whether a deadline entry still belongs to a pending request (an answered
/// or expired one is gone from `pending`; an id is never reused).
fn is_live<T: PartialEq>((deadline, id): &(T, u64), pending: &Pending<T>) -> bool {
    pending
        .get(id)
        .is_some_and(|d| d.as_ref() == Some(deadline))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A model of the pending table and its deadlines as an ordered set.
    #[derive(Default)]
    struct Model {
        pending: FxHashMap<u64, Option<u64>>,
        d: Deadlines<u64>,
        set: BTreeSet<(u64, u64)>,
    }

    impl Model {
        fn insert(&mut self, at: u64, id: u64) {
            self.pending.insert(id, Some(at));
            self.d.insert(at, id);
            self.set.insert((at, id));
        }
        /// A request with no deadline: in `pending` only.
        fn insert_untimed(&mut self, id: u64) {
            self.pending.insert(id, None);
        }
        fn answer(&mut self, id: u64) {
            if let Some(at) = self.pending.remove(&id) {
                self.d.remove(at, id, &self.pending);
                if let Some(at) = at {
                    self.set.remove(&(at, id));
                }
            }
        }
        fn expire(&mut self, now: u64) -> Vec<u64> {
            let mut out = Vec::new();
            while let Some(id) = self.d.pop_expired(now, &self.pending) {
                if let Some(Some(at)) = self.pending.remove(&id) {
                    self.set.remove(&(at, id));
                }
                out.push(id);
            }
            out
        }
        fn check(&self) {
            // `first` is never later than the earliest live deadline, and is
            // exactly it once the fronts are settled.
            let live = self.set.first().map(|(d, _)| *d);
            if let Some(live) = live {
                assert!(self.d.first().is_some_and(|f| f <= live));
            }
            let mut settled = self.d.clone();
            settled.settle(&self.pending);
            assert_eq!(settled.first(), live);
            assert!(self.d.len() <= 2 * self.pending.len() + 32 + 1);
        }
    }

    #[test]
    fn expiry_is_by_deadline_then_id_whatever_the_insertion_order() {
        let t0 = 1_000u64;
        let mut m = Model::default();
        for (id, secs) in [(1, 30), (2, 5), (3, 30), (4, 1), (5, 5)] {
            m.insert(t0 + secs, id);
            m.check();
        }
        assert_eq!(m.expire(t0 + 5), [4, 2, 5]);
        m.check();
        assert_eq!(m.expire(t0 + 60), [1, 3]);
        assert_eq!(m.d.first(), None);
    }

    #[test]
    fn in_order_deadlines_stay_in_the_queue_and_early_ones_go_to_the_heap() {
        let t0 = 1_000u64;
        let mut m = Model::default();
        for id in 0..100 {
            m.insert(t0 + id / 10, id);
        }
        assert_eq!((m.d.queue.len(), m.d.heap.len()), (100, 0));
        // A shorter timeout than the last one: the heap, and it comes first.
        m.insert(t0 + 2, 100);
        assert_eq!((m.d.queue.len(), m.d.heap.len()), (100, 1));
        m.check();
        // Answers in order leave from the queue's front as they come.
        for id in 0..20 {
            m.answer(id);
        }
        assert_eq!(m.d.queue.len(), 80);
        assert_eq!(
            m.expire(t0 + 2),
            [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 100]
        );
        m.check();
    }

    #[test]
    fn answers_behind_a_slow_request_do_not_pile_up() {
        let t0 = 1_000u64;
        let mut m = Model::default();
        m.insert(t0 + 1, 0);
        for id in 1..10_000 {
            m.insert(t0 + 30, id);
            m.answer(id);
            m.check();
        }
        assert!(m.d.len() <= 34, "{}", m.d.len());
        assert_eq!(m.expire(t0 + 2), [0]);
        assert_eq!(m.d.len(), 0);
    }

    proptest::proptest! {
        #[test]
        fn matches_an_ordered_set(ops in proptest::collection::vec((0u8..3, 0u64..64, 0u64..40), 1..300)) {
            let t0 = 1_000u64;
            let mut m = Model::default();
            let mut next = 0u64;
            let mut now = t0;
            for (op, pick, secs) in ops {
                match op {
                    // Now and then a request with no deadline.
                    0 if secs == 39 => {
                        m.insert_untimed(next);
                        next += 1;
                    }
                    0 => {
                        m.insert(now + secs, next);
                        next += 1;
                    }
                    1 => m.answer(pick % next.max(1)),
                    _ => {
                        now += secs / 4;
                        let want: Vec<u64> = m.set.iter().take_while(|(d, _)| *d <= now).map(|(_, id)| *id).collect();
                        proptest::prop_assert_eq!(m.expire(now), want);
                    }
                }
                m.check();
            }
        }
    }
}
