#![allow(clippy::disallowed_methods)] // tests take one real Instant as the base of virtual time
//! R1 as a property (proptest): random operation sequences never get the
//! pair stuck, and every request resolves exactly once.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use jsonlink_proto::testing::{Pair, Who, client_config, server_config};
use jsonlink_proto::{Event, Policy, RemoteError};
use proptest::prelude::*;

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![Just(Who::Client), Just(Who::Server)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// R1: random operation sequences never get the pair stuck, and every
    /// request resolves exactly once.
    #[test]
    fn r1_random_ops_resolve_every_request_exactly_once(ops in proptest::collection::vec(op(), 1..60), sign in any::<bool>()) {
        let mut c = client_config(8);
        let mut s = server_config(8);
        if sign { c.signing = Policy::Required; }
        c.max_outbound = 2048;
        s.max_outbound = 2048;
        let mut p = Pair::new(Instant::now(), c, s, vec![], vec![]);
        let mut issued: HashMap<(bool, u64), u32> = HashMap::new();
        let mut resolved: HashMap<(bool, u64), u32> = HashMap::new();
        let mut seen = [0usize; 2];
        p.drive();
        for op in ops {
            apply(&mut p, op, &mut issued);
            prop_assert!(p.drive_bounded(10_000), "stuck");
            count(&p, &mut resolved, &mut seen)?;
        }
        // Wind down: close both, let every deadline pass.
        let now = p.now;
        p.client.conn.close(now, "end");
        p.server.conn.close(now, "end");
        p.advance(Duration::from_secs(120));
        count(&p, &mut resolved, &mut seen)?;
        prop_assert!(p.client.conn.is_closed() && p.server.conn.is_closed());
        for (k, n) in &issued {
            prop_assert_eq!(*n, 1);
            prop_assert_eq!(resolved.get(k).copied().unwrap_or(0), 1, "request {:?} resolved {:?} times", k, resolved.get(k));
        }
        for k in resolved.keys() {
            prop_assert!(issued.contains_key(k));
        }
        if std::env::var_os("JSONLINK_PROP_STATS").is_some() {
            eprintln!("issued {} resolved {}", issued.len(), resolved.len());
        }
        assert_closed_last(&p.client);
        assert_closed_last(&p.server);
        record("R1", "256 random op sequences: never stuck; every request resolved exactly once; Closed once, last");
    }
}

#[derive(Debug, Clone)]
enum Op {
    Send(Who, usize),
    Request(Who, u64),
    Respond(Who, bool),
    Advance(u64),
    Chunks(Who, Vec<usize>),
    Tamper(Who, usize),
    Cut(Who),
    Close(Who),
    Drive,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (who(), 0usize..3000).prop_map(|(w, n)| Op::Send(w, n)),
        4 => (who(), 1u64..20_000).prop_map(|(w, t)| Op::Request(w, t)),
        4 => (who(), any::<bool>()).prop_map(|(w, ok)| Op::Respond(w, ok)),
        3 => (0u64..40_000).prop_map(Op::Advance),
        1 => (who(), proptest::collection::vec(0usize..50, 1..5)).prop_map(|(w, c)| Op::Chunks(w, c)),
        1 => (who(), any::<usize>()).prop_map(|(w, i)| Op::Tamper(w, i)),
        1 => who().prop_map(Op::Cut),
        1 => who().prop_map(Op::Close),
        2 => Just(Op::Drive),
    ]
}

fn apply(p: &mut Pair, op: Op, issued: &mut HashMap<(bool, u64), u32>) {
    let now = p.now;
    match op {
        Op::Send(w, n) => {
            let _ = p.peer(w).conn.send(&raw(&format!("\"{}\"", "s".repeat(n))));
        }
        Op::Request(w, t) => {
            if let Ok(id) =
                p.peer(w)
                    .conn
                    .request(now, &raw("{\"op\":\"r\"}"), Some(Duration::from_millis(t)))
            {
                *issued.entry((w == Who::Client, id.0)).or_default() += 1;
            }
        }
        Op::Respond(w, ok) => {
            let peer = p.peer(w);
            let pending: Vec<_> = peer
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::Request { id, .. } => Some(*id),
                    _ => None,
                })
                .collect();
            for id in pending {
                let _ = if ok {
                    peer.conn.respond(id, Ok(&raw("1")))
                } else {
                    peer.conn.respond(id, Err(&RemoteError::new("nope", "no")))
                };
            }
        }
        Op::Advance(ms) => p.advance(Duration::from_millis(ms)),
        Op::Chunks(w, c) => p.deliver_in_chunks(w, c),
        Op::Tamper(w, i) => {
            let mut once = true;
            p.tamper(w, move |b| {
                if once && !b.is_empty() {
                    let n = b.len();
                    b[i % n] ^= 0x20;
                    once = false;
                }
            })
        }
        Op::Cut(w) => p.cut(w),
        Op::Close(w) => p.peer(w).conn.close(now, "bye"),
        Op::Drive => {
            p.drive();
        }
    }
}
