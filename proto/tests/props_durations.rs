#![forbid(unsafe_code)]
#![allow(clippy::disallowed_methods)] // the test takes one real Instant as the base of virtual time
//! F11 as a property (proptest): arbitrary durations in every public entry
//! that takes one never panic and give sane deadlines.

mod common;

use std::time::{Duration, Instant};

use common::*;
use jsonlink_proto::Keepalive;
use jsonlink_proto::testing::Who;
use proptest::prelude::*;

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
        let mut p = Setup::seed(10)
            .both(|c| {
                c.handshake_timeout = handshake.get(edge);
                c.request_timeout = request_timeout.get(edge);
                c.close_timeout = close_timeout.get(edge);
                // At least a second between pings, so `Pair::advance` stays
                // cheap (the timer model of props_timers.rs covers shorter
                // intervals).
                c.keepalive = keepalive.map(|(i, t)| Keepalive {
                    interval: i.get(edge).max(Duration::from_secs(1)),
                    timeout: t.get(edge),
                    data: None,
                });
            })
            .pair_at(t0);
        prop_assert_eq!(
            p.client.conn.poll_timeout(),
            t0.checked_add(handshake.get(edge)),
            "the handshake deadline, if it can be represented"
        );
        p.connect();
        let keepalive_at = keepalive
            .and_then(|(i, _)| t0.checked_add(i.get(edge).max(Duration::from_secs(1))));
        prop_assert_eq!(
            p.client.conn.poll_timeout(),
            keepalive_at,
            "the first ping's deadline, if it can be represented"
        );
        let mut ledger = Ledger::default();
        for op in ops {
            let now = p.now;
            match op {
                DurationOp::Request(w, d) => {
                    let c = &mut p.peer(w).conn;
                    let before = c.poll_timeout();
                    let timeout = d.map_or(request_timeout.get(edge), |d| d.get(edge));
                    if let Ok(id) = c.request(now, &raw("1"), d.map(|d| d.get(edge))) {
                        ledger.issue(w, id);
                        let want = min_deadline(before, now.checked_add(timeout));
                        prop_assert_eq!(c.poll_timeout(), want, "now + timeout, if it can be represented");
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
                    for id in request_ids(peer) {
                        let _ = peer.conn.respond(id, Ok(&raw("2")));
                    }
                }
                DurationOp::Ping(w) => {
                    let _ = p.peer(w).conn.ping(None);
                }
            }
            p.drive();
            ledger.tally(&p)?;
            if matches!(op, DurationOp::Advance(_) | DurationOp::Jump(_)) {
                // Whatever was due at `now` has fired.
                prop_assert!(p.next_deadline().is_none_or(|t| t >= p.now), "no deadline left in the past");
            }
        }
        // Wind down: a drain deadline of now ends both sides at once.
        let now = p.now;
        p.client.conn.close_by(now, "end", now);
        p.server.conn.close_by(now, "end", now);
        p.jump(Duration::ZERO);
        ledger.tally(&p)?;
        prop_assert!(p.client.conn.is_closed() && p.server.conn.is_closed(), "both ended");
        assert_closed_last(&p.client);
        assert_closed_last(&p.server);
        ledger.each_resolved_exactly_once()?;
    }
}
