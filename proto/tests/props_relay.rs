#![forbid(unsafe_code)]
//! Relays as a property (proptest): random sequences of joins, leaves
//! (from either side, graceful or not), relayed requests both ways,
//! answers, messages, time, closes and cuts on a relay connection never
//! get the pair stuck; every relayed request resolves exactly once on the
//! side that made it; every client ends with exactly one `Left` on each
//! side that knew it, after every event of its requests; `Closed` comes
//! once, last.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use jsonlink_proto::testing::{Pair, Who};
use jsonlink_proto::{
    ClientId, CloseCode, Event, Extensions, Identity, PeerRequestId, Policy, RemoteError, Secret,
};
use proptest::prelude::*;
use serde_json::value::RawValue;

#[derive(Debug, Clone)]
enum Op {
    Join,
    /// The relay ends the `k`-th live client.
    RelayLeave(usize),
    /// The server ends it, gracefully or not.
    ServerLeave(usize, bool),
    /// The relay forwards a request of the client.
    Forward(usize),
    /// The server sends the client a request with this timeout (s).
    ServerRequest(usize, u64),
    /// `who` answers the oldest request it holds, with a value or an error.
    Answer(Who, bool),
    Message(Who, usize),
    Advance(u64),
    Close(Who),
    Cut(Who),
    /// Let everything in flight arrive (until then frames of both sides
    /// queue, and cross each other when they are delivered).
    Drive,
    /// One round of delivery.
    Step,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Join),
        1 => (0usize..8).prop_map(Op::RelayLeave),
        1 => (0usize..8, any::<bool>()).prop_map(|(k, g)| Op::ServerLeave(k, g)),
        4 => (0usize..8).prop_map(Op::Forward),
        4 => (0usize..8, 1u64..20).prop_map(|(k, t)| Op::ServerRequest(k, t)),
        5 => (who(), any::<bool>()).prop_map(|(w, ok)| Op::Answer(w, ok)),
        2 => (who(), 0usize..8).prop_map(|(w, k)| Op::Message(w, k)),
        2 => (0u64..12).prop_map(Op::Advance),
        3 => Just(Op::Drive),
        3 => Just(Op::Step),
        1 => who().prop_map(Op::Close),
        1 => who().prop_map(Op::Cut),
    ]
}

/// What the test knows of the run: requests made and resolved per side,
/// clients known and ended per side, requests each side holds.
#[derive(Default)]
struct Book {
    /// (relay side?, client, id) → times issued / resolved.
    issued: BTreeMap<(bool, u64, u64), u32>,
    resolved: BTreeMap<(bool, u64, u64), u32>,
    /// Clients each side knew of (relay: joined; server: `Joined`).
    known: [BTreeSet<u64>; 2],
    left: [BTreeMap<u64, u32>; 2],
    /// Requests held for answering, per side.
    held: [Vec<(ClientId, PeerRequestId)>; 2],
    next_forward: BTreeMap<u64, u64>,
    seen: [usize; 2],
}

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap()
}

/// Drives the pair until nothing moves; it must settle.
fn prop_assert_settles(p: &mut Pair) {
    assert!(p.drive_bounded(10_000), "stuck");
}

fn side(w: Who) -> usize {
    usize::from(w == Who::Server)
}

impl Book {
    fn live(&self, p: &Pair, k: usize) -> Option<ClientId> {
        let live: Vec<u64> = self.known[0]
            .iter()
            .filter(|c| !self.left[0].contains_key(c))
            .copied()
            .collect();
        let _ = p;
        live.get(k % live.len().max(1)).copied().map(ClientId)
    }

    fn tally(&mut self, p: &Pair) -> Result<(), TestCaseError> {
        for (i, peer) in [&p.client, &p.server].into_iter().enumerate() {
            for e in &peer.events[self.seen[i]..] {
                match e {
                    Event::Joined(j) => {
                        prop_assert!(i == 1 && self.known[1].insert(j.client.0));
                    }
                    Event::ClientRequest { client, id, .. } => {
                        prop_assert!(!self.left[i].contains_key(&client.0), "request after Left");
                        self.held[i].push((*client, *id));
                    }
                    Event::ClientMessage { client, .. } => {
                        prop_assert!(!self.left[i].contains_key(&client.0), "message after Left");
                    }
                    Event::ClientResponse { client, id, .. }
                    | Event::ClientRequestFailed { client, id, .. } => {
                        prop_assert!(
                            !self.left[i].contains_key(&client.0),
                            "resolution after Left"
                        );
                        let n = self.resolved.entry((i == 0, client.0, id.0)).or_default();
                        *n += 1;
                        prop_assert_eq!(*n, 1, "resolved twice");
                    }
                    Event::Left { client, .. } => {
                        let n = self.left[i].entry(client.0).or_default();
                        *n += 1;
                        prop_assert_eq!(*n, 1, "left twice");
                        self.held[i].retain(|(c, _)| c != client);
                    }
                    _ => {}
                }
            }
            self.seen[i] = peer.events.len();
        }
        Ok(())
    }

    fn apply(&mut self, p: &mut Pair, op: Op) {
        let now = p.now;
        match op {
            Op::Join => {
                let n = self.known[0].len();
                let ext = if n.is_multiple_of(2) {
                    Extensions::ALL
                } else {
                    Extensions::NONE
                };
                if let Ok(c) = p.client.conn.join(
                    &Identity::new(format!("n{n}"), "app"),
                    "127.0.0.1:9",
                    1024 + n * 100,
                    ext,
                ) {
                    self.known[0].insert(c.0);
                }
            }
            Op::RelayLeave(k) => {
                if let Some(c) = self.live(p, k) {
                    let _ = p.client.conn.leave(now, c, CloseCode::Gone, "gone");
                }
            }
            Op::ServerLeave(k, graceful) => {
                if let Some(c) = self.live(p, k) {
                    let code = if graceful {
                        CloseCode::Normal
                    } else {
                        CloseCode::Refused
                    };
                    let _ = p.server.conn.leave(now, c, code, "server");
                }
            }
            Op::Forward(k) => {
                if let Some(c) = self.live(p, k) {
                    let id = self.next_forward.entry(c.0).or_insert(1);
                    if p.client
                        .conn
                        .client_forward(c, PeerRequestId(*id), &raw("1"))
                        .is_ok()
                    {
                        *self.issued.entry((true, c.0, *id)).or_default() += 1;
                    }
                    *id += 1;
                }
            }
            Op::ServerRequest(k, secs) => {
                if let Some(c) = self.live(p, k)
                    && let Ok(id) = p.server.conn.client_request(
                        now,
                        c,
                        &raw("2"),
                        Some(Duration::from_secs(secs)),
                    )
                {
                    *self.issued.entry((false, c.0, id.0)).or_default() += 1;
                }
            }
            Op::Answer(w, ok) => {
                let i = side(w);
                if !self.held[i].is_empty() {
                    let (c, id) = self.held[i].remove(0);
                    let err = RemoteError::new("x", "y");
                    let v = raw("3");
                    let result = if ok { Ok(&*v) } else { Err(&err) };
                    let _ = p.peer(w).conn.client_respond(c, id, result);
                }
            }
            Op::Message(w, k) => {
                if let Some(c) = self.live(p, k) {
                    let _ = p.peer(w).conn.client_send(c, &raw("[0]"));
                }
            }
            Op::Advance(secs) => p.advance(Duration::from_secs(secs)),
            Op::Close(w) => p.peer(w).conn.close(now, "end"),
            Op::Cut(w) => p.cut(w),
            Op::Drive => prop_assert_settles(p),
            Op::Step => {
                p.step();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_relay_ops_resolve_every_request_once_and_end_every_client_once(
        ops in proptest::collection::vec(op(), 1..120),
        sign in any::<bool>(),
    ) {
        let relay_secret = Secret::from_bytes(vec![0x52; 32]).unwrap();
        let rs = relay_secret.clone();
        let mut p = Setup::seed(11)
            .client(move |c| {
                c.relay = true;
                c.secret = rs;
                if sign {
                    c.signing = Policy::Required;
                }
            })
            .server(|c| {
                c.relay_secrets = vec![relay_secret];
                c.max_relayed_clients = 5;
                c.max_incoming_requests = 3;
                c.max_relayed_incoming = 5;
            })
            .both(|c| c.max_outbound = 4096)
            .pair();
        p.connect();
        let mut book = Book::default();
        for op in [Op::Join, Op::Join].into_iter().chain(ops) {
            book.apply(&mut p, op);
            book.tally(&p)?;
        }
        prop_assert!(p.drive_bounded(10_000), "stuck");
        // Wind down: close both, let every deadline pass; whatever is left
        // ends with the transport.
        let now = p.now;
        p.client.conn.close(now, "end");
        p.server.conn.close(now, "end");
        p.advance(Duration::from_secs(120));
        if !p.client.conn.is_closed() || !p.server.conn.is_closed() {
            p.cut(Who::Client);
            p.cut(Who::Server);
        }
        book.tally(&p)?;
        prop_assert!(p.client.conn.is_closed() && p.server.conn.is_closed(), "both ended");
        for (k, n) in &book.issued {
            prop_assert_eq!(*n, 1, "issued twice {:?}", k);
            prop_assert_eq!(book.resolved.get(k).copied(), Some(1), "{:?} not resolved once", k);
        }
        for k in book.resolved.keys() {
            prop_assert!(book.issued.contains_key(k), "{:?} resolved, never issued", k);
        }
        for i in 0..2 {
            for c in &book.known[i] {
                prop_assert_eq!(book.left[i].get(c).copied(), Some(1), "client {} side {}", c, i);
            }
        }
        if std::env::var_os("JSONLINK_PROP_STATS").is_some() {
            eprintln!(
                "issued {} joined {} known to the server {} dropped {}",
                book.issued.len(),
                book.known[0].len(),
                book.known[1].len(),
                p.server.conn.stats().relayed_frames_dropped + p.client.conn.stats().relayed_frames_dropped,
            );
        }
        // The server knew only clients the relay joined.
        prop_assert!(book.known[1].is_subset(&book.known[0]));
        assert_closed_last(&p.client);
        assert_closed_last(&p.server);
    }
}
