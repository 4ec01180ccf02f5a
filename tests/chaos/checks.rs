//! The properties checked of the API and of the files: after each night, after the last
//! run, when the CRM sends the last export again, that no confirmed change went out twice,
//! and that no file written holds the token. Each broken one is noted, with the history of an
//! example account.

use std::path::Path;

use serde_json::Value;

use crate::bench::{Bench, RunLog};
use crate::exports::{FIELDS, Night, State, Values};
use crate::reports::listed_problems;
use crate::util::{self, Sandbox, TOKEN, Workdir};

/// After a night's run to completion: its exports left the inbox, and every account the
/// client holds nothing open for is at the night's values.
pub(crate) fn check_night(
    failures: &mut Vec<String>,
    bench: &Bench,
    night: &Night,
    history: &[State],
) {
    let (wd, sb, number) = (bench.wd, bench.sb, night.number);
    for export in &night.exports {
        check!(
            failures,
            !wd.path("inbox").join(&export.name).exists(),
            "night {number}: {} is still in the inbox after a complete run",
            export.name
        );
    }
    // Every account the client holds nothing open for is at the night's values.
    let (wrong, extra) = differing(sb, night.target());
    let wrong: Vec<&String> = wrong
        .iter()
        .filter(|r| !bench.last.open.contains(*r))
        .collect();
    check!(
        failures,
        wrong.is_empty() && extra.is_empty(),
        "night {number}: {} accounts with nothing kept differ from the night's values; {} accounts exist that had no valid row ({extra:?})\n{}",
        wrong.len(),
        extra.len(),
        wrong
            .iter()
            .take(3)
            .map(|r| story(r, history, sb, &bench.runs))
            .collect::<String>()
    );
}

/// After the runs without faults: the API holds the last valid value of each field over the
/// exports, and no account that never had a valid row.
pub(crate) fn check_converged(failures: &mut Vec<String>, bench: &Bench, history: &[State]) {
    let sb = bench.sb;
    let target = history.last().expect("history");
    let (wrong, extra) = differing(sb, target);
    check!(
        failures,
        wrong.is_empty(),
        "{} accounts differ from the expected state, e.g.\n{}",
        wrong.len(),
        wrong
            .iter()
            .take(3)
            .map(|r| story(r, history, sb, &bench.runs))
            .collect::<String>()
    );
    check!(
        failures,
        extra.is_empty(),
        "accounts that never had a valid row reached the API: {extra:?}"
    );
}

/// The CRM sends the last export again: nothing to send, and the final report lists every
/// invalid row of it.
pub(crate) fn check_export_sent_again(
    failures: &mut Vec<String>,
    bench: &mut Bench,
    night: &Night,
) {
    let wd = bench.wd;
    let last_export = night.exports.last().expect("an export");
    let again = last_export.name.replace(".csv", "-again.csv");
    wd.write(&format!("inbox/{again}"), &last_export.text);
    bench.run(night, None);
    let run = bench.runs.last().expect("run");
    check!(
        failures,
        run.end_seq == run.first_seq,
        "a converged export sent requests"
    );
    let listed = listed_problems(run.report.as_deref().expect("a report"));
    let missing: Vec<_> = last_export
        .invalid
        .iter()
        .filter(|(line, r, c)| !listed.contains(&(again.clone(), *line, r.clone(), c.to_string())))
        .collect();
    check!(
        failures,
        missing.is_empty(),
        "invalid rows not in the final report: {missing:?}"
    );
}

/// No confirmed change sent again, seen from the client: once the cache showed an account
/// confirmed with the night's values and nothing kept for it, the sandbox never saw a
/// request for it again while the nights asked nothing new of it.
pub(crate) fn check_no_confirmed_change_resent(
    failures: &mut Vec<String>,
    bench: &Bench,
    history: &[State],
) {
    check!(
        failures,
        bench.resent.is_empty(),
        "{} requests for accounts the cache held as confirmed, e.g. {:?}\n{}",
        bench.resent.len(),
        &bench.resent[..bench.resent.len().min(5)],
        bench
            .resent
            .first()
            .and_then(|l| l.split(':').next())
            .map(|r| story(r, history, bench.sb, &bench.runs))
            .unwrap_or_default()
    );
}

/// The token is in no file written: logs, reports, the archive, the cache and its open
/// records file, the backup, and the cache as `cache export` shows it.
pub(crate) fn check_no_token(failures: &mut Vec<String>, wd: &Workdir, backup: &Path) {
    let dump = wd.exec(wd.command(&["cache", "export"]));
    wd.write("cache-dump.jsonl", dump.stdout());
    assert!(backup.exists() && wd.cache_dir().join("open-records.jsonl").exists());
    let leaks = files_containing(&wd.root, TOKEN.as_bytes());
    check!(failures, leaks.is_empty(), "the token is in {leaks:?}");
}

/// The account's values as the sandbox holds them.
fn held(account: &Value) -> Values {
    let mut values = Values::default();
    for (field, name) in FIELDS.iter().enumerate() {
        values[field] = util::body_value(account, name);
    }
    values
}

/// Accounts whose sandbox values differ from `target`, and accounts the sandbox holds that
/// should not exist.
fn differing(sb: &Sandbox, target: &State) -> (Vec<String>, Vec<String>) {
    let accounts = sb.accounts();
    let wrong = target
        .iter()
        .filter(|(r, v)| accounts.get(*r).map(held).as_ref() != Some(*v))
        .map(|(r, _)| r.clone())
        .collect();
    let extra = accounts
        .keys()
        .filter(|r| !target.contains_key(*r))
        .cloned()
        .collect();
    (wrong, extra)
}

/// A readable account history: the target after each export, what the sandbox holds, and
/// every request with the run it came from.
pub(crate) fn story(reference: &str, history: &[State], sb: &Sandbox, runs: &[RunLog]) -> String {
    let mut out = format!("{reference}:\n");
    for (i, state) in history.iter().enumerate() {
        out += &format!("  after export {} {:?}\n", i + 1, state.get(reference));
    }
    out += &format!(
        "  sandbox holds {:?}\n",
        sb.accounts().get(reference).map(held)
    );
    for r in sb
        .requests()
        .iter()
        .filter(|r| r.reference.as_deref() == Some(reference))
    {
        let run = runs.iter().position(|x| x.sent(r));
        let how = run.map(|i| (runs[i].night, runs[i].killed.clone()));
        out += &format!(
            "  #{} run {run:?} (night, killed) {how:?}: {} {:?} {}\n",
            r.seq, r.status, r.fault, r.body
        );
    }
    out
}

/// Every file below `dir` whose bytes contain `needle` (the config names only the variable).
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return hits;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            hits.extend(files_containing(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            hits.push(path.display().to_string());
        }
    }
    hits
}
