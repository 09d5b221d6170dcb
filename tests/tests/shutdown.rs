//! Graceful endings, over real TLS on 127.0.0.1: fault cases D1
//! (`Server::shutdown(deadline)` with requests in flight both ways) and D3
//! (handlers still running while their link drains; the client
//! reconnecting on the going-away notice) of tests/faults/FAULTS.md, and a
//! client's own close with requests unanswered.
//!
//! Every test synchronises on events and futures; waits on time only bound
//! how long an expected event may take (a failure, never a pass).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future::zip;
use jsonlink_rt::{
    Client, Error, Event, EventKind, Link, Message, Reconnect, RemoteError, Request, Runtime,
};
use jsonlink_tests::faults::record;
use jsonlink_tests::fixtures::{
    Fixture, Gate, HeldRequests, bind, connect, hold_requests, is_graceful_shutdown, ms,
    on_request_at_gate,
};
use jsonlink_tests::runtimes::{Gauges, LIMIT, on_tokio};
use jsonlink_tests::tests_on_tokio_and_smol;
use jsonlink_tests::waits::{
    EXPECT_WITHIN, SETTLE, authenticated, closed, eventually, next_event_within, within,
};
use serde_json::{Value, json};
use tokio::net::TcpStream;

/// `fut`'s output and when it came.
async fn timed<T>(fut: impl Future<Output = T>) -> (T, Instant) {
    let r = fut.await;
    (r, Instant::now())
}

/// The next two `hold` requests of `held`, the one with the smaller `n`
/// first (they may arrive in either order).
async fn next_two_by_n(held: &HeldRequests) -> (Request, Request) {
    let (a, b) = (held.next().await, held.next().await);
    let n = |r: &Request| r.parse::<Value>().expect("a JSON body")["n"].as_i64();
    if n(&a) <= n(&b) { (a, b) } else { (b, a) }
}

/// Asserts that `r`, a request answered while its link drained, got
/// `answer`.
fn assert_answered_during_the_drain(r: Result<Value, Error>, answer: &str, what: &str) {
    match r {
        Ok(v) => assert_eq!(v, json!(answer), "{what}: its answer arrives"),
        Err(e) => panic!("{what}: failed instead of being answered during the drain: {e:?}"),
    }
}

/// Asserts that `r`, a request still unanswered at the shutdown
/// deadline, failed with `ShuttingDown` (not `ConnectionLost`).
fn assert_shutting_down(r: &Result<Value, Error>, what: &str) {
    assert!(
        matches!(r, Err(Error::ShuttingDown)),
        "{what}: fails ShuttingDown at the deadline: {r:?}"
    );
}

// ------------------------------------------------------------------- D1

#[test]
fn d1_shutdown_stops_accepting_sends_close_frames_and_fails_unfinished_requests_with_shutting_down()
{
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt.clone());
        let server = bind(fx.server()).await;
        let addr = server.local_addr();
        let server_held = hold_requests(server.handlers());
        let client = connect(fx.client(addr).reconnect(Reconnect::Never)).await;
        let client_held = hold_requests(client.handlers());
        let good = authenticated(&server).await;
        let (mut adversary, mut adversary_conn) = fx.adversary(addr).await;
        let bad = authenticated(&server).await;
        assert_eq!(
            bad.peer().map(|p| p.node.as_str()),
            Some("adversary"),
            "the adversary authenticated"
        );

        // Requests in flight both ways: two will be answered while the
        // server drains, two never.
        let (to_server, to_client) = (json!({"op": "hold", "n": 1}), json!({"op": "hold", "n": 2}));
        let (unanswered_body, ignored_body) =
            (json!({"op": "hold", "n": 3}), json!({"op": "ignored"}));
        let answered_by_server = client.request::<Value, _>(&to_server);
        let answered_by_client = server.request::<Value, _>(good.id(), &to_client);
        let unanswered = timed(server.request::<Value, _>(good.id(), &unanswered_body));
        let ignored = timed(server.request::<Value, _>(bad.id(), &ignored_body));
        let drive = async {
            let one = server_held.next().await;
            let (two, three) = next_two_by_n(&client_held).await;
            // The adversary reads until the server's request arrives, then
            // neither answers nor reads again.
            loop {
                match adversary
                    .next_event(&mut adversary_conn, LIMIT)
                    .await
                    .expect("adversary read")
                {
                    Some(jsonlink_proto::Event::Request { op, .. }) => {
                        assert_eq!(
                            op.as_deref(),
                            Some("ignored"),
                            "the adversary got the server's request"
                        );
                        break;
                    }
                    Some(_) => {}
                    None => panic!("the server closed the adversary early"),
                }
            }

            let deadline = rt.now() + ms(400);
            let shutdown = timed(server.shutdown(deadline));
            let during = async {
                // Polled after shutdown() began: no longer accepting.
                let refused = fx.client(addr).reconnect(Reconnect::Never).connect().await;
                one.respond(&json!("done-1")).expect("respond");
                two.respond(&json!("done-2")).expect("respond");
                refused
            };
            let (((), returned), refused) = zip(shutdown, during).await;
            (deadline, returned, refused, three)
        };
        let (r1, r2, (r3, t3), (r4, t4), (deadline, returned, refused, three)) =
            futures_util::future::join5(
                answered_by_server,
                answered_by_client,
                unanswered,
                ignored,
                drive,
            )
            .await;
        drop(three);

        assert_answered_during_the_drain(r1, "done-1", "a request the server answered");
        assert_answered_during_the_drain(r2, "done-2", "a request the client answered");
        assert_shutting_down(&r3, "a request the client held past the deadline");
        assert_shutting_down(&r4, "a request the adversary ignored");
        assert!(
            t3 >= deadline && t4 >= deadline,
            "failed before the deadline"
        );
        assert!(
            returned <= deadline + Duration::from_secs(1),
            "shutdown returned {:?} after its deadline",
            returned - deadline
        );
        assert!(
            matches!(refused, Err(Error::Io(_))),
            "a new connection during shutdown: {refused:?}"
        );

        // Close frames: the client saw the server's, and so did the adversary.
        let (_, reason) = closed(&client).await;
        assert!(
            is_graceful_shutdown(&reason),
            "the client saw the shutdown's close frame: {reason:?}"
        );
        let mut adversary_reason = None;
        while let Some(ev) = adversary
            .next_event(&mut adversary_conn, SETTLE)
            .await
            .expect("adversary read")
        {
            if let jsonlink_proto::Event::Closed(reason) = ev {
                adversary_reason = Some(reason);
            }
        }
        let reason = adversary_reason.expect("the adversary's link closed");
        assert!(
            is_graceful_shutdown(&reason),
            "the unresponsive adversary saw the shutdown's close frame: {reason:?}"
        );
        assert!(
            eventually(SETTLE, || server.stats().connections == 0).await,
            "every link is released after the shutdown"
        );
        record(
            "D1",
            "a new connection failed during shutdown; close frames sent (client and unresponsive \
             adversary saw Remote normal \"server shutting down\"); 2 requests answered during \
             the drain succeeded, 2 unanswered at the deadline failed ShuttingDown (not \
             ConnectionLost); shutdown returned by the deadline",
        );
    });
}

/// `shutdown` "stops accepting": once it has returned, a connection to the
/// port is refused, not accepted by a listening socket that is still open
/// until the accept task's next turn (regression: an e2e test saw
/// `ConnectionReset` instead of `ConnectionRefused` now and then).
#[test]
fn d1_after_shutdown_returns_new_connections_are_refused() {
    const ROUNDS: usize = 50;
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt.clone());
        for _ in 0..ROUNDS {
            let server = bind(fx.server()).await;
            let addr = server.local_addr();
            server.shutdown(rt.now()).await;
            let r = TcpStream::connect(addr).await;
            assert!(
                matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
                "connect after shutdown: {r:?}"
            );
        }
    });
}

#[test]
fn shutdown_lets_requests_finish_until_the_deadline_then_fails_them_with_shutting_down() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt.clone());
        let server = bind(fx.server()).await;
        let client = fx.connected_client(&server).await;
        let held = hold_requests(client.handlers());
        let link = authenticated(&server).await;

        let (first, second) = (json!({"op": "hold", "n": 1}), json!({"op": "hold", "n": 2}));
        let finished = link.request::<Value, _>(&first);
        let unanswered = link.request::<Value, _>(&second);
        let drive = async {
            let (first, second) = next_two_by_n(&held).await;
            let deadline = rt.now() + ms(300);
            let answer = async {
                // Answered while the server drains: it still arrives.
                first.respond(&json!("done")).expect("respond");
            };
            zip(server.shutdown(deadline), answer).await;
            assert!(
                rt.now() < deadline + ms(200),
                "shutdown returns by its deadline"
            );
            second
        };
        let (r1, (r2, second)) = zip(finished, zip(unanswered, drive)).await;
        assert_answered_during_the_drain(r1, "done", "a request the client answered");
        assert_shutting_down(&r2, "a request the client held past the deadline");
        drop(second);
        closed(&client).await;
        let again = fx.client(server.local_addr()).connect().await;
        assert!(again.is_err(), "no new connections after shutdown");
    });
}

#[test]
fn client_close_fails_unanswered_requests_with_shutting_down() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt.clone());
        let server = bind(fx.server()).await;
        let held = hold_requests(server.handlers());
        let client = fx.connected_client(&server).await;
        let hold = json!({"op": "hold"});
        let pending = client.request::<Value, _>(&hold);
        let close = held.hold_next_during(|| client.close_by(rt.now() + ms(100)));
        let (r, ()) = zip(pending, close).await;
        assert!(
            matches!(r, Err(Error::ShuttingDown)),
            "unanswered at the close: {r:?}"
        );
        assert!(client.is_closed(), "the client is closed");
        let r = client.request::<Value, _>(&json!({"op": "x"})).await;
        assert!(
            matches!(r, Err(Error::Closed)),
            "a request after close: {r:?}"
        );
    });
}

// ------------------------------------------------------------------- D3

/// The server's drain deadline and both sides' close timeouts.
const DRAIN: Duration = Duration::from_secs(15);

/// Makes `client` forward the bodies of its `progress` and `done` messages.
fn progress_and_done(client: &Client) -> async_channel::Receiver<String> {
    let (got_tx, got_rx) = async_channel::unbounded::<String>();
    for op in ["progress", "done"] {
        let got = got_tx.clone();
        client.handlers().on_message(op, move |m: Message| {
            let got = got.clone();
            async move {
                let _ = got.send(m.body.get().to_owned()).await;
            }
        });
    }
    got_rx
}

async fn d3_body(rt: Arc<dyn Runtime>) {
    let fx = Fixture::new(rt.clone());
    let server = bind(fx.server().close_timeout(DRAIN)).await;
    let addr = server.local_addr();
    // A job: started, then held by the test until it lets it finish; it
    // reports its last progress and `done`, then answers.
    let (started, gate) = (Gate::new(), Gate::new());
    let (sent_tx, sent_rx) = async_channel::unbounded::<String>();
    {
        let (started, gate) = (started.clone(), gate.clone());
        server
            .handlers()
            .handle_request("job", move |link: Link, _args: Value| {
                let (started, gate, sent) = (started.clone(), gate.clone(), sent_tx.clone());
                async move {
                    started.signal();
                    gate.wait().await;
                    for step in [json!({"op": "progress", "pct": 100}), json!({"op": "done"})] {
                        let r = link.send(&step).await;
                        let _ = sent.send(format!("{r:?}")).await;
                        r.map_err(|e| {
                            RemoteError::new(RemoteError::INTERNAL, format!("lost: {e}"))
                        })?;
                    }
                    Ok(json!("finished"))
                }
            });
    }
    let client = connect(
        fx.client(addr)
            .close_timeout(DRAIN)
            .reconnect(Reconnect::Fixed(ms(20))),
    )
    .await;
    let got_rx = progress_and_done(&client);
    assert!(
        matches!(client.next_event().await, Some(Event::Authenticated { .. })),
        "the client authenticated first"
    );
    let old = client.link().expect("link");

    // The job is in flight when the server shuts down.
    let (job_tx, job_rx) = async_channel::bounded(1);
    {
        let client = client.clone();
        rt.spawn(Box::pin(async move {
            let r = client
                .request_with_timeout::<Value, _>(&json!({"op": "job"}), DRAIN)
                .await;
            let _ = job_tx.send(r).await;
        }));
    }
    started.wait().await;
    let (down_tx, down_rx) = async_channel::bounded::<()>(1);
    let began = Instant::now();
    {
        let server = server.clone();
        let deadline = rt.now() + DRAIN;
        rt.spawn(Box::pin(async move {
            server.shutdown(deadline).await;
            let _ = down_tx.send(()).await;
        }));
    }

    // On the notice the client starts reconnecting at once: to the
    // restarted server (the old listener is closed before any notice is
    // sent), while the old link still drains the job.
    let mut restarted = None;
    let mut first_attempt = None;
    loop {
        let waiting_for = "a reconnect while the old link drains";
        match next_event_within(&client, EXPECT_WITHIN, waiting_for).await {
            Event::ReconnectAttempt { attempt, .. } => {
                first_attempt.get_or_insert((attempt, began.elapsed()));
                if restarted.is_none() {
                    let s = fx
                        .server()
                        .bind(addr)
                        .await
                        .expect("bind the restarted server");
                    restarted = Some(s);
                }
            }
            // Refused while the restarted server was not yet listening.
            Event::Error { .. } => {}
            Event::Authenticated { .. } => break,
            other => panic!("unexpected {other:?} before the reconnect"),
        }
    }
    let reconnected = began.elapsed();
    let (attempt, attempt_after) = first_attempt.expect("a reconnect attempt");
    assert_eq!(attempt, 1, "the client reconnects on the first attempt");
    assert!(!old.is_closed(), "the old link still drains");
    assert!(job_rx.try_recv().is_err(), "the job is still running");
    assert!(
        down_rx.try_recv().is_err(),
        "the shutdown is still draining"
    );
    let new = client.link().expect("the new link");
    assert!(!new.is_closed(), "the new link is up");

    // The job finishes: what it sends reaches the client, then its answer.
    gate.signal();
    let job = within(EXPECT_WITHIN, job_rx.recv())
        .await
        .expect("the job's answer")
        .expect("job result");
    let sent = [
        sent_rx.recv().await.expect("sent"),
        sent_rx.recv().await.expect("sent"),
    ];
    assert_eq!(
        sent,
        ["Ok(())", "Ok(())"],
        "the handler's sends during the drain"
    );
    assert_eq!(
        job.expect("the job answered"),
        json!("finished"),
        "the job's answer"
    );
    let got = [
        got_rx.recv().await.expect("got"),
        got_rx.recv().await.expect("got"),
    ];
    assert_eq!(
        got,
        [r#"{"op":"progress","pct":100}"#, r#"{"op":"done"}"#],
        "the client received what the job sent during the drain"
    );
    let reason = match next_event_within(&client, EXPECT_WITHIN, "the old link's Closed").await {
        Event::Closed { reason, .. } => reason,
        other => panic!("unexpected {other:?} while the old link drained"),
    };
    assert!(
        is_graceful_shutdown(&reason),
        "the old link closes as shut down: {reason:?}"
    );
    within(EXPECT_WITHIN, down_rx.recv())
        .await
        .expect("shutdown returned")
        .expect("shutdown");
    assert!(client.is_connected(), "the client stays connected");
    eprintln!(
        "D3: first reconnect attempt {attempt_after:?} and authenticated with the restarted \
         server {reconnected:?} after the shutdown began (close timeout {DRAIN:?})"
    );
    record(
        "D3",
        "a handler running at shutdown sent progress and done (both Ok) and answered: the client \
         received both messages on the old link and the job's answer \"finished\"; on the \
         going-away notice the client started reconnecting at once (ReconnectAttempt 1) and \
         authenticated with the restarted server while the old link still drained (its close \
         timeout 15 s), then the old link Closed(Remote normal \"server shutting down\")",
    );
    client.close().await;
    drop(restarted);
}

/// Rounds of [`d3_answer_order_body`]; before the driver applied a
/// handler's messages ahead of its answer, about a third of them lost all
/// 50 messages on tokio's multi-thread runtime.
const ORDER_ROUNDS: usize = 40;
/// Messages a handler sends before answering, per round.
const ORDER_MESSAGES: u64 = 50;

/// A handler running at shutdown sends many messages, then answers at
/// once: its answer (the last thing the draining link waits for) never
/// overtakes them, so none is lost when the link then ends.
async fn d3_answer_order_body(rt: Arc<dyn Runtime>) {
    let fx = Fixture::new(rt.clone());
    for round in 0..ORDER_ROUNDS {
        let server = bind(fx.server()).await;
        let (started, gate) = (Gate::new(), Gate::new());
        on_request_at_gate(
            server.handlers(),
            "job",
            &started,
            &gate,
            |req| async move {
                for i in 0..ORDER_MESSAGES {
                    let _ = req.link.send(&json!({"op": "step", "i": i})).await;
                }
                let _ = req.respond(&json!("finished"));
            },
        );
        let client = connect(fx.client(server.local_addr()).reconnect(Reconnect::Never)).await;
        client
            .handlers()
            .on_message("step", |_m: Message| async move {});
        let body = json!({"op": "job"});
        let job = client.request::<Value, _>(&body);
        let shutdown = async {
            started.wait().await;
            let deadline = rt.now() + DRAIN;
            zip(server.shutdown(deadline), async { gate.signal() }).await;
        };
        let (job, ()) = zip(job, shutdown).await;
        assert_eq!(job.expect("answered"), json!("finished"), "round {round}");
        client.wait_for(EventKind::Closed).await;
        assert_eq!(
            client.stats().messages_in,
            ORDER_MESSAGES,
            "round {round}: every message sent before the answer arrived"
        );
    }
    record(
        "D3/order",
        format!(
            "{ORDER_ROUNDS} rounds of a handler that sends {ORDER_MESSAGES} messages and then \
             answers while its link drains: all {ORDER_MESSAGES} arrived every round (none \
             overtaken by the answer, which ends the drain)"
        ),
    );
}

tests_on_tokio_and_smol!(d3_answer_order_body =>
    d3_a_handlers_messages_are_never_overtaken_by_its_answer_while_draining_tokio,
    d3_a_handlers_messages_are_never_overtaken_by_its_answer_while_draining_smol);

tests_on_tokio_and_smol!(d3_body =>
    d3_a_handler_running_at_shutdown_gets_its_messages_through_and_the_client_reconnects_at_once_tokio,
    d3_a_handler_running_at_shutdown_gets_its_messages_through_and_the_client_reconnects_at_once_smol);
