//! Encoders: the pieces of JSON text frames are written from.

use base64::Engine as _;

use super::B64;

/// Appends a JSON string literal (with escapes) to `out`.
pub(crate) fn push_str(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends base64 of `bytes` (see [`B64`]).
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

/// Appends `v` in decimal.
pub(crate) fn push_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}
