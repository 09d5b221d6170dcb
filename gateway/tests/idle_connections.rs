//! Fault case P1/idle: 10,000 idle keep-alive HTTP connections (as many
//! as the fd limit allows, both ends being in this process), bounded by the
//! configured connection limit and closed at `header_timeout`. A test
//! binary of its own: no other test runs beside it while it opens them.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

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

/// The idle timeout (`header_timeout`) of the idle-connections case.
const IDLE: Duration = Duration::from_secs(10);

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
