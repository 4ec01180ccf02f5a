//! The scheduling loop of `accountsync daemon`, generic over what a run does ([`Host`]) so it
//! is tested with a fake instead of the pipeline.
//!
//! One task owns the state and reacts to four events, in this order of precedence: shutdown,
//! a run finishing, a tick, a reload request. Runs never overlap: tokio-cron-scheduler spawns
//! its jobs without waiting for the previous one (#50, #83), so its jobs only report a tick
//! here (see `daemon/ticker.rs`), and a tick that finds a run going is skipped with a
//! warning. Reloads wait for the run in progress, so a run always sees one config throughout.

mod notify;
mod ticker;

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle};
use tokio_cron_scheduler::JobSchedulerError;
use tokio_util::sync::CancellationToken;

use crate::schedule::Schedule;
use notify::Watchdog;
pub use notify::{Notice, Notifier, RecordingNotifier, SdNotifier};
use ticker::{Tick, Ticker};

/// What the daemon drives: the real one syncs the inbox with the pipeline.
///
/// `last_completed`, `set_last_completed` and `reload` are only called while no run is in
/// progress, so the host may keep them in the cache that a run holds locked.
pub trait Host: Send + Sync + 'static {
    /// One inbox sync. `cancel` is cancelled on SIGTERM/SIGINT: the run then stops reading,
    /// lets requests in flight finish and writes an "interrupted" report. Returns the run's
    /// exit code (0, 1 or 2, as `accountsync run`). The host logs the run's start and end
    /// at info and, for a run that could not proceed, its cause at error: the loop's own
    /// lines about a run are debug.
    fn run(&self, cancel: CancellationToken) -> impl Future<Output = i32> + Send;

    /// Re-reads the config (on SIGHUP). `Err(message)` keeps the old config; `Ok` gives the
    /// schedule of the new one.
    fn reload(&self) -> Result<Schedule, String>;

    /// When the last run that was not interrupted by shutdown ended; persisted by the host.
    fn last_completed(&self) -> Option<DateTime<Utc>>;

    fn set_last_completed(&self, at: DateTime<Utc>);
}

#[derive(Clone, Debug, Default)]
pub struct DaemonOptions {
    /// `--run-now`: one run at start, then the schedule (a due catch-up does not add a second).
    pub run_now: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("tokio-cron-scheduler failed {doing}: {source:?}")]
    Scheduler {
        doing: &'static str,
        source: JobSchedulerError,
    },
}

/// Runs `host` on `schedule` until `shutdown` is cancelled, then cancels the run in progress,
/// waits for it to end and returns `Ok`.
///
/// - A run at start when `opts.run_now`, or when a fire time passed since
///   `host.last_completed()` while the daemon was down ([`Schedule::missed`]); once if both.
/// - After every run, whatever its exit code, `host.set_last_completed(now)` — except a run
///   cut short by shutdown: the export it was syncing is then caught up at the next start.
///   A run exiting 2 is logged as an error and the schedule goes on.
/// - Each message on `reload` (the integrator sends one per SIGHUP) calls `host.reload()`
///   at once when idle, else when the current run ends; several while a run goes count once.
///   A closed channel just means no more reloads.
/// - `notifier` gets `READY=1`, `STATUS=` lines and `STOPPING=1`, plus `WATCHDOG=1` pings
///   when it reports a watchdog interval. Give the host the same `Arc` for finer status.
///
/// `Err` only when tokio-cron-scheduler fails; the run in progress is still waited for.
pub async fn serve<H: Host>(
    host: Arc<H>,
    schedule: Schedule,
    opts: DaemonOptions,
    shutdown: CancellationToken,
    reload: mpsc::Receiver<()>,
    notifier: Arc<dyn Notifier>,
) -> Result<(), DaemonError> {
    let (ticker, ticks) = Ticker::start().await?;
    let _watchdog = Watchdog::start(notifier.clone());
    let mut daemon = Daemon {
        host,
        schedule,
        notifier,
        ticker,
        running: None,
        reload_pending: false,
    };
    let result = daemon.serve(opts, &shutdown, ticks, reload).await;
    daemon.notifier.notify(Notice::Stopping);
    daemon.stop().await;
    result
}

struct Daemon<H> {
    host: Arc<H>,
    schedule: Schedule,
    notifier: Arc<dyn Notifier>,
    ticker: Ticker,
    running: Option<Running>,
    reload_pending: bool,
}

struct Running {
    handle: JoinHandle<i32>,
    cancel: CancellationToken,
}

impl<H: Host> Daemon<H> {
    async fn serve(
        &mut self,
        opts: DaemonOptions,
        shutdown: &CancellationToken,
        mut ticks: mpsc::UnboundedReceiver<Tick>,
        mut reload: mpsc::Receiver<()>,
    ) -> Result<(), DaemonError> {
        let now = Utc::now();
        let catch_up = self.schedule.missed(self.host.last_completed(), now);
        self.arm(now).await?;
        tracing::info!(schedule = %self.schedule, "Daemon started.");
        self.notifier.notify(Notice::Ready);
        if opts.run_now || catch_up {
            let reason = if opts.run_now {
                "--run-now"
            } else {
                "catch-up"
            };
            self.start_run(reason, shutdown);
        } else {
            self.idle();
        }
        let mut reloads_open = true;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                result = finished(&mut self.running) => self.finish(result).await?,
                Some(tick) = ticks.recv() => self.tick(tick, shutdown).await?,
                request = reload.recv(), if reloads_open => match request {
                    Some(()) if self.running.is_some() => {
                        tracing::info!("Reload requested; applied when the current run ends.");
                        self.reload_pending = true;
                    }
                    Some(()) => {
                        self.reload().await?;
                        self.idle();
                    }
                    None => reloads_open = false,
                },
            }
        }
    }

    /// Arms the ticker for the first fire time after `after`.
    async fn arm(&mut self, after: DateTime<Utc>) -> Result<(), DaemonError> {
        let next = self.schedule.next_after(after);
        if next.is_none() {
            tracing::error!(schedule = %self.schedule, "The schedule has no further fire time; nothing will run until a reload.");
        }
        self.ticker.arm(next).await
    }

    async fn tick(&mut self, tick: Tick, shutdown: &CancellationToken) -> Result<(), DaemonError> {
        if !self.ticker.is_current(&tick) {
            return Ok(());
        }
        // From the later of the two: a tick delivered late (suspend, a busy machine) does not
        // replay the fire times it overslept.
        self.arm(tick.at.max(Utc::now())).await?;
        if self.running.is_some() {
            tracing::warn!(
                due = %self.schedule.format_local(tick.at),
                "run still going, tick skipped"
            );
        } else {
            self.start_run("schedule", shutdown);
        }
        Ok(())
    }

    fn start_run(&mut self, reason: &'static str, shutdown: &CancellationToken) {
        // Debug: the run's own `Run started.` (with its run_id) is the line at info.
        tracing::debug!(reason, "Sync starting.");
        self.notifier.status("syncing");
        let cancel = shutdown.child_token();
        let host = self.host.clone();
        let token = cancel.clone();
        let handle = tokio::spawn(async move { host.run(token).await });
        self.running = Some(Running { handle, cancel });
    }

    async fn finish(&mut self, result: Result<i32, JoinError>) -> Result<(), DaemonError> {
        self.running = None;
        log_exit(result);
        self.host.set_last_completed(Utc::now());
        if std::mem::take(&mut self.reload_pending) {
            self.reload().await?;
        }
        self.idle();
        Ok(())
    }

    async fn reload(&mut self) -> Result<(), DaemonError> {
        match self.host.reload() {
            Ok(schedule) => {
                tracing::info!(schedule = %schedule, "Config reloaded.");
                self.schedule = schedule;
                self.arm(Utc::now()).await?;
            }
            Err(message) => tracing::warn!(
                %message,
                "Config reload failed; keeping the previous config and schedule."
            ),
        }
        Ok(())
    }

    fn idle(&self) {
        let status = match self.ticker.next() {
            Some(at) => format!("idle, next run at {}", self.schedule.format_local(at)),
            None => "idle, no run scheduled".to_owned(),
        };
        self.notifier.status(&status);
    }

    /// Shutdown: no more ticks; the run in progress is told to stop and waited for (it bounds
    /// itself by its deadline). Its end is not recorded as a completion.
    async fn stop(self) {
        self.ticker.stop().await;
        if let Some(run) = self.running {
            tracing::info!("Shutting down: waiting for the current run to stop.");
            run.cancel.cancel();
            log_exit(run.handle.await);
        }
    }
}

/// The run in progress ending; never, when there is none.
async fn finished(running: &mut Option<Running>) -> Result<i32, JoinError> {
    match running {
        Some(run) => (&mut run.handle).await,
        None => std::future::pending().await,
    }
}

/// Debug, whatever the code: a run logs its own `Run finished.` with its run_id and counts,
/// and the host logs why a run failed, at error, with the cause ([`Host::run`]); a second
/// line per run here would only repeat them. A task that panicked has neither, so that one
/// is an error here.
fn log_exit(result: Result<i32, JoinError>) {
    match result {
        Ok(0) => tracing::debug!(code = 0, "Sync finished."),
        Ok(1) => tracing::debug!(
            code = 1,
            "Sync finished; some records were rejected or failed (see the report)."
        ),
        Ok(code) => tracing::debug!(
            code,
            "Sync could not proceed; the schedule continues with the next run."
        ),
        Err(error) => tracing::error!(%error, "Sync task failed; the schedule continues."),
    }
}

#[cfg(test)]
#[path = "daemon_tests.rs"]
mod tests;
