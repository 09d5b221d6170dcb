//! # jsonlink-fuzz-bodies
//!
//! The bodies of the cargo-fuzz targets. The targets in `fuzz/` are one
//! line each and call these; `tests/corpus.rs` replays the committed corpus
//! through them on every `cargo test`, so the targets never rot. They drive
//! `jsonlink-proto` through its public API and its `testing` feature; this
//! crate is not published.
//!
//! The bodies read no clock: the caller passes a base [`Instant`](std::time::Instant) and all
//! time is virtual from there, so a run depends on the input bytes only.
//! Every body panics (with a message saying which invariant broke) on a bug.
//!
//! Input layouts (every read past the end yields zeros):
//!
//! - [`framer`]: `limit: u16 LE` (`0xffff` = no limit), `flags: u8`,
//!   `n: u8` (`% 8` split sizes follow, one byte each), then the stream.
//! - [`handshake_server`], [`handshake_client`]: `cfg: u8` (bits 0–1 our
//!   signing policy, 2–3 our encryption policy, 4 small limits, 5–6 prefix:
//!   0 none, 1 the honest peer's first line, 2–3 the honest peer's whole
//!   handshake; 7 EOF after the stream), `tick: u8` (virtual time per chunk,
//!   in 100 ms), `n: u8` + split sizes as above, then the stream (appended
//!   to the prefix).
//! - [`session`]: `client cfg: u8`, `server cfg: u8` (bits 0–3 policies, 4
//!   small limits, 5 no keepalive, 6 keepalive data; `0xff` on the client
//!   alone gives mismatched channel bindings), then up to 256 operations:
//!   one byte (bit 7 picks the server, bits 0–3 the operation) plus
//!   arguments. 0 send(body), 1 request(body, timeout ×50 ms, 0 = default),
//!   2 respond(pick, answer), 3 ping(data), 4 close(reason), 5 advance time
//!   (×100 ms; ×20 ms when either side has small limits, so one jump
//!   passes every small deadline without dozens of keepalive rounds),
//!   6 drive (must settle), 7 deliver in chunks(sizes),
//!   8 tamper(position: u16, xor mask), 9 cut, 10 toggle reading,
//!   11 inject bytes into the other side, 12 answer every open request,
//!   13–15 one step.
//! - [`relay`]: `cfg: u8` (bits 0–1 the relay's signing policy, 2–3 its
//!   sealing policy, 4 small limits, 5 a server limit of 2 relayed
//!   clients), then up to 256 operations on a relay connection: one byte
//!   (bit 7 picks the server, bits 0–3 the operation) plus arguments.
//!   0 join(ext, max_frame: u16), 1 leave(pick, code), 2 forward(pick, id,
//!   body), 3 request(pick, body, timeout ×100 ms), 4 answer(pick, kind,
//!   body), 5 message(pick, body), 6 advance time (×100 ms), 7 drive (must
//!   settle), 8 inject a relay frame(kind, c, id, body) into the other
//!   side, 9 inject bytes, 10 close, 11 cut, 12 toggle reading, 13–15 one
//!   step.

#![forbid(unsafe_code)]

mod book;
mod framer;
mod handshake;
mod input;
mod relay;
mod rules;
mod session;

pub use framer::framer;
pub use handshake::{handshake_client, handshake_server, honest_peer_lines};
pub use relay::relay;
pub use session::session;

/// Seed of the deterministic RNGs of every connection made here.
const SEED: u8 = 1;
/// Server connection id used by the handshake bodies.
const CONN_ID: u64 = 7;
/// Rounds `drive_bounded` may take before the pair counts as stuck.
const SETTLE: usize = 10_000;
/// Operations interpreted by [`session`] at most.
const MAX_OPS: usize = 256;
