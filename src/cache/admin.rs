//! What operators do to the cache by hand (`accountsync cache ...`): look, forget one
//! account, back up and restore. Kept apart from what a run does, which is in `cache.rs`.

use std::fs::File;
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Cache, CacheError, Pending, Rejection};
use crate::model::Fields;

/// In the cache folder: the kept retries and remembered rejections, as `cache export` lines.
const OPEN_RECORDS: &str = "open-records.jsonl";

/// One account in `cache export` / `cache import`: one JSON object a line, so a backup of a
/// million accounts streams both ways and diffs and greps line by line.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub reference: String,
    /// The values the API last confirmed.
    #[serde(default, skip_serializing_if = "Fields::is_empty")]
    pub confirmed: Fields,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<Rejection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub accounts: usize,
    pub pending_retries: usize,
    pub rejected: usize,
    pub row_index_entries: usize,
    pub size_on_disk_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(
        "{file} line {line}: {message}; each line must be one JSON object as written by `accountsync cache export`"
    )]
    Import {
        file: PathBuf,
        line: u64,
        message: String,
    },
    #[error(
        "the cache {cache} already holds {accounts} accounts; import {file} into an empty cache (move the old one aside), or pass --merge to overwrite the accounts in the file"
    )]
    NotEmpty {
        cache: PathBuf,
        file: PathBuf,
        accounts: usize,
    },
    #[error("cannot write the export: {0}")]
    Write(#[from] std::io::Error),
}

impl From<sled::Error> for AdminError {
    fn from(e: sled::Error) -> Self {
        AdminError::Cache(CacheError::Storage(e))
    }
}

impl Cache {
    /// [`Cache::open`], and when sled reports the database corrupt (an abrupt kill can do
    /// that to sled 0.34: spacejam/sled #1527, #1533): move it aside as
    /// `{path}.damaged-{time}`, start a new one, and restore the last backup into it when
    /// there is one, else the open records file of the folder moved aside. Returns what was
    /// done, for the log and the summary. Without a backup the confirmed values are gone: the
    /// next run sends every field again, which loses nothing.
    pub fn open_or_recover(
        path: &Path,
        memory_mb: u64,
        backup: Option<&Path>,
    ) -> Result<(Cache, Option<String>), CacheError> {
        let source = match Cache::open(path, memory_mb) {
            Err(CacheError::Open {
                source: source @ sled::Error::Corruption { .. },
                ..
            }) => source,
            other => return other.map(|c| (c, None)),
        };
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".damaged-{stamp}"));
        let aside = PathBuf::from(aside);
        std::fs::rename(path, &aside).map_err(|e| CacheError::Open {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        tracing::error!(cache = %path.display(), moved_to = %aside.display(), error = %source, "The cache is damaged; it was moved aside and a new one started.");
        let cache = Cache::open(path, memory_mb)?;
        let open_records = aside.join(OPEN_RECORDS);
        let restored = match backup.filter(|b| b.exists()) {
            Some(b) => format!(
                "restored {} references from the backup {}",
                restore(&cache, b)?,
                b.display()
            ),
            None if open_records.exists() => format!(
                "restored {} kept retries and remembered rejections from {} (no [cache].backup_file: every account's confirmed values are gone, so each is sent again)",
                restore(&cache, &open_records)?,
                open_records.display()
            ),
            None => {
                "no backup ([cache].backup_file) to restore: every account is sent again".into()
            }
        };
        let what = format!(
            "the cache was damaged ({source}); it was moved to {} and {restored}",
            aside.display()
        );
        tracing::error!("{what}");
        Ok((cache, Some(what)))
    }

    /// Writes a `cache export` to `file` atomically (a temporary file beside it, renamed).
    pub fn write_backup(&self, file: &Path) -> Result<u64, AdminError> {
        self.write_export(file, false)
    }

    /// Writes the open records file inside the cache folder: every kept retry and
    /// remembered rejection, which a damaged cache must not take with it. It is small (it
    /// grows with the open records, not the accounts), so every run that writes the cache
    /// writes it, backup file or not; recovery reads it from the folder moved aside.
    pub fn write_open_records(&self) -> Result<u64, AdminError> {
        match &self.inner.home {
            Some(home) => self.write_export(&home.join(OPEN_RECORDS), true),
            None => Ok(0),
        }
    }

    fn write_export(&self, file: &Path, open_only: bool) -> Result<u64, AdminError> {
        let tmp = file.with_extension("tmp");
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut out = std::io::BufWriter::new(out);
        let n = self.export_where(&mut out, open_only)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, file)?;
        // The rename itself is durable only once the folder is synced.
        if let Some(dir) = file.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(n)
    }

    pub fn stats(&self) -> Result<Stats, CacheError> {
        let t = self.trees()?;
        Ok(Stats {
            accounts: t.confirmed.len(),
            pending_retries: t.outbox.len(),
            rejected: t.rejected.len(),
            row_index_entries: self.row_index().len(),
            size_on_disk_bytes: t.db.size_on_disk()?,
        })
    }

    /// Everything the cache knows of one account; `None` when nothing.
    pub fn entry(&self, reference: &str) -> Result<Option<Entry>, CacheError> {
        let entry = Entry {
            reference: reference.to_owned(),
            confirmed: self.confirmed(reference)?,
            rejected: self.rejection(reference)?,
            pending: self.pending(reference)?,
        };
        let empty =
            entry.confirmed.is_empty() && entry.rejected.is_none() && entry.pending.is_none();
        Ok((!empty).then_some(entry))
    }

    /// Drops every trace of an account: the next run sends all its mapped fields again.
    pub fn forget_account(&self, reference: &str) -> Result<bool, CacheError> {
        let t = self.trees()?;
        let key = reference.as_bytes();
        let mut found = false;
        for tree in [&t.confirmed, &t.rejected, &t.outbox, &t.digests] {
            found |= tree.remove(key)?.is_some();
        }
        self.update_row_index(super::index_key(reference), None);
        Ok(found)
    }

    /// Writes every reference the cache knows (confirmed values, a remembered rejection or a
    /// pending retry) as a JSON line, in reference order. Returns how many lines.
    pub fn export(&self, out: &mut impl Write) -> Result<u64, AdminError> {
        self.export_where(out, false)
    }

    /// `open_only`: just the references with a remembered rejection or a pending retry,
    /// without confirmed values: the open records file.
    fn export_where(&self, out: &mut impl Write, open_only: bool) -> Result<u64, AdminError> {
        let t = self.trees()?;
        let mut refs: Vec<sled::IVec> = Vec::new();
        let mut n = 0;
        // The trees are each in key order: merge them into one pass per account.
        let trees: &[&sled::Tree] = match open_only {
            true => &[&t.rejected, &t.outbox],
            false => &[&t.confirmed, &t.rejected, &t.outbox],
        };
        let mut iters: Vec<_> = trees.iter().map(|t| t.iter().keys().peekable()).collect();
        loop {
            refs.clear();
            for it in &mut iters {
                if let Some(Ok(k)) = it.peek() {
                    refs.push(k.clone());
                }
            }
            let Some(next) = refs.iter().min().cloned() else {
                break;
            };
            for it in &mut iters {
                if matches!(it.peek(), Some(Ok(k)) if *k == next) {
                    it.next();
                }
            }
            let reference = String::from_utf8_lossy(&next).into_owned();
            if let Some(mut entry) = self.entry(&reference)? {
                if open_only {
                    entry.confirmed.clear();
                }
                serde_json::to_writer(&mut *out, &entry).map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
                n += 1;
            }
        }
        // A storage error ends an iterator early: report it instead of a short backup.
        for it in &mut iters {
            if let Some(Err(e)) = it.next() {
                return Err(CacheError::Storage(e).into());
            }
        }
        out.flush()?;
        Ok(n)
    }

    /// Restores `cache export` output. Every line is checked before anything is written,
    /// so a bad backup changes nothing. Returns how many references (lines) were written:
    /// more than `stats().accounts` when some are known only by a rejection or a retry.
    pub fn import(&self, file: &Path, input: impl BufRead, merge: bool) -> Result<u64, AdminError> {
        let t = self.trees()?;
        let empty = t.confirmed.is_empty() && t.outbox.is_empty() && t.rejected.is_empty();
        if !empty && !merge {
            return Err(AdminError::NotEmpty {
                cache: self.inner.home.clone().unwrap_or_default(),
                file: file.to_path_buf(),
                accounts: t.confirmed.len(),
            });
        }
        let mut entries = Vec::new();
        for (i, line) in input.lines().enumerate() {
            let line_no = i as u64 + 1;
            let bad = |message: String| AdminError::Import {
                file: file.to_path_buf(),
                line: line_no,
                message,
            };
            let line = line.map_err(|e| bad(e.to_string()))?;
            if line.trim().is_empty() {
                continue;
            }
            let entry: Entry = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
            if entry.reference.is_empty() {
                return Err(bad("the reference is empty".into()));
            }
            entries.push(entry);
        }
        for e in &entries {
            self.forget_account(&e.reference)?;
            let key = e.reference.as_bytes();
            if !e.confirmed.is_empty() {
                t.confirmed
                    .insert(key, encode_json(&e.reference, &e.confirmed)?)?;
            }
            if let Some(r) = &e.rejected {
                t.rejected.insert(key, encode_json(&e.reference, r)?)?;
            }
            if let Some(p) = &e.pending {
                t.outbox.insert(key, encode_json(&e.reference, p)?)?;
            }
        }
        t.db.flush()?;
        Ok(entries.len() as u64)
    }
}

/// Imports a backup into a new cache, for recovery.
fn restore(cache: &Cache, file: &Path) -> Result<u64, CacheError> {
    let input = File::open(file).map_err(|e| CacheError::Copy {
        path: file.to_path_buf(),
        source: e,
    })?;
    cache
        .import(file, std::io::BufReader::new(input), false)
        .map_err(|e| CacheError::Recover(e.to_string()))
}

fn encode_json<T: Serialize>(reference: &str, value: &T) -> Result<Vec<u8>, CacheError> {
    super::encode(reference, value)
}

/// When the daemon last finished a run, kept beside the cache in a plain file so the
/// daemon can read it between runs without taking the cache's lock.
pub fn last_run(cache_path: &Path) -> Option<chrono::DateTime<chrono::Utc>> {
    let text = std::fs::read_to_string(last_run_file(cache_path)).ok()?;
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

pub fn set_last_run(cache_path: &Path, at: chrono::DateTime<chrono::Utc>) -> std::io::Result<()> {
    let file = last_run_file(cache_path);
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, format!("{}\n", at.to_rfc3339()))?;
    std::fs::rename(&tmp, &file)
}

fn last_run_file(cache_path: &Path) -> PathBuf {
    cache_path.join("last-run")
}

#[cfg(test)]
#[path = "admin_tests.rs"]
mod tests;
