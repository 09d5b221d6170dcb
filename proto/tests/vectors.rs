#![forbid(unsafe_code)]
//! PROTOCOL.md's test vectors, recomputed with the public API of
//! `jsonlink_proto` and compared both with the constants of
//! `common/vectors.rs` and with the document itself (its "Test vectors"
//! section is parsed), so the document and the code cannot drift apart.
//! The full sessions are replayed by `vector_sessions.rs`, the wire
//! examples quoted elsewhere in the document by `wire_examples.rs`.
//!
//! The same vectors are checked independently, with the Python standard
//! library only, by `python3 proto/tests/vectors_check.py`.

mod common;

use common::vectors::*;
use jsonlink_proto::crypto::{self, SessionKeys};
use jsonlink_proto::{ProtocolError, SignAlg};

#[test]
fn document_and_code_agree_on_every_vector() {
    let doc = document_vectors();
    let code = vectors();
    for (name, value) in &code {
        assert_eq!(
            doc.get(name).map(String::as_str),
            Some(*value),
            "PROTOCOL.md's vector `{name}` differs from the code"
        );
    }
    for name in doc.keys() {
        assert!(
            code.iter().any(|(n, _)| n == name),
            "PROTOCOL.md has vector `{name}` that the test does not check"
        );
    }
}

#[test]
fn secret_is_the_documented_ascii_text() {
    assert_eq!(
        secret().expose(),
        b"jsonlink test vector secret 0001",
        "the secret is its ASCII text"
    );
    assert_eq!(
        channel_binding(),
        (0xa0u8..=0xbf).collect::<Vec<_>>(),
        "the channel binding is bytes 0xa0..=0xbf"
    );
}

#[test]
fn transcript_proofs_and_session_keys() {
    let th = crypto::transcript_hash(HELLO.as_bytes(), CHALLENGE.as_bytes(), &channel_binding());
    assert_eq!(hex::encode(th), TRANSCRIPT_HASH, "transcript_hash");

    let cp = crypto::client_proof(&secret(), &th);
    let sp = crypto::server_proof(&secret(), &th);
    assert_eq!(hex::encode(cp), CLIENT_PROOF, "client_proof");
    assert_eq!(b64(&cp), CLIENT_PROOF_B64, "client_proof_b64");
    assert_eq!(hex::encode(sp), SERVER_PROOF, "server_proof");
    assert_eq!(b64(&sp), SERVER_PROOF_B64, "server_proof_b64");

    let keys = SessionKeys::derive(&secret(), &th);
    assert_eq!(hex::encode(keys.c2s.mac.expose()), C2S_MAC, "key.c2s.mac");
    assert_eq!(hex::encode(keys.c2s.enc.expose()), C2S_ENC, "key.c2s.enc");
    assert_eq!(hex::encode(keys.s2c.mac.expose()), S2C_MAC, "key.s2c.mac");
    assert_eq!(hex::encode(keys.s2c.enc.expose()), S2C_ENC, "key.s2c.enc");

    assert_ne!(
        crypto::transcript_hash(HELLO.as_bytes(), CHALLENGE.as_bytes(), b""),
        th,
        "without channel binding the transcript (and everything after) differs"
    );
}

#[test]
fn signed_frame() {
    let keys = vector_keys();
    let seq: u64 = SIGNED_SEQ.parse().unwrap();
    for (alg, want) in [
        (SignAlg::HmacSha256, SIGNED_LINE),
        (SignAlg::Aes256Gmac, SIGNED_GMAC_LINE),
    ] {
        let mut line = Vec::new();
        crypto::sign_frame(alg, &keys.c2s.mac, seq, SIGNED_INNER.as_bytes(), &mut line);
        assert_eq!(std::str::from_utf8(&line).unwrap(), want, "{alg}: the line");

        let (got_seq, inner) = crypto::open_signed(alg, &keys.c2s.mac, want.as_bytes()).unwrap();
        assert_eq!(
            (got_seq, inner),
            (seq, SIGNED_INNER.as_bytes()),
            "{alg}: opened, the sequence number and the frame"
        );
        // The other direction's key, a changed sequence number, a changed
        // payload byte, or added whitespace all fail with one error.
        assert_eq!(
            crypto::open_signed(alg, &keys.s2c.mac, want.as_bytes()),
            Err(ProtocolError::Integrity),
            "{alg}: the other direction's key"
        );
        for bad in [
            want.replacen(r#""q":0"#, r#""q":1"#, 1),
            want.replacen(r#""a":2"#, r#""a":4"#, 1),
            want.replacen(r#""q":0"#, r#""q": 0"#, 1),
            want.replacen(r#"{"q":0,"s":"#, r#"{"s":"#, 1),
        ] {
            assert_eq!(
                crypto::open_signed(alg, &keys.c2s.mac, bad.as_bytes()),
                Err(ProtocolError::Integrity),
                "{alg}: {bad}"
            );
        }
    }
    assert_eq!(
        crypto::open_signed(SignAlg::Aes256Gmac, &keys.c2s.mac, SIGNED_LINE.as_bytes()),
        Err(ProtocolError::Integrity),
        "an HMAC tag never verifies as GMAC"
    );
    assert_eq!(
        crypto::open_signed(
            SignAlg::HmacSha256,
            &keys.c2s.mac,
            SIGNED_GMAC_LINE.as_bytes()
        ),
        Err(ProtocolError::Integrity),
        "a GMAC tag never verifies as HMAC"
    );
}

#[test]
fn sealed_frame() {
    let keys = vector_keys();
    let seq: u64 = SEALED_SEQ.parse().unwrap();
    let iv: [u8; 16] = hex::decode(SEALED_IV).unwrap().try_into().unwrap();
    let mut line = Vec::new();
    crypto::seal_frame(&keys.s2c, seq, &iv, SEALED_INNER.as_bytes(), &mut line);
    assert_eq!(
        std::str::from_utf8(&line).unwrap(),
        SEALED_LINE,
        "sealed.line"
    );

    let (got_seq, plain) = crypto::open_sealed(&keys.s2c, SEALED_LINE.as_bytes()).unwrap();
    assert_eq!(
        (got_seq, plain.as_slice()),
        (seq, SEALED_INNER.as_bytes()),
        "opened, the sequence number and the frame"
    );
    assert_eq!(
        crypto::open_sealed(&keys.c2s, SEALED_LINE.as_bytes()),
        Err(ProtocolError::Integrity),
        "the other direction's keys"
    );
    assert_eq!(
        crypto::open_sealed(
            &keys.s2c,
            SEALED_LINE.replacen(r#""q":3"#, r#""q":4"#, 1).as_bytes()
        ),
        Err(ProtocolError::Integrity),
        "a changed sequence number"
    );
}
