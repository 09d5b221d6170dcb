//! Procedures over real jsonlink links on 127.0.0.1 (TLS, tokio): the codes,
//! identity and peer, nested calls, middleware, the error hook, deadlines,
//! both directions, the RpcClient's fallback rules; fault cases P3, P4, P6
//! (its stream half too; the streams themselves are in `stream.rs`).

mod common;

use common::{capture_logs, pair, record};
use futures_lite::StreamExt;
use jsonlink_rpc::{
    BoxFuture, CallInfo, CallRequest, CallResponse, ClientError, ErrorEvent, HandlerFault,
    Identity, LinkOptions, LinkTransport, Next, Origin, Procedure, Registry, RpcClient, RpcError,
    RpcTransport, Transport, TransportError, code,
};
use jsonlink_tokio::{self as jl, Reconnect};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "SECRET-TOKEN-7f3a9";

/// How often the `strict` procedure's handler ran (only the codes test
/// calls it).
static STRICT_RAN: AtomicUsize = AtomicUsize::new(0);

#[derive(Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

fn registry(events: Arc<Mutex<Vec<ErrorEvent>>>, seen: Arc<Mutex<Vec<String>>>) -> Registry {
    Registry::builder()
        .procedure(Procedure::new("add"), |_cx, a: Add| async move {
            Ok::<_, RpcError>(a.a + a.b)
        })
        .procedure(
            Procedure::new("strict").schema(json!({
                "type": "object",
                "properties": {"id": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}},
                "required": ["id", "name"],
                "additionalProperties": false
            })),
            |_cx, _: Value| {
                STRICT_RAN.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, RpcError>("ran") }
            },
        )
        .procedure(
            Procedure::new("all-locations").scope("internal").internal(true),
            |cx, _: Value| async move {
                Ok::<_, RpcError>(json!({
                    "locations": ["a", "b"],
                    "authorization": cx.identity().and_then(|i| i.authorization.as_ref()).map(|a| a.expose().to_owned()),
                    "device": cx.identity().and_then(|i| i.device_name.clone()),
                    "depth": cx.depth(),
                }))
            },
        )
        .procedure(Procedure::new("list-locations").scope("public"), |cx, _: Value| async move {
            cx.caller()
                .call_typed::<Value>(CallRequest::new("all-locations", Value::Null).scope("internal"))
                .await
        })
        .procedure(Procedure::new("whoami"), |cx, _: Value| async move {
            Ok::<_, RpcError>(json!({
                "authorization": cx.identity().and_then(|i| i.authorization.as_ref()).map(|a| a.expose().to_owned()),
                "peer": cx.origin().peer.as_ref().map(|p| format!("{}/{}", p.node, p.designation)),
                "transport": format!("{:?}", cx.origin().transport),
                "has_deadline": cx.deadline().is_some(),
            }))
        })
        .procedure(Procedure::new("fail"), |_cx, _: Value| async {
            Err::<(), _>(RpcError::internal("connection string postgres://u:pw@db"))
        })
        .procedure(Procedure::new("panic"), |_cx, _: Value| async {
            if true {
                panic!("index out of bounds in handler internals");
            }
            Ok::<(), RpcError>(())
        })
        .middleware_fn(move |call: &CallInfo<'_>, next: Next<'_>| -> BoxFuture<'_, CallResponse> {
            seen.lock().unwrap().push(format!(
                "{} {:?} {:?} {:?}",
                call.procedure,
                call.origin.transport,
                call.origin.peer.as_ref().map(|p| p.node.as_str()),
                call.identity
            ));
            next.run(call)
        })
        .middleware(jsonlink_rpc::Trace)
        .on_error(move |e| events.lock().unwrap().push(e.clone()))
        .build()
        .unwrap()
}

async fn rpc_call(client: &jl::Client, req: &CallRequest) -> CallResponse {
    client
        .request(&json!({"op": "rpc.call", "args": req}))
        .await
        .expect("link request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_codes_over_a_link() {
    let logs = capture_logs();
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let p = pair(
        registry(events.clone(), seen.clone()),
        LinkOptions::default(),
    )
    .await;
    let c = &p.client;
    let id = || Identity::with_authorization(TOKEN);

    // 200, correlation id echoed.
    let r = rpc_call(
        c,
        &CallRequest::new("add", json!({"a": 2, "b": 40})).correlation_id(json!("k1")),
    )
    .await;
    assert_eq!(
        r,
        CallResponse::ok(json!(42)).with_correlation_id(Some(json!("k1")))
    );

    // 400: not a CallRequest.
    for (body, needle) in [
        (json!({"op": "rpc.call", "args": [1, 2]}), "JSON object"),
        (
            json!({"op": "rpc.call", "args": {"args": 1}}),
            "`procedure` is required",
        ),
        (
            json!({"op": "rpc.call", "args": {"procedure": 7, "correlationId": 3}}),
            "`procedure` must be a string",
        ),
    ] {
        let r: CallResponse = c.request(&body).await.unwrap();
        assert_eq!(r.code, code::BAD_REQUEST, "{body}");
        assert!(r.message.as_deref().unwrap().contains(needle), "{r:?}");
    }
    let r: CallResponse = c
        .request(&json!({"op": "rpc.call", "args": {"procedure": 7, "correlationId": 3}}))
        .await
        .unwrap();
    assert_eq!(r.correlation_id, Some(json!(3)));

    // 403: internal-only from a link; the nested call from a public one works.
    let r = rpc_call(
        c,
        &CallRequest::new("all-locations", Value::Null)
            .scope("internal")
            .identity(id()),
    )
    .await;
    assert_eq!(r.code, code::FORBIDDEN);
    let r = rpc_call(
        c,
        &CallRequest::new("list-locations", Value::Null)
            .scope("public")
            .identity(id()),
    )
    .await;
    assert_eq!(r.code, code::OK, "{r:?}");
    assert_eq!(r.data.as_ref().unwrap()["authorization"], json!(TOKEN));
    assert_eq!(r.data.as_ref().unwrap()["depth"], json!(1));

    // 422: every failing path; the handler did not run.
    let r = rpc_call(
        c,
        &CallRequest::new(
            "strict",
            json!({"id": "x", "tags": [1, "ok", false], "extra": 1}),
        ),
    )
    .await;
    assert_eq!(r.code, code::UNPROCESSABLE);
    let m = r.message.unwrap();
    for path in ["at /id:", "at /tags/0:", "at /tags/2:", "at /:"] {
        assert!(m.contains(path), "{path} in {m}");
    }
    assert!(r.data.is_none());
    assert_eq!(
        STRICT_RAN.load(Ordering::SeqCst),
        0,
        "the handler did not run"
    );

    // 500 without detail, for an error and a panic; the hook saw both.
    let r = rpc_call(c, &CallRequest::new("fail", Value::Null).identity(id())).await;
    assert_eq!(r, CallResponse::error(500, "internal error"));
    let r = rpc_call(
        c,
        &CallRequest::new("panic", Value::Null)
            .identity(id())
            .correlation_id(json!(5)),
    )
    .await;
    assert_eq!(
        r,
        CallResponse::error(500, "internal error").with_correlation_id(Some(json!(5)))
    );
    {
        let ev = events.lock().unwrap();
        assert_eq!(ev.len(), 2);
        assert!(matches!(&ev[0].fault, HandlerFault::Error(m) if m.contains("postgres://")));
        assert!(
            matches!(&ev[1].fault, HandlerFault::Panic(m) if m.contains("index out of bounds"))
        );
        for e in ev.iter() {
            assert_eq!(e.origin.transport, Transport::Link);
            assert_eq!(e.origin.peer.as_ref().unwrap().node, "cli-1");
            assert!(e.authorized && e.identity.as_ref().unwrap().authorization.is_none());
        }
    }

    // 501.
    let r = rpc_call(c, &CallRequest::new("add", Value::Null).version("9")).await;
    assert_eq!(r.code, code::NOT_IMPLEMENTED);

    // Middleware saw the transport, the peer and a redacted identity.
    let seen = seen.lock().unwrap().join("\n");
    assert!(seen.contains(r#"add Link Some("cli-1")"#), "{seen}");
    assert!(seen.contains("<redacted>"), "{seen}");
    // The credential never reached a log line or a Debug output.
    assert!(!seen.contains(TOKEN));
    let text = logs.text();
    assert!(
        text.contains("procedure handler failed"),
        "the capture works: {text}"
    );
    assert!(!text.contains(TOKEN), "authorization in the logs");
    assert!(!format!("{:?}", events.lock().unwrap()).contains(TOKEN));
    record(
        "P3",
        "over a link: 422 naming /id, /tags/0, /tags/2 and / (required and additionalProperties) in one message; the handler not called",
    );
    p.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_identity_is_the_peer_never_the_authorization() {
    let p = pair(
        registry(Arc::default(), Arc::default()),
        LinkOptions::default(),
    )
    .await;
    let rpc = RpcClient::new(vec![Arc::new(LinkTransport::client(p.client.clone()))]);
    let who: Value = rpc
        .call_typed(CallRequest::new("whoami", Value::Null))
        .await
        .unwrap();
    // Without an identity set, nothing but the call was sent.
    assert_eq!(p.server.stats().requests_in, 1);
    assert_eq!(
        who,
        json!({"authorization": null, "peer": "cli-1/dashboard", "transport": "Link", "has_deadline": true})
    );
    p.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_is_set_once_per_link_and_resent_after_a_reconnect() {
    let pki = jl::DevPki::generate().unwrap();
    let secret = jl::Secret::generate().unwrap();
    let server = jl::server(
        pki.server_config().unwrap(),
        secret.clone(),
        jl::Identity::new("s", "s"),
    )
    .bind("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap();
    let reg = Registry::builder()
        .procedure(Procedure::new("whoami"), |cx, _: Value| async move {
            Ok::<_, RpcError>(
                cx.identity()
                    .and_then(|i| i.authorization.as_ref())
                    .map(|a| a.expose().to_owned()),
            )
        })
        .build()
        .unwrap();
    jsonlink_rpc::serve(
        server.handlers(),
        reg,
        jl::runtime(),
        LinkOptions::default(),
    );
    let (connected_tx, mut connected) = tokio::sync::mpsc::unbounded_channel();
    let client = jl::client(
        server.local_addr(),
        pki.client_config().unwrap(),
        pki.server_name(),
        secret,
        jl::Identity::new("c", "c"),
    )
    .reconnect(Reconnect::Backoff {
        base: Duration::from_millis(10),
        cap: Duration::from_millis(50),
    })
    .on_connect(move |link: jl::Link| {
        let _ = connected_tx.send(link.id());
        async {}
    })
    .connect()
    .await
    .unwrap();
    let first = connected.recv().await.unwrap();
    let rpc = RpcClient::new(vec![Arc::new(LinkTransport::client(client.clone()))]);
    rpc.set_identity(Some(Identity::with_authorization("jwt-A")));
    for _ in 0..3 {
        let who: Option<String> = rpc
            .call_typed(CallRequest::new("whoami", Value::Null))
            .await
            .unwrap();
        assert_eq!(who.as_deref(), Some("jwt-A"));
    }
    // A call's own identity wins for that call only.
    let who: Option<String> = rpc
        .call_typed(
            CallRequest::new("whoami", Value::Null)
                .identity(Identity::with_authorization("jwt-call")),
        )
        .await
        .unwrap();
    assert_eq!(who.as_deref(), Some("jwt-call"));
    // The server drops the link; the client reconnects (a new link id).
    for l in server.links() {
        l.close("test: drop").await;
    }
    let second = connected.recv().await.unwrap();
    assert_ne!(first, second);
    let link = client.wait_connected().await.unwrap();
    assert_eq!(link.id(), second);
    // The identity is sent again on the new link, without the caller's help.
    let who: Option<String> = rpc
        .call_typed(CallRequest::new("whoami", Value::Null))
        .await
        .unwrap();
    assert_eq!(who.as_deref(), Some("jwt-A"));
    // And a raw call on the new link (not through the transport) sees it too:
    // it is the link's identity now.
    let r: CallResponse = client
        .request(&json!({"op": "rpc.call", "args": {"procedure": "whoami"}}))
        .await
        .unwrap();
    assert_eq!(r.data, Some(json!("jwt-A")));
    // Cleared with None.
    rpc.set_identity(None);
    let who: Option<String> = rpc
        .call_typed(CallRequest::new("whoami", Value::Null))
        .await
        .unwrap();
    assert_eq!(who, None);
    client.close().await;
    server
        .shutdown(Instant::now() + Duration::from_secs(5))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_calls_procedures_on_the_client() {
    let p = pair(Registry::builder().build().unwrap(), LinkOptions::default()).await;
    let client_side = Registry::builder()
        .procedure(
            Procedure::new("status").scope("device"),
            |cx, _: Value| async move {
                Ok::<_, RpcError>(
                    json!({"ok": true, "peer": cx.origin().peer.as_ref().map(|p| p.node.clone())}),
                )
            },
        )
        .build()
        .unwrap();
    jsonlink_rpc::serve(
        p.client.handlers(),
        client_side,
        jl::runtime(),
        LinkOptions::default(),
    );
    let link = p.server.links().pop().expect("one link");
    let rpc = RpcClient::new(vec![Arc::new(LinkTransport::link(link))]);
    let r = rpc
        .call(CallRequest::new("status", Value::Null).scope("device"))
        .await
        .unwrap();
    assert_eq!(r.data, Some(json!({"ok": true, "peer": "srv-1"})));
    let r = rpc
        .call(CallRequest::new("nope", Value::Null))
        .await
        .unwrap();
    assert_eq!(r.code, code::NOT_IMPLEMENTED);
    p.close().await;
}

/// Signals when the handler's future is dropped.
struct DropFlag(Option<tokio::sync::oneshot::Sender<()>>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p6_panic_and_a_handler_that_never_returns() {
    let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel();
    let dropped_tx = Arc::new(Mutex::new(Some(dropped_tx)));
    let started = Arc::new(tokio::sync::Notify::new());
    let started2 = started.clone();
    let hooks = Arc::new(Mutex::new(Vec::<ErrorEvent>::new()));
    let hooks2 = hooks.clone();
    let (stream_dropped_tx, stream_dropped_rx) = tokio::sync::oneshot::channel();
    let stream_dropped_tx = Mutex::new(Some(stream_dropped_tx));
    let produced = Arc::new(AtomicUsize::new(0));
    let produced2 = produced.clone();
    let reg = Registry::builder()
        .stream_procedure(Procedure::new("ticks"), move |_cx, _: Value| {
            let flag = DropFlag(stream_dropped_tx.lock().unwrap().take());
            let produced = produced2.clone();
            futures_lite::stream::unfold((0u64, flag), move |(i, flag)| {
                produced.fetch_add(1, Ordering::SeqCst);
                async move { Some((Ok::<_, RpcError>(i), (i + 1, flag))) }
            })
        })
        .procedure(Procedure::new("forever"), move |_cx, _: Value| {
            let flag = DropFlag(dropped_tx.lock().unwrap().take());
            let started = started2.clone();
            async move {
                let _flag = flag;
                started.notify_one();
                std::future::pending::<()>().await;
                Ok::<(), RpcError>(())
            }
        })
        .procedure(Procedure::new("panic"), |_cx, _: Value| async {
            if true {
                panic!("secret internals");
            }
            Ok::<(), RpcError>(())
        })
        .procedure(Procedure::new("after"), |_cx, _: Value| async {
            Ok::<_, RpcError>("still serving")
        })
        .on_error(move |e| hooks2.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    let options = LinkOptions {
        call_timeout: Duration::from_millis(300),
        ..LinkOptions::default()
    };
    let p = pair(reg, options).await;
    let t0 = Instant::now();
    let forever = CallRequest::new("forever", Value::Null).correlation_id(json!("f"));
    let call = rpc_call(&p.client, &forever);
    let (r, ()) = tokio::join!(call, started.notified());
    let took = t0.elapsed();
    assert_eq!(
        r,
        CallResponse::error(500, "deadline exceeded").with_correlation_id(Some(json!("f")))
    );
    assert!(took >= Duration::from_millis(300), "{took:?}");
    // The handler's future was dropped: nothing left running.
    tokio::time::timeout(Duration::from_secs(5), dropped_rx)
        .await
        .expect("handler future dropped")
        .unwrap();
    let r = rpc_call(&p.client, &CallRequest::new("panic", Value::Null)).await;
    assert_eq!(r, CallResponse::error(500, "internal error"));
    assert!(!r.message.unwrap().contains("secret"));
    assert!(
        matches!(&hooks.lock().unwrap()[0].fault, HandlerFault::Panic(m) if m.contains("secret internals"))
    );
    let r = rpc_call(&p.client, &CallRequest::new("after", Value::Null)).await;
    assert_eq!(r.data, Some(json!("still serving")));
    // The stream half: an endless stream, window 2, cancelled by dropping
    // it after 3 items.
    let t = LinkTransport::client(p.client.clone())
        .runtime(jl::runtime())
        .window(2);
    let mut s = t
        .stream(CallRequest::new("ticks", Value::Null))
        .await
        .unwrap();
    for i in 0..3 {
        assert_eq!(s.next().await.unwrap().unwrap(), json!(i));
    }
    drop(s);
    tokio::time::timeout(Duration::from_secs(5), stream_dropped_rx)
        .await
        .expect("the producer's stream dropped on the cancel")
        .unwrap();
    let made = produced.load(Ordering::SeqCst);
    // 3 read + at most the window granted + the one in hand.
    assert!(made <= 3 + 2 + 1, "produced {made}");
    tokio::time::timeout(Duration::from_secs(5), async {
        while p.server.stats().requests_in_flight != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the stream's handler task ended");
    let r = rpc_call(&p.client, &CallRequest::new("ticks", Value::Null)).await;
    assert_eq!(r.code, code::BAD_REQUEST);
    record(
        "P6",
        "panic: 500 \"internal error\" (no internals), the error hook got the panic text, the server serves on; never-returning handler: 500 \"deadline exceeded\" at the 300 ms call timeout, its future dropped; stream: an endless stream (window 2) dropped by the caller after 3 items: rpc.cancel, the producer's stream dropped without another poll, at most 6 items made (3 read + the 2 granted + 1 in hand), its handler task ended; through the unary path: 400",
    );
    p.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4_internal_only_direct_403_nested_works_with_the_original_identity() {
    let p = pair(
        registry(Arc::default(), Arc::default()),
        LinkOptions::default(),
    )
    .await;
    let rpc = RpcClient::new(vec![Arc::new(LinkTransport::client(p.client.clone()))]);
    rpc.set_identity(Some(Identity {
        device_name: Some("phone-7".into()),
        ..Identity::with_authorization("jwt-P4")
    }));
    let direct = rpc
        .call(CallRequest::new("all-locations", Value::Null).scope("internal"))
        .await
        .unwrap();
    assert_eq!(direct.code, code::FORBIDDEN);
    let nested: Value = rpc
        .call_typed(CallRequest::new("list-locations", Value::Null).scope("public"))
        .await
        .unwrap();
    assert_eq!(
        nested,
        json!({"locations": ["a", "b"], "authorization": "jwt-P4", "device": "phone-7", "depth": 1})
    );
    // The registry half from a gateway origin, in process.
    let reg = registry(Arc::default(), Arc::default());
    for t in [Transport::Http, Transport::WebSocket] {
        let r = reg
            .call(
                CallRequest::new("all-locations", Value::Null).scope("internal"),
                Origin::new(t),
            )
            .await;
        assert_eq!(r.code, code::FORBIDDEN, "{t:?}");
    }
    let r = reg
        .call(
            CallRequest::new("list-locations", Value::Null)
                .scope("public")
                .identity(Identity::with_authorization("jwt-P4")),
            Origin::new(Transport::WebSocket),
        )
        .await;
    assert_eq!(r.data.unwrap()["authorization"], json!("jwt-P4"));
    record(
        "P4",
        "registry half: direct call from Http, WebSocket and Link origins 403; the nested call from a public procedure reached it (depth 1) with the original authorization and deviceName",
    );
    p.close().await;
}

/// A transport that counts its calls and answers as told.
struct Scripted {
    name: &'static str,
    calls: AtomicUsize,
    answer: fn() -> Result<CallResponse, TransportError>,
}

impl RpcTransport for Scripted {
    fn name(&self) -> &str {
        self.name
    }
    fn set_identity(&self, _: Option<Identity>) {}
    fn call(&self, _: CallRequest) -> BoxFuture<'_, Result<CallResponse, TransportError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { (self.answer)() })
    }
}

fn scripted(
    name: &'static str,
    answer: fn() -> Result<CallResponse, TransportError>,
) -> Arc<Scripted> {
    Arc::new(Scripted {
        name,
        calls: AtomicUsize::new(0),
        answer,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_only_when_a_transport_cannot_connect() {
    let p = pair(
        registry(Arc::default(), Arc::default()),
        LinkOptions::default(),
    )
    .await;
    // A client whose server is gone: unavailable, the call never sent.
    let dead = jl::client(
        {
            // A port nothing listens on: bound, then released.
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        },
        p.pki.client_config().unwrap(),
        p.pki.server_name(),
        p.secret.clone(),
        jl::Identity::new("d", "d"),
    )
    .start();
    let after = scripted("after", || Ok(CallResponse::ok(json!("not me"))));
    let rpc = RpcClient::new(vec![
        Arc::new(LinkTransport::client(dead.clone())),
        Arc::new(LinkTransport::client(p.client.clone())),
        after.clone(),
    ]);
    let r = rpc
        .call(CallRequest::new("add", json!({"a": 1, "b": 1})))
        .await
        .unwrap();
    assert_eq!(r.data, Some(json!(2)));
    // An answer with an error code is an answer: no fallback.
    let r = rpc
        .call(CallRequest::new("nope", Value::Null))
        .await
        .unwrap();
    assert_eq!(r.code, 501);
    assert_eq!(after.calls.load(Ordering::SeqCst), 0);

    // A failure after sending is never retried elsewhere.
    let failed = scripted("lost", || {
        Err(TransportError::Failed("connection lost".into()))
    });
    let next = scripted("next", || Ok(CallResponse::ok(Value::Null)));
    let rpc = RpcClient::new(vec![failed.clone(), next.clone()]);
    let e = rpc
        .call(CallRequest::new("add", Value::Null))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ClientError::Failed { transport, .. } if transport == "lost"),
        "{e}"
    );
    assert_eq!(
        (
            failed.calls.load(Ordering::SeqCst),
            next.calls.load(Ordering::SeqCst)
        ),
        (1, 0)
    );

    // Nothing can connect: NoTransport naming each.
    let rpc = RpcClient::new(vec![Arc::new(LinkTransport::client(dead.clone()))]);
    let e = rpc
        .call(CallRequest::new("add", Value::Null))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ClientError::NoTransport(v) if v.len() == 1 && v[0].0 == "link"),
        "{e}"
    );

    // A link lost while the call runs is Failed, not a fallback.
    let running = Arc::new(tokio::sync::Notify::new());
    let running2 = running.clone();
    let reg = Registry::builder()
        .procedure(Procedure::new("drop-me"), move |_cx, _: Value| {
            let running = running2.clone();
            async move {
                running.notify_one();
                std::future::pending::<()>().await;
                Ok::<(), RpcError>(())
            }
        })
        .build()
        .unwrap();
    let q = pair(reg, LinkOptions::default()).await;
    let next = scripted("next", || Ok(CallResponse::ok(Value::Null)));
    let rpc = RpcClient::new(vec![
        Arc::new(LinkTransport::client(q.client.clone())),
        next.clone(),
    ]);
    let server = q.server.clone();
    let call =
        tokio::spawn(async move { rpc.call(CallRequest::new("drop-me", Value::Null)).await });
    // Once the handler runs, drop the link under it.
    running.notified().await;
    // (The server's graceful close waits for the call in flight up to its
    // close timeout, 200 ms in these tests.)
    for l in server.links() {
        l.close("test: cut").await;
    }
    let e = call.await.unwrap().unwrap_err();
    assert!(
        matches!(&e, ClientError::Failed { transport, .. } if transport == "link"),
        "{e}"
    );
    assert_eq!(next.calls.load(Ordering::SeqCst), 0);
    dead.close().await;
    p.close().await;
    // The never-ending handler is still in flight (until its call timeout):
    // no drain to wait for.
    q.client.close().await;
    q.server.shutdown(Instant::now()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_depth_limit_applies_over_links() {
    let options = LinkOptions {
        parse: jsonlink_rpc::ParseLimits {
            max_depth: 8,
            ..jsonlink_rpc::ParseLimits::default()
        },
        ..LinkOptions::default()
    };
    let p = pair(registry(Arc::default(), Arc::default()), options).await;
    let rpc = RpcClient::new(vec![Arc::new(LinkTransport::client(p.client.clone()))]);
    let mut deep = json!(1);
    for _ in 0..20 {
        deep = json!([deep]);
    }
    let r = rpc.call(CallRequest::new("add", deep)).await.unwrap();
    assert_eq!(r.code, code::BAD_REQUEST);
    assert!(r.message.unwrap().contains("nested deeper than 8"));
    let r = rpc
        .call(CallRequest::new("add", json!({"a": 1, "b": [[[2]]]})))
        .await
        .unwrap();
    assert_eq!(
        r.code,
        code::UNPROCESSABLE,
        "shallow enough to reach the handler"
    );
    p.close().await;
}
