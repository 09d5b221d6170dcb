#![allow(clippy::disallowed_methods)] // tests take one real Instant as the base of virtual time
//! Fault cases F1–F3, F6–F8 and F12 of tests/faults/FAULTS.md (framing):
//! lines, envelopes and close frames the peer gets wrong.

mod common;

use std::time::Instant;

use common::*;
use jsonlink_proto::testing::{Pair, Who, client_config, server_config};
use jsonlink_proto::{CloseReason, ProtocolError, RequestError, SendError};

#[test]
fn f1_unterminated_line_over_limit() {
    let mut p = connected();
    let max = jsonlink_proto::DEFAULT_MAX_FRAME;
    let now = p.now;
    let mut fed = 0usize;
    let byte = [b'x'];
    while !p.server.conn.is_closed() {
        p.server.conn.handle_input(now, &byte);
        fed += 1;
        assert!(fed <= max + 1, "kept buffering past the limit");
    }
    // Rejected exactly when the buffer would pass max.
    assert_eq!(fed, max + 1);
    while let Some(e) = p.server.conn.poll_event() {
        p.server.events.push(e);
    }
    assert_eq!(
        closed_with(&p.server),
        CloseReason::Protocol(ProtocolError::FrameTooLarge { limit: max })
    );
    // The peer is told why.
    let mut w = Vec::new();
    p.server.conn.poll_transmit(&mut w);
    assert!(String::from_utf8_lossy(&w).contains(r#""code":"frame_too_large""#));
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
    for (extra, ok) in [(0usize, true), (1, false)] {
        let mut c = client_config(1);
        let mut s = server_config(1);
        c.max_frame = 4096;
        s.max_frame = 4096;
        let mut p = Pair::new(Instant::now(), c, s, vec![], vec![]);
        p.connect();
        // {"t":"msg","d":"xxx…"} sized to exactly max (+extra).
        let overhead = r#"{"t":"msg","d":""}"#.len();
        let frame = format!(
            r#"{{"t":"msg","d":"{}"}}"#,
            "x".repeat(4096 - overhead + extra)
        );
        assert_eq!(frame.len(), 4096 + extra);
        p.inject(Who::Server, format!("{frame}\n").as_bytes());
        if ok {
            assert_eq!(messages(&p.server).len(), 1);
            assert!(p.server.closed().is_none());
        } else {
            assert_eq!(
                closed_with(&p.server),
                CloseReason::Protocol(ProtocolError::FrameTooLarge { limit: 4096 })
            );
        }
    }
}

#[test]
fn f2_any_split_gives_identical_events_once() {
    // Record a client's wire for a handshake plus a mix of frames, then
    // replay it into fresh servers split at every offset.
    let start = Instant::now();
    let mut p = Pair::seeded(start, 2);
    p.connect();
    let wire_hs_len = p.client.written;
    let w = client_wire(&mut p, |c| {
        c.send(&raw(r#"{"op":"a","v":"}\n{"}"#)).unwrap();
        c.request(start, &raw("[1,{}]"), None).unwrap();
        c.send(&raw(r#""é""#)).unwrap();
        c.ping(None).unwrap();
    });
    let _ = wire_hs_len;
    let reference = {
        let mut q = Pair::seeded(start, 2);
        q.connect();
        q.inject(Who::Server, &w);
        q.server.take_events()
    };
    assert_eq!(reference.len(), 4, "{reference:?}");
    for cut in 0..=w.len() {
        let mut q = Pair::seeded(start, 2);
        q.connect();
        q.inject(Who::Server, &w[..cut]);
        q.inject(Who::Server, &w[cut..]);
        assert_eq!(q.server.take_events(), reference, "split at {cut}");
    }
    // Byte by byte, too.
    let mut q = Pair::seeded(start, 2);
    q.connect();
    for b in &w {
        q.inject(Who::Server, std::slice::from_ref(b));
    }
    assert_eq!(q.server.take_events(), reference);
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
            let mut p = pair();
            if authed {
                p.connect();
            } else {
                p.client.conn.poll_transmit(&mut Vec::new()); // hello never arrives
            }
            p.inject(Who::Server, input);
            let CloseReason::Protocol(e) = closed_with(&p.server) else {
                panic!("{input:?}: {:?}", p.server.events)
            };
            assert!(check(&e), "{input:?} (authed {authed}): {e:?}");
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
        p.inject(Who::Server, format!("{frame}\n").as_bytes());
        let named = match closed_with(&p.server) {
            CloseReason::Protocol(ProtocolError::DuplicateField { field }) => field,
            CloseReason::Protocol(ProtocolError::InvalidField { field, .. }) => field,
            other => panic!("{frame}: {other:?}"),
        };
        assert_eq!(named, field, "{frame}");
        assert!(
            requests(&p.server).is_empty(),
            "request table untouched: {frame}"
        );
        assert_eq!(p.server.conn.incoming_in_flight(), 0);
    }
    record(
        "F6",
        "DuplicateField / InvalidField naming the field; request table untouched",
    );
}

#[test]
fn f7_value_larger_than_peers_max_frame() {
    let mut s = server_config(1);
    s.max_frame = 2048;
    let mut p = Pair::new(Instant::now(), client_config(1), s, vec![], vec![]);
    p.connect();
    assert_eq!(p.client.conn.peer_max_frame(), 2048);
    let big = raw(&format!("\"{}\"", "y".repeat(4000)));
    let before = p.client.conn.outbound_len();
    let err = p.client.conn.send(&big).unwrap_err();
    assert!(
        matches!(err, SendError::FrameTooLarge { limit: 2048, .. }),
        "{err:?}"
    );
    assert_eq!(p.client.conn.outbound_len(), before, "nothing written");
    assert!(matches!(
        p.client.conn.request(p.now, &big, None),
        Err(SendError::FrameTooLarge { .. })
    ));
    assert_eq!(p.client.conn.requests_in_flight(), 0);
    // The link stays up and works.
    p.client.conn.send(&raw("1")).unwrap();
    p.drive();
    assert_eq!(messages(&p.server), vec!["1"]);
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
    let ids: Vec<_> = (0..3)
        .map(|_| p.server.conn.request(now, &raw("1"), None).unwrap())
        .collect();
    p.drive();
    p.inject(Who::Server, br#"{"t":"msg","d""#);
    p.cut(Who::Client);
    assert_eq!(closed_with(&p.server), CloseReason::UnexpectedEof);
    let r = resolutions(&p.server);
    assert_eq!(r.len(), 3);
    for (i, (id, res)) in r.iter().enumerate() {
        assert_eq!(*id, ids[i]);
        assert_eq!(*res, Err(RequestError::ConnectionLost));
    }
    record(
        "F8",
        format!(
            "{:?}; {} pending requests failed ConnectionLost",
            p.server.closed().unwrap(),
            r.len()
        ),
    );
}

/// The close reason `p.server` ended with after `frame` arrived, as Debug
/// text (so the comparison states the exact variant and fields).
fn close_seen(authed: bool, frame: &str) -> String {
    let mut p = pair();
    if authed {
        p.connect();
    } else {
        p.client.conn.poll_transmit(&mut Vec::new()); // hello never arrives
    }
    p.inject(Who::Server, format!("{frame}\n").as_bytes());
    let reason = closed_with(&p.server);
    // `code()` agrees with the variant's own code.
    if let CloseReason::Remote { code, .. } = &reason {
        assert_eq!(&reason.code(), code);
    }
    format!("{reason:?}")
}

#[test]
fn f12_unknown_or_missing_close_code_and_long_reason() {
    for authed in [true, false] {
        // An unknown code keeps the peer's text.
        assert_eq!(
            close_seen(authed, r#"{"t":"close","code":"x","reason":"bye"}"#),
            r#"Remote { code: Other("x"), reason: "bye" }"#
        );
        // A missing code is reported as missing, not as an unknown one.
        assert_eq!(
            close_seen(authed, r#"{"t":"close","reason":"bye"}"#),
            r#"Remote { code: Missing, reason: "bye" }"#
        );
        assert_eq!(
            close_seen(authed, r#"{"t":"close"}"#),
            r#"Remote { code: Missing, reason: "" }"#
        );
        // Escapes are decoded; known codes are still known.
        assert_eq!(
            close_seen(authed, r#"{"t":"close","code":"\u0078y","reason":"r"}"#),
            r#"Remote { code: Other("xy"), reason: "r" }"#
        );
        assert_eq!(
            close_seen(authed, r#"{"t":"close","code":"integrity","reason":"r"}"#),
            r#"Remote { code: Integrity, reason: "r" }"#
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
    assert_eq!(reason, "a".repeat(255));
    assert_eq!(code.to_string(), "a".repeat(255));
    // The Display form names the peer's code.
    assert_eq!(
        p.server.closed().unwrap().to_string(),
        format!("closed by peer ({}): {}", "a".repeat(255), "a".repeat(255))
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
