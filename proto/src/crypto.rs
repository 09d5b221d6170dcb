//! Handshake proofs, session-key derivation, frame signing and sealing.
//!
//! Every function here is deterministic given its inputs, so PROTOCOL.md's
//! test vectors can be checked against it byte for byte.

use std::fmt;

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, InnerIvInit};
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::ProtocolError;
use crate::{Secret, SignAlg};

type HmacSha256 = hmac::Hmac<Sha256>;
type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

pub(crate) const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Length of handshake nonces in bytes.
pub const NONCE_LEN: usize = 32;
/// Length of an HMAC-SHA256 tag in bytes.
pub const TAG_LEN: usize = 32;
/// Length of an AES-CBC IV in bytes.
pub const IV_LEN: usize = 16;
/// Length of base64(tag).
pub(crate) const TAG_B64_LEN: usize = 44;
/// Length of an AES-256-GMAC tag in bytes.
pub const GMAC_TAG_LEN: usize = 16;
/// Length of base64(GMAC tag).
pub(crate) const GMAC_TAG_B64_LEN: usize = 24;
/// Length of base64(iv).
pub(crate) const IV_B64_LEN: usize = 24;

const TRANSCRIPT_LABEL: &[u8] = b"jsonlink/1 transcript";
const CLIENT_PROOF_LABEL: &[u8] = b"jsonlink/1 client proof";
const SERVER_PROOF_LABEL: &[u8] = b"jsonlink/1 server proof";
/// Domain byte prefixed to the MAC input of a signed frame.
const SIGNED_DOMAIN: u8 = 0x01;
/// Domain byte prefixed to the MAC input of a sealed frame.
const SEALED_DOMAIN: u8 = 0x02;

/// SHA-256 over the handshake transcript: the exact bytes of the client's
/// `hello` line and the server's `challenge` line (without `\n`), and the
/// channel binding, each length-prefixed (u32 big-endian):
///
/// `SHA256("jsonlink/1 transcript" || len(hello) || hello || len(challenge) || challenge || len(cb) || cb)`
pub fn transcript_hash(hello: &[u8], challenge: &[u8], channel_binding: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(TRANSCRIPT_LABEL);
    for part in [hello, challenge, channel_binding] {
        h.update((part.len() as u32).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

fn proof(secret: &Secret, label: &[u8], transcript: &[u8; 32]) -> [u8; 32] {
    let mut m = hmac_key(secret.expose());
    m.update(label);
    m.update(transcript);
    m.finalize().into_bytes().into()
}

fn hmac_key(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; the error is unreachable.
    <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

/// The client's proof: `HMAC-SHA256(secret, "jsonlink/1 client proof" || transcript)`.
pub fn client_proof(secret: &Secret, transcript: &[u8; 32]) -> [u8; 32] {
    proof(secret, CLIENT_PROOF_LABEL, transcript)
}

/// The server's proof: `HMAC-SHA256(secret, "jsonlink/1 server proof" || transcript)`.
pub fn server_proof(secret: &Secret, transcript: &[u8; 32]) -> [u8; 32] {
    proof(secret, SERVER_PROOF_LABEL, transcript)
}

/// Verifies a proof in constant time (`Mac::verify_slice`).
pub(crate) fn verify_proof(
    secret: &Secret,
    client: bool,
    transcript: &[u8; 32],
    candidate: &[u8],
) -> bool {
    let mut m = hmac_key(secret.expose());
    m.update(if client {
        CLIENT_PROOF_LABEL
    } else {
        SERVER_PROOF_LABEL
    });
    m.update(transcript);
    m.verify_slice(candidate).is_ok()
}

/// A 32-byte symmetric key, zeroized on drop, redacted in `Debug`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Key([u8; 32]);

impl Key {
    /// The raw key bytes (for test vectors).
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Session keys for one direction.
#[derive(Clone, Debug)]
pub struct DirectionKeys {
    /// HMAC-SHA256 key for signing / encrypt-then-MAC.
    pub mac: Key,
    /// AES-256 key for sealing.
    pub enc: Key,
}

/// All four session keys, derived with HKDF-SHA256:
/// `PRK = HKDF-Extract(salt = transcript, IKM = secret)`, then
/// `HKDF-Expand(PRK, "jsonlink/1 <dir> <purpose>", 32)` for
/// dir ∈ {c2s, s2c}, purpose ∈ {mac, enc}.
#[derive(Clone, Debug)]
pub struct SessionKeys {
    /// Keys for frames the client sends.
    pub c2s: DirectionKeys,
    /// Keys for frames the server sends.
    pub s2c: DirectionKeys,
}

impl SessionKeys {
    /// Derives the session keys.
    pub fn derive(secret: &Secret, transcript: &[u8; 32]) -> Self {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(transcript), secret.expose());
        let key = |info: &[u8]| {
            let mut k = [0u8; 32];
            // 32 bytes is far below HKDF's 255*32 maximum: unreachable.
            hk.expand(info, &mut k).unwrap_or_else(|_| unreachable!());
            Key(k)
        };
        Self {
            c2s: DirectionKeys {
                mac: key(b"jsonlink/1 c2s mac"),
                enc: key(b"jsonlink/1 c2s enc"),
            },
            s2c: DirectionKeys {
                mac: key(b"jsonlink/1 s2c mac"),
                enc: key(b"jsonlink/1 s2c enc"),
            },
        }
    }
}

/// One direction's frame MAC, keyed once per session.
///
/// HMAC-SHA256: the key schedule (inner and outer pad hashes) is computed
/// here and cloned per frame, which halves the hashing work for small
/// frames. AES-256-GMAC: the AES key schedule and the GHASH key (with its
/// powers) are computed here; a frame costs one AES block and GHASH over
/// the frame, fed to GHASH in groups of four blocks (PROTOCOL.md §10.3
/// gives the construction: AES-256-GCM with an empty plaintext).
/// Both zeroize their keyed state on drop. Use it with [`sign_with`] and
/// [`open_signed_with`] to sign or verify many frames with one key.
#[derive(Clone)]
pub struct FrameMac(Keyed);

#[derive(Clone)]
enum Keyed {
    Hmac(HmacSha256),
    Gmac(Box<Gmac>),
}

/// AES-256-GMAC, i.e. AES-256-GCM with an empty plaintext (NIST SP
/// 800-38D): `tag = GHASH_H(pad(A) || len64(A)·8 || 0^64) XOR AES_K(J0)`,
/// with `H = AES_K(0^128)` and `J0 = nonce || 0x00000001` for the 12-byte
/// nonce.
///
/// Built from the `aes` and `polyval` crates rather than `aes-gcm` or
/// `ghash`, because for the short frames a link mostly carries that costs
/// less: for a 97-byte frame ~520 instructions (callgrind), against ~730
/// with `aes` and `ghash`, which were already cheaper than `aes-gcm`:
///
/// - GHASH is computed as POLYVAL by the identity of RFC 8452, Appendix A:
///   `GHASH(H, X…) = rev(POLYVAL(mulX(rev(H)), rev(X)…))`, where `rev`
///   reverses the 16 bytes of a block. Reversing a block is one byte swap
///   of a `u128` here, done while the block is copied anyway.
/// - POLYVAL is fed whole groups of four blocks, which its CLMUL backend
///   multiplies by H⁴…H¹ with one reduction per group, instead of one
///   reduction per block for the remainder. Leading zero blocks pad the
///   input to a multiple of four, which leaves the hash unchanged (its
///   accumulator starts at zero and `(0 ⊕ 0)·H = 0`).
///
/// The tests check every length from 0 to 300 bytes, and random inputs up
/// to 5,000 bytes, against `aes-gcm` itself.
#[derive(Clone)]
struct Gmac {
    aes: aes::Aes256,
    /// POLYVAL keyed with `mulX(rev(H))`.
    polyval: polyval::Polyval,
}

/// A 16-byte block with its bytes in reverse order.
fn reversed(block: &[u8; 16]) -> polyval::Block {
    u128::from_be_bytes(*block).to_le_bytes().into()
}

impl Gmac {
    fn new(key: &[u8; 32]) -> Self {
        use aes::cipher::BlockCipherEncrypt as _;
        use polyval::hazmat::FieldElement;
        let aes = aes::Aes256::new(&(*key).into());
        let mut h = aes::Block::default();
        aes.encrypt_block(&mut h);
        let mut k = FieldElement::from(reversed(&h.into())).mulx();
        h.zeroize();
        let polyval = polyval::Polyval::new(&k.into());
        k.zeroize();
        Self { aes, polyval }
    }

    /// The tag over `aad` with the nonce `domain || 000000 || u64be(seq)`.
    fn tag(&self, seq: u64, aad: &[u8]) -> [u8; GMAC_TAG_LEN] {
        use aes::cipher::BlockCipherEncrypt as _;
        use polyval::universal_hash::{UhfBackend as _, UniversalHash as _};

        // J0 = nonce || 0x00000001.
        let j0 = (u128::from(SIGNED_DOMAIN) << 120) | (u128::from(seq) << 32) | 1;
        let mut mask = aes::Block::from(j0.to_be_bytes());
        self.aes.encrypt_block(&mut mask);

        // The blocks hashed: the frame's whole blocks, its last partial
        // block padded with zeros, and the length block (the bit length of
        // A, then 64 zero bits for the empty ciphertext), preceded by as
        // many zero blocks as make a multiple of four.
        let (whole, tail) = aad.as_chunks::<16>();
        let mut last = [0u8; 16];
        if let Some(dst) = last.get_mut(..tail.len()) {
            dst.copy_from_slice(tail);
        }
        let bits = (aad.len() as u64).wrapping_mul(8);
        let lengths = (u128::from(bits) << 64).to_be_bytes();
        let count = whole.len() + usize::from(!tail.is_empty()) + 1;

        let mut polyval = self.polyval.clone();
        let mut group = polyval::ParBlocks::default();
        let mut n = (4 - count % 4) % 4;
        let mut push = |block: &[u8; 16]| {
            if let Some(slot) = group.get_mut(n) {
                *slot = reversed(block);
            }
            n += 1;
            if n == 4 {
                polyval.proc_par_blocks(&group);
                n = 0;
            }
        };
        whole.iter().for_each(&mut push);
        if !tail.is_empty() {
            push(&last);
        }
        push(&lengths);
        // The count above always ends on a whole group.
        debug_assert_eq!(n, 0);
        // The hash and the mask each reveal key material; only their XOR
        // may leave.
        let mut hash: [u8; 16] = polyval.finalize().into();
        let tag = u128::from_le_bytes(hash) ^ u128::from_be_bytes(mask.into());
        hash.zeroize();
        mask.zeroize();
        tag.to_be_bytes()
    }
}

impl fmt::Debug for FrameMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FrameMac({}, <redacted>)", self.alg())
    }
}

impl FrameMac {
    /// Keys `alg` with one direction's MAC key.
    pub fn new(alg: SignAlg, key: &Key) -> Self {
        match alg {
            SignAlg::Aes256Gmac => Self(Keyed::Gmac(Box::new(Gmac::new(&key.0)))),
            SignAlg::HmacSha256 => Self(Keyed::Hmac(hmac_key(&key.0))),
        }
    }

    /// The algorithm.
    pub fn alg(&self) -> SignAlg {
        match self.0 {
            Keyed::Hmac(_) => SignAlg::HmacSha256,
            Keyed::Gmac(_) => SignAlg::Aes256Gmac,
        }
    }

    /// The signed-frame tag over `inner` at `seq`, written into `tag`;
    /// returns its length.
    fn sign(&self, seq: u64, inner: &[u8], tag: &mut [u8; TAG_LEN]) -> usize {
        match &self.0 {
            Keyed::Hmac(m) => {
                let t = hmac_start(m, SIGNED_DOMAIN, seq, &[inner])
                    .finalize()
                    .into_bytes();
                tag.copy_from_slice(&t);
                TAG_LEN
            }
            Keyed::Gmac(g) => {
                let n = GMAC_TAG_LEN;
                if let Some(dst) = tag.get_mut(..n) {
                    dst.copy_from_slice(&g.tag(seq, inner));
                }
                n
            }
        }
    }

    /// Length of this MAC's tag in base64.
    fn tag_b64_len(&self) -> usize {
        match self.0 {
            Keyed::Hmac(_) => TAG_B64_LEN,
            Keyed::Gmac(_) => GMAC_TAG_B64_LEN,
        }
    }

    /// Checks `tag_b64`, the tag as the frame carries it (base64), over
    /// `inner` at `seq`, in constant time.
    ///
    /// The expected tag is encoded and the two texts compared, which is
    /// cheaper for a 24- or 44-character tag than decoding the received
    /// one, and accepts exactly the same texts as a strict decode would:
    /// only the canonical encoding of the right tag.
    fn verify(&self, seq: u64, inner: &[u8], tag_b64: &[u8]) -> bool {
        let mut text = [0u8; TAG_B64_LEN];
        let m = self.tag_text(seq, inner, &mut text);
        ct_eq(text.get(..m).unwrap_or_default(), tag_b64)
    }

    /// The tag over `inner` at `seq` as a signed frame carries it (canonical
    /// base64), written into `text`; returns its length.
    fn tag_text(&self, seq: u64, inner: &[u8], text: &mut [u8; TAG_B64_LEN]) -> usize {
        let mut tag = [0u8; TAG_LEN];
        let n = self.sign(seq, inner, &mut tag);
        encode_tag(tag.get(..n).unwrap_or_default(), text)
    }
}

/// The base64 alphabet of RFC 4648 §4.
const B64_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Writes the canonical base64 of `tag` (with `=` padding, as [`B64`]
/// would) into `out` and returns its length; `tag` is at most 33 bytes (a
/// tag is 16 or 32).
///
/// For so short an input the `base64` crate's per-call set-up is most of
/// its cost: about 300 instructions for a 16-byte tag, profiled, against
/// about 190 here, on every frame a signed link sends or receives. The
/// tests check this against [`B64`] at every length up to 33 bytes.
fn encode_tag(tag: &[u8], out: &mut [u8; TAG_B64_LEN]) -> usize {
    let sym = |v: u32| B64_ALPHABET.get((v & 63) as usize).copied().unwrap_or(b'=');
    let (triples, rest) = tag.as_chunks::<3>();
    let mut quads = out.as_chunks_mut::<4>().0.iter_mut();
    let mut n = 0;
    for ([a, b, c], q) in triples.iter().zip(&mut quads) {
        let v = u32::from(*a) << 16 | u32::from(*b) << 8 | u32::from(*c);
        *q = [sym(v >> 18), sym(v >> 12), sym(v >> 6), sym(v)];
        n += 4;
    }
    if let ([a, rest @ ..], Some(q)) = (rest, quads.next()) {
        let b = rest.first().copied();
        let v = u32::from(*a) << 16 | u32::from(b.unwrap_or(0)) << 8;
        let third = if b.is_some() { sym(v >> 6) } else { b'=' };
        *q = [sym(v >> 18), sym(v >> 12), third, b'='];
        n += 4;
    }
    n
}

/// Whether `a` and `b` are equal, in time that depends only on their
/// lengths (which are public here): the differences of all eight-byte
/// words are OR-ed together without branching and the result is tested
/// once with `subtle` (its per-byte comparison of a slice, one
/// optimisation barrier per byte, cost ~30 ns on a 16-byte tag).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    if a.len() != b.len() {
        return false;
    }
    let (wa, ra) = a.as_chunks::<8>();
    let (wb, rb) = b.as_chunks::<8>();
    let mut diff = 0u64;
    for (x, y) in wa.iter().zip(wb) {
        diff |= u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y);
    }
    for (x, y) in ra.iter().zip(rb) {
        diff |= u64::from(x ^ y);
    }
    diff.ct_eq(&0).into()
}

/// A keyed HMAC over `domain || u64be(seq) || parts`, ready to finalize.
fn hmac_start(keyed: &HmacSha256, domain: u8, seq: u64, parts: &[&[u8]]) -> HmacSha256 {
    let mut m = keyed.clone();
    m.update(&[domain]);
    m.update(&seq.to_be_bytes());
    for p in parts {
        m.update(p);
    }
    m
}

/// One direction's sealing state, prepared once per session: the keyed
/// HMAC and the expanded AES-256 key.
#[derive(Clone)]
pub(crate) struct Sealer {
    mac: HmacSha256,
    aes: aes::Aes256,
}

impl Sealer {
    pub(crate) fn new(keys: &DirectionKeys) -> Self {
        Self {
            mac: hmac_key(&keys.mac.0),
            aes: aes::Aes256::new(&keys.enc.0.into()),
        }
    }
}

/// Appends a signed frame line (without `\n`) to `out`:
/// `{"q":<seq>,"s":"<base64 tag>","f":<inner>}` where, for
/// [`SignAlg::HmacSha256`], `tag = HMAC-SHA256(mac_key, 0x01 || u64be(seq) || inner)`
/// and, for [`SignAlg::Aes256Gmac`], `tag` is the 16-byte AES-256-GCM tag
/// under `mac_key` with nonce `0x01 || 0x000000 || u64be(seq)`, no
/// plaintext and `inner` as associated data.
pub fn sign_frame(alg: SignAlg, key: &Key, seq: u64, inner: &[u8], out: &mut Vec<u8>) {
    sign_with(&FrameMac::new(alg, key), seq, inner, out);
}

/// [`sign_frame`] with a prepared [`FrameMac`].
pub fn sign_with(mac: &FrameMac, seq: u64, inner: &[u8], out: &mut Vec<u8>) {
    let mut text = [0u8; TAG_B64_LEN];
    let m = mac.tag_text(seq, inner, &mut text);
    let mut digits = itoa::Buffer::new();
    let seq = digits.format(seq).as_bytes();
    // `{"q":`, `,"s":"`, `","f":` and `}`.
    out.reserve(18 + seq.len() + m + inner.len());
    out.extend_from_slice(b"{\"q\":");
    out.extend_from_slice(seq);
    out.extend_from_slice(b",\"s\":\"");
    out.extend_from_slice(text.get(..m).unwrap_or_default());
    out.extend_from_slice(b"\",\"f\":");
    out.extend_from_slice(inner);
    out.push(b'}');
}

/// Appends a sealed frame line (without `\n`) to `out`:
/// `{"q":<seq>,"iv":"<b64 iv>","s":"<b64 tag>","c":"<b64 ct>"}` where
/// `ct = AES-256-CBC-PKCS7(enc_key, iv, inner)` and
/// `tag = HMAC-SHA256(mac_key, 0x02 || u64be(seq) || iv || ct)`.
pub fn seal_frame(
    keys: &DirectionKeys,
    seq: u64,
    iv: &[u8; IV_LEN],
    inner: &[u8],
    out: &mut Vec<u8>,
) {
    seal_with(&Sealer::new(keys), seq, iv, inner, out);
}

pub(crate) fn seal_with(
    sealer: &Sealer,
    seq: u64,
    iv: &[u8; IV_LEN],
    inner: &[u8],
    out: &mut Vec<u8>,
) {
    let ct = Aes256CbcEnc::inner_iv_init(sealer.aes.clone(), &(*iv).into())
        .encrypt_padded_vec::<Pkcs7>(inner);
    let tag = hmac_start(&sealer.mac, SEALED_DOMAIN, seq, &[iv, &ct])
        .finalize()
        .into_bytes();
    out.extend_from_slice(b"{\"q\":");
    push_u64(out, seq);
    out.extend_from_slice(b",\"iv\":\"");
    push_b64(out, iv);
    out.extend_from_slice(b"\",\"s\":\"");
    push_b64(out, &tag);
    out.extend_from_slice(b"\",\"c\":\"");
    push_b64(out, &ct);
    out.extend_from_slice(b"\"}");
}

/// Verifies a signed line; returns `(seq, inner)` borrowed from `line`.
/// Any deviation from the exact layout is [`ProtocolError::Integrity`].
pub fn open_signed<'a>(
    alg: SignAlg,
    key: &Key,
    line: &'a [u8],
) -> Result<(u64, &'a [u8]), ProtocolError> {
    open_signed_with(&FrameMac::new(alg, key), line)
}

/// [`open_signed`] with a prepared [`FrameMac`].
pub fn open_signed_with<'a>(
    mac: &FrameMac,
    line: &'a [u8],
) -> Result<(u64, &'a [u8]), ProtocolError> {
    // The error is built only on failure (this runs once per frame).
    match parse_signed(mac, line) {
        Some(ok) => Ok(ok),
        None => Err(ProtocolError::Integrity),
    }
}

fn parse_signed<'a>(mac: &FrameMac, line: &'a [u8]) -> Option<(u64, &'a [u8])> {
    let mut c = Cursor(line);
    c.lit(b"{\"q\":")?;
    let seq = c.u64()?;
    c.lit(b",\"s\":\"")?;
    let tag = c.take(mac.tag_b64_len())?;
    c.lit(b"\",\"f\":")?;
    let inner = c.0.strip_suffix(b"}")?;
    mac.verify(seq, inner, tag).then_some((seq, inner))
}

/// Verifies then decrypts a sealed line; returns `(seq, plaintext)`.
/// The MAC is checked before any decryption; every failure is
/// [`ProtocolError::Integrity`].
pub fn open_sealed(keys: &DirectionKeys, line: &[u8]) -> Result<(u64, Vec<u8>), ProtocolError> {
    open_sealed_with(&Sealer::new(keys), line)
}

pub(crate) fn open_sealed_with(
    sealer: &Sealer,
    line: &[u8],
) -> Result<(u64, Vec<u8>), ProtocolError> {
    match parse_sealed(sealer, line) {
        Some(ok) => Ok(ok),
        None => Err(ProtocolError::Integrity),
    }
}

fn parse_sealed(sealer: &Sealer, line: &[u8]) -> Option<(u64, Vec<u8>)> {
    let mut c = Cursor(line);
    c.lit(b"{\"q\":")?;
    let seq = c.u64()?;
    c.lit(b",\"iv\":\"")?;
    let iv = c.take(IV_B64_LEN)?;
    c.lit(b"\",\"s\":\"")?;
    let tag = c.take(TAG_B64_LEN)?;
    c.lit(b"\",\"c\":\"")?;
    let ct = c.0.strip_suffix(b"\"}")?;
    let iv: [u8; IV_LEN] = decode_fixed(iv)?;
    let tag: [u8; TAG_LEN] = decode_fixed(tag)?;
    let mut buf = B64.decode(ct).ok()?;
    hmac_start(&sealer.mac, SEALED_DOMAIN, seq, &[&iv, &buf])
        .verify_slice(&tag)
        .ok()?;
    #[cfg(test)]
    tests::DECRYPTS.with(|c| c.set(c.get() + 1));
    let n = Aes256CbcDec::inner_iv_init(sealer.aes.clone(), &iv.into())
        .decrypt_padded::<Pkcs7>(&mut buf)
        .ok()?
        .len();
    buf.truncate(n);
    Some((seq, buf))
}

/// Decodes base64 into exactly `N` bytes, without allocating.
fn decode_fixed<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    let mut buf = [0u8; 48];
    let n = B64.decode_slice(text, &mut buf).ok()?;
    if n != N {
        return None;
    }
    let mut out = [0u8; N];
    out.copy_from_slice(buf.get(..N)?);
    Some(out)
}

pub(crate) fn push_b64(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    out.resize(
        start + base64::encoded_len(bytes.len(), true).unwrap_or(0),
        0,
    );
    let n = B64
        .encode_slice(bytes, out.get_mut(start..).unwrap_or_default())
        .unwrap_or(0);
    out.truncate(start + n);
}

pub(crate) fn push_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// A strict left-to-right matcher over a protected frame's fixed layout.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn lit(&mut self, l: &[u8]) -> Option<()> {
        self.0 = self.0.strip_prefix(l)?;
        Some(())
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    /// A decimal u64 without sign, leading zeros or overflow.
    fn u64(&mut self) -> Option<u64> {
        let digits = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
        let (d, rest) = self.0.split_at(digits);
        if d.is_empty() || (d.len() > 1 && d.first() == Some(&b'0')) {
            return None;
        }
        let mut v: u64 = 0;
        for b in d {
            v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        }
        self.0 = rest;
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        pub(super) static DECRYPTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// A sealed line with arbitrary ciphertext and a valid or invalid MAC.
    fn forge(keys: &DirectionKeys, ct: &[u8], valid_mac: bool) -> Vec<u8> {
        let iv = [5u8; IV_LEN];
        let mut tag = hmac_start(&hmac_key(&keys.mac.0), SEALED_DOMAIN, 0, &[&iv, ct])
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
            Aes256CbcEnc::new(&k.c2s.enc.0.into(), &[5u8; IV_LEN].into())
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

    #[test]
    fn u64_parsing_is_strict() {
        for bad in [&b"01"[..], b"", b"18446744073709551616", b"-1"] {
            assert!(Cursor(bad).u64().is_none(), "{bad:?}");
        }
        assert_eq!(Cursor(b"18446744073709551615").u64().unwrap(), u64::MAX);
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
    fn encode_tag_matches_the_base64_crate_at_every_length() {
        // Every length a tag could have up to the buffer's 33 bytes, with
        // bytes that reach every 6-bit value, and all-zero and all-one
        // tags.
        for len in 0..=33usize {
            for fill in [0u8, 0xff, 0x5a] {
                let data: Vec<u8> = (0..len)
                    .map(|i| (i as u8).wrapping_mul(73).wrapping_add(fill))
                    .collect();
                let mut text = [0u8; TAG_B64_LEN];
                let n = encode_tag(&data, &mut text);
                assert_eq!(&text[..n], B64.encode(&data).as_bytes(), "length {len}");
            }
        }
    }

    #[test]
    fn a_non_canonical_tag_encoding_is_refused() {
        // The last data character of a 16-byte tag carries 4 tag bits and
        // 2 zero bits; setting a zero bit keeps the decoded bytes (for a
        // lenient decoder) but is not the canonical text.
        const ALPHABET: &[u8] = B64_ALPHABET;
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
        fn encode_tag_matches_the_base64_crate(
            tag in proptest::collection::vec(proptest::num::u8::ANY, 0..=33),
        ) {
            let mut text = [0u8; TAG_B64_LEN];
            let n = encode_tag(&tag, &mut text);
            let expected = B64.encode(&tag);
            proptest::prop_assert_eq!(&text[..n], expected.as_bytes());
        }

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
}
