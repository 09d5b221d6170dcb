//! The upstream side of relays (PROTOCOL.md §18) at the runtime level: a
//! real `Server` with relay secrets, and a relay peer in the test — a core
//! `Connection` in the relay role over real TLS on 127.0.0.1 — that joins
//! clients. Each joined client must be a `Link` of the server like any
//! other: its own server-wide id, identity and address, messages and
//! requests both ways through the same handlers, `send`/`request` by id,
//! `broadcast`, and `Closed` when it leaves or its relay goes.

use std::collections::HashSet;
use std::time::Instant;

use jsonlink_proto::{
    ClientId, CloseCode, CloseReason, Config, Connection, Event as CoreEvent, Extensions,
    PeerRequestId, Side,
};
use jsonlink_rt::{Error, Identity, Link, Secret, Server};
use jsonlink_tests::RawTlsClient;
use jsonlink_tests::fixtures::{Fixture, bind, common_handlers};
use jsonlink_tests::runtimes::{Gauges, LIMIT, on_tokio};
use jsonlink_tests::waits::{SETTLE, authenticated_with_info, closed, error_event};
use serde_json::{Value, json};

/// A relay in the test: the core in the relay role, over raw TLS.
struct TestRelay {
    raw: RawTlsClient,
    conn: Connection,
}

impl TestRelay {
    async fn connect(fx: &Fixture, server: &Server, secret: Secret) -> Self {
        let mut config = Config::new(secret, Identity::new("relay-1", "relay"));
        config.relay = true;
        let mut raw = RawTlsClient::connect(server.local_addr(), fx.client_tls())
            .await
            .expect("relay TLS");
        let conn = raw
            .handshake(config, Side::Client, LIMIT)
            .await
            .expect("the relay authenticates");
        assert!(conn.is_relay(), "the server accepted the relay role");
        Self { raw, conn }
    }

    /// Writes what the core has queued.
    async fn flush(&mut self) {
        loop {
            let mut out = Vec::new();
            self.conn.poll_transmit(&mut out);
            if out.is_empty() {
                return;
            }
            self.raw.send(&out).await.expect("relay write");
        }
    }

    /// Flushes, then the next event from the server.
    async fn event(&mut self) -> CoreEvent {
        self.flush().await;
        self.raw
            .next_event(&mut self.conn, SETTLE)
            .await
            .expect("an event reaches the relay in time")
            .expect("the relay connection is open")
    }

    /// The next event that is not `SendUnblocked`.
    async fn data_event(&mut self) -> CoreEvent {
        loop {
            match self.event().await {
                CoreEvent::SendUnblocked => {}
                ev => return ev,
            }
        }
    }

    fn join(&mut self, node: &str, addr: &str) -> ClientId {
        self.conn
            .join(
                &Identity::new(node, "relayed"),
                addr,
                64 * 1024,
                Extensions::NONE,
            )
            .expect("join")
    }
}

fn relay_secret() -> Secret {
    Secret::generate().expect("secret")
}

fn raw(v: &Value) -> Box<serde_json::value::RawValue> {
    serde_json::value::to_raw_value(v).expect("json")
}

/// The relay link's `Authenticated`, then one for each joined client, in
/// join order.
async fn relayed_links(server: &Server, n: usize) -> Vec<Link> {
    let mut links = Vec::new();
    for _ in 0..n {
        let (link, info) = authenticated_with_info(server).await;
        assert!(!info.relay, "a relayed client's link is no relay link");
        links.push(link);
    }
    links
}

#[test]
fn relayed_clients_are_links_messages_requests_broadcast_leave_and_relay_loss() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let secret = relay_secret();
        let server = bind(fx.server().relay_secrets(vec![secret.clone()])).await;
        common_handlers(server.handlers());
        let (notes_tx, notes_rx) = async_channel::unbounded::<(u64, Option<u64>, Value)>();
        server
            .handlers()
            .handle_message("note", move |link: Link, v: Value| {
                let tx = notes_tx.clone();
                async move {
                    let _ = tx.send((link.id(), link.via_relay(), v)).await;
                }
            });

        let mut relay = TestRelay::connect(&fx, &server, secret).await;
        let (relay_link, info) = authenticated_with_info(&server).await;
        assert!(info.relay, "the relay's own link is a relay link");
        assert_eq!(relay_link.via_relay(), None);

        // Three clients join: each is a link with its own id, identity,
        // address and relay.
        let addrs = ["10.0.0.1:1001", "10.0.0.2:1002", "[2001:db8::3]:1003"];
        let clients: Vec<ClientId> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| relay.join(&format!("c{i}"), a))
            .collect();
        relay.flush().await;
        let links = relayed_links(&server, 3).await;
        let mut ids = HashSet::from([relay_link.id()]);
        for (i, link) in links.iter().enumerate() {
            assert!(ids.insert(link.id()), "link ids are unique: {ids:?}");
            assert_eq!(link.via_relay(), Some(relay_link.id()));
            assert_eq!(link.peer_addr().to_string(), addrs[i]);
            assert_eq!(
                link.peer().map(|p| p.node.as_str()),
                Some(&*format!("c{i}"))
            );
            assert_eq!(server.link(link.id()).map(|l| l.id()), Some(link.id()));
        }
        assert_eq!(
            server.links().len(),
            4,
            "the relay link and its three clients"
        );

        // A client's request reaches the server's handler.
        relay
            .conn
            .client_forward(
                clients[1],
                PeerRequestId(7),
                &raw(&json!({"op": "add", "a": 2, "b": 3})),
            )
            .expect("forward");
        match relay.data_event().await {
            CoreEvent::ClientResponse { client, id, body } => {
                assert_eq!((client, id.0), (clients[1], 7));
                assert_eq!(body.get(), "5");
            }
            other => panic!("expected the answer to the client's request, got {other:?}"),
        }

        // A client's message reaches the handler, with its own link.
        relay
            .conn
            .client_send(clients[2], &raw(&json!({"op": "note", "n": 1})))
            .expect("cmsg");
        relay.flush().await;
        let (id, via, v) = tokio::time::timeout(SETTLE, notes_rx.recv())
            .await
            .expect("the note arrives in time")
            .expect("note");
        assert_eq!((id, via), (links[2].id(), Some(relay_link.id())));
        assert_eq!(v, json!({"n": 1}));

        // The server's request to a client, answered by the relay for it.
        let asking = {
            let server = server.clone();
            let id = links[0].id();
            tokio::spawn(async move {
                server
                    .request::<Value, _>(id, &json!({"op": "whoami"}))
                    .await
            })
        };
        match relay.data_event().await {
            CoreEvent::ClientRequest {
                client, id, body, ..
            } => {
                assert_eq!(client, clients[0]);
                assert_eq!(body.get(), r#"{"op":"whoami"}"#);
                relay
                    .conn
                    .client_respond(client, id, Ok(&raw(&json!({"me": "c0"}))))
                    .expect("cres");
            }
            other => panic!("expected the server's request, got {other:?}"),
        }
        relay.flush().await;
        let who = asking
            .await
            .expect("task")
            .expect("the relayed client answered");
        assert_eq!(who, json!({"me": "c0"}));

        // send by id, and broadcast (to the three clients, not the relay).
        server
            .send(links[1].id(), &json!({"hello": 1}))
            .await
            .expect("send");
        match relay.data_event().await {
            CoreEvent::ClientMessage { client, body, .. } => {
                assert_eq!(client, clients[1]);
                assert_eq!(body.get(), r#"{"hello":1}"#);
            }
            other => panic!("expected the server's message, got {other:?}"),
        }
        assert_eq!(
            server.broadcast(&json!({"all": true})).expect("broadcast"),
            3
        );
        let mut reached = HashSet::new();
        for _ in 0..3 {
            match relay.data_event().await {
                CoreEvent::ClientMessage { client, body, .. } => {
                    assert_eq!(body.get(), r#"{"all":true}"#);
                    reached.insert(client);
                }
                other => panic!("expected the broadcast, got {other:?}"),
            }
        }
        assert_eq!(reached, clients.iter().copied().collect::<HashSet<_>>());

        // A client leaves while the server's request to it is in flight:
        // Closed for its link, the request fails ConnectionLost.
        let pending = {
            let server = server.clone();
            let id = links[0].id();
            tokio::spawn(async move {
                server
                    .request::<Value, _>(id, &json!({"op": "never"}))
                    .await
            })
        };
        match relay.data_event().await {
            CoreEvent::ClientRequest { client, .. } => assert_eq!(client, clients[0]),
            other => panic!("expected the server's request, got {other:?}"),
        }
        relay
            .conn
            .leave(Instant::now(), clients[0], CloseCode::Gone, "client went")
            .expect("leave");
        relay.flush().await;
        let (gone, reason) = closed(&server).await;
        assert_eq!(gone.id(), links[0].id());
        assert!(
            matches!(&reason, CloseReason::Remote { code, .. } if *code == CloseCode::Gone),
            "closed for the relay's reason: {reason:?}"
        );
        assert!(matches!(
            pending.await.expect("task"),
            Err(Error::ConnectionLost)
        ));
        assert!(links[0].is_closed());
        assert!(server.link(links[0].id()).is_none());
        assert!(matches!(
            server.send(links[0].id(), &json!({})).await,
            Err(Error::UnknownLink(_))
        ));

        // A new client gets a new id (never reused).
        let c4 = relay.join("c4", "10.0.0.4:1004");
        relay.flush().await;
        let (l4, _) = authenticated_with_info(&server).await;
        assert!(ids.insert(l4.id()), "a new id: {} among {ids:?}", l4.id());
        assert!(l4.id() > links[2].id());
        let _ = c4;

        // The relay connection drops with a request of the server's in
        // flight: it fails ConnectionLost; Closed for each client left and
        // for the relay link.
        let in_flight = {
            let server = server.clone();
            let id = links[1].id();
            tokio::spawn(async move {
                server
                    .request::<Value, _>(id, &json!({"op": "never"}))
                    .await
            })
        };
        loop {
            match relay.data_event().await {
                CoreEvent::ClientRequest { client, .. } => {
                    assert_eq!(client, clients[1]);
                    break;
                }
                // Our own leave of the first client, reported to the relay.
                CoreEvent::Left { client, .. } => assert_eq!(client, clients[0]),
                other => panic!("expected the server's request, got {other:?}"),
            }
        }
        drop(relay);
        assert!(matches!(
            in_flight.await.expect("task"),
            Err(Error::ConnectionLost)
        ));
        let mut closed_ids = HashSet::new();
        for _ in 0..4 {
            let (link, _) = closed(&server).await;
            closed_ids.insert(link.id());
        }
        assert_eq!(
            closed_ids,
            HashSet::from([links[1].id(), links[2].id(), l4.id(), relay_link.id()])
        );
        assert!(server.links().is_empty());
        let stats = server.stats();
        assert_eq!(stats.connections, 0, "every slot released: {stats:?}");
        assert_eq!(stats.requests_in_flight, 0, "{stats:?}");
        assert_eq!(
            stats.authenticated, 5,
            "the relay and four clients: {stats:?}"
        );
    });
}

#[test]
fn relayed_clients_count_against_the_per_address_and_per_relay_limits() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let secret = relay_secret();
        let server = bind(
            fx.server()
                .relay_secrets(vec![secret.clone()])
                .max_connections_per_ip(Some(1))
                .max_relayed_clients(2),
        )
        .await;
        let mut relay = TestRelay::connect(&fx, &server, secret).await;
        let (relay_link, _) = authenticated_with_info(&server).await;

        // Two clients from one address: the second is refused.
        let a = relay.join("a", "10.9.9.9:1");
        let b = relay.join("b", "10.9.9.9:2");
        relay.flush().await;
        let (link_a, _) = authenticated_with_info(&server).await;
        assert_eq!(link_a.peer_addr().to_string(), "10.9.9.9:1");
        match relay.data_event().await {
            CoreEvent::Left { client, reason } => {
                assert_eq!(client, b);
                assert!(
                    matches!(&reason, CloseReason::Remote { code, .. } if *code == CloseCode::Refused),
                    "{reason:?}"
                );
            }
            other => panic!("expected the refusal of the second client, got {other:?}"),
        }
        let (from, error) = error_event(&server).await;
        assert_eq!(from.map(|a| a.to_string()).as_deref(), Some("10.9.9.9:2"));
        assert!(matches!(
            error,
            Error::Refused {
                limit: "max_connections_per_ip"
            }
        ));

        // Another address: admitted; then the relay's limit (2 live) refuses.
        let c = relay.join("c", "10.9.9.8:1");
        let d = relay.join("d", "10.9.9.7:1");
        relay.flush().await;
        let (link_c, _) = authenticated_with_info(&server).await;
        assert_eq!(link_c.via_relay(), Some(relay_link.id()));
        match relay.data_event().await {
            CoreEvent::Left { client, reason } => {
                assert_eq!(client, d);
                assert!(
                    matches!(&reason, CloseReason::Remote { code, .. } if *code == CloseCode::Refused),
                    "{reason:?}"
                );
            }
            other => panic!("expected the refusal of the third live client, got {other:?}"),
        }
        assert_eq!(server.links().len(), 3);
        // One round trip later both refusals are counted: the address
        // limit's (by the server) and the relay limit's (by the core).
        relay
            .conn
            .client_forward(c, PeerRequestId(1), &raw(&json!({"op": "nothing"})))
            .expect("forward");
        match relay.data_event().await {
            CoreEvent::ClientRequestFailed { client, .. } => assert_eq!(client, c),
            other => panic!("expected no_handler, got {other:?}"),
        }
        assert_eq!(server.stats().connections_refused, 2);
        let _ = a;
    });
}

#[test]
fn unusable_relay_secrets_are_refused_at_bind() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let same = fx.secret.clone();
        let err = fx
            .server()
            .relay_secrets(vec![same])
            .bind(jsonlink_tests::fixtures::localhost())
            .await
            .expect_err("a relay secret equal to the client secret");
        assert!(matches!(err, Error::RelaySecrets(_)), "{err:?}");
    });
}

#[test]
fn a_slow_relayed_client_is_answered_busy_without_stalling_the_others() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let secret = relay_secret();
        let server = bind(
            fx.server()
                .relay_secrets(vec![secret.clone()])
                .max_handler_tasks(1),
        )
        .await;
        common_handlers(server.handlers());
        let (gate_tx, gate_rx) = async_channel::bounded::<()>(1);
        server
            .handlers()
            .handle_request("hold", move |_link: Link, _v: Value| {
                let gate = gate_rx.clone();
                async move {
                    let _ = gate.recv().await;
                    Ok(1)
                }
            });
        let mut relay = TestRelay::connect(&fx, &server, secret).await;
        let _relay_link = authenticated_with_info(&server).await;
        let slow = relay.join("slow", "10.1.0.1:1");
        let other = relay.join("other", "10.1.0.2:1");
        relay.flush().await;
        let _ = relayed_links(&server, 2).await;

        // The slow client's first call takes its one handler slot; its
        // second is answered busy at once; the other client is served.
        let hold = raw(&json!({"op": "hold"}));
        relay
            .conn
            .client_forward(slow, PeerRequestId(1), &hold)
            .expect("forward");
        relay
            .conn
            .client_forward(slow, PeerRequestId(2), &hold)
            .expect("forward");
        relay
            .conn
            .client_forward(
                other,
                PeerRequestId(1),
                &raw(&json!({"op": "add", "a": 1, "b": 1})),
            )
            .expect("forward");
        let mut busy = false;
        let mut added = false;
        while !(busy && added) {
            match relay.data_event().await {
                CoreEvent::ClientRequestFailed { client, id, error } => {
                    assert_eq!((client, id.0), (slow, 2), "{error:?}");
                    assert!(format!("{error:?}").contains("busy"), "{error:?}");
                    busy = true;
                }
                CoreEvent::ClientResponse { client, id, body } => {
                    assert_eq!((client, id.0, body.get()), (other, 1, "2"));
                    added = true;
                }
                other => {
                    panic!("expected busy for the slow client and 2 for the other, got {other:?}")
                }
            }
        }
        // Released, the slow client's first call is answered.
        gate_tx.send(()).await.expect("gate");
        match relay.data_event().await {
            CoreEvent::ClientResponse { client, id, body } => {
                assert_eq!((client, id.0, body.get()), (slow, 1, "1"));
            }
            other => panic!("expected the held answer, got {other:?}"),
        }
    });
}

/// X4 at the runtime level: a plain client (the client secret, no relay
/// role) sending relay frames to a server that allows relays is closed
/// `unexpected_frame`; no relayed client appears.
#[test]
fn x4_rt_relay_frames_from_a_plain_client_close_its_link() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = bind(fx.server().relay_secrets(vec![relay_secret()])).await;
        let (mut raw_tls, mut conn) = fx.adversary(server.local_addr()).await;
        assert!(!conn.is_relay());
        let (plain, info) = authenticated_with_info(&server).await;
        assert!(!info.relay);
        raw_tls
            .send(
                b"{\"t\":\"join\",\"c\":1,\"node\":\"n\",\"designation\":\"d\",\"addr\":\"1.2.3.4:5\",\"max_frame\":4096}\n",
            )
            .await
            .expect("write");
        let (link, reason) = closed(&server).await;
        assert_eq!(link.id(), plain.id());
        let mut peer_saw = None;
        while let Some(ev) = raw_tls
            .next_event(&mut conn, SETTLE)
            .await
            .expect("the server closes in time")
        {
            if let CoreEvent::Closed(r) = ev {
                peer_saw = Some(r);
            }
        }
        let peer_saw = peer_saw.expect("the adversary's core closed");
        assert!(
            matches!(&peer_saw, CloseReason::Remote { code, .. } if *code == CloseCode::UnexpectedFrame),
            "{peer_saw:?}"
        );
        assert!(server.links().is_empty(), "no relayed client appeared");
        assert_eq!(reason.code(), CloseCode::UnexpectedFrame, "{reason:?}");
        jsonlink_tests::faults::record(
            "X4/rt",
            format!(
                "join from a plain client over TLS: server Closed {}, peer got close {}, no relayed link",
                reason.code().as_str(),
                CloseCode::UnexpectedFrame.as_str()
            ),
        );
    });
}

#[test]
fn closing_a_relayed_link_and_shutting_down_end_relayed_clients() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let secret = relay_secret();
        let server = bind(fx.server().relay_secrets(vec![secret.clone()])).await;
        let mut relay = TestRelay::connect(&fx, &server, secret).await;
        let (relay_link, _) = authenticated_with_info(&server).await;
        let a = relay.join("a", "10.2.0.1:1");
        let b = relay.join("b", "10.2.0.2:1");
        relay.flush().await;
        let links = relayed_links(&server, 2).await;

        // Link::close on a relayed client: the relay gets the going-away
        // notice for it, answers with its leave, and the link is Closed.
        links[0].close("enough").await;
        match relay.data_event().await {
            CoreEvent::ClientClosing { client, reason } => {
                assert_eq!((client, reason.as_str()), (a, "enough"));
            }
            other => panic!("expected the notice for the client, got {other:?}"),
        }
        relay
            .conn
            .leave(Instant::now(), a, CloseCode::Normal, "")
            .expect("leave");
        relay.flush().await;
        let (gone, _) = closed(&server).await;
        assert_eq!(gone.id(), links[0].id());
        assert!(links[0].is_closed());
        assert!(!links[1].is_closed());
        assert_eq!(links[1].stats().messages_in, 0);

        // Shutdown: the relay link closes gracefully and takes its client.
        let stopping = {
            let server = server.clone();
            tokio::spawn(async move {
                server
                    .shutdown(Instant::now() + std::time::Duration::from_secs(5))
                    .await;
            })
        };
        let mut ended = false;
        while !ended {
            match relay.raw.next_event(&mut relay.conn, SETTLE).await {
                Ok(Some(CoreEvent::Closed(_))) | Ok(None) | Err(_) => ended = true,
                Ok(Some(_)) => relay.flush().await,
            }
        }
        let mut closed_ids = HashSet::new();
        for _ in 0..2 {
            let (link, _) = closed(&server).await;
            closed_ids.insert(link.id());
        }
        assert_eq!(closed_ids, HashSet::from([links[1].id(), relay_link.id()]));
        tokio::time::timeout(SETTLE, stopping)
            .await
            .expect("shutdown returns")
            .expect("task");
        assert!(server.links().is_empty());
        let _ = b;
    });
}
