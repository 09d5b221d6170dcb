//! The wrappers of protected frames (PROTOCOL.md §6.11, §10): a signed frame
//! `{"q":<seq>,"s":"<tag>","f":<inner>}` and a sealed frame
//! `{"q":<seq>,"iv":"<iv>","s":"<tag>","c":"<ciphertext>"}`, written and
//! matched byte for byte: a line in any other layout is not a protected
//! frame. What the tags are is [`crate::crypto`]'s business.
//!
//! What runs for every signed frame here and in `crypto` is `#[inline]`:
//! in other modules than their callers (other codegen units) the compiler
//! inlines such functions only when asked, as it did unasked when they
//! shared a file, and a signed frame then costs about 60 instructions more
//! (BENCHMARKS.md, "Shape change").

use base64::Engine as _;

use super::B64;
use super::encode::{push_b64, push_u64};
use super::envelope::canonical_u64;
use crate::crypto::{IV_LEN, TAG_LEN};

/// Length of base64(HMAC-SHA256 tag), the longest tag text.
pub(crate) const TAG_B64_LEN: usize = 44;
/// Length of base64(AES-256-GMAC tag).
pub(crate) const GMAC_TAG_B64_LEN: usize = 24;
/// Length of base64(iv).
const IV_B64_LEN: usize = 24;

/// Appends a signed frame line (without `\n`): `{"q":<seq>,"s":"<tag_text>","f":<inner>}`.
#[inline]
pub(crate) fn write_signed(out: &mut Vec<u8>, seq: u64, tag_text: &[u8], inner: &[u8]) {
    let mut digits = itoa::Buffer::new();
    let seq = digits.format(seq).as_bytes();
    // `{"q":`, `,"s":"`, `","f":` and `}`.
    out.reserve(18 + seq.len() + tag_text.len() + inner.len());
    out.extend_from_slice(b"{\"q\":");
    out.extend_from_slice(seq);
    out.extend_from_slice(b",\"s\":\"");
    out.extend_from_slice(tag_text);
    out.extend_from_slice(b"\",\"f\":");
    out.extend_from_slice(inner);
    out.push(b'}');
}

/// The sequence number, tag text (`tag_len` characters) and inner frame of
/// a signed line, borrowed from it; `None` for any other layout.
#[inline]
pub(crate) fn match_signed(line: &[u8], tag_len: usize) -> Option<(u64, &[u8], &[u8])> {
    let (mut c, seq) = Cursor::after_seq(line)?;
    c.lit(b",\"s\":\"")?;
    let tag = c.take(tag_len)?;
    c.lit(b"\",\"f\":")?;
    let inner = c.0.strip_suffix(b"}")?;
    Some((seq, tag, inner))
}

/// Appends a sealed frame line (without `\n`):
/// `{"q":<seq>,"iv":"<b64 iv>","s":"<b64 tag>","c":"<b64 ciphertext>"}`.
pub(crate) fn write_sealed(out: &mut Vec<u8>, seq: u64, iv: &[u8; IV_LEN], tag: &[u8], ct: &[u8]) {
    out.extend_from_slice(b"{\"q\":");
    push_u64(out, seq);
    out.extend_from_slice(b",\"iv\":\"");
    push_b64(out, iv);
    out.extend_from_slice(b"\",\"s\":\"");
    push_b64(out, tag);
    out.extend_from_slice(b"\",\"c\":\"");
    push_b64(out, ct);
    out.extend_from_slice(b"\"}");
}

/// The members of a sealed line, decoded.
pub(crate) struct Sealed {
    /// The sequence number.
    pub(crate) seq: u64,
    /// The CBC initialisation vector.
    pub(crate) iv: [u8; IV_LEN],
    /// The HMAC-SHA256 tag over the IV and the ciphertext.
    pub(crate) tag: [u8; TAG_LEN],
    /// The ciphertext.
    pub(crate) ct: Vec<u8>,
}

/// The members of a sealed line, decoded; `None` for any other layout or
/// base64 that does not decode to the right length.
pub(crate) fn match_sealed(line: &[u8]) -> Option<Sealed> {
    let (mut c, seq) = Cursor::after_seq(line)?;
    c.lit(b",\"iv\":\"")?;
    let iv = c.take(IV_B64_LEN)?;
    c.lit(b"\",\"s\":\"")?;
    let tag = c.take(TAG_B64_LEN)?;
    c.lit(b"\",\"c\":\"")?;
    let ct = c.0.strip_suffix(b"\"}")?;
    Some(Sealed {
        seq,
        iv: decode_fixed(iv)?,
        tag: decode_fixed(tag)?,
        ct: B64.decode(ct).ok()?,
    })
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

/// The base64 alphabet of RFC 4648 §4.
pub(crate) const B64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Writes the canonical base64 of `tag` (with `=` padding, as [`B64`]
/// would) into `out` and returns its length; `tag` is at most 33 bytes (a
/// tag is 16 or 32).
///
/// For so short an input the `base64` crate's per-call set-up is most of
/// its cost, and this runs for every frame a signed link sends or receives
/// (BENCHMARKS.md has the figures). The tests check it against [`B64`] at
/// every length up to 33 bytes.
#[inline]
pub(crate) fn tag_text(tag: &[u8], out: &mut [u8; TAG_B64_LEN]) -> usize {
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

/// A strict left-to-right matcher over a protected frame's fixed layout.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    /// Matches `{"q":<seq>`, which both wrappers start with; the cursor
    /// after it, and the sequence number.
    #[inline]
    fn after_seq(line: &'a [u8]) -> Option<(Self, u64)> {
        let mut c = Self(line);
        c.lit(b"{\"q\":")?;
        let seq = c.u64()?;
        Some((c, seq))
    }

    #[inline]
    fn lit(&mut self, l: &[u8]) -> Option<()> {
        self.0 = self.0.strip_prefix(l)?;
        Some(())
    }

    #[inline]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    /// A decimal u64 without sign, leading zeros or overflow.
    #[inline]
    fn u64(&mut self) -> Option<u64> {
        let (v, rest) = canonical_u64(self.0)?;
        self.0 = rest;
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u64_parsing_is_strict() {
        for bad in [&b"01"[..], b"", b"18446744073709551616", b"-1"] {
            assert!(Cursor(bad).u64().is_none(), "{bad:?}");
        }
        assert_eq!(Cursor(b"18446744073709551615").u64().unwrap(), u64::MAX);
    }

    #[test]
    fn tag_text_matches_the_base64_crate_at_every_length() {
        // Every length a tag could have up to the buffer's 33 bytes, with
        // bytes that reach every 6-bit value, and all-zero and all-one
        // tags.
        for len in 0..=33usize {
            for fill in [0u8, 0xff, 0x5a] {
                let data: Vec<u8> = (0..len)
                    .map(|i| (i as u8).wrapping_mul(73).wrapping_add(fill))
                    .collect();
                let mut text = [0u8; TAG_B64_LEN];
                let n = tag_text(&data, &mut text);
                assert_eq!(&text[..n], B64.encode(&data).as_bytes(), "length {len}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn tag_text_matches_the_base64_crate(
            tag in proptest::collection::vec(proptest::num::u8::ANY, 0..=33),
        ) {
            let mut text = [0u8; TAG_B64_LEN];
            let n = tag_text(&tag, &mut text);
            let expected = B64.encode(&tag);
            proptest::prop_assert_eq!(&text[..n], expected.as_bytes());
        }
    }
}
