//! The WebSocket gateway over real sockets on 127.0.0.1: identity set,
//! changed (400 and closed) and per call; client and server messages;
//! out-of-order answers matched by correlationId; hooks and the connection
//! list; the codes over WebSocket; limits; graceful shutdown.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use jsonlink_gateway::{SendError, WsHooks};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn identity_set_used_per_call_resent_and_changed() {
    let (hooks, log) = recording_hooks();
    let gw = ws_gateway(config(), hooks).await;
    let mut ws = ws_connect(gw.local_addr()).await;

    // No identity yet.
    ws_send(&mut ws, call("whoami", Value::Null, json!(1))).await;
    assert_eq!(
        ws_next(&mut ws).await.unwrap()["data"],
        json!({"deviceName": null, "hasAuthorization": false})
    );

    ws_send(&mut ws, json!({"identity": {"authorization": "tok-1", "deviceName": "phone"}, "correlationId": "set"})).await;
    assert_eq!(
        ws_next(&mut ws).await.unwrap(),
        json!({"code": 200, "success": true, "correlationId": "set"})
    );

    ws_send(&mut ws, call("whoami", Value::Null, json!(2))).await;
    assert_eq!(
        ws_next(&mut ws).await.unwrap()["data"],
        json!({"deviceName": "phone", "hasAuthorization": true})
    );

    // A call carrying an identity uses it for that call only.
    ws_send(
        &mut ws,
        json!({"procedure": "whoami", "identity": {"deviceName": "one-call"}, "correlationId": 3}),
    )
    .await;
    assert_eq!(
        ws_next(&mut ws).await.unwrap()["data"],
        json!({"deviceName": "one-call", "hasAuthorization": false})
    );
    ws_send(&mut ws, call("whoami", Value::Null, json!(4))).await;
    assert_eq!(
        ws_next(&mut ws).await.unwrap()["data"],
        json!({"deviceName": "phone", "hasAuthorization": true})
    );

    // The same authorization re-sent: accepted, device name replaced.
    ws_send(
        &mut ws,
        json!({"identity": {"authorization": "tok-1", "deviceName": "tablet"}}),
    )
    .await;
    assert_eq!(
        ws_next(&mut ws).await.unwrap(),
        json!({"code": 200, "success": true})
    );
    ws_send(&mut ws, call("whoami", Value::Null, json!(5))).await;
    assert_eq!(
        ws_next(&mut ws).await.unwrap()["data"]["deviceName"],
        "tablet"
    );

    // The connection list shows the identity, its credential redacted.
    let conns = gw.connections();
    assert_eq!(conns.len(), 1);
    let debug = format!("{conns:?}");
    assert!(
        debug.contains("tablet") && !debug.contains("tok-1"),
        "{debug}"
    );

    // A different authorization: 400 with the correlation id, then closed.
    ws_send(
        &mut ws,
        json!({"identity": {"authorization": "tok-2"}, "correlationId": "change"}),
    )
    .await;
    let v = ws_next(&mut ws).await.unwrap();
    assert_eq!(
        (code_of(&v), &v["correlationId"]),
        (400, &json!("change")),
        "{v}"
    );
    let close = ws_close_code(&mut ws).await;
    assert_eq!(close, Some(1008));

    let log = log.borrow().join("\n");
    assert!(
        !log.contains("tok-"),
        "hooks never see the credential in Debug: {log}"
    );
    assert!(
        log.contains("identity 1") && log.contains("connect 1"),
        "{log}"
    );

    record::record(
        "P7",
        format!(
            "different authorization: 400 (correlationId echoed), closed {}; same identity re-sent: 200 (device name replaced); a call carrying its own identity: used for that call only, the connection's applies again after",
            close.map_or("without a close frame".to_owned(), |c| format!("with {c}"))
        ),
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn answers_come_out_of_order_matched_by_correlation_id() {
    let gw = ws_gateway(config(), WsHooks::new()).await;
    let mut ws = ws_connect(gw.local_addr()).await;
    ws_send(
        &mut ws,
        call("sleep", json!({"ms": 400}), json!({"slow": true})),
    )
    .await;
    ws_send(&mut ws, call("sleep", json!({"ms": 100}), json!("medium"))).await;
    ws_send(&mut ws, call("sleep", json!({"ms": 0}), json!(3))).await;
    let mut order = Vec::new();
    for _ in 0..3 {
        let v = ws_next(&mut ws).await.unwrap();
        assert_eq!(code_of(&v), 200);
        order.push((v["correlationId"].clone(), v["data"].clone()));
    }
    assert_eq!(
        order,
        [
            (json!(3), json!(0)),
            (json!("medium"), json!(100)),
            (json!({"slow": true}), json!(400))
        ]
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn client_messages_reach_the_hook_and_server_messages_reach_the_client() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let hooks = WsHooks::new().on_client_message(move |info, m| {
        let _ = tx.send((
            info.connection_id,
            info.ip,
            info.identity.clone(),
            m.clone(),
        ));
    });
    let gw = ws_gateway(config(), hooks).await;
    let mut a = ws_connect(gw.local_addr()).await;
    let mut b = ws_connect(gw.local_addr()).await;
    ws_send(
        &mut a,
        json!({"identity": {"authorization": "a", "deviceName": "A"}}),
    )
    .await;
    ws_next(&mut a).await.unwrap();
    ws_send(&mut a, json!({"clientMessage": {"hello": [1, 2]}})).await;
    let (id, ip, identity, m) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m, json!({"hello": [1, 2]}));
    assert_eq!(ip, std::net::IpAddr::from([127, 0, 0, 1]));
    assert_eq!(identity.and_then(|i| i.device_name), Some("A".into()));

    // No reply to a client message: the next frame a gets is the push.
    gw.send_message_to_client(id, json!({"to": "a"})).unwrap();
    assert_eq!(
        ws_next(&mut a).await.unwrap(),
        json!({"serverMessage": {"to": "a"}})
    );
    let ids: Vec<u64> = gw.connections().iter().map(|c| c.connection_id).collect();
    assert_eq!(ids.len(), 2);
    let other = *ids.iter().find(|&&i| i != id).unwrap();
    gw.send_message_to_client(other, json!("to b")).unwrap();
    assert_eq!(
        ws_next(&mut b).await.unwrap(),
        json!({"serverMessage": "to b"})
    );
    assert_eq!(
        gw.send_message_to_client(9999, json!(1)),
        Err(SendError::NoSuchConnection)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn hooks_see_connect_identity_and_disconnect() {
    let (hooks, log) = recording_hooks();
    let gw = ws_gateway(config(), hooks).await;
    let mut ws = ws_connect(gw.local_addr()).await;
    ws_send(
        &mut ws,
        json!({"identity": {"authorization": "s3cret", "deviceName": "d"}}),
    )
    .await;
    ws_next(&mut ws).await.unwrap();
    ws.close(None).await.unwrap();
    drop(ws);
    // The disconnect hook runs when the server has seen the close.
    let mut log = log;
    let log = wait_for_hook(&mut log, "disconnect").await;
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(log[0].starts_with("connect 1 None"), "{log:?}");
    assert!(
        log[1].starts_with("identity 1 Some") && log[1].contains("\"d\""),
        "{log:?}"
    );
    assert!(log[2].starts_with("disconnect 1 Some"), "{log:?}");
    assert!(!log.join(" ").contains("s3cret"), "{log:?}");
    assert!(gw.connections().is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn the_codes_over_websocket() {
    let gw = ws_gateway(config(), WsHooks::new()).await;
    let mut ws = ws_connect(gw.local_addr()).await;
    let cases = [
        (
            json!({"procedure": "echo", "args": 1, "correlationId": 1}),
            200,
        ),
        (json!({"args": 1, "correlationId": 2}), 400),
        (json!({"procedure": 5, "correlationId": 3}), 400),
        (
            json!({"procedure": "secret-data", "scope": "internal", "correlationId": 4}),
            403,
        ),
        (
            json!({"procedure": "typed", "args": {"name": 1}, "correlationId": 5}),
            422,
        ),
        (json!({"procedure": "fail", "correlationId": 6}), 500),
        (json!({"procedure": "nope", "correlationId": 7}), 501),
        (json!({"procedure": "public-data", "correlationId": 8}), 200),
    ];
    for (frame, want) in cases {
        ws_send(&mut ws, frame.clone()).await;
        let v = ws_next(&mut ws).await.unwrap();
        assert_eq!(code_of(&v), want, "{frame} -> {v}");
        assert_eq!(v["correlationId"], frame["correlationId"], "{v}");
    }
    // Not JSON, not an object, a binary frame: 400, connection kept.
    for frame in [
        Message::text("nope"),
        Message::text("[1]"),
        Message::binary(vec![1, 2, 3]),
    ] {
        ws.send(frame).await.unwrap();
        assert_eq!(code_of(&ws_next(&mut ws).await.unwrap()), 400);
    }
    ws_send(&mut ws, call("echo", json!("still"), json!(9))).await;
    assert_eq!(ws_next(&mut ws).await.unwrap()["data"], "still");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_with_1009() {
    let mut cfg = config();
    cfg.limits.max_frame_bytes = 1024;
    let gw = ws_gateway(cfg, WsHooks::new()).await;
    let mut ws = ws_connect(gw.local_addr()).await;
    ws_send(&mut ws, call("echo", json!("x".repeat(2000)), json!(1))).await;
    assert_eq!(ws_close_code(&mut ws).await, Some(1009));
    gw.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_refused() {
    let mut cfg = config();
    cfg.limits.max_connections = 2;
    let gw = ws_gateway(cfg, WsHooks::new()).await;
    let _a = ws_connect(gw.local_addr()).await;
    let mut b = ws_connect(gw.local_addr()).await;
    let tcp = tokio::net::TcpStream::connect(gw.local_addr())
        .await
        .unwrap();
    let third = tokio_tungstenite::client_async(format!("ws://{}/", gw.local_addr()), tcp).await;
    assert!(third.is_err(), "the third connection is closed");
    // The others are served.
    ws_send(&mut b, call("echo", json!(1), json!(1))).await;
    assert_eq!(code_of(&ws_next(&mut b).await.unwrap()), 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_answers_calls_in_flight_then_closes_1001() {
    let gw = ws_gateway(config(), WsHooks::new()).await;
    let mut ws = ws_connect(gw.local_addr()).await;
    ws_send(&mut ws, call("sleep", json!({"ms": 300}), json!("late"))).await;
    // Wait until the call is running (the echo after it is answered).
    ws_send(&mut ws, call("echo", json!(0), json!("sync"))).await;
    assert_eq!(ws_next(&mut ws).await.unwrap()["correlationId"], "sync");
    let addr = gw.local_addr();
    let shutdown = tokio::spawn(gw.shutdown());
    let v = ws_next(&mut ws).await.unwrap();
    assert_eq!((code_of(&v), &v["correlationId"]), (200, &json!("late")));
    assert_eq!(ws_close_code(&mut ws).await, Some(1001));
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn the_per_ip_rate_limit_answers_429_over_websocket() {
    let mut cfg = config();
    cfg.limits.rate_limit = Some(jsonlink_gateway::RateLimit {
        per_second: 1.try_into().unwrap(),
        burst: 3.try_into().unwrap(),
    });
    let gw = ws_gateway(cfg, WsHooks::new()).await;
    let mut ws = ws_connect(gw.local_addr()).await;
    let mut codes = Vec::new();
    for i in 0..5 {
        ws_send(&mut ws, call("echo", json!(i), json!(i))).await;
        let v = ws_next(&mut ws).await.unwrap();
        assert_eq!(v["correlationId"], i);
        codes.push(code_of(&v));
    }
    assert_eq!(codes, [200, 200, 200, 429, 429]);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_panicking_hook_is_caught_and_the_connection_served() {
    let hooks = WsHooks::new()
        .on_client_connect(|_| panic!("hook bug"))
        .on_client_message(|_, _| panic!("hook bug"));
    let gw = ws_gateway(config(), hooks).await;
    let mut ws = ws_connect(gw.local_addr()).await;
    ws_send(&mut ws, json!({"clientMessage": 1})).await;
    ws_send(&mut ws, call("echo", json!("fine"), json!(1))).await;
    assert_eq!(ws_next(&mut ws).await.unwrap()["data"], "fine");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_header_timeout() {
    let mut cfg = config();
    cfg.limits.header_timeout = Duration::from_millis(300);
    let gw = ws_gateway(cfg, WsHooks::new()).await;
    let mut silent = Http1::connect(gw.local_addr()).await;
    assert!(silent.closed_within(Duration::from_secs(20)).await);
    assert!(gw.connections().is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_per_ip_limit_are_refused_and_the_slot_freed() {
    let mut cfg = config();
    cfg.limits.max_connections_per_ip = Some(1);
    let (hooks, mut log) = recording_hooks();
    let gw = ws_gateway(cfg, hooks).await;
    let mut a = ws_connect(gw.local_addr()).await;
    let tcp = tokio::net::TcpStream::connect(gw.local_addr())
        .await
        .unwrap();
    let second = tokio_tungstenite::client_async(format!("ws://{}/", gw.local_addr()), tcp).await;
    assert!(
        second.is_err(),
        "a second connection from 127.0.0.1 is closed"
    );
    a.close(None).await.unwrap();
    drop(a);
    wait_for_hook(&mut log, "disconnect 1").await;
    // The slot is free again.
    let mut b = ws_connect(gw.local_addr()).await;
    ws_send(&mut b, call("echo", json!(1), json!(1))).await;
    assert_eq!(code_of(&ws_next(&mut b).await.unwrap()), 200);
    gw.shutdown().await;
}
