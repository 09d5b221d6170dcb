//! Per-link handler limits: `max_handler_bytes` bounds the body bytes that
//! slow handlers can make one link hold; past it the link stops reading
//! (TCP backpressure to the peer) instead of buffering.

use std::time::Duration;

use jsonlink_rt::Message;
use jsonlink_tests::eventually;
use jsonlink_tests::fixture::{Fixture, Gauges, localhost, on_tokio};
use serde_json::json;

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
        let server = fx
            .server()
            .max_handler_bytes(FIT * BODY + 1024)
            .bind(localhost())
            .await
            .expect("bind");
        let (gate_tx, gate_rx) = async_channel::unbounded::<()>();
        let (arrived_tx, arrived_rx) = async_channel::unbounded::<(usize, i64)>();
        let handler = move |m: Message| {
            let gate = gate_rx.clone();
            let arrived = arrived_tx.clone();
            async move {
                let n = m.parse::<serde_json::Value>().expect("json")["n"]
                    .as_i64()
                    .expect("n");
                let _ = arrived.send((m.body.get().len(), n)).await;
                let _ = gate.recv().await;
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
        let client = fx
            .client(server.local_addr())
            .connect()
            .await
            .expect("connect");
        let pad = "x".repeat(BODY - 32);
        let sender = {
            let client = client.clone();
            async move {
                for n in 0..SENT {
                    client
                        .send(&json!({"op": "big", "n": n, "pad": pad}))
                        .await
                        .expect("send");
                }
            }
        };
        let check = async {
            let mut order = Vec::new();
            for _ in 0..running {
                let (len, n) = arrived_rx.recv().await.expect("handler started");
                assert!(len > BODY - 64, "{len}");
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
            for _ in 0..SENT {
                let _ = gate_tx.send(()).await;
            }
            for _ in running..SENT {
                order.push(arrived_rx.recv().await.expect("handler started").1);
            }
            if dispatch == Dispatch::Ordered {
                assert_eq!(order, (0..SENT as i64).collect::<Vec<_>>());
            }
        };
        futures_lite::future::zip(sender, check).await;
        assert_eq!(server.stats().messages_in, SENT as u64);
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
        let server = fx
            .server()
            // Three bodies fill the byte budget; a small request still fits.
            .command_bytes(3 * BODY + 4096)
            .command_capacity(16)
            .bind(localhost())
            .await
            .expect("bind");
        let (_peer, _conn) = fx.adversary(server.local_addr()).await;
        let link = jsonlink_tests::fixture::authenticated(&server).await;
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
        assert!(server.stats().broadcast_skipped >= 5);
        let skipped_at = queued;
        let start = std::time::Instant::now();
        let r: Result<serde_json::Value, _> = link
            .request_with_timeout(&json!({"op": "held"}), Duration::from_millis(300))
            .await;
        let took = start.elapsed();
        assert!(
            matches!(r, Err(jsonlink_rt::Error::Timeout)),
            "{r:?} after {skipped_at} queued"
        );
        assert!(
            took < Duration::from_secs(5),
            "{took:?}: {:?}",
            server.stats()
        );
    });
}
