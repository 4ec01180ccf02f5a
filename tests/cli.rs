//! End-to-end tests of the command line, the input files and the report: the real
//! `accountsync` binary against the real `accountsync-sandbox`, each test in its own temp
//! dir with its own port. The HTTP behaviour (retries, 401, 429, rate, encoding) is in
//! `tests/sync.rs`; the harness is `tests/util/mod.rs`.

mod util;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use util::{
    Conf, Logged, Run, Sandbox, Workdir, assert_same_rows, by_reference, normalize_body,
    numbered_export, read_csv_rows, repo_file, small_export, wait_for,
};

// ---------------------------------------------------------------------------------------
// The sample exports (samples/README.md) against the sandbox's sample accounts.

const NIGHT1: &str = "crm-export-2026-12-02.csv";
const NIGHT2: &str = "crm-export-2026-12-03.csv";

fn sample(name: &str) -> String {
    repo_file(&format!("samples/{name}")).display().to_string()
}

fn sample_sandbox(wd: &Workdir) -> Sandbox {
    let accounts = sample("sandbox-accounts.csv");
    Sandbox::start(
        wd,
        &[
            "--accounts",
            &accounts,
            "--custom-parameters",
            "loyaltytier,preferredstore",
        ],
    )
}

fn expected(name: &str) -> PathBuf {
    repo_file(&format!("tests/data/expected/{name}"))
}

fn expected_json(name: &str) -> Value {
    let path = expected(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// `requests` hold exactly one PATCH per reference of `nightN-bodies.json`, with that body
/// (the order of `addresses` ignored), and nothing else.
#[track_caller]
fn assert_bodies(requests: &[Logged], bodies_file: &str) {
    let expected = expected_json(bodies_file);
    let expected = expected.as_object().expect("bodies file is an object");
    let grouped = by_reference(requests);
    let mut problems = Vec::new();
    for (reference, reqs) in &grouped {
        if reqs.len() != 1 {
            problems.push(format!("{reference:?}: {} requests", reqs.len()));
        }
        let r = reqs[0];
        if r.method != "PATCH" {
            problems.push(format!("{reference:?}: method {}", r.method));
        }
        match expected.get(reference) {
            None => problems.push(format!("{reference:?}: sent but not expected: {}", r.body)),
            Some(body) if normalize_body(body) != normalize_body(&r.body) => {
                problems.push(format!(
                    "{reference:?}:\n    expected {body}\n    sent     {}",
                    r.body
                ))
            }
            Some(_) => {}
        }
    }
    for reference in expected.keys() {
        if !grouped.contains_key(reference) {
            problems.push(format!("{reference:?}: expected but never sent"));
        }
    }
    assert!(
        problems.is_empty(),
        "PATCH bodies differ from {bodies_file} ({} requests):\n  {}",
        requests.len(),
        problems.join("\n  ")
    );
}

/// The summary's bucket counts equal `nightN-summary.json`.
#[track_caller]
fn assert_summary(run: &Run, summary_file: &str) {
    let e = expected_json(summary_file);
    let n = |k: &str| {
        e[k].as_u64()
            .unwrap_or_else(|| panic!("{summary_file}: {k}"))
    };
    run.expect_counts(
        n("rows_read"),
        n("unchanged"),
        n("updated"),
        n("rejected"),
        n("failed"),
    );
}

/// The whole `errors.csv` equals `nightN-errors.csv` as a set of rows, with the file column
/// reduced to the basename as in the expected file.
#[track_caller]
fn assert_errors(run: &Run, errors_file: &str) {
    let (header, rows) = read_csv_rows(&run.report_dir().join("errors.csv"));
    let (expected_header, expected_rows) = read_csv_rows(&expected(errors_file));
    assert_eq!(header, expected_header, "errors.csv header\n{run}");
    let rows = rows
        .into_iter()
        .map(|mut r| {
            if let Some(file) = r.first_mut() {
                *file = basename(file);
            }
            r
        })
        .collect();
    assert_same_rows(&format!("errors.csv vs {errors_file}"), rows, expected_rows);
}

fn basename(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map_or_else(|| path.to_owned(), |n| n.to_string_lossy().into_owned())
}

#[test]
fn sample_nights_send_the_expected_bodies_and_report_every_rejection() {
    let wd = Workdir::new("nights");
    let sb = sample_sandbox(&wd);
    wd.configure(&Conf::demo(&sb));

    // Night 1: every account in full, once.
    let night1 = wd.run(&[&sample(NIGHT1)]);
    night1.expect_code(1);
    let sent1 = sb.requests();
    assert_bodies(&sent1, "night1-bodies.json");
    assert_summary(&night1, "night1-summary.json");
    assert_errors(&night1, "night1-errors.csv");
    // The comparison above is only as strong as the expected file: it must hold every
    // category of CONTRACT §6 but `failed` (tested on its own in sync.rs).
    let categories: BTreeSet<String> = night1
        .errors()
        .into_iter()
        .map(|r| r["category"].clone())
        .collect();
    let all = [
        "conflict",
        "duplicate",
        "forbidden",
        "invalid",
        "malformed",
        "not_configured",
        "not_found",
    ];
    assert_eq!(categories, all.map(String::from).into(), "{night1}");

    // The same file again: nothing to send, the rejections are listed again.
    let again = wd.run(&[&sample(NIGHT1)]);
    again.expect_code(1);
    assert_eq!(
        sb.request_count(),
        sent1.len(),
        "a rerun sent requests\n{again}"
    );
    again.expect_counts(320, 284, 0, 36, 0);
    assert_errors(&again, "night1-errors.csv");
    assert!(again.changes().is_empty(), "{again}");

    // Night 2: only what changed.
    let night2 = wd.run(&[&sample(NIGHT2)]);
    night2.expect_code(1);
    let sent2 = sb.requests();
    assert_bodies(&sent2[sent1.len()..], "night2-bodies.json");
    assert_summary(&night2, "night2-summary.json");
    assert_errors(&night2, "night2-errors.csv");
}

#[test]
fn dry_run_sends_nothing_keeps_the_cache_and_predicts_the_changes() {
    let wd = Workdir::new("dry-run");
    let sb = sample_sandbox(&wd);
    wd.configure(&Conf::demo(&sb));
    wd.run(&[&sample(NIGHT1)]).expect_code(1);
    let sent = sb.request_count();
    let cache_before = wd.cache_fingerprint();
    assert!(!cache_before.is_empty(), "the real run left no cache files");

    // Remembered rejections are in night 2, so a dry run exits 1 (CONTRACT §1).
    let dry = wd.run(&["--dry-run", &sample(NIGHT2)]);
    dry.expect_code(1);
    assert_eq!(sb.request_count(), sent, "the dry run sent requests\n{dry}");
    assert_eq!(
        wd.cache_fingerprint(),
        cache_before,
        "the dry run changed the cache directory\n{dry}"
    );
    assert_eq!(dry.summary()["dry_run"], json!(true), "{dry}");
    assert_eq!(dry.count("requests_sent"), 0, "{dry}");

    let real = wd.run(&[&sample(NIGHT2)]);
    real.expect_code(1);
    assert_eq!(real.summary()["dry_run"], json!(false), "{real}");
    let (dry_header, dry_rows) = read_csv_rows(&dry.report_dir().join("changes.csv"));
    let (real_header, real_rows) = read_csv_rows(&real.report_dir().join("changes.csv"));
    assert_eq!(
        dry_header,
        ["file", "line", "accountreference", "field", "old", "new"]
    );
    assert_eq!(dry_header, real_header);
    assert!(!real_rows.is_empty(), "night 2 confirmed no change\n{real}");
    assert_same_rows("dry-run changes.csv vs the real run's", dry_rows, real_rows);
    // And the prediction holds against the API: what the real run sent is night 2.
    assert_bodies(&sb.requests()[sent..], "night2-bodies.json");
    // changes.csv holds what was sent, once the quote that keeps a spreadsheet from
    // evaluating a cell (`'-x`, `'=x`) is removed: it is only ever added, never anything else.
    let unmatched = util::changes_not_sent(&real.changes(), &sb.requests()[sent..]);
    assert!(
        unmatched.is_empty(),
        "changes.csv rows not among the bodies sent:\n  {}\n{real}",
        unmatched.join("\n  ")
    );
}

/// CONTRACT §1: `run --dry-run` exits 1 only for what it knows is rejected (local rules, or
/// a rejection remembered from a real run); updates it would send are no reason, since it
/// cannot foresee the API's answers.
#[test]
fn dry_run_exits_0_for_updates_it_would_send_and_1_for_a_remembered_rejection() {
    let wd = Workdir::new("dry-run-exit");
    // K-1 and K-2 exist, and K-3 holds the e-mail K-2's row asks for (409); GONE-1 does not
    // exist (404).
    let accounts = wd.write(
        "accounts.csv",
        "accountreference,email\nK-1,k1@legacy.example.com\nK-2,k2@legacy.example.com\nK-3,taken@example.com\n",
    );
    let sb = Sandbox::start(&wd, &["--accounts", &accounts.display().to_string()]);
    wd.configure(&Conf::new(&sb));
    let night = |k1_email: &str| {
        small_export(&[
            ("K-1", k1_email, "Kim", "Ko"),
            ("K-2", "taken@example.com", "Kai", "Ka"),
            ("GONE-1", "gone@example.com", "Gus", "Go"),
        ])
    };
    let night1 = wd.write("night1.csv", night("k1@example.com"));
    let night1 = night1.display().to_string();
    // (line, reference, category, http_status, message) of errors.csv, in line order (the
    // file is in completion order).
    let rejections = |run: &Run| {
        let mut rows: Vec<[String; 5]> = run
            .errors()
            .into_iter()
            .map(|e| {
                [
                    "line",
                    "accountreference",
                    "category",
                    "http_status",
                    "message",
                ]
                .map(|k| e[k].clone())
            })
            .collect();
        rows.sort();
        rows
    };

    // Nothing known to be rejected: every row would be sent, and that is exit 0.
    let dry1 = wd.run(&["--dry-run", &night1]);
    dry1.expect_code(0);
    dry1.expect_counts(3, 0, 3, 0, 0);
    assert!(rejections(&dry1).is_empty(), "{dry1}");
    assert_eq!(sb.request_count(), 0, "the dry run sent requests\n{dry1}");

    // The real run meets the API's 409 and 404.
    let real = wd.run(&[&night1]);
    real.expect_code(1);
    real.expect_counts(3, 0, 1, 2, 0);
    let rejected = rejections(&real);
    let kinds: Vec<_> = rejected
        .iter()
        .map(|r| [r[1].as_str(), r[2].as_str(), r[3].as_str()])
        .collect();
    assert_eq!(
        kinds,
        [["K-2", "conflict", "409"], ["GONE-1", "not_found", "404"]],
        "{real}"
    );
    let sent = sb.request_count();

    // Night 2 changes K-1 again and repeats the rejected rows unchanged: the dry run would
    // send K-1 and knows the two rejections, listed as the real run reported them; the
    // remembered rejections alone make it exit 1.
    let night2 = wd.write("night2.csv", night("k1-new@example.com"));
    let dry2 = wd.run(&["--dry-run", &night2.display().to_string()]);
    dry2.expect_code(1);
    dry2.expect_counts(3, 0, 1, 2, 0);
    assert_eq!(rejections(&dry2), rejected, "{dry2}");
    assert_eq!(
        sb.request_count(),
        sent,
        "the dry run sent requests\n{dry2}"
    );
    let would: Vec<_> = dry2
        .changes()
        .into_iter()
        .map(|c| {
            [
                c["accountreference"].clone(),
                c["field"].clone(),
                c["new"].clone(),
            ]
        })
        .collect();
    assert_eq!(
        would,
        [["K-1", "email", "k1-new@example.com"].map(String::from)],
        "{dry2}"
    );
}

// ---------------------------------------------------------------------------------------
// Input files

/// A sandbox where every reference exists, and a small config against it.
fn small_setup(name: &str) -> (Workdir, Sandbox) {
    let wd = Workdir::new(name);
    let sb = Sandbox::start(&wd, &[]);
    wd.configure(&Conf::new(&sb));
    (wd, sb)
}

#[test]
fn malformed_rows_are_reported_and_the_rest_of_the_file_syncs() {
    let (wd, sb) = small_setup("malformed");
    let mut text = b"ref,email,first,last\n".to_vec();
    text.extend_from_slice(b"M-1,m1@example.com,Ann,Lee\n");
    text.extend_from_slice(b"M-2,m2@example.com,Bob\n"); // 3 fields of 4
    text.extend_from_slice(b"M-3,m3@example.com,J\xfcrgen,Lee\n"); // Latin-1 in first
    text.extend_from_slice(b"M-4,m4@example.com,Cy,Dee\n");
    let file = wd.write("export.csv", text);
    let file = file.display().to_string();

    let run = wd.run(&[&file]);
    run.expect_code(1);
    run.expect_counts(4, 0, 2, 2, 0);
    let (_, rows) = read_csv_rows(&run.report_dir().join("errors.csv"));
    let row = |cells: [&str; 7]| cells.map(String::from).to_vec();
    assert_same_rows(
        "errors.csv",
        rows,
        vec![
            row([
                &file,
                "3",
                "M-2",
                "malformed",
                "",
                "",
                "row has 3 fields but the header has 4",
            ]),
            row([
                &file,
                "4",
                "M-3",
                "malformed",
                "",
                "firstname",
                "column \"first\" is not valid UTF-8",
            ]),
        ],
    );
    let sent: BTreeSet<String> = by_reference(&sb.requests()).into_keys().collect();
    assert_eq!(sent, ["M-1", "M-4"].map(String::from).into(), "{run}");
}

#[test]
fn missing_reference_column_stops_the_run_and_lists_the_headers() {
    let (wd, sb) = small_setup("no-ref-column");
    let file = wd.write(
        "export.csv",
        "id,email,first,last\nX-1,x@example.com,Ann,Lee\n",
    );
    let run = wd.run(&[&file.display().to_string()]);
    run.expect_code(2);
    // The column the config maps, and every header the file has.
    for needle in [
        "accountreference",
        "\"ref\"",
        "\"id\"",
        "\"email\"",
        "\"first\"",
        "\"last\"",
    ] {
        run.expect_stderr(needle);
    }
    assert_eq!(sb.request_count(), 0, "{run}");
}

#[test]
fn empty_file_stops_the_run() {
    let (wd, sb) = small_setup("empty-file");
    let file = wd.write("export.csv", "");
    let run = wd.run(&[&file.display().to_string()]);
    run.expect_code(2).expect_stderr("empty");
    assert_eq!(sb.request_count(), 0, "{run}");
}

#[test]
fn header_only_file_is_a_clean_run() {
    let (wd, sb) = small_setup("header-only");
    let file = wd.write("export.csv", "ref,email,first,last\n");
    let run = wd.run(&[&file.display().to_string()]);
    run.expect_code(0);
    run.expect_counts(0, 0, 0, 0, 0);
    assert_eq!(sb.request_count(), 0, "{run}");
}

#[test]
fn semicolon_delimiter_is_honoured() {
    let wd = Workdir::new("semicolon");
    let sb = Sandbox::start(&wd, &[]);
    wd.configure(&Conf {
        delimiter: ";".into(),
        ..Conf::new(&sb)
    });
    let file = wd.write(
        "export.csv",
        "ref;email;first;last\nS-1;S1@Example.com;Ann, Marie;Lee\n",
    );
    let run = wd.run(&[&file.display().to_string()]);
    run.expect_code(0);
    run.expect_counts(1, 0, 1, 0, 0);
    let requests = sb.requests();
    assert_eq!(requests.len(), 1, "{run}");
    assert_eq!(requests[0].reference.as_deref(), Some("S-1"));
    assert_eq!(
        requests[0].body,
        json!({"email": "s1@example.com", "firstname": "Ann, Marie", "lastname": "Lee"})
    );
}

#[test]
fn later_file_wins_over_an_earlier_one_in_the_same_run() {
    let (wd, sb) = small_setup("later-wins");
    // Named so that name order and argument order disagree: the arguments decide.
    let first = wd.write(
        "z-first.csv",
        small_export(&[
            ("W-1", "old@example.com", "Ann", "Lee"),
            ("Z-1", "z@example.com", "Zed", "Zee"),
        ]),
    );
    let second = wd.write(
        "a-second.csv",
        small_export(&[("W-1", "new@example.com", "Ann", "Lee")]),
    );
    let run = wd.run(&[&first.display().to_string(), &second.display().to_string()]);
    run.expect_code(0);
    let accounts = sb.accounts();
    assert_eq!(accounts["W-1"]["email"], json!("new@example.com"), "{run}");
    assert_eq!(accounts["Z-1"]["email"], json!("z@example.com"), "{run}");
    let requests = sb.requests();
    let last_w = requests
        .iter()
        .rfind(|r| r.reference.as_deref() == Some("W-1"))
        .expect("W-1 was sent");
    assert_eq!(last_w.body["email"], json!("new@example.com"), "{run}");
    // The same pair again: the later file still decides what the API holds.
    let rerun = wd.run(&[&first.display().to_string(), &second.display().to_string()]);
    rerun.expect_code(0);
    assert_eq!(
        sb.accounts()["W-1"]["email"],
        json!("new@example.com"),
        "{rerun}"
    );
}

#[test]
fn run_without_files_syncs_the_inbox_in_name_order_and_archives() {
    let wd = Workdir::new("inbox");
    let sb = Sandbox::start(&wd, &[]);
    wd.configure(&Conf {
        input_dir: Some(wd.path("inbox")),
        archive_dir: Some(wd.path("archive")),
        pattern: "export-*.csv".into(),
        ..Conf::new(&sb)
    });
    // Written in reverse name order, so creation order does not pass for name order.
    wd.write(
        "inbox/export-b.csv",
        small_export(&[
            ("X-1", "x-b@example.com", "Ann", "Lee"),
            ("B-1", "b1@example.com", "Bo", "Bee"),
        ]),
    );
    wd.write(
        "inbox/export-a.csv",
        small_export(&[
            ("X-1", "x-a@example.com", "Ann", "Lee"),
            ("A-1", "a1@example.com", "Al", "Ay"),
        ]),
    );
    wd.write(
        "inbox/other.csv",
        small_export(&[("O-1", "o@example.com", "O", "O")]),
    );
    wd.write("inbox/notes.txt", "not an export");

    let run = wd.run(&[]);
    run.expect_code(0);
    run.expect_counts(4, 0, 4, 0, 0);

    let requests = sb.requests();
    let refs: Vec<(&str, &str)> = requests
        .iter()
        .map(|r| {
            (
                r.reference.as_deref().unwrap_or(""),
                r.body["email"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(refs.len(), 4, "{refs:?}\n{run}");
    // Files are synced one after the other: both of a's requests before b's.
    let a: BTreeSet<_> = refs[..2].iter().copied().collect();
    let b: BTreeSet<_> = refs[2..].iter().copied().collect();
    assert_eq!(
        a,
        [("A-1", "a1@example.com"), ("X-1", "x-a@example.com")].into(),
        "{refs:?}"
    );
    assert_eq!(
        b,
        [("B-1", "b1@example.com"), ("X-1", "x-b@example.com")].into(),
        "{refs:?}"
    );
    assert_eq!(sb.accounts()["X-1"]["email"], json!("x-b@example.com"));
    assert!(
        !sb.accounts().contains_key("O-1"),
        "a file not matching the pattern was synced"
    );

    let listing = |dir: &str| -> BTreeSet<String> {
        std::fs::read_dir(wd.path(dir))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        listing("inbox"),
        ["notes.txt", "other.csv"].map(String::from).into(),
        "{run}"
    );
    assert_eq!(
        listing("archive"),
        ["export-a.csv", "export-b.csv"].map(String::from).into(),
        "{run}"
    );
    let summary = run.summary();
    let files = summary["files"].as_array().expect("files array");
    let names: Vec<String> = files
        .iter()
        .map(|f| basename(f["path"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(names, ["export-a.csv", "export-b.csv"], "{summary:#}");
    for f in files {
        let to = f["archived_to"]
            .as_str()
            .unwrap_or_else(|| panic!("not archived: {f}"));
        assert!(Path::new(to).starts_with(wd.path("archive")), "{f}");
    }

    // An empty inbox is a clean run that sends nothing.
    let before = sb.request_count();
    let empty = wd.run(&[]);
    empty.expect_code(0);
    assert_eq!(sb.request_count(), before, "{empty}");
}

// ---------------------------------------------------------------------------------------
// Config and environment

#[test]
fn unknown_config_keys_are_refused_with_key_and_file() {
    let wd = Workdir::new("unknown-key");
    let sb = Sandbox::start(&wd, &[]);
    let file = wd.write(
        "export.csv",
        small_export(&[("K-1", "k@example.com", "A", "B")]),
    );
    let base = Conf::new(&sb);
    let cases = [
        (
            "colour",
            Conf {
                extra: "[schedule]\ncron = \"0 0 2 * * *\"\ncolour = \"blue\"\n".into(),
                ..base.clone()
            },
        ),
        (
            "favouritecolour",
            Conf {
                columns: format!("{}favouritecolour = \"Colour\"\n", util::SMALL_COLUMNS),
                ..base.clone()
            },
        ),
        (
            "notifications",
            Conf {
                extra: "[notifications]\nemail = \"ops@example.com\"\n".into(),
                ..base.clone()
            },
        ),
    ];
    let config = wd.config_path().display().to_string();
    for (key, conf) in cases {
        wd.configure(&conf);
        let run = wd.run(&[&file.display().to_string()]);
        run.expect_code(2).expect_stderr(key).expect_stderr(&config);
    }
    assert_eq!(sb.request_count(), 0);
}

#[test]
fn missing_or_empty_token_stops_the_run() {
    let (wd, sb) = small_setup("no-token");
    let var = "ACCOUNTSYNC_TEST_TOKEN_NOT_SET";
    wd.configure(&Conf {
        token_env: var.into(),
        ..Conf::new(&sb)
    });
    let file = wd.write(
        "export.csv",
        small_export(&[("K-1", "k@example.com", "A", "B")]),
    );
    let file = file.display().to_string();

    let mut unset = wd.command(&["run", &file]);
    unset.env_remove(var);
    wd.exec(unset).expect_code(2).expect_stderr(var);

    let mut blank = wd.command(&["run", &file]);
    blank.env(var, "  ");
    wd.exec(blank).expect_code(2).expect_stderr(var);

    assert_eq!(sb.request_count(), 0);
}

#[test]
fn report_files_are_private() {
    let (wd, _sb) = small_setup("permissions");
    let file = wd.write("export.csv", numbered_export("P-", 3));
    let run = wd.run(&[&file.display().to_string()]);
    run.expect_code(0);
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{p:?}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    let dir = run.report_dir();
    assert_eq!(mode(&wd.reports_dir()), 0o700, "reports folder");
    assert_eq!(mode(dir), 0o700, "run folder {dir:?}");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read run folder") {
        let path = entry.expect("entry").path();
        assert_eq!(mode(&path), 0o600, "{path:?}");
        names.push(path.file_name().map(|n| n.to_string_lossy().into_owned()));
    }
    for required in ["summary.json", "errors.csv", "changes.csv"] {
        assert!(
            names.contains(&Some(required.to_owned())),
            "{required} missing in {names:?}"
        );
    }
    // The run id names the folder and sorts by time.
    let summary = run.summary();
    assert_eq!(
        summary["run_id"].as_str(),
        dir.file_name().and_then(|n| n.to_str()),
        "{summary:#}"
    );
    for key in ["started_at", "finished_at", "files", "requests_sent"] {
        assert!(!summary[key].is_null(), "summary has no {key}: {summary:#}");
    }
}

// ---------------------------------------------------------------------------------------
// Concurrency

#[test]
fn a_second_run_on_a_busy_cache_is_refused_and_the_first_finishes() {
    let wd = Workdir::new("locked");
    // Slow answers and one request at a time: the first run takes about 12 × 250 ms, ample
    // time for the second process to start even on a loaded machine.
    let sb = Sandbox::start(&wd, &["--latency-ms", "250"]);
    wd.configure(&Conf {
        max_in_flight: 1,
        ..Conf::new(&sb)
    });
    let file = wd.write("export.csv", numbered_export("L-", 12));
    let file = file.display().to_string();

    let before = wd.run_dirs();
    let mut first_cmd = wd.command(&["run", &file]);
    first_cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let cmdline = format!("{first_cmd:?}");
    let first = first_cmd.spawn().expect("start the first run");
    // The cache is opened before the first request goes out.
    wait_for(
        "the first run's first request",
        Duration::from_secs(20),
        || (sb.request_count() > 0).then_some(()),
    );

    let second = wd.run(&[&file]);
    second
        .expect_code(2)
        .expect_stderr("in use by another accountsync process");

    let first = wd.wait(cmdline, first, before);
    first.expect_code(0);
    first.expect_counts(12, 0, 12, 0, 0);
    assert_eq!(by_reference(&sb.requests()).len(), 12, "{first}");
}

// ---------------------------------------------------------------------------------------
// Operator commands: completions, man page, version. None of them reads the config.

/// `accountsync ARGS` in a fresh work directory whose config file does not exist.
fn operator_command(name: &str, args: &[&str]) -> Run {
    let wd = Workdir::new(name);
    wd.exec(wd.command(args))
}

#[test]
fn completions_name_the_visible_subcommands_for_every_shell() {
    let bash = operator_command("completions-bash", &["completions", "bash"]);
    bash.expect_code(0);
    let script = bash.stdout();
    for needle in [
        "_accountsync()",
        "accountsync,run)",
        "accountsync,completions)",
    ] {
        assert!(script.contains(needle), "no {needle:?}\n{bash}");
    }
    assert!(script.contains("--dry-run"), "{bash}");
    // `man` is hidden: a packaging step, not something to offer on Tab.
    assert!(!script.contains("accountsync,man)"), "{bash}");

    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let run = operator_command("completions", &["completions", shell]);
        run.expect_code(0);
        let script = run.stdout();
        assert!(script.contains("accountsync"), "{run}");
        assert!(script.contains("completions"), "{run}");
        assert!(script.contains("dry-run"), "{run}");
        assert!(!script.contains("Print the man page"), "{run}");
    }

    operator_command("completions-bad", &["completions", "tcsh"]).expect_code(2);
}

#[test]
fn man_prints_roff_pages_of_the_command_and_its_subcommands() {
    // The roff crate puts a string definition (`.ie \n(.g .ds Aq …`) before the title.
    let title = |page: &str| -> String {
        page.lines()
            .find(|l| !l.starts_with(".ie ") && !l.starts_with(".el "))
            .unwrap_or_default()
            .to_owned()
    };
    let main = operator_command("man", &["man"]);
    main.expect_code(0);
    let page = main.stdout();
    assert!(title(&page).starts_with(".TH accountsync 1 "), "{main}");
    let subcommands = page.split(".SH SUBCOMMANDS").nth(1).unwrap_or_default();
    assert!(subcommands.contains("accountsync\\-run(1)"), "{main}");
    assert!(
        subcommands.contains("accountsync\\-completions(1)"),
        "{main}"
    );
    assert!(
        !subcommands.contains("accountsync\\-man"),
        "the hidden page is listed\n{main}"
    );
    assert!(page.contains("ACCOUNTSYNC_CONFIG"), "{main}");

    let run = operator_command("man-run", &["man", "run"]);
    run.expect_code(0);
    let page = run.stdout();
    assert!(title(&page).starts_with(".TH accountsync-run 1 "), "{run}");
    assert!(page.contains("\\-\\-dry\\-run"), "{run}");
    assert!(page.contains("\\-\\-retry\\-rejected"), "{run}");

    operator_command("man-bad", &["man", "nope"])
        .expect_code(2)
        .expect_stderr("pages: run, daemon, baseline, check-config, cache, completions");
}

#[test]
fn version_names_the_commit() {
    let run = operator_command("version", &["--version"]);
    run.expect_code(0);
    let out = run.stdout();
    let line = out.strip_suffix('\n').unwrap_or(&out);
    // accountsync \d+\.\d+\.\d+ \(commit ([0-9a-f]{12}|unknown)\)
    let rest = line
        .strip_prefix("accountsync ")
        .unwrap_or_else(|| panic!("{run}"));
    let (version, commit) = rest
        .split_once(" (commit ")
        .unwrap_or_else(|| panic!("{run}"));
    let numbers: Vec<&str> = version.split('.').collect();
    assert!(
        numbers.len() == 3
            && numbers
                .iter()
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        "version {version:?}\n{run}"
    );
    assert_eq!(version, env!("CARGO_PKG_VERSION"), "{run}");
    let commit = commit.strip_suffix(')').unwrap_or_else(|| panic!("{run}"));
    assert!(
        commit == "unknown"
            || (commit.len() == 12
                && commit
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))),
        "commit {commit:?}\n{run}"
    );
}

/// CONTRACT §1: `--config`, else `$ACCOUNTSYNC_CONFIG`, else the packaged path; a variable
/// set to "" (a blank `EnvironmentFile=` line) counts as unset rather than as an error.
#[test]
fn config_comes_from_the_flag_then_a_non_empty_variable_then_etc() {
    let wd = Workdir::new("config-env");
    let without_flag = |value: &str| {
        let mut cmd = std::process::Command::new(util::PRODUCT);
        cmd.current_dir(wd.path(""))
            .arg("check-config")
            .env("ACCOUNTSYNC_CONFIG", value)
            .env_remove("ACCOUNTSYNC_LOG_FORMAT")
            .stdin(Stdio::null());
        wd.exec(cmd)
    };
    // check-config explains on stdout.
    let named = without_flag("elsewhere/named.toml");
    named.expect_code(2);
    assert!(named.stdout().contains("elsewhere/named.toml"), "{named}");

    let default = Path::new("/etc/accountsync/accountsync.toml");
    let blank = without_flag("");
    assert!(!blank.stderr().contains("value is required"), "{blank}");
    if default.exists() {
        println!("skipped the fallback check: {default:?} exists on this machine");
    } else {
        blank.expect_code(2);
        let out = blank.stdout();
        assert!(out.contains("/etc/accountsync/accountsync.toml"), "{blank}");
    }

    let mut flag = wd.command(&["check-config"]);
    flag.env("ACCOUNTSYNC_CONFIG", "elsewhere/named.toml")
        .env("ACCOUNTSYNC_LOG_FORMAT", "yaml");
    wd.exec(flag)
        .expect_code(2)
        .expect_stderr("ACCOUNTSYNC_LOG_FORMAT=\"yaml\" is not a log format");
}
