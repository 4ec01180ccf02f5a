//! tokio-cron-scheduler fires the daemon's ticks, one one-shot job at a time.
//!
//! Not as a cron job: `Job::new_async_tz` freezes the zone's UTC offset when the job is
//! created, so a nightly job runs an hour off after the next DST change (tokio-cron-scheduler
//! #87, #107). Instead [`Schedule::next_after`](crate::schedule::Schedule::next_after)
//! computes each fire time in the zone, a one-shot job is registered for that instant
//! (`Job::new_one_shot_at_instant_async`), and the loop re-arms after every tick.
//!
//! Two properties of those jobs shape this file. The scheduler checks its jobs every 500 ms
//! against the wall clock at whole-second precision, and `new_one_shot_at_instant` truncates
//! the delay to whole seconds, so a job can fire up to about 1.5 s early: the job waits out
//! the rest itself before reporting, so a run never starts before its fire time (a run that
//! ended before it would leave that fire time "missed"). And a job replaced by a reload may
//! still fire: each tick carries the generation it was armed in, and stale ones are ignored.

use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use uuid::Uuid;

use super::DaemonError;

/// A fire time reached.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tick {
    generation: u64,
    pub(super) at: DateTime<Utc>,
}

pub(super) struct Ticker {
    scheduler: JobScheduler,
    tx: mpsc::UnboundedSender<Tick>,
    job: Option<Uuid>,
    generation: u64,
    next: Option<DateTime<Utc>>,
}

fn failed(doing: &'static str) -> impl FnOnce(JobSchedulerError) -> DaemonError {
    move |source| DaemonError::Scheduler { doing, source }
}

impl Ticker {
    pub(super) async fn start() -> Result<(Ticker, mpsc::UnboundedReceiver<Tick>), DaemonError> {
        let scheduler = JobScheduler::new()
            .await
            .map_err(failed("creating the job scheduler"))?;
        scheduler
            .start()
            .await
            .map_err(failed("starting the job scheduler"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let ticker = Ticker {
            scheduler,
            tx,
            job: None,
            generation: 0,
            next: None,
        };
        Ok((ticker, rx))
    }

    /// Replaces the pending job by one firing at `at`; `None` leaves nothing scheduled.
    pub(super) async fn arm(&mut self, at: Option<DateTime<Utc>>) -> Result<(), DaemonError> {
        if let Some(old) = self.job.take() {
            // A job that has fired is removed by the scheduler itself; either way it is gone.
            let _ = self.scheduler.remove(&old).await;
        }
        self.generation += 1;
        self.next = at;
        let Some(at) = at else { return Ok(()) };
        let tick = Tick {
            generation: self.generation,
            at,
        };
        let delay = (at - Utc::now()).to_std().unwrap_or_default();
        let tx = self.tx.clone();
        let job = Job::new_one_shot_at_instant_async(Instant::now() + delay, move |_, _| {
            let tx = tx.clone();
            Box::pin(async move {
                if let Ok(early) = (tick.at - Utc::now()).to_std() {
                    tokio::time::sleep(early).await;
                }
                // The loop has gone: nothing left to tell.
                let _ = tx.send(tick);
            })
        })
        .map_err(failed("creating the next tick's job"))?;
        let id = self
            .scheduler
            .add(job)
            .await
            .map_err(failed("scheduling the next tick"))?;
        self.job = Some(id);
        Ok(())
    }

    /// When the pending job fires.
    pub(super) fn next(&self) -> Option<DateTime<Utc>> {
        self.next
    }

    /// False for a tick from a job replaced since (by a reload).
    pub(super) fn is_current(&self, tick: &Tick) -> bool {
        tick.generation == self.generation
    }

    pub(super) async fn stop(mut self) {
        if let Some(job) = self.job.take() {
            let _ = self.scheduler.remove(&job).await;
        }
        if let Err(error) = self.scheduler.shutdown().await {
            tracing::debug!(%error, "Job scheduler shutdown");
        }
    }
}
