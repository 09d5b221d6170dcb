//! An in-memory two-peer harness with virtual time, in quinn's `Pair`
//! shape. Behind the `testing` feature; not a stable API.
//!
//! Time never passes by itself: [`Pair::advance`] jumps from deadline to
//! deadline, so a 30 s keepalive runs in microseconds.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Config, Connection, ConnectionParams, Event, Identity, Secret, Side};

/// A secret shared by default pairs.
pub const TEST_SECRET: [u8; 32] = [0x42; 32];

/// Default client configuration for tests (deterministic RNG).
pub fn client_config(seed: u8) -> Config {
    let mut c = Config::new(
        Secret::from_bytes(TEST_SECRET.to_vec()).unwrap(),
        Identity::new("client-node", "test-client"),
    );
    c.rng_seed = Some([seed; 32]);
    c
}

/// Default server configuration for tests (deterministic RNG).
pub fn server_config(seed: u8) -> Config {
    let mut c = Config::new(
        Secret::from_bytes(TEST_SECRET.to_vec()).unwrap(),
        Identity::new("server-node", "test-server"),
    );
    c.rng_seed = Some([seed.wrapping_add(0x80); 32]);
    c
}

/// One end of the pair.
pub struct Peer {
    pub conn: Connection,
    /// Events polled so far, in order.
    pub events: Vec<Event>,
    /// Bytes written by this peer and not yet delivered to the other.
    pub in_flight: Vec<u8>,
    /// When set, each delivery of this peer's bytes is cut into these
    /// chunk sizes (cycled; `0` entries are skipped), as [`chunks`] does.
    pub chunks: Option<Vec<usize>>,
    /// Applied to this peer's bytes before delivery.
    #[allow(clippy::type_complexity)]
    pub tamper: Option<Box<dyn FnMut(&mut Vec<u8>)>>,
    /// This peer's outgoing stream has been cut: the other side saw EOF.
    pub cut: bool,
    /// Total bytes this peer wrote.
    pub written: usize,
    /// Largest `outbound_len` ever observed.
    pub max_outbound_seen: usize,
    /// When false, this peer never reads (a stuck reader).
    pub reading: bool,
    /// When `Some`, every byte this peer writes is appended here.
    pub log: Option<Vec<u8>>,
}

impl Peer {
    fn new(conn: Connection) -> Self {
        Self {
            conn,
            events: Vec::new(),
            in_flight: Vec::new(),
            chunks: None,
            tamper: None,
            cut: false,
            written: 0,
            max_outbound_seen: 0,
            reading: true,
            log: None,
        }
    }

    /// Drains events; returns whether there were any.
    fn poll(&mut self) -> bool {
        let mut any = false;
        while let Some(e) = self.conn.poll_event() {
            self.events.push(e);
            any = true;
        }
        any
    }

    /// Removes and returns the events polled so far.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The close reason, if the `Closed` event was seen.
    pub fn closed(&self) -> Option<&crate::CloseReason> {
        self.events.iter().find_map(|e| match e {
            Event::Closed(r) => Some(r),
            _ => None,
        })
    }
}

/// Which peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Client,
    Server,
}

/// Client and server joined by in-memory pipes, with virtual time.
pub struct Pair {
    pub now: Instant,
    pub client: Peer,
    pub server: Peer,
}

impl Pair {
    /// Starts recording both peers' written bytes (see [`Peer::log`]).
    pub fn record(&mut self) {
        self.client.log = Some(Vec::new());
        self.server.log = Some(Vec::new());
    }

    /// A pair with default test configurations.
    pub fn seeded(start: Instant, seed: u8) -> Self {
        Self::new(
            start,
            client_config(seed),
            server_config(seed),
            Vec::new(),
            Vec::new(),
        )
    }

    /// A pair with the given configurations and channel bindings.
    pub fn new(
        start: Instant,
        client: Config,
        server: Config,
        cb_client: Vec<u8>,
        cb_server: Vec<u8>,
    ) -> Self {
        let peer = |config, side, channel_binding, connection_id| {
            let params = ConnectionParams {
                channel_binding,
                connection_id,
            };
            Peer::new(Connection::new(Arc::new(config), side, start, params))
        };
        Self {
            now: start,
            client: peer(client, Side::Client, cb_client, 0),
            server: peer(server, Side::Server, cb_server, 7),
        }
    }

    pub fn peer(&mut self, who: Who) -> &mut Peer {
        match who {
            Who::Client => &mut self.client,
            Who::Server => &mut self.server,
        }
    }

    /// Runs the handshake and asserts the exact event sequence: one
    /// `Authenticated` on each side, nothing else.
    pub fn connect(&mut self) {
        self.drive();
        let c = self.client.take_events();
        let s = self.server.take_events();
        assert!(
            matches!(c.as_slice(), [Event::Authenticated(_)]),
            "client events: {c:?}"
        );
        assert!(
            matches!(s.as_slice(), [Event::Authenticated(_)]),
            "server events: {s:?}"
        );
    }

    /// One round: each side transmits, bytes are delivered (respecting
    /// `wants_input`, chunking, tampering and cuts), events polled. Returns
    /// whether anything moved.
    pub fn step(&mut self) -> bool {
        let mut progress = false;
        for who in [Who::Client, Who::Server] {
            let p = self.peer(who);
            let before = p.in_flight.len();
            let n = p.conn.poll_transmit(&mut p.in_flight);
            if let Some(log) = p.log.as_mut() {
                log.extend_from_slice(&p.in_flight[before..]);
            }
            p.written += n;
            p.max_outbound_seen = p.max_outbound_seen.max(p.in_flight.len());
            progress |= n > 0;
            progress |= p.poll();
        }
        let now = self.now;
        progress |= deliver(now, &mut self.client, &mut self.server);
        progress |= deliver(now, &mut self.server, &mut self.client);
        progress |= self.client.poll();
        progress |= self.server.poll();
        progress
    }

    /// Steps until nothing moves (bounded at 10 000 rounds).
    pub fn drive(&mut self) {
        assert!(
            self.drive_bounded(10_000),
            "pair did not settle in 10000 steps"
        );
    }

    /// Steps until nothing moves or `n` rounds pass; true if it settled.
    pub fn drive_bounded(&mut self, n: usize) -> bool {
        for _ in 0..n {
            if !self.step() {
                return true;
            }
        }
        false
    }

    /// The earliest deadline of either side.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.client.conn.poll_timeout(),
            self.server.conn.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Moves virtual time forward by `d`, firing every deadline on the way
    /// in order and driving the pair after each (an event loop that is
    /// never late). A `d` too large to add to `now` (`Duration::MAX`) fires
    /// every deadline there is (at most 100 000 rounds) and leaves `now` at
    /// the last one.
    pub fn advance(&mut self, d: Duration) {
        let target = self.now.checked_add(d);
        self.drive();
        for _ in 0..100_000 {
            match self.next_deadline() {
                Some(t) if target.is_none_or(|target| t <= target) => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    self.client.conn.handle_timeout(now);
                    self.server.conn.handle_timeout(now);
                    self.drive();
                }
                _ => break,
            }
        }
        if let Some(target) = target {
            self.now = target;
        }
        self.drive();
    }

    /// Moves virtual time forward by `d` at once, as a suspended machine or
    /// a stalled event loop sees it: one `handle_timeout` per side at the
    /// new time, however many deadlines passed in between, then drives the
    /// pair. A `d` too large to add to `now` leaves `now` unchanged.
    pub fn jump(&mut self, d: Duration) {
        self.drive();
        self.now = self.now.checked_add(d).unwrap_or(self.now);
        let now = self.now;
        self.client.conn.handle_timeout(now);
        self.server.conn.handle_timeout(now);
        self.drive();
    }

    /// Cuts `who`'s bytes into chunks of these sizes on delivery.
    pub fn deliver_in_chunks(&mut self, who: Who, sizes: Vec<usize>) {
        self.peer(who).chunks = Some(sizes);
    }

    /// Edits `who`'s bytes in flight before delivery.
    pub fn tamper(&mut self, who: Who, f: impl FnMut(&mut Vec<u8>) + 'static) {
        self.peer(who).tamper = Some(Box::new(f));
    }

    /// Ends `who`'s outgoing stream: anything in flight is lost and the
    /// other side sees EOF.
    pub fn cut(&mut self, who: Who) {
        let now = self.now;
        let p = self.peer(who);
        p.cut = true;
        p.in_flight.clear();
        let other = match who {
            Who::Client => &mut self.server,
            Who::Server => &mut self.client,
        };
        other.conn.handle_eof(now);
        other.poll();
    }

    /// Feeds raw bytes to `who` as if the other side had written them.
    pub fn inject(&mut self, who: Who, bytes: &[u8]) {
        let now = self.now;
        let p = self.peer(who);
        p.conn.handle_input(now, bytes);
        p.poll();
    }
}

/// Delivers `from`'s in-flight bytes to `to`.
fn deliver(now: Instant, from: &mut Peer, to: &mut Peer) -> bool {
    if from.cut || from.in_flight.is_empty() || !to.reading || to.conn.is_closed() {
        if to.conn.is_closed() {
            from.in_flight.clear();
        }
        return false;
    }
    if !to.conn.wants_input() {
        return false;
    }
    let mut bytes = std::mem::take(&mut from.in_flight);
    if let Some(t) = from.tamper.as_mut() {
        t(&mut bytes);
    }
    for chunk in chunks(&bytes, from.chunks.as_deref().unwrap_or_default()) {
        to.conn.handle_input(now, chunk);
    }
    true
}

/// Cuts `bytes` into chunks of `sizes` (cycled; zero sizes skipped): the
/// whole as one chunk when no size is positive, none when it is empty.
pub fn chunks<'a>(bytes: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut sizes = sizes.iter().copied().filter(|&s| s > 0).cycle();
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(sizes.next().unwrap_or(rest.len()).min(rest.len()));
        out.push(chunk);
        rest = tail;
    }
    out
}
