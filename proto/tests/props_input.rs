#![allow(clippy::disallowed_methods)] // tests take one real Instant as the base of virtual time
//! Properties of input handling (proptest): frames split anywhere give the
//! same events, any bytes are refused without a panic or overbuffering,
//! and any flipped bit of a protected frame is detected.

mod common;

use std::time::Instant;

use common::*;
use jsonlink_proto::testing::{Pair, Who, client_config, server_config};
use jsonlink_proto::{
    CloseReason, Connection, ConnectionParams, Event, Policy, ProtocolError, Side,
};
use proptest::prelude::*;

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
