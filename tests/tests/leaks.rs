//! Nothing left behind, over real TLS on 127.0.0.1: fault case D2 of
//! tests/faults/FAULTS.md (clients and servers dropped without close or
//! shutdown; close_notify during the handshake) and every task ending once
//! its handles are dropped, counted by a runtime that counts live tasks.
//!
//! D2 reads process-wide gauges (open fds, CPU time), so it runs with
//! [`Gauges::Exclusive`]: no other test of this binary runs meanwhile.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonlink_rt::{CloseCode, CloseReason, Error, Reconnect};
use jsonlink_tests::adversary::closed_by_peer;
use jsonlink_tests::faults::record;
use jsonlink_tests::fixtures::{Fixture, add_handler, assert_add_answered, bind, connect};
use jsonlink_tests::gauges::assert_fds_back_to;
use jsonlink_tests::runtimes::{Gauges, on_tokio};
use jsonlink_tests::waits::{SETTLE, authenticated, closed, error_event};
use jsonlink_tests::{CountingRuntime, RawTlsClient, cpu_time, open_fds};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A TLS alert record: close_notify (warning), as a peer would send it
/// before or instead of a ClientHello.
const CLOSE_NOTIFY_RECORD: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00];

/// Handshake deadline of the server the close_notify cases run against.
const D2_HANDSHAKE: Duration = Duration::from_millis(500);

#[test]
fn d2_dropped_clients_and_servers_leak_nothing_and_close_notify_during_the_handshake_is_harmless() {
    on_tokio(Gauges::Exclusive, |rt| async move {
        let counting = CountingRuntime::new(rt);
        let fx = Fixture::new(counting.clone());
        let fds = open_fds().expect("fd count");

        // A client dropped without close.
        let server = bind(fx.server()).await;
        add_handler(&server);
        let addr = server.local_addr();
        let client = fx.connected_client(&server).await;
        assert_add_answered(&client, 1, 2).await;
        authenticated(&server).await;
        drop(client);
        closed(&server).await;
        // Only the accept loop is left, and only the listener's socket.
        counting.until_live(1).await;
        assert_fds_back_to(fds + 1, SETTLE).await;

        // A server dropped without shutdown, with a client connected.
        let client = connect(fx.client(addr).reconnect(Reconnect::Never)).await;
        authenticated(&server).await;
        drop(server);
        let (_, reason) = closed(&client).await;
        assert_eq!(
            reason.code(),
            CloseCode::Normal,
            "a dropped server closes its links normally: {reason:?}"
        );
        drop(client);
        counting.until_live(0).await;
        assert_fds_back_to(fds, SETTLE).await;

        // close_notify during the handshake, three ways. Whatever the TLS
        // layer makes of it, each connection ends by the handshake deadline
        // at the latest, without burning CPU meanwhile.
        let server = bind(fx.server().handshake_timeout(D2_HANDSHAKE)).await;
        add_handler(&server);
        let addr = server.local_addr();
        let (wall, cpu) = (Instant::now(), cpu_time().expect("cpu time"));
        // 1. Instead of a ClientHello.
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let first = tcp.local_addr().expect("addr");
        tcp.write_all(&CLOSE_NOTIFY_RECORD).await.expect("write");
        closed_by_peer(&mut tcp).await;
        drop(tcp);
        // 2. Right after a ClientHello, in the middle of the TLS handshake.
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let second = tcp.local_addr().expect("addr");
        let mut tls = rustls::ClientConnection::new(fx.client_tls(), fx.pki.server_name())
            .expect("client connection");
        let mut hello = Vec::new();
        tls.write_tls(&mut hello).expect("ClientHello");
        tls.send_close_notify();
        tls.write_tls(&mut hello).expect("close_notify");
        tcp.write_all(&hello).await.expect("write");
        closed_by_peer(&mut tcp).await;
        // 3. After TLS, during the jsonlink handshake.
        let mut raw = RawTlsClient::connect(addr, fx.client_tls())
            .await
            .expect("TLS");
        let third = raw.local_addr().expect("addr");
        raw.shutdown().await.expect("close_notify");
        let (_, ended) = raw.read_to_end(SETTLE, 1 << 20).await;
        assert!(ended, "the server closes after close_notify");

        let mut errors = HashMap::new();
        while errors.len() < 3 {
            let (peer, error) = error_event(&server).await;
            errors.insert(peer.expect("peer address"), error);
        }
        let (wall, cpu) = (wall.elapsed(), cpu_time().expect("cpu time") - cpu);
        // Before a ClientHello, rustls ignores the (warning) alert: the
        // connection waits for the deadline. After one, it fails the
        // handshake at once. After TLS, the jsonlink handshake sees EOF.
        assert!(
            matches!(errors[&first], Error::HandshakeTimeout),
            "close_notify instead of a ClientHello waits for the deadline: {errors:?}"
        );
        assert!(
            matches!(&errors[&second], Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData),
            "close_notify after a ClientHello fails TLS: {errors:?}"
        );
        assert!(
            matches!(&errors[&third], Error::Handshake(r) if *r == CloseReason::UnexpectedEof),
            "close_notify after TLS is an EOF in the handshake: {errors:?}"
        );
        // A task spinning meanwhile would have used about `wall` of CPU.
        assert!(cpu < wall / 2, "no busy loop: {cpu:?} of CPU in {wall:?}");
        // No panic and no busy loop: every connection task has ended (only
        // the accept loop is alive), none is counted, and the server serves.
        counting.until_live(1).await;
        assert_eq!(server.stats().connections, 0, "no connection is counted");
        let client = fx.connected_client(&server).await;
        assert_add_answered(&client, 2, 2).await;
        drop(client);
        drop(server);
        drop((tcp, raw));
        counting.until_live(0).await;
        assert_fds_back_to(fds, SETTLE).await;
        record(
            "D2",
            format!(
                "dropped Client and dropped Server: 0 tasks left, fds back to baseline; \
                 close_notify instead of a ClientHello / after a ClientHello / after TLS: \
                 {:?} / Io(InvalidData) / {:?} events, no CPU burnt meanwhile, no task left but \
                 the accept loop, 0 connections, the server still serves",
                errors[&first], errors[&third]
            ),
        );
    });
}

#[test]
fn dropping_client_and_server_without_shutdown_ends_every_task() {
    on_tokio(Gauges::Shared, |rt| async move {
        let counting = CountingRuntime::new(rt);
        let fx = Fixture::new(counting.clone());
        let server = fx.running_server().await;
        let client = fx.connected_client(&server).await;
        assert_add_answered(&client, 1, 2).await;
        assert!(
            counting.live() >= 3,
            "the accept loop and a driver per side are running: {}",
            counting.live()
        );
        drop(client);
        drop(server);
        counting.until_live(0).await;
    });
}
