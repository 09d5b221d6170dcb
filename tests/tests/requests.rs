//! Requests that fail without harming their link, over real TLS on
//! 127.0.0.1: fault cases R3 (an answer that does not fit the caller's
//! type) and R4 (no handler; a responder dropped) of
//! tests/faults/FAULTS.md, the same errors both ways and through the event
//! stream, and a value over the peer's max frame.

use std::time::{Duration, Instant};

use futures_lite::future::zip;
use jsonlink_rt::{Client, Error, Event, EventKind, Link, Request};
use jsonlink_tests::faults::record;
use jsonlink_tests::fixtures::{
    Fixture, add_handler, assert_add_answered, bind, connect, hold_requests,
};
use jsonlink_tests::runtimes::{Gauges, on_tokio};
use jsonlink_tests::waits::authenticated;
use serde::Deserialize;
use serde_json::{Value, json};

/// Asserts `r` is a `NoHandler` error answered `no_handler`.
fn assert_no_handler<T: std::fmt::Debug>(r: &Result<T, Error>) {
    match r {
        Err(Error::NoHandler(e)) => assert_eq!(e.code, "no_handler", "the remote code"),
        other => panic!("expected NoHandler, got {other:?}"),
    }
}

/// Asserts `r` is a `HandlerDropped` error answered `handler_dropped`.
fn assert_handler_dropped<T: std::fmt::Debug>(r: &Result<T, Error>) {
    match r {
        Err(Error::HandlerDropped(e)) => {
            assert_eq!(e.code, "handler_dropped", "the remote code")
        }
        other => panic!("expected HandlerDropped, got {other:?}"),
    }
}

/// Registers `forget`, whose handler drops every request unanswered.
fn forget_handler(server: &jsonlink_rt::Server) {
    server
        .handlers()
        .on_request("forget", |req: Request| async move { drop(req) });
}

// ------------------------------------------------------------------- R3

#[derive(Debug, Deserialize)]
struct Person {
    #[allow(dead_code)]
    name: String,
    #[allow(dead_code)]
    age: u32,
}

#[test]
fn r3_a_response_that_does_not_fit_the_callers_type_fails_only_that_call() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = bind(fx.server()).await;
        add_handler(&server);
        server
            .handlers()
            .handle_request("person", |_l, _: Value| async move {
                Ok(json!({"name": "ada", "age": "thirty-six"}))
            });
        let client = fx.connected_client(&server).await;
        let link = authenticated(&server).await;

        let wrong_type = client
            .request::<String, _>(&json!({"op": "add", "a": 1, "b": 1}))
            .await;
        assert!(
            matches!(wrong_type, Err(Error::Decode(_))),
            "a number read as a string: {wrong_type:?}"
        );
        let wrong_field = client.request::<Person, _>(&json!({"op": "person"})).await;
        assert!(
            matches!(wrong_field, Err(Error::Decode(_))),
            "a mistyped field: {wrong_field:?}"
        );

        // The link stays up: the same link answers the next request.
        assert_add_answered(&client, 20, 22).await;
        assert_eq!(
            client.link().map(|l| l.id()),
            Some(link.id()),
            "still the same link"
        );
        assert_eq!(server.stats().connections, 1, "one connection throughout");
        assert_eq!(server.stats().authenticated, 1, "no reconnect");
        while let Some(ev) = server.try_next_event() {
            assert!(
                !matches!(ev, Event::Closed { .. }),
                "no link closed: {ev:?}"
            );
        }
        record(
            "R3",
            "Decode for a number read as a string and for a mistyped field; \
             the next request on the same link succeeded",
        );
    });
}

// ------------------------------------------------------------------- R4

#[test]
fn r4_no_handler_and_a_dropped_responder_are_typed_errors_at_once() {
    // Long enough that a timeout would be unmistakable (and past LIMIT).
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = bind(fx.server().request_timeout(REQUEST_TIMEOUT)).await;
        add_handler(&server);
        forget_handler(&server);
        let held = hold_requests(server.handlers());
        let client = connect(
            fx.client(server.local_addr())
                .request_timeout(REQUEST_TIMEOUT),
        )
        .await;
        let link = authenticated(&server).await;
        let well_before_the_timeout = |t: Instant| {
            assert!(
                t.elapsed() < REQUEST_TIMEOUT / 10,
                "failed at once, not at the timeout: {:?}",
                t.elapsed()
            )
        };

        // No handler for the op: a typed error response.
        assert_no_handler(&client.request::<Value, _>(&json!({"op": "nope"})).await);
        // The other way: the client has no handler for it either.
        let r = server
            .request::<Value, _>(link.id(), &json!({"op": "nope"}))
            .await;
        assert!(matches!(r, Err(Error::NoHandler(_))), "{r:?}");

        // A handler that drops its request unanswered: HandlerDropped at
        // once, nowhere near the request timeout.
        let t = Instant::now();
        assert_handler_dropped(&client.request::<Value, _>(&json!({"op": "forget"})).await);
        well_before_the_timeout(t);

        // A request held for a while and then dropped: HandlerDropped as
        // soon as it is dropped.
        let t = Instant::now();
        let hold = json!({"op": "hold"});
        let pending = client.request::<Value, _>(&hold);
        let drop_it = async { drop(held.next().await) };
        let (r, ()) = zip(pending, drop_it).await;
        assert!(matches!(r, Err(Error::HandlerDropped(_))), "{r:?}");
        well_before_the_timeout(t);

        // None of this touched the link.
        assert_add_answered(&client, 2, 3).await;
        assert_eq!(
            client.link().map(|l| l.id()),
            Some(link.id()),
            "still the same link"
        );
        record(
            "R4",
            "NoHandler(no_handler) both ways; HandlerDropped(handler_dropped) at once for a \
             request dropped by its handler and one dropped later, well before the 60 s \
             timeout; the link stayed up",
        );
    });
}

/// The server's `request` of an op-less body to `client` (on `link`),
/// answered from the client's event stream.
async fn answered_from_the_event_stream(
    server: &jsonlink_rt::Server,
    link: &Link,
    client: &Client,
) -> Value {
    let body = json!({"q": 1});
    let pending = server.request::<Value, _>(link.id(), &body);
    let answer = async {
        match client.wait_for(EventKind::Request).await {
            Some(Event::Request(req)) => req.respond(&json!("ok")).expect("respond"),
            other => panic!("expected a Request event, got {other:?}"),
        }
    };
    let (r, ()) = zip(pending, answer).await;
    r.expect("answered by the event stream's reader")
}

#[test]
fn no_handler_and_handler_dropped_are_typed_remote_errors() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = bind(fx.server()).await;
        forget_handler(&server);
        let client = connect(fx.client(server.local_addr()).consume_events(true)).await;

        assert_no_handler(&client.request::<Value, _>(&json!({"op": "nope"})).await);
        assert_handler_dropped(&client.request::<Value, _>(&json!({"op": "forget"})).await);
        // The other way too: the client has no handlers.
        let link = authenticated(&server).await;
        let r = server
            .request::<Value, _>(link.id(), &json!({"op": "x"}))
            .await;
        assert!(matches!(r, Err(Error::NoHandler(_))), "{r:?}");
        // An op-less request goes to the event stream of a declared
        // consumer, which answers it.
        assert_eq!(
            answered_from_the_event_stream(&server, &link, &client).await,
            json!("ok"),
            "an op-less request is answered from the event stream"
        );
    });
}

#[test]
fn a_value_larger_than_the_peers_max_frame_fails_only_that_call() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = bind(fx.server().max_frame(4096)).await;
        server
            .handlers()
            .handle_request("len", |_l, v: Value| async move {
                Ok(v["s"].as_str().map_or(0, str::len))
            });
        let client = fx.connected_client(&server).await;
        let big = "y".repeat(8192);
        let r = client.send(&json!({ "op": "len", "s": big })).await;
        assert!(
            matches!(r, Err(Error::FrameTooLarge { limit: 4096, .. })),
            "a message over the peer's max frame: {r:?}"
        );
        let r = client
            .request::<usize, _>(&json!({ "op": "len", "s": big }))
            .await;
        assert!(
            matches!(r, Err(Error::FrameTooLarge { .. })),
            "a request over the peer's max frame: {r:?}"
        );
        let n: usize = client
            .request(&json!({ "op": "len", "s": "abc" }))
            .await
            .expect("a small request on the same link");
        assert_eq!(n, 3, "a small request on the same link is answered");
    });
}
