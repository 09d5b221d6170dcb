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
use jsonlink_proto::{Event, Extensions, Policy, RemoteError, RequestError, SendError, SignAlg};

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
