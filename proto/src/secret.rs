//! The shared secret both peers hold.

use std::fmt;

use base64::Engine as _;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of a secret made by [`Secret::generate`], in bytes.
pub const GENERATED_SECRET_LEN: usize = 32;

/// The pre-shared secret. Never sent on the wire, not even hashed: it keys
/// the HMAC proofs and the HKDF that derives session keys.
///
/// Zeroized on drop; `Debug` prints `Secret(<redacted>)`.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Secret(Vec<u8>);

/// A secret could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The secret was empty.
    #[error("secret is empty")]
    Empty,
    /// The text was not valid hex.
    #[error("secret is not valid hex")]
    InvalidHex,
    /// The text was not valid base64.
    #[error("secret is not valid base64")]
    InvalidBase64,
    /// The OS random source failed.
    #[error("OS random source failed")]
    Rng,
}

impl Secret {
    /// 32 fresh random bytes from the OS. The recommended kind of secret.
    pub fn generate() -> Result<Self, SecretError> {
        let mut v = vec![0u8; GENERATED_SECRET_LEN];
        getrandom::fill(&mut v).map_err(|_| SecretError::Rng)?;
        Ok(Self(v))
    }

    /// Uses raw bytes as the secret.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<Self, SecretError> {
        let v = bytes.into();
        if v.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self(v))
    }

    /// Parses a hex string (as printed by [`Secret::to_hex`]).
    pub fn from_hex(text: &str) -> Result<Self, SecretError> {
        let v = hex::decode(text.trim()).map_err(|_| SecretError::InvalidHex)?;
        Self::from_bytes(v)
    }

    /// Parses standard base64 (padded or not).
    pub fn from_base64(text: &str) -> Result<Self, SecretError> {
        let t = text.trim();
        let v = base64::engine::general_purpose::STANDARD
            .decode(t)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(t))
            .map_err(|_| SecretError::InvalidBase64)?;
        Self::from_bytes(v)
    }

    /// Uses a password's UTF-8 bytes as the secret, for compatibility with
    /// tls-json / zetta-rpc style configuration.
    ///
    /// **Warning:** anyone who records one handshake (for instance a
    /// malicious server, or a peer that learns a proof) can try passwords
    /// offline at HMAC speed. Prefer [`Secret::generate`].
    pub fn from_password(password: &str) -> Result<Self, SecretError> {
        Self::from_bytes(password.as_bytes().to_vec())
    }

    /// Hex encoding, for storing a generated secret.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    /// The raw bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
