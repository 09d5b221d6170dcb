#![forbid(unsafe_code)]
//! R1 as a property (proptest): random operation sequences never get the
//! pair stuck, and every request resolves exactly once.

mod common;

use std::time::Duration;

use common::*;
use jsonlink_proto::testing::{Pair, Who};
use jsonlink_proto::{Policy, RemoteError};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// R1: random operation sequences never get the pair stuck, and every
    /// request resolves exactly once.
    #[test]
    fn r1_random_ops_resolve_every_request_exactly_once(ops in proptest::collection::vec(op(), 1..60), sign in any::<bool>()) {
        let mut p = Setup::seed(8)
            .client(|c| if sign { c.signing = Policy::Required })
            .both(|c| c.max_outbound = 2048)
            .pair();
        let mut ledger = Ledger::default();
        p.drive();
        for op in ops {
            apply(&mut p, op, &mut ledger);
            prop_assert!(p.drive_bounded(10_000), "stuck");
            ledger.tally(&p)?;
        }
        // Wind down: close both, let every deadline pass.
        let now = p.now;
        p.client.conn.close(now, "end");
        p.server.conn.close(now, "end");
        p.advance(Duration::from_secs(120));
        ledger.tally(&p)?;
        prop_assert!(p.client.conn.is_closed() && p.server.conn.is_closed(), "both ended");
        ledger.each_resolved_exactly_once()?;
        if std::env::var_os("JSONLINK_PROP_STATS").is_some() {
            eprintln!("issued {} resolved {}", ledger.issued(), ledger.resolved());
        }
        assert_closed_last(&p.client);
        assert_closed_last(&p.server);
        record("R1", "256 random op sequences: never stuck; every request resolved exactly once; Closed once, last");
    }
}

/// One step of R1's random sequences.
#[derive(Debug, Clone)]
enum Op {
    /// A message of this many bytes.
    Send(Who, usize),
    /// A request with this timeout (ms).
    Request(Who, u64),
    /// Every request received so far answered, with a value or an error.
    Respond(Who, bool),
    Advance(u64),
    Chunks(Who, Vec<usize>),
    /// One byte of the next delivery flipped.
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

fn apply(p: &mut Pair, op: Op, ledger: &mut Ledger) {
    let now = p.now;
    match op {
        Op::Send(w, n) => {
            let _ = p.peer(w).conn.send(&raw(&format!("\"{}\"", "s".repeat(n))));
        }
        Op::Request(w, t) => {
            let timeout = Some(Duration::from_millis(t));
            if let Ok(id) = p.peer(w).conn.request(now, &raw("{\"op\":\"r\"}"), timeout) {
                ledger.issue(w, id);
            }
        }
        Op::Respond(w, ok) => {
            let peer = p.peer(w);
            for id in request_ids(peer) {
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
