//! PROTOCOL.md's test vectors (its "Test vectors" section, §17) as
//! constants, the document parsed, and what the vector tests share
//! (`vectors.rs`, `vector_sessions.rs`, `wire_examples.rs`).
#![allow(clippy::disallowed_methods)] // a pair takes one real Instant as the base of virtual time

use std::collections::BTreeMap;
use std::time::Instant;

use jsonlink_proto::crypto;
use jsonlink_proto::testing::Pair;
use jsonlink_proto::{Config, Identity, Secret};

/// PROTOCOL.md.
pub const DOC: &str = include_str!("../../../PROTOCOL.md");

// ------------------------------------------------------------ inputs

/// The ASCII bytes of `jsonlink test vector secret 0001`.
pub const SECRET: &str = "6a736f6e6c696e6b207465737420766563746f72207365637265742030303031";
/// Bytes 0xa0..=0xbf, standing in for 32 bytes of TLS exporter output.
pub const CHANNEL_BINDING: &str =
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";
/// Client nonce = bytes 0x00..=0x1f.
pub const HELLO: &str = r#"{"t":"hello","versions":[1],"nonce":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","node":"node-c1","designation":"vector-client","max_frame":8388608,"sign":"required","sign_alg":"hmac-sha256","seal":"optional","seal_alg":"aes-256-cbc-hmac-sha256"}"#;
/// Server nonce = bytes 0x20..=0x3f.
pub const CHALLENGE: &str = r#"{"t":"challenge","version":1,"nonce":"ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=","node":"node-s1","designation":"vector-server","conn":42,"max_frame":8388608,"sign":true,"sign_alg":"hmac-sha256","seal":false}"#;
pub const SIGNED_SEQ: &str = "0";
pub const SIGNED_INNER: &str = r#"{"t":"req","id":1,"d":{"op":"add","a":2,"b":3}}"#;
pub const SEALED_SEQ: &str = "3";
pub const SEALED_IV: &str = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
pub const SEALED_INNER: &str = r#"{"t":"res","id":1,"d":5}"#;

// ----------------------------------------------------------- outputs

pub const TRANSCRIPT_HASH: &str =
    "90847b41d4a756a961c24d60395fb6ec31505f16aa59cc3c89f4c2d2ca789ce4";
pub const CLIENT_PROOF: &str = "6a9b47caa40cd7a4715df9b267ea5b97cd39ae3d48209f5f68d51058a1107515";
pub const CLIENT_PROOF_B64: &str = "aptHyqQM16RxXfmyZ+pbl805rj1IIJ9faNUQWKEQdRU=";
pub const SERVER_PROOF: &str = "55171bb4518cc513a92c8246132fd3b0660f3e732ff5810365c02904c833ff94";
pub const SERVER_PROOF_B64: &str = "VRcbtFGMxROpLIJGEy/TsGYPPnMv9YEDZcApBMgz/5Q=";
pub const C2S_MAC: &str = "5fafb9135572ad2363c611e79fb6129f0e771d485f7c000486b2904baff73817";
pub const C2S_ENC: &str = "9cf18d40a006911ea5d44bdd308d4265b129de3b1179532e274111a6097aafac";
pub const S2C_MAC: &str = "ac9f912e1c94083f31e40a828271b565fc40656acdf66e302e9ccff91521a52f";
pub const S2C_ENC: &str = "f3f0f1e9583b2d8fb6415e207decb5c2051c3b63b4f2079161f5fa926350c452";
pub const SIGNED_LINE: &str = r#"{"q":0,"s":"41Fakmvm9+EsplkTwaLw7mKF+pZaHlJ66njC2P915kM=","f":{"t":"req","id":1,"d":{"op":"add","a":2,"b":3}}}"#;
pub const SIGNED_GMAC_LINE: &str =
    r#"{"q":0,"s":"w6alj9s9VHT03FIYqAqhSA==","f":{"t":"req","id":1,"d":{"op":"add","a":2,"b":3}}}"#;
pub const SEALED_LINE: &str = r#"{"q":3,"iv":"8PHy8/T19vf4+fr7/P3+/w==","s":"AolKd1x3aP6uB3bBOvVqPHooXsmzJiS+F3E1LfENx6c=","c":"WABKy0bDZPGqC+xexObIFA+1QQbbYOy6Dz91VSANegk="}"#;

// ------------------------------------------------ full signed session

pub const SESSION_CLIENT_SEED: &str =
    "0101010101010101010101010101010101010101010101010101010101010101";
pub const SESSION_SERVER_SEED: &str =
    "0202020202020202020202020202020202020202020202020202020202020202";
pub const SESSION_HELLO: &str = r#"{"t":"hello","versions":[1],"nonce":"Aj83IDokdsQlZqYcxVw8qHXbtMxBwN63ifjnv4gYNjg=","node":"node-c1","designation":"vector-client","max_frame":8388608,"sign":"required","sign_alg":["aes-256-gmac","hmac-sha256"],"seal":"optional","seal_alg":"aes-256-cbc-hmac-sha256","ext":["response_too_large"]}"#;
pub const SESSION_CHALLENGE: &str = r#"{"t":"challenge","version":1,"nonce":"9qEsqP/DCmbKFAzMcnYzYRWBk2EYbT9TXdmfjqrKj84=","node":"node-s1","designation":"vector-server","conn":7,"max_frame":8388608,"sign":true,"sign_alg":"aes-256-gmac","seal":false,"ext":["response_too_large"]}"#;
pub const SESSION_AUTH: &str =
    r#"{"t":"auth","proof":"iWO39ASqgcfDkeVQAxfsgm1CaRPFkpGYF1dznUdct9I="}"#;
pub const SESSION_OK: &str = r#"{"t":"ok","proof":"v9w9FgzMFrjJDd91B+9GOkRLkmSZF+WD9FGkQBE2vVE="}"#;
pub const SESSION_TRANSCRIPT_HASH: &str =
    r#"d557ece716a0f32bb6dcffc8ece9a1c90bd0dc4eee39dcf6a5d20389115ed0a8"#;
/// Everything the client wrote after `auth`, in order (c2s sequence 0, 1, …).
pub const SESSION_C2S: [&str; 4] = [
    r#"{"q":0,"s":"vAblNL4dtRJpcCH7IKiVhw==","f":{"t":"req","id":1,"d":{"op":"add","a":2,"b":3}}}"#,
    r#"{"q":1,"s":"Ji1E0AolWftRHif7wr/OXg==","f":{"t":"msg","d":{"op":"log","text":"hi"}}}"#,
    r#"{"q":2,"s":"V5sYCjVWjdYhSipDiR9ouw==","f":{"t":"ping"}}"#,
    r#"{"q":3,"s":"1CfNGWv/nOsV5PDJGAcBNw==","f":{"t":"close","code":"normal","reason":"bye"}}"#,
];
/// Everything the server wrote after `ok`, in order (s2c sequence 0, 1, …).
pub const SESSION_S2C: [&str; 2] = [
    r#"{"q":0,"s":"CpT667IhGnJ5N9G4sElUnw==","f":{"t":"res","id":1,"d":5}}"#,
    r#"{"q":1,"s":"NV48HYOX71Y3lj3a+V/KXQ==","f":{"t":"pong"}}"#,
];

// ------------------------------------------- extensions (§17.7)

/// One extension session's lines, by the suffix of their vector names.
pub type ExtSession = [(&'static str, &'static str); 7];

/// `response_too_large` offered by the client and accepted by the server.
pub const EXT_ACCEPTED: ExtSession = [
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
pub const EXT_DECLINED: ExtSession = [
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

/// The relay secret of the relay session (§17.8): the 32 ASCII bytes
/// `jsonlink test vector relay 00001`.
pub const RELAY_SECRET: &str = "6a736f6e6c696e6b207465737420766563746f722072656c6179203030303031";

/// The relay session of §17.8, by the suffix of each vector's name after
/// `relay.`: the handshake, then what the relay (`c2s`) and the server
/// (`s2c`) wrote after it, in order.
pub const RELAY_SESSION: &[(&str, &str)] = &[
    (
        "hello",
        r#"{"t":"hello","versions":[1],"nonce":"Aj83IDokdsQlZqYcxVw8qHXbtMxBwN63ifjnv4gYNjg=","node":"node-c1","designation":"vector-client","max_frame":8388608,"sign":"optional","sign_alg":["aes-256-gmac","hmac-sha256"],"seal":"optional","seal_alg":"aes-256-cbc-hmac-sha256","ext":["response_too_large","relay"]}"#,
    ),
    (
        "challenge",
        r#"{"t":"challenge","version":1,"nonce":"9qEsqP/DCmbKFAzMcnYzYRWBk2EYbT9TXdmfjqrKj84=","node":"node-s1","designation":"vector-server","conn":7,"max_frame":8388608,"sign":false,"seal":false,"ext":["response_too_large","relay"]}"#,
    ),
    (
        "transcript_hash",
        r#"215aabfa7314a93da34811c5a7eea8582b027e1104a15acc69a1e7b62e74d54e"#,
    ),
    (
        "auth",
        r#"{"t":"auth","proof":"92ZdJ4yzLdjxsfxlifDicIjIOXovUTfNoTGU6IvSn7k="}"#,
    ),
    (
        "ok",
        r#"{"t":"ok","proof":"MgJh2Ly7PefGvFW1pp65zY2lu6oqOdN+Jzpub/nwT9M="}"#,
    ),
    (
        "c2s.0",
        r#"{"t":"join","c":1,"node":"node-a","designation":"app-a","addr":"203.0.113.9:50211","max_frame":65536,"ext":["response_too_large"]}"#,
    ),
    (
        "c2s.1",
        r#"{"t":"join","c":2,"node":"node-b","designation":"app-b","addr":"[2001:db8::7]:443","max_frame":1024}"#,
    ),
    (
        "c2s.2",
        r#"{"t":"creq","c":1,"id":1,"d":{"op":"add","a":1,"b":2}}"#,
    ),
    (
        "c2s.3",
        r#"{"t":"creq","c":2,"id":1,"d":{"op":"add","a":3,"b":4}}"#,
    ),
    (
        "c2s.4",
        r#"{"t":"leave","c":2,"code":"gone","reason":"connection reset"}"#,
    ),
    ("s2c.0", r#"{"t":"cres","c":2,"id":1,"d":7}"#),
    ("s2c.1", r#"{"t":"cres","c":1,"id":1,"d":3}"#),
    (
        "s2c.2",
        r#"{"t":"cmsg","c":1,"d":{"op":"news","text":"hi"}}"#,
    ),
    ("s2c.3", r#"{"t":"creq","c":2,"id":1,"d":{"op":"status"}}"#),
    ("s2c.4", r#"{"t":"cmsg","c":2,"d":{"op":"late"}}"#),
];

/// The relay secret as a [`Secret`].
pub fn relay_secret() -> Secret {
    Secret::from_bytes(hex::decode(RELAY_SECRET).unwrap()).unwrap()
}

/// Every vector by the name it has in PROTOCOL.md.
pub fn vectors() -> Vec<(String, &'static str)> {
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
    v.push(("relay.secret".to_owned(), RELAY_SECRET));
    for (k, l) in RELAY_SESSION {
        v.push((format!("relay.{k}"), l));
    }
    v
}

/// The `name = value` lines of the ```text blocks in PROTOCOL.md's
/// "Test vectors" section.
pub fn document_vectors() -> BTreeMap<String, String> {
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

/// The 32 bytes a hex vector names.
pub fn hex32(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

/// The vector secret.
pub fn secret() -> Secret {
    Secret::from_hex(SECRET).unwrap()
}

/// The session keys of the vector transcript (`transcript_hash`).
pub fn vector_keys() -> crypto::SessionKeys {
    crypto::SessionKeys::derive(&secret(), &hex32(TRANSCRIPT_HASH))
}

/// The vector channel binding's bytes.
pub fn channel_binding() -> Vec<u8> {
    hex::decode(CHANNEL_BINDING).unwrap()
}

/// `bytes` in standard base64, as frames carry them.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The `auth` line the documented formula gives for transcript hash `th`.
pub fn auth_line(th: &[u8; 32]) -> String {
    let proof = b64(&crypto::client_proof(&secret(), th));
    format!(r#"{{"t":"auth","proof":"{proof}"}}"#)
}

/// The `ok` line the documented formula gives for transcript hash `th`.
pub fn ok_line(th: &[u8; 32]) -> String {
    let proof = b64(&crypto::server_proof(&secret(), th));
    format!(r#"{{"t":"ok","proof":"{proof}"}}"#)
}

/// Prints a generated vector as PROTOCOL.md writes it, when
/// `JSONLINK_PRINT_VECTORS` is set (to regenerate the document after a
/// deliberate change: run the vector tests with `--nocapture`).
pub fn show(name: &str, value: &str) {
    if std::env::var_os("JSONLINK_PRINT_VECTORS").is_some() {
        eprintln!("{name} = {value}");
    }
}

/// The vector sessions' client configuration: the vector secret, identity
/// `node-c1` / `vector-client`, the session's client RNG seed, no keepalive.
pub fn vector_client() -> Config {
    vector_config(
        Identity::new("node-c1", "vector-client"),
        SESSION_CLIENT_SEED,
    )
}

/// The vector sessions' server configuration: the vector secret, identity
/// `node-s1` / `vector-server`, the session's server RNG seed, no keepalive.
pub fn vector_server() -> Config {
    vector_config(
        Identity::new("node-s1", "vector-server"),
        SESSION_SERVER_SEED,
    )
}

/// A recording pair of [`vector_client`] and [`vector_server`] as `client`
/// and `server` adjust them, both sides seeing `binding`, before its
/// handshake; virtual time starts now.
pub fn vector_pair(
    binding: &[u8],
    client: impl FnOnce(&mut Config),
    server: impl FnOnce(&mut Config),
) -> Pair {
    let (mut c, mut s) = (vector_client(), vector_server());
    client(&mut c);
    server(&mut s);
    let mut p = Pair::new(Instant::now(), c, s, binding.to_vec(), binding.to_vec());
    p.record();
    p
}

fn vector_config(identity: Identity, seed: &str) -> Config {
    let mut c = Config::new(secret(), identity);
    c.rng_seed = Some(hex32(seed));
    c.keepalive = None;
    c
}

/// The text of the PROTOCOL.md section whose heading starts with `heading`,
/// up to the next heading.
pub fn section(heading: &str) -> &'static str {
    let start = DOC.find(&format!("\n{heading}")).expect("section") + 1;
    let rest = &DOC[start..];
    let end = rest[1..].find("\n#").map_or(rest.len(), |i| i + 1);
    &rest[..end]
}
