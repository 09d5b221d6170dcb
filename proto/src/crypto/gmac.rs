//! AES-256-GMAC, one of the two signing algorithms (PROTOCOL.md §10.3).
//! The tag is `#[inline]`, for the reason `wire::protected` gives.

use aes::cipher::KeyInit as _;
use zeroize::Zeroize;

use super::{GMAC_TAG_LEN, SIGNED_DOMAIN};

/// AES-256-GMAC, i.e. AES-256-GCM with an empty plaintext (NIST SP
/// 800-38D): `tag = GHASH_H(pad(A) || len64(A)·8 || 0^64) XOR AES_K(J0)`,
/// with `H = AES_K(0^128)` and `J0 = nonce || 0x00000001` for the 12-byte
/// nonce.
///
/// Built from the `aes` and `polyval` crates rather than `aes-gcm` or
/// `ghash`, because for the short frames a link mostly carries that costs
/// less than either (BENCHMARKS.md has the figures):
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
pub(super) struct Gmac {
    aes: aes::Aes256,
    /// POLYVAL keyed with `mulX(rev(H))`.
    polyval: polyval::Polyval,
}

/// A 16-byte block with its bytes in reverse order.
fn reversed(block: &[u8; 16]) -> polyval::Block {
    u128::from_be_bytes(*block).to_le_bytes().into()
}

impl Gmac {
    pub(super) fn new(key: &[u8; 32]) -> Self {
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
    #[inline]
    pub(super) fn tag(&self, seq: u64, aad: &[u8]) -> [u8; GMAC_TAG_LEN] {
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
