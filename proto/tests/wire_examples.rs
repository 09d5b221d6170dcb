#![forbid(unsafe_code)]
//! The wire examples quoted in PROTOCOL.md (§6, §7, §11) are real output:
//! regenerated on the pair and required to appear in the document verbatim.

mod common;

use common::vectors::*;
use common::{close_code, lines, pongs, raw, rewrite, take_output};
use jsonlink_proto::testing::{Pair, Who};
use jsonlink_proto::{
    CloseCode, CloseReason, Event, PeerRequestId, Policy, ProtocolError, RemoteError, RequestError,
    RequestId, Secret,
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

/// The plain session's pair (no channel binding, the server holding at
/// most two requests), its client using `client_secret`.
fn plain_pair(client_secret: Secret) -> Pair {
    vector_pair(
        &[],
        |c| c.secret = client_secret,
        |s| s.max_incoming_requests = 2,
    )
}

/// The lines `who` wrote since the last call, taken from its record.
fn take_log(p: &mut Pair, who: Who) -> Vec<String> {
    let log = p.peer(who).log.as_mut().unwrap();
    let l = lines(log);
    log.clear();
    l
}

/// The plain session of §11.4 (no signing, no sealing) with every
/// application frame: its lines, client's and server's in turn.
fn plain_session() -> Vec<String> {
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
    p.client.conn.ping(Some(&raw(r#"{"load":0.25}"#))).unwrap();
    p.client.conn.ping(None).unwrap();
    p.drive();
    assert_eq!(
        pongs(&p.client),
        1,
        "two pings before the peer writes: one coalesced pong"
    );

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
    assert!(
        p.client.conn.is_closed() && p.server.conn.is_closed(),
        "both ended"
    );
    let refused = |id: RequestId, code: &str| {
        p.client.events.iter().any(|e| {
            matches!(e, Event::RequestFailed { id: i, error: RequestError::Remote(r) }
                if *i == id && r.code == code)
        })
    };
    assert!(refused(held[2], RemoteError::BUSY), "the third is busy");
    assert!(
        refused(late, RemoteError::SHUTTING_DOWN),
        "the crossing one is shutting_down"
    );
    all.extend(take_log(&mut p, Who::Client));
    all.extend(take_log(&mut p, Who::Server));
    all
}

/// A wrong secret: the server answers the client's proof with a close
/// frame and never sends its own proof.
fn wrong_secret() -> Vec<String> {
    let mut p = plain_pair(Secret::from_hex("00").unwrap());
    p.drive();
    let server = take_log(&mut p, Who::Server);
    assert_eq!(server.len(), 2, "a challenge and a close: {server:?}");
    assert!(
        server[1].contains(r#""code":"auth_failed""#),
        "the close is auth_failed"
    );
    let mut all = take_log(&mut p, Who::Client);
    all.extend(server);
    all
}

/// The server's answer to a hello offering only versions it does not
/// speak.
fn version_mismatch() -> Vec<String> {
    let mut p = plain_pair(secret());
    p.inject(
        Who::Server,
        br#"{"t":"hello","versions":[2,3],"nonce":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","node":"node-c1","designation":"vector-client","max_frame":8388608,"sign":"optional","sign_alg":"hmac-sha256","seal":"optional","seal_alg":"aes-256-cbc-hmac-sha256"}
"#,
    );
    lines(&take_output(&mut p.server))
}

/// The server's answer to an application frame before authentication.
fn unauthenticated() -> Vec<String> {
    let mut p = plain_pair(secret());
    p.inject(Who::Server, b"{\"t\":\"msg\",\"d\":1}\n");
    let out = lines(&take_output(&mut p.server));
    assert_eq!(
        close_code(&p.server),
        Some(CloseCode::Unauthenticated),
        "closed unauthenticated"
    );
    out
}

/// A client that rejects `ok` (altered in transit) while signing is on:
/// its plain close reaches a server that already reads wrapped frames,
/// and the server's wrapped `integrity` close reaches a client that has
/// ended (and does not read it). The lines, and the altered `ok`.
fn rejected_ok() -> Vec<String> {
    const OK: &str = r#"{"t":"ok","proof":""#;
    let mut p = vector_pair(&[], |c| c.signing = Policy::Required, |_| {});
    rewrite(&mut p, Who::Server, |s| match s.find(OK) {
        Some(at) => {
            let from = at + OK.len();
            format!("{}{}=\"}}\n{}", &s[..from], "A".repeat(43), &s[from + 46..])
        }
        None => s.to_owned(),
    });
    p.drive();
    assert_eq!(
        p.client.closed(),
        Some(&CloseReason::Protocol(ProtocolError::AuthFailed)),
        "the client rejects the ok"
    );
    assert_eq!(
        p.server.closed(),
        Some(&CloseReason::Protocol(ProtocolError::Integrity)),
        "the server finds the plain close unsigned"
    );
    assert!(
        matches!(p.client.events.as_slice(), [Event::Closed(_)]),
        "the client never authenticated"
    );
    let client = take_log(&mut p, Who::Client);
    let server = take_log(&mut p, Who::Server);
    assert_eq!(
        (client.len(), server.len()),
        (3, 3),
        "{client:?} {server:?}"
    );
    assert!(
        client[2].starts_with(r#"{"t":"close","code":"auth_failed""#),
        "the client's plain close"
    );
    assert!(
        server[2].starts_with(r#"{"q":0,"s":""#) && server[2].contains(r#""code":"integrity""#),
        "the server's wrapped close"
    );
    let mut all = client;
    all.extend(server);
    all.push(format!(r#"{{"t":"ok","proof":"{}="}}"#, "A".repeat(43)));
    all
}

#[test]
fn wire_examples_in_the_document_are_real_output() {
    let mut all = plain_session();
    all.extend(wrong_secret());
    all.extend(version_mismatch());
    all.extend(unauthenticated());
    all.extend(rejected_ok());
    for l in &all {
        show("example", l);
    }
    assert_documented(&all);

    let wrapped = section("### 6.11 ");
    assert!(
        wrapped.contains("session.c2s.0") && wrapped.contains("sealed.line"),
        "§6.11 names the session and the vector it quotes"
    );
    for line in [SESSION_C2S[0], SEALED_LINE] {
        assert!(
            wrapped.lines().any(|l| l == line),
            "§6.11 does not show {line}"
        );
    }
}
