#![allow(clippy::disallowed_methods)] // tests take one real Instant as the base of virtual time
//! Graceful close (PROTOCOL.md §13.3) in the in-memory pair: what each side
//! may still send while it drains, and what happens to a request that
//! crossed a `close(normal)` in flight.

mod common;

use std::time::{Duration, Instant};

use common::{assert_closed_last, connected, messages, raw, requests, resolutions};
use jsonlink_proto::{
    CloseCode, CloseReason, Config, Connection, ConnectionParams, Event, RemoteError, RequestError,
    SendError, Side,
};

/// The closing side (A, here the server shutting down) keeps a peer request
/// in flight, so it drains; its handler's messages sent meanwhile reach the
/// peer before the answer, and the peer (B) may send messages too. Nothing
/// new is started on either side.
#[test]
fn d3_messages_sent_while_draining_reach_the_peer_both_ways() {
    let mut p = connected();
    let now = p.now;
    let job = p
        .client
        .conn
        .request(now, &raw(r#"{"op":"job"}"#), None)
        .unwrap();
    p.drive();
    let held = requests(&p.server);
    assert_eq!(held.len(), 1);

    p.server.conn.close(now, "server shutting down");
    assert!(matches!(
        p.server.conn.closing_reason(),
        Some(CloseReason::Local { .. })
    ));
    // A: nothing new is started, messages still go out.
    assert_eq!(
        p.server.conn.request(now, &raw("1"), None),
        Err(SendError::Closed)
    );
    assert_eq!(p.server.conn.ping(None), Err(SendError::Closed));
    p.server
        .conn
        .send(&raw(r#"{"op":"progress","pct":50}"#))
        .unwrap();
    p.drive();
    // B got the notice: it drains too, and may send messages.
    assert!(matches!(
        p.client.conn.closing_reason(),
        Some(CloseReason::Remote {
            code: CloseCode::Normal,
            ..
        })
    ));
    assert_eq!(
        p.client.conn.request(now, &raw("2"), None),
        Err(SendError::Closed)
    );
    assert_eq!(p.client.conn.ping(None), Err(SendError::Closed));
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
        .respond(held[0].0, Ok(&raw(r#""finished""#)))
        .unwrap();
    p.drive();

    assert_eq!(
        messages(&p.client),
        [
            r#"{"op":"progress","pct":50}"#,
            r#"{"op":"progress","pct":100}"#,
            r#"{"op":"done"}"#
        ]
    );
    assert_eq!(messages(&p.server), [r#"{"op":"ack"}"#]);
    let r = resolutions(&p.client);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, job);
    assert_eq!(r[0].1.as_ref().map(|b| b.get()), Ok(r#""finished""#));
    // Both ended once drained; once ended, a message is refused.
    assert!(p.server.closed().is_some_and(CloseReason::is_graceful));
    assert!(p.client.closed().is_some_and(CloseReason::is_graceful));
    assert!(p.server.conn.closing_reason().is_none());
    assert_eq!(p.server.conn.send(&raw("3")), Err(SendError::Closed));
    assert_closed_last(&p.client);
    assert_closed_last(&p.server);
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
    let held_by_a = p.client.conn.request(now, &raw("1"), None).unwrap();
    p.drive();
    let held = requests(&p.server);
    p.server.conn.close(now, "going away");
    // B sends before the close reaches it: the two frames cross.
    let crossing = p
        .client
        .conn
        .request(now, &raw(r#"{"op":"x"}"#), None)
        .unwrap();
    p.drive();

    // A saw the request but did not deliver it: no second Request event.
    assert_eq!(requests(&p.server).len(), 1);
    let r = resolutions(&p.client);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].0, crossing);
    assert!(
        matches!(&r[0].1, Err(RequestError::Remote(e)) if e.code == RemoteError::SHUTTING_DOWN),
        "{r:?}"
    );
    assert!(
        p.server.closed().is_none(),
        "still draining the held request"
    );
    p.server.conn.respond(held[0].0, Ok(&raw("10"))).unwrap();
    p.drive();
    let r = resolutions(&p.client);
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].0, held_by_a);
    assert!(r[1].1.is_ok());
    assert!(p.server.closed().is_some_and(CloseReason::is_graceful));
    assert!(p.client.closed().is_some_and(CloseReason::is_graceful));
    assert_eq!(p.server.conn.stats().rejected_requests, 1);
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
    let crossing = p
        .client
        .conn
        .request(now, &raw(r#"{"op":"x"}"#), None)
        .unwrap();
    p.drive();
    assert!(requests(&p.server).is_empty());
    assert!(p.client.closed().is_none(), "B keeps its request open");
    assert!(p.client.conn.closing_reason().is_some());
    // A closes its transport (as the driver does once the core ended).
    p.cut(jsonlink_proto::testing::Who::Server);
    assert_eq!(
        resolutions(&p.client),
        vec![(crossing, Err(RequestError::ConnectionLost))]
    );
    assert!(matches!(
        p.client.events.last(),
        Some(Event::Closed(CloseReason::Remote {
            code: CloseCode::Normal,
            ..
        }))
    ));
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

#[test]
fn graceful_close_with_requests_in_flight() {
    let mut p = connected();
    let now = p.now;
    let a = p.client.conn.request(now, &raw("1"), None).unwrap();
    let b = p.client.conn.request(now, &raw("2"), None).unwrap();
    let s = p.server.conn.request(now, &raw("3"), None).unwrap();
    p.drive();
    p.client.conn.close(now, "bye");
    // Nothing new is started (messages still go out while draining: see
    // tests/closing.rs).
    assert_eq!(
        p.client.conn.request(now, &raw("4"), None),
        Err(SendError::Closed)
    );
    assert_eq!(p.client.conn.ping(None), Err(SendError::Closed));
    p.drive();
    // The server learns of the close; its new requests are refused.
    assert_eq!(
        p.server.conn.request(p.now, &raw("1"), None),
        Err(SendError::Closed)
    );
    let sreq = requests(&p.server);
    // Answer one now; the client answers the server's request.
    p.server.conn.respond(sreq[0].0, Ok(&raw("10"))).unwrap();
    let creq = requests(&p.client);
    p.client.conn.respond(creq[0].0, Ok(&raw("30"))).unwrap();
    p.drive();
    assert!(p.client.closed().is_none(), "still draining request b");
    p.server.conn.respond(sreq[1].0, Ok(&raw("20"))).unwrap();
    p.drive();
    let r = resolutions(&p.client);
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|(_, r)| r.is_ok()));
    assert_eq!(r[0].0, a);
    assert_eq!(r[1].0, b);
    assert_eq!(
        resolutions(&p.server),
        vec![(s, Ok(jsonlink_proto::Payload::from_json("30").unwrap()))]
    );
    assert_eq!(
        p.client.closed(),
        Some(&CloseReason::Local {
            reason: "bye".into()
        })
    );
    assert!(p.server.closed().is_some_and(CloseReason::is_graceful));
    assert_closed_last(&p.client);
    assert_closed_last(&p.server);
}

#[test]
fn close_deadline_fails_unanswered_requests_locally() {
    let mut p = connected();
    let now = p.now;
    let a = p.client.conn.request(now, &raw("1"), None).unwrap();
    p.drive();
    p.client
        .conn
        .close_by(now, "shutdown", now + Duration::from_secs(1));
    p.advance(Duration::from_secs(1));
    assert_eq!(
        resolutions(&p.client),
        vec![(a, Err(RequestError::ClosedLocally))]
    );
    assert_closed_last(&p.client);
}
