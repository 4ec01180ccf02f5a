use super::*;
use crate::model::{Category, Change, Problem, Value};

fn filled(dir: &Path) -> Cache {
    let cache = Cache::open(&dir.join("a"), 16).unwrap();
    let change = |field: &str, new: &str| Change {
        field: field.into(),
        old: None,
        new: Value::Text(new.into()),
    };
    cache
        .confirm("A", &[change("email", "a@b.co")], [1; 16])
        .unwrap();
    cache
        .confirm("C", &[change("firstname", "Cé")], [2; 16])
        .unwrap();
    let problem = Problem {
        category: Category::Conflict,
        http_status: Some(409),
        field: "email".into(),
        message: "the email is already in use".into(),
    };
    let fields = Fields::from([("email".to_owned(), Value::Text("b@b.co".into()))]);
    cache
        .reject(
            "B",
            &Rejection {
                fields: fields.clone(),
                problems: vec![problem.clone()],
            },
        )
        .unwrap();
    let pending = Pending {
        fields,
        file: "n.csv".into(),
        line: 7,
        run_id: "r1".into(),
        problem,
        uncertain: Default::default(),
    };
    cache.keep_pending("C", &pending, false).unwrap();
    cache
}

#[test]
fn an_export_restores_into_an_empty_cache_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let cache = filled(dir.path());
    let mut backup = Vec::new();
    assert_eq!(cache.export(&mut backup).unwrap(), 3);
    let text = String::from_utf8(backup.clone()).unwrap();
    let refs: Vec<_> = text
        .lines()
        .map(|l| serde_json::from_str::<Entry>(l).unwrap().reference)
        .collect();
    assert_eq!(refs, ["A", "B", "C"], "one line per account, in order");

    let restored = Cache::open(&dir.path().join("b"), 16).unwrap();
    let file = Path::new("backup.jsonl");
    assert_eq!(restored.import(file, backup.as_slice(), false).unwrap(), 3);
    for r in ["A", "B", "C", "D"] {
        assert_eq!(restored.entry(r).unwrap(), cache.entry(r).unwrap(), "{r}");
    }
    let stats = restored.stats().unwrap();
    assert_eq!(
        (stats.accounts, stats.pending_retries, stats.rejected),
        (2, 1, 1)
    );

    // A second import needs --merge; with it, the file's accounts are overwritten.
    let err = restored.import(file, backup.as_slice(), false).unwrap_err();
    assert!(err.to_string().contains("--merge"), "{err}");
    assert_eq!(restored.import(file, backup.as_slice(), true).unwrap(), 3);
}

#[test]
fn a_bad_backup_line_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(&dir.path().join("a"), 16).unwrap();
    let input = "{\"reference\":\"A\",\"confirmed\":{\"email\":\"a@b.co\"}}\n{\"reference\":\"B\",\"colour\":1}\n";
    let err = cache
        .import(Path::new("b.jsonl"), input.as_bytes(), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("b.jsonl line 2: unknown field `colour`"),
        "{err}"
    );
    assert_eq!(cache.entry("A").unwrap(), None);
}

#[test]
fn forgetting_an_account_drops_every_trace() {
    let dir = tempfile::tempdir().unwrap();
    let cache = filled(dir.path());
    cache.update_row_index(crate::cache::index_key("C"), Some(5));
    assert!(cache.forget_account("C").unwrap());
    assert_eq!(cache.entry("C").unwrap(), None);
    assert_eq!(cache.row_digest("C").unwrap(), None);
    assert_eq!(cache.row_index().get(crate::cache::index_key("C")), None);
    assert!(
        !cache.forget_account("C").unwrap(),
        "nothing left the second time"
    );
}

#[test]
fn the_last_run_time_survives_in_a_plain_file() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(last_run(dir.path()), None);
    let at = chrono::DateTime::parse_from_rfc3339("2026-12-03T02:00:05Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    set_last_run(dir.path(), at).unwrap();
    assert_eq!(last_run(dir.path()), Some(at));
}
