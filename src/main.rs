//! The `accountsync` binary: command line, logging and exit codes. The binary (this file
//! and `cmd/`, one file per subcommand) is the only place that uses `anyhow`; the library
//! below it returns typed errors.

// No input may panic the process: data errors are values (`Problem`, typed `Err`s).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod cmd;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use accountsync::pipeline::RunOptions;
use clap::{Parser, Subcommand};
use cmd::cache::CacheCommand;
use cmd::logging::LogFormat;

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
    /// Config file [env: ACCOUNTSYNC_CONFIG] [default: /etc/accountsync/accountsync.toml].
    ///
    /// An empty ACCOUNTSYNC_CONFIG counts as unset (an `EnvironmentFile=` line
    /// `ACCOUNTSYNC_CONFIG=` must not stop the service).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log lines: `auto` is coloured on a terminal and plain (with journal priorities under
    /// systemd) otherwise; `json` is one object a line for log shippers [env:
    /// ACCOUNTSYNC_LOG_FORMAT] [default: auto].
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
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
    /// Sync the inbox on [schedule].cron until SIGTERM/SIGINT; SIGHUP reloads the config
    /// between runs. Runs never overlap.
    Daemon {
        /// Run once at start, then follow the schedule.
        #[arg(long)]
        run_now: bool,
    },
    /// Record export files as already in sync, sending nothing: for the first night, when
    /// the API already holds the data. Rows the local rules reject are reported as usual.
    Baseline {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Check the config (and optionally a sample export's header against [columns]) and
    /// explain each problem; exit 2 if a run would refuse it.
    CheckConfig {
        /// A sample export whose header is checked against [columns].
        export: Option<PathBuf>,
    },
    /// Look at or maintain the cache (the values the API last confirmed).
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
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

/// `--config`, else a non-empty `$ACCOUNTSYNC_CONFIG`, else the packaged path (CONTRACT §1).
fn config_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| non_empty_env("ACCOUNTSYNC_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/etc/accountsync/accountsync.toml"))
}

/// clap's own `env` takes a variable set to "" as an empty value and refuses it; a unit's
/// `Environment=` or `EnvironmentFile=` line left blank means "not set".
fn non_empty_env(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

fn log_format(flag: Option<LogFormat>) -> Result<LogFormat, String> {
    use clap::ValueEnum;
    match (flag, non_empty_env("ACCOUNTSYNC_LOG_FORMAT")) {
        (Some(f), _) => Ok(f),
        (None, None) => Ok(LogFormat::Auto),
        (None, Some(v)) => {
            let v = v.to_string_lossy();
            LogFormat::from_str(v.trim(), true).map_err(|_| {
                format!("ACCOUNTSYNC_LOG_FORMAT={v:?} is not a log format; use auto, text or json")
            })
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match log_format(cli.log_format) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FATAL);
        }
    };
    cmd::logging::init(format);
    let config = config_path(cli.config);
    match cli.command {
        Command::Run {
            dry_run,
            retry_rejected,
            files,
        } => sync(
            &config,
            RunOptions {
                files,
                dry_run,
                retry_rejected,
                progress: true,
                ..RunOptions::default()
            },
        ),
        Command::Daemon { run_now } => match cmd::daemon::daemon(&config, run_now) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fatal(&e),
        },
        Command::Baseline { files } => sync(
            &config,
            RunOptions {
                files,
                baseline: true,
                progress: true,
                ..RunOptions::default()
            },
        ),
        Command::CheckConfig { export } => {
            if cmd::check::check(&config, export.as_deref()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FATAL)
            }
        }
        Command::Cache { command } => match cmd::cache::cache(&config, command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fatal(&e),
        },
        Command::Completions { shell } => {
            let mut script = Vec::new();
            let mut command = cmd::docs::completion_command();
            clap_complete::generate(shell, &mut command, "accountsync", &mut script);
            print_bytes(&script)
        }
        Command::Man { command } => match cmd::docs::man_page(command.as_deref()) {
            Ok(page) => print_bytes(&page),
            Err(e) => fatal(&e),
        },
    }
}

fn sync(config: &std::path::Path, opts: RunOptions) -> ExitCode {
    match cmd::run::run(config, opts) {
        Ok(result) => {
            cmd::run::print_summary(&result);
            ExitCode::from(u8::try_from(result.summary.exit_code).unwrap_or(EXIT_FATAL))
        }
        Err(e) => fatal(&e),
    }
}

fn fatal(e: &anyhow::Error) -> ExitCode {
    let text = format!("accountsync: error: {}", error_text(e));
    eprintln!("{}", cmd::logging::plain(3, &text));
    ExitCode::from(EXIT_FATAL)
}

/// The error and its causes, each once. The library's errors end their own message with
/// their cause's (the daemon logs only that message), so anyhow's `{:#}` printed every such
/// cause twice: `cannot read x.csv: No such file or directory (os error 2): No such file or
/// directory (os error 2)`.
fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Writes generated text whole; a closed pipe (`| head`) is an error, not a panic.
fn print_bytes(bytes: &[u8]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fatal(&anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read x.csv: {source}")]
    struct Named {
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_printed_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        // A library error that names its cause: the cause is not repeated.
        let e = anyhow::Error::new(Named { source: io() });
        assert_eq!(error_text(&e), "cannot read x.csv: no such file");
        // A context over a cause that does not name it: both, once each.
        let e = anyhow::Error::new(io()).context("cannot write to stdout");
        assert_eq!(error_text(&e), "cannot write to stdout: no such file");
        let e = anyhow::Error::new(Named { source: io() }).context("run");
        assert_eq!(error_text(&e), "run: cannot read x.csv: no such file");
    }
}
