//! Command line. `serve` is the default subcommand so the short form used by tests,
//! `accountsync-sandbox --listen 127.0.0.1:0 --token t`, works.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::faults::FaultArgs;
use crate::format::ErrorFormat;
use crate::state::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "accountsync-sandbox",
    version,
    about = "A stand-in for the Accounts API, for accountsync's demo and integration tests.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

impl Cli {
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Serve(self.serve))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the fake API (the default).
    Serve(ServeArgs),
    /// Run the two-night demo: the sandbox plus the product binary next to this one.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free one (printed as `listening on http://…`).
    #[arg(long, default_value = "127.0.0.1:18080")]
    pub listen: SocketAddr,
    /// Bearer token every API request must carry.
    #[arg(long, env = "SANDBOX_TOKEN", hide_env_values = true, required = true)]
    pub token: Option<String>,
    /// CSV `accountreference,email[,locked]`: only these accounts exist. Without it every
    /// reference exists.
    #[arg(long, value_name = "FILE")]
    pub accounts: Option<PathBuf>,
    /// Configured custom parameter names; any other name is answered `{name} not configured`.
    #[arg(long, value_name = "a,b,c", value_delimiter = ',')]
    pub custom_parameters: Vec<String>,
    /// At most N requests per rolling second; the rest get 429 with `Retry-After: 1`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit: Option<u32>,
    /// Body form of error responses.
    #[arg(long, value_enum, default_value_t = ErrorFormat::Seed)]
    pub error_format: ErrorFormat,
    /// Every PATCH for this reference fails (repeatable).
    #[arg(long = "fail-reference", value_name = "REF")]
    pub fail_references: Vec<String>,
    /// Status answered for `--fail-reference`.
    #[arg(long, value_name = "CODE", default_value_t = 500,
          value_parser = clap::value_parser!(u16).range(100..=599))]
    pub fail_status: u16,
    /// Sleep this long before answering each API request (not before 401/429).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub latency_ms: u64,
    /// Keep no request entries (GET /_sandbox/requests answers `[]`), only the count: for
    /// benchmarks, where a million logged bodies would take gigabytes.
    #[arg(long)]
    pub no_request_log: bool,
    // Boxed to keep `Command` small (clippy's large_enum_variant).
    #[command(flatten)]
    pub faults: Box<FaultArgs>,
}

impl ServeArgs {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let token = self.token.clone().unwrap_or_default();
        anyhow::ensure!(
            !token.trim().is_empty(),
            "--token (or SANDBOX_TOKEN) must not be empty"
        );
        Ok(Settings {
            token,
            custom_parameters: self
                .custom_parameters
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            rate_limit: self.rate_limit,
            error_format: self.error_format,
            latency: Duration::from_millis(self.latency_ms),
            fail_references: self.fail_references.clone(),
            fail_status: self.fail_status,
            request_log: !self.no_request_log,
        })
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Repository root holding `samples/` and `config/`; the demo writes `target/demo/` there.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub root: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("accountsync-sandbox").chain(args.iter().copied()))
            .map(Cli::into_command)
    }

    #[test]
    fn serve_is_the_default() -> anyhow::Result<()> {
        let Command::Serve(args) = parse(&["--listen", "127.0.0.1:0", "--token", "t"])? else {
            anyhow::bail!("expected serve");
        };
        assert_eq!(args.listen.port(), 0);
        let settings = args.settings()?;
        assert_eq!(settings.token, "t");
        assert_eq!(settings.fail_status, 500);
        assert_eq!(settings.error_format, ErrorFormat::Seed);
        assert!(settings.request_log);
        Ok(())
    }

    #[test]
    fn all_serve_flags() -> anyhow::Result<()> {
        let Command::Serve(args) = parse(&[
            "serve",
            "--token",
            "t",
            "--custom-parameters",
            "a,b",
            "--rate-limit",
            "5",
            "--error-format",
            "json-error-objects",
            "--fail-reference",
            "X",
            "--fail-reference",
            "Y",
            "--fail-status",
            "503",
            "--latency-ms",
            "20",
            "--accounts",
            "acc.csv",
            "--no-request-log",
        ])?
        else {
            anyhow::bail!("expected serve");
        };
        let s = args.settings()?;
        assert_eq!(s.custom_parameters, ["a", "b"]);
        assert_eq!(s.rate_limit, Some(5));
        assert_eq!(s.error_format, ErrorFormat::JsonErrorObjects);
        assert_eq!(s.fail_references, ["X", "Y"]);
        assert_eq!((s.fail_status, s.latency.as_millis()), (503, 20));
        assert!(!s.request_log);
        assert_eq!(args.listen.port(), 18080);
        Ok(())
    }

    #[test]
    fn demo_needs_no_token_and_serve_does() {
        assert!(matches!(
            parse(&["demo", "--root", "/x"]),
            Ok(Command::Demo(_))
        ));
        // SANDBOX_TOKEN may be set in the environment running the tests; only check when not.
        if std::env::var_os("SANDBOX_TOKEN").is_none() {
            assert!(parse(&["--listen", "127.0.0.1:0"]).is_err());
            assert!(parse(&["serve"]).is_err());
        }
        assert!(parse(&["--token", "t", "--rate-limit", "0"]).is_err());
        assert!(parse(&["--token", "t", "--error-format", "xml"]).is_err());
    }
}
