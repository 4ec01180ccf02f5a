//! Report: one folder per run with `summary.json`, `errors.csv` and `changes.csv`
//! (CONTRACT §6). Files hold personal data, so they are created 0600 in 0700 folders, and
//! rows are written as they come so a huge run never holds its report in memory. Every
//! cell goes through [`neutralise`], so a spreadsheet never evaluates one as a formula.

use std::borrow::Cow;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::{Category, Change, Position, Problem};

mod incomplete;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot create report folder {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write report file {path}: {source}")]
    Write { path: PathBuf, source: csv::Error },
    #[error("cannot write {path}: {source}")]
    Summary {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Rows of one bucket set. Every row read lands in exactly one of the four buckets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub rows_read: u64,
    pub unchanged: u64,
    pub updated: u64,
    pub rejected: u64,
    pub failed: u64,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.rows_read += other.rows_read;
        self.unchanged += other.unchanged;
        self.updated += other.updated;
        self.rejected += other.rejected;
        self.failed += other.failed;
    }
}

/// Rows of `errors.csv` by category, every category present (zero when absent), so a
/// dashboard or alert never has to tell "none" from "not written". Rows are messages: a
/// record the API rejected with two messages counts twice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CategoryCounts([u64; Category::ALL.len()]);

impl CategoryCounts {
    pub fn add(&mut self, category: Category) {
        self.0[category as usize] += 1;
    }

    pub fn get(&self, category: Category) -> u64 {
        self.0[category as usize]
    }

    /// In CONTRACT §6's order.
    pub fn iter(&self) -> impl Iterator<Item = (Category, u64)> + '_ {
        Category::ALL.into_iter().map(|c| (c, self.get(c)))
    }
}

/// `{"invalid": 3, "conflict": 0, …}`.
impl Serialize for CategoryCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter().map(|(c, n)| (c.as_str(), n)))
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct FileSummary {
    pub path: String,
    #[serde(flatten)]
    pub counts: Counts,
    /// Whether every row of the file reached a bucket (false after a 401 stop).
    pub complete: bool,
    pub archived_to: Option<String>,
}

/// Records retried from earlier runs' outbox; they are not rows of this run's files, so
/// they are counted apart (`rows_read` here is the number of records replayed).
#[derive(Clone, Debug, Serialize, Default)]
pub struct Summary {
    pub run_id: String,
    pub dry_run: bool,
    /// Rows were recorded as confirmed without sending (`accountsync baseline`).
    #[serde(default)]
    pub baseline: bool,
    pub files: Vec<FileSummary>,
    #[serde(flatten)]
    pub counts: Counts,
    pub retried_from_earlier_runs: Counts,
    /// What `errors.csv` holds, by category.
    pub errors_by_category: CategoryCounts,
    pub requests_sent: u64,
    pub retries: u64,
    pub throttled: u64,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub elapsed_secs: f64,
    pub requests_per_second: f64,
    /// The cache was found damaged at the start, moved aside and restored (from the backup,
    /// when there was one): what was done.
    #[serde(default)]
    pub cache_recovered: Option<String>,
    /// The adaptive rate limit at the end of the run and the lowest it went: below
    /// `[rate].requests_per_second` when the API kept answering 429.
    #[serde(default)]
    pub rate_limit_final: f64,
    #[serde(default)]
    pub rate_limit_lowest: f64,
    /// Why the run stopped early, when it did.
    pub stopped: Option<String>,
    /// Stopped by SIGTERM/SIGINT: what was read and not confirmed is kept for the next run.
    /// False when absent, so summaries written before the field existed still read.
    #[serde(default)]
    pub interrupted: bool,
    pub exit_code: i32,
}

pub struct Report {
    dir: PathBuf,
    run_id: String,
    errors: csv::Writer<File>,
    changes: csv::Writer<File>,
    /// Counted as `errors.csv` rows are written, so the two always agree.
    by_category: CategoryCounts,
    /// Held while the report is written: tells a later run this folder is not abandoned.
    _lock: File,
    /// Earlier runs' folders this one found incomplete and marked.
    pub incomplete_earlier: Vec<PathBuf>,
}

impl Report {
    /// Creates `{root}/{run_id}/` with the two CSV files and their headers. The run id sorts
    /// by time; two runs in the same second get `-2`, `-3`... rather than sharing a folder.
    pub fn create(root: &Path, started: DateTime<Utc>) -> Result<Report, ReportError> {
        let create_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ReportError::Create { path, source }
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(create_err(root))?;
        let base = started.format("%Y%m%dT%H%M%SZ").to_string();
        let mut n = 1;
        let (run_id, dir) = loop {
            let run_id = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            let dir = root.join(&run_id);
            match DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => break (run_id, dir),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(create_err(&dir)(e)),
            }
        };
        // Locked before the CSV files exist: a folder with an errors.csv and no lock taken is
        // one that a later run may mark as incomplete.
        let lock = incomplete::hold(&dir).map_err(create_err(&dir.join(incomplete::LOCK)))?;
        let errors = csv_file(
            &dir.join("errors.csv"),
            &[
                "file",
                "line",
                "accountreference",
                "category",
                "http_status",
                "field",
                "message",
            ],
        )?;
        let changes = csv_file(
            &dir.join("changes.csv"),
            &["file", "line", "accountreference", "field", "old", "new"],
        )?;
        let incomplete_earlier = incomplete::mark(root, &dir);
        Ok(Report {
            dir,
            run_id,
            errors,
            changes,
            by_category: CategoryCounts::default(),
            _lock: lock,
            incomplete_earlier,
        })
    }

    /// The rows written to `errors.csv` so far, by category.
    pub fn errors_by_category(&self) -> &CategoryCounts {
        &self.by_category
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn problem(
        &mut self,
        pos: &Position,
        reference: &str,
        p: &Problem,
    ) -> Result<(), ReportError> {
        let line = pos.line.to_string();
        let status = p.http_status.map(|s| s.to_string()).unwrap_or_default();
        let row = [
            &*pos.file,
            &line,
            reference,
            p.category.as_str(),
            &status,
            &p.field,
            &p.message,
        ];
        write_row(&mut self.errors, &row).map_err(|source| ReportError::Write {
            path: self.dir.join("errors.csv"),
            source,
        })?;
        self.by_category.add(p.category);
        Ok(())
    }

    pub fn change(
        &mut self,
        pos: &Position,
        reference: &str,
        c: &Change,
    ) -> Result<(), ReportError> {
        let line = pos.line.to_string();
        let old = c.old.as_ref().map(|v| v.to_string()).unwrap_or_default();
        let new = c.new.to_string();
        let row = [&*pos.file, &line, reference, &c.field, &old, &new];
        write_row(&mut self.changes, &row).map_err(|source| ReportError::Write {
            path: self.dir.join("changes.csv"),
            source,
        })
    }

    /// Puts every row written so far on disk (flush and fsync). Called before an export
    /// leaves the inbox: once archived it is never read again, so its rows must already be
    /// in this report, even if the run is killed before `summary.json`.
    pub fn sync(&mut self) -> Result<(), ReportError> {
        for (w, name) in [
            (&mut self.errors, "errors.csv"),
            (&mut self.changes, "changes.csv"),
        ] {
            let write_err = |source: std::io::Error| ReportError::Write {
                path: self.dir.join(name),
                source: source.into(),
            };
            w.flush().map_err(write_err)?;
            w.get_ref().sync_data().map_err(write_err)?;
        }
        Ok(())
    }

    /// Syncs the CSV files and writes `summary.json` last, so its presence means the
    /// report is complete. Written beside and renamed, so it is never seen half written.
    pub fn finish(mut self, summary: &Summary) -> Result<PathBuf, ReportError> {
        self.sync()?;
        let path = self.dir.join("summary.json");
        let tmp = self.dir.join(".summary.json.tmp");
        let summary_err = |source| ReportError::Summary {
            path: path.clone(),
            source,
        };
        let mut file = private_file(&tmp).map_err(summary_err)?;
        let json = serde_json::to_vec_pretty(summary).map_err(|e| summary_err(e.into()))?;
        file.write_all(&json).map_err(summary_err)?;
        file.write_all(b"\n").map_err(summary_err)?;
        file.sync_data().map_err(summary_err)?;
        std::fs::rename(&tmp, &path).map_err(summary_err)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(summary_err)?;
        // Complete: the lock file has said what it had to.
        let _ = std::fs::remove_file(self.dir.join(incomplete::LOCK));
        Ok(self.dir)
    }
}

/// Writes one report row, each cell through [`neutralise`]: the one place report cells are
/// written.
fn write_row(w: &mut csv::Writer<File>, cells: &[&str]) -> csv::Result<()> {
    for cell in cells {
        w.write_field(&*neutralise(cell))?;
    }
    w.write_record(None::<&[u8]>)
}

/// Keeps a spreadsheet from evaluating a report cell (CSV injection, OWASP): the cells come
/// from the export (references, names, emails) and from the API (messages), and a data team
/// opens these files in Excel or LibreOffice, which run `=HYPERLINK("http://x","y")`,
/// `+cmd|' /C calc'!A0` or `@SUM(1)` as formulas. A cell that begins with `=`, `+`, `-`,
/// `@`, TAB or CR gets a single quote in front, which spreadsheets take as "this is text".
///
/// A cell that already begins with `'` gets one too, so the change is reversible without
/// guessing: drop one leading `'` from every cell that has one and you have the value
/// exactly as it was synced (`'=1+1` was `=1+1`, `''t Hooft` was `'t Hooft`). Nothing else
/// is ever changed. The numeric cells (`line`, `http_status`) never begin with any of these.
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r' | b'\'') => Cow::Owned(format!("'{cell}")),
        _ => Cow::Borrowed(cell),
    }
}

fn private_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

fn csv_file(path: &Path, header: &[&str]) -> Result<csv::Writer<File>, ReportError> {
    let file = private_file(path).map_err(|source| ReportError::Create {
        path: path.to_path_buf(),
        source,
    })?;
    let mut w = csv::Writer::from_writer(file);
    w.write_record(header)
        .map_err(|source| ReportError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(w)
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
