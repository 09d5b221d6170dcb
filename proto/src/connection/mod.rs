//! The connection state machine: one [`Connection`] per link.
//!
//! Its parts, one concern per file: the handshake ([`handshake`]), the
//! frames after it ([`frames`]), the protection of frames once
//! authenticated ([`protection`]), the fixed timers ([`timers`]) and the
//! request deadlines ([`deadlines`]). This file holds the state, the
//! getters, the inputs (each line opened as negotiated and dispatched by
//! the state) and outputs, and how the connection ends. What the
//! frames look like on the wire is [`crate::wire`]'s.

mod deadlines;
mod frames;
mod handshake;
mod protection;
mod relay;
mod timers;

pub use self::relay::{MAX_ADDR_LEN, MIN_RELAYED_MAX_FRAME, RELAY_WRAPPER_OVERHEAD};

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;
use rustc_hash::FxHashMap;

use self::deadlines::Deadlines;
use self::handshake::Handshake;
use self::protection::Protection;
use self::relay::Relay;
use self::timers::{Timer, Timers, deadline_after};
use crate::config::{Config, Extensions, Identity};
use crate::crypto;
use crate::error::{CloseCode, CloseReason, ProtocolError, RequestError};
use crate::event::{Authenticated, Event, RequestId};
use crate::line_reader::{Line, LineReader};
use crate::wire::{self, Envelope, encode};

/// Protocol versions this implementation speaks.
pub const SUPPORTED_VERSIONS: &[u64] = &[1];
/// Most signing (or sealing) algorithms a `hello` may offer.
pub const MAX_SIGN_ALGS: usize = 16;
/// Most entries of an `ext` list in `hello` or `challenge` (names this
/// implementation does not know count too).
pub const MAX_EXTENSIONS: usize = 32;
/// Sealing algorithm name on the wire.
pub const SEAL_ALG: &str = "aes-256-cbc-hmac-sha256";
/// Smallest `max_frame` a peer may announce.
pub const MIN_PEER_MAX_FRAME: u64 = 1024;
/// Longest close reason kept or sent, in bytes (a longer one is clipped on
/// a character boundary); also the longest text of an unknown close code
/// kept ([`CloseCode::Other`]).
pub const MAX_REASON_LEN: usize = 256;

/// What handling one received frame gives: `Err` when the peer broke the
/// protocol, which ends the connection with that error.
type Handled = Result<(), ProtocolError>;

/// Which end of the link this is. The client opens the handshake; after it,
/// both sides are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Sends `hello`, proves first.
    Client,
    /// Answers with `challenge`, proves second.
    Server,
}

/// Per-connection parameters that are not shared configuration.
#[derive(Clone, Default)]
pub struct ConnectionParams {
    /// Channel-binding bytes (TLS exporter keying material) mixed into the
    /// transcript; both sides must supply the same bytes. Empty for none.
    pub channel_binding: Vec<u8>,
    /// The connection id a server assigns and announces (ignored on clients).
    pub connection_id: u64,
}

impl std::fmt::Debug for ConnectionParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionParams")
            .field("channel_binding_len", &self.channel_binding.len())
            .field("connection_id", &self.connection_id)
            .finish()
    }
}

/// Counters, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames received and processed.
    pub frames_in: u64,
    /// Frames encoded for sending.
    pub frames_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes handed out by `poll_transmit`.
    pub bytes_out: u64,
    /// Responses dropped: late (after timeout), unknown id, or duplicate.
    pub dropped_responses: u64,
    /// Peer requests answered automatically with `busy` or `shutting_down`.
    pub rejected_requests: u64,
    /// Answers too large for the peer's `max_frame`, replaced by an error
    /// answer (`response_too_large` or `internal`, see
    /// [`SendError::ResponseTooLarge`](crate::SendError::ResponseTooLarge)).
    pub responses_too_large: u64,
    /// Relay connections, server: `join`s refused (a limit, or closing).
    pub relay_joins_refused: u64,
    /// Relay connections: frames for a relayed client that had ended,
    /// dropped (PROTOCOL.md §18.4).
    pub relayed_frames_dropped: u64,
}

#[derive(Debug)]
enum State {
    /// Client: hello sent, awaiting challenge. Server: awaiting hello.
    AwaitHello,
    /// Server: challenge sent, awaiting the client's proof.
    AwaitAuth,
    /// Client: challenge answered, awaiting the server's proof.
    AwaitOk,
    Established,
    /// Close frame sent or received; draining in-flight requests.
    Closing {
        reason: CloseReason,
    },
    Closed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            Self::AwaitHello => "await-hello",
            Self::AwaitAuth => "await-auth",
            Self::AwaitOk => "await-ok",
            Self::Established => "established",
            Self::Closing { .. } => "closing",
            Self::Closed => "closed",
        }
    }
}

/// One jsonlink connection: a sans-IO state machine.
///
/// Methods come in quinn's order:
/// - **(A) getters** (`&self`): [`side`](Self::side), [`is_authenticated`](Self::is_authenticated), …
/// - **(B) inputs**: [`handle_input`](Self::handle_input), [`handle_eof`](Self::handle_eof),
///   [`handle_timeout`](Self::handle_timeout)
/// - **(C) commands**: [`send`](Self::send), [`request`](Self::request),
///   [`respond`](Self::respond), [`ping`](Self::ping), [`close`](Self::close)
/// - **(D) outputs**: [`poll_transmit`](Self::poll_transmit), [`poll_event`](Self::poll_event),
///   [`poll_timeout`](Self::poll_timeout) — drain them after every (B) or (C) call.
///
/// Peer misbehaviour never surfaces as a `Result` from (B): the connection
/// queues a close frame and ends with [`Event::Closed`].
pub struct Connection {
    config: Arc<Config>,
    side: Side,
    state: State,
    params: ConnectionParams,
    reader: LineReader,
    out: Vec<u8>,
    scratch: Vec<u8>,
    events: VecDeque<Event>,
    rng: ChaCha20Rng,
    hs: Option<Box<Handshake>>,
    protection: Protection,
    send_seq: u64,
    recv_seq: u64,
    peer_max_frame: usize,
    peer: Option<Identity>,
    /// The extensions in force (empty until authenticated).
    extensions: Extensions,
    /// What the handshake gave, once authenticated.
    link_info: Option<Box<Authenticated>>,
    /// The relayed clients, on a relay connection (PROTOCOL.md §18).
    relay: Option<Box<Relay>>,
    next_request: u64,
    /// Our requests awaiting an answer, with their deadlines (`None`: no
    /// deadline; such a request is not in `deadlines`). Keyed by ids we
    /// issue ourselves (sequential), so a fast unkeyed hash is safe here;
    /// `incoming`, keyed by the peer's ids, keeps std's DoS-resistant
    /// SipHash.
    pending: FxHashMap<u64, Option<Instant>>,
    deadlines: Deadlines,
    incoming: HashSet<u64>,
    timers: Timers,
    pong_owed: bool,
    notify_unblocked: bool,
    stats: Stats,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("side", &self.side)
            .field("state", &self.state.name())
            .field("peer", &self.peer)
            .field("pending_requests", &self.pending.len())
            .field("outbound_bytes", &self.out.len())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Creates a connection. `now` starts the handshake deadline: pass the
    /// time the transport was accepted/opened so the deadline covers TCP and
    /// TLS too. A client queues its `hello` at once.
    pub fn new(config: Arc<Config>, side: Side, now: Instant, params: ConnectionParams) -> Self {
        let mut seed = [0u8; 32];
        let rng_ok = match config.rng_seed {
            Some(s) => {
                seed = s;
                true
            }
            None => getrandom::fill(&mut seed).is_ok(),
        };
        let rng = ChaCha20Rng::from_seed(seed);
        let mut conn = Self {
            side,
            state: State::AwaitHello,
            params,
            reader: LineReader::new(),
            out: Vec::new(),
            scratch: Vec::new(),
            events: VecDeque::new(),
            rng,
            hs: None,
            protection: Protection::Plain,
            send_seq: 0,
            recv_seq: 0,
            peer_max_frame: MIN_PEER_MAX_FRAME as usize,
            peer: None,
            extensions: Extensions::NONE,
            link_info: None,
            relay: None,
            next_request: 1,
            pending: FxHashMap::default(),
            deadlines: Deadlines::default(),
            incoming: HashSet::new(),
            timers: Timers::default(),
            pong_owed: false,
            notify_unblocked: false,
            stats: Stats::default(),
            config,
        };
        conn.set_timer(
            Timer::Handshake,
            deadline_after(now, conn.config.handshake_timeout),
        );
        if !rng_ok {
            // Without OS randomness there are no fresh nonces: refuse to run
            // rather than risk replayable proofs.
            conn.terminate(CloseReason::Local {
                reason: "OS random source failed".into(),
            });
            return conn;
        }
        if side == Side::Client {
            conn.send_hello();
        }
        conn
    }

    // ---------------------------------------------------------------- (A)

    /// The configuration this connection runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Which side this is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Whether the handshake completed (stays true while closing).
    pub fn is_authenticated(&self) -> bool {
        self.peer.is_some()
    }

    /// Whether the connection is authenticated and takes new commands (not
    /// closing, not closed).
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established)
    }

    /// Whether the connection has ended (the `Closed` event was queued).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// While the connection drains after a graceful close (PROTOCOL.md
    /// §13.3), why it is closing: [`CloseReason::Local`] when this side
    /// closed, [`CloseReason::Remote`] with code `normal` when the peer did
    /// (its going-away notice). `None` before that and once ended. While
    /// draining, [`send`](Self::send) and [`respond`](Self::respond) still
    /// work; [`request`](Self::request) and [`ping`](Self::ping) are refused.
    pub fn closing_reason(&self) -> Option<&CloseReason> {
        match &self.state {
            State::Closing { reason } => Some(reason),
            _ => None,
        }
    }

    /// The peer's identity, once authenticated.
    pub fn peer(&self) -> Option<&Identity> {
        self.peer.as_ref()
    }

    /// Our requests awaiting a response.
    pub fn requests_in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The peer's requests awaiting our response.
    pub fn incoming_in_flight(&self) -> usize {
        self.incoming.len()
    }

    /// Encoded bytes waiting for [`poll_transmit`](Self::poll_transmit).
    pub fn outbound_len(&self) -> usize {
        self.out.len()
    }

    /// Whether the owner should read more input now. False while the
    /// outbound buffer is at its bound (the peer is not reading our
    /// answers), so a reader that never reads cannot make us queue without
    /// bound: stop reading, keep writing.
    pub fn wants_input(&self) -> bool {
        !self.is_closed() && self.out.len() < self.config.max_outbound
    }

    /// Bytes of a partial frame held while waiting for its `\n` (never more
    /// than the frame limit in force).
    pub fn input_buffered(&self) -> usize {
        self.reader.pending()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The largest frame the peer accepts (after authentication).
    pub fn peer_max_frame(&self) -> usize {
        self.peer_max_frame
    }

    /// The protocol extensions both sides agreed on in the handshake
    /// (PROTOCOL.md §5.1); empty before authentication, and with a peer that
    /// accepted none (or a version 1 peer, which ignores the offer). Ask
    /// for one with [`Extensions::contains`].
    pub fn extensions(&self) -> Extensions {
        self.extensions
    }

    // ---------------------------------------------------------------- (B)
    // (`handle_timeout` is with the timers, in timers.rs)

    /// Feeds received plaintext bytes (what came out of TLS). Any split is
    /// fine: partial frames are buffered, many frames may arrive at once.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        self.stats.bytes_in += data.len() as u64;
        let mut input = data;
        while !self.is_closed() {
            let limit = if self.peer.is_some() {
                self.config.max_frame
            } else {
                self.config.pre_auth_max_frame
            };
            match self.reader.next(&mut input, limit) {
                Err(e) => {
                    self.fail(e);
                    break;
                }
                Ok(None) => break,
                Ok(Some(Line::Input(line))) => self.handle_line(now, line),
                Ok(Some(Line::Buffered)) => {
                    let buf = self.reader.take_buffered();
                    self.handle_line(now, &buf);
                    self.reader.restore(buf);
                    self.reader.shrink(64 * 1024);
                }
            }
        }
    }

    /// The transport reached end of stream.
    pub fn handle_eof(&mut self, _now: Instant) {
        match &self.state {
            State::Closed => {}
            State::Closing { reason } => {
                let reason = reason.clone();
                self.terminate(reason);
            }
            _ => self.terminate(CloseReason::UnexpectedEof),
        }
    }

    // ---------------------------------------------------------------- (C)
    // (the commands are with the frames they send, in frames.rs)

    // ---------------------------------------------------------------- (D)

    /// Appends all bytes ready to send to `buf` and returns how many. When
    /// `buf` is empty the internal buffer is swapped in without copying.
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> usize {
        let start = buf.len();
        if buf.is_empty() {
            std::mem::swap(buf, &mut self.out);
        } else {
            buf.append(&mut self.out);
        }
        if self.pong_owed && !self.is_closed() {
            self.pong_owed = false;
            let mut pong = std::mem::take(&mut self.out);
            // Encoding a pong never exceeds any limit.
            let _ = self.encode_into(&mut pong, encode::pong);
            buf.append(&mut pong);
            self.out = pong;
        }
        if self.notify_unblocked && self.out.len() < self.config.max_outbound && !self.is_closed() {
            self.notify_unblocked = false;
            self.events.push_back(Event::SendUnblocked);
        }
        let n = buf.len() - start;
        self.stats.bytes_out += n as u64;
        n
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next instant at which [`handle_timeout`](Self::handle_timeout)
    /// must be called, if any (`None`: nothing is timed, e.g. every
    /// duration configured as `Duration::MAX`).
    ///
    /// It is never later than needed, but may be earlier: the deadline of a
    /// request answered out of order can stand until it passes. Calling
    /// `handle_timeout` then does nothing but clear it, as with any early
    /// call. Calling it later than this instant loses nothing: what is due
    /// then fires in deadline order (see `handle_timeout`).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        let req = self.deadlines.first();
        let relayed = self.relay.as_ref().and_then(|r| r.peek_deadline());
        self.timers
            .next()
            .into_iter()
            .chain(req)
            .chain(relayed)
            .min()
    }

    // ---------------------------------------------------------- internals

    /// The nesting limit in force ([`Config::max_depth`], at least 1).
    pub(super) fn max_depth(&self) -> usize {
        self.config.max_depth.max(1)
    }

    pub(super) fn queue_close(&mut self, code: CloseCode, reason: &str, versions: Option<&[u64]>) {
        // Control characters would be escaped six bytes each; dropping them
        // keeps the frame small enough for any peer's frame limit.
        let reason: String = reason.chars().filter(|c| !c.is_control()).collect();
        let reason = wire::clip(&reason, MAX_REASON_LEN);
        let _ = self.queue_frame(|o| encode::close(o, code.as_str(), &reason, versions));
    }

    /// The peer broke the protocol: tell it why (if we still can) and end.
    pub(super) fn fail(&mut self, e: ProtocolError) {
        if self.is_closed() {
            return;
        }
        let versions = match &e {
            ProtocolError::VersionMismatch { ours, .. } => Some(ours.clone()),
            _ => None,
        };
        self.queue_close(e.code(), &e.to_string(), versions.as_deref());
        self.terminate(CloseReason::Protocol(e));
    }

    /// Ends the connection: resolve every request, emit `Closed` last.
    pub(super) fn terminate(&mut self, reason: CloseReason) {
        if self.is_closed() {
            return;
        }
        let error = match reason {
            CloseReason::Local { .. } => RequestError::ClosedLocally,
            _ => RequestError::ConnectionLost,
        };
        self.end_all_clients(&reason, &error);
        let mut ids: Vec<u64> = self.pending.drain().map(|(id, _)| id).collect();
        ids.sort_unstable();
        for id in ids {
            self.events.push_back(Event::RequestFailed {
                id: RequestId(id),
                error: error.clone(),
            });
        }
        self.deadlines.clear();
        self.incoming.clear();
        self.timers = Timers::default();
        self.hs = None;
        self.pong_owed = false;
        self.state = State::Closed;
        self.events.push_back(Event::Closed(reason));
    }

    /// While closing, end once nothing is in flight either way.
    pub(super) fn check_drained(&mut self) {
        if let State::Closing { reason } = &self.state
            && self.pending.is_empty()
            && self.incoming.is_empty()
            && self.relay.as_ref().is_none_or(|r| r.in_flight() == 0)
        {
            let reason = reason.clone();
            self.terminate(reason);
        }
    }

    fn handle_line(&mut self, now: Instant, line: &[u8]) {
        self.stats.frames_in += 1;
        let r = match &self.protection {
            Protection::Plain => self.handle_plain(now, line),
            Protection::Signed { recv, .. } => match crypto::open_signed_with(recv, line) {
                Ok((seq, inner)) => self
                    .check_seq(seq)
                    .and_then(|()| self.handle_plain(now, inner)),
                Err(e) => Err(e),
            },
            Protection::Sealed { recv, .. } => match crypto::open_sealed_with(recv, line) {
                Ok((seq, inner)) => self
                    .check_seq(seq)
                    .and_then(|()| self.handle_plain(now, &inner)),
                Err(e) => Err(e),
            },
        };
        if let Err(e) = r {
            self.fail(e);
        }
    }

    fn check_seq(&mut self, seq: u64) -> Result<(), ProtocolError> {
        if seq != self.recv_seq {
            return Err(ProtocolError::Sequence {
                expected: self.recv_seq,
                got: seq,
            });
        }
        self.recv_seq += 1;
        Ok(())
    }

    pub(super) fn handle_plain(&mut self, now: Instant, line: &[u8]) -> Handled {
        let env = wire::parse(line, self.max_depth(), self.relay.is_some())?;
        let t = env.frame_type();
        if matches!(t.as_deref(), Ok("close")) {
            return self.on_close(now, &env);
        }
        match (&self.state, self.side) {
            (State::AwaitHello, Side::Server) => self
                .expect(&env, "hello")
                .and_then(|()| self.on_hello(&env, line)),
            (State::AwaitHello, Side::Client) => self
                .expect(&env, "challenge")
                .and_then(|()| self.on_challenge(&env, line)),
            (State::AwaitAuth, _) => self
                .expect(&env, "auth")
                .and_then(|()| self.on_auth(now, &env)),
            (State::AwaitOk, _) => self.expect(&env, "ok").and_then(|()| self.on_ok(now, &env)),
            (State::Established | State::Closing { .. }, _) => self.on_app_frame(now, &env, t?),
            (State::Closed, _) => Ok(()),
        }
    }

    /// Before authentication only the expected handshake frame is allowed.
    fn expect(&self, env: &Envelope<'_>, want: &str) -> Result<(), ProtocolError> {
        match env.frame_type() {
            Ok(t) if t == want => Ok(()),
            Ok(t) => Err(ProtocolError::Unauthenticated {
                frame: wire::clip(&t, 32),
            }),
            Err(_) => Err(ProtocolError::Unauthenticated {
                frame: String::new(),
            }),
        }
    }
}
