#![allow(clippy::disallowed_methods)] // tests take one real Instant as the base of virtual time
//! Fault cases R2 and R9 of tests/faults/FAULTS.md: responses that come
//! late, twice or for no request, and answers too large for the requester.

mod common;

use std::time::{Duration, Instant};

use common::*;
use jsonlink_proto::testing::{Pair, Who, client_config, server_config};
use jsonlink_proto::{Event, Extensions, Policy, RemoteError, RequestError, SendError};

#[test]
fn r2_unknown_and_duplicate_responses_are_dropped_and_counted() {
    let mut p = connected();
    let now = p.now;
    let id = p.client.conn.request(now, &raw("1"), None).unwrap();
    p.drive();
    p.inject(Who::Client, b"{\"t\":\"res\",\"id\":999,\"d\":1}\n");
    p.inject(
        Who::Client,
        format!("{{\"t\":\"res\",\"id\":{},\"d\":\"first\"}}\n", id.0).as_bytes(),
    );
    p.inject(
        Who::Client,
        format!("{{\"t\":\"res\",\"id\":{},\"d\":\"second\"}}\n", id.0).as_bytes(),
    );
    let r = resolutions(&p.client);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].1.as_ref().unwrap().get(), r#""first""#);
    assert_eq!(p.client.conn.stats().dropped_responses, 2);
    assert!(p.client.closed().is_none());
    let mut ids = std::collections::HashSet::new();
    for _ in 0..100 {
        let id = p
            .client
            .conn
            .request(now, &raw("1"), Some(Duration::from_millis(1)))
            .unwrap();
        assert!(ids.insert(id));
        p.advance(Duration::from_millis(1));
    }
    record(
        "R2",
        format!(
            "dropped and counted ({}), never delivered; ids never reused",
            p.client.conn.stats().dropped_responses
        ),
    );
}

/// R9, core side: an answer over the requester's max_frame, in every
/// protected mode and with or without the extension. The outcome is
/// recorded by the adapter-level case (tests/tests/negotiation.rs), which
/// covers this path end to end.
#[test]
fn r9_an_answer_over_the_requesters_max_frame_is_replaced_at_once_and_frees_its_slot() {
    for (sign, seal) in [(false, false), (true, false), (false, true)] {
        for ext in [Extensions::ALL, Extensions::NONE] {
            let case = format!("sign {sign} seal {seal} ext {ext:?}");
            let mut c = client_config(9);
            let mut s = server_config(9);
            c.max_frame = 1024;
            s.extensions = ext;
            s.max_incoming_requests = 2;
            for (cfg, on) in [(&mut c, true), (&mut s, true)] {
                if sign && on {
                    cfg.signing = Policy::Required;
                }
                if seal && on {
                    cfg.encryption = Policy::Required;
                }
            }
            let mut p = Pair::new(Instant::now(), c, s, vec![4; 32], vec![4; 32]);
            p.connect();
            let now = p.now;
            // More too-large answers than the server has incoming slots: each
            // frees its slot, so none is answered `busy`.
            for n in 0..3 {
                let id = p
                    .client
                    .conn
                    .request(now, &raw(r#"{"op":"echo"}"#), None)
                    .unwrap();
                p.drive();
                let (rid, _, _) = requests(&p.server).last().cloned().unwrap();
                let big = raw(&format!("\"{}\"", "y".repeat(2048)));
                let before = p.server.conn.outbound_len();
                let r = p.server.conn.respond(rid, Ok(&big));
                let Err(SendError::ResponseTooLarge { size, limit }) = r else {
                    panic!("{case}: {r:?}")
                };
                assert!(size > 2048 && limit == 1024, "{case}: {size} {limit}");
                // Only the small error answer was queued.
                assert!(p.server.conn.outbound_len() - before < 600, "{case}");
                assert_eq!(p.server.conn.incoming_in_flight(), 0, "{case}");
                assert_eq!(p.server.conn.stats().responses_too_large, n + 1, "{case}");
                assert_eq!(
                    p.server.conn.respond(rid, Ok(&raw("1"))),
                    Err(SendError::UnknownRequest(rid.0)),
                    "{case}: answered once"
                );
                p.drive(); // no time passes: the requester knows at once
                let want = if ext.is_empty() {
                    RemoteError::INTERNAL
                } else {
                    RemoteError::RESPONSE_TOO_LARGE
                };
                match resolutions(&p.client).last() {
                    Some((i, Err(RequestError::Remote(e)))) if *i == id => {
                        assert_eq!(e.code, want, "{case}")
                    }
                    other => panic!("{case}: {other:?}"),
                }
            }
            // An error answer too large is replaced the same way.
            let id = p.client.conn.request(now, &raw("1"), None).unwrap();
            p.drive();
            let (rid, _, _) = requests(&p.server).last().cloned().unwrap();
            let huge = RemoteError::new("app", "e".repeat(2000));
            assert!(matches!(
                p.server.conn.respond(rid, Err(&huge)),
                Err(SendError::ResponseTooLarge { .. })
            ));
            // The caller-side check: respond_too_large answers without the body.
            let id2 = p.client.conn.request(now, &raw("2"), None).unwrap();
            p.drive();
            let (rid2, _, _) = requests(&p.server).last().cloned().unwrap();
            p.server.conn.respond_too_large(rid2, 5000).unwrap();
            assert_eq!(p.server.conn.stats().responses_too_large, 5, "{case}");
            p.drive();
            let r = resolutions(&p.client);
            assert!(r.iter().any(|(i, e)| *i == id && e.is_err()), "{case}");
            assert!(
                r.iter().any(|(i, e)| *i == id2
                    && matches!(e, Err(RequestError::Remote(x)) if x.message.contains("5000 bytes"))),
                "{case}: {r:?}"
            );
            // The link stays up and the slots are all free.
            let ok = p.client.conn.request(now, &raw("3"), None).unwrap();
            p.drive();
            let (rid, _, _) = requests(&p.server).last().cloned().unwrap();
            p.server.conn.respond(rid, Ok(&raw("3"))).unwrap();
            p.drive();
            assert!(
                resolutions(&p.client)
                    .iter()
                    .any(|(i, e)| *i == ok && e.is_ok()),
                "{case}"
            );
            assert!(
                p.client.closed().is_none() && p.server.closed().is_none(),
                "{case}"
            );
            assert_eq!(p.client.conn.stats().rejected_requests, 0);
            assert_eq!(p.server.conn.stats().rejected_requests, 0, "{case}: busy");
        }
    }
}

/// The bound a layer above checks answers against
/// (`Authenticated::response_frame_bound`) is an upper bound on the
/// answer's frame, within 20 bytes, and exact without protection; so an
/// answer it passes is never refused.
#[test]
fn r9_response_frame_bound_is_an_upper_bound_on_the_answer() {
    for (sign, seal) in [(false, false), (true, false), (false, true)] {
        let mut c = client_config(5);
        let mut s = server_config(5);
        if sign {
            (c.signing, s.signing) = (Policy::Required, Policy::Required);
        }
        if seal {
            (c.encryption, s.encryption) = (Policy::Required, Policy::Required);
        }
        let mut p = Pair::new(Instant::now(), c, s, vec![9; 32], vec![9; 32]);
        p.drive();
        let Some(Event::Authenticated(auth)) = p.server.events.first().cloned() else {
            panic!("{:?}", p.server.events)
        };
        let now = p.now;
        for len in [0usize, 1, 15, 16, 17, 100, 1000] {
            let body = raw(&format!("\"{}\"", "b".repeat(len)));
            let err = RemoteError::new("c\"q", "m\n".repeat(len));
            for result in [Ok(&*body), Err(&err)] {
                p.client.conn.request(now, &raw("1"), None).unwrap();
                p.drive();
                let (rid, _, _) = requests(&p.server).last().cloned().unwrap();
                let bound = auth.response_frame_bound(rid, result);
                p.server.conn.respond(rid, result).unwrap();
                let mut w = Vec::new();
                p.server.conn.poll_transmit(&mut w);
                let size = w.len() - 1;
                let case = format!("sign {sign} seal {seal} len {len} ok {}", result.is_ok());
                assert!(size <= bound, "{case}: {size} > {bound}");
                assert!(bound - size <= 20, "{case}: {size} vs {bound}");
                if !sign && !seal {
                    assert_eq!(size, bound, "{case}");
                }
                p.inject(Who::Client, &w);
            }
        }
        assert!(p.client.closed().is_none());
    }
}
