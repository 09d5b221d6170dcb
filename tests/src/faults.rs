//! The fault table (`tests/faults/expected.md`) and outcome recording:
//! every fault case's test calls [`record`] with what it observed, and the
//! `fault_table` binary compares the recorded outcomes with the table.

use std::fmt;

/// Records a fault case's observed outcome: written to
/// `$JSONLINK_FAULT_RESULTS/<id>` when that variable is set (as
/// scripts/check.sh does), else a no-op.
///
/// # Panics
///
/// If the variable is set and the file cannot be written (a lost
/// outcome would only show up later as `MISSING`).
pub fn record(id: &str, outcome: impl fmt::Display) {
    if let Some(dir) = std::env::var_os("JSONLINK_FAULT_RESULTS") {
        let dir = std::path::PathBuf::from(dir);
        let path = result_path(&dir, id);
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, outcome.to_string()))
            .unwrap_or_else(|e| panic!("recording {id} in {}: {e}", path.display()));
    }
}

/// Where the outcome of case `id` is recorded under `dir`: one file per
/// case, a sub-case `H5/tls` as `H5~tls` (beside `H5`, not under it).
pub fn result_path(dir: &std::path::Path, id: &str) -> std::path::PathBuf {
    dir.join(id.replace('/', "~"))
}

/// What a case must produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// This exact outcome text.
    Outcome(String),
    /// Not run, for the written reason.
    Skip(String),
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Outcome(o) => write!(f, "`{o}`"),
            Self::Skip(r) => write!(f, "SKIP: {r}"),
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The tests/faults/FAULTS.md id, e.g. `F1`.
    pub id: String,
    /// The expected outcome.
    pub expected: Expected,
}

/// Parses the markdown table: rows `| ID | case | expected | test |`
/// where expected is `` `outcome` `` or `SKIP: reason`.
pub fn parse_table(md: &str) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for line in md.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, id, _case, expected, ..] = cells.as_slice() else {
            continue;
        };
        // `F1`, or a sub-case such as `H5/tls` (same case, another layer).
        let (main, sub) = id.split_once('/').unwrap_or((id, ""));
        let is_id = main.len() >= 2
            && main.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && main.chars().skip(1).all(|c| c.is_ascii_digit())
            && sub
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !is_id {
            continue;
        }
        let expected = if let Some(r) = expected.strip_prefix("SKIP:") {
            let r = r.trim();
            if r.is_empty() {
                return Err(format!("{id}: a skip needs a written reason"));
            }
            Expected::Skip(r.to_owned())
        } else if let Some(o) = expected.strip_prefix('`').and_then(|e| e.strip_suffix('`')) {
            Expected::Outcome(o.to_owned())
        } else {
            return Err(format!("{id}: expected must be `outcome` or SKIP: reason"));
        };
        if rows.iter().any(|r: &Row| r.id == *id) {
            return Err(format!("{id}: listed twice"));
        }
        rows.push(Row {
            id: (*id).to_owned(),
            expected,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    /// The IDs of the catalogue (`tests/faults/FAULTS.md`), in its order,
    /// split into the cases of what has landed and those of the layers
    /// still to come (after the heading "Cases for the layers being added").
    fn catalogue_ids() -> (Vec<String>, Vec<String>) {
        let md = include_str!("../faults/FAULTS.md");
        let (landed, coming) = md
            .split_once("# Cases for the layers being added")
            .expect("FAULTS.md has the heading for the layers to come");
        let ids = |text: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.trim_start().strip_prefix("- **"))
                .filter_map(|l| l.split_once("**").map(|(id, _)| id.to_owned()))
                .collect()
        };
        (ids(landed), ids(coming))
    }

    #[test]
    fn the_table_lists_every_landed_fault_id_once_in_catalogue_order() {
        let (landed, coming) = catalogue_ids();
        assert!(landed.len() >= 40, "catalogue parsed: {landed:?}");
        let md = include_str!("../faults/expected.md");
        let rows = super::parse_table(md).expect("table parses");
        let main_ids: Vec<&str> = rows
            .iter()
            .map(|r| r.id.as_str())
            .filter(|id| !id.contains('/'))
            .collect();
        // Cases of layers still to come may join the table as they land.
        let landed_in_table: Vec<&str> = main_ids
            .iter()
            .copied()
            .filter(|id| !coming.iter().any(|c| c == id))
            .collect();
        assert_eq!(landed_in_table, landed, "every landed case, in order");
        for r in &rows {
            let main = r.id.split_once('/').map_or(r.id.as_str(), |(m, _)| m);
            assert!(
                landed.iter().chain(&coming).any(|c| c == main),
                "{} is not a case of the catalogue",
                r.id
            );
        }
    }

    #[test]
    fn a_skip_without_reason_is_rejected() {
        assert!(super::parse_table("| X1 | c | SKIP: | t |").is_err());
        assert!(super::parse_table("| X1 | c | plain | t |").is_err());
    }
}
