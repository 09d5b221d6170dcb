#![forbid(unsafe_code)]
#![allow(clippy::disallowed_methods)] // the test takes one real Instant as the base of virtual time
//! Properties of input handling (proptest): frames split anywhere give the
//! same events, any bytes are refused without a panic or overbuffering,
//! and any flipped bit of a protected frame is detected.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::*;
use jsonlink_proto::testing::{Pair, Who, client_config};
use jsonlink_proto::{
    CloseReason, Connection, ConnectionParams, Event, Policy, ProtocolError, Side,
};
use proptest::prelude::*;

/// A pair (seed 4, no keepalive) whose client prefers signing and/or
/// sealing, before its handshake.
fn split_pair(sign: bool, seal: bool) -> Pair {
    Setup::seed(4)
        .client(|c| {
            if sign {
                c.signing = Policy::Preferred;
            }
            if seal {
                c.encryption = Policy::Preferred;
            }
        })
        .both(|c| c.keepalive = None)
        .pair()
}

/// The client sends one message per body (its text as the op and inside a
/// list) and the pair delivers them: the server's events.
fn send_bodies(p: &mut Pair, bodies: &[String]) -> Vec<Event> {
    for b in bodies {
        let v = serde_json::to_string(b).unwrap();
        p.client
            .conn
            .send(&raw(&format!(r#"{{"op":{v},"x":[{v}]}}"#)))
            .unwrap();
    }
    p.drive();
    p.server.take_events()
}

/// A connected pair (seed 6, the server without keepalive) whose client
/// requires signing, and sealing if `seal`.
fn flip_pair(seal: bool) -> Pair {
    Setup::seed(6)
        .client(|c| {
            c.signing = Policy::Required;
            if seal {
                c.encryption = Policy::Required;
            }
        })
        .server(|s| s.keepalive = None)
        .connected()
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
        let mut p = split_pair(sign, seal);
        p.connect();
        let whole = send_bodies(&mut p, &bodies);
        prop_assert_eq!(whole.len(), bodies.len(), "one event per message");
        let mut q = split_pair(sign, seal);
        q.deliver_in_chunks(Who::Client, chunks);
        q.connect();
        prop_assert_eq!(send_bodies(&mut q, &bodies), whole, "the same events in chunks");
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
        let mut c = Connection::new(Arc::new(cfg), side, now, ConnectionParams::default());
        let mut events = Vec::new();
        for chunk in input.chunks(split) {
            c.handle_input(now, chunk);
            prop_assert!(c.input_buffered() <= 1024, "buffering within the pre-auth limit");
            while let Some(e) = c.poll_event() { events.push(e); }
            c.poll_transmit(&mut Vec::new());
        }
        let closed = events.iter().filter(|e| matches!(e, Event::Closed(_))).count();
        prop_assert!(closed <= 1, "Closed at most once");
        if closed == 1 {
            prop_assert!(matches!(events.last(), Some(Event::Closed(_))), "Closed last");
        }
        let app = events.iter().any(|e| {
            matches!(e, Event::Message { .. } | Event::Request { .. } | Event::Authenticated(_))
        });
        prop_assert!(!app, "application event from garbage");
    }

    /// Flipping any bit of a signed or sealed frame is detected.
    #[test]
    fn bit_flips_are_detected(body in "[ -~]{0,64}", bit in any::<usize>(), seal in any::<bool>()) {
        let mut w = client_writes(&mut flip_pair(seal), |c| {
            c.send(&raw(&serde_json::to_string(&body).unwrap())).unwrap()
        });
        let bit = bit % ((w.len() - 1) * 8);
        w[bit / 8] ^= 1 << (bit % 8);
        let mut q = flip_pair(seal);
        q.inject(Who::Server, &w);
        q.inject(Who::Server, b"\n");
        prop_assert_eq!(
            q.server.closed(),
            Some(&CloseReason::Protocol(ProtocolError::Integrity)),
            "bit {} flipped", bit
        );
        prop_assert!(messages(&q.server).is_empty(), "nothing delivered");
    }
}
