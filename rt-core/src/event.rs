//! What a [`Server`](crate::Server) or [`Client`](crate::Client) reports
//! through its event stream.

use std::net::SocketAddr;
use std::time::Duration;

use jsonlink_proto::{Authenticated, CloseReason, RawJson};

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
/// [`Stats::dropped_events`](crate::Stats::dropped_events).
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
        /// The handshake outcome (peer identity, link id, features).
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
        data: Option<RawJson>,
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

/// The receiving end of an event stream.
#[derive(Debug)]
pub(crate) struct EventStream {
    rx: Option<crate::event_queue::EventReceiver>,
}

impl EventStream {
    pub(crate) fn new(rx: Option<crate::event_queue::EventReceiver>) -> Self {
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

/// The event-stream methods of [`Server`](crate::Server) and
/// [`Client`](crate::Client) (each reads its `self.inner.events`).
macro_rules! event_stream_methods {
    () => {
        /// The next event; `None` when the event stream is off. Messages
        /// and requests no handler takes arrive here only if the builder
        /// declared a consumer
        /// ([`LinkOptions::consume_events`](crate::LinkOptions::consume_events)).
        pub async fn next_event(&self) -> Option<$crate::Event> {
            self.inner.events.next().await
        }

        /// Waits for the next event, then moves it and up to `max - 1`
        /// more that are already waiting into `out` (appended); returns
        /// how many, 0 when the event stream is off or has ended. For
        /// consumers of many events: one wait per batch instead of one per
        /// event, as tokio's `mpsc::Receiver::recv_many`.
        pub async fn next_events(&self, out: &mut Vec<$crate::Event>, max: usize) -> usize {
            self.inner.events.next_many(out, max).await
        }

        /// The next event if one is waiting.
        pub fn try_next_event(&self) -> Option<$crate::Event> {
            self.inner.events.try_next()
        }

        /// Waits for the next event of `kind`, discarding others (requests
        /// discarded this way are answered `handler_dropped`).
        pub async fn wait_for(&self, kind: $crate::EventKind) -> Option<$crate::Event> {
            self.inner.events.wait_for(kind).await
        }
    };
}

pub(crate) use event_stream_methods;
