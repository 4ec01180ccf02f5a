//! Prometheus metrics of the last run, as a node_exporter textfile (`*.prom` in the
//! textfile collector's folder): nightly batch jobs have no process to scrape, so each run
//! leaves its numbers in a file that node_exporter serves until the next run replaces it.
//! Every metric is a gauge of the last run; `docs/metrics.md` lists them with alert rules.
//!
//! Only counts, times and fixed label values: no account reference or email ever reaches a
//! label, so the file can be world-readable (0644) for node_exporter's user.
//!
//! Dry runs write nothing: a dry run is not a sync, and an operator's afternoon dry run must
//! not replace the figures of the night's real run that the alerts watch.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions, Permissions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::report::{Counts, Summary};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot read the previous metrics file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write metrics file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Carried from file to file: the one value that outlives a run.
const LAST_SUCCESS: &str = "accountsync_last_success_timestamp_seconds";

/// Writes the metrics of `summary` to `path`, replacing the file atomically: node_exporter
/// reads it at any moment and must never see half a file. A dry run or a baseline writes
/// nothing: neither is a sync, and either would replace the figures the alerts watch.
///
/// `accountsync_last_success_timestamp_seconds` is this run's finish time when it completed
/// (exit 0 or 1, not interrupted, at least one export); otherwise it is taken over from the file being replaced,
/// and left out when that file has none.
pub fn write(path: &Path, summary: &Summary) -> Result<(), MetricsError> {
    if summary.dry_run || summary.baseline {
        return Ok(());
    }
    let last_success = if completed(summary) {
        Some(seconds(summary.finished_at))
    } else {
        previous_success(path)?
    };
    let text = render(summary, last_success);
    replace(path, text.as_bytes()).map_err(|source| MetricsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The metrics of a run that could not proceed before its report existed (an unreadable
/// export, a missing column, the cache in use, no token): exit code 2 and nothing counted,
/// the last success carried over, so the "run failed" alert fires for these causes too and
/// the previous night's figures do not stand in for tonight's.
pub fn write_failed(path: &Path, at: DateTime<Utc>) -> Result<(), MetricsError> {
    let summary = Summary {
        run_id: String::new(),
        dry_run: false,
        baseline: false,
        files: Vec::new(),
        counts: Counts::default(),
        retried_from_earlier_runs: Counts::default(),
        errors_by_category: Default::default(),
        requests_sent: 0,
        retries: 0,
        throttled: 0,
        started_at: at,
        finished_at: at,
        elapsed_secs: 0.0,
        requests_per_second: 0.0,
        cache_recovered: None,
        rate_limit_final: 0.0,
        rate_limit_lowest: 0.0,
        stopped: None,
        interrupted: false,
        exit_code: 2,
    };
    write(path, &summary)
}

/// A run that synced at least one export through: exit 1 (some rows rejected or failed)
/// still counts, as those rows are the data team's business, not the service's. An
/// interrupted run did not get through its rows, whatever its exit code; a run that found
/// the inbox empty synced nothing, so a CRM that stops sending exports trips the
/// "no successful sync" alert.
fn completed(summary: &Summary) -> bool {
    matches!(summary.exit_code, 0 | 1) && !summary.interrupted && !summary.files.is_empty()
}

/// Unix time in seconds, to the millisecond.
fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// The last success recorded in the file at `path`; `None` when there is no file or it has
/// no valid sample (someone else's file, or a hand edit: not worth failing the run for).
fn previous_success(path: &Path) -> Result<Option<f64>, MetricsError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(parse_last_success(&String::from_utf8_lossy(&bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(MetricsError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn parse_last_success(text: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(LAST_SUCCESS)?;
        if !rest.starts_with([' ', '\t']) {
            return None; // a longer name, or labels
        }
        let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
        value.is_finite().then_some(value)
    })
}

/// The file's text: per metric `# HELP`, `# TYPE` and its samples, ending in a newline.
fn render(s: &Summary, last_success: Option<f64>) -> String {
    let mut out = Text::default();
    out.outcomes(
        "accountsync_last_run_rows",
        "Rows of the export files by outcome; read = unchanged + updated + rejected + failed.",
        &s.counts,
    );
    out.outcomes(
        "accountsync_last_run_outbox_records",
        "Records kept by earlier runs after transient failures and retried, by outcome.",
        &s.retried_from_earlier_runs,
    );
    out.header(
        "accountsync_last_run_errors",
        "Rows of the run's errors.csv by category, one per message (a record can count more than once), remembered rejections included.",
    );
    for (category, n) in s.errors_by_category.iter() {
        let _ = writeln!(
            out.0,
            "accountsync_last_run_errors{{category=\"{}\"}} {n}",
            category.as_str()
        );
    }
    out.gauge(
        "accountsync_last_run_files",
        "Export files the run read.",
        s.files.len(),
    );
    out.gauge(
        "accountsync_last_run_requests_sent",
        "HTTP requests sent, retries included.",
        s.requests_sent,
    );
    out.gauge(
        "accountsync_last_run_retries",
        "HTTP requests that repeated an earlier attempt.",
        s.retries,
    );
    out.gauge(
        "accountsync_last_run_throttled",
        "Responses 429 Too Many Requests.",
        s.throttled,
    );
    out.gauge(
        "accountsync_last_run_duration_seconds",
        "Wall-clock time of the run.",
        float(s.elapsed_secs),
    );
    out.gauge(
        "accountsync_last_run_timestamp_seconds",
        "When the run finished, in Unix time.",
        float(seconds(s.finished_at)),
    );
    out.gauge(
        "accountsync_last_run_exit_code",
        "Exit status: 0 all in sync, 1 some rows rejected or failed, 2 the run could not proceed.",
        s.exit_code,
    );
    out.gauge(
        "accountsync_last_run_interrupted",
        "1 when SIGTERM/SIGINT cut the run short.",
        u8::from(s.interrupted),
    );
    if let Some(t) = last_success {
        out.gauge(
            LAST_SUCCESS,
            "When the last completed run (exit 0 or 1, at least one export, not interrupted) finished, in Unix time.",
            float(t),
        );
    }
    out.0
}

/// A float as the text format spells it (`NaN`, `+Inf`), never as Rust's `inf`.
fn float(v: f64) -> String {
    match v {
        v if v.is_nan() => "NaN".to_owned(),
        v if v == f64::INFINITY => "+Inf".to_owned(),
        v if v == f64::NEG_INFINITY => "-Inf".to_owned(),
        v => v.to_string(),
    }
}

#[derive(Default)]
struct Text(String);

impl Text {
    fn header(&mut self, name: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} gauge");
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl std::fmt::Display) {
        self.header(name, help);
        let _ = writeln!(self.0, "{name} {value}");
    }

    fn outcomes(&mut self, name: &str, help: &str, c: &Counts) {
        self.header(name, help);
        for (outcome, n) in [
            ("read", c.rows_read),
            ("unchanged", c.unchanged),
            ("updated", c.updated),
            ("rejected", c.rejected),
            ("failed", c.failed),
        ] {
            let _ = writeln!(self.0, "{name}{{outcome=\"{outcome}\"}} {n}");
        }
    }
}

/// Write a temp file next to `path`, fsync it, rename it over `path`, fsync the folder.
/// The temp name does not end in `.prom`, so node_exporter never reads it; it carries the
/// pid, so two processes never write the same one.
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file")
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        // Whatever the umask (services often run with 0077): node_exporter runs as
        // another user and must read the file.
        file.set_permissions(Permissions::from_mode(0o644))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
