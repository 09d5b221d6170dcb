//! Server load cases of the fault catalogue (tests/faults/FAULTS.md L2, L3), over real TLS
//! on 127.0.0.1, with the server's resident memory measured against the
//! bound documented in the README ("Memory bounds").
//!
//! The memory figures are printed (`cargo test --test load -- --nocapture`)
//! for the record; the outcome recorded for the fault table says only
//! whether they held, so it does not change between runs.
//!
//! Both tests run with [`Gauges::Exclusive`]: nothing else in this binary
//! allocates while they measure.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use jsonlink_proto::{DEFAULT_MAX_OUTBOUND, DEFAULT_PRE_AUTH_MAX_FRAME, Side};
use jsonlink_rt::{Client, DEFAULT_COMMAND_CAPACITY, DEFAULT_READ_BUFFER, Link, Runtime, Secret};
use jsonlink_tests::faults::record;
use jsonlink_tests::fixtures::{Fixture, TempDir, add_handler, bind, ms};
use jsonlink_tests::runtimes::{Gauges, on_tokio_within};
use jsonlink_tests::waits::{SETTLE, authenticated, eventually};
use jsonlink_tests::{RawTlsClient, rss_bytes};
use peakmem_alloc::{INSTRUMENTED_SYSTEM, PeakMemAlloc, PeakMemAllocTrait as _};
use serde_json::json;

/// Counts live heap bytes, so L3 can measure what the process holds apart
/// from what the allocator keeps of freed blocks.
#[global_allocator]
static HEAP: &PeakMemAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// Upper bound on one load test.
const LOAD_LIMIT: Duration = Duration::from_secs(60);

/// Per-connection TLS state and buffers in the documented bound (README,
/// "Memory bounds"): rustls keeps one incoming record (up to 18 KiB), the
/// handshake state, keys and the connection's task and core state.
const TLS_PER_CONNECTION: u64 = 32 * 1024;

/// At most this many runtime threads in the test process, each with its
/// own read buffer (`LinkOptions::read_buffer`, one per thread).
const READ_THREADS: usize = 16;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Percentile `p` (0..=100) of sorted durations.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let i = (sorted.len().saturating_sub(1) * p) / 100;
    sorted.get(i).copied().unwrap_or_default()
}

/// Samples this process's resident memory every few milliseconds until
/// dropped; `peak()` is the largest sample so far.
struct RssPeak {
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssPeak {
    fn start() -> Self {
        let peak = Arc::new(AtomicU64::new(rss_bytes().expect("rss")));
        let p = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Some(now) = rss_bytes() {
                    p.fetch_max(now, Ordering::Relaxed);
                }
                tokio::time::sleep(ms(5)).await;
            }
        });
        Self { peak, task }
    }

    fn peak(&self) -> u64 {
        self.peak
            .load(Ordering::Relaxed)
            .max(rss_bytes().unwrap_or(0))
    }
}

impl Drop for RssPeak {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Times `n` sequential `add` requests of `client`.
async fn latencies(client: &Client, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n as i64 {
        let t = Instant::now();
        let sum: i64 = client
            .request(&json!({"op": "add", "a": i, "b": 1}))
            .await
            .expect("a good client's request");
        out.push(t.elapsed());
        assert_eq!(sum, i + 1, "request {i} got its answer");
    }
    out.sort();
    out
}

/// A secret as hex (the L2 adversary process gets it on its command line).
fn hex_of(secret: &Secret) -> String {
    secret.expose().iter().map(|b| format!("{b:02x}")).collect()
}

// ------------------------------------------------------------------- L2

/// Slow pre-auth connections (tests/faults/FAULTS.md: 1000), split in three.
const SLOW: usize = 1000;
/// Trickling peers send this much of a never-ending hello at once, then
/// one byte per [`TRICKLE_GAP`] (at most 4095 more: never over the limit).
const BURST: usize = DEFAULT_PRE_AUTH_MAX_FRAME - 4096;
const TRICKLE_GAP: Duration = Duration::from_millis(250);
/// Messages the server sends to the reader that never reads.
const CHUNK: usize = 32 * 1024;
/// Requests the good client times.
const REQUESTS: usize = 200;

#[test]
fn l2_a_thousand_slow_pre_auth_connections_and_a_reader_that_never_reads_stay_within_the_memory_bound()
 {
    // Both processes hold one descriptor per socket (plus the server's
    // accepted ends here); the adversary process inherits the raised limit.
    let nofile = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let slow = SLOW.min(usize::try_from(nofile.saturating_sub(256)).unwrap_or(0));
    let (tcp, tls) = (slow - 2 * (slow / 3), slow / 3);
    let trickle = slow / 3;
    on_tokio_within(LOAD_LIMIT, Gauges::Exclusive, |rt| async move {
        let fx = Fixture::new(rt.clone());
        let hex = hex_of(&fx.secret);
        // A handshake deadline far past the test: every slow connection
        // stays open at once.
        let server = bind(fx.server().handshake_timeout(Duration::from_secs(120))).await;
        add_handler(&server);
        let addr = server.local_addr();

        // The good client, warmed up, before the baseline.
        let client = fx.client(addr).connect().await.expect("good client");
        authenticated(&server).await;
        let _ = latencies(&client, REQUESTS).await;
        let warm = fx.client(addr).connect().await.expect("second client");
        authenticated(&server).await;
        drop(warm);
        assert!(
            eventually(SETTLE, || server.stats().connections == 1).await,
            "the warm-up client's connection is released"
        );
        let baseline = rss_bytes().expect("rss");
        let peak = RssPeak::start();

        // The adversaries, in their own process.
        let dir = TempDir::new("l2");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, fx.pki.ca_cert_pem()).expect("write CA");
        let mut child = Command::new(env!("CARGO_BIN_EXE_slow_peers"))
            .args([
                addr.to_string(),
                ca.display().to_string(),
                hex,
                tcp.to_string(),
                tls.to_string(),
                trickle.to_string(),
                BURST.to_string(),
                TRICKLE_GAP.as_millis().to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn slow_peers");
        let stdout = child.stdout.take().expect("stdout");
        let ready = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            line
        })
        .await
        .expect("reader thread");
        drop(dir);
        assert_eq!(ready.trim(), "ready", "slow_peers did not start");

        // The reader that never reads: the server sends to it until its
        // sends wait, and keeps one waiting.
        let stuck: Link = authenticated(&server).await;
        assert_eq!(
            stuck.peer().map(|p| p.node.as_str()),
            Some("never-reads"),
            "the reader that never reads authenticated"
        );
        let body =
            serde_json::value::to_raw_value(&json!({"op": "bulk", "pad": "x".repeat(CHUNK)}))
                .expect("json");
        let body: Arc<serde_json::value::RawValue> = Arc::from(body);
        let sent = Arc::new(AtomicUsize::new(0));
        let sender = {
            let (stuck, body, sent) = (stuck.clone(), body.clone(), sent.clone());
            tokio::spawn(async move {
                while stuck.send_raw(body.clone()).await.is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        // Every connection is open, every burst has been read, and the
        // stuck link has stopped taking more (no send for 500 ms).
        let open = (slow + 2) as u64;
        assert!(
            eventually(Duration::from_secs(30), || server.stats().connections
                == open)
            .await,
            "{:?}",
            server.stats()
        );
        let bursts = (trickle * BURST) as u64;
        assert!(
            eventually(Duration::from_secs(30), || server.stats().bytes_in
                >= bursts)
            .await,
            "the bursts were not read: {:?}",
            server.stats()
        );
        let mut last = usize::MAX;
        while sent.load(Ordering::Relaxed) != last {
            last = sent.load(Ordering::Relaxed);
            tokio::time::sleep(ms(500)).await;
        }

        // Meanwhile a new good client gets in, and the first one is served.
        let t = Instant::now();
        let newcomer = fx.client(addr).connect().await.expect("a client during L2");
        let auth = t.elapsed();
        let lat = latencies(&client, REQUESTS).await;
        let sum: i64 = newcomer
            .request(&json!({"op": "add", "a": 2, "b": 3}))
            .await
            .expect("add");
        assert_eq!(sum, 5, "the newcomer is served");
        assert!(!stuck.is_closed(), "the stuck reader was closed");
        assert_eq!(
            server.stats().connections,
            open + 1,
            "every slow connection is still open"
        );

        let growth = peak.peak().saturating_sub(baseline);
        let per_connection = DEFAULT_PRE_AUTH_MAX_FRAME as u64 + TLS_PER_CONNECTION;
        let queue = (2 * DEFAULT_MAX_OUTBOUND + (DEFAULT_COMMAND_CAPACITY + 1) * CHUNK) as u64
            + TLS_PER_CONNECTION;
        // The read buffer is one per runtime thread, not per connection.
        let read_buffers = (READ_THREADS * DEFAULT_READ_BUFFER) as u64;
        let bound = open * per_connection + queue + read_buffers;
        let (p50, max) = (percentile(&lat, 50), percentile(&lat, 100));
        eprintln!(
            "L2: {slow} slow connections ({tcp} silent after TCP, {tls} silent after TLS, \
             {trickle} trickling after a {BURST}-byte burst) + 1 reader that never reads \
             ({} messages of {CHUNK} bytes taken before it blocked): server RSS grew {:.1} MiB \
             (peak {:.1} MiB over a baseline of {:.1} MiB); bound {open} x {:.1} KiB + queue \
             {:.1} MiB + read buffers {:.2} MiB = {:.1} MiB; a new client authenticated in {auth:?}; {REQUESTS} requests: \
             p50 {p50:?}, max {max:?}",
            sent.load(Ordering::Relaxed),
            mib(growth),
            mib(peak.peak()),
            mib(baseline),
            per_connection as f64 / 1024.0,
            mib(queue),
            mib(read_buffers),
            mib(bound),
        );
        assert!(
            growth < bound,
            "RSS grew {growth} bytes, over the documented bound of {bound}"
        );
        assert!(
            auth < Duration::from_secs(2),
            "authenticating took {auth:?}"
        );
        assert!(max < Duration::from_secs(2), "a request took {max:?}");

        // The adversaries go; their connections close.
        drop(child.stdin.take());
        let _ = child.kill();
        let _ = child.wait();
        sender.abort();
        drop((client, newcomer));
        assert!(
            eventually(Duration::from_secs(30), || server.stats().connections <= 1).await,
            "{:?}",
            server.stats()
        );
        record(
            "L2",
            format!(
                "{slow} slow pre-auth connections (silent after TCP, silent after TLS, trickling \
                 a never-ending hello) and a reader that never reads, all open at once: server \
                 RSS growth below connections x (pre-auth limit + TLS) + a read buffer per \
                 runtime thread + queue \
                 bound; a new client authenticated within 2 s and {REQUESTS} requests were \
                 answered meanwhile"
            ),
        );
    });
}

// ------------------------------------------------------------------- L3

/// The server's max frame for L3 (small, to keep the flood fast).
const L3_MAX_FRAME: usize = 1024 * 1024;
/// What L3's two clients (the flooder and the well-behaved one) may hold
/// in the test process: TLS state and rustls' send buffers for each, and
/// the other client's requests and latency samples.
const CLIENTS_IN_PROCESS: u64 = 2 * (TLS_PER_CONNECTION + 2 * 64 * 1024) + 64 * 1024;
/// Max-size frames the flooder writes.
const FLOOD: usize = 200;

#[test]
fn l3_a_client_flooding_max_size_frames_gets_bounded_memory_and_others_are_served() {
    on_tokio_within(
        LOAD_LIMIT,
        Gauges::Exclusive,
        |rt: Arc<dyn Runtime>| async move {
            let fx = Fixture::new(rt);
            let server = bind(
                fx.server()
                    .max_frame(L3_MAX_FRAME)
                    .max_handler_bytes(L3_MAX_FRAME),
            )
            .await;
            add_handler(&server);
            let (got_tx, got_rx) = async_channel::unbounded::<usize>();
            // The handler holds each body for a moment, as a slow handler
            // (or a loaded machine) would: the link then reaches its worst
            // case every frame, which is what the bound is checked against.
            let hold_rt = fx.rt.clone();
            server.handlers().on_message("flood", move |m| {
                let got = got_tx.clone();
                let rt = hold_rt.clone();
                async move {
                    rt.sleep_until(rt.now() + ms(20)).await;
                    let _ = got.send(m.body.get().len()).await;
                }
            });
            let addr = server.local_addr();
            let client = fx.client(addr).connect().await.expect("good client");
            authenticated(&server).await;
            let _ = latencies(&client, REQUESTS).await;

            // The flooder: authenticated, then max-size frames as fast as TLS
            // takes them, encoded once (by its own core, so whatever protection
            // was negotiated is honoured).
            let mut raw = RawTlsClient::connect(addr, fx.client_tls())
                .await
                .expect("flooder TLS");
            let mut conn = raw
                .handshake(fx.adversary_config("flooder"), Side::Client, LOAD_LIMIT)
                .await
                .expect("flooder handshake");
            authenticated(&server).await;
            let envelope = r#"{"t":"msg","d":{"op":"flood","pad":""}}"#.len() + 64;
            let pad = "x".repeat(L3_MAX_FRAME - envelope);
            let body =
                serde_json::value::to_raw_value(&json!({"op": "flood", "pad": pad})).expect("json");
            conn.send(&body)
                .expect("a frame within the server's max frame");
            let mut frame = Vec::new();
            conn.poll_transmit(&mut frame);
            let frame_len = frame.len() - 1;
            assert!(
                frame_len <= L3_MAX_FRAME && frame_len > L3_MAX_FRAME - 256,
                "{frame_len}"
            );
            let plain = frame.starts_with(br#"{"t":"msg""#);
            drop(body);
            // The other client's latency samples, allocated before the
            // baseline (they are the test's, not the server's).
            let mut lat = Vec::with_capacity(1 << 16);
            let baseline = rss_bytes().expect("rss");
            let peak = RssPeak::start();
            HEAP.reset_peak_memory();

            let flood = tokio::spawn(async move {
                // Unprotected frames can be resent as they are; signed or
                // sealed ones each need the next sequence number.
                let mut frame = frame;
                for i in 0..FLOOD {
                    if i > 0 && !plain {
                        let body = serde_json::value::to_raw_value(
                            &json!({"op": "flood", "pad": "x".repeat(L3_MAX_FRAME - envelope)}),
                        )
                        .expect("json");
                        conn.send(&body).expect("frame");
                        frame.clear();
                        conn.poll_transmit(&mut frame);
                    }
                    raw.send(&frame).await.expect("flood write");
                }
                (raw, conn)
            });
            // Another client is served meanwhile.
            let served = async {
                while got_rx.len() < FLOOD / 2 && lat.len() + 10 <= lat.capacity() {
                    lat.extend(latencies(&client, 10).await);
                }
                lat.sort();
                lat
            };
            let lat = served.await;
            let mut received = 0;
            for _ in 0..FLOOD {
                let n = got_rx.recv().await.expect("flood message");
                assert!(n > L3_MAX_FRAME - 512, "{n}");
                received += 1;
            }
            let (_raw, _conn) = flood.await.expect("flooder");
            // Live heap bytes at their peak, over those live at the start:
            // what the process held. RSS also counts what glibc keeps of
            // freed 1 MiB blocks in its per-thread arenas (0-1 MiB more,
            // depending on which worker threads the frames passed through),
            // so it is printed but the bound is checked on the heap.
            let heap = HEAP.get_peak_memory() as u64;
            let growth = peak.peak().saturating_sub(baseline);
            // Documented bound for one authenticated link reading max-size
            // frames (README, "Memory bounds"), with `max_handler_bytes` at
            // one max frame: the line buffer (its capacity capped at max
            // frame), the body decoded and waiting for the handler budget,
            // and the body held by the running handler (one max frame
            // each), the read buffer and TLS. The server reaches it when its
            // handler task runs late (a loaded machine): one body in the
            // handler, the next frame complete in the line buffer and its
            // copy being made. This process also hosts the flooder and the
            // other client: their TLS state, rustls' send buffers (64 KiB of
            // plaintext each, and the records made from it) and the other
            // client's requests and latency samples.
            let server_bound = (3 * L3_MAX_FRAME + DEFAULT_READ_BUFFER) as u64 + TLS_PER_CONNECTION;
            let bound = server_bound + CLIENTS_IN_PROCESS;
            let (p50, max) = (percentile(&lat, 50), percentile(&lat, 100));
            eprintln!(
                "L3: {received} frames of {frame_len} bytes ({:.0} MiB) flooded by one client \
             ({}): live heap grew {:.2} MiB at its peak, RSS {:.1} MiB (peak {:.1} MiB over \
             {:.1} MiB); bound {:.1} MiB (server {:.1} MiB); another client's {} requests meanwhile: p50 {p50:?}, max {max:?}",
                mib((FLOOD * frame_len) as u64),
                if plain { "plain" } else { "protected" },
                mib(heap),
                mib(growth),
                mib(peak.peak()),
                mib(baseline),
                mib(bound),
                mib(server_bound),
                lat.len(),
            );
            assert!(
                heap < bound,
                "the heap grew {heap} bytes while {FLOOD} max-size frames arrived; bound {bound}"
            );
            assert!(max < Duration::from_secs(2), "a request took {max:?}");
            record(
                "L3",
                format!(
                    "{FLOOD} frames of max size (1 MiB) flooded by one authenticated client, all \
                 delivered: live heap growth below 3 x max frame + read buffer + TLS for the \
                 server, plus TLS and send buffers for the test's two clients; another \
                 client's requests answered meanwhile"
                ),
            );
        },
    );
}
