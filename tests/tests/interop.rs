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

use std::time::Duration;

use jsonlink_rt::{Error, Event, EventKind, Identity, Keepalive, Policy, Secret};
use jsonlink_tests::fixtures::{
    ClientParts, Fixture, another_secret, assert_whoami_answered, bind, common_handlers,
    whoami_handler,
};
use jsonlink_tests::runtimes::{LIMIT, RuntimeKind, block_on_within};
use jsonlink_tests::waits::{authenticated_with_info, closed, error_event};
use serde_json::{Value, json};
/// Messages sent each way.
const MESSAGES: u64 = 10;
/// Concurrent client → server requests.
const REQUESTS: i64 = 16;

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

/// Keepalive from the server: often enough to be seen within the test,
/// carrying data the client checks.
fn server_keepalive() -> Option<Keepalive> {
    Some(Keepalive {
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(5),
        data: Some(serde_json::value::to_raw_value(&json!({"hb": "server"})).expect("json")),
    })
}

/// The whole exchange between a client on `client_rt` and a server on
/// `server_rt`.
fn interop(client_rt: RuntimeKind, server_rt: RuntimeKind, protection: Protection) {
    let server_side = server_rt.start();
    let client_side = client_rt.start();
    let server_fx = Fixture::new(server_side.rt());
    let client_fx = server_fx.on_runtime(client_side.rt());
    let policy = protection.policy();

    block_on_within(LIMIT, async {
        // The server counts `note` messages into a channel and adds.
        let server = bind(
            server_fx
                .server_as(Identity::new("server-1", format!("{server_rt:?}")))
                .signing(policy)
                .encryption(policy)
                .keepalive(server_keepalive()),
        )
        .await;
        let (notes_tx, notes_rx) = async_channel::bounded::<(u64, u64)>(MESSAGES as usize);
        server.handlers().on_message("note", move |m| {
            let tx = notes_tx.clone();
            async move {
                let n = m.parse::<Value>().expect("json")["n"].as_u64().expect("n");
                tx.send((m.link.id(), n)).await.expect("test listening");
            }
        });
        common_handlers(server.handlers());

        // The client answers `whoami` and counts `notice` messages.
        let client_builder = |secret: Secret| {
            client_fx
                .client_with(ClientParts {
                    secret,
                    identity: Identity::new("client-1", format!("{client_rt:?}")),
                    ..client_fx.client_parts(server.local_addr())
                })
                .signing(policy)
                .encryption(policy)
        };
        let client = client_builder(client_fx.secret.clone())
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
        whoami_handler(client.handlers());

        // Both sides authenticated each other and negotiated what both asked for.
        let (link, info) = authenticated_with_info(&server).await;
        assert_eq!(info.peer.node, "client-1", "the server knows the client");
        assert_eq!(
            info.peer.designation,
            format!("{client_rt:?}"),
            "the client's designation"
        );
        assert_eq!(
            (info.signing, info.encryption),
            (protection.on(), protection.on()),
            "the server negotiated what both asked for"
        );
        let client_link = client.link().expect("connected");
        let client_info = client_link.auth().expect("authenticated");
        assert_eq!(
            client_info.peer.node, "server-1",
            "the client knows the server"
        );
        assert_eq!(
            client_info.connection_id,
            link.id(),
            "both sides name the link alike"
        );
        assert_eq!(
            (client_info.signing, client_info.encryption),
            (protection.on(), protection.on()),
            "the client negotiated what both asked for"
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
            assert_eq!(from, link.id(), "the note came from the client's link");
            notes.push(n);
        }
        notes.sort_unstable();
        assert_eq!(
            notes,
            (0..MESSAGES).collect::<Vec<_>>(),
            "every note arrived once"
        );

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
        assert_eq!(
            notices,
            (0..MESSAGES).collect::<Vec<_>>(),
            "every notice arrived once"
        );

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
            assert_eq!(sum.expect("add"), i + 1000, "request {i} got its answer");
        }

        // Server → client request, answered by the client's handlers.
        assert_whoami_answered(&server, &link).await;

        // A ping with data from the client: the server sees the data, the
        // client gets the pong.
        client.ping(Some(&json!({"load": 1}))).await.expect("ping");
        match server.wait_for(EventKind::Ping).await {
            Some(Event::Ping { link: l, data }) => {
                assert_eq!(l.id(), link.id(), "the ping came on the client's link");
                let data: Value = data.expect("ping data").parse().expect("json");
                assert_eq!(data, json!({"load": 1}), "the server saw the ping's data");
            }
            other => panic!("expected Ping, got {other:?}"),
        }
        assert!(
            matches!(
                client.wait_for(EventKind::Pong).await,
                Some(Event::Pong { .. })
            ),
            "the client got the pong"
        );
        // The server's keepalive pings carry their configured data.
        match client.wait_for(EventKind::Ping).await {
            Some(Event::Ping { data, .. }) => {
                let data: Value = data.expect("keepalive data").parse().expect("json");
                assert_eq!(
                    data,
                    json!({"hb": "server"}),
                    "the keepalive ping carries its data"
                );
            }
            other => panic!("expected a keepalive Ping, got {other:?}"),
        }

        let stats = server.stats();
        assert_eq!(stats.connections, 1, "one connection");
        assert_eq!(stats.authenticated, 1, "one authentication");
        assert_eq!(stats.messages_in, MESSAGES, "messages in");
        assert_eq!(stats.messages_out, MESSAGES, "messages out");
        assert_eq!(stats.requests_in, REQUESTS as u64, "requests in");
        assert_eq!(stats.requests_out, 1, "requests out");
        assert_eq!(stats.requests_in_flight, 0, "nothing left in flight");

        // A graceful close is seen as such by the server.
        client.close().await;
        assert!(client.is_closed(), "the client is closed");
        let (closed_link, reason) = closed(&server).await;
        assert_eq!(closed_link.id(), link.id(), "the client's link closed");
        assert!(reason.is_graceful(), "a graceful close: {reason:?}");
        assert_eq!(server.stats().connections, 0, "no connection left");

        // A wrong secret fails on both sides with a typed error.
        let wrong = client_builder(another_secret()).connect().await;
        match wrong {
            Err(e) => {
                assert!(e.is_auth(), "{e:?}");
                let Error::Auth(reason) = e else {
                    unreachable!()
                };
                assert_eq!(
                    reason.code(),
                    jsonlink_rt::CloseCode::AuthFailed,
                    "the client sees auth_failed"
                );
            }
            Ok(c) => panic!("a wrong secret authenticated: {c:?}"),
        }
        let (_, error) = error_event(&server).await;
        assert!(
            matches!(&error, Error::Auth(reason) if reason.code() == jsonlink_rt::CloseCode::AuthFailed),
            "the server reports auth_failed: {error:?}"
        );
        assert_eq!(
            server.stats().authenticated,
            1,
            "the wrong secret did not authenticate"
        );
    });
}

/// One `#[test]` per (client runtime, server runtime) pair.
macro_rules! pairs {
    ($($name:ident: $client:ident -> $server:ident, $protection:ident;)*) => {
        $(
            #[test]
            fn $name() {
                interop(RuntimeKind::$client, RuntimeKind::$server, Protection::$protection);
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
