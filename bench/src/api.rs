//! The `api` stack: jsonlink-rt's [`Client`] and [`Server`] as a user
//! writes them (the same `Arc<dyn Runtime>`, TLS configurations and
//! secret as the other stacks).
//!
//! One-way messages are sent by 64 concurrent `send_raw` callers (a
//! `send` returns once the message is queued on the link, and waits only
//! while the queue is full).
//!
//! The server consumes its event stream in one loop: it counts messages and
//! answers each request with its own body (`respond_raw`), or with
//! `{"count":N}` for `{"op":"count"}`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonlink_rt::{Client, Event, Identity, LinkOptions, Runtime, Server};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::common::{
    Material, Mode, Opts, body, count_body, parse_count, percentile, round_trips, secs_since,
};

fn err(e: jsonlink_rt::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// The server process.
pub(crate) async fn server(
    rt: Arc<dyn Runtime>,
    m: Arc<Material>,
    mode: Mode,
    o: &Opts,
) -> io::Result<()> {
    let (sign, seal) = mode.policies();
    let mut lo = LinkOptions::default();
    // This server answers from its event loop below: it consumes events.
    lo.consume_events = true;
    lo.unhandled_ops_to_events = true;
    // Experiment knobs (not used by `all`): the per-link command bound and
    // the event stream's capacity.
    if let Some(n) = o.get("command-capacity").and_then(|v| v.parse().ok()) {
        lo.command_capacity = n;
    }
    if let Some(n) = o.get("event-capacity").and_then(|v| v.parse().ok()) {
        lo.event_capacity = n;
    }
    let mut builder = Server::builder(
        rt,
        m.server_tls.clone(),
        m.secret.clone(),
        Identity::new("bench-server", "jsonlink-bench"),
    )
    .signing(sign)
    .sign_algs(mode.sign_algs())
    .encryption(seal)
    .link_options(lo)
    .max_connections(100_000);
    if let Some(n) = o.get("max-incoming").and_then(|v| v.parse().ok()) {
        builder = builder.max_incoming_requests(n);
    }
    let server = builder
        .bind(([127, 0, 0, 1], 0).into())
        .await
        .map_err(err)?;
    if matches!(mode, Mode::Inline) {
        // Echo, as the event loop below does for every op but `count`.
        server
            .handlers()
            .on_request_inline("bench", |_link, body| Ok(body));
    }
    println!("PORT {}", server.local_addr().port());
    let mut count = 0u64;
    // Events in batches (one lock per batch), as the README advises for
    // throughput.
    let mut batch = Vec::with_capacity(EVENT_BATCH);
    while server.next_events(&mut batch, EVENT_BATCH).await > 0 {
        for ev in batch.drain(..) {
            match ev {
                Event::Message(_) => count += 1,
                Event::Request(r) => {
                    let _ = if r.op.as_deref() == Some("count") {
                        r.respond(&json!({ "count": count }))
                    } else {
                        r.responder.respond_raw(r.body)
                    };
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Events the benchmark server takes per wait.
const EVENT_BATCH: usize = 64;

async fn connect(
    rt: &Arc<dyn Runtime>,
    addr: SocketAddr,
    m: &Material,
    mode: Mode,
) -> io::Result<Client> {
    let (sign, seal) = mode.policies();
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    Client::builder(
        rt.clone(),
        addr,
        m.client_tls.clone(),
        name,
        m.secret.clone(),
        Identity::new("bench-client", "jsonlink-bench"),
    )
    .signing(sign)
    .sign_algs(mode.sign_algs())
    .encryption(seal)
    .events(false)
    .connect()
    .await
    .map_err(err)
}

async fn count(c: &Client) -> io::Result<u64> {
    let p = c.request_raw(count_body(), None).await.map_err(err)?;
    Ok(parse_count(p.raw()))
}

/// One-way for `dur` with `senders` concurrent senders; (counted, seconds).
async fn oneway(
    c: &Client,
    b: &Arc<RawValue>,
    senders: usize,
    dur: Duration,
) -> io::Result<(u64, f64)> {
    let c0 = count(c).await?;
    let t0 = Instant::now();
    let end = t0 + dur;
    let workers = (0..senders).map(|_| async move {
        while Instant::now() < end {
            for _ in 0..64 {
                c.send_raw(b.clone()).await.map_err(err)?;
            }
        }
        Ok::<(), io::Error>(())
    });
    for r in futures_util::future::join_all(workers).await {
        r?;
    }
    let c1 = count(c).await?;
    Ok((c1 - c0, secs_since(t0)))
}

/// Request/response with `k` concurrent callers; (round trips, seconds, latencies).
async fn rr(c: &Client, b: &RawValue, k: usize, dur: Duration) -> io::Result<(u64, f64, Vec<u64>)> {
    let t0 = Instant::now();
    let end = t0 + dur;
    let workers = (0..k).map(|_| {
        round_trips(k, end, move || async move {
            c.request_raw(b.to_owned(), None).await.map_err(err)?;
            Ok(())
        })
    });
    let mut n = 0;
    let mut lat = Vec::new();
    for r in futures_util::future::join_all(workers).await {
        let (a, l) = r?;
        n += a;
        lat.extend(l);
    }
    let secs = secs_since(t0);
    lat.sort_unstable();
    Ok((n, secs, lat))
}

/// The client process.
pub(crate) async fn client(
    rt: Arc<dyn Runtime>,
    m: Arc<Material>,
    mode: Mode,
    o: Opts,
) -> io::Result<Value> {
    let port: u16 = o.num("port", 0);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let size: usize = o.num("size", 100);
    let dur = o.secs("secs", 1.0);
    let warm = o.secs("warmup", 0.3);
    match o.str_or("scenario", "rr") {
        "oneway" => {
            let c = connect(&rt, addr, &m, mode).await?;
            let b: Arc<RawValue> = Arc::from(body(size));
            let senders: usize = o.num("senders", 64);
            oneway(&c, &b, senders, warm).await?;
            let (n, secs) = oneway(&c, &b, senders, dur).await?;
            let per_s = n as f64 / secs;
            Ok(json!({ "msgs_per_s": per_s, "mb_per_s": per_s * size as f64 / 1e6 }))
        }
        "rr" => {
            let c = connect(&rt, addr, &m, mode).await?;
            let b = body(size);
            let k: usize = o.num("inflight", 1);
            rr(&c, &b, k, warm).await?;
            let (n, secs, lat) = rr(&c, &b, k, dur).await?;
            let mut v = json!({ "rtt_per_s": n as f64 / secs });
            if k == 1 {
                v["p50_us"] = json!(percentile(&lat, 0.5) as f64 / 1e3);
                v["p99_us"] = json!(percentile(&lat, 0.99) as f64 / 1e3);
                v["p999_us"] = json!(percentile(&lat, 0.999) as f64 / 1e3);
            }
            Ok(v)
        }
        "handshake" => {
            let conc: usize = o.num("concurrency", 8);
            let run = |dur: Duration| {
                let rt = rt.clone();
                let m = m.clone();
                async move {
                    let t0 = Instant::now();
                    let end = t0 + dur;
                    let workers = (0..conc).map(|_| {
                        let rt = rt.clone();
                        let m = m.clone();
                        async move {
                            let mut n = 0u64;
                            while Instant::now() < end {
                                let c = connect(&rt, addr, &m, mode).await?;
                                drop(c);
                                n += 1;
                            }
                            Ok::<u64, io::Error>(n)
                        }
                    });
                    let mut total = 0;
                    for r in futures_util::future::join_all(workers).await {
                        total += r?;
                    }
                    Ok::<f64, io::Error>(total as f64 / secs_since(t0))
                }
            };
            run(warm).await?;
            let per_s = run(dur).await?;
            Ok(json!({ "hs_per_s": per_s }))
        }
        "idle" => {
            let n: usize = o.num("conns", 1000);
            let conc: usize = o.num("concurrency", 32).min(n.max(1));
            let workers = (0..conc).map(|w| {
                let rt = rt.clone();
                let m = m.clone();
                async move {
                    let mut held = Vec::new();
                    let mut i = w;
                    while i < n {
                        held.push(connect(&rt, addr, &m, mode).await?);
                        i += conc;
                    }
                    Ok::<_, io::Error>(held)
                }
            });
            let mut all = Vec::with_capacity(n);
            for r in futures_util::future::join_all(workers).await {
                all.extend(r?);
            }
            println!("READY {}", all.len());
            rt.sleep_until(Instant::now() + Duration::from_secs(120))
                .await;
            drop(all);
            Ok(json!({}))
        }
        s => Err(io::Error::other(format!("unknown scenario {s}"))),
    }
}
