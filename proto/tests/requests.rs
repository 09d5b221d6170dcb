#![allow(clippy::disallowed_methods)] // tests take one real Instant as the base of virtual time
//! Messages and requests both ways on the pair: answers, remote errors,
//! deadlines and late responses.

mod common;

use std::time::Duration;

use common::*;
use jsonlink_proto::{Config, Connection, Event, RemoteError, RequestError, SendError};

#[test]
fn happy_path_messages_and_requests_both_ways() {
    let mut p = pair();
    p.drive();
    let Some(Event::Authenticated(a)) = p.client.events.first().cloned() else {
        panic!("{:?}", p.client.events)
    };
    assert_eq!(a.peer.node, "server-node");
    assert_eq!(a.connection_id, 7);
    assert_eq!((a.signing, a.encryption), (false, false));
    let Some(Event::Authenticated(b)) = p.server.events.first().cloned() else {
        panic!()
    };
    assert_eq!(b.peer.designation, "test-client");
    assert_eq!(b.connection_id, 7);
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
    assert!(matches!(&p.server.events[0], Event::Message { op: Some(op), .. } if op == "hello"));
    assert_eq!(messages(&p.client), vec!["[1,2,3]"]);
    let sr = requests(&p.server);
    assert_eq!(sr.len(), 1);
    assert_eq!(sr[0].1.as_deref(), Some("sum"));
    let cr = requests(&p.client);
    assert_eq!(cr[0].1, None);
    p.server.conn.respond(sr[0].0, Ok(&raw("3"))).unwrap();
    p.client
        .conn
        .respond(cr[0].0, Ok(&raw(r#""pong!""#)))
        .unwrap();
    p.drive();
    let r = resolutions(&p.client);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, c_req);
    assert_eq!(r[0].1.as_ref().unwrap().get(), "3");
    let r = resolutions(&p.server);
    assert_eq!(
        (r[0].0, r[0].1.as_ref().unwrap().get()),
        (s_req, r#""pong!""#)
    );
}

#[test]
fn remote_error_response() {
    let mut p = connected();
    let now = p.now;
    let id = p.client.conn.request(now, &raw("{}"), None).unwrap();
    p.drive();
    let (rid, _, _) = requests(&p.server)[0].clone();
    let mut err = RemoteError::new("bad_request", "missing \"a\"");
    err.data = Some(r#"{"field":"a"}"#.into());
    p.server.conn.respond(rid, Err(&err)).unwrap();
    assert_eq!(
        p.server.conn.respond(rid, Err(&err)),
        Err(SendError::UnknownRequest(rid.0))
    );
    p.drive();
    assert_eq!(
        resolutions(&p.client),
        vec![(id, Err(RequestError::Remote(err)))]
    );
}

#[test]
fn request_until_times_out_at_its_deadline_not_before() {
    let mut p = connected();
    let deadline = p.now + Duration::from_secs(3);
    let id = p.client.conn.request_until(&raw("1"), deadline).unwrap();
    p.drive();
    assert!(p.client.conn.poll_timeout().is_some_and(|t| t <= deadline));
    p.advance(Duration::from_millis(2_999));
    assert!(
        resolutions(&p.client).is_empty(),
        "failed before its deadline"
    );
    p.advance(Duration::from_millis(1));
    assert_eq!(
        resolutions(&p.client),
        vec![(id, Err(RequestError::Timeout))]
    );
}

#[test]
fn r2_request_timeout_then_late_response_is_dropped_and_counted() {
    let mut p = connected();
    let now = p.now;
    let id = p
        .client
        .conn
        .request(now, &raw("1"), Some(Duration::from_secs(2)))
        .unwrap();
    p.drive();
    let (rid, _, _) = requests(&p.server)[0].clone();
    p.advance(Duration::from_secs(2));
    assert_eq!(
        resolutions(&p.client),
        vec![(id, Err(RequestError::Timeout))]
    );
    p.server.conn.respond(rid, Ok(&raw("2"))).unwrap();
    p.drive();
    assert_eq!(
        resolutions(&p.client).len(),
        1,
        "late response not delivered"
    );
    assert_eq!(p.client.conn.stats().dropped_responses, 1);
    // The next id is fresh.
    let id2 = p.client.conn.request(p.now, &raw("1"), None).unwrap();
    assert!(id2.0 > id.0);
}

#[test]
fn config_is_send_sync() {
    fn ok<T: Send + Sync>() {}
    ok::<Config>();
    ok::<Connection>();
}
