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
    Client, DevPki, Error, Event, EventKind, Identity, Keepalive, LinkOptions, Reconnect, Runtime,
    ServerName,
};
use jsonlink_tests::faults::record;
use jsonlink_tests::fixture::{
    self, Add, Fixture, Gauges, LIMIT, add_handler, closed_port, localhost, ms,
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
    record("C5", format!("{BEFORE_AUTH}; {AFTER_AUTH}"));
}

/// Failed attempts watched per outage.
const ATTEMPTS: u32 = 6;
const OUTAGES: usize = 2;
const AFTER_AUTH: &str = "after a first authentication, a server switching to a certificate \
     of an unknown CA: TlsConfig(InvalidCertificate(UnknownIssuer)) reported once per outage \
     (6 attempts each, two outages), the client kept retrying and reconnected once the good \
     certificate was back";

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
        let link = server.connections().pop().expect("a link");
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
        .router()
        .handle("add", |_l, v: Add| async move { Ok(v.a + v.b) });
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
    let theirs = server.connections().pop().expect("server link");
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
