//! The fault table's recorder.

/// Records a fault case's observed outcome for the fault table
/// (`tests/faults/expected.md`): written to `$JSONLINK_FAULT_RESULTS/<id>`
/// when that variable is set (scripts/check.sh sets it), else a no-op. A
/// sub-case `P1/idle` is written as `P1~idle`, as
/// `jsonlink_tests::faults::result_path` names it.
pub fn record(id: &str, outcome: impl std::fmt::Display) {
    if let Some(dir) = std::env::var_os("JSONLINK_FAULT_RESULTS") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join(id.replace('/', "~")), outcome.to_string()))
            .unwrap_or_else(|e| panic!("recording {id}: {e}"));
    }
}
