#![forbid(unsafe_code)]
#![allow(clippy::disallowed_methods)] // the test takes one real Instant as the base of virtual time
//! Closing (PROTOCOL.md §13.3) in the in-memory pair: a graceful close that
//! drains the requests in flight, what each side may still send while it
//! drains, what happens to a request that crossed a `close(normal)` in
//! flight, the close deadline, and a close before the handshake ended.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use jsonlink_proto::testing::{Peer, Who};
use jsonlink_proto::{
    CloseCode, CloseReason, Config, Connection, ConnectionParams, Event, RemoteError, RequestError,
    Secret, SendError, Side,
};

/// Asserts that `side` of a closing link starts nothing new: a request
/// or a ping is refused as `Closed`.
fn assert_starts_nothing(p: &mut Peer, now: Instant, side: &str) {
    assert_eq!(
        p.conn.request(now, &raw("1"), None),
        Err(SendError::Closed),
        "{side} starts no request"
    );
    assert_eq!(
        p.conn.ping(None),
        Err(SendError::Closed),
        "{side} starts no ping"
    );
}

/// The closing side (A, here the server shutting down) keeps a peer request
/// in flight, so it drains; its handler's messages sent meanwhile reach the
/// peer before the answer, and the peer (B) may send messages too. Nothing
/// new is started on either side.
#[test]
fn d3_messages_sent_while_draining_reach_the_peer_both_ways() {
    let mut p = connected();
    let now = p.now;
    let job = deliver_request(&mut p, Who::Client, r#"{"op":"job"}"#);

    p.server.conn.close(now, "server shutting down");
    assert!(
        matches!(
            p.server.conn.closing_reason(),
            Some(CloseReason::Local { .. })
        ),
        "A drains"
    );
    assert_starts_nothing(&mut p.server, now, "A");
    p.server
        .conn
        .send(&raw(r#"{"op":"progress","pct":50}"#))
        .unwrap();
    p.drive();
    assert!(
        matches!(
            p.client.conn.closing_reason(),
            Some(CloseReason::Remote {
                code: CloseCode::Normal,
                ..
            })
        ),
        "B got the notice and drains too"
    );
    assert_starts_nothing(&mut p.client, now, "B");
    p.client.conn.send(&raw(r#"{"op":"ack"}"#)).unwrap();
    // (Delivered while A still drains; once A has ended it reads no more.)
    p.drive();
    p.server
        .conn
        .send(&raw(r#"{"op":"progress","pct":100}"#))
        .unwrap();
    p.server.conn.send(&raw(r#"{"op":"done"}"#)).unwrap();
    p.server
        .conn
        .respond(job.peer_id, Ok(&raw(r#""finished""#)))
        .unwrap();
    p.drive();

    assert_eq!(
        messages(&p.client),
        [
            r#"{"op":"progress","pct":50}"#,
            r#"{"op":"progress","pct":100}"#,
            r#"{"op":"done"}"#
        ],
        "A's messages reach B, before the answer"
    );
    assert_eq!(messages(&p.server), [r#"{"op":"ack"}"#], "B's reach A");
    assert_eq!(
        resolutions(&p.client),
        [Resolution::answered(job.id, r#""finished""#)],
        "the job is answered"
    );
    assert!(p.server.closed().is_some_and(CloseReason::is_graceful));
    assert!(p.client.closed().is_some_and(CloseReason::is_graceful));
    assert!(
        p.server.conn.closing_reason().is_none(),
        "both ended once drained"
    );
    assert_eq!(
        p.server.conn.send(&raw("3")),
        Err(SendError::Closed),
        "once ended, a message is refused"
    );
    assert_both_closed_last(&p);
}

/// A `req` that crossed A's `close(normal)` (B sent it before the close
/// arrived) while A still drains: A never processes it and answers
/// `shutting_down` at once; B's request fails with that error (so B knows
/// it was not processed), and both end normally.
#[test]
fn a_request_crossing_the_close_is_answered_shutting_down_while_the_closer_drains() {
    let mut p = connected();
    let now = p.now;
    // Keeps A (the server) draining after its close.
    let held = deliver_request(&mut p, Who::Client, "1");
    p.server.conn.close(now, "going away");
    // B sends before the close reaches it: the two frames cross.
    let crossing = send_request(&mut p, Who::Client, r#"{"op":"x"}"#);
    p.drive();

    assert_eq!(
        requests(&p.server).len(),
        1,
        "A saw the crossing request but did not deliver it"
    );
    let [refused]: [Resolution; 1] = resolutions(&p.client).try_into().unwrap();
    assert_eq!(refused.id, crossing, "the crossing request is answered");
    assert!(
        refused
            .remote_error()
            .is_some_and(|e| e.code == RemoteError::SHUTTING_DOWN),
        "with shutting_down: {refused:?}"
    );
    assert!(
        p.server.closed().is_none(),
        "still draining the held request"
    );
    p.server.conn.respond(held.peer_id, Ok(&raw("10"))).unwrap();
    p.drive();
    assert_eq!(
        resolutions(&p.client),
        [refused, Resolution::answered(held.id, "10")],
        "then the held request is answered"
    );
    assert!(p.server.closed().is_some_and(CloseReason::is_graceful));
    assert!(p.client.closed().is_some_and(CloseReason::is_graceful));
    assert_eq!(
        p.server.conn.stats().rejected_requests,
        1,
        "the refusal is counted"
    );
}

/// The same crossing when A had nothing in flight: A ended as soon as it
/// closed and reads no more, so the request is never read, never answered;
/// B keeps it until A's transport ends, then it fails with "connection
/// lost" (B cannot tell it from one A abandoned at its close deadline).
#[test]
fn a_request_crossing_the_close_of_a_side_that_already_ended_fails_connection_lost() {
    let mut p = connected();
    let now = p.now;
    p.server.conn.close(now, "going away");
    assert!(
        p.server.conn.is_closed(),
        "nothing in flight: ended at once"
    );
    let crossing = send_request(&mut p, Who::Client, r#"{"op":"x"}"#);
    p.drive();
    assert!(requests(&p.server).is_empty(), "never read");
    assert!(p.client.closed().is_none(), "B keeps its request open");
    assert!(p.client.conn.closing_reason().is_some(), "B drains");
    // A closes its transport (as the driver does once the core ended).
    p.cut(Who::Server);
    assert_eq!(
        resolutions(&p.client),
        vec![Resolution::failed(crossing, RequestError::ConnectionLost)],
        "the request fails when the transport ends"
    );
    assert!(
        matches!(
            p.client.events.last(),
            Some(Event::Closed(CloseReason::Remote {
                code: CloseCode::Normal,
                ..
            }))
        ),
        "B ends on A's normal close"
    );
}

#[test]
fn graceful_close_with_requests_in_flight() {
    let mut p = connected();
    let now = p.now;
    let a = send_request(&mut p, Who::Client, "1");
    let b = send_request(&mut p, Who::Client, "2");
    let s = send_request(&mut p, Who::Server, "3");
    p.drive();
    p.client.conn.close(now, "bye");
    // Nothing new is started (messages still go out while draining: see
    // d3_messages_sent_while_draining_reach_the_peer_both_ways).
    assert_starts_nothing(&mut p.client, now, "the closing client");
    p.drive();
    assert_eq!(
        p.server.conn.request(p.now, &raw("1"), None),
        Err(SendError::Closed),
        "the server learns of the close: its new requests are refused"
    );
    let [first, second] = request_ids(&p.server).try_into().unwrap();
    // Answer one now; the client answers the server's request.
    p.server.conn.respond(first, Ok(&raw("10"))).unwrap();
    p.client
        .conn
        .respond(last_request(&p.client), Ok(&raw("30")))
        .unwrap();
    p.drive();
    assert!(p.client.closed().is_none(), "still draining request b");
    p.server.conn.respond(second, Ok(&raw("20"))).unwrap();
    p.drive();
    assert_eq!(
        resolutions(&p.client),
        [Resolution::answered(a, "10"), Resolution::answered(b, "20")],
        "both drained requests answered, in order"
    );
    assert_eq!(
        resolutions(&p.server),
        vec![Resolution::answered(s, "30")],
        "and the server's"
    );
    assert_eq!(
        p.client.closed(),
        Some(&CloseReason::Local {
            reason: "bye".into()
        })
    );
    assert!(p.server.closed().is_some_and(CloseReason::is_graceful));
    assert_both_closed_last(&p);
}

#[test]
fn close_deadline_fails_unanswered_requests_locally() {
    let mut p = connected();
    let now = p.now;
    let a = deliver_request(&mut p, Who::Client, "1").id;
    p.client
        .conn
        .close_by(now, "shutdown", now + Duration::from_secs(1));
    p.advance(Duration::from_secs(1));
    assert_eq!(
        resolutions(&p.client),
        vec![Resolution::failed(a, RequestError::ClosedLocally)],
        "failed at the close deadline"
    );
    assert_closed_last(&p.client);
}

#[test]
fn close_handshake_before_auth_ends_at_once() {
    let cfg = Arc::new(Config::new(
        Secret::from_bytes(vec![1]).unwrap(),
        Default::default(),
    ));
    let mut c = Connection::new(
        cfg,
        Side::Client,
        Instant::now(),
        ConnectionParams::default(),
    );
    c.close(Instant::now(), "never mind");
    assert!(c.is_closed(), "nothing to drain: ended at once");
}
