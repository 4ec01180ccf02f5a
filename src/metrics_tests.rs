use std::collections::BTreeSet;

use chrono::TimeZone;

use super::*;
use crate::report::FileSummary;

// A line-format check of the Prometheus text format, with its own tests.
#[path = "metrics_format_tests.rs"]
mod format;
use format::check_text_format;

fn at(secs: i64, millis: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, millis * 1_000_000).unwrap()
}

/// 2026-12-03T02:00:05.750Z
const FINISHED: i64 = 1_796_263_205;

/// A night with rejections, one file, and two records retried from the outbox.
fn night() -> Summary {
    let counts = Counts {
        rows_read: 320,
        unchanged: 277,
        updated: 7,
        rejected: 36,
        failed: 0,
    };
    Summary {
        run_id: "20261203T020000Z".into(),
        dry_run: false,
        baseline: false,
        files: vec![FileSummary {
            path: "/var/lib/accountsync/inbox/crm-export-2026-12-03.csv".into(),
            counts: counts.clone(),
            complete: true,
            archived_to: None,
        }],
        counts,
        retried_from_earlier_runs: Counts {
            rows_read: 2,
            unchanged: 0,
            updated: 1,
            rejected: 0,
            failed: 1,
        },
        errors_by_category: {
            use crate::model::Category::*;
            let mut by = crate::report::CategoryCounts::default();
            for (category, n) in [(Invalid, 30), (Conflict, 4), (Duplicate, 2), (Failed, 1)] {
                (0..n).for_each(|_| by.add(category));
            }
            by
        },
        requests_sent: 12,
        retries: 3,
        throttled: 1,
        started_at: at(FINISHED - 5, 0),
        finished_at: at(FINISHED, 750),
        elapsed_secs: 5.75,
        requests_per_second: 12.0 / 5.75,
        cache_recovered: None,
        rate_limit_final: 10.0,
        rate_limit_lowest: 10.0,
        stopped: None,
        exit_code: 1,
        interrupted: false,
    }
}

/// `night()` finishing at `secs` with `exit_code`.
fn run(secs: i64, exit_code: i32) -> Summary {
    Summary {
        finished_at: at(secs, 0),
        started_at: at(secs - 5, 0),
        exit_code,
        ..night()
    }
}

const GOLDEN: &str = r#"
# HELP accountsync_last_run_rows Rows of the export files by outcome; read = unchanged + updated + rejected + failed.
# TYPE accountsync_last_run_rows gauge
accountsync_last_run_rows{outcome="read"} 320
accountsync_last_run_rows{outcome="unchanged"} 277
accountsync_last_run_rows{outcome="updated"} 7
accountsync_last_run_rows{outcome="rejected"} 36
accountsync_last_run_rows{outcome="failed"} 0
# HELP accountsync_last_run_outbox_records Records kept by earlier runs after transient failures and retried, by outcome.
# TYPE accountsync_last_run_outbox_records gauge
accountsync_last_run_outbox_records{outcome="read"} 2
accountsync_last_run_outbox_records{outcome="unchanged"} 0
accountsync_last_run_outbox_records{outcome="updated"} 1
accountsync_last_run_outbox_records{outcome="rejected"} 0
accountsync_last_run_outbox_records{outcome="failed"} 1
# HELP accountsync_last_run_errors Rows of the run's errors.csv by category, one per message (a record can count more than once), remembered rejections included.
# TYPE accountsync_last_run_errors gauge
accountsync_last_run_errors{category="invalid"} 30
accountsync_last_run_errors{category="conflict"} 4
accountsync_last_run_errors{category="forbidden"} 0
accountsync_last_run_errors{category="not_found"} 0
accountsync_last_run_errors{category="not_configured"} 0
accountsync_last_run_errors{category="duplicate"} 2
accountsync_last_run_errors{category="malformed"} 0
accountsync_last_run_errors{category="failed"} 1
# HELP accountsync_last_run_files Export files the run read.
# TYPE accountsync_last_run_files gauge
accountsync_last_run_files 1
# HELP accountsync_last_run_requests_sent HTTP requests sent, retries included.
# TYPE accountsync_last_run_requests_sent gauge
accountsync_last_run_requests_sent 12
# HELP accountsync_last_run_retries HTTP requests that repeated an earlier attempt.
# TYPE accountsync_last_run_retries gauge
accountsync_last_run_retries 3
# HELP accountsync_last_run_throttled Responses 429 Too Many Requests.
# TYPE accountsync_last_run_throttled gauge
accountsync_last_run_throttled 1
# HELP accountsync_last_run_duration_seconds Wall-clock time of the run.
# TYPE accountsync_last_run_duration_seconds gauge
accountsync_last_run_duration_seconds 5.75
# HELP accountsync_last_run_timestamp_seconds When the run finished, in Unix time.
# TYPE accountsync_last_run_timestamp_seconds gauge
accountsync_last_run_timestamp_seconds 1796263205.75
# HELP accountsync_last_run_exit_code Exit status: 0 all in sync, 1 some rows rejected or failed, 2 the run could not proceed.
# TYPE accountsync_last_run_exit_code gauge
accountsync_last_run_exit_code 1
# HELP accountsync_last_run_interrupted 1 when SIGTERM/SIGINT cut the run short.
# TYPE accountsync_last_run_interrupted gauge
accountsync_last_run_interrupted 0
# HELP accountsync_last_success_timestamp_seconds When the last completed run (exit 0 or 1, at least one export, not interrupted) finished, in Unix time.
# TYPE accountsync_last_success_timestamp_seconds gauge
accountsync_last_success_timestamp_seconds 1796263205.75
"#;

fn prom_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("accountsync.prom");
    (dir, path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_night_with_rejections_writes_the_golden_file() {
    let (_dir, path) = prom_dir();
    write(&path, &night()).unwrap();
    let text = read(&path);
    assert_eq!(text, &GOLDEN[1..]);
    check_text_format(&text).unwrap();
}

#[test]
fn the_file_is_replaced_whole_and_no_temp_file_stays() {
    let (dir, path) = prom_dir();
    std::fs::write(
        &path,
        "# an older file, longer than nothing at all\nold_metric 1\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("node.prom"), "other 1\n").unwrap();
    write(&path, &night()).unwrap();
    assert_eq!(read(&path), &GOLDEN[1..]);
    assert_eq!(
        names_in(dir.path()),
        ["accountsync.prom", "node.prom"].map(String::from).into()
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644, "{mode:o}");
}

#[test]
fn a_missing_folder_is_an_error_and_creates_nothing() {
    let (dir, _) = prom_dir();
    let path = dir.path().join("missing").join("accountsync.prom");
    let err = write(&path, &night()).unwrap_err();
    assert!(matches!(err, MetricsError::Write { .. }), "{err}");
    assert!(
        err.to_string().contains("missing/accountsync.prom"),
        "{err}"
    );
    assert!(names_in(dir.path()).is_empty());
}

#[test]
fn last_success_is_carried_over_failed_runs() {
    let (_dir, path) = prom_dir();
    let success = |text: &str| parse_last_success(text);
    write(&path, &run(1_000, 0)).unwrap();
    assert_eq!(success(&read(&path)), Some(1_000.0));

    write(&path, &run(2_000, 2)).unwrap();
    let text = read(&path);
    assert_eq!(success(&text), Some(1_000.0));
    assert!(
        text.contains("\naccountsync_last_run_exit_code 2\n"),
        "{text}"
    );
    assert!(text.contains("\naccountsync_last_run_timestamp_seconds 2000\n"));
    check_text_format(&text).unwrap();

    write(&path, &run(3_000, 2)).unwrap();
    assert_eq!(success(&read(&path)), Some(1_000.0));

    // Exit 1 completed the run; an interrupted one did not, whatever its code.
    write(&path, &run(4_000, 1)).unwrap();
    assert_eq!(success(&read(&path)), Some(4_000.0));
    let interrupted = Summary {
        interrupted: true,
        ..run(5_000, 1)
    };
    write(&path, &interrupted).unwrap();
    let text = read(&path);
    assert_eq!(success(&text), Some(4_000.0));
    assert!(
        text.contains("\naccountsync_last_run_interrupted 1\n"),
        "{text}"
    );
}

/// A CRM that stops sending exports must trip "no successful sync in 26 h": an empty inbox
/// is not a success. A run that stopped before its report (missing column, no token) still
/// leaves exit code 2 for the "run failed" alert, with nothing counted.
#[test]
fn an_empty_inbox_is_no_success_and_an_early_failure_still_says_2() {
    let (_dir, path) = prom_dir();
    write(&path, &run(1_000, 0)).unwrap();
    let empty = Summary {
        files: Vec::new(),
        counts: Counts::default(),
        ..run(2_000, 0)
    };
    write(&path, &empty).unwrap();
    let text = read(&path);
    assert_eq!(parse_last_success(&text), Some(1_000.0));
    assert!(text.contains("\naccountsync_last_run_files 0\n"), "{text}");

    write_failed(&path, at(3_000, 0)).unwrap();
    let text = read(&path);
    check_text_format(&text).unwrap();
    assert_eq!(parse_last_success(&text), Some(1_000.0));
    for line in [
        "accountsync_last_run_exit_code 2",
        "accountsync_last_run_timestamp_seconds 3000",
        "accountsync_last_run_rows{outcome=\"read\"} 0",
        "accountsync_last_run_errors{category=\"invalid\"} 0",
        "accountsync_last_run_errors{category=\"failed\"} 0",
        "accountsync_last_run_requests_sent 0",
    ] {
        assert!(text.contains(&format!("\n{line}\n")), "{line}\n{text}");
    }
}

#[test]
fn a_failed_first_run_has_no_last_success() {
    let (_dir, path) = prom_dir();
    write(&path, &run(2_000, 2)).unwrap();
    let text = read(&path);
    assert!(!text.contains(LAST_SUCCESS), "{text}");
    assert!(
        text.ends_with("accountsync_last_run_interrupted 0\n"),
        "{text}"
    );
    check_text_format(&text).unwrap();
}

#[test]
fn last_success_is_read_only_from_its_own_plain_sample() {
    let parse = parse_last_success;
    assert_eq!(
        parse("accountsync_last_success_timestamp_seconds 12.5\n"),
        Some(12.5)
    );
    assert_eq!(
        parse("x 1\naccountsync_last_success_timestamp_seconds 7"),
        Some(7.0)
    );
    assert_eq!(parse(""), None);
    assert_eq!(parse("garbage\n\0\n"), None);
    assert_eq!(
        parse("accountsync_last_success_timestamp_seconds_x 5\n"),
        None
    );
    assert_eq!(
        parse("accountsync_last_success_timestamp_seconds{a=\"b\"} 5\n"),
        None
    );
    assert_eq!(
        parse("accountsync_last_success_timestamp_seconds NaN\n"),
        None
    );
    assert_eq!(
        parse("accountsync_last_success_timestamp_seconds soon\n"),
        None
    );
}

#[test]
fn a_garbled_previous_file_drops_last_success_but_not_the_run() {
    let (_dir, path) = prom_dir();
    std::fs::write(&path, b"\xff\xfe not metrics\n").unwrap();
    write(&path, &run(2_000, 2)).unwrap();
    let text = read(&path);
    assert!(!text.contains(LAST_SUCCESS), "{text}");
    check_text_format(&text).unwrap();
}

#[test]
fn a_dry_run_leaves_the_file_alone() {
    let (dir, path) = prom_dir();
    let dry = Summary {
        dry_run: true,
        ..night()
    };
    write(&path, &dry).unwrap();
    assert!(names_in(dir.path()).is_empty());
    write(&path, &run(1_000, 0)).unwrap();
    let before = read(&path);
    write(&path, &dry).unwrap();
    assert_eq!(read(&path), before);
}

#[test]
fn floats_use_the_text_format_spelling() {
    assert_eq!(float(5.0), "5");
    assert_eq!(float(0.125), "0.125");
    assert_eq!(float(f64::NAN), "NaN");
    assert_eq!(float(f64::INFINITY), "+Inf");
    assert_eq!(float(f64::NEG_INFINITY), "-Inf");
}
