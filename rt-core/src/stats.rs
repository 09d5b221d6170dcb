//! A server's or client's counters: [`Stats`] (a snapshot) and the live
//! atomic counters behind it.

use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(doc)]
use crate::Error;

/// A snapshot of a server's or client's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections open now (server: including those in TLS or
    /// authentication; client: 0 or 1).
    pub connections: u64,
    /// Connections accepted (server) or attempted (client) in total.
    pub connections_total: u64,
    /// Connections refused by a limit (server), relayed clients' joins
    /// refused included (PROTOCOL.md §18.5).
    pub connections_refused: u64,
    /// Links that authenticated.
    pub authenticated: u64,
    /// Messages received.
    pub messages_in: u64,
    /// Messages sent.
    pub messages_out: u64,
    /// Requests received from peers.
    pub requests_in: u64,
    /// Requests sent.
    pub requests_out: u64,
    /// Our requests awaiting a response now.
    pub requests_in_flight: u64,
    /// Plaintext bytes received (after TLS).
    pub bytes_in: u64,
    /// Plaintext bytes handed to TLS.
    pub bytes_out: u64,
    /// Responses dropped: late (after their timeout), unknown or duplicate.
    pub dropped_responses: u64,
    /// Lifecycle events dropped unread: the oldest go when the event
    /// stream holds [`event_capacity`](crate::LinkOptions::event_capacity)
    /// of them.
    pub dropped_events: u64,
    /// Messages dropped because no handler took them and no consumer of
    /// the event stream is declared
    /// ([`consume_events`](crate::LinkOptions::consume_events)), or the
    /// stream is off or gone.
    pub dropped_messages: u64,
    /// Broadcast copies skipped because a link's command queue was full.
    pub broadcast_skipped: u64,
    /// Answers too large for the requester's `max_frame`, replaced by an
    /// error answer (see [`Error::ResponseTooLarge`]).
    pub responses_too_large: u64,
}

/// The live counters behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections: AtomicU64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) authenticated: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) requests_in: AtomicU64,
    pub(crate) requests_out: AtomicU64,
    pub(crate) requests_in_flight: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) dropped_responses: AtomicU64,
    pub(crate) dropped_events: AtomicU64,
    pub(crate) dropped_messages: AtomicU64,
    pub(crate) broadcast_skipped: AtomicU64,
    pub(crate) responses_too_large: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64, n: u64) {
    if n > 0 {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

pub(crate) fn drop_one(c: &AtomicU64) {
    let _ = c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            connections: g(&self.connections),
            connections_total: g(&self.connections_total),
            connections_refused: g(&self.connections_refused),
            authenticated: g(&self.authenticated),
            messages_in: g(&self.messages_in),
            messages_out: g(&self.messages_out),
            requests_in: g(&self.requests_in),
            requests_out: g(&self.requests_out),
            requests_in_flight: g(&self.requests_in_flight),
            bytes_in: g(&self.bytes_in),
            bytes_out: g(&self.bytes_out),
            dropped_responses: g(&self.dropped_responses),
            dropped_events: g(&self.dropped_events),
            dropped_messages: g(&self.dropped_messages),
            broadcast_skipped: g(&self.broadcast_skipped),
            responses_too_large: g(&self.responses_too_large),
        }
    }
}

/// A snapshot of one link's counters ([`Link::stats`](crate::Link::stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkStats {
    /// Messages received on this link.
    pub messages_in: u64,
    /// Messages sent on this link.
    pub messages_out: u64,
    /// Requests received from the peer on this link.
    pub requests_in: u64,
    /// Requests sent on this link.
    pub requests_out: u64,
    /// Plaintext bytes received (after TLS).
    pub bytes_in: u64,
    /// Plaintext bytes handed to TLS.
    pub bytes_out: u64,
}

/// The published counters of one link: its driver counts in plain
/// integers and stores them here once per round of work, so counting
/// costs the hot path no atomic operation.
#[derive(Debug, Default)]
pub(crate) struct LinkCounters {
    pub(crate) messages_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) requests_in: AtomicU64,
    pub(crate) requests_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
}

impl LinkCounters {
    /// Publishes the driver's counts.
    pub(crate) fn publish(&self, s: &LinkStats) {
        let p = |c: &AtomicU64, v: u64| c.store(v, Ordering::Relaxed);
        p(&self.messages_in, s.messages_in);
        p(&self.messages_out, s.messages_out);
        p(&self.requests_in, s.requests_in);
        p(&self.requests_out, s.requests_out);
        p(&self.bytes_in, s.bytes_in);
        p(&self.bytes_out, s.bytes_out);
    }

    pub(crate) fn snapshot(&self) -> LinkStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LinkStats {
            messages_in: g(&self.messages_in),
            messages_out: g(&self.messages_out),
            requests_in: g(&self.requests_in),
            requests_out: g(&self.requests_out),
            bytes_in: g(&self.bytes_in),
            bytes_out: g(&self.bytes_out),
        }
    }
}
