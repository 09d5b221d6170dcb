//! The relay front-end (PROTOCOL.md §18) end to end: a real `Server` with
//! relay secrets, a `Relay` in front of it, and ordinary jsonlink
//! `Client`s connecting to the relay over real TLS on 127.0.0.1.

use std::collections::HashSet;

use jsonlink_proto::DEFAULT_MAX_RELAYED_FRAME;
use jsonlink_rt::{Client, Identity, Link, Relay, RelayBuilder, Secret, Server};
use jsonlink_tests::fixtures::{Fixture, bind, common_handlers, connect};
use jsonlink_tests::runtimes::{Gauges, on_tokio};
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

        // The upstream cut (the server closes the relay's link): the
        // relay's clients are closed, saying why.
        relay_link.close("cut").await;
        for c in &clients[1..] {
            let (_, reason) = closed(c).await;
            assert!(
                reason.to_string().contains("upstream_lost"),
                "closed because the upstream went: {reason:?}"
            );
        }
        assert!(!relay.upstream_open());
    });
}
