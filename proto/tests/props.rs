#![allow(clippy::disallowed_methods)] // tests take one real Instant as the base of virtual time
//! Property tests over the pair harness (proptest; regressions committed
//! under proto/proptest-regressions/).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use jsonlink_proto::testing::{Pair, Who, client_config, server_config};
use jsonlink_proto::{
    CloseReason, Config, Connection, ConnectionParams, Event, Policy, ProtocolError, RemoteError,
    RequestError, Side,
};
use proptest::prelude::*;

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![Just(Who::Client), Just(Who::Server)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Frames split at arbitrary boundaries give the same events.
    #[test]
    fn split_anywhere_same_events(
        bodies in proptest::collection::vec("[a-z\\\\\"{}\\n é]{0,40}", 1..8),
        chunks in proptest::collection::vec(1usize..64, 1..10),
        sign in any::<bool>(),
        seal in any::<bool>(),
    ) {
        let start = Instant::now();
        let mk = || {
            let mut c = client_config(4);
            let mut s = server_config(4);
            if sign { c.signing = Policy::Preferred; }
            if seal { c.encryption = Policy::Preferred; }
            s.keepalive = None;
            c.keepalive = None;
            Pair::new(start, c, s, vec![], vec![])
        };
        let mut p = mk();
        p.connect();
        for b in &bodies {
            let v = serde_json::to_string(b).unwrap();
            p.client.conn.send(&raw(&format!(r#"{{"op":{v},"x":[{v}]}}"#))).unwrap();
        }
        p.drive();
        let whole = p.server.take_events();
        prop_assert_eq!(whole.len(), bodies.len());
        let mut q = mk();
        q.deliver_in_chunks(Who::Client, chunks);
        q.connect();
        for b in &bodies {
            let v = serde_json::to_string(b).unwrap();
            q.client.conn.send(&raw(&format!(r#"{{"op":{v},"x":[{v}]}}"#))).unwrap();
        }
        q.drive();
        prop_assert_eq!(q.server.take_events(), whole);
    }

    /// Any bytes fed to either role: no panic, bounded buffering, `Closed`
    /// at most once and last.
    #[test]
    fn arbitrary_input_never_panics_or_overbuffers(
        input in proptest::collection::vec(any::<u8>(), 0..4096),
        split in 1usize..512,
        server in any::<bool>(),
    ) {
        let mut cfg = client_config(1);
        cfg.pre_auth_max_frame = 1024;
        let side = if server { Side::Server } else { Side::Client };
        let now = Instant::now();
        let mut c = Connection::new(std::sync::Arc::new(cfg), side, now, ConnectionParams::default());
        let mut events = Vec::new();
        for chunk in input.chunks(split) {
            c.handle_input(now, chunk);
            prop_assert!(c.input_buffered() <= 1024);
            while let Some(e) = c.poll_event() { events.push(e); }
            c.poll_transmit(&mut Vec::new());
        }
        let closed = events.iter().filter(|e| matches!(e, Event::Closed(_))).count();
        prop_assert!(closed <= 1);
        if closed == 1 { prop_assert!(matches!(events.last(), Some(Event::Closed(_)))); }
        let app = events.iter().any(|e| matches!(e, Event::Message { .. } | Event::Request { .. } | Event::Authenticated(_)));
        prop_assert!(!app, "application event from garbage");
    }

    /// Flipping any bit of a signed or sealed frame is detected.
    #[test]
    fn bit_flips_are_detected(body in "[ -~]{0,64}", bit in any::<usize>(), seal in any::<bool>()) {
        let mk = || {
            let mut c = client_config(6);
            let mut s = server_config(6);
            c.signing = Policy::Required;
            if seal { c.encryption = Policy::Required; }
            s.keepalive = None;
            let mut p = Pair::new(Instant::now(), c, s, vec![], vec![]);
            p.connect();
            p
        };
        let mut p = mk();
        p.client.conn.send(&raw(&serde_json::to_string(&body).unwrap())).unwrap();
        let mut w = Vec::new();
        p.client.conn.poll_transmit(&mut w);
        let bit = bit % ((w.len() - 1) * 8);
        w[bit / 8] ^= 1 << (bit % 8);
        let mut q = mk();
        q.inject(Who::Server, &w);
        q.inject(Who::Server, b"\n");
        prop_assert_eq!(q.server.closed(), Some(&CloseReason::Protocol(ProtocolError::Integrity)));
        prop_assert!(messages(&q.server).is_empty());
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// R1: random operation sequences never get the pair stuck, and every
    /// request resolves exactly once.
    #[test]
    fn r1_random_ops_resolve_every_request_exactly_once(ops in proptest::collection::vec(op(), 1..60), sign in any::<bool>()) {
        let mut c = client_config(8);
        let mut s = server_config(8);
        if sign { c.signing = Policy::Required; }
        c.max_outbound = 2048;
        s.max_outbound = 2048;
        let mut p = Pair::new(Instant::now(), c, s, vec![], vec![]);
        let mut issued: HashMap<(bool, u64), u32> = HashMap::new();
        let mut resolved: HashMap<(bool, u64), u32> = HashMap::new();
        let mut seen = [0usize; 2];
        p.drive();
        for op in ops {
            apply(&mut p, op, &mut issued);
            prop_assert!(p.drive_bounded(10_000), "stuck");
            count(&p, &mut resolved, &mut seen)?;
        }
        // Wind down: close both, let every deadline pass.
        let now = p.now;
        p.client.conn.close(now, "end");
        p.server.conn.close(now, "end");
        p.advance(Duration::from_secs(120));
        count(&p, &mut resolved, &mut seen)?;
        prop_assert!(p.client.conn.is_closed() && p.server.conn.is_closed());
        for (k, n) in &issued {
            prop_assert_eq!(*n, 1);
            prop_assert_eq!(resolved.get(k).copied().unwrap_or(0), 1, "request {:?} resolved {:?} times", k, resolved.get(k));
        }
        for k in resolved.keys() {
            prop_assert!(issued.contains_key(k));
        }
        if std::env::var_os("JSONLINK_PROP_STATS").is_some() {
            eprintln!("issued {} resolved {}", issued.len(), resolved.len());
        }
        assert_closed_last(&p.client);
        assert_closed_last(&p.server);
        record("R1", "256 random op sequences: never stuck; every request resolved exactly once; Closed once, last");
    }
}

#[derive(Debug, Clone)]
enum Op {
    Send(Who, usize),
    Request(Who, u64),
    Respond(Who, bool),
    Advance(u64),
    Chunks(Who, Vec<usize>),
    Tamper(Who, usize),
    Cut(Who),
    Close(Who),
    Drive,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (who(), 0usize..3000).prop_map(|(w, n)| Op::Send(w, n)),
        4 => (who(), 1u64..20_000).prop_map(|(w, t)| Op::Request(w, t)),
        4 => (who(), any::<bool>()).prop_map(|(w, ok)| Op::Respond(w, ok)),
        3 => (0u64..40_000).prop_map(Op::Advance),
        1 => (who(), proptest::collection::vec(0usize..50, 1..5)).prop_map(|(w, c)| Op::Chunks(w, c)),
        1 => (who(), any::<usize>()).prop_map(|(w, i)| Op::Tamper(w, i)),
        1 => who().prop_map(Op::Cut),
        1 => who().prop_map(Op::Close),
        2 => Just(Op::Drive),
    ]
}

fn apply(p: &mut Pair, op: Op, issued: &mut HashMap<(bool, u64), u32>) {
    let now = p.now;
    match op {
        Op::Send(w, n) => {
            let _ = p.peer(w).conn.send(&raw(&format!("\"{}\"", "s".repeat(n))));
        }
        Op::Request(w, t) => {
            if let Ok(id) =
                p.peer(w)
                    .conn
                    .request(now, &raw("{\"op\":\"r\"}"), Some(Duration::from_millis(t)))
            {
                *issued.entry((w == Who::Client, id.0)).or_default() += 1;
            }
        }
        Op::Respond(w, ok) => {
            let peer = p.peer(w);
            let pending: Vec<_> = peer
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::Request { id, .. } => Some(*id),
                    _ => None,
                })
                .collect();
            for id in pending {
                let _ = if ok {
                    peer.conn.respond(id, Ok(&raw("1")))
                } else {
                    peer.conn.respond(id, Err(&RemoteError::new("nope", "no")))
                };
            }
        }
        Op::Advance(ms) => p.advance(Duration::from_millis(ms)),
        Op::Chunks(w, c) => p.deliver_in_chunks(w, c),
        Op::Tamper(w, i) => {
            let mut once = true;
            p.tamper(w, move |b| {
                if once && !b.is_empty() {
                    let n = b.len();
                    b[i % n] ^= 0x20;
                    once = false;
                }
            })
        }
        Op::Cut(w) => p.cut(w),
        Op::Close(w) => p.peer(w).conn.close(now, "bye"),
        Op::Drive => {
            p.drive();
        }
    }
}

fn count(
    p: &Pair,
    resolved: &mut HashMap<(bool, u64), u32>,
    seen: &mut [usize; 2],
) -> Result<(), TestCaseError> {
    for (i, peer) in [&p.client, &p.server].into_iter().enumerate() {
        for e in &peer.events[seen[i]..] {
            if let Event::Response { id, .. } | Event::RequestFailed { id, .. } = e {
                let n = resolved.entry((i == 0, id.0)).or_default();
                *n += 1;
                prop_assert_eq!(*n, 1, "resolved twice");
            }
        }
        seen[i] = peer.events.len();
    }
    Ok(())
}

#[test]
fn config_is_send_sync() {
    fn ok<T: Send + Sync>() {}
    ok::<Config>();
    ok::<Connection>();
}

// ------------------------------------------------------------------ timers

/// A duration in the reference model: milliseconds, or `None` for one too
/// large to add to an `Instant` (`Duration::MAX`: no deadline).
type Ms = Option<u64>;

/// Far off, yet representable: a real deadline that never comes.
const FAR_MS: u64 = (1 << 40) * 1000;

fn model_duration() -> impl Strategy<Value = Ms> {
    prop_oneof![
        8 => (0u64..20_000).prop_map(Some),
        1 => Just(Some(FAR_MS)),
        1 => Just(None),
    ]
}

fn to_duration(d: Ms) -> Duration {
    d.map_or(Duration::MAX, Duration::from_millis)
}

#[derive(Debug, Clone)]
enum TimerOp {
    /// One `handle_timeout` this many ms later.
    Jump(u64),
    /// One `handle_timeout` exactly at the model's next deadline.
    ToNext,
    /// Completes the handshake now.
    Auth,
    Request(Option<Ms>),
    /// The peer answers our `n`-th request (issued or not).
    Answer(u64),
    Pong,
    /// `close(now)`, or `close_by(now + ms)`.
    Close(Option<u64>),
    /// The peer closes gracefully.
    PeerClose,
}

fn timer_op() -> impl Strategy<Value = TimerOp> {
    prop_oneof![
        4 => (0u64..30_000).prop_map(TimerOp::Jump),
        3 => Just(TimerOp::ToNext),
        2 => Just(TimerOp::Auth),
        4 => proptest::option::of(model_duration()).prop_map(TimerOp::Request),
        2 => (1u64..12).prop_map(TimerOp::Answer),
        2 => Just(TimerOp::Pong),
        1 => proptest::option::of(0u64..20_000).prop_map(TimerOp::Close),
        1 => Just(TimerOp::PeerClose),
    ]
}

/// What the model expects the client to report, in order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Answered(u64),
    Failed(u64, RequestError),
    Closed(CloseReason),
}

#[derive(Debug, PartialEq)]
enum Phase {
    Handshaking,
    Established,
    Closing(CloseReason),
    Closed,
}

/// The client's timers as the reference model sees them: one flat list of
/// armed deadlines, the earliest due fired first, each exactly once.
#[derive(Debug)]
struct TimerModel {
    phase: Phase,
    now: u64,
    request_timeout: Ms,
    close_timeout: Ms,
    /// `(interval, timeout)`; `None`: no keepalive.
    keepalive: Option<(Ms, Ms)>,
    handshake: Option<u64>,
    keepalive_send: Option<u64>,
    keepalive_deadline: Option<u64>,
    close: Option<u64>,
    /// Request id -> deadline (`None`: none).
    pending: std::collections::BTreeMap<u64, Option<u64>>,
    next_id: u64,
    /// Deadlines of answered requests: `poll_timeout` may still name one.
    answered: std::collections::BTreeSet<u64>,
    pings: usize,
    seen: Vec<Seen>,
}

/// Which armed deadline; the order of the variants is the tie order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Request(u64),
    Handshake,
    KeepaliveSend,
    KeepaliveDeadline,
    Close,
}

impl TimerModel {
    fn after(&self, d: Ms) -> Option<u64> {
        d.map(|d| self.now + d)
    }

    fn armed(&self) -> Vec<(u64, Due)> {
        let mut v: Vec<(u64, Due)> = self
            .pending
            .iter()
            .filter_map(|(id, d)| d.map(|d| (d, Due::Request(*id))))
            .collect();
        for (at, due) in [
            (self.handshake, Due::Handshake),
            (self.keepalive_send, Due::KeepaliveSend),
            (self.keepalive_deadline, Due::KeepaliveDeadline),
            (self.close, Due::Close),
        ] {
            if let Some(at) = at {
                v.push((at, due));
            }
        }
        v.sort();
        v
    }

    fn next_deadline(&self) -> Option<u64> {
        if self.phase == Phase::Closed {
            return None;
        }
        self.armed().first().map(|(at, _)| *at)
    }

    fn terminate(&mut self, reason: CloseReason) {
        let error = match reason {
            CloseReason::Local { .. } => RequestError::ClosedLocally,
            _ => RequestError::ConnectionLost,
        };
        for id in std::mem::take(&mut self.pending).into_keys() {
            self.seen.push(Seen::Failed(id, error.clone()));
        }
        self.seen.push(Seen::Closed(reason));
        self.handshake = None;
        self.keepalive_send = None;
        self.keepalive_deadline = None;
        self.close = None;
        self.phase = Phase::Closed;
    }

    fn check_drained(&mut self) {
        if let Phase::Closing(reason) = &self.phase
            && self.pending.is_empty()
        {
            let reason = reason.clone();
            self.terminate(reason);
        }
    }

    fn start_closing(&mut self, reason: CloseReason, deadline: Option<u64>) {
        self.phase = Phase::Closing(reason);
        self.keepalive_send = None;
        self.keepalive_deadline = None;
        self.close = deadline;
        self.check_drained();
    }

    fn handle_timeout(&mut self, now: u64) {
        self.now = now;
        while self.phase != Phase::Closed {
            let Some(&(_, due)) = self.armed().iter().find(|(at, _)| *at <= now) else {
                break;
            };
            match due {
                Due::Request(id) => {
                    self.pending.remove(&id);
                    self.seen.push(Seen::Failed(id, RequestError::Timeout));
                    self.check_drained();
                }
                Due::Handshake => {
                    self.handshake = None;
                    self.terminate(CloseReason::HandshakeTimeout);
                }
                Due::KeepaliveSend => {
                    self.keepalive_send = None;
                    self.pings += 1;
                    // From now, however late.
                    let timeout = self.keepalive.and_then(|(_, t)| t);
                    self.keepalive_deadline = self.after(timeout);
                }
                Due::KeepaliveDeadline => self.terminate(CloseReason::KeepaliveTimeout),
                Due::Close => {
                    if let Phase::Closing(reason) = &self.phase {
                        let reason = reason.clone();
                        self.terminate(reason);
                    }
                }
            }
        }
    }
}

fn seen_of(events: impl IntoIterator<Item = Event>) -> Vec<Seen> {
    events
        .into_iter()
        .filter_map(|e| match e {
            Event::Response { id, .. } => Some(Seen::Answered(id.0)),
            Event::RequestFailed { id, error } => Some(Seen::Failed(id.0, error)),
            Event::Closed(r) => Some(Seen::Closed(r)),
            _ => None,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// K3: the client's timers (handshake, keepalive send, keepalive
    /// deadline, close, request deadlines) against a reference model, over
    /// random time jumps (each one `handle_timeout`, however many deadlines
    /// passed) and the inputs and commands that arm and disarm them: the
    /// same outcomes in the same order, the same pings, and `poll_timeout`
    /// never later than the model's next deadline.
    #[test]
    fn k3_timers_match_a_reference_model(
        handshake in model_duration(),
        keepalive in proptest::option::of((model_duration(), model_duration())),
        request_timeout in model_duration(),
        close_timeout in model_duration(),
        ops in proptest::collection::vec(timer_op(), 1..80),
    ) {
        let mut c = client_config(9);
        c.handshake_timeout = to_duration(handshake);
        c.request_timeout = to_duration(request_timeout);
        c.close_timeout = to_duration(close_timeout);
        c.keepalive = keepalive.map(|(i, t)| jsonlink_proto::Keepalive {
            interval: to_duration(i),
            timeout: to_duration(t),
            data: None,
        });
        let mut s = server_config(9);
        s.keepalive = None;
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut p = Pair::new(t0, c, s, vec![], vec![]);
        let mut m = TimerModel {
            phase: Phase::Handshaking,
            now: 0,
            request_timeout,
            close_timeout,
            keepalive,
            handshake,
            keepalive_send: None,
            keepalive_deadline: None,
            close: None,
            pending: Default::default(),
            next_id: 1,
            answered: Default::default(),
            pings: 0,
            seen: Vec::new(),
        };
        let mut seen = Vec::new();
        let mut pings = 0;
        for op in ops {
            let now = at(m.now);
            // Frames from the peer only after authentication (before it
            // they are a protocol error, not a timer matter).
            let open = matches!(m.phase, Phase::Established | Phase::Closing(_));
            match op {
                TimerOp::Jump(ms) => {
                    let to = m.now + ms;
                    p.client.conn.handle_timeout(at(to));
                    m.handle_timeout(to);
                }
                TimerOp::ToNext => {
                    if let Some(to) = m.next_deadline() {
                        let to = to.max(m.now);
                        p.client.conn.handle_timeout(at(to));
                        m.handle_timeout(to);
                    }
                }
                TimerOp::Auth => {
                    if m.phase == Phase::Handshaking {
                        p.now = now;
                        p.drive();
                        prop_assert!(p.client.conn.is_established());
                        m.phase = Phase::Established;
                        m.handshake = None;
                        m.keepalive_send = m.keepalive.and_then(|(i, _)| m.after(i));
                    }
                }
                TimerOp::Request(timeout) => {
                    let r = p.client.conn.request(now, &raw("1"), timeout.map(to_duration));
                    prop_assert_eq!(r.is_ok(), m.phase == Phase::Established, "{:?}", r);
                    if let Ok(id) = r {
                        prop_assert_eq!(id.0, m.next_id);
                        let deadline = m.after(timeout.unwrap_or(m.request_timeout));
                        m.pending.insert(m.next_id, deadline);
                        m.next_id += 1;
                    }
                }
                TimerOp::Answer(n) => {
                    if open {
                        p.client.conn.handle_input(now, format!("{{\"t\":\"res\",\"id\":{n},\"d\":1}}\n").as_bytes());
                        if let Some(deadline) = m.pending.remove(&n) {
                            m.answered.extend(deadline);
                            m.seen.push(Seen::Answered(n));
                            m.check_drained();
                        }
                    }
                }
                TimerOp::Pong => {
                    if open {
                        p.client.conn.handle_input(now, b"{\"t\":\"pong\"}\n");
                        m.keepalive_deadline = None;
                        if m.phase == Phase::Established {
                            m.keepalive_send = m.keepalive.and_then(|(i, _)| m.after(i));
                        }
                    }
                }
                TimerOp::Close(by) => {
                    let reason = CloseReason::Local { reason: "bye".into() };
                    let deadline = match by {
                        Some(ms) => {
                            p.client.conn.close_by(now, "bye", at(m.now + ms));
                            Some(m.now + ms)
                        }
                        None => {
                            p.client.conn.close(now, "bye");
                            m.after(m.close_timeout)
                        }
                    };
                    match &m.phase {
                        Phase::Established => m.start_closing(reason, deadline),
                        Phase::Closing(_) => {
                            m.close = match (m.close, deadline) {
                                (Some(a), Some(b)) => Some(a.min(b)),
                                (a, b) => a.or(b),
                            };
                        }
                        Phase::Handshaking => m.terminate(reason),
                        Phase::Closed => {}
                    }
                }
                TimerOp::PeerClose => {
                    if open {
                        p.client.conn.handle_input(now, b"{\"t\":\"close\",\"code\":\"normal\",\"reason\":\"peer\"}\n");
                        if m.phase == Phase::Established {
                            let reason = CloseReason::Remote {
                                code: jsonlink_proto::CloseCode::Normal,
                                reason: "peer".into(),
                            };
                            let deadline = m.after(m.close_timeout);
                            m.start_closing(reason, deadline);
                        }
                    }
                }
            }
            // What the client did: events, pings written, next deadline.
            seen.extend(seen_of(p.client.take_events()));
            seen.extend(seen_of(std::iter::from_fn(|| p.client.conn.poll_event())));
            if m.phase != Phase::Handshaking {
                let mut w = Vec::new();
                p.client.conn.poll_transmit(&mut w);
                pings += String::from_utf8_lossy(&w).matches(r#"{"t":"ping"}"#).count();
            }
            prop_assert_eq!(&seen, &m.seen, "{:?}", m);
            prop_assert_eq!(pings, m.pings);
            prop_assert_eq!(p.client.conn.is_closed(), m.phase == Phase::Closed);
            // The model's next deadline, or earlier only for an answered
            // request's deadline: never late.
            let next = p.client.conn.poll_timeout().map(|n| (n - t0).as_millis() as u64);
            let want = m.next_deadline();
            let early_ok = next.is_some_and(|n| m.answered.contains(&n) && want.is_none_or(|w| n < w));
            prop_assert!(next == want || early_ok, "poll_timeout {:?}, model {:?}", next, want);
            if m.phase == Phase::Closed {
                prop_assert_eq!(next, None);
            }
        }
    }
}

// ---------------------------------------------------- durations from callers

/// A duration for [`f11_arbitrary_durations_never_panic`]; `Edge` is
/// relative to the largest offset the base instant can take, resolved at
/// run time.
#[derive(Debug, Clone, Copy)]
enum AnyDuration {
    Fixed(Duration),
    Edge(i64),
}

fn any_duration() -> impl Strategy<Value = AnyDuration> {
    prop_oneof![
        3 => (0u64..60_000).prop_map(|ms| AnyDuration::Fixed(Duration::from_millis(ms))),
        1 => Just(AnyDuration::Fixed(Duration::ZERO)),
        1 => Just(AnyDuration::Fixed(Duration::MAX)),
        1 => (any::<u64>(), 0u32..1_000_000_000)
            .prop_map(|(s, n)| AnyDuration::Fixed(Duration::new(s, n))),
        1 => (-3i64..=3).prop_map(AnyDuration::Edge),
    ]
}

/// The largest whole-second duration that `t` can be moved by.
fn max_offset(t: Instant) -> Duration {
    let (mut lo, mut hi) = (0u64, u64::MAX);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if t.checked_add(Duration::from_secs(mid)).is_some() {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Duration::from_secs(lo)
}

impl AnyDuration {
    fn get(self, edge: Duration) -> Duration {
        match self {
            Self::Fixed(d) => d,
            Self::Edge(k) if k >= 0 => edge.saturating_add(Duration::from_secs(k.unsigned_abs())),
            Self::Edge(k) => edge.saturating_sub(Duration::from_secs(k.unsigned_abs())),
        }
    }
}

#[derive(Debug, Clone)]
enum DurationOp {
    Request(Who, Option<AnyDuration>),
    /// `Pair::advance` (deadline by deadline): for any duration without
    /// keepalive, else for up to a minute (then a `Pair::jump`), so the
    /// pings of a long advance do not make the case slow.
    Advance(AnyDuration),
    Jump(AnyDuration),
    Close(Who),
    CloseBy(Who, AnyDuration),
    Answer(Who),
    Ping(Who),
}

fn duration_op() -> impl Strategy<Value = DurationOp> {
    prop_oneof![
        4 => (who(), proptest::option::of(any_duration())).prop_map(|(w, d)| DurationOp::Request(w, d)),
        3 => any_duration().prop_map(DurationOp::Advance),
        2 => any_duration().prop_map(DurationOp::Jump),
        1 => who().prop_map(DurationOp::Close),
        1 => (who(), any_duration()).prop_map(|(w, d)| DurationOp::CloseBy(w, d)),
        2 => who().prop_map(DurationOp::Answer),
        1 => who().prop_map(DurationOp::Ping),
    ]
}

fn min_deadline(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// F11: arbitrary durations (zero, `Duration::MAX`, any seconds and
    /// nanoseconds, and values either side of the largest an `Instant`
    /// can take) in every public entry that takes one — the handshake,
    /// request, close and keepalive durations of `Config`,
    /// `Connection::request`, and the harness's `Pair::advance` and
    /// `Pair::jump` — never panic, and give sane results: a timed entry
    /// is `now + duration` exactly when that can be represented and no
    /// deadline otherwise, `poll_timeout` is never left in the past after
    /// `handle_timeout`, and every request resolves exactly once.
    #[test]
    fn f11_arbitrary_durations_never_panic(
        handshake in any_duration(),
        request_timeout in any_duration(),
        close_timeout in any_duration(),
        keepalive in proptest::option::of((any_duration(), any_duration())),
        ops in proptest::collection::vec(duration_op(), 1..40),
    ) {
        let t0 = Instant::now();
        let edge = max_offset(t0);
        let mk = |mut c: Config| {
            c.handshake_timeout = handshake.get(edge);
            c.request_timeout = request_timeout.get(edge);
            c.close_timeout = close_timeout.get(edge);
            // At least a second between pings, so `Pair::advance` stays
            // cheap (the timer model above covers shorter intervals).
            c.keepalive = keepalive.map(|(i, t)| jsonlink_proto::Keepalive {
                interval: i.get(edge).max(Duration::from_secs(1)),
                timeout: t.get(edge),
                data: None,
            });
            c
        };
        let mut p = Pair::new(t0, mk(client_config(10)), mk(server_config(10)), vec![], vec![]);
        prop_assert_eq!(p.client.conn.poll_timeout(), t0.checked_add(handshake.get(edge)));
        p.connect();
        let keepalive_at = keepalive
            .and_then(|(i, _)| t0.checked_add(i.get(edge).max(Duration::from_secs(1))));
        prop_assert_eq!(p.client.conn.poll_timeout(), keepalive_at);
        let mut issued: HashMap<(bool, u64), u32> = HashMap::new();
        let mut resolved: HashMap<(bool, u64), u32> = HashMap::new();
        let mut seen = [0usize; 2];
        for op in ops {
            let now = p.now;
            match op {
                DurationOp::Request(w, d) => {
                    let c = &mut p.peer(w).conn;
                    let before = c.poll_timeout();
                    let timeout = d.map_or(request_timeout.get(edge), |d| d.get(edge));
                    if let Ok(id) = c.request(now, &raw("1"), d.map(|d| d.get(edge))) {
                        *issued.entry((w == Who::Client, id.0)).or_default() += 1;
                        let want = min_deadline(before, now.checked_add(timeout));
                        prop_assert_eq!(c.poll_timeout(), want);
                    }
                }
                DurationOp::Advance(d) => {
                    let d = d.get(edge);
                    if keepalive.is_none() || d <= Duration::from_secs(60) {
                        p.advance(d);
                    } else {
                        p.jump(d);
                    }
                }
                DurationOp::Jump(d) => p.jump(d.get(edge)),
                DurationOp::Close(w) => p.peer(w).conn.close(now, "bye"),
                DurationOp::CloseBy(w, d) => {
                    let deadline = now.checked_add(d.get(edge)).unwrap_or(now);
                    p.peer(w).conn.close_by(now, "bye", deadline);
                }
                DurationOp::Answer(w) => {
                    let peer = p.peer(w);
                    let ids: Vec<_> = requests(peer).into_iter().map(|(id, _, _)| id).collect();
                    for id in ids {
                        let _ = peer.conn.respond(id, Ok(&raw("2")));
                    }
                }
                DurationOp::Ping(w) => {
                    let _ = p.peer(w).conn.ping(None);
                }
            }
            p.drive();
            count(&p, &mut resolved, &mut seen)?;
            if matches!(op, DurationOp::Advance(_) | DurationOp::Jump(_)) {
                // Whatever was due at `now` has fired.
                prop_assert!(p.next_deadline().is_none_or(|t| t >= p.now));
            }
        }
        // Wind down: a drain deadline of now ends both sides at once.
        let now = p.now;
        p.client.conn.close_by(now, "end", now);
        p.server.conn.close_by(now, "end", now);
        p.jump(Duration::ZERO);
        count(&p, &mut resolved, &mut seen)?;
        prop_assert!(p.client.conn.is_closed() && p.server.conn.is_closed());
        assert_closed_last(&p.client);
        assert_closed_last(&p.server);
        for k in issued.keys() {
            prop_assert_eq!(resolved.get(k).copied().unwrap_or(0), 1, "request {:?}", k);
        }
        prop_assert_eq!(issued.len(), resolved.len());
    }
}
