//! Connection configuration: every limit and timeout, with documented defaults.

use std::fmt;
use std::time::Duration;

use crate::Secret;

/// Default maximum frame size after authentication: 8 MiB (excluding `\n`).
pub const DEFAULT_MAX_FRAME: usize = 8 * 1024 * 1024;
/// Default maximum frame size before authentication: 16 KiB.
pub const DEFAULT_PRE_AUTH_MAX_FRAME: usize = 16 * 1024;
/// Default nesting limit of a frame's values (see [`Config::max_depth`]):
/// 127 levels of arrays and objects, exactly what serde_json's parser
/// accepts (its recursion limit of 128 refuses the 128th level), so every
/// body that passes the core also parses in the application.
pub const DEFAULT_MAX_DEPTH: usize = 127;
/// Default handshake deadline, counted from [`Connection::new`](crate::Connection::new).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default keepalive ping interval.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// Default time to wait for a pong before closing with `KeepaliveTimeout`.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default request timeout when `request` is given none.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default limit on our requests awaiting a response.
pub const DEFAULT_MAX_REQUESTS_IN_FLIGHT: usize = 1024;
/// Default limit on the peer's requests awaiting our response.
pub const DEFAULT_MAX_INCOMING_REQUESTS: usize = 1024;
/// Default outbound buffer bound in bytes (see [`Config::max_outbound`]).
pub const DEFAULT_MAX_OUTBOUND: usize = 1024 * 1024;
/// Default time a graceful close waits for in-flight requests.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Maximum length of node id and designation strings, in bytes.
pub const MAX_IDENTITY_LEN: usize = 256;
/// Most relay secrets a server holds (PROTOCOL.md §18.1); more are ignored.
pub const MAX_RELAY_SECRETS: usize = 16;
/// Default limit on the clients one relay has live on one connection to a
/// server (see [`Config::max_relayed_clients`]).
pub const DEFAULT_MAX_RELAYED_CLIENTS: usize = 16384;
/// Default limit on the requests of all clients of one relay connection
/// awaiting our answer (see [`Config::max_relayed_incoming`]).
pub const DEFAULT_MAX_RELAYED_INCOMING: usize = 65536;
/// Default bound a relay puts on every frame it carries for a client, in
/// either direction (PROTOCOL.md §18.6): 1 MiB. A relay announces at most
/// this as its clients' `max_frame` (and in their `join`), so that no one
/// client's frame holds the shared upstream connection longer than one
/// such frame takes to write.
pub const DEFAULT_MAX_RELAYED_FRAME: usize = 1024 * 1024;

/// The identity a peer announces in the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Identity {
    /// Id of the node instance (zetta-rpc's `node`, e.g. a host MAC or UUID).
    pub node: String,
    /// Name of the application (zetta-rpc's `designation`).
    pub designation: String,
}

impl Identity {
    /// Builds an identity.
    pub fn new(node: impl Into<String>, designation: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            designation: designation.into(),
        }
    }
}

/// Local policy for an optional protection layer (signing or sealing).
///
/// Outcome for two sides `a`, `b`: the layer is **on** when either side is
/// `Preferred` or `Required` and neither is `Off`; negotiation **fails** when
/// one side is `Required` and the other `Off`; otherwise it is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Policy {
    /// Refuse the layer.
    Off,
    /// Use it if the peer prefers or requires it. The default.
    #[default]
    Optional,
    /// Ask for it; accept a peer that refuses.
    Preferred,
    /// Insist on it; a peer that refuses (or strips it) fails with
    /// `NegotiationFailed`.
    Required,
}

impl Policy {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Optional => "optional",
            Self::Preferred => "preferred",
            Self::Required => "required",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "off" => Self::Off,
            "optional" => Self::Optional,
            "preferred" => Self::Preferred,
            "required" => Self::Required,
            _ => return None,
        })
    }

    /// Negotiates two policies: whether the layer is on, or
    /// [`PolicyConflict`] when one requires what the other refuses.
    pub fn negotiate(a: Self, b: Self) -> Result<bool, PolicyConflict> {
        use Policy::*;
        match (a, b) {
            (Required, Off) | (Off, Required) => Err(PolicyConflict),
            (Off, _) | (_, Off) => Ok(false),
            (Preferred | Required, _) | (_, Preferred | Required) => Ok(true),
            (Optional, Optional) => Ok(false),
        }
    }
}

/// One side requires a protection layer the other refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("one side requires a layer the other refuses")]
pub struct PolicyConflict;

/// A frame-signing algorithm, negotiated in the handshake (PROTOCOL.md §9).
/// Both put the same wrapping around a frame and differ in the tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignAlg {
    /// AES-256-GMAC: AES-256-GCM over no plaintext with the frame as
    /// associated data and the sequence number in the nonce; a 16-byte
    /// tag. With AES-NI and carry-less multiply it costs a fraction of
    /// HMAC-SHA256 on small frames. Its nonce is never reused: the key is
    /// one direction's and one session's, the sequence number strictly
    /// increases. Name `"aes-256-gmac"`.
    Aes256Gmac,
    /// HMAC-SHA256 (what zetta-rpc signs with); a 32-byte tag. Name
    /// `"hmac-sha256"`.
    HmacSha256,
}

impl SignAlg {
    /// Every algorithm this implementation knows, fastest first (the
    /// default preference).
    pub const ALL: [Self; 2] = [Self::Aes256Gmac, Self::HmacSha256];

    /// The algorithm's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aes256Gmac => "aes-256-gmac",
            Self::HmacSha256 => "hmac-sha256",
        }
    }

    /// The algorithm with this wire name, if known.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// Length of the tag in bytes.
    pub fn tag_len(self) -> usize {
        match self {
            Self::Aes256Gmac => 16,
            Self::HmacSha256 => 32,
        }
    }
}

impl fmt::Display for SignAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol extension (PROTOCOL.md §5.1): wire behaviour beyond version 1
/// that a side uses only when both sides agreed to it in the handshake.
/// The client offers the extensions of its [`Config::extensions`] in
/// `hello`; the server accepts those it also has in its own and names them
/// in `challenge`. A peer that did not accept one (or a version 1 peer,
/// which ignores the offer) never sees its frames or codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Extension {
    /// An answer too large for the requester's `max_frame` is replaced by
    /// an error answer with the code `response_too_large` (and its sizes as
    /// `data`); without it the code is `internal`. Name
    /// `"response_too_large"`.
    ResponseTooLarge,
}

impl Extension {
    /// Every extension this implementation knows, in wire order.
    pub const ALL: [Self; 1] = [Self::ResponseTooLarge];

    /// The extension's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ResponseTooLarge => "response_too_large",
        }
    }

    /// The extension with this wire name, if known.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`Extension`]s: what a side offers or accepts
/// ([`Config::extensions`]), and what a connection agreed on
/// ([`Connection::extensions`](crate::Connection::extensions),
/// [`Authenticated::extensions`](crate::Authenticated::extensions)).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Extensions(u32);

impl Extensions {
    /// No extension.
    pub const NONE: Self = Self(0);
    /// Every extension this implementation knows (the default offer). The
    /// variants of [`Extension`] are numbered from 0 in the order of
    /// [`Extension::ALL`], one bit each.
    pub const ALL: Self = Self((1 << Extension::ALL.len()) - 1);

    /// Whether `e` is in the set.
    pub fn contains(self, e: Extension) -> bool {
        self.0 & e.bit() != 0
    }

    /// The set with `e` added.
    #[must_use]
    pub fn with(self, e: Extension) -> Self {
        Self(self.0 | e.bit())
    }

    /// The set without `e`.
    #[must_use]
    pub fn without(self, e: Extension) -> Self {
        Self(self.0 & !e.bit())
    }

    /// The extensions in both sets.
    #[must_use]
    pub fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The extensions in the set, in wire order.
    pub fn iter(self) -> impl Iterator<Item = Extension> {
        Extension::ALL
            .into_iter()
            .filter(move |e| self.contains(*e))
    }
}

impl FromIterator<Extension> for Extensions {
    fn from_iter<I: IntoIterator<Item = Extension>>(iter: I) -> Self {
        iter.into_iter().fold(Self::NONE, Self::with)
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(Extension::as_str))
            .finish()
    }
}

/// Keepalive settings. Each side pings on its own schedule.
///
/// As with every duration in [`Config`], one too large to add to the
/// current `Instant` (such as `Duration::MAX`) means "never": no ping, or
/// no pong deadline.
#[derive(Clone)]
pub struct Keepalive {
    /// Time between pings (counted from the previous pong or from
    /// authentication). Default [`DEFAULT_KEEPALIVE_INTERVAL`].
    pub interval: Duration,
    /// Time to wait for the pong, counted from when the ping is sent (a
    /// ping sent late, after a suspend, gets the whole timeout). Default
    /// [`DEFAULT_KEEPALIVE_TIMEOUT`].
    pub timeout: Duration,
    /// A JSON object sent with every keepalive ping (zetta-rpc's
    /// `pingDataObject`), as compact JSON text, nested at most
    /// [`Config::max_depth`] levels (a deeper one is never sent). `None`
    /// sends a bare ping.
    pub data: Option<Box<serde_json::value::RawValue>>,
}

impl Default for Keepalive {
    fn default() -> Self {
        Self {
            interval: DEFAULT_KEEPALIVE_INTERVAL,
            timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            data: None,
        }
    }
}

impl fmt::Debug for Keepalive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keepalive")
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("data", &self.data.as_ref().map(|d| d.get()))
            .finish()
    }
}

/// Configuration shared by many connections (wrap it in an `Arc`).
///
/// A duration too large to add to the current `Instant` (such as
/// `Duration::MAX`) means no deadline, never a panic: no handshake
/// deadline, requests that wait for their answer or the connection's end,
/// a graceful close that drains until nothing is in flight.
#[derive(Debug, Clone)]
pub struct Config {
    /// The pre-shared secret.
    pub secret: Secret,
    /// Our identity, announced in the handshake.
    pub identity: Identity,
    /// Largest frame we accept after authentication, in bytes excluding
    /// `\n`; announced to the peer, which must not send larger. Default
    /// [`DEFAULT_MAX_FRAME`].
    pub max_frame: usize,
    /// Largest frame we accept before authentication. Default
    /// [`DEFAULT_PRE_AUTH_MAX_FRAME`].
    pub pre_auth_max_frame: usize,
    /// Deepest nesting of arrays and objects we accept and send in any one
    /// value of a frame: a body (`d`), ping data, an error's `data`, or any
    /// other member, each counted from itself (a scalar is 0 levels, `[]`
    /// one, `[[1]]` two). It applies to every frame, before and after
    /// authentication, signed, sealed or plain (counted on the frame
    /// inside the wrapping). A deeper frame from the peer is invalid JSON
    /// (close `invalid_json`, PROTOCOL.md §4.3); a deeper value of ours is
    /// refused with `SendError::TooDeep` and nothing is written. The limit
    /// is not announced: give both sides the same one. Values below 1 act
    /// as 1 (the handshake's lists need one level). Default
    /// [`DEFAULT_MAX_DEPTH`], what serde_json's parser accepts; raise it
    /// only if the application parses bodies with a deeper parser (the
    /// core's own scan does not recurse, so any limit is safe for it).
    pub max_depth: usize,
    /// Deadline for the whole handshake, counted from the `now` given to
    /// [`Connection::new`](crate::Connection::new). Default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    /// Keepalive; `None` disables our pings (we still answer the peer's).
    pub keepalive: Option<Keepalive>,
    /// Timeout for requests that do not name their own. Default
    /// [`DEFAULT_REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// Our requests awaiting a response, at most; past it `request` returns
    /// `SendError::Busy`. Default [`DEFAULT_MAX_REQUESTS_IN_FLIGHT`].
    pub max_requests_in_flight: usize,
    /// The peer's requests awaiting our response, at most; past it the
    /// connection answers new requests itself with a `busy` error.
    /// Default [`DEFAULT_MAX_INCOMING_REQUESTS`].
    pub max_incoming_requests: usize,
    /// Bound on encoded bytes waiting in the outbound buffer. A command is
    /// accepted while fewer bytes than this are buffered (so the buffer
    /// holds at most this plus one frame); past it, commands return
    /// `SendError::Blocked` until `Event::SendUnblocked`. Pongs are
    /// coalesced and never queue more than one. Default [`DEFAULT_MAX_OUTBOUND`].
    pub max_outbound: usize,
    /// Time a graceful [`close`](crate::Connection::close) waits for
    /// in-flight requests. Default [`DEFAULT_CLOSE_TIMEOUT`].
    pub close_timeout: Duration,
    /// Signing policy. Default [`Policy::Optional`].
    pub signing: Policy,
    /// Signing algorithms we accept, in our order of preference. A client
    /// offers them all; a server picks the first of its list that the
    /// client offered. Default [`SignAlg::ALL`] (AES-256-GMAC, then
    /// HMAC-SHA256). When signing is negotiated on and the two lists have
    /// nothing in common, the handshake fails with `negotiation_failed`; a
    /// server also fails a client whose offer (signing not `Off`) names no
    /// algorithm it knows, so a client with an empty list must set signing
    /// to `Off` (PROTOCOL.md §9.2).
    pub sign_algs: Vec<SignAlg>,
    /// Second-layer encryption (AES-256-CBC + HMAC) policy. Default
    /// [`Policy::Optional`].
    pub encryption: Policy,
    /// Protocol extensions (PROTOCOL.md §5.1): a client offers these in its
    /// `hello`; a server accepts the ones the client offered that are also
    /// here. Default [`Extensions::ALL`]; [`Extensions::NONE`] makes a side
    /// behave exactly as a version 1 peer without extensions.
    pub extensions: Extensions,
    /// Client: take the relay role (PROTOCOL.md §18): offer the extension
    /// `relay` and require it, so that [`secret`](Self::secret) must be one
    /// of the server's relay secrets. A relay announces its clients with
    /// [`Connection::join`](crate::Connection::join) and carries their
    /// frames. Ignored on servers. Default `false`.
    pub relay: bool,
    /// Server: the secrets relays authenticate with (PROTOCOL.md §18.1),
    /// at most [`MAX_RELAY_SECRETS`] (the rest are ignored). Empty (the
    /// default) allows no relays: the server does not accept `relay`. A
    /// connection that accepted `relay` is verified against these only,
    /// never against [`secret`](Self::secret), and any other connection
    /// against `secret` only; an entry equal to `secret` is never used
    /// (see [`check_relay_secrets`](Self::check_relay_secrets)).
    pub relay_secrets: Vec<Secret>,
    /// Server: the clients one relay connection may have live at once;
    /// a `join` past it is refused with `leave` code `refused`
    /// (PROTOCOL.md §18.5). Default [`DEFAULT_MAX_RELAYED_CLIENTS`].
    pub max_relayed_clients: usize,
    /// The requests of all clients of one relay connection awaiting our
    /// answer, at most (each client also has
    /// [`max_incoming_requests`](Self::max_incoming_requests) of its own);
    /// past it a client's new request is answered `busy`, so what one relay
    /// can make us hold is bounded whatever its number of clients. Default
    /// [`DEFAULT_MAX_RELAYED_INCOMING`].
    pub max_relayed_incoming: usize,
    /// Seed for the nonce/IV generator. `None` (the default) seeds from the
    /// OS; set it only in tests.
    pub rng_seed: Option<[u8; 32]>,
}

impl Config {
    /// Checks a message or request body as [`Connection::send`](crate::Connection::send)
    /// and [`request`](crate::Connection::request) will: nested at most
    /// [`max_depth`](Self::max_depth) levels ([`SendError::TooDeep`](crate::SendError::TooDeep)
    /// otherwise) and, as an object, with `op` at most once
    /// ([`SendError::DuplicateOp`](crate::SendError::DuplicateOp)). For a
    /// layer that queues bodies before they reach the connection, so the
    /// caller learns at once that the body would be refused.
    pub fn check_body(&self, body: &serde_json::value::RawValue) -> Result<(), crate::SendError> {
        let text = body.get().as_bytes();
        if !crate::wire::depth_within(text, self.max_depth) {
            return Err(crate::SendError::TooDeep {
                depth: crate::wire::depth(text, usize::MAX),
                limit: self.max_depth,
            });
        }
        if crate::wire::has_duplicate_op(body) {
            return Err(crate::SendError::DuplicateOp);
        }
        Ok(())
    }

    /// A configuration with the given secret and identity and all defaults.
    pub fn new(secret: Secret, identity: Identity) -> Self {
        Self {
            secret,
            identity,
            max_frame: DEFAULT_MAX_FRAME,
            pre_auth_max_frame: DEFAULT_PRE_AUTH_MAX_FRAME,
            max_depth: DEFAULT_MAX_DEPTH,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            keepalive: Some(Keepalive::default()),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_requests_in_flight: DEFAULT_MAX_REQUESTS_IN_FLIGHT,
            max_incoming_requests: DEFAULT_MAX_INCOMING_REQUESTS,
            max_outbound: DEFAULT_MAX_OUTBOUND,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            signing: Policy::Optional,
            sign_algs: SignAlg::ALL.to_vec(),
            encryption: Policy::Optional,
            extensions: Extensions::ALL,
            relay: false,
            relay_secrets: Vec::new(),
            max_relayed_clients: DEFAULT_MAX_RELAYED_CLIENTS,
            max_relayed_incoming: DEFAULT_MAX_RELAYED_INCOMING,
            rng_seed: None,
        }
    }

    /// Checks the relay secrets (PROTOCOL.md §18.1): at most
    /// [`MAX_RELAY_SECRETS`], and none equal to the client secret (which
    /// would let a holder of the client secret speak as a relay, were it
    /// used; the handshake never uses such an entry). For a builder that
    /// should refuse such a configuration rather than run with it.
    pub fn check_relay_secrets(&self) -> Result<(), RelaySecretsError> {
        if self.relay_secrets.len() > MAX_RELAY_SECRETS {
            return Err(RelaySecretsError::TooMany {
                count: self.relay_secrets.len(),
            });
        }
        if self.relay_secrets.iter().any(|s| s == &self.secret) {
            return Err(RelaySecretsError::SameAsClientSecret);
        }
        Ok(())
    }

    /// The relay secrets the handshake uses: the first
    /// [`MAX_RELAY_SECRETS`], without any equal to the client secret.
    pub(crate) fn usable_relay_secrets(&self) -> impl Iterator<Item = &Secret> {
        self.relay_secrets
            .iter()
            .take(MAX_RELAY_SECRETS)
            .filter(|s| *s != &self.secret)
    }
}

/// The relay secrets of a [`Config`] cannot be used as given
/// ([`Config::check_relay_secrets`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelaySecretsError {
    /// More than [`MAX_RELAY_SECRETS`] relay secrets.
    #[error("{count} relay secrets, at most 16 are allowed")]
    TooMany {
        /// How many were given.
        count: usize,
    },
    /// A relay secret equals the client secret.
    #[error("a relay secret equals the client secret")]
    SameAsClientSecret,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_negotiation_table() {
        use Policy::*;
        let all = [Off, Optional, Preferred, Required];
        for a in all {
            for b in all {
                let r = Policy::negotiate(a, b);
                assert_eq!(r, Policy::negotiate(b, a), "symmetric");
                let want = if (a == Required && b == Off) || (a == Off && b == Required) {
                    Err(PolicyConflict)
                } else {
                    Ok(a != Off && b != Off && (a >= Preferred || b >= Preferred))
                };
                assert_eq!(r, want, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn extension_sets() {
        let e = Extension::ResponseTooLarge;
        assert_eq!(Extension::parse("response_too_large"), Some(e));
        assert_eq!(Extension::parse("relay"), None);
        assert!(Extensions::ALL.contains(e) && !Extensions::NONE.contains(e));
        assert_eq!(Extensions::NONE.with(e), Extensions::ALL);
        assert_eq!(Extensions::ALL.without(e), Extensions::NONE);
        assert_eq!(
            Extensions::ALL.intersection(Extensions::NONE),
            Extensions::NONE
        );
        assert_eq!(Extensions::ALL.iter().collect::<Vec<_>>(), Extension::ALL);
        assert_eq!([e].into_iter().collect::<Extensions>(), Extensions::ALL);
        assert_eq!(
            format!("{:?}", Extensions::ALL),
            r#"{"response_too_large"}"#
        );
    }
}
