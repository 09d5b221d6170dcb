//! Handshake proofs, session-key derivation, frame signing and sealing.
//!
//! Every function here is deterministic given its inputs, so PROTOCOL.md's
//! test vectors (§17) can be checked against it byte for byte: the public
//! items are what such a check needs, from the transcript hash to one
//! signed or sealed frame. The tags and ciphers are here; the layout of the
//! lines that carry them is the wire format's, with every other frame's.

mod gmac;
mod keys;
mod proof;
mod seal;
pub(crate) mod sign;
#[cfg(test)]
mod tests;

use hmac::{KeyInit, Mac};
use sha2::Sha256;

pub use keys::{DirectionKeys, Key, SessionKeys};
pub(crate) use proof::verify_proof;
pub use proof::{client_proof, server_proof, transcript_hash};
pub(crate) use seal::{Sealer, open_sealed_with, seal_with};
pub use seal::{open_sealed, seal_frame};
pub(crate) use sign::{FrameMac, open_signed_with, sign_with};
pub use sign::{open_signed, sign_frame};

/// Length of handshake nonces in bytes.
pub const NONCE_LEN: usize = 32;
/// Length of an HMAC-SHA256 tag in bytes.
pub const TAG_LEN: usize = 32;
/// Length of an AES-CBC IV in bytes.
pub const IV_LEN: usize = 16;
/// Length of an AES-256-GMAC tag in bytes.
pub const GMAC_TAG_LEN: usize = 16;

/// Domain byte prefixed to the MAC input of a signed frame.
const SIGNED_DOMAIN: u8 = 0x01;
/// Domain byte prefixed to the MAC input of a sealed frame.
const SEALED_DOMAIN: u8 = 0x02;

type HmacSha256 = hmac::Hmac<Sha256>;

fn hmac_key(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; the error is unreachable.
    <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
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
