#![allow(clippy::disallowed_methods)] // tests take one real Instant as the base of virtual time
//! Fault cases H1, H3–H8 of tests/faults/FAULTS.md: the handshake and
//! authentication under a wrong secret, replays, garbage, downgrades and
//! tampered extension offers.

mod common;

use std::time::Instant;

use common::*;
use jsonlink_proto::testing::{Pair, Who, client_config, server_config};
use jsonlink_proto::{
    CloseCode, CloseReason, Event, Extension, Extensions, Policy, ProtocolError, RemoteError,
    RequestError, SendError,
};

#[test]
fn h1_server_sends_no_proof_to_a_failed_client() {
    let mut c = client_config(1);
    c.secret = jsonlink_proto::Secret::from_bytes(b"wrong".to_vec()).unwrap();
    let mut p = Pair::new(Instant::now(), c, server_config(1), vec![], vec![]);
    p.record();
    p.drive();
    let text = String::from_utf8(p.server.log.take().unwrap()).unwrap();
    assert!(!text.contains(r#""t":"ok""#), "{text}");
    assert!(!text.contains("proof"), "{text}");
    assert!(text.contains(r#""code":"auth_failed""#), "{text}");
    assert_eq!(
        p.client.closed().map(CloseReason::code),
        Some(CloseCode::AuthFailed)
    );
    assert_eq!(
        p.server.closed().map(CloseReason::code),
        Some(CloseCode::AuthFailed)
    );
    record(
        "H1",
        format!(
            "server {:?}, client code {}; no proof sent to the client",
            p.server.closed().unwrap(),
            p.client.closed().unwrap().code()
        ),
    );
}

#[test]
fn h3_frames_before_auth_are_unauthenticated() {
    let frames = [
        r#"{"t":"msg","d":{"op":"x"}}"#,
        r#"{"t":"req","id":1,"d":1}"#,
        r#"{"t":"ping"}"#,
        r#"{"t":"ok","proof":"AAAA"}"#,
        r#"{"op":"auth","proof":"x"}"#,
        r#"{"t":"auth","proof":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#,
    ];
    for f in frames {
        // Server awaiting hello.
        let mut p = pair();
        p.client.conn.poll_transmit(&mut Vec::new());
        p.inject(Who::Server, format!("{f}\n").as_bytes());
        let r = closed_with(&p.server);
        assert!(
            matches!(
                r,
                CloseReason::Protocol(ProtocolError::Unauthenticated { .. })
            ),
            "{f}: {r:?}"
        );
        assert_eq!(
            p.server.events.len(),
            1,
            "no application event: {:?}",
            p.server.events
        );
        // Client awaiting the challenge.
        let mut p = pair();
        p.inject(Who::Client, format!("{f}\n").as_bytes());
        assert!(matches!(
            closed_with(&p.client),
            CloseReason::Protocol(ProtocolError::Unauthenticated { .. })
        ));
    }
    record(
        "H3",
        "Protocol(Unauthenticated), then Closed; no application event",
    );
}

#[test]
fn h4_replayed_client_proof_fails() {
    // Session 1: record the client's auth line.
    let start = Instant::now();
    let mut p1 = Pair::seeded(start, 1);
    p1.record();
    p1.connect();
    let log = String::from_utf8(p1.client.log.take().unwrap()).unwrap();
    let old_auth = log
        .lines()
        .find(|l| l.contains(r#""t":"auth""#))
        .map(str::to_owned);
    let old_auth = old_auth.expect("auth line");
    // Session 2, different server nonce: the attacker replays the old proof.
    let mut p2 = Pair::new(start, client_config(1), server_config(2), vec![], vec![]);
    let mut hello = Vec::new();
    p2.client.conn.poll_transmit(&mut hello);
    p2.inject(Who::Server, &hello);
    p2.server.conn.poll_transmit(&mut Vec::new()); // challenge goes to the attacker
    p2.inject(Who::Server, format!("{old_auth}\n").as_bytes());
    assert_eq!(
        closed_with(&p2.server),
        CloseReason::Protocol(ProtocolError::AuthFailed)
    );
    assert!(
        !p2.server
            .events
            .iter()
            .any(|e| matches!(e, Event::Authenticated(_)))
    );
    record(
        "H4",
        format!(
            "replayed proof: {:?} (channel-binding mismatch: see pair::h4_channel_binding_mismatch_fails_auth)",
            p2.server.closed().unwrap()
        ),
    );
}

#[test]
fn h5_garbage_and_http_fail_fast() {
    for input in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n",
        b"SSH-2.0-OpenSSH_9.0\r\n",
    ] {
        let mut p = pair();
        p.client.conn.poll_transmit(&mut Vec::new());
        p.inject(Who::Server, input);
        let r = closed_with(&p.server);
        assert!(
            matches!(
                r,
                CloseReason::Protocol(
                    ProtocolError::InvalidJson { .. }
                        | ProtocolError::InvalidUtf8
                        | ProtocolError::NotAnObject
                )
            ),
            "{input:?}: {r:?}"
        );
    }
    record(
        "H5",
        "HTTP, TLS ClientHello, SSH banner: Protocol(InvalidJson/InvalidUtf8) on the first line; version mismatch: VersionMismatch naming both (pair::h5_version_mismatch_names_both_versions)",
    );
}

#[test]
fn h6_handshake_frame_over_pre_auth_limit() {
    let mut p = pair();
    p.client.conn.poll_transmit(&mut Vec::new());
    let limit = jsonlink_proto::DEFAULT_PRE_AUTH_MAX_FRAME;
    // A huge "hello" arriving in 1 KiB pieces: closed as soon as it passes the limit.
    let piece = vec![b'a'; 1024];
    let mut fed = 0;
    while !p.server.conn.is_closed() {
        p.inject(Who::Server, &piece);
        fed += piece.len();
        assert!(fed <= limit + 1024);
    }
    assert_eq!(
        closed_with(&p.server),
        CloseReason::Protocol(ProtocolError::FrameTooLarge { limit })
    );
    // Before auth, even a complete line over the limit is refused.
    let mut p = pair();
    let mut hello = Vec::new();
    p.client.conn.poll_transmit(&mut hello);
    let mut big = hello.clone();
    big.pop();
    big.pop();
    big.extend_from_slice(format!(r#","pad":"{}"}}"#, "p".repeat(limit)).as_bytes());
    big.push(b'\n');
    p.inject(Who::Server, &big);
    assert_eq!(
        closed_with(&p.server),
        CloseReason::Protocol(ProtocolError::FrameTooLarge { limit })
    );
    record(
        "H6",
        format!(
            "{:?} before buffering past the limit",
            p.server.closed().unwrap()
        ),
    );
}

#[test]
fn h7_stripped_feature_or_unknown_algorithm_is_negotiation_failed() {
    // A MITM rewrites the challenge to turn signing off that the client requires.
    let mut c = client_config(1);
    c.signing = Policy::Required;
    let mut p = Pair::new(Instant::now(), c, server_config(1), vec![], vec![]);
    p.step();
    let mut ch = Vec::new();
    p.server.conn.poll_transmit(&mut ch);
    let mut text = String::from_utf8(std::mem::take(&mut p.server.in_flight)).unwrap();
    text.push_str(&String::from_utf8(ch).unwrap());
    assert!(text.contains(r#""sign":true"#), "{text}");
    let stripped = text.replace(r#""sign":true"#, r#""sign":false"#);
    p.inject(Who::Client, stripped.as_bytes());
    assert!(matches!(
        closed_with(&p.client),
        CloseReason::Protocol(ProtocolError::NegotiationFailed { .. })
    ));

    // An unknown algorithm in the hello.
    let mut p = pair();
    let mut hello = Vec::new();
    p.client.conn.poll_transmit(&mut hello);
    let h = String::from_utf8(hello)
        .unwrap()
        .replace("aes-256-cbc-hmac-sha256", "rot13");
    p.inject(Who::Server, h.as_bytes());
    assert!(matches!(
        closed_with(&p.server),
        CloseReason::Protocol(ProtocolError::NegotiationFailed { .. })
    ));
    record(
        "H7",
        "stripped feature / unknown algorithm: NegotiationFailed; tampered offer: AuthFailed",
    );
}

#[test]
fn h7_tampered_offer_breaks_the_handshake_mac() {
    // The client prefers signing; a MITM downgrades the offer to "optional"
    // so neither side signs. The transcripts then differ: auth fails.
    let mut c = client_config(1);
    c.signing = Policy::Preferred;
    let mut p = Pair::new(Instant::now(), c, server_config(1), vec![], vec![]);
    p.tamper(Who::Client, |b| {
        let s = String::from_utf8(b.clone()).unwrap();
        *b = s
            .replace(r#""sign":"preferred""#, r#""sign":"optional""#)
            .into_bytes();
    });
    p.drive();
    assert_eq!(
        p.server.closed().map(CloseReason::code),
        Some(CloseCode::AuthFailed)
    );
    assert!(
        !p.client
            .events
            .iter()
            .any(|e| matches!(e, Event::Authenticated(_)))
    );
}

/// A pair whose client (max_frame 1024) and server offer or accept these
/// extensions, recorded and connected.
fn ext_pair(client: Extensions, server: Extensions) -> Pair {
    let mut c = client_config(8);
    c.max_frame = 1024;
    c.extensions = client;
    let mut s = server_config(8);
    s.extensions = server;
    let mut p = Pair::new(Instant::now(), c, s, vec![3; 32], vec![3; 32]);
    p.record();
    p
}

/// Both sides' handshake outcome as (client, server) extension sets.
fn agreed(p: &Pair) -> (Extensions, Extensions) {
    let ext = |peer: &jsonlink_proto::testing::Peer| match peer.events.first() {
        Some(Event::Authenticated(a)) => {
            assert_eq!(
                a.extensions,
                peer.conn.extensions(),
                "event and getter agree"
            );
            a.extensions
        }
        other => panic!("not authenticated: {other:?}"),
    };
    (ext(&p.client), ext(&p.server))
}

/// The error the client gets for a request the server answers with 2 KiB
/// (over the client's 1024-byte max_frame), at once (no time passes).
fn too_large_answer(p: &mut Pair) -> RemoteError {
    let now = p.now;
    let id = p
        .client
        .conn
        .request(now, &raw(r#"{"op":"echo"}"#), None)
        .unwrap();
    p.drive();
    let (rid, _, _) = requests(&p.server).last().cloned().unwrap();
    let big = raw(&format!("\"{}\"", "y".repeat(2048)));
    let r = p.server.conn.respond(rid, Ok(&big));
    assert!(
        matches!(r, Err(SendError::ResponseTooLarge { limit: 1024, .. })),
        "{r:?}"
    );
    p.drive();
    match resolutions(&p.client).last() {
        Some((i, Err(RequestError::Remote(e)))) if *i == id => e.clone(),
        other => panic!("{other:?}"),
    }
}

fn log_text(p: &jsonlink_proto::testing::Peer) -> String {
    String::from_utf8(p.log.clone().unwrap()).unwrap()
}

#[test]
fn h8_an_accepted_extension_is_used_and_a_declined_one_never_shows() {
    let rtl = Extension::ResponseTooLarge;
    let mut outcome = Vec::new();
    // Offered and accepted.
    let mut p = ext_pair(Extensions::ALL, Extensions::ALL);
    p.drive();
    assert_eq!(agreed(&p), (Extensions::ALL, Extensions::ALL));
    let hello = log_text(&p.client);
    let challenge = log_text(&p.server);
    assert!(
        hello.contains(r#","ext":["response_too_large"]}"#),
        "{hello}"
    );
    assert!(
        challenge.contains(r#","ext":["response_too_large"]}"#),
        "{challenge}"
    );
    let e = too_large_answer(&mut p);
    assert_eq!(e.code, RemoteError::RESPONSE_TOO_LARGE);
    assert_eq!(e.data.as_deref(), Some(r#"{"size":2073,"max_frame":1024}"#));
    outcome.push(format!(
        "accepted: both sides {:?}, a too-large answer is {}",
        Extensions::ALL,
        e.code
    ));

    // Offered, not accepted (the server allows none), and offered to a
    // version 1 server, which ignores `ext`: the same challenge, without
    // `ext`, and only version 1 codes on the wire.
    let mut p = ext_pair(Extensions::ALL, Extensions::NONE);
    p.drive();
    assert_eq!(agreed(&p), (Extensions::NONE, Extensions::NONE));
    assert!(!p.client.conn.extensions().contains(rtl));
    let challenge = log_text(&p.server);
    assert!(!challenge.contains("ext"), "{challenge}");
    let e = too_large_answer(&mut p);
    assert_eq!(e.code, RemoteError::INTERNAL);
    assert_eq!(e.data, None);
    assert!(
        e.message.contains("2073 bytes") && e.message.contains("1024 bytes"),
        "{e:?}"
    );
    let server_wire = log_text(&p.server);
    assert!(!server_wire.contains("response_too_large"), "{server_wire}");
    outcome.push(format!(
        "not accepted / v1 server: challenge without ext, both sides {:?}, a too-large answer is {}",
        Extensions::NONE,
        e.code
    ));

    // A version 1 client (no offer: its hello has no `ext`).
    let mut p = ext_pair(Extensions::NONE, Extensions::ALL);
    p.drive();
    assert_eq!(agreed(&p), (Extensions::NONE, Extensions::NONE));
    assert!(!log_text(&p.client).contains("ext"));
    assert!(!log_text(&p.server).contains("ext"));
    let e = too_large_answer(&mut p);
    assert_eq!(e.code, RemoteError::INTERNAL);
    outcome.push(format!("v1 client: no offer, no ext, {}", e.code));

    // Unknown names in an offer are skipped.
    let mut p = ext_pair(Extensions::ALL, Extensions::ALL);
    let mut hello = Vec::new();
    p.client.conn.poll_transmit(&mut hello);
    let hello = String::from_utf8(hello).unwrap().replace(
        r#"["response_too_large"]"#,
        r#"["relay","response_too_large","x"]"#,
    );
    p.inject(Who::Server, hello.as_bytes());
    let mut ch = Vec::new();
    p.server.conn.poll_transmit(&mut ch);
    let ch = String::from_utf8(ch).unwrap();
    assert!(ch.contains(r#","ext":["response_too_large"]}"#), "{ch}");
    assert!(p.server.closed().is_none());
    record("H8", outcome.join("; ") + "; " + &h8_tampering());
}

/// Tampering with the offer or the answer to it: the transcripts differ,
/// so the handshake fails on the proof. Returns the outcome text.
fn h8_tampering() -> String {
    let strip = r#","ext":["response_too_large"]"#;
    let cases: [(&str, Extensions, Who, &str, &str); 3] = [
        (
            "offer stripped from hello",
            Extensions::ALL,
            Who::Client,
            strip,
            "",
        ),
        (
            "answer stripped from challenge",
            Extensions::ALL,
            Who::Server,
            strip,
            "",
        ),
        (
            "answer added to challenge",
            Extensions::NONE,
            Who::Server,
            r#","seal":false}"#,
            r#","seal":false,"ext":["response_too_large"]}"#,
        ),
    ];
    let mut seen = Vec::new();
    for (case, server, who, from, to) in cases {
        let mut p = ext_pair(Extensions::ALL, server);
        let (from, to) = (from.to_owned(), to.to_owned());
        p.tamper(who, move |b| {
            let s = String::from_utf8(b.clone()).unwrap();
            *b = s.replacen(&from, &to, 1).into_bytes();
        });
        p.drive();
        for peer in [&p.client, &p.server] {
            assert!(
                !peer
                    .events
                    .iter()
                    .any(|e| matches!(e, Event::Authenticated(_))),
                "{case}: {:?}",
                peer.events
            );
        }
        // The server rejects the client's proof (its transcript differs).
        assert_eq!(
            p.server.closed(),
            Some(&CloseReason::Protocol(ProtocolError::AuthFailed)),
            "{case}"
        );
        assert_eq!(
            p.client.closed().map(CloseReason::code),
            Some(CloseCode::AuthFailed),
            "{case}"
        );
        seen.push(case);
    }
    format!("tampered ({}): AuthFailed", seen.join(", "))
}

#[test]
fn h8_malformed_ext_lists_are_refused() {
    // In a hello: not a list, a non-string entry, too many entries.
    let many = format!("[{}]", vec![r#""x""#; 33].join(","));
    for (ext, detail) in [
        (r#""response_too_large""#, "expected a list of strings"),
        ("[1]", "expected a list of strings"),
        ("null", "expected a list of strings"),
        (many.as_str(), "too many entries"),
    ] {
        let mut p = ext_pair(Extensions::ALL, Extensions::ALL);
        let mut hello = Vec::new();
        p.client.conn.poll_transmit(&mut hello);
        let h = String::from_utf8(hello)
            .unwrap()
            .replace(r#"["response_too_large"]"#, ext);
        p.inject(Who::Server, h.as_bytes());
        assert_eq!(
            p.server.closed(),
            Some(&CloseReason::Protocol(ProtocolError::InvalidField {
                field: "ext",
                detail
            })),
            "{ext}"
        );
    }
    // A duplicated `ext` member is a duplicated known member.
    let mut p = ext_pair(Extensions::ALL, Extensions::ALL);
    p.tamper(Who::Client, |b| {
        let s = String::from_utf8(b.clone()).unwrap();
        *b = s
            .replacen(
                r#""ext":["response_too_large"]"#,
                r#""ext":["response_too_large"],"ext":[]"#,
                1,
            )
            .into_bytes();
    });
    p.drive();
    assert_eq!(
        p.server.closed(),
        Some(&CloseReason::Protocol(ProtocolError::DuplicateField {
            field: "ext"
        }))
    );
    // A challenge accepting what the client did not offer, or a name it does
    // not know: the client refuses before sending its proof.
    for (client, ext) in [
        (Extensions::NONE, r#"["response_too_large"]"#),
        (Extensions::ALL, r#"["relay"]"#),
    ] {
        let mut p = ext_pair(client, Extensions::ALL);
        let ext = ext.to_owned();
        p.tamper(Who::Server, move |b| {
            let s = String::from_utf8(b.clone()).unwrap();
            *b = s
                .replacen(r#","ext":["response_too_large"]"#, "", 1)
                .replacen(
                    r#","seal":false}"#,
                    &format!(r#","seal":false,"ext":{ext}}}"#),
                    1,
                )
                .into_bytes();
        });
        p.drive();
        assert!(
            matches!(
                p.client.closed(),
                Some(CloseReason::Protocol(
                    ProtocolError::NegotiationFailed { .. }
                ))
            ),
            "{:?}",
            p.client.events
        );
        assert!(!log_text(&p.client).contains(r#""t":"auth""#));
    }
}
