//! The record channel's plumbing: what travels to the record thread, how producers batch
//! it, the barrier that ends each stage, and the record thread's loop.

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::decide::{Job, delivered};
use crate::record::{Outcome, RecordError, Recorder};
use crate::send::Delivery;

/// What the record thread receives.
pub(super) enum Event {
    Outcome(Outcome),
    Outcomes(Vec<Outcome>),
    /// Rows of a file the row index answered as unchanged.
    Unchanged {
        file: usize,
        rows: u64,
    },
    /// Answered once every earlier event is recorded.
    Barrier(oneshot::Sender<()>),
    /// Answered once every earlier event is recorded and on disk (report rows and cache):
    /// `false` when that failed (the run is then stopped).
    Sync(oneshot::Sender<bool>),
}

pub(super) fn delivered_event(job: Job, delivery: Delivery) -> Event {
    Event::Outcome(delivered(job, delivery))
}

/// Waits until the record thread has recorded everything sent before. The next stage reads
/// the cache (confirmed values, the outbox), so it must see this stage's outcomes: without
/// this, a replay of an earlier run's failure could overtake the newer row that replaced it.
pub(super) async fn recorded(events: &mpsc::Sender<Event>) {
    let (done, wait) = oneshot::channel();
    if events.send(Event::Barrier(done)).await.is_ok() {
        // An error means the record thread is gone; the run reports its failure.
        let _ = wait.await;
    }
}

/// Waits until everything sent before is recorded and on disk. `false` when it is not
/// (a write failed and the run is stopping, or the record thread is gone).
pub(super) async fn synced(events: &mpsc::Sender<Event>) -> bool {
    let (done, wait) = oneshot::channel();
    if events.send(Event::Sync(done)).await.is_err() {
        return false;
    }
    wait.await.unwrap_or(false)
}

/// Final outcomes on their way to the record thread, sent in batches: one channel message
/// (and one thread wake-up) per row cost more than deciding an unchanged row. Flushed when
/// dropped, so every return path of a producer delivers what it decided.
pub(super) struct Batch<'a> {
    events: &'a mpsc::Sender<Event>,
    buf: Vec<Outcome>,
    /// Rows answered from the row index, per file: counted here, sent once.
    unchanged: Option<(usize, u64)>,
}

impl<'a> Batch<'a> {
    const SIZE: usize = 256;

    pub(super) fn new(events: &'a mpsc::Sender<Event>) -> Self {
        Batch {
            events,
            buf: Vec::with_capacity(Self::SIZE),
            unchanged: None,
        }
    }

    /// Counts a row of `file` the row index answered as unchanged.
    pub(super) fn unchanged(&mut self, file: usize, rows: u64) {
        match &mut self.unchanged {
            Some((f, n)) if *f == file => *n += rows,
            _ => {
                self.flush_unchanged();
                self.unchanged = Some((file, rows));
            }
        }
    }

    fn flush_unchanged(&mut self) {
        if let Some((file, rows)) = self.unchanged.take() {
            let _ = self.events.blocking_send(Event::Unchanged { file, rows });
        }
    }

    /// `false` once the record thread is gone.
    pub(super) fn push(&mut self, outcome: Outcome) -> bool {
        self.buf.push(outcome);
        self.buf.len() < Self::SIZE || self.flush()
    }

    fn flush(&mut self) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        let batch = std::mem::replace(&mut self.buf, Vec::with_capacity(Self::SIZE));
        self.events.blocking_send(Event::Outcomes(batch)).is_ok()
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.flush();
        self.flush_unchanged();
    }
}

/// The record thread. On a write error it stops the run but keeps draining, so no stage
/// blocks on a full channel; the recorder comes back either way so the report can be
/// finished.
pub(super) fn record_all(
    mut recorder: Recorder,
    mut events: mpsc::Receiver<Event>,
    cancel: CancellationToken,
) -> (Recorder, Option<RecordError>) {
    let mut failure = None;
    while let Some(event) = events.blocking_recv() {
        let outcomes = match event {
            Event::Outcome(o) => vec![o],
            Event::Outcomes(batch) => batch,
            Event::Unchanged { file, rows } => {
                recorder.unchanged(file, rows);
                continue;
            }
            Event::Barrier(done) => {
                let _ = done.send(());
                continue;
            }
            Event::Sync(done) => {
                if failure.is_none() {
                    failure = stop_on(recorder.sync(), "put the run's records on disk", &cancel);
                }
                let _ = done.send(failure.is_none());
                continue;
            }
        };
        for outcome in outcomes {
            if failure.is_some() {
                break;
            }
            failure = stop_on(recorder.record(outcome), "record an outcome", &cancel);
        }
    }
    (recorder, failure)
}

/// The first write error stops the run; the record thread then drains events unwritten.
fn stop_on(
    result: Result<(), RecordError>,
    what: &str,
    cancel: &CancellationToken,
) -> Option<RecordError> {
    let e = result.err()?;
    tracing::error!(error = %e, "Cannot {what}; stopping the run.");
    cancel.cancel();
    Some(e)
}
