//! The I/O loops shared by the raw and core stacks, and the server and
//! client processes for them.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use futures_util::io::{AsyncReadExt as _, AsyncWriteExt as _};
use jsonlink_proto::Event;
use jsonlink_rt::{BoxStream, Runtime, TlsStream};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::opts::Opts;
use crate::protos::{ClientProto, CoreClient, CoreServer, RawClient, RawServer, ServerProto};
use crate::scenario::{
    body, count_body, handshakes, hold_idle, oneway_result, parse_count, rr_result, secs_since,
};
use crate::setup::{Material, Mode, server_name};

/// Read buffer per connection, the same for every stack (jsonlink-rt's
/// `DEFAULT_READ_BUFFER`).
const READ_BUF: usize = 16 * 1024;

/// Which wire stack a process speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stack {
    Raw,
    Core,
}

impl Stack {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "raw" => Some(Self::Raw),
            "core" => Some(Self::Core),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------- server

/// Drives one accepted connection until EOF or close.
async fn serve_conn<P: ServerProto>(rt: &dyn Runtime, mut s: BoxStream, mut p: P) {
    let mut buf = vec![0u8; READ_BUF];
    let mut out = Vec::new();
    loop {
        let r = match p.deadline() {
            None => Some(read_some(&mut s, &mut buf).await),
            Some(d) => {
                future::or(async { Some(read_some(&mut s, &mut buf).await) }, async {
                    rt.sleep_until(d).await;
                    None
                })
                .await
            }
        };
        let now = Instant::now();
        let open = match r {
            Some(Ok(n)) => p.input(now, &buf[..n], &mut out),
            Some(Err(_)) => return,
            None => p.timeout(now, &mut out),
        };
        if write_out(&mut s, &mut out).await.is_err() || !open {
            return;
        }
    }
}

/// The server process for the raw and core stacks: accepts forever.
pub(crate) async fn server(
    rt: Arc<dyn Runtime>,
    m: Arc<Material>,
    stack: Stack,
    mode: Mode,
) -> io::Result<()> {
    let listener = rt.bind(([127, 0, 0, 1], 0).into()).await?;
    println!("PORT {}", listener.local_addr()?.port());
    let config = m.jsonlink_config(mode, true);
    let mut next_id = 0u64;
    loop {
        let acc = listener.accept().await?;
        next_id += 1;
        let id = next_id;
        let rt2 = rt.clone();
        let tls_cfg = m.server_tls.clone();
        let config = config.clone();
        rt.spawn(Box::pin(async move {
            let Ok(tls) = acc.tls(tls_cfg).await else {
                return;
            };
            let TlsStream {
                stream,
                channel_binding,
                ..
            } = tls;
            match stack {
                Stack::Raw => serve_conn(&*rt2, stream, RawServer::default()).await,
                Stack::Core => {
                    let p = CoreServer::new(config, Instant::now(), channel_binding, id);
                    serve_conn(&*rt2, stream, p).await;
                }
            }
        }));
    }
}

// ---------------------------------------------------------------- client

/// Runs the core handshake over `s` until authenticated.
async fn core_handshake(s: &mut BoxStream, c: &mut CoreClient) -> io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::new();
    loop {
        c.conn.poll_transmit(&mut out);
        write_out(s, &mut out).await?;
        while let Some(ev) = c.conn.poll_event() {
            match ev {
                Event::Authenticated(_) => return Ok(()),
                Event::Closed(r) => return Err(io::Error::other(format!("closed: {r:?}"))),
                _ => {}
            }
        }
        let n = read_some(s, &mut buf).await?;
        c.conn.handle_input(Instant::now(), &buf[..n]);
    }
}

/// Opens one TLS connection (and for core, authenticates).
async fn open(
    rt: &dyn Runtime,
    addr: SocketAddr,
    m: &Material,
    stack: Stack,
    mode: Mode,
) -> io::Result<(BoxStream, Option<CoreClient>)> {
    let tls = rt
        .connect_tls(addr, m.client_tls.clone(), server_name())
        .await?;
    let mut s = tls.stream;
    match stack {
        Stack::Raw => Ok((s, None)),
        Stack::Core => {
            let mut c = CoreClient::new(
                m.jsonlink_config(mode, false),
                Instant::now(),
                tls.channel_binding,
            );
            core_handshake(&mut s, &mut c).await?;
            Ok((s, Some(c)))
        }
    }
}

/// Sends `{"op":"count"}` and waits for the server's count.
async fn sync<P: ClientProto>(s: &mut BoxStream, p: &mut P, buf: &mut [u8]) -> io::Result<u64> {
    let mut out = Vec::new();
    let mut done = Vec::new();
    let id = p.request(Instant::now(), &count_body(), &mut out);
    p.flush(&mut out);
    write_out(s, &mut out).await?;
    loop {
        let n = read_some(s, buf).await?;
        p.input(Instant::now(), &buf[..n], &mut out, &mut done);
        write_out(s, &mut out).await?;
        if let Some((_, b)) = done.iter().find(|(i, _)| *i == id) {
            return Ok(parse_count(b));
        }
    }
}

/// One-way messages for `dur`; returns (messages counted by the server, seconds).
async fn oneway<P: ClientProto>(
    s: &mut BoxStream,
    p: &mut P,
    body: &RawValue,
    dur: Duration,
) -> io::Result<(u64, f64)> {
    let mut buf = vec![0u8; READ_BUF];
    let batch = (64 * 1024 / body.get().len()).max(1);
    let c0 = sync(s, p, &mut buf).await?;
    let t0 = Instant::now();
    let end = t0 + dur;
    let mut out = Vec::with_capacity(128 * 1024);
    loop {
        for _ in 0..batch {
            p.send_msg(body, &mut out);
        }
        p.flush(&mut out);
        write_out(s, &mut out).await?;
        if Instant::now() >= end {
            break;
        }
    }
    let c1 = sync(s, p, &mut buf).await?;
    Ok((c1 - c0, secs_since(t0)))
}

/// Request/response with `inflight` outstanding for `dur`; returns (round
/// trips, seconds, latencies in ns when `inflight == 1`).
async fn rr<P: ClientProto>(
    s: &mut BoxStream,
    p: &mut P,
    body: &RawValue,
    inflight: usize,
    dur: Duration,
) -> io::Result<(u64, f64, Vec<u64>)> {
    let mut buf = vec![0u8; READ_BUF];
    let mut out = Vec::with_capacity(64 * 1024);
    let mut done = Vec::with_capacity(inflight);
    let mut lat = Vec::new();
    let t0 = Instant::now();
    let end = t0 + dur;
    let mut sent_at = t0;
    for _ in 0..inflight {
        p.request(t0, body, &mut out);
    }
    p.flush(&mut out);
    write_out(s, &mut out).await?;
    let mut outstanding = inflight;
    let mut n_done = 0u64;
    while outstanding > 0 {
        let n = read_some(s, &mut buf).await?;
        let now = Instant::now();
        p.input(now, &buf[..n], &mut out, &mut done);
        for _ in done.drain(..) {
            n_done += 1;
            if inflight == 1 {
                lat.push((now - sent_at).as_nanos() as u64);
                sent_at = now;
            }
            if now < end {
                p.request(now, body, &mut out);
            } else {
                outstanding -= 1;
            }
        }
        p.flush(&mut out);
        write_out(s, &mut out).await?;
    }
    Ok((n_done, secs_since(t0), lat))
}

/// Runs one measured scenario over an open connection.
async fn measure<P: ClientProto>(
    s: &mut BoxStream,
    p: &mut P,
    o: &Opts,
    scenario: &str,
) -> io::Result<Value> {
    let size: usize = o.num("size", 100);
    let b = body(size);
    match scenario {
        "oneway" => {
            oneway(s, p, &b, o.warmup()).await?;
            let (n, secs) = oneway(s, p, &b, o.measured()).await?;
            Ok(oneway_result(n, secs, size))
        }
        "rr" => {
            let k: usize = o.num("inflight", 1);
            rr(s, p, &b, k, o.warmup()).await?;
            let (n, secs, lat) = rr(s, p, &b, k, o.measured()).await?;
            Ok(rr_result(n, secs, k, lat))
        }
        _ => Err(io::Error::other(format!("unknown scenario {scenario}"))),
    }
}

/// The client process for the raw and core stacks; prints one JSON line.
/// Handshakes: each connection opened (and for core, authenticated), then
/// closed as the jsonlink client does on drop: a TLS close_notify and a
/// shutdown, not a bare reset. Idle: connections authenticated for core.
pub(crate) async fn client(
    rt: Arc<dyn Runtime>,
    m: Arc<Material>,
    stack: Stack,
    mode: Mode,
    o: Opts,
) -> io::Result<Value> {
    let port: u16 = o.num("port", 0);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let (rt, m) = (&*rt, &*m);
    let connect = move || open(rt, addr, m, stack, mode);
    match o.str_or("scenario", "rr") {
        "handshake" => {
            let open_and_close = || async {
                let (mut s, core) = connect().await?;
                let _ = s.close().await;
                drop((s, core));
                Ok(())
            };
            handshakes(&o, open_and_close).await
        }
        "idle" => hold_idle(rt, &o, connect).await,
        scenario => {
            let (mut s, core) = connect().await?;
            match core {
                None => measure(&mut s, &mut RawClient::default(), &o, scenario).await,
                Some(mut c) => measure(&mut s, &mut c, &o, scenario).await,
            }
        }
    }
}

/// Writes all of `out` and flushes, then clears it.
async fn write_out(s: &mut BoxStream, out: &mut Vec<u8>) -> io::Result<()> {
    if !out.is_empty() {
        s.write_all(out).await?;
        s.flush().await?;
        out.clear();
    }
    Ok(())
}

/// Reads once; EOF is an error here.
async fn read_some(s: &mut BoxStream, buf: &mut [u8]) -> io::Result<usize> {
    let n = s.read(buf).await?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(n)
}
