//! Bounded buffers instead of unbounded queues, over real TLS on
//! 127.0.0.1: fault case R6 of tests/faults/FAULTS.md (ten thousand
//! requests against the in-flight limit), a peer that reads slowly or
//! never makes `send` wait with bounded memory, and the per-link handler
//! limits (`max_handler_bytes`, the command queue) stop reading or
//! skipping instead of buffering.
//!
//! Tests that read resident memory run with [`Gauges::Exclusive`].

use std::time::{Duration, Instant};

use futures_lite::future::zip;
use futures_util::future::join_all;
use jsonlink_rt::{Error, Event, EventKind, Message};
use jsonlink_tests::faults::record;
use jsonlink_tests::fixtures::{
    Fixture, Gate, add_handler, assert_add_answered, bind, connect, ms, on_request_at_gate,
};
use jsonlink_tests::rss_bytes;
use jsonlink_tests::runtimes::{Gauges, on_tokio};
use jsonlink_tests::waits::{authenticated, eventually, within};
use serde_json::{Value, json};

// ------------------------------------------------------------------- R6

#[test]
fn r6_ten_thousand_requests_against_the_in_flight_limit_fail_the_excess_with_busy() {
    const REQUESTS: usize = 10_000;
    const IN_FLIGHT: usize = jsonlink_proto::DEFAULT_MAX_REQUESTS_IN_FLIGHT;
    const HANDLERS: usize = jsonlink_rt::DEFAULT_MAX_HANDLER_TASKS;
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = bind(fx.server()).await;
        // Handlers wait at a gate (opened by the test) and echo `n`.
        let (arrived, gate) = (Gate::new(), Gate::new());
        on_request_at_gate(
            server.handlers(),
            "hold",
            &arrived,
            &gate,
            |req| async move {
                let n = req.parse::<Value>().expect("json")["n"].clone();
                let _ = req.respond(&n);
            },
        );
        let client = fx.connected_client(&server).await;

        let busy = Gate::new();
        let requests = join_all((0..REQUESTS).map(|n| {
            let (client, busy) = (client.clone(), busy.clone());
            async move {
                let r = client
                    .request::<usize, _>(&json!({"op": "hold", "n": n}))
                    .await;
                if matches!(r, Err(Error::Busy { .. })) {
                    busy.signal();
                }
                (n, r)
            }
        }));
        let release = async {
            // Every request past the limit fails at once, while the first
            // IN_FLIGHT are still held...
            for _ in 0..REQUESTS - IN_FLIGHT {
                busy.wait().await;
            }
            assert_eq!(
                client.stats().requests_in_flight,
                IN_FLIGHT as u64,
                "the limit's worth of requests is in flight"
            );
            // ...and the server, its handler slots full, stopped reading
            // instead of queueing the rest.
            for _ in 0..HANDLERS {
                arrived.wait().await;
            }
            let read = server.stats().requests_in;
            assert!(
                read <= HANDLERS as u64 + 1,
                "the server read {read} requests"
            );
            gate.open();
        };
        let (results, ()) = zip(requests, release).await;
        let mut answered = 0;
        let mut busy = 0;
        for (n, r) in results {
            match r {
                Ok(v) => {
                    assert_eq!(v, n, "request {n} got its own answer");
                    answered += 1;
                }
                Err(Error::Busy { limit }) => {
                    assert_eq!(limit, IN_FLIGHT, "Busy names the limit");
                    busy += 1;
                }
                Err(e) => panic!("request {n}: {e:?}"),
            }
        }
        assert_eq!(
            (answered, busy),
            (IN_FLIGHT, REQUESTS - IN_FLIGHT),
            "the limit's worth answered, the rest Busy"
        );
        assert_eq!(
            client.stats().requests_in_flight,
            0,
            "nothing left in flight"
        );
        record(
            "R6",
            format!(
                "{REQUESTS} requests, in-flight limit {IN_FLIGHT}: {answered} answered, {busy} \
                 Busy {{ limit: {IN_FLIGHT} }} at once; the server read at most {} while its \
                 {HANDLERS} handler slots were busy",
                HANDLERS + 1
            ),
        );
    });
}

// --------------------------------------------------- readers slow or stuck

#[test]
fn a_reader_that_never_reads_makes_send_wait_with_bounded_memory_while_others_are_served() {
    const CHUNK: usize = 32 * 1024;
    const MAX_SENDS: usize = 4096; // 128 MiB: never reached if send waits
    const BROADCASTS: usize = 2000; // 64 MiB more, attempted without waiting
    on_tokio(Gauges::Exclusive, |rt| async move {
        let fx = Fixture::new(rt);
        let server = bind(fx.server().max_outbound(64 * 1024)).await;
        add_handler(&server);
        let addr = server.local_addr();
        // Authenticated, then never reads again.
        let (_adversary, _conn) = fx.adversary(addr).await;
        let slow = authenticated(&server).await;
        // Encoded once: what is measured is the link's buffering, not serde.
        let body =
            serde_json::value::to_raw_value(&json!({"op": "bulk", "pad": "x".repeat(CHUNK)}))
                .expect("json");
        let rss_before = rss_bytes().expect("rss");

        // send() completes while buffers have room, then waits.
        let mut sent = 0;
        while sent < MAX_SENDS {
            match within(ms(500), slow.send(&body)).await {
                Some(r) => {
                    r.expect("send");
                    sent += 1;
                }
                None => break,
            }
        }
        assert!(
            sent < MAX_SENDS,
            "all {sent} sends completed to a reader that never reads"
        );
        // Broadcast never waits: copies for the stuck link are skipped.
        let mut queued = 0;
        for _ in 0..BROADCASTS {
            queued += server.broadcast(&body).expect("broadcast");
        }
        let skipped = server.stats().broadcast_skipped;
        assert!(
            queued <= jsonlink_rt::DEFAULT_COMMAND_CAPACITY,
            "{queued} copies queued to a stuck link"
        );
        assert_eq!(
            skipped as usize,
            BROADCASTS - queued,
            "every copy not queued is counted as skipped"
        );
        let attempted = (sent + 1 + BROADCASTS) * CHUNK;
        let growth = rss_bytes().expect("rss").saturating_sub(rss_before) as usize;
        assert!(
            growth < 16 << 20,
            "RSS grew {growth} bytes for {attempted} bytes attempted"
        );

        // Another client is served meanwhile, and the stuck link stays stuck.
        let client = fx.connected_client(&server).await;
        assert_add_answered(&client, 3, 4).await;
        let still = within(ms(100), slow.send(&body)).await;
        assert!(still.is_none(), "the stuck link took more: {still:?}");
        assert!(!slow.is_closed(), "the stuck link stays open");
    });
}

#[test]
fn a_slow_reader_makes_send_wait_instead_of_queueing() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = bind(fx.server().max_outbound(64 * 1024)).await;
        // The client's event stream holds one message; while it is full
        // the client (a declared consumer) stops reading, so TCP and then
        // the server's outbound buffer fill up.
        let client = connect(
            fx.client(server.local_addr())
                .consume_events(true)
                .event_capacity(1)
                .max_outbound(64 * 1024),
        )
        .await;
        let link = authenticated(&server).await;
        // Skip the client's Authenticated event so only messages queue.
        while let Some(ev) = client.try_next_event() {
            assert!(!matches!(ev, Event::Message(_)), "no message yet: {ev:?}");
        }
        let chunk = "x".repeat(32 * 1024);
        let total = 400; // ~13 MB: far more than TCP and both buffers hold
        let send_all = || async {
            for i in 0..total {
                link.send(&json!({ "i": i, "pad": chunk }))
                    .await
                    .expect("send");
            }
        };
        // With the reader stalled the sender must block before the end.
        let stalled = within(ms(500), send_all()).await;
        assert!(
            stalled.is_none(),
            "all sends completed with a stalled reader"
        );
        // Once the reader drains, everything arrives in order.
        let reader = async {
            let mut next = 0;
            let mut restarted = false;
            loop {
                let Some(Event::Message(m)) = client.wait_for(EventKind::Message).await else {
                    panic!("stream ended")
                };
                let i = m.parse::<Value>().expect("json")["i"].as_i64().expect("i");
                if i == 0 && next > 0 {
                    restarted = true;
                    next = 0;
                }
                assert_eq!(i, next, "messages arrive in order");
                next += 1;
                if restarted && next == total {
                    break;
                }
            }
        };
        zip(send_all(), reader).await;
    });
}

// ------------------------------------------------------- handler limits

#[test]
fn handler_bytes_budget_stops_reading_until_a_handler_finishes() {
    handler_bytes_budget(Dispatch::Concurrent);
}

/// The same budget bounds the link's ordered lane: the calls waiting
/// behind the running one hold their bodies, and past the budget the link
/// stops reading; released, the rest run in order.
#[test]
fn handler_bytes_budget_bounds_the_ordered_lane_too() {
    handler_bytes_budget(Dispatch::Ordered);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dispatch {
    /// `on_message`: one call at a time, in arrival order.
    Ordered,
    /// `on_message_concurrent`: a task per call.
    Concurrent,
}

fn handler_bytes_budget(dispatch: Dispatch) {
    const BODY: usize = 64 * 1024;
    const FIT: usize = 3;
    const SENT: usize = 20;
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        // Room for FIT bodies of BODY bytes (plus their small envelopes).
        let server = bind(fx.server().max_handler_bytes(FIT * BODY + 1024)).await;
        let gate = Gate::new();
        let (arrived_tx, arrived_rx) = async_channel::unbounded::<(usize, i64)>();
        let handler = {
            let gate = gate.clone();
            move |m: Message| {
                let gate = gate.clone();
                let arrived = arrived_tx.clone();
                async move {
                    let n = m.parse::<Value>().expect("json")["n"].as_i64().expect("n");
                    let _ = arrived.send((m.body.get().len(), n)).await;
                    gate.wait().await;
                }
            }
        };
        match dispatch {
            Dispatch::Ordered => server.handlers().on_message("big", handler),
            Dispatch::Concurrent => server.handlers().on_message_concurrent("big", handler),
        };
        // Handlers running at once while the first are held.
        let running = match dispatch {
            Dispatch::Ordered => 1,
            Dispatch::Concurrent => FIT,
        };
        let client = fx.connected_client(&server).await;
        let pad = "x".repeat(BODY - 32);
        let sender = async {
            for n in 0..SENT {
                client
                    .send(&json!({"op": "big", "n": n, "pad": pad}))
                    .await
                    .expect("send");
            }
        };
        let check = async {
            let mut order = Vec::new();
            for _ in 0..running {
                let (len, n) = arrived_rx.recv().await.expect("handler started");
                assert!(len > BODY - 64, "the handler got the whole body: {len}");
                order.push(n);
            }
            // FIT calls admitted (running or waiting in the lane); the
            // link has decoded at most one more message (waiting for room)
            // and stopped reading: no further handler starts while the
            // first ones are held.
            assert!(
                !eventually(Duration::from_millis(300), || !arrived_rx.is_empty()
                    || server.stats().messages_in > FIT as u64 + 1)
                .await,
                "handlers: {}, messages read: {}",
                running + arrived_rx.len(),
                server.stats().messages_in
            );
            // Releasing the handlers lets the rest through, nothing lost.
            gate.open();
            for _ in running..SENT {
                order.push(arrived_rx.recv().await.expect("handler started").1);
            }
            if dispatch == Dispatch::Ordered {
                assert_eq!(
                    order,
                    (0..SENT as i64).collect::<Vec<_>>(),
                    "the ordered lane runs in arrival order"
                );
            }
        };
        zip(sender, check).await;
        assert_eq!(server.stats().messages_in, SENT as u64, "nothing lost");
    });
}

/// A peer that never reads: the link's command queue fills to
/// `command_bytes` (then `broadcast` skips the link), and a request queued
/// behind the send the core refuses still fails at its own deadline rather
/// than waiting for the stall to end.
#[test]
fn command_queue_is_bounded_and_a_held_request_times_out() {
    const BODY: usize = 64 * 1024;
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = bind(
            fx.server()
                // Three bodies fill the byte budget; a small request still fits.
                .command_bytes(3 * BODY + 4096)
                .command_capacity(16),
        )
        .await;
        let (_peer, _conn) = fx.adversary(server.local_addr()).await;
        let link = authenticated(&server).await;
        let pad = "x".repeat(BODY - 32);
        // Until the queue refuses for good: the socket, TLS and core
        // buffers fill first (bounded by the loopback's buffers, a few MiB).
        // A single refusal can be transient — the kernel may still be
        // moving bytes from the socket's send buffer to the peer's receive
        // buffer, after which the core takes more — so wait for several in
        // a row, with the driver run in between: then nothing is taken
        // while the core pushes back.
        let mut queued = 0usize;
        let mut refused_in_a_row = 0;
        while refused_in_a_row < 5 {
            match server.broadcast(&json!({"pad": pad})).expect("encode") {
                0 => refused_in_a_row += 1,
                n => {
                    refused_in_a_row = 0;
                    queued += n;
                }
            }
            assert!(queued < 2_000, "the queue never filled");
            tokio::task::yield_now().await;
        }
        assert!(
            server.stats().broadcast_skipped >= 5,
            "refused copies are counted as skipped"
        );
        let skipped_at = queued;
        let start = Instant::now();
        let r: Result<Value, _> = link
            .request_with_timeout(&json!({"op": "held"}), ms(300))
            .await;
        let took = start.elapsed();
        assert!(
            matches!(r, Err(Error::Timeout)),
            "{r:?} after {skipped_at} queued"
        );
        assert!(
            took < Duration::from_secs(5),
            "the held request fails at its own deadline: {took:?}: {:?}",
            server.stats()
        );
    });
}
