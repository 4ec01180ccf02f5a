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
    if let Some(owner) = owner(path)
        && let Some(why) = root_refusal(euid(), owner, &command_line())
    {
        anyhow::bail!("the cache {} {why}", path.display());
    }
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

/// Who owns the cache: its folder, or the nearest folder above it that exists (an import
/// into a cache moved aside creates it there). The uid, and the name `/etc/passwd` gives.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Owner {
    uid: u32,
    name: Option<String>,
}

fn owner(cache: &Path) -> Option<Owner> {
    use std::os::unix::fs::MetadataExt;
    let uid = cache
        .ancestors()
        .find_map(|p| std::fs::metadata(p).ok())?
        .uid();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|l| {
        let mut fields = l.split(':');
        let name = fields.next()?;
        (fields.nth(1)? == uid.to_string()).then(|| name.to_owned())
    });
    Some(Owner { uid, name })
}

fn euid() -> u32 {
    // SAFETY: geteuid(2) takes nothing, touches no memory and cannot fail.
    unsafe { libc::geteuid() }
}

/// Why root must not run this cache command, if it must not: sled rewrites its files even
/// when only reading, so root would leave root-owned files in a cache the service (another
/// user) then cannot rewrite, and every later run would fail. `command` is the command line
/// to repeat as the owner.
fn root_refusal(euid: u32, owner: Owner, command: &str) -> Option<String> {
    if euid != 0 || owner.uid == 0 {
        return None;
    }
    // sudo takes `#uid` for a user without a name.
    let user = owner.name.unwrap_or_else(|| format!("'#{}'", owner.uid));
    Some(format!(
        "belongs to {user} (uid {}); as root, this command would leave files in it that the service cannot rewrite. Run it as the service user: sudo -u {user} {command}",
        owner.uid
    ))
}

/// This process's command line, quoted for a shell where needed.
fn command_line() -> String {
    let words: Vec<String> = std::env::args_os()
        .map(|a| {
            let a = a.to_string_lossy().into_owned();
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c));
            if plain {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect();
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: Option<&str>) -> Owner {
        Owner {
            uid: 998,
            name: name.map(str::to_owned),
        }
    }

    #[test]
    fn root_is_sent_to_the_cache_owner_and_nobody_else_is_stopped() {
        let why = root_refusal(0, service(Some("accountsync")), "accountsync cache stats");
        assert_eq!(
            why.as_deref(),
            Some(
                "belongs to accountsync (uid 998); as root, this command would leave files in it that the service cannot rewrite. Run it as the service user: sudo -u accountsync accountsync cache stats"
            )
        );
        let why = root_refusal(0, service(None), "accountsync cache export").unwrap();
        assert!(
            why.contains("sudo -u '#998' accountsync cache export"),
            "{why}"
        );
        // The owner itself, another user, or root on root's own cache: no refusal.
        assert_eq!(root_refusal(998, service(Some("accountsync")), "x"), None);
        assert_eq!(root_refusal(1000, service(Some("accountsync")), "x"), None);
        let root = Owner {
            uid: 0,
            name: Some("root".into()),
        };
        assert_eq!(root_refusal(0, root, "x"), None);
    }

    #[test]
    fn the_owner_is_read_from_the_nearest_existing_folder() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let mine = std::fs::metadata(dir.path()).unwrap().uid();
        let owner = owner(&dir.path().join("not/yet/cache")).unwrap();
        assert_eq!(owner.uid, mine);
    }
}
