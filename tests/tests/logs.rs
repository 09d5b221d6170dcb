//! S6 at the adapter level: everything jsonlink logs through `tracing`
//! (at TRACE, across a signed+sealed session, a wrong-secret attempt and a
//! shutdown) is captured and searched for the secret. Its own test binary,
//! because it installs the process-wide subscriber.

use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonlink_rt::{Policy, Reconnect};
use jsonlink_tests::faults::record;
use jsonlink_tests::fixtures::{Fixture, another_secret, bind, common_handlers, connect};
use jsonlink_tests::logs::capture_logs;
use jsonlink_tests::runtimes::{Gauges, on_tokio};
use jsonlink_tests::waits::closed;
use serde_json::{Value, json};

/// The ways a secret's bytes could be spelled in a log line.
fn spellings_of(secret: &[u8]) -> [String; 4] {
    let hex: String = secret.iter().map(|x| format!("{x:02x}")).collect();
    [
        hex.to_uppercase(),
        base64::engine::general_purpose::STANDARD.encode(secret),
        format!("{secret:?}"),
        hex,
    ]
}

#[test]
fn s6_tracing_output_never_contains_the_secret() {
    let logs = capture_logs(tracing::Level::TRACE);
    let secret_bytes = on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = bind(
            fx.server()
                .signing(Policy::Required)
                .encryption(Policy::Required),
        )
        .await;
        common_handlers(server.handlers());
        let client = connect(fx.client(server.local_addr()).reconnect(Reconnect::Never)).await;
        let v: Value = client
            .request(&json!({"op": "echo", "n": 1}))
            .await
            .expect("echo");
        assert_eq!(v["n"], 1, "the echo answered");
        // A wrong secret too: the failure path logs as well.
        let wrong = fx
            .client_with_secret(server.local_addr(), another_secret())
            .reconnect(Reconnect::Never)
            .connect()
            .await;
        assert!(wrong.is_err(), "a wrong secret fails");
        client.close().await;
        closed(&server).await;
        server
            .shutdown(Instant::now() + Duration::from_secs(1))
            .await;
        fx.secret.expose().to_vec()
    });

    let logs = logs.text();
    assert!(
        logs.contains("authenticated"),
        "tracing captured nothing useful:\n{logs}"
    );
    for spelling in &spellings_of(&secret_bytes) {
        assert!(
            !logs.contains(spelling.as_str()),
            "the secret appears in the logs as {spelling}"
        );
    }
    record(
        "S6/logs",
        "TRACE-level tracing output of a signed+sealed session, a wrong-secret attempt and a shutdown never contains the secret (hex, base64 or bytes)",
    );
}
