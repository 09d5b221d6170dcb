#![allow(clippy::disallowed_methods)] // tests take one real Instant as the base of virtual time
//! Fault cases F9 and F10 of tests/faults/FAULTS.md: what a payload may
//! hold (one `op`, a bounded nesting depth), from the peer and from the caller.

mod common;

use std::time::Instant;

use common::*;
use jsonlink_proto::testing::{Pair, Who, client_config, server_config};
use jsonlink_proto::{
    CloseReason, Event, Policy, ProtocolError, RemoteError, RequestError, SendError,
};

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
