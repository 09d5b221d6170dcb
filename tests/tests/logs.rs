//! S6 at the adapter level: everything jsonlink logs through `tracing`
//! (at TRACE, across a signed+sealed session, a wrong-secret attempt and a
//! shutdown) is captured and searched for the secret. Its own test binary,
//! because it installs the process-wide subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use jsonlink_rt::{
    Client, DevPki, Event, EventKind, Identity, Policy, Reconnect, Runtime, Secret, Server,
};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn s6_tracing_output_never_contains_the_secret() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rt: Arc<dyn Runtime> = Arc::new(jsonlink_tokio::TokioRuntime::from_handle(
        tokio.handle().clone(),
    ));
    let secret = Secret::generate().unwrap();
    let secret_bytes = secret.expose().to_vec();
    tokio.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), async {
            let pki = DevPki::generate().unwrap();
            let server = Server::builder(
                rt.clone(),
                pki.server_config().unwrap(),
                secret.clone(),
                Identity::new("s", "s"),
            )
            .signing(Policy::Required)
            .encryption(Policy::Required)
            .bind(([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
            server
                .handlers()
                .handle_request("echo", |_l, v: serde_json::Value| async move { Ok(v) });
            let client = Client::builder(
                rt.clone(),
                server.local_addr(),
                pki.client_config().unwrap(),
                pki.server_name(),
                secret.clone(),
                Identity::new("c", "c"),
            )
            .reconnect(Reconnect::Never)
            .connect()
            .await
            .unwrap();
            let v: serde_json::Value = client
                .request(&serde_json::json!({"op": "echo", "n": 1}))
                .await
                .unwrap();
            assert_eq!(v["n"], 1);
            // A wrong secret too: the failure path logs as well.
            let wrong = Client::builder(
                rt.clone(),
                server.local_addr(),
                pki.client_config().unwrap(),
                pki.server_name(),
                Secret::generate().unwrap(),
                Identity::new("w", "w"),
            )
            .reconnect(Reconnect::Never)
            .connect()
            .await;
            assert!(wrong.is_err());
            while let Some(ev) = server.try_next_event() {
                let _ = matches!(ev, Event::Error { .. });
            }
            client.close().await;
            let _ = server.wait_for(EventKind::Closed).await;
            server
                .shutdown(std::time::Instant::now() + Duration::from_secs(1))
                .await;
        })
        .await
        .unwrap();
    });

    let logs =
        String::from_utf8_lossy(&capture.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    assert!(
        logs.contains("authenticated"),
        "tracing captured nothing useful:\n{logs}"
    );
    let needles = [
        hex_of(&secret_bytes),
        hex_of(&secret_bytes).to_uppercase(),
        base64::engine::general_purpose::STANDARD.encode(&secret_bytes),
        format!("{:?}", secret_bytes),
    ];
    for n in &needles {
        assert!(
            !logs.contains(n.as_str()),
            "the secret appears in the logs as {n}"
        );
    }
    jsonlink_tests::faults::record(
        "S6/logs",
        "TRACE-level tracing output of a signed+sealed session, a wrong-secret attempt and a shutdown never contains the secret (hex, base64 or bytes)",
    );
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
