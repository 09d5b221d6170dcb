#![forbid(unsafe_code)]
#![allow(clippy::disallowed_methods)] // the test takes one real Instant as the base of virtual time
//! Fault cases F1–F3, F6–F8 and F12 of tests/faults/FAULTS.md (framing):
//! lines, envelopes and close frames the peer gets wrong.

mod common;

use std::time::Instant;

use common::*;
use jsonlink_proto::testing::{Pair, Who};
use jsonlink_proto::{CloseReason, ProtocolError, RequestError, SendError};

#[test]
fn f1_unterminated_line_over_limit() {
    let mut p = connected();
    let max = jsonlink_proto::DEFAULT_MAX_FRAME;
    let now = p.now;
    let mut fed = 0usize;
    while !p.server.conn.is_closed() {
        p.server.conn.handle_input(now, b"x");
        fed += 1;
        assert!(fed <= max + 1, "kept buffering past the limit");
    }
    assert_eq!(
        fed,
        max + 1,
        "refused exactly when the buffer would pass max"
    );
    poll_events(&mut p.server);
    assert_eq!(
        closed_with(&p.server),
        CloseReason::Protocol(ProtocolError::FrameTooLarge { limit: max })
    );
    assert!(
        take_output_text(&mut p.server).contains(r#""code":"frame_too_large""#),
        "the peer is told why"
    );
    record(
        "F1",
        format!(
            "{:?} after {fed} bytes fed one at a time",
            p.server.closed().unwrap()
        ),
    );
}

#[test]
fn f2_exact_limit_accepted_one_more_rejected() {
    for (extra, accepted) in [(0usize, true), (1, false)] {
        let mut p = Setup::seed(1).both(|c| c.max_frame = 4096).connected();
        // {"t":"msg","d":"xxx…"} sized to exactly max (+extra).
        let overhead = r#"{"t":"msg","d":""}"#.len();
        let frame = format!(
            r#"{{"t":"msg","d":"{}"}}"#,
            "x".repeat(4096 - overhead + extra)
        );
        assert_eq!(frame.len(), 4096 + extra);
        inject_line(&mut p, Who::Server, &frame);
        if accepted {
            assert_eq!(messages(&p.server).len(), 1, "max_frame bytes delivered");
            assert!(p.server.closed().is_none(), "the link stays up");
        } else {
            assert_eq!(
                closed_with(&p.server),
                CloseReason::Protocol(ProtocolError::FrameTooLarge { limit: 4096 }),
                "one byte more is too large"
            );
        }
    }
}

#[test]
fn f2_any_split_gives_identical_events_once() {
    // A client's frames after the handshake, replayed into fresh servers
    // split at every offset.
    let start = Instant::now();
    let fresh = || {
        let mut q = Pair::seeded(start, 2);
        q.connect();
        q
    };
    let w = client_writes(&mut fresh(), |c| {
        c.send(&raw(r#"{"op":"a","v":"}\n{"}"#)).unwrap();
        c.request(start, &raw("[1,{}]"), None).unwrap();
        c.send(&raw(r#""é""#)).unwrap();
        c.ping(None).unwrap();
    });
    let reference = {
        let mut q = fresh();
        q.inject(Who::Server, &w);
        q.server.take_events()
    };
    assert_eq!(reference.len(), 4, "one event per frame: {reference:?}");
    for cut in 0..=w.len() {
        let mut q = fresh();
        q.inject(Who::Server, &w[..cut]);
        q.inject(Who::Server, &w[cut..]);
        assert_eq!(
            q.server.take_events(),
            reference,
            "the same events, once, when split at {cut}"
        );
    }
    let mut q = fresh();
    for b in &w {
        q.inject(Who::Server, std::slice::from_ref(b));
    }
    assert_eq!(
        q.server.take_events(),
        reference,
        "the same events, once, when fed byte by byte"
    );
    record(
        "F2",
        format!(
            "identical {} events for all {} split points and bytewise; max accepted, max+1 FrameTooLarge",
            reference.len(),
            w.len() + 1
        ),
    );
}

#[test]
fn f3_invalid_utf8_and_non_objects_before_and_after_auth() {
    type Check = fn(&ProtocolError) -> bool;
    let cases: [(&[u8], Check); 8] = [
        (b"\xff\n", |e| *e == ProtocolError::InvalidUtf8),
        (b"{\"t\":\"\xc0\xaf\"}\n", |e| {
            *e == ProtocolError::InvalidUtf8
        }), // overlong '/'
        (b"{\"t\":\"\xed\xa0\x80\"}\n", |e| {
            *e == ProtocolError::InvalidUtf8
        }), // encoded surrogate
        (b"null\n", |e| *e == ProtocolError::NotAnObject),
        (b"5\n", |e| *e == ProtocolError::NotAnObject),
        (b"\"x\"\n", |e| *e == ProtocolError::NotAnObject),
        (b"[]\n", |e| *e == ProtocolError::NotAnObject),
        (b"{\"t\":\n", |e| {
            matches!(e, ProtocolError::InvalidJson { .. })
        }),
    ];
    for (input, check) in cases {
        for authed in [false, true] {
            let mut p = if authed {
                connected()
            } else {
                awaiting_hello()
            };
            p.inject(Who::Server, input);
            let e = protocol_error(&p.server);
            assert!(
                check(&e),
                "the right error for {input:?} (authed {authed}): {e:?}"
            );
        }
    }
    record(
        "F3",
        "InvalidUtf8 / NotAnObject / InvalidJson, then Closed, before and after auth",
    );
}

#[test]
fn f6_duplicate_keys_and_bad_request_ids() {
    let bad: [(&str, &str); 7] = [
        (r#"{"t":"req","id":1,"id":2,"d":1}"#, "id"),
        (r#"{"t":"msg","d":1,"d":2}"#, "d"),
        (r#"{"t":"req","id":1.5,"d":1}"#, "id"),
        (r#"{"t":"req","id":-1,"d":1}"#, "id"),
        (r#"{"t":"req","id":"1","d":1}"#, "id"),
        (r#"{"t":"req","id":18446744073709551616,"d":1}"#, "id"),
        (r#"{"t":"res","id":1e2,"d":1}"#, "id"),
    ];
    for (frame, field) in bad {
        let mut p = connected();
        inject_line(&mut p, Who::Server, frame);
        let named = match closed_with(&p.server) {
            CloseReason::Protocol(ProtocolError::DuplicateField { field }) => field,
            CloseReason::Protocol(ProtocolError::InvalidField { field, .. }) => field,
            other => panic!("{frame}: {other:?}"),
        };
        assert_eq!(named, field, "the error names the field: {frame}");
        assert!(
            requests(&p.server).is_empty(),
            "no request delivered: {frame}"
        );
        assert_eq!(
            p.server.conn.incoming_in_flight(),
            0,
            "request table untouched: {frame}"
        );
    }
    record(
        "F6",
        "DuplicateField / InvalidField naming the field; request table untouched",
    );
}

#[test]
fn f7_value_larger_than_peers_max_frame() {
    let mut p = Setup::seed(1).server(|s| s.max_frame = 2048).connected();
    assert_eq!(
        p.client.conn.peer_max_frame(),
        2048,
        "the peer's limit is known"
    );
    let big = raw(&format!("\"{}\"", "y".repeat(4000)));
    let before = p.client.conn.outbound_len();
    let err = p.client.conn.send(&big).unwrap_err();
    assert!(
        matches!(err, SendError::FrameTooLarge { limit: 2048, .. }),
        "send refused: {err:?}"
    );
    assert_eq!(p.client.conn.outbound_len(), before, "nothing written");
    assert!(
        matches!(
            p.client.conn.request(p.now, &big, None),
            Err(SendError::FrameTooLarge { .. })
        ),
        "request refused"
    );
    assert_eq!(p.client.conn.requests_in_flight(), 0, "no request pending");
    p.client.conn.send(&raw("1")).unwrap();
    p.drive();
    assert_eq!(messages(&p.server), vec!["1"], "the link still works");
    assert!(p.client.closed().is_none() && p.server.closed().is_none());
    record(
        "F7",
        format!("{err:?} to the caller; nothing written; link up"),
    );
}

#[test]
fn f8_eof_mid_frame_fails_pending_requests() {
    let mut p = connected();
    let now = p.now;
    let lost: Vec<_> = (0..3)
        .map(|_| p.server.conn.request(now, &raw("1"), None).unwrap())
        .map(|id| Resolution::failed(id, RequestError::ConnectionLost))
        .collect();
    p.drive();
    p.inject(Who::Server, br#"{"t":"msg","d""#);
    p.cut(Who::Client);
    assert_eq!(closed_with(&p.server), CloseReason::UnexpectedEof);
    assert_eq!(
        resolutions(&p.server),
        lost,
        "every pending request failed ConnectionLost, in order"
    );
    record(
        "F8",
        format!(
            "{:?}; {} pending requests failed ConnectionLost",
            p.server.closed().unwrap(),
            lost.len()
        ),
    );
}

/// The close reason the server ended with after `frame` arrived (before
/// or after the handshake), as Debug text, so that a comparison states the
/// exact variant and fields.
fn close_seen(authed: bool, frame: &str) -> String {
    let mut p = if authed {
        connected()
    } else {
        awaiting_hello()
    };
    inject_line(&mut p, Who::Server, frame);
    let reason = closed_with(&p.server);
    if let CloseReason::Remote { code, .. } = &reason {
        assert_eq!(
            &reason.code(),
            code,
            "code() agrees with the variant's code"
        );
    }
    format!("{reason:?}")
}

#[test]
fn f12_unknown_or_missing_close_code_and_long_reason() {
    for authed in [true, false] {
        assert_eq!(
            close_seen(authed, r#"{"t":"close","code":"x","reason":"bye"}"#),
            r#"Remote { code: Other("x"), reason: "bye" }"#,
            "an unknown code keeps the peer's text"
        );
        assert_eq!(
            close_seen(authed, r#"{"t":"close","reason":"bye"}"#),
            r#"Remote { code: Missing, reason: "bye" }"#,
            "a missing code is missing, not unknown"
        );
        assert_eq!(
            close_seen(authed, r#"{"t":"close"}"#),
            r#"Remote { code: Missing, reason: "" }"#,
            "a missing reason is empty"
        );
        assert_eq!(
            close_seen(authed, r#"{"t":"close","code":"\u0078y","reason":"r"}"#),
            r#"Remote { code: Other("xy"), reason: "r" }"#,
            "escapes are decoded"
        );
        assert_eq!(
            close_seen(authed, r#"{"t":"close","code":"integrity","reason":"r"}"#),
            r#"Remote { code: Integrity, reason: "r" }"#,
            "known codes are still known"
        );
    }
    // A reason (and an unknown code's text) longer than 256 bytes is
    // clipped on a character boundary: here 255 bytes, the `é` that would
    // straddle byte 256 dropped.
    let long = format!("{}é{}", "a".repeat(255), "b".repeat(44));
    assert_eq!(long.len(), 301);
    let mut p = connected();
    p.inject(
        Who::Server,
        format!(r#"{{"t":"close","code":"{long}","reason":"{long}"}}"#).as_bytes(),
    );
    p.inject(Who::Server, b"\n");
    let CloseReason::Remote { code, reason } = closed_with(&p.server) else {
        panic!("{:?}", p.server.events)
    };
    assert_eq!(reason, "a".repeat(255), "the reason clipped");
    assert_eq!(code.to_string(), "a".repeat(255), "the code's text clipped");
    assert_eq!(
        p.server.closed().unwrap().to_string(),
        format!("closed by peer ({}): {}", "a".repeat(255), "a".repeat(255)),
        "the Display form names the peer's code"
    );
    record(
        "F12",
        format!(
            "{} / {}, before and after auth; a {}-byte reason and code text kept as {} and {} bytes (clipped before a 2-byte character)",
            close_seen(true, r#"{"t":"close","code":"x","reason":"bye"}"#),
            close_seen(true, r#"{"t":"close","reason":"bye"}"#),
            long.len(),
            reason.len(),
            code.to_string().len()
        ),
    );
}
