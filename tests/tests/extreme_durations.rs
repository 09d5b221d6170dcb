//! rt-core's half of fault case F11 of tests/faults/FAULTS.md, over real
//! TLS on 127.0.0.1, on tokio and on smol: `Duration::MAX` and the latest
//! `Instant` at every public entry of rt-core that takes one never panic
//! and mean "no deadline" (the core's half is proto/tests `f11_*`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonlink_rt::{Error, Event, EventKind, Keepalive, LinkOptions, Reconnect, Runtime};
use jsonlink_tests::fixtures::{Add, Fixture, add_handler, bind, closed_port, connect, ms};
use jsonlink_tests::tests_on_tokio_and_smol;
use jsonlink_tests::waits::{EXPECT_WITHIN, next_event_within, within};
use serde_json::{Value, json};

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
    let server = bind(
        fx.server()
            .handshake_timeout(max)
            .request_timeout(max)
            .close_timeout(max)
            .keepalive(keepalive.clone())
            .link_options(options.clone()),
    )
    .await;
    add_handler(&server);
    let addr = server.local_addr();
    let client = connect(
        fx.client(addr)
            .handshake_timeout(max)
            .request_timeout(max)
            .close_timeout(max)
            .keepalive(keepalive)
            .link_options(options)
            .reconnect(Reconnect::Fixed(max)),
    )
    .await;
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
            next_event_within(&client, EXPECT_WITHIN, "the backoff").await
        {
            break delay;
        }
    };
    assert_eq!(delay, max, "the backoff is Duration::MAX");
    within(EXPECT_WITHIN, client.close())
        .await
        .expect("close during a Duration::MAX backoff returns at once");
    assert!(client.is_closed(), "the client closed during the backoff");

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
    let sent = within(EXPECT_WITHIN, sent_rx.recv())
        .await
        .expect("the waiting send ended")
        .expect("send result");
    assert!(matches!(sent, Err(Error::Closed)), "{sent:?}");

    // The latest Instant as a close deadline and a shutdown deadline.
    let far = latest_instant();
    let again = fx.client(addr).connect().await.expect("connect");
    assert_eq!(again.request::<i64, _>(&add).await.expect("request"), 3);
    within(EXPECT_WITHIN, again.close_by(far))
        .await
        .expect("close_by(latest instant) returns once closed");
    assert!(
        again.is_closed(),
        "close_by(latest instant) closed the client"
    );
    within(EXPECT_WITHIN, server.shutdown(far))
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

tests_on_tokio_and_smol!(f11_body =>
    f11_every_rt_core_entry_taking_a_duration_or_instant_accepts_the_largest_tokio,
    f11_every_rt_core_entry_taking_a_duration_or_instant_accepts_the_largest_smol);
