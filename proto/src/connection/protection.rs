//! How the frames we send are protected once authenticated (PROTOCOL.md
//! §10): plain, signed or sealed, the same way for every frame each way.
//! Every frame we send but the four of the handshake is encoded through
//! here. (The connection opens what it receives in `handle_line`.)

use rand_chacha::ChaCha20Rng;
use rand_core::Rng as _;

use super::Connection;
use crate::crypto::{self, FrameMac, IV_LEN, Sealer};
use crate::error::SendError;
use crate::wire::{self, encode::PayloadAt};

/// The protection of a link's frames, with each direction's prepared keys.
pub(super) enum Protection {
    /// Frames go as they are (also before authentication).
    Plain,
    /// Each frame wrapped with its tag.
    Signed {
        send: Box<FrameMac>,
        recv: Box<FrameMac>,
    },
    /// Each frame encrypted, then tagged.
    Sealed {
        send: Box<Sealer>,
        recv: Box<Sealer>,
    },
}

impl Protection {
    /// Appends the encoded frame `inner` to `out` protected at sequence
    /// number `seq`: as it is, signed, or sealed under a fresh IV.
    fn wrap(&self, seq: u64, rng: &mut ChaCha20Rng, inner: &[u8], out: &mut Vec<u8>) {
        match self {
            Self::Plain => out.extend_from_slice(inner),
            Self::Signed { send, .. } => crypto::sign_with(send, seq, inner, out),
            Self::Sealed { send, .. } => {
                let mut iv = [0u8; IV_LEN];
                rng.fill_bytes(&mut iv);
                crypto::seal_with(send, seq, &iv, inner, out);
            }
        }
    }
}

impl Connection {
    /// Encodes one frame into the outbound buffer, as
    /// [`encode_into`](Self::encode_into) does.
    pub(super) fn queue_frame(
        &mut self,
        inner: impl FnOnce(&mut Vec<u8>) -> PayloadAt,
    ) -> Result<(), SendError> {
        self.queue_frame_limited(inner, None)
    }

    /// [`queue_frame`](Self::queue_frame) for a relayed client's frame
    /// with, where `plain` is `Some((overhead, limit))`, the client's own
    /// limit too: the frame less the wrapper's `overhead` (the plain frame
    /// the client will get) must be at most `limit` bytes, else
    /// [`SendError::FrameTooLarge`] with those sizes (PROTOCOL.md §18.6).
    pub(super) fn queue_frame_limited(
        &mut self,
        inner: impl FnOnce(&mut Vec<u8>) -> PayloadAt,
        plain: Option<(usize, usize)>,
    ) -> Result<(), SendError> {
        let mut out = std::mem::take(&mut self.out);
        let r = self.encode_checked(&mut out, inner, plain);
        self.out = out;
        r
    }

    /// Encodes one frame (`inner` writes it, protected here as negotiated)
    /// plus `\n` into `out`; rolls back and fails if its payload nests
    /// deeper than [`Config::max_depth`](crate::Config::max_depth) (checked
    /// before signing or sealing) or if the line would exceed the peer's
    /// limit.
    pub(super) fn encode_into(
        &mut self,
        out: &mut Vec<u8>,
        inner: impl FnOnce(&mut Vec<u8>) -> PayloadAt,
    ) -> Result<(), SendError> {
        self.encode_checked(out, inner, None)
    }

    /// [`encode_into`](Self::encode_into), with the plain-frame limit of
    /// [`queue_frame_limited`](Self::queue_frame_limited).
    fn encode_checked(
        &mut self,
        out: &mut Vec<u8>,
        inner: impl FnOnce(&mut Vec<u8>) -> PayloadAt,
        plain: Option<(usize, usize)>,
    ) -> Result<(), SendError> {
        let start = out.len();
        // The plain frame (the encoded frame less the relay wrapper) within
        // the relayed client's limit.
        let within = |len: usize| match plain {
            Some((overhead, limit)) if len.saturating_sub(overhead) > limit => {
                Err(SendError::FrameTooLarge {
                    size: len.saturating_sub(overhead),
                    limit,
                })
            }
            _ => Ok(()),
        };
        let depth_limit = self.max_depth();
        // The frame's payload (it has at most one), where the encoder put
        // it, nests at most `max_depth` levels.
        let checked = |buf: &[u8], payload: PayloadAt| {
            let Some(payload) = payload.and_then(|range| buf.get(range)) else {
                return Ok(());
            };
            if wire::depth_within(payload, depth_limit) {
                return Ok(());
            }
            Err(SendError::TooDeep {
                depth: wire::depth(payload, usize::MAX),
                limit: depth_limit,
            })
        };
        let encoded = if let Protection::Plain = self.protection {
            let r = inner(out);
            checked(out, r).and_then(|()| within(out.len() - start))
        } else {
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.clear();
            let r = inner(&mut scratch);
            let r = checked(&scratch, r).and_then(|()| within(scratch.len()));
            if r.is_ok() {
                self.protection
                    .wrap(self.send_seq, &mut self.rng, &scratch, out);
            }
            self.scratch = scratch;
            r
        };
        if let Err(e) = encoded {
            out.truncate(start);
            if self.scratch.capacity() > 64 * 1024 {
                self.scratch = Vec::new();
            }
            return Err(e);
        }
        let size = out.len() - start;
        let limit = if self.peer.is_some() {
            self.peer_max_frame
        } else {
            usize::MAX
        };
        if size > limit {
            out.truncate(start);
            return Err(SendError::FrameTooLarge { size, limit });
        }
        if self.scratch.capacity() > 64 * 1024 {
            self.scratch = Vec::new();
        }
        out.push(b'\n');
        if !matches!(self.protection, Protection::Plain) {
            self.send_seq += 1;
        }
        self.stats.frames_out += 1;
        Ok(())
    }
}
