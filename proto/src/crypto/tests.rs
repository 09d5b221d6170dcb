//! The unit tests of signing, sealing and GMAC, against the `aes-gcm`
//! crate and forged frames.

use base64::Engine as _;
use hmac::Mac as _;

use super::gmac::Gmac;
use super::seal::Aes256CbcEnc;
use super::sign::ct_eq;
use super::*;
use crate::error::ProtocolError;
use crate::wire::encode::push_b64;
use crate::wire::{self, B64};
use crate::{Secret, SignAlg};

thread_local! {
    /// Decryptions so far on this thread: none may happen before a MAC verifies.
    pub(super) static DECRYPTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A sealed line with arbitrary ciphertext and a valid or invalid MAC.
fn forge(keys: &DirectionKeys, ct: &[u8], valid_mac: bool) -> Vec<u8> {
    let iv = [5u8; IV_LEN];
    let mut tag = hmac_start(&hmac_key(keys.mac.expose()), SEALED_DOMAIN, 0, &[&iv, ct])
        .finalize()
        .into_bytes();
    if !valid_mac {
        tag[0] ^= 1;
    }
    let mut out = Vec::new();
    out.extend_from_slice(b"{\"q\":0,\"iv\":\"");
    push_b64(&mut out, &iv);
    out.extend_from_slice(b"\",\"s\":\"");
    push_b64(&mut out, &tag);
    out.extend_from_slice(b"\",\"c\":\"");
    push_b64(&mut out, ct);
    out.extend_from_slice(b"\"}");
    out
}

#[test]
fn s4_bad_padding_and_bad_mac_are_the_same_error_and_mac_comes_first() {
    let k = keys();
    // Ciphertext whose plaintext has invalid PKCS#7 padding: encrypt a
    // block ending in 0x00 without padding.
    let block = [0u8; 16];
    let ct = {
        use aes::cipher::BlockModeEncrypt as _;
        use aes::cipher::KeyIvInit as _;
        let mut buf = block;
        Aes256CbcEnc::new(&(*k.c2s.enc.expose()).into(), &[5u8; IV_LEN].into())
            .encrypt_padded::<aes::cipher::block_padding::NoPadding>(&mut buf, 16)
            .unwrap()
            .to_vec()
    };
    let before = DECRYPTS.with(|c| c.get());
    let bad_mac = open_sealed(&k.c2s, &forge(&k.c2s, &ct, false));
    assert_eq!(
        DECRYPTS.with(|c| c.get()),
        before,
        "no decryption before the MAC verifies"
    );
    let bad_pad = open_sealed(&k.c2s, &forge(&k.c2s, &ct, true));
    assert_eq!(DECRYPTS.with(|c| c.get()), before + 1);
    assert_eq!(bad_mac, Err(ProtocolError::Integrity));
    assert_eq!(bad_pad, Err(ProtocolError::Integrity));
    assert_eq!(bad_mac, bad_pad);
}

fn keys() -> SessionKeys {
    SessionKeys::derive(&Secret::from_bytes(vec![7u8; 32]).unwrap(), &[1u8; 32])
}

#[test]
fn sign_roundtrip_and_layout() {
    let k = keys();
    for alg in SignAlg::ALL {
        let mut out = Vec::new();
        sign_frame(alg, &k.c2s.mac, 42, br#"{"t":"msg","d":1}"#, &mut out);
        let tag_b64 = base64::encoded_len(alg.tag_len(), true).unwrap();
        assert_eq!(out.len(), 2 + 4 + 2 + 5 + tag_b64 + 6 + 17 + 1, "{alg}");
        let (seq, inner) = open_signed(alg, &k.c2s.mac, &out).unwrap();
        assert_eq!(seq, 42);
        assert_eq!(inner, br#"{"t":"msg","d":1}"#);
        // Wrong direction key, the other algorithm, another sequence
        // number or a changed frame fail.
        assert_eq!(
            open_signed(alg, &k.s2c.mac, &out),
            Err(ProtocolError::Integrity)
        );
        let other = SignAlg::ALL.into_iter().find(|a| *a != alg).unwrap();
        assert_eq!(
            open_signed(other, &k.c2s.mac, &out),
            Err(ProtocolError::Integrity)
        );
        let moved = String::from_utf8(out.clone())
            .unwrap()
            .replacen("42", "43", 1);
        assert_eq!(
            open_signed(alg, &k.c2s.mac, moved.as_bytes()),
            Err(ProtocolError::Integrity)
        );
        let changed = String::from_utf8(out.clone())
            .unwrap()
            .replace(r#""d":1"#, r#""d":2"#);
        assert_eq!(
            open_signed(alg, &k.c2s.mac, changed.as_bytes()),
            Err(ProtocolError::Integrity)
        );
    }
}

#[test]
fn seal_roundtrip() {
    let k = keys();
    let mut out = Vec::new();
    seal_frame(&k.c2s, 0, &[9u8; 16], b"hello world", &mut out);
    let (seq, pt) = open_sealed(&k.c2s, &out).unwrap();
    assert_eq!((seq, pt.as_slice()), (0, &b"hello world"[..]));
}

/// The GMAC tag as `aes-gcm` computes it: AES-256-GCM over an empty
/// plaintext with the frame as associated data.
fn reference_gmac(key: &[u8; 32], seq: u64, aad: &[u8]) -> [u8; GMAC_TAG_LEN] {
    use aes_gcm::aead::{AeadInOut as _, KeyInit as _};
    let g = aes_gcm::Aes256Gcm::new(&(*key).into());
    let mut nonce = [0u8; 12];
    nonce[0] = SIGNED_DOMAIN;
    nonce[4..].copy_from_slice(&seq.to_be_bytes());
    let mut empty: [u8; 0] = [];
    g.encrypt_inout_detached(&nonce.into(), aad, (&mut empty[..]).into())
        .unwrap()
        .into()
}

#[test]
fn gmac_matches_aes_gcm_at_every_short_length() {
    // Every block-count residue mod 4, partial and whole tails, and
    // the group boundaries of `Gmac::tag` (0..=300 bytes).
    let key = [0x5a; 32];
    let mac = Gmac::new(&key);
    let data: Vec<u8> = (0..300u32).map(|i| (i * 31 + 7) as u8).collect();
    for len in 0..=data.len() {
        let seq = len as u64 * 0x0101_0101_0101;
        assert_eq!(
            mac.tag(seq, &data[..len]),
            reference_gmac(&key, seq, &data[..len]),
            "length {len}"
        );
    }
}

#[test]
fn a_non_canonical_tag_encoding_is_refused() {
    // The last data character of a 16-byte tag carries 4 tag bits and
    // 2 zero bits; setting a zero bit keeps the decoded bytes (for a
    // lenient decoder) but is not the canonical text.
    const ALPHABET: &[u8] = wire::B64_ALPHABET;
    let keys = keys();
    for alg in SignAlg::ALL {
        let mac = FrameMac::new(alg, &keys.c2s.mac);
        let mut line = Vec::new();
        sign_with(&mac, 7, br#"{"t":"msg","d":1}"#, &mut line);
        assert!(open_signed_with(&mac, &line).is_ok());
        let start = line.windows(5).position(|w| w == b"\"s\":\"").unwrap() + 5;
        let last = start + mac.tag_b64_len() - if alg == SignAlg::Aes256Gmac { 3 } else { 2 };
        let v = ALPHABET.iter().position(|c| *c == line[last]).unwrap();
        assert_eq!(v & 0b11, 0, "canonical: the spare bits are zero");
        let mut odd = line.clone();
        odd[last] = ALPHABET[v | 1];
        assert_eq!(
            open_signed_with(&mac, &odd).unwrap_err(),
            ProtocolError::Integrity,
            "{alg}"
        );
    }
}

#[test]
fn ct_eq_compares_every_byte_and_the_length() {
    let a: Vec<u8> = (0..44).collect();
    for len in [0, 1, 7, 8, 9, 24, 44] {
        assert!(ct_eq(&a[..len], &a[..len]));
        for i in 0..len {
            let mut b = a[..len].to_vec();
            b[i] ^= 0x80;
            assert!(!ct_eq(&a[..len], &b), "len {len}, byte {i}");
        }
    }
    assert!(!ct_eq(&a[..8], &a[..9]));
}

proptest::proptest! {
    #[test]
    fn gmac_matches_aes_gcm(
        key in proptest::array::uniform32(proptest::num::u8::ANY),
        seq in proptest::num::u64::ANY,
        data in proptest::collection::vec(proptest::num::u8::ANY, 0..5000),
    ) {
        let mac = FrameMac::new(SignAlg::Aes256Gmac, &Key(key));
        let mut tag = [0u8; TAG_LEN];
        let n = mac.sign(seq, &data, &mut tag);
        proptest::prop_assert_eq!(&tag[..n], &reference_gmac(&key, seq, &data)[..]);
        let text = B64.encode(&tag[..n]);
        proptest::prop_assert!(mac.verify(seq, &data, text.as_bytes()));
        let mut bad = tag;
        bad[(seq % n as u64) as usize] ^= 1 << (seq % 8);
        proptest::prop_assert!(!mac.verify(seq, &data, B64.encode(&bad[..n]).as_bytes()));
        proptest::prop_assert!(!mac.verify(seq, &data, &text.as_bytes()[..text.len() - 1]));
        proptest::prop_assert!(!mac.verify(seq.wrapping_add(1), &data, text.as_bytes()));
    }
}
