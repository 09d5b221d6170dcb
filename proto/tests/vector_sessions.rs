#![allow(clippy::disallowed_methods)] // tests take one real Instant as the base of virtual time
//! The full sessions of PROTOCOL.md §17 (the signed session and the two
//! extension sessions of §17.7), replayed on the pair and compared line by
//! line with the documented vectors.

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use common::raw;
use common::vectors::*;
use jsonlink_proto::crypto::{self, SessionKeys};
use jsonlink_proto::testing::Pair;
use jsonlink_proto::{
    Event, Extensions, Identity, PeerRequestId, Policy, RemoteError, RequestError, SendError,
    SignAlg,
};

#[test]
fn full_signed_session() {
    let now = Instant::now();
    let cb = hex::decode(CHANNEL_BINDING).unwrap();
    let mut client = vector_config(
        Identity::new("node-c1", "vector-client"),
        SESSION_CLIENT_SEED,
    );
    client.signing = Policy::Required;
    let server = vector_config(
        Identity::new("node-s1", "vector-server"),
        SESSION_SERVER_SEED,
    );
    let mut p = Pair::new(now, client, server, cb.clone(), cb.clone());
    p.record();
    p.drive();
    for peer in [&p.client, &p.server] {
        let [Event::Authenticated(a)] = peer.events.as_slice() else {
            panic!("{:?}", peer.events)
        };
        assert!(a.signing && !a.encryption);
        assert_eq!(a.sign_alg, Some(SignAlg::Aes256Gmac));
        assert_eq!(a.connection_id, 7);
    }

    let id = p
        .client
        .conn
        .request(now, &raw(r#"{"op":"add","a":2,"b":3}"#), None)
        .unwrap();
    p.drive();
    p.server
        .conn
        .respond(PeerRequestId(id.0), Ok(&raw("5")))
        .unwrap();
    p.client
        .conn
        .send(&raw(r#"{"op":"log","text":"hi"}"#))
        .unwrap();
    p.client.conn.ping(None).unwrap();
    p.drive();
    p.client.conn.close(now, "bye");
    p.drive();
    assert!(p.client.conn.is_closed() && p.server.conn.is_closed());

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
    assert_eq!(c, want_c);
    assert_eq!(s, want_s);

    // The recorded proofs are the documented formulas over the recorded lines.
    let th = crypto::transcript_hash(SESSION_HELLO.as_bytes(), SESSION_CHALLENGE.as_bytes(), &cb);
    assert_eq!(hex::encode(th), SESSION_TRANSCRIPT_HASH);
    assert_eq!(
        SESSION_AUTH,
        format!(
            r#"{{"t":"auth","proof":"{}"}}"#,
            b64(&crypto::client_proof(&secret(), &th))
        )
    );
    assert_eq!(
        SESSION_OK,
        format!(
            r#"{{"t":"ok","proof":"{}"}}"#,
            b64(&crypto::server_proof(&secret(), &th))
        )
    );
    // Every frame after the handshake is signed, numbered from 0 per direction.
    let keys = SessionKeys::derive(&secret(), &th);
    for (dir, key, frames) in [
        ("c2s", &keys.c2s.mac, &SESSION_C2S[..]),
        ("s2c", &keys.s2c.mac, &SESSION_S2C[..]),
    ] {
        for (i, line) in frames.iter().enumerate() {
            let (seq, _) = crypto::open_signed(SignAlg::Aes256Gmac, key, line.as_bytes())
                .unwrap_or_else(|e| panic!("{dir} frame {i}: {e}"));
            assert_eq!(seq, i as u64, "{dir} frame {i}");
        }
    }
}

/// The extension sessions of §17.7: the client (max_frame 1024) offers
/// `response_too_large`; the server accepts it (`accept`) or accepts
/// nothing, as a version 1 server; its answer of 2000 bytes is too large
/// and replaced by the error answer the agreement calls for.
fn ext_session(accept: bool) -> Vec<(&'static str, String)> {
    let now = Instant::now();
    let cb = hex::decode(CHANNEL_BINDING).unwrap();
    let mut client = vector_config(
        Identity::new("node-c1", "vector-client"),
        SESSION_CLIENT_SEED,
    );
    client.max_frame = 1024;
    let mut server = vector_config(
        Identity::new("node-s1", "vector-server"),
        SESSION_SERVER_SEED,
    );
    if !accept {
        server.extensions = Extensions::NONE;
    }
    let mut p = Pair::new(now, client, server, cb.clone(), cb.clone());
    p.record();
    p.connect();
    let ext = if accept {
        Extensions::ALL
    } else {
        Extensions::NONE
    };
    assert_eq!(p.client.conn.extensions(), ext);
    assert_eq!(p.server.conn.extensions(), ext);
    let id = p
        .client
        .conn
        .request(now, &raw(r#"{"op":"echo","n":2000}"#), None)
        .unwrap();
    p.drive();
    let answer = raw(&format!("\"{}\"", "x".repeat(1998)));
    assert_eq!(
        p.server.conn.respond(PeerRequestId(id.0), Ok(&answer)),
        Err(SendError::ResponseTooLarge {
            size: 2023,
            limit: 1024
        })
    );
    p.drive();
    let want = if accept {
        RemoteError::RESPONSE_TOO_LARGE
    } else {
        RemoteError::INTERNAL
    };
    assert!(matches!(
        p.client.events.as_slice(),
        [Event::RequestFailed { id: i, error: RequestError::Remote(e) }] if *i == id && e.code == want
    ));
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
        // The proofs are the documented formulas over the lines shown.
        let v: BTreeMap<_, _> = want.iter().copied().collect();
        let th = hex32(v["transcript_hash"]);
        assert_eq!(
            v["auth"],
            format!(
                r#"{{"t":"auth","proof":"{}"}}"#,
                b64(&crypto::client_proof(&secret(), &th))
            )
        );
        assert_eq!(
            v["ok"],
            format!(
                r#"{{"t":"ok","proof":"{}"}}"#,
                b64(&crypto::server_proof(&secret(), &th))
            )
        );
        // Without the extension the requester never sees its code.
        assert_eq!(v["res"].contains("response_too_large"), accept, "{case}");
        assert_eq!(v["challenge"].contains(r#""ext""#), accept, "{case}");
    }
    // Both hellos are the same offer.
    assert_eq!(EXT_ACCEPTED[0], EXT_DECLINED[0]);
}
