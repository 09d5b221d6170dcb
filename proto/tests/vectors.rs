#![allow(clippy::disallowed_methods)] // one real Instant as the base of virtual time
//! PROTOCOL.md's test vectors, recomputed with the public API of
//! `jsonlink_proto` and compared both with the constants below and with the
//! document itself (its "Test vectors" section is parsed), so the document
//! and the code cannot drift apart. The wire examples quoted elsewhere in
//! the document are regenerated here too and must appear in it verbatim.
//!
//! The same vectors are checked independently, with the Python standard
//! library only, by `python3 proto/tests/vectors_check.py`.

use std::collections::BTreeMap;
use std::time::Instant;

use jsonlink_proto::crypto::{self, SessionKeys};
use jsonlink_proto::testing::{Pair, Who};
use jsonlink_proto::{
    CloseCode, CloseReason, Config, Event, Extensions, Identity, PeerRequestId, Policy,
    ProtocolError, RemoteError, RequestError, RequestId, Secret, SendError, SignAlg,
};
use serde_json::value::RawValue;

const DOC: &str = include_str!("../../PROTOCOL.md");

// ------------------------------------------------------------ inputs

/// The ASCII bytes of `jsonlink test vector secret 0001`.
const SECRET: &str = "6a736f6e6c696e6b207465737420766563746f72207365637265742030303031";
/// Bytes 0xa0..=0xbf, standing in for 32 bytes of TLS exporter output.
const CHANNEL_BINDING: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";
/// Client nonce = bytes 0x00..=0x1f.
const HELLO: &str = r#"{"t":"hello","versions":[1],"nonce":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","node":"node-c1","designation":"vector-client","max_frame":8388608,"sign":"required","sign_alg":"hmac-sha256","seal":"optional","seal_alg":"aes-256-cbc-hmac-sha256"}"#;
/// Server nonce = bytes 0x20..=0x3f.
const CHALLENGE: &str = r#"{"t":"challenge","version":1,"nonce":"ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=","node":"node-s1","designation":"vector-server","conn":42,"max_frame":8388608,"sign":true,"sign_alg":"hmac-sha256","seal":false}"#;
const SIGNED_SEQ: &str = "0";
const SIGNED_INNER: &str = r#"{"t":"req","id":1,"d":{"op":"add","a":2,"b":3}}"#;
const SEALED_SEQ: &str = "3";
const SEALED_IV: &str = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
const SEALED_INNER: &str = r#"{"t":"res","id":1,"d":5}"#;

// ----------------------------------------------------------- outputs

const TRANSCRIPT_HASH: &str = "90847b41d4a756a961c24d60395fb6ec31505f16aa59cc3c89f4c2d2ca789ce4";
const CLIENT_PROOF: &str = "6a9b47caa40cd7a4715df9b267ea5b97cd39ae3d48209f5f68d51058a1107515";
const CLIENT_PROOF_B64: &str = "aptHyqQM16RxXfmyZ+pbl805rj1IIJ9faNUQWKEQdRU=";
const SERVER_PROOF: &str = "55171bb4518cc513a92c8246132fd3b0660f3e732ff5810365c02904c833ff94";
const SERVER_PROOF_B64: &str = "VRcbtFGMxROpLIJGEy/TsGYPPnMv9YEDZcApBMgz/5Q=";
const C2S_MAC: &str = "5fafb9135572ad2363c611e79fb6129f0e771d485f7c000486b2904baff73817";
const C2S_ENC: &str = "9cf18d40a006911ea5d44bdd308d4265b129de3b1179532e274111a6097aafac";
const S2C_MAC: &str = "ac9f912e1c94083f31e40a828271b565fc40656acdf66e302e9ccff91521a52f";
const S2C_ENC: &str = "f3f0f1e9583b2d8fb6415e207decb5c2051c3b63b4f2079161f5fa926350c452";
const SIGNED_LINE: &str = r#"{"q":0,"s":"41Fakmvm9+EsplkTwaLw7mKF+pZaHlJ66njC2P915kM=","f":{"t":"req","id":1,"d":{"op":"add","a":2,"b":3}}}"#;
const SIGNED_GMAC_LINE: &str =
    r#"{"q":0,"s":"w6alj9s9VHT03FIYqAqhSA==","f":{"t":"req","id":1,"d":{"op":"add","a":2,"b":3}}}"#;
const SEALED_LINE: &str = r#"{"q":3,"iv":"8PHy8/T19vf4+fr7/P3+/w==","s":"AolKd1x3aP6uB3bBOvVqPHooXsmzJiS+F3E1LfENx6c=","c":"WABKy0bDZPGqC+xexObIFA+1QQbbYOy6Dz91VSANegk="}"#;

// ------------------------------------------------ full signed session

const SESSION_CLIENT_SEED: &str =
    "0101010101010101010101010101010101010101010101010101010101010101";
const SESSION_SERVER_SEED: &str =
    "0202020202020202020202020202020202020202020202020202020202020202";
const SESSION_HELLO: &str = r#"{"t":"hello","versions":[1],"nonce":"Aj83IDokdsQlZqYcxVw8qHXbtMxBwN63ifjnv4gYNjg=","node":"node-c1","designation":"vector-client","max_frame":8388608,"sign":"required","sign_alg":["aes-256-gmac","hmac-sha256"],"seal":"optional","seal_alg":"aes-256-cbc-hmac-sha256","ext":["response_too_large"]}"#;
const SESSION_CHALLENGE: &str = r#"{"t":"challenge","version":1,"nonce":"9qEsqP/DCmbKFAzMcnYzYRWBk2EYbT9TXdmfjqrKj84=","node":"node-s1","designation":"vector-server","conn":7,"max_frame":8388608,"sign":true,"sign_alg":"aes-256-gmac","seal":false,"ext":["response_too_large"]}"#;
const SESSION_AUTH: &str = r#"{"t":"auth","proof":"iWO39ASqgcfDkeVQAxfsgm1CaRPFkpGYF1dznUdct9I="}"#;
const SESSION_OK: &str = r#"{"t":"ok","proof":"v9w9FgzMFrjJDd91B+9GOkRLkmSZF+WD9FGkQBE2vVE="}"#;
const SESSION_TRANSCRIPT_HASH: &str =
    r#"d557ece716a0f32bb6dcffc8ece9a1c90bd0dc4eee39dcf6a5d20389115ed0a8"#;
/// Everything the client wrote after `auth`, in order (c2s sequence 0, 1, …).
const SESSION_C2S: [&str; 4] = [
    r#"{"q":0,"s":"vAblNL4dtRJpcCH7IKiVhw==","f":{"t":"req","id":1,"d":{"op":"add","a":2,"b":3}}}"#,
    r#"{"q":1,"s":"Ji1E0AolWftRHif7wr/OXg==","f":{"t":"msg","d":{"op":"log","text":"hi"}}}"#,
    r#"{"q":2,"s":"V5sYCjVWjdYhSipDiR9ouw==","f":{"t":"ping"}}"#,
    r#"{"q":3,"s":"1CfNGWv/nOsV5PDJGAcBNw==","f":{"t":"close","code":"normal","reason":"bye"}}"#,
];
/// Everything the server wrote after `ok`, in order (s2c sequence 0, 1, …).
const SESSION_S2C: [&str; 2] = [
    r#"{"q":0,"s":"CpT667IhGnJ5N9G4sElUnw==","f":{"t":"res","id":1,"d":5}}"#,
    r#"{"q":1,"s":"NV48HYOX71Y3lj3a+V/KXQ==","f":{"t":"pong"}}"#,
];

// ------------------------------------------- extensions (§17.7)

/// One extension session's lines, by the suffix of their vector names.
type ExtSession = [(&'static str, &'static str); 7];

/// `response_too_large` offered by the client and accepted by the server.
const EXT_ACCEPTED: ExtSession = [
    (
        "hello",
        r#"{"t":"hello","versions":[1],"nonce":"Aj83IDokdsQlZqYcxVw8qHXbtMxBwN63ifjnv4gYNjg=","node":"node-c1","designation":"vector-client","max_frame":1024,"sign":"optional","sign_alg":["aes-256-gmac","hmac-sha256"],"seal":"optional","seal_alg":"aes-256-cbc-hmac-sha256","ext":["response_too_large"]}"#,
    ),
    (
        "challenge",
        r#"{"t":"challenge","version":1,"nonce":"9qEsqP/DCmbKFAzMcnYzYRWBk2EYbT9TXdmfjqrKj84=","node":"node-s1","designation":"vector-server","conn":7,"max_frame":8388608,"sign":false,"seal":false,"ext":["response_too_large"]}"#,
    ),
    (
        "transcript_hash",
        r#"d467d4b076539947b163ea38dbdee279aa15e10facaf7f3cfcfd851482744f84"#,
    ),
    (
        "auth",
        r#"{"t":"auth","proof":"4+Tn3QNhVz3ZK3wkcmyN5Xgkg16/0nG3rrcxPAzZd4s="}"#,
    ),
    (
        "ok",
        r#"{"t":"ok","proof":"R0KsiniDK0+k4yQvWPhSHQdtmep7VW2z6tu9Zdoi8Vo="}"#,
    ),
    ("req", r#"{"t":"req","id":1,"d":{"op":"echo","n":2000}}"#),
    (
        "res",
        r#"{"t":"res","id":1,"err":{"code":"response_too_large","message":"the answer (2023 bytes) is larger than the requester's max_frame (1024 bytes)","data":{"size":2023,"max_frame":1024}}}"#,
    ),
];
/// The same offer to a server that accepts no extension: the challenge a
/// version 1 server sends too.
const EXT_DECLINED: ExtSession = [
    (
        "hello",
        r#"{"t":"hello","versions":[1],"nonce":"Aj83IDokdsQlZqYcxVw8qHXbtMxBwN63ifjnv4gYNjg=","node":"node-c1","designation":"vector-client","max_frame":1024,"sign":"optional","sign_alg":["aes-256-gmac","hmac-sha256"],"seal":"optional","seal_alg":"aes-256-cbc-hmac-sha256","ext":["response_too_large"]}"#,
    ),
    (
        "challenge",
        r#"{"t":"challenge","version":1,"nonce":"9qEsqP/DCmbKFAzMcnYzYRWBk2EYbT9TXdmfjqrKj84=","node":"node-s1","designation":"vector-server","conn":7,"max_frame":8388608,"sign":false,"seal":false}"#,
    ),
    (
        "transcript_hash",
        r#"34a61434b53afe3809796fc1910b0e773f6181c9d975ab45d3814e2e729013f1"#,
    ),
    (
        "auth",
        r#"{"t":"auth","proof":"hHclJHQpWYD7E5WMuz3p1G4bRfJD+oUa7gNhc8qVcxM="}"#,
    ),
    (
        "ok",
        r#"{"t":"ok","proof":"Pj2PNaRxcxT+JvPfYel2tJGN/RsZunz6RQ7kC5zENF8="}"#,
    ),
    ("req", r#"{"t":"req","id":1,"d":{"op":"echo","n":2000}}"#),
    (
        "res",
        r#"{"t":"res","id":1,"err":{"code":"internal","message":"the answer (2023 bytes) is larger than the requester's max_frame (1024 bytes)"}}"#,
    ),
];

/// Every vector by the name it has in PROTOCOL.md.
fn vectors() -> Vec<(String, &'static str)> {
    let mut v: Vec<(String, &'static str)> = [
        ("secret", SECRET),
        ("channel_binding", CHANNEL_BINDING),
        ("hello", HELLO),
        ("challenge", CHALLENGE),
        ("transcript_hash", TRANSCRIPT_HASH),
        ("client_proof", CLIENT_PROOF),
        ("client_proof_b64", CLIENT_PROOF_B64),
        ("server_proof", SERVER_PROOF),
        ("server_proof_b64", SERVER_PROOF_B64),
        ("key.c2s.mac", C2S_MAC),
        ("key.c2s.enc", C2S_ENC),
        ("key.s2c.mac", S2C_MAC),
        ("key.s2c.enc", S2C_ENC),
        ("signed.seq", SIGNED_SEQ),
        ("signed.inner", SIGNED_INNER),
        ("signed.line", SIGNED_LINE),
        ("signed_gmac.line", SIGNED_GMAC_LINE),
        ("sealed.seq", SEALED_SEQ),
        ("sealed.iv", SEALED_IV),
        ("sealed.inner", SEALED_INNER),
        ("sealed.line", SEALED_LINE),
        ("session.client_rng_seed", SESSION_CLIENT_SEED),
        ("session.server_rng_seed", SESSION_SERVER_SEED),
        ("session.hello", SESSION_HELLO),
        ("session.challenge", SESSION_CHALLENGE),
        ("session.auth", SESSION_AUTH),
        ("session.ok", SESSION_OK),
        ("session.transcript_hash", SESSION_TRANSCRIPT_HASH),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (i, l) in SESSION_C2S.iter().enumerate() {
        v.push((format!("session.c2s.{i}"), l));
    }
    for (i, l) in SESSION_S2C.iter().enumerate() {
        v.push((format!("session.s2c.{i}"), l));
    }
    for (case, lines) in [
        ("ext_accepted", &EXT_ACCEPTED),
        ("ext_declined", &EXT_DECLINED),
    ] {
        for (k, l) in lines {
            v.push((format!("{case}.{k}"), l));
        }
    }
    v
}

/// The `name = value` lines of the ```text blocks in PROTOCOL.md's
/// "Test vectors" section.
fn document_vectors() -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut in_section = false;
    let mut in_block = false;
    for line in DOC.lines() {
        if line.starts_with("## ") {
            in_section = line.contains("Test vectors");
            continue;
        }
        if !in_section {
            continue;
        }
        if line.starts_with("```") {
            in_block = !in_block && line == "```text";
            continue;
        }
        if let (true, Some((k, v))) = (in_block, line.split_once(" = ")) {
            let old = map.insert(k.trim().to_owned(), v.to_owned());
            assert!(old.is_none(), "vector `{}` appears twice", k.trim());
        }
    }
    assert!(
        !map.is_empty(),
        "no \"Test vectors\" section in PROTOCOL.md"
    );
    map
}

fn hex32(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

fn secret() -> Secret {
    Secret::from_hex(SECRET).unwrap()
}

fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_owned()).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Prints a generated vector as PROTOCOL.md writes it, when
/// `JSONLINK_PRINT_VECTORS` is set (to regenerate the document after a
/// deliberate change: run the test with `--nocapture`).
fn show(name: &str, value: &str) {
    if std::env::var_os("JSONLINK_PRINT_VECTORS").is_some() {
        eprintln!("{name} = {value}");
    }
}

/// Splits a peer's recorded output into lines (each must end in `\n`).
fn lines(log: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(log).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "{text}");
    text.lines().map(str::to_owned).collect()
}

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
    assert_eq!(secret().expose(), b"jsonlink test vector secret 0001");
    assert_eq!(
        hex::decode(CHANNEL_BINDING).unwrap(),
        (0xa0u8..=0xbf).collect::<Vec<_>>()
    );
}

#[test]
fn transcript_proofs_and_session_keys() {
    let cb = hex::decode(CHANNEL_BINDING).unwrap();
    let th = crypto::transcript_hash(HELLO.as_bytes(), CHALLENGE.as_bytes(), &cb);
    assert_eq!(hex::encode(th), TRANSCRIPT_HASH);

    let cp = crypto::client_proof(&secret(), &th);
    let sp = crypto::server_proof(&secret(), &th);
    assert_eq!(hex::encode(cp), CLIENT_PROOF);
    assert_eq!(b64(&cp), CLIENT_PROOF_B64);
    assert_eq!(hex::encode(sp), SERVER_PROOF);
    assert_eq!(b64(&sp), SERVER_PROOF_B64);

    let keys = SessionKeys::derive(&secret(), &th);
    assert_eq!(hex::encode(keys.c2s.mac.expose()), C2S_MAC);
    assert_eq!(hex::encode(keys.c2s.enc.expose()), C2S_ENC);
    assert_eq!(hex::encode(keys.s2c.mac.expose()), S2C_MAC);
    assert_eq!(hex::encode(keys.s2c.enc.expose()), S2C_ENC);

    // Without channel binding the transcript (and everything after) differs.
    assert_ne!(
        crypto::transcript_hash(HELLO.as_bytes(), CHALLENGE.as_bytes(), b""),
        th
    );
}

#[test]
fn signed_frame() {
    let th = hex32(TRANSCRIPT_HASH);
    let keys = SessionKeys::derive(&secret(), &th);
    let seq: u64 = SIGNED_SEQ.parse().unwrap();
    for (alg, want) in [
        (SignAlg::HmacSha256, SIGNED_LINE),
        (SignAlg::Aes256Gmac, SIGNED_GMAC_LINE),
    ] {
        let mut line = Vec::new();
        crypto::sign_frame(alg, &keys.c2s.mac, seq, SIGNED_INNER.as_bytes(), &mut line);
        assert_eq!(std::str::from_utf8(&line).unwrap(), want, "{alg}");

        let (got_seq, inner) = crypto::open_signed(alg, &keys.c2s.mac, want.as_bytes()).unwrap();
        assert_eq!((got_seq, inner), (seq, SIGNED_INNER.as_bytes()));
        // The other direction's key, a changed sequence number, a changed
        // payload byte, or added whitespace all fail with one error.
        assert_eq!(
            crypto::open_signed(alg, &keys.s2c.mac, want.as_bytes()),
            Err(ProtocolError::Integrity)
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
    // A tag of one algorithm never verifies under the other.
    assert_eq!(
        crypto::open_signed(SignAlg::Aes256Gmac, &keys.c2s.mac, SIGNED_LINE.as_bytes()),
        Err(ProtocolError::Integrity)
    );
    assert_eq!(
        crypto::open_signed(
            SignAlg::HmacSha256,
            &keys.c2s.mac,
            SIGNED_GMAC_LINE.as_bytes()
        ),
        Err(ProtocolError::Integrity)
    );
}

#[test]
fn sealed_frame() {
    let th = hex32(TRANSCRIPT_HASH);
    let keys = SessionKeys::derive(&secret(), &th);
    let seq: u64 = SEALED_SEQ.parse().unwrap();
    let iv: [u8; 16] = hex::decode(SEALED_IV).unwrap().try_into().unwrap();
    let mut line = Vec::new();
    crypto::seal_frame(&keys.s2c, seq, &iv, SEALED_INNER.as_bytes(), &mut line);
    assert_eq!(std::str::from_utf8(&line).unwrap(), SEALED_LINE);

    let (got_seq, plain) = crypto::open_sealed(&keys.s2c, SEALED_LINE.as_bytes()).unwrap();
    assert_eq!((got_seq, plain.as_slice()), (seq, SEALED_INNER.as_bytes()));
    assert_eq!(
        crypto::open_sealed(&keys.c2s, SEALED_LINE.as_bytes()),
        Err(ProtocolError::Integrity)
    );
    assert_eq!(
        crypto::open_sealed(
            &keys.s2c,
            SEALED_LINE.replacen(r#""q":3"#, r#""q":4"#, 1).as_bytes()
        ),
        Err(ProtocolError::Integrity)
    );
}

fn vector_config(identity: Identity, seed: &str) -> Config {
    let mut c = Config::new(secret(), identity);
    c.rng_seed = Some(hex32(seed));
    c.keepalive = None;
    c
}

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

/// The text of the PROTOCOL.md section whose heading starts with `heading`,
/// up to the next heading.
fn section(heading: &str) -> &'static str {
    let start = DOC.find(&format!("\n{heading}")).expect("section") + 1;
    let rest = &DOC[start..];
    let end = rest[1..].find("\n#").map_or(rest.len(), |i| i + 1);
    &rest[..end]
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
