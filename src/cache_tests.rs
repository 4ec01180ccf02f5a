use super::*;
use crate::model::{Category, Value};
use std::path::Path;

fn change(field: &str, new: &str) -> Change {
    Change {
        field: field.into(),
        old: None,
        new: Value::Text(new.into()),
    }
}

fn pending(run_id: &str) -> Pending {
    Pending {
        fields: Fields::new(),
        file: "a.csv".into(),
        line: 2,
        run_id: run_id.into(),
        problem: Problem {
            category: Category::Failed,
            http_status: Some(500),
            field: String::new(),
            message: "internal server error".into(),
        },
        uncertain: Default::default(),
    }
}

#[test]
fn confirm_merges_and_clears_older_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(&dir.path().join("c"), 16).unwrap();
    cache
        .confirm(
            "A",
            &[change("email", "a@b.co"), change("firstname", "Ann")],
            [1; 16],
        )
        .unwrap();
    cache.keep_pending("A", &pending("r1"), false).unwrap();
    let rejection = Rejection {
        fields: Fields::new(),
        problems: vec![],
    };
    cache.reject("A", &rejection).unwrap();
    assert_eq!(
        cache.pending("A").unwrap(),
        None,
        "a rejection replaces a pending retry"
    );
    cache
        .confirm("A", &[change("email", "c@d.co")], [2; 16])
        .unwrap();
    assert_eq!(cache.row_digest("A").unwrap(), Some([2; 16]));
    let confirmed = cache.confirmed("A").unwrap();
    assert_eq!(confirmed["email"], Value::Text("c@d.co".into()));
    assert_eq!(confirmed["firstname"], Value::Text("Ann".into()));
    assert_eq!(cache.rejection("A").unwrap(), None);
    assert_eq!(cache.confirmed("B").unwrap(), Fields::new());
}

/// sled's flusher thread keeps the database (and its file lock) for a moment after the
/// last handle is dropped, so a reopen in the same process may briefly see it locked.
fn reopen(path: &Path) -> Cache {
    for _ in 0..200 {
        match Cache::open(path, 16) {
            Err(CacheError::Locked { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            other => return other.unwrap(),
        }
    }
    panic!("{} stayed locked", path.display());
}

#[test]
fn replays_only_earlier_runs_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c");
    {
        let cache = Cache::open(&path, 16).unwrap();
        cache.keep_pending("old", &pending("r1"), false).unwrap();
        cache.keep_pending("new", &pending("r2"), false).unwrap();
    }
    let cache = reopen(&path);
    let refs: Vec<String> = cache.pending_before("r2").map(|r| r.unwrap().0).collect();
    assert_eq!(refs, ["old"]);
    cache.forget("old", true, false).unwrap();
    assert_eq!(cache.pending_before("r2").count(), 0);
}

#[test]
fn a_second_opener_is_told_the_cache_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c");
    let _first = Cache::open(&path, 16).unwrap();
    // sled's lock is per process via flock on a new file handle, so a second open
    // from this process conflicts the same way a second process does.
    match Cache::open(&path, 16) {
        Err(CacheError::Locked { .. }) => {}
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("expected Locked, got a second handle"),
    }
}

fn digest(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(digest(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn a_dry_run_copy_reads_the_cache_and_leaves_its_bytes_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c");
    assert!(
        Cache::open_copy(&path, 16)
            .unwrap()
            .confirmed("A")
            .unwrap()
            .is_empty()
    );
    assert!(!path.exists(), "a dry run does not create a cache");
    {
        let cache = Cache::open(&path, 16).unwrap();
        cache
            .confirm("A", &[change("email", "a@b.co")], [1; 16])
            .unwrap();
    }
    let before = digest(&path);
    {
        let copy = Cache::open_copy(&path, 16).unwrap();
        assert_eq!(
            copy.confirmed("A").unwrap()["email"],
            Value::Text("a@b.co".into())
        );
        copy.confirm("B", &[change("email", "x@y.co")], [1; 16])
            .unwrap();
    }
    assert_eq!(digest(&path), before);
    let _real = reopen(&path);
    assert!(matches!(
        Cache::open_copy(&path, 16),
        Err(CacheError::Locked { .. })
    ));
}

#[test]
fn a_cache_from_another_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c");
    {
        let db = sled::open(&path).unwrap();
        db.insert("schema", "99").unwrap();
        db.flush().unwrap();
    }
    let err = (0..200)
        .find_map(|_| match Cache::open(&path, 16) {
            Err(CacheError::Locked { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
                None
            }
            other => other.err(),
        })
        .unwrap();
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[test]
fn the_row_index_is_gone_while_a_run_writes_and_back_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c");
    let file = RowIndex::path(&path);
    {
        let cache = Cache::open(&path, 16).unwrap();
        cache
            .confirm("A", &[change("email", "a@b.co")], [7; 16])
            .unwrap();
        cache.update_row_index(index_key("A"), Some(42));
        assert!(!file.exists());
        cache.save_row_index().unwrap();
    }
    assert!(file.exists());
    {
        // A dry run reads the index and copies the cache only when a row needs sled.
        let copy = (0..200)
            .find_map(|_| match Cache::open_copy(&path, 16) {
                Err(CacheError::Locked { .. }) => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    None
                }
                other => Some(other.unwrap()),
            })
            .expect("the cache stayed locked");
        assert_eq!(copy.row_index().get(index_key("A")), Some(42));
        assert!(copy.row_index().outbox_was_empty);
        assert!(copy.inner.trees.get().is_none(), "no copy taken yet");
        assert_eq!(copy.pending_before("r").count(), 0);
        assert!(
            copy.inner.trees.get().is_none(),
            "an empty outbox needs no copy"
        );
        assert_eq!(copy.confirmed("A").unwrap().len(), 1);
        assert!(copy.inner.trees.get().is_some());
        assert!(file.exists(), "a dry run never removes the index");
    }
    // Opening for writing removes the file first: a crash mid-run leaves no stale index.
    let cache = reopen(&path);
    assert!(!file.exists());
    assert_eq!(cache.row_index().get(index_key("A")), Some(42));
}

/// Garbage over the whole data file: what a torn write after a kill can leave, at worst.
fn damage(path: &Path) {
    std::thread::sleep(std::time::Duration::from_millis(200)); // sled's flusher lets go
    let db = path.join("db");
    let len = std::fs::metadata(&db).unwrap().len() as usize;
    std::fs::write(&db, vec![0xA5; len.max(4096)]).unwrap();
}

/// `Cache::open_or_recover`, once sled's flusher has let go of the lock.
fn recover(path: &Path, backup: Option<&Path>) -> (Cache, Option<String>) {
    (0..200)
        .find_map(|_| match Cache::open_or_recover(path, 16, backup) {
            Err(CacheError::Locked { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
                None
            }
            other => Some(other),
        })
        .expect("stayed locked")
        .unwrap_or_else(|e| panic!("not recovered: {e}"))
}

#[test]
fn a_damaged_cache_is_moved_aside_and_restored_from_its_backup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c");
    let backup = dir.path().join("backup.jsonl");
    {
        let cache = Cache::open(&path, 16).unwrap();
        cache
            .confirm("A", &[change("email", "a@b.co")], [7; 16])
            .unwrap();
        assert_eq!(cache.write_backup(&backup).unwrap(), 1);
    }
    damage(&path);
    let (cache, what) = recover(&path, Some(&backup));
    let what = what.expect("the damage is reported");
    assert!(
        what.contains("damaged") && what.contains("restored 1 references"),
        "{what}"
    );
    assert_eq!(cache.confirmed("A").unwrap().len(), 1);
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("c.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged cache is kept aside");
}

#[test]
fn a_dropped_retry_takes_its_uncertain_fields_out_of_the_confirmed_values() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(&dir.path().join("c"), 16).unwrap();
    let both = [change("email", "a@b.co"), change("firstname", "Ann")];
    cache.confirm("A", &both, [1; 16]).unwrap();

    // Two attempts, each applied perhaps: both fields become uncertain.
    let mut first = pending("r1");
    first.uncertain = ["email".to_owned()].into();
    cache.keep_pending("A", &first, false).unwrap();
    assert_eq!(
        cache.row_digest("A").unwrap(),
        None,
        "no digest vouches now"
    );
    let mut second = pending("r2");
    second.uncertain = ["firstname".to_owned()].into();
    cache.keep_pending("A", &second, false).unwrap();
    let kept = cache.pending("A").unwrap().unwrap();
    assert_eq!(kept.run_id, "r2");
    assert_eq!(kept.uncertain.len(), 2, "{:?}", kept.uncertain);

    // A 2xx for a row that carried only the email: the first name stays unknown.
    cache
        .confirm("A", &[change("email", "a@b.co")], [2; 16])
        .unwrap();
    let confirmed = cache.confirmed("A").unwrap();
    assert_eq!(confirmed["email"], Value::Text("a@b.co".into()));
    assert!(!confirmed.contains_key("firstname"), "{confirmed:?}");
    assert_eq!(cache.pending("A").unwrap(), None);

    // The same through forget (a newer unchanged row) and reject (a 4xx).
    cache.confirm("B", &both, [1; 16]).unwrap();
    let mut kept = pending("r1");
    kept.uncertain = ["email".to_owned()].into();
    cache.keep_pending("B", &kept, false).unwrap();
    cache.forget("B", true, false).unwrap();
    assert!(!cache.confirmed("B").unwrap().contains_key("email"));
    assert!(cache.confirmed("B").unwrap().contains_key("firstname"));

    cache.confirm("C", &both, [1; 16]).unwrap();
    cache.keep_pending("C", &kept, false).unwrap();
    let rejection = Rejection {
        fields: Fields::new(),
        problems: vec![],
    };
    cache.reject("C", &rejection).unwrap();
    assert!(!cache.confirmed("C").unwrap().contains_key("email"));
    assert_eq!(cache.row_digest("C").unwrap(), None);
}

#[test]
fn without_a_backup_a_damaged_cache_still_keeps_its_open_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c");
    {
        let cache = Cache::open(&path, 16).unwrap();
        cache
            .confirm("A", &[change("email", "a@b.co")], [7; 16])
            .unwrap();
        let mut kept = pending("r1");
        kept.fields = Fields::from([("email".to_owned(), Value::Text("b@b.co".into()))]);
        cache.keep_pending("B", &kept, false).unwrap();
        assert_eq!(
            cache.write_open_records().unwrap(),
            1,
            "B only: A is not open"
        );
    }
    damage(&path);
    let (cache, what) = recover(&path, None);
    let what = what.expect("the damage is reported");
    assert!(what.contains("restored 1 kept retries"), "{what}");
    let b = cache
        .pending("B")
        .unwrap()
        .expect("the kept retry survives");
    assert_eq!(b.fields["email"], Value::Text("b@b.co".into()));
    assert_eq!(
        cache.confirmed("A").unwrap(),
        Fields::new(),
        "A is sent again"
    );
}
