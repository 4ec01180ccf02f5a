//! `run` and `baseline`: one pass of the pipeline, with its summary on stdout.

use std::path::Path;

use accountsync::config::Config;
use accountsync::metrics;
use accountsync::pipeline::{self, RunOptions, RunResult};
use anyhow::Context;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::EXIT_FATAL;

/// Loads the config, runs once on a fresh runtime, writes the metrics file.
pub fn run(config_path: &Path, opts: RunOptions) -> anyhow::Result<RunResult> {
    let config = Config::load(config_path)?;
    let sync = !(opts.dry_run || opts.baseline);
    let result = match run_loaded(&config, opts) {
        Ok(result) => result,
        Err(e) => {
            if sync {
                write_failed_metrics(&config);
            }
            return Err(e);
        }
    };
    write_metrics(&config, &result);
    if let Some(why) = &result.summary.stopped {
        let (level, priority) = if result.summary.exit_code == i32::from(EXIT_FATAL) {
            ("error", 3)
        } else {
            ("warning", 4)
        };
        let text = format!(
            "accountsync: {level}: {why} (config {}; report {})",
            config.path.display(),
            result.report_dir.display()
        );
        eprintln!("{}", crate::cmd::logging::plain(priority, &text));
    }
    Ok(result)
}

fn run_loaded(config: &Config, opts: RunOptions) -> anyhow::Result<RunResult> {
    // A baseline sends nothing, so it needs no token (the first night may precede it).
    let token = if opts.baseline {
        SecretString::from(String::new())
    } else {
        config.token()?
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(async {
        stop_on_signal(opts.shutdown.clone());
        pipeline::run(config, &token, opts).await
    })?)
}

/// For a run that stopped before its report existed: exit code 2 in the metrics file.
pub fn write_failed_metrics(config: &Config) {
    if let Some(path) = &config.metrics_file
        && let Err(error) = metrics::write_failed(path, chrono::Utc::now())
    {
        tracing::warn!(%error, "Cannot write the metrics file.");
    }
}

/// A metrics file that cannot be written is a warning: the sync itself happened, and the
/// "no success in 26 h" alert notices a file that stops changing.
pub fn write_metrics(config: &Config, result: &RunResult) {
    if let Some(path) = &config.metrics_file
        && let Err(error) = metrics::write(path, &result.summary)
    {
        tracing::warn!(%error, "Cannot write the metrics file.");
    }
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT. The handlers are in place when this
/// returns: a signal that comes before the run has got anywhere still stops it cleanly.
pub fn stop_on_signal(shutdown: CancellationToken) {
    let Some(mut signals) = termination() else {
        return;
    };
    tokio::spawn(async move {
        let name = signals.recv().await;
        tracing::warn!(
            signal = name,
            "Stopping the run cleanly (a second signal ends it at once)."
        );
        shutdown.cancel();
        exit_on_second(signals).await;
    });
}

/// A second SIGTERM/SIGINT while stopping ends the process at once, as a second Ctrl-C does
/// in most tools: nothing is lost (every record sent has its outbox entry on disk, and rows
/// not sent are still in their export), but requests in flight are not awaited and no
/// report is written. Exits 128 + the signal's number, as a shell reports a killed command.
pub async fn exit_on_second(mut signals: Signals) {
    let name = signals.recv().await;
    let code = if name == "SIGINT" { 130 } else { 143 };
    tracing::warn!(
        signal = name,
        code,
        "Second signal: exiting now; records not confirmed are sent by the next run."
    );
    std::process::exit(code);
}

/// The SIGTERM and SIGINT handlers, installed.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// The next SIGTERM or SIGINT.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Installs the SIGTERM and SIGINT handlers now (inside the runtime). Installed here rather
/// than in the task that waits, which may be polled only later: until then the default
/// action would end the process. `None` if the handlers cannot be installed (the default
/// action then applies). The debug line is the sign, for tests and operators, that a signal
/// from now on stops cleanly.
pub fn termination() -> Option<Signals> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate()).ok()?;
    let int = signal(SignalKind::interrupt()).ok()?;
    tracing::debug!("SIGTERM/SIGINT handlers installed.");
    Some(Signals { term, int })
}

pub fn print_summary(result: &RunResult) {
    let s = &result.summary;
    let c = &s.counts;
    let e = &s.retried_from_earlier_runs;
    let kind = match (s.dry_run, s.baseline) {
        (true, _) => "dry run",
        (_, true) => "baseline",
        _ => "run",
    };
    println!(
        "accountsync {kind} {}: {} rows read from {} file(s) in {:.1} s{}",
        s.run_id,
        c.rows_read,
        s.files.len(),
        s.elapsed_secs,
        if s.interrupted { " (interrupted)" } else { "" }
    );
    let updated = match (s.dry_run, s.baseline) {
        (true, _) => "would update",
        (_, true) => "recorded as in sync",
        _ => "updated",
    };
    println!(
        "  unchanged {} · {updated} {} · rejected {} · failed {}",
        c.unchanged, c.updated, c.rejected, c.failed
    );
    if e.rows_read > 0 {
        println!(
            "  retried from earlier runs: {} ({updated} {}, rejected {}, failed {})",
            e.rows_read, e.updated, e.rejected, e.failed
        );
    }
    println!(
        "  requests {} ({} retries, {} throttled) · {:.1} req/s",
        s.requests_sent, s.retries, s.throttled, s.requests_per_second
    );
    println!("  report: {}", result.report_dir.display());
}
