//! A relay link's virtual links (PROTOCOL.md §18): each relayed client
//! that joined is a [`Link`] of its own, with its own dispatcher (the same
//! handlers, its own budget and lane) and its own table of our requests,
//! driven by the relay link's driver. Their commands come through the
//! relay link's one queue, tagged with the client id
//! ([`Command::Relayed`](crate::link::Command::Relayed)); their answers
//! through the relay link's answer queue, tagged the same way.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::task::Context;

use jsonlink_proto::{Authenticated, ClientId, CloseCode, CloseReason, Joined, RemoteError};

use crate::dispatch::Dispatcher;
use crate::error::Error;
use crate::event::Event;
use crate::link::{Link, TAKES_ALL, TAKES_NOTHING};
use crate::stats::{LinkStats, bump};

use super::requests::Requests;
use super::{Driver, LinkHooks, new_virtual_link};

/// What the owner gives a relayed client it admits.
pub(crate) struct Admitted {
    /// The server-wide link id.
    pub(crate) id: u64,
    /// The owner's hooks for the virtual link (released on its end).
    pub(crate) hooks: Box<dyn LinkHooks>,
}

/// One relayed client's virtual link.
pub(super) struct Virtual {
    pub(super) link: Link,
    pub(super) dispatch: Dispatcher,
    pub(super) requests: Requests,
    pub(super) hooks: Option<Box<dyn LinkHooks>>,
    pub(super) counts: LinkStats,
}

/// A relayed client's address from its `join` (`ip:port`); the relay's
/// own address if it does not parse.
fn joined_addr(joined: &Joined, relay: &Link) -> SocketAddr {
    joined.addr.parse().unwrap_or_else(|_| relay.peer_addr())
}

impl Driver {
    /// Whether any delivery (the relay link's own, a virtual link's) is
    /// waiting: the link then neither reads nor dispatches.
    pub(super) fn delivery_waiting(&self) -> bool {
        self.dispatch.is_waiting()
            || self.virtual_waiting
            || self.leaving.iter().any(|v| v.dispatch.is_waiting())
    }

    /// Flushes the staged events of the virtual links touched and
    /// publishes their counters; those still not idle stay touched.
    pub(super) fn flush_virtuals(&mut self) -> bool {
        self.visit_dirty(None)
    }

    /// As [`flush_virtuals`](Self::flush_virtuals), polling their waiting
    /// deliveries first (with `cx`).
    fn visit_dirty(&mut self, mut cx: Option<&mut Context<'_>>) -> bool {
        if self.dirty.is_empty() {
            self.virtual_waiting = false;
            return false;
        }
        let mut progress = false;
        let mut waiting = false;
        let dirty = std::mem::take(&mut self.dirty);
        for c in dirty {
            let Some(v) = self.virtuals.get_mut(&c) else {
                continue;
            };
            if let Some(cx) = cx.as_deref_mut() {
                progress |= v.dispatch.poll_waiting(cx);
            }
            progress |= v.dispatch.flush();
            v.counts.messages_in = v.dispatch.messages_in;
            v.counts.requests_in = v.dispatch.requests_in;
            v.link.inner.counters.publish(&v.counts);
            waiting |= v.dispatch.is_waiting();
            if !v.dispatch.is_idle() {
                self.dirty.insert(c);
            }
        }
        self.virtual_waiting = waiting;
        progress
    }

    /// Polls the touched virtual links' waiting deliveries, flushes their
    /// staged events, and ends those that left once everything they
    /// dispatched is delivered; whether anything moved.
    pub(super) fn poll_virtuals(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = self.visit_dirty(Some(cx));
        let mut i = 0;
        while i < self.leaving.len() {
            let v = &mut self.leaving[i];
            progress |= v.dispatch.poll_waiting(cx);
            progress |= v.dispatch.flush();
            if v.dispatch.is_idle() {
                let v = self.leaving.swap_remove(i);
                self.finish_virtual(v);
                progress = true;
            } else {
                i += 1;
            }
        }
        progress
    }

    /// A relayed client joined: the owner admits it (a link id, its
    /// limits) and it becomes a link, or it is refused with `leave`
    /// (code `refused`).
    pub(super) fn on_joined(&mut self, joined: Joined) {
        // The relay link's own events first (its `Authenticated` may be
        // staged still, when the join came in the same read).
        self.dispatch.flush();
        let now = self.rt.now();
        let client = joined.client;
        let addr = joined_addr(&joined, &self.link);
        let admitted = match self.hooks.as_mut() {
            Some(h) => h.join(&self.link, addr),
            None => Err("the relay link is ending"),
        };
        let admitted = match admitted {
            Ok(a) => a,
            Err(limit) => {
                tracing::info!(client = client.0, addr = %addr, limit, "relayed client refused");
                bump(&self.ctx.counters.connections_refused, 1);
                self.ctx.emit_lossy(Event::Error {
                    peer_addr: Some(addr),
                    error: Error::Refused { limit },
                });
                let _ = self.conn.leave(now, client, CloseCode::Refused, limit);
                return;
            }
        };
        let relay_auth = self.link.auth();
        let auth = Authenticated {
            peer: joined.identity.clone(),
            connection_id: admitted.id,
            version: relay_auth.map_or(1, |a| a.version),
            signing: false,
            sign_alg: None,
            encryption: false,
            peer_max_frame: joined.max_frame,
            extensions: joined.extensions,
            relay: false,
        };
        let link = new_virtual_link(&self.link, client, addr, auth.clone());
        if let Some(o) = &self.ctx.observer {
            o.created(&link);
        }
        link.inner.accepting.store(TAKES_ALL, Ordering::Release);
        let span = tracing::info_span!(
            "jsonlink.relayed",
            conn = admitted.id,
            client = client.0,
            peer = %addr,
        );
        let dispatch = Dispatcher::new(
            self.ctx.clone(),
            link.clone(),
            span,
            self.inbox.answer_queue(),
        )
        .shedding();
        let mut v = Virtual {
            link: link.clone(),
            dispatch,
            requests: Requests::default(),
            hooks: Some(admitted.hooks),
            counts: LinkStats::default(),
        };
        bump(&self.ctx.counters.authenticated, 1);
        tracing::info!(
            conn = admitted.id,
            client = client.0,
            node = %auth.peer.node,
            designation = %auth.peer.designation,
            "relayed client authenticated"
        );
        if let Some(h) = v.hooks.as_mut() {
            h.authenticated(&link);
        }
        if let Some(o) = &self.ctx.observer {
            o.authenticated(&link);
        }
        v.dispatch.emit(Event::Authenticated { link, info: auth });
        // Pushed now (a new dispatcher never waits, and lifecycle events
        // always go in): ahead of any refusal of a later join, which is
        // reported at once.
        v.dispatch.flush();
        self.virtuals.insert(client.0, v);
    }

    /// A relayed client's virtual link ended: it takes no more commands,
    /// our requests to it fail [`Error::ConnectionLost`], and once what it
    /// dispatched is delivered its owner's slot is released and `Closed`
    /// emitted.
    pub(super) fn on_left(&mut self, client: ClientId, reason: CloseReason) {
        let Some(mut v) = self.virtuals.remove(&client.0) else {
            // Refused at its join: never a link.
            return;
        };
        v.link
            .inner
            .accepting
            .store(TAKES_NOTHING, Ordering::Release);
        drop(v.link.inner.cmd.close());
        v.requests.fail_all(&self.ctx);
        if let Some(h) = v.hooks.as_mut() {
            h.closing(&v.link, None);
        }
        tracing::info!(conn = v.link.id(), client = client.0, reason = %reason, "relayed client left");
        self.left_reasons.insert(client.0, reason);
        v.dispatch.flush();
        if v.dispatch.is_idle() {
            self.finish_virtual(v);
        } else {
            self.leaving.push(v);
        }
    }

    /// Releases a virtual link that left and emits its `Closed`.
    fn finish_virtual(&mut self, mut v: Virtual) {
        let client = v.link.inner.relay.as_ref().map_or(0, |r| r.client.0);
        let reason = self
            .left_reasons
            .remove(&client)
            .unwrap_or(CloseReason::UnexpectedEof);
        if let Some(mut h) = v.hooks.take() {
            h.closed(&v.link, &reason);
            if let Some(o) = &self.ctx.observer {
                o.closed(&v.link, &reason);
            }
        }
        self.ctx.emit_lossy(Event::Closed {
            link: v.link.clone(),
            reason,
        });
    }

    /// A request for a relayed client that is not (or no longer) a link:
    /// answered at once.
    pub(super) fn answer_unknown_client(
        &mut self,
        client: ClientId,
        id: jsonlink_proto::PeerRequestId,
    ) {
        let err = RemoteError::new(RemoteError::INTERNAL, "the client is not a link here");
        let _ = self.conn.client_respond(client, id, Err(&err));
    }

    /// The relay link ended without the core's `Left` for some clients
    /// (the driver dropped): release every virtual link.
    pub(super) fn release_virtuals(&mut self, reason: &CloseReason) {
        let clients: Vec<u64> = self.virtuals.keys().copied().collect();
        for c in clients {
            self.on_left(ClientId(c), reason.clone());
        }
        for v in std::mem::take(&mut self.leaving) {
            self.finish_virtual(v);
        }
    }
}
