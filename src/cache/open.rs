//! Opening the cache: for a run (takes sled's lock, removes the row index before any
//! write), for reading only, or as a dry run's private copy taken when first needed.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard};

use super::{Cache, CacheError, Deferred, Inner, MARKER, RowIndex, SCHEMA, Trees};

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

    pub(super) fn new(
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
    pub(super) fn trees(&self) -> Result<&Trees, CacheError> {
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
