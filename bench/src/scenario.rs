//! What the client scenarios share across stacks: the bodies they send, the
//! loops that do not depend on the wire (round trips per caller,
//! handshakes per second, idle connections held) and the JSON objects a
//! client prints.

use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use jsonlink_rt::Runtime;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::opts::Opts;

/// A JSON object body of about `len` bytes:
/// `{"op":"bench","seq":1,"data":"xxx…"}`.
pub(crate) fn body(len: usize) -> Box<RawValue> {
    let head = r#"{"op":"bench","seq":1,"data":""}"#.len();
    let pad = "x".repeat(len.saturating_sub(head));
    RawValue::from_string(format!(r#"{{"op":"bench","seq":1,"data":"{pad}"}}"#))
        .expect("valid JSON")
}

/// The request a client sends to learn how many messages the server has
/// parsed so far (answered with `{"count":N}`).
pub(crate) fn count_body() -> Box<RawValue> {
    RawValue::from_string(r#"{"op":"count"}"#.to_owned()).expect("valid JSON")
}

/// Parses `{"count":N}`.
pub(crate) fn parse_count(v: &RawValue) -> u64 {
    #[derive(serde::Deserialize)]
    struct C {
        count: u64,
    }
    serde_json::from_str::<C>(v.get()).map_or(0, |c| c.count)
}

/// Elapsed seconds since `t0`, never zero.
pub(crate) fn secs_since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64().max(1e-9)
}

/// What a one-way run prints: messages per second, and MB/s of bodies of
/// `size` bytes.
pub(crate) fn oneway_result(messages: u64, secs: f64, size: usize) -> Value {
    let per_s = messages as f64 / secs;
    json!({ "msgs_per_s": per_s, "mb_per_s": per_s * size as f64 / 1e6 })
}

/// What a request/response run with `k` in flight prints: round trips per
/// second and, at one in flight, the latency percentiles in µs of the
/// round trips' latencies `lat` (in ns, any order).
pub(crate) fn rr_result(round_trips: u64, secs: f64, k: usize, mut lat: Vec<u64>) -> Value {
    let mut v = json!({ "rtt_per_s": round_trips as f64 / secs });
    if k == 1 {
        lat.sort_unstable();
        let us = |p| percentile(&lat, p) as f64 / 1e3;
        v["p50_us"] = json!(us(0.5));
        v["p99_us"] = json!(us(0.99));
        v["p999_us"] = json!(us(0.999));
    }
    v
}

/// Percentile (0..=1) of sorted samples.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0)
}

/// One caller's round trips until `end`: how many, and at one in flight
/// (`k == 1`) each one's latency in nanoseconds. The clock is read per
/// round trip only to time it, else once per 16, as the raw baseline reads
/// it once per batch it reads; every stack's callers share this loop.
pub(crate) async fn round_trips<F, Fut>(
    k: usize,
    end: Instant,
    mut call: F,
) -> io::Result<(u64, Vec<u64>)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<()>>,
{
    let per_check = if k == 1 { 1 } else { 16 };
    let (mut n, mut lat) = (0u64, Vec::new());
    while Instant::now() < end {
        for _ in 0..per_check {
            let t = (k == 1).then(Instant::now);
            call().await?;
            n += 1;
            if let Some(t) = t {
                lat.push(t.elapsed().as_nanos() as u64);
            }
        }
    }
    Ok((n, lat))
}

/// The callers' [`round_trips`] added up: (round trips, latencies).
pub(crate) fn add_up(
    callers: impl IntoIterator<Item = io::Result<(u64, Vec<u64>)>>,
) -> io::Result<(u64, Vec<u64>)> {
    let (mut n, mut lat) = (0, Vec::new());
    for caller in callers {
        let (a, l) = caller?;
        n += a;
        lat.extend(l);
    }
    Ok((n, lat))
}

/// The handshake scenario: `--concurrency` connectors (default 8), each
/// opening connections with `open` one after the other, for the warm-up
/// and then for the measured time; prints handshakes per second.
pub(crate) async fn handshakes<F, Fut>(o: &Opts, open: F) -> io::Result<Value>
where
    F: Fn() -> Fut,
    Fut: Future<Output = io::Result<()>>,
{
    let connectors: usize = o.num("concurrency", 8);
    handshake_rate(connectors, o.warmup(), &open).await?;
    let per_s = handshake_rate(connectors, o.measured(), &open).await?;
    Ok(json!({ "hs_per_s": per_s }))
}

/// Connections opened per second by `connectors` loops over `dur`.
async fn handshake_rate<F, Fut>(connectors: usize, dur: Duration, open: &F) -> io::Result<f64>
where
    F: Fn() -> Fut,
    Fut: Future<Output = io::Result<()>>,
{
    let t0 = Instant::now();
    let end = t0 + dur;
    let loops = (0..connectors).map(|_| async move {
        let mut n = 0u64;
        while Instant::now() < end {
            open().await?;
            n += 1;
        }
        Ok::<u64, io::Error>(n)
    });
    let mut total = 0;
    for r in join_all(loops).await {
        total += r?;
    }
    Ok(total as f64 / secs_since(t0))
}

/// The idle scenario: opens `--conns` connections (default 1000) with
/// `open` from `--concurrency` openers (default 32), prints `READY n`,
/// then holds them until killed (or 120 s).
pub(crate) async fn hold_idle<T, F, Fut>(rt: &dyn Runtime, o: &Opts, open: F) -> io::Result<Value>
where
    F: Fn() -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    let n: usize = o.num("conns", 1000);
    let openers: usize = o.num("concurrency", 32).min(n.max(1));
    let open = &open;
    let each = (0..openers).map(|w| async move {
        let mut held = Vec::new();
        let mut i = w;
        while i < n {
            held.push(open().await?);
            i += openers;
        }
        Ok::<_, io::Error>(held)
    });
    let mut all = Vec::with_capacity(n);
    for r in join_all(each).await {
        all.extend(r?);
    }
    println!("READY {}", all.len());
    rt.sleep_until(Instant::now() + Duration::from_secs(120))
        .await;
    drop(all);
    Ok(json!({}))
}
