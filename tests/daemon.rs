//! `accountsync daemon` as a process: a 2-second cron syncing an inbox, runs that never
//! overlap, SIGHUP with a broken config, SIGTERM. Real time, so the waits are generous and
//! each is explained.

mod util;

use std::collections::BTreeSet;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use util::{Conf, Sandbox, Workdir, by_reference, numbered_export, wait_for};

/// A daemon process whose stderr goes to a file the test can read while it runs.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(wd: &Workdir) -> Daemon {
        Daemon::start_with(wd, &["daemon"], "daemon.log")
    }

    /// `accountsync ARGS`, its stderr in `log_name`.
    fn start_with(wd: &Workdir, args: &[&str], log_name: &str) -> Daemon {
        let log = wd.path(log_name);
        let mut cmd = wd.command(args);
        cmd.stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"));
        Daemon {
            child: cmd.spawn().expect("start the daemon"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child, which has not been waited for yet.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// SIGTERM, then the exit code; panics if it takes longer than `within`.
    fn stop(mut self, within: Duration) -> i32 {
        self.signal(libc::SIGTERM);
        let status = wait_for("the daemon to exit after SIGTERM", within, || {
            self.child.try_wait().expect("try_wait")
        });
        status.code().unwrap_or(-1)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn conf(sb: &Sandbox, wd: &Workdir) -> Conf {
    Conf {
        input_dir: Some(wd.path("inbox")),
        archive_dir: Some(wd.path("archive")),
        extra: "[schedule]\ncron = \"*/2 * * * * *\"\n".into(),
        ..Conf::new(sb)
    }
}

/// Every report's (started_at, finished_at), in run order.
fn run_spans(wd: &Workdir) -> Vec<(String, String, serde_json::Value)> {
    let mut spans: Vec<_> = wd
        .run_dirs()
        .into_iter()
        .filter_map(|d| {
            let text =
                std::fs::read_to_string(wd.reports_dir().join(d).join("summary.json")).ok()?;
            let s: serde_json::Value = serde_json::from_str(&text).ok()?;
            Some((
                s["started_at"].as_str()?.to_owned(),
                s["finished_at"].as_str()?.to_owned(),
                s,
            ))
        })
        .collect();
    spans.sort_by(|a, b| a.0.cmp(&b.0));
    spans
}

#[test]
fn a_two_second_cron_syncs_files_dropped_at_different_times_without_overlapping_runs() {
    let wd = Workdir::new("daemon-cron");
    // 250 ms a request, one at a time: the first file's 12 rows take about 3 s, longer than
    // the 2 s between ticks, so at least one tick falls inside that run.
    let sb = Sandbox::start(&wd, &["--latency-ms", "250"]);
    wd.configure(&Conf {
        max_in_flight: 1,
        ..conf(&sb, &wd)
    });
    std::fs::create_dir_all(wd.path("inbox")).expect("inbox");
    wd.write("inbox/crm-1.csv", numbered_export("D", 12));
    let daemon = Daemon::start(&wd);

    // First run: the next tick (≤ 2 s) plus the 1 s settle wait plus ~3 s of requests.
    wait_for(
        "the first file to be archived",
        Duration::from_secs(30),
        || wd.path("archive/crm-1.csv").exists().then_some(()),
    );
    wd.write("inbox/crm-2.csv", numbered_export("E", 2));
    wait_for(
        "the second file to be archived",
        Duration::from_secs(30),
        || wd.path("archive/crm-2.csv").exists().then_some(()),
    );
    let log = daemon.log();
    assert!(log.contains("run still going, tick skipped"), "{log}");
    assert_eq!(daemon.stop(Duration::from_secs(10)), 0);

    assert_eq!(sb.request_count(), 14, "every row of both files sent once");
    let spans = run_spans(&wd);
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "two runs overlapped: {} - {} and {} - {}",
            pair[0].0,
            pair[0].1,
            pair[1].0,
            pair[1].1
        );
    }
    let synced: u64 = spans
        .iter()
        .map(|s| s.2["updated"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(synced, 14);
}

#[test]
fn sighup_with_a_broken_config_keeps_the_daemon_on_the_old_one() {
    let wd = Workdir::new("daemon-hup");
    let sb = Sandbox::start(&wd, &[]);
    let good = conf(&sb, &wd);
    wd.configure(&good);
    std::fs::create_dir_all(wd.path("inbox")).expect("inbox");
    let daemon = Daemon::start(&wd);
    wait_for("the daemon to start", Duration::from_secs(10), || {
        daemon.log().contains("Daemon started").then_some(())
    });

    // A token pasted into the file: an unknown key, refused, its value never logged.
    wd.write(
        "config.toml",
        "[api]\nbase_url = \"https://x\"\ntoken = \"sekret-tok-123\"\n",
    );
    daemon.signal(libc::SIGHUP);
    wait_for("the reload to be refused", Duration::from_secs(10), || {
        daemon
            .log()
            .contains("Config reload failed; keeping the previous config")
            .then_some(())
    });
    assert!(
        daemon.log().contains("unknown field `token`"),
        "the message names the bad key\n{}",
        daemon.log()
    );
    assert!(
        !daemon.log().contains("sekret"),
        "the pasted token was logged\n{}",
        daemon.log()
    );

    // A config that parses but whose token cannot be read would fail every night: refused
    // as well, as it is at start.
    wd.configure(&Conf {
        token_env: "ACCOUNTSYNC_TEST_NO_SUCH_TOKEN".into(),
        ..good.clone()
    });
    daemon.signal(libc::SIGHUP);
    wait_for(
        "the tokenless reload to be refused",
        Duration::from_secs(10),
        || {
            daemon
                .log()
                .contains("ACCOUNTSYNC_TEST_NO_SUCH_TOKEN")
                .then_some(())
        },
    );
    assert_eq!(
        daemon.log().matches("Config reload failed").count(),
        2,
        "{}",
        daemon.log()
    );

    // Still scheduled, still on the old config: a new export is synced.
    wd.write("inbox/crm-1.csv", numbered_export("H", 3));
    wait_for("the export to be archived", Duration::from_secs(30), || {
        wd.path("archive/crm-1.csv").exists().then_some(())
    });
    assert_eq!(sb.request_count(), 3);
    assert_eq!(daemon.stop(Duration::from_secs(10)), 0);
}

#[test]
fn sigterm_stops_a_daemon_mid_run_with_an_interrupted_report() {
    let wd = Workdir::new("daemon-term");
    let sb = Sandbox::start(&wd, &["--latency-ms", "200"]);
    wd.configure(&Conf {
        max_in_flight: 1,
        extra: "[schedule]\ncron = \"*/2 * * * * *\"\n[shutdown]\ndeadline_secs = 5\n".into(),
        ..conf(&sb, &wd)
    });
    std::fs::create_dir_all(wd.path("inbox")).expect("inbox");
    wd.write("inbox/crm-1.csv", numbered_export("S", 100));
    let daemon = Daemon::start(&wd);
    wait_for("the first requests", Duration::from_secs(30), || {
        (sb.request_count() >= 3).then_some(())
    });
    assert_eq!(
        daemon.stop(Duration::from_secs(5)),
        0,
        "exit within the deadline"
    );
    let spans = run_spans(&wd);
    let last = &spans.last().expect("a report").2;
    assert_eq!(last["interrupted"], true, "{last:#}");
    interrupted_file_is_where_its_report_says(&wd, last);
}

/// A file the interrupted run read to its end (every row decided: sent, or kept in the
/// outbox as "not sent") is archived; one it stopped reading stays in the inbox. Which of
/// the two depends on how far the reader got ahead of the sender when the signal came.
fn interrupted_file_is_where_its_report_says(wd: &Workdir, report: &serde_json::Value) {
    let file = &report["files"][0];
    let in_inbox = wd.path("inbox/crm-1.csv").exists();
    if file["complete"] == true {
        assert!(
            !in_inbox && wd.path("archive/crm-1.csv").exists(),
            "a file read to its end is archived: {file:#}"
        );
    } else {
        assert!(
            in_inbox,
            "a file not read to its end stays in the inbox: {file:#}"
        );
        assert!(file["archived_to"].is_null(), "{file:#}");
    }
}

/// "Nothing lost", the daemon's way (CONTRACT §1: after SIGTERM requests in flight finish,
/// rows not yet sent are left for the next run): a daemon stopped mid-run exits 0, and a
/// second one on the same inbox and cache sends exactly the records the first did not get
/// confirmed: every account reaches the API, none confirmed is sent again.
#[test]
fn a_daemon_stopped_mid_run_leaves_exactly_the_unconfirmed_records_to_the_next_one() {
    let wd = Workdir::new("daemon-nothing-lost");
    // 150 ms a request, 4 in flight: the 100 rows take about 4 s.
    let sb = Sandbox::start(&wd, &["--latency-ms", "150"]);
    wd.configure(&Conf {
        max_in_flight: 4,
        // New Year's midnight: no tick while the test runs; each daemon runs once, at start.
        extra: "[schedule]\ncron = \"0 0 0 1 1 *\"\n[shutdown]\ndeadline_secs = 5\n".into(),
        ..conf(&sb, &wd)
    });
    let n = 100;
    wd.write("inbox/crm-1.csv", numbered_export("L", n));
    let all: BTreeSet<String> = (1..=n).map(|i| format!("L{i:03}")).collect();

    let first = Daemon::start_with(&wd, &["daemon", "--run-now"], "daemon-1.log");
    // Mid-run by the sandbox's log, not by a clock: the 1 s settle is over and sending has
    // gone two rounds of 4, however slowly the daemon started.
    wait_for("8 requests at the sandbox", Duration::from_secs(30), || {
        (sb.request_count() >= 8).then_some(())
    });
    let log1 = first.log.clone();
    // 5 s is `deadline_secs`: the run's own bound for stopping (its requests in flight get
    // 3 s of it, at 150 ms each).
    assert_eq!(
        first.stop(Duration::from_secs(5)),
        0,
        "exit 0 within the deadline\n{}",
        std::fs::read_to_string(&log1).unwrap_or_default()
    );
    let run1 = sb.requests();
    let confirmed: BTreeSet<String> = run1
        .iter()
        .filter(|r| r.status == 200)
        .filter_map(|r| r.reference.clone())
        .collect();
    let spans = run_spans(&wd);
    assert_eq!(spans.len(), 1, "one report after the first daemon");
    let report1 = &spans[0].2;
    assert_eq!(report1["interrupted"], true, "{report1:#}");
    assert_eq!(
        report1["updated"].as_u64(),
        Some(confirmed.len() as u64),
        "updated = what the API confirmed: {report1:#}"
    );
    assert!(
        confirmed.len() < n,
        "the signal should land mid-run: all {n} confirmed"
    );
    interrupted_file_is_where_its_report_says(&wd, report1);

    let second = Daemon::start_with(&wd, &["daemon", "--run-now"], "daemon-2.log");
    wait_for("the second run's report", Duration::from_secs(60), || {
        (run_spans(&wd).len() == 2).then_some(())
    });
    assert_eq!(second.stop(Duration::from_secs(5)), 0);
    let spans = run_spans(&wd);
    let report2 = &spans[1].2;
    assert_eq!(report2["interrupted"], false, "{report2:#}");
    assert!(
        wd.path("archive/crm-1.csv").exists(),
        "the second run completed the file: {report2:#}"
    );

    let run2 = &sb.requests()[run1.len()..];
    let sent2 = by_reference(run2);
    let twice: Vec<_> = sent2.iter().filter(|(_, reqs)| reqs.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "sent more than once by the second daemon: {twice:#?}"
    );
    let again: Vec<_> = sent2.keys().filter(|r| confirmed.contains(*r)).collect();
    assert!(
        again.is_empty(),
        "confirmed by the first daemon, sent again: {again:?}"
    );
    assert!(run2.iter().all(|r| r.status == 200), "{run2:#?}");
    let union: BTreeSet<String> = confirmed.iter().chain(sent2.keys()).cloned().collect();
    let lost: Vec<_> = all.difference(&union).collect();
    assert!(lost.is_empty(), "never reached the API: {lost:?}");
    assert_eq!(union, all);
}

/// An operator's `cache` command holding the cache when a scheduled run starts: the daemon's
/// run waits for it (logged once) instead of losing the night, while `accountsync run` still
/// fails at once with exit 2 (CONTRACT §1). The lock is held here the way sled takes it: an
/// exclusive flock on the database file.
#[test]
fn a_daemon_run_waits_for_a_cache_held_by_another_process() {
    let wd = Workdir::new("daemon-lock");
    let sb = Sandbox::start(&wd, &[]);
    wd.configure(&Conf {
        extra: "[schedule]\ncron = \"0 0 0 1 1 *\"\n".into(),
        ..conf(&sb, &wd)
    });
    let first = wd.write("first.csv", numbered_export("L", 1));
    wd.run(&[&first.display().to_string()]).expect_code(0);
    let lock = File::open(wd.cache_dir().join("db")).expect("the cache's db file");
    lock.try_lock()
        .expect("lock the cache as another process would");

    let file = wd.write("n.csv", numbered_export("M", 2));
    let run = wd.run(&[&file.display().to_string()]);
    run.expect_code(2)
        .expect_stderr("in use by another accountsync process");
    assert!(run.elapsed < Duration::from_secs(10), "{run}");

    std::fs::create_dir_all(wd.path("inbox")).expect("inbox");
    wd.write("inbox/crm-1.csv", numbered_export("W", 3));
    let daemon = Daemon::start_with(&wd, &["daemon", "--run-now"], "daemon.log");
    wait_for(
        "the run to wait for the cache",
        Duration::from_secs(20),
        || {
            daemon
                .log()
                .contains("the run waits up to 60 s")
                .then_some(())
        },
    );
    // Still waiting a few tries later, having sent nothing.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sb.request_count(), 1, "{}", daemon.log());
    drop(lock);
    wait_for("the export to be archived", Duration::from_secs(30), || {
        wd.path("archive/crm-1.csv").exists().then_some(())
    });
    assert_eq!(sb.request_count(), 4);
    let log = daemon.log();
    assert_eq!(log.matches("the run waits up to 60 s").count(), 1, "{log}");
    assert!(!log.contains("could not proceed"), "{log}");
    assert_eq!(daemon.stop(Duration::from_secs(10)), 0);
}

/// At info, each run is one `Run started.` and one `Run finished.` line (with its run_id):
/// the daemon's own wrapper lines are debug. A run that fails before it has a run_id is
/// one error line, with the cause.
#[test]
fn each_run_logs_one_start_and_one_finish_line_and_a_failure_its_cause() {
    let wd = Workdir::new("daemon-lines");
    let sb = Sandbox::start(&wd, &[]);
    wd.configure(&conf(&sb, &wd));
    std::fs::create_dir_all(wd.path("inbox")).expect("inbox");
    wd.write("inbox/crm-1.csv", numbered_export("G", 2));
    let daemon = Daemon::start(&wd);
    wait_for("the export to be archived", Duration::from_secs(30), || {
        wd.path("archive/crm-1.csv").exists().then_some(())
    });
    // A file with a mapped column missing: the run stops before it has a run_id.
    wd.write("inbox/crm-2.csv", "ref,mail\nX-1,x@example.com\n");
    wait_for("the failed run", Duration::from_secs(30), || {
        daemon.log().contains("has no column").then_some(())
    });
    let log_file = daemon.log.clone();
    assert_eq!(daemon.stop(Duration::from_secs(10)), 0);
    let log = std::fs::read_to_string(log_file).expect("daemon log");
    let lines = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert!(lines("Run started.") >= 1, "{log}");
    assert_eq!(lines("Run started."), lines("Run finished."), "{log}");
    assert!(
        log.lines()
            .filter(|l| l.contains("Run started."))
            .all(|l| l.contains("run_id=")),
        "{log}"
    );
    assert_eq!(lines("Sync starting."), 0, "{log}");
    assert_eq!(lines("Sync finished"), 0, "{log}");
    assert_eq!(lines("Sync could not proceed"), 0, "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(!errors.is_empty(), "{log}");
    for line in errors {
        assert!(
            line.contains("The run could not proceed") && line.contains("has no column"),
            "an error line without the cause: {line}\n{log}"
        );
    }
}
