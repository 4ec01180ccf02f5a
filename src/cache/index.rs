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

const MAGIC: &[u8; 8] = b"ASROWS01";
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

/// The account's key in the index. Two references sharing a key cost a slow-path row, not a
/// wrong answer: the row digest covers the reference cell too.
pub fn key(reference: &str) -> u64 {
    hash128(reference) as u64
}

#[derive(Default)]
pub struct RowIndex {
    map: Map,
    /// Whether the outbox was empty when the index was written: a dry run then knows it has
    /// no earlier records to replay without copying the cache.
    pub outbox_was_empty: bool,
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
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, key: u64) -> Option<u64> {
        self.map.get(&key).copied()
    }

    pub fn apply(&mut self, updates: impl IntoIterator<Item = Update>) {
        for (key, digest) in updates {
            match digest {
                Some(d) => self.map.insert(key, d),
                None => self.map.remove(&key),
            };
        }
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
        put(&mut out, &(self.map.len() as u64).to_le_bytes())?;
        for (k, d) in &self.map {
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
    // The count comes from the file: cap the reservation, let the map grow past it if true.
    let mut map = Map::with_capacity_and_hasher(count.min(1 << 24) as usize, Default::default());
    let mut entry = [0u8; 16];
    for _ in 0..count {
        take(&mut input, &mut entry)?;
        let (k, d) = entry.split_at(8);
        map.insert(
            u64::from_le_bytes(k.try_into().unwrap_or_default()),
            u64::from_le_bytes(d.try_into().unwrap_or_default()),
        );
    }
    let expected = sum.digest();
    let mut tail = [0u8; 8];
    input.read_exact(&mut tail)?;
    if u64::from_le_bytes(tail) != expected {
        return Err(bad("checksum mismatch (a torn write?)"));
    }
    Ok(RowIndex {
        map,
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
}
