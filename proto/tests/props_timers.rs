#![forbid(unsafe_code)]
//! K3 as a property (proptest): the client's timers against a reference
//! model of armed deadlines.

mod common;

use std::time::{Duration, Instant};

use common::*;
use jsonlink_proto::testing::Pair;
use jsonlink_proto::{CloseCode, CloseReason, Event, Keepalive, RequestError};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

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
    /// The model of a client with these timeouts (`keepalive`: interval and
    /// timeout), its handshake started at 0.
    fn new(
        handshake: Ms,
        keepalive: Option<(Ms, Ms)>,
        request_timeout: Ms,
        close_timeout: Ms,
    ) -> Self {
        Self {
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
        }
    }

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

/// Applies `op` to the client of `p` (whose virtual time started at `t0`)
/// and to the model alike.
fn apply(p: &mut Pair, m: &mut TimerModel, op: TimerOp, t0: Instant) -> Result<(), TestCaseError> {
    let at = |ms: u64| t0 + Duration::from_millis(ms);
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
            let r = p
                .client
                .conn
                .request(now, &raw("1"), timeout.map(to_duration));
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
                p.client.conn.handle_input(
                    now,
                    format!("{{\"t\":\"res\",\"id\":{n},\"d\":1}}\n").as_bytes(),
                );
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
            let reason = CloseReason::Local {
                reason: "bye".into(),
            };
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
                p.client.conn.handle_input(
                    now,
                    b"{\"t\":\"close\",\"code\":\"normal\",\"reason\":\"peer\"}\n",
                );
                if m.phase == Phase::Established {
                    let reason = CloseReason::Remote {
                        code: CloseCode::Normal,
                        reason: "peer".into(),
                    };
                    let deadline = m.after(m.close_timeout);
                    m.start_closing(reason, deadline);
                }
            }
        }
    }
    Ok(())
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
        let mut p = Setup::seed(9)
            .client(|c| {
                c.handshake_timeout = to_duration(handshake);
                c.request_timeout = to_duration(request_timeout);
                c.close_timeout = to_duration(close_timeout);
                c.keepalive = keepalive.map(|(i, t)| Keepalive {
                    interval: to_duration(i),
                    timeout: to_duration(t),
                    data: None,
                });
            })
            .server(|s| s.keepalive = None)
            .pair();
        let t0 = p.now;
        let mut m = TimerModel::new(handshake, keepalive, request_timeout, close_timeout);
        let mut seen = Vec::new();
        let mut pings = 0;
        for op in ops {
            apply(&mut p, &mut m, op, t0)?;
            // What the client did: events, pings written, next deadline.
            seen.extend(seen_of(p.client.take_events()));
            seen.extend(seen_of(std::iter::from_fn(|| p.client.conn.poll_event())));
            if m.phase != Phase::Handshaking {
                pings += String::from_utf8_lossy(&take_output(&mut p.client))
                    .matches(r#"{"t":"ping"}"#)
                    .count();
            }
            prop_assert_eq!(&seen, &m.seen, "the same outcomes in the same order: {:?}", m);
            prop_assert_eq!(pings, m.pings, "the same pings");
            prop_assert_eq!(p.client.conn.is_closed(), m.phase == Phase::Closed, "closed alike");
            // The model's next deadline, or earlier only for an answered
            // request's deadline: never late.
            let next = p.client.conn.poll_timeout().map(|n| (n - t0).as_millis() as u64);
            let want = m.next_deadline();
            let early_ok = next.is_some_and(|n| m.answered.contains(&n) && want.is_none_or(|w| n < w));
            prop_assert!(next == want || early_ok, "poll_timeout {:?}, model {:?}", next, want);
            if m.phase == Phase::Closed {
                prop_assert_eq!(next, None, "no timer once closed");
            }
        }
    }
}
