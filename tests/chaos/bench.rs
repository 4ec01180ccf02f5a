//! Runs, kills and what the client's cache says between them: the bench runs the inbox
//! once at a time, kills a run when its trigger fires, logs every run and reads the cache
//! after it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::exports::{FIELDS, Night, State, Values};
use crate::kills::{STEPS, Step, Trigger};
use crate::reports::read_summary;
use crate::util::{Logged, Sandbox, Workdir};

/// One `accountsync run` process.
pub(crate) struct RunLog {
    pub(crate) night: usize,
    /// The sandbox's requests with `first_seq <= seq < end_seq` came from this run (one run at
    /// a time; the bounds are read while no client runs).
    pub(crate) first_seq: u64,
    pub(crate) end_seq: u64,
    pub(crate) trigger: Option<Trigger>,
    /// Where the kill landed, if the run was killed.
    pub(crate) killed: Option<String>,
    /// Killed before the end-of-run flush (nothing of the end sequence on disk yet): the
    /// only kills that can make a request be repeated.
    pub(crate) before_flush: bool,
    pub(crate) code: Option<i32>,
    pub(crate) report: Option<PathBuf>,
}

impl RunLog {
    pub(crate) fn sent(&self, r: &Logged) -> bool {
        self.first_seq <= r.seq && r.seq < self.end_seq
    }
}

/// The client's cache as `accountsync cache export` shows it.
#[derive(Default)]
pub(crate) struct Dump {
    pub(crate) confirmed: BTreeMap<String, Values>,
    /// References with a kept retry or a remembered rejection.
    pub(crate) open: BTreeSet<String>,
    /// References whose kept retry has uncertain fields.
    uncertain: BTreeSet<String>,
}

pub(crate) struct Bench<'a> {
    pub(crate) wd: &'a Workdir,
    pub(crate) sb: &'a Sandbox,
    pub(crate) rng: fastrand::Rng,
    backup: PathBuf,
    pub(crate) runs: Vec<RunLog>,
    /// Reference -> the first request seq that would be a resend: once requests up to here
    /// were in, the cache showed the account confirmed with the night's values and nothing
    /// open, and no export of the night asks for other values.
    settled: BTreeMap<String, u64>,
    /// Requests for a settled account, as readable lines.
    pub(crate) resent: Vec<String>,
    pub(crate) recoveries: usize,
    next_seq: u64,
    /// Requests per second the runs reached, for the kill moments.
    pub(crate) throughput: f64,
    /// The cache as it was after the last run that could change it.
    pub(crate) last: Dump,
}

impl<'a> Bench<'a> {
    /// No run yet; the kill schedule drawn from `seed`.
    pub(crate) fn new(wd: &'a Workdir, sb: &'a Sandbox, seed: u64, backup: PathBuf) -> Self {
        Bench {
            wd,
            sb,
            rng: fastrand::Rng::with_seed(seed),
            backup,
            runs: Vec::new(),
            settled: BTreeMap::new(),
            resent: Vec::new(),
            recoveries: 0,
            next_seq: 1,
            throughput: 250.0,
            last: Dump::default(),
        }
    }
}

impl Bench<'_> {
    fn dump(&self, after_kill: bool) -> Dump {
        let run = self.wd.exec(self.wd.command(&["cache", "export"]));
        assert!(!run.stderr().contains("panicked"), "{run}");
        let mut dump = Dump::default();
        if run.code() != Some(0) {
            // Killed before the cache existed, or (after a kill) a cache the next run must
            // recover: nothing to learn from it, so nothing is settled from it.
            assert!(
                after_kill,
                "cache export after a complete run failed\n{run}"
            );
            return dump;
        }
        for line in run.stdout().lines() {
            let entry: Value = serde_json::from_str(line).expect("export line");
            let reference = entry["reference"].as_str().expect("reference").to_owned();
            let mut values = Values::default();
            for (field, name) in FIELDS.iter().enumerate() {
                values[field] = entry["confirmed"][name].as_str().map(str::to_owned);
            }
            dump.confirmed.insert(reference.clone(), values);
            if !entry["pending"].is_null() || !entry["rejected"].is_null() {
                dump.open.insert(reference.clone());
            }
            if entry["pending"]["uncertain"]
                .as_array()
                .is_some_and(|u| !u.is_empty())
            {
                dump.uncertain.insert(reference);
            }
        }
        dump
    }

    /// A new night: an account stays settled only if the night asks nothing new of it.
    pub(crate) fn begin_night(&mut self, before: Option<&State>, night: &Night) {
        self.settled.retain(|r, _| {
            before.and_then(|b| b.get(r)) == night.target().get(r) && night.steady(r)
        });
    }

    fn step_done(&self, step: Step, since: SystemTime, archived: &[(PathBuf, bool)]) -> bool {
        // Each step writes its file at least a second (the inbox settle time) after the
        // start, far more than the coarse clock that file times are stamped with lags.
        let newer = |p: PathBuf| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > since)
        };
        match step {
            Step::RowIndex => newer(self.wd.cache_dir().join("rows.idx")),
            Step::OpenRecords => newer(self.wd.cache_dir().join("open-records.jsonl")),
            Step::Backup => newer(self.backup.clone()),
            Step::Archived => archived.iter().any(|(p, before)| !before && p.exists()),
        }
    }

    /// Runs the inbox once; with a trigger, kills it with SIGKILL when the trigger fires
    /// (unless it ended first). Then reads the requests it sent, checks that none was for a
    /// settled account, and reads the cache into `last` (unless a killed run sent nothing:
    /// then it changed nothing the checks look at).
    pub(crate) fn run(&mut self, night: &Night, trigger: Option<Trigger>) {
        let wd = self.wd;
        let index = self.runs.len();
        let log = wd.path(&format!("run-{index:02}-night-{}.log", night.number));
        let archived: Vec<(PathBuf, bool)> = night
            .exports
            .iter()
            .map(|e| wd.path("archive").join(&e.name))
            .map(|p| {
                let before = p.exists();
                (p, before)
            })
            .collect();
        let dirs_before = wd.run_dirs();
        let drawn_before = faults_drawn(self.sb);
        let mut cmd = wd.command(&["run"]);
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"));
        let spawned = SystemTime::now();
        let started = Instant::now();
        let mut child = cmd.spawn().expect("start a run");
        let mut polled = Instant::now();
        let mut killed = None;
        let mut before_flush = false;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break Some(status);
            }
            let fire = match trigger {
                None => false,
                Some(Trigger::At(at)) => started.elapsed() >= at,
                // The stats are a few hundred KB: every 20 ms is enough.
                Some(Trigger::Requests(n)) if polled.elapsed() >= Duration::from_millis(20) => {
                    polled = Instant::now();
                    faults_drawn(self.sb) >= drawn_before + n
                }
                Some(Trigger::Requests(_)) => false,
                Some(Trigger::After(step)) => self.step_done(step, spawned, &archived),
            };
            if fire {
                child.kill().expect("SIGKILL");
                child.wait().expect("reap");
                // What the files show after the kill is what happened before it.
                let reached = STEPS
                    .iter()
                    .rev()
                    .find(|s| self.step_done(**s, spawned, &archived));
                let report_made = wd.run_dirs().len() > dirs_before.len();
                before_flush = reached.is_none();
                killed = Some(match (reached, report_made) {
                    (Some(step), _) => format!("after {step:?}"),
                    (None, true) => "reading/sending".to_owned(),
                    (None, false) => "starting".to_owned(),
                });
                break None;
            }
            // Polling, not synchronising: how soon after the trigger the kill lands.
            std::thread::sleep(Duration::from_millis(1));
        };
        let elapsed = started.elapsed();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!text.contains("panicked"), "run {index} panicked:\n{text}");
        let code = status.and_then(|s| s.code());
        if killed.is_none() {
            assert!(
                matches!(code, Some(0 | 1)),
                "run {index} (night {}) ended with {status:?}:\n{text}",
                night.number
            );
        }
        let report = wd
            .run_dirs()
            .difference(&dirs_before)
            .next()
            .map(|d| wd.reports_dir().join(d));

        // The client is dead or done: everything it sent has arrived.
        let requests = requests_seen(self.sb);
        let end_seq = requests.last().map_or(self.next_seq, |r| r.seq + 1);
        let sent = end_seq - self.next_seq;
        if sent >= 200 {
            self.throughput = sent as f64 / elapsed.as_secs_f64().max(0.1);
        }
        if text.contains("The cache is damaged") {
            // The backup's confirmations replace the cache's: what was confirmed since the
            // last backup is sent again, as the README says.
            self.recoveries += 1;
            self.settled.clear();
        }
        for r in requests.iter().filter(|r| r.seq >= self.next_seq) {
            let Some(reference) = &r.reference else {
                continue;
            };
            if let Some(from) = self.settled.get(reference)
                && r.seq >= *from
            {
                self.resent.push(format!(
                    "{reference}: request {} in run {index} (night {}), settled from request {from}",
                    r.seq, night.number
                ));
            }
        }
        if sent > 0 || killed.is_none() {
            self.last = self.dump(killed.is_some());
            for (reference, values) in &self.last.confirmed {
                if !self.last.open.contains(reference)
                    && night.target().get(reference) == Some(values)
                    && night.steady(reference)
                {
                    self.settled.entry(reference.clone()).or_insert(end_seq);
                }
            }
        }
        eprintln!(
            "chaos run {index:02} night {}: {trigger:?} -> {}, {sent} requests, {:.1} s, exit {code:?}, {} kept ({} uncertain)",
            night.number,
            killed.as_deref().unwrap_or("not killed"),
            elapsed.as_secs_f64(),
            self.last.open.len(),
            self.last.uncertain.len(),
        );
        self.runs.push(RunLog {
            night: night.number,
            first_seq: self.next_seq,
            end_seq,
            trigger,
            killed,
            before_flush,
            code,
            report,
        });
        self.next_seq = end_seq;
    }

    /// Runs `night` again until a run leaves nothing failed, its own rows or those retried
    /// from earlier runs (at most four runs: with faults off, nothing should be left).
    pub(crate) fn run_until_nothing_failed(&mut self, night: &Night) {
        for round in 0.. {
            self.run(night, None);
            let run = self.runs.last().expect("run");
            let summary = read_summary(run.report.as_deref().expect("a report"));
            if summary["failed"] == 0 && summary["retried_from_earlier_runs"]["failed"] == 0 {
                break;
            }
            assert!(
                round < 3,
                "still failing after {round} runs without faults: {summary:#}"
            );
        }
    }
}

/// A request as far as the per-run checks need it: `GET /_sandbox/requests` without building
/// each body (the log grows to ~10,000 requests and is read after every run).
#[derive(serde::Deserialize)]
struct Seen {
    seq: u64,
    reference: Option<String>,
}

fn requests_seen(sb: &Sandbox) -> Vec<Seen> {
    let body = sb.get("/_sandbox/requests");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET /_sandbox/requests: {e}"))
}

/// PATCHes the sandbox drew a fault (or none) for.
fn faults_drawn(sb: &Sandbox) -> u64 {
    sb.stats()["faults"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
}
