//! The `handshake_server` and `handshake_client` bodies: one connection fed
//! arbitrary bytes, optionally after an honest peer's first line or whole
//! handshake.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonlink_proto::testing::{Pair, chunks, client_config, server_config};
use jsonlink_proto::{CloseReason, Config, Connection, ConnectionParams, Event, SendError, Side};
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::input::{Input, policy, small_limits};
use crate::rules::{Seen, check_event_order, check_getters};
use crate::{CONN_ID, SEED};

/// A server fed arbitrary bytes (after an honest client's hello, or its
/// whole handshake, when the input says so).
pub fn handshake_server(base: Instant, data: &[u8]) {
    handshake(Side::Server, base, data);
}

/// A client fed arbitrary bytes (after an honest server's challenge, or its
/// whole handshake, when the input says so).
pub fn handshake_client(base: Instant, data: &[u8]) {
    handshake(Side::Client, base, data);
}

/// Watches one connection's outputs and checks its invariants.
#[derive(Default)]
struct Observer {
    authenticated: bool,
    closed: Option<CloseReason>,
    /// The peer's requests seen (we never answer them).
    incoming: HashSet<u64>,
}

impl Observer {
    /// Drains bytes and events; returns the bytes written.
    fn drain(&mut self, conn: &mut Connection, cfg: &Config, handshake_deadline: Instant) -> usize {
        let mut out = Vec::new();
        let n = conn.poll_transmit(&mut out);
        assert_eq!(n, out.len());
        assert_eq!(conn.outbound_len(), 0, "poll_transmit left bytes behind");
        if self.closed.is_some() {
            assert_eq!(n, 0, "{n} bytes written after Closed");
        }
        while let Some(ev) = conn.poll_event() {
            self.on_event(ev);
        }
        let seen = Seen {
            name: "connection",
            authenticated: self.authenticated,
            closed: self.closed.is_some(),
            open: self.incoming.len(),
            max_incoming: cfg.max_incoming_requests,
            unresolved: 0,
        };
        check_getters(conn, &seen);
        if seen.closed {
            assert!(!conn.wants_input(), "reading after Closed");
        } else if !seen.authenticated {
            let t = conn.poll_timeout();
            assert!(
                t.is_some_and(|t| t <= handshake_deadline),
                "unauthenticated without the handshake deadline: {t:?}"
            );
        }
        n
    }

    fn on_event(&mut self, ev: Event) {
        check_event_order("connection", self.authenticated, self.closed.as_ref(), &ev);
        match ev {
            Event::Authenticated(_) => self.authenticated = true,
            Event::Message { body, .. } => {
                assert!(serde_json::from_str::<IgnoredAny>(body.get()).is_ok());
            }
            Event::Request { id, body, .. } => {
                assert!(serde_json::from_str::<IgnoredAny>(body.get()).is_ok());
                assert!(self.incoming.insert(id.0), "request {id} twice in flight");
            }
            Event::Ping { data } => {
                assert!(data.is_none_or(|d| d.get().starts_with('{')));
            }
            Event::Pong => {}
            Event::Response { id, .. } | Event::RequestFailed { id, .. } => {
                panic!("outcome for request {id}, but none was sent")
            }
            Event::SendUnblocked => panic!("SendUnblocked, but no command was blocked"),
            Event::Closed(r) => {
                self.closed = Some(r);
                self.incoming.clear();
            }
            // `Event` is non-exhaustive: a new event needs its rules here.
            other => panic!("an event this body does not know: {other:?}"),
        }
    }
}

fn handshake_config(side: Side, cfg: u8) -> Config {
    let mut c = match side {
        Side::Client => client_config(SEED),
        Side::Server => server_config(SEED),
    };
    c.signing = policy(cfg);
    c.encryption = policy(cfg >> 2);
    if cfg & 0x10 != 0 {
        small_limits(&mut c);
    }
    c
}

fn params(side: Side) -> ConnectionParams {
    ConnectionParams {
        channel_binding: Vec::new(),
        connection_id: if side == Side::Server { CONN_ID } else { 0 },
    }
}

/// What an honest peer (default policies, seeded RNG) writes to a
/// connection on `side` with configuration `ours`: the first `lines` lines
/// of a whole exchange between the two on a [`Pair`] (as the corpus seeds
/// and the prefix options of the handshake bodies use them).
/// Deterministic: both RNGs are seeded and no time passes.
pub fn honest_peer_lines(base: Instant, side: Side, ours: &Config, lines: usize) -> Vec<u8> {
    let (client, server) = match side {
        Side::Client => (ours.clone(), server_config(SEED)),
        Side::Server => (client_config(SEED), ours.clone()),
    };
    let mut pair = Pair::new(base, client, server, Vec::new(), Vec::new());
    pair.record();
    pair.drive();
    let peer = match side {
        Side::Client => &pair.server,
        Side::Server => &pair.client,
    };
    let written = peer.log.as_deref().unwrap_or_default();
    let lines = written.split_inclusive(|&b| b == b'\n').take(lines);
    lines.flatten().copied().collect()
}

fn handshake(side: Side, base: Instant, data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let tick = Duration::from_millis(u64::from(input.byte()) * 100);
    let sizes = input.split_sizes();
    let cfg = handshake_config(side, flags);
    let mut stream = match (flags >> 5) & 3 {
        0 => Vec::new(),
        1 => honest_peer_lines(base, side, &cfg, 1),
        _ => honest_peer_lines(base, side, &cfg, usize::MAX),
    };
    stream.extend_from_slice(input.rest());

    let deadline = base + cfg.handshake_timeout;
    let mut conn = Connection::new(Arc::new(cfg.clone()), side, base, params(side));
    let mut obs = Observer::default();
    let mut now = base;
    obs.drain(&mut conn, &cfg, deadline);
    // Bytes of the unterminated line the connection has been fed.
    let mut partial = 0usize;
    for chunk in chunks(&stream, &sizes) {
        if conn.is_closed() {
            break;
        }
        assert!(conn.wants_input(), "drained and open, yet not reading");
        conn.handle_input(now, chunk);
        partial = match memchr::memrchr(b'\n', chunk) {
            Some(i) => chunk.len() - i - 1,
            None => partial + chunk.len(),
        };
        if !conn.is_closed() {
            let limit = if conn.is_authenticated() {
                cfg.max_frame
            } else {
                cfg.pre_auth_max_frame
            };
            assert!(
                partial <= limit,
                "open with a {partial}-byte partial line buffered, limit {limit}"
            );
        }
        let written = obs.drain(&mut conn, &cfg, deadline);
        assert!(
            written <= 4096 + 8 * chunk.len(),
            "{written} bytes written for a {}-byte input",
            chunk.len()
        );
        if !tick.is_zero() {
            now += tick;
            conn.handle_timeout(now);
            obs.drain(&mut conn, &cfg, deadline);
        }
    }

    if flags & 0x80 != 0 {
        conn.handle_eof(now);
        obs.drain(&mut conn, &cfg, deadline);
        assert!(conn.is_closed(), "open after EOF");
    }
    // Past the handshake deadline, an unauthenticated connection is closed.
    if now < deadline {
        now = deadline;
        conn.handle_timeout(now);
        obs.drain(&mut conn, &cfg, deadline);
    }
    if !obs.authenticated {
        assert!(
            conn.is_closed(),
            "unauthenticated past the handshake deadline"
        );
    }
    // Fire whatever is left (keepalive with no pong, close drain).
    for _ in 0..8 {
        match conn.poll_timeout() {
            Some(t) => {
                now = now.max(t);
                conn.handle_timeout(now);
                obs.drain(&mut conn, &cfg, deadline);
            }
            None => break,
        }
    }
    if cfg.keepalive.is_some() {
        assert!(conn.is_closed(), "keepalive never closed a silent peer");
    }
    conn.handle_eof(now);
    obs.drain(&mut conn, &cfg, deadline);
    assert!(obs.closed.is_some(), "open after EOF");

    // Nothing more may come out of a closed connection.
    conn.handle_input(now, b"{\"t\":\"ping\"}\n");
    conn.handle_timeout(now + Duration::from_secs(3600));
    conn.handle_eof(now);
    conn.close(now, "again");
    assert_eq!(
        conn.send(&RawValue::from_string("1".into()).unwrap()),
        Err(SendError::Closed)
    );
    obs.drain(&mut conn, &cfg, deadline);
}
