//! Sealed frames (PROTOCOL.md §10.4): AES-256-CBC, then HMAC-SHA256 over
//! the IV and ciphertext (encrypt-then-MAC), keyed once per session.

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, InnerIvInit, KeyInit};
use hmac::Mac;

use super::{DirectionKeys, HmacSha256, IV_LEN, SEALED_DOMAIN, hmac_key, hmac_start};
use crate::error::ProtocolError;
use crate::wire;

pub(super) type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

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
            mac: hmac_key(keys.mac.expose()),
            aes: aes::Aes256::new(&(*keys.enc.expose()).into()),
        }
    }
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

/// [`seal_frame`] with a prepared [`Sealer`].
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
    wire::write_sealed(out, seq, iv, &tag, &ct);
}

/// Verifies then decrypts a sealed line; returns `(seq, plaintext)`.
/// The MAC is checked before any decryption; every failure is
/// [`ProtocolError::Integrity`].
pub fn open_sealed(keys: &DirectionKeys, line: &[u8]) -> Result<(u64, Vec<u8>), ProtocolError> {
    open_sealed_with(&Sealer::new(keys), line)
}

/// [`open_sealed`] with a prepared [`Sealer`].
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
    let wire::Sealed {
        seq,
        iv,
        tag,
        ct: mut buf,
    } = wire::match_sealed(line)?;
    hmac_start(&sealer.mac, SEALED_DOMAIN, seq, &[&iv, &buf])
        .verify_slice(&tag)
        .ok()?;
    #[cfg(test)]
    super::tests::DECRYPTS.with(|c| c.set(c.get() + 1));
    let n = Aes256CbcDec::inner_iv_init(sealer.aes.clone(), &iv.into())
        .decrypt_padded::<Pkcs7>(&mut buf)
        .ok()?
        .len();
    buf.truncate(n);
    Some((seq, buf))
}
