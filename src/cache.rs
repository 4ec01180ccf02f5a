//! The cache: sled behind one small type, holding no domain logic. Three trees, each keyed by
//! account reference:
//! - `confirmed`: the values the API last confirmed (2xx), what the diff compares against;
//! - `rejected`: a row the API rejected permanently, so an unchanged row is not resent;
//! - `outbox`: a row that failed transiently, retried on the next run even if the next
//!   export no longer has it;
//! - `digests`: a fingerprint of the last row confirmed in full, the fast path to
//!   "unchanged".
//!
//! Beside sled sits the row index (`index.rs`), the faster path to "unchanged" that needs no
//! sled read at all.

mod admin;
mod index;

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard};

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError,
    TransactionalTree,
};

use crate::diff::apply;
use crate::model::RowDigest;
use crate::model::{Change, Fields, Problem};
pub use admin::{AdminError, Entry, Stats, last_run, set_last_run};
pub use index::{RowIndex, hash128, key as index_key};

/// Bumped when the stored shape changes, so an old binary refuses a newer cache instead of
/// misreading it.
const SCHEMA: &str = "1";

/// Written beside sled's files when a cache is created.
const MARKER: &str = "accountsync-cache";

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(
        "the cache {path} is in use by another accountsync process; wait for that run to finish (or stop it) and try again"
    )]
    Locked { path: PathBuf },
    #[error("cannot open the cache {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error(
        "the cache {path} has schema version {found}, this accountsync reads version {SCHEMA}; use the accountsync that wrote it, or move the cache aside"
    )]
    Schema { path: PathBuf, found: String },
    #[error("cannot copy the cache {path} for a dry run: {source}")]
    Copy {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cache storage error: {0}")]
    Storage(#[from] sled::Error),
    #[error("cannot restore the cache from its backup: {0}")]
    Recover(String),
    #[error("cache entry for account {reference:?} cannot be encoded: {source}")]
    Encode {
        reference: String,
        source: serde_json::Error,
    },
}

/// A permanent rejection remembered with the row that caused it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub fields: Fields,
    pub problems: Vec<Problem>,
}

/// A record that is not confirmed yet and must be tried again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub fields: Fields,
    pub file: String,
    pub line: u64,
    /// The run that last tried it: a run replays only entries of earlier runs.
    pub run_id: String,
    pub problem: Problem,
}

#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    trees: OnceLock<Trees>,
    /// A dry run copies the cache only when a row needs it: a warm night answered from the
    /// row index never pays for copying a database of a million accounts.
    deferred: Mutex<Option<Deferred>>,
    index: RwLock<RowIndex>,
    /// Where the row index is written back: the cache folder of a run that writes the
    /// cache; `None` for a dry run, which never writes it.
    home: Option<PathBuf>,
    /// The private copy a dry run works on, removed when the last handle goes.
    copy: Mutex<Option<tempfile::TempDir>>,
}

/// A dry run's copy not taken yet, with the lock that keeps the original as the row index
/// saw it until then.
struct Deferred {
    path: PathBuf,
    memory_mb: u64,
    _lock: File,
}

struct Trees {
    /// The database had no schema key: new, or (with the marker file present) emptied.
    fresh: bool,
    db: sled::Db,
    confirmed: sled::Tree,
    rejected: sled::Tree,
    outbox: sled::Tree,
    /// Fingerprints of fully confirmed rows: a small tree that answers "unchanged" for the
    /// common nightly row without reading its (larger) confirmed values.
    digests: sled::Tree,
}

impl Cache {
    /// `memory_mb` bounds sled's page cache (its default, 1 GiB, is what a big run's RSS
    /// grows to). Lookups follow the export's order, not the tree's, so a cache smaller
    /// than the database pages nodes in and out: speed for memory, the operator's choice.
    pub fn open(path: &Path, memory_mb: u64) -> Result<Cache, CacheError> {
        // The cache holds personal data: its directory is the owner's only.
        if !path.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|e| CacheError::Open {
                    path: path.to_path_buf(),
                    source: e.into(),
                })?;
        }
        let trees = open_trees(path, sled::Config::new().path(path), memory_mb)?;
        // sled 0.34 can open a damaged file as an empty database without an error. A marker
        // beside it, written when the database is created, tells "new" from "emptied".
        let marker = path.join(MARKER);
        let open_err = |e: std::io::Error| CacheError::Open {
            path: path.to_path_buf(),
            source: e.into(),
        };
        if trees.fresh && marker.exists() {
            drop(trees);
            return Err(CacheError::Open {
                path: path.to_path_buf(),
                source: sled::Error::Corruption { at: None, bt: () },
            });
        }
        if !marker.exists() {
            std::fs::write(&marker, format!("accountsync cache, schema {SCHEMA}\n"))
                .map_err(open_err)?;
        }
        // sled holds the lock now: read the row index, then remove it before any write, so
        // that a crash from here on leaves no index rather than a stale one.
        let index = RowIndex::load(path);
        RowIndex::remove(path).map_err(|e| CacheError::Open {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(Cache::new(
            Some(trees),
            None,
            index,
            Some(path.to_path_buf()),
        ))
    }

    /// [`Cache::open`], and when sled reports the database corrupt (an abrupt kill can do
    /// that to sled 0.34: spacejam/sled #1527, #1533): move it aside as
    /// `{path}.damaged-{time}`, start a new one, and restore the last backup into it when
    /// there is one. Returns what was done, for the log and the summary. Without a backup the
    /// new cache is empty: the next run sends every field again, which loses nothing.
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
        let restored = match backup.filter(|b| b.exists()) {
            Some(b) => {
                let file = File::open(b).map_err(|e| CacheError::Copy {
                    path: b.to_path_buf(),
                    source: e,
                })?;
                let n = cache
                    .import(b, std::io::BufReader::new(file), false)
                    .map_err(|e| CacheError::Recover(e.to_string()))?;
                format!("restored {n} accounts from the backup {}", b.display())
            }
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
        let tmp = file.with_extension("tmp");
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut out = std::io::BufWriter::new(out);
        let n = self.export(&mut out)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, file)?;
        Ok(n)
    }

    /// Opens the cache for commands that only read it (`cache stats`, `show`, `export`): the
    /// row index stays, since nothing it vouches for can change. Takes the lock all the same.
    pub fn open_for_reading(path: &Path, memory_mb: u64) -> Result<Cache, CacheError> {
        if !path.join("db").exists() {
            return Err(CacheError::Open {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no cache here yet; a first run creates it",
                )
                .into(),
            });
        }
        let trees = open_trees(path, sled::Config::new().path(path), memory_mb)?;
        Ok(Cache::new(Some(trees), None, RowIndex::load(path), None))
    }

    fn new(
        trees: Option<Trees>,
        deferred: Option<Deferred>,
        index: RowIndex,
        home: Option<PathBuf>,
    ) -> Cache {
        let cell = OnceLock::new();
        if let Some(t) = trees {
            let _ = cell.set(t);
        }
        Cache {
            inner: Arc::new(Inner {
                trees: cell,
                deferred: Mutex::new(deferred),
                index: RwLock::new(index),
                home,
                copy: Mutex::new(None),
            }),
        }
    }

    /// Opens a private copy of the cache, for dry runs. sled writes even when only read
    /// (recovery leaves a new snapshot file), and a dry run must leave the cache exactly as it
    /// was, so it reads a copy taken under the cache's lock, when a row first needs it. A
    /// missing cache gives an empty in-memory one rather than creating the directory.
    pub fn open_copy(path: &Path, memory_mb: u64) -> Result<Cache, CacheError> {
        let lock_file = path.join("db");
        if !lock_file.exists() {
            let trees = open_trees(path, sled::Config::new().temporary(true), memory_mb)?;
            return Ok(Cache::new(Some(trees), None, RowIndex::default(), None));
        }
        let lock = File::open(&lock_file).map_err(|e| copy_error(path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(CacheError::Locked {
                    path: path.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(copy_error(path, e)),
        }
        let deferred = Deferred {
            path: path.to_path_buf(),
            memory_mb,
            _lock: lock,
        };
        Ok(Cache::new(None, Some(deferred), RowIndex::load(path), None))
    }

    /// The sled trees, taking a dry run's copy on first use.
    fn trees(&self) -> Result<&Trees, CacheError> {
        if let Some(t) = self.inner.trees.get() {
            return Ok(t);
        }
        let mut deferred = self
            .inner
            .deferred
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(t) = self.inner.trees.get() {
            return Ok(t); // another thread took the copy while this one waited
        }
        let Some(d) = deferred.as_ref() else {
            return Err(CacheError::Storage(sled::Error::ReportableBug(
                "cache has neither trees nor a deferred copy".into(),
            )));
        };
        let dir = tempfile::Builder::new()
            .prefix("accountsync-dry-run-")
            .tempdir()
            .map_err(|e| copy_error(&d.path, e))?;
        let copy = dir.path().join("cache");
        copy_dir(&d.path, &copy).map_err(|e| copy_error(&d.path, e))?;
        let trees = open_trees(&copy, sled::Config::new().path(&copy), d.memory_mb)?;
        *self.inner.copy.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir);
        *deferred = None; // releases the original's lock
        Ok(self.inner.trees.get_or_init(|| trees))
    }

    /// The row index as loaded at open, with this run's recorded outcomes applied.
    pub fn row_index(&self) -> RwLockReadGuard<'_, RowIndex> {
        self.inner.index.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn update_row_index(&self, key: u64, digest: Option<u64>) {
        let mut index = self.inner.index.write().unwrap_or_else(|e| e.into_inner());
        index.apply([(key, digest)]);
    }

    /// Writes the row index back, after a run whose every cache write was flushed. A dry
    /// run's cache has nowhere to write it.
    pub fn save_row_index(&self) -> Result<(), CacheError> {
        let (Some(home), Some(trees)) = (&self.inner.home, self.inner.trees.get()) else {
            return Ok(());
        };
        self.row_index()
            .save(home, trees.outbox.is_empty())
            .map_err(|e| CacheError::Storage(e.into()))
    }
}

fn copy_error(path: &Path, source: std::io::Error) -> CacheError {
    CacheError::Copy {
        path: path.to_path_buf(),
        source,
    }
}

fn open_trees(path: &Path, config: sled::Config, memory_mb: u64) -> Result<Trees, CacheError> {
    let mut fresh = false;
    {
        let config = config
            .mode(sled::Mode::LowSpace)
            .cache_capacity(memory_mb * 1024 * 1024);
        // sled 0.34 may panic rather than return an error on some damaged files; a damaged
        // cache must be reported and recovered from, never end the process.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
            .unwrap_or(Err(sled::Error::Corruption { at: None, bt: () }));
        let db = match opened {
            Ok(db) => db,
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                return Err(CacheError::Locked {
                    path: path.to_path_buf(),
                });
            }
            Err(source) => {
                return Err(CacheError::Open {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        match db.get("schema")? {
            None => {
                db.insert("schema", SCHEMA)?;
                fresh = true;
            }
            Some(v) if v.as_ref() == SCHEMA.as_bytes() => {}
            Some(v) => {
                return Err(CacheError::Schema {
                    path: path.to_path_buf(),
                    found: String::from_utf8_lossy(&v).into_owned(),
                });
            }
        }
        Ok(Trees {
            fresh,
            confirmed: db.open_tree("confirmed")?,
            rejected: db.open_tree("rejected")?,
            outbox: db.open_tree("outbox")?,
            digests: db.open_tree("digests")?,
            db,
        })
    }
}

impl Cache {
    pub fn confirmed(&self, reference: &str) -> Result<Fields, CacheError> {
        Ok(get(&self.trees()?.confirmed, reference)?.unwrap_or_default())
    }

    pub fn rejection(&self, reference: &str) -> Result<Option<Rejection>, CacheError> {
        get(&self.trees()?.rejected, reference)
    }

    pub fn pending(&self, reference: &str) -> Result<Option<Pending>, CacheError> {
        get(&self.trees()?.outbox, reference)
    }

    /// The fingerprint of the last row whose values the API confirmed in full.
    pub fn row_digest(&self, reference: &str) -> Result<Option<RowDigest>, CacheError> {
        Ok(self
            .trees()?
            .digests
            .get(reference)?
            .and_then(|v| RowDigest::try_from(v.as_ref()).ok()))
    }

    /// Records a 2xx: the confirmed values absorb `changes`, `row` (the fingerprint of the
    /// whole row that was sent) becomes the account's digest, and any older rejection or
    /// retry of the account is dropped.
    pub fn confirm(
        &self,
        reference: &str,
        changes: &[Change],
        row: RowDigest,
    ) -> Result<(), CacheError> {
        let key = reference.as_bytes();
        let t = self.trees()?;
        let trees = (&t.confirmed, &t.rejected, &t.outbox, &t.digests);
        trees
            .transaction(|(confirmed, rejected, outbox, digests)| {
                let current: Fields = confirmed
                    .get(key)?
                    .and_then(|bytes| decode(reference, &bytes))
                    .unwrap_or_default();
                let next = serde_json::to_vec(&apply(&current, changes))
                    .map_err(ConflictableTransactionError::Abort)?;
                confirmed.insert(key, next)?;
                digests.insert(key, &row[..])?;
                rejected.remove(key)?;
                outbox.remove(key)?;
                Ok(())
            })
            .map_err(|e| transaction_error(reference, e))
    }

    /// Records a permanent rejection (400/403/404/409...), replacing any kept retry.
    pub fn reject(&self, reference: &str, rejection: &Rejection) -> Result<(), CacheError> {
        let bytes = encode(reference, rejection)?;
        self.write(reference, |key, _, rejected, outbox| {
            rejected.insert(key, bytes.as_slice())?;
            outbox.remove(key)?;
            Ok(())
        })
    }

    /// Keeps a record that failed transiently for the next run; `drop_rejection` when the
    /// row that failed replaced a remembered rejection.
    pub fn keep_pending(
        &self,
        reference: &str,
        pending: &Pending,
        drop_rejection: bool,
    ) -> Result<(), CacheError> {
        let bytes = encode(reference, pending)?;
        self.write(reference, |key, _, rejected, outbox| {
            outbox.insert(key, bytes.as_slice())?;
            if drop_rejection {
                rejected.remove(key)?;
            }
            Ok(())
        })
    }

    /// Forgets what a newer row made stale.
    pub fn forget(
        &self,
        reference: &str,
        pending: bool,
        rejection: bool,
    ) -> Result<(), CacheError> {
        if !(pending || rejection) {
            return Ok(());
        }
        self.write(reference, |key, _, rejected, outbox| {
            if pending {
                outbox.remove(key)?;
            }
            if rejection {
                rejected.remove(key)?;
            }
            Ok(())
        })
    }

    /// One outcome's writes as one sled transaction over the three trees, so a crash or a
    /// full disk never leaves half of them (a dropped retry without its replacement).
    fn write<F>(&self, reference: &str, f: F) -> Result<(), CacheError>
    where
        F: Fn(
            &[u8],
            &TransactionalTree,
            &TransactionalTree,
            &TransactionalTree,
        ) -> ConflictableTransactionResult<(), serde_json::Error>,
    {
        let key = reference.as_bytes();
        let t = self.trees()?;
        (&t.confirmed, &t.rejected, &t.outbox)
            .transaction(|(confirmed, rejected, outbox)| f(key, confirmed, rejected, outbox))
            .map_err(|e| transaction_error(reference, e))
    }

    /// Outbox entries left by earlier runs (not `run_id`), in reference order. A dry run
    /// whose row index says the outbox was empty does not copy the cache to find out.
    pub fn pending_before(
        &self,
        run_id: &str,
    ) -> impl Iterator<Item = Result<(String, Pending), CacheError>> + '_ {
        let known_empty = self.inner.trees.get().is_none() && self.row_index().outbox_was_empty;
        let (outbox, error) = if known_empty {
            (None, None)
        } else {
            match self.trees() {
                Ok(t) => (Some(t.outbox.iter()), None),
                Err(e) => (None, Some(Err(e))),
            }
        };
        let run_id = run_id.to_owned();
        let entries = outbox.into_iter().flatten().filter_map(move |kv| {
            let (k, v) = match kv {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e.into())),
            };
            let reference = String::from_utf8_lossy(&k).into_owned();
            let pending: Pending = decode(&reference, &v)?;
            (pending.run_id != run_id).then_some(Ok((reference, pending)))
        });
        error.into_iter().chain(entries)
    }

    /// For commands outside a run (`cache forget`, `cache import`): flush, then write the
    /// row index back, so a nightly run after a small edit does not start cold.
    pub fn close(&self) -> Result<(), CacheError> {
        if let Some(t) = self.inner.trees.get() {
            t.db.flush()?;
        }
        self.save_row_index()
    }

    /// Forces everything written so far to disk.
    pub async fn flush(&self) -> Result<(), CacheError> {
        if let Some(t) = self.inner.trees.get() {
            t.db.flush_async().await?;
        }
        Ok(())
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn transaction_error(reference: &str, e: TransactionError<serde_json::Error>) -> CacheError {
    match e {
        TransactionError::Abort(source) => CacheError::Encode {
            reference: reference.to_owned(),
            source,
        },
        TransactionError::Storage(e) => CacheError::Storage(e),
    }
}

fn get<T: for<'de> Deserialize<'de>>(
    tree: &sled::Tree,
    reference: &str,
) -> Result<Option<T>, CacheError> {
    Ok(tree
        .get(reference)?
        .and_then(|bytes| decode(reference, &bytes)))
}

/// An entry that cannot be decoded is ignored with a warning rather than stopping every
/// future run: for confirmed values that means the account's fields are sent again, which
/// the API takes as a repeat, never as a loss.
fn decode<T: for<'de> Deserialize<'de>>(reference: &str, bytes: &[u8]) -> Option<T> {
    match serde_json::from_slice(bytes) {
        Ok(v) => Some(v),
        Err(error) => {
            tracing::warn!(reference, %error, "Ignoring a cache entry that cannot be decoded.");
            None
        }
    }
}

fn encode<T: Serialize>(reference: &str, value: &T) -> Result<Vec<u8>, CacheError> {
    serde_json::to_vec(value).map_err(|source| CacheError::Encode {
        reference: reference.to_owned(),
        source,
    })
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
