//! `daemon`: the inbox sync on `[schedule].cron` until SIGTERM/SIGINT. The loop itself is
//! `accountsync::daemon::serve`; this file is the real [`Host`] (the pipeline, the config
//! that SIGHUP replaces, the last-run marker beside the cache) and the signal wiring.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use accountsync::cache::{CacheError, last_run, set_last_run};
use accountsync::config::Config;
use accountsync::daemon::{self, DaemonOptions, Host, Notifier, SdNotifier};
use accountsync::pipeline::{self, FileHook, RunError, RunOptions};
use accountsync::schedule::Schedule;
use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cmd::run::{exit_on_second, termination, write_failed_metrics, write_metrics};

struct Daemon {
    config_path: PathBuf,
    /// Replaced by a successful SIGHUP reload; a run clones it once at its start.
    config: Mutex<Config>,
    notifier: Arc<dyn Notifier>,
}

impl Daemon {
    fn config(&self) -> Config {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Host for Daemon {
    async fn run(&self, cancel: CancellationToken) -> i32 {
        let config = self.config();
        // Read each night, so a rotated credential is picked up without a restart.
        let token = match config.token() {
            Ok(t) => t,
            Err(error) => {
                tracing::error!(%error, "Cannot start the run; the schedule continues with the next run.");
                write_failed_metrics(&config);
                return 2;
            }
        };
        let notifier = self.notifier.clone();
        let opts = RunOptions {
            progress: true,
            shutdown: cancel.clone(),
            on_file: Some(FileHook(Arc::new(move |file, n, of| {
                notifier.status(&format!("syncing {file} ({n}/{of})"));
            }))),
            ..RunOptions::default()
        };
        let started = Instant::now();
        let mut waiting = false;
        let outcome = loop {
            let error = match pipeline::run(&config, &token, opts.clone()).await {
                Ok(result) => break Ok(result),
                Err(error) => error,
            };
            let Some(pause) = retry_after(&error, started.elapsed()) else {
                break Err(error);
            };
            if !std::mem::replace(&mut waiting, true) {
                tracing::info!(
                    cache = %config.cache_path.display(),
                    "The cache is in use by another accountsync process (an operator's `accountsync cache` command?); the run waits up to {} s for it.",
                    CACHE_WAIT.as_secs()
                );
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = cancel.cancelled() => {
                    // As a run stopped before reading: the inbox waits for the next run.
                    tracing::info!("Stopped while waiting for the cache; the inbox waits for the next run.");
                    return 1;
                }
            }
        };
        match outcome {
            Ok(result) => {
                write_metrics(&config, &result);
                log_stop(&result);
                result.summary.exit_code
            }
            Err(error) => {
                // Before the run had a run_id: this is the one line that says why.
                tracing::error!(%error, "The run could not proceed; the schedule continues with the next run.");
                write_failed_metrics(&config);
                2
            }
        }
    }

    fn reload(&self) -> Result<Schedule, String> {
        let config = Config::load(&self.config_path).map_err(|e| e.to_string())?;
        // As at start: a config whose token cannot be read would fail every night.
        config.token().map_err(|e| e.to_string())?;
        let schedule =
            Schedule::parse(&config.cron, &config.timezone).map_err(|e| e.to_string())?;
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(schedule)
    }

    fn last_completed(&self) -> Option<DateTime<Utc>> {
        last_run(&self.config().cache_path)
    }

    fn set_last_completed(&self, at: DateTime<Utc>) {
        if let Err(error) = set_last_run(&self.config().cache_path, at) {
            // Costs at most one catch-up run too many after a restart.
            tracing::warn!(%error, "Cannot record when the run ended.");
        }
    }
}

/// A run that stopped early (401, a write failure, a long Retry-After, SIGTERM): why, at
/// error when it exited 2, as `accountsync run` prints it; its `Run finished.` line has the
/// counts but not the reason.
fn log_stop(result: &pipeline::RunResult) {
    let s = &result.summary;
    let Some(why) = &s.stopped else {
        return;
    };
    let report = result.report_dir.display();
    if s.exit_code == 2 {
        tracing::error!(run_id = s.run_id, %report, "The run stopped: {why}");
    } else {
        tracing::warn!(run_id = s.run_id, %report, "The run stopped: {why}");
    }
}

/// How long a scheduled run waits for a cache another process holds. sled's lock is
/// exclusive, so an operator's `cache stats` or `cache export` at the minute a run starts
/// would otherwise cost the night; `accountsync run` still fails at once (CONTRACT §1).
const CACHE_WAIT: Duration = Duration::from_secs(60);

/// Between two tries; each try also lets the inbox settle (1 s) when it has files.
const CACHE_RETRY_EVERY: Duration = Duration::from_secs(1);

/// The pause before trying the run again, `waited` into the wait, after it failed with
/// `error`; `None` to fail now. Only a cache in use by another process is waited for:
/// nothing else that stops a run before it starts goes away by itself within a minute.
fn retry_after(error: &RunError, waited: Duration) -> Option<Duration> {
    let locked = matches!(error, RunError::Cache(CacheError::Locked { .. }));
    (locked && waited + CACHE_RETRY_EVERY <= CACHE_WAIT).then_some(CACHE_RETRY_EVERY)
}

pub fn daemon(config_path: &Path, run_now: bool) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let schedule = Schedule::parse(&config.cron, &config.timezone)
        .with_context(|| format!("config file {}: [schedule]", config.path.display()))?;
    config.token()?; // refuse to start without one, rather than fail every night
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let reloads = hangups().context("cannot listen for SIGHUP")?;
        if let Some(mut signals) = termination() {
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let name = signals.recv().await;
                tracing::info!(
                    signal = name,
                    "Stopping: a run in progress finishes its requests in flight."
                );
                stop.cancel();
                exit_on_second(signals).await;
            });
        }
        let notifier: Arc<dyn Notifier> = Arc::new(SdNotifier::new());
        let host = Arc::new(Daemon {
            config_path: config_path.to_path_buf(),
            config: Mutex::new(config),
            notifier: notifier.clone(),
        });
        let opts = DaemonOptions { run_now };
        daemon::serve(host, schedule, opts, shutdown, reloads, notifier).await?;
        tracing::info!("Daemon stopped.");
        Ok(())
    })
}

/// One message per SIGHUP. The handler is installed before the loop starts: an unhandled
/// SIGHUP would end the process.
fn hangups() -> std::io::Result<mpsc::Receiver<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: the config is reloaded once no run is in progress.");
            let _ = tx.try_send(());
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_cache_in_use_is_waited_for_and_for_a_minute_at_most() {
        let locked = || {
            RunError::Cache(CacheError::Locked {
                path: "/var/lib/accountsync/cache".into(),
            })
        };
        assert_eq!(
            retry_after(&locked(), Duration::ZERO),
            Some(CACHE_RETRY_EVERY)
        );
        assert_eq!(
            retry_after(&locked(), Duration::from_secs(59)),
            Some(CACHE_RETRY_EVERY)
        );
        assert_eq!(retry_after(&locked(), Duration::from_millis(59_001)), None);
        let other = RunError::Cache(CacheError::Schema {
            path: "/var/lib/accountsync/cache".into(),
            found: "9".into(),
        });
        assert_eq!(retry_after(&other, Duration::ZERO), None);
    }
}
