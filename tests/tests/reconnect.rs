//! A client across outages, over real TLS on 127.0.0.1: fault cases C1–C4
//! of tests/faults/FAULTS.md (a server restart, two quick drops, a long
//! outage, many clients and a close during backoff), and the reconnect
//! behaviour around them (requests while down, wait mode).
//!
//! Each fault test carries its case ID in its name, asserts the exact
//! outcome and records it for the fault table (`tests/faults/expected.md`).
//! The only waits on time are the backoff under test and `eventually` on
//! counters that have no event.

use std::time::{Duration, Instant};

use futures_lite::future::zip;
use futures_util::future::join_all;
use jsonlink_proto::Side;
use jsonlink_rt::{Client, Error, Event, EventKind, Reconnect};
use jsonlink_tests::RawTlsServer;
use jsonlink_tests::faults::record;
use jsonlink_tests::fixtures::{
    Fixture, add_handler, assert_add_answered, backoff, bind, closed_port, hold_requests,
    is_graceful_shutdown, localhost, ms,
};
use jsonlink_tests::runtimes::{Gauges, LIMIT, on_tokio};
use jsonlink_tests::waits::{SETTLE, authenticated, closed, eventually, rebind, reconnect_attempt};
use serde_json::{Value, json};

fn is_refused(e: &Error) -> bool {
    matches!(e, Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused)
}

// ------------------------------------------------------------------- C1

#[test]
fn c1_after_a_server_restart_the_client_reconnects_within_the_jitter_envelope_and_replays_nothing()
{
    const IN_FLIGHT: usize = 3;
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt.clone());
        let policy = backoff(ms(50), ms(400));
        let server = bind(fx.server()).await;
        let addr = server.local_addr();
        let held = hold_requests(server.handlers());
        let client = fx.client(addr).reconnect(policy).start();
        client.wait_connected().await.expect("connected");
        authenticated(&server).await;

        // Requests in flight when the server goes away fail with
        // ConnectionLost (the handler still holds them: no answer races the
        // close).
        let in_flight = join_all((0..IN_FLIGHT).map(|i| {
            let client = client.clone();
            async move {
                client
                    .request::<Value, _>(&json!({"op": "hold", "i": i}))
                    .await
            }
        }));
        let stop = async {
            let mut requests = Vec::new();
            for _ in 0..IN_FLIGHT {
                requests.push(held.next().await);
            }
            server.shutdown(rt.now() + ms(100)).await;
            requests
        };
        let (results, requests) = zip(in_flight, stop).await;
        for r in &results {
            assert!(
                matches!(r, Err(Error::ConnectionLost)),
                "a request in flight at the restart fails ConnectionLost: {r:?}"
            );
        }
        drop(requests);
        drop(server);

        // Closed, attempts within the envelope (refused once reported), and
        // the server back on the same port after the second attempt. The
        // client starts reconnecting on the server's going-away notice, so
        // the old link's Closed (at the drain deadline) may come before or
        // after the new link's Authenticated.
        let mut close_reason = None;
        let mut authenticated = 0;
        let mut attempts = Vec::new();
        let mut errors = Vec::new();
        let mut restarted = None;
        while close_reason.is_none() || authenticated < 2 {
            match client.next_event().await.expect("event stream") {
                Event::Authenticated { .. } => authenticated += 1,
                Event::Closed { reason, .. } => close_reason = Some(reason),
                Event::ReconnectAttempt { attempt, delay } => {
                    attempts.push((attempt, delay));
                    if attempt == 2 {
                        let server = rebind(|| fx.server(), addr).await;
                        add_handler(&server);
                        let held = hold_requests(server.handlers());
                        restarted = Some((server, held));
                    }
                }
                Event::Error { error, .. } => errors.push(error),
                other => panic!("unexpected {other:?}"),
            }
        }
        let reason = close_reason.expect("Closed before reconnecting");
        assert!(
            is_graceful_shutdown(&reason),
            "the old link closes as shut down: {reason:?}"
        );
        assert!(attempts.len() >= 2, "two attempts at least: {attempts:?}");
        for (i, (attempt, delay)) in attempts.iter().enumerate() {
            assert_eq!(*attempt as usize, i + 1, "attempts count up: {attempts:?}");
            let ceiling = policy.ceiling(attempt - 1).expect("reconnects");
            assert!(
                *delay <= ceiling,
                "attempt {attempt}: {delay:?} over the envelope {ceiling:?}"
            );
        }
        assert_eq!(errors.len(), 1, "one error for the outage: {errors:?}");
        assert!(is_refused(&errors[0]), "the error is refused: {errors:?}");

        // Nothing was replayed to the restarted server.
        let (server, held) = restarted.expect("restarted");
        assert_add_answered(&client, 1, 2).await;
        assert_eq!(held.count(), 0, "no held request was replayed");
        assert_eq!(
            server.stats().requests_in,
            1,
            "the restarted server saw only the new request"
        );
        record(
            "C1",
            format!(
                "Closed(Remote normal), ReconnectAttempt 1..n each within Reconnect::ceiling(n-1), \
                 connection refused reported once, Authenticated again; {IN_FLIGHT} in-flight \
                 requests failed ConnectionLost; 0 replayed to the restarted server"
            ),
        );
    });
}

#[test]
fn the_client_reconnects_after_a_server_restart() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt.clone());
        let server = bind(fx.server().close_timeout(ms(100))).await;
        let addr = server.local_addr();
        let held = hold_requests(server.handlers());
        let client = fx.client(addr).reconnect(backoff(ms(20), ms(200))).start();
        client.wait_connected().await.expect("connected");
        authenticated(&server).await;

        // A request in flight when the server goes away fails with
        // ConnectionLost and is not replayed.
        let in_flight = {
            let client = client.clone();
            async move { client.request::<Value, _>(&json!({"op": "hold"})).await }
        };
        let restart = held.hold_next_during(|| server.shutdown(rt.now() + ms(100)));
        let (r, ()) = zip(in_flight, restart).await;
        assert!(
            matches!(r, Err(Error::ConnectionLost | Error::HandlerDropped(_))),
            "a request in flight at the restart fails: {r:?}"
        );
        closed(&client).await;
        drop(server);

        // While the server is down: NotConnected at once, and reconnect
        // attempts within the envelope.
        let r = client.request::<Value, _>(&json!({"op": "x"})).await;
        assert!(
            matches!(r, Err(Error::NotConnected)),
            "a request while down fails NotConnected: {r:?}"
        );
        let (_, delay) = reconnect_attempt(&client).await;
        assert!(
            delay <= ms(200),
            "the backoff stays under its cap: {delay:?}"
        );

        // The server comes back on the same port.
        let server = rebind(|| fx.server(), addr).await;
        add_handler(&server);
        authenticated(&client).await;
        assert_add_answered(&client, 1, 2).await;
        assert_eq!(
            server.stats().requests_in,
            1,
            "nothing was replayed to the new server"
        );
        let mut errors = 0;
        while let Some(ev) = client.try_next_event() {
            if let Event::Error { .. } = ev {
                errors += 1;
            }
        }
        assert!(
            errors <= 1,
            "connection refused is reported once per outage: {errors} error events"
        );
    });
}

// ------------------------------------------------------------------- C2

#[test]
fn c2_two_drops_within_one_reconnect_interval_do_not_stop_the_client() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let listener = tokio::net::TcpListener::bind(localhost())
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = fx.client(addr).reconnect(backoff(ms(50), ms(200))).start();

        // A server that authenticates the client and hangs up at once, twice
        // in a row (the second drop comes within one backoff of the first).
        for _ in 0..2 {
            let mut peer = RawTlsServer::accept(&listener, fx.server_tls())
                .await
                .expect("accept");
            peer.handshake(fx.adversary_config("flicker"), Side::Server, LIMIT)
                .await
                .expect("handshake");
            peer.shutdown().await.expect("close_notify");
            let (_, ended) = peer.read_to_end(SETTLE, 1 << 20).await;
            assert!(ended, "the client closes its side after the drop");
        }
        drop(listener);
        // Then a server that stays up.
        let server = rebind(|| fx.server(), addr).await;
        add_handler(&server);

        let mut sequence = Vec::new();
        let mut authenticated_links = 0;
        while authenticated_links < 3 {
            let ev = client.next_event().await.expect("event stream");
            match &ev {
                Event::Authenticated { .. } => authenticated_links += 1,
                Event::Closed { .. } | Event::ReconnectAttempt { .. } | Event::Error { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
            if !matches!(ev, Event::Error { .. }) {
                sequence.push(ev.kind());
            }
        }
        // Refused attempts while the last server starts may add attempts.
        sequence.dedup();
        use EventKind::{Authenticated, Closed, ReconnectAttempt};
        assert_eq!(
            sequence,
            [
                Authenticated,
                Closed,
                ReconnectAttempt,
                Authenticated,
                Closed,
                ReconnectAttempt,
                Authenticated
            ],
            "the client reconnects after each drop"
        );
        assert!(client.is_connected(), "the client ends connected");
        assert_add_answered(&client, 2, 2).await;
        assert_eq!(
            server.stats().authenticated,
            1,
            "one link to the server that stayed up"
        );
        record(
            "C2",
            "authenticated and dropped twice in quick succession, the client kept reconnecting \
             (Authenticated, Closed, ReconnectAttempt ×2, then Authenticated) and ended \
             connected; a request was answered",
        );
    });
}

// ------------------------------------------------------------------- C3

/// Reads a client's events until its `attempts`-th reconnect attempt since
/// the last authentication; the errors reported meanwhile. Checks on the
/// way that commands fail at once with NotConnected.
async fn errors_until_attempt(client: &Client, attempts: u32) -> Vec<Error> {
    let mut errors = Vec::new();
    loop {
        match client.next_event().await.expect("event stream") {
            Event::ReconnectAttempt { attempt, .. } => {
                let t = Instant::now();
                let send = client.send(&json!({"op": "note"})).await;
                let request = client.request::<Value, _>(&json!({"op": "add"})).await;
                let ping = client.ping(Some(&json!({"p": 1}))).await;
                for r in [send, request.map(drop), ping] {
                    assert!(
                        matches!(r, Err(Error::NotConnected)),
                        "a command while down fails NotConnected: {r:?}"
                    );
                }
                // At once: the default request timeout is 30 s.
                assert!(
                    t.elapsed() < Duration::from_secs(3),
                    "commands while down fail at once: {:?}",
                    t.elapsed()
                );
                if attempt >= attempts {
                    return errors;
                }
            }
            Event::Error { error, .. } => errors.push(error),
            // The end of the previous link.
            Event::Authenticated { .. } | Event::Closed { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Asserts an outage's errors are one connection refused.
fn assert_refused_once(errors: &[Error]) {
    assert_eq!(errors.len(), 1, "one error per outage: {errors:?}");
    assert!(is_refused(&errors[0]), "the error is refused: {errors:?}");
}

#[test]
fn c3_a_long_outage_reports_refused_once_fails_fast_or_waits_as_configured_and_stays_bounded() {
    const ATTEMPTS: u32 = 20;
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt.clone());

        // Fail-fast mode (the default), through two outages.
        let addr = closed_port();
        let client = fx.client(addr).reconnect(Reconnect::Fixed(ms(10))).start();
        assert_refused_once(&errors_until_attempt(&client, ATTEMPTS).await);
        let server = fx.server().bind(addr).await.expect("bind");
        add_handler(&server);
        client
            .wait_connected()
            .await
            .expect("connected after the outage");
        let stats = server.stats();
        assert_eq!(
            (stats.messages_in, stats.requests_in),
            (0, 0),
            "nothing that failed with NotConnected was queued for later"
        );
        assert_add_answered(&client, 1, 1).await;
        // The second outage is reported once more.
        server.shutdown(rt.now()).await;
        drop(server);
        assert_refused_once(&errors_until_attempt(&client, ATTEMPTS).await);
        client.close().await;

        // Wait mode: commands wait for a link up to their own deadline.
        let addr = closed_port();
        let waiting = fx
            .client(addr)
            .wait_for_reconnect(true)
            .request_timeout(ms(200))
            .reconnect(Reconnect::Fixed(ms(10)))
            .start();
        let t = Instant::now();
        let r = waiting
            .request_with_timeout::<Value, _>(&json!({"op": "add"}), ms(150))
            .await;
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        assert!(
            t.elapsed() >= ms(150),
            "a waiting request fails at its own deadline: {:?}",
            t.elapsed()
        );
        let t = Instant::now();
        let r = waiting.send(&json!({"op": "note"})).await;
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        assert!(
            t.elapsed() >= ms(200),
            "a waiting send fails at the request timeout: {:?}",
            t.elapsed()
        );
        while waiting.try_next_event().is_some() {}
        let add = json!({"op": "add", "a": 20, "b": 22});
        let request = waiting.request_with_timeout::<i64, _>(&add, Duration::from_secs(10));
        let start_server = async {
            // The request is already waiting; the client retries once more.
            waiting.wait_for(EventKind::ReconnectAttempt).await;
            let server = fx.server().bind(addr).await.expect("bind");
            add_handler(&server);
            server
        };
        let (r, server) = zip(request, start_server).await;
        assert_eq!(
            r.expect("a waiting request succeeds after the reconnect"),
            42,
            "the waiting request's answer"
        );
        assert_eq!(
            server.stats().requests_in,
            1,
            "only the waiting request reached the server"
        );
        waiting.close().await;

        // An outage nobody watches: the event stream keeps its capacity and
        // counts what it drops.
        let unwatched = fx
            .client(closed_port())
            .event_capacity(4)
            .reconnect(Reconnect::Fixed(ms(1)))
            .start();
        assert!(
            eventually(SETTLE, || unwatched.stats().connections_total >= 100).await,
            "the unwatched client keeps retrying"
        );
        let dropped = unwatched.stats().dropped_events;
        let mut kept = 0;
        while unwatched.try_next_event().is_some() {
            kept += 1;
        }
        assert!(
            kept <= 4,
            "the stream keeps at most its capacity: {kept} kept"
        );
        assert!(dropped >= 90, "the stream counts what it drops: {dropped}");
        unwatched.close().await;

        record(
            "C3",
            format!(
                "connection refused reported once per outage ({ATTEMPTS} attempts each, two \
                 outages); send/request/ping NotConnected at once, nothing queued; wait mode: \
                 Timeout at the caller's own deadline, success after the reconnect; an unread \
                 event stream stays at its capacity (4) and counts the rest as dropped"
            ),
        );
    });
}

#[test]
fn in_wait_mode_requests_wait_for_the_reconnect_up_to_their_timeout() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let addr = closed_port();
        let client = fx
            .client(addr)
            .wait_for_reconnect(true)
            .reconnect(Reconnect::Fixed(ms(20)))
            .start();
        let r = client
            .request_with_timeout::<Value, _>(&json!({"op": "x"}), ms(100))
            .await;
        assert!(
            matches!(r, Err(Error::Timeout)),
            "with no server the request fails at its own deadline: {r:?}"
        );
        match client.wait_for(EventKind::Error).await {
            Some(Event::Error { error, .. }) => assert!(
                is_refused(&error),
                "the outage is reported as refused: {error:?}"
            ),
            other => panic!("expected an Error event, got {other:?}"),
        }
        // A request made while down succeeds once the server is up.
        let body = json!({"op": "add", "a": 1, "b": 1});
        let request = client.request_with_timeout::<i64, _>(&body, Duration::from_secs(10));
        let start_server = async {
            // Wait until the client has retried at least once more.
            client.wait_for(EventKind::ReconnectAttempt).await;
            let server = rebind(|| fx.server(), addr).await;
            add_handler(&server);
            server
        };
        let (r, _server) = zip(request, start_server).await;
        assert_eq!(
            r.expect("the waiting request is answered"),
            2,
            "the waiting request's answer"
        );
        assert_eq!(
            client.stats().connections,
            1,
            "exactly one link after the outage"
        );
    });
}

// ------------------------------------------------------------------- C4

#[test]
fn c4_many_clients_spread_their_reconnects_and_close_during_backoff_stops_at_once() {
    const CLIENTS: usize = 20;
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt.clone());
        let policy = backoff(ms(400), Duration::from_secs(2));
        let server = bind(fx.server()).await;
        let addr = server.local_addr();
        let clients: Vec<Client> = (0..CLIENTS)
            .map(|_| fx.client(addr).reconnect(policy).start())
            .collect();
        for c in &clients {
            c.wait_connected().await.expect("connected");
        }

        server.shutdown(rt.now() + ms(100)).await;
        drop(server);
        let mut delays = Vec::new();
        for c in &clients {
            let (attempt, delay) = reconnect_attempt(c).await;
            assert_eq!(attempt, 1, "the first reconnect attempt");
            delays.push(delay);
        }
        let ceiling = policy.ceiling(0).expect("reconnects");
        assert!(
            delays.iter().all(|d| *d <= ceiling),
            "every first delay within the envelope: {delays:?}"
        );
        let min = delays.iter().min().copied().unwrap_or_default();
        let max = delays.iter().max().copied().unwrap_or_default();
        // 20 uniform draws over 400 ms span less than 40 ms with
        // probability ~1e-18.
        assert!(max - min >= ceiling / 10, "not spread: {delays:?}");

        let server = rebind(|| fx.server(), addr).await;
        for c in &clients {
            c.wait_connected().await.expect("reconnected");
        }
        assert_eq!(
            server.stats().authenticated,
            CLIENTS as u64,
            "every client reconnected"
        );
        drop(clients);

        // close() during a long backoff stops the client at once; everyone
        // waiting for a link gets Closed.
        let backoff = Duration::from_secs(60);
        let client = fx
            .client(closed_port())
            .wait_for_reconnect(true)
            .reconnect(Reconnect::Fixed(backoff))
            .start();
        client.wait_for(EventKind::ReconnectAttempt).await;
        let x = json!({"op": "x"});
        let waiters = zip(
            client.request_with_timeout::<Value, _>(&x, backoff),
            zip(client.wait_connected(), client.send(&x)),
        );
        let close = async {
            let t = Instant::now();
            client.close().await;
            t.elapsed()
        };
        let ((request, (wait, send)), took) = zip(waiters, close).await;
        assert!(matches!(request, Err(Error::Closed)), "{request:?}");
        assert!(matches!(wait, Err(Error::Closed)), "{wait:?}");
        assert!(matches!(send, Err(Error::Closed)), "{send:?}");
        assert!(took < backoff / 10, "close took {took:?}");
        assert!(client.is_closed(), "the client is closed");
        let after = client.request::<Value, _>(&json!({"op": "x"})).await;
        assert!(matches!(after, Err(Error::Closed)), "{after:?}");
        record(
            "C4",
            format!(
                "{CLIENTS} clients: first delays all within Reconnect::ceiling(0) and spread \
                 across it, all reconnected; close() during a 60 s backoff returned at once, \
                 request/wait_connected/send waiters got Closed"
            ),
        );
    });
}

#[test]
fn close_during_backoff_stops_at_once_and_waiters_get_closed() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt.clone());
        let client = fx
            .client(closed_port())
            .wait_for_reconnect(true)
            .reconnect(Reconnect::Fixed(Duration::from_secs(60)))
            .start();
        client.wait_for(EventKind::ReconnectAttempt).await;
        let waiter = {
            let client = client.clone();
            async move {
                client
                    .request_with_timeout::<Value, _>(&json!({}), Duration::from_secs(60))
                    .await
            }
        };
        let close = async {
            let start = rt.now();
            client.close().await;
            start.elapsed()
        };
        let (r, took) = zip(waiter, close).await;
        assert!(
            matches!(r, Err(Error::Closed)),
            "a request waiting for a link gets Closed: {r:?}"
        );
        assert!(took < Duration::from_secs(5), "close took {took:?}");
        assert!(client.is_closed(), "the client is closed");
    });
}
