//! `daemon`: the inbox sync on `[schedule].cron` until SIGTERM/SIGINT. The loop itself is
//! `accountsync::daemon::serve`; this file is the real [`Host`] (the pipeline, the config
//! that SIGHUP replaces, the last-run marker beside the cache) and the signal wiring.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use accountsync::cache::{last_run, set_last_run};
use accountsync::config::Config;
use accountsync::daemon::{self, DaemonOptions, Host, Notifier, SdNotifier};
use accountsync::pipeline::{self, FileHook, RunOptions};
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
                tracing::error!(%error, "Cannot start the run.");
                write_failed_metrics(&config);
                return 2;
            }
        };
        let notifier = self.notifier.clone();
        let opts = RunOptions {
            progress: true,
            shutdown: cancel,
            on_file: Some(FileHook(Arc::new(move |file, n, of| {
                notifier.status(&format!("syncing {file} ({n}/{of})"));
            }))),
            ..RunOptions::default()
        };
        match pipeline::run(&config, &token, opts).await {
            Ok(result) => {
                write_metrics(&config, &result);
                result.summary.exit_code
            }
            Err(error) => {
                tracing::error!(%error, "The run could not proceed.");
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
