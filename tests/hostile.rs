//! Hostile input: every export of the corpus in `tests/data/bad/` runs through the real
//! `accountsync run` against the real sandbox, and must end as `expected.toml` says (exit
//! status, stderr, summary counts, errors.csv and changes.csv rows, what reached the API).
//! Cases run on a few threads, each in its own work directory with its own sandbox; every
//! mismatch of every case is collected and listed, with the case's name, at the end.
//!
//! The two 100 MiB files and the 10 MiB cells are generated at test time in the case's temp
//! directory from the parts `expected.toml` gives; nothing that size is committed.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde::Deserialize;
use util::{Conf, Run, Sandbox, Workdir, changes_not_sent, repo_file};

/// The mapping every case runs with (see the head of `expected.toml`).
const COLUMNS: &str = r#"[columns]
accountreference = "ref"
email = "email"
firstname = "first"
lastname = "last"
phonenumber = "phone"
dateofbirth = "dob"
"#;

/// Cases at the same time: the machine has two cores, and each case is two processes that
/// mostly wait on each other.
const WORKERS: usize = 3;

/// More than this on stderr means a cell or a header made it into a log line.
const MAX_STDERR: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    file: String,
    name: Option<String>,
    about: String,
    exit: i32,
    #[serde(default)]
    dry_run: bool,
    delimiter: Option<String>,
    #[serde(default)]
    generate: Vec<Part>,
    #[serde(default)]
    stderr: Vec<String>,
    #[serde(default = "yes")]
    report: bool,
    counts: Option<[u64; 5]>,
    sent: Option<Vec<String>>,
    sent_count: Option<usize>,
    #[serde(default)]
    paths: Vec<String>,
    errors: Option<Vec<ErrorRow>>,
    errors_count: Option<usize>,
    #[serde(default)]
    changes: Vec<ChangeRow>,
    changes_count: Option<usize>,
}

fn yes() -> bool {
    true
}

impl Case {
    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.file)
    }
}

/// A piece of a generated file: `text` as is, or `fill` repeated to `bytes` bytes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Part {
    text: Option<String>,
    fill: Option<String>,
    bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorRow {
    line: u64,
    #[serde(rename = "ref")]
    reference: Option<String>,
    category: String,
    field: Option<String>,
    message: String,
    status: Option<u16>,
}

impl ErrorRow {
    fn matches(&self, row: &BTreeMap<String, String>) -> bool {
        let status = self.status.map(|s| s.to_string()).unwrap_or_default();
        row["line"] == self.line.to_string()
            && row["category"] == self.category
            && row["http_status"] == status
            && row["message"].contains(&self.message)
            && self
                .reference
                .as_ref()
                .is_none_or(|r| &row["accountreference"] == r)
            && self.field.as_ref().is_none_or(|f| &row["field"] == f)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeRow {
    line: u64,
    #[serde(rename = "ref")]
    reference: String,
    field: String,
    new: String,
    #[serde(default)]
    old: String,
}

impl ChangeRow {
    fn matches(&self, row: &BTreeMap<String, String>) -> bool {
        row["line"] == self.line.to_string()
            && row["accountreference"] == self.reference
            && row["field"] == self.field
            && row["new"] == self.new
            && row["old"] == self.old
    }
}

fn corpus_dir() -> PathBuf {
    repo_file("tests/data/bad")
}

fn manifest() -> Manifest {
    let path = corpus_dir().join("expected.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

#[test]
fn every_hostile_export_ends_as_the_manifest_says() {
    let manifest = manifest();
    let cases = &manifest.case;

    // The corpus and the manifest agree: every committed file has a case, every case a
    // committed file or the parts to generate it (and then no committed file).
    let committed: BTreeSet<String> = std::fs::read_dir(corpus_dir())
        .expect("read tests/data/bad")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n != "expected.toml")
        .collect();
    let mut corpus_problems = Vec::new();
    for case in cases {
        match (case.generate.is_empty(), committed.contains(&case.file)) {
            (true, false) => corpus_problems.push(format!("{}: no such file", case.file)),
            (false, true) => corpus_problems.push(format!(
                "{}: generated at test time, but also committed",
                case.file
            )),
            _ => {}
        }
    }
    let named: BTreeSet<&str> = cases.iter().map(|c| c.file.as_str()).collect();
    for file in &committed {
        if !named.contains(file.as_str()) {
            corpus_problems.push(format!("{file}: in the corpus but not in expected.toml"));
        }
    }
    let names: BTreeSet<&str> = cases.iter().map(Case::name).collect();
    assert_eq!(names.len(), cases.len(), "two cases share a name");
    assert!(corpus_problems.is_empty(), "{}", corpus_problems.join("\n"));
    assert!(
        committed.len() >= 25,
        "the corpus holds {} files; it should hold at least 25",
        committed.len()
    );
    assert!(cases.len() >= 25, "{} cases", cases.len());

    // The big generated files first, so the long cases overlap the short ones.
    let mut order: Vec<&Case> = cases.iter().collect();
    order.sort_by_key(|c| std::cmp::Reverse(generated_size(c)));
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                while let Some(case) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let started = Instant::now();
                    let problems =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check_case(case)))
                            .unwrap_or_else(|panic| {
                                vec![format!("the check panicked: {}", panic_text(&panic))]
                            });
                    let elapsed = started.elapsed();
                    results.lock().unwrap().push((case, elapsed, problems));
                }
            });
        }
    });

    let mut results = results.into_inner().unwrap();
    results.sort_by(|a, b| a.0.name().cmp(b.0.name()));
    let mut failed = String::new();
    for (case, elapsed, problems) in &results {
        let name = case.name();
        println!(
            "{name}: {:.1} s, {}",
            elapsed.as_secs_f64(),
            if problems.is_empty() {
                "ok"
            } else {
                "MISMATCH"
            }
        );
        if !problems.is_empty() {
            let _ = writeln!(failed, "\n== {name}: {}", case.about);
            for p in problems {
                let _ = writeln!(failed, "  - {p}");
            }
        }
    }
    assert_eq!(results.len(), cases.len(), "cases run");
    assert!(
        failed.is_empty(),
        "{} of {} hostile cases did not end as expected.toml says:{failed}",
        results.iter().filter(|r| !r.2.is_empty()).count(),
        results.len()
    );
}

fn generated_size(case: &Case) -> usize {
    case.generate.iter().map(|p| p.bytes.unwrap_or(0)).sum()
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "(no message)".into())
}

/// Runs one case; returns its mismatches.
fn check_case(case: &Case) -> Vec<String> {
    let wd = Workdir::new("hostile");
    let sb = Sandbox::start(&wd, &[]);
    wd.configure(&Conf {
        delimiter: case.delimiter.clone().unwrap_or_else(|| ",".into()),
        date_formats: vec!["%Y-%m-%d".into(), "%d/%m/%Y".into()],
        columns: COLUMNS.into(),
        ..Conf::new(&sb)
    });
    let export = if case.generate.is_empty() {
        corpus_dir().join(&case.file)
    } else {
        generate(&wd.path(&case.file), &case.generate)
    };
    let export = export.display().to_string();
    let mut args = Vec::new();
    if case.dry_run {
        args.push("--dry-run");
    }
    args.push(&export);
    let run = wd.run(&args);

    let mut p = Vec::new();
    let stderr = run.stderr();
    // Never a panic, whatever the input; nor a death by signal (an abort, the OOM killer).
    if stderr.contains("panicked") || run.code().is_none() {
        p.push(format!(
            "the process panicked or was killed\n{}",
            brief(&run)
        ));
    }
    if run.code() != Some(case.exit) {
        p.push(format!(
            "exit status {:?}, expected {}\n{}",
            run.code(),
            case.exit,
            brief(&run)
        ));
    }
    if stderr.len() > MAX_STDERR {
        p.push(format!("stderr holds {} bytes", stderr.len()));
    }
    for needle in &case.stderr {
        let n = stderr.matches(needle.as_str()).count();
        if n == 0 {
            p.push(format!("stderr lacks {needle:?}\n{}", brief(&run)));
        } else if case.exit == 2 && n > 1 {
            p.push(format!("stderr says {needle:?} {n} times\n{}", brief(&run)));
        }
    }

    let requests = sb.requests();
    let received: BTreeSet<String> = requests
        .iter()
        .map(|r| {
            r.reference
                .clone()
                .unwrap_or_else(|| format!("(path {})", r.path))
        })
        .collect();
    if case.dry_run || case.exit == 2 {
        if !requests.is_empty() {
            p.push(format!(
                "{} requests reached the API: {received:?}",
                requests.len()
            ));
        }
    } else {
        if let Some(sent) = &case.sent {
            let expected: BTreeSet<String> = sent.iter().cloned().collect();
            if received != expected {
                p.push(format!(
                    "the API received {received:?}, expected {expected:?}"
                ));
            }
            if requests.len() != sent.len() {
                p.push(format!(
                    "{} requests for {} references",
                    requests.len(),
                    sent.len()
                ));
            }
        }
        if let Some(n) = case.sent_count
            && requests.len() != n
        {
            p.push(format!(
                "the API received {} requests, expected {n}",
                requests.len()
            ));
        }
        for path in &case.paths {
            if !requests.iter().any(|r| &r.path == path) {
                let all: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
                p.push(format!("no request for {path}; paths: {all:?}"));
            }
        }
    }

    match (&run.report, case.report) {
        (None, false) => {}
        (Some(dir), false) => p.push(format!("a report folder was made: {dir:?}")),
        (None, true) => p.push(format!("no report folder\n{}", brief(&run))),
        (Some(dir), true) => check_report(case, &run, dir, &requests, &mut p),
    }
    p
}

/// The report of a run that got as far as making one.
fn check_report(
    case: &Case,
    run: &Run,
    dir: &Path,
    requests: &[util::Logged],
    p: &mut Vec<String>,
) {
    let summary: serde_json::Value = match std::fs::read_to_string(dir.join("summary.json"))
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => return p.push(format!("summary.json: {e}")),
    };
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(u64::MAX);
    let buckets = |v: &serde_json::Value| -> [u64; 5] {
        ["rows_read", "unchanged", "updated", "rejected", "failed"].map(|k| n(v, k))
    };
    let add_up = |b: [u64; 5]| b[0] == b[1] + b[2] + b[3] + b[4];
    let total = buckets(&summary);
    if !add_up(total) {
        p.push(format!("buckets do not add up to rows_read: {total:?}"));
    }
    for file in summary["files"].as_array().into_iter().flatten() {
        if !add_up(buckets(file)) {
            p.push(format!("a file's buckets do not add up: {file}"));
        }
    }
    if buckets(&summary["retried_from_earlier_runs"]) != [0; 5] {
        p.push(format!(
            "replays from an empty cache: {}",
            summary["retried_from_earlier_runs"]
        ));
    }
    match case.counts {
        Some(expected) if expected != total => p.push(format!(
            "counts [rows_read, unchanged, updated, rejected, failed] {total:?}, expected {expected:?}"
        )),
        None => p.push(format!("expected.toml gives no counts; the run's are {total:?}")),
        _ => {}
    }
    if summary["exit_code"].as_i64() != run.code().map(i64::from) {
        p.push(format!(
            "summary exit_code {} but the process exited {:?}",
            summary["exit_code"],
            run.code()
        ));
    }

    let errors = match csv_maps(&dir.join("errors.csv")) {
        Ok(rows) => rows,
        Err(e) => return p.push(e),
    };
    let changes = match csv_maps(&dir.join("changes.csv")) {
        Ok(rows) => rows,
        Err(e) => return p.push(e),
    };
    for (name, rows) in [("errors.csv", &errors), ("changes.csv", &changes)] {
        for row in rows {
            if let Some((column, cell)) = row
                .iter()
                .find(|(_, c)| c.starts_with(['=', '+', '-', '@', '\t', '\r']))
            {
                p.push(format!(
                    "{name}: {column} cell {cell:?} starts like a formula: {row:?}"
                ));
            }
        }
    }

    let expected_errors = case.errors.as_deref().unwrap_or_default();
    let mut unmatched: Vec<&BTreeMap<String, String>> = errors.iter().collect();
    for e in expected_errors {
        match unmatched.iter().position(|row| e.matches(row)) {
            Some(i) => {
                unmatched.remove(i);
            }
            None => p.push(format!("errors.csv has no row {e:?}")),
        }
    }
    let want = case.errors_count.or(case.errors.as_ref().map(Vec::len));
    match want {
        Some(n) if n != errors.len() => p.push(format!(
            "errors.csv has {} rows, expected {n}; not expected: {}",
            errors.len(),
            show_rows(&unmatched)
        )),
        None if !errors.is_empty() => {
            p.push(format!(
                "errors.csv has rows, expected.toml lists none: {}",
                show_rows(&unmatched)
            ));
        }
        _ => {}
    }

    for c in &case.changes {
        if !changes.iter().any(|row| c.matches(row)) {
            let same_ref: Vec<&BTreeMap<String, String>> = changes
                .iter()
                .filter(|r| r["accountreference"] == c.reference)
                .collect();
            p.push(format!(
                "changes.csv has no row {c:?}; rows of that reference: {}",
                show_rows(&same_ref)
            ));
        }
    }
    if let Some(n) = case.changes_count
        && n != changes.len()
    {
        p.push(format!(
            "changes.csv has {} rows, expected {n}",
            changes.len()
        ));
    }
    // What changes.csv says was confirmed is what the API got, less the one added quote.
    if !case.dry_run {
        for m in changes_not_sent(&changes, requests) {
            p.push(format!("changes.csv: {m}"));
        }
    }
}

/// A CSV file of the report as rows of header -> cell; a parse error is a mismatch.
fn csv_maps(path: &Path) -> Result<Vec<BTreeMap<String, String>>, String> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut reader = csv::Reader::from_path(path).map_err(|e| format!("{name}: {e}"))?;
    let headers = reader
        .headers()
        .map_err(|e| format!("{name}: {e}"))?
        .clone();
    reader
        .records()
        .map(|r| {
            let r = r.map_err(|e| format!("{name} does not parse: {e}"))?;
            Ok(headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_owned(), v.to_owned()))
                .collect())
        })
        .collect()
}

fn show_rows(rows: &[&BTreeMap<String, String>]) -> String {
    if rows.is_empty() {
        return "none".into();
    }
    rows.iter()
        .map(|r| {
            let cell = |k: &str| {
                let c = r.get(k).map(String::as_str).unwrap_or("");
                cut(c, 120)
            };
            let keys: &[&str] = if r.contains_key("category") {
                &[
                    "line",
                    "accountreference",
                    "category",
                    "http_status",
                    "field",
                    "message",
                ]
            } else {
                &["line", "accountreference", "field", "old", "new"]
            };
            format!(
                "[{}]",
                keys.iter()
                    .map(|k| format!("{:?}", cell(k)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The command, status and stderr of a run, cut short: a hostile run's output can be huge.
fn brief(run: &Run) -> String {
    format!(
        "    command: {}\n    status: {}\n    stderr: {}",
        cut(&run.cmdline, 500),
        run.output.status,
        cut(&run.stderr(), 4000)
    )
}

/// `s` up to about `max` bytes, on a character boundary, with `…` when cut.
fn cut(s: &str, max: usize) -> String {
    match s
        .char_indices()
        .map(|(i, _)| i)
        .take_while(|&i| i <= max)
        .last()
    {
        Some(end) if s.len() > max => format!("{}…", &s[..end]),
        _ => s.to_owned(),
    }
}

/// Writes a generated export; large fills are written a MiB at a time.
fn generate(path: &Path, parts: &[Part]) -> PathBuf {
    let file = std::fs::File::create(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    for part in parts {
        match (&part.text, &part.fill, part.bytes) {
            (Some(text), None, None) => out.write_all(text.as_bytes()),
            (None, Some(fill), Some(bytes)) => {
                let unit = fill.as_bytes();
                assert!(!unit.is_empty(), "an empty fill");
                let chunk = unit.repeat((1 << 20) / unit.len().max(1) + 1);
                let mut left = bytes;
                let mut r = Ok(());
                while left > 0 && r.is_ok() {
                    let n = left.min(chunk.len());
                    r = out.write_all(&chunk[..n]);
                    left -= n;
                }
                r
            }
            _ => panic!("a part is either {{ text }} or {{ fill, bytes }}: {part:?}"),
        }
        .unwrap_or_else(|e| panic!("write {path:?}: {e}"));
    }
    out.flush()
        .unwrap_or_else(|e| panic!("write {path:?}: {e}"));
    path.to_path_buf()
}
