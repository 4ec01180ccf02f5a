//! `cache ...` and the operator's view of the cache: look, forget one account, back up and
//! restore. Everything here takes the cache's lock, so it refuses to run beside a sync.

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use accountsync::cache::Cache;
use accountsync::config::Config;
use anyhow::Context;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum CacheCommand {
    /// Accounts known, retries pending, rejections remembered, size on disk.
    Stats,
    /// What the cache holds for one account: confirmed values, kept retry, rejection.
    Show { reference: String },
    /// Forget one account: the next run sends all its mapped fields again.
    Forget { reference: String },
    /// Write every account as one JSON line to stdout (a backup).
    Export,
    /// Restore `cache export` output into an empty cache.
    Import {
        file: PathBuf,
        /// Import into a cache that is not empty, overwriting the accounts in the file.
        #[arg(long)]
        merge: bool,
    },
}

pub fn cache(config_path: &Path, command: CacheCommand) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let (path, mb) = (&config.cache_path, config.cache_memory_mb);
    let mut out = std::io::stdout().lock();
    match command {
        CacheCommand::Stats => {
            let s = Cache::open_for_reading(path, mb)?.stats()?;
            writeln!(out, "cache: {}", path.display())?;
            // Accounts the API confirmed; `cache export` has a line for every reference,
            // including those known only by a rejection or a pending retry.
            writeln!(out, "accounts: {}", s.accounts)?;
            writeln!(out, "pending retries: {}", s.pending_retries)?;
            writeln!(out, "rejected: {}", s.rejected)?;
            writeln!(out, "row index entries: {}", s.row_index_entries)?;
            writeln!(out, "size on disk: {} bytes", s.size_on_disk_bytes)?;
        }
        CacheCommand::Show { reference } => {
            match Cache::open_for_reading(path, mb)?.entry(&reference)? {
                Some(entry) => {
                    serde_json::to_writer_pretty(&mut out, &entry)?;
                    writeln!(out)?;
                }
                None => anyhow::bail!("the cache holds nothing for account {reference:?}"),
            }
        }
        CacheCommand::Forget { reference } => {
            let cache = Cache::open(path, mb)?;
            let found = cache.forget_account(&reference)?;
            cache.close()?;
            if found {
                writeln!(
                    out,
                    "forgot account {reference:?}; the next run sends all its fields"
                )?;
            } else {
                writeln!(out, "the cache held nothing for account {reference:?}")?;
            }
        }
        CacheCommand::Export => {
            let cache = Cache::open_for_reading(path, mb)?;
            let mut buffered = std::io::BufWriter::new(out);
            let n = cache.export(&mut buffered)?;
            tracing::info!(references = n, "Cache exported.");
        }
        CacheCommand::Import { file, merge } => {
            let input = std::fs::File::open(&file)
                .with_context(|| format!("cannot open {}", file.display()))?;
            let cache = Cache::open(path, mb)?;
            let n = cache.import(&file, BufReader::new(input), merge)?;
            cache.close()?;
            writeln!(out, "imported {n} references from {}", file.display())?;
        }
    }
    Ok(())
}
