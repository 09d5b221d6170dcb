//! # jsonlink-fuzz-bodies
//!
//! The bodies of the cargo-fuzz targets. The targets in `fuzz/` are one
//! line each and call these; `tests/corpus.rs` replays the committed corpus
//! through them on every `cargo test`, so the targets never rot. They drive
//! `jsonlink-proto` through its public API and its `testing` feature; this
//! crate is not published.
//!
//! The bodies read no clock: the caller passes a base [`Instant`] and all
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

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use jsonlink_proto::frame::{Line, LineReader};
use jsonlink_proto::testing::{Pair, Peer, Who, client_config, server_config};
use jsonlink_proto::{
    CloseReason, Config, Connection, ConnectionParams, Event, Keepalive, PeerRequestId, Policy,
    ProtocolError, RemoteError, RequestError, RequestId, SendError, Side,
};

/// Seed of the deterministic RNGs of every connection made here.
const SEED: u8 = 1;
/// Server connection id used by the handshake bodies.
const CONN_ID: u64 = 7;
/// Rounds `drive_bounded` may take before the pair counts as stuck.
const SETTLE: usize = 10_000;
/// Operations interpreted by [`session`] at most.
const MAX_OPS: usize = 256;

// ------------------------------------------------------------------ input

/// Reads the fuzz input front to back; past the end it yields zeros.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    /// `n % 8` chunk sizes of one byte each.
    fn split_sizes(&mut self) -> Vec<usize> {
        let n = self.byte() % 8;
        (0..n).map(|_| usize::from(self.byte())).collect()
    }

    /// A valid JSON value of a data-chosen shape and size.
    fn body(&mut self) -> Box<RawValue> {
        let text = match self.byte() % 6 {
            0 => "null".to_owned(),
            1 => self.u16().to_string(),
            2 => {
                // Past the small limits (1024-byte frames, 512 bytes
                // outbound), and no bigger: large bodies only cost time.
                let n = usize::from(self.u16() % 1280);
                format!("\"{}\"", "x".repeat(n))
            }
            3 => {
                let op = self.byte();
                let n = self.u16();
                format!("{{\"op\":\"op{op}\",\"n\":{n}}}")
            }
            4 => {
                let n = usize::from(self.byte() % 64);
                let raw = self.take(n);
                serde_json::to_string(&String::from_utf8_lossy(raw)).unwrap()
            }
            _ => r#"[1,{"a":[]},"\u00e9\n",-0.5e3,true]"#.to_owned(),
        };
        RawValue::from_string(text).unwrap()
    }

    /// A short string of arbitrary (lossily decoded) bytes.
    fn text(&mut self) -> String {
        let n = usize::from(self.byte() % 32);
        String::from_utf8_lossy(self.take(n)).into_owned()
    }
}

/// Cuts `stream` into chunks of `sizes` (cycled; zero sizes skipped); one
/// chunk when no size is positive.
fn chunks<'a>(stream: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    if !sizes.iter().any(|&s| s > 0) {
        return if stream.is_empty() {
            Vec::new()
        } else {
            vec![stream]
        };
    }
    let mut out = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let s = sizes[i % sizes.len()];
        i += 1;
        if s == 0 {
            continue;
        }
        let (a, b) = rest.split_at(s.min(rest.len()));
        out.push(a);
        rest = b;
    }
    out
}

fn policy(bits: u8) -> Policy {
    match bits & 3 {
        0 => Policy::Off,
        1 => Policy::Optional,
        2 => Policy::Preferred,
        _ => Policy::Required,
    }
}

/// Tight limits and short timeouts, so the fuzzer reaches them.
fn small_limits(c: &mut Config) {
    c.pre_auth_max_frame = 512;
    c.max_frame = 1024;
    c.max_outbound = 512;
    c.max_requests_in_flight = 3;
    c.max_incoming_requests = 2;
    c.handshake_timeout = Duration::from_secs(1);
    c.request_timeout = Duration::from_secs(2);
    c.close_timeout = Duration::from_secs(1);
    c.keepalive = Some(Keepalive {
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        data: None,
    });
}

// ----------------------------------------------------------------- framer

/// Feeds a [`LineReader`] the stream in data-derived chunks and checks it
/// against splitting the whole stream at once: the same lines, the same
/// error at the same place, and a buffer that never holds more than the
/// limit.
pub fn framer(data: &[u8]) {
    let mut input = Input::new(data);
    let limit = match input.u16() {
        u16::MAX => usize::MAX,
        n => usize::from(n),
    };
    let flags = input.byte();
    let sizes = input.split_sizes();
    let stream = input.rest();

    // The model: split everything at once; the first line longer than the
    // limit (the unterminated tail included) is an error.
    let mut parts: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
    let tail = parts.pop().unwrap_or_default();
    let mut want = Vec::new();
    let mut want_err = tail.len() > limit;
    for p in parts {
        if p.len() > limit {
            want_err = true;
            break;
        }
        want.push(p.to_vec());
    }
    let want_pending = if want_err { None } else { Some(tail.len()) };

    let whole = read_lines(&[stream], limit, flags);
    assert_eq!(
        whole,
        (want.clone(), want_err, want_pending),
        "one input, limit {limit}"
    );
    let split = read_lines(&chunks(stream, &sizes), limit, flags);
    assert_eq!(
        split,
        (want, want_err, want_pending),
        "chunks {sizes:?}, limit {limit}"
    );
}

/// Lines read, whether it failed, and the bytes left pending (if it did not).
type Lines = (Vec<Vec<u8>>, bool, Option<usize>);

fn read_lines(inputs: &[&[u8]], limit: usize, flags: u8) -> Lines {
    let mut r = LineReader::new();
    let mut lines = Vec::new();
    for (n, chunk) in inputs.iter().enumerate() {
        let mut chunk: &[u8] = chunk;
        loop {
            let res = r.next(&mut chunk, limit);
            assert!(
                r.pending() <= limit,
                "reader holds {} bytes, limit {limit}",
                r.pending()
            );
            match res {
                Err(e) => {
                    assert_eq!(e, ProtocolError::FrameTooLarge { limit });
                    return (lines, true, None);
                }
                Ok(None) => {
                    assert!(chunk.is_empty(), "None before the input was used up");
                    break;
                }
                Ok(Some(Line::Input(l))) => lines.push(l.to_vec()),
                // Both ways of taking a buffered line, as the flags say.
                Ok(Some(Line::Buffered)) if flags & (1 << (n % 8)) == 0 => {
                    lines.push(r.buffered().to_vec());
                    r.consume_buffered();
                }
                Ok(Some(Line::Buffered)) => {
                    let buf = r.take_buffered();
                    lines.push(buf.clone());
                    r.restore(buf);
                    r.shrink(usize::from(flags));
                }
            }
            assert!(r.pending() <= limit);
        }
    }
    let pending = r.pending();
    (lines, false, Some(pending))
}

// -------------------------------------------------------------- handshake

/// A server fed arbitrary bytes (after an honest client's hello, or its
/// whole handshake, when the input says so).
pub fn handshake_server(base: Instant, data: &[u8]) {
    handshake(Side::Server, base, data);
}

/// A client fed arbitrary bytes (after an honest server's challenge, or its
/// whole handshake, when the input says so).
pub fn handshake_client(base: Instant, data: &[u8]) {
    handshake(Side::Client, base, data);
}

/// Watches one connection's outputs and checks its invariants.
#[derive(Default)]
struct Observer {
    authenticated: bool,
    closed: Option<CloseReason>,
    /// The peer's requests seen (we never answer them).
    incoming: HashSet<u64>,
}

impl Observer {
    /// Drains bytes and events; returns the bytes written.
    fn drain(&mut self, conn: &mut Connection, cfg: &Config, handshake_deadline: Instant) -> usize {
        let mut out = Vec::new();
        let n = conn.poll_transmit(&mut out);
        assert_eq!(n, out.len());
        assert_eq!(conn.outbound_len(), 0, "poll_transmit left bytes behind");
        if self.closed.is_some() {
            assert_eq!(n, 0, "{n} bytes written after Closed");
        }
        while let Some(ev) = conn.poll_event() {
            self.on_event(ev);
        }
        assert_eq!(
            conn.is_closed(),
            self.closed.is_some(),
            "is_closed vs Closed"
        );
        assert_eq!(conn.is_authenticated(), self.authenticated);
        if self.closed.is_some() {
            assert_eq!(conn.poll_timeout(), None, "a deadline after Closed");
            assert!(!conn.wants_input());
            assert_eq!(conn.incoming_in_flight(), 0);
        } else {
            assert_eq!(conn.incoming_in_flight(), self.incoming.len());
            assert!(self.incoming.len() <= cfg.max_incoming_requests);
            if !self.authenticated {
                let t = conn.poll_timeout();
                assert!(
                    t.is_some_and(|t| t <= handshake_deadline),
                    "unauthenticated without the handshake deadline: {t:?}"
                );
            }
        }
        assert_eq!(conn.requests_in_flight(), 0);
        n
    }

    fn on_event(&mut self, ev: Event) {
        assert!(self.closed.is_none(), "{ev:?} after {:?}", self.closed);
        match ev {
            Event::Authenticated(_) => {
                assert!(!self.authenticated, "Authenticated twice");
                self.authenticated = true;
            }
            Event::Message { body, .. } => {
                assert!(self.authenticated, "message before Authenticated");
                assert!(serde_json::from_str::<IgnoredAny>(body.get()).is_ok());
            }
            Event::Request { id, body, .. } => {
                assert!(self.authenticated, "request before Authenticated");
                assert!(serde_json::from_str::<IgnoredAny>(body.get()).is_ok());
                assert!(self.incoming.insert(id.0), "request {id} twice in flight");
            }
            Event::Ping { data } => {
                assert!(self.authenticated, "ping before Authenticated");
                assert!(data.is_none_or(|d| d.get().starts_with('{')));
            }
            Event::Pong => assert!(self.authenticated, "pong before Authenticated"),
            Event::Response { id, .. } | Event::RequestFailed { id, .. } => {
                panic!("outcome for request {id}, but none was sent")
            }
            Event::SendUnblocked => panic!("SendUnblocked, but no command was blocked"),
            Event::Closed(r) => {
                self.closed = Some(r);
                self.incoming.clear();
            }
            // `Event` is non-exhaustive: a new event needs its rules here.
            other => panic!("an event this body does not know: {other:?}"),
        }
    }
}

fn handshake_config(side: Side, cfg: u8) -> Config {
    let mut c = match side {
        Side::Client => client_config(SEED),
        Side::Server => server_config(SEED),
    };
    c.signing = policy(cfg);
    c.encryption = policy(cfg >> 2);
    if cfg & 0x10 != 0 {
        small_limits(&mut c);
    }
    c
}

fn params(side: Side) -> ConnectionParams {
    ConnectionParams {
        channel_binding: Vec::new(),
        connection_id: if side == Side::Server { CONN_ID } else { 0 },
    }
}

/// What an honest peer (default policies) writes to a connection with
/// configuration `ours`: its first `lines` lines. Deterministic, because
/// both RNGs are seeded.
fn honest_peer_lines(base: Instant, side: Side, ours: &Config, lines: usize) -> Vec<u8> {
    let (peer_side, peer_cfg) = match side {
        Side::Client => (Side::Server, server_config(SEED)),
        Side::Server => (Side::Client, client_config(SEED)),
    };
    let mut a = Connection::new(Arc::new(ours.clone()), side, base, params(side));
    let mut b = Connection::new(Arc::new(peer_cfg), peer_side, base, params(peer_side));
    let mut prefix = Vec::new();
    let mut n = 0;
    for _ in 0..8 {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        a.poll_transmit(&mut x);
        b.poll_transmit(&mut y);
        if x.is_empty() && y.is_empty() {
            break;
        }
        b.handle_input(base, &x);
        for line in y.split_inclusive(|&c| c == b'\n') {
            if n == lines {
                return prefix;
            }
            prefix.extend_from_slice(line);
            a.handle_input(base, line);
            n += 1;
        }
    }
    prefix
}

fn handshake(side: Side, base: Instant, data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let tick = Duration::from_millis(u64::from(input.byte()) * 100);
    let sizes = input.split_sizes();
    let cfg = handshake_config(side, flags);
    let mut stream = match (flags >> 5) & 3 {
        0 => Vec::new(),
        1 => honest_peer_lines(base, side, &cfg, 1),
        _ => honest_peer_lines(base, side, &cfg, usize::MAX),
    };
    stream.extend_from_slice(input.rest());

    let deadline = base + cfg.handshake_timeout;
    let mut conn = Connection::new(Arc::new(cfg.clone()), side, base, params(side));
    let mut obs = Observer::default();
    let mut now = base;
    obs.drain(&mut conn, &cfg, deadline);
    // Bytes of the unterminated line the connection has been fed.
    let mut partial = 0usize;
    for chunk in chunks(&stream, &sizes) {
        if conn.is_closed() {
            break;
        }
        assert!(conn.wants_input(), "drained and open, yet not reading");
        conn.handle_input(now, chunk);
        partial = match memchr::memrchr(b'\n', chunk) {
            Some(i) => chunk.len() - i - 1,
            None => partial + chunk.len(),
        };
        if !conn.is_closed() {
            let limit = if conn.is_authenticated() {
                cfg.max_frame
            } else {
                cfg.pre_auth_max_frame
            };
            assert!(
                partial <= limit,
                "open with a {partial}-byte partial line buffered, limit {limit}"
            );
        }
        let written = obs.drain(&mut conn, &cfg, deadline);
        assert!(
            written <= 4096 + 8 * chunk.len(),
            "{written} bytes written for a {}-byte input",
            chunk.len()
        );
        if !tick.is_zero() {
            now += tick;
            conn.handle_timeout(now);
            obs.drain(&mut conn, &cfg, deadline);
        }
    }

    if flags & 0x80 != 0 {
        conn.handle_eof(now);
        obs.drain(&mut conn, &cfg, deadline);
        assert!(conn.is_closed(), "open after EOF");
    }
    // Past the handshake deadline, an unauthenticated connection is closed.
    if now < deadline {
        now = deadline;
        conn.handle_timeout(now);
        obs.drain(&mut conn, &cfg, deadline);
    }
    if !obs.authenticated {
        assert!(
            conn.is_closed(),
            "unauthenticated past the handshake deadline"
        );
    }
    // Fire whatever is left (keepalive with no pong, close drain).
    for _ in 0..8 {
        match conn.poll_timeout() {
            Some(t) => {
                now = now.max(t);
                conn.handle_timeout(now);
                obs.drain(&mut conn, &cfg, deadline);
            }
            None => break,
        }
    }
    if cfg.keepalive.is_some() {
        assert!(conn.is_closed(), "keepalive never closed a silent peer");
    }
    conn.handle_eof(now);
    obs.drain(&mut conn, &cfg, deadline);
    assert!(obs.closed.is_some(), "open after EOF");

    // Nothing more may come out of a closed connection.
    conn.handle_input(now, b"{\"t\":\"ping\"}\n");
    conn.handle_timeout(now + Duration::from_secs(3600));
    conn.handle_eof(now);
    conn.close(now, "again");
    assert_eq!(
        conn.send(&RawValue::from_string("1".into()).unwrap()),
        Err(SendError::Closed)
    );
    obs.drain(&mut conn, &cfg, deadline);
}

// ---------------------------------------------------------------- session

/// An app frame one side sent, for checking delivery order.
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    Msg(String),
    Req(u64, String),
}

/// How one side answered a peer request.
#[derive(Debug)]
enum Answer {
    Value(String),
    Error(RemoteError),
    /// Too large for the peer: replaced by the connection's own error answer.
    TooLarge,
}

/// What the fuzz driver knows about one side of the pair.
struct Book {
    name: &'static str,
    max_requests: usize,
    max_incoming: usize,
    authenticated: bool,
    closed: Option<CloseReason>,
    /// Our request ids, and how often each resolved.
    issued: BTreeMap<u64, u32>,
    /// Of which not resolved yet (checked after every operation: counted,
    /// not recomputed).
    unresolved: usize,
    /// The peer's requests we have seen and not answered, oldest first.
    open: Vec<u64>,
    /// A command returned `Blocked`; `SendUnblocked` (or `Closed`) is due.
    blocked: bool,
    /// Messages and requests sent and not yet seen by the peer.
    sent: VecDeque<Sent>,
    /// Our answers to the peer's requests, by id.
    answered: HashMap<u64, Answer>,
}

impl Book {
    fn new(name: &'static str, cfg: &Config) -> Self {
        Self {
            name,
            max_requests: cfg.max_requests_in_flight,
            max_incoming: cfg.max_incoming_requests,
            authenticated: false,
            closed: None,
            issued: BTreeMap::new(),
            unresolved: 0,
            open: Vec::new(),
            blocked: false,
            sent: VecDeque::new(),
            answered: HashMap::new(),
        }
    }

    fn resolve(&mut self, id: RequestId) {
        let n = self.issued.get_mut(&id.0);
        let n = n.unwrap_or_else(|| panic!("{}: outcome for request {id}, never sent", self.name));
        *n += 1;
        assert_eq!(*n, 1, "{}: request {id} resolved twice", self.name);
        self.unresolved -= 1;
    }

    fn issue(&mut self, id: RequestId) {
        let fresh = self.issued.insert(id.0, 0).is_none();
        assert!(fresh, "{}: request id {id} reused", self.name);
        self.unresolved += 1;
    }

    /// The peer saw `got`: it must be the oldest frame we sent that it has
    /// not seen, except for requests it refused (busy, shutting down),
    /// which surface as no event there.
    fn delivered(&mut self, got: &Sent) {
        loop {
            let front = self.sent.pop_front();
            let front = front.unwrap_or_else(|| {
                panic!("{}'s peer saw {got:?}, never sent or seen twice", self.name)
            });
            if &front == got {
                return;
            }
            assert!(
                matches!(front, Sent::Req(..)),
                "{}'s {front:?} lost: the peer saw {got:?} next",
                self.name
            );
        }
    }
}

fn on_event(me: &mut Book, peer: &mut Book, clean: bool, ev: Event) {
    let name = me.name;
    assert!(me.closed.is_none(), "{name}: {ev:?} after {:?}", me.closed);
    match ev {
        Event::Authenticated(_) => {
            assert!(!me.authenticated, "{name}: Authenticated twice");
            me.authenticated = true;
        }
        Event::Message { body, .. } => {
            assert!(me.authenticated, "{name}: message before Authenticated");
            if clean {
                peer.delivered(&Sent::Msg(body.get().to_owned()));
            }
        }
        Event::Request { id, body, .. } => {
            assert!(me.authenticated, "{name}: request before Authenticated");
            assert!(
                !me.open.contains(&id.0),
                "{name}: request {id} twice in flight"
            );
            me.open.push(id.0);
            if clean {
                peer.delivered(&Sent::Req(id.0, body.get().to_owned()));
            }
        }
        Event::Response { id, body } => {
            me.resolve(id);
            if clean {
                match peer.answered.get(&id.0) {
                    Some(Answer::Value(v)) => assert_eq!(v, body.get(), "{name}: response {id}"),
                    other => {
                        panic!("{name}: response {id} {body:?}, but the peer answered {other:?}")
                    }
                }
            }
        }
        Event::RequestFailed { id, error } => {
            me.resolve(id);
            if let (true, RequestError::Remote(got)) = (clean, &error) {
                match peer.answered.get(&id.0) {
                    Some(Answer::Error(want)) => {
                        assert_eq!((&got.code, &got.message), (&want.code, &want.message));
                        // PROTOCOL.md: `"data":null` is the same as no `data`.
                        let want_data = want.data.as_deref().filter(|d| *d != "null");
                        assert_eq!(got.data.as_deref(), want_data, "{name}: data of {id}");
                    }
                    Some(Answer::TooLarge) => assert!(
                        got.code == RemoteError::RESPONSE_TOO_LARGE
                            || got.code == RemoteError::INTERNAL,
                        "{name}: request {id} failed with {got:?}, answered too large"
                    ),
                    Some(Answer::Value(v)) => {
                        panic!(
                            "{name}: request {id} failed with {got:?}, but the peer answered {v}"
                        )
                    }
                    // Refused by the peer itself: busy or shutting down.
                    None => assert!(
                        got.code == RemoteError::BUSY || got.code == RemoteError::SHUTTING_DOWN,
                        "{name}: request {id} failed with {got:?}, the peer never answered it"
                    ),
                }
            }
        }
        Event::Ping { .. } | Event::Pong => {
            assert!(me.authenticated, "{name}: ping/pong before Authenticated");
        }
        Event::SendUnblocked => {
            assert!(me.blocked, "{name}: SendUnblocked, but nothing was blocked");
            me.blocked = false;
        }
        Event::Closed(r) => {
            me.closed = Some(r);
            me.open.clear();
            me.blocked = false;
        }
        // `Event` is non-exhaustive: a new event needs its rules here.
        other => panic!("{name}: an event this body does not know: {other:?}"),
    }
}

/// Takes every event out of the pair and checks both sides.
fn harvest(pair: &mut Pair, books: &mut [Book; 2], clean: bool) {
    let [cb, sb] = books;
    harvest_one(pair.peer(Who::Client), cb, sb, clean);
    harvest_one(pair.peer(Who::Server), sb, cb, clean);
}

fn harvest_one(p: &mut Peer, me: &mut Book, peer: &mut Book, clean: bool) {
    let mut events = p.take_events();
    while let Some(e) = p.conn.poll_event() {
        events.push(e);
    }
    for e in events {
        on_event(me, peer, clean, e);
    }
    let conn = &p.conn;
    let name = me.name;
    assert_eq!(
        conn.is_closed(),
        me.closed.is_some(),
        "{name}: is_closed vs Closed"
    );
    assert_eq!(conn.is_authenticated(), me.authenticated, "{name}");
    assert_eq!(
        conn.requests_in_flight(),
        me.unresolved,
        "{name}: requests in flight vs unresolved"
    );
    assert!(conn.requests_in_flight() <= me.max_requests, "{name}");
    if me.closed.is_some() {
        assert_eq!(conn.incoming_in_flight(), 0, "{name}");
        assert_eq!(conn.poll_timeout(), None, "{name}: a deadline after Closed");
    } else {
        assert_eq!(conn.incoming_in_flight(), me.open.len(), "{name}: incoming");
        assert!(
            me.open.len() <= me.max_incoming,
            "{name}: incoming over the limit"
        );
        if !me.authenticated {
            assert!(
                conn.poll_timeout().is_some(),
                "{name}: no handshake deadline"
            );
        }
    }
}

/// State a command must leave untouched when it fails.
fn snapshot(c: &Connection) -> (usize, usize, usize, u64) {
    (
        c.outbound_len(),
        c.requests_in_flight(),
        c.incoming_in_flight(),
        c.stats().frames_out,
    )
}

fn after_command<T>(
    who: Who,
    c: &Connection,
    before: (usize, usize, usize, u64),
    r: &Result<T, SendError>,
    book: &mut Book,
) {
    // A too-large answer is replaced, not refused: the state changed.
    if let Err(e) = r
        && !matches!(e, SendError::ResponseTooLarge { .. })
    {
        assert_eq!(
            snapshot(c),
            before,
            "{who:?}: failed command {e:?} changed state"
        );
        if *e == SendError::Blocked {
            book.blocked = true;
        }
    }
}

fn session_config(mut c: Config, b: u8) -> Config {
    c.signing = policy(b);
    c.encryption = policy(b >> 2);
    if b & 0x10 != 0 {
        small_limits(&mut c);
    }
    if b & 0x20 != 0 {
        c.keepalive = None;
    } else if b & 0x40 != 0
        && let Some(k) = c.keepalive.as_mut()
    {
        k.data = Some(RawValue::from_string(r#"{"node":"x"}"#.into()).unwrap());
    }
    c
}

/// Interprets the input as operations on a [`Pair`] (send, request,
/// respond, advance time, chunked delivery, tampering, cuts, closes, …).
/// After each: every request resolves at most once, events follow the rules
/// (nothing after `Closed`, …), counters match, and in untampered sessions
/// every message and request arrives in order, once, unaltered. At the end,
/// after closing both sides and passing every deadline, each request has
/// resolved exactly once and the pair settles.
pub fn session(base: Instant, data: &[u8]) {
    let mut input = Input::new(data);
    let (cb, sb) = (input.byte(), input.byte());
    let ccfg = session_config(client_config(SEED), cb);
    let scfg = session_config(server_config(SEED), sb);
    let binding = if cb == 0xff { vec![1] } else { Vec::new() };
    let small = (cb | sb) & 0x10 != 0;
    let mut books = [Book::new("client", &ccfg), Book::new("server", &scfg)];
    let mut pair = Pair::new(base, ccfg.clone(), scfg.clone(), binding, Vec::new());
    // No tampering or injection so far: bodies must arrive intact.
    let mut clean = true;
    assert!(pair.drive_bounded(SETTLE), "handshake did not settle");
    harvest(&mut pair, &mut books, clean);

    let mut ops = 0;
    while !input.is_empty() && ops < MAX_OPS {
        ops += 1;
        let op = input.byte();
        let (who, i) = if op & 0x80 != 0 {
            (Who::Server, 1)
        } else {
            (Who::Client, 0)
        };
        let other = if who == Who::Client {
            Who::Server
        } else {
            Who::Client
        };
        let now = pair.now;
        match op & 0x0f {
            0 => {
                let body = input.body();
                let c = &mut pair.peer(who).conn;
                let before = snapshot(c);
                let r = c.send(&body);
                after_command(who, c, before, &r, &mut books[i]);
                if r.is_ok() {
                    books[i].sent.push_back(Sent::Msg(body.get().to_owned()));
                }
            }
            1 => {
                let body = input.body();
                let timeout = match input.byte() {
                    0 => None,
                    t => Some(Duration::from_millis(u64::from(t) * 50)),
                };
                let c = &mut pair.peer(who).conn;
                let before = snapshot(c);
                let r = c.request(now, &body, timeout);
                after_command(who, c, before, &r, &mut books[i]);
                if let Ok(id) = r {
                    books[i].issue(id);
                    books[i]
                        .sent
                        .push_back(Sent::Req(id.0, body.get().to_owned()));
                }
            }
            2 => {
                let pick = usize::from(input.byte());
                let answer = match input.byte() % 3 {
                    0 => Answer::Value(input.body().get().to_owned()),
                    1 => Answer::Error(RemoteError::new(input.text(), input.text())),
                    _ => Answer::Error(RemoteError {
                        code: input.text(),
                        message: input.text(),
                        data: Some(input.body().get().to_owned()),
                    }),
                };
                let book = &mut books[i];
                let (id, known) = match book.open.get(pick % book.open.len().max(1)) {
                    Some(&id) if pick < 0xf0 => (id, true),
                    // An id that is not awaiting an answer.
                    _ => (u64::from(input.u16()), false),
                };
                let known = known || book.open.contains(&id);
                let c = &mut pair.peer(who).conn;
                let before = snapshot(c);
                let r = match &answer {
                    Answer::Value(v) => {
                        let v = RawValue::from_string(v.clone()).unwrap();
                        c.respond(PeerRequestId(id), Ok(&v))
                    }
                    Answer::Error(e) => c.respond(PeerRequestId(id), Err(e)),
                    Answer::TooLarge => unreachable!("only recorded, never chosen"),
                };
                after_command(who, c, before, &r, book);
                match r {
                    Ok(()) => {
                        assert!(known, "{who:?}: answered {id}, which was not open");
                        book.open.retain(|&x| x != id);
                        book.answered.insert(id, answer);
                    }
                    Err(SendError::UnknownRequest(x)) => {
                        assert_eq!(x, id);
                        assert!(!known, "{who:?}: open request {id} unknown");
                    }
                    Err(SendError::ResponseTooLarge { size, limit }) => {
                        // Answered all the same, with the connection's error.
                        assert!(known, "{who:?}: answered {id}, which was not open");
                        assert!(size > limit, "{who:?}: {size} bytes within {limit}");
                        book.open.retain(|&x| x != id);
                        book.answered.insert(id, Answer::TooLarge);
                    }
                    Err(_) => {}
                }
            }
            3 => {
                let data = match input.byte() % 3 {
                    0 => None,
                    1 => Some(RawValue::from_string(r#"{"seq":1}"#.into()).unwrap()),
                    _ => Some(input.body()),
                };
                let c = &mut pair.peer(who).conn;
                let before = snapshot(c);
                let r = c.ping(data.as_deref());
                after_command(who, c, before, &r, &mut books[i]);
            }
            4 => {
                let reason = input.text();
                pair.peer(who).conn.close(now, &reason);
            }
            5 => {
                // Up to 25.5 s: past a default keepalive timeout. With small
                // limits (1 s deadlines) up to 5.1 s: past each of them, at
                // a few keepalive rounds per jump rather than 25 (which made
                // this the most expensive operation).
                let unit = if small { 20 } else { 100 };
                let ms = u64::from(input.byte()) * unit;
                pair.advance(Duration::from_millis(ms));
            }
            6 => assert!(pair.drive_bounded(SETTLE), "the pair is stuck"),
            7 => {
                let n = 1 + input.byte() % 4;
                let sizes = (0..n).map(|_| usize::from(input.byte() % 64)).collect();
                pair.deliver_in_chunks(who, sizes);
            }
            8 => {
                let pos = usize::from(input.u16());
                let mask = input.byte().max(1);
                let mut once = Some((pos, mask));
                pair.tamper(who, move |bytes| {
                    if let (Some((pos, mask)), false) = (once, bytes.is_empty()) {
                        let at = pos % bytes.len();
                        bytes[at] ^= mask;
                        once = None;
                    }
                });
                clean = false;
            }
            9 => pair.cut(who),
            10 => {
                let p = pair.peer(who);
                p.reading = !p.reading;
            }
            11 => {
                let n = usize::from(input.byte());
                let bytes = input.take(n).to_vec();
                pair.inject(other, &bytes);
                clean = false;
            }
            12 => {
                // Answer every open request.
                let ids = books[i].open.clone();
                for id in ids {
                    let c = &mut pair.peer(who).conn;
                    let before = snapshot(c);
                    let v = RawValue::from_string(format!("{{\"answer\":{id}}}")).unwrap();
                    let r = c.respond(PeerRequestId(id), Ok(&v));
                    after_command(who, c, before, &r, &mut books[i]);
                    if r.is_ok() {
                        books[i].open.retain(|&x| x != id);
                        books[i]
                            .answered
                            .insert(id, Answer::Value(v.get().to_owned()));
                    }
                }
            }
            _ => {
                pair.step();
            }
        }
        harvest(&mut pair, &mut books, clean);
    }

    // The end: everyone reads again, both sides close, every deadline passes.
    pair.client.reading = true;
    pair.server.reading = true;
    let now = pair.now;
    pair.client.conn.close(now, "fuzz: done");
    pair.server.conn.close(now, "fuzz: done");
    harvest(&mut pair, &mut books, clean);
    assert!(
        pair.drive_bounded(SETTLE),
        "the pair is stuck while closing"
    );
    harvest(&mut pair, &mut books, clean);
    let horizon = ccfg.close_timeout.max(scfg.close_timeout) + Duration::from_secs(1);
    pair.advance(horizon);
    harvest(&mut pair, &mut books, clean);
    for (book, conn) in books.iter().zip([&pair.client.conn, &pair.server.conn]) {
        let name = book.name;
        assert!(
            conn.is_closed(),
            "{name}: open after close and every deadline"
        );
        assert!(book.closed.is_some(), "{name}: no Closed event");
        assert!(
            !book.blocked,
            "{name}: Blocked, then neither SendUnblocked nor Closed"
        );
        for (id, n) in &book.issued {
            assert_eq!(*n, 1, "{name}: request {id} resolved {n} times");
        }
    }
    assert!(
        pair.drive_bounded(SETTLE),
        "the pair is stuck after closing"
    );
}
