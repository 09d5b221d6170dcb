//! The demo a new user runs first (`cargo run --example demo`, in
//! `rt-tokio/examples/demo.rs`) runs to the end: its `run()` is called
//! here directly, bounded in time.

#[path = "../../rt-tokio/examples/demo.rs"]
mod demo;

use std::time::Duration;

use jsonlink_tests::runtimes::{Gauges, on_tokio_within};
use serde_json::json;

/// The demo's own bound (it restarts its server and waits for reconnects).
const DEMO_LIMIT: Duration = Duration::from_secs(30);

#[test]
fn the_demo_runs_to_the_end() {
    let outcome = on_tokio_within(DEMO_LIMIT, Gauges::Shared, |_rt| demo::run())
        .unwrap_or_else(|e| panic!("the demo failed: {e}"));
    assert_eq!(
        outcome.chat,
        json!({"op": "chat", "text": "hello, server"}),
        "the chat message"
    );
    assert_eq!(outcome.sum, 5, "the demo's request was answered");
    assert_eq!(outcome.status["ok"], json!(true), "the status request");
    assert_eq!(outcome.ping_data, json!({"load": 0.42}), "the ping's data");
    assert!(outcome.reconnect_attempts >= 2, "{outcome:?}");
    assert_eq!(outcome.sum_after_restart, 42, "answered after the restart");
    assert!(outcome.graceful, "{outcome:?}");
}
