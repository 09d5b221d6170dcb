//! Checks the fault table: every case of `tests/faults/expected.md` must
//! have recorded exactly its expected outcome during the test run.
//!
//! Usage: `fault-table <expected.md> <results-dir>` (scripts/check.sh runs
//! it after `cargo test` with `JSONLINK_FAULT_RESULTS=<results-dir>`).
//! Writes the actual table to `<results-dir>/actual.md` and exits non-zero
//! on any missing or differing outcome.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(expected), Some(results)) = (args.next(), args.next()) else {
        eprintln!("usage: fault-table <expected.md> <results-dir>");
        return ExitCode::from(2);
    };
    let results = PathBuf::from(results);
    let table = match std::fs::read_to_string(&expected) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {}: {e}", PathBuf::from(expected).display());
            return ExitCode::from(2);
        }
    };
    let rows = match jsonlink_tests::faults::parse_table(&table) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bad table: {e}");
            return ExitCode::from(2);
        }
    };
    let mut report = String::from("| ID | expected | actual | status |\n|---|---|---|---|\n");
    let mut failures = 0;
    for row in &rows {
        let actual =
            std::fs::read_to_string(jsonlink_tests::faults::result_path(&results, &row.id)).ok();
        let status = match (&row.expected, &actual) {
            (jsonlink_tests::faults::Expected::Skip(_), _) => "skipped",
            (jsonlink_tests::faults::Expected::Outcome(e), Some(a)) if e == a.trim() => "pass",
            (_, None) => {
                failures += 1;
                "MISSING"
            }
            _ => {
                failures += 1;
                "DIFFERS"
            }
        };
        let _ = writeln!(
            report,
            "| {} | {} | {} | {} |",
            row.id,
            row.expected,
            actual.as_deref().unwrap_or("—"),
            status
        );
        if status != "pass" && status != "skipped" {
            eprintln!(
                "{} {status}: expected `{}`, got `{}`",
                row.id,
                row.expected,
                actual.as_deref().unwrap_or("nothing")
            );
        }
    }
    let _ = std::fs::write(results.join("actual.md"), &report);
    println!(
        "fault table: {} cases, {} pass, {} skipped, {} failing",
        rows.len(),
        rows.iter()
            .filter(|r| matches!(r.expected, jsonlink_tests::faults::Expected::Outcome(_)))
            .count()
            - failures,
        rows.iter()
            .filter(|r| matches!(r.expected, jsonlink_tests::faults::Expected::Skip(_)))
            .count(),
        failures
    );
    if failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
