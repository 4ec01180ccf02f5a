//! Record: the last stage, and the only place that writes outcomes to the cache (the journal
//! only writes a job's outbox entry ahead of its request). It sees every row's
//! outcome exactly once, so it also keeps the bucket counts the summary adds up.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cache::{Cache, CacheError, Pending, Rejection, index_key};
use crate::model::{Fields, Patch, Position, Problem};
use crate::report::{Counts, Report, ReportError};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// Running counts the record stage keeps for the progress display.
#[derive(Debug, Default)]
pub struct Live {
    pub rows: AtomicU64,
    pub rejected: AtomicU64,
}

/// Where a record came from: a file of this run (by index) or an earlier run's outbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    File(usize),
    Earlier,
}

/// Cache entries a newer row makes obsolete, found while deciding the row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stale {
    pub pending: bool,
    pub rejection: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Unchanged,
    /// Confirmed by the API (a dry run: would be sent).
    Updated(Patch),
    /// `remember` holds the row when the API rejected it permanently, so that an unchanged
    /// row is not sent again; local and remembered rejections carry `None`.
    Rejected {
        problems: Vec<Problem>,
        remember: Option<Fields>,
    },
    /// Not confirmed; `fields` is kept in the outbox for the next run. `attempted` are the
    /// fields its request carried: the API may hold them although it never said so.
    Failed {
        problem: Problem,
        fields: Fields,
        attempted: BTreeSet<String>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub origin: Origin,
    pub pos: Position,
    pub reference: String,
    pub verdict: Verdict,
    pub stale: Stale,
    /// The raw row's digest (rows of a file), kept in the row index when the row turns out
    /// confirmed or unchanged.
    pub raw: Option<u64>,
}

/// Writes the cache even in a dry run: a dry run's cache is a private copy, and recording
/// its "would send" outcomes there is what makes the second file of a dry run, and the
/// outbox replay after it, predict what a real run would do.
pub struct Recorder {
    cache: Cache,
    report: Report,
    /// Dry run: "would send" outcomes of files from this index on (and of the replay) are
    /// not confirmed in the copy, since no later stage reads them; a transaction per row
    /// made a first dry run six times slower.
    confirm_until: usize,
    pub files: Vec<Counts>,
    pub earlier: Counts,
    /// Of the `failed`, those the run did not send or stopped waiting for because it was
    /// stopped: an interrupted run's exit status leaves them out (they wait for the next).
    pub cut_short: u64,
    live: Arc<Live>,
}

impl Recorder {
    pub fn new(cache: Cache, report: Report, files: usize, dry_run: bool) -> Recorder {
        Recorder {
            cache,
            report,
            confirm_until: if dry_run {
                files.saturating_sub(1)
            } else {
                usize::MAX
            },
            files: vec![Counts::default(); files],
            earlier: Counts::default(),
            cut_short: 0,
            live: Arc::default(),
        }
    }

    /// Shares the running counts with the progress display.
    pub fn with_live(mut self, live: Arc<Live>) -> Recorder {
        self.live = live;
        self
    }

    /// Rows the row index answered as unchanged: nothing to write, only to count.
    pub fn unchanged(&mut self, file: usize, rows: u64) {
        let counts = &mut self.files[file];
        counts.rows_read += rows;
        counts.unchanged += rows;
        self.live.rows.fetch_add(rows, Ordering::Relaxed);
    }

    /// Counts the outcome, writes its report rows, then its one cache transaction.
    pub fn record(&mut self, o: Outcome) -> Result<(), RecordError> {
        let counts = match o.origin {
            Origin::File(i) => &mut self.files[i],
            Origin::Earlier => &mut self.earlier,
        };
        counts.rows_read += 1;
        self.live.rows.fetch_add(1, Ordering::Relaxed);
        let r = o.reference.as_str();
        let later_reads_it = match o.origin {
            Origin::File(i) => i < self.confirm_until,
            Origin::Earlier => self.confirm_until == usize::MAX,
        };
        // The index keeps a row only while the account has nothing pending or remembered
        // and its confirmed values are that row's; any other outcome drops the entry. No
        // stage reads the index while a file's outcomes are recorded (the first pass reads
        // it before, the next file after the barrier), so it is updated in place.
        if later_reads_it {
            let keep = match (&o.verdict, o.origin) {
                (Verdict::Unchanged | Verdict::Updated(_), Origin::File(_)) => o.raw,
                _ => None,
            };
            self.cache.update_row_index(index_key(r), keep);
        }
        match o.verdict {
            Verdict::Unchanged => {
                counts.unchanged += 1;
                self.cache.forget(r, o.stale.pending, o.stale.rejection)?;
            }
            Verdict::Updated(patch) => {
                counts.updated += 1;
                for c in &patch.changes {
                    self.report.change(&o.pos, r, c)?;
                }
                if later_reads_it {
                    self.cache.confirm(r, &patch.changes, patch.row)?;
                } else {
                    // What confirm would also do: the replay must not resend a kept row
                    // that this row replaced.
                    self.cache.forget(r, o.stale.pending, o.stale.rejection)?;
                }
                tracing::debug!(reference = r, fields = patch.changes.len(), "Updated.");
            }
            Verdict::Rejected { problems, remember } => {
                counts.rejected += 1;
                self.live.rejected.fetch_add(1, Ordering::Relaxed);
                for p in &problems {
                    self.report.problem(&o.pos, r, p)?;
                }
                match remember {
                    Some(fields) => self.cache.reject(r, &Rejection { fields, problems })?,
                    None => self.cache.forget(r, o.stale.pending, o.stale.rejection)?,
                }
            }
            Verdict::Failed {
                problem,
                fields,
                attempted,
            } => {
                counts.failed += 1;
                self.cut_short += u64::from(problem.cut_short());
                self.report.problem(&o.pos, r, &problem)?;
                tracing::debug!(reference = r, status = ?problem.http_status, "Failed; kept for the next run.");
                let pending = Pending {
                    fields,
                    file: o.pos.file.to_string(),
                    line: o.pos.line,
                    run_id: self.report.run_id().to_owned(),
                    problem,
                    uncertain: attempted,
                };
                self.cache.keep_pending(r, &pending, o.stale.rejection)?;
            }
        }
        Ok(())
    }

    /// Everything recorded so far on disk: the report's rows and the cache.
    pub fn sync(&mut self) -> Result<(), RecordError> {
        self.report.sync()?;
        self.cache.flush_blocking()?;
        Ok(())
    }

    pub fn into_report(self) -> (Report, Vec<Counts>, Counts, u64) {
        (self.report, self.files, self.earlier, self.cut_short)
    }
}
