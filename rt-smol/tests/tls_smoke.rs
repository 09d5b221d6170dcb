//! TLS over loopback on smol: handshake, bytes both ways, channel binding.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join;
use futures_util::io::{AsyncReadExt as _, AsyncWriteExt as _};
use jsonlink_rt::certs::DevPki;
use jsonlink_rt::runtime::{EXPORTER_LEN, Runtime};
use jsonlink_smol::SmolRuntime;

const LIMIT: Duration = Duration::from_secs(20);

/// Runs `test` to completion on smol, failing if it takes longer than LIMIT.
fn run_bounded<T>(test: impl Future<Output = T>) -> T {
    smol::block_on(smol::future::or(async { Some(test.await) }, async {
        smol::Timer::after(LIMIT).await;
        None
    }))
    .expect("timed out")
}

#[test]
fn tls_smoke() {
    run_bounded(tls_round_trip(&SmolRuntime));
}

#[test]
fn a_client_trusting_another_ca_fails_tls() {
    run_bounded(untrusted_server_is_refused(&SmolRuntime));
}

#[test]
fn sleep_until_waits_for_the_deadline() {
    let rt = SmolRuntime;
    let deadline = rt.now() + Duration::from_millis(20);
    run_bounded(rt.sleep_until(deadline));
    assert!(rt.now() >= deadline);
}

#[test]
fn spawned_tasks_run() {
    let rt = SmolRuntime;
    let (tx, rx) = std::sync::mpsc::channel();
    rt.spawn(Box::pin(async move { tx.send(7).unwrap() }));
    assert_eq!(rx.recv_timeout(LIMIT).unwrap(), 7);
}

/// The test's body, the same on every runtime: one TLS connection over
/// loopback, a few bytes each way, and equal channel bindings on both ends.
async fn tls_round_trip(rt: &dyn Runtime) {
    let pki = DevPki::generate().unwrap();
    let listener = rt.bind(([127, 0, 0, 1], 0).into()).await.unwrap();
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
    let listener = rt.bind(([127, 0, 0, 1], 0).into()).await.unwrap();
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
