//! `gateway`: calls through jsonlink-gateway's HTTP and WebSocket gateways
//! against a bare axum JSON echo handler and a bare tokio-tungstenite echo,
//! measured by one load generator for both sides (a Rust client on tokio,
//! 64 calls in flight, ~100 B arguments).
//!
//! Stacks: `gw-http`, `gw-http-tls` (the HTTP gateway with an echo
//! procedure), `axum`, `axum-tls` (a bare axum `Json<Value>` echo, served
//! by the same hyper-util connection builder), `gw-ws` (the WebSocket
//! gateway), `tung` (a bare tokio-tungstenite echo of each text frame). The
//! client's `--scenario` is `h1` (HTTP/1.1 keep-alive, a pool of up to 64
//! connections), `h2` (HTTP/2, one connection) or `ws` (one WebSocket
//! connection, calls matched by `correlationId`).
//! `jsonlink-bench gateway [--reps N] [--secs S] [--warmup S] [--fifo 0|1|2]`
//! writes `bench/results/gateway-latest.md`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use jsonlink_gateway::{GatewayConfig, HttpGateway, WsGateway, WsHooks};
use jsonlink_rpc::{CallResponse, Procedure, Registry};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::launch::{Launcher, Runs};
use crate::opts::Opts;
use crate::orchestrate::{Plan, Spec};
use crate::report::loadavg;
use crate::setup::{Material, make_material_dir};

/// Whether `stack` is one of this module's.
pub(crate) fn is_stack(stack: &str) -> bool {
    matches!(
        stack,
        "gw-http" | "gw-http-tls" | "axum" | "axum-tls" | "gw-ws" | "tung"
    )
}

fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The call every request sends: a CallRequest of about `len` bytes of
/// arguments (`{"seq":1,"data":"xxx…"}`).
fn call_body(len: usize, cid: u64) -> Vec<u8> {
    let head = r#"{"seq":1,"data":""}"#.len();
    let args = json!({"seq": 1, "data": "x".repeat(len.saturating_sub(head))});
    serde_json::to_vec(&json!({"procedure": "echo", "args": args, "correlationId": cid}))
        .unwrap_or_default()
}

fn gateway_config(m: &Material, tls: bool) -> GatewayConfig {
    let mut c = GatewayConfig::default();
    c.limits.rate_limit = None;
    c.limits.max_in_flight_per_connection = 1024;
    if tls {
        c.tls = Some(m.server_tls.clone());
    }
    c
}

fn echo_registry() -> io::Result<Registry> {
    Registry::builder()
        .raw_procedure(Procedure::new("echo"), |_cx, args| async move {
            CallResponse::ok(args)
        })
        .build()
        .map_err(err)
}

/// The server process: prints `PORT p`, then serves until killed.
pub(crate) async fn server(m: Arc<Material>, stack: &str) -> io::Result<()> {
    let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
    let port = match stack {
        "gw-http" | "gw-http-tls" => {
            let gw = HttpGateway::bind(
                addr,
                echo_registry()?,
                gateway_config(&m, stack.ends_with("tls")),
            )
            .await?;
            let p = gw.local_addr().port();
            std::mem::forget(gw);
            p
        }
        "gw-ws" => {
            let gw = WsGateway::bind(
                addr,
                echo_registry()?,
                gateway_config(&m, false),
                WsHooks::new(),
            )
            .await?;
            let p = gw.local_addr().port();
            std::mem::forget(gw);
            p
        }
        "axum" | "axum-tls" => {
            axum_echo(addr, stack.ends_with("tls").then(|| m.server_tls.clone())).await?
        }
        "tung" => tungstenite_echo(addr).await?,
        other => return Err(err(format!("unknown stack {other}"))),
    };
    println!("PORT {port}");
    std::future::pending::<()>().await;
    Ok(())
}

/// A bare axum JSON echo (`Json<Value>` in, `Json<Value>` out) on any path,
/// served by hyper-util's auto (HTTP/1.1 + HTTP/2) connection builder.
async fn axum_echo(addr: SocketAddr, tls: Option<Arc<rustls::ServerConfig>>) -> io::Result<u16> {
    use axum::Json;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tower::ServiceExt as _;
    let app = axum::Router::new().fallback(|Json(v): Json<Value>| async move { Json(v) });
    let tls = tls.map(|c| {
        let mut c = (*c).clone();
        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(c))
    });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let app = app.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        app.clone().oneshot(req.map(axum::body::Body::new))
                    });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match tls {
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(tcp).await {
                            let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                }
            });
        }
    });
    Ok(port)
}

/// A bare tokio-tungstenite echo: every text frame sent back as it came.
async fn tungstenite_echo(addr: SocketAddr) -> io::Result<u16> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(port)
}

/// Round trips until `end`, each timed (ns).
async fn timed<F, Fut>(end: Instant, mut call: F) -> io::Result<Vec<u64>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<()>>,
{
    let mut lat = Vec::new();
    while Instant::now() < end {
        let t = Instant::now();
        call().await?;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    Ok(lat)
}

fn result(mut lat: Vec<u64>, secs: f64) -> Value {
    lat.sort_unstable();
    let pct = |p: f64| {
        let i = ((lat.len().saturating_sub(1)) as f64 * p).round() as usize;
        lat.get(i).copied().unwrap_or(0) as f64 / 1e3
    };
    json!({"rtt_per_s": lat.len() as f64 / secs, "p50_us": pct(0.5), "p99_us": pct(0.99)})
}

/// `k` callers of `call` for the warm-up, then for the measured time: the
/// result of the measured part.
async fn measure<F, Fut>(k: usize, o: &Opts, call: F) -> io::Result<Value>
where
    F: Fn() -> Fut,
    Fut: Future<Output = io::Result<()>>,
{
    let run = |dur: Duration| {
        let call = &call;
        async move {
            let t0 = Instant::now();
            let end = t0 + dur;
            let mut lat = Vec::new();
            for c in join_all((0..k).map(|_| timed(end, call))).await {
                lat.extend(c?);
            }
            Ok::<_, io::Error>((lat, t0.elapsed().as_secs_f64()))
        }
    };
    run(o.warmup()).await?;
    let (lat, secs) = run(o.measured()).await?;
    Ok(result(lat, secs))
}

/// The client process: `--inflight` callers for the warm-up, then for the
/// measured time; prints `{"rtt_per_s", "p50_us", "p99_us"}`.
pub(crate) async fn client(m: Arc<Material>, stack: &str, o: Opts) -> io::Result<Value> {
    let port: u16 = o.num("port", 0);
    let size: usize = o.num("size", 100);
    let k: usize = o.num("inflight", 64);
    let scenario = o.str_or("scenario", "h1").to_owned();
    if scenario == "ws" {
        return ws_client(port, size, k, &o).await;
    }
    let tls = stack.ends_with("tls");
    let scheme = if tls { "https" } else { "http" };
    let uri: http::Uri = format!("{scheme}://127.0.0.1:{port}/")
        .parse()
        .map_err(err)?;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let h2 = scenario == "h2";
    let b = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*m.client_tls).clone())
        .https_or_http();
    let connector = if h2 {
        b.enable_http2().wrap_connector(http)
    } else {
        b.enable_http1().wrap_connector(http)
    };
    let mut builder =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
    builder.http2_only(h2).pool_max_idle_per_host(k);
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> = builder.build(connector);
    let body = Bytes::from(call_body(size, 1));
    let (client, uri, body) = (&client, &uri, &body);
    measure(k, &o, move || async move {
        let req = http::Request::post(uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .map_err(err)?;
        let resp = client.request(req).await.map_err(err)?;
        if resp.status() != 200 {
            return Err(err(format!("HTTP {}", resp.status())));
        }
        let bytes = resp.into_body().collect().await.map_err(err)?.to_bytes();
        let v: Value = serde_json::from_slice(&bytes).map_err(err)?;
        if v.get("code").is_some_and(|c| c != 200) {
            return Err(err(format!("answered {v}")));
        }
        Ok(())
    })
    .await
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>>;

/// One WebSocket connection, `k` callers, answers matched by correlationId.
async fn ws_client(port: u16, size: usize, k: usize, o: &Opts) -> io::Result<Value> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://127.0.0.1:{port}/"), tcp)
        .await
        .map_err(err)?;
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.feed(m).await.is_err() {
                return;
            }
            if rx.is_empty() && sink.flush().await.is_err() {
                return;
            }
        }
    });
    let waiters: Waiters = Arc::default();
    let w = waiters.clone();
    tokio::spawn(async move {
        while let Some(Ok(Message::Text(t))) = stream.next().await {
            let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                continue;
            };
            if let Some(id) = v.get("correlationId").and_then(Value::as_u64)
                && let Some(s) = w.lock().unwrap_or_else(|e| e.into_inner()).remove(&id)
            {
                let _ = s.send(());
            }
        }
    });
    let next = std::sync::atomic::AtomicU64::new(1);
    let (tx, waiters, next) = (&tx, &waiters, &next);
    measure(k, o, move || async move {
        let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (s, r) = oneshot::channel();
        waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, s);
        let text = String::from_utf8(call_body(size, id)).map_err(err)?;
        tx.send(Message::text(text)).map_err(err)?;
        r.await.map_err(|_| err("connection lost"))
    })
    .await
}

/// `jsonlink-bench gateway`: every (gateway, baseline) pair interleaved
/// over `--reps` repetitions (default 3); a markdown table of the medians
/// and the gateway / baseline ratios.
pub(crate) fn all(o: &Opts) -> Result<(), String> {
    let plan = Plan {
        reps: o.num("reps", 3),
        secs: o.num("secs", 2.0),
        warmup: o.num("warmup", 0.5),
        conns: Vec::new(),
        stacks: Vec::new(),
        launcher: Launcher::detect(o.num("nice", -10), o.num("fifo", 1)),
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = make_material_dir()?;
    let started = Instant::now();
    let load_start = loadavg();
    let spec = |stack: &'static str, scenario: &'static str| Spec {
        rt: "tokio",
        stack,
        mode: "plain",
        scenario,
        size: 100,
        inflight: 64,
        conns: 0,
    };
    // (row name, gateway spec, baseline spec)
    let rows = [
        ("HTTP/1.1 plain", spec("gw-http", "h1"), spec("axum", "h1")),
        ("HTTP/2 plain", spec("gw-http", "h2"), spec("axum", "h2")),
        (
            "HTTP/1.1 TLS",
            spec("gw-http-tls", "h1"),
            spec("axum-tls", "h1"),
        ),
        (
            "HTTP/2 TLS",
            spec("gw-http-tls", "h2"),
            spec("axum-tls", "h2"),
        ),
        ("WebSocket plain", spec("gw-ws", "ws"), spec("tung", "ws")),
    ];
    let mut runs = Runs::default();
    for rep in 0..plan.reps {
        for (_, g, b) in &rows {
            runs.run(&exe, &dir, g, &plan, rep);
            runs.run(&exe, &dir, b, &plan, rep);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let median = |s: &Spec, field: &str| runs.median(s, field);
    let mut md = String::from("# The gateways against bare axum and tokio-tungstenite echoes\n\n");
    let _ = writeln!(
        md,
        "`jsonlink-bench gateway` at `{}`; {} repetitions, {} s measured after {} s warm-up each; {}; \
         load average {} at the start, {} at the end; {:.0} s in all. One load generator for both \
         sides (hyper-util's client for HTTP, a tokio-tungstenite client for WebSocket), 64 calls in \
         flight, ~100 B arguments; server and client on tokio current-thread runtimes.\n",
        option_env!("JSONLINK_BENCH_COMMIT").unwrap_or("(this build)"),
        plan.reps,
        plan.secs,
        plan.warmup,
        plan.launcher.describe(),
        load_start,
        loadavg(),
        started.elapsed().as_secs_f64(),
    );
    md.push_str(
        "| transport | gateway calls/s | baseline calls/s | ratio (target ≥ 0.8×) | gateway p99 µs | baseline p99 µs |\n|---|---|---|---|---|---|\n",
    );
    for (name, g, b) in &rows {
        let f = |s: &Spec, field| median(s, field).map_or("–".to_owned(), |x| format!("{x:.0}"));
        let ratio = match (median(g, "rtt_per_s"), median(b, "rtt_per_s")) {
            (Some(a), Some(c)) if c > 0.0 => format!("**{:.2}×**", a / c),
            _ => "–".to_owned(),
        };
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {ratio} | {} | {} |",
            f(g, "rtt_per_s"),
            f(b, "rtt_per_s"),
            f(g, "p99_us"),
            f(b, "p99_us"),
        );
    }
    let _ = writeln!(
        md,
        "\nBaselines: HTTP rows a bare axum `Json<Value>` echo (same hyper-util connection builder, same TLS config), the WebSocket row a bare tokio-tungstenite echo of each text frame.\n\nEvery run (calls/s):\n"
    );
    runs.every_run(&mut md, rows.iter().flat_map(|(_, g, b)| [g, b]));
    runs.finish(&md, "gateway-latest.md")
}
