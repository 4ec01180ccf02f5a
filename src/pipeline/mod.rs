//! Wires the stages. Per file: a blocking thread reads, maps, validates and diffs (the csv
//! parser and sled reads block); jobs go through a bounded channel to the async send stage;
//! every outcome goes through another bounded channel to the record thread, which alone
//! writes the cache and the report. Files are synced one after another, each drained before
//! the next starts, so a later file's row for an account always lands after an earlier one.

mod decide;
mod events;
mod journal;
mod produce;
mod progress;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use chrono::Utc;
use secrecy::SecretString;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cache::{Cache, CacheError};
use crate::config::Config;
use crate::inbox::{self, InboxError};
use crate::map::{Layout, MapError};
use crate::read::{Export, ReadError};
use crate::record::{Outcome, RecordError, Recorder, Verdict};
use crate::report::{Counts, FileSummary, Report, ReportError, Summary};
use crate::send::client::{Client, ClientError};
use crate::send::throttle::Throttle;
use crate::send::{Sender, Stop};
pub use decide::{Decider, Duplicates, Job, RowSeed, Step, delivered};
use events::{Batch, Event, record_all, synced};
use produce::{prepare_file, replay_earlier, stage};
pub use progress::{LogWriter, Progress};

/// How long an inbox file must keep its size and time before it is read.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Inbox(#[from] InboxError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{file}: {source}")]
    Columns { file: PathBuf, source: MapError },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(
        "{file} changed while it was being read; the rows read so far are recorded, sync the file again once the CRM has finished writing it"
    )]
    Changed { file: PathBuf },
    #[error("internal error: a pipeline task stopped unexpectedly: {0}")]
    Task(#[from] tokio::task::JoinError),
}

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Files to sync in this order; empty means the inbox.
    pub files: Vec<PathBuf>,
    pub dry_run: bool,
    /// `accountsync baseline`: record every row as confirmed without sending it, for the
    /// first night when the API already holds the data.
    pub baseline: bool,
    pub retry_rejected: bool,
    pub progress: bool,
    /// Cancelled on SIGTERM/SIGINT: reading stops, requests in flight get until
    /// `[shutdown].deadline_secs` (less a margin for the report) to answer.
    pub shutdown: CancellationToken,
    /// Told "file n of m" as each file starts: the daemon turns it into its systemd status.
    pub on_file: Option<FileHook>,
}

/// `(file, n, of)`, called as each file of a run starts.
pub type FileStarted = dyn Fn(&str, usize, usize) + Send + Sync;

#[derive(Clone)]
pub struct FileHook(pub Arc<FileStarted>);

impl std::fmt::Debug for FileHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileHook")
    }
}

pub struct RunResult {
    pub summary: Summary,
    pub report_dir: PathBuf,
}

/// What every stage of one run shares.
struct Ctx {
    config: Config,
    cache: Cache,
    run_id: String,
    address_types: Vec<String>,
    today: chrono::NaiveDate,
    opts: RunOptions,
    cancel: CancellationToken,
    progress: Progress,
    file_count: usize,
}

impl Ctx {
    fn decider(&self) -> Decider<'_> {
        Decider {
            cache: &self.cache,
            limits: &self.config.limits,
            date_formats: &self.config.input.date_formats,
            address_types: &self.address_types,
            today: self.today,
            retry_rejected: self.opts.retry_rejected,
        }
    }

    /// Hands a decided row on: a final outcome to the record stage, a job to the send stage
    /// (a dry run records it as "would send" instead). `false` once the run is stopping.
    fn dispatch(&self, step: Step, jobs: Option<&mpsc::Sender<Job>>, out: &mut Batch<'_>) -> bool {
        let outcome = match (step, jobs) {
            (Step::Done(o), _) => o,
            (Step::Send(job), Some(jobs)) => return jobs.blocking_send(job).is_ok(),
            (Step::Send(job), None) => Outcome {
                origin: job.origin,
                pos: job.pos,
                reference: job.reference,
                verdict: Verdict::Updated(job.patch),
                stale: job.stale,
                raw: job.raw,
            },
        };
        out.push(outcome)
    }
}

/// One `run`: the files (or the inbox), then what earlier runs left in the outbox.
///
/// `Err` only for problems found before anything is sent (config, headers, cache lock,
/// report folder). Once the report exists, a failure stops the run but still writes the
/// report, with `stopped` saying why and exit code 2.
pub async fn run(
    config: &Config,
    token: &SecretString,
    opts: RunOptions,
) -> Result<RunResult, RunError> {
    let started = Utc::now();
    let clock = Instant::now();
    let from_inbox = opts.files.is_empty();
    let mut left_by_signal = 0;
    let files = if from_inbox {
        let listed = inbox::list(&config.input.dir, &config.input.pattern)?;
        let before = inbox::stamps(&listed);
        if !listed.is_empty() {
            tokio::select! {
                () = tokio::time::sleep(SETTLE) => {}
                // Stopped before reading: every listed file waits for the next run.
                () = opts.shutdown.cancelled() => left_by_signal = listed.len(),
            }
        }
        let (ready, writing) = if left_by_signal > 0 {
            tracing::info!(
                files = left_by_signal,
                "Stopped before reading: the inbox's exports wait for the next run."
            );
            (Vec::new(), Vec::new())
        } else {
            inbox::settled(listed, before)
        };
        for file in &writing {
            tracing::info!(file = %file.display(), "An export is still being written; it is left for the next run.");
        }
        ready
    } else {
        opts.files.clone()
    };
    if from_inbox && files.is_empty() && left_by_signal == 0 {
        tracing::warn!(dir = %config.input.dir.display(), pattern = config.input.pattern, "The inbox holds no export to sync.");
    }
    // Every file is checked before anything is sent, so a bad header in the third file
    // stops the run before the first two have changed anything.
    for path in &files {
        open_checked(config, path)?;
    }
    let client = Client::new(&config.api, token)?;
    let (cache, recovered) = if opts.dry_run {
        let copy = Cache::open_copy(&config.cache_path, config.cache_memory_mb)?;
        (copy, None)
    } else {
        let backup = config.cache_backup.as_deref();
        Cache::open_or_recover(&config.cache_path, config.cache_memory_mb, backup)?
    };
    let report = Report::create(&config.report_dir, started)?;
    let run_id = report.run_id().to_owned();
    let report_dir = report.dir().to_path_buf();
    tracing::info!(
        run_id,
        files = files.len(),
        dry_run = opts.dry_run,
        "Run started."
    );

    let sender = Arc::new(Sender::new(
        client,
        Throttle::new(&config.rate),
        config.retry.clone(),
        config.rate.max_in_flight,
    ));
    let ctx = Arc::new(Ctx {
        config: config.clone(),
        cache: cache.clone(),
        run_id: run_id.clone(),
        address_types: config.columns.addresses.keys().cloned().collect(),
        today: started.date_naive(),
        cancel: sender.cancel.clone(),
        progress: Progress::new(opts.progress),
        file_count: files.len(),
        opts: opts.clone(),
    });
    let watcher = ctx.progress.watch(sender.stats.clone());
    let on_signal = {
        let (sender, shutdown) = (sender.clone(), opts.shutdown.clone());
        // What is left after the requests: recording, the report, the cache flush.
        let deadline = config.shutdown_deadline;
        let grace = deadline
            .saturating_sub(std::time::Duration::from_secs(2))
            .max(deadline / 2);
        tokio::spawn(async move {
            shutdown.cancelled().await;
            tracing::warn!(
                grace_secs = grace.as_secs_f64(),
                "Signal received: reading stops, requests in flight may finish."
            );
            sender.interrupt(grace);
        })
    };
    // Counted in events, and a batch event holds 256 outcomes (a new account's outcome
    // carries its whole patch, a few KB): 16 keeps the backlog in the low tens of MB.
    let (events, event_rx) = mpsc::channel::<Event>(16);
    let recorder = Recorder::new(cache.clone(), report, files.len(), opts.dry_run)
        .with_live(ctx.progress.live.clone());
    let cancel = sender.cancel.clone();
    let record_task = tokio::task::spawn_blocking(move || record_all(recorder, event_rx, cancel));

    let (complete, archived, failure) = sync_all(&ctx, &sender, &events, &files, &run_id).await;
    drop(events);
    watcher.abort();
    on_signal.abort();
    ctx.progress.finish();
    let (recorder, record_failure) = record_task.await?;
    let flushed = cache.flush().await.err();
    let failure = failure
        .or(record_failure.map(RunError::from))
        .or(flushed.map(RunError::from));
    if failure.is_none()
        && let Err(error) = cache.save_row_index()
    {
        // The index only saves time: without it the next run decides every row in full.
        tracing::warn!(%error, "Cannot write the row index; the next run checks every row in full.");
    }
    if failure.is_none() && !opts.dry_run {
        let cache = cache.clone();
        match tokio::task::spawn_blocking(move || cache.write_open_records()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "Cannot write the open records file."),
            Err(error) => tracing::warn!(%error, "Cannot write the open records file."),
        }
    }
    // An interrupted run leaves the backup to the next complete one: writing a million
    // accounts could outlast the shutdown deadline, and the last backup is still valid.
    let interrupted = sender.interrupted();
    if let (Some(file), None, false, false) =
        (&config.cache_backup, &failure, opts.dry_run, interrupted)
    {
        let (cache, file) = (cache.clone(), file.clone());
        match tokio::task::spawn_blocking(move || cache.write_backup(&file)).await {
            Ok(Ok(n)) => tracing::info!(accounts = n, "Cache backup written."),
            Ok(Err(error)) => tracing::warn!(%error, "Cannot write the cache backup."),
            Err(error) => tracing::warn!(%error, "Cannot write the cache backup."),
        }
    }
    let stop = match failure {
        Some(e) => Some(Stop {
            reason: e.to_string(),
            fatal: true,
        }),
        None => sender.stopped(),
    };
    let (report, per_file, earlier, cut_short) = recorder.into_report();

    let mut summaries = Vec::new();
    let mut total = Counts::default();
    for (((path, counts), done), archived_to) in
        files.iter().zip(per_file).zip(complete).zip(archived)
    {
        total.add(&counts);
        summaries.push(FileSummary {
            path: path.display().to_string(),
            counts,
            complete: done,
            archived_to,
        });
    }
    let own_failures = (total.rejected + total.failed + earlier.rejected + earlier.failed)
        .saturating_sub(cut_short);
    let exit_code = match &stop {
        Some(s) if s.fatal => 2,
        // Asked to stop (SIGTERM/SIGINT), and did so cleanly within the deadline: the issue
        // of the nightly service asks for exit 0 (the daemon's own CONTRACT §1 rule), so a
        // stopped service is not marked failed. What was not sent waits for the next run;
        // the report and the metrics say `interrupted`. Records rejected, or failed for
        // their own reasons, before the signal still give 1.
        _ if interrupted => i32::from(own_failures > 0),
        Some(_) => 1,
        _ if own_failures > 0 => 1,
        _ => 0,
    };
    let elapsed = clock.elapsed().as_secs_f64();
    let requests = sender.stats.requests.load(Ordering::Relaxed);
    let summary = Summary {
        run_id,
        dry_run: opts.dry_run,
        baseline: opts.baseline,
        files: summaries,
        counts: total,
        retried_from_earlier_runs: earlier,
        errors_by_category: report.errors_by_category().clone(),
        requests_sent: requests,
        retries: sender.stats.retries.load(Ordering::Relaxed),
        throttled: sender.stats.throttled.load(Ordering::Relaxed),
        started_at: started,
        finished_at: Utc::now(),
        elapsed_secs: elapsed,
        requests_per_second: if elapsed > 0.0 {
            requests as f64 / elapsed
        } else {
            0.0
        },
        cache_recovered: recovered,
        rate_limit_final: sender.rates().0,
        rate_limit_lowest: sender.rates().1,
        stopped: stop.map(|s| s.reason),
        interrupted,
        exit_code,
    };
    report.finish(&summary)?;
    tracing::info!(
        run_id = summary.run_id,
        rows_read = summary.counts.rows_read,
        unchanged = summary.counts.unchanged,
        updated = summary.counts.updated,
        rejected = summary.counts.rejected,
        failed = summary.counts.failed,
        requests = summary.requests_sent,
        earlier_retried = summary.retried_from_earlier_runs.rows_read,
        earlier_updated = summary.retried_from_earlier_runs.updated,
        earlier_rejected = summary.retried_from_earlier_runs.rejected,
        earlier_failed = summary.retried_from_earlier_runs.failed,
        left_for_next_run = cut_short,
        exit_code,
        "Run finished."
    );
    Ok(RunResult {
        summary,
        report_dir,
    })
}

/// The files in order, then the replay of earlier runs' outbox. Returns which files were
/// read to the end, where each archived one went, and the failure that stopped the run,
/// if any.
async fn sync_all(
    ctx: &Arc<Ctx>,
    sender: &Arc<Sender>,
    events: &mpsc::Sender<Event>,
    files: &[PathBuf],
    run_id: &str,
) -> (Vec<bool>, Vec<Option<String>>, Option<RunError>) {
    let mut complete = vec![false; files.len()];
    let mut archived = vec![None; files.len()];
    let archive_dir = match (&ctx.config.input.archive_dir, ctx.opts.dry_run) {
        (Some(dir), false) if ctx.opts.files.is_empty() => Some(dir.clone()),
        _ => None,
    };
    for (i, path) in files.iter().enumerate() {
        if ctx.cancel.is_cancelled() {
            return (complete, archived, None);
        }
        let (ctx2, path2, events2) = (ctx.clone(), path.clone(), events.clone());
        let produce =
            move |jobs: Option<&mpsc::Sender<Job>>| prepare_file(&ctx2, i, &path2, jobs, &events2);
        match stage(ctx, sender, events, produce).await {
            Ok(done) => complete[i] = done,
            Err(e) => return (complete, archived, Some(e)),
        }
        // Archived as soon as its rows are on disk (outcomes in the cache, rows in this
        // report), not at the end of the run: a run killed while on the next file must not
        // read this one again, or it would send this file's values over the newer file's.
        if let (Some(dir), true) = (&archive_dir, complete[i])
            && synced(events).await
        {
            archived[i] = archive(path, dir);
        }
    }
    // A baseline records rows as confirmed without sending: replaying kept records that way
    // would mark them confirmed although the API never saw them.
    if ctx.cancel.is_cancelled() || ctx.opts.baseline {
        return (complete, archived, None);
    }
    let (ctx2, events2, run_id2) = (ctx.clone(), events.clone(), run_id.to_owned());
    let produce =
        move |jobs: Option<&mpsc::Sender<Job>>| replay_earlier(&ctx2, &run_id2, jobs, &events2);
    let failure = stage(ctx, sender, events, produce).await.err();
    (complete, archived, failure)
}

/// Moves a fully synced inbox file away. A failure only costs a re-read next night (every
/// row then diffs as unchanged), so it is a warning, not a failed run.
fn archive(path: &Path, dir: &Path) -> Option<String> {
    match inbox::archive(path, dir) {
        Ok(to) => Some(to.display().to_string()),
        Err(error) => {
            tracing::warn!(%error, "Cannot archive a synced export; the next run reads it again.");
            None
        }
    }
}

/// Opens an export and resolves its header against `[columns]`.
fn open_checked(config: &Config, path: &Path) -> Result<(Export, Layout), RunError> {
    let export = Export::open(path, config.input.delimiter)?;
    let layout =
        Layout::resolve(&config.columns, export.header()).map_err(|source| RunError::Columns {
            file: path.to_path_buf(),
            source,
        })?;
    Ok((export, layout))
}
