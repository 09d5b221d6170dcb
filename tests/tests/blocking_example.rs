//! The runtime-free example (`proto/examples/blocking_client.rs`, a
//! hand-written loop over `std::net` + rustls driving the sans-IO core)
//! against an async `Server` on tokio: message by op, a request each way,
//! graceful close. Bounded in time; synchronised on events, never sleeps.

#[path = "../../proto/examples/blocking_client.rs"]
mod blocking_client;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonlink_proto::{CloseCode, CloseReason};
use jsonlink_rt::{Identity, Runtime};
use jsonlink_tests::fixtures::{Fixture, TempDir, bind};
use jsonlink_tests::runtimes::{Gauges, on_tokio};
use jsonlink_tests::waits::{authenticated_with_info, closed};
use serde_json::{Value, json};

#[test]
fn blocking_client_talks_to_an_async_server() {
    on_tokio(Gauges::Shared, scenario);
}

async fn scenario(rt: Arc<dyn Runtime>) {
    let fx = Fixture::new(rt);
    let dir = TempDir::new("blocking");
    let [ca_pem, ..] = fx.pki.write_pem(dir.path()).expect("PEM files");

    let server = bind(fx.server_as(Identity::new("server-1", "blocking-test"))).await;
    let (chat_tx, mut chat_rx) = tokio::sync::mpsc::channel::<(Option<String>, Value)>(4);
    server.handlers().on_message("chat", move |m| {
        let tx = chat_tx.clone();
        async move {
            let body: Value = m.parse().expect("a JSON body");
            let _ = tx.send((m.op.clone().map(String::from), body)).await;
        }
    });
    server
        .handlers()
        .handle_request("add", |_link, v: Value| async move {
            Ok(v["a"].as_i64().unwrap_or(0) + v["b"].as_i64().unwrap_or(0))
        });

    // The blocking client runs on its own thread, with no runtime.
    let addr = server.local_addr();
    let client_secret = fx.secret.clone();
    let client = tokio::task::spawn_blocking(move || {
        blocking_client::run(addr, &ca_pem, &client_secret).map_err(|e| e.to_string())
    });

    // Authenticated: the server sees the blocking client's identity.
    let (link, info) = authenticated_with_info(&server).await;
    assert_eq!(
        info.peer,
        Identity::new("blocking-1", "blocking-example"),
        "the server knows the blocking client"
    );

    // The server asks the blocking client for its status; the client
    // closes only after answering it.
    let status: Value = link
        .request_with_timeout(&json!({"op": "status"}), Duration::from_secs(5))
        .await
        .expect("the blocking client answers status");
    assert_eq!(status["ok"], json!(true), "the blocking client answers ok");
    assert_eq!(
        status["runtime"],
        json!("none"),
        "the blocking client has no runtime"
    );

    // The message arrived and was dispatched by op.
    let (op, body) = chat_rx.recv().await.expect("the chat message");
    assert_eq!(op.as_deref(), Some("chat"), "dispatched by op");
    assert_eq!(
        body["text"],
        json!("hello from a loop with no runtime"),
        "the chat message arrived whole"
    );

    // The link closed gracefully, by the client.
    let (closed_link, reason) = closed(&server).await;
    assert_eq!(
        closed_link.id(),
        link.id(),
        "the blocking client's link closed"
    );
    assert!(reason.is_graceful(), "{reason:?}");
    assert_eq!(
        reason,
        CloseReason::Remote {
            code: CloseCode::Normal,
            reason: "done".into()
        },
        "closed by the blocking client with its reason"
    );

    let summary = client
        .await
        .expect("the blocking client's thread")
        .expect("the blocking client ran to the end");
    assert_eq!(
        summary.sum, 42,
        "the blocking client's request was answered"
    );
    assert_eq!(
        summary.answered,
        ["status"],
        "the blocking client answered the server's request"
    );
    assert_eq!(
        summary.auth.peer,
        Identity::new("server-1", "blocking-test"),
        "the blocking client knows the server"
    );
    assert_eq!(
        summary.auth.connection_id,
        link.id(),
        "both sides name the link alike"
    );
    assert!(
        summary.auth.signing && summary.auth.encryption,
        "the blocking client signs and seals"
    );
    assert!(
        info.signing && info.encryption,
        "the server signs and seals"
    );
    assert!(
        matches!(&summary.close, CloseReason::Local { reason } if reason == "done"),
        "{:?}",
        summary.close
    );

    // Informational only: after the jsonlink close the server may drop its
    // socket before our TLS close_notify lands (then no clean EOF).
    println!("server end of stream seen: {}", summary.peer_eof);

    let stats = server.stats();
    assert_eq!(stats.messages_in, 1, "messages in");
    assert_eq!(stats.requests_in, 1, "requests in");
    assert_eq!(stats.requests_out, 1, "requests out");
    server
        .shutdown(Instant::now() + Duration::from_secs(1))
        .await;
}
