//! The run reports the data team reads the next morning: reading `summary.json` and
//! `errors.csv` (whole rows up to a torn one in a report a kill left incomplete), which
//! reports of a night count, and the checks that they add up and list every invalid row.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::bench::{Bench, RunLog};
use crate::exports::Night;
use crate::util;

/// Every report that was completed adds up, and every invalid row of a night is in a
/// complete report of that night: the data team reads them the next morning.
pub(crate) fn check_reports(failures: &mut Vec<String>, bench: &Bench, nights: &[Night]) {
    let mut torn = Vec::new();
    for run in &bench.runs {
        let Some(dir) = &run.report else { continue };
        let s = match parse_summary(dir) {
            Ok(Some(s)) => s,
            Ok(None) => continue, // killed before it was complete
            Err(e) => {
                torn.push(format!("{e} (run {:?} -> {:?})", run.trigger, run.killed));
                continue;
            }
        };
        let sum: u64 = ["unchanged", "updated", "rejected", "failed"]
            .iter()
            .map(|k| s[k].as_u64().unwrap_or(0))
            .sum();
        check!(
            failures,
            s["rows_read"].as_u64() == Some(sum),
            "{dir:?}: {s:#}"
        );
    }
    check!(
        failures,
        torn.is_empty(),
        "a summary.json that is there but holds no summary: {torn:?}"
    );
    let unmarked: Vec<&Path> = bench
        .runs
        .iter()
        .filter_map(|r| r.report.as_deref())
        .filter(|d| matches!(parse_summary(d), Ok(None)) && !d.join("INCOMPLETE").exists())
        .collect();
    check!(
        failures,
        unmarked.is_empty(),
        "reports left incomplete by a kill that no later run marked INCOMPLETE: {unmarked:?}"
    );
    for night in nights {
        let mut listed = BTreeSet::new();
        for dir in readable_reports(&bench.runs, night.number) {
            listed.extend(listed_problems(dir));
        }
        for export in &night.exports {
            let missing: Vec<_> = export
                .invalid
                .iter()
                .filter(|(line, r, c)| {
                    !listed.contains(&(export.name.clone(), *line, r.clone(), c.to_string()))
                })
                .collect();
            let runs: Vec<String> = bench
                .runs
                .iter()
                .filter(|r| r.night == night.number)
                .map(|r| {
                    format!(
                        "  {:?} -> {:?}, exit {:?}, summary.json {}",
                        r.trigger,
                        r.killed,
                        r.code,
                        match r.report.as_deref().map(parse_summary) {
                            None => "(no report)",
                            Some(Ok(None)) => "missing",
                            Some(Ok(Some(_))) => "complete",
                            Some(Err(_)) => "torn",
                        }
                    )
                })
                .collect();
            check!(
                failures,
                missing.is_empty(),
                "night {}: {} of the {} invalid rows of {} are in no complete or marked report of the night, e.g. {:?}\nruns of the night (trigger -> kill, exit, summary):\n{}",
                night.number,
                missing.len(),
                export.invalid.len(),
                export.name,
                &missing[..missing.len().min(3)],
                runs.join("\n")
            );
        }
    }
}

/// The reports of the runs of `night` the data team is pointed at: complete ones (a
/// `summary.json` that parses) and those a later run marked `INCOMPLETE` (a run killed after
/// archiving an export: its rows were synced into its errors.csv before the export left the
/// inbox, and no later run reads that export again).
fn readable_reports(runs: &[RunLog], night: usize) -> Vec<&Path> {
    runs.iter()
        .filter(|r| r.night == night)
        .filter_map(|r| r.report.as_deref())
        .filter(|d| matches!(parse_summary(d), Ok(Some(_))) || d.join("INCOMPLETE").exists())
        .collect()
}

/// `summary.json` of a report: `None` when there is none (the run was killed before its
/// end), an error when it is there but does not parse.
fn parse_summary(dir: &Path) -> Result<Option<Value>, String> {
    let path = dir.join("summary.json");
    match std::fs::read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{path:?}: {e}")),
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{path:?}: {e} ({} bytes)", bytes.len())),
    }
}

pub(crate) fn read_summary(dir: &Path) -> Value {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path:?}: {e}"))
}

/// `errors.csv` of a report as (file name, line, reference, category).
/// The rows of a report's errors.csv as (file name, line, reference, category). A report a
/// kill left incomplete may end in a torn row (killed while the writer emptied its buffer):
/// whole rows are read up to it, since rows of an archived export were synced before the
/// export left the inbox, and the torn row can only belong to an export still there.
pub(crate) fn listed_problems(dir: &Path) -> BTreeSet<(String, u64, String, String)> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(dir.join("errors.csv"))
        .unwrap_or_else(|e| panic!("{dir:?}: {e}"));
    let header = reader.headers().cloned().unwrap_or_default();
    let complete = !dir.join("INCOMPLETE").exists();
    let mut rows = Vec::new();
    for record in reader.records() {
        match record {
            Ok(r) if r.len() == header.len() => rows.push(
                header
                    .iter()
                    .zip(r.iter())
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect::<BTreeMap<String, String>>(),
            ),
            other if complete => panic!("{dir:?}: a complete report with a bad row: {other:?}"),
            _ => break,
        }
    }
    rows.iter()
        .map(|e| {
            let file = Path::new(util::original_cell(&e["file"]))
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            (
                file,
                e["line"].parse().unwrap_or(0),
                util::original_cell(&e["accountreference"]).to_owned(),
                e["category"].clone(),
            )
        })
        .collect()
}
