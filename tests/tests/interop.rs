//! Every client runtime against every server runtime (tokio, async-std,
//! smol: 3 × 3), over real TLS on 127.0.0.1.
//!
//! Each pair authenticates, exchanges messages dispatched by op both ways,
//! makes requests both ways (typed on the client, answered by a handler on
//! the client's handlers for the server's), pings with data both ways (an
//! explicit ping from the client, keepalive pings with configured data from
//! the server), closes gracefully, and then sees a wrong secret fail on both
//! sides with a typed error. Some pairs run with signing and encryption
//! required on both sides, the others with both off; each pair checks that
//! what was negotiated is what it asked for.
//!
//! Every test is bounded by [`LIMIT`] and synchronises on events and
//! futures, never on sleeps. The test body is driven by
//! `futures_lite::future::block_on` on the test thread, so neither side's
//! executor is the one awaiting: each runtime runs its own tasks.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jsonlink_rt::{
    Client, DevPki, Error, Event, EventKind, Identity, Keepalive, Link, Policy, Runtime, Secret,
    Server,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Upper bound on one test's body.
const LIMIT: Duration = Duration::from_secs(20);
/// Messages sent each way.
const MESSAGES: u64 = 10;
/// Concurrent client → server requests.
const REQUESTS: i64 = 16;

/// One of the three runtimes an adapter crate binds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rt {
    Tokio,
    AsyncStd,
    Smol,
}

/// A started runtime; for tokio, the runtime itself is held here for the
/// test's duration (and dropped after the test body has returned).
struct Started {
    rt: Arc<dyn Runtime>,
    _tokio: Option<tokio::runtime::Runtime>,
}

impl Rt {
    fn start(self) -> Started {
        match self {
            Self::Tokio => {
                let tokio = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                let rt: Arc<dyn Runtime> = Arc::new(jsonlink_tokio::TokioRuntime::from_handle(
                    tokio.handle().clone(),
                ));
                Started {
                    rt,
                    _tokio: Some(tokio),
                }
            }
            Self::AsyncStd => Started {
                rt: jsonlink_async_std::runtime(),
                _tokio: None,
            },
            Self::Smol => Started {
                rt: jsonlink_smol::runtime(),
                _tokio: None,
            },
        }
    }
}

/// Whether signing and encryption are required (on) or refused (off) by
/// both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protection {
    Plain,
    SignedAndSealed,
}

impl Protection {
    fn policy(self) -> Policy {
        match self {
            Self::Plain => Policy::Off,
            Self::SignedAndSealed => Policy::Required,
        }
    }

    fn on(self) -> bool {
        self == Self::SignedAndSealed
    }
}

/// Drives `body` to completion on the test thread, failing after LIMIT.
fn bounded(body: impl Future<Output = ()>) {
    let finished = futures_lite::future::block_on(futures_lite::future::or(
        async {
            body.await;
            true
        },
        async {
            smol::Timer::after(LIMIT).await;
            false
        },
    ));
    assert!(finished, "test did not finish within {LIMIT:?}");
}

#[derive(Debug, Serialize, Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

/// Keepalive from the server: often enough to be seen within the test,
/// carrying data the client checks.
fn server_keepalive() -> Option<Keepalive> {
    Some(Keepalive {
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(5),
        data: Some(serde_json::value::to_raw_value(&json!({"hb": "server"})).expect("json")),
    })
}

async fn authenticated(server: &Server) -> (Link, jsonlink_rt::Authenticated) {
    match server.wait_for(EventKind::Authenticated).await {
        Some(Event::Authenticated { link, info }) => (link, info),
        other => panic!("expected Authenticated, got {other:?}"),
    }
}

/// The whole exchange between a client on `client_rt` and a server on
/// `server_rt`.
fn interop(client_rt: Rt, server_rt: Rt, protection: Protection) {
    let server_side = server_rt.start();
    let client_side = client_rt.start();
    let pki = DevPki::generate().expect("dev certs");
    let secret = Secret::generate().expect("secret");
    let policy = protection.policy();

    bounded(async {
        // The server counts `note` messages into a channel and adds.
        let server = Server::builder(
            server_side.rt.clone(),
            pki.server_config().expect("tls"),
            secret.clone(),
            Identity::new("server-1", format!("{server_rt:?}")),
        )
        .signing(policy)
        .encryption(policy)
        .keepalive(server_keepalive())
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
        let (notes_tx, notes_rx) = async_channel::bounded::<(u64, u64)>(MESSAGES as usize);
        server.handlers().on_message("note", move |m| {
            let tx = notes_tx.clone();
            async move {
                let n = m.parse::<Value>().expect("json")["n"].as_u64().expect("n");
                tx.send((m.link.id(), n)).await.expect("test listening");
            }
        });
        server
            .handlers()
            .handle_request("add", |_link, v: Add| async move { Ok(v.a + v.b) });

        // The client answers `whoami` and counts `notice` messages.
        let client_builder = |secret: Secret| {
            Client::builder(
                client_side.rt.clone(),
                server.local_addr(),
                pki.client_config().expect("tls"),
                pki.server_name(),
                secret,
                Identity::new("client-1", format!("{client_rt:?}")),
            )
            .signing(policy)
            .encryption(policy)
        };
        let client = client_builder(secret.clone())
            .connect()
            .await
            .expect("connect");
        let (notices_tx, notices_rx) = async_channel::bounded::<u64>(MESSAGES as usize);
        client.handlers().on_message("notice", move |m| {
            let tx = notices_tx.clone();
            async move {
                let n = m.parse::<Value>().expect("json")["n"].as_u64().expect("n");
                tx.send(n).await.expect("test listening");
            }
        });
        client
            .handlers()
            .handle_request("whoami", |link: Link, _: Value| async move {
                Ok(json!({"me": "client-1", "peer": link.peer().map(|p| p.node.clone())}))
            });

        // Both sides authenticated each other and negotiated what both asked for.
        let (link, info) = authenticated(&server).await;
        assert_eq!(info.peer.node, "client-1");
        assert_eq!(info.peer.designation, format!("{client_rt:?}"));
        assert_eq!(
            (info.signing, info.encryption),
            (protection.on(), protection.on())
        );
        let client_link = client.link().expect("connected");
        let client_info = client_link.auth().expect("authenticated");
        assert_eq!(client_info.peer.node, "server-1");
        assert_eq!(client_info.connection_id, link.id());
        assert_eq!(
            (client_info.signing, client_info.encryption),
            (protection.on(), protection.on())
        );

        // Client → server messages reach the `note` handler, each once.
        for n in 0..MESSAGES {
            client
                .send(&json!({"op": "note", "n": n}))
                .await
                .expect("send");
        }
        let mut notes = Vec::new();
        for _ in 0..MESSAGES {
            let (from, n) = notes_rx.recv().await.expect("note");
            assert_eq!(from, link.id());
            notes.push(n);
        }
        notes.sort_unstable();
        assert_eq!(notes, (0..MESSAGES).collect::<Vec<_>>());

        // Server → client messages reach the client's `notice` handler.
        for n in 0..MESSAGES {
            server
                .send(link.id(), &json!({"op": "notice", "n": n}))
                .await
                .expect("send");
        }
        let mut notices = Vec::new();
        for _ in 0..MESSAGES {
            notices.push(notices_rx.recv().await.expect("notice"));
        }
        notices.sort_unstable();
        assert_eq!(notices, (0..MESSAGES).collect::<Vec<_>>());

        // Client → server requests, concurrent and typed.
        let sums = futures_util::future::join_all((0..REQUESTS).map(|i| {
            let client = client.clone();
            async move {
                client
                    .request::<i64, _>(&json!({"op": "add", "a": i, "b": 1000}))
                    .await
            }
        }))
        .await;
        for (i, sum) in (0..REQUESTS).zip(sums) {
            assert_eq!(sum.expect("add"), i + 1000);
        }

        // Server → client request, answered by the client's handlers.
        let who: Value = server
            .request(link.id(), &json!({"op": "whoami"}))
            .await
            .expect("whoami");
        assert_eq!(who, json!({"me": "client-1", "peer": "server-1"}));

        // A ping with data from the client: the server sees the data, the
        // client gets the pong.
        client.ping(Some(&json!({"load": 1}))).await.expect("ping");
        match server.wait_for(EventKind::Ping).await {
            Some(Event::Ping { link: l, data }) => {
                assert_eq!(l.id(), link.id());
                let data: Value = data.expect("ping data").parse().expect("json");
                assert_eq!(data, json!({"load": 1}));
            }
            other => panic!("expected Ping, got {other:?}"),
        }
        assert!(matches!(
            client.wait_for(EventKind::Pong).await,
            Some(Event::Pong { .. })
        ));
        // The server's keepalive pings carry their configured data.
        match client.wait_for(EventKind::Ping).await {
            Some(Event::Ping { data, .. }) => {
                let data: Value = data.expect("keepalive data").parse().expect("json");
                assert_eq!(data, json!({"hb": "server"}));
            }
            other => panic!("expected a keepalive Ping, got {other:?}"),
        }

        let stats = server.stats();
        assert_eq!(stats.connections, 1);
        assert_eq!(stats.authenticated, 1);
        assert_eq!(stats.messages_in, MESSAGES);
        assert_eq!(stats.messages_out, MESSAGES);
        assert_eq!(stats.requests_in, REQUESTS as u64);
        assert_eq!(stats.requests_out, 1);
        assert_eq!(stats.requests_in_flight, 0);

        // A graceful close is seen as such by the server.
        client.close().await;
        assert!(client.is_closed());
        match server.wait_for(EventKind::Closed).await {
            Some(Event::Closed { link: l, reason }) => {
                assert_eq!(l.id(), link.id());
                assert!(reason.is_graceful(), "{reason:?}");
            }
            other => panic!("expected Closed, got {other:?}"),
        }
        assert_eq!(server.stats().connections, 0);

        // A wrong secret fails on both sides with a typed error.
        let wrong = client_builder(Secret::generate().expect("secret"))
            .connect()
            .await;
        match wrong {
            Err(e) => {
                assert!(e.is_auth(), "{e:?}");
                let Error::Auth(reason) = e else {
                    unreachable!()
                };
                assert_eq!(reason.code(), jsonlink_rt::CloseCode::AuthFailed);
            }
            Ok(c) => panic!("a wrong secret authenticated: {c:?}"),
        }
        match server.wait_for(EventKind::Error).await {
            Some(Event::Error {
                error: Error::Auth(reason),
                ..
            }) => assert_eq!(reason.code(), jsonlink_rt::CloseCode::AuthFailed),
            other => panic!("expected an Auth error event, got {other:?}"),
        }
        assert_eq!(server.stats().authenticated, 1);
    });
}

/// One `#[test]` per (client runtime, server runtime) pair.
macro_rules! pairs {
    ($($name:ident: $client:ident -> $server:ident, $protection:ident;)*) => {
        $(
            #[test]
            fn $name() {
                interop(Rt::$client, Rt::$server, Protection::$protection);
            }
        )*
    };
}

// Signing and encryption on where (client + server) is even in the order
// tokio, async-std, smol: every runtime is a client and a server both ways.
pairs! {
    tokio_client_tokio_server: Tokio -> Tokio, SignedAndSealed;
    tokio_client_async_std_server: Tokio -> AsyncStd, Plain;
    tokio_client_smol_server: Tokio -> Smol, SignedAndSealed;
    async_std_client_tokio_server: AsyncStd -> Tokio, Plain;
    async_std_client_async_std_server: AsyncStd -> AsyncStd, SignedAndSealed;
    async_std_client_smol_server: AsyncStd -> Smol, Plain;
    smol_client_tokio_server: Smol -> Tokio, SignedAndSealed;
    smol_client_async_std_server: Smol -> AsyncStd, Plain;
    smol_client_smol_server: Smol -> Smol, SignedAndSealed;
}
