#![allow(clippy::disallowed_methods)] // tests take one real Instant as the base of virtual time
//! The core cases of tests/faults/FAULTS.md, one test (or more) per ID, named after it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use jsonlink_proto::testing::{Pair, Who, client_config, server_config};
use jsonlink_proto::{
    CloseCode, CloseReason, Config, Connection, ConnectionParams, Event, Extension, Extensions,
    Policy, ProtocolError, RemoteError, RequestError, SendError, Side,
};

fn closed_with(p: &jsonlink_proto::testing::Peer) -> CloseReason {
    assert_closed_last(p);
    p.closed().cloned().unwrap()
}

/// A pair with signing and/or sealing on.
fn protected(sign: bool, seal: bool) -> Pair {
    let mut c = client_config(5);
    let mut s = server_config(5);
    if sign {
        c.signing = Policy::Required;
        s.signing = Policy::Required;
    }
    if seal {
        c.encryption = Policy::Required;
        s.encryption = Policy::Required;
    }
    let mut p = Pair::new(Instant::now(), c, s, vec![9; 32], vec![9; 32]);
    p.connect();
    p
}

/// The bytes the client would write for these commands.
fn client_wire(p: &mut Pair, f: impl FnOnce(&mut Connection)) -> Vec<u8> {
    f(&mut p.client.conn);
    let mut w = Vec::new();
    p.client.conn.poll_transmit(&mut w);
    w
}

// ------------------------------------------------------------------ framing

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

/// The events `p.server` saw and the close code it sent back, after `line`
/// arrived on an authenticated plain link.
fn server_refusal(line: &str) -> (Vec<Event>, String) {
    let mut p = connected();
    p.inject(Who::Server, format!("{line}\n").as_bytes());
    let mut w = Vec::new();
    p.server.conn.poll_transmit(&mut w);
    let code = String::from_utf8_lossy(&w)
        .split(r#""code":""#)
        .nth(1)
        .and_then(|t| t.split('"').next())
        .unwrap_or("none")
        .to_owned();
    (p.server.take_events(), code)
}

#[test]
fn f9_duplicate_op_in_a_body_is_refused() {
    let refused = [
        r#"{"op":"a","op":"b"}"#,
        r#"{"op":"a","\u006fp":"b"}"#,
        r#"{"op":5,"op":"b"}"#,
        r#"{"x":1,"op":"a","y":[{"op":"c"}], "op" : "b"}"#,
    ];
    let mut seen = Vec::new();
    for body in refused {
        for line in [
            format!(r#"{{"t":"msg","d":{body}}}"#),
            format!(r#"{{"d":{body},"t":"msg"}}"#),
            format!(r#"{{"t":"req","id":1,"d":{body}}}"#),
            format!(r#"{{"t":"req", "d":{body}, "id":1}}"#),
        ] {
            let (events, code) = server_refusal(&line);
            // Nothing delivered (no message, no request): only Closed.
            let [Event::Closed(reason)] = events.as_slice() else {
                panic!("{line}: {events:?}")
            };
            assert_eq!(code, "invalid_frame", "{line}");
            seen.push(format!("{reason:?}"));
        }
    }
    seen.dedup();
    assert_eq!(
        seen,
        [r#"Protocol(DuplicateField { field: "d.op" })"#],
        "one outcome for every case"
    );
    // The request table is untouched.
    let mut p = connected();
    p.inject(
        Who::Server,
        b"{\"t\":\"req\",\"id\":1,\"d\":{\"op\":\"a\",\"op\":\"b\"}}\n",
    );
    assert_eq!(p.server.conn.incoming_in_flight(), 0);

    // A single op is the op serde_json reads from the delivered body,
    // whatever its spelling, beside nested ones.
    let mut p = connected();
    let accepted = [
        (r#"{"op":"a","x":{"op":"b"},"y":[{"op":"c"}]}"#, Some("a")),
        (r#"{"\u006fp":"\u00e9"}"#, Some("é")),
        (r#"{"opp":"a","\"op":"b"}"#, None),
        (r#"{"op":["a"]}"#, None),
        (r#"[{"op":"a"},{"op":"b"}]"#, None),
    ];
    for (body, _) in accepted {
        p.inject(
            Who::Server,
            format!("{{\"t\":\"msg\",\"d\":{body}}}\n").as_bytes(),
        );
    }
    let got: Vec<(Option<String>, serde_json::Value)> = p
        .server
        .take_events()
        .into_iter()
        .map(|e| match e {
            Event::Message { op, body } => (op.map(String::from), body.parse().unwrap()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(got.len(), accepted.len());
    for ((op, value), (body, want)) in got.iter().zip(accepted) {
        assert_eq!(op.as_deref(), want, "{body}");
        let handler_sees = value.get("op").and_then(serde_json::Value::as_str);
        assert_eq!(
            op.as_deref(),
            handler_sees,
            "dispatch and handler agree: {body}"
        );
    }
    // A response body is not dispatched: it passes as it is.
    let now = p.now;
    let id = p.server.conn.request(now, &raw("1"), None).unwrap();
    p.drive();
    p.inject(
        Who::Server,
        format!(
            "{{\"t\":\"res\",\"id\":{},\"d\":{{\"op\":1,\"op\":2}}}}\n",
            id.0
        )
        .as_bytes(),
    );
    assert_eq!(
        resolutions(&p.server)
            .into_iter()
            .map(|(i, r)| (i, r.map(|b| b.get().to_owned())))
            .collect::<Vec<_>>(),
        [(id, Ok(r#"{"op":1,"op":2}"#.to_owned()))]
    );

    // The caller's own such body: refused, nothing written, link up.
    let mut p = connected();
    let before = p.client.conn.outbound_len();
    let dup = raw(r#"{"op":"a","op":"b"}"#);
    let send = p.client.conn.send(&dup);
    let request = p.client.conn.request(now, &dup, None);
    assert_eq!(
        format!("{send:?} / {request:?}"),
        "Err(DuplicateOp) / Err(DuplicateOp)"
    );
    assert_eq!(p.client.conn.outbound_len(), before, "nothing written");
    assert_eq!(p.client.conn.requests_in_flight(), 0);
    p.client.conn.send(&raw(r#"{"op":"a"}"#)).unwrap();
    p.drive();
    assert_eq!(messages(&p.server), [r#"{"op":"a"}"#]);
    assert!(p.client.closed().is_none() && p.server.closed().is_none());
    record(
        "F9",
        format!(
            "msg and req bodies with op twice (plain, escaped, a non-string first, beside nested ones; canonical and reordered frames): {}, close invalid_frame, nothing delivered, request table untouched; a single op is the one serde_json reads; a res body is not dispatched and passes; the caller's own: {send:?}, nothing written, link up",
            seen[0]
        ),
    );
}

/// `n` nested arrays: depth `n`.
fn nest(n: usize) -> String {
    format!("{}{}", "[".repeat(n), "]".repeat(n))
}

/// `n` nested objects: depth `n` (ping data must be an object).
fn nest_obj(n: usize) -> String {
    format!("{}{{}}{}", r#"{"a":"#.repeat(n - 1), "}".repeat(n - 1))
}

const TOO_DEEP: &str =
    r#"Protocol(InvalidJson { detail: "nested deeper than the 127-level depth limit" })"#;

/// A pair in `mode` (0 plain, 1 signed, 2 sealed) whose client sends
/// values of any depth (its own limit raised), so that the server's limit
/// is what is tested, inside the signed or sealed wrapping too.
fn deep_sender(mode: u8) -> Pair {
    let mut c = client_config(5);
    let mut s = server_config(5);
    c.max_depth = usize::MAX;
    let policy = |on| if on { Policy::Required } else { Policy::Off };
    c.signing = policy(mode == 1);
    s.signing = policy(mode == 1);
    c.encryption = policy(mode == 2);
    s.encryption = policy(mode == 2);
    let mut p = Pair::new(Instant::now(), c, s, vec![9; 32], vec![9; 32]);
    p.connect();
    p
}

/// What the server of a [`deep_sender`] pair saw when its client sent
/// a value of `depth` one way: the outcome as text, events included.
fn deep_value_outcome(mode: u8, carrier: &str, depth: usize) -> String {
    let mut p = deep_sender(mode);
    let now = p.now;
    let v = raw(&nest(depth));
    let data = raw(&nest_obj(depth));
    match carrier {
        "msg" => p.client.conn.send(&v).unwrap(),
        "req" => {
            p.client.conn.request(now, &v, None).unwrap();
        }
        "res" | "err.data" => {
            p.server.conn.request(now, &raw("1"), None).unwrap();
            p.drive();
            let id = requests(&p.client)[0].0;
            p.client.take_events();
            p.server.take_events();
            let err = RemoteError {
                data: Some(nest(depth)),
                ..RemoteError::new("c", "m")
            };
            let answer = if carrier == "res" { Ok(&*v) } else { Err(&err) };
            p.client.conn.respond(id, answer).unwrap();
        }
        "ping" => p.client.conn.ping(Some(&data)).unwrap(),
        other => panic!("{other}"),
    }
    p.drive();
    let events = p.server.take_events();
    match events.as_slice() {
        // Delivered: the application can parse what it got.
        [Event::Message { body, .. }]
        | [Event::Request { body, .. }]
        | [Event::Response { body, .. }] => {
            serde_json::from_str::<serde_json::Value>(body.get()).unwrap();
            "delivered".into()
        }
        [
            Event::RequestFailed {
                error: RequestError::Remote(e),
                ..
            },
        ] => {
            serde_json::from_str::<serde_json::Value>(e.data.as_deref().unwrap()).unwrap();
            "delivered".into()
        }
        [Event::Ping { data: Some(d) }] => {
            serde_json::from_str::<serde_json::Value>(d.get()).unwrap();
            "delivered".into()
        }
        // Refused: nothing delivered; a pending request fails.
        [Event::Closed(r)] => format!("{r:?}"),
        [
            Event::RequestFailed {
                error: RequestError::ConnectionLost,
                ..
            },
            Event::Closed(r),
        ] => {
            format!("{r:?}")
        }
        other => format!("{other:?}"),
    }
}

#[test]
fn f10_deep_values_from_the_peer_are_invalid_json() {
    // The default is exactly serde_json's: 127 levels parse, 128 do not.
    assert!(serde_json::from_str::<serde_json::Value>(&nest(127)).is_ok());
    assert!(serde_json::from_str::<serde_json::Value>(&nest(128)).is_err());
    assert!(serde_json::from_str::<serde_json::Value>(&nest_obj(127)).is_ok());
    assert!(serde_json::from_str::<serde_json::Value>(&nest_obj(128)).is_err());
    assert_eq!(jsonlink_proto::DEFAULT_MAX_DEPTH, 127);

    // Through the API of a client that sends anything, in every mode.
    for mode in [0, 1, 2] {
        for carrier in ["msg", "req", "res", "err.data", "ping"] {
            assert_eq!(
                deep_value_outcome(mode, carrier, 127),
                "delivered",
                "{mode} {carrier}"
            );
            assert_eq!(
                deep_value_outcome(mode, carrier, 128),
                TOO_DEEP,
                "{mode} {carrier}"
            );
        }
    }
    // Raw lines: other members, other layouts, very deep bodies.
    for (line, ok) in [
        (format!(r#"{{"t":"msg","d":1,"x":{}}}"#, nest(127)), true),
        (format!(r#"{{"t":"msg","d":1,"x":{}}}"#, nest(128)), false),
        (format!(r#"{{"d":{}, "t":"msg"}}"#, nest(128)), false),
        (
            format!(r#"{{"t":"pong","x":{{"y":{}}}}}"#, nest(127)),
            false,
        ),
        (format!(r#"{{"t":"msg","d":{}}}"#, nest(100_000)), false),
        (format!(r#"{{"t":"msg","d":{}}}"#, nest(1_000_000)), false),
        (
            format!(
                r#"{{"t":"msg","d":{{"a":"{}","b":{}}}}}"#,
                r#"\"[[[\\"#.repeat(200),
                nest(126)
            ),
            true,
        ),
    ] {
        assert!(line.len() < jsonlink_proto::DEFAULT_MAX_FRAME);
        let (events, code) = server_refusal(&line);
        if ok {
            assert!(
                matches!(events.as_slice(), [Event::Message { .. }]),
                "{events:?}"
            );
        } else {
            let [Event::Closed(r)] = events.as_slice() else {
                panic!("{events:?}")
            };
            assert_eq!(format!("{r:?}"), TOO_DEEP);
            assert_eq!(code, "invalid_json");
        }
    }
    // Before authentication: a member of the hello (server) or of the
    // challenge (client).
    for (who, n) in [
        (Who::Server, 127),
        (Who::Server, 128),
        (Who::Client, 127),
        (Who::Client, 128),
    ] {
        let mut p = pair();
        let mut hello = Vec::new();
        p.client.conn.poll_transmit(&mut hello);
        let mut line = hello.clone();
        if who == Who::Client {
            p.server.conn.handle_input(p.now, &hello);
            line.clear();
            p.server.conn.poll_transmit(&mut line);
        }
        let end = line.len() - 2; // before `}\n`
        line.splice(end..end, format!(r#","x":{}"#, nest(n)).into_bytes());
        p.inject(who, &line);
        let peer = p.peer(who);
        while let Some(e) = peer.conn.poll_event() {
            peer.events.push(e);
        }
        match (n, peer.closed()) {
            (127, None) => {}
            (128, Some(r)) => assert_eq!(format!("{r:?}"), TOO_DEEP),
            other => panic!("{who:?} {n}: {other:?}"),
        }
    }
    record(
        "F10",
        format!(
            "depth 127 delivered and parsed by serde_json (which refuses 128); depth 128 as a msg, req or res body, an error's data or ping data, in plain, signed and sealed frames, as an unknown member, at 100000 and 1000000 levels, and in a hello or challenge member: {TOO_DEEP}, close invalid_json, nothing delivered"
        ),
    );
}

#[test]
fn f10_the_callers_own_deep_value_is_refused_locally() {
    let mut outcomes = Vec::new();
    for mode in [0, 1, 2] {
        let mut c = client_config(5);
        let mut s = server_config(5);
        let policy = |on| if on { Policy::Required } else { Policy::Off };
        c.signing = policy(mode == 1);
        s.signing = policy(mode == 1);
        c.encryption = policy(mode == 2);
        s.encryption = policy(mode == 2);
        let mut p = Pair::new(Instant::now(), c, s, vec![9; 32], vec![9; 32]);
        p.connect();
        let now = p.now;
        p.server.conn.request(now, &raw("1"), None).unwrap();
        p.drive();
        let id = requests(&p.client)[0].0;
        let before = p.client.conn.outbound_len();
        let deep = raw(&nest(128));
        let err = RemoteError {
            data: Some(nest(128)),
            ..RemoteError::new("c", "m")
        };
        let got = [
            p.client.conn.send(&deep),
            p.client.conn.request(now, &deep, None).map(drop),
            p.client.conn.respond(id, Ok(&deep)),
            p.client.conn.respond(id, Err(&err)),
            p.client.conn.ping(Some(&raw(&nest_obj(128)))),
        ];
        let mut each: Vec<String> = got.iter().map(|r| format!("{r:?}")).collect();
        each.dedup();
        assert_eq!(
            each,
            ["Err(TooDeep { depth: 128, limit: 127 })"],
            "mode {mode}"
        );
        outcomes.extend(each);
        assert_eq!(p.client.conn.outbound_len(), before, "nothing written");
        assert_eq!(p.client.conn.requests_in_flight(), 0);
        assert_eq!(p.client.conn.incoming_in_flight(), 1, "still answerable");
        // The link is up, and the sequence numbers were not used up.
        p.client.conn.send(&raw(&nest(127))).unwrap();
        p.client.conn.respond(id, Ok(&raw(&nest(127)))).unwrap();
        p.drive();
        assert_eq!(messages(&p.server), [nest(127)]);
        assert_eq!(resolutions(&p.server).len(), 1);
        assert!(p.client.closed().is_none() && p.server.closed().is_none());
    }
    outcomes.dedup();
    assert_eq!(outcomes.len(), 1);
    record(
        "F10/local",
        format!(
            "a depth-128 body (send, request, respond), error data or ping data of the caller's: {} each, in plain, signed and sealed modes; nothing written, link up, the request still answerable",
            outcomes[0]
        ),
    );
}

#[test]
fn f10_the_depth_limit_is_configurable() {
    let mut c = client_config(1);
    let mut s = server_config(1);
    c.max_depth = 3;
    s.max_depth = 3;
    let mut p = Pair::new(Instant::now(), c, s, vec![], vec![]);
    p.connect();
    p.client.conn.send(&raw(&nest(3))).unwrap();
    assert_eq!(
        p.client.conn.send(&raw(&nest(4))),
        Err(SendError::TooDeep { depth: 4, limit: 3 })
    );
    p.drive();
    assert_eq!(messages(&p.server), [nest(3)]);
    p.inject(
        Who::Server,
        format!("{{\"t\":\"msg\",\"d\":{}}}\n", nest(4)).as_bytes(),
    );
    assert_eq!(
        closed_with(&p.server),
        CloseReason::Protocol(ProtocolError::InvalidJson {
            detail: "nested deeper than the 3-level depth limit".into()
        })
    );
    // 0 acts as 1: the handshake's lists still fit.
    let mut c = client_config(1);
    let mut s = server_config(1);
    c.max_depth = 0;
    s.max_depth = 0;
    let mut p = Pair::new(Instant::now(), c, s, vec![], vec![]);
    p.connect();
    p.client.conn.send(&raw("[1]")).unwrap();
    assert!(matches!(
        p.client.conn.send(&raw("[[1]]")),
        Err(SendError::TooDeep { depth: 2, limit: 1 })
    ));
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

// ---------------------------------------------------------------- handshake

#[test]
fn h1_server_sends_no_proof_to_a_failed_client() {
    let mut c = client_config(1);
    c.secret = jsonlink_proto::Secret::from_bytes(b"wrong".to_vec()).unwrap();
    let mut p = Pair::new(Instant::now(), c, server_config(1), vec![], vec![]);
    p.record();
    p.drive();
    let text = String::from_utf8(p.server.log.take().unwrap()).unwrap();
    assert!(!text.contains(r#""t":"ok""#), "{text}");
    assert!(!text.contains("proof"), "{text}");
    assert!(text.contains(r#""code":"auth_failed""#), "{text}");
    assert_eq!(
        p.client.closed().map(CloseReason::code),
        Some(CloseCode::AuthFailed)
    );
    assert_eq!(
        p.server.closed().map(CloseReason::code),
        Some(CloseCode::AuthFailed)
    );
    record(
        "H1",
        format!(
            "server {:?}, client code {}; no proof sent to the client",
            p.server.closed().unwrap(),
            p.client.closed().unwrap().code()
        ),
    );
}

#[test]
fn h3_frames_before_auth_are_unauthenticated() {
    let frames = [
        r#"{"t":"msg","d":{"op":"x"}}"#,
        r#"{"t":"req","id":1,"d":1}"#,
        r#"{"t":"ping"}"#,
        r#"{"t":"ok","proof":"AAAA"}"#,
        r#"{"op":"auth","proof":"x"}"#,
        r#"{"t":"auth","proof":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#,
    ];
    for f in frames {
        // Server awaiting hello.
        let mut p = pair();
        p.client.conn.poll_transmit(&mut Vec::new());
        p.inject(Who::Server, format!("{f}\n").as_bytes());
        let r = closed_with(&p.server);
        assert!(
            matches!(
                r,
                CloseReason::Protocol(ProtocolError::Unauthenticated { .. })
            ),
            "{f}: {r:?}"
        );
        assert_eq!(
            p.server.events.len(),
            1,
            "no application event: {:?}",
            p.server.events
        );
        // Client awaiting the challenge.
        let mut p = pair();
        p.inject(Who::Client, format!("{f}\n").as_bytes());
        assert!(matches!(
            closed_with(&p.client),
            CloseReason::Protocol(ProtocolError::Unauthenticated { .. })
        ));
    }
    record(
        "H3",
        "Protocol(Unauthenticated), then Closed; no application event",
    );
}

#[test]
fn h4_replayed_client_proof_fails() {
    // Session 1: record the client's auth line.
    let start = Instant::now();
    let mut p1 = Pair::seeded(start, 1);
    p1.record();
    p1.connect();
    let log = String::from_utf8(p1.client.log.take().unwrap()).unwrap();
    let old_auth = log
        .lines()
        .find(|l| l.contains(r#""t":"auth""#))
        .map(str::to_owned);
    let old_auth = old_auth.expect("auth line");
    // Session 2, different server nonce: the attacker replays the old proof.
    let mut p2 = Pair::new(start, client_config(1), server_config(2), vec![], vec![]);
    let mut hello = Vec::new();
    p2.client.conn.poll_transmit(&mut hello);
    p2.inject(Who::Server, &hello);
    p2.server.conn.poll_transmit(&mut Vec::new()); // challenge goes to the attacker
    p2.inject(Who::Server, format!("{old_auth}\n").as_bytes());
    assert_eq!(
        closed_with(&p2.server),
        CloseReason::Protocol(ProtocolError::AuthFailed)
    );
    assert!(
        !p2.server
            .events
            .iter()
            .any(|e| matches!(e, Event::Authenticated(_)))
    );
    record(
        "H4",
        format!(
            "replayed proof: {:?} (channel-binding mismatch: see pair::h4_channel_binding_mismatch_fails_auth)",
            p2.server.closed().unwrap()
        ),
    );
}

#[test]
fn h5_garbage_and_http_fail_fast() {
    for input in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n",
        b"SSH-2.0-OpenSSH_9.0\r\n",
    ] {
        let mut p = pair();
        p.client.conn.poll_transmit(&mut Vec::new());
        p.inject(Who::Server, input);
        let r = closed_with(&p.server);
        assert!(
            matches!(
                r,
                CloseReason::Protocol(
                    ProtocolError::InvalidJson { .. }
                        | ProtocolError::InvalidUtf8
                        | ProtocolError::NotAnObject
                )
            ),
            "{input:?}: {r:?}"
        );
    }
    record(
        "H5",
        "HTTP, TLS ClientHello, SSH banner: Protocol(InvalidJson/InvalidUtf8) on the first line; version mismatch: VersionMismatch naming both (pair::h5_version_mismatch_names_both_versions)",
    );
}

#[test]
fn h6_handshake_frame_over_pre_auth_limit() {
    let mut p = pair();
    p.client.conn.poll_transmit(&mut Vec::new());
    let limit = jsonlink_proto::DEFAULT_PRE_AUTH_MAX_FRAME;
    // A huge "hello" arriving in 1 KiB pieces: closed as soon as it passes the limit.
    let piece = vec![b'a'; 1024];
    let mut fed = 0;
    while !p.server.conn.is_closed() {
        p.inject(Who::Server, &piece);
        fed += piece.len();
        assert!(fed <= limit + 1024);
    }
    assert_eq!(
        closed_with(&p.server),
        CloseReason::Protocol(ProtocolError::FrameTooLarge { limit })
    );
    // Before auth, even a complete line over the limit is refused.
    let mut p = pair();
    let mut hello = Vec::new();
    p.client.conn.poll_transmit(&mut hello);
    let mut big = hello.clone();
    big.pop();
    big.pop();
    big.extend_from_slice(format!(r#","pad":"{}"}}"#, "p".repeat(limit)).as_bytes());
    big.push(b'\n');
    p.inject(Who::Server, &big);
    assert_eq!(
        closed_with(&p.server),
        CloseReason::Protocol(ProtocolError::FrameTooLarge { limit })
    );
    record(
        "H6",
        format!(
            "{:?} before buffering past the limit",
            p.server.closed().unwrap()
        ),
    );
}

#[test]
fn h7_stripped_feature_or_unknown_algorithm_is_negotiation_failed() {
    // A MITM rewrites the challenge to turn signing off that the client requires.
    let mut c = client_config(1);
    c.signing = Policy::Required;
    let mut p = Pair::new(Instant::now(), c, server_config(1), vec![], vec![]);
    p.step();
    let mut ch = Vec::new();
    p.server.conn.poll_transmit(&mut ch);
    let mut text = String::from_utf8(std::mem::take(&mut p.server.in_flight)).unwrap();
    text.push_str(&String::from_utf8(ch).unwrap());
    assert!(text.contains(r#""sign":true"#), "{text}");
    let stripped = text.replace(r#""sign":true"#, r#""sign":false"#);
    p.inject(Who::Client, stripped.as_bytes());
    assert!(matches!(
        closed_with(&p.client),
        CloseReason::Protocol(ProtocolError::NegotiationFailed { .. })
    ));

    // An unknown algorithm in the hello.
    let mut p = pair();
    let mut hello = Vec::new();
    p.client.conn.poll_transmit(&mut hello);
    let h = String::from_utf8(hello)
        .unwrap()
        .replace("aes-256-cbc-hmac-sha256", "rot13");
    p.inject(Who::Server, h.as_bytes());
    assert!(matches!(
        closed_with(&p.server),
        CloseReason::Protocol(ProtocolError::NegotiationFailed { .. })
    ));
    record(
        "H7",
        "stripped feature / unknown algorithm: NegotiationFailed; tampered offer: AuthFailed",
    );
}

#[test]
fn h7_tampered_offer_breaks_the_handshake_mac() {
    // The client prefers signing; a MITM downgrades the offer to "optional"
    // so neither side signs. The transcripts then differ: auth fails.
    let mut c = client_config(1);
    c.signing = Policy::Preferred;
    let mut p = Pair::new(Instant::now(), c, server_config(1), vec![], vec![]);
    p.tamper(Who::Client, |b| {
        let s = String::from_utf8(b.clone()).unwrap();
        *b = s
            .replace(r#""sign":"preferred""#, r#""sign":"optional""#)
            .into_bytes();
    });
    p.drive();
    assert_eq!(
        p.server.closed().map(CloseReason::code),
        Some(CloseCode::AuthFailed)
    );
    assert!(
        !p.client
            .events
            .iter()
            .any(|e| matches!(e, Event::Authenticated(_)))
    );
}

/// A pair whose client (max_frame 1024) and server offer or accept these
/// extensions, recorded and connected.
fn ext_pair(client: Extensions, server: Extensions) -> Pair {
    let mut c = client_config(8);
    c.max_frame = 1024;
    c.extensions = client;
    let mut s = server_config(8);
    s.extensions = server;
    let mut p = Pair::new(Instant::now(), c, s, vec![3; 32], vec![3; 32]);
    p.record();
    p
}

/// Both sides' handshake outcome as (client, server) extension sets.
fn agreed(p: &Pair) -> (Extensions, Extensions) {
    let ext = |peer: &jsonlink_proto::testing::Peer| match peer.events.first() {
        Some(Event::Authenticated(a)) => {
            assert_eq!(
                a.extensions,
                peer.conn.extensions(),
                "event and getter agree"
            );
            a.extensions
        }
        other => panic!("not authenticated: {other:?}"),
    };
    (ext(&p.client), ext(&p.server))
}

/// The error the client gets for a request the server answers with 2 KiB
/// (over the client's 1024-byte max_frame), at once (no time passes).
fn too_large_answer(p: &mut Pair) -> RemoteError {
    let now = p.now;
    let id = p
        .client
        .conn
        .request(now, &raw(r#"{"op":"echo"}"#), None)
        .unwrap();
    p.drive();
    let (rid, _, _) = requests(&p.server).last().cloned().unwrap();
    let big = raw(&format!("\"{}\"", "y".repeat(2048)));
    let r = p.server.conn.respond(rid, Ok(&big));
    assert!(
        matches!(r, Err(SendError::ResponseTooLarge { limit: 1024, .. })),
        "{r:?}"
    );
    p.drive();
    match resolutions(&p.client).last() {
        Some((i, Err(RequestError::Remote(e)))) if *i == id => e.clone(),
        other => panic!("{other:?}"),
    }
}

fn log_text(p: &jsonlink_proto::testing::Peer) -> String {
    String::from_utf8(p.log.clone().unwrap()).unwrap()
}

#[test]
fn h8_an_accepted_extension_is_used_and_a_declined_one_never_shows() {
    let rtl = Extension::ResponseTooLarge;
    let mut outcome = Vec::new();
    // Offered and accepted.
    let mut p = ext_pair(Extensions::ALL, Extensions::ALL);
    p.drive();
    assert_eq!(agreed(&p), (Extensions::ALL, Extensions::ALL));
    let hello = log_text(&p.client);
    let challenge = log_text(&p.server);
    assert!(
        hello.contains(r#","ext":["response_too_large"]}"#),
        "{hello}"
    );
    assert!(
        challenge.contains(r#","ext":["response_too_large"]}"#),
        "{challenge}"
    );
    let e = too_large_answer(&mut p);
    assert_eq!(e.code, RemoteError::RESPONSE_TOO_LARGE);
    assert_eq!(e.data.as_deref(), Some(r#"{"size":2073,"max_frame":1024}"#));
    outcome.push(format!(
        "accepted: both sides {:?}, a too-large answer is {}",
        Extensions::ALL,
        e.code
    ));

    // Offered, not accepted (the server allows none), and offered to a
    // version 1 server, which ignores `ext`: the same challenge, without
    // `ext`, and only version 1 codes on the wire.
    let mut p = ext_pair(Extensions::ALL, Extensions::NONE);
    p.drive();
    assert_eq!(agreed(&p), (Extensions::NONE, Extensions::NONE));
    assert!(!p.client.conn.extensions().contains(rtl));
    let challenge = log_text(&p.server);
    assert!(!challenge.contains("ext"), "{challenge}");
    let e = too_large_answer(&mut p);
    assert_eq!(e.code, RemoteError::INTERNAL);
    assert_eq!(e.data, None);
    assert!(
        e.message.contains("2073 bytes") && e.message.contains("1024 bytes"),
        "{e:?}"
    );
    let server_wire = log_text(&p.server);
    assert!(!server_wire.contains("response_too_large"), "{server_wire}");
    outcome.push(format!(
        "not accepted / v1 server: challenge without ext, both sides {:?}, a too-large answer is {}",
        Extensions::NONE,
        e.code
    ));

    // A version 1 client (no offer: its hello has no `ext`).
    let mut p = ext_pair(Extensions::NONE, Extensions::ALL);
    p.drive();
    assert_eq!(agreed(&p), (Extensions::NONE, Extensions::NONE));
    assert!(!log_text(&p.client).contains("ext"));
    assert!(!log_text(&p.server).contains("ext"));
    let e = too_large_answer(&mut p);
    assert_eq!(e.code, RemoteError::INTERNAL);
    outcome.push(format!("v1 client: no offer, no ext, {}", e.code));

    // Unknown names in an offer are skipped.
    let mut p = ext_pair(Extensions::ALL, Extensions::ALL);
    let mut hello = Vec::new();
    p.client.conn.poll_transmit(&mut hello);
    let hello = String::from_utf8(hello).unwrap().replace(
        r#"["response_too_large"]"#,
        r#"["relay","response_too_large","x"]"#,
    );
    p.inject(Who::Server, hello.as_bytes());
    let mut ch = Vec::new();
    p.server.conn.poll_transmit(&mut ch);
    let ch = String::from_utf8(ch).unwrap();
    assert!(ch.contains(r#","ext":["response_too_large"]}"#), "{ch}");
    assert!(p.server.closed().is_none());
    record("H8", outcome.join("; ") + "; " + &h8_tampering());
}

/// Tampering with the offer or the answer to it: the transcripts differ,
/// so the handshake fails on the proof. Returns the outcome text.
fn h8_tampering() -> String {
    let strip = r#","ext":["response_too_large"]"#;
    let cases: [(&str, Extensions, Who, &str, &str); 3] = [
        (
            "offer stripped from hello",
            Extensions::ALL,
            Who::Client,
            strip,
            "",
        ),
        (
            "answer stripped from challenge",
            Extensions::ALL,
            Who::Server,
            strip,
            "",
        ),
        (
            "answer added to challenge",
            Extensions::NONE,
            Who::Server,
            r#","seal":false}"#,
            r#","seal":false,"ext":["response_too_large"]}"#,
        ),
    ];
    let mut seen = Vec::new();
    for (case, server, who, from, to) in cases {
        let mut p = ext_pair(Extensions::ALL, server);
        let (from, to) = (from.to_owned(), to.to_owned());
        p.tamper(who, move |b| {
            let s = String::from_utf8(b.clone()).unwrap();
            *b = s.replacen(&from, &to, 1).into_bytes();
        });
        p.drive();
        for peer in [&p.client, &p.server] {
            assert!(
                !peer
                    .events
                    .iter()
                    .any(|e| matches!(e, Event::Authenticated(_))),
                "{case}: {:?}",
                peer.events
            );
        }
        // The server rejects the client's proof (its transcript differs).
        assert_eq!(
            p.server.closed(),
            Some(&CloseReason::Protocol(ProtocolError::AuthFailed)),
            "{case}"
        );
        assert_eq!(
            p.client.closed().map(CloseReason::code),
            Some(CloseCode::AuthFailed),
            "{case}"
        );
        seen.push(case);
    }
    format!("tampered ({}): AuthFailed", seen.join(", "))
}

#[test]
fn h8_malformed_ext_lists_are_refused() {
    // In a hello: not a list, a non-string entry, too many entries.
    let many = format!("[{}]", vec![r#""x""#; 33].join(","));
    for (ext, detail) in [
        (r#""response_too_large""#, "expected a list of strings"),
        ("[1]", "expected a list of strings"),
        ("null", "expected a list of strings"),
        (many.as_str(), "too many entries"),
    ] {
        let mut p = ext_pair(Extensions::ALL, Extensions::ALL);
        let mut hello = Vec::new();
        p.client.conn.poll_transmit(&mut hello);
        let h = String::from_utf8(hello)
            .unwrap()
            .replace(r#"["response_too_large"]"#, ext);
        p.inject(Who::Server, h.as_bytes());
        assert_eq!(
            p.server.closed(),
            Some(&CloseReason::Protocol(ProtocolError::InvalidField {
                field: "ext",
                detail
            })),
            "{ext}"
        );
    }
    // A duplicated `ext` member is a duplicated known member.
    let mut p = ext_pair(Extensions::ALL, Extensions::ALL);
    p.tamper(Who::Client, |b| {
        let s = String::from_utf8(b.clone()).unwrap();
        *b = s
            .replacen(
                r#""ext":["response_too_large"]"#,
                r#""ext":["response_too_large"],"ext":[]"#,
                1,
            )
            .into_bytes();
    });
    p.drive();
    assert_eq!(
        p.server.closed(),
        Some(&CloseReason::Protocol(ProtocolError::DuplicateField {
            field: "ext"
        }))
    );
    // A challenge accepting what the client did not offer, or a name it does
    // not know: the client refuses before sending its proof.
    for (client, ext) in [
        (Extensions::NONE, r#"["response_too_large"]"#),
        (Extensions::ALL, r#"["relay"]"#),
    ] {
        let mut p = ext_pair(client, Extensions::ALL);
        let ext = ext.to_owned();
        p.tamper(Who::Server, move |b| {
            let s = String::from_utf8(b.clone()).unwrap();
            *b = s
                .replacen(r#","ext":["response_too_large"]"#, "", 1)
                .replacen(
                    r#","seal":false}"#,
                    &format!(r#","seal":false,"ext":{ext}}}"#),
                    1,
                )
                .into_bytes();
        });
        p.drive();
        assert!(
            matches!(
                p.client.closed(),
                Some(CloseReason::Protocol(
                    ProtocolError::NegotiationFailed { .. }
                ))
            ),
            "{:?}",
            p.client.events
        );
        assert!(!log_text(&p.client).contains(r#""t":"auth""#));
    }
}

// ----------------------------------------------------- signing and sealing

#[test]
fn s1_every_bit_flip_of_a_protected_frame_is_detected() {
    for (sign, seal) in [(true, false), (false, true), (true, true)] {
        let mut base = protected(sign, seal);
        let w = client_wire(&mut base, |c| {
            c.send(&raw(r#"{"op":"x","v":[1,2]}"#)).unwrap()
        });
        let body_len = w.len() - 1; // not the final '\n'
        for bit in 0..body_len * 8 {
            let mut p = protected(sign, seal);
            let _ = client_wire(&mut p, |_| {});
            let mut t = w.clone();
            t[bit / 8] ^= 1 << (bit % 8);
            p.inject(Who::Server, &t);
            p.inject(Who::Server, b"\n");
            let r = closed_with(&p.server);
            assert!(
                matches!(r, CloseReason::Protocol(ProtocolError::Integrity)),
                "sign {sign} seal {seal} bit {bit}: {r:?}"
            );
            assert!(messages(&p.server).is_empty());
        }
    }
    record(
        "S1",
        "Protocol(Integrity) for every bit of signed, sealed and signed+sealed frames",
    );
}

#[test]
fn s2_missing_or_empty_tag_is_integrity() {
    for frame in [
        r#"{"t":"msg","d":1}"#.to_owned(),
        r#"{"q":0,"f":{"t":"msg","d":1}}"#.to_owned(),
        r#"{"q":0,"s":"","f":{"t":"msg","d":1}}"#.to_owned(),
        r#"{"f":{"t":"msg","d":1},"q":0,"s":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#
            .to_owned(),
    ] {
        let mut p = protected(true, false);
        p.inject(Who::Server, format!("{frame}\n").as_bytes());
        assert_eq!(
            closed_with(&p.server),
            CloseReason::Protocol(ProtocolError::Integrity),
            "{frame}"
        );
    }
    record("S2", "Protocol(Integrity)");
}

#[test]
fn s3_replay_swap_and_drop_are_detected() {
    for seal in [false, true] {
        let mut p = protected(true, seal);
        let w = client_wire(&mut p, |c| {
            c.send(&raw("1")).unwrap();
            c.send(&raw("2")).unwrap();
            c.send(&raw("3")).unwrap();
        });
        let lines: Vec<&[u8]> = w.split_inclusive(|b| *b == b'\n').collect();
        assert_eq!(lines.len(), 3);
        let scenarios: [(&[usize], u64, u64); 3] = [
            (&[0, 0], 1, 0), // replay
            (&[1, 0], 0, 1), // swap
            (&[0, 2], 1, 2), // drop
        ];
        for (order, expected, got) in scenarios {
            let mut q = protected(true, seal);
            let _ = client_wire(&mut q, |_| {});
            for i in order {
                q.inject(Who::Server, lines[*i]);
            }
            assert_eq!(
                closed_with(&q.server),
                CloseReason::Protocol(ProtocolError::Sequence { expected, got }),
                "seal {seal} order {order:?}"
            );
        }
    }
    record(
        "S3",
        "Protocol(Sequence { expected, got }) for replay, swap, drop",
    );
}

#[test]
fn s4_bad_padding_and_bad_mac_give_the_same_error() {
    use aes::cipher::{BlockModeEncrypt, KeyIvInit, block_padding::NoPadding};
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut outcomes = Vec::new();
    for valid_mac in [true, false] {
        let mut c = client_config(5);
        let mut sc = server_config(5);
        c.encryption = Policy::Required;
        sc.encryption = Policy::Required;
        let mut p = Pair::new(Instant::now(), c, sc, vec![9; 32], vec![9; 32]);
        p.record();
        p.connect();
        // Recompute the client's c2s keys from the recorded transcript with
        // the public derivation, to forge frames with a valid MAC.
        let first_line = |log: &[u8]| log.split(|b| *b == b'\n').next().unwrap().to_vec();
        let hello = first_line(p.client.log.as_deref().unwrap());
        let challenge = first_line(p.server.log.as_deref().unwrap());
        let th = jsonlink_proto::crypto::transcript_hash(&hello, &challenge, &[9; 32]);
        let keys = jsonlink_proto::crypto::SessionKeys::derive(&client_config(5).secret, &th).c2s;
        let iv = [5u8; 16];
        // One block of zeros: its "padding" byte is 0x00, invalid PKCS#7.
        let mut block = [0u8; 16];
        let ct = cbc::Encryptor::<aes::Aes256>::new(keys.enc.expose().into(), &iv.into())
            .encrypt_padded::<NoPadding>(&mut block, 16)
            .unwrap()
            .to_vec();
        let mut mac =
            <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(keys.mac.expose()).unwrap();
        mac.update(&[0x02]);
        mac.update(&0u64.to_be_bytes());
        mac.update(&iv);
        mac.update(&ct);
        let mut tag = mac.finalize().into_bytes().to_vec();
        if !valid_mac {
            tag[0] ^= 1;
        }
        let frame = format!(
            r#"{{"q":0,"iv":"{}","s":"{}","c":"{}"}}"#,
            b64.encode(iv),
            b64.encode(&tag),
            b64.encode(&ct)
        );
        p.inject(Who::Server, format!("{frame}\n").as_bytes());
        outcomes.push(closed_with(&p.server));
    }
    assert_eq!(outcomes[0], CloseReason::Protocol(ProtocolError::Integrity));
    assert_eq!(
        outcomes[0], outcomes[1],
        "bad padding and bad MAC are indistinguishable"
    );
    record(
        "S4",
        format!(
            "bad padding: {:?}; bad MAC: {:?} (MAC checked before decryption: crypto::tests::s4_*)",
            outcomes[0], outcomes[1]
        ),
    );
}

#[test]
fn s5_seal_is_randomized_and_malformed_ciphertext_is_integrity() {
    let mut p = protected(false, true);
    let mut seen_iv = std::collections::HashSet::new();
    let mut seen_ct = std::collections::HashSet::new();
    for _ in 0..200 {
        let w = client_wire(&mut p, |c| c.send(&raw(r#""same""#)).unwrap());
        let text = String::from_utf8(w).unwrap();
        let iv = text
            .split(r#""iv":""#)
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_owned();
        let ct = text
            .split(r#""c":""#)
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_owned();
        assert!(seen_iv.insert(iv));
        assert!(seen_ct.insert(ct));
    }
    let iv = "AAAAAAAAAAAAAAAAAAAAAA==";
    let tag = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    for ct in [
        "",
        "AAAA",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "!!!!",
        "AAAAAAAAAAAAAAAAAAAAAA==",
    ] {
        let mut q = protected(false, true);
        let frame = format!(r#"{{"q":0,"iv":"{iv}","s":"{tag}","c":"{ct}"}}"#);
        q.inject(Who::Server, format!("{frame}\n").as_bytes());
        assert_eq!(
            closed_with(&q.server),
            CloseReason::Protocol(ProtocolError::Integrity),
            "{ct}"
        );
    }
    record(
        "S5",
        "200 seals: 200 distinct IVs and ciphertexts; malformed ciphertext: Protocol(Integrity)",
    );
}

#[test]
fn s6_debug_and_errors_never_show_secrets() {
    let secret_hex = hex_of(&jsonlink_proto::testing::TEST_SECRET);
    let mut p = protected(true, true);
    let now = p.now;
    p.client.conn.request(now, &raw("1"), None).unwrap();
    p.drive();
    let cfg = client_config(1);
    let keys = jsonlink_proto::crypto::SessionKeys::derive(&cfg.secret, &[3; 32]);
    let outputs = [
        format!("{cfg:?}"),
        format!("{:?}", cfg.secret),
        format!("{keys:?}"),
        format!("{:?}", p.client.conn),
        format!("{:?}", p.server.events),
        format!("{:?}", ConnectionParams::default()),
        format!("{}", ProtocolError::AuthFailed),
        format!("{}", CloseReason::Protocol(ProtocolError::Integrity)),
    ];
    let needles = [
        secret_hex,
        String::from_utf8_lossy(&jsonlink_proto::testing::TEST_SECRET).into_owned(),
        hex_of(keys.c2s.mac.expose()),
        hex_of(keys.s2c.enc.expose()),
        format!("{:?}", jsonlink_proto::testing::TEST_SECRET),
        format!("{:?}", keys.c2s.mac.expose()),
    ];
    for o in &outputs {
        for n in &needles {
            assert!(!o.contains(n.as_str()), "{o} leaks {n}");
        }
    }
    assert!(format!("{:?}", cfg.secret).contains("redacted"));
    fn zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    zeroize_on_drop::<jsonlink_proto::Secret>();
    zeroize_on_drop::<jsonlink_proto::crypto::Key>();
    record(
        "S6",
        "no secret, key or proof bytes in Debug/Display/errors; Secret and Key zeroize on drop",
    );
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// --------------------------------------------------- requests and responses

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

// ---------------------------------------------------------- keepalive, time

#[test]
fn k2_ping_flood_never_queues_pongs_beyond_the_bound() {
    let mut s = server_config(1);
    s.max_outbound = 64 * 1024;
    s.keepalive = None;
    let mut p = Pair::new(Instant::now(), client_config(1), s, vec![], vec![]);
    p.connect();
    let flood = b"{\"t\":\"ping\"}\n".repeat(100_000);
    let now = p.now;
    // The peer floods pings and never reads our pongs.
    for chunk in flood.chunks(16 * 1024) {
        p.server.conn.handle_input(now, chunk);
        while p.server.conn.poll_event().is_some() {}
        assert!(p.server.conn.outbound_len() <= 64 * 1024);
    }
    // One coalesced pong is all that goes out.
    let mut w = Vec::new();
    p.server.conn.poll_transmit(&mut w);
    assert_eq!(w, b"{\"t\":\"pong\"}\n");
    // Real frames still get through both ways.
    p.server.conn.send(&raw(r#""still here""#)).unwrap();
    p.client.conn.send(&raw(r#""me too""#)).unwrap();
    p.drive();
    assert_eq!(messages(&p.client), vec![r#""still here""#]);
    assert!(!p.server.conn.is_closed());
    record(
        "K2",
        "100000 pings: one coalesced pong, outbound within bound, real frames delivered",
    );
}

#[test]
fn k1_silent_peer_closes_within_interval_plus_timeout() {
    let mut p = connected();
    let start = p.now;
    p.server.reading = false;
    p.client.reading = false;
    p.advance(Duration::from_secs(24));
    assert!(p.client.closed().is_none());
    p.advance(Duration::from_secs(1));
    assert_eq!(p.client.closed(), Some(&CloseReason::KeepaliveTimeout));
    assert!(p.now - start <= Duration::from_secs(25));
    record(
        "K1",
        format!(
            "{:?} within interval + timeout (25 s); requests fail ConnectionLost",
            p.client.closed().unwrap()
        ),
    );
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A connected pair whose server never reads (so it answers no ping and
/// no request) and runs no keepalive of its own.
fn deaf_server() -> Pair {
    let mut s = server_config(1);
    s.keepalive = None;
    let mut p = Pair::new(Instant::now(), client_config(1), s, vec![], vec![]);
    p.connect();
    p.server.reading = false;
    p
}

/// The outcomes among `events`, in order: each request failure's error and
/// the close reason.
fn outcomes(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::RequestFailed { id, error } => Some(format!("#{} {error:?}", id.0)),
            Event::Response { id, .. } => Some(format!("#{} answered", id.0)),
            Event::Closed(r) => Some(format!("Closed({r:?})")),
            _ => None,
        })
        .collect()
}

fn pings_in(bytes: &[u8]) -> usize {
    String::from_utf8_lossy(bytes)
        .matches(r#"{"t":"ping"}"#)
        .count()
}

#[test]
fn k3_everything_due_fires_in_deadline_order() {
    // A stalled loop: the ping goes out on time at +15 s (pong deadline
    // +25 s), then nothing runs until +30 s. The request due at +21 s
    // came before the keepalive deadline: it fails Timeout, and only the
    // one due after it (+50 s) ConnectionLost.
    let mut p = deaf_server();
    let t0 = p.now;
    let a = p
        .client
        .conn
        .request(t0, &raw("1"), Some(secs(21)))
        .unwrap();
    let b = p
        .client
        .conn
        .request(t0, &raw("2"), Some(secs(50)))
        .unwrap();
    p.advance(secs(15));
    assert_eq!(pings_in(&p.client.in_flight), 1);
    assert_eq!(p.client.conn.poll_timeout(), Some(t0 + secs(21)));
    assert!(p.client.take_events().is_empty());
    p.jump(secs(15));
    let stalled = outcomes(&p.client.events);
    assert_eq!(
        stalled,
        [
            format!("#{} Timeout", a.0),
            format!("#{} ConnectionLost", b.0),
            "Closed(KeepaliveTimeout)".to_owned(),
        ]
    );
    assert_closed_last(&p.client);

    // Closing with a drain deadline at +5 s, requests due at +2 s and
    // +8 s, nothing run until +10 s: the first times out, the drain
    // deadline ends the second.
    let mut p = deaf_server();
    let t0 = p.now;
    let a = p.client.conn.request(t0, &raw("1"), Some(secs(2))).unwrap();
    let b = p.client.conn.request(t0, &raw("2"), Some(secs(8))).unwrap();
    p.client.conn.close_by(t0, "bye", t0 + secs(5));
    p.jump(secs(10));
    let closing = outcomes(&p.client.events);
    assert_eq!(
        closing,
        [
            format!("#{} Timeout", a.0),
            format!("#{} ClosedLocally", b.0),
            r#"Closed(Local { reason: "bye" })"#.to_owned(),
        ]
    );
    assert_closed_last(&p.client);

    record(
        "K3",
        format!(
            "ping at +15 s, one handle_timeout at +30 s: {}; closing (drain +5 s), one handle_timeout at +10 s: {}; {}",
            stalled.join(", "),
            closing.join(", "),
            k3_late_ping()
        ),
    );
}

/// A suspend through the keepalive send: the late ping's pong deadline
/// counts from when it is sent. Returns the outcome text.
fn k3_late_ping() -> String {
    let mut p = deaf_server();
    let t0 = p.now;
    let a = p
        .client
        .conn
        .request(t0, &raw("1"), Some(secs(21)))
        .unwrap();
    p.client
        .conn
        .request(t0, &raw("2"), Some(secs(50)))
        .unwrap();
    // Suspended from +0 to +30 s: the ping (due +15 s) and the request
    // (due +21 s) are both late.
    p.jump(secs(30));
    assert_eq!(outcomes(&p.client.events), [format!("#{} Timeout", a.0)]);
    assert_eq!(pings_in(&p.client.in_flight), 1);
    let pong_deadline = p.client.conn.poll_timeout().unwrap() - t0;
    assert_eq!(pong_deadline, secs(40));
    p.advance(secs(9));
    assert!(p.client.closed().is_none());
    // The pong arrives before +40 s: the link stays up past it.
    p.server.reading = true;
    p.drive();
    assert_eq!(
        p.client
            .events
            .iter()
            .filter(|e| matches!(e, Event::Pong))
            .count(),
        1
    );
    p.advance(secs(5));
    assert!(p.client.closed().is_none());
    format!(
        "a ping due at +15 s sent at +30 s after a suspend: pong deadline +{} s, link up",
        pong_deadline.as_secs()
    )
}

#[test]
fn k3_a_late_ping_counts_its_pong_deadline_from_now() {
    let _ = k3_late_ping();
}

/// Durations whose sum with any `Instant` overflows.
const OVERFLOWING: [Duration; 3] = [
    Duration::MAX,
    Duration::from_secs(u64::MAX),
    Duration::from_secs(i64::MAX as u64),
];

#[test]
fn f11_request_timeout_that_overflows_means_no_deadline() {
    let _ = f11_requests();
}

/// Requests whose timeouts overflow: no deadline, answered or ended with
/// the connection. Returns the outcome text.
fn f11_requests() -> String {
    let mut p = deaf_server();
    p.server.reading = true;
    let now = p.now;
    let keepalive = p.client.conn.poll_timeout();
    let mut ids = Vec::new();
    for d in OVERFLOWING {
        ids.push(p.client.conn.request(now, &raw("1"), Some(d)).unwrap());
        // No deadline: the next timer is still the keepalive's.
        assert_eq!(p.client.conn.poll_timeout(), keepalive);
    }
    p.drive();
    // Answered, hours later.
    p.advance(secs(3 * 3600));
    let first = requests(&p.server)[0].0;
    p.server.conn.respond(first, Ok(&raw("\"ok\""))).unwrap();
    p.drive();
    // The others end with the connection, at the close deadline.
    p.server.reading = false;
    let now = p.now;
    p.client.conn.close(now, "bye");
    p.advance(Duration::MAX);
    let got = outcomes(&p.client.events);
    assert_eq!(
        got,
        [
            format!("#{} answered", ids[0].0),
            format!("#{} ClosedLocally", ids[1].0),
            format!("#{} ClosedLocally", ids[2].0),
            r#"Closed(Local { reason: "bye" })"#.to_owned(),
        ]
    );
    assert_eq!(p.now - now, secs(5));
    format!(
        "as request timeouts: no deadline; {} after 3 h, {} at the {} s close deadline",
        got[0],
        got[1..3].join(", "),
        (p.now - now).as_secs()
    )
}

#[test]
fn f11_config_durations_that_overflow_mean_no_deadline() {
    let mut observed = Vec::new();
    for d in OVERFLOWING {
        let mut c = client_config(1);
        let mut s = server_config(1);
        for cfg in [&mut c, &mut s] {
            cfg.handshake_timeout = d;
            cfg.request_timeout = d;
            cfg.close_timeout = d;
            cfg.keepalive = Some(jsonlink_proto::Keepalive {
                interval: d,
                timeout: d,
                data: None,
            });
        }
        let mut p = Pair::new(Instant::now(), c, s, vec![], vec![]);
        // No handshake deadline.
        assert_eq!(p.next_deadline(), None);
        p.connect();
        // No keepalive ping.
        assert_eq!(p.next_deadline(), None);
        let now = p.now;
        let id = p.client.conn.request(now, &raw("1"), None).unwrap();
        assert_eq!(p.next_deadline(), None);
        p.drive();
        // A close with no drain deadline waits for the request.
        p.client.conn.close(now, "bye");
        p.drive();
        assert_eq!(p.next_deadline(), None);
        p.advance(Duration::MAX);
        assert!(!p.client.conn.is_closed());
        let req = requests(&p.server)[0].0;
        p.server.conn.respond(req, Ok(&raw("2"))).unwrap();
        p.drive();
        let got = outcomes(&p.client.events);
        assert_eq!(
            got,
            [
                format!("#{} answered", id.0),
                r#"Closed(Local { reason: "bye" })"#.to_owned()
            ]
        );
        observed.push(got.join(", "));
    }
    observed.dedup();
    assert_eq!(observed.len(), 1);

    // Keepalive pings on time but never gives up on the pong; a close_by
    // deadline tightens a drain that had none.
    let mut c = client_config(1);
    c.keepalive = Some(jsonlink_proto::Keepalive {
        interval: secs(1),
        timeout: Duration::MAX,
        data: None,
    });
    c.close_timeout = Duration::MAX;
    let mut s = server_config(1);
    s.keepalive = None;
    let mut p = Pair::new(Instant::now(), c, s, vec![], vec![]);
    p.connect();
    p.server.reading = false;
    p.advance(secs(1));
    assert_eq!(pings_in(&p.client.in_flight), 1);
    assert_eq!(p.client.conn.poll_timeout(), None);
    let now = p.now;
    let id = p.client.conn.request(now, &raw("1"), None).unwrap();
    p.client.conn.close(now, "bye");
    assert_eq!(p.client.conn.poll_timeout(), Some(now + secs(30)));
    p.client.conn.close_by(now, "bye", now + secs(2));
    assert_eq!(p.client.conn.poll_timeout(), Some(now + secs(2)));
    p.advance(Duration::MAX);
    assert_eq!(
        outcomes(&p.client.events),
        [
            format!("#{} ClosedLocally", id.0),
            r#"Closed(Local { reason: "bye" })"#.to_owned()
        ]
    );
    record(
        "F11",
        format!(
            "Duration::MAX, u64::MAX s, i64::MAX s never panic; {}; as handshake, keepalive, request and close timeouts of both sides and a Pair advance: no deadline at all, {}; a close_by deadline still ends a drain that had none",
            f11_requests(),
            observed[0]
        ),
    );
}

#[test]
fn close_handshake_before_auth_ends_at_once() {
    let cfg = std::sync::Arc::new(Config::new(
        jsonlink_proto::Secret::from_bytes(vec![1]).unwrap(),
        Default::default(),
    ));
    let mut c = Connection::new(
        cfg,
        Side::Client,
        Instant::now(),
        ConnectionParams::default(),
    );
    c.close(Instant::now(), "never mind");
    assert!(c.is_closed());
}
