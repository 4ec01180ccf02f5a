//! Write-ahead: a job's outbox entry is on disk before its request starts. The order is
//! outbox entry, request, cache update (ARCHITECTURE.md, "Crash safety"): a process killed
//! while a request is in flight, or before its answer is recorded, leaves the entry behind,
//! and the next run sends the record again even when it is given other files, or none.
//!
//! Entries are written in batches, one fsync each (group commit): while one batch is
//! flushed the next gathers in the channel, so a fast API costs a flush per batch, not
//! per request.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Ctx, Job};
use crate::cache::{Cache, CacheError, Pending};
use crate::model::{Category, Problem};
use crate::send::Sender;

/// Jobs written per flush at most; also bounds how far entries run ahead of requests.
const BATCH: usize = 128;

/// Passes every job from `jobs` to `out` once its entry is durable. A write error stops the
/// run (exit 2); the jobs still go on, and the stopped sender reports them as not sent.
pub(super) async fn journal(
    ctx: Arc<Ctx>,
    sender: Arc<Sender>,
    mut jobs: mpsc::Receiver<Job>,
    out: mpsc::Sender<Job>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while jobs.recv_many(&mut batch, BATCH).await > 0 {
        if !sender.cancel.is_cancelled() {
            let entries: Vec<(String, Pending, bool)> =
                batch.iter().map(|job| entry(job, &ctx.run_id)).collect();
            let cache = ctx.cache.clone();
            let written = tokio::task::spawn_blocking(move || write(&cache, &entries)).await;
            let error = match written {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(e.to_string()),
            };
            if let Some(error) = error {
                sender.stop(
                    format!("cannot write the outbox before sending: {error}"),
                    true,
                );
            }
        }
        for job in batch.drain(..) {
            if out.send(job).await.is_err() {
                return;
            }
        }
    }
}

fn write(cache: &Cache, entries: &[(String, Pending, bool)]) -> Result<(), CacheError> {
    cache.keep_pending_batch(entries)?;
    cache.flush_blocking()
}

/// The entry a job leaves if nothing is ever recorded for it: what `cache show` says of a
/// record whose run was killed while it was being sent.
fn entry(job: &Job, run_id: &str) -> (String, Pending, bool) {
    let pending = Pending {
        fields: job.fields.clone(),
        file: job.pos.file.to_string(),
        line: job.pos.line,
        run_id: run_id.to_owned(),
        problem: Problem {
            category: Category::Failed,
            http_status: None,
            field: String::new(),
            message: "sent, but the run ended before the answer was recorded".into(),
        },
        uncertain: job.patch.fields(),
    };
    (job.reference.clone(), pending, job.stale.rejection)
}
