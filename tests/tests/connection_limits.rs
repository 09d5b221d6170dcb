//! The server's connection limits, over real TLS on 127.0.0.1: fault case
//! L1 of tests/faults/FAULTS.md (the connection past `max_connections` is
//! refused cleanly, and counts return to baseline through churn), slots
//! released before a failure is reported, and the per-IP limit.

use std::collections::VecDeque;

use jsonlink_rt::{Client, Error, Event, EventKind, Reconnect, Server};
use jsonlink_tests::RawTlsClient;
use jsonlink_tests::adversary::closed_by_peer;
use jsonlink_tests::faults::record;
use jsonlink_tests::fixtures::{Fixture, add_handler, assert_add_answered, bind};
use jsonlink_tests::runtimes::{Gauges, on_tokio};
use jsonlink_tests::waits::{SETTLE, authenticated, closed, error_event, eventually};
use serde_json::json;
use tokio::net::TcpStream;

/// A client of `server` that connects once, never reconnecting.
async fn connect_once(fx: &Fixture, server: &Server) -> Result<Client, Error> {
    fx.client(server.local_addr())
        .reconnect(Reconnect::Never)
        .connect()
        .await
}

/// The server's next `Error` event is a refusal by `limit`.
async fn assert_refused_by(server: &Server, limit: &str) {
    loop {
        match server.wait_for(EventKind::Error).await {
            Some(Event::Error {
                error: Error::Refused { limit: by },
                ..
            }) => {
                assert_eq!(by, limit, "refused by the {limit} limit");
                return;
            }
            Some(_) => continue,
            None => panic!("the event stream ended before a refusal by {limit}"),
        }
    }
}

// ------------------------------------------------------------------- L1

#[test]
fn l1_the_connection_past_the_limit_is_refused_cleanly_and_counts_return_to_baseline() {
    const MAX: usize = 3;
    const ROUNDS: usize = 10;
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = bind(fx.server().max_connections(MAX)).await;
        add_handler(&server);
        let addr = server.local_addr();
        let mut clients = VecDeque::new();
        for _ in 0..MAX {
            clients.push_back(connect_once(&fx, &server).await.expect("connect"));
            authenticated(&server).await;
        }

        // Limit + 1: the client's attempt fails (the socket is closed under
        // TLS) and the server reports the limit.
        let extra = connect_once(&fx, &server).await;
        assert!(
            matches!(extra, Err(Error::Io(_))),
            "the connection past the limit fails: {extra:?}"
        );
        let (_, refused) = error_event(&server).await;
        assert!(
            matches!(
                refused,
                Error::Refused {
                    limit: "max_connections"
                }
            ),
            "the server reports the limit: {refused:?}"
        );
        // A raw socket past the limit is closed at once too.
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let local = tcp.local_addr().expect("addr");
        let sent = closed_by_peer(&mut tcp).await;
        assert!(sent.is_empty(), "nothing is sent to a refused socket");
        let (peer, e) = error_event(&server).await;
        assert_eq!(peer, Some(local), "the refusal names the raw socket");
        assert!(matches!(e, Error::Refused { .. }), "{e:?}");
        // The others are unaffected.
        for c in &clients {
            assert_add_answered(c, 1, 1).await;
        }
        assert_eq!(
            server.stats().connections,
            MAX as u64,
            "the limit's worth connected"
        );

        // Churn: links closed gracefully or dropped, connections that die
        // before TLS or before authentication, replacements.
        for round in 0..ROUNDS {
            let old = clients.pop_front().expect("a client");
            if round % 2 == 0 {
                old.close().await;
            } else {
                drop(old);
            }
            closed(&server).await;
            assert_eq!(
                server.stats().connections,
                MAX as u64 - 1,
                "a closed link frees its slot"
            );
            match round % 3 {
                0 => {
                    let tcp = TcpStream::connect(addr).await.expect("connect");
                    let local = tcp.local_addr().expect("addr");
                    drop(tcp);
                    let (peer, e) = error_event(&server).await;
                    assert_eq!(peer, Some(local), "the error names the connection");
                    assert!(matches!(e, Error::Io(_)), "dropped before TLS: {e:?}");
                }
                1 => {
                    let mut raw = RawTlsClient::connect(addr, fx.client_tls())
                        .await
                        .expect("TLS");
                    let local = raw.local_addr().expect("addr");
                    raw.shutdown().await.expect("close_notify");
                    drop(raw);
                    let (peer, e) = error_event(&server).await;
                    assert_eq!(peer, Some(local), "the error names the connection");
                    assert!(
                        matches!(e, Error::Handshake(_)),
                        "closed before authentication: {e:?}"
                    );
                }
                _ => {}
            }
            // The pre-auth connection's slot is released when its task ends.
            assert!(
                eventually(SETTLE, || server.stats().connections == MAX as u64 - 1).await,
                "{:?}",
                server.stats()
            );
            clients.push_back(
                connect_once(&fx, &server)
                    .await
                    .expect("a freed slot is usable"),
            );
            authenticated(&server).await;
            assert_eq!(
                server.stats().connections,
                MAX as u64,
                "the freed slot is taken again"
            );
            assert_eq!(server.links().len(), MAX, "every admitted link is listed");
        }

        for c in clients.drain(..) {
            c.close().await;
        }
        for _ in 0..MAX {
            closed(&server).await;
        }
        let stats = server.stats();
        assert_eq!(stats.connections, 0, "no connection left");
        assert!(server.links().is_empty(), "no link left");
        assert_eq!(stats.connections_refused, 2, "two refusals counted");
        assert_eq!(
            stats.authenticated,
            (MAX + ROUNDS) as u64,
            "every admitted client authenticated"
        );
        record(
            "L1",
            format!(
                "{refused:?} event for connection limit + 1 (the client's connect failed with Io, \
                 a raw socket was closed at once); the {MAX} others served; after {ROUNDS} churn \
                 rounds connections = {MAX}, after closing all = 0"
            ),
        );
    });
}

/// Known rt-core bug, reported to the rt-core owners: when TLS
/// fails or times out, `serve()` in rt-core/src/server.rs emits
/// `Event::Error` *before* its `ServerHooks` are dropped, so the slot is
/// still counted when the event is seen (in ~93 of 100 tries on 2 cores).
/// Authenticated links and post-TLS failures release first (the driver's
/// `finish`), as the driver docs promise. With `max_connections(1)` a client
/// connecting right after such an event must not be refused (regression:
/// `serve()` used to report TLS failures before releasing the slot).
#[test]
fn l1_a_connection_that_fails_tls_is_released_before_it_is_reported() {
    const TRIES: usize = 20;
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = bind(fx.server().max_connections(1)).await;
        let addr = server.local_addr();
        for _ in 0..TRIES {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            drop(tcp);
            let (_, e) = error_event(&server).await;
            assert!(matches!(e, Error::Io(_)), "{e:?}");
            assert_eq!(
                server.stats().connections,
                0,
                "the failed connection is still counted when its Error is seen"
            );
            let client = connect_once(&fx, &server)
                .await
                .expect("the only slot is free again");
            authenticated(&server).await;
            client.close().await;
            closed(&server).await;
        }
    });
}

#[test]
fn the_connection_limit_refuses_the_extra_one_and_counts_return_to_baseline() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = bind(fx.server().max_connections(1).consume_events(true)).await;
        let first = fx.connected_client(&server).await;
        authenticated(&server).await;
        let extra = fx.client(server.local_addr()).connect().await;
        assert!(extra.is_err(), "the extra connection fails: {extra:?}");
        assert_refused_by(&server, "max_connections").await;
        // The first link is unaffected.
        first.send(&json!({"still": "here"})).await.expect("send");
        assert!(
            matches!(
                server.wait_for(EventKind::Message).await,
                Some(Event::Message(_))
            ),
            "the first link still delivers"
        );
        drop(first);
        closed(&server).await;
        let stats = server.stats();
        assert_eq!(stats.connections, 0, "no connection left");
        assert_eq!(stats.connections_refused, 1, "one refusal counted");
        assert!(server.links().is_empty(), "no link left");
    });
}

#[test]
fn per_ip_limit_refuses_the_extra_connection_from_one_address() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = bind(fx.server().max_connections_per_ip(Some(2))).await;
        let a = connect_once(&fx, &server).await.expect("first connection");
        let b = connect_once(&fx, &server).await.expect("second connection");
        let c = connect_once(&fx, &server).await;
        assert!(
            c.is_err(),
            "third connection from 127.0.0.1 must be refused"
        );
        assert_refused_by(&server, "max_connections_per_ip").await;
        // The two admitted links still work.
        add_handler(&server);
        for c in [&a, &b] {
            assert_add_answered(c, 3, 4).await;
        }
        assert!(b.is_connected(), "an admitted client stays connected");
        assert_eq!(server.stats().connections_refused, 1, "one refusal counted");
        a.close().await;
        b.close().await;
    });
}
