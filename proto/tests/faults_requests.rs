#![forbid(unsafe_code)]
//! Fault cases R2 and R9 of tests/faults/FAULTS.md: responses that come
//! late, twice or for no request, and answers too large for the requester.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use jsonlink_proto::testing::{Pair, Who};
use jsonlink_proto::{Extensions, RemoteError, SendError};

#[test]
fn r2_unknown_and_duplicate_responses_are_dropped_and_counted() {
    let mut p = connected();
    let id = deliver_request(&mut p, Who::Client, "1").id;
    inject_line(&mut p, Who::Client, r#"{"t":"res","id":999,"d":1}"#);
    for answer in ["first", "second"] {
        let res = format!(r#"{{"t":"res","id":{},"d":"{answer}"}}"#, id.0);
        inject_line(&mut p, Who::Client, &res);
    }
    assert_eq!(
        resolutions(&p.client),
        [Resolution::answered(id, r#""first""#)],
        "only the first answer is delivered"
    );
    assert_eq!(
        p.client.conn.stats().dropped_responses,
        2,
        "the unknown and the second answer are counted"
    );
    assert!(p.client.closed().is_none(), "the link stays up");
    let now = p.now;
    let mut ids = HashSet::new();
    for _ in 0..100 {
        let id = p
            .client
            .conn
            .request(now, &raw("1"), Some(Duration::from_millis(1)))
            .unwrap();
        assert!(ids.insert(id), "id {id:?} never reused");
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

/// The R9 pair: a client with a 1024-byte max_frame, a server with two
/// incoming slots accepting the extensions `ext`, both requiring `mode`.
fn r9_pair(mode: Protection, ext: Extensions) -> Pair {
    Setup::seed(9)
        .binding(4)
        .protection(mode)
        .client(|c| c.max_frame = 1024)
        .server(|s| {
            s.extensions = ext;
            s.max_incoming_requests = 2;
        })
        .connected()
}

/// R9, core side: an answer over the requester's max_frame, in every
/// protected mode and with or without the extension. The outcome is
/// recorded by the adapter-level case (tests/tests/negotiation.rs), which
/// covers this path end to end.
#[test]
fn r9_an_answer_over_the_requesters_max_frame_is_replaced_at_once_and_frees_its_slot() {
    for mode in Protection::MODES {
        for ext in [Extensions::ALL, Extensions::NONE] {
            let case = format!("{mode:?} ext {ext:?}");
            let mut p = r9_pair(mode, ext);
            let want = if ext.is_empty() {
                RemoteError::INTERNAL
            } else {
                RemoteError::RESPONSE_TOO_LARGE
            };
            // More too-large answers than the server has incoming slots: each
            // frees its slot, so none is answered `busy`.
            for n in 0..3 {
                let req = deliver_request(&mut p, Who::Client, r#"{"op":"echo"}"#);
                let big = raw(&format!("\"{}\"", "y".repeat(2048)));
                let before = p.server.conn.outbound_len();
                let r = p.server.conn.respond(req.peer_id, Ok(&big));
                let Err(SendError::ResponseTooLarge { size, limit }) = r else {
                    panic!("{case}: {r:?}")
                };
                assert!(
                    size > 2048 && limit == 1024,
                    "{case}: the error names both sizes: {size} {limit}"
                );
                assert!(
                    p.server.conn.outbound_len() - before < 600,
                    "{case}: only the small error answer was queued"
                );
                assert_eq!(
                    p.server.conn.incoming_in_flight(),
                    0,
                    "{case}: the slot is free"
                );
                assert_eq!(
                    p.server.conn.stats().responses_too_large,
                    n + 1,
                    "{case}: counted"
                );
                assert_eq!(
                    p.server.conn.respond(req.peer_id, Ok(&raw("1"))),
                    Err(SendError::UnknownRequest(req.peer_id.0)),
                    "{case}: answered once"
                );
                p.drive(); // no time passes: the requester knows at once
                let answer = last_resolution(&p.client);
                assert_eq!(answer.id, req.id, "{case}: answered at once");
                assert_eq!(
                    answer.remote_error().map(|e| e.code.as_str()),
                    Some(want),
                    "{case}: the error answer's code"
                );
            }
            // An error answer too large is replaced the same way.
            let too_large_error = deliver_request(&mut p, Who::Client, "1");
            let huge = RemoteError::new("app", "e".repeat(2000));
            assert!(
                matches!(
                    p.server.conn.respond(too_large_error.peer_id, Err(&huge)),
                    Err(SendError::ResponseTooLarge { .. })
                ),
                "{case}: a too-large error answer is refused"
            );
            // The caller-side check: respond_too_large answers without the body.
            let declared = deliver_request(&mut p, Who::Client, "2");
            p.server
                .conn
                .respond_too_large(declared.peer_id, 5000)
                .unwrap();
            assert_eq!(
                p.server.conn.stats().responses_too_large,
                5,
                "{case}: every one counted"
            );
            p.drive();
            let r = resolutions(&p.client);
            assert!(
                r.iter()
                    .any(|x| x.id == too_large_error.id && x.outcome.is_err()),
                "{case}: the too-large error answer replaced"
            );
            assert!(
                r.iter().any(|x| x.id == declared.id
                    && x.remote_error()
                        .is_some_and(|e| e.message.contains("5000 bytes"))),
                "{case}: respond_too_large names the size: {r:?}"
            );
            // The link stays up and the slots are all free.
            let ok = deliver_request(&mut p, Who::Client, "3");
            p.server.conn.respond(ok.peer_id, Ok(&raw("3"))).unwrap();
            p.drive();
            assert!(
                resolutions(&p.client).contains(&Resolution::answered(ok.id, "3")),
                "{case}: a small answer still arrives"
            );
            assert!(
                p.client.closed().is_none() && p.server.closed().is_none(),
                "{case}: the link stays up"
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
    for mode in Protection::MODES {
        let mut p = Setup::seed(5).binding(9).protection(mode).pair();
        p.drive();
        let auth = authentication(&p.server);
        for len in [0usize, 1, 15, 16, 17, 100, 1000] {
            let body = raw(&format!("\"{}\"", "b".repeat(len)));
            let err = RemoteError::new("c\"q", "m\n".repeat(len));
            for result in [Ok(&*body), Err(&err)] {
                let req = deliver_request(&mut p, Who::Client, "1");
                let bound = auth.response_frame_bound(req.peer_id, result);
                p.server.conn.respond(req.peer_id, result).unwrap();
                let w = take_output(&mut p.server);
                let size = w.len() - 1;
                let case = format!("{mode:?} len {len} ok {}", result.is_ok());
                assert!(size <= bound, "{case}: {size} > {bound}");
                assert!(
                    bound - size <= 20,
                    "{case}: within 20 bytes: {size} vs {bound}"
                );
                if mode == Protection::Plain {
                    assert_eq!(size, bound, "{case}: exact without protection");
                }
                p.inject(Who::Client, &w);
            }
        }
        assert!(p.client.closed().is_none(), "every answer was taken");
    }
}
