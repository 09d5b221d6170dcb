//! Calls from a Node.js client written from gateway/WIRE.md alone
//! (`gateway/tests/node/peer.mjs`: Node's built-in `fetch` and the `ws`
//! package), so compatibility does not rest on our own client. Needs
//! `node` and `npm ci --prefix gateway/tests/node`; fails (does not skip)
//! with that instruction when either is missing.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use jsonlink_gateway::WsHooks;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_peer_calls_both_gateways() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/ws/package.json").exists(),
        "the Node.js test peer's packages are not installed: run `npm ci --prefix gateway/tests/node` (needs node >= 18 and npm)"
    );
    let http = http_gateway(config()).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let hooks = WsHooks::new().on_client_message(move |info, m| {
        let _ = tx.send((info.connection_id, m.clone()));
    });
    let ws = Arc::new(ws_gateway(config(), hooks).await);
    // The test server answers a client message with a server message.
    let echo = {
        let ws = ws.clone();
        tokio::spawn(async move {
            while let Some((id, m)) = rx.recv().await {
                ws.send_message_to_client(id, json!({"echo": m}))
                    .expect("the connection is open");
            }
        })
    };
    let run = tokio::process::Command::new("node")
        .arg("peer.mjs")
        .arg(format!("http://{}", http.local_addr()))
        .arg(format!("ws://{}/", ws.local_addr()))
        .current_dir(&dir)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the node peer finished within 60 s")
        .unwrap_or_else(|e| panic!("could not run `node` (install Node.js >= 18): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "the node peer failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("node peer: 11 passed, 0 failed"),
        "{stdout}"
    );
    echo.abort();
    let _ = echo.await;
    http.shutdown().await;
    if let Ok(ws) = Arc::try_unwrap(ws) {
        ws.shutdown().await;
    }
}
