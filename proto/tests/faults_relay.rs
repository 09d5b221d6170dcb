#![forbid(unsafe_code)]
//! Fault case X4 of tests/faults/FAULTS.md in the core: a peer that is not
//! a relay (a plain client holding the client secret) sends relay frames,
//! or tries to become a relay.

mod common;

use common::*;
use jsonlink_proto::testing::Who;
use jsonlink_proto::{CloseCode, Event, ProtocolError, Secret};

/// Every relay frame type, as a plain peer might forge it.
const FORGED: [&str; 5] = [
    r#"{"t":"join","c":1,"node":"n","designation":"d","addr":"1.2.3.4:5","max_frame":4096}"#,
    r#"{"t":"leave","c":1,"code":"normal","reason":""}"#,
    r#"{"t":"cmsg","c":1,"d":{"op":"x"}}"#,
    r#"{"t":"creq","c":1,"id":1,"d":{"op":"x"}}"#,
    r#"{"t":"cres","c":1,"id":1,"d":1}"#,
];

#[test]
fn x4_relay_frames_from_a_peer_that_is_not_a_relay_are_refused() {
    let relay_secret = Secret::from_bytes(vec![0x52; 32]).unwrap();
    for line in FORGED {
        // The server allows relays; this peer is a plain client.
        let rs = relay_secret.clone();
        let mut p = Setup::seed(4)
            .server(move |c| c.relay_secrets = vec![rs])
            .connected();
        assert!(!p.server.conn.is_relay(), "a plain client's connection");
        p.inject(Who::Server, format!("{line}\n").as_bytes());
        let t = serde_json::from_str::<serde_json::Value>(line).unwrap()["t"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            protocol_error(&p.server),
            ProtocolError::UnexpectedFrame {
                frame: t,
                state: "established"
            },
            "{line}"
        );
        p.drive();
        assert_eq!(close_code(&p.client), Some(CloseCode::UnexpectedFrame));
        assert!(
            !p.server.events.iter().any(|e| matches!(
                e,
                Event::Joined(_)
                    | Event::ClientMessage { .. }
                    | Event::ClientRequest { .. }
                    | Event::Left { .. }
            )),
            "{line}: nothing of it delivered"
        );
    }
    // Offering the relay role with the client secret fails the proof.
    let mut p = Setup::seed(4)
        .client(|c| c.relay = true)
        .server(move |c| c.relay_secrets = vec![relay_secret])
        .pair();
    p.drive();
    assert_auth_failed(&p, "the relay role with the client secret");
    record(
        "X4",
        "join, leave, cmsg, creq and cres from a plain client to a server that allows relays: Protocol(UnexpectedFrame) each, close unexpected_frame, nothing delivered; the relay role offered with the client secret: AuthFailed",
    );
}
