//! What a connection reports to its owner.

use std::fmt;

use serde_json::value::RawValue;

use crate::config::Identity;
use crate::error::{CloseReason, RequestError};

/// Id of a request we sent; unique within the connection, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Id of a request the peer sent, to pass to
/// [`Connection::respond`](crate::Connection::respond).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerRequestId(pub u64);

/// A relayed client's id on one relay connection (PROTOCOL.md §18.2):
/// chosen by the relay, strictly increasing, never reused on that
/// connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for PeerRequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The `op` of a message or request (its body's top-level `"op"` string),
/// found without parsing the body again. Up to 24 bytes it is stored inline,
/// so the common short names cost no allocation per message. Use it as a
/// `&str` (it derefs to one) or compare it with one.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Op(compact_str::CompactString);

impl Op {
    /// An op with the given name.
    pub fn new(name: &str) -> Self {
        Self(compact_str::CompactString::new(name))
    }

    /// The op's name.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl std::ops::Deref for Op {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Op {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for Op {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Op {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<String> for Op {
    fn from(name: String) -> Self {
        Self(name.into())
    }
}

impl From<Op> for String {
    fn from(op: Op) -> Self {
        op.0.into_string()
    }
}

impl PartialEq<str> for Op {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Op {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Op {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

/// A JSON payload exactly as it crossed the wire (compact JSON text).
/// Deserialize it into your own type with [`RawJson::parse`].
#[derive(Clone)]
pub struct RawJson(Box<RawValue>);

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Eq for RawJson {}

impl RawJson {
    /// Wraps raw JSON.
    pub fn new(raw: Box<RawValue>) -> Self {
        Self(raw)
    }

    /// Builds a payload from JSON text (validated).
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text.to_owned()).map(Self)
    }

    /// Serializes any value into a payload.
    pub fn from_value<T: serde::Serialize + ?Sized>(v: &T) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(v).map(Self)
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The raw value.
    pub fn raw(&self) -> &RawValue {
        &self.0
    }

    /// Deserializes the payload.
    pub fn parse<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// Unwraps into the boxed raw value.
    pub fn into_raw(self) -> Box<RawValue> {
        self.0
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.get();
        if s.len() > 128 {
            write!(
                f,
                "RawJson({}… {} bytes)",
                crate::wire::clip(s, 128),
                s.len()
            )
        } else {
            write!(f, "RawJson({s})")
        }
    }
}

/// Outcome of a successful handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The identity the peer announced.
    pub peer: Identity,
    /// The connection id the server assigned.
    pub connection_id: u64,
    /// Protocol version in use.
    pub version: u64,
    /// Whether frames are signed (a MAC per frame; also `true` when
    /// sealed).
    pub signing: bool,
    /// The signing algorithm when frames are signed and not sealed.
    pub sign_alg: Option<crate::SignAlg>,
    /// Whether frames are sealed (AES-256-CBC, encrypt-then-MAC).
    pub encryption: bool,
    /// The largest frame the peer accepts (its announced `max_frame`).
    pub peer_max_frame: usize,
    /// The protocol extensions both sides agreed on (PROTOCOL.md §5.1).
    pub extensions: crate::Extensions,
    /// Whether this is a relay connection (PROTOCOL.md §18): the client
    /// took the relay role and the server accepted it.
    pub relay: bool,
}

impl Authenticated {
    /// An upper bound on the encoded size of a message frame (the line,
    /// without `\n`) carrying a `body_len`-byte body on this link; exact
    /// to within 20 bytes (the sequence number's digits). A body whose
    /// bound exceeds [`peer_max_frame`](Self::peer_max_frame) would be
    /// refused with `FrameTooLarge`.
    pub fn message_frame_bound(&self, body_len: usize) -> usize {
        // {"t":"msg","d": + body + }
        self.wrapped_bound(body_len.saturating_add(16))
    }

    /// An upper bound on the encoded size of the `res` frame answering the
    /// peer's request `id` with `result` on this link, as tight as
    /// [`message_frame_bound`](Self::message_frame_bound) (exact without
    /// signing or sealing). An answer whose bound does not exceed
    /// [`peer_max_frame`](Self::peer_max_frame) is never refused for its
    /// size; one whose bound does can be answered with
    /// [`Connection::respond_too_large`](crate::Connection::respond_too_large)
    /// without handing it over.
    pub fn response_frame_bound(
        &self,
        id: PeerRequestId,
        result: Result<&RawValue, &crate::RemoteError>,
    ) -> usize {
        let inner = match result {
            // {"t":"res","id": + ID + ,"d": + body + }
            Ok(body) => body.get().len().saturating_add(22 + digits(id.0)),
            // Escaping makes the error's length depend on its text: encode it.
            Err(e) => {
                let mut o = Vec::new();
                // Only its length matters here (the depth check is encode_into's).
                let _ = crate::wire::encode::res(&mut o, id.0, Err(e));
                o.len()
            }
        };
        self.wrapped_bound(inner)
    }

    /// The longest plain frame (as written unprotected) whose line, wrapped
    /// as negotiated on this link, fits the peer's `max_frame`: the
    /// inverse of the bound of [`message_frame_bound`](Self::message_frame_bound).
    /// A relay announces it in `join` as its client's `max_frame`
    /// (PROTOCOL.md §18.3).
    pub fn max_plain_frame(&self) -> usize {
        let limit = self.peer_max_frame;
        // The bound grows with `inner`; search the largest that fits.
        let (mut lo, mut hi) = (0usize, limit);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.wrapped_bound(mid) <= limit {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }

    /// An upper bound on the line carrying an `inner`-byte frame, wrapped
    /// as negotiated (a sequence number of up to 20 digits).
    pub(crate) fn wrapped_bound(&self, inner: usize) -> usize {
        if self.encryption {
            // {"q":N,"iv":"<24>","s":"<44>","c":"<b64(ct)>"}
            let ct = (inner / 16).saturating_add(1).saturating_mul(16);
            ct.div_ceil(3).saturating_mul(4).saturating_add(96 + 20)
        } else if self.signing {
            // {"q":N,"s":"<44>","f": + inner + } (a GMAC tag is 20 shorter)
            let tag = self.sign_alg.map_or(44, |a| a.tag_len().div_ceil(3) * 4);
            inner.saturating_add(18 + tag + 20)
        } else {
            inner
        }
    }
}

/// Decimal digits of `n`.
fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |l| l as usize + 1)
}

/// An event for the connection's owner, from
/// [`Connection::poll_event`](crate::Connection::poll_event).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The handshake succeeded; commands are accepted from now on.
    Authenticated(Authenticated),
    /// A fire-and-forget message.
    Message {
        /// The body's top-level `op` string, if it is an object with one.
        op: Option<Op>,
        /// The body.
        body: RawJson,
    },
    /// A request the peer expects exactly one answer to, via
    /// [`Connection::respond`](crate::Connection::respond).
    Request {
        /// Pass this to `respond`.
        id: PeerRequestId,
        /// The body's top-level `op` string, if any.
        op: Option<Op>,
        /// The body.
        body: RawJson,
    },
    /// A response to one of our requests.
    Response {
        /// Which request.
        id: RequestId,
        /// The response value.
        body: RawJson,
    },
    /// One of our requests failed (remote error, timeout, link lost, or
    /// closed locally).
    RequestFailed {
        /// Which request.
        id: RequestId,
        /// Why.
        error: RequestError,
    },
    /// The peer pinged (a pong is sent automatically).
    Ping {
        /// The ping's data object, if any.
        data: Option<RawJson>,
    },
    /// The peer answered a ping.
    Pong,
    /// The outbound buffer drained below its bound after a command returned
    /// [`SendError::Blocked`](crate::SendError::Blocked).
    SendUnblocked,
    /// Server, on a relay connection: a relayed client joined
    /// (PROTOCOL.md §18.3). Its virtual link ends with exactly one
    /// [`Event::Left`].
    Joined(Joined),
    /// A message from (server) or to (relay) a relayed client.
    ClientMessage {
        /// The client.
        client: ClientId,
        /// The body's top-level `op` string, if any.
        op: Option<Op>,
        /// The body.
        body: RawJson,
    },
    /// A request from a relayed client (server), or from the server to one
    /// (relay); answer it with
    /// [`Connection::client_respond`](crate::Connection::client_respond).
    ClientRequest {
        /// The client.
        client: ClientId,
        /// Pass this to `client_respond`.
        id: PeerRequestId,
        /// The body's top-level `op` string, if any.
        op: Option<Op>,
        /// The body.
        body: RawJson,
    },
    /// The answer to one of our requests for a relayed client.
    ClientResponse {
        /// The client.
        client: ClientId,
        /// Which request.
        id: RequestId,
        /// The response value.
        body: RawJson,
    },
    /// One of our requests for a relayed client failed (remote error,
    /// timeout, the client left, or the connection ended).
    ClientRequestFailed {
        /// The client.
        client: ClientId,
        /// Which request.
        id: RequestId,
        /// Why.
        error: RequestError,
    },
    /// Relay: the server's going-away notice for one client (a `leave`
    /// with code `normal`, PROTOCOL.md §18.4): close that client's
    /// connection gracefully, then end it with
    /// [`Connection::leave`](crate::Connection::leave).
    ClientClosing {
        /// The client.
        client: ClientId,
        /// The server's reason.
        reason: String,
    },
    /// A relayed client's virtual link ended: exactly once for each client
    /// joined, after every event of its requests, and before the
    /// connection's own [`Event::Closed`] when the connection ends.
    Left {
        /// The client.
        client: ClientId,
        /// Why: [`CloseReason::Local`] when this side ended it,
        /// [`CloseReason::Remote`] with the peer's `leave` code otherwise,
        /// or the connection's reason when it ended with the connection.
        reason: CloseReason,
    },
    /// The connection ended. Always the last event, emitted exactly once.
    Closed(CloseReason),
}

/// A relayed client that joined (PROTOCOL.md §18.3): who it proved to be to
/// its relay, where it connected from, and what it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// Its id on this connection.
    pub client: ClientId,
    /// The identity it proved to the relay.
    pub identity: Identity,
    /// Its address as the relay saw it (`ip:port`; not parsed here).
    pub addr: String,
    /// The longest plain frame it accepts (PROTOCOL.md §18.3).
    pub max_frame: usize,
    /// The extensions on between it and the relay that concern its frames
    /// (`response_too_large`).
    pub extensions: crate::Extensions,
}
