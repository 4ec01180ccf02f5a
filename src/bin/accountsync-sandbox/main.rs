//! accountsync-sandbox: a stand-in for the Accounts API, for the demo and integration tests.
//!
//! *Invariant:* nothing here uses the `accountsync` library. The sandbox implements the API's
//! rules on its own, so a rule the product gets wrong shows up as a test failure instead of
//! being agreed with.

// A stand-in server must not fall over on a client's bad request either.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod cli;
mod conn;
mod demo;
mod fault_http;
mod fault_state;
mod faults;
mod format;
mod rules;
mod server;
mod state;
mod store;

#[cfg(test)]
mod fault_seq_tests;
#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod server_tests;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use crate::cli::{Cli, Command, ServeArgs};
use crate::state::Sandbox;
use crate::store::Store;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr and are quiet by default: stdout carries only the `listening on` line
    // that tests read to learn the port.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();

    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| {
            runtime.block_on(async {
                match cli.into_command() {
                    Command::Serve(args) => serve(args).await.map(|()| ExitCode::SUCCESS),
                    Command::Demo(args) => demo::run(&args.root).await,
                }
            })
        });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("accountsync-sandbox: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let faults = args.faults.build()?;
    let store = match &args.accounts {
        Some(path) => Store::load(path)?,
        None => Store::open(),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{addr}")?;
    stdout.flush()?;
    drop(stdout);
    let sandbox = Arc::new(Sandbox::new(settings, store).with_faults(faults));
    server::serve(listener, sandbox, server::shutdown_signal()).await?;
    Ok(())
}
