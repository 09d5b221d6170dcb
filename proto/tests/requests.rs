#![forbid(unsafe_code)]
//! Messages and requests both ways on the pair: answers, remote errors,
//! deadlines and late responses; and a connection can move to the thread
//! that drives it.

mod common;

use std::time::Duration;

use common::*;
use jsonlink_proto::testing::Who;
use jsonlink_proto::{Config, Connection, Event, RemoteError, RequestError, SendError};

#[test]
fn happy_path_messages_and_requests_both_ways() {
    let mut p = pair();
    p.drive();
    let client = authentication(&p.client);
    assert_eq!(
        client.peer.node, "server-node",
        "the client knows the server"
    );
    assert_eq!(client.connection_id, 7, "and the connection's id");
    assert_eq!(
        (client.signing, client.encryption),
        (false, false),
        "a plain link"
    );
    let server = authentication(&p.server);
    assert_eq!(
        server.peer.designation, "test-client",
        "the server knows the client"
    );
    assert_eq!(server.connection_id, 7, "and the connection's id");
    p.client.take_events();
    p.server.take_events();

    p.client.conn.send(&raw(r#"{"op":"hello","n":1}"#)).unwrap();
    p.server.conn.send(&raw(r#"[1,2,3]"#)).unwrap();
    let now = p.now;
    let c_req = p
        .client
        .conn
        .request(now, &raw(r#"{"op":"sum","a":[1,2]}"#), None)
        .unwrap();
    let s_req = p
        .server
        .conn
        .request(now, &raw(r#""ping?""#), None)
        .unwrap();
    p.drive();
    assert!(
        matches!(&p.server.events[0], Event::Message { op: Some(op), .. } if op == "hello"),
        "the server gets the message with its op"
    );
    assert_eq!(messages(&p.client), vec!["[1,2,3]"], "the client gets one");
    let [at_server] = requests(&p.server).try_into().unwrap();
    assert_eq!(
        at_server.op.as_deref(),
        Some("sum"),
        "the server's request names its op"
    );
    let [at_client] = requests(&p.client).try_into().unwrap();
    assert_eq!(at_client.op, None, "the client's names none");
    p.server.conn.respond(at_server.id, Ok(&raw("3"))).unwrap();
    p.client
        .conn
        .respond(at_client.id, Ok(&raw(r#""pong!""#)))
        .unwrap();
    p.drive();
    assert_eq!(
        resolutions(&p.client),
        [Resolution::answered(c_req, "3")],
        "the client's request answered"
    );
    assert_eq!(
        resolutions(&p.server),
        [Resolution::answered(s_req, r#""pong!""#)],
        "the server's request answered"
    );
}

#[test]
fn remote_error_response() {
    let mut p = connected();
    let req = deliver_request(&mut p, Who::Client, "{}");
    let mut err = RemoteError::new("bad_request", "missing \"a\"");
    err.data = Some(r#"{"field":"a"}"#.into());
    p.server.conn.respond(req.peer_id, Err(&err)).unwrap();
    assert_eq!(
        p.server.conn.respond(req.peer_id, Err(&err)),
        Err(SendError::UnknownRequest(req.peer_id.0)),
        "answered once"
    );
    p.drive();
    assert_eq!(
        resolutions(&p.client),
        vec![Resolution::failed(req.id, RequestError::Remote(err))],
        "the error arrives whole"
    );
}

#[test]
fn request_until_times_out_at_its_deadline_not_before() {
    let mut p = connected();
    let deadline = p.now + Duration::from_secs(3);
    let id = p.client.conn.request_until(&raw("1"), deadline).unwrap();
    p.drive();
    assert!(
        p.client.conn.poll_timeout().is_some_and(|t| t <= deadline),
        "a timer by the deadline"
    );
    p.advance(Duration::from_millis(2_999));
    assert!(
        resolutions(&p.client).is_empty(),
        "failed before its deadline"
    );
    p.advance(Duration::from_millis(1));
    assert_eq!(
        resolutions(&p.client),
        vec![Resolution::failed(id, RequestError::Timeout)],
        "failed at its deadline"
    );
}

#[test]
fn r2_request_timeout_then_late_response_is_dropped_and_counted() {
    let mut p = connected();
    let id = send_request_within(&mut p, Who::Client, "1", Duration::from_secs(2));
    p.drive();
    let late = last_request(&p.server);
    p.advance(Duration::from_secs(2));
    assert_eq!(
        resolutions(&p.client),
        vec![Resolution::failed(id, RequestError::Timeout)],
        "timed out"
    );
    p.server.conn.respond(late, Ok(&raw("2"))).unwrap();
    p.drive();
    assert_eq!(
        resolutions(&p.client).len(),
        1,
        "late response not delivered"
    );
    assert_eq!(p.client.conn.stats().dropped_responses, 1, "but counted");
    let next = p.client.conn.request(p.now, &raw("1"), None).unwrap();
    assert!(next.0 > id.0, "the next id is fresh");
}

#[test]
fn config_is_send_sync() {
    fn ok<T: Send + Sync>() {}
    ok::<Config>();
    ok::<Connection>();
}
