//! `all`: runs every scenario as a separate server process and client
//! process (pinned to different cores when `taskset` exists), interleaved
//! over several repetitions, and writes a markdown report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::launch::{Launcher, Runs};
use crate::opts::Opts;
use crate::report::{loadavg, report};
use crate::setup::{make_material_dir, raise_nofile};

/// One process pair to run.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) rt: &'static str,
    /// raw | core | api | tarpc
    pub(crate) stack: &'static str,
    /// plain | signed | signed-hmac | sealed | inline
    pub(crate) mode: &'static str,
    /// oneway | rr | handshake | idle
    pub(crate) scenario: &'static str,
    pub(crate) size: usize,
    pub(crate) inflight: usize,
    pub(crate) conns: usize,
}

impl Spec {
    /// The key its results are filed under, e.g. `tokio/api/plain/rr/100/64/0`.
    pub(crate) fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}/{}/{}/{}",
            self.rt, self.stack, self.mode, self.scenario, self.size, self.inflight, self.conns
        )
    }
}

/// What `all` runs, and how.
pub(crate) struct Plan {
    pub(crate) reps: usize,
    pub(crate) secs: f64,
    pub(crate) warmup: f64,
    /// Connection counts of the memory scenario.
    pub(crate) conns: Vec<usize>,
    /// The jsonlink stacks measured besides raw (and tarpc), the first the
    /// one the handshake, memory and target tables are about.
    pub(crate) stacks: Vec<&'static str>,
    pub(crate) launcher: Launcher,
}

/// The (stack, mode) pairs measured on one runtime, in the report's row
/// order: raw, tarpc where `with_tarpc`, then each of the plan's stacks in
/// each of its [`modes`].
pub(crate) fn rows(plan: &Plan, with_tarpc: bool) -> Vec<(&'static str, &'static str)> {
    let mut rows = vec![("raw", "plain")];
    if with_tarpc {
        rows.push(("tarpc", "plain"));
    }
    for &s in &plan.stacks {
        for &mode in modes(s) {
            rows.push((s, mode));
        }
    }
    rows
}

/// Modes measured per stack: the hand-written core loop is a reference
/// point, so only plain and signed (to bound the run time); the API also
/// with HMAC-SHA256 signing (`signed` negotiates the default, AES-256-GMAC)
/// and with requests answered by an inline handler (`inline`).
fn modes(stack: &str) -> &'static [&'static str] {
    if stack == "core" {
        &["plain", "signed"]
    } else {
        &["plain", "signed", "signed-hmac", "sealed", "inline"]
    }
}

/// Every run of one repetition: (throughput and latency runs, memory runs).
fn specs(plan: &Plan) -> (Vec<Spec>, Vec<Spec>) {
    let mut load = Vec::new();
    let mut mem = Vec::new();
    let base = Spec {
        rt: "tokio",
        stack: "raw",
        mode: "plain",
        scenario: "rr",
        size: 100,
        inflight: 1,
        conns: 0,
    };
    for rt in ["tokio", "smol"] {
        for (stack, mode) in rows(plan, false) {
            let s = Spec {
                rt,
                stack,
                mode,
                ..base.clone()
            };
            let run = |scenario, size, inflight| Spec {
                scenario,
                size,
                inflight,
                ..s.clone()
            };
            load.push(run("oneway", 100, 1));
            load.push(run("oneway", 64 * 1024, 1));
            load.push(run("rr", 100, 1));
            load.push(run("rr", 100, 64));
            if mode == "plain" {
                load.push(run("handshake", 100, 1));
                if stack == "raw" || stack == plan.stacks[0] {
                    for &conns in &plan.conns {
                        mem.push(Spec {
                            conns,
                            ..run("idle", 100, 1)
                        });
                    }
                }
            }
        }
        if rt == "tokio" {
            for inflight in [1, 64] {
                load.push(Spec {
                    rt,
                    stack: "tarpc",
                    inflight,
                    ..base.clone()
                });
            }
        }
    }
    (load, mem)
}

/// The orchestrator.
pub(crate) fn all(o: &Opts) -> Result<(), String> {
    if cfg!(debug_assertions) {
        // Unoptimized RustCrypto code is two orders of magnitude slower:
        // a debug build's figures mean nothing, and its sealed 64 KiB runs
        // outlast the client's time limit (a client seals for ~1.5 min).
        eprintln!(
            "warning: jsonlink-bench was built without optimizations; its figures are \
             meaningless and some runs will time out. Use `cargo run --release`."
        );
    }
    let quick = o.get("quick").is_some();
    let plan = Plan {
        reps: o.num("reps", if quick { 1 } else { 3 }),
        secs: o.num("secs", if quick { 0.25 } else { 0.8 }),
        warmup: o.num("warmup", if quick { 0.1 } else { 0.2 }),
        conns: if quick { vec![200] } else { vec![1000, 10_000] },
        stacks: vec!["api", "core"],
        launcher: Launcher::detect(o.num("nice", -10), o.num("fifo", 1)),
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = make_material_dir()?;
    raise_nofile();
    let started = Instant::now();
    let load_start = loadavg();
    let (mut load, mut mem) = specs(&plan);
    // `--only a,b`: keep the scenarios whose key (runtime/stack/mode/
    // scenario/size/inflight/conns) contains any of the comma-separated
    // parts, e.g. `--only tokio/api,tokio/raw`. The raw baselines of the
    // chosen runtimes stay in, so ratios can still be computed.
    if let Some(only) = o.get("only") {
        let parts: Vec<&str> = only.split(',').filter(|p| !p.is_empty()).collect();
        let keep = |s: &Spec| {
            let k = s.key();
            parts.iter().any(|p| k.contains(p))
                || (s.stack == "raw" && parts.iter().any(|p| p.starts_with(s.rt)))
        };
        load.retain(|s| keep(s));
        mem.retain(|s| keep(s));
    }
    let mut runs = Runs::default();
    for rep in 0..plan.reps {
        // The largest connection count takes longest and varies least: once.
        let mem_now = mem
            .iter()
            .filter(|m| rep == 0 || Some(&m.conns) != plan.conns.last());
        for spec in load.iter().chain(mem_now) {
            runs.run(&exe, &dir, spec, &plan, rep);
        }
    }
    let Runs { results, failures } = runs;
    let _ = std::fs::remove_dir_all(&dir);
    let md = report(
        &plan,
        &results,
        &failures,
        quick,
        started.elapsed(),
        &load_start,
    );
    println!("{md}");
    let out = results_path(quick);
    if let Some(p) = out.parent() {
        let _ = std::fs::create_dir_all(p);
    }
    std::fs::write(&out, &md).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!("wrote {}", out.display());
    // Runs that failed are functional breakage; timing never fails.
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} run(s) failed", failures.len()))
    }
}

/// Where the report goes: `results/latest.md` for a full run, which is
/// kept in the repository; `results/quick.md` (ignored by git) for a smoke
/// run, so that one never replaces the published figures.
fn results_path(quick: bool) -> PathBuf {
    let name = if quick {
        "results/quick.md"
    } else {
        "results/latest.md"
    };
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}
