//! The `client` feature's transports against the gateways over real
//! sockets on 127.0.0.1: HTTP/1.1 and HTTP/2, plain and TLS; WebSocket
//! plain and TLS; the identity re-sent after a WebSocket reconnect; server
//! messages; fallback only when a call was not sent.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use jsonlink_gateway::client::{HttpTransport, TransportOptions, WsTransport};
use jsonlink_gateway::{GatewayConfig, HttpGateway, WsGateway, WsHooks};
use jsonlink_rpc::{
    CallRequest, CallResponse, ClientError, Identity, Procedure, Registry, RpcClient, RpcTransport,
};
use jsonlink_rt::DevPki;
use serde_json::{Value, json};

fn tls_pair() -> (GatewayConfig, TransportOptions) {
    let pki = DevPki::generate().expect("dev certs");
    let mut cfg = config();
    cfg.tls = Some(Arc::new(pki.server_config().expect("server config")));
    let opts = TransportOptions {
        tls: Some(Arc::new(pki.client_config().expect("client config"))),
        ..TransportOptions::default()
    };
    (cfg, opts)
}

async fn who(t: &dyn RpcTransport) -> Value {
    let r = t
        .call(CallRequest::new("whoami", Value::Null))
        .await
        .expect("answered");
    assert_eq!(r.code, 200, "{r:?}");
    r.data.expect("data")
}

#[tokio::test]
async fn http_transport_over_http1_and_http2_plain_and_tls() {
    let plain = http_gateway(config()).await;
    let (tls_cfg, tls_opts) = tls_pair();
    let tls = http_gateway(tls_cfg).await;
    let cases = [
        (
            format!("http://{}/", plain.local_addr()),
            TransportOptions::default(),
            false,
        ),
        (
            format!("http://{}/", plain.local_addr()),
            TransportOptions::default(),
            true,
        ),
        (
            format!("https://{}/", tls.local_addr()),
            tls_opts.clone(),
            false,
        ),
        (
            format!("https://{}/", tls.local_addr()),
            tls_opts.clone(),
            true,
        ),
    ];
    for (url, mut opts, h2) in cases {
        opts.http2_only = h2;
        let t = HttpTransport::new(&url, opts).expect("transport");
        let r = t
            .call(CallRequest::new("echo", json!({"n": 1})).correlation_id(json!("c")))
            .await
            .expect("answered");
        assert_eq!(
            (r.code, r.data.clone(), r.correlation_id.clone()),
            (200, Some(json!({"n": 1})), Some(json!("c"))),
            "{url} h2={h2}"
        );
        // The identity goes with every call.
        t.set_identity(Some(Identity {
            device_name: Some("rust".into()),
            ..Identity::with_authorization("tok")
        }));
        assert_eq!(
            who(&t).await,
            json!({"deviceName": "rust", "hasAuthorization": true}),
            "{url}"
        );
        // 64 calls in flight on one transport.
        let calls = (0..64).map(|i| t.call(CallRequest::new("echo", json!(i))));
        let answers = futures_util::future::join_all(calls).await;
        for (i, a) in answers.into_iter().enumerate() {
            assert_eq!(a.expect("answered").data, Some(json!(i)));
        }
    }
    plain.shutdown().await;
    tls.shutdown().await;
}

#[tokio::test]
async fn ws_transport_resends_the_identity_after_a_reconnect() {
    for secure in [false, true] {
        let (cfg, opts) = if secure {
            tls_pair()
        } else {
            (config(), TransportOptions::default())
        };
        let (hooks, mut log) = recording_hooks();
        let gw = ws_gateway(cfg, hooks).await;
        let scheme = if secure { "wss" } else { "ws" };
        let t =
            WsTransport::new(&format!("{scheme}://{}/", gw.local_addr()), opts).expect("transport");
        t.set_identity(Some(Identity {
            device_name: Some("first".into()),
            ..Identity::with_authorization("tok")
        }));
        assert_eq!(
            who(&t).await,
            json!({"deviceName": "first", "hasAuthorization": true})
        );
        assert_eq!(t.connects(), 1);

        // The server drops the connection; the next call reconnects and
        // sends the identity again first.
        let id = gw.connections()[0].connection_id;
        assert!(gw.disconnect(id));
        t.disconnected().await;
        assert!(!t.is_connected().await);
        assert_eq!(
            who(&t).await,
            json!({"deviceName": "first", "hasAuthorization": true})
        );
        assert_eq!(t.connects(), 2);
        let log = wait_for_hook(&mut log, "identity 2").await;
        assert!(log.iter().any(|l| l.starts_with("disconnect 1")), "{log:?}");

        // Answers out of order on one connection, each to its caller.
        let slow =
            t.call(CallRequest::new("sleep", json!({"ms": 200})).correlation_id(json!("slow")));
        let fast =
            t.call(CallRequest::new("sleep", json!({"ms": 0})).correlation_id(json!("fast")));
        let (s, f) = tokio::join!(slow, fast);
        let (s, f) = (s.unwrap(), f.unwrap());
        assert_eq!(
            (s.correlation_id, s.data),
            (Some(json!("slow")), Some(json!(200)))
        );
        assert_eq!(
            (f.correlation_id, f.data),
            (Some(json!("fast")), Some(json!(0)))
        );
        drop(t);
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn ws_transport_receives_server_messages_and_sends_client_messages() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let hooks = WsHooks::new().on_client_message(move |i, m| {
        let _ = tx.send((i.connection_id, m.clone()));
    });
    let gw = ws_gateway(config(), hooks).await;
    let t = WsTransport::new(
        &format!("ws://{}/", gw.local_addr()),
        TransportOptions::default(),
    )
    .unwrap();
    let mut messages = t.server_messages().expect("the receiver, once");
    assert!(t.server_messages().is_none());
    t.send_client_message(json!({"hi": 1})).await.unwrap();
    let (id, m) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m, json!({"hi": 1}));
    gw.send_message_to_client(id, json!(["pushed"])).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), messages.recv())
        .await
        .unwrap();
    assert_eq!(got, Some(json!(["pushed"])));
    drop(t);
    gw.shutdown().await;
}

#[tokio::test]
async fn the_client_falls_back_only_when_the_call_was_not_sent() {
    // A port nobody listens on: the WebSocket transport is unavailable, the
    // call goes over HTTP.
    let unused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let http = http_gateway(config()).await;
    let ws_dead =
        WsTransport::new(&format!("ws://{unused}/"), TransportOptions::default()).unwrap();
    let http_t = HttpTransport::new(
        &format!("http://{}/", http.local_addr()),
        TransportOptions::default(),
    )
    .unwrap();
    let client = RpcClient::new(vec![Arc::new(ws_dead), Arc::new(http_t)]);
    let r = client
        .call(CallRequest::new("echo", json!("via http")))
        .await
        .expect("answered");
    assert_eq!(r.data, Some(json!("via http")));

    // A call sent over WebSocket that is never answered in time has failed:
    // it is not run again over HTTP.
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = |runs: Arc<AtomicUsize>| {
        Registry::builder()
            .raw_procedure(Procedure::new("slow-count"), move |_ctx, _args| {
                runs.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    CallResponse::ok(Value::Null)
                }
            })
            .build()
            .unwrap()
    };
    let ws_gw = WsGateway::bind(
        "127.0.0.1:0",
        counted(runs.clone()),
        config(),
        WsHooks::new(),
    )
    .await
    .unwrap();
    let http_gw = HttpGateway::bind("127.0.0.1:0", counted(runs.clone()), config())
        .await
        .unwrap();
    let ws_t = WsTransport::new(
        &format!("ws://{}/", ws_gw.local_addr()),
        TransportOptions {
            timeout: Some(Duration::from_millis(300)),
            ..TransportOptions::default()
        },
    )
    .unwrap();
    let http_t = HttpTransport::new(
        &format!("http://{}/", http_gw.local_addr()),
        TransportOptions::default(),
    )
    .unwrap();
    let client = RpcClient::new(vec![Arc::new(ws_t), Arc::new(http_t)]);
    let e = client
        .call(CallRequest::new("slow-count", Value::Null))
        .await
        .expect_err("timed out");
    assert!(
        matches!(&e, ClientError::Failed { transport, .. } if transport == "ws"),
        "{e:?}"
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "run once, not retried over HTTP"
    );

    // Nothing listening anywhere: NoTransport, naming both.
    let a = WsTransport::new(&format!("ws://{unused}/"), TransportOptions::default()).unwrap();
    let b = HttpTransport::new(&format!("http://{unused}/"), TransportOptions::default()).unwrap();
    let client = RpcClient::new(vec![Arc::new(a), Arc::new(b)]);
    match client.call(CallRequest::new("echo", Value::Null)).await {
        Err(ClientError::NoTransport(v)) => assert_eq!(
            v.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["ws", "http"]
        ),
        other => panic!("{other:?}"),
    }
    http.shutdown().await;
    ws_gw.shutdown().await;
    http_gw.shutdown().await;
}

#[tokio::test]
async fn ws_transport_applies_a_changed_identity_before_the_next_call() {
    let gw = ws_gateway(config(), WsHooks::new()).await;
    let t = WsTransport::new(
        &format!("ws://{}/", gw.local_addr()),
        TransportOptions::default(),
    )
    .unwrap();
    // No identity, then a first one on the same connection.
    assert_eq!(
        who(&t).await,
        json!({"deviceName": null, "hasAuthorization": false})
    );
    let id = |device: &str, auth: &str| Identity {
        device_name: Some(device.into()),
        ..Identity::with_authorization(auth)
    };
    t.set_identity(Some(id("one", "a")));
    assert_eq!(
        who(&t).await,
        json!({"deviceName": "one", "hasAuthorization": true})
    );
    // The same credential, another device name: still the same connection.
    t.set_identity(Some(id("two", "a")));
    assert_eq!(
        who(&t).await,
        json!({"deviceName": "two", "hasAuthorization": true})
    );
    assert_eq!(t.connects(), 1);
    // Another credential: a new connection (the gateway would close the old).
    t.set_identity(Some(id("three", "b")));
    assert_eq!(
        who(&t).await,
        json!({"deviceName": "three", "hasAuthorization": true})
    );
    assert_eq!(t.connects(), 2);
    // No identity at all: a new connection without one.
    t.set_identity(None);
    assert_eq!(
        who(&t).await,
        json!({"deviceName": null, "hasAuthorization": false})
    );
    assert_eq!(t.connects(), 3);
    drop(t);
    gw.shutdown().await;
}
