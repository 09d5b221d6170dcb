//! The markdown report of `all`: the throughput and latency table, the
//! handshake and memory tables, and the targets.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::orchestrate::{Plan, Spec, rows};

/// Median, min and max of the values of one field over runs.
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

/// Which figure: a scenario of one stack in one mode, and the field of its
/// results (the runtime is given when it is looked up). The constructors
/// give the raw baseline's figure; [`of`](Self::of) another stack's.
#[derive(Debug, Clone, Copy)]
struct Sel {
    stack: &'static str,
    mode: &'static str,
    scenario: &'static str,
    size: usize,
    inflight: usize,
    conns: usize,
    field: &'static str,
}

impl Sel {
    /// One-way messages per second, ~100 B bodies.
    const fn oneway() -> Self {
        Self::new("oneway", 100, 1, "msgs_per_s")
    }

    /// One-way MB/s of 64 KiB bodies.
    const fn mb_64k() -> Self {
        Self::new("oneway", 65536, 1, "mb_per_s")
    }

    /// Round trips per second with `inflight` requests in flight.
    const fn rr(inflight: usize) -> Self {
        Self::new("rr", 100, inflight, "rtt_per_s")
    }

    /// A latency percentile (`p50_us`, `p99_us`, `p999_us`) at 1 in flight.
    const fn latency(field: &'static str) -> Self {
        Self::new("rr", 100, 1, field)
    }

    /// Handshakes per second.
    const fn handshakes() -> Self {
        Self::new("handshake", 100, 1, "hs_per_s")
    }

    /// Resident KiB per idle connection with `conns` connections.
    const fn idle(conns: usize) -> Self {
        Self {
            conns,
            ..Self::new("idle", 100, 1, "kib_per_conn")
        }
    }

    const fn new(
        scenario: &'static str,
        size: usize,
        inflight: usize,
        field: &'static str,
    ) -> Self {
        Self {
            stack: "raw",
            mode: "plain",
            scenario,
            size,
            inflight,
            conns: 0,
            field,
        }
    }

    /// The runs of this figure on `rt`.
    const fn spec(self, rt: &'static str) -> Spec {
        Spec {
            rt,
            stack: self.stack,
            mode: self.mode,
            scenario: self.scenario,
            size: self.size,
            inflight: self.inflight,
            conns: self.conns,
        }
    }

    /// The same figure of another stack and mode.
    const fn of(self, stack: &'static str, mode: &'static str) -> Self {
        Self {
            stack,
            mode,
            ..self
        }
    }
}

/// The runs' results by [`Spec::key`].
struct Results<'a>(&'a HashMap<String, Vec<Value>>);

impl Results<'_> {
    /// The figure `s` on runtime `rt` (tarpc's on tokio, the only one it
    /// runs on).
    fn get(&self, rt: &'static str, s: Sel) -> Option<Fig> {
        let rt = if s.stack == "tarpc" { "tokio" } else { rt };
        fig(self.0.get(&s.spec(rt).key()), s.field)
    }
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

/// The load average over 1, 5 and 15 minutes.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
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

/// The report of a run of `all`.
pub(crate) fn report(
    plan: &Plan,
    r: &HashMap<String, Vec<Value>>,
    failures: &[String],
    quick: bool,
    took: Duration,
    load_start: &str,
) -> String {
    let r = Results(r);
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
        plan.launcher.describe(),
        plan.reps,
        plan.secs,
        plan.warmup,
        took.as_secs_f64()
    );
    throughput_table(&mut md, plan, &r);
    let jl = plan.stacks[0];
    handshake_table(&mut md, &r, jl);
    memory_table(&mut md, plan, &r, jl);
    targets_table(&mut md, plan, &r, jl);
    if !failures.is_empty() {
        let _ = writeln!(md, "\n## Failed runs\n");
        for f in failures {
            let _ = writeln!(md, "- {f}");
        }
    }
    md
}

fn throughput_table(md: &mut String, plan: &Plan, r: &Results<'_>) {
    let _ = writeln!(
        md,
        "## Throughput and latency (messages ~100 B unless noted)\n"
    );
    let _ = writeln!(
        md,
        "| runtime | stack | one-way msg/s | req/resp /s @1 | req/resp /s @64 | p50 µs @1 | p99 µs @1 | p99.9 µs @1 | MB/s one-way 64 KiB |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    // Each column as the raw baseline's figure, which is also what a
    // jsonlink row's ratio is taken against.
    let columns = [
        Sel::oneway(),
        Sel::rr(1),
        Sel::rr(64),
        Sel::latency("p50_us"),
        Sel::latency("p99_us"),
        Sel::latency("p999_us"),
        Sel::mb_64k(),
    ];
    for rt in ["tokio", "smol"] {
        for (stack, mode) in rows(plan, rt == "tokio") {
            let _ = write!(md, "| {rt} | {} |", label(stack, mode));
            for base in columns {
                let base_fig = if stack == "raw" {
                    None
                } else {
                    r.get(rt, base)
                };
                let _ = write!(md, " {} |", cell(r.get(rt, base.of(stack, mode)), base_fig));
            }
            md.push('\n');
        }
    }
}

fn handshake_table(md: &mut String, r: &Results<'_>, jl: &'static str) {
    let _ = writeln!(md, "\n## Handshakes per second (8 concurrent connectors)\n");
    let _ = writeln!(md, "| runtime | TLS alone | TLS + jsonlink auth | ratio |");
    let _ = writeln!(md, "|---|---|---|---|");
    for rt in ["tokio", "smol"] {
        let cells = raw_then_ours(r, rt, Sel::handshakes(), jl);
        let _ = writeln!(md, "| {rt} | {cells} |");
    }
}

fn memory_table(md: &mut String, plan: &Plan, r: &Results<'_>, jl: &'static str) {
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
            let cells = raw_then_ours(r, rt, Sel::idle(n), jl);
            let _ = writeln!(md, "| {rt} | {n} | {cells} |");
        }
    }
}

/// Three cells: figure `s` of raw, of jsonlink stack `jl` (plain), and
/// the ratio of the second to the first.
fn raw_then_ours(r: &Results<'_>, rt: &'static str, s: Sel, jl: &'static str) -> String {
    let (raw, ours) = (r.get(rt, s), r.get(rt, s.of(jl, "plain")));
    let ratio = ratio(ours, raw).map_or("–".to_owned(), |x| format!("{x:.2}×"));
    format!("{} | {} | {ratio}", cell(raw, None), cell(ours, None))
}

/// One target: the ratio of figure `of` to figure `against` on the same
/// runtime, and the test it must pass.
struct Target {
    name: &'static str,
    of: Sel,
    against: Sel,
    test: Test,
}

/// What a target's ratio must be.
#[derive(Clone, Copy)]
enum Test {
    AtLeast(f64),
    AtMost(f64),
    Above(f64),
}

impl Test {
    fn passes(self, x: f64) -> bool {
        match self {
            Self::AtLeast(b) => x >= b,
            Self::AtMost(b) => x <= b,
            Self::Above(b) => x > b,
        }
    }
}

/// The targets for jsonlink stack `jl`; `big` is the largest connection
/// count of the memory runs. Figures without a stack are raw's.
fn targets(jl: &'static str, big: usize) -> Vec<Target> {
    use Test::{Above, AtLeast, AtMost};
    let t = |name, of, against, test| Target {
        name,
        of,
        against,
        test,
    };
    let (oneway, mb, rr_1, rr_64) = (Sel::oneway(), Sel::mb_64k(), Sel::rr(1), Sel::rr(64));
    let (p99, idle) = (Sel::latency("p99_us"), Sel::idle(big));
    let ours = |s: Sel| s.of(jl, "plain");
    let inline = |s: Sel| s.of(jl, "inline");
    let signed = |s: Sel| s.of(jl, "signed");
    let tarpc = |s: Sel| s.of("tarpc", "plain");
    #[rustfmt::skip]
    let targets = vec![
        t("one-way msg/s ≥ 0.8× raw", ours(oneway), oneway, AtLeast(0.8)),
        t("req/resp @64 ≥ 0.7× raw", ours(rr_64), rr_64, AtLeast(0.7)),
        t("p99 @1 ≤ 1.3× raw", ours(p99), p99, AtMost(1.3)),
        t("req/resp @64 ≥ 0.7× raw, inline handler", inline(rr_64), rr_64, AtLeast(0.7)),
        t("p99 @1 ≤ 1.3× raw, inline handler", inline(p99), p99, AtMost(1.3)),
        t("memory per idle connection ≤ 1.3× raw (largest count)", ours(idle), idle, AtMost(1.3)),
        t("req/resp @64 ahead of tarpc (ratio to tarpc > 1)", ours(rr_64), tarpc(rr_64), Above(1.0)),
        t("req/resp @1 ahead of tarpc (ratio to tarpc > 1)", ours(rr_1), tarpc(rr_1), Above(1.0)),
        t("signing on: one-way msg/s ≥ 0.75× signing off", signed(oneway), ours(oneway), AtLeast(0.75)),
        t("signing on: req/resp @64 ≥ 0.75× signing off", signed(rr_64), ours(rr_64), AtLeast(0.75)),
        t("signing on: MB/s 64 KiB ≥ 0.75× signing off", signed(mb), ours(mb), AtLeast(0.75)),
    ];
    targets
}

fn targets_table(md: &mut String, plan: &Plan, r: &Results<'_>, jl: &'static str) {
    let _ = writeln!(
        md,
        "\n## Targets ({}, signing and encryption off unless noted)\n",
        label(jl, "…")
    );
    let _ = writeln!(md, "| target | tokio | smol |");
    let _ = writeln!(md, "|---|---|---|");
    let big = *plan.conns.last().unwrap_or(&0);
    for t in targets(jl, big) {
        let mark = |rt| match ratio(r.get(rt, t.of), r.get(rt, t.against)) {
            Some(x) => format!("{x:.2} {}", if t.test.passes(x) { "✅" } else { "❌" }),
            None => "–".to_owned(),
        };
        let _ = writeln!(md, "| {} | {} | {} |", t.name, mark("tokio"), mark("smol"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::Launcher;

    /// A plan of one repetition of the two jsonlink stacks, 200 idle
    /// connections.
    fn plan() -> Plan {
        Plan {
            reps: 1,
            secs: 0.25,
            warmup: 0.1,
            conns: vec![200],
            stacks: vec!["api", "core"],
            launcher: Launcher {
                taskset: false,
                nice: None,
                fifo: 0,
            },
        }
    }

    /// Runs in which `field` of figure `s` on tokio was each of `values`.
    fn runs(entries: &[(Sel, &[f64])]) -> HashMap<String, Vec<Value>> {
        let mut r = HashMap::new();
        for (s, values) in entries {
            let key = s.spec("tokio").key();
            let v: Vec<Value> = values
                .iter()
                .map(|x| serde_json::json!({ s.field: x }))
                .collect();
            r.insert(key, v);
        }
        r
    }

    fn report_of(r: &HashMap<String, Vec<Value>>) -> String {
        report(&plan(), r, &[], true, Duration::from_secs(1), "0 0 0")
    }

    #[test]
    fn a_cell_is_the_median_its_spread_and_its_ratio_to_raw() {
        let r = runs(&[
            (Sel::oneway(), &[1000.0, 1000.0, 1000.0]),
            (Sel::oneway().of("api", "plain"), &[800.0, 900.0, 1000.0]),
        ]);
        let md = report_of(&r);
        let row = md
            .lines()
            .find(|l| l.starts_with("| tokio | jsonlink, plain |"))
            .expect("the tokio API row");
        assert!(row.contains("| 900 ±11% (**0.90×**) |"), "{row}");
    }

    #[test]
    fn a_target_shows_its_ratio_and_whether_it_passes() {
        let r = runs(&[
            (Sel::oneway(), &[1000.0]),
            (Sel::oneway().of("api", "plain"), &[850.0]),
            (Sel::oneway().of("api", "signed"), &[500.0]),
        ]);
        let md = report_of(&r);
        assert!(
            md.contains("| one-way msg/s ≥ 0.8× raw | 0.85 ✅ | – |"),
            "{md}"
        );
        assert!(
            md.contains("| signing on: one-way msg/s ≥ 0.75× signing off | 0.59 ❌ | – |"),
            "{md}"
        );
    }

    #[test]
    fn a_figure_without_runs_is_a_dash_and_failed_runs_are_listed() {
        let md = report(
            &plan(),
            &HashMap::new(),
            &["tokio/api/plain/rr/100/1/0: crashed".to_owned()],
            true,
            Duration::from_secs(1),
            "0 0 0",
        );
        assert!(md.contains("| tokio | 200 | – | – | – |"), "{md}");
        assert!(
            md.ends_with("## Failed runs\n\n- tokio/api/plain/rr/100/1/0: crashed\n"),
            "{md}"
        );
    }
}
