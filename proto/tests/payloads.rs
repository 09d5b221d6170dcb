#![allow(clippy::disallowed_methods)] // tests take one real Instant as the base of virtual time
//! Payloads on the pair (PROTOCOL.md §5): passed through as exact JSON
//! text, and unable to break the framing however they are formatted.

mod common;

use std::time::Instant;

use common::*;
use jsonlink_proto::testing::{Pair, client_config, server_config};
use jsonlink_proto::{Event, Policy, RemoteError, RequestError};

#[test]
fn non_compact_payloads_cannot_break_framing() {
    let mut p = connected();
    let pretty = raw("{\n  \"op\": \"x\",\n  \"v\": [1,\n 2]\n}");
    p.client.conn.send(&pretty).unwrap();
    let now = p.now;
    p.client.conn.request(now, &pretty, None).unwrap();
    p.client.conn.ping(Some(&pretty)).unwrap();
    p.drive();
    assert!(p.server.closed().is_none(), "{:?}", p.server.events);
    let m = messages(&p.server);
    let v: serde_json::Value = serde_json::from_str(&m[0]).unwrap();
    assert_eq!(v, serde_json::json!({"op": "x", "v": [1, 2]}));
    let (rid, op, _) = requests(&p.server)[0].clone();
    assert_eq!(op.as_deref(), Some("x"));
    p.server.conn.respond(rid, Ok(&pretty)).unwrap();
    p.drive();
    assert!(resolutions(&p.client)[0].1.is_ok());
}

/// PROTOCOL.md §5: payloads are JSON text, passed through as exact bytes.
/// Numbers are never converted (`1.0` stays `1.0`, `1e400` and
/// integers past 64 bits arrive as written, `-0` keeps its sign) and
/// escapes are not decoded, in every payload (message and request bodies,
/// answers, error data, ping data) and every protection mode.
#[test]
fn payload_bytes_pass_through_unchanged() {
    let values = [
        "1.0",
        "1e400",
        "-0",
        "-0.0",
        "1E+2",
        "123456789012345678901234567890",
        "18446744073709551616",
        "0.1000000000000000055511151231257827",
        r#""\u00e9""#,
        r#""é""#,
        r#""\ud83d\ude00\/\b""#,
        r#"{"op":"x\u0041","a":1.0,"b":[1e400,-0,{}],"c":"\u00e9\"","d":null}"#,
        r#"[ 1 , 2.50 ]"#,
    ];
    for (sign, seal) in [(false, false), (true, false), (false, true)] {
        let mut c = client_config(3);
        let mut s = server_config(3);
        let policy = |on| if on { Policy::Required } else { Policy::Off };
        (c.signing, s.signing) = (policy(sign), policy(sign));
        (c.encryption, s.encryption) = (policy(seal), policy(seal));
        let mut p = Pair::new(Instant::now(), c, s, vec![], vec![]);
        p.connect();
        let now = p.now;
        for v in values {
            p.client.conn.send(&raw(v)).unwrap();
            p.client.conn.request(now, &raw(v), None).unwrap();
            p.client.conn.request(now, &raw("0"), None).unwrap();
            p.client
                .conn
                .ping(Some(&raw(&format!(r#"{{"v":{v}}}"#))))
                .unwrap();
            p.drive();
            let events = p.server.take_events();
            let [
                Event::Message { body: m, .. },
                Event::Request {
                    id: r1, body: b1, ..
                },
                Event::Request { id: r2, .. },
                Event::Ping { data: Some(d) },
            ] = events.as_slice()
            else {
                panic!("{v}: {events:?}")
            };
            assert_eq!((m.get(), b1.get()), (v, v));
            assert_eq!(d.get(), format!(r#"{{"v":{v}}}"#));
            // Answers and error data, back the other way.
            p.server.conn.respond(*r1, Ok(&raw(v))).unwrap();
            let err = RemoteError {
                data: Some(v.to_owned()),
                ..RemoteError::new("c", "m")
            };
            p.server.conn.respond(*r2, Err(&err)).unwrap();
            p.drive();
            let r = resolutions(&p.client);
            p.client.take_events();
            let [(_, Ok(answer)), (_, Err(RequestError::Remote(e)))] = r.as_slice() else {
                panic!("{v}: {r:?}")
            };
            assert_eq!(answer.get(), v);
            assert_eq!(e.data.as_deref(), Some(v));
        }
    }
}
