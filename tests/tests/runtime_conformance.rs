//! The `Runtime` contract, checked on every adapter (tokio, async-std,
//! smol on its global executor and on one of the caller's) with one body
//! each, driven from the test thread outside the runtime's context: TLS
//! over loopback with equal channel bindings on both ends, a foreign CA
//! refused, `resolve`, `sleep_until`, `spawn`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join;
use futures_util::io::{AsyncReadExt as _, AsyncWriteExt as _};
use jsonlink_rt::DevPki;
use jsonlink_rt::runtime::{EXPORTER_LEN, Runtime};
use jsonlink_tests::fixtures::localhost;
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
        assert!(rt.now() >= deadline);
    });
}

#[test]
fn resolve_gives_loopback_for_localhost_and_literals_as_they_are() {
    on_each_runtime(|rt| async move {
        let addrs = rt.resolve("localhost", 4242).await.unwrap();
        assert!(
            addrs
                .iter()
                .any(|a| a.ip().is_loopback() && a.port() == 4242),
            "{addrs:?}"
        );
        let addrs = rt.resolve("127.0.0.1", 7).await.unwrap();
        assert_eq!(addrs, [std::net::SocketAddr::from(([127, 0, 0, 1], 7))]);
    });
}

#[test]
fn spawned_tasks_run() {
    on_each_runtime(|rt| async move {
        let (tx, rx) = async_channel::bounded(1);
        rt.spawn(Box::pin(async move {
            let _ = tx.send(7).await;
        }));
        assert_eq!(rx.recv().await.unwrap(), 7);
    });
}

/// The test's body, the same on every runtime: one TLS connection over
/// loopback, a few bytes each way, and equal channel bindings on both ends.
async fn tls_round_trip(rt: &dyn Runtime) {
    let pki = DevPki::generate().unwrap();
    let listener = rt.bind(localhost()).await.unwrap();
    let addr = listener.local_addr().unwrap();

    let server = async {
        let accepted = listener.accept().await.unwrap();
        let mut tls = accepted
            .tls(Arc::new(pki.server_config().unwrap()))
            .await
            .unwrap();
        let mut ping = [0u8; 4];
        tls.stream.read_exact(&mut ping).await.unwrap();
        assert_eq!(&ping, b"ping");
        tls.stream.write_all(b"pong").await.unwrap();
        tls.stream.flush().await.unwrap();
        tls
    };
    let client = async {
        let config = Arc::new(pki.client_config().unwrap());
        let mut tls = rt
            .connect_tls(addr, config, pki.server_name())
            .await
            .unwrap();
        assert_eq!(tls.peer_addr, addr);
        tls.stream.write_all(b"ping").await.unwrap();
        tls.stream.flush().await.unwrap();
        let mut pong = [0u8; 4];
        tls.stream.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"pong");
        tls
    };
    let (server, client) = join(server, client).await;

    assert_eq!(server.channel_binding.len(), EXPORTER_LEN);
    assert_eq!(EXPORTER_LEN, 32);
    assert_eq!(server.channel_binding, client.channel_binding);
    assert_eq!(server.peer_addr.ip(), addr.ip());
}

/// A client that trusts another CA fails the handshake with the rustls
/// error inside, and so does the server it aborts on.
async fn untrusted_server_is_refused(rt: &dyn Runtime) {
    let pki = DevPki::generate().unwrap();
    let stranger = DevPki::generate().unwrap();
    let listener = rt.bind(localhost()).await.unwrap();
    let addr = listener.local_addr().unwrap();

    let server = async {
        let accepted = listener.accept().await.unwrap();
        accepted.tls(Arc::new(pki.server_config().unwrap())).await
    };
    let client = async {
        let config = Arc::new(stranger.client_config().unwrap());
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
