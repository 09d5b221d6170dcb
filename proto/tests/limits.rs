#![forbid(unsafe_code)]
//! What a full table or queue does on the pair: the in-flight request
//! limits of either side and outbound backpressure.

mod common;

use common::*;
use jsonlink_proto::testing::Who;
use jsonlink_proto::{Event, RemoteError, SendError};

#[test]
fn in_flight_limit_returns_busy() {
    let mut p = Setup::seed(1)
        .client(|c| c.max_requests_in_flight = 3)
        .connected();
    for _ in 0..3 {
        send_request(&mut p, Who::Client, "1");
    }
    assert_eq!(
        p.client.conn.request(p.now, &raw("1"), None),
        Err(SendError::Busy { limit: 3 }),
        "a fourth request is refused"
    );
}

#[test]
fn peer_over_incoming_limit_gets_busy_answers() {
    let mut p = Setup::seed(1)
        .server(|s| s.max_incoming_requests = 2)
        .connected();
    let ids: Vec<_> = (0..5)
        .map(|_| send_request(&mut p, Who::Client, "1"))
        .collect();
    p.drive();
    assert_eq!(requests(&p.server).len(), 2, "two delivered");
    let refused = resolutions(&p.client);
    assert_eq!(refused.len(), 3, "three answered at once");
    for r in &refused {
        assert!(ids[2..].contains(&r.id), "the later three: {r:?}");
        assert!(
            r.remote_error()
                .is_some_and(|e| e.code == RemoteError::BUSY),
            "answered busy: {r:?}"
        );
    }
    assert_eq!(p.server.conn.stats().rejected_requests, 3, "and counted");
    assert_eq!(
        p.server.conn.incoming_in_flight(),
        2,
        "the refused requests left nothing behind"
    );
    for id in request_ids(&p.server) {
        p.server.conn.respond(id, Ok(&raw("2"))).unwrap();
    }
    assert_eq!(p.server.conn.incoming_in_flight(), 0, "both answerable");
    p.drive();
    assert_eq!(resolutions(&p.client).len(), 5, "every request resolved");
}

#[test]
fn an_answer_refused_for_backpressure_leaves_the_request_answerable() {
    let mut p = Setup::seed(1).server(|s| s.max_outbound = 2048).connected();
    let req = deliver_request(&mut p, Who::Client, "1");
    // Fill the server's outbound buffer past its bound.
    let body = raw(&format!("\"{}\"", "x".repeat(3000)));
    p.server.conn.send(&body).unwrap();
    assert_eq!(
        p.server.conn.respond(req.peer_id, Ok(&raw("3"))),
        Err(SendError::Blocked),
        "the answer waits for room"
    );
    assert_eq!(
        p.server.conn.respond_too_large(req.peer_id, 9999),
        Err(SendError::Blocked),
        "so does the too-large notice"
    );
    assert_eq!(p.server.conn.incoming_in_flight(), 1, "still pending");
    p.drive();
    p.server.conn.respond(req.peer_id, Ok(&raw("3"))).unwrap();
    assert_eq!(
        p.server.conn.respond(req.peer_id, Ok(&raw("3"))),
        Err(SendError::UnknownRequest(req.peer_id.0)),
        "answered once"
    );
    p.drive();
    assert_eq!(
        resolutions(&p.client),
        [Resolution::answered(req.id, "3")],
        "the answer arrives"
    );
    assert_eq!(
        p.server.conn.stats().responses_too_large,
        0,
        "nothing counted as too large"
    );
}

#[test]
fn backpressure_blocks_then_unblocks() {
    let mut p = Setup::seed(1).client(|c| c.max_outbound = 4096).connected();
    let body = raw(&format!("\"{}\"", "x".repeat(1000)));
    let mut sent = 0;
    loop {
        match p.client.conn.send(&body) {
            Ok(()) => sent += 1,
            Err(SendError::Blocked) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        (4..=5).contains(&sent),
        "blocked once the bound is passed: {sent}"
    );
    assert!(
        p.client.conn.outbound_len() < 4096 + 1100,
        "by at most one frame"
    );
    p.drive();
    assert!(
        p.client.events.contains(&Event::SendUnblocked),
        "unblocked once written"
    );
    assert_eq!(messages(&p.server).len(), sent, "everything sent arrives");
    p.client.conn.send(&body).unwrap();
}
