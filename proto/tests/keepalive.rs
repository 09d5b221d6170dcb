#![allow(clippy::disallowed_methods)] // tests take one real Instant as the base of virtual time
//! Keepalive and pings on the pair: pings and pongs on a healthy link, ping
//! data, and the keepalive timeout when the peer stops reading.

mod common;

use std::time::{Duration, Instant};

use common::*;
use jsonlink_proto::testing::{Pair, client_config, server_config};
use jsonlink_proto::{CloseReason, Event, RequestError, SendError};

#[test]
fn k1_keepalive_pings_and_timeout() {
    let mut p = connected();
    // Healthy: a minute of keepalives, no close.
    p.advance(Duration::from_secs(60));
    assert!(p.client.closed().is_none() && p.server.closed().is_none());
    assert!(p.client.events.iter().any(|e| matches!(e, Event::Pong)));
    assert!(
        p.server
            .events
            .iter()
            .any(|e| matches!(e, Event::Ping { .. }))
    );
    // The server stops reading (its process hangs; TCP stays up).
    let now = p.now;
    let id = p
        .client
        .conn
        .request(now, &raw("1"), Some(Duration::from_secs(300)))
        .unwrap();
    p.server.reading = false;
    p.advance(Duration::from_secs(25));
    assert_eq!(p.client.closed(), Some(&CloseReason::KeepaliveTimeout));
    assert!(resolutions(&p.client).contains(&(id, Err(RequestError::ConnectionLost))));
    assert_closed_last(&p.client);
}

#[test]
fn ping_with_data_and_pong() {
    let mut p = connected();
    p.client.conn.ping(Some(&raw(r#"{"load":0.5}"#))).unwrap();
    assert_eq!(
        p.client.conn.ping(Some(&raw("5"))),
        Err(SendError::NotAnObject)
    );
    p.drive();
    let data = p.server.events.iter().find_map(|e| match e {
        Event::Ping { data } => data.clone(),
        _ => None,
    });
    assert_eq!(data.unwrap().get(), r#"{"load":0.5}"#);
    assert!(p.client.events.contains(&Event::Pong));
}

#[test]
fn keepalive_ping_carries_configured_data() {
    let mut c = client_config(1);
    c.keepalive.as_mut().unwrap().data = Some(raw(r#"{"uptime":1}"#));
    let mut p = Pair::new(Instant::now(), c, server_config(1), vec![], vec![]);
    p.connect();
    p.advance(Duration::from_secs(16));
    assert!(p.server.events.iter().any(|e| matches!(e,
        Event::Ping { data: Some(d) } if d.get() == r#"{"uptime":1}"#)));
}
