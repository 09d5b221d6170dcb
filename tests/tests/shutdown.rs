//! A link's life at the edges, over real TLS on 127.0.0.1, each case on
//! tokio and on smol: **C5** (a TLS configuration error while connecting,
//! before and after a first authentication), **D3** (graceful shutdown
//! with a handler still running; the client reconnecting on the
//! going-away notice) and rt-core's half of **F11** (`Duration::MAX` and
//! the latest `Instant` at every public entry of rt-core that takes one).
//!
//! Every test is bounded (the tokio harness of `jsonlink_tests::fixture`,
//! or [`LIMIT`] on smol) and synchronises on events and futures; waits on
//! time only bound how long an expected event may take to come (a failure,
//! never a pass).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonlink_rt::{
    Client, DevPki, Error, Event, EventKind, Identity, Keepalive, Link, LinkOptions, Message,
    Reconnect, RemoteError, Request, Runtime, ServerName,
};
use jsonlink_tests::faults::record;
use jsonlink_tests::fixture::{
    self, Add, Fixture, Gauges, LIMIT, add_handler, closed_port, is_graceful_shutdown, localhost,
    ms,
};
use serde_json::{Value, json};

/// How long an event the test expects may take before the test fails.
const EXPECT_WITHIN: Duration = Duration::from_secs(10);

fn on_tokio<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Runtime>) -> Fut,
    Fut: Future<Output = ()>,
{
    fixture::on_tokio(Gauges::Shared, test);
}

/// Runs `test` on smol's global executor, driven from the test thread,
/// failing after [`LIMIT`].
fn on_smol<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Runtime>) -> Fut,
    Fut: Future<Output = ()>,
{
    let rt = jsonlink_smol::runtime();
    let finished = futures_lite::future::block_on(futures_lite::future::or(
        async {
            test(rt).await;
            true
        },
        async {
            smol::Timer::after(LIMIT).await;
            false
        },
    ));
    assert!(finished, "test did not finish within {LIMIT:?}");
}

/// `fut`, or `None` if it takes longer than `d` on `rt`'s clock.
async fn within<F: Future>(rt: &dyn Runtime, d: Duration, fut: F) -> Option<F::Output> {
    let sleep = rt.sleep_until(rt.now() + d);
    futures_lite::future::or(async { Some(fut.await) }, async {
        sleep.await;
        None
    })
    .await
}

/// The next event of `client`, failing the test after [`EXPECT_WITHIN`].
async fn next_event(rt: &dyn Runtime, client: &Client, waiting_for: &str) -> Event {
    within(rt, EXPECT_WITHIN, client.next_event())
        .await
        .unwrap_or_else(|| {
            panic!("no event within {EXPECT_WITHIN:?} while waiting for {waiting_for}")
        })
        .expect("event stream")
}

/// A TLS configuration error as the fault table names it.
fn describe(e: &Error) -> String {
    match e {
        Error::TlsConfig { error, .. } => match error {
            rustls::Error::InvalidCertificate(c) => {
                let kind = format!("{c:?}");
                let kind = kind.split([' ', '{', '(']).next().unwrap_or_default();
                format!("TlsConfig(InvalidCertificate({kind}))")
            }
            other => format!("TlsConfig({other:?})"),
        },
        other => format!("{other:?}"),
    }
}

// ------------------------------------------------------------------- C5

/// What each bad configuration must say, and the words of its fix.
const BEFORE_AUTH: &str = "unknown CA: start() + wait_connected() ended at once with \
     TlsConfig(InvalidCertificate(UnknownIssuer)) (\"add the CA certificate that issued it to the \
     root store\"); name mismatch: TlsConfig(InvalidCertificate(NotValidForNameContext)) \
     (\"connect with a server name the certificate lists\"); each after 1 attempt, 1 Error event, \
     no reconnect attempt, the client closed; connect() fails with the same error";

async fn c5_before_the_first_authentication(rt: Arc<dyn Runtime>) {
    let fx = Fixture::new(rt.clone());
    let server = fx.server().bind(localhost()).await.expect("bind");
    let addr = server.local_addr();
    let stranger = DevPki::generate().expect("certs");
    let wrong_name = ServerName::try_from("wrong.example").expect("name");
    let cases = [
        (
            "unknown CA",
            stranger.client_config().expect("tls"),
            fx.pki.server_name(),
            "InvalidCertificate(UnknownIssuer)",
            "add the CA certificate that issued it to the root store",
        ),
        (
            "name mismatch",
            fx.pki.client_config().expect("tls"),
            wrong_name,
            "InvalidCertificate(NotValidForNameContext)",
            "connect with a server name the certificate lists",
        ),
    ];
    for (what, tls, name, kind, fix) in cases {
        let builder = || {
            Client::builder(
                rt.clone(),
                addr,
                tls.clone(),
                name.clone(),
                fx.secret.clone(),
                Identity::new("c5", "lifecycle"),
            )
            .reconnect(Reconnect::Fixed(ms(10)))
        };
        let client = builder().start();
        let r = within(&*rt, EXPECT_WITHIN, client.wait_connected())
            .await
            .unwrap_or_else(|| {
                panic!("{what}: wait_connected kept waiting through a TLS configuration error")
            });
        let e = r.expect_err("connected with a bad TLS configuration");
        assert_eq!(describe(&e), format!("TlsConfig({kind})"), "{what}: {e:?}");
        let text = e.to_string();
        eprintln!("C5 {what}: {text}");
        assert!(
            text.contains(fix),
            "{what}: the error says what to fix: {text}"
        );
        assert!(client.is_closed(), "{what}: the client ended");
        let mut errors = Vec::new();
        while let Some(ev) = client.try_next_event() {
            match ev {
                Event::Error { error, .. } => errors.push(describe(&error)),
                other => panic!("{what}: unexpected {other:?}"),
            }
        }
        assert_eq!(errors, [format!("TlsConfig({kind})")], "{what}");
        // Later callers get the same error.
        let again = client.wait_connected().await;
        assert_eq!(
            again.err().map(|e| describe(&e)),
            Some(format!("TlsConfig({kind})")),
            "{what}"
        );
        // connect() reports it the same way.
        let connect = builder().connect().await;
        match connect {
            Err(e) => assert_eq!(describe(&e), format!("TlsConfig({kind})"), "{what}"),
            Ok(_) => panic!("{what}: connect() succeeded"),
        }
    }
    assert_eq!(server.stats().authenticated, 0);
    record("C5", BEFORE_AUTH);
}

/// Failed attempts watched per outage.
const ATTEMPTS: u32 = 6;
const OUTAGES: usize = 2;
const AFTER_AUTH: &str = "after a first authentication, a server switching to a certificate \
     of an unknown CA: TlsConfig(InvalidCertificate(UnknownIssuer)) reported once per outage \
     (6 failed attempts each, two outages), the client kept retrying and reconnected once the \
     good certificate was back";

async fn c5_after_a_first_authentication(rt: Arc<dyn Runtime>) {
    let fx = Fixture::new(rt.clone());
    let stranger = DevPki::generate().expect("certs");
    let server = fx.server().bind(localhost()).await.expect("bind");
    add_handler(&server);
    let client = fx
        .client(server.local_addr())
        .reconnect(Reconnect::Fixed(ms(10)))
        .start();
    client.wait_connected().await.expect("connected");
    client.wait_for(EventKind::Authenticated).await;
    for outage in 0..OUTAGES {
        server.set_tls_config(stranger.server_config().expect("tls"));
        let link = server.links().pop().expect("a link");
        link.close("rotating the certificate").await;
        let mut errors = Vec::new();
        loop {
            match next_event(&*rt, &client, "failed attempts").await {
                Event::Closed { .. } => {}
                Event::Error { error, .. } => errors.push(describe(&error)),
                Event::ReconnectAttempt { attempt, .. } if attempt > ATTEMPTS => break,
                Event::ReconnectAttempt { .. } => {}
                other => panic!("outage {outage}: unexpected {other:?}"),
            }
        }
        assert!(
            !client.is_closed(),
            "outage {outage}: the client kept retrying"
        );
        assert_eq!(
            errors,
            ["TlsConfig(InvalidCertificate(UnknownIssuer))"],
            "outage {outage}: reported once"
        );
        server.set_tls_config(fx.pki.server_config().expect("tls"));
        loop {
            match next_event(&*rt, &client, "the reconnect").await {
                Event::Authenticated { .. } => break,
                Event::ReconnectAttempt { .. } => {}
                other => panic!("outage {outage}: unexpected {other:?}"),
            }
        }
        let sum: i64 = client
            .request(&json!({"op": "add", "a": 2, "b": 3}))
            .await
            .expect("add after the reconnect");
        assert_eq!(sum, 5);
    }
    client.close().await;
    record("C5/rotation", AFTER_AUTH);
}

#[test]
fn c5_a_tls_configuration_error_before_the_first_authentication_ends_wait_connected_tokio() {
    on_tokio(c5_before_the_first_authentication);
}

#[test]
fn c5_a_tls_configuration_error_before_the_first_authentication_ends_wait_connected_smol() {
    on_smol(c5_before_the_first_authentication);
}

#[test]
fn c5_after_a_first_authentication_a_certificate_error_is_reported_once_per_outage_tokio() {
    on_tokio(c5_after_a_first_authentication);
}

#[test]
fn c5_after_a_first_authentication_a_certificate_error_is_reported_once_per_outage_smol() {
    on_smol(c5_after_a_first_authentication);
}

// ------------------------------------------------------------------- D3

/// The server's drain deadline and both sides' close timeouts.
const DRAIN: Duration = Duration::from_secs(15);

async fn d3_body(rt: Arc<dyn Runtime>) {
    let fx = Fixture::new(rt.clone());
    let server = fx
        .server()
        .close_timeout(DRAIN)
        .bind(localhost())
        .await
        .expect("bind");
    let addr = server.local_addr();
    // A job: started, then held by the test until it lets it finish; it
    // reports its last progress and `done`, then answers.
    let (started_tx, started_rx) = async_channel::bounded::<()>(1);
    let (gate_tx, gate_rx) = async_channel::bounded::<()>(1);
    let (sent_tx, sent_rx) = async_channel::unbounded::<String>();
    server
        .handlers()
        .handle_request("job", move |link: Link, _args: Value| {
            let (started, gate, sent) = (started_tx.clone(), gate_rx.clone(), sent_tx.clone());
            async move {
                let _ = started.send(()).await;
                let _ = gate.recv().await;
                for step in [json!({"op": "progress", "pct": 100}), json!({"op": "done"})] {
                    let r = link.send(&step).await;
                    let _ = sent.send(format!("{r:?}")).await;
                    r.map_err(|e| RemoteError::new(RemoteError::INTERNAL, format!("lost: {e}")))?;
                }
                Ok(json!("finished"))
            }
        });
    let client = fx
        .client(addr)
        .close_timeout(DRAIN)
        .reconnect(Reconnect::Fixed(ms(20)))
        .connect()
        .await
        .expect("connect");
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
    assert!(matches!(
        client.next_event().await,
        Some(Event::Authenticated { .. })
    ));
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
    started_rx.recv().await.expect("the job started");
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
        match next_event(&*rt, &client, "a reconnect while the old link drains").await {
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
    assert_eq!(attempt, 1);
    assert!(!old.is_closed(), "the old link still drains");
    assert!(job_rx.try_recv().is_err(), "the job is still running");
    assert!(
        down_rx.try_recv().is_err(),
        "the shutdown is still draining"
    );
    let new = client.link().expect("the new link");
    assert!(!new.is_closed());

    // The job finishes: what it sends reaches the client, then its answer.
    gate_tx.send(()).await.expect("gate");
    let job = within(&*rt, EXPECT_WITHIN, job_rx.recv())
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
    assert_eq!(job.expect("the job answered"), json!("finished"));
    let got = [
        got_rx.recv().await.expect("got"),
        got_rx.recv().await.expect("got"),
    ];
    assert_eq!(got, [r#"{"op":"progress","pct":100}"#, r#"{"op":"done"}"#]);
    let reason = match next_event(&*rt, &client, "the old link's Closed").await {
        Event::Closed { reason, .. } => reason,
        other => panic!("unexpected {other:?} while the old link drained"),
    };
    assert!(is_graceful_shutdown(&reason), "{reason:?}");
    within(&*rt, EXPECT_WITHIN, down_rx.recv())
        .await
        .expect("shutdown returned")
        .expect("shutdown");
    assert!(client.is_connected());
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
        let server = fx.server().bind(localhost()).await.expect("bind");
        let (started_tx, started_rx) = async_channel::bounded::<()>(1);
        let (gate_tx, gate_rx) = async_channel::bounded::<()>(1);
        server.handlers().on_request("job", move |req: Request| {
            let (started, gate) = (started_tx.clone(), gate_rx.clone());
            async move {
                let _ = started.send(()).await;
                let _ = gate.recv().await;
                for i in 0..ORDER_MESSAGES {
                    let _ = req.link.send(&json!({"op": "step", "i": i})).await;
                }
                let _ = req.respond(&json!("finished"));
            }
        });
        let client = fx
            .client(server.local_addr())
            .reconnect(Reconnect::Never)
            .connect()
            .await
            .expect("connect");
        client
            .handlers()
            .on_message("step", |_m: Message| async move {});
        let body = json!({"op": "job"});
        let job = client.request::<Value, _>(&body);
        let shutdown = async {
            started_rx.recv().await.expect("started");
            let deadline = rt.now() + DRAIN;
            futures_lite::future::zip(server.shutdown(deadline), async {
                gate_tx.send(()).await.expect("gate");
            })
            .await;
        };
        let (job, ()) = futures_lite::future::zip(job, shutdown).await;
        assert_eq!(job.expect("answered"), json!("finished"), "round {round}");
        client.wait_for(EventKind::Closed).await;
        assert_eq!(
            client.stats().messages_in,
            ORDER_MESSAGES,
            "round {round}: messages sent before the answer"
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

#[test]
fn d3_a_handlers_messages_are_never_overtaken_by_its_answer_while_draining_tokio() {
    on_tokio(d3_answer_order_body);
}

#[test]
fn d3_a_handlers_messages_are_never_overtaken_by_its_answer_while_draining_smol() {
    on_smol(d3_answer_order_body);
}

#[test]
fn d3_a_handler_running_at_shutdown_gets_its_messages_through_and_the_client_reconnects_at_once_tokio()
 {
    on_tokio(d3_body);
}

#[test]
fn d3_a_handler_running_at_shutdown_gets_its_messages_through_and_the_client_reconnects_at_once_smol()
 {
    on_smol(d3_body);
}

// ------------------------------------------------------------------- F11

/// The latest `Instant` this platform represents (one second more
/// overflows).
fn latest_instant() -> Instant {
    let now = Instant::now();
    let (mut lo, mut hi) = (0u64, u64::MAX);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if now.checked_add(Duration::from_secs(mid)).is_some() {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    now + Duration::from_secs(lo)
}

/// Every public entry of rt-core that takes a `Duration` (builders, link
/// options, reconnect policies, request timeouts) with `Duration::MAX`,
/// and those that take an `Instant` with the latest one: nothing panics,
/// and each means "no deadline" (the link works, the client closes).
async fn f11_body(rt: Arc<dyn Runtime>) {
    let fx = Fixture::new(rt.clone());
    let max = Duration::MAX;
    let keepalive = Some(Keepalive {
        interval: max,
        timeout: max,
        data: None,
    });
    let mut options = LinkOptions::default();
    options.linger = max;
    let server = fx
        .server()
        .handshake_timeout(max)
        .request_timeout(max)
        .close_timeout(max)
        .keepalive(keepalive.clone())
        .link_options(options.clone())
        .bind(localhost())
        .await
        .expect("bind");
    add_handler(&server);
    let addr = server.local_addr();
    let client = fx
        .client(addr)
        .handshake_timeout(max)
        .request_timeout(max)
        .close_timeout(max)
        .keepalive(keepalive)
        .link_options(options)
        .reconnect(Reconnect::Fixed(max))
        .connect()
        .await
        .expect("connect");
    client
        .handlers()
        .handle_request("add", |_l, v: Add| async move { Ok(v.a + v.b) });
    let add = json!({"op": "add", "a": 1, "b": 2});
    let raw = || serde_json::value::to_raw_value(&add).expect("json");
    assert_eq!(client.request::<i64, _>(&add).await.expect("request"), 3);
    assert_eq!(
        client
            .request_with_timeout::<i64, _>(&add, max)
            .await
            .expect("client"),
        3
    );
    client.request_raw(raw(), Some(max)).await.expect("raw");
    let link = client.link().expect("link");
    assert_eq!(link.request::<i64, _>(&add).await.expect("link"), 3);
    assert_eq!(
        link.request_with_timeout::<i64, _>(&add, max)
            .await
            .expect("link"),
        3
    );
    link.request_raw(raw(), Some(max)).await.expect("link raw");
    let theirs = server.links().pop().expect("server link");
    assert_eq!(
        server
            .request_with_timeout::<i64, _>(theirs.id(), &add, max)
            .await
            .expect("server"),
        3
    );
    assert_eq!(
        theirs
            .request_with_timeout::<i64, _>(&add, max)
            .await
            .expect("server link"),
        3
    );
    client.ping(None::<&Value>).await.expect("ping");

    // Closed by the server: the next attempt waits Duration::MAX (no
    // deadline), and close() (close timeout Duration::MAX) stops it at once.
    theirs.close("f11").await;
    let delay = loop {
        if let Event::ReconnectAttempt { delay, .. } =
            next_event(&*rt, &client, "the backoff").await
        {
            break delay;
        }
    };
    assert_eq!(delay, max);
    within(&*rt, EXPECT_WITHIN, client.close())
        .await
        .expect("close during a Duration::MAX backoff returns at once");
    assert!(client.is_closed());

    // Wait mode with Duration::MAX as the default wait, then closed.
    let waiting = fx
        .client(closed_port())
        .wait_for_reconnect(true)
        .request_timeout(max)
        .reconnect(Reconnect::Fixed(ms(10)))
        .start();
    let (sent_tx, sent_rx) = async_channel::bounded(1);
    {
        let waiting = waiting.clone();
        rt.spawn(Box::pin(async move {
            let _ = sent_tx
                .send(waiting.send(&json!({"op": "note"})).await)
                .await;
        }));
    }
    waiting.wait_for(EventKind::ReconnectAttempt).await;
    waiting.close().await;
    let sent = within(&*rt, EXPECT_WITHIN, sent_rx.recv())
        .await
        .expect("the waiting send ended")
        .expect("send result");
    assert!(matches!(sent, Err(Error::Closed)), "{sent:?}");

    // The latest Instant as a close deadline and a shutdown deadline.
    let far = latest_instant();
    let again = fx.client(addr).connect().await.expect("connect");
    assert_eq!(again.request::<i64, _>(&add).await.expect("request"), 3);
    within(&*rt, EXPECT_WITHIN, again.close_by(far))
        .await
        .expect("close_by(latest instant) returns once closed");
    assert!(again.is_closed());
    within(&*rt, EXPECT_WITHIN, server.shutdown(far))
        .await
        .expect("shutdown(latest instant) returns once no link is left");

    // The reconnect policy itself.
    let policies = [
        Reconnect::Fixed(max),
        Reconnect::Backoff {
            base: max,
            cap: max,
        },
        Reconnect::Backoff {
            base: ms(250),
            cap: max,
        },
    ];
    for policy in policies {
        for attempt in [0, 1, 31, 32, 63, 64, u32::MAX] {
            let ceiling = policy.ceiling(attempt).expect("reconnects");
            for jitter in [0.0, 0.5, 0.999_999_999, 1.0, 7.0, f64::NAN, f64::INFINITY] {
                let d = policy.delay(attempt, jitter).expect("reconnects");
                assert!(
                    d <= ceiling,
                    "{policy:?} {attempt} {jitter}: {d:?} > {ceiling:?}"
                );
            }
        }
    }
}

#[test]
fn f11_every_rt_core_entry_taking_a_duration_or_instant_accepts_the_largest_tokio() {
    on_tokio(f11_body);
}

#[test]
fn f11_every_rt_core_entry_taking_a_duration_or_instant_accepts_the_largest_smol() {
    on_smol(f11_body);
}
