//! `procs`: procedure calls over a jsonlink link (jsonlink-rpc's `rpc.call`
//! through an `RpcClient` with its `LinkTransport`) against plain jsonlink
//! requests to a typed handler (`Handlers::handle_request` + `Client::call`),
//! both echoing ~100 B of arguments (`{"seq":1,"data":"xxx…"}`) as a
//! `serde_json::Value`, 1 and 64 calls in flight, tokio, plain mode.
//!
//! Stacks: `req` (plain requests) and `rpc` (procedure calls); the server
//! and client processes are the same binary as every other scenario,
//! pinned and prioritised by the same [`Launcher`](crate::launch::Launcher).
//! `jsonlink-bench procs [--reps N] [--secs S] [--warmup S] [--fifo 0|1|2]`
//! writes `bench/results/procs-latest.md`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use jsonlink_rpc::{CallRequest, LinkTransport, Procedure, Registry, RpcClient, RpcError};
use jsonlink_rt::{Client, Runtime, Server};
use serde_json::{Value, json};

use crate::launch::{Launcher, run_one};
use crate::opts::Opts;
use crate::orchestrate::{Plan, Spec};
use crate::report::loadavg;
use crate::scenario::{add_up, round_trips, rr_result, secs_since};
use crate::setup::{Material, identity, make_material_dir, server_name};

/// Whether `stack` is one of this module's.
pub(crate) fn is_stack(stack: &str) -> bool {
    matches!(stack, "req" | "rpc")
}

fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The arguments every call sends: an object of about `len` bytes.
fn args(len: usize) -> Value {
    let head = r#"{"seq":1,"data":""}"#.len();
    json!({"seq": 1, "data": "x".repeat(len.saturating_sub(head))})
}

/// The server process: an echo as a typed request handler (`req`) or as a
/// procedure served over `rpc.call` (`rpc`).
pub(crate) async fn server(rt: Arc<dyn Runtime>, m: Arc<Material>, stack: &str) -> io::Result<()> {
    let server = Server::builder(
        rt.clone(),
        m.server_tls.clone(),
        m.secret.clone(),
        identity(true),
    )
    .max_connections(1000)
    .bind(([127, 0, 0, 1], 0).into())
    .await
    .map_err(err)?;
    if stack == "rpc" {
        let registry = Registry::builder()
            .procedure(Procedure::new("echo"), |_cx, v: Value| async move {
                Ok::<_, RpcError>(v)
            })
            .build()
            .map_err(err)?;
        jsonlink_rpc::serve(server.handlers(), registry, rt.clone(), Default::default());
    } else {
        server
            .handlers()
            .handle_request("echo", |_link, v: Value| async move { Ok(v) });
    }
    println!("PORT {}", server.local_addr().port());
    // Serve until killed.
    std::future::pending::<()>().await;
    Ok(())
}

/// The client process: `--inflight` concurrent callers for the warm-up,
/// then for the measured time.
pub(crate) async fn client(
    rt: Arc<dyn Runtime>,
    m: Arc<Material>,
    stack: &str,
    o: Opts,
) -> io::Result<Value> {
    let port: u16 = o.num("port", 0);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let size: usize = o.num("size", 100);
    let k: usize = o.num("inflight", 1);
    let client = Client::builder(
        rt,
        addr,
        m.client_tls.clone(),
        server_name(),
        m.secret.clone(),
        identity(false),
    )
    .events(false)
    .connect()
    .await
    .map_err(err)?;
    let a = args(size);
    let rpc = RpcClient::new(vec![Arc::new(LinkTransport::client(client.clone()))]);
    let run = |dur: Duration| {
        let (client, rpc, a) = (&client, &rpc, &a);
        async move {
            let t0 = Instant::now();
            let end = t0 + dur;
            let callers = (0..k).map(|_| {
                round_trips(k, end, move || async move {
                    if stack == "rpc" {
                        let r = rpc
                            .call(CallRequest::new("echo", a.clone()))
                            .await
                            .map_err(err)?;
                        if r.code != 200 {
                            return Err(err(format!("answered {}", r.code)));
                        }
                    } else {
                        let _: Value = client.call("echo", a).await.map_err(err)?;
                    }
                    Ok(())
                })
            });
            let (n, lat) = add_up(join_all(callers).await)?;
            Ok::<_, io::Error>((n, secs_since(t0), lat))
        }
    };
    run(o.warmup()).await?;
    let (n, secs, lat) = run(o.measured()).await?;
    Ok(rr_result(n, secs, k, lat))
}

/// `jsonlink-bench procs`: `req` and `rpc` at 1 and 64 in flight,
/// interleaved over `--reps` repetitions (default 5); a markdown table of
/// the medians and the rpc / req ratios.
pub(crate) fn all(o: &Opts) -> Result<(), String> {
    let plan = Plan {
        reps: o.num("reps", 5),
        secs: o.num("secs", 0.8),
        warmup: o.num("warmup", 0.2),
        conns: Vec::new(),
        stacks: Vec::new(),
        launcher: Launcher::detect(o.num("nice", -10), o.num("fifo", 1)),
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = make_material_dir()?;
    let started = Instant::now();
    let load_start = loadavg();
    let spec = |stack: &'static str, inflight: usize| Spec {
        rt: "tokio",
        stack,
        mode: "plain",
        scenario: "rr",
        size: 100,
        inflight,
        conns: 0,
    };
    let specs = [
        spec("req", 1),
        spec("rpc", 1),
        spec("req", 64),
        spec("rpc", 64),
    ];
    let mut results: HashMap<String, Vec<Value>> = HashMap::new();
    let mut failures = Vec::new();
    for rep in 0..plan.reps {
        for s in &specs {
            match run_one(&exe, &dir, s, &plan) {
                Ok(v) => {
                    eprintln!("[rep {rep}] {} {v}", s.key());
                    results.entry(s.key()).or_default().push(v);
                }
                Err(e) => {
                    eprintln!("[rep {rep}] {} FAILED: {e}", s.key());
                    failures.push(format!("{}: {e}", s.key()));
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let median = |stack: &str, k: usize, field: &str| -> Option<f64> {
        let mut v: Vec<f64> = results
            .get(&spec(if stack == "rpc" { "rpc" } else { "req" }, k).key())?
            .iter()
            .filter_map(|r| r[field].as_f64())
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let mut md = String::from("# Procedure calls over a jsonlink link against plain requests\n\n");
    let _ = writeln!(
        md,
        "`jsonlink-bench procs` at `{}`; {} repetitions, {} s measured after {} s warm-up each; {}; \
         load average {} at the start, {} at the end; {:.0} s in all. tokio, plain mode, ~100 B \
         arguments echoed as a `serde_json::Value`.\n",
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
        "| stack | calls/s @1 | p50 µs @1 | p99 µs @1 | calls/s @64 |\n|---|---|---|---|---|\n",
    );
    for (name, stack) in [
        (
            "plain jsonlink requests (`handle_request` + `Client::call`)",
            "req",
        ),
        (
            "procedures (`rpc.call`, `RpcClient` + `LinkTransport`)",
            "rpc",
        ),
    ] {
        let f = |k, field| median(stack, k, field).map_or("–".to_owned(), |x| format!("{x:.1}"));
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} |",
            f(1, "rtt_per_s"),
            f(1, "p50_us"),
            f(1, "p99_us"),
            f(64, "rtt_per_s")
        );
    }
    let ratio = |k, field| match (median("rpc", k, field), median("req", k, field)) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".to_owned(),
    };
    let _ = writeln!(
        md,
        "\nrpc / req (target ≥ 0.9× in calls/s): @1 **{}**, @64 **{}**; p99 @1 {}.",
        ratio(1, "rtt_per_s"),
        ratio(64, "rtt_per_s"),
        ratio(1, "p99_us")
    );
    let _ = writeln!(md, "\nEvery run (calls/s):\n");
    for s in &specs {
        let runs: Vec<String> = results
            .get(&s.key())
            .map(|v| {
                v.iter()
                    .map(|r| format!("{:.0}", r["rtt_per_s"].as_f64().unwrap_or(0.0)))
                    .collect()
            })
            .unwrap_or_default();
        let _ = writeln!(md, "- `{}`: {}", s.key(), runs.join(", "));
    }
    for f in &failures {
        let _ = writeln!(md, "- FAILED {f}");
    }
    println!("{md}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("results/procs-latest.md");
    std::fs::write(&out, &md).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!("wrote {}", out.display());
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} run(s) failed", failures.len()))
    }
}
