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

use futures_util::future::join_all;
use jsonlink_rt::{Client, Event, LinkOptions, Runtime, Server};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::opts::Opts;
use crate::scenario::{
    add_up, body, count_body, handshakes, hold_idle, oneway_result, parse_count, round_trips,
    rr_result, secs_since,
};
use crate::setup::{Material, Mode, identity, server_name};

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
    let mut builder = Server::builder(rt, m.server_tls.clone(), m.secret.clone(), identity(true))
        .proto_config(|c| mode.apply(c))
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
    Client::builder(
        rt.clone(),
        addr,
        m.client_tls.clone(),
        server_name(),
        m.secret.clone(),
        identity(false),
    )
    .proto_config(|c| mode.apply(c))
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
    for r in join_all(workers).await {
        r?;
    }
    let c1 = count(c).await?;
    Ok((c1 - c0, secs_since(t0)))
}

/// Request/response with `k` concurrent callers; (round trips, seconds, latencies).
async fn rr(c: &Client, b: &RawValue, k: usize, dur: Duration) -> io::Result<(u64, f64, Vec<u64>)> {
    let t0 = Instant::now();
    let end = t0 + dur;
    let callers = (0..k).map(|_| {
        round_trips(k, end, move || async move {
            c.request_raw(b.to_owned(), None).await.map_err(err)?;
            Ok(())
        })
    });
    let (n, lat) = add_up(join_all(callers).await)?;
    Ok((n, secs_since(t0), lat))
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
    let (rt, m) = (&rt, &m);
    let open = move || connect(rt, addr, m, mode);
    match o.str_or("scenario", "rr") {
        "oneway" => {
            let c = open().await?;
            let b: Arc<RawValue> = Arc::from(body(size));
            let senders: usize = o.num("senders", 64);
            oneway(&c, &b, senders, o.warmup()).await?;
            let (n, secs) = oneway(&c, &b, senders, o.measured()).await?;
            Ok(oneway_result(n, secs, size))
        }
        "rr" => {
            let c = open().await?;
            let b = body(size);
            let k: usize = o.num("inflight", 1);
            rr(&c, &b, k, o.warmup()).await?;
            let (n, secs, lat) = rr(&c, &b, k, o.measured()).await?;
            Ok(rr_result(n, secs, k, lat))
        }
        "handshake" => handshakes(&o, || async { open().await.map(drop) }).await,
        "idle" => hold_idle(&**rt, &o, open).await,
        s => Err(io::Error::other(format!("unknown scenario {s}"))),
    }
}
