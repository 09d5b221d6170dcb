//! The credential (`identity.authorization`) never reaches the logs: a
//! WebSocket session and HTTP calls that carry it through every path that
//! logs (handler errors and panics, a refused identity change, an oversized
//! frame, the hooks' `Debug`), captured at DEBUG, contain it neither as
//! text nor hex-encoded. (At TRACE, tungstenite itself logs every frame's
//! payload in hex: keep it below TRACE where credentials pass; README.)

mod common;

use common::*;
use jsonlink_gateway::WsHooks;
use serde_json::{Value, json};

const SECRET: &str = "s3cret-jwt-never-logged";

#[tokio::test]
async fn the_authorization_is_never_logged() {
    let logs = jsonlink_tests::logs::capture_logs(tracing::Level::DEBUG);
    let hooks = WsHooks::new()
        .on_client_connect(|c| tracing::info!(info = ?c, "hook: connect"))
        .on_identity_changed(|c| tracing::info!(info = ?c, "hook: identity"))
        .on_client_disconnect(|c| tracing::info!(info = ?c, "hook: disconnect"));
    let mut cfg = config();
    cfg.limits.max_frame_bytes = 4096;
    let ws_gw = ws_gateway(cfg, hooks).await;
    let http = http_gateway(config()).await;

    let identity = json!({"authorization": SECRET, "deviceName": "logged-device"});
    for procedure in ["fail", "panic", "echo"] {
        let body = json!({"procedure": procedure, "identity": identity}).to_string();
        post(http.local_addr(), &body).await;
    }
    let mut ws = ws_connect(ws_gw.local_addr()).await;
    ws_send(&mut ws, json!({"identity": identity})).await;
    ws_next(&mut ws).await.unwrap();
    for procedure in ["fail", "panic", "whoami"] {
        ws_send(&mut ws, call(procedure, Value::Null, json!(procedure))).await;
        ws_next(&mut ws).await.unwrap();
    }
    ws_send(&mut ws, json!({"identity": {"authorization": "another"}})).await;
    assert_eq!(code_of(&ws_next(&mut ws).await.unwrap()), 400);
    ws_close_code(&mut ws).await;
    let mut big = ws_connect(ws_gw.local_addr()).await;
    ws_send(
        &mut big,
        json!({"identity": identity, "pad": "x".repeat(5000)}),
    )
    .await;
    assert_eq!(ws_close_code(&mut big).await, Some(1009));
    http.shutdown().await;
    ws_gw.shutdown().await;

    let text = logs.text();
    assert!(
        text.contains("hook: identity") && text.contains("logged-device"),
        "the logs were captured: {text}"
    );
    assert!(
        text.contains("handler"),
        "the handler failures were logged: {text}"
    );
    let hex: String = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(!text.contains(SECRET), "credential in the logs:\n{text}");
    assert!(
        !text.contains(&hex),
        "credential hex-encoded in the logs:\n{text}"
    );
}
