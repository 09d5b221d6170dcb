//! The relay front-end (PROTOCOL.md §18) end to end: a real `Server` with
//! relay secrets, a `Relay` in front of it, and ordinary jsonlink
//! `Client`s connecting to the relay over real TLS on 127.0.0.1.

use std::collections::HashSet;

use jsonlink_proto::{CloseCode, CloseReason, DEFAULT_MAX_RELAYED_FRAME, Side};
use jsonlink_rt::{Client, Error, Identity, Link, Relay, RelayBuilder, Secret, Server};
use jsonlink_tests::RawTlsClient;
use jsonlink_tests::fixtures::{Fixture, bind, common_handlers, connect};
use jsonlink_tests::runtimes::{Gauges, LIMIT, on_tokio};
use jsonlink_tests::waits::{SETTLE, authenticated_with_info, closed};
use serde_json::{Value, json};

async fn relay_for(fx: &Fixture, server: &Server, secret: Secret, name: &str) -> Relay {
    RelayBuilder::new(
        fx.rt.clone(),
        fx.server_tls(),
        fx.secret.clone(),
        Identity::new(name, "relay"),
        server.local_addr(),
        fx.client_tls(),
        fx.client_parts(server.local_addr()).server_name,
        secret,
    )
    .bind("127.0.0.1:0".parse().expect("addr"))
    .await
    .expect("the relay connects upstream and binds")
}

/// Registers `whoami` on a client: answers with its own name.
fn whoami(client: &Client, me: &str) {
    let me = me.to_owned();
    client
        .handlers()
        .handle_request("whoami", move |_l: Link, _v: Value| {
            let me = me.clone();
            async move { Ok(json!({ "me": me })) }
        });
}

#[test]
fn clients_through_a_relay_requests_both_ways_messages_broadcast_leave_and_upstream_loss() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let secret = Secret::generate().expect("secret");
        let server = bind(fx.server().relay_secrets(vec![secret.clone()])).await;
        common_handlers(server.handlers());
        let (notes_tx, notes_rx) = async_channel::unbounded::<(u64, Value)>();
        server
            .handlers()
            .handle_message("note", move |link: Link, v: Value| {
                let tx = notes_tx.clone();
                async move {
                    let _ = tx.send((link.id(), v)).await;
                }
            });

        let relay = relay_for(&fx, &server, secret, "relay-1").await;
        let (relay_link, info) = authenticated_with_info(&server).await;
        assert!(info.relay, "the relay's upstream link is a relay link");
        assert!(relay.upstream_open());
        assert!(relay.max_frame() <= DEFAULT_MAX_RELAYED_FRAME);

        // Three clients connect to the relay: each is a link of the server
        // with its own identity, via the relay.
        let mut clients = Vec::new();
        let mut links = Vec::new();
        for i in 0..3 {
            let name = format!("c{i}");
            let client =
                connect(fx.client_as(relay.local_addr(), Identity::new(&name, "relayed"))).await;
            whoami(&client, &name);
            let (link, info) = authenticated_with_info(&server).await;
            assert!(!info.relay);
            assert_eq!(link.via_relay(), Some(relay_link.id()));
            assert_eq!(link.peer().map(|p| p.node.clone()), Some(name.clone()));
            assert_eq!(link.peer_addr().ip().to_string(), "127.0.0.1");
            let server_link = client.link().expect("connected");
            assert_eq!(
                server_link.peer().map(|p| p.node.clone()),
                Some("relay-1".to_owned()),
                "the client authenticated with the relay"
            );
            clients.push(client);
            links.push(link);
        }
        let ids: HashSet<u64> = links.iter().map(Link::id).collect();
        assert_eq!(ids.len(), 3, "distinct link ids");
        assert_eq!(relay.clients(), 3);

        // Client → server requests, several in flight per client, each
        // answered once with its own result.
        let mut asks = Vec::new();
        for (i, c) in clients.iter().enumerate() {
            for k in 0..5i64 {
                let c = c.clone();
                let a = i as i64 * 100 + k;
                asks.push(tokio::spawn(async move {
                    let sum: i64 = c
                        .request(&json!({"op": "add", "a": a, "b": 1}))
                        .await
                        .expect("answered through the relay");
                    (a, sum)
                }));
            }
        }
        for t in asks {
            let (a, sum) = t.await.expect("task");
            assert_eq!(sum, a + 1);
        }

        // Server → client requests: each reaches the right client.
        for (i, link) in links.iter().enumerate() {
            let who: Value = server
                .request(link.id(), &json!({"op": "whoami"}))
                .await
                .expect("the relayed client answers");
            assert_eq!(who, json!({"me": format!("c{i}")}));
        }

        // Client → server message, with the client's own link.
        clients[2]
            .send(&json!({"op": "note", "n": 7}))
            .await
            .expect("send");
        let (id, v) = tokio::time::timeout(SETTLE, notes_rx.recv())
            .await
            .expect("in time")
            .expect("note");
        assert_eq!(id, links[2].id());
        assert_eq!(v, json!({"n": 7}));

        // Server → clients broadcast: each client gets it once.
        let (news_tx, news_rx) = async_channel::unbounded::<(usize, Value)>();
        for (i, c) in clients.iter().enumerate() {
            let tx = news_tx.clone();
            c.handlers()
                .handle_message("news", move |_l: Link, v: Value| {
                    let tx = tx.clone();
                    async move {
                        let _ = tx.send((i, v)).await;
                    }
                });
        }
        assert_eq!(
            server
                .broadcast(&json!({"op": "news", "x": 1}))
                .expect("broadcast"),
            3
        );
        let mut got = HashSet::new();
        for _ in 0..3 {
            let (i, v) = tokio::time::timeout(SETTLE, news_rx.recv())
                .await
                .expect("in time")
                .expect("news");
            assert_eq!(v, json!({"x": 1}));
            assert!(got.insert(i), "client {i} got the broadcast once");
        }

        // A client leaving: the server sees Closed for its link.
        clients[0].close().await;
        let (gone, _) = closed(&server).await;
        assert_eq!(gone.id(), links[0].id());
        assert!(server.link(links[0].id()).is_none());

        // The upstream cut (the server shuts down at once, with a request
        // of a client in flight): the relay's clients are closed, saying
        // why, and the request fails once.
        let (hung_tx, hung_rx) = async_channel::bounded::<()>(1);
        server
            .handlers()
            .handle_request("hang", move |_l: Link, _v: Value| {
                let tx = hung_tx.clone();
                async move {
                    let _ = tx.send(()).await;
                    std::future::pending::<Result<Value, jsonlink_rt::HandlerError>>().await
                }
            });
        let hanging = {
            let c = clients[1].clone();
            tokio::spawn(async move { c.request::<Value, _>(&json!({"op": "hang"})).await })
        };
        hung_rx
            .recv()
            .await
            .expect("the request reached the server");
        server.shutdown(std::time::Instant::now()).await;
        for c in &clients[1..] {
            let (_, reason) = closed(c).await;
            assert!(
                reason.to_string().contains("upstream_lost"),
                "closed because the upstream went: {reason:?}"
            );
        }
        assert!(
            matches!(hanging.await.expect("task"), Err(Error::ConnectionLost)),
            "a request in flight when the upstream went fails once, ConnectionLost"
        );
        assert!(!relay.upstream_open());
    });
}

#[test]
fn a_client_that_does_not_read_is_closed_with_overflow_and_the_others_go_on() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let secret = Secret::generate().expect("secret");
        let server = bind(fx.server().relay_secrets(vec![secret.clone()])).await;
        common_handlers(server.handlers());
        let relay = RelayBuilder::new(
            fx.rt.clone(),
            fx.server_tls(),
            fx.secret.clone(),
            Identity::new("relay-1", "relay"),
            server.local_addr(),
            fx.client_tls(),
            fx.client_parts(server.local_addr()).server_name,
            secret,
        )
        .client_queue(8)
        .bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("relay");
        let _ = authenticated_with_info(&server).await;

        // A well-behaved client and one that never reads after its
        // handshake.
        let good = connect(fx.client(relay.local_addr())).await;
        let (good_link, _) = authenticated_with_info(&server).await;
        let mut slow = RawTlsClient::connect(relay.local_addr(), fx.client_tls())
            .await
            .expect("TLS");
        let _conn = slow
            .handshake(fx.adversary_config("slow"), Side::Client, LIMIT)
            .await
            .expect("the slow client authenticates");
        let (slow_link, _) = authenticated_with_info(&server).await;

        // The server floods the slow client (bounded: at most 64 MiB).
        let flood = {
            let server = server.clone();
            let id = slow_link.id();
            tokio::spawn(async move {
                let blob = "x".repeat(16 * 1024);
                for n in 0..4096u32 {
                    if server
                        .send(id, &json!({"n": n, "blob": blob}))
                        .await
                        .is_err()
                    {
                        return n;
                    }
                }
                4096
            })
        };
        let (gone, reason) = closed(&server).await;
        assert_eq!(gone.id(), slow_link.id(), "the slow client is closed");
        assert!(
            matches!(&reason, CloseReason::Remote { code, .. } if *code == CloseCode::Overflow),
            "closed for overflow: {reason:?}"
        );
        let sent = flood.await.expect("task");
        assert!(sent < 4096, "the flood stopped once the link closed");

        // The other client is not stalled.
        let sum: i64 = good
            .request(&json!({"op": "add", "a": 1, "b": 2}))
            .await
            .expect("the other client goes on");
        assert_eq!(sum, 3);
        assert!(server.link(good_link.id()).is_some());
    });
}

#[test]
fn three_relays_thirty_clients_each_and_one_relay_dropped() {
    const RELAYS: usize = 3;
    const PER_RELAY: usize = 30;
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let secret = Secret::generate().expect("secret");
        let server = bind(fx.server().relay_secrets(vec![secret.clone()])).await;
        common_handlers(server.handlers());
        let mut relays = Vec::new();
        let mut relay_links = Vec::new();
        for r in 0..RELAYS {
            relays.push(relay_for(&fx, &server, secret.clone(), &format!("relay-{r}")).await);
            let (l, info) = authenticated_with_info(&server).await;
            assert!(info.relay);
            relay_links.push(l);
        }
        let mut clients: Vec<Vec<Client>> = Vec::new();
        let mut links: Vec<Vec<Link>> = Vec::new();
        for (r, relay) in relays.iter().enumerate() {
            let mut cs = Vec::new();
            let mut ls = Vec::new();
            for i in 0..PER_RELAY {
                let name = format!("r{r}c{i}");
                let c = connect(fx.client_as(relay.local_addr(), Identity::new(&name, "relayed")))
                    .await;
                whoami(&c, &name);
                let (l, _) = authenticated_with_info(&server).await;
                assert_eq!(l.via_relay(), Some(relay_links[r].id()));
                assert_eq!(l.peer().map(|p| p.node.clone()), Some(name));
                cs.push(c);
                ls.push(l);
            }
            clients.push(cs);
            links.push(ls);
        }
        let all_ids: HashSet<u64> = links.iter().flatten().map(Link::id).collect();
        assert_eq!(
            all_ids.len(),
            RELAYS * PER_RELAY,
            "ids unique across relays"
        );

        // Every client: 3 requests to the server; the server: one to each.
        let mut tasks = Vec::new();
        for c in clients.iter().flatten() {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                for k in 0..3i64 {
                    let s: i64 = c
                        .request(&json!({"op": "add", "a": k, "b": 10}))
                        .await
                        .expect("answered");
                    assert_eq!(s, k + 10);
                }
            }));
        }
        for (r, ls) in links.iter().enumerate() {
            for (i, l) in ls.iter().enumerate() {
                let server = server.clone();
                let id = l.id();
                tasks.push(tokio::spawn(async move {
                    let who: Value = server
                        .request(id, &json!({"op": "whoami"}))
                        .await
                        .expect("answered by the relayed client");
                    assert_eq!(who, json!({"me": format!("r{r}c{i}")}));
                }));
            }
        }
        for t in tasks {
            t.await.expect("every request resolved once, correctly");
        }

        // A broadcast reaches each of the 90 clients exactly once.
        let (tx, rx) = async_channel::unbounded::<String>();
        for (r, cs) in clients.iter().enumerate() {
            for (i, c) in cs.iter().enumerate() {
                let tx = tx.clone();
                let me = format!("r{r}c{i}");
                c.handlers()
                    .handle_message("news", move |_l: Link, _v: Value| {
                        let tx = tx.clone();
                        let me = me.clone();
                        async move {
                            let _ = tx.send(me).await;
                        }
                    });
            }
        }
        assert_eq!(
            server.broadcast(&json!({"op": "news"})).expect("broadcast"),
            RELAYS * PER_RELAY
        );
        let mut got = HashSet::new();
        for _ in 0..RELAYS * PER_RELAY {
            let me = tokio::time::timeout(SETTLE, rx.recv())
                .await
                .expect("in time")
                .expect("news");
            assert!(got.insert(me.clone()), "{me} got it once");
        }

        // One relay dropped: its clients are closed, the server sees
        // Closed for each of them and for the relay link; the rest stay.
        let dropped = relays.remove(0);
        drop(dropped);
        let mut closed_ids = HashSet::new();
        for _ in 0..=PER_RELAY {
            let (l, _) = closed(&server).await;
            closed_ids.insert(l.id());
        }
        let mut expected: HashSet<u64> = links[0].iter().map(Link::id).collect();
        expected.insert(relay_links[0].id());
        assert_eq!(closed_ids, expected);
        for c in &clients[0] {
            let _ = closed(c).await;
        }
        assert_eq!(
            server.links().len(),
            (RELAYS - 1) * (PER_RELAY + 1),
            "no link leaked"
        );
        let s: i64 = clients[1][0]
            .request(&json!({"op": "add", "a": 1, "b": 1}))
            .await
            .expect("the other relays go on");
        assert_eq!(s, 2);

        // The server closing a relayed client's link: the relay closes
        // that client gracefully, and the server sees Closed for it.
        links[1][0].close("bye").await;
        let (l, _) = closed(&server).await;
        assert_eq!(l.id(), links[1][0].id());
        let (_, reason) = closed(&clients[1][0]).await;
        assert!(reason.to_string().contains("bye"), "{reason:?}");
        assert_eq!(server.links().len(), (RELAYS - 1) * (PER_RELAY + 1) - 1);
    });
}
