//! The `Runtime` contract, checked on every adapter (tokio, async-std,
//! smol on its global executor and on one of the caller's) with one body
//! each, driven from the test thread outside the runtime's context: TLS
//! over loopback with equal channel bindings on both ends, a foreign CA
//! refused, `resolve`, `sleep_until`, `spawn`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join;
use futures_util::io::{AsyncReadExt as _, AsyncWriteExt as _};
use jsonlink_rt::runtime::{EXPORTER_LEN, Runtime};
use jsonlink_tests::fixtures::{another_pki, localhost};
use jsonlink_tests::runtimes::on_each_runtime;

#[test]
fn tls_round_trip_with_equal_channel_bindings() {
    on_each_runtime(|rt| async move { tls_round_trip(&*rt).await });
}

#[test]
fn a_client_trusting_another_ca_fails_tls() {
    on_each_runtime(|rt| async move { untrusted_server_is_refused(&*rt).await });
}

#[test]
fn sleep_until_waits_for_the_deadline() {
    on_each_runtime(|rt| async move {
        let deadline = rt.now() + Duration::from_millis(20);
        rt.sleep_until(deadline).await;
        assert!(
            rt.now() >= deadline,
            "sleep_until returns no earlier than its deadline"
        );
    });
}

#[test]
fn resolve_gives_loopback_for_localhost_and_literals_as_they_are() {
    on_each_runtime(|rt| async move {
        let addrs = rt
            .resolve("localhost", 4242)
            .await
            .expect("resolve localhost");
        assert!(
            addrs
                .iter()
                .any(|a| a.ip().is_loopback() && a.port() == 4242),
            "{addrs:?}"
        );
        let addrs = rt.resolve("127.0.0.1", 7).await.expect("resolve a literal");
        assert_eq!(
            addrs,
            [std::net::SocketAddr::from(([127, 0, 0, 1], 7))],
            "a literal resolves to itself"
        );
    });
}

#[test]
fn spawned_tasks_run() {
    on_each_runtime(|rt| async move {
        let (tx, rx) = async_channel::bounded(1);
        rt.spawn(Box::pin(async move {
            let _ = tx.send(7).await;
        }));
        assert_eq!(
            rx.recv().await.expect("the task sent"),
            7,
            "a spawned task runs"
        );
    });
}

/// A listener of `rt` on 127.0.0.1, and its address.
async fn listening(rt: &dyn Runtime) -> (Box<dyn jsonlink_rt::Listener>, std::net::SocketAddr) {
    let listener = rt
        .bind(localhost())
        .await
        .expect("the runtime binds 127.0.0.1");
    let addr = listener.local_addr().expect("the listener's address");
    (listener, addr)
}

/// The test's body, the same on every runtime: one TLS connection over
/// loopback, a few bytes each way, and equal channel bindings on both ends.
async fn tls_round_trip(rt: &dyn Runtime) {
    let pki = another_pki();
    let (listener, addr) = listening(rt).await;

    let server = async {
        let accepted = listener.accept().await.expect("the runtime accepts");
        let mut tls = accepted
            .tls(Arc::new(pki.server_config().expect("TLS configuration")))
            .await
            .expect("the server side of TLS");
        let mut ping = [0u8; 4];
        tls.stream
            .read_exact(&mut ping)
            .await
            .expect("the client's ping");
        assert_eq!(&ping, b"ping", "the server read the client's bytes");
        tls.stream
            .write_all(b"pong")
            .await
            .expect("the server writes");
        tls.stream.flush().await.expect("the server flushes");
        tls
    };
    let client = async {
        let config = Arc::new(pki.client_config().expect("TLS configuration"));
        let mut tls = rt
            .connect_tls(addr, config, pki.server_name())
            .await
            .expect("the runtime connects over TLS");
        assert_eq!(tls.peer_addr, addr, "the client knows whom it reached");
        tls.stream
            .write_all(b"ping")
            .await
            .expect("the client writes");
        tls.stream.flush().await.expect("the client flushes");
        let mut pong = [0u8; 4];
        tls.stream
            .read_exact(&mut pong)
            .await
            .expect("the server's pong");
        assert_eq!(&pong, b"pong", "the client read the server's bytes");
        tls
    };
    let (server, client) = join(server, client).await;

    assert_eq!(
        server.channel_binding.len(),
        EXPORTER_LEN,
        "the channel binding has the exporter length"
    );
    assert_eq!(EXPORTER_LEN, 32, "the exporter length of PROTOCOL.md §3");
    assert_eq!(
        server.channel_binding, client.channel_binding,
        "both ends export the same binding"
    );
    assert_eq!(
        server.peer_addr.ip(),
        addr.ip(),
        "the server knows the peer's address"
    );
}

/// A client that trusts another CA fails the handshake with the rustls
/// error inside, and so does the server it aborts on.
async fn untrusted_server_is_refused(rt: &dyn Runtime) {
    let (pki, stranger) = (another_pki(), another_pki());
    let (listener, addr) = listening(rt).await;

    let server = async {
        let accepted = listener.accept().await.expect("the runtime accepts");
        accepted
            .tls(Arc::new(pki.server_config().expect("TLS configuration")))
            .await
    };
    let client = async {
        let config = Arc::new(stranger.client_config().expect("TLS configuration"));
        rt.connect_tls(addr, config, pki.server_name()).await
    };
    let (server, client) = join(server, client).await;

    let err = client.expect_err("client accepted a server from another CA");
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(
            inner,
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        ),
        "{err:?}"
    );
    assert!(
        server.is_err(),
        "server finished a handshake the client refused"
    );
}
