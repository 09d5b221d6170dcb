#![forbid(unsafe_code)]
//! The full sessions of PROTOCOL.md §17 (the signed session and the two
//! extension sessions of §17.7), replayed on the pair and compared line by
//! line with the documented vectors.

mod common;

use std::collections::BTreeMap;

use common::vectors::*;
use common::{Resolution, deliver_request, lines, raw, resolutions};
use jsonlink_proto::crypto::{self, SessionKeys};
use jsonlink_proto::testing::Who;
use jsonlink_proto::{
    ClientId, CloseCode, CloseReason, Event, Extensions, Identity, PeerRequestId, Policy,
    RemoteError, RequestError, RequestId, SendError, SignAlg,
};

#[test]
fn full_signed_session() {
    let cb = channel_binding();
    let mut p = vector_pair(&cb, |c| c.signing = Policy::Required, |_| {});
    p.drive();
    for peer in [&p.client, &p.server] {
        let [Event::Authenticated(a)] = peer.events.as_slice() else {
            panic!("{:?}", peer.events)
        };
        assert!(a.signing && !a.encryption, "signed, not sealed");
        assert_eq!(a.sign_alg, Some(SignAlg::Aes256Gmac), "with GMAC");
        assert_eq!(a.connection_id, 7);
    }

    let now = p.now;
    let add = deliver_request(&mut p, Who::Client, r#"{"op":"add","a":2,"b":3}"#);
    p.server.conn.respond(add.peer_id, Ok(&raw("5"))).unwrap();
    p.client
        .conn
        .send(&raw(r#"{"op":"log","text":"hi"}"#))
        .unwrap();
    p.client.conn.ping(None).unwrap();
    p.drive();
    assert_eq!(
        resolutions(&p.client),
        [Resolution::answered(add.id, "5")],
        "add answered"
    );
    p.client.conn.close(now, "bye");
    p.drive();
    assert!(
        p.client.conn.is_closed() && p.server.conn.is_closed(),
        "both ended"
    );

    let c = lines(p.client.log.as_deref().unwrap());
    let s = lines(p.server.log.as_deref().unwrap());
    for (name, l) in ["session.hello", "session.auth"].iter().zip(&c) {
        show(name, l);
    }
    for (name, l) in ["session.challenge", "session.ok"].iter().zip(&s) {
        show(name, l);
    }
    for (i, l) in c.iter().skip(2).enumerate() {
        show(&format!("session.c2s.{i}"), l);
    }
    for (i, l) in s.iter().skip(2).enumerate() {
        show(&format!("session.s2c.{i}"), l);
    }
    if let (Some(h), Some(ch)) = (c.first(), s.first()) {
        show(
            "session.transcript_hash",
            &hex::encode(crypto::transcript_hash(h.as_bytes(), ch.as_bytes(), &cb)),
        );
    }
    let mut want_c = vec![SESSION_HELLO, SESSION_AUTH];
    want_c.extend(SESSION_C2S);
    let mut want_s = vec![SESSION_CHALLENGE, SESSION_OK];
    want_s.extend(SESSION_S2C);
    assert_eq!(c, want_c, "the client wrote session.hello, .auth, .c2s.*");
    assert_eq!(s, want_s, "the server wrote session.challenge, .ok, .s2c.*");

    let th = crypto::transcript_hash(SESSION_HELLO.as_bytes(), SESSION_CHALLENGE.as_bytes(), &cb);
    assert_eq!(
        hex::encode(th),
        SESSION_TRANSCRIPT_HASH,
        "session.transcript_hash"
    );
    assert_eq!(SESSION_AUTH, auth_line(&th), "the documented client proof");
    assert_eq!(SESSION_OK, ok_line(&th), "the documented server proof");
    let keys = SessionKeys::derive(&secret(), &th);
    for (dir, key, frames) in [
        ("c2s", &keys.c2s.mac, &SESSION_C2S[..]),
        ("s2c", &keys.s2c.mac, &SESSION_S2C[..]),
    ] {
        for (i, line) in frames.iter().enumerate() {
            let (seq, _) = crypto::open_signed(SignAlg::Aes256Gmac, key, line.as_bytes())
                .unwrap_or_else(|e| panic!("{dir} frame {i}: {e}"));
            assert_eq!(
                seq, i as u64,
                "every frame after the handshake signed, numbered from 0 per direction: {dir} frame {i}"
            );
        }
    }
}

/// The extension sessions of §17.7: the client (max_frame 1024) offers
/// `response_too_large`; the server accepts it (`accept`) or accepts
/// nothing, as a version 1 server; its answer of 2000 bytes is too large
/// and replaced by the error answer the agreement calls for. Returns the
/// session's lines by the suffix of their vector names.
fn ext_session(accept: bool) -> Vec<(&'static str, String)> {
    let cb = channel_binding();
    let mut p = vector_pair(
        &cb,
        |c| c.max_frame = 1024,
        |s| {
            if !accept {
                s.extensions = Extensions::NONE;
            }
        },
    );
    p.connect();
    let ext = if accept {
        Extensions::ALL
    } else {
        Extensions::NONE
    };
    assert_eq!(p.client.conn.extensions(), ext, "the client's agreement");
    assert_eq!(p.server.conn.extensions(), ext, "the server's agreement");
    let echo = deliver_request(&mut p, Who::Client, r#"{"op":"echo","n":2000}"#);
    let answer = raw(&format!("\"{}\"", "x".repeat(1998)));
    assert_eq!(
        p.server.conn.respond(echo.peer_id, Ok(&answer)),
        Err(SendError::ResponseTooLarge {
            size: 2023,
            limit: 1024
        }),
        "the answer is too large"
    );
    p.drive();
    let want = if accept {
        RemoteError::RESPONSE_TOO_LARGE
    } else {
        RemoteError::INTERNAL
    };
    assert!(
        matches!(
            p.client.events.as_slice(),
            [Event::RequestFailed { id, error: RequestError::Remote(e) }] if *id == echo.id && e.code == want
        ),
        "the requester gets {want}: {:?}",
        p.client.events
    );
    let c = lines(p.client.log.as_deref().unwrap());
    let s = lines(p.server.log.as_deref().unwrap());
    let [hello, auth, req] = <[String; 3]>::try_from(c).unwrap();
    let [challenge, ok, res] = <[String; 3]>::try_from(s).unwrap();
    let th = crypto::transcript_hash(hello.as_bytes(), challenge.as_bytes(), &cb);
    vec![
        ("hello", hello),
        ("challenge", challenge),
        ("transcript_hash", hex::encode(th)),
        ("auth", auth),
        ("ok", ok),
        ("req", req),
        ("res", res),
    ]
}

#[test]
fn extension_sessions() {
    for (accept, want) in [(true, &EXT_ACCEPTED), (false, &EXT_DECLINED)] {
        let got = ext_session(accept);
        let case = if accept {
            "ext_accepted"
        } else {
            "ext_declined"
        };
        for (k, g) in &got {
            show(&format!("{case}.{k}"), g);
        }
        for ((k, g), (wk, w)) in got.iter().zip(want.iter()) {
            assert_eq!((k, g.as_str()), (wk, *w), "{case}.{k}");
        }
        let v: BTreeMap<_, _> = want.iter().copied().collect();
        let th = hex32(v["transcript_hash"]);
        assert_eq!(
            v["auth"],
            auth_line(&th),
            "{case}: the documented client proof"
        );
        assert_eq!(v["ok"], ok_line(&th), "{case}: the documented server proof");
        assert_eq!(
            v["res"].contains("response_too_large"),
            accept,
            "{case}: without the extension the requester never sees its code"
        );
        assert_eq!(
            v["challenge"].contains(r#""ext""#),
            accept,
            "{case}: the challenge accepts only when accepting"
        );
    }
    assert_eq!(
        EXT_ACCEPTED[0], EXT_DECLINED[0],
        "both hellos are the same offer"
    );
}

/// The relay session of §17.8: a relay (the vector client, with the
/// relay secret) and a server that allows relays; two clients joined, a
/// request from each with the same id, answered out of order; a message
/// and a request from the server to one client each; the second client
/// leaving while the server's request to it is in flight, and a message
/// for it crossing its `leave`, dropped by the relay. Returns the lines by
/// the suffix of their vector names.
fn relay_session() -> Vec<(String, String)> {
    let cb = channel_binding();
    let mut p = vector_pair(
        &cb,
        |c| {
            c.relay = true;
            c.secret = relay_secret();
        },
        |s| s.relay_secrets = vec![relay_secret()],
    );
    p.connect();
    assert!(p.client.conn.is_relay() && p.server.conn.is_relay());
    let a = p
        .client
        .conn
        .join(
            &Identity::new("node-a", "app-a"),
            "203.0.113.9:50211",
            65536,
            Extensions::ALL,
        )
        .unwrap();
    let b = p
        .client
        .conn
        .join(
            &Identity::new("node-b", "app-b"),
            "[2001:db8::7]:443",
            1024,
            Extensions::NONE,
        )
        .unwrap();
    p.client
        .conn
        .client_forward(a, PeerRequestId(1), &raw(r#"{"op":"add","a":1,"b":2}"#))
        .unwrap();
    p.client
        .conn
        .client_forward(b, PeerRequestId(1), &raw(r#"{"op":"add","a":3,"b":4}"#))
        .unwrap();
    p.drive();
    let server_events = p.server.take_events();
    assert!(
        matches!(
            server_events.as_slice(),
            [Event::Joined(ja), Event::Joined(jb), Event::ClientRequest { client: ca, id: PeerRequestId(1), .. }, Event::ClientRequest { client: cb2, id: PeerRequestId(1), .. }]
                if ja.client == a && jb.client == b && *ca == a && *cb2 == b
                    && ja.addr == "203.0.113.9:50211" && jb.max_frame == 1024
        ),
        "{server_events:?}"
    );
    p.server
        .conn
        .client_respond(b, PeerRequestId(1), Ok(&raw("7")))
        .unwrap();
    p.server
        .conn
        .client_respond(a, PeerRequestId(1), Ok(&raw("3")))
        .unwrap();
    p.server
        .conn
        .client_send(a, &raw(r#"{"op":"news","text":"hi"}"#))
        .unwrap();
    let now = p.now;
    let ping = p
        .server
        .conn
        .client_request(now, b, &raw(r#"{"op":"status"}"#), None)
        .unwrap();
    assert_eq!(ping, RequestId(1), "numbered in b's own space");
    p.drive();
    p.client.take_events();
    // b's connection to the relay ends while the server's request to it
    // is in flight, and a message for it crosses the leave.
    p.client
        .conn
        .leave(now, b, CloseCode::Gone, "connection reset")
        .unwrap();
    p.server
        .conn
        .client_send(b, &raw(r#"{"op":"late"}"#))
        .unwrap();
    p.drive();
    assert_eq!(
        p.server.take_events(),
        [
            Event::ClientRequestFailed {
                client: b,
                id: ping,
                error: RequestError::ConnectionLost
            },
            Event::Left {
                client: b,
                reason: CloseReason::Remote {
                    code: CloseCode::Gone,
                    reason: "connection reset".into()
                }
            }
        ]
    );
    assert_eq!(
        p.client.conn.stats().relayed_frames_dropped,
        1,
        "the late message"
    );
    assert_eq!(a, ClientId(1));
    let c = lines(p.client.log.as_deref().unwrap());
    let s = lines(p.server.log.as_deref().unwrap());
    let th = crypto::transcript_hash(c[0].as_bytes(), s[0].as_bytes(), &cb);
    let mut v = vec![
        ("hello".to_owned(), c[0].clone()),
        ("challenge".to_owned(), s[0].clone()),
        ("transcript_hash".to_owned(), hex::encode(th)),
        ("auth".to_owned(), c[1].clone()),
        ("ok".to_owned(), s[1].clone()),
    ];
    for (i, l) in c.iter().skip(2).enumerate() {
        v.push((format!("c2s.{i}"), l.clone()));
    }
    for (i, l) in s.iter().skip(2).enumerate() {
        v.push((format!("s2c.{i}"), l.clone()));
    }
    v
}

#[test]
fn the_relay_session() {
    let got = relay_session();
    for (k, g) in &got {
        show(&format!("relay.{k}"), g);
    }
    let got: Vec<(&str, &str)> = got.iter().map(|(k, g)| (k.as_str(), g.as_str())).collect();
    assert_eq!(got, RELAY_SESSION, "the relay session's lines");
    let v: BTreeMap<_, _> = RELAY_SESSION.iter().copied().collect();
    let th = hex32(v["transcript_hash"]);
    // The proofs are keyed with the relay secret, not the client secret.
    let proof = |client: bool| {
        let p = if client {
            crypto::client_proof(&relay_secret(), &th)
        } else {
            crypto::server_proof(&relay_secret(), &th)
        };
        b64(&p)
    };
    assert_eq!(
        v["auth"],
        format!(r#"{{"t":"auth","proof":"{}"}}"#, proof(true))
    );
    assert_eq!(
        v["ok"],
        format!(r#"{{"t":"ok","proof":"{}"}}"#, proof(false))
    );
    assert_ne!(v["auth"], auth_line(&th), "not the client secret's proof");
    assert!(v["hello"].ends_with(r#""ext":["response_too_large","relay"]}"#));
    assert!(v["challenge"].ends_with(r#""ext":["response_too_large","relay"]}"#));
}
