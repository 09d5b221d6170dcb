//! Answers to the peer's requests: the [`Responder`] a handler answers
//! through, and the [`Answer`] it hands to the link's driver.

use std::fmt;
use std::sync::Arc;

use jsonlink_proto::{Connection, Op, PeerRequestId, RawJson, RemoteError, SendError};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::error::Error;
use crate::link::Link;
use crate::queue::Queue;

/// One answer from a responder (or an inline handler) to the link's
/// driver.
pub(crate) struct Answer {
    pub(crate) id: PeerRequestId,
    pub(crate) result: Result<Box<RawValue>, RemoteError>,
    /// The request's op, for the log.
    pub(crate) op: Option<Op>,
    /// Set (to the answer's size bound and the peer's limit) when the
    /// answer is too large for the peer: `result` is then not sent, the
    /// core answers with its own error
    /// ([`Connection::respond_too_large`]).
    pub(crate) too_large: Option<(usize, usize)>,
    /// Set when the request came from a relayed client: answered with
    /// `client_respond` (whose core replaces an answer too large itself).
    pub(crate) client: Option<jsonlink_proto::ClientId>,
}

impl Answer {
    /// The answer `result` to request `id` on `link`, checked against the
    /// peer's limit: the core would refuse an answer whose size bound
    /// exceeds it (PROTOCOL.md §14.2), so it is marked too large.
    pub(crate) fn new(
        link: &Link,
        id: PeerRequestId,
        result: Result<Box<RawValue>, RemoteError>,
        op: Option<Op>,
    ) -> Self {
        let too_large = link.auth().and_then(|auth| {
            let size = auth.response_frame_bound(id, result.as_ref().map(|b| &**b));
            (size > auth.peer_max_frame).then_some((size, auth.peer_max_frame))
        });
        Self {
            id,
            result,
            op,
            too_large,
            client: link.inner.relay.as_ref().map(|r| r.client),
        }
    }

    /// What the answering handler is told: [`Error::ResponseTooLarge`]
    /// when its answer is replaced by an error answer.
    fn verdict(&self) -> Result<(), Error> {
        match self.too_large {
            Some((size, limit)) => Err(Error::ResponseTooLarge { size, limit }),
            None => Ok(()),
        }
    }

    /// Gives the answer to the core; the answer back when the core pushes
    /// back (`Blocked`). An answer replaced for being too large is logged
    /// here, once.
    pub(crate) fn give_to(self, conn: &mut Connection) -> Option<Self> {
        let given = match (self.client, self.too_large) {
            (Some(c), Some(_)) => {
                // The core replaces it and logs nothing: warn here.
                let r = conn.client_respond(c, self.id, self.result.as_ref().map(|b| &**b));
                if let Err(SendError::Blocked) = r {
                    return Some(self);
                }
                if let Some((size, limit)) = self.too_large {
                    warn_too_large(self.id, self.op.as_deref(), size, limit);
                }
                return None;
            }
            (Some(c), None) => conn.client_respond(c, self.id, self.result.as_ref().map(|b| &**b)),
            (None, Some((size, _))) => conn.respond_too_large(self.id, size),
            (None, None) => conn.respond(self.id, self.result.as_ref().map(|b| &**b)),
        };
        match given {
            Err(SendError::Blocked) => return Some(self),
            Ok(()) => {
                if let Some((size, limit)) = self.too_large {
                    warn_too_large(self.id, self.op.as_deref(), size, limit);
                }
            }
            Err(SendError::ResponseTooLarge { size, limit }) => {
                warn_too_large(self.id, self.op.as_deref(), size, limit);
            }
            Err(SendError::TooDeep { depth, limit }) => {
                // The core refused the answer and the request is still
                // open: answer it with an error now, not at the requester's
                // timeout (the error answer is shallow).
                let op: String = self.op.as_deref().unwrap_or("").chars().take(64).collect();
                tracing::warn!(
                    id = %self.id, op = ?op, depth, limit,
                    "answer nested deeper than max_depth: answered `internal` instead"
                );
                let err = RemoteError::new(
                    RemoteError::INTERNAL,
                    format!("the answer was nested deeper than the {limit}-level depth limit"),
                );
                let r = match self.client {
                    Some(c) => conn.client_respond(c, self.id, Err(&err)),
                    None => conn.respond(self.id, Err(&err)),
                };
                if let Err(SendError::Blocked) = r {
                    return Some(Self {
                        result: Err(err),
                        ..self
                    });
                }
            }
            Err(e) => tracing::debug!(id = %self.id, error = %e, "answer not sent"),
        }
        None
    }
}

/// The one warning for an answer too large for the peer, which was
/// replaced by an error answer. The op is the peer's text: clipped, and
/// logged escaped.
fn warn_too_large(id: PeerRequestId, op: Option<&str>, size: usize, limit: usize) {
    let op: String = op.unwrap_or("").chars().take(64).collect();
    tracing::warn!(
        id = %id,
        op = ?op,
        size,
        limit,
        "answer too large for the requester's max_frame: answered with an error instead"
    );
}

/// Answers one peer request, exactly once. Dropping it unanswered answers
/// [`handler_dropped`](RemoteError::HANDLER_DROPPED) at once (never a
/// timeout on the peer's side).
///
/// Answering never waits: the link's answer queue has room for every
/// request the core lets be in flight.
///
/// An answer too large for the requester's `max_frame` is refused at once
/// with [`Error::ResponseTooLarge`] (checked against the peer's announced
/// limit, as [`Link::send`] checks messages); the requester then gets an
/// error answer at once instead (`response_too_large` where it accepted
/// that extension, else `internal`), and the link logs a warning.
pub struct Responder {
    id: PeerRequestId,
    tx: Option<Arc<Queue<Answer>>>,
    link: Link,
    op: Option<Op>,
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder").field("id", &self.id).finish()
    }
}

impl Responder {
    pub(crate) fn new(
        id: PeerRequestId,
        tx: Arc<Queue<Answer>>,
        link: Link,
        op: Option<Op>,
    ) -> Self {
        Self {
            id,
            tx: Some(tx),
            link,
            op,
        }
    }

    /// The peer's request id.
    pub fn id(&self) -> PeerRequestId {
        self.id
    }

    /// Answers with a value.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] if `value` does not serialize (the peer is
    /// answered [`internal`](RemoteError::INTERNAL));
    /// [`Error::ResponseTooLarge`] if it is too large for the peer (the
    /// peer gets an error answer instead); [`Error::Closed`] if the link
    /// has ended (nothing can be answered).
    pub fn respond<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        match serde_json::value::to_raw_value(value) {
            Ok(raw) => self.answer(Ok(raw)),
            Err(e) => {
                let _ = self.answer(Err(not_serialized()));
                Err(Error::Encode(e))
            }
        }
    }

    /// Answers with raw JSON.
    ///
    /// # Errors
    ///
    /// As [`respond`](Self::respond), without [`Error::Encode`].
    pub fn respond_raw(self, value: RawJson) -> Result<(), Error> {
        self.answer(Ok(value.into_raw()))
    }

    /// Answers with an error object.
    ///
    /// # Errors
    ///
    /// As [`respond`](Self::respond), without [`Error::Encode`].
    pub fn respond_error(self, error: RemoteError) -> Result<(), Error> {
        self.answer(Err(error))
    }

    fn answer(mut self, result: Result<Box<RawValue>, RemoteError>) -> Result<(), Error> {
        let Some(tx) = self.tx.take() else {
            return Err(Error::Closed);
        };
        let answer = Answer::new(&self.link, self.id, result, self.op.take());
        let verdict = answer.verdict();
        tx.try_push(answer, 0).map_err(|_| Error::Closed)?;
        verdict
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let answer = Answer {
                id: self.id,
                result: Err(RemoteError::new(
                    RemoteError::HANDLER_DROPPED,
                    "the handler dropped the request without answering",
                )),
                op: self.op.take(),
                too_large: None,
                client: self.link.inner.relay.as_ref().map(|r| r.client),
            };
            let _ = tx.try_push(answer, 0);
        }
    }
}

/// The answer when a handler's value does not serialize.
pub(super) fn not_serialized() -> RemoteError {
    RemoteError::new(RemoteError::INTERNAL, "the response did not serialize")
}
