//! The `accountsync` binary: command line, logging and exit codes. The only place that uses
//! `anyhow`; everything below it returns typed errors.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use accountsync::config::Config;
use accountsync::pipeline::{self, RunOptions, RunResult};
use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};

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
    /// Print a shell completion script to stdout.
    ///
    /// For example `accountsync completions bash >
    /// /usr/share/bash-completion/completions/accountsync`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout.
    ///
    /// `accountsync man > accountsync.1`, `accountsync man run > accountsync-run.1`. Hidden
    /// from help and completions: a packaging step, not an operator's command.
    #[command(hide = true)]
    Man {
        /// A subcommand's page instead of the main one.
        command: Option<String>,
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
                baseline: false,
                retry_rejected,
                progress: true,
                shutdown: Default::default(),
            };
            match run(&cli.config, opts) {
                Ok(result) => {
                    print_summary(&result);
                    ExitCode::from(u8::try_from(result.summary.exit_code).unwrap_or(EXIT_FATAL))
                }
                Err(e) => fatal(&e),
            }
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut completion_command(), "accountsync", &mut script);
            print_bytes(&script)
        }
        Command::Man { command } => match man_page(command.as_deref()) {
            Ok(page) => print_bytes(&page),
            Err(e) => fatal(&e),
        },
    }
}

fn fatal(e: &anyhow::Error) -> ExitCode {
    eprintln!("accountsync: error: {e:#}");
    ExitCode::from(EXIT_FATAL)
}

/// Writes generated text whole; a closed pipe (`| head`) is an error, not a panic.
fn print_bytes(bytes: &[u8]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fatal(&anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

/// `Cli::command()` without its hidden subcommands: clap_complete offers every subcommand,
/// hidden or not (clap-rs/clap#1335), and `man` is for packaging, not for the Tab key. clap
/// has no way to remove a subcommand, so the root is put together again from `Cli`'s own
/// arguments and visible subcommands; nothing is restated, so it cannot drift from `Cli`.
fn completion_command() -> clap::Command {
    let cli = Cli::command();
    let mut cmd = clap::Command::new("accountsync")
        .version(VERSION)
        .args(cli.get_arguments().cloned());
    if let Some(about) = cli.get_about() {
        cmd = cmd.about(about.clone());
    }
    cmd.subcommands(cli.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}

/// The roff page of the whole command, or of one visible subcommand (named
/// `accountsync-run(1)` in the main page's SUBCOMMANDS section). clap's own `help`
/// subcommand is left out, as `clap_mangen::generate_to` does.
fn man_page(command: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let page = match command {
        None => cmd,
        Some(name) => {
            let visible = || cmd.get_subcommands().filter(|s| !s.is_hide_set());
            match visible().find(|s| s.get_name() == name) {
                Some(sub) => sub.clone(),
                None => {
                    let names: Vec<&str> = visible().map(|s| s.get_name()).collect();
                    anyhow::bail!("no man page for {name:?}; pages: {}", names.join(", "))
                }
            }
        }
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .source(format!("accountsync {VERSION}"))
        .manual("accountsync manual")
        .render(&mut roff)
        .context("cannot render the man page")?;
    Ok(roff)
}

fn run(config_path: &std::path::Path, opts: RunOptions) -> anyhow::Result<RunResult> {
    let config = Config::load(config_path)?;
    let token = config.token()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let shutdown = opts.shutdown.clone();
        tokio::spawn(async move {
            if let Some(name) = termination().await {
                tracing::warn!(signal = name, "Stopping the run cleanly.");
                shutdown.cancel();
            }
        });
        pipeline::run(&config, &token, opts).await
    })?;
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

/// The first SIGTERM or SIGINT; `None` if the handlers cannot be installed (the default
/// action, ending the process, then applies).
async fn termination() -> Option<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok()?;
    let mut int = signal(SignalKind::interrupt()).ok()?;
    tokio::select! {
        _ = term.recv() => Some("SIGTERM"),
        _ = int.recv() => Some("SIGINT"),
    }
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
