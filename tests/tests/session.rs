//! End-to-end: the async layer over real TLS on 127.0.0.1. Every test is
//! bounded in time and synchronises on events, never on sleeps.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jsonlink_rt::{
    Client, ClientBuilder, DevPki, Error, Event, EventKind, Identity, Link, Reconnect, RemoteError,
    Request, Runtime, Secret, Server, ServerBuilder,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(20);

/// Runs `test` on a multi-threaded tokio runtime, failing after LIMIT.
fn on_tokio<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Runtime>) -> Fut,
    Fut: Future<Output = ()>,
{
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rt: Arc<dyn Runtime> = Arc::new(jsonlink_tokio::TokioRuntime::from_handle(
        tokio.handle().clone(),
    ));
    tokio.block_on(async {
        tokio::time::timeout(LIMIT, test(rt))
            .await
            .expect("test timed out")
    });
}

/// Runs `test` on smol, failing after LIMIT.
fn on_smol<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Runtime>) -> Fut,
    Fut: Future<Output = ()>,
{
    let rt: Arc<dyn Runtime> = Arc::new(jsonlink_smol::SmolRuntime::global());
    smol::block_on(smol::future::or(
        async {
            test(rt).await;
            true
        },
        async {
            smol::Timer::after(LIMIT).await;
            false
        },
    ))
    .then_some(())
    .expect("test timed out");
}

/// Certificates, a secret, and builders wired to them.
struct Fixture {
    rt: Arc<dyn Runtime>,
    pki: DevPki,
    secret: Secret,
}

impl Fixture {
    fn new(rt: Arc<dyn Runtime>) -> Self {
        Self {
            rt,
            pki: DevPki::generate().unwrap(),
            secret: Secret::generate().unwrap(),
        }
    }

    fn server(&self) -> ServerBuilder {
        Server::builder(
            self.rt.clone(),
            self.pki.server_config().unwrap(),
            self.secret.clone(),
            Identity::new("server-1", "e2e-server"),
        )
    }

    fn client(&self, addr: SocketAddr) -> ClientBuilder {
        self.client_with(addr, self.secret.clone())
    }

    fn client_with(&self, addr: SocketAddr, secret: Secret) -> ClientBuilder {
        Client::builder(
            self.rt.clone(),
            addr,
            self.pki.client_config().unwrap(),
            self.pki.server_name(),
            secret,
            Identity::new("client-1", "e2e-client"),
        )
    }
}

async fn authenticated(server: &Server) -> Link {
    match server.wait_for(EventKind::Authenticated).await {
        Some(Event::Authenticated { link, .. }) => link,
        other => panic!("expected Authenticated, got {other:?}"),
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Add {
    a: i64,
    b: i64,
}

async fn authenticate_message_by_op_and_request_both_ways(rt: Arc<dyn Runtime>) {
    let fx = Fixture::new(rt);
    let server = fx.server().bind(([127, 0, 0, 1], 0).into()).await.unwrap();
    let (notes_tx, notes_rx) = async_channel::bounded::<(u64, String)>(4);
    server.handlers().on_message("note", move |m| {
        let tx = notes_tx.clone();
        async move {
            let text = m.body.parse::<Value>().unwrap()["text"].to_string();
            tx.send((m.link.id(), text)).await.unwrap();
        }
    });
    server
        .handlers()
        .handle_request("add", |_link, args: Add| async move { Ok(args.a + args.b) });

    // The client reads its event stream's messages: it says so.
    let client = fx
        .client(server.local_addr())
        .consume_events(true)
        .connect()
        .await
        .unwrap();
    client
        .handlers()
        .handle_request("whoami", |link: Link, _: Value| async move {
            Ok(json!({ "me": "client-1", "server": link.peer().map(|p| p.node.clone()) }))
        });

    // Both sides know who they talk to.
    let link = authenticated(&server).await;
    let peer = link.peer().unwrap();
    assert_eq!(peer.node, "client-1");
    assert_eq!(peer.designation, "e2e-client");
    let client_link = client.link().unwrap();
    assert_eq!(client_link.peer().unwrap().node, "server-1");
    assert_eq!(client_link.id(), link.id());
    assert_eq!(
        server.links().iter().map(Link::id).collect::<Vec<_>>(),
        vec![link.id()]
    );

    // A message goes to its op's handler.
    client
        .send(&json!({"op": "note", "text": "hello"}))
        .await
        .unwrap();
    assert_eq!(
        notes_rx.recv().await.unwrap(),
        (link.id(), "\"hello\"".into())
    );

    // Client → server, typed both ways.
    let sum: i64 = client
        .request(&json!({"op": "add", "a": 2, "b": 3}))
        .await
        .unwrap();
    assert_eq!(sum, 5);

    // A response that does not fit the caller's type fails only that call.
    let wrong = client
        .request::<String, _>(&json!({"op": "add", "a": 1, "b": 1}))
        .await;
    assert!(matches!(wrong, Err(Error::Decode(_))), "{wrong:?}");
    let sum: Value = client
        .request(&json!({"op": "add", "a": 20, "b": 22}))
        .await
        .unwrap();
    assert_eq!(sum, json!(42));

    // Server → client.
    let who: Value = server
        .request(link.id(), &json!({"op": "whoami"}))
        .await
        .unwrap();
    assert_eq!(who, json!({"me": "client-1", "server": "server-1"}));

    // Op-less messages reach the event stream (of a declared consumer).
    server.send(link.id(), &json!([1, 2, 3])).await.unwrap();
    match client.wait_for(EventKind::Message).await {
        Some(Event::Message(m)) => assert_eq!(m.body.get(), "[1,2,3]"),
        other => panic!("{other:?}"),
    }

    // Several at once: `next_events` takes a batch, in order, at most `max`.
    for n in 0..5 {
        server.send(link.id(), &json!([n])).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 5 {
        let before = got.len();
        let n = client.next_events(&mut got, 3).await;
        assert!((1..=3).contains(&n) && got.len() == before + n, "{n}");
    }
    let bodies: Vec<String> = got
        .iter()
        .map(|e| match e {
            Event::Message(m) => m.body.get().to_owned(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(bodies, ["[0]", "[1]", "[2]", "[3]", "[4]"]);
    assert_eq!(client.next_events(&mut got, 0).await, 0);

    let stats = server.stats();
    assert_eq!(stats.connections, 1);
    assert_eq!(stats.messages_in, 1);
    assert_eq!(stats.requests_in, 3);
    assert_eq!(stats.requests_out, 1);
    assert_eq!(stats.requests_in_flight, 0);
    assert!(stats.bytes_in > 0 && stats.bytes_out > 0);

    client.close().await;
    match server.wait_for(EventKind::Closed).await {
        Some(Event::Closed { link: l, reason }) => {
            assert_eq!(l.id(), link.id());
            assert!(reason.is_graceful(), "{reason:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.stats().connections, 0);
}

#[test]
fn authenticate_message_by_op_and_request_both_ways_on_tokio() {
    on_tokio(authenticate_message_by_op_and_request_both_ways);
}

#[test]
fn authenticate_message_by_op_and_request_both_ways_on_smol() {
    on_smol(authenticate_message_by_op_and_request_both_ways);
}

#[test]
fn a_wrong_secret_fails_on_both_sides_with_a_typed_error() {
    on_tokio(|rt| async move {
        let fx = Fixture::new(rt);
        let server = fx.server().bind(([127, 0, 0, 1], 0).into()).await.unwrap();
        let wrong = Secret::generate().unwrap();
        let r = fx.client_with(server.local_addr(), wrong).connect().await;
        match r {
            Err(Error::Auth(reason)) => {
                assert_eq!(reason.code(), jsonlink_rt::CloseCode::AuthFailed)
            }
            other => panic!("expected Auth, got {other:?}"),
        }
        match server.wait_for(EventKind::Error).await {
            Some(Event::Error {
                error: Error::Auth(reason),
                ..
            }) => assert_eq!(reason.code(), jsonlink_rt::CloseCode::AuthFailed),
            other => panic!("expected an Auth error event, got {other:?}"),
        }
        assert_eq!(server.stats().authenticated, 0);
    });
}

#[test]
fn no_handler_and_handler_dropped_are_typed_remote_errors() {
    on_tokio(|rt| async move {
        let fx = Fixture::new(rt);
        let server = fx.server().bind(([127, 0, 0, 1], 0).into()).await.unwrap();
        server
            .handlers()
            .on_request("forget", |req: Request| async move { drop(req) });
        let client = fx
            .client(server.local_addr())
            .consume_events(true)
            .connect()
            .await
            .unwrap();

        let r = client.request::<Value, _>(&json!({"op": "nope"})).await;
        match r {
            Err(Error::NoHandler(e)) => assert_eq!(e.code, "no_handler"),
            other => panic!("{other:?}"),
        }
        let r = client.request::<Value, _>(&json!({"op": "forget"})).await;
        match r {
            Err(Error::HandlerDropped(e)) => assert_eq!(e.code, "handler_dropped"),
            other => panic!("{other:?}"),
        }
        // The other way too: the client has no handlers.
        let link = authenticated(&server).await;
        let r = server
            .request::<Value, _>(link.id(), &json!({"op": "x"}))
            .await;
        assert!(matches!(r, Err(Error::NoHandler(_))), "{r:?}");
        // An op-less request goes to the event stream of a declared
        // consumer; dropping it there answers handler_dropped at once.
        let pending = {
            let server = server.clone();
            let id = link.id();
            async move { server.request::<Value, _>(id, &json!({"q": 1})).await }
        };
        let answer = async {
            match client.wait_for(EventKind::Request).await {
                Some(Event::Request(req)) => req.respond(&json!("ok")).unwrap(),
                other => panic!("{other:?}"),
            }
        };
        let (r, ()) = futures_lite::future::zip(pending, answer).await;
        assert_eq!(r.unwrap(), json!("ok"));
    });
}

#[test]
fn the_client_reconnects_after_a_server_restart() {
    on_tokio(|rt| async move {
        let fx = Fixture::new(rt.clone());
        let (held_tx, held_rx) = async_channel::bounded::<Request>(1);
        let server = fx
            .server()
            .close_timeout(Duration::from_millis(100))
            .bind(([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        let addr = server.local_addr();
        server.handlers().on_request("hold", move |req| {
            let tx = held_tx.clone();
            async move { tx.send(req).await.unwrap() }
        });
        let client = fx
            .client(addr)
            .reconnect(Reconnect::Backoff {
                base: Duration::from_millis(20),
                cap: Duration::from_millis(200),
            })
            .start();
        client.wait_connected().await.unwrap();
        authenticated(&server).await;

        // A request in flight when the server goes away fails with
        // ConnectionLost and is not replayed.
        let in_flight = {
            let client = client.clone();
            async move { client.request::<Value, _>(&json!({"op": "hold"})).await }
        };
        let restart = async {
            let held = held_rx.recv().await.unwrap();
            server.shutdown(rt.now() + Duration::from_millis(100)).await;
            drop(held);
        };
        let (r, ()) = futures_lite::future::zip(in_flight, restart).await;
        assert!(
            matches!(r, Err(Error::ConnectionLost | Error::HandlerDropped(_))),
            "{r:?}"
        );
        match client.wait_for(EventKind::Closed).await {
            Some(Event::Closed { .. }) => {}
            other => panic!("{other:?}"),
        }
        drop(server);

        // While the server is down: NotConnected at once, and reconnect
        // attempts within the envelope.
        let r = client.request::<Value, _>(&json!({"op": "x"})).await;
        assert!(matches!(r, Err(Error::NotConnected)), "{r:?}");
        match client.wait_for(EventKind::ReconnectAttempt).await {
            Some(Event::ReconnectAttempt { delay, .. }) => {
                assert!(delay <= Duration::from_millis(200))
            }
            other => panic!("{other:?}"),
        }

        // The server comes back on the same port.
        let server = loop {
            match fx.server().bind(addr).await {
                Ok(s) => break s,
                // The old listener may still be closing.
                Err(_) => tokio::task::yield_now().await,
            }
        };
        server
            .handlers()
            .handle_request("add", |_l, v: Add| async move { Ok(v.a + v.b) });
        match client.wait_for(EventKind::Authenticated).await {
            Some(Event::Authenticated { .. }) => {}
            other => panic!("{other:?}"),
        }
        let sum: i64 = client
            .request(&json!({"op": "add", "a": 1, "b": 2}))
            .await
            .unwrap();
        assert_eq!(sum, 3);
        // Nothing was replayed to the new server.
        assert_eq!(server.stats().requests_in, 1);
        // Connection-refused was reported once for the whole outage.
        let mut errors = 0;
        while let Some(ev) = client.try_next_event() {
            if let Event::Error { .. } = ev {
                errors += 1;
            }
        }
        assert!(errors <= 1, "{errors} error events in one outage");
    });
}

#[test]
fn shutdown_lets_requests_finish_until_the_deadline_then_fails_them_with_shutting_down() {
    on_tokio(|rt| async move {
        let fx = Fixture::new(rt.clone());
        let server = fx.server().bind(([127, 0, 0, 1], 0).into()).await.unwrap();
        let client = fx.client(server.local_addr()).connect().await.unwrap();
        let (held_tx, held_rx) = async_channel::bounded::<Request>(4);
        client.handlers().on_request("hold", move |req| {
            let tx = held_tx.clone();
            async move { tx.send(req).await.unwrap() }
        });
        let link = authenticated(&server).await;

        let finished = {
            let link = link.clone();
            async move {
                link.request::<Value, _>(&json!({"op": "hold", "n": 1}))
                    .await
            }
        };
        let unanswered = {
            let link = link.clone();
            async move {
                link.request::<Value, _>(&json!({"op": "hold", "n": 2}))
                    .await
            }
        };
        let drive = async {
            let first = held_rx.recv().await.unwrap();
            let second = held_rx.recv().await.unwrap();
            let (first, second) = if first.body.get().contains("\"n\":1") {
                (first, second)
            } else {
                (second, first)
            };
            let start = rt.now();
            let deadline = start + Duration::from_millis(300);
            let shutdown = server.shutdown(deadline);
            let answer = async {
                // Answered while the server drains: it still arrives.
                first.respond(&json!("done")).unwrap();
            };
            futures_lite::future::zip(shutdown, answer).await;
            assert!(rt.now() < deadline + Duration::from_millis(200));
            second
        };
        let (r1, (r2, second)) =
            futures_lite::future::zip(finished, futures_lite::future::zip(unanswered, drive)).await;
        assert_eq!(r1.unwrap(), json!("done"));
        assert!(matches!(r2, Err(Error::ShuttingDown)), "{r2:?}");
        drop(second);
        assert!(matches!(
            client.wait_for(EventKind::Closed).await,
            Some(Event::Closed { .. })
        ));
        // No new connections after shutdown.
        let again = fx.client(server.local_addr()).connect().await;
        assert!(again.is_err());
    });
}

#[test]
fn client_close_fails_unanswered_requests_with_shutting_down() {
    on_tokio(|rt| async move {
        let fx = Fixture::new(rt.clone());
        let server = fx.server().bind(([127, 0, 0, 1], 0).into()).await.unwrap();
        let (held_tx, held_rx) = async_channel::bounded::<Request>(1);
        server.handlers().on_request("hold", move |req| {
            let tx = held_tx.clone();
            async move { tx.send(req).await.unwrap() }
        });
        let client = fx.client(server.local_addr()).connect().await.unwrap();
        let pending = {
            let client = client.clone();
            async move { client.request::<Value, _>(&json!({"op": "hold"})).await }
        };
        let close = async {
            let held = held_rx.recv().await.unwrap();
            client.close_by(rt.now() + Duration::from_millis(100)).await;
            drop(held);
        };
        let (r, ()) = futures_lite::future::zip(pending, close).await;
        assert!(matches!(r, Err(Error::ShuttingDown)), "{r:?}");
        assert!(client.is_closed());
        let r = client.request::<Value, _>(&json!({"op": "x"})).await;
        assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    });
}

#[test]
fn the_connection_limit_refuses_the_extra_one_and_counts_return_to_baseline() {
    on_tokio(|rt| async move {
        let fx = Fixture::new(rt);
        let server = fx
            .server()
            .max_connections(1)
            .consume_events(true)
            .bind(([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        let first = fx.client(server.local_addr()).connect().await.unwrap();
        authenticated(&server).await;
        let extra = fx.client(server.local_addr()).connect().await;
        assert!(extra.is_err(), "{extra:?}");
        match server.wait_for(EventKind::Error).await {
            Some(Event::Error {
                error: Error::Refused { limit },
                ..
            }) => assert_eq!(limit, "max_connections"),
            other => panic!("{other:?}"),
        }
        // The first link is unaffected.
        first.send(&json!({"still": "here"})).await.unwrap();
        assert!(matches!(
            server.wait_for(EventKind::Message).await,
            Some(Event::Message(_))
        ));
        drop(first);
        assert!(matches!(
            server.wait_for(EventKind::Closed).await,
            Some(Event::Closed { .. })
        ));
        let stats = server.stats();
        assert_eq!(stats.connections, 0);
        assert_eq!(stats.connections_refused, 1);
        assert!(server.links().is_empty());
    });
}

#[test]
fn a_replaced_certificate_serves_new_handshakes_and_keeps_old_links() {
    on_tokio(|rt| async move {
        let fx = Fixture::new(rt.clone());
        let server = fx.server().bind(([127, 0, 0, 1], 0).into()).await.unwrap();
        server
            .handlers()
            .handle_request("ping", |_l, _: Value| async move { Ok("pong") });
        let old = fx.client(server.local_addr()).connect().await.unwrap();

        let renewed = DevPki::generate().unwrap();
        server.set_tls_config(renewed.server_config().unwrap());
        // A client trusting only the old CA now fails TLS (a configuration
        // error: retrying cannot fix it)…
        let r = fx.client(server.local_addr()).connect().await;
        assert!(matches!(r, Err(Error::TlsConfig { .. })), "{r:?}");
        // …one trusting the new CA gets in…
        let new = Client::builder(
            rt,
            server.local_addr(),
            renewed.client_config().unwrap(),
            renewed.server_name(),
            fx.secret.clone(),
            Identity::new("client-2", "e2e-client"),
        )
        .connect()
        .await
        .unwrap();
        let r: String = new.request(&json!({"op": "ping"})).await.unwrap();
        assert_eq!(r, "pong");
        // …and the existing link is untouched.
        let r: String = old.request(&json!({"op": "ping"})).await.unwrap();
        assert_eq!(r, "pong");
    });
}

#[test]
fn a_slow_reader_makes_send_wait_instead_of_queueing() {
    on_tokio(|rt| async move {
        let fx = Fixture::new(rt);
        let server = fx
            .server()
            .max_outbound(64 * 1024)
            .bind(([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        // The client's event stream holds one message; while it is full
        // the client (a declared consumer) stops reading, so TCP and then
        // the server's outbound buffer fill up.
        let client = fx
            .client(server.local_addr())
            .consume_events(true)
            .event_capacity(1)
            .max_outbound(64 * 1024)
            .connect()
            .await
            .unwrap();
        let link = authenticated(&server).await;
        // Skip the client's Authenticated event so only messages queue.
        while let Some(ev) = client.try_next_event() {
            assert!(!matches!(ev, Event::Message(_)));
        }
        let chunk = "x".repeat(32 * 1024);
        let total = 400; // ~13 MB: far more than TCP and both buffers hold
        let sender = async {
            let mut sent = 0;
            for i in 0..total {
                link.send(&json!({ "i": i, "pad": chunk })).await.unwrap();
                sent += 1;
            }
            sent
        };
        // With the reader stalled the sender must block before the end.
        let stalled = tokio::time::timeout(Duration::from_millis(500), sender).await;
        assert!(
            stalled.is_err(),
            "all sends completed with a stalled reader"
        );
        // Once the reader drains, everything arrives in order.
        let sender = async {
            for i in 0..total {
                link.send(&json!({ "i": i, "pad": chunk })).await.unwrap();
            }
        };
        let reader = async {
            let mut next = 0;
            let mut restarted = false;
            loop {
                let Some(Event::Message(m)) = client.wait_for(EventKind::Message).await else {
                    panic!("stream ended")
                };
                let i = m.parse::<Value>().unwrap()["i"].as_i64().unwrap();
                if i == 0 && next > 0 {
                    restarted = true;
                    next = 0;
                }
                assert_eq!(i, next, "messages out of order");
                next += 1;
                if restarted && next == total {
                    break;
                }
            }
        };
        futures_lite::future::zip(sender, reader).await;
    });
}

#[test]
fn in_wait_mode_requests_wait_for_the_reconnect_up_to_their_timeout() {
    on_tokio(|rt| async move {
        let fx = Fixture::new(rt);
        // Find a free port, then leave it closed.
        let probe = fx.server().bind(([127, 0, 0, 1], 0).into()).await.unwrap();
        let addr = probe.local_addr();
        probe.shutdown(std::time::Instant::now()).await;
        drop(probe);
        let client = fx
            .client(addr)
            .wait_for_reconnect(true)
            .reconnect(Reconnect::Fixed(Duration::from_millis(20)))
            .start();
        // No server: the request fails at its own deadline.
        let r = client
            .request_with_timeout::<Value, _>(&json!({"op": "x"}), Duration::from_millis(100))
            .await;
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        // Connection refused is reported once for the outage.
        match client.wait_for(EventKind::Error).await {
            Some(Event::Error {
                error: Error::Io(e),
                ..
            }) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
            other => panic!("{other:?}"),
        }
        // A request made while down succeeds once the server is up.
        let body = json!({"op": "add", "a": 1, "b": 1});
        let request = client.request_with_timeout::<i64, _>(&body, Duration::from_secs(10));
        let start_server = async {
            // Wait until the client has retried at least once more.
            client.wait_for(EventKind::ReconnectAttempt).await;
            let server = loop {
                match fx.server().bind(addr).await {
                    Ok(s) => break s,
                    Err(_) => tokio::task::yield_now().await,
                }
            };
            server
                .handlers()
                .handle_request("add", |_l, v: Add| async move { Ok(v.a + v.b) });
            server
        };
        let (r, _server) = futures_lite::future::zip(request, start_server).await;
        assert_eq!(r.unwrap(), 2);
        assert_eq!(
            client.stats().connections,
            1,
            "exactly one link after the outage"
        );
    });
}

#[test]
fn close_during_backoff_stops_at_once_and_waiters_get_closed() {
    on_tokio(|rt| async move {
        let fx = Fixture::new(rt.clone());
        let probe = fx.server().bind(([127, 0, 0, 1], 0).into()).await.unwrap();
        let addr = probe.local_addr();
        probe.shutdown(rt.now()).await;
        drop(probe);
        let client = fx
            .client(addr)
            .wait_for_reconnect(true)
            .reconnect(Reconnect::Fixed(Duration::from_secs(60)))
            .start();
        client.wait_for(EventKind::ReconnectAttempt).await;
        let waiter = {
            let client = client.clone();
            async move {
                client
                    .request_with_timeout::<Value, _>(&json!({}), Duration::from_secs(60))
                    .await
            }
        };
        let close = async {
            let start = rt.now();
            client.close().await;
            start.elapsed()
        };
        let (r, took) = futures_lite::future::zip(waiter, close).await;
        assert!(matches!(r, Err(Error::Closed)), "{r:?}");
        assert!(took < Duration::from_secs(5), "close took {took:?}");
        assert!(client.is_closed());
    });
}

/// A runtime that counts the tasks it spawned and still runs.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Runtime>,
    live: Arc<Live>,
}

#[derive(Debug, Default)]
struct Live {
    n: std::sync::atomic::AtomicUsize,
    ended: event_listener::Event,
}

struct TaskGuard(Arc<Live>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.n.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.ended.notify(usize::MAX);
    }
}

impl Runtime for Counting {
    fn spawn(&self, future: jsonlink_rt::BoxFuture<'static, ()>) {
        self.live
            .n
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let guard = TaskGuard(self.live.clone());
        self.inner.spawn(Box::pin(async move {
            let _guard = guard;
            future.await;
        }));
    }
    fn now(&self) -> std::time::Instant {
        self.inner.now()
    }
    fn sleep_until(&self, deadline: std::time::Instant) -> jsonlink_rt::BoxFuture<'static, ()> {
        self.inner.sleep_until(deadline)
    }
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> jsonlink_rt::BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
        self.inner.resolve(host, port)
    }
    fn bind(
        &self,
        addr: SocketAddr,
    ) -> jsonlink_rt::BoxFuture<'_, std::io::Result<Box<dyn jsonlink_rt::Listener>>> {
        self.inner.bind(addr)
    }
    fn connect_tls(
        &self,
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        server_name: rustls_pki_types::ServerName<'static>,
    ) -> jsonlink_rt::BoxFuture<'static, std::io::Result<jsonlink_rt::TlsStream>> {
        self.inner.connect_tls(addr, config, server_name)
    }
}

#[test]
fn dropping_client_and_server_without_shutdown_ends_every_task() {
    on_tokio(|rt| async move {
        let live = Arc::new(Live::default());
        let rt: Arc<dyn Runtime> = Arc::new(Counting {
            inner: rt,
            live: live.clone(),
        });
        let fx = Fixture::new(rt);
        let server = fx.server().bind(([127, 0, 0, 1], 0).into()).await.unwrap();
        server
            .handlers()
            .handle_request("add", |_l, v: Add| async move { Ok(v.a + v.b) });
        let client = fx.client(server.local_addr()).connect().await.unwrap();
        let sum: i64 = client
            .request(&json!({"op": "add", "a": 1, "b": 2}))
            .await
            .unwrap();
        assert_eq!(sum, 3);
        assert!(live.n.load(std::sync::atomic::Ordering::SeqCst) >= 3);
        drop(client);
        drop(server);
        loop {
            let listener = live.ended.listen();
            if live.n.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                break;
            }
            listener.await;
        }
    });
}

#[test]
fn a_value_larger_than_the_peers_max_frame_fails_only_that_call() {
    on_tokio(|rt| async move {
        let fx = Fixture::new(rt);
        let server = fx
            .server()
            .max_frame(4096)
            .bind(([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        server
            .handlers()
            .handle_request("len", |_l, v: Value| async move {
                Ok(v["s"].as_str().map_or(0, str::len))
            });
        let client = fx.client(server.local_addr()).connect().await.unwrap();
        let big = "y".repeat(8192);
        let r = client.send(&json!({ "op": "len", "s": big })).await;
        assert!(
            matches!(r, Err(Error::FrameTooLarge { limit: 4096, .. })),
            "{r:?}"
        );
        let r = client
            .request::<usize, _>(&json!({ "op": "len", "s": big }))
            .await;
        assert!(matches!(r, Err(Error::FrameTooLarge { .. })), "{r:?}");
        let n: usize = client
            .request(&json!({ "op": "len", "s": "abc" }))
            .await
            .unwrap();
        assert_eq!(n, 3);
    });
}

#[test]
fn a_peer_that_stops_reading_is_closed_by_keepalive_and_its_requests_fail() {
    on_tokio(|rt| async move {
        let fx = Fixture::new(rt);
        let server = fx
            .server()
            .keepalive(Some(jsonlink_rt::Keepalive {
                interval: Duration::from_millis(100),
                timeout: Duration::from_millis(200),
                data: None,
            }))
            .bind(([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        // The client's stream holds one event and its declared consumer
        // does not read it: after two op-less messages its link stops
        // reading (and answering pings).
        let client = fx
            .client(server.local_addr())
            .consume_events(true)
            .event_capacity(1)
            .keepalive(None)
            .connect()
            .await
            .unwrap();
        let link = authenticated(&server).await;
        link.send(&json!(["fill"])).await.unwrap();
        link.send(&json!(["block"])).await.unwrap();
        let r = link.request::<Value, _>(&json!({"q": "never read"})).await;
        assert!(matches!(r, Err(Error::ConnectionLost)), "{r:?}");
        match server.wait_for(EventKind::KeepaliveTimeout).await {
            Some(Event::KeepaliveTimeout { link: l }) => assert_eq!(l.id(), link.id()),
            other => panic!("{other:?}"),
        }
        match server.wait_for(EventKind::Closed).await {
            Some(Event::Closed { reason, .. }) => {
                assert_eq!(reason, jsonlink_rt::CloseReason::KeepaliveTimeout)
            }
            other => panic!("{other:?}"),
        }
        drop(client);
    });
}

/// Inline handlers answer from the link's own task: typed and raw, a bad
/// argument is `bad_request`, a panic is `internal` and the link carries on,
/// and `on_request` for the same op replaces the inline handler.
async fn inline_handlers_answer_in_the_links_task(rt: Arc<dyn Runtime>) {
    let fx = Fixture::new(rt);
    let server = fx.server().bind(([127, 0, 0, 1], 0).into()).await.unwrap();
    server
        .handlers()
        .handle_request_inline("add", |_link, args: Add| Ok(args.a + args.b))
        .on_request_inline("echo", |link, body| {
            assert!(link.peer().is_some(), "the link is authenticated");
            Ok(body)
        })
        .handle_request_inline(
            "boom",
            |_link, _: Value| -> Result<Value, jsonlink_rt::HandlerError> { panic!("handler bug") },
        );
    let client = fx.client(server.local_addr()).connect().await.unwrap();

    let sum: i64 = client
        .request(&json!({"op": "add", "a": 2, "b": 40}))
        .await
        .unwrap();
    assert_eq!(sum, 42);
    let body = json!({"op": "echo", "data": [1, "two", null]});
    let back: Value = client.request(&body).await.unwrap();
    assert_eq!(back, body);
    match client
        .request::<Value, _>(&json!({"op": "add", "a": "x"}))
        .await
    {
        Err(Error::Remote(e)) => assert_eq!(e.code, RemoteError::BAD_REQUEST),
        other => panic!("{other:?}"),
    }
    match client.request::<Value, _>(&json!({"op": "boom"})).await {
        Err(Error::Remote(e)) => assert_eq!(e.code, RemoteError::INTERNAL),
        other => panic!("{other:?}"),
    }
    // The link survived the panic, and many answers in a row arrive whole.
    for i in 0..200i64 {
        let v: i64 = client
            .request(&json!({"op": "add", "a": i, "b": 1}))
            .await
            .unwrap();
        assert_eq!(v, i + 1);
    }
    // A task handler for the same op replaces the inline one.
    server
        .handlers()
        .handle_request("add", |_l, v: Add| async move { Ok(v.a * v.b) });
    let product: i64 = client
        .request(&json!({"op": "add", "a": 6, "b": 7}))
        .await
        .unwrap();
    assert_eq!(product, 42);
    assert!(server.handlers().remove_request("echo"));
    assert!(matches!(
        client.request::<Value, _>(&json!({"op": "echo"})).await,
        Err(Error::NoHandler(_))
    ));
    assert_eq!(server.stats().requests_in, 206);
}

#[test]
fn inline_handlers_answer_in_the_links_task_on_tokio() {
    on_tokio(inline_handlers_answer_in_the_links_task);
}

#[test]
fn inline_handlers_answer_in_the_links_task_on_smol() {
    on_smol(inline_handlers_answer_in_the_links_task);
}
