#![forbid(unsafe_code)]
#![allow(clippy::disallowed_methods)] // the test takes one real Instant as the base of virtual time
//! Fault cases H1, H3–H8 of tests/faults/FAULTS.md: the handshake and
//! authentication under a wrong secret, replays, garbage, downgrades and
//! tampered extension offers.

mod common;

use std::time::Instant;

use common::*;
use jsonlink_proto::testing::{Pair, Who, client_config, server_config};
use jsonlink_proto::{
    CloseCode, CloseReason, Extension, Extensions, Policy, ProtocolError, RemoteError, SendError,
};

#[test]
fn h1_server_sends_no_proof_to_a_failed_client() {
    let mut p = Setup::seed(1).client_secret(b"wrong").recorded();
    p.drive();
    let text = log_text(&p.server);
    assert!(!text.contains(r#""t":"ok""#), "no ok frame: {text}");
    assert!(!text.contains("proof"), "no proof: {text}");
    assert!(
        text.contains(r#""code":"auth_failed""#),
        "the close says why: {text}"
    );
    assert_both_closed_with(&p, CloseCode::AuthFailed, "wrong secret");
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
    let refuses = |p: &Pair, who: Who, f: &str| {
        let peer = if who == Who::Server {
            &p.server
        } else {
            &p.client
        };
        let e = protocol_error(peer);
        assert!(
            matches!(e, ProtocolError::Unauthenticated { .. }),
            "the {who:?} refuses {f}: {e:?}"
        );
        assert_eq!(
            peer.events.len(),
            1,
            "no application event: {:?}",
            peer.events
        );
    };
    for f in frames {
        // The server awaiting a hello, the client awaiting a challenge.
        for (mut p, who) in [(awaiting_hello(), Who::Server), (pair(), Who::Client)] {
            inject_line(&mut p, who, f);
            refuses(&p, who, f);
        }
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
    let log = log_text(&p1.client);
    let old_auth = log
        .lines()
        .find(|l| l.contains(r#""t":"auth""#))
        .expect("auth line");
    // Session 2, another server nonce: the attacker replays the old proof.
    let mut p2 = Pair::new(start, client_config(1), server_config(2), vec![], vec![]);
    let hello = take_output(&mut p2.client);
    p2.inject(Who::Server, &hello);
    take_output(&mut p2.server); // the challenge goes to the attacker
    inject_line(&mut p2, Who::Server, old_auth);
    assert_eq!(
        closed_with(&p2.server),
        CloseReason::Protocol(ProtocolError::AuthFailed),
        "a replayed proof fails"
    );
    assert!(!authenticated(&p2.server), "the server never authenticated");
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
        let mut p = awaiting_hello();
        p.inject(Who::Server, input);
        let e = protocol_error(&p.server);
        assert!(
            matches!(
                e,
                ProtocolError::InvalidJson { .. }
                    | ProtocolError::InvalidUtf8
                    | ProtocolError::NotAnObject
            ),
            "refused on the first line: {input:?}: {e:?}"
        );
    }
    record(
        "H5",
        "HTTP, TLS ClientHello, SSH banner: Protocol(InvalidJson/InvalidUtf8) on the first line; version mismatch: VersionMismatch naming both (pair::h5_version_mismatch_names_both_versions)",
    );
}

#[test]
fn h6_handshake_frame_over_pre_auth_limit() {
    let limit = jsonlink_proto::DEFAULT_PRE_AUTH_MAX_FRAME;
    // A huge "hello" arriving in 1 KiB pieces: closed as soon as it passes the limit.
    let mut p = awaiting_hello();
    let piece = vec![b'a'; 1024];
    let mut fed = 0;
    while !p.server.conn.is_closed() {
        p.inject(Who::Server, &piece);
        fed += piece.len();
        assert!(fed <= limit + 1024, "kept buffering past the limit");
    }
    assert_eq!(
        closed_with(&p.server),
        CloseReason::Protocol(ProtocolError::FrameTooLarge { limit })
    );
    // Before auth, even a complete line over the limit is refused.
    let mut p = pair();
    let mut big = take_output(&mut p.client);
    big.truncate(big.len() - 2); // before `}\n`
    big.extend_from_slice(format!(r#","pad":"{}"}}"#, "p".repeat(limit)).as_bytes());
    big.push(b'\n');
    p.inject(Who::Server, &big);
    assert_eq!(
        closed_with(&p.server),
        CloseReason::Protocol(ProtocolError::FrameTooLarge { limit }),
        "a whole hello over the limit is refused"
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
    let mut p = Setup::seed(1)
        .client(|c| c.signing = Policy::Required)
        .pair();
    p.step();
    let mut text = String::from_utf8(std::mem::take(&mut p.server.in_flight)).unwrap();
    text.push_str(&take_output_text(&mut p.server));
    assert!(text.contains(r#""sign":true"#), "the server signs: {text}");
    let stripped = text.replace(r#""sign":true"#, r#""sign":false"#);
    p.inject(Who::Client, stripped.as_bytes());
    assert!(
        failed_negotiation(&p.client),
        "a stripped feature fails negotiation"
    );

    // An unknown algorithm in the hello.
    let mut p = pair();
    let hello = take_output_text(&mut p.client).replace("aes-256-cbc-hmac-sha256", "rot13");
    p.inject(Who::Server, hello.as_bytes());
    assert!(
        failed_negotiation(&p.server),
        "an unknown algorithm fails negotiation"
    );
    record(
        "H7",
        "stripped feature / unknown algorithm: NegotiationFailed; tampered offer: AuthFailed",
    );
}

#[test]
fn h7_tampered_offer_breaks_the_handshake_mac() {
    // The client prefers signing; a MITM downgrades the offer to "optional"
    // so neither side signs. The transcripts then differ: auth fails.
    let mut p = Setup::seed(1)
        .client(|c| c.signing = Policy::Preferred)
        .pair();
    rewrite(&mut p, Who::Client, |s| {
        s.replace(r#""sign":"preferred""#, r#""sign":"optional""#)
    });
    p.drive();
    assert_eq!(
        close_code(&p.server),
        Some(CloseCode::AuthFailed),
        "the server refuses the proof"
    );
    assert!(!authenticated(&p.client), "the client never authenticated");
}

/// A recorded pair whose client (max_frame 1024) offers and whose server
/// accepts these extensions, before its handshake.
fn ext_pair(client: Extensions, server: Extensions) -> Pair {
    Setup::seed(8)
        .binding(3)
        .client(|c| {
            c.max_frame = 1024;
            c.extensions = client;
        })
        .server(|s| s.extensions = server)
        .recorded()
}

/// An [`ext_pair`] after its handshake.
fn ext_link(client: Extensions, server: Extensions) -> Pair {
    let mut p = ext_pair(client, server);
    p.drive();
    p
}

/// The extensions both sides agreed on, as their `Authenticated` events
/// and their `extensions()` report them (asserted to agree).
fn agreed(p: &Pair) -> Extensions {
    let [client, server] = [&p.client, &p.server].map(|peer| {
        let ext = authentication(peer).extensions;
        assert_eq!(ext, peer.conn.extensions(), "event and getter agree");
        ext
    });
    assert_eq!(client, server, "both sides agree");
    client
}

/// The error the client gets for a request the server answers with 2 KiB
/// (over the client's 1024-byte max_frame), at once (no time passes).
fn too_large_answer(p: &mut Pair) -> RemoteError {
    let req = deliver_request(p, Who::Client, r#"{"op":"echo"}"#);
    let big = raw(&format!("\"{}\"", "y".repeat(2048)));
    let r = p.server.conn.respond(req.peer_id, Ok(&big));
    assert!(
        matches!(r, Err(SendError::ResponseTooLarge { limit: 1024, .. })),
        "respond refuses the answer: {r:?}"
    );
    p.drive();
    let answer = last_resolution(&p.client);
    assert_eq!(answer.id, req.id, "the request is answered at once");
    let Some(e) = answer.remote_error() else {
        panic!("an error answer: {answer:?}")
    };
    e.clone()
}

/// An offer accepted and used: the outcome text.
fn h8_accepted() -> String {
    let offer = r#","ext":["response_too_large"]}"#;
    let mut p = ext_link(Extensions::ALL, Extensions::ALL);
    let both = agreed(&p);
    assert_eq!(both, Extensions::ALL, "accepted");
    let hello = log_text(&p.client);
    let challenge = log_text(&p.server);
    assert!(hello.contains(offer), "the hello offers it: {hello}");
    assert!(
        challenge.contains(offer),
        "the challenge accepts it: {challenge}"
    );
    let e = too_large_answer(&mut p);
    assert_eq!(e.code, RemoteError::RESPONSE_TOO_LARGE, "its code is used");
    assert_eq!(e.data.as_deref(), Some(r#"{"size":2073,"max_frame":1024}"#));
    format!(
        "accepted: both sides {both:?}, a too-large answer is {}",
        e.code
    )
}

/// An offer not accepted (the server allows none), as a version 1 server
/// (which ignores `ext`) declines it too: the same challenge, without
/// `ext`, and only version 1 codes on the wire. The outcome text.
fn h8_declined() -> String {
    let mut p = ext_link(Extensions::ALL, Extensions::NONE);
    let both = agreed(&p);
    assert_eq!(both, Extensions::NONE, "declined");
    assert!(
        !p.client
            .conn
            .extensions()
            .contains(Extension::ResponseTooLarge),
        "the client does not use it"
    );
    let challenge = log_text(&p.server);
    assert!(
        !challenge.contains("ext"),
        "the challenge has no ext: {challenge}"
    );
    let e = too_large_answer(&mut p);
    assert_eq!(e.code, RemoteError::INTERNAL, "a version 1 code instead");
    assert_eq!(e.data, None, "and no data");
    assert!(
        e.message.contains("2073 bytes") && e.message.contains("1024 bytes"),
        "the message names both sizes: {e:?}"
    );
    let server_wire = log_text(&p.server);
    assert!(
        !server_wire.contains("response_too_large"),
        "the code never shows: {server_wire}"
    );
    let code = e.code;
    format!(
        "not accepted / v1 server: challenge without ext, both sides {both:?}, a too-large answer is {code}"
    )
}

/// A version 1 client (no offer: its hello has no `ext`): the outcome text.
fn h8_v1_client() -> String {
    let mut p = ext_link(Extensions::NONE, Extensions::ALL);
    assert_eq!(agreed(&p), Extensions::NONE, "nothing offered");
    assert!(!log_text(&p.client).contains("ext"), "a hello without ext");
    assert!(
        !log_text(&p.server).contains("ext"),
        "a challenge without ext"
    );
    let e = too_large_answer(&mut p);
    assert_eq!(e.code, RemoteError::INTERNAL, "a version 1 code");
    format!("v1 client: no offer, no ext, {}", e.code)
}

#[test]
fn h8_an_accepted_extension_is_used_and_a_declined_one_never_shows() {
    let outcome = [h8_accepted(), h8_declined(), h8_v1_client()];
    // Unknown names in an offer are skipped.
    let mut p = ext_pair(Extensions::ALL, Extensions::ALL);
    let hello = take_output_text(&mut p.client).replace(
        r#"["response_too_large"]"#,
        r#"["relay","response_too_large","x"]"#,
    );
    p.inject(Who::Server, hello.as_bytes());
    let ch = take_output_text(&mut p.server);
    assert!(
        ch.contains(r#","ext":["response_too_large"]}"#),
        "the known name is accepted: {ch}"
    );
    assert!(p.server.closed().is_none(), "unknown names are skipped");
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
        rewrite(&mut p, who, move |s| s.replacen(from, to, 1));
        p.drive();
        for peer in [&p.client, &p.server] {
            assert!(!authenticated(peer), "{case}: {:?}", peer.events);
        }
        assert_auth_failed(&p, case);
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
        let hello = take_output_text(&mut p.client).replace(r#"["response_too_large"]"#, ext);
        p.inject(Who::Server, hello.as_bytes());
        assert_eq!(
            p.server.closed(),
            Some(&CloseReason::Protocol(ProtocolError::InvalidField {
                field: "ext",
                detail
            })),
            "a malformed offer is an invalid field: {ext}"
        );
    }
    let mut p = ext_pair(Extensions::ALL, Extensions::ALL);
    rewrite(&mut p, Who::Client, |s| {
        s.replacen(
            r#""ext":["response_too_large"]"#,
            r#""ext":["response_too_large"],"ext":[]"#,
            1,
        )
    });
    p.drive();
    assert_eq!(
        p.server.closed(),
        Some(&CloseReason::Protocol(ProtocolError::DuplicateField {
            field: "ext"
        })),
        "a duplicated ext member is a duplicated known member"
    );
    // A challenge accepting what the client did not offer, or a name it does
    // not know: the client refuses before sending its proof.
    for (client, ext) in [
        (Extensions::NONE, r#"["response_too_large"]"#),
        (Extensions::ALL, r#"["relay"]"#),
    ] {
        let mut p = ext_pair(client, Extensions::ALL);
        let accepted = format!(r#","seal":false,"ext":{ext}}}"#);
        rewrite(&mut p, Who::Server, move |s| {
            s.replacen(r#","ext":["response_too_large"]"#, "", 1)
                .replacen(r#","seal":false}"#, &accepted, 1)
        });
        p.drive();
        assert!(failed_negotiation(&p.client), "the client refuses {ext}");
        assert!(
            !log_text(&p.client).contains(r#""t":"auth""#),
            "before sending its proof"
        );
    }
}
