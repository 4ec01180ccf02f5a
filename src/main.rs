//! The `accountsync` binary: command line, logging and exit codes. The only place that uses
//! `anyhow`; everything below it returns typed errors.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use accountsync::config::Config;
use accountsync::pipeline::{self, RunOptions, RunResult};
use anyhow::Context;
use clap::{Parser, Subcommand};

/// "The run could not proceed" (CONTRACT §1); 0 and 1 come from the run's summary.
const EXIT_FATAL: u8 = 2;

/// `accountsync 0.1.0 (commit 1a2b3c4d5e6f)`: the commit comes from `build.rs`.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("ACCOUNTSYNC_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "accountsync",
    version = VERSION,
    about = "Sync a CRM export to the Accounts API, sending only what changed."
)]
struct Cli {
    /// Config file.
    #[arg(
        long,
        global = true,
        env = "ACCOUNTSYNC_CONFIG",
        default_value = "/etc/accountsync/accountsync.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sync export files in the order given, or every file in the inbox ([input].dir).
    Run {
        /// Read, validate and diff, write the report of what would be sent; send nothing
        /// and change no cache.
        #[arg(long)]
        dry_run: bool,
        /// Send records again that the API rejected before, even if their row is unchanged.
        #[arg(long)]
        retry_rejected: bool,
        /// Export files; none means the inbox.
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Run {
            dry_run,
            retry_rejected,
            files,
        } => {
            let opts = RunOptions {
                files,
                dry_run,
                retry_rejected,
                progress: true,
            };
            match run(&cli.config, opts) {
                Ok(result) => {
                    print_summary(&result);
                    ExitCode::from(u8::try_from(result.summary.exit_code).unwrap_or(EXIT_FATAL))
                }
                Err(e) => {
                    eprintln!("accountsync: error: {e:#}");
                    ExitCode::from(EXIT_FATAL)
                }
            }
        }
    }
}

fn run(config_path: &std::path::Path, opts: RunOptions) -> anyhow::Result<RunResult> {
    let config = Config::load(config_path)?;
    let token = config.token()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(pipeline::run(&config, &token, opts))?;
    if let Some(why) = &result.summary.stopped {
        let level = if result.summary.exit_code == i32::from(EXIT_FATAL) {
            "error"
        } else {
            "warning"
        };
        eprintln!(
            "accountsync: {level}: {why} (config {}; report {})",
            config.path.display(),
            result.report_dir.display()
        );
    }
    Ok(result)
}

fn print_summary(result: &RunResult) {
    let s = &result.summary;
    let c = &s.counts;
    let e = &s.retried_from_earlier_runs;
    println!(
        "accountsync {}run {}: {} rows read from {} file(s) in {:.1} s",
        if s.dry_run { "dry " } else { "" },
        s.run_id,
        c.rows_read,
        s.files.len(),
        s.elapsed_secs
    );
    let updated = if s.dry_run { "would update" } else { "updated" };
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

/// Logs go to stderr; colours only on a terminal so journald and files stay clean.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ACCOUNTSYNC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
