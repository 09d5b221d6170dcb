#![allow(clippy::disallowed_methods)] // tests take one real Instant as the base of virtual time
//! Fault cases S1–S6 of tests/faults/FAULTS.md: signed and sealed frames
//! that were flipped, stripped, replayed or forged, and secrets kept out of
//! every output.

mod common;

use std::time::Instant;

use common::*;
use jsonlink_proto::testing::{Pair, Who, client_config, server_config};
use jsonlink_proto::{CloseReason, ConnectionParams, Policy, ProtocolError};

#[test]
fn s1_every_bit_flip_of_a_protected_frame_is_detected() {
    for (sign, seal) in [(true, false), (false, true), (true, true)] {
        let mut base = protected(sign, seal);
        let w = client_wire(&mut base, |c| {
            c.send(&raw(r#"{"op":"x","v":[1,2]}"#)).unwrap()
        });
        let body_len = w.len() - 1; // not the final '\n'
        for bit in 0..body_len * 8 {
            let mut p = protected(sign, seal);
            let _ = client_wire(&mut p, |_| {});
            let mut t = w.clone();
            t[bit / 8] ^= 1 << (bit % 8);
            p.inject(Who::Server, &t);
            p.inject(Who::Server, b"\n");
            let r = closed_with(&p.server);
            assert!(
                matches!(r, CloseReason::Protocol(ProtocolError::Integrity)),
                "sign {sign} seal {seal} bit {bit}: {r:?}"
            );
            assert!(messages(&p.server).is_empty());
        }
    }
    record(
        "S1",
        "Protocol(Integrity) for every bit of signed, sealed and signed+sealed frames",
    );
}

#[test]
fn s2_missing_or_empty_tag_is_integrity() {
    for frame in [
        r#"{"t":"msg","d":1}"#.to_owned(),
        r#"{"q":0,"f":{"t":"msg","d":1}}"#.to_owned(),
        r#"{"q":0,"s":"","f":{"t":"msg","d":1}}"#.to_owned(),
        r#"{"f":{"t":"msg","d":1},"q":0,"s":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#
            .to_owned(),
    ] {
        let mut p = protected(true, false);
        p.inject(Who::Server, format!("{frame}\n").as_bytes());
        assert_eq!(
            closed_with(&p.server),
            CloseReason::Protocol(ProtocolError::Integrity),
            "{frame}"
        );
    }
    record("S2", "Protocol(Integrity)");
}

#[test]
fn s3_replay_swap_and_drop_are_detected() {
    for seal in [false, true] {
        let mut p = protected(true, seal);
        let w = client_wire(&mut p, |c| {
            c.send(&raw("1")).unwrap();
            c.send(&raw("2")).unwrap();
            c.send(&raw("3")).unwrap();
        });
        let lines: Vec<&[u8]> = w.split_inclusive(|b| *b == b'\n').collect();
        assert_eq!(lines.len(), 3);
        let scenarios: [(&[usize], u64, u64); 3] = [
            (&[0, 0], 1, 0), // replay
            (&[1, 0], 0, 1), // swap
            (&[0, 2], 1, 2), // drop
        ];
        for (order, expected, got) in scenarios {
            let mut q = protected(true, seal);
            let _ = client_wire(&mut q, |_| {});
            for i in order {
                q.inject(Who::Server, lines[*i]);
            }
            assert_eq!(
                closed_with(&q.server),
                CloseReason::Protocol(ProtocolError::Sequence { expected, got }),
                "seal {seal} order {order:?}"
            );
        }
    }
    record(
        "S3",
        "Protocol(Sequence { expected, got }) for replay, swap, drop",
    );
}

#[test]
fn s4_bad_padding_and_bad_mac_give_the_same_error() {
    use aes::cipher::{BlockModeEncrypt, KeyIvInit, block_padding::NoPadding};
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut outcomes = Vec::new();
    for valid_mac in [true, false] {
        let mut c = client_config(5);
        let mut sc = server_config(5);
        c.encryption = Policy::Required;
        sc.encryption = Policy::Required;
        let mut p = Pair::new(Instant::now(), c, sc, vec![9; 32], vec![9; 32]);
        p.record();
        p.connect();
        // Recompute the client's c2s keys from the recorded transcript with
        // the public derivation, to forge frames with a valid MAC.
        let first_line = |log: &[u8]| log.split(|b| *b == b'\n').next().unwrap().to_vec();
        let hello = first_line(p.client.log.as_deref().unwrap());
        let challenge = first_line(p.server.log.as_deref().unwrap());
        let th = jsonlink_proto::crypto::transcript_hash(&hello, &challenge, &[9; 32]);
        let keys = jsonlink_proto::crypto::SessionKeys::derive(&client_config(5).secret, &th).c2s;
        let iv = [5u8; 16];
        // One block of zeros: its "padding" byte is 0x00, invalid PKCS#7.
        let mut block = [0u8; 16];
        let ct = cbc::Encryptor::<aes::Aes256>::new(keys.enc.expose().into(), &iv.into())
            .encrypt_padded::<NoPadding>(&mut block, 16)
            .unwrap()
            .to_vec();
        let mut mac =
            <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(keys.mac.expose()).unwrap();
        mac.update(&[0x02]);
        mac.update(&0u64.to_be_bytes());
        mac.update(&iv);
        mac.update(&ct);
        let mut tag = mac.finalize().into_bytes().to_vec();
        if !valid_mac {
            tag[0] ^= 1;
        }
        let frame = format!(
            r#"{{"q":0,"iv":"{}","s":"{}","c":"{}"}}"#,
            b64.encode(iv),
            b64.encode(&tag),
            b64.encode(&ct)
        );
        p.inject(Who::Server, format!("{frame}\n").as_bytes());
        outcomes.push(closed_with(&p.server));
    }
    assert_eq!(outcomes[0], CloseReason::Protocol(ProtocolError::Integrity));
    assert_eq!(
        outcomes[0], outcomes[1],
        "bad padding and bad MAC are indistinguishable"
    );
    record(
        "S4",
        format!(
            "bad padding: {:?}; bad MAC: {:?} (MAC checked before decryption: crypto::tests::s4_*)",
            outcomes[0], outcomes[1]
        ),
    );
}

#[test]
fn s5_seal_is_randomized_and_malformed_ciphertext_is_integrity() {
    let mut p = protected(false, true);
    let mut seen_iv = std::collections::HashSet::new();
    let mut seen_ct = std::collections::HashSet::new();
    for _ in 0..200 {
        let w = client_wire(&mut p, |c| c.send(&raw(r#""same""#)).unwrap());
        let text = String::from_utf8(w).unwrap();
        let iv = text
            .split(r#""iv":""#)
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_owned();
        let ct = text
            .split(r#""c":""#)
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_owned();
        assert!(seen_iv.insert(iv));
        assert!(seen_ct.insert(ct));
    }
    let iv = "AAAAAAAAAAAAAAAAAAAAAA==";
    let tag = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    for ct in [
        "",
        "AAAA",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "!!!!",
        "AAAAAAAAAAAAAAAAAAAAAA==",
    ] {
        let mut q = protected(false, true);
        let frame = format!(r#"{{"q":0,"iv":"{iv}","s":"{tag}","c":"{ct}"}}"#);
        q.inject(Who::Server, format!("{frame}\n").as_bytes());
        assert_eq!(
            closed_with(&q.server),
            CloseReason::Protocol(ProtocolError::Integrity),
            "{ct}"
        );
    }
    record(
        "S5",
        "200 seals: 200 distinct IVs and ciphertexts; malformed ciphertext: Protocol(Integrity)",
    );
}

#[test]
fn s6_debug_and_errors_never_show_secrets() {
    let secret_hex = hex_of(&jsonlink_proto::testing::TEST_SECRET);
    let mut p = protected(true, true);
    let now = p.now;
    p.client.conn.request(now, &raw("1"), None).unwrap();
    p.drive();
    let cfg = client_config(1);
    let keys = jsonlink_proto::crypto::SessionKeys::derive(&cfg.secret, &[3; 32]);
    let outputs = [
        format!("{cfg:?}"),
        format!("{:?}", cfg.secret),
        format!("{keys:?}"),
        format!("{:?}", p.client.conn),
        format!("{:?}", p.server.events),
        format!("{:?}", ConnectionParams::default()),
        format!("{}", ProtocolError::AuthFailed),
        format!("{}", CloseReason::Protocol(ProtocolError::Integrity)),
    ];
    let needles = [
        secret_hex,
        String::from_utf8_lossy(&jsonlink_proto::testing::TEST_SECRET).into_owned(),
        hex_of(keys.c2s.mac.expose()),
        hex_of(keys.s2c.enc.expose()),
        format!("{:?}", jsonlink_proto::testing::TEST_SECRET),
        format!("{:?}", keys.c2s.mac.expose()),
    ];
    for o in &outputs {
        for n in &needles {
            assert!(!o.contains(n.as_str()), "{o} leaks {n}");
        }
    }
    assert!(format!("{:?}", cfg.secret).contains("redacted"));
    fn zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    zeroize_on_drop::<jsonlink_proto::Secret>();
    zeroize_on_drop::<jsonlink_proto::crypto::Key>();
    record(
        "S6",
        "no secret, key or proof bytes in Debug/Display/errors; Secret and Key zeroize on drop",
    );
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
