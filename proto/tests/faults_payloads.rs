#![forbid(unsafe_code)]
//! Fault cases F9 and F10 of tests/faults/FAULTS.md: what a payload may
//! hold (one `op`, a bounded nesting depth), from the peer and from the caller.

mod common;

use common::*;
use jsonlink_proto::testing::{Pair, Who};
use jsonlink_proto::{CloseReason, Event, ProtocolError, RemoteError, RequestError, SendError};

/// The events the server of a connected plain pair saw after `line`
/// arrived, and the close code it sent back (`none` without one).
fn server_refusal(line: &str) -> (Vec<Event>, String) {
    let mut p = connected();
    inject_line(&mut p, Who::Server, line);
    let code = string_member(&take_output_text(&mut p.server), "code")
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
            let [Event::Closed(reason)] = events.as_slice() else {
                panic!("nothing delivered, only Closed: {line}: {events:?}")
            };
            assert_eq!(code, "invalid_frame", "the close code for {line}");
            seen.push(format!("{reason:?}"));
        }
    }
    seen.dedup();
    assert_eq!(
        seen,
        [r#"Protocol(DuplicateField { field: "d.op" })"#],
        "one outcome for every case"
    );
    let mut p = connected();
    inject_line(
        &mut p,
        Who::Server,
        r#"{"t":"req","id":1,"d":{"op":"a","op":"b"}}"#,
    );
    assert_eq!(
        p.server.conn.incoming_in_flight(),
        0,
        "the request table is untouched"
    );

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
        inject_line(&mut p, Who::Server, &format!(r#"{{"t":"msg","d":{body}}}"#));
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
    assert_eq!(got.len(), accepted.len(), "every message delivered");
    for ((op, value), (body, want)) in got.iter().zip(accepted) {
        assert_eq!(op.as_deref(), want, "the op dispatched for {body}");
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
    inject_line(
        &mut p,
        Who::Server,
        &format!(r#"{{"t":"res","id":{},"d":{{"op":1,"op":2}}}}"#, id.0),
    );
    assert_eq!(
        resolutions(&p.server),
        [Resolution::answered(id, r#"{"op":1,"op":2}"#)],
        "an answer with op twice is delivered as it is"
    );

    // The caller's own such body: refused, nothing written, link up.
    let mut p = connected();
    let before = p.client.conn.outbound_len();
    let dup = raw(r#"{"op":"a","op":"b"}"#);
    let send = p.client.conn.send(&dup);
    let request = p.client.conn.request(now, &dup, None);
    assert_eq!(
        format!("{send:?} / {request:?}"),
        "Err(DuplicateOp) / Err(DuplicateOp)",
        "send and request refuse it"
    );
    assert_eq!(p.client.conn.outbound_len(), before, "nothing written");
    assert_eq!(p.client.conn.requests_in_flight(), 0, "no request pending");
    p.client.conn.send(&raw(r#"{"op":"a"}"#)).unwrap();
    p.drive();
    assert_eq!(
        messages(&p.server),
        [r#"{"op":"a"}"#],
        "the link still works"
    );
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

/// An error answer whose `data` is nested `depth` deep.
fn deep_error(depth: usize) -> RemoteError {
    RemoteError {
        data: Some(nest(depth)),
        ..RemoteError::new("c", "m")
    }
}

const TOO_DEEP: &str =
    r#"Protocol(InvalidJson { detail: "nested deeper than the 127-level depth limit" })"#;

/// Where a deep value travels.
#[derive(Debug, Clone, Copy)]
enum Carrier {
    Message,
    Request,
    Answer,
    ErrorData,
    PingData,
}

impl Carrier {
    const ALL: [Self; 5] = [
        Self::Message,
        Self::Request,
        Self::Answer,
        Self::ErrorData,
        Self::PingData,
    ];
}

/// A connected pair (seed 5, a channel binding) in `mode` whose client
/// sends values of any depth (its own limit raised), so that the server's
/// limit is what is tested, inside the signed or sealed wrapping too.
fn deep_sender(mode: Protection) -> Pair {
    Setup::seed(5)
        .binding(9)
        .protection(mode)
        .client(|c| c.max_depth = usize::MAX)
        .connected()
}

/// What the server of a [`deep_sender`] pair saw when its client sent
/// a value of `depth` one way: `delivered` (and parsed), or the close
/// reason.
fn deep_value_outcome(mode: Protection, carrier: Carrier, depth: usize) -> String {
    let mut p = deep_sender(mode);
    let now = p.now;
    let v = raw(&nest(depth));
    match carrier {
        Carrier::Message => p.client.conn.send(&v).unwrap(),
        Carrier::Request => {
            p.client.conn.request(now, &v, None).unwrap();
        }
        Carrier::Answer | Carrier::ErrorData => {
            let req = deliver_request(&mut p, Who::Server, "1");
            p.client.take_events();
            p.server.take_events();
            let err = deep_error(depth);
            let answer = match carrier {
                Carrier::Answer => Ok(&*v),
                _ => Err(&err),
            };
            p.client.conn.respond(req.peer_id, answer).unwrap();
        }
        Carrier::PingData => p.client.conn.ping(Some(&raw(&nest_obj(depth)))).unwrap(),
    }
    p.drive();
    let parses = |json: &str| serde_json::from_str::<serde_json::Value>(json).is_ok();
    let events = p.server.take_events();
    match events.as_slice() {
        // Delivered: the application can parse what it got.
        [Event::Message { body, .. }]
        | [Event::Request { body, .. }]
        | [Event::Response { body, .. }] => {
            assert!(parses(body.get()), "what is delivered parses");
            "delivered".into()
        }
        [
            Event::RequestFailed {
                error: RequestError::Remote(e),
                ..
            },
        ] => {
            assert!(parses(e.data.as_deref().unwrap()), "error data parses");
            "delivered".into()
        }
        [Event::Ping { data: Some(d) }] => {
            assert!(parses(d.get()), "ping data parses");
            "delivered".into()
        }
        // Refused: nothing delivered; a pending request fails.
        [Event::Closed(r)]
        | [
            Event::RequestFailed {
                error: RequestError::ConnectionLost,
                ..
            },
            Event::Closed(r),
        ] => format!("{r:?}"),
        other => format!("{other:?}"),
    }
}

#[test]
fn f10_deep_values_from_the_peer_are_invalid_json() {
    let parses = |json: &str| serde_json::from_str::<serde_json::Value>(json).is_ok();
    assert!(
        parses(&nest(127)) && parses(&nest_obj(127)),
        "serde_json parses 127"
    );
    assert!(!parses(&nest(128)) && !parses(&nest_obj(128)), "not 128");
    assert_eq!(
        jsonlink_proto::DEFAULT_MAX_DEPTH,
        127,
        "the default is serde_json's"
    );

    // Through the API of a client that sends anything, in every mode.
    for mode in Protection::MODES {
        for carrier in Carrier::ALL {
            assert_eq!(
                deep_value_outcome(mode, carrier, 127),
                "delivered",
                "depth 127: {mode:?} {carrier:?}"
            );
            assert_eq!(
                deep_value_outcome(mode, carrier, 128),
                TOO_DEEP,
                "depth 128: {mode:?} {carrier:?}"
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
        assert!(
            line.len() < jsonlink_proto::DEFAULT_MAX_FRAME,
            "under the frame limit"
        );
        let (events, code) = server_refusal(&line);
        if ok {
            assert!(
                matches!(events.as_slice(), [Event::Message { .. }]),
                "delivered: {events:?}"
            );
        } else {
            let [Event::Closed(r)] = events.as_slice() else {
                panic!("nothing delivered, only Closed: {events:?}")
            };
            assert_eq!(format!("{r:?}"), TOO_DEEP);
            assert_eq!(code, "invalid_json", "the close code");
        }
    }
    // Before authentication: a member of the hello (at the server) or of
    // the challenge (at the client).
    for (who, n) in [
        (Who::Server, 127),
        (Who::Server, 128),
        (Who::Client, 127),
        (Who::Client, 128),
    ] {
        let mut p = pair();
        let hello = take_output(&mut p.client);
        let mut line = if who == Who::Client {
            p.server.conn.handle_input(p.now, &hello);
            take_output(&mut p.server)
        } else {
            hello
        };
        let end = line.len() - 2; // before `}\n`
        line.splice(end..end, format!(r#","x":{}"#, nest(n)).into_bytes());
        p.inject(who, &line);
        let peer = p.peer(who);
        poll_events(peer);
        match (n, peer.closed()) {
            (127, None) => {}
            (128, Some(r)) => assert_eq!(format!("{r:?}"), TOO_DEEP, "{who:?} at 128"),
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
    for mode in Protection::MODES {
        let mut p = Setup::seed(5).binding(9).protection(mode).connected();
        let now = p.now;
        let req = deliver_request(&mut p, Who::Server, "1");
        let before = p.client.conn.outbound_len();
        let deep = raw(&nest(128));
        let got = [
            p.client.conn.send(&deep),
            p.client.conn.request(now, &deep, None).map(drop),
            p.client.conn.respond(req.peer_id, Ok(&deep)),
            p.client.conn.respond(req.peer_id, Err(&deep_error(128))),
            p.client.conn.ping(Some(&raw(&nest_obj(128)))),
        ];
        let mut each: Vec<String> = got.iter().map(|r| format!("{r:?}")).collect();
        each.dedup();
        assert_eq!(
            each,
            ["Err(TooDeep { depth: 128, limit: 127 })"],
            "every command refuses it: {mode:?}"
        );
        outcomes.extend(each);
        assert_eq!(p.client.conn.outbound_len(), before, "nothing written");
        assert_eq!(p.client.conn.requests_in_flight(), 0, "no request pending");
        assert_eq!(p.client.conn.incoming_in_flight(), 1, "still answerable");
        // The link is up, and the sequence numbers were not used up.
        p.client.conn.send(&raw(&nest(127))).unwrap();
        p.client
            .conn
            .respond(req.peer_id, Ok(&raw(&nest(127))))
            .unwrap();
        p.drive();
        assert_eq!(messages(&p.server), [nest(127)], "a message still arrives");
        assert_eq!(resolutions(&p.server).len(), 1, "the answer still arrives");
        assert!(p.client.closed().is_none() && p.server.closed().is_none());
    }
    outcomes.dedup();
    assert_eq!(outcomes.len(), 1, "one outcome in every mode");
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
    let mut p = Setup::seed(1).both(|c| c.max_depth = 3).connected();
    p.client.conn.send(&raw(&nest(3))).unwrap();
    assert_eq!(
        p.client.conn.send(&raw(&nest(4))),
        Err(SendError::TooDeep { depth: 4, limit: 3 }),
        "one level more is refused"
    );
    p.drive();
    assert_eq!(messages(&p.server), [nest(3)], "the limit's depth arrives");
    inject_line(
        &mut p,
        Who::Server,
        &format!(r#"{{"t":"msg","d":{}}}"#, nest(4)),
    );
    assert_eq!(
        closed_with(&p.server),
        CloseReason::Protocol(ProtocolError::InvalidJson {
            detail: "nested deeper than the 3-level depth limit".into()
        })
    );
    // 0 acts as 1: the handshake's lists still fit.
    let mut p = Setup::seed(1).both(|c| c.max_depth = 0).connected();
    p.client.conn.send(&raw("[1]")).unwrap();
    assert!(
        matches!(
            p.client.conn.send(&raw("[[1]]")),
            Err(SendError::TooDeep { depth: 2, limit: 1 })
        ),
        "0 acts as 1"
    );
}
