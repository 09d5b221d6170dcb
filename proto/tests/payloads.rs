#![forbid(unsafe_code)]
//! Payloads on the pair (PROTOCOL.md §5): passed through as exact JSON
//! text, and unable to break the framing however they are formatted.

mod common;

use common::*;
use jsonlink_proto::{Event, RemoteError};

#[test]
fn non_compact_payloads_cannot_break_framing() {
    let mut p = connected();
    let pretty = "{\n  \"op\": \"x\",\n  \"v\": [1,\n 2]\n}";
    let now = p.now;
    p.client.conn.send(&raw(pretty)).unwrap();
    p.client.conn.request(now, &raw(pretty), None).unwrap();
    p.client.conn.ping(Some(&raw(pretty))).unwrap();
    p.drive();
    assert!(p.server.closed().is_none(), "{:?}", p.server.events);
    let m = messages(&p.server);
    let v: serde_json::Value = serde_json::from_str(&m[0]).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"op": "x", "v": [1, 2]}),
        "the message arrives whole"
    );
    let [req] = requests(&p.server).try_into().unwrap();
    assert_eq!(req.op.as_deref(), Some("x"), "the request's op is found");
    p.server.conn.respond(req.id, Ok(&raw(pretty))).unwrap();
    p.drive();
    assert!(
        resolutions(&p.client)[0].answer().is_some(),
        "the answer arrives"
    );
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
    for mode in Protection::MODES {
        let mut p = Setup::seed(3).protection(mode).connected();
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
            assert_eq!(m.get(), v, "{mode:?}: a message body as sent");
            assert_eq!(b1.get(), v, "{mode:?}: a request body as sent");
            assert_eq!(d.get(), format!(r#"{{"v":{v}}}"#), "{mode:?}: ping data");
            p.server.conn.respond(*r1, Ok(&raw(v))).unwrap();
            let err = RemoteError {
                data: Some(v.to_owned()),
                ..RemoteError::new("c", "m")
            };
            p.server.conn.respond(*r2, Err(&err)).unwrap();
            p.drive();
            let [answer, error] = resolutions(&p.client).try_into().unwrap();
            p.client.take_events();
            assert_eq!(answer.answer(), Some(v), "{mode:?}: an answer as sent");
            assert_eq!(
                error.remote_error().and_then(|e| e.data.as_deref()),
                Some(v),
                "{mode:?}: error data as sent"
            );
        }
    }
}
