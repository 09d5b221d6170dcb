//! Fault cases P1, P2, P5 of the catalogue (tests/faults/FAULTS.md) against
//! the gateways over real sockets on 127.0.0.1; each records its outcome
//! for the fault table. (P7 is in ws_gateway.rs.)

mod common;

use std::time::{Duration, Instant};

use common::*;
use jsonlink_gateway::WsHooks;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Resident set size of this process, in bytes (Linux).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split(' ')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Whether the server closed `s` (EOF or reset) within `d`.
async fn closed_within(s: &mut TcpStream, d: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(d, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn p1_oversized_slow_and_endless_bodies() {
    let mut cfg = config();
    cfg.limits.max_body_bytes = 64 << 10;
    cfg.limits.body_timeout = Duration::from_millis(500);
    let gw = http_gateway(cfg).await;
    let addr = gw.local_addr();

    // Declared larger than the limit, sent slowly: 413 before the body.
    let mut c = Http1::connect(addr).await;
    c.stream
        .write_all(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 1048576\r\n\r\n{\"procedure\":")
        .await
        .unwrap();
    let r = c.read_response().await.expect("a response");
    assert_eq!((r.status, code_of(&r.json())), (413, 413), "declared");
    assert!(
        c.closed_within(Duration::from_secs(5)).await,
        "closed after 413"
    );

    // Chunked, no length, trickled past the limit: 413 once it is passed.
    let mut c = Http1::connect(addr).await;
    c.stream
        .write_all(b"POST / HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = format!("2000\r\n{}\r\n", " ".repeat(0x2000));
    let mut sent = 0usize;
    let response = loop {
        if c.stream.write_all(chunk.as_bytes()).await.is_err() {
            break c.read_response().await;
        }
        sent += 0x2000;
        if sent > (64 << 10) {
            break c.read_response().await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await; // the slow sender
    };
    let r = response.expect("a response");
    assert_eq!((r.status, code_of(&r.json())), (413, 413), "chunked");

    // A body that never ends: 408 at body_timeout, closed.
    let mut c = Http1::connect(addr).await;
    let started = Instant::now();
    c.stream
        .write_all(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n{\"procedure\"")
        .await
        .unwrap();
    let r = c.read_response().await.expect("a response");
    assert_eq!((r.status, code_of(&r.json())), (408, 408), "endless");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        c.closed_within(Duration::from_secs(5)).await,
        "closed after 408"
    );

    // Other callers were served all along.
    assert_eq!(code_of(&post(addr, r#"{"procedure":"echo"}"#).await), 200);
    record::record(
        "P1",
        "body over max_body_bytes declared: 413 before the body, closed; chunked and trickled: 413 once past the limit; a body that never ends: 408 at body_timeout, closed; other callers served",
    );
    gw.shutdown().await;
}

/// The idle timeout (`header_timeout`) of the idle-connections case.
const IDLE: Duration = Duration::from_secs(8);

#[tokio::test]
async fn p1_idle_keep_alive_connections_bounded_by_the_connection_limit() {
    // Both ends of every connection are in this process: two fds each.
    let nofile = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let total = 10_000usize.min(usize::try_from(nofile.saturating_sub(300) / 2).unwrap_or(0));
    assert!(
        total >= 500,
        "fd limit {nofile} too low for this test (raise ulimit -n)"
    );
    let excess = 100;
    let limit = total - excess;
    let mut cfg = config();
    cfg.limits.max_connections = limit;
    cfg.limits.header_timeout = IDLE;
    let gw = http_gateway(cfg).await;
    let addr = gw.local_addr();

    let rss_before = rss();
    // Keep-alive connections left idle: half after one call, half silent.
    let mut conns = Vec::with_capacity(limit);
    let opening = Instant::now();
    for batch in (0..limit).collect::<Vec<_>>().chunks(50) {
        let opened = futures_util::future::join_all(batch.iter().map(|&i| async move {
            let mut c = Http1::connect(addr).await;
            if i % 2 == 0 {
                assert_eq!(code_of(&c.post(r#"{"procedure":"echo"}"#).await), 200);
            }
            c
        }))
        .await;
        conns.extend(opened);
        if std::env::var_os("P1_TRACE").is_some() {
            eprintln!("{} {:?}", conns.len(), opening.elapsed());
        }
    }
    let opening = opening.elapsed();
    assert!(
        opening < IDLE / 2,
        "opening {limit} connections took {opening:?}"
    );
    // Every one is accepted once the gateway has seen them all.
    let started = Instant::now();
    while gw.connections() < limit && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(gw.connections(), limit);
    let rss_full = rss();
    let per_conn = rss_full.saturating_sub(rss_before) / limit;

    // Past the limit: closed at once.
    let mut refused = 0;
    for _ in 0..excess {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if closed_within(&mut s, Duration::from_secs(5)).await {
            refused += 1;
        }
    }
    assert_eq!(refused, excess, "every connection past the limit is closed");

    // Idle ones are closed at header_timeout, then others are served.
    let mut closed = 0;
    for c in &mut conns {
        if c.closed_within(IDLE * 2).await {
            closed += 1;
        }
    }
    assert_eq!(
        closed, limit,
        "idle keep-alive connections closed at header_timeout"
    );
    drop(conns);
    assert_eq!(code_of(&post(addr, r#"{"procedure":"echo"}"#).await), 200);
    println!(
        "P1 idle: opened in {opening:?}; {limit} idle connections (fd limit {nofile}), RSS growth {} KiB = {} B per connection (both ends in this process)",
        rss_full.saturating_sub(rss_before) >> 10,
        per_conn
    );
    assert!(per_conn < 64 << 10, "{per_conn} B per idle connection");
    record::record(
        "P1/idle",
        "idle keep-alive connections up to max_connections accepted, each past it closed at once, RSS per idle connection below 64 KiB, all idle ones closed at header_timeout, a new caller then served",
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn p2_malformed_call_requests_get_400_and_the_gateways_stay_up() {
    let deep = format!(
        "{{\"procedure\":\"echo\",\"args\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let deep_obj = format!(
        "{{\"procedure\":\"echo\",\"args\":{}1{}}}",
        "{\"a\":".repeat(100_000),
        "}".repeat(100_000)
    );
    let bodies = [
        "[1,2]".to_owned(),
        "42".to_owned(),
        r#"{"args":{"a":1}}"#.to_owned(),
        r#"{"procedure":["echo"]}"#.to_owned(),
        r#"{"procedure":null}"#.to_owned(),
        deep,
        deep_obj,
    ];
    let mut cfg = config();
    cfg.limits.max_body_bytes = 4 << 20;
    cfg.limits.max_frame_bytes = 4 << 20;
    let http = http_gateway(cfg.clone()).await;
    let ws_gw = ws_gateway(cfg, WsHooks::new()).await;
    let mut c = Http1::connect(http.local_addr()).await;
    let mut ws = ws_connect(ws_gw.local_addr()).await;
    for b in &bodies {
        let v = c.post(b).await;
        assert_eq!(code_of(&v), 400, "HTTP {}: {v}", &b[..b.len().min(30)]);
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
        ws.send_text(b).await;
        let v = ws_next(&mut ws).await.expect("an answer");
        assert_eq!(code_of(&v), 400, "WS {}: {v}", &b[..b.len().min(30)]);
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(code_of(&c.post(r#"{"procedure":"echo"}"#).await), 200);
    ws_send(&mut ws, call("echo", Value::Null, json!(1))).await;
    assert_eq!(code_of(&ws_next(&mut ws).await.unwrap()), 200);
    record::record(
        "P2",
        "not an object, no procedure, procedure of the wrong type or null, args nested 100,000 deep (arrays and objects): 400 with a message over HTTP and WebSocket; both gateways and connections stay up",
    );
    http.shutdown().await;
    ws_gw.shutdown().await;
}

trait SendText {
    async fn send_text(&mut self, s: &str);
}

impl SendText for Ws {
    async fn send_text(&mut self, s: &str) {
        use futures_util::SinkExt;
        self.send(Message::text(s)).await.expect("send");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p5_in_flight_limit_answers_429_and_a_client_that_never_reads_is_closed() {
    // (a) Calls faster than they are answered: past the in-flight limit 429.
    let mut cfg = config();
    cfg.limits.max_in_flight_per_connection = 4;
    let gw = ws_gateway(cfg, WsHooks::new()).await;
    let mut ws = ws_connect(gw.local_addr()).await;
    for i in 0..10 {
        ws_send(&mut ws, call("sleep", json!({"ms": 300}), json!(i))).await;
    }
    let mut codes = Vec::new();
    for _ in 0..10 {
        codes.push(code_of(&ws_next(&mut ws).await.unwrap()));
    }
    codes.sort_unstable();
    assert_eq!(codes, [200, 200, 200, 200, 429, 429, 429, 429, 429, 429]);
    assert_eq!(gw.stats().in_flight_refusals, 6);
    // The limit frees as calls finish.
    ws_send(&mut ws, call("echo", json!(1), json!("after"))).await;
    assert_eq!(code_of(&ws_next(&mut ws).await.unwrap()), 200);
    gw.shutdown().await;

    if std::env::var_os("GW_TRACE").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("jsonlink_gateway=debug")
            .try_init();
    }
    // (b) A client that never reads: closed past the write queue bound;
    // another client's calls are answered meanwhile.
    let (hooks, mut log) = recording_hooks();
    let mut cfg = config();
    cfg.limits.max_in_flight_per_connection = 10_000;
    cfg.limits.max_write_queue_bytes = 256 << 10;
    let gw = ws_gateway(cfg, hooks).await;
    let addr = gw.local_addr();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let (mut hostile, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp)
        .await
        .unwrap();
    let mut good = ws_connect(addr).await;
    wait_for_hook(&mut log, "connect 2").await;

    let flood = tokio::spawn(async move {
        use futures_util::SinkExt;
        // 400 answers of 64 KiB each (25 MiB), none of them read.
        for i in 0..400 {
            let f = call("big", json!(64 << 10), json!(i)).to_string();
            if hostile.send(Message::text(f)).await.is_err() {
                break;
            }
        }
        hostile
    });
    let mut worst = Duration::ZERO;
    for i in 0..50 {
        let t = Instant::now();
        ws_send(&mut good, call("echo", json!(i), json!(i))).await;
        let v = ws_next(&mut good).await.unwrap();
        assert_eq!(v["correlationId"], i);
        worst = worst.max(t.elapsed());
    }
    let log_now = wait_for_hook(&mut log, "disconnect 1").await;
    assert!(
        !log_now.iter().any(|l| l.starts_with("disconnect 2")),
        "the good client stays: {log_now:?}"
    );
    assert_eq!(
        gw.stats().queue_full_closes,
        1,
        "closed by the write queue bound"
    );
    let _hostile = flood.await.unwrap();
    ws_send(&mut good, call("echo", json!("still"), json!("x"))).await;
    assert_eq!(ws_next(&mut good).await.unwrap()["data"], "still");
    println!("P5: worst echo latency of the good client during the flood: {worst:?}");
    assert!(
        worst < Duration::from_secs(2),
        "the good client was delayed {worst:?}"
    );
    record::record(
        "P5",
        "10 calls at once with max_in_flight_per_connection 4: 4 answered 200, 6 answered 429, the limit frees as calls finish; a client that never reads its 64 KiB answers: closed past max_write_queue_bytes, another client's 50 calls answered meanwhile",
    );
    gw.shutdown().await;
}
