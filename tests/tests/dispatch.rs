//! Dispatch and the event stream over real TLS on 127.0.0.1, on tokio's
//! multi-threaded runtime and on smol with an executor run by two threads
//! (with one thread, handlers spawned as tasks of their own happen to keep
//! their order): fault cases R7 (a link's message handlers run one at a
//! time, in arrival order; requests stay concurrent) and R8 (nobody reads
//! the event stream: nothing waits for a reader unless a consumer is
//! declared, and then only the links whose data events wait pause).
//!
//! Each case runs the same body on both runtimes, asserts what it observed
//! and records one outcome for the fault table (`tests/faults/expected.md`).
//! The bodies synchronise on handler notifications and request answers; the
//! only time-bound waits are the bounds that turn a stall into a failure,
//! and polls of counters that have no event to await (lifecycle events
//! dropped by an unread stream, messages a link has dispatched).

use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_lite::future::{poll_once, zip};
use jsonlink_rt::{Client, Error, Event, EventKind, Handlers, Link, Runtime, Server};
use jsonlink_tests::faults::record;
use jsonlink_tests::fixtures::{Fixture, Gate, bind, connect};
use jsonlink_tests::runtimes::{LIMIT, on_both};
use jsonlink_tests::waits::{AT_ONCE, SETTLE, authenticated, eventually, within};
use serde_json::{Value, json};

// ------------------------------------------------------------------- R7

/// Messages the server sends in one burst.
const SEQ: i64 = 1000;
/// `progress` messages of the job before its `done`.
const PROGRESS: i64 = 100;

/// What the client's message handlers saw, in the order they ran.
#[derive(Default)]
struct Seen {
    log: Mutex<Vec<(String, i64)>>,
    active: AtomicUsize,
    peak: AtomicUsize,
}

fn op_n(m: &jsonlink_rt::Message) -> (String, i64) {
    let v: Value = m.parse().expect("json body");
    (
        v["op"].as_str().unwrap_or_default().to_owned(),
        v["n"].as_i64().unwrap_or(-1),
    )
}

/// Registers ordered message handlers for `seq`, `progress` and `done`
/// that yield once in the middle (so calls running at once would overlap),
/// record what they ran and notify `ran`; `block` waits for `gate` first;
/// `boom` panics.
fn ordered_handlers(
    handlers: &Handlers,
    seen: &Arc<Seen>,
    ran: &async_channel::Sender<(String, i64)>,
    gate: &Gate,
) {
    for op in ["seq", "progress", "done", "block"] {
        let seen = seen.clone();
        let ran = ran.clone();
        let gate = gate.clone();
        handlers.on_message(op, move |m| {
            let seen = seen.clone();
            let ran = ran.clone();
            let gate = gate.clone();
            async move {
                let now = seen.active.fetch_add(1, Ordering::SeqCst) + 1;
                seen.peak.fetch_max(now, Ordering::SeqCst);
                let entry = op_n(&m);
                if entry.0 == "block" {
                    gate.wait().await;
                } else {
                    futures_lite::future::yield_now().await;
                }
                seen.log.lock().expect("log").push(entry.clone());
                seen.active.fetch_sub(1, Ordering::SeqCst);
                let _ = ran.send(entry).await;
            }
        });
    }
    handlers.on_message("boom", |_m| async { panic!("a message handler panics") });
}

/// Sends the burst and the job on `link`, then waits until the client's
/// handlers ran them all (or fails after `LIMIT`).
async fn burst_and_job(link: &Link, ran: &async_channel::Receiver<(String, i64)>) {
    for n in 0..SEQ {
        link.send(&json!({"op": "seq", "n": n}))
            .await
            .expect("send");
        if n == SEQ / 2 {
            link.send(&json!({"op": "boom"})).await.expect("send");
        }
    }
    for n in 0..PROGRESS {
        link.send(&json!({"op": "progress", "n": n}))
            .await
            .expect("send");
    }
    link.send(&json!({"op": "done", "n": PROGRESS}))
        .await
        .expect("send");
    for _ in 0..SEQ + PROGRESS + 1 {
        ran.recv().await.expect("a handler ran");
    }
}

async fn r7_body(rt: Arc<dyn Runtime>) -> String {
    let fx = Fixture::new(rt);
    let server = bind(fx.server()).await;
    let handlers = Handlers::new();
    let seen = Arc::new(Seen::default());
    let (ran_tx, ran) = async_channel::unbounded();
    let block_gate = Gate::new();
    ordered_handlers(&handlers, &seen, &ran_tx, &block_gate);

    // Requests: `slow` waits for the test's word, `fast` answers at once.
    let slow_gate = Gate::new();
    {
        let slow_gate = slow_gate.clone();
        handlers.on_request("slow", move |req| {
            let slow_gate = slow_gate.clone();
            async move {
                slow_gate.wait().await;
                let _ = req.respond(&"slow");
            }
        });
    }
    handlers.handle_request("fast", |_link, _: Value| async { Ok("fast") });
    // Opt-in concurrency: both calls must be running at once to finish.
    let (par_started, par_gate) = (Gate::new(), Gate::new());
    {
        let (started, gate) = (par_started.clone(), par_gate.clone());
        handlers.on_message_concurrent("par", move |_m| {
            let (started, gate) = (started.clone(), gate.clone());
            async move {
                started.signal();
                gate.wait().await;
            }
        });
    }

    // Two clients (two links) sharing the handlers.
    let client_a = connect(fx.client(server.local_addr()).handlers(handlers.clone())).await;
    let link_a = authenticated(&server).await;
    let client_b = connect(fx.client(server.local_addr()).handlers(handlers.clone())).await;
    let link_b = authenticated(&server).await;

    // 1. A burst and a job on one link: run in arrival order, one at a time.
    within(LIMIT, burst_and_job(&link_a, &ran))
        .await
        .expect("every message handled");
    let log = std::mem::take(&mut *seen.log.lock().expect("log"));
    // Where each entry was sent: the burst, then the job.
    let sent_at = |(op, n): &(String, i64)| match op.as_str() {
        "seq" => *n,
        "progress" => SEQ + n,
        _ => SEQ + PROGRESS,
    };
    let inversions = log
        .windows(2)
        .filter(|w| sent_at(&w[0]) > sent_at(&w[1]))
        .count();
    let peak = seen.peak.load(Ordering::SeqCst);
    let expected: Vec<(String, i64)> = (0..SEQ)
        .map(|n| ("seq".to_owned(), n))
        .chain((0..PROGRESS).map(|n| ("progress".to_owned(), n)))
        .chain([("done".to_owned(), PROGRESS)])
        .collect();
    assert_eq!(peak, 1, "message handlers of one link ran at once");
    assert_eq!(
        inversions,
        0,
        "{inversions} neighbours out of order (first: {:?})",
        log.windows(2).find(|w| sent_at(&w[0]) > sent_at(&w[1]))
    );
    assert_eq!(log, expected, "the burst, then the job with done last");

    // 2. Requests stay concurrent: `fast`, sent after `slow`, is answered
    // while `slow` waits; only then is `slow` let go.
    let slow_body = json!({"op": "slow"});
    let slow = link_a.request::<String, _>(&slow_body);
    let fast_then_release = async {
        let fast = link_a.request::<String, _>(&json!({"op": "fast"})).await;
        slow_gate.signal();
        fast
    };
    let (slow, fast) = within(AT_ONCE, zip(slow, fast_then_release))
        .await
        .expect("a slow request delayed a later one");
    assert_eq!(
        (slow.expect("slow"), fast.expect("fast")),
        ("slow".to_owned(), "fast".to_owned()),
        "both requests answered"
    );

    // 3. Head of line: while `block` runs on A, A's next message waits
    // behind it, but a request on A and a message on B are served.
    link_a
        .send(&json!({"op": "block", "n": 1}))
        .await
        .expect("send");
    link_a
        .send(&json!({"op": "seq", "n": SEQ}))
        .await
        .expect("send");
    let fast: String = within(AT_ONCE, link_a.request(&json!({"op": "fast"})))
        .await
        .expect("a slow message handler delayed a request")
        .expect("fast");
    assert_eq!(
        fast, "fast",
        "a request on A is answered while `block` runs"
    );
    link_b
        .send(&json!({"op": "seq", "n": 2 * SEQ}))
        .await
        .expect("send");
    let other = within(AT_ONCE, ran.recv())
        .await
        .expect("a slow message handler on one link delayed another link")
        .expect("ran");
    assert_eq!(
        other,
        ("seq".to_owned(), 2 * SEQ),
        "B's message ran while A's handler was blocked"
    );
    assert!(
        ran.try_recv().is_err(),
        "A's next message ran before `block` finished"
    );
    block_gate.signal();
    let after = (
        ran.recv().await.expect("ran"),
        ran.recv().await.expect("ran"),
    );
    assert_eq!(
        after,
        (("block".to_owned(), 1), ("seq".to_owned(), SEQ)),
        "A's messages in order once `block` finished"
    );

    // 4. Opt-in concurrency: two `par` calls of one link run at once.
    link_a.send(&json!({"op": "par"})).await.expect("send");
    link_a.send(&json!({"op": "par"})).await.expect("send");
    let both = within(AT_ONCE, async {
        par_started.wait().await;
        par_started.wait().await;
    })
    .await;
    assert!(
        both.is_some(),
        "concurrent message handlers ran one at a time"
    );
    par_gate.open();

    client_a.close().await;
    client_b.close().await;
    drop(server);
    format!(
        "{SEQ} messages then {PROGRESS} progress and done on one link: handled in arrival order \
         ({inversions} neighbours out of order, done last), at most {peak} handler running, a \
         panicking handler skipped; a slow request did not delay a later one; a blocked message \
         handler delayed only its link's next message (not a request on it, not another link); \
         on_message_concurrent ran 2 at once"
    )
}

#[test]
fn r7_a_links_message_handlers_run_one_at_a_time_in_arrival_order() {
    let outcome = on_both(r7_body);
    record("R7", outcome);
}

// ------------------------------------------------------------------- R8

/// The event stream's capacity in these cases (per kind of event).
const CAPACITY: usize = 8;
/// Clients that connect and leave before the case, unread: their
/// lifecycle events alone overflow the stream.
const CHURN: usize = 10;

/// A server with an inline `echo` handler, no keepalive (no lifecycle
/// events but the ones the case makes) and a small event stream.
async fn echo_server(fx: &Fixture, consume: bool) -> Server {
    let builder = fx
        .server()
        .event_capacity(CAPACITY)
        .keepalive(None)
        .consume_events(consume);
    let server = bind(builder).await;
    server
        .handlers()
        .handle_request_inline("echo", |_link: &Link, v: Value| Ok(v));
    server
}

async fn client(fx: &Fixture, server: &Server) -> Client {
    fx.client(server.local_addr())
        .keepalive(None)
        .connect()
        .await
        .expect("connect")
}

/// `CHURN` clients connect and leave one after the other; then waits
/// until the server has dropped every lifecycle event past the stream's
/// capacity (nobody reads them).
async fn churn(fx: &Fixture, server: &Server) {
    for _ in 0..CHURN {
        client(fx, server).await.close().await;
    }
    let dropped = (2 * CHURN - CAPACITY) as u64;
    assert!(
        eventually(SETTLE, || server.stats().dropped_events == dropped).await,
        "lifecycle events dropped: {} (expected {dropped})",
        server.stats().dropped_events
    );
}

/// An echo request answered within [`AT_ONCE`].
async fn echo(c: &Client, n: i64) {
    let r = within(
        AT_ONCE,
        c.request::<Value, _>(&json!({"op": "echo", "n": n})),
    )
    .await
    .unwrap_or_else(|| panic!("echo {n} was not answered at once"));
    assert_eq!(r.expect("echo")["n"], n, "echo answers its argument");
}

/// No consumer declared (the `echo_tokio` pattern): a full, unread stream
/// stops nothing.
async fn r8_no_consumer(fx: &Fixture) -> String {
    let server = echo_server(fx, false).await;
    churn(fx, &server).await;
    let a = client(fx, &server).await;
    // A message with an unhandled op, and one without an op: dropped.
    a.send(&json!({"op": "nope"})).await.expect("send");
    a.send(&json!(["no op"])).await.expect("send");
    // Dispatched (so a request sent from now on is read after them)…
    assert!(
        eventually(SETTLE, || server.stats().messages_in == 2).await,
        "the link stopped reading after an unhandled message"
    );
    // …and the handled op still works on the same link.
    echo(&a, 1).await;
    // Requests no handler takes are answered no_handler at once.
    let t = Instant::now();
    let without_op = within(AT_ONCE, a.request::<Value, _>(&json!(["no op"])))
        .await
        .expect("a request without op waited for a reader");
    let unhandled = within(AT_ONCE, a.request::<Value, _>(&json!({"op": "nope"})))
        .await
        .expect("a request with an unhandled op waited for a reader");
    assert!(t.elapsed() < AT_ONCE, "{:?}", t.elapsed());
    assert!(
        matches!(without_op, Err(Error::NoHandler(_))),
        "{without_op:?}"
    );
    assert!(
        matches!(unhandled, Err(Error::NoHandler(_))),
        "{unhandled:?}"
    );
    echo(&a, 2).await;
    let stats = server.stats();
    assert_eq!(
        stats.dropped_messages, 2,
        "the unhandled messages were dropped and counted"
    );
    // The stream kept the newest lifecycle events, at most its capacity.
    let mut kept = Vec::new();
    while let Some(ev) = server.try_next_event() {
        kept.push(ev.kind());
    }
    assert_eq!(kept.len(), CAPACITY, "{kept:?}");
    assert_eq!(kept.last(), Some(&EventKind::Authenticated), "{kept:?}");
    assert!(
        kept.iter()
            .all(|k| matches!(k, EventKind::Authenticated | EventKind::Closed)),
        "{kept:?}"
    );
    a.close().await;
    format!(
        "no consumer, stream full after {CHURN} clients came and went (capacity {CAPACITY}): 2 \
         unhandled messages dropped (dropped_messages {}), requests without op and with an \
         unhandled op answered NoHandler at once, the inline handler answered on the same link; \
         {} newest lifecycle events kept, {} dropped",
        stats.dropped_messages,
        kept.len(),
        stats.dropped_events
    )
}

/// A consumer declared but not reading for now: data events wait (only
/// their own link pauses), lifecycle events never do; then it reads.
async fn r8_consumer(fx: &Fixture) -> String {
    let server = echo_server(fx, true).await;
    churn(fx, &server).await;
    let a = client(fx, &server).await;
    let note = |n: i64| json!({"op": "note", "n": n});
    // Lifecycle events do not take the room of data: A's first messages
    // go in without pausing it.
    let first = (CAPACITY / 2) as i64;
    for n in 0..first {
        a.send(&note(n)).await.expect("send");
    }
    // Dispatched (so a request sent from now on is read after them).
    assert!(
        eventually(SETTLE, || server.stats().messages_in == first as u64).await,
        "the link stopped reading"
    );
    echo(&a, 1).await;
    // More than the stream holds: A pauses once the first message that
    // finds no room is dispatched, so a request sent after that is not
    // even read.
    let total = first + CAPACITY as i64;
    for n in first..total {
        a.send(&note(n)).await.expect("send");
    }
    assert!(
        eventually(SETTLE, || server.stats().messages_in > CAPACITY as u64).await,
        "the link stopped reading before the stream was full"
    );
    let a_echo_body = json!({"op": "echo", "n": 2});
    let mut a_echo = pin!(a.request::<Value, _>(&a_echo_body));
    assert!(
        poll_once(a_echo.as_mut()).await.is_none(),
        "A's request waits behind its paused messages"
    );
    // Another link authenticates, pings and is answered meanwhile.
    let b = client(fx, &server).await;
    b.ping(Some(&json!({"p": 1}))).await.expect("ping");
    echo(&b, 3).await;
    assert!(
        poll_once(a_echo.as_mut()).await.is_none(),
        "A's request was answered while its messages waited for the consumer"
    );
    let dropped = server.stats().dropped_events;
    // The consumer reads: every message of A in order, the newest
    // lifecycle events, then A's request is answered.
    let mut notes = Vec::new();
    let mut lifecycle = Vec::new();
    let read = async {
        while notes.len() < total as usize {
            match server.next_event().await.expect("event stream") {
                Event::Message(m) => {
                    let v: Value = m.parse().expect("json");
                    notes.push(v["n"].as_i64().expect("n"));
                }
                other => lifecycle.push(other.kind()),
            }
        }
    };
    let (r, ()) = within(LIMIT, zip(a_echo, read))
        .await
        .expect("the consumer read and A resumed");
    assert_eq!(
        r.expect("echo")["n"],
        2,
        "A's request answered once the consumer read"
    );
    while let Some(ev) = server.try_next_event() {
        lifecycle.push(ev.kind());
    }
    assert_eq!(
        notes,
        (0..total).collect::<Vec<_>>(),
        "every message, in order"
    );
    assert_eq!(lifecycle.len(), CAPACITY, "{lifecycle:?}");
    assert_eq!(
        server.stats().dropped_messages,
        0,
        "a consumer's messages are never dropped"
    );
    a.close().await;
    b.close().await;
    format!(
        "consumer declared, not reading, after {CHURN} clients came and went: {first} unhandled \
         messages queued without pausing their link; with {total} (capacity {CAPACITY}) only \
         that link paused while another authenticated, pinged and was answered at once; the \
         consumer then got all {} messages in order and {} newest lifecycle events ({dropped} \
         dropped), and the paused link resumed",
        notes.len(),
        lifecycle.len()
    )
}

async fn r8_body(rt: Arc<dyn Runtime>) -> String {
    let fx = Fixture::new(rt);
    let without = r8_no_consumer(&fx).await;
    let with = r8_consumer(&fx).await;
    format!("{without}; {with}")
}

#[test]
fn r8_an_unread_event_stream_stalls_nothing_without_a_consumer_and_only_waiting_links_with_one() {
    let outcome = on_both(r8_body);
    record("R8", outcome);
}
