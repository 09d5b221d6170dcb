//! The connection state machine.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng as _};
use rustc_hash::FxHashMap;
use serde_json::value::RawValue;

use crate::config::{Config, Extension, Extensions, Identity, MAX_IDENTITY_LEN, Policy, SignAlg};
use crate::crypto::{self, FrameMac, IV_LEN, NONCE_LEN, Sealer, SessionKeys, TAG_LEN};
use crate::error::{CloseCode, CloseReason, ProtocolError, RemoteError, RequestError, SendError};
use crate::event::{Authenticated, Event, Payload, PeerRequestId, RequestId};
use crate::line_reader::{Line, LineReader};
use crate::wire::{self, Envelope, Key};

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
    /// [`SendError::ResponseTooLarge`]).
    pub responses_too_large: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Handshake,
    KeepaliveSend,
    KeepaliveDeadline,
    Close,
}

/// The fixed timers in the order they fire when their deadlines are equal
/// (after request deadlines, which go first on a tie).
const TIMERS: [Timer; 4] = [
    Timer::Handshake,
    Timer::KeepaliveSend,
    Timer::KeepaliveDeadline,
    Timer::Close,
];

/// The instant `d` after `now`, or `None` (no deadline) when that cannot
/// be represented, as with `Duration::MAX`: no duration a caller or a
/// [`Config`] gives makes the time arithmetic overflow.
fn deadline_after(now: Instant, d: Duration) -> Option<Instant> {
    now.checked_add(d)
}

/// The fixed timer table (`None`: not armed, or no deadline); the next
/// deadline is the minimum.
#[derive(Debug, Default, Clone, Copy)]
struct Timers {
    handshake: Option<Instant>,
    keepalive_send: Option<Instant>,
    keepalive_deadline: Option<Instant>,
    close: Option<Instant>,
}

impl Timers {
    fn slot(&mut self, t: Timer) -> &mut Option<Instant> {
        match t {
            Timer::Handshake => &mut self.handshake,
            Timer::KeepaliveSend => &mut self.keepalive_send,
            Timer::KeepaliveDeadline => &mut self.keepalive_deadline,
            Timer::Close => &mut self.close,
        }
    }

    fn get(&self, t: Timer) -> Option<Instant> {
        match t {
            Timer::Handshake => self.handshake,
            Timer::KeepaliveSend => self.keepalive_send,
            Timer::KeepaliveDeadline => self.keepalive_deadline,
            Timer::Close => self.close,
        }
    }

    fn next(&self) -> Option<Instant> {
        [
            self.handshake,
            self.keepalive_send,
            self.keepalive_deadline,
            self.close,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The earliest timer due at `now` and its deadline; on a tie the
    /// first in [`TIMERS`] order.
    fn next_due(&self, now: Instant) -> Option<(Instant, Timer)> {
        let mut due: Option<(Instant, Timer)> = None;
        for t in TIMERS {
            if let Some(at) = self.get(t)
                && at <= now
                && due.is_none_or(|(first, _)| at < first)
            {
                due = Some((at, t));
            }
        }
        due
    }
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

/// Handshake data, dropped once authenticated.
struct Handshake {
    hello: Vec<u8>,
    transcript: [u8; 32],
    version: u64,
    /// The signing algorithm; `Some` exactly when signing is on.
    sign_alg: Option<SignAlg>,
    encryption: bool,
    /// The extensions agreed on (client: those the server accepted).
    extensions: Extensions,
    peer: Identity,
}

enum Protection {
    Plain,
    Signed {
        send: Box<FrameMac>,
        recv: Box<FrameMac>,
    },
    Sealed {
        send: Box<Sealer>,
        recv: Box<Sealer>,
    },
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

    /// Fires everything due at `now`: the handshake, keepalive and close
    /// timers and request deadlines. Spurious calls are no-ops.
    ///
    /// However late the call (a suspended machine, a stalled event loop),
    /// everything due fires exactly once and in deadline order, as it
    /// would have on time: a request whose deadline came before the
    /// keepalive deadline fails with [`RequestError::Timeout`], and only
    /// those due after whatever ended the connection fail with its error.
    /// On equal deadlines requests go first (by id), then the handshake,
    /// keepalive send, keepalive deadline and close timers. A deadline a
    /// late timer arms counts from `now`, not from when the timer was due:
    /// a late keepalive ping gets its whole pong timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Each round takes one due timer or request off its table. Only the
        // keepalive send arms another timer (the pong deadline, which ends
        // the connection), so this ends.
        while !self.is_closed() {
            let timer = self.timers.next_due(now);
            let request = self.deadlines.first_expired(now, &self.pending);
            match (timer, request) {
                (Some((at, t)), _) if request.is_none_or(|r| at < r) => {
                    *self.timers.slot(t) = None;
                    self.on_timer(now, t);
                }
                (_, Some(_)) => {
                    let Some(id) = self.deadlines.pop_expired(now, &self.pending) else {
                        break;
                    };
                    self.pending.remove(&id);
                    self.events.push_back(Event::RequestFailed {
                        id: RequestId(id),
                        error: RequestError::Timeout,
                    });
                    self.check_drained();
                }
                _ => break,
            }
        }
    }

    // ---------------------------------------------------------------- (C)

    /// Sends a fire-and-forget message. Allowed while the connection drains
    /// after a graceful close, from either side (PROTOCOL.md §13.3), so that
    /// what handlers still running send reaches the peer, which keeps
    /// reading until it ends; refused with [`SendError::Closed`] once ended.
    ///
    /// Refused with [`SendError::TooDeep`] for a body nested deeper than
    /// [`Config::max_depth`], [`SendError::DuplicateOp`] for an object body
    /// with `op` more than once (the peer would refuse either frame).
    pub fn send(&mut self, body: &RawValue) -> Result<(), SendError> {
        self.check_can_send()?;
        check_dispatchable(body)?;
        self.queue_frame(|o| {
            o.extend_from_slice(b"{\"t\":\"msg\",\"d\":");
            let payload = push_json(o, body.get());
            o.push(b'}');
            Ok(Some(payload))
        })
    }

    /// Sends a request; its outcome arrives as exactly one
    /// [`Event::Response`] or [`Event::RequestFailed`]. `timeout` defaults
    /// to [`Config::request_timeout`]. A timeout too large to add to `now`
    /// (such as `Duration::MAX`) means no deadline: the request waits for
    /// its answer or fails when the connection ends. The body is refused as
    /// by [`send`](Self::send).
    pub fn request(
        &mut self,
        now: Instant,
        body: &RawValue,
        timeout: Option<Duration>,
    ) -> Result<RequestId, SendError> {
        let timeout = timeout.unwrap_or(self.config.request_timeout);
        self.request_at(body, deadline_after(now, timeout))
    }

    /// [`request`](Self::request) with its deadline given as an instant:
    /// it fails with [`RequestError::Timeout`] once a
    /// [`handle_timeout`](Self::handle_timeout) call passes `deadline`.
    /// For callers that already hold the deadline (an async layer that
    /// took the request earlier), which saves the conversion to a timeout
    /// and back.
    pub fn request_until(
        &mut self,
        body: &RawValue,
        deadline: Instant,
    ) -> Result<RequestId, SendError> {
        self.request_at(body, Some(deadline))
    }

    fn request_at(
        &mut self,
        body: &RawValue,
        deadline: Option<Instant>,
    ) -> Result<RequestId, SendError> {
        self.check_can_start()?;
        if self.pending.len() >= self.config.max_requests_in_flight {
            return Err(SendError::Busy {
                limit: self.config.max_requests_in_flight,
            });
        }
        let id = self.next_request;
        check_dispatchable(body)?;
        self.queue_frame(|o| {
            o.extend_from_slice(b"{\"t\":\"req\",\"id\":");
            wire::push_u64(o, id);
            o.extend_from_slice(b",\"d\":");
            let payload = push_json(o, body.get());
            o.push(b'}');
            Ok(Some(payload))
        })?;
        self.next_request += 1;
        self.pending.insert(id, deadline);
        if let Some(deadline) = deadline {
            self.deadlines.insert(deadline, id);
        }
        Ok(RequestId(id))
    }

    /// Answers a peer's request with a value or an error. Allowed while
    /// closing, so in-flight requests can finish.
    ///
    /// An answer whose frame would exceed the peer's `max_frame` is not
    /// sent: the request is answered with an error in its place
    /// (PROTOCOL.md §14.2: `response_too_large` where that extension is
    /// on, else `internal`), its slot is freed, it is counted in
    /// [`Stats::responses_too_large`], and this returns
    /// [`SendError::ResponseTooLarge`]. The other errors leave the request
    /// answerable.
    pub fn respond(
        &mut self,
        id: PeerRequestId,
        result: Result<&RawValue, &RemoteError>,
    ) -> Result<(), SendError> {
        self.take_incoming(id)?;
        match self.queue_frame(|o| encode_response(o, id.0, result)) {
            Ok(()) => {}
            Err(SendError::FrameTooLarge { size, limit }) => {
                self.queue_too_large(id.0, size, limit);
                self.check_drained();
                return Err(SendError::ResponseTooLarge { size, limit });
            }
            Err(e) => {
                self.incoming.insert(id.0);
                return Err(e);
            }
        }
        self.check_drained();
        Ok(())
    }

    /// Answers a peer's request in place of an answer of `size` encoded
    /// bytes that the caller found too large for the peer, without handing
    /// the answer over: the same error answer, freed slot and count as
    /// [`respond`](Self::respond) gives such an answer. For a layer above
    /// that checks answers itself before passing them on (with
    /// [`Authenticated::response_frame_bound`]), so that its caller learns
    /// the outcome at once. `Ok` once the error answer is queued; the
    /// errors are those of `respond` and leave the request answerable.
    pub fn respond_too_large(&mut self, id: PeerRequestId, size: usize) -> Result<(), SendError> {
        self.take_incoming(id)?;
        self.queue_too_large(id.0, size, self.peer_max_frame);
        self.check_drained();
        Ok(())
    }

    /// Sends a ping, optionally with a JSON object as data. The peer answers
    /// with a pong ([`Event::Pong`]).
    pub fn ping(&mut self, data: Option<&RawValue>) -> Result<(), SendError> {
        if data.is_some_and(|d| !d.get().starts_with('{')) {
            return Err(SendError::NotAnObject);
        }
        self.check_can_start()?;
        self.queue_frame(|o| encode_ping(o, data))
    }

    /// Closes gracefully: sends a close frame, refuses new requests and
    /// pings (messages may still be sent while it drains), lets
    /// requests in flight (both ways) finish for up to
    /// [`Config::close_timeout`], then ends with
    /// [`CloseReason::Local`]. Before authentication it ends at once. A
    /// close timeout too large to add to `now` means no drain deadline: the
    /// connection ends once nothing is in flight (or at a later
    /// [`close_by`](Self::close_by) deadline).
    pub fn close(&mut self, now: Instant, reason: &str) {
        let deadline = deadline_after(now, self.config.close_timeout);
        self.close_at(reason, deadline);
    }

    /// Like [`close`](Self::close) with an explicit drain deadline
    /// (for a server-wide shutdown deadline). Requests still open at the
    /// deadline fail with [`RequestError::ClosedLocally`]. While already
    /// closing, it can only bring the drain deadline forward.
    pub fn close_by(&mut self, now: Instant, reason: &str, deadline: Instant) {
        let _ = now;
        self.close_at(reason, Some(deadline));
    }

    /// [`close_by`](Self::close_by) with `None` for no drain deadline.
    fn close_at(&mut self, reason: &str, deadline: Option<Instant>) {
        let local = CloseReason::Local {
            reason: wire::clip(reason, MAX_REASON_LEN),
        };
        match self.state {
            State::Closed => {}
            State::Closing { .. } => {
                // Already draining (perhaps the peer closed): tighten the
                // deadline, keep the first reason.
                let d = match (self.timers.close, deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                self.set_timer(Timer::Close, d);
            }
            State::Established => {
                self.queue_close(CloseCode::Normal, reason, None);
                self.state = State::Closing { reason: local };
                self.set_timer(Timer::KeepaliveSend, None);
                self.set_timer(Timer::KeepaliveDeadline, None);
                self.set_timer(Timer::Close, deadline);
                self.check_drained();
            }
            _ => {
                self.queue_close(CloseCode::Normal, reason, None);
                self.terminate(local);
            }
        }
    }

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
            let _ = self.encode_into(&mut pong, |o| {
                o.extend_from_slice(b"{\"t\":\"pong\"}");
                Ok(None)
            });
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
        self.timers.next().into_iter().chain(req).min()
    }

    // ---------------------------------------------------------- internals

    fn set_timer(&mut self, t: Timer, at: Option<Instant>) {
        *self.timers.slot(t) = at;
    }

    fn on_timer(&mut self, now: Instant, t: Timer) {
        match t {
            Timer::Handshake => {
                if self.peer.is_none() {
                    self.queue_close(CloseCode::HandshakeTimeout, "handshake timed out", None);
                    self.terminate(CloseReason::HandshakeTimeout);
                }
            }
            Timer::KeepaliveSend => {
                if let (State::Established, Some(ka)) =
                    (&self.state, self.config.keepalive.as_ref())
                {
                    let timeout = ka.timeout;
                    let config = self.config.clone();
                    let data = config.keepalive.as_ref().and_then(|k| k.data.as_deref());
                    let _ = self.queue_frame(|o| encode_ping(o, data));
                    // From now, when the ping goes out, however late.
                    self.set_timer(Timer::KeepaliveDeadline, deadline_after(now, timeout));
                }
            }
            Timer::KeepaliveDeadline => {
                self.queue_close(
                    CloseCode::KeepaliveTimeout,
                    "no pong within the keepalive timeout",
                    None,
                );
                self.terminate(CloseReason::KeepaliveTimeout);
            }
            Timer::Close => {
                if let State::Closing { reason } = &self.state {
                    let reason = reason.clone();
                    self.terminate(reason);
                }
            }
        }
    }

    /// Takes a peer request out of the incoming table to answer it (one
    /// lookup on the usual path), unless the connection cannot queue the
    /// answer now; put it back if the answer is not queued after all.
    fn take_incoming(&mut self, id: PeerRequestId) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        if !self.incoming.remove(&id.0) {
            return Err(SendError::UnknownRequest(id.0));
        }
        if self.out.len() >= self.config.max_outbound {
            self.incoming.insert(id.0);
            self.notify_unblocked = true;
            return Err(SendError::Blocked);
        }
        Ok(())
    }

    /// Queues the error answer that replaces an answer of `size` bytes over
    /// the peer's `limit` (PROTOCOL.md §14.2), and counts it. The error
    /// frame is a few hundred bytes at most (sealed included), so it fits
    /// any peer's `max_frame` (at least 1024).
    fn queue_too_large(&mut self, id: u64, size: usize, limit: usize) {
        self.stats.responses_too_large += 1;
        let message = format!(
            "the answer ({size} bytes) is larger than the requester's max_frame ({limit} bytes)"
        );
        let err = if self.extensions.contains(Extension::ResponseTooLarge) {
            RemoteError {
                code: RemoteError::RESPONSE_TOO_LARGE.to_owned(),
                message,
                data: Some(format!(r#"{{"size":{size},"max_frame":{limit}}}"#)),
            }
        } else {
            RemoteError::new(RemoteError::INTERNAL, message)
        };
        let _ = self.queue_frame(|o| encode_response(o, id, Err(&err)));
    }

    /// Whether a `msg` may be queued: while established and while draining
    /// (§13.3: the draining side's handlers may still send until it ends).
    fn check_can_send(&mut self) -> Result<(), SendError> {
        match self.state {
            State::Established | State::Closing { .. } => {}
            State::Closed => return Err(SendError::Closed),
            _ => return Err(SendError::NotAuthenticated),
        }
        self.check_room()
    }

    /// Whether a `req` or `ping` may be queued: only while established
    /// (nothing new is started once a close began).
    fn check_can_start(&mut self) -> Result<(), SendError> {
        match self.state {
            State::Established => {}
            State::Closing { .. } | State::Closed => return Err(SendError::Closed),
            _ => return Err(SendError::NotAuthenticated),
        }
        self.check_room()
    }

    fn check_room(&mut self) -> Result<(), SendError> {
        if self.out.len() >= self.config.max_outbound {
            self.notify_unblocked = true;
            return Err(SendError::Blocked);
        }
        Ok(())
    }

    /// The nesting limit in force ([`Config::max_depth`], at least 1).
    fn max_depth(&self) -> usize {
        self.config.max_depth.max(1)
    }

    fn queue_frame(
        &mut self,
        inner: impl FnOnce(&mut Vec<u8>) -> Encoded,
    ) -> Result<(), SendError> {
        let mut out = std::mem::take(&mut self.out);
        let r = self.encode_into(&mut out, inner);
        self.out = out;
        r
    }

    /// Encodes one frame (protected as negotiated) plus `\n` into `out`;
    /// rolls back and fails if `inner` refuses its payload, if a payload
    /// nests deeper than [`Config::max_depth`] (checked before signing or
    /// sealing), or if the line would exceed the peer's limit.
    fn encode_into(
        &mut self,
        out: &mut Vec<u8>,
        inner: impl FnOnce(&mut Vec<u8>) -> Encoded,
    ) -> Result<(), SendError> {
        let start = out.len();
        let depth_limit = self.max_depth();
        // The frame's payload (it has at most one), where the encoder put
        // it, nests at most `max_depth` levels.
        let checked = |buf: &[u8], encoded: Encoded| {
            let Some(payload) = encoded?.and_then(|range| buf.get(range)) else {
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
        let encoded = match &self.protection {
            Protection::Plain => {
                let r = inner(out);
                checked(out, r)
            }
            Protection::Signed { send, .. } => {
                let mut scratch = std::mem::take(&mut self.scratch);
                scratch.clear();
                let r = inner(&mut scratch);
                let r = checked(&scratch, r);
                if r.is_ok() {
                    crypto::sign_with(send, self.send_seq, &scratch, out);
                }
                self.scratch = scratch;
                r
            }
            Protection::Sealed { send, .. } => {
                let mut scratch = std::mem::take(&mut self.scratch);
                scratch.clear();
                let r = inner(&mut scratch);
                let r = checked(&scratch, r);
                if r.is_ok() {
                    let mut iv = [0u8; IV_LEN];
                    self.rng.fill_bytes(&mut iv);
                    crypto::seal_with(send, self.send_seq, &iv, &scratch, out);
                }
                self.scratch = scratch;
                r
            }
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

    fn queue_close(&mut self, code: CloseCode, reason: &str, versions: Option<&[u64]>) {
        // Control characters would be escaped six bytes each; dropping them
        // keeps the frame small enough for any peer's frame limit.
        let reason: String = reason.chars().filter(|c| !c.is_control()).collect();
        let reason = wire::clip(&reason, MAX_REASON_LEN);
        let _ = self.queue_frame(|o| {
            o.extend_from_slice(b"{\"t\":\"close\",\"code\":\"");
            o.extend_from_slice(code.as_str().as_bytes());
            o.extend_from_slice(b"\",\"reason\":");
            wire::push_str(o, &reason);
            if let Some(v) = versions {
                o.extend_from_slice(b",\"versions\":");
                push_u64_list(o, v);
            }
            o.push(b'}');
            Ok(None)
        });
    }

    /// The peer broke the protocol: tell it why (if we still can) and end.
    fn fail(&mut self, e: ProtocolError) {
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
    fn terminate(&mut self, reason: CloseReason) {
        if self.is_closed() {
            return;
        }
        let error = match reason {
            CloseReason::Local { .. } => RequestError::ClosedLocally,
            _ => RequestError::ConnectionLost,
        };
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
    fn check_drained(&mut self) {
        if let State::Closing { reason } = &self.state
            && self.pending.is_empty()
            && self.incoming.is_empty()
        {
            let reason = reason.clone();
            self.terminate(reason);
        }
    }

    fn send_hello(&mut self) {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill_bytes(&mut nonce);
        let c = self.config.clone();
        let mut line = Vec::with_capacity(256);
        line.extend_from_slice(b"{\"t\":\"hello\",\"versions\":");
        push_u64_list(&mut line, SUPPORTED_VERSIONS);
        line.extend_from_slice(b",\"nonce\":\"");
        wire::push_b64(&mut line, &nonce);
        line.extend_from_slice(b"\",\"node\":");
        wire::push_str(&mut line, &c.identity.node);
        line.extend_from_slice(b",\"designation\":");
        wire::push_str(&mut line, &c.identity.designation);
        line.extend_from_slice(b",\"max_frame\":");
        wire::push_u64(&mut line, c.max_frame as u64);
        line.extend_from_slice(b",\"sign\":\"");
        line.extend_from_slice(c.signing.as_str().as_bytes());
        line.extend_from_slice(b"\",\"sign_alg\":");
        push_sign_algs(&mut line, &c.sign_algs);
        line.extend_from_slice(b",\"seal\":\"");
        line.extend_from_slice(c.encryption.as_str().as_bytes());
        line.extend_from_slice(b"\",\"seal_alg\":\"");
        line.extend_from_slice(SEAL_ALG.as_bytes());
        line.push(b'"');
        push_extensions(&mut line, c.extensions);
        line.push(b'}');
        self.out.extend_from_slice(&line);
        self.out.push(b'\n');
        self.stats.frames_out += 1;
        self.hs = Some(Box::new(Handshake {
            hello: line,
            transcript: [0; 32],
            version: 0,
            sign_alg: None,
            encryption: false,
            extensions: Extensions::NONE,
            peer: Identity::default(),
        }));
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

    fn handle_plain(&mut self, now: Instant, line: &[u8]) -> Result<(), ProtocolError> {
        let env = wire::parse(line, self.max_depth())?;
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

    fn on_close(&mut self, now: Instant, env: &Envelope<'_>) -> Result<(), ProtocolError> {
        // An unknown code keeps its text; a missing one is reported as
        // missing (PROTOCOL.md §14.1). The reason is clipped (§6.10).
        let code = match env.opt_str(Key::Code)? {
            Some(c) => CloseCode::parse(&c),
            None => CloseCode::Missing,
        };
        let reason = wire::clip(
            &env.opt_str(Key::Reason)?.unwrap_or_default(),
            MAX_REASON_LEN,
        );
        let normal = code == CloseCode::Normal;
        let remote = CloseReason::Remote { code, reason };
        match &self.state {
            State::Established if normal => {
                // The peer closes gracefully: no new requests either way;
                // finish what is in flight, for at most our close timeout.
                self.state = State::Closing { reason: remote };
                self.set_timer(Timer::KeepaliveSend, None);
                self.set_timer(Timer::KeepaliveDeadline, None);
                self.set_timer(Timer::Close, deadline_after(now, self.config.close_timeout));
                self.check_drained();
            }
            State::Closing { .. } if normal => {}
            _ => self.terminate(remote),
        }
        Ok(())
    }

    fn on_app_frame(
        &mut self,
        now: Instant,
        env: &Envelope<'_>,
        t: std::borrow::Cow<'_, str>,
    ) -> Result<(), ProtocolError> {
        match &*t {
            "msg" => {
                let d = required_body(env)?;
                self.events.push_back(Event::Message {
                    op: env.op()?,
                    body: Payload::new(d.to_owned()),
                });
            }
            "req" => {
                let id = env.u64(Key::Id)?;
                let d = required_body(env)?;
                let op = env.op()?;
                // Inserted first (one lookup on the usual path), taken out
                // again if refused.
                if !self.incoming.insert(id) {
                    return Err(ProtocolError::InvalidField {
                        field: "id",
                        detail: "request id already in flight",
                    });
                }
                let refuse = if matches!(self.state, State::Closing { .. }) {
                    Some(RemoteError::new(
                        RemoteError::SHUTTING_DOWN,
                        "connection is closing",
                    ))
                } else if self.incoming.len() > self.config.max_incoming_requests {
                    Some(RemoteError::new(
                        RemoteError::BUSY,
                        "too many requests in flight",
                    ))
                } else {
                    None
                };
                if let Some(err) = refuse {
                    self.incoming.remove(&id);
                    // Bounded: the owner stops reading while `wants_input` is false.
                    self.stats.rejected_requests += 1;
                    let _ = self.queue_frame(|o| encode_response(o, id, Err(&err)));
                    return Ok(());
                }
                self.events.push_back(Event::Request {
                    id: PeerRequestId(id),
                    op,
                    body: Payload::new(d.to_owned()),
                });
            }
            "res" => {
                let id = env.u64(Key::Id)?;
                let result = match (env.raw(Key::D), env.raw(Key::Err)) {
                    (Some(d), None) => Ok(d),
                    (None, Some(e)) => Err(parse_remote_error(e)?),
                    _ => {
                        return Err(ProtocolError::InvalidField {
                            field: "d",
                            detail: "a response needs exactly one of `d` and `err`",
                        });
                    }
                };
                match self.pending.remove(&id) {
                    Some(deadline) => {
                        self.deadlines.remove(deadline, id, &self.pending);
                        self.events.push_back(match result {
                            Ok(d) => Event::Response {
                                id: RequestId(id),
                                body: Payload::new(d.to_owned()),
                            },
                            Err(e) => Event::RequestFailed {
                                id: RequestId(id),
                                error: RequestError::Remote(e),
                            },
                        });
                        self.check_drained();
                    }
                    // Late (after its timeout), unknown, or a duplicate.
                    None => self.stats.dropped_responses += 1,
                }
            }
            "ping" => {
                let data = env.raw(Key::D);
                if data.is_some_and(|d| !d.get().starts_with('{')) {
                    return Err(ProtocolError::InvalidField {
                        field: "d",
                        detail: "ping data must be an object",
                    });
                }
                self.pong_owed = true;
                self.events.push_back(Event::Ping {
                    data: data.map(|d| Payload::new(d.to_owned())),
                });
            }
            "pong" => {
                self.set_timer(Timer::KeepaliveDeadline, None);
                if let (State::Established, Some(ka)) = (&self.state, &self.config.keepalive) {
                    let at = deadline_after(now, ka.interval);
                    self.set_timer(Timer::KeepaliveSend, at);
                }
                self.events.push_back(Event::Pong);
            }
            other => {
                return Err(ProtocolError::UnexpectedFrame {
                    frame: wire::clip(other, 32),
                    state: self.state.name(),
                });
            }
        }
        Ok(())
    }

    fn on_hello(&mut self, env: &Envelope<'_>, line: &[u8]) -> Result<(), ProtocolError> {
        let theirs = env.u64_list(Key::Versions)?;
        if theirs.is_empty() {
            return Err(ProtocolError::InvalidField {
                field: "versions",
                detail: "names no version",
            });
        }
        let Some(&version) = SUPPORTED_VERSIONS.iter().rev().find(|v| theirs.contains(v)) else {
            return Err(ProtocolError::VersionMismatch {
                ours: SUPPORTED_VERSIONS.to_vec(),
                theirs,
            });
        };
        let client_nonce: [u8; NONCE_LEN] = env.b64(Key::Nonce)?;
        let peer = read_identity(env)?;
        let peer_max = read_max_frame(env)?;
        let sign_alg = negotiate_signing(env, self.config.signing, &self.config.sign_algs)?;
        let signing = sign_alg.is_some();
        let encryption = negotiate_sealing(env, self.config.encryption)?;
        let extensions = accept_extensions(env, self.config.extensions)?;
        let _ = client_nonce;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill_bytes(&mut nonce);
        let c = self.config.clone();
        let mut ch = Vec::with_capacity(256);
        ch.extend_from_slice(b"{\"t\":\"challenge\",\"version\":");
        wire::push_u64(&mut ch, version);
        ch.extend_from_slice(b",\"nonce\":\"");
        wire::push_b64(&mut ch, &nonce);
        ch.extend_from_slice(b"\",\"node\":");
        wire::push_str(&mut ch, &c.identity.node);
        ch.extend_from_slice(b",\"designation\":");
        wire::push_str(&mut ch, &c.identity.designation);
        ch.extend_from_slice(b",\"conn\":");
        wire::push_u64(&mut ch, self.params.connection_id);
        ch.extend_from_slice(b",\"max_frame\":");
        wire::push_u64(&mut ch, c.max_frame as u64);
        ch.extend_from_slice(b",\"sign\":");
        ch.extend_from_slice(if signing { b"true" } else { b"false" });
        if let Some(alg) = sign_alg {
            ch.extend_from_slice(b",\"sign_alg\":\"");
            ch.extend_from_slice(alg.as_str().as_bytes());
            ch.push(b'"');
        }
        ch.extend_from_slice(b",\"seal\":");
        ch.extend_from_slice(if encryption { b"true" } else { b"false" });
        push_extensions(&mut ch, extensions);
        ch.push(b'}');
        let transcript = crypto::transcript_hash(line, &ch, &self.params.channel_binding);
        self.out.extend_from_slice(&ch);
        self.out.push(b'\n');
        self.stats.frames_out += 1;
        self.peer_max_frame = peer_max;
        self.hs = Some(Box::new(Handshake {
            hello: Vec::new(),
            transcript,
            version,
            sign_alg,
            encryption,
            extensions,
            peer,
        }));
        self.state = State::AwaitAuth;
        Ok(())
    }

    fn on_challenge(&mut self, env: &Envelope<'_>, line: &[u8]) -> Result<(), ProtocolError> {
        let version = env.u64(Key::Version)?;
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(ProtocolError::VersionMismatch {
                ours: SUPPORTED_VERSIONS.to_vec(),
                theirs: vec![version],
            });
        }
        let _server_nonce: [u8; NONCE_LEN] = env.b64(Key::Nonce)?;
        let peer = read_identity(env)?;
        let conn = env.u64(Key::Conn)?;
        let peer_max = read_max_frame(env)?;
        let signing = env.bool(Key::Sign)?;
        let encryption = env.bool(Key::Seal)?;
        check_decision(self.config.signing, signing, "signing")?;
        check_decision(self.config.encryption, encryption, "encryption")?;
        let sign_alg = if signing {
            let name = env.str(Key::SignAlg)?;
            let alg = SignAlg::parse(&name)
                .filter(|a| self.config.sign_algs.contains(a))
                .ok_or(ProtocolError::NegotiationFailed {
                    detail: "the peer chose a signing algorithm we did not offer",
                })?;
            Some(alg)
        } else {
            None
        };
        let extensions = accepted_extensions(env, self.config.extensions)?;
        let Some(hs) = self.hs.as_mut() else {
            return Err(ProtocolError::UnexpectedFrame {
                frame: "challenge".into(),
                state: "no handshake",
            });
        };
        hs.transcript = crypto::transcript_hash(&hs.hello, line, &self.params.channel_binding);
        hs.version = version;
        hs.sign_alg = sign_alg;
        hs.encryption = encryption;
        hs.extensions = extensions;
        hs.peer = peer;
        hs.hello = Vec::new();
        let proof = crypto::client_proof(&self.config.secret, &hs.transcript);
        self.params.connection_id = conn;
        self.peer_max_frame = peer_max;
        self.out.extend_from_slice(b"{\"t\":\"auth\",\"proof\":\"");
        wire::push_b64(&mut self.out, &proof);
        self.out.extend_from_slice(b"\"}\n");
        self.stats.frames_out += 1;
        self.state = State::AwaitOk;
        Ok(())
    }

    fn on_auth(&mut self, now: Instant, env: &Envelope<'_>) -> Result<(), ProtocolError> {
        let proof: [u8; TAG_LEN] = env.b64(Key::Proof)?;
        let Some(hs) = self.hs.take() else {
            return Err(ProtocolError::AuthFailed);
        };
        if !crypto::verify_proof(&self.config.secret, true, &hs.transcript, &proof) {
            // No proof of ours goes to a client that failed.
            return Err(ProtocolError::AuthFailed);
        }
        let ours = crypto::server_proof(&self.config.secret, &hs.transcript);
        self.out.extend_from_slice(b"{\"t\":\"ok\",\"proof\":\"");
        wire::push_b64(&mut self.out, &ours);
        self.out.extend_from_slice(b"\"}\n");
        self.stats.frames_out += 1;
        self.establish(now, *hs);
        Ok(())
    }

    fn on_ok(&mut self, now: Instant, env: &Envelope<'_>) -> Result<(), ProtocolError> {
        let proof: [u8; TAG_LEN] = env.b64(Key::Proof)?;
        let Some(hs) = self.hs.take() else {
            return Err(ProtocolError::AuthFailed);
        };
        if !crypto::verify_proof(&self.config.secret, false, &hs.transcript, &proof) {
            return Err(ProtocolError::AuthFailed);
        }
        self.establish(now, *hs);
        Ok(())
    }

    fn establish(&mut self, now: Instant, hs: Handshake) {
        if hs.sign_alg.is_some() || hs.encryption {
            let keys = SessionKeys::derive(&self.config.secret, &hs.transcript);
            let (send, recv) = match self.side {
                Side::Client => (keys.c2s, keys.s2c),
                Side::Server => (keys.s2c, keys.c2s),
            };
            self.protection = match hs.sign_alg {
                Some(alg) if !hs.encryption => Protection::Signed {
                    send: Box::new(FrameMac::new(alg, &send.mac)),
                    recv: Box::new(FrameMac::new(alg, &recv.mac)),
                },
                _ => Protection::Sealed {
                    send: Box::new(Sealer::new(&send)),
                    recv: Box::new(Sealer::new(&recv)),
                },
            };
        }
        self.set_timer(Timer::Handshake, None);
        self.state = State::Established;
        self.peer = Some(hs.peer.clone());
        self.extensions = hs.extensions;
        self.events.push_back(Event::Authenticated(Authenticated {
            peer: hs.peer,
            connection_id: self.params.connection_id,
            version: hs.version,
            signing: hs.sign_alg.is_some() || hs.encryption,
            sign_alg: if hs.encryption { None } else { hs.sign_alg },
            encryption: hs.encryption,
            peer_max_frame: self.peer_max_frame,
            extensions: hs.extensions,
        }));
        if let Some(ka) = &self.config.keepalive {
            let at = deadline_after(now, ka.interval);
            self.set_timer(Timer::KeepaliveSend, at);
        }
    }
}

fn required_body<'a>(env: &Envelope<'a>) -> Result<&'a RawValue, ProtocolError> {
    env.raw(Key::D).ok_or(ProtocolError::InvalidField {
        field: "d",
        detail: "missing",
    })
}

fn parse_remote_error(raw: &RawValue) -> Result<RemoteError, ProtocolError> {
    #[derive(serde::Deserialize)]
    struct Wire<'a> {
        #[serde(borrow)]
        code: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        message: std::borrow::Cow<'a, str>,
        #[serde(borrow, default)]
        data: Option<&'a RawValue>,
    }
    let w: Wire<'_> = serde_json::from_str(raw.get()).map_err(|_| ProtocolError::InvalidField {
        field: "err",
        detail: "expected {\"code\":string,\"message\":string}",
    })?;
    Ok(RemoteError {
        code: w.code.into_owned(),
        message: w.message.into_owned(),
        data: w.data.map(|d| d.get().to_owned()),
    })
}

pub(crate) fn encode_response(
    o: &mut Vec<u8>,
    id: u64,
    result: Result<&RawValue, &RemoteError>,
) -> Encoded {
    o.extend_from_slice(b"{\"t\":\"res\",\"id\":");
    wire::push_u64(o, id);
    let mut payload = None;
    match result {
        Ok(v) => {
            o.extend_from_slice(b",\"d\":");
            payload = Some(push_json(o, v.get()));
        }
        Err(e) => {
            o.extend_from_slice(b",\"err\":{\"code\":");
            wire::push_str(o, &e.code);
            o.extend_from_slice(b",\"message\":");
            wire::push_str(o, &e.message);
            if let Some(d) = e
                .data
                .as_deref()
                .filter(|d| serde_json::from_str::<serde::de::IgnoredAny>(d).is_ok())
            {
                o.extend_from_slice(b",\"data\":");
                payload = Some(push_json(o, d));
            }
            o.push(b'}');
        }
    }
    o.push(b'}');
    Ok(payload)
}

/// What a frame encoder gives [`Connection::encode_into`]: where it put
/// the frame's payload (a frame has at most one), whose depth is checked
/// there against [`Config::max_depth`], or a refusal.
type Encoded = Result<Option<std::ops::Range<usize>>, SendError>;

/// A message or request body with `op` more than once is refused: the
/// peer would refuse the frame (PROTOCOL.md §11.1).
fn check_dispatchable(body: &RawValue) -> Result<(), SendError> {
    if wire::has_duplicate_op(body) {
        return Err(SendError::DuplicateOp);
    }
    Ok(())
}

/// Appends JSON text to a frame and returns where it went. A raw `\n` in
/// valid JSON can only be insignificant whitespace (strings cannot hold raw
/// control characters), so it is replaced by a space: a non-compact payload
/// cannot break framing. Other bytes are copied as they are, so numbers,
/// escapes and strings reach the peer as the caller wrote them
/// (PROTOCOL.md §5).
fn push_json(o: &mut Vec<u8>, json: &str) -> std::ops::Range<usize> {
    let start = o.len();
    o.extend_from_slice(json.as_bytes());
    let range = start..o.len();
    if memchr::memchr(b'\n', json.as_bytes()).is_some()
        && let Some(tail) = o.get_mut(range.clone())
    {
        for b in tail.iter_mut().filter(|b| **b == b'\n') {
            *b = b' ';
        }
    }
    range
}

fn encode_ping(o: &mut Vec<u8>, data: Option<&RawValue>) -> Encoded {
    o.extend_from_slice(b"{\"t\":\"ping\"");
    let payload = data.map(|d| {
        o.extend_from_slice(b",\"d\":");
        push_json(o, d.get())
    });
    o.push(b'}');
    Ok(payload)
}

fn push_u64_list(o: &mut Vec<u8>, v: &[u64]) {
    o.push(b'[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            o.push(b',');
        }
        wire::push_u64(o, *x);
    }
    o.push(b']');
}

fn read_identity(env: &Envelope<'_>) -> Result<Identity, ProtocolError> {
    let node = env.str(Key::Node)?;
    let designation = env.str(Key::Designation)?;
    for (field, v) in [("node", &node), ("designation", &designation)] {
        if v.len() > MAX_IDENTITY_LEN {
            return Err(ProtocolError::InvalidField {
                field,
                detail: "longer than 256 bytes",
            });
        }
    }
    Ok(Identity {
        node: node.into_owned(),
        designation: designation.into_owned(),
    })
}

fn read_max_frame(env: &Envelope<'_>) -> Result<usize, ProtocolError> {
    let v = env.u64(Key::MaxFrame)?;
    if v < MIN_PEER_MAX_FRAME {
        return Err(ProtocolError::InvalidField {
            field: "max_frame",
            detail: "below the 1024-byte minimum",
        });
    }
    Ok(usize::try_from(v).unwrap_or(usize::MAX))
}

/// Server side: combine the client's offer with our policy.
/// Server side: the signing decision and algorithm from the client's
/// `sign` policy and `sign_alg` offer (a name or a list of names, in the
/// client's order); `Some` when signing is on. Like the sealing offer, an
/// offer (policy not `off`) naming no algorithm we know fails, whatever
/// the decision.
fn negotiate_signing(
    env: &Envelope<'_>,
    ours: Policy,
    our_algs: &[SignAlg],
) -> Result<Option<SignAlg>, ProtocolError> {
    let theirs = Policy::parse(&env.str(Key::Sign)?).ok_or(ProtocolError::InvalidField {
        field: "sign",
        detail: "expected off, optional, preferred or required",
    })?;
    let offered = if theirs == Policy::Off {
        Vec::new()
    } else {
        let names = env.str_or_list(Key::SignAlg, MAX_SIGN_ALGS)?;
        let known: Vec<SignAlg> = names.iter().filter_map(|n| SignAlg::parse(n)).collect();
        if known.is_empty() {
            return Err(ProtocolError::NegotiationFailed {
                detail: "unknown signing algorithm",
            });
        }
        known
    };
    let on = Policy::negotiate(ours, theirs).map_err(|_| ProtocolError::NegotiationFailed {
        detail: "one side requires signing, the other refuses it",
    })?;
    if !on {
        return Ok(None);
    }
    our_algs
        .iter()
        .copied()
        .find(|a| offered.contains(a))
        .map(Some)
        .ok_or(ProtocolError::NegotiationFailed {
            detail: "no common signing algorithm",
        })
}

/// Writes the `sign_alg` offer: a string for one algorithm (as every
/// version of this implementation accepts), a list for several.
fn push_sign_algs(out: &mut Vec<u8>, algs: &[SignAlg]) {
    if let [one] = algs {
        wire::push_str(out, one.as_str());
        return;
    }
    out.push(b'[');
    for (i, a) in algs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        wire::push_str(out, a.as_str());
    }
    out.push(b']');
}

/// Server side: the sealing decision from the client's `seal` policy and
/// `seal_alg` offer (a name or a list of names, as for signing; one
/// algorithm is defined, and an offer that does not name it fails, as an
/// unknown signing offer does).
fn negotiate_sealing(env: &Envelope<'_>, ours: Policy) -> Result<bool, ProtocolError> {
    let theirs = Policy::parse(&env.str(Key::Seal)?).ok_or(ProtocolError::InvalidField {
        field: "seal",
        detail: "expected off, optional, preferred or required",
    })?;
    if theirs != Policy::Off
        && !env
            .str_or_list(Key::SealAlg, MAX_SIGN_ALGS)?
            .iter()
            .any(|n| n == SEAL_ALG)
    {
        return Err(ProtocolError::NegotiationFailed {
            detail: "unknown encryption algorithm",
        });
    }
    Policy::negotiate(ours, theirs).map_err(|_| ProtocolError::NegotiationFailed {
        detail: "one side requires encryption, the other refuses it",
    })
}

/// Writes `,"ext":[…]` for a non-empty set (nothing for an empty one, so a
/// side without extensions writes exactly what a version 1 peer writes).
fn push_extensions(out: &mut Vec<u8>, ext: Extensions) {
    if ext.is_empty() {
        return;
    }
    out.extend_from_slice(b",\"ext\":[");
    for (i, e) in ext.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        wire::push_str(out, e.as_str());
    }
    out.push(b']');
}

/// Server side: the extensions to accept, those the client's `ext` offer
/// names that we know and allow (unknown names are skipped; no `ext` is no
/// offer).
fn accept_extensions(env: &Envelope<'_>, ours: Extensions) -> Result<Extensions, ProtocolError> {
    let names = env.opt_str_list(Key::Ext, MAX_EXTENSIONS)?;
    let offered: Extensions = names
        .iter()
        .flatten()
        .filter_map(|n| Extension::parse(n))
        .collect();
    Ok(offered.intersection(ours))
}

/// Client side: the extensions the server's `ext` accepted, each of which
/// must be one we offered (no `ext`: none accepted, as from a version 1
/// server).
fn accepted_extensions(
    env: &Envelope<'_>,
    offered: Extensions,
) -> Result<Extensions, ProtocolError> {
    let mut accepted = Extensions::NONE;
    for name in env.opt_str_list(Key::Ext, MAX_EXTENSIONS)?.iter().flatten() {
        match Extension::parse(name) {
            Some(e) if offered.contains(e) => accepted = accepted.with(e),
            _ => {
                return Err(ProtocolError::NegotiationFailed {
                    detail: "the peer accepted an extension we did not offer",
                });
            }
        }
    }
    Ok(accepted)
}

/// Client side: the server's decision must respect our policy.
fn check_decision(ours: Policy, on: bool, what: &'static str) -> Result<(), ProtocolError> {
    match (ours, on) {
        (Policy::Required, false) => Err(ProtocolError::NegotiationFailed {
            detail: if what == "signing" {
                "we require signing, the peer turned it off"
            } else {
                "we require encryption, the peer turned it off"
            },
        }),
        (Policy::Off, true) => Err(ProtocolError::NegotiationFailed {
            detail: if what == "signing" {
                "we refuse signing, the peer turned it on"
            } else {
                "we refuse encryption, the peer turned it on"
            },
        }),
        _ => Ok(()),
    }
}

/// The deadlines of our pending requests, with lazy removal: a queue for
/// deadlines that arrive in order, and a min-heap for the others.
///
/// With one timeout for every request (the usual case) each deadline is at
/// or after the previous one, so it is appended to the queue, and answers
/// mostly come back in that order, so each is dropped from the queue's
/// front: both O(1), where a heap costs a sift of log₂(in flight) levels
/// each way (~300 instructions per request at 64 in flight, profiled). A
/// deadline earlier than the queue's last (a shorter per-request timeout)
/// goes to the heap; the earliest deadline is the smaller of the two fronts.
///
/// An answered request is dropped at once when it is the earliest entry
/// (answers in order); otherwise it stays until it is (then
/// [`pop_expired`](Self::pop_expired) drops it when its deadline passes,
/// so [`first`](Self::first) may be an answered request's deadline: a timer
/// that fires for nothing, never one that fires late) or until dead entries
/// outnumber live ones and are all dropped (so it holds at most about twice
/// the requests in flight). Expiry order is that of an ordered set: by
/// deadline, then id.
/// Generic over the time type only so that its tests can use plain numbers.
#[derive(Debug, Clone)]
struct Deadlines<T = Instant> {
    /// Entries in ascending order, each at or after the one before.
    queue: VecDeque<(T, u64)>,
    /// Entries that were earlier than the queue's last when inserted.
    heap: BinaryHeap<Reverse<(T, u64)>>,
}

impl<T> Default for Deadlines<T> {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
            heap: BinaryHeap::new(),
        }
    }
}

impl<T: Ord + Copy> Deadlines<T> {
    fn insert(&mut self, deadline: T, id: u64) {
        let entry = (deadline, id);
        if self.queue.back().is_none_or(|last| *last <= entry) {
            self.queue.push_back(entry);
        } else {
            self.heap.push(Reverse(entry));
        }
    }

    /// The earliest entry, live or not, and whether it is the queue's.
    fn front(&self) -> Option<((T, u64), bool)> {
        match (self.queue.front(), self.heap.peek()) {
            (Some(q), Some(Reverse(h))) if h < q => Some((*h, false)),
            (Some(q), _) => Some((*q, true)),
            (None, Some(Reverse(h))) => Some((*h, false)),
            (None, None) => None,
        }
    }

    /// The earliest deadline held: the earliest live one, or earlier (an
    /// answered request's, not yet dropped), so a timer set for it may
    /// fire for nothing, never late.
    fn first(&self) -> Option<T> {
        self.front().map(|((d, _), _)| d)
    }

    /// Forgets `(deadline, id)`, just removed from `pending` (a request
    /// with no deadline was never here). With answers in deadline order it
    /// is the front, dropped at once with no lookup; otherwise it stays
    /// until [`settle`](Self::settle) or a compaction drops it.
    fn remove(&mut self, deadline: Option<T>, id: u64, pending: &FxHashMap<u64, Option<T>>) {
        if let Some(deadline) = deadline {
            let entry = (deadline, id);
            if self.queue.front() == Some(&entry) {
                self.queue.pop_front();
            } else if self.heap.peek() == Some(&Reverse(entry)) {
                self.heap.pop();
            }
        }
        self.compact(pending);
    }

    /// The deadline of the earliest live request if it is `now` or before
    /// (the one [`pop_expired`](Self::pop_expired) would take).
    fn first_expired(&mut self, now: T, pending: &FxHashMap<u64, Option<T>>) -> Option<T> {
        self.settle(pending);
        self.first().filter(|d| *d <= now)
    }

    /// Takes the earliest request whose deadline is `now` or before.
    fn pop_expired(&mut self, now: T, pending: &FxHashMap<u64, Option<T>>) -> Option<u64> {
        self.settle(pending);
        match self.front() {
            Some(((d, id), in_queue)) if d <= now => {
                if in_queue {
                    self.queue.pop_front();
                } else {
                    self.heap.pop();
                }
                Some(id)
            }
            _ => None,
        }
    }

    /// Drops dead entries from both fronts, so the earliest entry is live.
    fn settle(&mut self, pending: &FxHashMap<u64, Option<T>>) {
        while self.queue.front().is_some_and(|e| !is_live(e, pending)) {
            self.queue.pop_front();
        }
        while self
            .heap
            .peek()
            .is_some_and(|Reverse(e)| !is_live(e, pending))
        {
            self.heap.pop();
        }
    }

    /// Drops every dead entry once they outnumber the live ones, which
    /// bounds the entries held to about twice the requests in flight at an
    /// amortized cost of one lookup per removal.
    fn compact(&mut self, pending: &FxHashMap<u64, Option<T>>) {
        if self.len() > 2 * pending.len() + 32 {
            self.queue.retain(|e| is_live(e, pending));
            self.heap.retain(|Reverse(e)| is_live(e, pending));
        }
    }

    /// Entries held, live or not.
    fn len(&self) -> usize {
        self.queue.len() + self.heap.len()
    }

    fn clear(&mut self) {
        self.queue.clear();
        self.heap.clear();
    }
}

/// Whether a deadline entry still belongs to a pending request (an answered
/// or expired one is gone from `pending`; an id is never reused).
fn is_live<T: PartialEq>((deadline, id): &(T, u64), pending: &FxHashMap<u64, Option<T>>) -> bool {
    pending
        .get(id)
        .is_some_and(|d| d.as_ref() == Some(deadline))
}

#[cfg(test)]
mod deadline_tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A model of the pending table and its deadlines as an ordered set.
    #[derive(Default)]
    struct Model {
        pending: FxHashMap<u64, Option<u64>>,
        d: Deadlines<u64>,
        set: BTreeSet<(u64, u64)>,
    }

    impl Model {
        fn insert(&mut self, at: u64, id: u64) {
            self.pending.insert(id, Some(at));
            self.d.insert(at, id);
            self.set.insert((at, id));
        }
        /// A request with no deadline: in `pending` only.
        fn insert_untimed(&mut self, id: u64) {
            self.pending.insert(id, None);
        }
        fn answer(&mut self, id: u64) {
            if let Some(at) = self.pending.remove(&id) {
                self.d.remove(at, id, &self.pending);
                if let Some(at) = at {
                    self.set.remove(&(at, id));
                }
            }
        }
        fn expire(&mut self, now: u64) -> Vec<u64> {
            let mut out = Vec::new();
            while let Some(id) = self.d.pop_expired(now, &self.pending) {
                if let Some(Some(at)) = self.pending.remove(&id) {
                    self.set.remove(&(at, id));
                }
                out.push(id);
            }
            out
        }
        fn check(&self) {
            // `first` is never later than the earliest live deadline, and is
            // exactly it once the fronts are settled.
            let live = self.set.first().map(|(d, _)| *d);
            if let Some(live) = live {
                assert!(self.d.first().is_some_and(|f| f <= live));
            }
            let mut settled = self.d.clone();
            settled.settle(&self.pending);
            assert_eq!(settled.first(), live);
            assert!(self.d.len() <= 2 * self.pending.len() + 32 + 1);
        }
    }

    #[test]
    fn expiry_is_by_deadline_then_id_whatever_the_insertion_order() {
        let t0 = 1_000u64;
        let mut m = Model::default();
        for (id, secs) in [(1, 30), (2, 5), (3, 30), (4, 1), (5, 5)] {
            m.insert(t0 + secs, id);
            m.check();
        }
        assert_eq!(m.expire(t0 + 5), [4, 2, 5]);
        m.check();
        assert_eq!(m.expire(t0 + 60), [1, 3]);
        assert_eq!(m.d.first(), None);
    }

    #[test]
    fn in_order_deadlines_stay_in_the_queue_and_early_ones_go_to_the_heap() {
        let t0 = 1_000u64;
        let mut m = Model::default();
        for id in 0..100 {
            m.insert(t0 + id / 10, id);
        }
        assert_eq!((m.d.queue.len(), m.d.heap.len()), (100, 0));
        // A shorter timeout than the last one: the heap, and it comes first.
        m.insert(t0 + 2, 100);
        assert_eq!((m.d.queue.len(), m.d.heap.len()), (100, 1));
        m.check();
        // Answers in order leave from the queue's front as they come.
        for id in 0..20 {
            m.answer(id);
        }
        assert_eq!(m.d.queue.len(), 80);
        assert_eq!(
            m.expire(t0 + 2),
            [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 100]
        );
        m.check();
    }

    #[test]
    fn answers_behind_a_slow_request_do_not_pile_up() {
        let t0 = 1_000u64;
        let mut m = Model::default();
        m.insert(t0 + 1, 0);
        for id in 1..10_000 {
            m.insert(t0 + 30, id);
            m.answer(id);
            m.check();
        }
        assert!(m.d.len() <= 34, "{}", m.d.len());
        assert_eq!(m.expire(t0 + 2), [0]);
        assert_eq!(m.d.len(), 0);
    }

    proptest::proptest! {
        #[test]
        fn matches_an_ordered_set(ops in proptest::collection::vec((0u8..3, 0u64..64, 0u64..40), 1..300)) {
            let t0 = 1_000u64;
            let mut m = Model::default();
            let mut next = 0u64;
            let mut now = t0;
            for (op, pick, secs) in ops {
                match op {
                    // Now and then a request with no deadline.
                    0 if secs == 39 => {
                        m.insert_untimed(next);
                        next += 1;
                    }
                    0 => {
                        m.insert(now + secs, next);
                        next += 1;
                    }
                    1 => m.answer(pick % next.max(1)),
                    _ => {
                        now += secs / 4;
                        let want: Vec<u64> = m.set.iter().take_while(|(d, _)| *d <= now).map(|(_, id)| *id).collect();
                        proptest::prop_assert_eq!(m.expire(now), want);
                    }
                }
                m.check();
            }
        }
    }
}
