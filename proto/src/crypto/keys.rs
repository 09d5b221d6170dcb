//! The session keys (PROTOCOL.md §8.3): derived from the secret and the
//! transcript, one MAC key and one encryption key per direction.

use std::fmt;

use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::Secret;

/// A 32-byte symmetric key, zeroized on drop, redacted in `Debug`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Key(pub(super) [u8; 32]);

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
