//! Starting one measured server/client pair of processes ([`run_one`]) and
//! how they are started ([`Launcher`]: pinned, niced or under SCHED_FIFO).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::orchestrate::{Plan, Spec};

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
pub(crate) struct Launcher {
    pub(crate) taskset: bool,
    pub(crate) nice: Option<i32>,
    /// 0: never SCHED_FIFO; 1: the @1 latency runs; 2: every run.
    pub(crate) fifo: u8,
}

impl Launcher {
    /// What this machine permits of `nice` (0: none) and `fifo`.
    pub(crate) fn detect(nice: i32, fifo: u8) -> Self {
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

    /// How the processes ran, for the report.
    pub(crate) fn describe(self) -> String {
        let pin = if self.taskset {
            "client pinned to CPU 0, server to CPU 1 (taskset)"
        } else {
            "not pinned (no taskset)"
        };
        let mut s = pin.to_owned();
        if let Some(n) = self.nice {
            let _ = write!(s, "; nice {n}");
        }
        match self.fifo {
            1 => s.push_str("; the @1 latency runs under SCHED_FIFO (chrt -f 10)"),
            2 => s.push_str("; every run under SCHED_FIFO (chrt -f 10)"),
            _ => {}
        }
        s
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

fn kill(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

/// What a plan's repetitions gathered: each spec's results (by key, in
/// run order) and the failed runs.
#[derive(Default)]
pub(crate) struct Runs {
    pub(crate) results: HashMap<String, Vec<Value>>,
    pub(crate) failures: Vec<String>,
}

impl Runs {
    /// Runs `spec` once (repetition `rep`) and files its result or failure.
    pub(crate) fn run(&mut self, exe: &Path, dir: &Path, spec: &Spec, plan: &Plan, rep: usize) {
        match run_one(exe, dir, spec, plan) {
            Ok(v) => {
                eprintln!("[rep {rep}] {} {v}", spec.key());
                self.results.entry(spec.key()).or_default().push(v);
            }
            Err(e) => {
                eprintln!("[rep {rep}] {} FAILED: {e}", spec.key());
                self.failures.push(format!("{}: {e}", spec.key()));
            }
        }
    }

    /// The median of `field` over `spec`'s results.
    pub(crate) fn median(&self, spec: &Spec, field: &str) -> Option<f64> {
        let mut v: Vec<f64> = self
            .results
            .get(&spec.key())?
            .iter()
            .filter_map(|r| r[field].as_f64())
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    }

    /// Appends one line per spec with the calls/s of every run, then the
    /// failures.
    pub(crate) fn every_run<'a>(&self, md: &mut String, specs: impl IntoIterator<Item = &'a Spec>) {
        for s in specs {
            let runs: Vec<String> = self
                .results
                .get(&s.key())
                .map(|v| {
                    v.iter()
                        .map(|r| format!("{:.0}", r["rtt_per_s"].as_f64().unwrap_or(0.0)))
                        .collect()
                })
                .unwrap_or_default();
            let _ = writeln!(md, "- `{}`: {}", s.key(), runs.join(", "));
        }
        for f in &self.failures {
            let _ = writeln!(md, "- FAILED {f}");
        }
    }

    /// Prints the report, writes it to `bench/results/<name>`; `Err` if a
    /// run failed.
    pub(crate) fn finish(&self, md: &str, name: &str) -> Result<(), String> {
        println!("{md}");
        let out = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("results")
            .join(name);
        std::fs::write(&out, md).map_err(|e| format!("{}: {e}", out.display()))?;
        eprintln!("wrote {}", out.display());
        if self.failures.is_empty() {
            Ok(())
        } else {
            Err(format!("{} run(s) failed", self.failures.len()))
        }
    }
}

/// Runs one server/client pair; returns the client's JSON (or the memory
/// figure for `idle`).
pub(crate) fn run_one(exe: &Path, dir: &Path, spec: &Spec, plan: &Plan) -> Result<Value, String> {
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
        let first_line = |mut r: BufReader<ChildStdout>| {
            let mut l = String::new();
            let _ = r.read_line(&mut l);
            l
        };
        match read_within(cout, limit, first_line) {
            Some(l) if l.starts_with("READY ") => {
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
            Some(l) => Err(format!("client said {l:?}")),
            None => Err("client timed out".to_owned()),
        }
    } else {
        let everything = |mut r: BufReader<ChildStdout>| {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        };
        match read_within(cout, limit, everything) {
            Some(s) => s
                .lines()
                .rev()
                .find_map(|l| serde_json::from_str::<Value>(l).ok())
                .ok_or_else(|| format!("client printed no result: {s:?}")),
            None => Err("client timed out".to_owned()),
        }
    };
    kill(client);
    kill(server);
    result
}

/// What `read` reads from `out` on a thread of its own, if it is done
/// within `limit` (a watchdog on a client that hangs).
fn read_within(
    out: ChildStdout,
    limit: Duration,
    read: impl FnOnce(BufReader<ChildStdout>) -> String + Send + 'static,
) -> Option<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(read(BufReader::new(out)));
    });
    rx.recv_timeout(limit).ok()
}

/// Reads a process's resident set size in KiB from `/proc/<pid>/status`.
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
