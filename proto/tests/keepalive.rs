#![forbid(unsafe_code)]
//! Keepalive and pings on the pair: pings and pongs on a healthy link, ping
//! data, and the keepalive timeout when the peer stops reading.

mod common;

use std::time::Duration;

use common::*;
use jsonlink_proto::testing::Who;
use jsonlink_proto::{CloseReason, RequestError, SendError};

#[test]
fn k1_keepalive_pings_and_timeout() {
    let mut p = connected();
    p.advance(Duration::from_secs(60));
    assert!(
        p.client.closed().is_none() && p.server.closed().is_none(),
        "a minute of keepalives, no close"
    );
    assert!(pongs(&p.client) > 0, "the client's pings were answered");
    assert!(!pings(&p.server).is_empty(), "the server saw them");
    // The server stops reading (its process hangs; TCP stays up).
    let id = send_request_within(&mut p, Who::Client, "1", Duration::from_secs(300));
    p.server.reading = false;
    p.advance(Duration::from_secs(25));
    assert_eq!(p.client.closed(), Some(&CloseReason::KeepaliveTimeout));
    assert!(
        resolutions(&p.client).contains(&Resolution::failed(id, RequestError::ConnectionLost)),
        "the pending request failed ConnectionLost"
    );
    assert_closed_last(&p.client);
}

#[test]
fn ping_with_data_and_pong() {
    let mut p = connected();
    p.client.conn.ping(Some(&raw(r#"{"load":0.5}"#))).unwrap();
    assert_eq!(
        p.client.conn.ping(Some(&raw("5"))),
        Err(SendError::NotAnObject),
        "ping data must be an object"
    );
    p.drive();
    assert_eq!(
        pings(&p.server),
        [Some(r#"{"load":0.5}"#.to_owned())],
        "the data arrives"
    );
    assert_eq!(pongs(&p.client), 1, "the ping is answered");
}

#[test]
fn keepalive_ping_carries_configured_data() {
    let mut p = Setup::seed(1)
        .client(|c| c.keepalive.as_mut().unwrap().data = Some(raw(r#"{"uptime":1}"#)))
        .connected();
    p.advance(Duration::from_secs(16));
    assert!(
        pings(&p.server).contains(&Some(r#"{"uptime":1}"#.to_owned())),
        "the keepalive ping carries it"
    );
}
