#![allow(clippy::disallowed_methods)] // tests take one real Instant as the base of virtual time
//! The wire examples quoted in PROTOCOL.md (§6, §7, §11) are real output:
//! regenerated on the pair and required to appear in the document verbatim.

mod common;

use std::time::Instant;

use common::raw;
use common::vectors::*;
use jsonlink_proto::testing::{Pair, Who};
use jsonlink_proto::{
    CloseCode, CloseReason, Event, Identity, PeerRequestId, Policy, ProtocolError, RemoteError,
    RequestError, RequestId, Secret,
};

/// Asserts that each line appears in PROTOCOL.md as a line of its own
/// (leading whitespace aside), e.g. inside a ```json block.
fn assert_documented(lines: &[String]) {
    let doc: Vec<&str> = DOC.lines().map(str::trim_start).collect();
    let missing: Vec<&String> = lines
        .iter()
        .filter(|l| !doc.contains(&l.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "wire examples missing from PROTOCOL.md:\n{}",
        missing
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn plain_pair(client_secret: Secret) -> Pair {
    let mut client = vector_config(
        Identity::new("node-c1", "vector-client"),
        SESSION_CLIENT_SEED,
    );
    client.secret = client_secret;
    let mut server = vector_config(
        Identity::new("node-s1", "vector-server"),
        SESSION_SERVER_SEED,
    );
    server.max_incoming_requests = 2;
    let mut p = Pair::new(Instant::now(), client, server, Vec::new(), Vec::new());
    p.record();
    p
}

fn take_log(p: &mut Pair, who: Who) -> Vec<String> {
    let log = p.peer(who).log.as_mut().unwrap();
    let l = lines(log);
    log.clear();
    l
}

#[test]
fn wire_examples_in_the_document_are_real_output() {
    // A plain session (no signing, no sealing) with every application frame.
    let mut p = plain_pair(secret());
    let now = p.now;
    p.connect();
    let mut all = take_log(&mut p, Who::Client);
    all.extend(take_log(&mut p, Who::Server));

    p.client
        .conn
        .send(&raw(r#"{"op":"chat.post","text":"hello"}"#))
        .unwrap();
    p.client.conn.send(&raw(r#"[1,2,3]"#)).unwrap();
    let add = p
        .client
        .conn
        .request(now, &raw(r#"{"op":"add","a":2,"b":3}"#), None)
        .unwrap();
    let nope = p
        .client
        .conn
        .request(now, &raw(r#"{"op":"nope"}"#), None)
        .unwrap();
    p.drive();
    p.server
        .conn
        .respond(PeerRequestId(add.0), Ok(&raw("5")))
        .unwrap();
    let mut err = RemoteError::new(RemoteError::NO_HANDLER, "no handler for op `nope`");
    err.data = Some(r#"{"op":"nope"}"#.to_owned());
    p.server
        .conn
        .respond(PeerRequestId(nope.0), Err(&err))
        .unwrap();
    // Two pings before the peer writes: one (coalesced) pong.
    p.client.conn.ping(Some(&raw(r#"{"load":0.25}"#))).unwrap();
    p.client.conn.ping(None).unwrap();
    p.drive();
    let pongs = p
        .client
        .events
        .iter()
        .filter(|e| matches!(e, Event::Pong))
        .count();
    assert_eq!(pongs, 1);

    // The server's incoming limit is 2: a third request in flight is `busy`.
    let held: Vec<_> = (0..3)
        .map(|i| {
            p.client
                .conn
                .request(now, &raw(&format!(r#"{{"op":"slow","n":{i}}}"#)), None)
                .unwrap()
        })
        .collect();
    p.drive();
    // The server closes gracefully; a request crossing its close frame gets
    // `shutting_down`, the two it holds are still answered.
    p.server.conn.close(now, "maintenance");
    let late = p
        .client
        .conn
        .request(now, &raw(r#"{"op":"add","a":1,"b":1}"#), None)
        .unwrap();
    p.drive();
    for id in &held[..2] {
        p.server
            .conn
            .respond(PeerRequestId(id.0), Ok(&raw("null")))
            .unwrap();
    }
    p.drive();
    assert!(p.client.conn.is_closed() && p.server.conn.is_closed());
    let refused = |id: RequestId, code: &str| {
        p.client.events.iter().any(|e| {
            matches!(e, Event::RequestFailed { id: i, error: RequestError::Remote(r) }
                if *i == id && r.code == code)
        })
    };
    assert!(refused(held[2], RemoteError::BUSY));
    assert!(refused(late, RemoteError::SHUTTING_DOWN));
    all.extend(take_log(&mut p, Who::Client));
    all.extend(take_log(&mut p, Who::Server));

    // Wrong secret: the server answers the client's proof with a close
    // frame and never sends its own proof.
    let mut p = plain_pair(Secret::from_hex("00").unwrap());
    p.drive();
    let server = take_log(&mut p, Who::Server);
    assert_eq!(server.len(), 2, "{server:?}");
    assert!(server[1].contains(r#""code":"auth_failed""#));
    all.extend(take_log(&mut p, Who::Client));
    all.extend(server);

    // A hello offering only versions the server does not speak.
    let mut p = plain_pair(secret());
    p.inject(
        Who::Server,
        br#"{"t":"hello","versions":[2,3],"nonce":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","node":"node-c1","designation":"vector-client","max_frame":8388608,"sign":"optional","sign_alg":"hmac-sha256","seal":"optional","seal_alg":"aes-256-cbc-hmac-sha256"}
"#,
    );
    let mut out = Vec::new();
    p.server.conn.poll_transmit(&mut out);
    all.extend(lines(&out));

    // An application frame before authentication.
    let mut p = plain_pair(secret());
    p.inject(Who::Server, b"{\"t\":\"msg\",\"d\":1}\n");
    let mut out = Vec::new();
    p.server.conn.poll_transmit(&mut out);
    all.extend(lines(&out));
    assert_eq!(
        p.server.closed().map(|r| r.code()),
        Some(CloseCode::Unauthenticated)
    );

    // A client that rejects `ok` (altered in transit) while signing is on:
    // its plain close reaches a server that already reads wrapped frames,
    // and the server's wrapped `integrity` close reaches a client that has
    // ended (and does not read it).
    let mut client = vector_config(
        Identity::new("node-c1", "vector-client"),
        SESSION_CLIENT_SEED,
    );
    client.signing = Policy::Required;
    let server = vector_config(
        Identity::new("node-s1", "vector-server"),
        SESSION_SERVER_SEED,
    );
    let mut p = Pair::new(Instant::now(), client, server, Vec::new(), Vec::new());
    p.record();
    p.tamper(Who::Server, |b| {
        let s = String::from_utf8(b.clone()).unwrap();
        if let Some(at) = s.find(r#"{"t":"ok","proof":""#) {
            let from = at + r#"{"t":"ok","proof":""#.len();
            *b = format!("{}{}=\"}}\n{}", &s[..from], "A".repeat(43), &s[from + 46..]).into_bytes();
        }
    });
    p.drive();
    assert_eq!(
        p.client.closed(),
        Some(&CloseReason::Protocol(ProtocolError::AuthFailed))
    );
    assert_eq!(
        p.server.closed(),
        Some(&CloseReason::Protocol(ProtocolError::Integrity))
    );
    assert!(matches!(p.client.events.as_slice(), [Event::Closed(_)]));
    let client = take_log(&mut p, Who::Client);
    let server = take_log(&mut p, Who::Server);
    assert_eq!(
        (client.len(), server.len()),
        (3, 3),
        "{client:?} {server:?}"
    );
    assert!(client[2].starts_with(r#"{"t":"close","code":"auth_failed""#));
    assert!(
        server[2].starts_with(r#"{"q":0,"s":""#) && server[2].contains(r#""code":"integrity""#)
    );
    all.extend(client);
    all.extend(server);
    all.push(format!(r#"{{"t":"ok","proof":"{}="}}"#, "A".repeat(43)));

    for l in &all {
        show("example", l);
    }
    assert_documented(&all);

    // §6.11 quotes the session and the vector it names.
    let wrapped = section("### 6.11 ");
    assert!(wrapped.contains("session.c2s.0") && wrapped.contains("sealed.line"));
    for line in [SESSION_C2S[0], SEALED_LINE] {
        assert!(
            wrapped.lines().any(|l| l == line),
            "§6.11 does not show {line}"
        );
    }
}
