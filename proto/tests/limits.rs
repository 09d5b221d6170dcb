#![allow(clippy::disallowed_methods)] // tests take one real Instant as the base of virtual time
//! What a full table or queue does on the pair: the in-flight request
//! limits of either side and outbound backpressure.

mod common;

use std::time::Instant;

use common::*;
use jsonlink_proto::testing::{Pair, client_config, server_config};
use jsonlink_proto::{Event, RemoteError, RequestError, SendError};

#[test]
fn in_flight_limit_returns_busy() {
    let mut c = client_config(1);
    c.max_requests_in_flight = 3;
    let mut p = Pair::new(Instant::now(), c, server_config(1), vec![], vec![]);
    p.connect();
    let now = p.now;
    for _ in 0..3 {
        p.client.conn.request(now, &raw("1"), None).unwrap();
    }
    assert_eq!(
        p.client.conn.request(now, &raw("1"), None),
        Err(SendError::Busy { limit: 3 })
    );
}

#[test]
fn peer_over_incoming_limit_gets_busy_answers() {
    let mut s = server_config(1);
    s.max_incoming_requests = 2;
    let mut p = Pair::new(Instant::now(), client_config(1), s, vec![], vec![]);
    p.connect();
    let now = p.now;
    let ids: Vec<_> = (0..5)
        .map(|_| p.client.conn.request(now, &raw("1"), None).unwrap())
        .collect();
    p.drive();
    assert_eq!(requests(&p.server).len(), 2);
    let r = resolutions(&p.client);
    assert_eq!(r.len(), 3);
    for (id, res) in &r {
        assert!(ids[2..].contains(id));
        assert!(matches!(res, Err(RequestError::Remote(e)) if e.code == RemoteError::BUSY));
    }
    assert_eq!(p.server.conn.stats().rejected_requests, 3);
    // The refused requests left nothing behind: two in flight, answerable.
    assert_eq!(p.server.conn.incoming_in_flight(), 2);
    for (rid, _, _) in requests(&p.server) {
        p.server.conn.respond(rid, Ok(&raw("2"))).unwrap();
    }
    assert_eq!(p.server.conn.incoming_in_flight(), 0);
    p.drive();
    assert_eq!(resolutions(&p.client).len(), 5);
}

#[test]
fn an_answer_refused_for_backpressure_leaves_the_request_answerable() {
    let mut s = server_config(1);
    s.max_outbound = 2048;
    let mut p = Pair::new(Instant::now(), client_config(1), s, vec![], vec![]);
    p.connect();
    let now = p.now;
    let id = p.client.conn.request(now, &raw("1"), None).unwrap();
    p.drive();
    let (rid, _, _) = requests(&p.server)[0].clone();
    // Fill the server's outbound buffer past its bound.
    let body = raw(&format!("\"{}\"", "x".repeat(3000)));
    p.server.conn.send(&body).unwrap();
    assert_eq!(
        p.server.conn.respond(rid, Ok(&raw("3"))),
        Err(SendError::Blocked)
    );
    assert_eq!(
        p.server.conn.respond_too_large(rid, 9999),
        Err(SendError::Blocked)
    );
    assert_eq!(p.server.conn.incoming_in_flight(), 1);
    p.drive();
    p.server.conn.respond(rid, Ok(&raw("3"))).unwrap();
    assert_eq!(
        p.server.conn.respond(rid, Ok(&raw("3"))),
        Err(SendError::UnknownRequest(rid.0))
    );
    p.drive();
    assert_eq!(resolutions(&p.client).len(), 1);
    assert_eq!(resolutions(&p.client)[0].0, id);
    assert_eq!(p.server.conn.stats().responses_too_large, 0);
}

#[test]
fn backpressure_blocks_then_unblocks() {
    let mut c = client_config(1);
    c.max_outbound = 4096;
    let mut p = Pair::new(Instant::now(), c, server_config(1), vec![], vec![]);
    p.connect();
    let body = raw(&format!("\"{}\"", "x".repeat(1000)));
    let mut sent = 0;
    loop {
        match p.client.conn.send(&body) {
            Ok(()) => sent += 1,
            Err(SendError::Blocked) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!((4..=5).contains(&sent), "{sent}");
    assert!(p.client.conn.outbound_len() < 4096 + 1100);
    p.drive();
    assert!(p.client.events.contains(&Event::SendUnblocked));
    assert_eq!(messages(&p.server).len(), sent);
    p.client.conn.send(&body).unwrap();
}
