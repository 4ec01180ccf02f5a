//! Wires the stages. Per file: a blocking thread reads, maps, validates and diffs (the csv
//! parser and sled reads block); jobs go through a bounded channel to the async send stage;
//! every outcome goes through another bounded channel to the record thread, which alone
//! writes the cache and the report. Files are synced one after another, each drained before
//! the next starts, so a later file's row for an account always lands after an earlier one.

mod decide;
mod events;
mod progress;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use chrono::Utc;
use csv::ByteRecord;
use secrecy::SecretString;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cache::{Cache, CacheError};
use crate::config::Config;
use crate::inbox::{self, InboxError};
use crate::map::{Layout, MapError};
use crate::model::Position;
use crate::read::{Export, ReadError, line_of};
use crate::record::{Origin, Outcome, RecordError, Recorder, Stale, Verdict};
use crate::report::{Counts, FileSummary, Report, ReportError, Summary};
use crate::send::client::{Client, ClientError};
use crate::send::throttle::Throttle;
use crate::send::{Sender, Stop};
pub use decide::{Decider, Duplicates, Job, Step, delivered};
use events::{Batch, Event, delivered_event, record_all, recorded};
pub use progress::Progress;

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
    pub retry_rejected: bool,
    pub progress: bool,
}

pub struct RunResult {
    pub summary: Summary,
    pub report_dir: PathBuf,
}

/// What every stage of one run shares.
struct Ctx {
    config: Config,
    cache: Cache,
    address_types: Vec<String>,
    today: chrono::NaiveDate,
    opts: RunOptions,
    cancel: CancellationToken,
    progress: Progress,
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
    let files = if from_inbox {
        inbox::list(&config.input.dir, &config.input.pattern)?
    } else {
        opts.files.clone()
    };
    if from_inbox && files.is_empty() {
        tracing::warn!(dir = %config.input.dir.display(), pattern = config.input.pattern, "The inbox holds no export to sync.");
    }
    // Every file is checked before anything is sent, so a bad header in the third file
    // stops the run before the first two have changed anything.
    for path in &files {
        open_checked(config, path)?;
    }
    let client = Client::new(&config.api, token)?;
    let cache = if opts.dry_run {
        Cache::open_copy(&config.cache_path, config.cache_memory_mb)?
    } else {
        Cache::open(&config.cache_path, config.cache_memory_mb)?
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
        address_types: config.columns.addresses.keys().cloned().collect(),
        today: started.date_naive(),
        cancel: sender.cancel.clone(),
        progress: Progress::new(opts.progress),
        opts: opts.clone(),
    });
    let watcher = ctx.progress.watch(sender.stats.clone());
    // Counted in events, and a batch event holds 256 outcomes (a new account's outcome
    // carries its whole patch, a few KB): 16 keeps the backlog in the low tens of MB.
    let (events, event_rx) = mpsc::channel::<Event>(16);
    let recorder = Recorder::new(cache.clone(), report, files.len(), opts.dry_run);
    let cancel = sender.cancel.clone();
    let record_task = tokio::task::spawn_blocking(move || record_all(recorder, event_rx, cancel));

    let (complete, failure) = sync_all(&ctx, &sender, &events, &files, &run_id).await;
    drop(events);
    watcher.abort();
    ctx.progress.finish();
    let (recorder, record_failure) = record_task.await?;
    let flushed = cache.flush().await.err();
    let failure = failure
        .or(record_failure.map(RunError::from))
        .or(flushed.map(RunError::from));
    let stop = match failure {
        Some(e) => Some(Stop {
            reason: e.to_string(),
            fatal: true,
        }),
        None => sender.stopped(),
    };
    let (report, per_file, earlier) = recorder.into_report();

    let mut summaries = Vec::new();
    let mut total = Counts::default();
    for ((path, counts), done) in files.iter().zip(per_file).zip(complete) {
        total.add(&counts);
        let archived_to = match &config.input.archive_dir {
            Some(dir) if from_inbox && done && !opts.dry_run && stop.is_none() => {
                archive(path, dir)
            }
            _ => None,
        };
        summaries.push(FileSummary {
            path: path.display().to_string(),
            counts,
            complete: done,
            archived_to,
        });
    }
    let exit_code = match &stop {
        Some(s) if s.fatal => 2,
        Some(_) => 1,
        None if total.rejected + total.failed + earlier.rejected + earlier.failed > 0 => 1,
        None => 0,
    };
    let elapsed = clock.elapsed().as_secs_f64();
    let requests = sender.stats.requests.load(Ordering::Relaxed);
    let summary = Summary {
        run_id,
        dry_run: opts.dry_run,
        files: summaries,
        counts: total,
        retried_from_earlier_runs: earlier,
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
        stopped: stop.map(|s| s.reason),
        exit_code,
        // Set by the daemon's signal handling (nightly-service issue), not by a run yet.
        interrupted: false,
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
        exit_code,
        "Run finished."
    );
    Ok(RunResult {
        summary,
        report_dir,
    })
}

/// The files in order, then the replay of earlier runs' outbox. Returns which files were
/// read to the end, and the failure that stopped the run, if any.
async fn sync_all(
    ctx: &Arc<Ctx>,
    sender: &Arc<Sender>,
    events: &mpsc::Sender<Event>,
    files: &[PathBuf],
    run_id: &str,
) -> (Vec<bool>, Option<RunError>) {
    let mut complete = vec![false; files.len()];
    for (i, path) in files.iter().enumerate() {
        if ctx.cancel.is_cancelled() {
            return (complete, None);
        }
        let (ctx2, path2, events2) = (ctx.clone(), path.clone(), events.clone());
        let produce =
            move |jobs: Option<&mpsc::Sender<Job>>| prepare_file(&ctx2, i, &path2, jobs, &events2);
        match stage(ctx, sender, events, produce).await {
            Ok(done) => complete[i] = done,
            Err(e) => return (complete, Some(e)),
        }
    }
    if ctx.cancel.is_cancelled() {
        return (complete, None);
    }
    let (ctx2, events2, run_id2) = (ctx.clone(), events.clone(), run_id.to_owned());
    let produce =
        move |jobs: Option<&mpsc::Sender<Job>>| replay_earlier(&ctx2, &run_id2, jobs, &events2);
    let failure = stage(ctx, sender, events, produce).await.err();
    (complete, failure)
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

/// Runs one producer (on a blocking thread) against the send stage, and waits until both
/// are drained. Returns what the producer returns.
async fn stage<F>(
    ctx: &Arc<Ctx>,
    sender: &Arc<Sender>,
    events: &mpsc::Sender<Event>,
    produce: F,
) -> Result<bool, RunError>
where
    F: FnOnce(Option<&mpsc::Sender<Job>>) -> Result<bool, RunError> + Send + 'static,
{
    if ctx.opts.dry_run {
        let produced = tokio::task::spawn_blocking(move || produce(None)).await;
        recorded(events).await;
        return produced?;
    }
    let (jobs, job_rx) = mpsc::channel::<Job>(ctx.config.rate.max_in_flight * 2 + 16);
    let send = tokio::spawn(sender.clone().run(job_rx, events.clone(), delivered_event));
    let produced = tokio::task::spawn_blocking(move || produce(Some(&jobs))).await;
    send.await?;
    recorded(events).await;
    produced?
}

/// Two passes over one file: duplicates first (a row may only be sent once we know its
/// reference is alone in the file), then every row decided and dispatched in order.
/// Returns whether every row reached a bucket.
fn prepare_file(
    ctx: &Ctx,
    file: usize,
    path: &Path,
    jobs: Option<&mpsc::Sender<Job>>,
    events: &mpsc::Sender<Event>,
) -> Result<bool, RunError> {
    let (mut export, layout) = open_checked(&ctx.config, path)?;
    let dups = Duplicates::scan(&mut export, &layout)?;
    let (mut export, _) = open_checked(&ctx.config, path)?;
    let name: Arc<str> = path.display().to_string().into();
    ctx.progress.start_file(&name, export.size());
    let decider = ctx.decider();
    let mut out = Batch::new(events);
    let mut record = ByteRecord::new();
    let mut rows = 0u64;
    while export.next_record(&mut record)? {
        if ctx.cancel.is_cancelled() {
            return Ok(false);
        }
        let pos = Position {
            file: name.clone(),
            line: line_of(&record),
        };
        let step = decider.row(file, pos, &layout, &dups, &record)?;
        if !ctx.dispatch(step, jobs, &mut out) {
            return Ok(false);
        }
        rows += 1;
        if rows.is_multiple_of(64) {
            ctx.progress.set_offset(export.offset());
        }
    }
    if export.offset() != dups.bytes {
        return Err(RunError::Changed {
            file: path.to_path_buf(),
        });
    }
    ctx.progress.set_offset(export.size());
    Ok(true)
}

/// Records an earlier run could not deliver: diffed again against what is confirmed now.
/// Entries that a row of this run replaced are gone (confirmed, rejected, unchanged) or
/// carry this run's id (failed again), so they are skipped here; the barrier after each
/// file guarantees those outcomes are recorded before this reads the outbox.
fn replay_earlier(
    ctx: &Ctx,
    run_id: &str,
    jobs: Option<&mpsc::Sender<Job>>,
    events: &mpsc::Sender<Event>,
) -> Result<bool, RunError> {
    let decider = ctx.decider();
    let mut out = Batch::new(events);
    for entry in ctx.cache.pending_before(run_id) {
        if ctx.cancel.is_cancelled() {
            return Ok(false);
        }
        let (reference, pending) = entry?;
        let pos = Position {
            file: pending.file.into(),
            line: pending.line,
        };
        let stale = Stale {
            pending: true,
            rejection: false,
        };
        let step = decider.fields(Origin::Earlier, pos, reference, pending.fields, stale)?;
        if !ctx.dispatch(step, jobs, &mut out) {
            return Ok(false);
        }
    }
    Ok(true)
}
