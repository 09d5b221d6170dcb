#![forbid(unsafe_code)]
//! The handshake on the pair: a wrong secret, a version mismatch, a
//! mismatched channel binding, the handshake deadline, and commands given
//! before it ends.

mod common;

use std::time::Duration;

use common::*;
use jsonlink_proto::testing::Who;
use jsonlink_proto::{CloseCode, CloseReason, ProtocolError, SendError};

#[test]
fn h1_wrong_secret_fails_on_both_sides() {
    let mut p = Setup::seed(1).client_secret(b"not the secret").pair();
    p.drive();
    assert_auth_failed(&p, "a wrong secret");
    assert_both_closed_last(&p);
}

#[test]
fn h5_version_mismatch_names_both_versions() {
    // The client's hello replaced by one offering only versions 2 and 3.
    let mut p = awaiting_hello();
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
        })),
        "the server names both"
    );
    let text = take_output_text(&mut p.server);
    assert!(
        text.contains(r#""code":"version_mismatch""#),
        "the close says why: {text}"
    );
    assert!(
        text.contains(r#""versions":[1]"#),
        "and lists the server's versions: {text}"
    );
    // The client, fed that close frame, reports a mismatch naming both.
    p.client.conn.handle_input(p.now, text.as_bytes());
    poll_events(&mut p.client);
    let Some(CloseReason::Remote { code, reason }) = p.client.closed() else {
        panic!("{:?}", p.client.events)
    };
    assert_eq!(*code, CloseCode::VersionMismatch);
    assert!(
        reason.contains("[1]") && reason.contains("[2, 3]"),
        "the client names both: {reason}"
    );
}

#[test]
fn handshake_deadline_closes_both_roles() {
    let mut p = pair();
    p.client.reading = false; // the client never sees the challenge
    p.advance(Duration::from_secs(9));
    assert!(p.client.closed().is_none(), "still waiting at 9 s");
    p.advance(Duration::from_secs(1));
    assert_eq!(p.client.closed(), Some(&CloseReason::HandshakeTimeout));
    assert_eq!(p.server.closed(), Some(&CloseReason::HandshakeTimeout));
}

#[test]
fn h4_channel_binding_mismatch_fails_auth() {
    let mut p = Setup::seed(1).bindings(1, 2).pair();
    p.drive();
    assert_auth_failed(&p, "another channel binding");
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
