#![forbid(unsafe_code)]
//! Fault cases K1–K3 and F11 of tests/faults/FAULTS.md: silent peers, ping
//! floods, deadlines that fall due together, and durations that overflow.

mod common;

use std::time::Duration;

use common::*;
use jsonlink_proto::testing::Pair;
use jsonlink_proto::{CloseReason, Keepalive, RequestId};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// How many pings are in `bytes`.
fn pings_in(bytes: &[u8]) -> usize {
    String::from_utf8_lossy(bytes)
        .matches(r#"{"t":"ping"}"#)
        .count()
}

#[test]
fn k2_ping_flood_never_queues_pongs_beyond_the_bound() {
    let mut p = Setup::seed(1)
        .server(|s| {
            s.max_outbound = 64 * 1024;
            s.keepalive = None;
        })
        .connected();
    let flood = b"{\"t\":\"ping\"}\n".repeat(100_000);
    let now = p.now;
    // The peer floods pings and never reads our pongs.
    for chunk in flood.chunks(16 * 1024) {
        p.server.conn.handle_input(now, chunk);
        while p.server.conn.poll_event().is_some() {}
        assert!(
            p.server.conn.outbound_len() <= 64 * 1024,
            "outbound within its bound"
        );
    }
    assert_eq!(
        take_output(&mut p.server),
        b"{\"t\":\"pong\"}\n",
        "one coalesced pong is all that goes out"
    );
    p.server.conn.send(&raw(r#""still here""#)).unwrap();
    p.client.conn.send(&raw(r#""me too""#)).unwrap();
    p.drive();
    assert_eq!(
        messages(&p.client),
        vec![r#""still here""#],
        "real frames still get through"
    );
    assert!(!p.server.conn.is_closed(), "the link stays up");
    record(
        "K2",
        "100000 pings: one coalesced pong, outbound within bound, real frames delivered",
    );
}

#[test]
fn k1_silent_peer_closes_within_interval_plus_timeout() {
    let mut p = connected();
    let start = p.now;
    p.server.reading = false;
    p.client.reading = false;
    p.advance(secs(24));
    assert!(p.client.closed().is_none(), "still up after 24 s");
    p.advance(secs(1));
    assert_eq!(p.client.closed(), Some(&CloseReason::KeepaliveTimeout));
    assert!(p.now - start <= secs(25), "within interval + timeout");
    record(
        "K1",
        format!(
            "{:?} within interval + timeout (25 s); requests fail ConnectionLost",
            p.client.closed().unwrap()
        ),
    );
}

/// A connected pair whose server never reads (so it answers no ping and
/// no request) and runs no keepalive of its own.
fn deaf_server() -> Pair {
    let mut p = Setup::seed(1).server(|s| s.keepalive = None).connected();
    p.server.reading = false;
    p
}

/// The client of `p` sends requests `1`, `2`, … due these many seconds
/// from now.
fn requests_due<const N: usize>(p: &mut Pair, due: [u64; N]) -> [RequestId; N] {
    let now = p.now;
    let mut body = 0;
    due.map(|s| {
        body += 1;
        let timeout = Some(secs(s));
        p.client
            .conn
            .request(now, &raw(&body.to_string()), timeout)
            .unwrap()
    })
}

#[test]
fn k3_everything_due_fires_in_deadline_order() {
    // A stalled loop: the ping goes out on time at +15 s (pong deadline
    // +25 s), then nothing runs until +30 s. The request due at +21 s
    // came before the keepalive deadline: it fails Timeout, and only the
    // one due after it (+50 s) ConnectionLost.
    let mut p = deaf_server();
    let t0 = p.now;
    let [a, b] = requests_due(&mut p, [21, 50]);
    p.advance(secs(15));
    assert_eq!(
        pings_in(&p.client.in_flight),
        1,
        "the ping went out on time"
    );
    assert_eq!(
        p.client.conn.poll_timeout(),
        Some(t0 + secs(21)),
        "the request is due next"
    );
    assert!(p.client.take_events().is_empty(), "nothing happened yet");
    p.jump(secs(15));
    let stalled = outcomes(&p.client.events);
    assert_eq!(
        stalled,
        [
            format!("#{} Timeout", a.0),
            format!("#{} ConnectionLost", b.0),
            "Closed(KeepaliveTimeout)".to_owned(),
        ],
        "everything due fired, in deadline order"
    );
    assert_closed_last(&p.client);

    // Closing with a drain deadline at +5 s, requests due at +2 s and
    // +8 s, nothing run until +10 s: the first times out, the drain
    // deadline ends the second.
    let mut p = deaf_server();
    let t0 = p.now;
    let [a, b] = requests_due(&mut p, [2, 8]);
    p.client.conn.close_by(t0, "bye", t0 + secs(5));
    p.jump(secs(10));
    let closing = outcomes(&p.client.events);
    assert_eq!(
        closing,
        [
            format!("#{} Timeout", a.0),
            format!("#{} ClosedLocally", b.0),
            r#"Closed(Local { reason: "bye" })"#.to_owned(),
        ],
        "the request due first timed out, the drain deadline ended the other"
    );
    assert_closed_last(&p.client);

    record(
        "K3",
        format!(
            "ping at +15 s, one handle_timeout at +30 s: {}; closing (drain +5 s), one handle_timeout at +10 s: {}; {}",
            stalled.join(", "),
            closing.join(", "),
            k3_late_ping()
        ),
    );
}

/// A suspend through the keepalive send: the late ping's pong deadline
/// counts from when it is sent. Returns the outcome text.
fn k3_late_ping() -> String {
    let mut p = deaf_server();
    let t0 = p.now;
    let [a, _] = requests_due(&mut p, [21, 50]);
    // Suspended from +0 to +30 s: the ping (due +15 s) and the request
    // (due +21 s) are both late.
    p.jump(secs(30));
    assert_eq!(
        outcomes(&p.client.events),
        [format!("#{} Timeout", a.0)],
        "the late request timed out"
    );
    assert_eq!(pings_in(&p.client.in_flight), 1, "the late ping went out");
    let pong_deadline = p.client.conn.poll_timeout().unwrap() - t0;
    assert_eq!(
        pong_deadline,
        secs(40),
        "the pong deadline counts from +30 s"
    );
    p.advance(secs(9));
    assert!(p.client.closed().is_none(), "still up at +39 s");
    // The pong arrives before +40 s: the link stays up past it.
    p.server.reading = true;
    p.drive();
    assert_eq!(pongs(&p.client), 1, "the pong arrived");
    p.advance(secs(5));
    assert!(p.client.closed().is_none(), "the link stays up");
    format!(
        "a ping due at +15 s sent at +30 s after a suspend: pong deadline +{} s, link up",
        pong_deadline.as_secs()
    )
}

#[test]
fn k3_a_late_ping_counts_its_pong_deadline_from_now() {
    let _ = k3_late_ping();
}

/// Durations whose sum with any `Instant` overflows.
const OVERFLOWING: [Duration; 3] = [
    Duration::MAX,
    Duration::from_secs(u64::MAX),
    Duration::from_secs(i64::MAX as u64),
];

#[test]
fn f11_request_timeout_that_overflows_means_no_deadline() {
    let _ = f11_requests();
}

/// Requests whose timeouts overflow: no deadline, answered or ended with
/// the connection. Returns the outcome text.
fn f11_requests() -> String {
    let mut p = deaf_server();
    p.server.reading = true;
    let now = p.now;
    let keepalive = p.client.conn.poll_timeout();
    let mut ids = Vec::new();
    for d in OVERFLOWING {
        ids.push(p.client.conn.request(now, &raw("1"), Some(d)).unwrap());
        assert_eq!(
            p.client.conn.poll_timeout(),
            keepalive,
            "no deadline: the next timer is still the keepalive's"
        );
    }
    p.drive();
    // Answered, hours later.
    p.advance(secs(3 * 3600));
    let first = requests(&p.server)[0].id;
    p.server.conn.respond(first, Ok(&raw("\"ok\""))).unwrap();
    p.drive();
    // The others end with the connection, at the close deadline.
    p.server.reading = false;
    let now = p.now;
    p.client.conn.close(now, "bye");
    p.advance(Duration::MAX);
    let got = outcomes(&p.client.events);
    assert_eq!(
        got,
        [
            format!("#{} answered", ids[0].0),
            format!("#{} ClosedLocally", ids[1].0),
            format!("#{} ClosedLocally", ids[2].0),
            r#"Closed(Local { reason: "bye" })"#.to_owned(),
        ],
        "one answered after hours, the others ended by the close"
    );
    assert_eq!(p.now - now, secs(5), "at the close deadline");
    format!(
        "as request timeouts: no deadline; {} after 3 h, {} at the {} s close deadline",
        got[0],
        got[1..3].join(", "),
        (p.now - now).as_secs()
    )
}

#[test]
fn f11_config_durations_that_overflow_mean_no_deadline() {
    let mut observed = Vec::new();
    for d in OVERFLOWING {
        let mut p = Setup::seed(1)
            .both(|cfg| {
                cfg.handshake_timeout = d;
                cfg.request_timeout = d;
                cfg.close_timeout = d;
                cfg.keepalive = Some(Keepalive {
                    interval: d,
                    timeout: d,
                    data: None,
                });
            })
            .pair();
        assert_eq!(p.next_deadline(), None, "no handshake deadline");
        p.connect();
        assert_eq!(p.next_deadline(), None, "no keepalive ping");
        let now = p.now;
        let id = p.client.conn.request(now, &raw("1"), None).unwrap();
        assert_eq!(p.next_deadline(), None, "no request deadline");
        p.drive();
        p.client.conn.close(now, "bye");
        p.drive();
        assert_eq!(p.next_deadline(), None, "no close deadline");
        p.advance(Duration::MAX);
        assert!(
            !p.client.conn.is_closed(),
            "the drain waits for the request"
        );
        let req = requests(&p.server)[0].id;
        p.server.conn.respond(req, Ok(&raw("2"))).unwrap();
        p.drive();
        let got = outcomes(&p.client.events);
        assert_eq!(
            got,
            [
                format!("#{} answered", id.0),
                r#"Closed(Local { reason: "bye" })"#.to_owned()
            ],
            "answered, then closed"
        );
        observed.push(got.join(", "));
    }
    observed.dedup();
    assert_eq!(observed.len(), 1, "the same for every overflowing duration");

    // Keepalive pings on time but never gives up on the pong; a close_by
    // deadline tightens a drain that had none.
    let mut p = Setup::seed(1)
        .client(|c| {
            c.keepalive = Some(Keepalive {
                interval: secs(1),
                timeout: Duration::MAX,
                data: None,
            });
            c.close_timeout = Duration::MAX;
        })
        .server(|s| s.keepalive = None)
        .connected();
    p.server.reading = false;
    p.advance(secs(1));
    assert_eq!(
        pings_in(&p.client.in_flight),
        1,
        "the ping went out on time"
    );
    assert_eq!(p.client.conn.poll_timeout(), None, "no pong deadline");
    let now = p.now;
    let id = p.client.conn.request(now, &raw("1"), None).unwrap();
    p.client.conn.close(now, "bye");
    assert_eq!(
        p.client.conn.poll_timeout(),
        Some(now + secs(30)),
        "only the request's deadline"
    );
    p.client.conn.close_by(now, "bye", now + secs(2));
    assert_eq!(
        p.client.conn.poll_timeout(),
        Some(now + secs(2)),
        "close_by tightens the drain"
    );
    p.advance(Duration::MAX);
    assert_eq!(
        outcomes(&p.client.events),
        [
            format!("#{} ClosedLocally", id.0),
            r#"Closed(Local { reason: "bye" })"#.to_owned()
        ],
        "the drain deadline ended the request"
    );
    record(
        "F11",
        format!(
            "Duration::MAX, u64::MAX s, i64::MAX s never panic; {}; as handshake, keepalive, request and close timeouts of both sides and a Pair advance: no deadline at all, {}; a close_by deadline still ends a drain that had none",
            f11_requests(),
            observed[0]
        ),
    );
}
