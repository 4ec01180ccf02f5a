//! The cache: sled behind one small type, holding no domain logic. Four trees, each keyed by
//! account reference:
//! - `confirmed`: the values the API last confirmed (2xx), what the diff compares against;
//! - `rejected`: a row the API rejected permanently, so an unchanged row is not resent;
//! - `outbox`: a row not confirmed yet: written before its request starts (write-ahead),
//!   kept when it failed transiently, retried on the next run even if the next export no
//!   longer has it;
//! - `digests`: a fingerprint of the last row confirmed in full, the fast path to
//!   "unchanged".
//!
//! Beside sled sit the row index (`index.rs`), the faster path to "unchanged" that needs no
//! sled read at all, and the open records file (`admin.rs`), what recovery keeps of a
//! damaged cache without a backup.

mod admin;
mod index;
mod open;

use std::collections::BTreeSet;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

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
pub use index::{RowIndex, hash128, key as index_key, key_of as index_key_of};

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

/// A record that is not confirmed yet and must be tried again: written before its request
/// starts (so a kill while it is in flight leaves it here), rewritten when it fails.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub fields: Fields,
    pub file: String,
    pub line: u64,
    /// The run that last tried it: a run replays only entries of earlier runs.
    pub run_id: String,
    pub problem: Problem,
    /// Fields that a request may have changed at the API without an answer saying so (it
    /// was applied, then the connection dropped; or the process was killed). Their
    /// confirmed values are no longer known to be the API's, so whatever replaces this
    /// entry sends them again, and an entry dropped without a 2xx for exactly its values
    /// takes them out of the confirmed values. Accumulates over attempts.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub uncertain: BTreeSet<String>,
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

/// The trees of one transaction, for one account.
struct Tx<'a> {
    reference: &'a str,
    key: &'a [u8],
    confirmed: &'a TransactionalTree,
    rejected: &'a TransactionalTree,
    outbox: &'a TransactionalTree,
    digests: &'a TransactionalTree,
}

impl Tx<'_> {
    /// Removes the account's outbox entry and takes its uncertain fields out of the
    /// confirmed values (and the digest with them). Returns the confirmed values as they are
    /// now.
    fn drop_pending(&self) -> ConflictableTransactionResult<Fields, serde_json::Error> {
        let mut confirmed: Fields = self
            .confirmed
            .get(self.key)?
            .and_then(|bytes| decode(self.reference, &bytes))
            .unwrap_or_default();
        let Some(old) = self.outbox.remove(self.key)? else {
            return Ok(confirmed);
        };
        let pending: Option<Pending> = decode(self.reference, &old);
        if let Some(p) = &pending
            && p.uncertain.iter().any(|f| confirmed.contains_key(f))
        {
            confirmed.retain(|f, _| !p.uncertain.contains(f));
            self.confirmed.insert(
                self.key,
                serde_json::to_vec(&confirmed).map_err(ConflictableTransactionError::Abort)?,
            )?;
            self.digests.remove(self.key)?;
        }
        Ok(confirmed)
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
    /// retry of the account is dropped (with the fields the retry left uncertain, which a
    /// row without them did not send).
    pub fn confirm(
        &self,
        reference: &str,
        changes: &[Change],
        row: RowDigest,
    ) -> Result<(), CacheError> {
        self.write(reference, |tx| {
            let current = tx.drop_pending()?;
            let next = apply(&current, changes);
            tx.confirmed.insert(
                tx.key,
                serde_json::to_vec(&next).map_err(ConflictableTransactionError::Abort)?,
            )?;
            tx.digests.insert(tx.key, &row[..])?;
            tx.rejected.remove(tx.key)?;
            Ok(())
        })
    }

    /// Records a permanent rejection (400/403/404/409), replacing any kept retry.
    pub fn reject(&self, reference: &str, rejection: &Rejection) -> Result<(), CacheError> {
        let bytes = encode(reference, rejection)?;
        self.write(reference, |tx| {
            tx.drop_pending()?;
            tx.rejected.insert(tx.key, bytes.as_slice())?;
            Ok(())
        })
    }

    /// Keeps a record that is not confirmed: before its request starts, and again when it
    /// failed transiently. Its uncertain fields are added to those of the entry it replaces,
    /// since either request may be the one the API applied. `drop_rejection` when the row
    /// replaced a remembered rejection.
    pub fn keep_pending(
        &self,
        reference: &str,
        pending: &Pending,
        drop_rejection: bool,
    ) -> Result<(), CacheError> {
        self.keep_pending_batch(&[(reference.to_owned(), pending.clone(), drop_rejection)])
    }

    /// [`Cache::keep_pending`] for many records at once: the write-ahead of a batch of jobs
    /// (`pipeline/journal.rs`) as one atomic batch per tree; a transaction per job cost more
    /// than the request at a fast API.
    /// Safe without a transaction across the trees: the outbox batch goes first, and a crash
    /// before the digests and rejections follow leaves a digest or a rejection beside an
    /// entry with uncertain fields, which the decision never trusts over the entry.
    pub fn keep_pending_batch(
        &self,
        entries: &[(String, Pending, bool)],
    ) -> Result<(), CacheError> {
        let t = self.trees()?;
        let (mut outbox, mut digests, mut rejected) = (
            sled::Batch::default(),
            sled::Batch::default(),
            sled::Batch::default(),
        );
        for (reference, pending, drop_rejection) in entries {
            let key = reference.as_bytes();
            let mut next;
            let entry = match t.outbox.get(key)? {
                Some(old) => {
                    next = pending.clone();
                    if let Some(old) = decode::<Pending>(reference, &old) {
                        next.uncertain.extend(old.uncertain);
                    }
                    &next
                }
                None => pending,
            };
            outbox.insert(key, encode(reference, entry)?);
            if !entry.uncertain.is_empty() {
                digests.remove(key);
            }
            if *drop_rejection {
                rejected.remove(key);
            }
        }
        t.outbox.apply_batch(outbox)?;
        t.digests.apply_batch(digests)?;
        t.rejected.apply_batch(rejected)?;
        Ok(())
    }

    /// Forgets what a newer row made stale; a kept retry's uncertain fields leave the
    /// confirmed values with it.
    pub fn forget(
        &self,
        reference: &str,
        pending: bool,
        rejection: bool,
    ) -> Result<(), CacheError> {
        if !(pending || rejection) {
            return Ok(());
        }
        self.write(reference, |tx| {
            if pending {
                tx.drop_pending()?;
            }
            if rejection {
                tx.rejected.remove(tx.key)?;
            }
            Ok(())
        })
    }

    /// One outcome's writes as one sled transaction over the four trees, so a crash or a
    /// full disk never leaves half of them (a dropped retry without its replacement).
    fn write<F>(&self, reference: &str, f: F) -> Result<(), CacheError>
    where
        F: Fn(&Tx<'_>) -> ConflictableTransactionResult<(), serde_json::Error>,
    {
        let t = self.trees()?;
        (&t.confirmed, &t.rejected, &t.outbox, &t.digests)
            .transaction(|(confirmed, rejected, outbox, digests)| {
                f(&Tx {
                    reference,
                    key: reference.as_bytes(),
                    confirmed,
                    rejected,
                    outbox,
                    digests,
                })
            })
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
        self.flush_blocking()?;
        if let Err(error) = self.write_open_records() {
            tracing::warn!(%error, "Cannot write the open records file.");
        }
        self.save_row_index()
    }

    /// [`Cache::flush`] for a blocking thread.
    pub fn flush_blocking(&self) -> Result<(), CacheError> {
        if let Some(t) = self.inner.trees.get() {
            t.db.flush()?;
        }
        Ok(())
    }

    /// Forces everything written so far to disk.
    pub async fn flush(&self) -> Result<(), CacheError> {
        if let Some(t) = self.inner.trees.get() {
            t.db.flush_async().await?;
        }
        Ok(())
    }
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
