//! A session end to end, over real TLS on 127.0.0.1: both sides
//! authenticate and know who they talk to, messages go to their op's
//! handler, requests go both ways, op-less messages reach the event stream
//! of a declared consumer, a graceful close is seen as such; a wrong secret
//! fails on both sides; a peer that stops reading is closed by keepalive.

use std::sync::Arc;

use jsonlink_rt::{CloseCode, CloseReason, Error, Event, EventKind, Keepalive, Link, Runtime};
use jsonlink_tests::fixtures::{
    Fixture, add_handler, another_secret, assert_whoami_answered, bind, client_identity, connect,
    ms, whoami_handler,
};
use jsonlink_tests::runtimes::{Gauges, on_tokio};
use jsonlink_tests::tests_on_tokio_and_smol;
use jsonlink_tests::waits::{authenticated, closed, error_event};
use serde_json::{Value, json};

/// Registers `note` on `server`: the text of each note and its link's id
/// go into the channel returned.
fn notes(server: &jsonlink_rt::Server) -> async_channel::Receiver<(u64, String)> {
    let (notes_tx, notes_rx) = async_channel::bounded::<(u64, String)>(4);
    server.handlers().on_message("note", move |m| {
        let tx = notes_tx.clone();
        async move {
            let text = m.parse::<Value>().expect("json")["text"].to_string();
            tx.send((m.link.id(), text)).await.expect("test listening");
        }
    });
    notes_rx
}

/// The bodies of the next `n` messages of `client`'s event stream, read
/// in batches of at most `max`.
async fn message_bodies(client: &jsonlink_rt::Client, n: usize, max: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        let before = got.len();
        let taken = client.next_events(&mut got, max).await;
        assert!(
            (1..=max).contains(&taken) && got.len() == before + taken,
            "a batch holds 1 to {max} events: {taken}"
        );
    }
    got.iter()
        .map(|e| match e {
            Event::Message(m) => m.body.get().to_owned(),
            other => panic!("expected a message, got {other:?}"),
        })
        .collect()
}

async fn authenticate_message_by_op_and_request_both_ways(rt: Arc<dyn Runtime>) {
    let fx = Fixture::new(rt);
    let server = bind(fx.server()).await;
    let notes = notes(&server);
    add_handler(&server);

    // The client reads its event stream's messages: it says so.
    let client = connect(fx.client(server.local_addr()).consume_events(true)).await;
    whoami_handler(client.handlers());

    // Both sides know who they talk to.
    let link = authenticated(&server).await;
    assert_eq!(
        link.peer().expect("authenticated"),
        &client_identity(),
        "the server knows the client"
    );
    let client_link = client.link().expect("connected");
    assert_eq!(
        client_link.peer().expect("authenticated").node,
        "server-1",
        "the client knows the server"
    );
    assert_eq!(
        client_link.id(),
        link.id(),
        "both sides name the link alike"
    );
    assert_eq!(
        server.links().iter().map(Link::id).collect::<Vec<_>>(),
        vec![link.id()],
        "the server lists the link"
    );

    // A message goes to its op's handler.
    client
        .send(&json!({"op": "note", "text": "hello"}))
        .await
        .expect("send");
    assert_eq!(
        notes.recv().await.expect("a note"),
        (link.id(), "\"hello\"".into()),
        "the note handler got the message"
    );

    // Client → server, typed both ways.
    let sum: i64 = client
        .request(&json!({"op": "add", "a": 2, "b": 3}))
        .await
        .expect("add");
    assert_eq!(sum, 5, "a typed request is answered");

    // A response that does not fit the caller's type fails only that call.
    let wrong = client
        .request::<String, _>(&json!({"op": "add", "a": 1, "b": 1}))
        .await;
    assert!(matches!(wrong, Err(Error::Decode(_))), "{wrong:?}");
    let sum: Value = client
        .request(&json!({"op": "add", "a": 20, "b": 22}))
        .await
        .expect("add after a decode error");
    assert_eq!(sum, json!(42), "the link works after a decode error");

    // Server → client.
    assert_whoami_answered(&server, &link).await;

    // Op-less messages reach the event stream (of a declared consumer).
    server
        .send(link.id(), &json!([1, 2, 3]))
        .await
        .expect("send");
    match client.wait_for(EventKind::Message).await {
        Some(Event::Message(m)) => assert_eq!(
            m.body.get(),
            "[1,2,3]",
            "an op-less message reaches the event stream"
        ),
        other => panic!("expected a message, got {other:?}"),
    }

    // Several at once: `next_events` takes a batch, in order, at most `max`.
    for n in 0..5 {
        server.send(link.id(), &json!([n])).await.expect("send");
    }
    assert_eq!(
        message_bodies(&client, 5, 3).await,
        ["[0]", "[1]", "[2]", "[3]", "[4]"],
        "batches keep the order"
    );
    assert_eq!(
        client.next_events(&mut Vec::new(), 0).await,
        0,
        "a batch of at most 0 takes nothing"
    );

    let stats = server.stats();
    assert_eq!(stats.connections, 1, "one connection");
    assert_eq!(stats.messages_in, 1, "messages in");
    assert_eq!(stats.requests_in, 3, "requests in");
    assert_eq!(stats.requests_out, 1, "requests out");
    assert_eq!(stats.requests_in_flight, 0, "nothing left in flight");
    assert!(
        stats.bytes_in > 0 && stats.bytes_out > 0,
        "bytes are counted both ways"
    );

    client.close().await;
    let (closed_link, reason) = closed(&server).await;
    assert_eq!(closed_link.id(), link.id(), "the client's link closed");
    assert!(reason.is_graceful(), "a graceful close: {reason:?}");
    assert_eq!(server.stats().connections, 0, "no connection left");
}

tests_on_tokio_and_smol!(authenticate_message_by_op_and_request_both_ways =>
    authenticate_message_by_op_and_request_both_ways_on_tokio,
    authenticate_message_by_op_and_request_both_ways_on_smol);

#[test]
fn a_wrong_secret_fails_on_both_sides_with_a_typed_error() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = bind(fx.server()).await;
        let wrong = another_secret();
        let r = fx
            .client_with_secret(server.local_addr(), wrong)
            .connect()
            .await;
        match r {
            Err(Error::Auth(reason)) => assert_eq!(
                reason.code(),
                CloseCode::AuthFailed,
                "the client sees auth_failed"
            ),
            other => panic!("expected Auth, got {other:?}"),
        }
        let (_, error) = error_event(&server).await;
        assert!(
            matches!(&error, Error::Auth(reason) if reason.code() == CloseCode::AuthFailed),
            "the server reports auth_failed: {error:?}"
        );
        assert_eq!(server.stats().authenticated, 0, "nobody authenticated");
    });
}

#[test]
fn a_peer_that_stops_reading_is_closed_by_keepalive_and_its_requests_fail() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = bind(fx.server().keepalive(Some(Keepalive {
            interval: ms(100),
            timeout: ms(200),
            data: None,
        })))
        .await;
        // The client's stream holds one event and its declared consumer
        // does not read it: after two op-less messages its link stops
        // reading (and answering pings).
        let client = connect(
            fx.client(server.local_addr())
                .consume_events(true)
                .event_capacity(1)
                .keepalive(None),
        )
        .await;
        let link = authenticated(&server).await;
        link.send(&json!(["fill"])).await.expect("send");
        link.send(&json!(["block"])).await.expect("send");
        let r = link.request::<Value, _>(&json!({"q": "never read"})).await;
        assert!(
            matches!(r, Err(Error::ConnectionLost)),
            "a request to a peer that stopped reading: {r:?}"
        );
        match server.wait_for(EventKind::KeepaliveTimeout).await {
            Some(Event::KeepaliveTimeout { link: l }) => {
                assert_eq!(l.id(), link.id(), "the link that stopped reading timed out")
            }
            other => panic!("expected KeepaliveTimeout, got {other:?}"),
        }
        let (_, reason) = closed(&server).await;
        assert_eq!(reason, CloseReason::KeepaliveTimeout, "closed by keepalive");
        drop(client);
    });
}
