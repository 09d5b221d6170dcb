//! `all`: runs every scenario as a separate server process and client
//! process (pinned to different cores when `taskset` exists), interleaved
//! over several repetitions, and writes a markdown report.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Opts, make_material_dir, rss_kib};

/// One process pair to run.
#[derive(Debug, Clone)]
struct Spec {
    rt: &'static str,
    /// raw | core | api | tarpc
    stack: &'static str,
    /// plain | signed | sealed
    mode: &'static str,
    /// oneway | rr | handshake | idle
    scenario: &'static str,
    size: usize,
    inflight: usize,
    conns: usize,
}

impl Spec {
    fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}/{}/{}/{}",
            self.rt, self.stack, self.mode, self.scenario, self.size, self.inflight, self.conns
        )
    }
}

struct Plan {
    reps: usize,
    secs: f64,
    warmup: f64,
    conns: Vec<usize>,
    stacks: Vec<&'static str>,
    launcher: Launcher,
}

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
        let mut stacks: Vec<(&'static str, &'static str)> = vec![("raw", "plain")];
        for &s in &plan.stacks {
            for &mode in modes(s) {
                stacks.push((s, mode));
            }
        }
        for (stack, mode) in stacks {
            let s = Spec {
                rt,
                stack,
                mode,
                ..base.clone()
            };
            load.push(Spec {
                scenario: "oneway",
                size: 100,
                ..s.clone()
            });
            load.push(Spec {
                scenario: "oneway",
                size: 64 * 1024,
                ..s.clone()
            });
            load.push(Spec {
                scenario: "rr",
                inflight: 1,
                ..s.clone()
            });
            load.push(Spec {
                scenario: "rr",
                inflight: 64,
                ..s.clone()
            });
            if mode == "plain" {
                load.push(Spec {
                    scenario: "handshake",
                    ..s.clone()
                });
                for &n in plan
                    .conns
                    .iter()
                    .filter(|_| stack == "raw" || stack == plan.stacks[0])
                {
                    mem.push(Spec {
                        scenario: "idle",
                        conns: n,
                        ..s.clone()
                    });
                }
            }
        }
        if rt == "tokio" {
            for k in [1, 64] {
                load.push(Spec {
                    rt,
                    stack: "tarpc",
                    scenario: "rr",
                    inflight: k,
                    ..base.clone()
                });
            }
        }
    }
    (load, mem)
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

fn works(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// How benchmark processes are started: pinned to one core each with
/// `taskset` (client on CPU 0, server on CPU 1) and, where permitted, at a
/// raised priority (`nice -n -10`) so other work on the machine disturbs
/// them less. Both `nice` and `taskset` exec the program, so the child's pid
/// is the benchmark process itself.
///
/// The latency scenario (one request in flight) runs under `chrt -f 10`
/// (SCHED_FIFO) where permitted: its processes sleep between messages, and
/// on a machine shared with other work a sleeper woken on a busy CPU waits
/// up to a scheduler slice (milliseconds), which would measure the machine,
/// not the stack. It barely takes CPU from others since it mostly waits.
/// Throughput scenarios stay under `nice` by default (they are CPU-bound;
/// FIFO would leave other work on the machine 5% of the CPU); `--fifo 2`
/// runs them under SCHED_FIFO too, for a clean run on a shared machine.
#[derive(Debug, Clone, Copy)]
struct Launcher {
    taskset: bool,
    nice: Option<i32>,
    /// 0: never SCHED_FIFO; 1: the @1 latency runs; 2: every run.
    fifo: u8,
}

impl Launcher {
    fn detect(nice: i32, fifo: u8) -> Self {
        let n = nice.to_string();
        Self {
            taskset: works("taskset", &["-c", "0", "true"]),
            nice: (nice != 0 && works("nice", &["-n", &n, "true"])).then_some(nice),
            fifo: if works("chrt", &["-f", "10", "true"]) {
                fifo
            } else {
                0
            },
        }
    }

    fn command(self, core: usize, exe: &Path, latency: bool) -> Command {
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if self.fifo >= 2 || (latency && self.fifo == 1) {
            argv.extend(["chrt".into(), "-f".into(), "10".into()]);
        } else if let Some(n) = self.nice {
            argv.extend(["nice".into(), "-n".into(), n.to_string().into()]);
        }
        if self.taskset {
            argv.extend(["taskset".into(), "-c".into(), core.to_string().into()]);
        }
        argv.push(exe.into());
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    }
}

fn kill(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

/// Runs one server/client pair; returns the client's JSON (or the memory
/// figure for `idle`).
fn run_one(exe: &Path, dir: &Path, spec: &Spec, plan: &Plan) -> Result<Value, String> {
    let common = |c: &mut Command| {
        c.args(["--rt", spec.rt, "--stack", spec.stack, "--mode", spec.mode])
            .arg("--dir")
            .arg(dir);
    };
    let latency = spec.scenario == "rr" && spec.inflight == 1;
    let mut sc = plan.launcher.command(1, exe, latency);
    sc.arg("server");
    common(&mut sc);
    let mut server = sc
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn server: {e}"))?;
    let spid = server.id();
    let mut sout = BufReader::new(server.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    sout.read_line(&mut line).map_err(|e| e.to_string())?;
    let Some(port) = line.trim().strip_prefix("PORT ").map(str::to_owned) else {
        kill(server);
        return Err(format!("server said {line:?}"));
    };
    let rss0 = if spec.scenario == "idle" {
        std::thread::sleep(Duration::from_millis(200));
        rss_kib(spid)
    } else {
        None
    };

    let mut cc = plan.launcher.command(0, exe, latency);
    cc.arg("client");
    common(&mut cc);
    cc.args(["--port", &port, "--scenario", spec.scenario])
        .args(["--size", &spec.size.to_string()])
        .args(["--inflight", &spec.inflight.to_string()])
        .args(["--conns", &spec.conns.to_string()])
        .args(["--secs", &plan.secs.to_string()])
        .args(["--warmup", &plan.warmup.to_string()]);
    let mut client = cc
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn client: {e}"))?;
    let cout = client.stdout.take().ok_or("no stdout")?;
    let limit = Duration::from_secs_f64(60.0 + (plan.secs + plan.warmup) * 5.0);

    let result = if spec.scenario == "idle" {
        // Read READY with a watchdog.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(cout);
            let mut l = String::new();
            let _ = r.read_line(&mut l);
            let _ = tx.send(l);
        });
        match rx.recv_timeout(limit) {
            Ok(l) if l.starts_with("READY ") => {
                let n: f64 = l.trim()["READY ".len()..].parse().unwrap_or(0.0);
                std::thread::sleep(Duration::from_millis(500));
                let rss1 = rss_kib(spid);
                match (rss0, rss1) {
                    (Some(a), Some(b)) if n > 0.0 => Ok(serde_json::json!({
                        "kib_per_conn": (b as f64 - a as f64) / n,
                        "server_rss_kib": b,
                    })),
                    _ => Err("could not read RSS".to_owned()),
                }
            }
            Ok(l) => Err(format!("client said {l:?}")),
            Err(_) => Err("client timed out".to_owned()),
        }
    } else {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(cout).read_to_string(&mut s);
            let _ = tx.send(s);
        });
        match rx.recv_timeout(limit) {
            Ok(s) => s
                .lines()
                .rev()
                .find_map(|l| serde_json::from_str::<Value>(l).ok())
                .ok_or_else(|| format!("client printed no result: {s:?}")),
            Err(_) => Err("client timed out".to_owned()),
        }
    };
    kill(client);
    kill(server);
    result
}

/// Median, min and max of the values of `field` over runs.
#[derive(Debug, Clone, Copy)]
struct Fig {
    med: f64,
    min: f64,
    max: f64,
}

fn fig(runs: Option<&Vec<Value>>, field: &str) -> Option<Fig> {
    let mut v: Vec<f64> = runs?.iter().filter_map(|r| r[field].as_f64()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Fig {
        med,
        min: v[0],
        max: v[n - 1],
    })
}

fn human(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn cell(f: Option<Fig>, base: Option<Fig>) -> String {
    let Some(f) = f else {
        return "–".to_owned();
    };
    let spread = if f.med > 0.0 {
        (f.max - f.min) / 2.0 / f.med * 100.0
    } else {
        0.0
    };
    let mut s = format!("{} ±{spread:.0}%", human(f.med));
    if let Some(b) = base
        && b.med > 0.0
    {
        let _ = write!(s, " (**{:.2}×**)", f.med / b.med);
    }
    s
}

fn ratio(a: Option<Fig>, b: Option<Fig>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b.med > 0.0 => Some(a.med / b.med),
        _ => None,
    }
}

fn machine() -> String {
    let sh = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    format!(
        "{} × {model}; kernel {}; {}",
        sh("nproc", &[]),
        sh("uname", &["-r"]),
        sh("rustc", &["--version"]),
    )
}

fn launch_note(l: Launcher) -> String {
    let pin = if l.taskset {
        "client pinned to CPU 0, server to CPU 1 (taskset)"
    } else {
        "not pinned (no taskset)"
    };
    let mut s = pin.to_owned();
    if let Some(n) = l.nice {
        let _ = write!(s, "; nice {n}");
    }
    match l.fifo {
        1 => s.push_str("; the @1 latency runs under SCHED_FIFO (chrt -f 10)"),
        2 => s.push_str("; every run under SCHED_FIFO (chrt -f 10)"),
        _ => {}
    }
    s
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
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
    let api = crate::api_available();
    let mut stacks = vec!["core"];
    if api {
        stacks.insert(0, "api");
    }
    let plan = Plan {
        reps: o.num("reps", if quick { 1 } else { 3 }),
        secs: o.num("secs", if quick { 0.25 } else { 0.8 }),
        warmup: o.num("warmup", if quick { 0.1 } else { 0.2 }),
        conns: if quick { vec![200] } else { vec![1000, 10_000] },
        stacks,
        launcher: Launcher::detect(o.num("nice", -10), o.num("fifo", 1)),
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = make_material_dir()?;
    crate::common::raise_nofile();
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
    let mut results: HashMap<String, Vec<Value>> = HashMap::new();
    let mut failures = Vec::new();
    for rep in 0..plan.reps {
        // The largest connection count takes longest and varies least: once.
        let mem_now = mem
            .iter()
            .filter(|m| rep == 0 || Some(&m.conns) != plan.conns.last());
        for spec in load.iter().chain(mem_now) {
            match run_one(&exe, &dir, spec, &plan) {
                Ok(v) => {
                    eprintln!("[rep {rep}] {} {v}", spec.key());
                    results.entry(spec.key()).or_default().push(v);
                }
                Err(e) => {
                    eprintln!("[rep {rep}] {} FAILED: {e}", spec.key());
                    failures.push(format!("{}: {e}", spec.key()));
                }
            }
        }
    }
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

fn mode_label(mode: &str) -> &str {
    match mode {
        "signed" => "signed (GMAC)",
        "signed-hmac" => "signed (HMAC)",
        "inline" => "plain, inline handler",
        m => m,
    }
}

fn label(stack: &str, mode: &str) -> String {
    match stack {
        "raw" => "raw TLS + NDJSON (baseline)".to_owned(),
        "tarpc" => "tarpc serde-json".to_owned(),
        "api" => format!("jsonlink, {}", mode_label(mode)),
        "core" => format!("jsonlink core loop, {}", mode_label(mode)),
        _ => format!("{stack} {mode}"),
    }
}

fn report(
    plan: &Plan,
    r: &HashMap<String, Vec<Value>>,
    failures: &[String],
    quick: bool,
    took: Duration,
    load_start: &str,
) -> String {
    let get = |rt: &'static str,
               stack: &'static str,
               mode: &'static str,
               scenario: &'static str,
               size: usize,
               inflight: usize,
               conns: usize,
               field: &str| {
        let s = Spec {
            rt,
            stack,
            mode,
            scenario,
            size,
            inflight,
            conns,
        };
        fig(r.get(&s.key()), field)
    };
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# jsonlink-bench results{}\n",
        if quick { " (quick smoke run)" } else { "" }
    );
    let _ = writeln!(
        md,
        "- machine: {}\n- load average before / after: {load_start} / {}\n- processes: {}\n- repetitions: {} interleaved; {} s measured after {} s warm-up per figure; took {:.0} s\n- each cell: median ±half the min–max spread over the repetitions, (**ratio**) to raw TLS on the same runtime\n",
        machine(),
        loadavg(),
        launch_note(plan.launcher),
        plan.reps,
        plan.secs,
        plan.warmup,
        took.as_secs_f64()
    );

    let _ = writeln!(
        md,
        "## Throughput and latency (messages ~100 B unless noted)\n"
    );
    let _ = writeln!(
        md,
        "| runtime | stack | one-way msg/s | req/resp /s @1 | req/resp /s @64 | p50 µs @1 | p99 µs @1 | p99.9 µs @1 | MB/s one-way 64 KiB |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    for rt in ["tokio", "smol"] {
        let mut rows: Vec<(&'static str, &'static str)> = vec![("raw", "plain")];
        if rt == "tokio" {
            rows.push(("tarpc", "plain"));
        }
        for &s in &plan.stacks {
            for &m in modes(s) {
                rows.push((s, m));
            }
        }
        for (stack, mode) in rows {
            let base = |sc, size, k, f: &str| {
                if stack == "raw" {
                    None
                } else {
                    get(rt, "raw", "plain", sc, size, k, 0, f)
                }
            };
            let c = |sc, size, k, f: &str| {
                cell(
                    get(rt, stack, mode, sc, size, k, 0, f),
                    base(sc, size, k, f),
                )
            };
            let _ = writeln!(
                md,
                "| {rt} | {} | {} | {} | {} | {} | {} | {} | {} |",
                label(stack, mode),
                c("oneway", 100, 1, "msgs_per_s"),
                c("rr", 100, 1, "rtt_per_s"),
                c("rr", 100, 64, "rtt_per_s"),
                c("rr", 100, 1, "p50_us"),
                c("rr", 100, 1, "p99_us"),
                c("rr", 100, 1, "p999_us"),
                c("oneway", 65536, 1, "mb_per_s"),
            );
        }
    }

    let _ = writeln!(md, "\n## Handshakes per second (8 concurrent connectors)\n");
    let _ = writeln!(md, "| runtime | TLS alone | TLS + jsonlink auth | ratio |");
    let _ = writeln!(md, "|---|---|---|---|");
    let jl = plan.stacks[0];
    for rt in ["tokio", "smol"] {
        let a = get(rt, "raw", "plain", "handshake", 100, 1, 0, "hs_per_s");
        let b = get(rt, jl, "plain", "handshake", 100, 1, 0, "hs_per_s");
        let _ = writeln!(
            md,
            "| {rt} | {} | {} | {} |",
            cell(a, None),
            cell(b, None),
            ratio(b, a).map_or("–".to_owned(), |x| format!("{x:.2}×"))
        );
    }

    let _ = writeln!(
        md,
        "\n## Resident memory per idle connection (server process)\n"
    );
    let _ = writeln!(
        md,
        "| runtime | connections | raw TLS KiB/conn | jsonlink ({}) KiB/conn | ratio |",
        label(jl, "plain")
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for rt in ["tokio", "smol"] {
        for &n in &plan.conns {
            let a = get(rt, "raw", "plain", "idle", 100, 1, n, "kib_per_conn");
            let b = get(rt, jl, "plain", "idle", 100, 1, n, "kib_per_conn");
            let _ = writeln!(
                md,
                "| {rt} | {n} | {} | {} | {} |",
                cell(a, None),
                cell(b, None),
                ratio(b, a).map_or("–".to_owned(), |x| format!("{x:.2}×"))
            );
        }
    }

    // Targets.
    let _ = writeln!(
        md,
        "\n## Targets ({}, signing and encryption off unless noted)\n",
        label(jl, "…")
    );
    let _ = writeln!(md, "| target | tokio | smol |");
    let _ = writeln!(md, "|---|---|---|");
    let mark = |x: Option<f64>, ok: &dyn Fn(f64) -> bool| match x {
        Some(x) => format!("{x:.2} {}", if ok(x) { "✅" } else { "❌" }),
        None => "–".to_owned(),
    };
    let big = *plan.conns.last().unwrap_or(&0);
    type Row<'a> = (
        &'a str,
        Box<dyn Fn(&'static str) -> Option<f64> + 'a>,
        Box<dyn Fn(f64) -> bool>,
    );
    // jsonlink in `mode` against raw (plain), 100 B bodies, one connection.
    let vs_raw = |rt, mode, scenario, inflight, field| {
        ratio(
            get(rt, jl, mode, scenario, 100, inflight, 0, field),
            get(rt, "raw", "plain", scenario, 100, inflight, 0, field),
        )
    };
    let rows: Vec<Row<'_>> = vec![
        (
            "one-way msg/s ≥ 0.8× raw",
            Box::new(move |rt| vs_raw(rt, "plain", "oneway", 1, "msgs_per_s")),
            Box::new(|x| x >= 0.8),
        ),
        (
            "req/resp @64 ≥ 0.7× raw",
            Box::new(move |rt| vs_raw(rt, "plain", "rr", 64, "rtt_per_s")),
            Box::new(|x| x >= 0.7),
        ),
        (
            "p99 @1 ≤ 1.3× raw",
            Box::new(move |rt| vs_raw(rt, "plain", "rr", 1, "p99_us")),
            Box::new(|x| x <= 1.3),
        ),
        (
            "req/resp @64 ≥ 0.7× raw, inline handler",
            Box::new(move |rt| vs_raw(rt, "inline", "rr", 64, "rtt_per_s")),
            Box::new(|x| x >= 0.7),
        ),
        (
            "p99 @1 ≤ 1.3× raw, inline handler",
            Box::new(move |rt| vs_raw(rt, "inline", "rr", 1, "p99_us")),
            Box::new(|x| x <= 1.3),
        ),
        (
            "memory per idle connection ≤ 1.3× raw (largest count)",
            Box::new(move |rt| {
                ratio(
                    get(rt, jl, "plain", "idle", 100, 1, big, "kib_per_conn"),
                    get(rt, "raw", "plain", "idle", 100, 1, big, "kib_per_conn"),
                )
            }),
            Box::new(|x| x <= 1.3),
        ),
        (
            "req/resp @64 ahead of tarpc (ratio to tarpc > 1)",
            Box::new(|rt| {
                ratio(
                    get(rt, jl, "plain", "rr", 100, 64, 0, "rtt_per_s"),
                    get("tokio", "tarpc", "plain", "rr", 100, 64, 0, "rtt_per_s"),
                )
            }),
            Box::new(|x| x > 1.0),
        ),
        (
            "req/resp @1 ahead of tarpc (ratio to tarpc > 1)",
            Box::new(|rt| {
                ratio(
                    get(rt, jl, "plain", "rr", 100, 1, 0, "rtt_per_s"),
                    get("tokio", "tarpc", "plain", "rr", 100, 1, 0, "rtt_per_s"),
                )
            }),
            Box::new(|x| x > 1.0),
        ),
        (
            "signing on: one-way msg/s ≥ 0.75× signing off",
            Box::new(|rt| {
                ratio(
                    get(rt, jl, "signed", "oneway", 100, 1, 0, "msgs_per_s"),
                    get(rt, jl, "plain", "oneway", 100, 1, 0, "msgs_per_s"),
                )
            }),
            Box::new(|x| x >= 0.75),
        ),
        (
            "signing on: req/resp @64 ≥ 0.75× signing off",
            Box::new(|rt| {
                ratio(
                    get(rt, jl, "signed", "rr", 100, 64, 0, "rtt_per_s"),
                    get(rt, jl, "plain", "rr", 100, 64, 0, "rtt_per_s"),
                )
            }),
            Box::new(|x| x >= 0.75),
        ),
        (
            "signing on: MB/s 64 KiB ≥ 0.75× signing off",
            Box::new(|rt| {
                ratio(
                    get(rt, jl, "signed", "oneway", 65536, 1, 0, "mb_per_s"),
                    get(rt, jl, "plain", "oneway", 65536, 1, 0, "mb_per_s"),
                )
            }),
            Box::new(|x| x >= 0.75),
        ),
    ];
    for (name, f, ok) in &rows {
        let _ = writeln!(
            md,
            "| {name} | {} | {} |",
            mark(f("tokio"), ok),
            mark(f("smol"), ok)
        );
    }
    if !failures.is_empty() {
        let _ = writeln!(md, "\n## Failed runs\n");
        for f in failures {
            let _ = writeln!(md, "- {f}");
        }
    }
    md
}
