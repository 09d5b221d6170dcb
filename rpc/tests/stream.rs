//! Stream procedures over real jsonlink links on 127.0.0.1 (TLS, tokio):
//! items in order and the end, credit (backpressure), cancellation by
//! dropping the stream (the producer is not polled again, its task ends),
//! the deadline, error items and panics, and a stream called through the
//! unary path (400).

mod common;

use common::pair;
use futures_lite::StreamExt;
use jsonlink_rpc::{
    CallRequest, ErrorEvent, HandlerFault, LinkOptions, LinkTransport, Procedure, Registry,
    RpcClient, RpcError, RpcStream, StreamError, code,
};
use jsonlink_tokio as jl;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

#[derive(Deserialize)]
struct Count {
    n: u64,
}

/// Fires its sender when dropped: the handler's stream is gone.
struct DropFlag(Option<oneshot::Sender<()>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// What the `gated` and `endless` procedures report to the test.
#[derive(Default)]
struct Probe {
    /// The gate of the next `gated` stream: each value sent is one item.
    gate: Mutex<Option<mpsc::UnboundedReceiver<u64>>>,
    /// Fired when the handler's stream is dropped.
    dropped: Mutex<Option<oneshot::Sender<()>>>,
    /// Items `endless` has produced.
    produced: Option<watch::Sender<usize>>,
}

fn registry(probe: Arc<Probe>, hooks: Arc<Mutex<Vec<ErrorEvent>>>) -> Registry {
    let p1 = probe.clone();
    let p2 = probe.clone();
    let p3 = probe;
    Registry::builder()
        .stream_procedure(Procedure::new("count"), |_cx, a: Count| {
            futures_lite::stream::iter((0..a.n).map(Ok::<_, RpcError>))
        })
        .stream_procedure(Procedure::new("gated"), move |_cx, _: Value| {
            let rx = p1.gate.lock().unwrap().take().expect("a gate");
            let flag = DropFlag(p1.dropped.lock().unwrap().take());
            futures_lite::stream::unfold((rx, flag), |(mut rx, flag)| async move {
                let v = rx.recv().await?;
                Some((Ok::<_, RpcError>(v), (rx, flag)))
            })
        })
        .stream_procedure(Procedure::new("endless"), move |_cx, _: Value| {
            let flag = DropFlag(p2.dropped.lock().unwrap().take());
            let produced = p2.produced.clone().expect("a counter");
            futures_lite::stream::unfold((0usize, flag), move |(i, flag)| {
                produced.send_replace(i + 1);
                async move { Some((Ok::<_, RpcError>(i), (i + 1, flag))) }
            })
        })
        .stream_procedure(Procedure::new("one-then-stall"), move |_cx, _: Value| {
            let flag = DropFlag(p3.dropped.lock().unwrap().take());
            futures_lite::stream::once(Ok::<_, RpcError>(json!("first"))).chain(
                futures_lite::stream::unfold(flag, |flag| async move {
                    let _keep = &flag;
                    std::future::pending::<()>().await;
                    Some((Ok(Value::Null), flag))
                }),
            )
        })
        .stream_procedure(Procedure::new("fails"), |_cx, _: Value| {
            futures_lite::stream::iter([
                Ok(json!(1)),
                Err(RpcError::internal("db password=hunter2 refused")),
                Ok(json!(2)),
            ])
        })
        .stream_procedure(Procedure::new("forbidden-late"), |_cx, _: Value| {
            futures_lite::stream::iter([Ok(json!(1)), Err(RpcError::forbidden("no more for you"))])
        })
        .stream_procedure(Procedure::new("panics"), |_cx, _: Value| {
            futures_lite::stream::iter(0..3u32).map(|i| {
                if i == 1 {
                    panic!("secret stream internals");
                }
                Ok::<_, RpcError>(i)
            })
        })
        .procedure(Procedure::new("add"), |_cx, a: Count| async move {
            Ok::<_, RpcError>(a.n + 1)
        })
        .on_error(move |e| hooks.lock().unwrap().push(e.clone()))
        .build()
        .unwrap()
}

fn transport(client: &jl::Client, window: u32) -> LinkTransport {
    LinkTransport::client(client.clone())
        .runtime(jl::runtime())
        .window(window)
}

async fn open(t: &LinkTransport, req: CallRequest) -> RpcStream {
    t.stream(req).await.expect("stream opened")
}

async fn collect(mut s: RpcStream) -> (Vec<Value>, Option<StreamError>) {
    let mut items = Vec::new();
    while let Some(item) = s.next().await {
        match item {
            Ok(v) => items.push(v),
            Err(e) => {
                assert!(s.next().await.is_none(), "nothing after an error");
                return (items, Some(e));
            }
        }
    }
    (items, None)
}

/// Waits until the server has no request in flight (the stream's handler
/// task answered and ended).
async fn no_request_in_flight(server: &jl::Server) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while server.stats().requests_in_flight != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the stream's handler task ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_arrive_in_order_then_the_end_with_a_small_window() {
    let p = pair(
        registry(Arc::default(), Arc::default()),
        LinkOptions::default(),
    )
    .await;
    for window in [1, 4, 16] {
        let t = transport(&p.client, window);
        let s = open(&t, CallRequest::new("count", json!({"n": 100}))).await;
        let (items, err) = collect(s).await;
        assert_eq!(err, None, "window {window}");
        assert_eq!(items, (0..100).map(|i| json!(i)).collect::<Vec<_>>());
    }
    // Empty stream: just the end.
    let t = transport(&p.client, 4);
    let (items, err) = collect(open(&t, CallRequest::new("count", json!({"n": 0}))).await).await;
    assert!(items.is_empty() && err.is_none());
    // Through the RpcClient too.
    let rpc = RpcClient::new(vec![Arc::new(transport(&p.client, 8))]);
    let s = rpc
        .stream(CallRequest::new("count", json!({"n": 5})))
        .await
        .unwrap();
    assert_eq!(
        collect(s).await.0,
        (0..5).map(|i| json!(i)).collect::<Vec<_>>()
    );
    no_request_in_flight(&p.server).await;
    p.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_waits_for_credit_backpressure() {
    let (tx, mut rx) = watch::channel(0usize);
    let (dropped_tx, dropped_rx) = oneshot::channel();
    let probe = Arc::new(Probe {
        produced: Some(tx),
        dropped: Mutex::new(Some(dropped_tx)),
        ..Probe::default()
    });
    let p = pair(registry(probe, Arc::default()), LinkOptions::default()).await;
    let window = 4;
    let t = transport(&p.client, window);
    let mut s = open(&t, CallRequest::new("endless", Value::Null)).await;
    assert_eq!(s.next().await.unwrap().unwrap(), json!(0));
    // Not read further: the producer makes the window's worth (credit
    // taken before producing: it may have the next item in hand) and stops.
    let bound = 1 + window as usize + 1;
    drop(rx.wait_for(|n| *n >= window as usize).await.unwrap());
    let quiet = tokio::time::timeout(Duration::from_millis(300), rx.wait_for(|n| *n > bound))
        .await
        .is_err();
    assert!(
        quiet,
        "produced {} with 1 read and window {window}",
        *rx.borrow()
    );
    // Reading on gives credit back: it goes on.
    for i in 1..50 {
        assert_eq!(s.next().await.unwrap().unwrap(), json!(i));
    }
    assert!(*rx.borrow() <= 50 + window as usize + 1, "{}", *rx.borrow());
    // Dropping it cancels: the producer's stream is dropped, its task ends,
    // and it produced at most what was granted (within one item).
    let read = 50;
    drop(s);
    tokio::time::timeout(Duration::from_secs(5), dropped_rx)
        .await
        .expect("producer dropped")
        .unwrap();
    let produced = *rx.borrow();
    assert!(
        produced <= read + window as usize + 1,
        "produced {produced}"
    );
    no_request_in_flight(&p.server).await;
    p.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_stops_the_producer_without_another_item() {
    let (gate_tx, gate_rx) = mpsc::unbounded_channel();
    let (dropped_tx, dropped_rx) = oneshot::channel();
    let probe = Arc::new(Probe {
        gate: Mutex::new(Some(gate_rx)),
        dropped: Mutex::new(Some(dropped_tx)),
        ..Probe::default()
    });
    let p = pair(registry(probe, Arc::default()), LinkOptions::default()).await;
    let t = transport(&p.client, 8);
    let mut s = open(&t, CallRequest::new("gated", Value::Null)).await;
    for i in 0..3u64 {
        gate_tx.send(i).unwrap();
        assert_eq!(s.next().await.unwrap().unwrap(), json!(i));
    }
    let tasks_before_drop = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    drop(s);
    // The callee dropped the handler's stream on the cancel, without
    // polling it again: its gate is closed, so no further item can be made.
    tokio::time::timeout(Duration::from_secs(5), dropped_rx)
        .await
        .expect("producer dropped on cancel")
        .unwrap();
    assert!(gate_tx.send(3).is_err(), "the producer's receiver is gone");
    no_request_in_flight(&p.server).await;
    // The cancel's send task ended too: no more tasks than before.
    tokio::time::timeout(Duration::from_secs(5), async {
        while tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
            > tasks_before_drop
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("no task left behind");
    // The link serves on.
    let t2 = transport(&p.client, 2);
    let (items, _) = collect(open(&t2, CallRequest::new("count", json!({"n": 3}))).await).await;
    assert_eq!(items.len(), 3);
    p.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_ends_a_stalled_stream() {
    let (dropped_tx, dropped_rx) = oneshot::channel();
    let probe = Arc::new(Probe {
        dropped: Mutex::new(Some(dropped_tx)),
        ..Probe::default()
    });
    let options = LinkOptions {
        stream_timeout: Duration::from_millis(300),
        ..LinkOptions::default()
    };
    let p = pair(registry(probe, Arc::default()), options).await;
    let t = transport(&p.client, 4);
    let t0 = std::time::Instant::now();
    let (items, err) =
        collect(open(&t, CallRequest::new("one-then-stall", Value::Null)).await).await;
    assert_eq!(items, vec![json!("first")]);
    assert_eq!(
        err,
        Some(StreamError::Answer {
            code: code::INTERNAL,
            message: "deadline exceeded".into()
        })
    );
    assert!(t0.elapsed() >= Duration::from_millis(300));
    tokio::time::timeout(Duration::from_secs(5), dropped_rx)
        .await
        .expect("producer dropped at the deadline")
        .unwrap();
    no_request_in_flight(&p.server).await;
    p.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_items_and_panics_end_the_stream_without_internals() {
    let hooks = Arc::new(Mutex::new(Vec::new()));
    let p = pair(
        registry(Arc::default(), hooks.clone()),
        LinkOptions::default(),
    )
    .await;
    let t = transport(&p.client, 4);
    let internal = Some(StreamError::Answer {
        code: code::INTERNAL,
        message: "internal error".into(),
    });
    let (items, err) = collect(open(&t, CallRequest::new("fails", Value::Null)).await).await;
    assert_eq!((items, err), (vec![json!(1)], internal.clone()));
    let (items, err) = collect(open(&t, CallRequest::new("panics", Value::Null)).await).await;
    assert_eq!((items, err), (vec![json!(0)], internal));
    let (items, err) =
        collect(open(&t, CallRequest::new("forbidden-late", Value::Null)).await).await;
    assert_eq!(
        (items, err),
        (
            vec![json!(1)],
            Some(StreamError::Answer {
                code: code::FORBIDDEN,
                message: "no more for you".into()
            })
        )
    );
    let hooks = hooks.lock().unwrap().clone();
    assert_eq!(hooks.len(), 2, "{hooks:?}");
    assert!(matches!(&hooks[0].fault, HandlerFault::Error(m) if m.contains("hunter2")));
    assert!(
        matches!(&hooks[1].fault, HandlerFault::Panic(m) if m.contains("secret stream internals"))
    );
    p.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_through_the_unary_path_is_400_and_the_other_way_round() {
    let p = pair(
        registry(Arc::default(), Arc::default()),
        LinkOptions::default(),
    )
    .await;
    let t = transport(&p.client, 4);
    let rpc = RpcClient::new(vec![Arc::new(transport(&p.client, 4))]);
    let r = rpc
        .call(CallRequest::new("count", json!({"n": 3})).correlation_id(json!("u1")))
        .await
        .unwrap();
    assert_eq!(r.code, code::BAD_REQUEST);
    assert_eq!(r.correlation_id, Some(json!("u1")));
    assert!(
        r.message
            .as_deref()
            .unwrap()
            .contains("global::count::1 is a stream procedure"),
        "{r:?}"
    );
    let (items, err) = collect(open(&t, CallRequest::new("add", json!({"n": 1}))).await).await;
    assert!(items.is_empty());
    assert!(
        matches!(&err, Some(StreamError::Answer { code: 400, message }) if message.contains("not a stream procedure")),
        "{err:?}"
    );
    let (_, err) = collect(open(&t, CallRequest::new("nope", Value::Null)).await).await;
    assert!(
        matches!(err, Some(StreamError::Answer { code: 501, .. })),
        "{err:?}"
    );
    let (_, err) = collect(open(&t, CallRequest::new("count", json!({"n": "x"}))).await).await;
    assert!(
        matches!(err, Some(StreamError::Answer { code: 422, .. })),
        "{err:?}"
    );
    // Without a runtime the transport cannot stream: unavailable, nothing sent.
    let bare = LinkTransport::client(p.client.clone());
    assert!(matches!(
        bare.stream(CallRequest::new("count", json!({"n": 1})))
            .await,
        Err(jsonlink_rpc::TransportError::Unavailable(_))
    ));
    p.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_takes_a_stream_from_its_client() {
    let p = pair(
        registry(Arc::default(), Arc::default()),
        LinkOptions::default(),
    )
    .await;
    let client_side = Registry::builder()
        .stream_procedure(
            Procedure::new("readings").scope("device"),
            |cx, _: Value| {
                let peer = cx.origin().peer.as_ref().map(|p| p.node.clone());
                futures_lite::stream::iter(
                    (0..20u32).map(move |i| Ok::<_, RpcError>(json!([i, peer]))),
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
    let t = LinkTransport::link(link).runtime(jl::runtime()).window(3);
    let (items, err) = collect(
        open(
            &t,
            CallRequest::new("readings", Value::Null).scope("device"),
        )
        .await,
    )
    .await;
    assert_eq!(err, None);
    assert_eq!(items.len(), 20);
    assert_eq!(items[19], json!([19, "srv-1"]));
    p.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_at_once_on_one_link_stay_apart() {
    let p = pair(
        registry(Arc::default(), Arc::default()),
        LinkOptions::default(),
    )
    .await;
    let t = Arc::new(transport(&p.client, 2));
    let mut tasks = Vec::new();
    for k in 0..8u64 {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let s = t
                .stream(CallRequest::new("count", json!({"n": 30 + k})))
                .await
                .unwrap();
            collect(s).await
        }));
    }
    for (k, task) in tasks.into_iter().enumerate() {
        let (items, err) = task.await.unwrap();
        assert_eq!(err, None);
        assert_eq!(
            items,
            (0..30 + k as u64).map(|i| json!(i)).collect::<Vec<_>>()
        );
    }
    no_request_in_flight(&p.server).await;
    p.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_link_ends_the_stream_on_both_sides() {
    let (gate_tx, gate_rx) = mpsc::unbounded_channel();
    let (dropped_tx, dropped_rx) = oneshot::channel();
    let probe = Arc::new(Probe {
        gate: Mutex::new(Some(gate_rx)),
        dropped: Mutex::new(Some(dropped_tx)),
        ..Probe::default()
    });
    let options = LinkOptions {
        stream_link_check: Duration::from_millis(50),
        ..LinkOptions::default()
    };
    let p = pair(registry(probe, Arc::default()), options).await;
    let t = transport(&p.client, 4);
    let mut s = open(&t, CallRequest::new("gated", Value::Null)).await;
    gate_tx.send(7).unwrap();
    assert_eq!(s.next().await.unwrap().unwrap(), json!(7));
    // The server drops the link (its close waits 200 ms for the stream's
    // answer, then ends it); the producer is waiting on its gate.
    let link = p.server.links().pop().expect("one link");
    link.close("going away").await;
    tokio::time::timeout(Duration::from_secs(5), dropped_rx)
        .await
        .expect("the producer dropped once the link was lost")
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("the caller's stream ends");
    assert!(
        matches!(next, Some(Err(StreamError::Failed(_)))),
        "{next:?}"
    );
    assert!(s.next().await.is_none());
    p.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_falls_back_only_past_transports_that_cannot_stream() {
    let p = pair(
        registry(Arc::default(), Arc::default()),
        LinkOptions::default(),
    )
    .await;
    // The first cannot stream (no runtime): unavailable, nothing sent; the
    // second takes the stream.
    let rpc = RpcClient::new(vec![
        Arc::new(LinkTransport::client(p.client.clone())),
        Arc::new(transport(&p.client, 4)),
    ]);
    let s = rpc
        .stream(CallRequest::new("count", json!({"n": 4})))
        .await
        .unwrap();
    assert_eq!(collect(s).await.0.len(), 4);
    let none = RpcClient::new(vec![Arc::new(LinkTransport::client(p.client.clone()))]);
    match none
        .stream(CallRequest::new("count", json!({"n": 4})))
        .await
    {
        Err(jsonlink_rpc::ClientError::NoTransport(why)) => {
            assert_eq!(why.len(), 1);
            assert!(why[0].1.contains("runtime"), "{why:?}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    p.close().await;
}
