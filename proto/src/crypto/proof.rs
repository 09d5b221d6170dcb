//! The handshake transcript and the two proofs over it (PROTOCOL.md §8.1,
//! §8.2).

use hmac::Mac;
use sha2::{Digest, Sha256};

use super::hmac_key;
use crate::Secret;

const TRANSCRIPT_LABEL: &[u8] = b"jsonlink/1 transcript";
const CLIENT_PROOF_LABEL: &[u8] = b"jsonlink/1 client proof";
const SERVER_PROOF_LABEL: &[u8] = b"jsonlink/1 server proof";

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
