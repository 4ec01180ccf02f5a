//! The row index: per account, a 64-bit digest of the raw CSV row whose values the API last
//! confirmed. A nightly export is mostly rows that did not change since the night before;
//! the index answers "unchanged" for them from memory, without mapping, validating or
//! reading sled, which is what keeps a warm run close to the speed of parsing the file.
//!
//! It is derived data, kept beside sled in one file (`rows.idx`), and trusted only because
//! of how it is written:
//! - a run that will write the cache deletes the file before its first write and writes it
//!   again only after its last write was flushed, so a crash leaves no index (the next run
//!   takes the slow path and rebuilds it), never a stale one;
//! - an entry exists only while the account has no kept retry and no remembered rejection,
//!   and only for a row that was confirmed or found unchanged in full;
//! - the digest covers the whole raw row, the file's header and every setting that shapes
//!   mapping and validation (see `pipeline::decide::RowSeed`), so any change there misses.
//!
//! The file ends in a checksum; a torn or foreign file is ignored with a warning.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use xxhash_rust::xxh3::{Xxh3, xxh3_64, xxh3_128};

/// Version 2: keys are the high 64 bits of the reference's hash, entries sorted by key.
const MAGIC: &[u8; 8] = b"ASROWS02";
const FILE_NAME: &str = "rows.idx";

/// Keys are already xxh3 hashes; hashing them again would cost more than the lookup.
#[derive(Default)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; anything else still hashes, just not as fast.
        self.0 = xxh3_64(bytes) ^ self.0.rotate_left(5);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map = HashMap<u64, u64, BuildHasherDefault<PassThrough>>;

/// A reference's 128-bit hash: what the duplicate pass compares (collisions at 128 bits are
/// not a practical concern), and the index key's source.
pub fn hash128(reference: &str) -> u128 {
    xxh3_128(reference.as_bytes())
}

/// The account's key in the index: the high half of [`hash128`], so that the first pass,
/// which sorts its rows by `hash128` to find duplicates, visits them in key order too and
/// can walk the sorted index alongside (a merge, not a million random lookups: the lookups
/// missed the CPU cache and cost a fifth of a warm night). Two references sharing a key
/// cost a slow-path row, not a wrong answer: the row digest covers the reference cell too.
pub fn key(reference: &str) -> u64 {
    key_of(hash128(reference))
}

pub fn key_of(hash: u128) -> u64 {
    (hash >> 64) as u64
}

/// Entries as loaded, sorted by key, plus the changes the record stage made since: looked
/// up first, merged in when the index is saved.
#[derive(Default)]
pub struct RowIndex {
    sorted: Vec<(u64, u64)>,
    changes: Map,
    removed: Map,
    /// Whether the outbox was empty when the index was written: a dry run then knows it has
    /// no earlier records to replay without copying the cache.
    pub outbox_was_empty: bool,
}

/// Walks [`RowIndex`] in key order; see [`RowIndex::cursor`].
pub struct Cursor<'a> {
    index: &'a RowIndex,
    at: usize,
}

impl Cursor<'_> {
    /// The digest for `key`; keys must come in ascending order.
    pub fn get(&mut self, key: u64) -> Option<u64> {
        if !self.index.changes.is_empty() || !self.index.removed.is_empty() {
            if let Some(d) = self.index.changes.get(&key) {
                return Some(*d);
            }
            if self.index.removed.contains_key(&key) {
                return None;
            }
        }
        let sorted = &self.index.sorted;
        while self.at < sorted.len() && sorted[self.at].0 < key {
            self.at += 1;
        }
        match sorted.get(self.at) {
            Some(&(k, d)) if k == key => Some(d),
            _ => None,
        }
    }
}

/// A change to apply once the outcomes of a stage are recorded.
pub type Update = (u64, Option<u64>);

impl RowIndex {
    pub fn path(cache_dir: &Path) -> std::path::PathBuf {
        cache_dir.join(FILE_NAME)
    }

    /// Reads the index of `cache_dir`; a missing, torn or foreign file gives an empty one.
    pub fn load(cache_dir: &Path) -> RowIndex {
        let path = Self::path(cache_dir);
        match File::open(&path) {
            Ok(file) => match read(BufReader::with_capacity(1 << 20, file)) {
                Ok(index) => index,
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "Ignoring the row index; this run checks every row in full.");
                    RowIndex::default()
                }
            },
            Err(_) => RowIndex::default(),
        }
    }

    pub fn len(&self) -> usize {
        let in_sorted = |k: &u64| self.sorted.binary_search_by_key(k, |e| e.0).is_ok();
        let added = self.changes.keys().filter(|k| !in_sorted(k)).count();
        let gone = self.removed.keys().filter(|k| in_sorted(k)).count();
        self.sorted.len() + added - gone
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, key: u64) -> Option<u64> {
        if let Some(d) = self.changes.get(&key) {
            return Some(*d);
        }
        if self.removed.contains_key(&key) {
            return None;
        }
        let i = self.sorted.binary_search_by_key(&key, |e| e.0).ok()?;
        Some(self.sorted[i].1)
    }

    /// For lookups in ascending key order, each resuming where the last one stopped.
    pub fn cursor(&self) -> Cursor<'_> {
        Cursor { index: self, at: 0 }
    }

    pub fn apply(&mut self, updates: impl IntoIterator<Item = Update>) {
        for (key, digest) in updates {
            match digest {
                Some(d) => {
                    self.removed.remove(&key);
                    self.changes.insert(key, d);
                }
                None => {
                    self.changes.remove(&key);
                    self.removed.insert(key, 0);
                }
            }
        }
    }

    /// Every entry, in key order, changes merged in.
    fn entries(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = self
            .sorted
            .iter()
            .filter(|(k, _)| !self.removed.contains_key(k) && !self.changes.contains_key(k))
            .copied()
            .chain(self.changes.iter().map(|(k, d)| (*k, *d)))
            .collect();
        out.sort_unstable();
        out
    }

    /// Writes `rows.idx` atomically: a temporary file, fsync, rename, fsync of the folder.
    pub fn save(&self, cache_dir: &Path, outbox_empty: bool) -> std::io::Result<()> {
        let tmp = cache_dir.join(format!(".{FILE_NAME}.tmp"));
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        let mut sum = Xxh3::new();
        let mut put = |out: &mut BufWriter<File>, bytes: &[u8]| {
            sum.update(bytes);
            out.write_all(bytes)
        };
        put(&mut out, MAGIC)?;
        put(&mut out, &[u8::from(outbox_empty)])?;
        let entries = self.entries();
        put(&mut out, &(entries.len() as u64).to_le_bytes())?;
        for (k, d) in &entries {
            put(&mut out, &k.to_le_bytes())?;
            put(&mut out, &d.to_le_bytes())?;
        }
        out.write_all(&sum.digest().to_le_bytes())?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, Self::path(cache_dir))?;
        File::open(cache_dir)?.sync_all()
    }

    /// Removes `rows.idx` (and makes the removal durable) before a run writes the cache.
    pub fn remove(cache_dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(Self::path(cache_dir)) {
            Ok(()) => File::open(cache_dir)?.sync_all(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn read(mut input: impl Read) -> std::io::Result<RowIndex> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut sum = Xxh3::new();
    let mut take = |input: &mut dyn Read, buf: &mut [u8]| -> std::io::Result<()> {
        input.read_exact(buf)?;
        sum.update(buf);
        Ok(())
    };
    let mut head = [0u8; 17];
    take(&mut input, &mut head)?;
    if &head[..8] != MAGIC {
        return Err(bad("not a row index of this version"));
    }
    let outbox_was_empty = head[8] == 1;
    let count = u64::from_le_bytes(head[9..17].try_into().unwrap_or_default());
    // The count comes from the file: cap the reservation, let the vector grow past it if true.
    let mut sorted = Vec::with_capacity(count.min(1 << 24) as usize);
    let mut entry = [0u8; 16];
    for _ in 0..count {
        take(&mut input, &mut entry)?;
        let (k, d) = entry.split_at(8);
        sorted.push((
            u64::from_le_bytes(k.try_into().unwrap_or_default()),
            u64::from_le_bytes(d.try_into().unwrap_or_default()),
        ));
    }
    if !sorted.windows(2).all(|w| w[0].0 < w[1].0) {
        return Err(bad("entries out of order"));
    }
    let expected = sum.digest();
    let mut tail = [0u8; 8];
    input.read_exact(&mut tail)?;
    if u64::from_le_bytes(tail) != expected {
        return Err(bad("checksum mismatch (a torn write?)"));
    }
    Ok(RowIndex {
        sorted,
        changes: Map::default(),
        removed: Map::default(),
        outbox_was_empty,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_index_loads_back_and_a_torn_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = RowIndex::default();
        index.apply([(1, Some(10)), (2, Some(20)), (3, Some(30)), (2, None)]);
        index.save(dir.path(), true).unwrap();
        let back = RowIndex::load(dir.path());
        assert_eq!(
            (back.get(1), back.get(2), back.get(3)),
            (Some(10), None, Some(30))
        );
        assert!(back.outbox_was_empty);

        let path = RowIndex::path(dir.path());
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(RowIndex::load(dir.path()).is_empty());
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert!(RowIndex::load(dir.path()).is_empty());

        RowIndex::remove(dir.path()).unwrap();
        assert!(!path.exists());
        RowIndex::remove(dir.path()).unwrap(); // already gone is fine
    }

    #[test]
    fn a_cursor_in_key_order_sees_what_random_lookups_see() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = RowIndex::default();
        index.apply((0..1000u64).map(|k| (k * 7, Some(k))));
        index.save(dir.path(), false).unwrap();
        let mut back = RowIndex::load(dir.path());
        assert_eq!(back.len(), 1000);
        // Changes after loading: a new key, a changed one, a removed one.
        back.apply([(3, Some(33)), (14, Some(140)), (21, None)]);
        assert_eq!(back.len(), 1000);
        let mut cursor = back.cursor();
        for key in 0..7100u64 {
            assert_eq!(cursor.get(key), back.get(key), "key {key}");
        }
        assert_eq!(
            (back.get(3), back.get(14), back.get(21)),
            (Some(33), Some(140), None)
        );
        back.save(dir.path(), false).unwrap();
        let again = RowIndex::load(dir.path());
        assert_eq!(
            (again.get(3), again.get(14), again.get(21), again.len()),
            (Some(33), Some(140), None, 1000)
        );
    }
}
