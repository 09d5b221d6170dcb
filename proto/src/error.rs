//! Errors, split by blame (as h11 does): [`ProtocolError`] is the peer's
//! fault, [`SendError`] the caller's. Fatal conditions end a connection with
//! one [`CloseReason`], delivered as the last event.

use std::fmt;

/// The peer broke the protocol. Always fatal: the connection sends a close
/// frame carrying [`ProtocolError::code`] (where it still can) and ends with
/// [`CloseReason::Protocol`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A line grew past the frame limit in force (pre-auth or post-auth)
    /// before its `\n` arrived.
    #[error("frame exceeds the {limit}-byte limit")]
    FrameTooLarge {
        /// The limit that was exceeded, in bytes (excluding the `\n`).
        limit: usize,
    },
    /// A frame was not valid UTF-8.
    #[error("frame is not valid UTF-8")]
    InvalidUtf8,
    /// A frame was not valid JSON, or nested deeper than
    /// [`Config::max_depth`](crate::Config::max_depth) (PROTOCOL.md §4.3).
    #[error("frame is not valid JSON: {detail}")]
    InvalidJson {
        /// serde_json's description (position and cause), or the depth
        /// limit that was passed.
        detail: String,
    },
    /// A frame was valid JSON but not an object.
    #[error("frame is not a JSON object")]
    NotAnObject,
    /// An envelope key appeared twice, or (`field` `"d.op"`) the body of a
    /// `msg` or `req` has more than one top-level `op` (PROTOCOL.md §11.1).
    #[error("duplicate field `{field}` in frame")]
    DuplicateField {
        /// The repeated key.
        field: &'static str,
    },
    /// An envelope field was missing or had the wrong type or range.
    #[error("invalid field `{field}`: {detail}")]
    InvalidField {
        /// The offending key.
        field: &'static str,
        /// What was wrong.
        detail: &'static str,
    },
    /// A frame type that is unknown or not allowed in the current state.
    #[error("unexpected frame type `{frame}` in state {state}")]
    UnexpectedFrame {
        /// The frame's `t` value (truncated to 32 bytes).
        frame: String,
        /// The state the connection was in.
        state: &'static str,
    },
    /// An application frame arrived before authentication completed.
    #[error("frame `{frame}` before authentication")]
    Unauthenticated {
        /// The frame's `t` value (truncated to 32 bytes).
        frame: String,
    },
    /// No protocol version in common.
    #[error("protocol version mismatch: we speak {ours:?}, the peer speaks {theirs:?}")]
    VersionMismatch {
        /// Versions this side supports.
        ours: Vec<u64>,
        /// Versions the peer offered (or supports).
        theirs: Vec<u64>,
    },
    /// The peer's proof did not verify (wrong secret, replayed proof, or a
    /// channel-binding mismatch).
    #[error("authentication failed")]
    AuthFailed,
    /// Feature negotiation failed: a side requires what the other refuses,
    /// or an unknown algorithm was named.
    #[error("negotiation failed: {detail}")]
    NegotiationFailed {
        /// Which feature and why.
        detail: &'static str,
    },
    /// A signed or sealed frame failed verification. One variant for every
    /// cause (bad tag, missing tag, bad padding, bad base64, wrong length),
    /// so there is no oracle.
    #[error("frame integrity check failed")]
    Integrity,
    /// A verified frame carried the wrong sequence number (replay, reorder
    /// or drop).
    #[error("sequence number {got}, expected {expected}")]
    Sequence {
        /// The next sequence number we expected.
        expected: u64,
        /// The one the frame carried.
        got: u64,
    },
}

impl ProtocolError {
    /// The close code sent to the peer for this error.
    pub fn code(&self) -> CloseCode {
        match self {
            Self::FrameTooLarge { .. } => CloseCode::FrameTooLarge,
            Self::InvalidUtf8 => CloseCode::InvalidUtf8,
            Self::InvalidJson { .. } => CloseCode::InvalidJson,
            Self::NotAnObject => CloseCode::NotAnObject,
            Self::DuplicateField { .. } | Self::InvalidField { .. } => CloseCode::InvalidFrame,
            Self::UnexpectedFrame { .. } => CloseCode::UnexpectedFrame,
            Self::Unauthenticated { .. } => CloseCode::Unauthenticated,
            Self::VersionMismatch { .. } => CloseCode::VersionMismatch,
            Self::AuthFailed => CloseCode::AuthFailed,
            Self::NegotiationFailed { .. } => CloseCode::NegotiationFailed,
            Self::Integrity => CloseCode::Integrity,
            Self::Sequence { .. } => CloseCode::Sequence,
        }
    }
}

/// The caller asked for something the connection cannot do now. Never fatal:
/// the connection is unchanged and nothing was written, except after
/// [`ResponseTooLarge`](Self::ResponseTooLarge), which reports an answer
/// the connection replaced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The handshake has not finished yet.
    #[error("not authenticated yet")]
    NotAuthenticated,
    /// The connection is closing or closed.
    #[error("connection is closed or closing")]
    Closed,
    /// The outbound buffer is at its bound; wait for
    /// [`Event::SendUnblocked`](crate::Event::SendUnblocked).
    #[error("outbound buffer full")]
    Blocked,
    /// The in-flight request limit is reached.
    #[error("too many requests in flight (limit {limit})")]
    Busy {
        /// The configured limit.
        limit: usize,
    },
    /// The encoded frame would exceed the peer's maximum frame size.
    #[error("frame of {size} bytes exceeds the peer's {limit}-byte limit")]
    FrameTooLarge {
        /// Size of the encoded frame in bytes.
        size: usize,
        /// The peer's limit.
        limit: usize,
    },
    /// [`respond`](crate::Connection::respond)'s answer would exceed the
    /// peer's maximum frame size. The request **has been answered** in its
    /// place, with an error answer (code [`RemoteError::RESPONSE_TOO_LARGE`]
    /// where the extension is on, else [`RemoteError::INTERNAL`]), its
    /// incoming-request slot is free, and
    /// [`Stats::responses_too_large`](crate::Stats::responses_too_large)
    /// counted it; the id is no longer answerable.
    #[error("answer of {size} bytes exceeds the peer's {limit}-byte limit; answered with an error")]
    ResponseTooLarge {
        /// Size of the encoded answer frame in bytes.
        size: usize,
        /// The peer's limit.
        limit: usize,
    },
    /// `respond` was called with an id that is not awaiting a response
    /// (already answered, or never received).
    #[error("no pending request with id {0}")]
    UnknownRequest(u64),
    /// The payload given was not a JSON object where one is required (ping data).
    #[error("ping data must be a JSON object")]
    NotAnObject,
    /// A value of the frame (a body, ping data, an error's `data`) nests
    /// deeper than [`Config::max_depth`](crate::Config::max_depth); the peer
    /// would refuse the frame as invalid JSON.
    #[error("value nested {depth} levels deep exceeds the {limit}-level depth limit")]
    TooDeep {
        /// The value's nesting depth (arrays and objects).
        depth: usize,
        /// The limit.
        limit: usize,
    },
    /// A message or request body has more than one top-level `op`, which
    /// the peer refuses (PROTOCOL.md §11.1).
    #[error("body has more than one top-level `op`")]
    DuplicateOp,
    /// A relay command on a connection that is not a relay connection
    /// (PROTOCOL.md §18), or `join` on the server's side of one.
    #[error("not a relay connection, or not this side's relay command")]
    NotRelay,
    /// The relayed client is not live: never joined, or already ended.
    #[error("no live relayed client {0}")]
    UnknownClient(u64),
    /// A relayed request id already in flight for that client.
    #[error("request id {0} is already in flight for that client")]
    DuplicateRequest(u64),
    /// A `join` argument out of range: an address longer than
    /// [`MAX_ADDR_LEN`](crate::MAX_ADDR_LEN) bytes, an identity longer than
    /// 256 bytes, or a `max_frame` below
    /// [`MIN_RELAYED_MAX_FRAME`](crate::MIN_RELAYED_MAX_FRAME).
    #[error("invalid join: {0}")]
    InvalidJoin(&'static str),
}

/// Why a request of ours failed; exactly one of [`Event::Response`] or
/// [`Event::RequestFailed`] is emitted per request.
///
/// [`Event::Response`]: crate::Event::Response
/// [`Event::RequestFailed`]: crate::Event::RequestFailed
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The peer answered with an error object.
    #[error("remote error: {0}")]
    Remote(RemoteError),
    /// No response arrived within the request's timeout.
    #[error("request timed out")]
    Timeout,
    /// The link failed (EOF, protocol error, keepalive timeout) before the
    /// response arrived.
    #[error("connection lost")]
    ConnectionLost,
    /// We closed the link (graceful close or shutdown) before the response
    /// arrived.
    #[error("connection closed locally before the response arrived")]
    ClosedLocally,
}

/// An error object sent by the peer in place of a response value.
/// Wire form: `{"code":"…","message":"…","data":…}` (`data` optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    /// Machine-readable code, e.g. [`RemoteError::NO_HANDLER`].
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Optional extra JSON data, as raw JSON text.
    pub data: Option<String>,
}

impl RemoteError {
    /// No handler is registered for the request's `op`.
    pub const NO_HANDLER: &'static str = "no_handler";
    /// The handler dropped its responder without answering.
    pub const HANDLER_DROPPED: &'static str = "handler_dropped";
    /// The receiver's incoming request limit was reached.
    pub const BUSY: &'static str = "busy";
    /// The receiver is shutting down.
    pub const SHUTTING_DOWN: &'static str = "shutting_down";
    /// The request's arguments were invalid.
    pub const BAD_REQUEST: &'static str = "bad_request";
    /// The handler failed.
    pub const INTERNAL: &'static str = "internal";
    /// What the request names does not exist.
    pub const NOT_FOUND: &'static str = "not_found";
    /// The caller is not authenticated for this request.
    pub const UNAUTHORIZED: &'static str = "unauthorized";
    /// The caller may not do this.
    pub const FORBIDDEN: &'static str = "forbidden";
    /// The request conflicts with the current state.
    pub const CONFLICT: &'static str = "conflict";
    /// The service cannot serve the request now; it may be retried later.
    pub const UNAVAILABLE: &'static str = "unavailable";
    /// The answer was larger than the requester's `max_frame` (only sent
    /// when the `response_too_large` extension is on, PROTOCOL.md §14.2;
    /// otherwise such an answer is replaced by [`INTERNAL`](Self::INTERNAL)).
    pub const RESPONSE_TOO_LARGE: &'static str = "response_too_large";

    /// Builds an error with a code and message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            data: None,
        }
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for RemoteError {}

/// Codes carried by close frames (`{"t":"close","code":…}`), see PROTOCOL.md.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCode {
    /// Graceful close by the application.
    Normal,
    /// Frame exceeded the receiver's limit.
    FrameTooLarge,
    /// Frame was not UTF-8.
    InvalidUtf8,
    /// Frame was not JSON.
    InvalidJson,
    /// Frame was not a JSON object.
    NotAnObject,
    /// A field was duplicated, missing or malformed.
    InvalidFrame,
    /// A frame type not allowed in the state.
    UnexpectedFrame,
    /// An application frame before authentication.
    Unauthenticated,
    /// No common protocol version.
    VersionMismatch,
    /// A proof did not verify.
    AuthFailed,
    /// Feature negotiation failed.
    NegotiationFailed,
    /// A frame failed its integrity check.
    Integrity,
    /// A frame carried a wrong sequence number.
    Sequence,
    /// The handshake did not finish in time.
    HandshakeTimeout,
    /// The peer did not answer keepalive pings in time.
    KeepaliveTimeout,
    /// Relays (PROTOCOL.md §18.5): the server does not admit a relayed
    /// client (a limit, an unusable address, or it is closing).
    Refused,
    /// Relays: the relay's queue for a client stayed over its bound.
    Overflow,
    /// Relays: a client's connection to its relay ended without a close
    /// frame.
    Gone,
    /// Relays: a graceful `leave` did not complete within the server's
    /// close timeout.
    Timeout,
    /// Relays: the relay lost its upstream connection (sent by a relay to
    /// its clients).
    UpstreamLost,
    /// A code this implementation does not know, with the peer's text
    /// (kept up to [`MAX_REASON_LEN`](crate::MAX_REASON_LEN) bytes, clipped
    /// on a character boundary). Never sent by this implementation.
    Other(String),
    /// No code: the peer's close frame had none, or the stream ended
    /// without a close frame ([`CloseReason::UnexpectedEof`]). Never sent.
    Missing,
}

impl CloseCode {
    const TABLE: [(Self, &'static str); 20] = [
        (Self::Normal, "normal"),
        (Self::FrameTooLarge, "frame_too_large"),
        (Self::InvalidUtf8, "invalid_utf8"),
        (Self::InvalidJson, "invalid_json"),
        (Self::NotAnObject, "not_an_object"),
        (Self::InvalidFrame, "invalid_frame"),
        (Self::UnexpectedFrame, "unexpected_frame"),
        (Self::Unauthenticated, "unauthenticated"),
        (Self::VersionMismatch, "version_mismatch"),
        (Self::AuthFailed, "auth_failed"),
        (Self::NegotiationFailed, "negotiation_failed"),
        (Self::Integrity, "integrity"),
        (Self::Sequence, "sequence"),
        (Self::HandshakeTimeout, "handshake_timeout"),
        (Self::KeepaliveTimeout, "keepalive_timeout"),
        (Self::Refused, "refused"),
        (Self::Overflow, "overflow"),
        (Self::Gone, "gone"),
        (Self::Timeout, "timeout"),
        (Self::UpstreamLost, "upstream_lost"),
    ];

    /// The wire string: the peer's text for [`CloseCode::Other`],
    /// `missing` for [`CloseCode::Missing`].
    pub fn as_str(&self) -> &str {
        match self {
            Self::Other(s) => s,
            Self::Missing => "missing",
            known => Self::TABLE
                .iter()
                .find(|(c, _)| c == known)
                .map_or("missing", |(_, s)| s),
        }
    }

    /// Parses a wire string; a string this implementation does not know
    /// is kept as [`CloseCode::Other`] (clipped to
    /// [`MAX_REASON_LEN`](crate::MAX_REASON_LEN) bytes).
    pub fn parse(s: &str) -> Self {
        Self::TABLE.iter().find(|(_, w)| *w == s).map_or_else(
            || Self::Other(crate::wire::clip(s, crate::MAX_REASON_LEN)),
            |(c, _)| c.clone(),
        )
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a connection ended. Delivered once, as the last event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseReason {
    /// We closed gracefully (see [`Connection::close`](crate::Connection::close)).
    #[error("closed locally: {reason}")]
    Local {
        /// The reason we gave.
        reason: String,
    },
    /// The peer sent a close frame.
    #[error("closed by peer ({code}): {reason}")]
    Remote {
        /// The peer's code; [`CloseCode::Normal`] for a graceful close,
        /// [`CloseCode::Other`] with its text for a code we do not know,
        /// [`CloseCode::Missing`] for a close frame without one.
        code: CloseCode,
        /// The peer's reason text: at most
        /// [`MAX_REASON_LEN`](crate::MAX_REASON_LEN) (256) bytes are kept,
        /// a longer one is clipped on a character boundary; empty if the
        /// frame had none.
        reason: String,
    },
    /// The peer broke the protocol; we told it so and closed.
    #[error("protocol error: {0}")]
    Protocol(ProtocolError),
    /// The handshake did not complete before its deadline.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The peer did not answer a keepalive ping in time.
    #[error("keepalive timed out")]
    KeepaliveTimeout,
    /// The transport ended without a close frame (possibly mid-frame).
    #[error("unexpected end of stream")]
    UnexpectedEof,
}

impl CloseReason {
    /// A single code for this reason, whichever side detected it: e.g. a
    /// wrong secret is [`CloseCode::AuthFailed`] on the server (which
    /// detected it) and on the client (which was told).
    pub fn code(&self) -> CloseCode {
        match self {
            Self::Local { .. } => CloseCode::Normal,
            Self::Remote { code, .. } => code.clone(),
            Self::Protocol(e) => e.code(),
            Self::HandshakeTimeout => CloseCode::HandshakeTimeout,
            Self::KeepaliveTimeout => CloseCode::KeepaliveTimeout,
            Self::UnexpectedEof => CloseCode::Missing,
        }
    }

    /// Whether this was an orderly close by either side.
    pub fn is_graceful(&self) -> bool {
        matches!(
            self,
            Self::Local { .. }
                | Self::Remote {
                    code: CloseCode::Normal,
                    ..
                }
        )
    }
}
