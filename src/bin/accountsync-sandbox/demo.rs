//! The one-command demo: the sandbox in-process on a fixed port, and the real product binary
//! run twice as a child process against it, as two nights of exports. The product runs as a
//! separate process (not as library calls) so the demo shows exactly what an operator sees.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;

use crate::format::ErrorFormat;
use crate::server::Running;
use crate::state::{Sandbox, Settings};
use crate::store::Store;

/// Fixed because `config/demo.toml` names it as the base URL.
const DEMO_ADDR: &str = "127.0.0.1:18080";
const DEMO_TOKEN: &str = "demo-token";
const NIGHTS: [(&str, &str); 2] = [
    ("night 1", "crm-export-2026-12-02.csv"),
    ("night 2", "crm-export-2026-12-03.csv"),
];

pub async fn run(root: &Path) -> anyhow::Result<ExitCode> {
    let root = std::path::absolute(root).context("cannot resolve the demo root")?;
    let product = product_binary()?;
    if !product.is_file() {
        bail!(
            "the product binary is missing at {}; run `cargo build --release` first",
            product.display()
        );
    }
    let store = Store::load(&root.join("samples/sandbox-accounts.csv"))?;
    let listener = match TcpListener::bind(DEMO_ADDR).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            bail!(
                "port 18080 is in use; stop whatever holds it or run the sandbox by hand, see README"
            )
        }
        Err(e) => return Err(e).context(format!("cannot listen on {DEMO_ADDR}")),
    };
    // Cleared only once the port is ours, so a demo that cannot start keeps the last outputs.
    let demo_dir = root.join("target/demo");
    if demo_dir.exists() {
        std::fs::remove_dir_all(&demo_dir)
            .with_context(|| format!("cannot remove {}", demo_dir.display()))?;
    }
    std::fs::create_dir_all(&demo_dir)
        .with_context(|| format!("cannot create {}", demo_dir.display()))?;
    let running = Running::spawn(listener, Arc::new(Sandbox::new(settings(), store)))?;
    println!(
        "sandbox API listening on http://{}/rest/api (token {DEMO_TOKEN})",
        running.addr
    );

    let config = root.join("config/demo.toml");
    let mut all_ran = true;
    for (night, file) in NIGHTS {
        let export = root.join("samples").join(file);
        println!();
        println!("== {night}: accountsync run samples/{file}");
        let status = tokio::process::Command::new(&product)
            .arg("--config")
            .arg(&config)
            .arg("run")
            .arg(&export)
            .env("ACCOUNTSYNC_TOKEN", DEMO_TOKEN)
            .current_dir(&root)
            .status()
            .await
            .with_context(|| format!("cannot start {}", product.display()))?;
        let code = status.code();
        println!(
            "== {night}: exit {} ({})",
            code.map_or("-".to_string(), |c| c.to_string()),
            meaning(code)
        );
        all_ran &= matches!(code, Some(0 | 1));
    }

    let received = running.sandbox.request_count();
    let log_path = demo_dir.join("sandbox-requests.json");
    let log = serde_json::to_string_pretty(&running.sandbox.requests_json())?;
    write_private(&log_path, log.as_bytes())
        .with_context(|| format!("cannot write {}", log_path.display()))?;
    println!();
    println!("reports: {}", demo_dir.join("reports").display());
    println!(
        "the sandbox received {received} requests (each one listed in {})",
        log_path.display()
    );
    if tokio::time::timeout(Duration::from_secs(5), running.stop())
        .await
        .is_err()
    {
        tracing::warn!("sandbox did not stop within 5 s");
    }
    Ok(if all_ran {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn settings() -> Settings {
    Settings {
        token: DEMO_TOKEN.to_string(),
        custom_parameters: vec!["loyaltytier".to_string(), "preferredstore".to_string()],
        rate_limit: None,
        error_format: ErrorFormat::Seed,
        latency: Duration::ZERO,
        fail_references: Vec::new(),
        fail_status: 500,
        request_log: true,
    }
}

/// The request log holds personal data (e-mails, names), like the product's reports: 0600.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

/// The product is built into the same directory as this binary.
fn product_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the sandbox executable")?;
    let dir = exe
        .parent()
        .context("the sandbox executable has no parent directory")?;
    Ok(dir.join(format!("accountsync{}", std::env::consts::EXE_SUFFIX)))
}

/// The contract's exit codes, in words.
fn meaning(code: Option<i32>) -> &'static str {
    match code {
        Some(0) => "all in sync",
        Some(1) => "some records rejected or failed, see the report",
        Some(2) => "could not proceed",
        Some(_) => "unexpected exit code",
        None => "killed by a signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_words() {
        assert_eq!(meaning(Some(0)), "all in sync");
        assert!(meaning(Some(1)).contains("see the report"));
        assert_eq!(meaning(Some(2)), "could not proceed");
        assert_eq!(meaning(None), "killed by a signal");
    }
}
