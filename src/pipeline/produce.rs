//! The producers a stage runs on a blocking thread: the two passes over one file, and the
//! replay of what earlier runs left in the outbox; and `stage`, which runs one of them
//! against the send stage and waits until both are drained.

use std::path::Path;
use std::sync::Arc;

use csv::ByteRecord;
use tokio::sync::mpsc;

use super::events::{Batch, Event, delivered_event, recorded};
use super::journal::journal;
use super::{Ctx, Duplicates, Job, RowSeed, RunError, open_checked};
use crate::model::Position;
use crate::read::line_of;
use crate::record::{Origin, Stale};
use crate::send::Sender;

/// Runs one producer (on a blocking thread) against the send stage, and waits until both
/// are drained. Returns what the producer returns.
pub(super) async fn stage<F>(
    ctx: &Arc<Ctx>,
    sender: &Arc<Sender>,
    events: &mpsc::Sender<Event>,
    produce: F,
) -> Result<bool, RunError>
where
    F: FnOnce(Option<&mpsc::Sender<Job>>) -> Result<bool, RunError> + Send + 'static,
{
    if ctx.opts.dry_run || ctx.opts.baseline {
        let produced = tokio::task::spawn_blocking(move || produce(None)).await;
        recorded(events).await;
        return produced?;
    }
    let (jobs, job_rx) = mpsc::channel::<Job>(ctx.config.rate.max_in_flight * 2 + 16);
    // No deeper than the sender's slots: every job read ahead of the sender is one a signal
    // turns into "not sent" (measured: a queue of 640 sent 12% more a second to a local
    // sandbox, nothing to a real API's rate).
    let (durable, durable_rx) = mpsc::channel::<Job>(ctx.config.rate.max_in_flight);
    let ahead = tokio::spawn(journal(ctx.clone(), sender.clone(), job_rx, durable));
    let send = tokio::spawn(
        sender
            .clone()
            .run(durable_rx, events.clone(), delivered_event),
    );
    let produced = tokio::task::spawn_blocking(move || produce(Some(&jobs))).await;
    ahead.await?;
    send.await?;
    recorded(events).await;
    produced?
}

/// Two passes over one file: the first finds duplicates and the rows the row index knows
/// as unchanged (a row may only be sent once we know its reference is alone in the file);
/// the second decides every other row and dispatches it in order. A file whose every row
/// the index knows needs no second pass. Returns whether every row reached a bucket.
pub(super) fn prepare_file(
    ctx: &Ctx,
    file: usize,
    path: &Path,
    jobs: Option<&mpsc::Sender<Job>>,
    events: &mpsc::Sender<Event>,
) -> Result<bool, RunError> {
    let (mut export, layout) = open_checked(&ctx.config, path)?;
    let name: Arc<str> = path.display().to_string().into();
    let n = file + 1;
    if let Some(hook) = &ctx.opts.on_file {
        (hook.0)(&name, n, ctx.file_count);
    }
    ctx.progress
        .start_file(&name, n, ctx.file_count, 1, export.size());
    let seed = RowSeed::new(&ctx.config, export.header());
    let dups = {
        let index = ctx.cache.row_index();
        Duplicates::scan(&mut export, &layout, seed, &index, |at| {
            ctx.progress.set_offset(at)
        })?
    };
    let mut out = Batch::new(events);
    if dups.all_known() {
        out.unchanged(file, dups.rows);
        ctx.progress.set_offset(export.size());
        return Ok(true);
    }
    let (mut export, _) = open_checked(&ctx.config, path)?;
    ctx.progress
        .start_file(&name, n, ctx.file_count, 2, export.size());
    let decider = ctx.decider();
    let mut record = ByteRecord::new();
    let mut scratch = Vec::new();
    let mut row = 0u64;
    while export.next_record(&mut record)? {
        if ctx.cancel.is_cancelled() {
            return Ok(false);
        }
        let known = dups.known(row);
        row += 1;
        if row.is_multiple_of(64) {
            ctx.progress.set_offset(export.offset());
        }
        let reference = layout.reference(&record);
        if known && reference.is_some_and(|r| dups.lines(r).is_none()) {
            out.unchanged(file, 1);
            continue;
        }
        let pos = Position {
            file: name.clone(),
            line: line_of(&record),
        };
        let raw = Some(seed.digest(&record, &mut scratch));
        let step = decider.row(file, pos, &layout, &dups, &record, raw)?;
        if !ctx.dispatch(step, jobs, &mut out) {
            return Ok(false);
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
pub(super) fn replay_earlier(
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
        let step = decider.fields(
            Origin::Earlier,
            pos,
            reference,
            pending.fields,
            stale,
            None,
            &pending.uncertain,
        )?;
        if !ctx.dispatch(step, jobs, &mut out) {
            return Ok(false);
        }
    }
    Ok(true)
}
