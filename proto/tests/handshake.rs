#![allow(clippy::disallowed_methods)] // tests take one real Instant as the base of virtual time
//! The handshake on the pair: a wrong secret, a version mismatch, a
//! mismatched channel binding, the handshake deadline, and commands given
//! before it ends.

mod common;

use std::time::{Duration, Instant};

use common::*;
use jsonlink_proto::testing::{Pair, Who, client_config, server_config};
use jsonlink_proto::{CloseCode, CloseReason, ProtocolError, Secret, SendError};

#[test]
fn h1_wrong_secret_fails_on_both_sides() {
    let mut c = client_config(1);
    c.secret = Secret::from_bytes(b"not the secret".to_vec()).unwrap();
    let mut p = Pair::new(Instant::now(), c, server_config(1), vec![], vec![]);
    p.drive();
    assert_eq!(
        p.server.closed(),
        Some(&CloseReason::Protocol(ProtocolError::AuthFailed))
    );
    assert_eq!(
        p.client.closed().map(CloseReason::code),
        Some(CloseCode::AuthFailed)
    );
    assert_closed_last(&p.client);
    assert_closed_last(&p.server);
}

#[test]
fn h5_version_mismatch_names_both_versions() {
    let mut p = pair();
    // Replace the client's hello with one offering only version 2.
    p.client.conn.poll_transmit(&mut Vec::new());
    p.inject(
        Who::Server,
        br#"{"t":"hello","versions":[2,3],"nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","node":"n","designation":"d","max_frame":8388608,"sign":"optional","sign_alg":"hmac-sha256","seal":"optional","seal_alg":"aes-256-cbc-hmac-sha256"}
"#,
    );
    assert_eq!(
        p.server.closed(),
        Some(&CloseReason::Protocol(ProtocolError::VersionMismatch {
            ours: vec![1],
            theirs: vec![2, 3]
        }))
    );
    let mut wire = Vec::new();
    p.server.conn.poll_transmit(&mut wire);
    let text = String::from_utf8(wire).unwrap();
    assert!(text.contains(r#""code":"version_mismatch""#), "{text}");
    assert!(text.contains(r#""versions":[1]"#), "{text}");
    // The client, fed that close frame, reports a version mismatch naming both.
    p.client.conn.handle_input(p.now, text.as_bytes());
    while let Some(e) = p.client.conn.poll_event() {
        p.client.events.push(e);
    }
    let Some(CloseReason::Remote { code, reason }) = p.client.closed() else {
        panic!("{:?}", p.client.events)
    };
    assert_eq!(*code, CloseCode::VersionMismatch);
    assert!(
        reason.contains("[1]") && reason.contains("[2, 3]"),
        "{reason}"
    );
}

#[test]
fn handshake_deadline_closes_both_roles() {
    let mut p = pair();
    p.client.reading = false; // the client never sees the challenge
    p.advance(Duration::from_secs(9));
    assert!(p.client.closed().is_none());
    p.advance(Duration::from_secs(1));
    assert_eq!(p.client.closed(), Some(&CloseReason::HandshakeTimeout));
    assert_eq!(p.server.closed(), Some(&CloseReason::HandshakeTimeout));
}

#[test]
fn h4_channel_binding_mismatch_fails_auth() {
    let mut p = Pair::new(
        Instant::now(),
        client_config(1),
        server_config(1),
        vec![1; 32],
        vec![2; 32],
    );
    p.drive();
    assert_eq!(
        p.server.closed(),
        Some(&CloseReason::Protocol(ProtocolError::AuthFailed))
    );
    assert_eq!(
        p.client.closed().map(CloseReason::code),
        Some(CloseCode::AuthFailed)
    );
}

#[test]
fn commands_before_auth_are_refused() {
    let mut p = pair();
    assert_eq!(
        p.client.conn.send(&raw("1")),
        Err(SendError::NotAuthenticated)
    );
    assert_eq!(
        p.server.conn.request(p.now, &raw("1"), None),
        Err(SendError::NotAuthenticated)
    );
}
