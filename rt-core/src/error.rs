//! The one error type of the async layer, split by what the caller can do
//! about it.

use std::io;

use jsonlink_proto::{CloseCode, CloseReason, RemoteError, RequestError, SendError};

/// Why a [`Client`](crate::Client), [`Server`](crate::Server) or
/// [`Link`](crate::Link) operation failed.
///
/// Request outcomes map one to one from the core: a request resolves with a
/// value, or with exactly one of [`Timeout`](Self::Timeout),
/// [`ConnectionLost`](Self::ConnectionLost),
/// [`ShuttingDown`](Self::ShuttingDown), [`NoHandler`](Self::NoHandler),
/// [`HandlerDropped`](Self::HandlerDropped) or [`Remote`](Self::Remote)
/// (plus [`Decode`](Self::Decode) when the value does not fit the caller's
/// type). Requests are never replayed on another connection.
///
/// One type serves every operation; which variants an operation can
/// return is in its documentation, under **Errors** (a command never
/// returns a connect-time error such as
/// [`HandshakeTimeout`](Self::HandshakeTimeout), except the one a client
/// stopped on).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// There is no authenticated link right now (the client is connecting or
    /// backing off; the command was not sent).
    #[error("not connected")]
    NotConnected,
    /// The link failed (EOF, protocol error, keepalive timeout, peer closed)
    /// before the response arrived. The request may or may not have been
    /// processed by the peer; it is not replayed.
    #[error("connection lost before the response arrived")]
    ConnectionLost,
    /// We closed the link ([`Server::shutdown`](crate::Server::shutdown),
    /// [`Client::close`](crate::Client::close)) and the response had not
    /// arrived by the close deadline.
    #[error("shutting down: no response before the close deadline")]
    ShuttingDown,
    /// No response within the request's timeout (or, in the client's
    /// wait-for-reconnect mode, no link within it).
    #[error("request timed out")]
    Timeout,
    /// The peer has no handler for the request's `op`
    /// (remote error code [`RemoteError::NO_HANDLER`]).
    #[error("the peer has no handler: {0}")]
    NoHandler(RemoteError),
    /// The peer's handler dropped its responder without answering
    /// (remote error code [`RemoteError::HANDLER_DROPPED`]).
    #[error("the peer's handler dropped the request: {0}")]
    HandlerDropped(RemoteError),
    /// The peer answered with any other error object.
    #[error("remote error: {0}")]
    Remote(RemoteError),
    /// The response (or a received body) did not deserialize into the
    /// requested type. Only this call failed; the link is up.
    #[error("could not decode the value: {0}")]
    Decode(#[source] serde_json::Error),
    /// The value to send did not serialize to JSON.
    #[error("could not encode the value: {0}")]
    Encode(#[source] serde_json::Error),
    /// As many of our requests as the link allows are in flight: nothing
    /// was sent; retry once answers have come.
    #[error("too many requests in flight (limit {limit})")]
    Busy {
        /// The link's limit
        /// ([`max_requests_in_flight`](crate::ClientBuilder::max_requests_in_flight)).
        limit: usize,
    },
    /// The message or request could make a frame larger than the peer
    /// accepts: nothing was sent, the link stays up; send less at once.
    #[error("frame of {size} bytes exceeds the peer's {limit}-byte limit")]
    FrameTooLarge {
        /// The encoded frame's size bound, in bytes.
        size: usize,
        /// The peer's `max_frame`.
        limit: usize,
    },
    /// The answer given to a [`Responder`](crate::Responder) would exceed
    /// the requester's maximum frame size (its bound,
    /// [`Authenticated::response_frame_bound`](jsonlink_proto::Authenticated::response_frame_bound),
    /// did). It was not sent: the request has been answered with an error
    /// in its place (`response_too_large` where the peer accepted that
    /// extension, else `internal`), counted in
    /// [`Stats::responses_too_large`](crate::Stats::responses_too_large)
    /// and logged.
    #[error(
        "answer of {size} bytes exceeds the requester's {limit}-byte limit; answered with an error"
    )]
    ResponseTooLarge {
        /// The answer's encoded size in bytes (an upper bound, exact
        /// without signing or sealing).
        size: usize,
        /// The requester's limit.
        limit: usize,
    },
    /// The client or server was closed by its owner, or the link is closing
    /// and takes no new commands.
    #[error("closed")]
    Closed,
    /// The jsonlink handshake was rejected: wrong secret, a channel-binding
    /// mismatch, no common version, or failed feature negotiation.
    #[error("{}", auth_failure(.0))]
    Auth(CloseReason),
    /// The link ended before authentication for another reason (protocol
    /// error, EOF during the handshake).
    #[error("handshake failed: {0}")]
    Handshake(CloseReason),
    /// TCP + TLS + authentication did not finish within the handshake
    /// timeout.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// A client's host name did not resolve (or resolved to no address).
    /// Retried per the reconnect policy, reported once per outage.
    #[error("could not resolve `{host}`: {error}")]
    Resolve {
        /// The host name.
        host: String,
        /// What the runtime's resolver reported.
        #[source]
        error: io::Error,
    },
    /// A client's [`Target`](crate::Target) cannot be connected to: a
    /// string that is not `host:port`, an empty address list, or a host
    /// that is no valid TLS server name while the builder was given none.
    /// The client stops at once.
    #[error("invalid target `{target}`: {reason}")]
    InvalidTarget {
        /// The target as given.
        target: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The server refused a connection because a connection limit was
    /// reached (reported in the server's event stream).
    #[error("connection refused: {limit}")]
    Refused {
        /// Which limit: `"max_connections"` or `"max_connections_per_ip"`.
        limit: &'static str,
    },
    /// No authenticated link with this id (on a
    /// [`Multiplexer`](crate::Multiplexer): its own id,
    /// [`MuxLinkId`](crate::MuxLinkId)).
    #[error("no link with id {0}")]
    UnknownLink(u64),
    /// A [`Multiplexer`](crate::Multiplexer) has no entry of this name.
    #[error("no multiplexer entry named `{0}`")]
    UnknownEntry(String),
    /// A socket or TLS error (TLS failures are
    /// [`io::ErrorKind::InvalidData`] wrapping a `rustls::Error`; on a
    /// client, those that retrying cannot fix are
    /// [`TlsConfig`](Self::TlsConfig)).
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// A client's TLS handshake failed on a configuration problem that
    /// retrying the same configuration cannot fix: the server's certificate
    /// is not issued by a CA the client trusts, not valid for the server
    /// name it checks, outside its validity period or otherwise rejected;
    /// the server rejected the client's certificate (or wanted one); or the
    /// two TLS configurations have nothing in common. Its text says what to
    /// change (`fix`).
    ///
    /// A client that has never authenticated stops on it (its
    /// [`wait_connected`](crate::Client::wait_connected) returns it); one
    /// that has authenticated before reports it once per outage and keeps
    /// retrying (a server may be rotating its certificate).
    #[error("TLS configuration error: {error}; to fix: {fix}")]
    TlsConfig {
        /// What rustls reported.
        #[source]
        error: rustls::Error,
        /// What to change, in words.
        fix: &'static str,
    },
    /// Another refusal by the core, e.g. ping data that is not an object.
    #[error(transparent)]
    Send(SendError),
    /// The relay secrets given to
    /// [`ServerBuilder::relay_secrets`](crate::ServerBuilder::relay_secrets)
    /// are unusable (too many, or one equals the client secret); the
    /// server was not bound.
    #[error("relay secrets: {0}")]
    RelaySecrets(jsonlink_proto::RelaySecretsError),
}

/// One line saying why the handshake was rejected and what usually causes
/// it (for [`Error::Auth`]).
fn auth_failure(reason: &CloseReason) -> String {
    use jsonlink_proto::ProtocolError;
    const SECRET_HINT: &str =
        "a different secret on each side, or a TLS-terminating proxy between them";
    match reason {
        CloseReason::Protocol(ProtocolError::AuthFailed) => {
            format!("authentication failed: the peer's proof did not verify ({SECRET_HINT})")
        }
        CloseReason::Remote {
            code: CloseCode::AuthFailed,
            ..
        } => format!("authentication failed: the peer rejected our proof ({SECRET_HINT})"),
        CloseReason::Protocol(e) => format!("authentication failed: {e}"),
        CloseReason::Remote { code, reason } if reason.is_empty() => {
            format!("authentication failed: the peer refused the handshake ({code})")
        }
        CloseReason::Remote { code, reason } => {
            format!("authentication failed: the peer refused the handshake ({code}: {reason})")
        }
        other => format!("authentication failed: {other}"),
    }
}

impl Error {
    /// Maps a failed request's core error.
    /// [`RequestError::ClosedLocally`] becomes [`Error::ShuttingDown`].
    pub fn from_request(e: RequestError) -> Self {
        match e {
            RequestError::Remote(r) => Self::from_remote(r),
            RequestError::Timeout => Self::Timeout,
            RequestError::ConnectionLost => Self::ConnectionLost,
            RequestError::ClosedLocally => Self::ShuttingDown,
            _ => Self::ConnectionLost,
        }
    }

    /// Maps a remote error object, giving the well-known codes their own
    /// variants.
    pub fn from_remote(r: RemoteError) -> Self {
        match r.code.as_str() {
            RemoteError::NO_HANDLER => Self::NoHandler(r),
            RemoteError::HANDLER_DROPPED => Self::HandlerDropped(r),
            _ => Self::Remote(r),
        }
    }

    /// Maps a core command refusal.
    pub fn from_send(e: SendError) -> Self {
        match e {
            SendError::NotAuthenticated => Self::NotConnected,
            SendError::Closed => Self::Closed,
            SendError::Busy { limit } => Self::Busy { limit },
            SendError::FrameTooLarge { size, limit } => Self::FrameTooLarge { size, limit },
            SendError::ResponseTooLarge { size, limit } => Self::ResponseTooLarge { size, limit },
            other => Self::Send(other),
        }
    }

    /// Maps the close reason of a link that never authenticated.
    pub fn from_handshake_close(reason: CloseReason) -> Self {
        match reason.code() {
            CloseCode::AuthFailed | CloseCode::VersionMismatch | CloseCode::NegotiationFailed => {
                Self::Auth(reason)
            }
            CloseCode::HandshakeTimeout => Self::HandshakeTimeout,
            _ => Self::Handshake(reason),
        }
    }

    /// Maps a client's failed TCP + TLS connect: a TLS configuration
    /// problem becomes [`Error::TlsConfig`] (with what to fix), anything
    /// else (refused, reset, a peer that is not TLS) stays [`Error::Io`].
    pub fn from_connect(e: io::Error) -> Self {
        let tls = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match tls.and_then(|t| tls_fix(t).map(|fix| (t, fix))) {
            Some((error, fix)) => Self::TlsConfig {
                error: error.clone(),
                fix,
            },
            None => Self::Io(e),
        }
    }

    /// Whether retrying the same connection with the same configuration is
    /// pointless (the peer rejected our credentials or protocol).
    pub fn is_auth(&self) -> bool {
        matches!(self, Self::Auth(_))
    }

    /// Whether this is a TLS configuration problem
    /// ([`Error::TlsConfig`]).
    pub fn is_tls_config(&self) -> bool {
        matches!(self, Self::TlsConfig { .. })
    }

    /// The remote error object, for the three remote variants.
    pub fn remote(&self) -> Option<&RemoteError> {
        match self {
            Self::NoHandler(r) | Self::HandlerDropped(r) | Self::Remote(r) => Some(r),
            _ => None,
        }
    }
}

/// What to change for a TLS error a client's handshake reported, if it is
/// one that the same configuration will meet again.
fn tls_fix(e: &rustls::Error) -> Option<&'static str> {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    Some(match e {
        E::InvalidCertificate(C::UnknownIssuer) => {
            "the server's certificate does not chain to a CA the client trusts: add the CA \
             certificate that issued it to the root store of the client's rustls::ClientConfig \
             (or have the server send its whole chain)"
        }
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "the server's certificate is not valid for the server name the client checks: \
             connect with a server name the certificate lists (its subject alternative names), \
             or give the server a certificate issued for this name"
        }
        E::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => {
            "the server's certificate is outside its validity period: renew it, or correct the \
             clock of the machine that is wrong"
        }
        E::InvalidCertificate(C::Revoked) => {
            "the server's certificate is revoked: give the server a new one"
        }
        E::InvalidCertificate(_) => {
            "the server's certificate was rejected: have the server present a well-formed chain \
             issued by a CA in the client's root store"
        }
        E::AlertReceived(A::CertificateRequired) => {
            "the server requires a client certificate: configure one in the client's \
             rustls::ClientConfig (with_client_auth_cert)"
        }
        E::AlertReceived(
            A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied,
        ) => {
            "the server rejected the client's certificate: give the client a valid certificate \
             issued by a CA the server trusts"
        }
        E::PeerIncompatible(_) | E::AlertReceived(A::ProtocolVersion | A::InsufficientSecurity) => {
            "the client's and the server's TLS configurations have no protocol version, cipher \
             suite or key exchange in common: enable one both accept"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_remote_codes_get_their_own_variants() {
        let e = Error::from_request(RequestError::Remote(RemoteError::new("no_handler", "x")));
        assert!(matches!(e, Error::NoHandler(_)));
        let e = Error::from_remote(RemoteError::new("handler_dropped", "x"));
        assert!(matches!(e, Error::HandlerDropped(_)));
        let e = Error::from_remote(RemoteError::new("custom", "x"));
        assert_eq!(e.remote().map(|r| r.code.as_str()), Some("custom"));
        assert!(matches!(
            Error::from_request(RequestError::ClosedLocally),
            Error::ShuttingDown
        ));
    }

    #[test]
    fn an_authentication_failure_is_one_clear_line() {
        use jsonlink_proto::ProtocolError;
        let ours = Error::Auth(CloseReason::Protocol(ProtocolError::AuthFailed)).to_string();
        assert_eq!(
            ours,
            "authentication failed: the peer's proof did not verify (a different secret on \
             each side, or a TLS-terminating proxy between them)"
        );
        let theirs = Error::Auth(CloseReason::Remote {
            code: CloseCode::AuthFailed,
            reason: "authentication failed".into(),
        })
        .to_string();
        assert!(
            theirs.starts_with("authentication failed: the peer rejected our proof"),
            "{theirs}"
        );
        for text in [ours, theirs] {
            assert_eq!(text.matches("authentication failed").count(), 1, "{text}");
            assert!(!text.contains('\n'), "{text}");
        }
        let refused = Error::Auth(CloseReason::Remote {
            code: CloseCode::NegotiationFailed,
            reason: "signing required".into(),
        })
        .to_string();
        assert_eq!(
            refused,
            "authentication failed: the peer refused the handshake (negotiation_failed: signing required)"
        );
    }

    #[test]
    fn tls_configuration_errors_say_what_to_fix_and_other_failures_stay_io() {
        let tls =
            |e: rustls::Error| Error::from_connect(io::Error::new(io::ErrorKind::InvalidData, e));
        let e = tls(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        assert!(e.is_tls_config(), "{e:?}");
        assert!(e.to_string().contains("to fix: "), "{e}");
        let e = tls(rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired,
        ));
        assert!(
            e.to_string().contains("requires a client certificate"),
            "{e}"
        );
        // A peer that is not TLS, or a dropped connection, may pass.
        let e = tls(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        assert!(matches!(e, Error::Io(_)), "{e:?}");
        let e = Error::from_connect(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(matches!(e, Error::Io(_)), "{e:?}");
    }
}
