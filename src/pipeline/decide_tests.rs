use super::*;
use crate::cache::{Rejection, RowIndex, index_key};
use crate::config::Columns;
use crate::model::Value;

struct Fixture {
    _dir: tempfile::TempDir,
    cache: Cache,
    layout: Layout,
    limits: Limits,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(&dir.path().join("cache"), 16).unwrap();
    let mut columns = Columns {
        accountreference: "Ref".into(),
        ..Columns::default()
    };
    columns.fields.insert("email".into(), "Email".into());
    let header = vec!["Ref".to_owned(), "Email".to_owned()];
    Fixture {
        layout: Layout::resolve(&columns, &header).unwrap(),
        _dir: dir,
        cache,
        limits: Limits::default(),
    }
}

impl Fixture {
    fn decide(&self, row: [&str; 2], retry_rejected: bool, dups: &Duplicates) -> Step {
        self.decide_cells(&row, retry_rejected, dups)
    }

    fn decide_cells(&self, row: &[&str], retry_rejected: bool, dups: &Duplicates) -> Step {
        let decider = Decider {
            cache: &self.cache,
            limits: &self.limits,
            date_formats: &[],
            address_types: &[],
            today: NaiveDate::from_ymd_opt(2026, 12, 3).unwrap(),
            retry_rejected,
        };
        let pos = Position {
            file: "x.csv".into(),
            line: 2,
        };
        decider
            .row(
                0,
                pos,
                &self.layout,
                dups,
                &ByteRecord::from(row.to_vec()),
                None,
            )
            .unwrap()
    }
}

fn email(s: &str) -> Fields {
    Fields::from([("email".to_owned(), Value::Text(s.to_owned()))])
}

fn verdict(step: Step) -> (Verdict, Stale, bool) {
    match step {
        Step::Done(o) => (o.verdict, o.stale, false),
        Step::Send(j) => (Verdict::Updated(j.patch), j.stale, true),
    }
}

#[test]
fn a_remembered_rejection_is_listed_not_resent_until_the_row_changes() {
    let f = fixture();
    let problem = Problem {
        category: Category::Conflict,
        http_status: Some(409),
        field: "email".into(),
        message: "the email is already in use".into(),
    };
    let rejection = Rejection {
        fields: email("taken@example.com"),
        problems: vec![problem.clone()],
    };
    f.cache.reject("A", &rejection).unwrap();
    let none = Duplicates::default();

    let (v, _, sent) = verdict(f.decide(["A", "Taken@Example.com"], false, &none));
    assert!(!sent);
    assert_eq!(
        v,
        Verdict::Rejected {
            problems: vec![problem],
            remember: None
        }
    );

    let (_, stale, sent) = verdict(f.decide(["A", "Taken@Example.com"], true, &none));
    assert!(sent, "--retry-rejected sends it again");
    assert!(stale.rejection);

    let (_, stale, sent) = verdict(f.decide(["A", "fixed@example.com"], false, &none));
    assert!(sent, "a changed row is sent");
    assert!(
        stale.rejection,
        "and the old rejection is dropped once recorded"
    );
}

#[test]
fn unchanged_rows_send_nothing_and_replace_a_kept_retry() {
    let f = fixture();
    f.cache
        .confirm(
            "A",
            &[crate::model::Change {
                field: "email".into(),
                old: None,
                new: Value::Text("a@b.co".into()),
            }],
            [0; 16],
        )
        .unwrap();
    let pending = crate::cache::Pending {
        fields: email("older@b.co"),
        file: "old.csv".into(),
        line: 9,
        run_id: "r0".into(),
        problem: Problem::invalid("", "x"),
        uncertain: Default::default(),
    };
    f.cache.keep_pending("A", &pending, false).unwrap();
    let (v, stale, sent) = verdict(f.decide(["A", " A@B.CO "], false, &Duplicates::default()));
    assert!(!sent);
    assert_eq!(v, Verdict::Unchanged);
    assert!(stale.pending, "the newer row replaces the kept one");
}

#[test]
fn invalid_rows_report_every_problem_and_send_nothing() {
    let f = fixture();
    let (v, _, sent) = verdict(f.decide(["..", "not-an-email"], false, &Duplicates::default()));
    assert!(!sent);
    let Verdict::Rejected {
        problems,
        remember: None,
    } = v
    else {
        panic!("{v:?}")
    };
    let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "accountreference is invalid",
            "email address format invalid"
        ]
    );
}

#[test]
fn duplicates_are_found_in_a_first_pass_and_reported_alone() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.csv");
    std::fs::write(
        &path,
        "Ref,Email\nA,a@b.co\n B ,bad\nC,c@d.co\nB,b@c.co\n..,x\n..,y\n",
    )
    .unwrap();
    let dups = scan(&path, &f.layout, &RowIndex::default());
    assert_eq!(dups.lines("B"), Some(&[3, 5][..]));
    assert_eq!(dups.lines("A"), None);
    assert_eq!(
        dups.lines(".."),
        None,
        "invalid references are invalid, not duplicates"
    );

    let (v, _, sent) = verdict(f.decide(["B", "bad"], false, &dups));
    assert!(!sent);
    let Verdict::Rejected { problems, .. } = v else {
        panic!()
    };
    assert_eq!(problems.len(), 1, "duplicate is the only category reported");
    assert_eq!(problems[0].category, Category::Duplicate);
    assert_eq!(
        problems[0].message,
        "accountreference is on more than one row of this file (lines 3, 5); none of them was sent"
    );
}

/// CONTRACT §4: every row carrying the reference is a duplicate and none is sent, also when
/// one of them has the wrong number of fields (that one says so in its duplicate message).
#[test]
fn a_ragged_row_still_makes_its_account_a_duplicate() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.csv");
    std::fs::write(&path, "Ref,Email\nM,m@b.co\nM,x@b.co,extra\n").unwrap();
    let dups = scan(&path, &f.layout, &RowIndex::default());
    assert_eq!(dups.lines("M"), Some(&[2, 3][..]));

    let (v, _, sent) = verdict(f.decide(["M", "m@b.co"], false, &dups));
    assert!(!sent, "the well-formed row is not sent as if alone");
    let Verdict::Rejected { problems, .. } = v else {
        panic!("{v:?}")
    };
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].category, Category::Duplicate);

    let (v, _, sent) = verdict(f.decide_cells(&["M", "x@b.co", "extra"], false, &dups));
    assert!(!sent);
    let Verdict::Rejected { problems, .. } = v else {
        panic!("{v:?}")
    };
    let categories: Vec<Category> = problems.iter().map(|p| p.category).collect();
    assert_eq!(
        categories,
        [Category::Duplicate],
        "that category only (CONTRACT §4)"
    );
    assert!(
        problems[0]
            .message
            .ends_with("; this row is also malformed: row has 3 fields but the header has 2"),
        "{}",
        problems[0].message
    );
}

#[test]
fn a_long_duplicate_list_is_cut_after_ten_lines() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.csv");
    std::fs::write(&path, format!("Ref,Email\n{}", "Z,z@z.co\n".repeat(25))).unwrap();
    let dups = scan(&path, &f.layout, &RowIndex::default());
    let (v, _, _) = verdict(f.decide(["Z", "z@z.co"], false, &dups));
    let Verdict::Rejected { problems, .. } = v else {
        panic!()
    };
    assert_eq!(
        problems[0].message,
        "accountreference is on more than one row of this file (lines 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, and 15 more); none of them was sent"
    );
}

fn scan(path: &std::path::Path, layout: &Layout, index: &RowIndex) -> Duplicates {
    let mut export = Export::open(path, b',').unwrap();
    Duplicates::scan(&mut export, layout, RowSeed::from_salt("t"), index, |_| {}).unwrap()
}

fn digest_of(row: &[&str]) -> u64 {
    RowSeed::from_salt("t").digest(&ByteRecord::from(row.to_vec()), &mut Vec::new())
}

#[test]
fn the_row_index_settles_only_identical_rows_that_are_alone_in_the_file() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.csv");
    std::fs::write(&path, "Ref,Email\nA,a@b.co\nB,b@b.co\nC,c@b.co\n").unwrap();
    let mut index = RowIndex::default();
    index.apply([
        (index_key("A"), Some(digest_of(&["A", "a@b.co"]))),
        (index_key("B"), Some(digest_of(&["B", "old@b.co"]))), // B's row changed since
    ]);
    let dups = scan(&path, &f.layout, &index);
    assert_eq!(
        (dups.known(0), dups.known(1), dups.known(2)),
        (true, false, false)
    );
    assert!(!dups.all_known());

    index.apply([
        (index_key("B"), Some(digest_of(&["B", "b@b.co"]))),
        (index_key("C"), Some(digest_of(&["C", "c@b.co"]))),
    ]);
    assert!(scan(&path, &f.layout, &index).all_known());

    // The same cells under another header or setting give another digest.
    assert_ne!(
        RowSeed::from_salt("u").digest(&ByteRecord::from(vec!["A", "a@b.co"]), &mut Vec::new()),
        digest_of(&["A", "a@b.co"])
    );
    // Cell boundaries count: `A,Bc` is not `AB,c`.
    assert_ne!(digest_of(&["A", "Bc"]), digest_of(&["AB", "c"]));

    // A known row whose reference turns out duplicated is not all known.
    std::fs::write(&path, "Ref,Email\nA,a@b.co\nA,a@b.co\n").unwrap();
    let dups = scan(&path, &f.layout, &index);
    assert!(dups.known(0) && !dups.all_known());
    assert!(dups.lines("A").is_some());
}

#[test]
fn a_row_reverted_after_an_unanswered_request_is_sent_to_put_the_api_back() {
    // Confirmed a@b.co; a request for b@b.co was applied but its answer lost (kept, with
    // email uncertain). The next export has a@b.co again: equal to the confirmed value, yet
    // the API may hold b@b.co, so it must be sent.
    let f = fixture();
    let confirmed = crate::model::Change {
        field: "email".into(),
        old: None,
        new: Value::Text("a@b.co".into()),
    };
    f.cache.confirm("A", &[confirmed], [0; 16]).unwrap();
    let pending = crate::cache::Pending {
        fields: email("b@b.co"),
        file: "old.csv".into(),
        line: 9,
        run_id: "r0".into(),
        problem: Problem::invalid("", "x"),
        uncertain: ["email".to_owned()].into(),
    };
    f.cache.keep_pending("A", &pending, false).unwrap();
    let (v, stale, sent) = verdict(f.decide(["A", "a@b.co"], false, &Duplicates::default()));
    assert!(sent, "{v:?}");
    assert!(stale.pending);
    let Verdict::Updated(patch) = v else {
        unreachable!()
    };
    assert_eq!(patch.body["email"], "a@b.co");
    assert_eq!(
        patch.changes[0].old,
        Some(Value::Text("a@b.co".into())),
        "changes.csv shows the last confirmed value as old"
    );

    // A row without an email says "no change": the kept, never confirmed b@b.co is still
    // the latest value the exports gave, so it is sent (carried forward).
    let (v, _, sent) = verdict(f.decide(["A", ""], false, &Duplicates::default()));
    assert!(sent, "{v:?}");
    let Verdict::Updated(patch) = v else {
        unreachable!()
    };
    assert_eq!(patch.body["email"], "b@b.co");
}
