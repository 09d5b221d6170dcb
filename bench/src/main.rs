//! `jsonlink-bench`: end-to-end benchmarks of jsonlink over TLS on
//! 127.0.0.1 against a raw-TLS baseline and tarpc, server and client in
//! separate processes.
//!
//! ```text
//! jsonlink-bench all [--quick] [--reps N] [--secs S] [--warmup S] [--nice N] [--fifo 0|1|2]
//!                    [--only tokio/api,smol/core,...]   (a subset; raw of those runtimes stays in)
//! jsonlink-bench procs [--reps N] [--secs S] [--warmup S] [--fifo 0|1|2]
//!                    (procedure calls over a link against plain requests)
//! jsonlink-bench gateway [--reps N] [--secs S] [--warmup S] [--fifo 0|1|2]
//!                    (the HTTP and WebSocket gateways against bare axum / tokio-tungstenite echoes)
//! jsonlink-bench certs            (writes certificates + secret to a temp dir, prints it)
//! jsonlink-bench server --rt tokio|smol --stack raw|api|core|tarpc|req|rpc --mode plain|signed|sealed --dir DIR
//! jsonlink-bench client --rt … --stack … --mode … --dir DIR --port P
//!                       --scenario oneway|rr|handshake|idle [--size B] [--inflight K]
//!                       [--conns N] [--secs S] [--warmup S]
//! ```
//!
//! `all` writes a markdown report to stdout and to `bench/results/latest.md`
//! (`bench/results/quick.md` with `--quick`, which git ignores).
//! See `BENCHMARKS.md` at the repository root.

mod api;
mod gateway;
mod launch;
mod load;
mod opts;
mod orchestrate;
mod procs;
mod protos;
mod report;
mod scenario;
mod setup;
mod tarpc_rr;

use std::process::ExitCode;
use std::sync::Arc;

use load::Stack;
use opts::Opts;
use setup::{Material, Mode, Rt};

fn run(args: &[String]) -> Result<(), String> {
    let (cmd, rest) = args.split_first().ok_or_else(usage)?;
    let o = Opts::parse(rest)?;
    match cmd.as_str() {
        "all" => orchestrate::all(&o),
        "procs" => procs::all(&o),
        "gateway" => gateway::all(&o),
        "certs" => {
            let dir = setup::make_material_dir()?;
            println!("{}", dir.display());
            Ok(())
        }
        "server" | "client" => {
            setup::raise_nofile();
            let rt = Rt::parse(o.str_or("rt", "tokio"))?;
            let mode = Mode::parse(o.str_or("mode", "plain"))?;
            let dir = o.get("dir").ok_or("--dir is required")?;
            // Handshakes are measured as full TLS 1.3 handshakes (no
            // resumption) for every stack.
            let resumption = o.get("scenario") != Some("handshake");
            let m = Arc::new(Material::load(std::path::Path::new(dir), resumption)?);
            let stack = o.str_or("stack", "raw").to_owned();
            let server = cmd == "server";
            if stack == "tarpc" {
                if rt != Rt::Tokio {
                    return Err("tarpc runs on tokio only".to_owned());
                }
                return rt.block_on(|_| async move {
                    if server {
                        tarpc_rr::server(m).await.map_err(|e| e.to_string())
                    } else {
                        let v = tarpc_rr::client(m, o).await.map_err(|e| e.to_string())?;
                        println!("{v}");
                        Ok(())
                    }
                });
            }
            if gateway::is_stack(&stack) {
                return rt.block_on(|_| async move {
                    if server {
                        gateway::server(m, &stack).await.map_err(|e| e.to_string())
                    } else {
                        let v = gateway::client(m, &stack, o)
                            .await
                            .map_err(|e| e.to_string())?;
                        println!("{v}");
                        Ok(())
                    }
                });
            }
            if stack == "api" || procs::is_stack(&stack) {
                return rt.block_on(|r| async move {
                    // The application runs as a spawned task, as it would in
                    // a server built on tokio: on a current-thread runtime,
                    // each wake of the `block_on` future by a link's driver
                    // costs an extra I/O poll (`epoll_wait`) per hand-off,
                    // which a spawned task does not (BENCHMARKS.md).
                    let (tx, rx) = async_channel::bounded(1);
                    let app = r.clone();
                    r.spawn(Box::pin(async move {
                        let out = match (server, stack.as_str()) {
                            (true, "api") => api::server(app, m, mode, &o).await.map(|()| None),
                            (false, "api") => api::client(app, m, mode, o).await.map(Some),
                            (true, s) => procs::server(app, m, s).await.map(|()| None),
                            (false, s) => procs::client(app, m, s, o).await.map(Some),
                        };
                        let _ = tx.send(out.map_err(|e| e.to_string())).await;
                    }));
                    match rx.recv().await {
                        Ok(Ok(Some(v))) => {
                            println!("{v}");
                            Ok(())
                        }
                        Ok(Ok(None)) => Ok(()),
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err("the benchmark task ended without a result".to_owned()),
                    }
                });
            }
            let stack = Stack::parse(&stack).ok_or_else(|| format!("unknown stack {stack:?}"))?;
            rt.block_on(|r| async move {
                if server {
                    load::server(r, m, stack, mode)
                        .await
                        .map_err(|e| e.to_string())
                } else {
                    let v = load::client(r, m, stack, mode, o)
                        .await
                        .map_err(|e| e.to_string())?;
                    println!("{v}");
                    Ok(())
                }
            })
        }
        _ => Err(usage()),
    }
}

fn usage() -> String {
    "usage: jsonlink-bench all [--quick] | server … | client … (see the crate docs)".to_owned()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jsonlink-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
