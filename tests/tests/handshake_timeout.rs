//! Fault case H2 of tests/faults/FAULTS.md, over real TLS on 127.0.0.1:
//! peers that never finish the handshake (silent after TCP, silent after
//! TLS, trickling one byte at a time) are closed at the server's handshake
//! deadline, and a thousand of them do not delay a good client.
//!
//! The waits on time are the behaviour under test (the deadline, the
//! trickle) and `eventually` on the connection count, which has no event.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use jsonlink_rt::Error;
use jsonlink_tests::RawTlsClient;
use jsonlink_tests::adversary::closed_by_peer;
use jsonlink_tests::faults::record;
use jsonlink_tests::fixtures::{Fixture, add_handler, assert_add_answered, bind};
use jsonlink_tests::runtimes::{Gauges, on_tokio};
use jsonlink_tests::waits::{SETTLE, error_event, eventually};
use tokio::net::TcpStream;

/// Handshake deadline for the silent peers.
const HANDSHAKE: Duration = Duration::from_millis(300);
/// Gap between the trickling peer's bytes.
const TRICKLE_GAP: Duration = Duration::from_millis(20);
/// Silent sockets open while a good client authenticates (tests/faults/FAULTS.md: 1000).
const SILENT_SOCKETS: usize = 1000;
/// Of which this many completed TLS (the rest are bare TCP).
const SILENT_AFTER_TLS: usize = 50;

/// One byte every [`TRICKLE_GAP`] on `slow`, for as long as the server
/// lets it: an unterminated hello that never ends by itself. How many
/// bytes went out before the server hung up.
async fn trickle_a_hello(mut slow: RawTlsClient) -> usize {
    let prefix = br#"{"t":"hello","pad":""#;
    let mut sent = 0usize;
    while slow
        .send(&[prefix.get(sent).copied().unwrap_or(b'x')])
        .await
        .is_ok()
    {
        sent += 1;
        tokio::time::sleep(TRICKLE_GAP).await;
    }
    sent
}

#[test]
fn h2_silent_and_trickling_peers_are_closed_at_the_handshake_deadline_and_do_not_delay_a_good_client()
 {
    // Each silent socket costs two descriptors in this process (both ends).
    let nofile = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let silent = SILENT_SOCKETS.min(usize::try_from(nofile.saturating_sub(512) / 3).unwrap_or(0));
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = bind(fx.server().handshake_timeout(HANDSHAKE)).await;
        let addr = server.local_addr();
        let start = Instant::now();

        // Silence after TCP connect.
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let tcp_addr = tcp.local_addr().expect("addr");
        // Silence after TLS.
        let mut tls = RawTlsClient::connect(addr, fx.client_tls())
            .await
            .expect("TLS");
        let tls_addr = tls.local_addr().expect("addr");
        // A hello that never ends.
        let slow = RawTlsClient::connect(addr, fx.client_tls())
            .await
            .expect("TLS");
        let slow_addr = slow.local_addr().expect("addr");
        let trickle = tokio::spawn(trickle_a_hello(slow));

        // Each is reported with HandshakeTimeout, and not before the deadline.
        let mut errors = HashMap::new();
        while errors.len() < 3 {
            let (peer, error) = error_event(&server).await;
            assert!(
                start.elapsed() >= HANDSHAKE,
                "{peer:?} closed before the handshake deadline: {error:?}"
            );
            errors.insert(peer.expect("peer address"), error);
        }
        for (what, a) in [("TCP", tcp_addr), ("TLS", tls_addr), ("trickle", slow_addr)] {
            assert!(
                matches!(errors.get(&a), Some(Error::HandshakeTimeout)),
                "{what}: {:?}",
                errors.get(&a)
            );
        }
        // ...and its socket is closed: EOF (or reset) for the bare TCP one,
        // a close frame naming the reason and EOF after TLS, and the
        // trickle's writes fail.
        let sent = closed_by_peer(&mut tcp).await;
        assert!(
            sent.is_empty(),
            "nothing is sent to a bare TCP peer: {sent:?}"
        );
        let (bytes, ended) = tls.read_to_end(SETTLE, 1 << 20).await;
        assert!(ended, "the TLS-silent socket is closed");
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains(r#""t":"close""#) && text.contains(r#""code":"handshake_timeout""#),
            "a close frame handshake_timeout after TLS: {text}"
        );
        let trickled = trickle.await.expect("trickle task");
        assert!(trickled > 0, "the trickle sent bytes before it was closed");
        assert!(
            eventually(SETTLE, || server.stats().connections == 0).await,
            "every timed-out connection is released"
        );

        // Many silent sockets (most bare TCP, some after TLS), kept open by a
        // long handshake deadline: a good client still gets in at once.
        let server = bind(fx.server()).await;
        add_handler(&server);
        let addr = server.local_addr();
        let mut silent_tcp = Vec::new();
        let mut left = silent.saturating_sub(SILENT_AFTER_TLS);
        while left > 0 {
            let n = left.min(100);
            left -= n;
            let batch = join_all((0..n).map(|_| TcpStream::connect(addr))).await;
            silent_tcp.extend(batch.into_iter().map(|s| s.expect("silent connect")));
        }
        let silent_tls =
            join_all((0..SILENT_AFTER_TLS).map(|_| RawTlsClient::connect(addr, fx.client_tls())))
                .await;
        let silent_tls: Vec<_> = silent_tls
            .into_iter()
            .map(|s| s.expect("silent TLS"))
            .collect();
        let open = silent_tcp.len() + silent_tls.len();
        assert!(
            eventually(SETTLE, || server.stats().connections == open as u64).await,
            "the server did not accept all {open} silent sockets: {:?}",
            server.stats()
        );
        let t = Instant::now();
        let client = fx.connected_client(&server).await;
        let took = t.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "a good client took {took:?} to authenticate beside {open} silent sockets"
        );
        assert_add_answered(&client, 1, 2).await;
        assert_eq!(
            server.stats().connections,
            open as u64 + 1,
            "the silent sockets stay open beside the client"
        );
        drop(silent_tcp);
        drop(silent_tls);

        record(
            "H2",
            format!(
                "{:?} for silence after TCP, silence after TLS and one byte every 20 ms: \
                 not before the deadline, close frame handshake_timeout, socket closed; \
                 with {open} silent sockets open a good client authenticated within 1 s",
                Error::HandshakeTimeout
            ),
        );
    });
}
