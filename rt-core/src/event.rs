//! What a [`Server`](crate::Server) or [`Client`](crate::Client) reports
//! through its event stream, and its counters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jsonlink_proto::{Authenticated, CloseReason, Payload};

use crate::dispatch::{Message, Request};
use crate::error::Error;
use crate::link::Link;

/// An event from a server or client.
///
/// Every `Authenticated` is followed by exactly one `Closed` for the same
/// link; a connection that fails before authenticating produces one
/// `Error` instead (on a client, at most one per outage and kind of error).
/// Events of one link arrive in order.
///
/// Two kinds: *data* events ([`Message`](Self::Message),
/// [`Request`](Self::Request)), which reach the stream only when the
/// application declared it consumes it
/// ([`LinkOptions::consume_events`](crate::LinkOptions::consume_events))
/// and then are never lost (a link waits for room), and *lifecycle* events
/// (all others), which never make a link wait: when
/// [`event_capacity`](crate::LinkOptions::event_capacity) of them are
/// unread, the oldest is dropped and counted in
/// [`Stats::dropped_events`].
///
/// On a client, links may overlap: after the server's going-away notice
/// the next link can authenticate while the old one drains, before its
/// `Closed`.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A link authenticated (server: a client joined; client: connected).
    Authenticated {
        /// The link.
        link: Link,
        /// The handshake outcome (peer identity, connection id, features).
        info: Authenticated,
    },
    /// A message no handler took (only with
    /// [`consume_events`](crate::LinkOptions::consume_events)).
    Message(Message),
    /// A request no handler took, or without an `op` (only with
    /// [`consume_events`](crate::LinkOptions::consume_events)); answer it
    /// through its responder.
    Request(Request),
    /// The peer pinged (a keepalive or [`Link::ping`]); a pong was sent.
    Ping {
        /// The link.
        link: Link,
        /// The ping's data object, if any.
        data: Option<Payload>,
    },
    /// The peer answered one of our pings.
    Pong {
        /// The link.
        link: Link,
    },
    /// The peer stopped answering keepalive pings; `Closed` follows.
    KeepaliveTimeout {
        /// The link.
        link: Link,
    },
    /// An authenticated link ended.
    Closed {
        /// The link (its id, address and peer stay readable).
        link: Link,
        /// Why.
        reason: CloseReason,
    },
    /// A connection failed before authenticating (TLS, handshake, wrong
    /// secret, refused by a limit), or a client's connect attempt failed.
    Error {
        /// The peer's address, when known.
        peer_addr: Option<SocketAddr>,
        /// What went wrong.
        error: Error,
    },
    /// Client only: the client will try to reconnect after `delay`.
    ReconnectAttempt {
        /// Attempts since the last successful authentication, from 1.
        attempt: u32,
        /// The wait before the attempt.
        delay: Duration,
    },
}

/// The kind of an [`Event`], for [`Server::wait_for`](crate::Server::wait_for)
/// and [`Client::wait_for`](crate::Client::wait_for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// [`Event::Authenticated`].
    Authenticated,
    /// [`Event::Message`].
    Message,
    /// [`Event::Request`].
    Request,
    /// [`Event::Ping`].
    Ping,
    /// [`Event::Pong`].
    Pong,
    /// [`Event::KeepaliveTimeout`].
    KeepaliveTimeout,
    /// [`Event::Closed`].
    Closed,
    /// [`Event::Error`].
    Error,
    /// [`Event::ReconnectAttempt`].
    ReconnectAttempt,
}

impl Event {
    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Self::Authenticated { .. } => EventKind::Authenticated,
            Self::Message(_) => EventKind::Message,
            Self::Request(_) => EventKind::Request,
            Self::Ping { .. } => EventKind::Ping,
            Self::Pong { .. } => EventKind::Pong,
            Self::KeepaliveTimeout { .. } => EventKind::KeepaliveTimeout,
            Self::Closed { .. } => EventKind::Closed,
            Self::Error { .. } => EventKind::Error,
            Self::ReconnectAttempt { .. } => EventKind::ReconnectAttempt,
        }
    }

    /// Whether this is a lifecycle event (never waited for: the oldest is
    /// dropped and counted when the stream holds its capacity of them)
    /// rather than data.
    pub(crate) fn is_lifecycle(&self) -> bool {
        !matches!(self, Self::Message(_) | Self::Request(_))
    }
}

/// A snapshot of a server's or client's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections open now (server: including those in TLS or
    /// authentication; client: 0 or 1).
    pub connections: u64,
    /// Connections accepted (server) or attempted (client) in total.
    pub connections_total: u64,
    /// Connections refused by a limit (server).
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

/// The receiving end of an event stream.
#[derive(Debug)]
pub(crate) struct EventStream {
    rx: Option<crate::stream::EventReceiver>,
}

impl EventStream {
    pub(crate) fn new(rx: Option<crate::stream::EventReceiver>) -> Self {
        Self { rx }
    }

    pub(crate) async fn next(&self) -> Option<Event> {
        self.rx.as_ref()?.recv().await
    }

    /// Waits for one event, then moves it and up to `max - 1` more that
    /// are already waiting into `out`, under one lock; how many (0: the
    /// stream ended).
    pub(crate) async fn next_many(&self, out: &mut Vec<Event>, max: usize) -> usize {
        if max == 0 {
            return 0;
        }
        match self.rx.as_ref() {
            Some(rx) => rx.recv_many(out, max).await,
            None => 0,
        }
    }

    pub(crate) fn try_next(&self) -> Option<Event> {
        self.rx.as_ref()?.try_recv()
    }

    pub(crate) async fn wait_for(&self, kind: EventKind) -> Option<Event> {
        loop {
            let ev = self.next().await?;
            if ev.kind() == kind {
                return Some(ev);
            }
        }
    }
}
