//! Signed frames (PROTOCOL.md §10.3): the frame MAC of either algorithm,
//! keyed once per session, and signing and verifying one frame. What runs
//! per frame is `#[inline]`, for the reason `wire::protected` gives.

use std::fmt;

use hmac::Mac;

use super::gmac::Gmac;
use super::{GMAC_TAG_LEN, HmacSha256, Key, SIGNED_DOMAIN, TAG_LEN, hmac_key, hmac_start};
use crate::error::ProtocolError;
use crate::{SignAlg, wire};

/// One direction's frame MAC, keyed once per session.
///
/// HMAC-SHA256: the key schedule (inner and outer pad hashes) is computed
/// here and cloned per frame, which halves the hashing work for small
/// frames. AES-256-GMAC: the AES key schedule and the GHASH key (with its
/// powers) are computed here; a frame costs one AES block and GHASH over
/// the frame, fed to GHASH in groups of four blocks (PROTOCOL.md §10.3
/// gives the construction: AES-256-GCM with an empty plaintext).
/// Both zeroize their keyed state on drop. Use it with [`sign_with`] and
/// [`open_signed_with`] to sign or verify many frames with one key (within
/// the crate, and for the benches through `internals`).
#[derive(Clone)]
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
pub struct FrameMac(Keyed);

#[derive(Clone)]
enum Keyed {
    Hmac(HmacSha256),
    Gmac(Box<Gmac>),
}

impl fmt::Debug for FrameMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FrameMac({}, <redacted>)", self.alg())
    }
}

#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
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
    #[inline]
    pub(super) fn sign(&self, seq: u64, inner: &[u8], tag: &mut [u8; TAG_LEN]) -> usize {
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
    #[inline]
    pub(super) fn tag_b64_len(&self) -> usize {
        match self.0 {
            Keyed::Hmac(_) => wire::TAG_B64_LEN,
            Keyed::Gmac(_) => wire::GMAC_TAG_B64_LEN,
        }
    }

    /// Checks `tag_b64`, the tag as the frame carries it (base64), over
    /// `inner` at `seq`, in constant time.
    ///
    /// The expected tag is encoded and the two texts compared, which is
    /// cheaper for a 24- or 44-character tag than decoding the received
    /// one, and accepts exactly the same texts as a strict decode would:
    /// only the canonical encoding of the right tag.
    #[inline]
    pub(super) fn verify(&self, seq: u64, inner: &[u8], tag_b64: &[u8]) -> bool {
        let mut text = [0u8; wire::TAG_B64_LEN];
        let m = self.tag_text(seq, inner, &mut text);
        ct_eq(text.get(..m).unwrap_or_default(), tag_b64)
    }

    /// The tag over `inner` at `seq` as a signed frame carries it (canonical
    /// base64), written into `text`; returns its length.
    #[inline]
    fn tag_text(&self, seq: u64, inner: &[u8], text: &mut [u8; wire::TAG_B64_LEN]) -> usize {
        let mut tag = [0u8; TAG_LEN];
        let n = self.sign(seq, inner, &mut tag);
        wire::tag_text(tag.get(..n).unwrap_or_default(), text)
    }
}

/// Whether `a` and `b` are equal, in time that depends only on their
/// lengths (which are public here): the differences of all eight-byte
/// words are OR-ed together without branching and the result is tested
/// once with `subtle` (whose comparison of slices puts an optimisation
/// barrier after every byte, which for a tag costs more than the rest of
/// the check).
#[inline]
pub(super) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
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
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
pub fn sign_with(mac: &FrameMac, seq: u64, inner: &[u8], out: &mut Vec<u8>) {
    let mut text = [0u8; wire::TAG_B64_LEN];
    let m = mac.tag_text(seq, inner, &mut text);
    wire::write_signed(out, seq, text.get(..m).unwrap_or_default(), inner);
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
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
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

#[inline]
fn parse_signed<'a>(mac: &FrameMac, line: &'a [u8]) -> Option<(u64, &'a [u8])> {
    let (seq, tag, inner) = wire::match_signed(line, mac.tag_b64_len())?;
    mac.verify(seq, inner, tag).then_some((seq, inner))
}
