#![allow(clippy::disallowed_methods)] // tests take one real Instant as the base of virtual time
//! Property tests over the pair harness (proptest; regressions committed
//! under proto/proptest-regressions/).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use jsonlink_proto::testing::{Pair, Who, client_config, server_config};
use jsonlink_proto::{
    CloseReason, Config, Connection, ConnectionParams, Event, Policy, ProtocolError, RemoteError,
    Side,
};
use proptest::prelude::*;

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![Just(Who::Client), Just(Who::Server)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Frames split at arbitrary boundaries give the same events.
    #[test]
    fn split_anywhere_same_events(
        bodies in proptest::collection::vec("[a-z\\\\\"{}\\n é]{0,40}", 1..8),
        chunks in proptest::collection::vec(1usize..64, 1..10),
        sign in any::<bool>(),
        seal in any::<bool>(),
    ) {
        let start = Instant::now();
        let mk = || {
            let mut c = client_config(4);
            let mut s = server_config(4);
            if sign { c.signing = Policy::Preferred; }
            if seal { c.encryption = Policy::Preferred; }
            s.keepalive = None;
            c.keepalive = None;
            Pair::new(start, c, s, vec![], vec![])
        };
        let mut p = mk();
        p.connect();
        for b in &bodies {
            let v = serde_json::to_string(b).unwrap();
            p.client.conn.send(&raw(&format!(r#"{{"op":{v},"x":[{v}]}}"#))).unwrap();
        }
        p.drive();
        let whole = p.server.take_events();
        prop_assert_eq!(whole.len(), bodies.len());
        let mut q = mk();
        q.deliver_in_chunks(Who::Client, chunks);
        q.connect();
        for b in &bodies {
            let v = serde_json::to_string(b).unwrap();
            q.client.conn.send(&raw(&format!(r#"{{"op":{v},"x":[{v}]}}"#))).unwrap();
        }
        q.drive();
        prop_assert_eq!(q.server.take_events(), whole);
    }

    /// Any bytes fed to either role: no panic, bounded buffering, `Closed`
    /// at most once and last.
    #[test]
    fn arbitrary_input_never_panics_or_overbuffers(
        input in proptest::collection::vec(any::<u8>(), 0..4096),
        split in 1usize..512,
        server in any::<bool>(),
    ) {
        let mut cfg = client_config(1);
        cfg.pre_auth_max_frame = 1024;
        let side = if server { Side::Server } else { Side::Client };
        let now = Instant::now();
        let mut c = Connection::new(std::sync::Arc::new(cfg), side, now, ConnectionParams::default());
        let mut events = Vec::new();
        for chunk in input.chunks(split) {
            c.handle_input(now, chunk);
            prop_assert!(c.input_buffered() <= 1024);
            while let Some(e) = c.poll_event() { events.push(e); }
            c.poll_transmit(&mut Vec::new());
        }
        let closed = events.iter().filter(|e| matches!(e, Event::Closed(_))).count();
        prop_assert!(closed <= 1);
        if closed == 1 { prop_assert!(matches!(events.last(), Some(Event::Closed(_)))); }
        let app = events.iter().any(|e| matches!(e, Event::Message { .. } | Event::Request { .. } | Event::Authenticated(_)));
        prop_assert!(!app, "application event from garbage");
    }

    /// Flipping any bit of a signed or sealed frame is detected.
    #[test]
    fn bit_flips_are_detected(body in "[ -~]{0,64}", bit in any::<usize>(), seal in any::<bool>()) {
        let mk = || {
            let mut c = client_config(6);
            let mut s = server_config(6);
            c.signing = Policy::Required;
            if seal { c.encryption = Policy::Required; }
            s.keepalive = None;
            let mut p = Pair::new(Instant::now(), c, s, vec![], vec![]);
            p.connect();
            p
        };
        let mut p = mk();
        p.client.conn.send(&raw(&serde_json::to_string(&body).unwrap())).unwrap();
        let mut w = Vec::new();
        p.client.conn.poll_transmit(&mut w);
        let bit = bit % ((w.len() - 1) * 8);
        w[bit / 8] ^= 1 << (bit % 8);
        let mut q = mk();
        q.inject(Who::Server, &w);
        q.inject(Who::Server, b"\n");
        prop_assert_eq!(q.server.closed(), Some(&CloseReason::Protocol(ProtocolError::Integrity)));
        prop_assert!(messages(&q.server).is_empty());
    }

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

fn count(
    p: &Pair,
    resolved: &mut HashMap<(bool, u64), u32>,
    seen: &mut [usize; 2],
) -> Result<(), TestCaseError> {
    for (i, peer) in [&p.client, &p.server].into_iter().enumerate() {
        for e in &peer.events[seen[i]..] {
            if let Event::Response { id, .. } | Event::RequestFailed { id, .. } = e {
                let n = resolved.entry((i == 0, id.0)).or_default();
                *n += 1;
                prop_assert_eq!(*n, 1, "resolved twice");
            }
        }
        seen[i] = peer.events.len();
    }
    Ok(())
}

#[test]
fn config_is_send_sync() {
    fn ok<T: Send + Sync>() {}
    ok::<Config>();
    ok::<Connection>();
}
