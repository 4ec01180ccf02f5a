//! Real time, kept short: every-second crons and a fake host whose runs sleep. The tests run
//! on tokio's current-thread runtime, so the loop, the scheduler's tasks and the runs all log
//! through the subscriber each test installs for its own thread.

use std::collections::VecDeque;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::time::sleep;

use super::*;

/// New Year's midnight: never reached while a test runs (but on New Year's Eve).
const FAR: &str = "0 0 0 1 1 *";
const EVERY_SECOND: &str = "* * * * * *";

#[derive(Default)]
struct Fake {
    run_for: Duration,
    /// Exit codes of the runs that end on their own, in order; then 0.
    codes: Mutex<VecDeque<i32>>,
    starts: Mutex<Vec<Instant>>,
    ends: Mutex<Vec<Instant>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
    cancelled: AtomicUsize,
    last: Mutex<Option<DateTime<Utc>>>,
    completions: AtomicUsize,
    reload_with: Mutex<Option<Result<Schedule, String>>>,
    /// When each reload was asked for, and how many runs were going then.
    reloads: Mutex<Vec<(Instant, usize)>>,
}

impl Fake {
    fn new(run_for_ms: u64) -> Fake {
        Fake {
            run_for: Duration::from_millis(run_for_ms),
            ..Fake::default()
        }
    }

    fn runs(&self) -> usize {
        self.starts.lock().unwrap().len()
    }
}

impl Host for Fake {
    async fn run(&self, cancel: CancellationToken) -> i32 {
        self.starts.lock().unwrap().push(Instant::now());
        let now = self.running.fetch_add(1, SeqCst) + 1;
        self.max_running.fetch_max(now, SeqCst);
        let code = tokio::select! {
            () = sleep(self.run_for) => self.codes.lock().unwrap().pop_front().unwrap_or(0),
            () = cancel.cancelled() => {
                self.cancelled.fetch_add(1, SeqCst);
                // As the pipeline does: requests in flight finish before the run returns.
                sleep(Duration::from_millis(200)).await;
                1
            }
        };
        self.ends.lock().unwrap().push(Instant::now());
        self.running.fetch_sub(1, SeqCst);
        code
    }

    fn reload(&self) -> Result<Schedule, String> {
        let running = self.running.load(SeqCst);
        self.reloads.lock().unwrap().push((Instant::now(), running));
        self.reload_with
            .lock()
            .unwrap()
            .clone()
            .expect("a reload result")
    }

    fn last_completed(&self) -> Option<DateTime<Utc>> {
        *self.last.lock().unwrap()
    }

    fn set_last_completed(&self, at: DateTime<Utc>) {
        self.completions.fetch_add(1, SeqCst);
        *self.last.lock().unwrap() = Some(at);
    }
}

struct Running {
    shutdown: CancellationToken,
    reload: mpsc::Sender<()>,
    notifier: Arc<RecordingNotifier>,
    task: JoinHandle<Result<(), DaemonError>>,
}

fn start(host: &Arc<Fake>, cron: &str, run_now: bool) -> Running {
    start_with(host, cron, run_now, RecordingNotifier::new())
}

fn start_with(host: &Arc<Fake>, cron: &str, run_now: bool, notifier: RecordingNotifier) -> Running {
    let notifier = Arc::new(notifier);
    let (reload, requests) = mpsc::channel(1);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(
        host.clone(),
        Schedule::parse(cron, "UTC").unwrap(),
        DaemonOptions { run_now },
        shutdown.clone(),
        requests,
        notifier.clone(),
    ));
    Running {
        shutdown,
        reload,
        notifier,
        task,
    }
}

impl Running {
    /// Cancels the shutdown token and waits for `serve` to return; its notifier lines.
    async fn stop(self) -> Vec<String> {
        self.shutdown.cancel();
        let served = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        served.expect("serve returns").unwrap().unwrap();
        self.notifier.lines()
    }
}

/// Polls `done` every 20 ms until it holds or `secs` pass; whether it held. Waiting for a
/// state rather than a fixed time keeps the tests fast and steady on a loaded machine.
async fn until(secs: u64, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Everything logged on this thread while the guard lives.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn lines_with(&self, level: &str, text: &str) -> usize {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| l.contains(level) && l.contains(text))
            .count()
    }
}

#[tokio::test]
async fn a_slow_run_is_never_overlapped_and_skipped_ticks_are_logged() {
    let (logs, _guard) = Logs::capture();
    let host = Arc::new(Fake::new(2_500));
    let daemon = start(&host, EVERY_SECOND, false);
    // Each run lasts 2.5 s against a tick every second, so two ticks find a run going within
    // about 4 s; 30 s leaves room for a machine too busy to deliver ticks on time.
    let skipped = || logs.lines_with("WARN", "run still going, tick skipped");
    let logged = until(30, || skipped() >= 2).await;
    daemon.stop().await;
    assert!(logged, "{} ticks skipped", skipped());
    assert_eq!(host.max_running.load(SeqCst), 1);
    // A skipped tick is dropped, not queued: each run starts after the previous one ended.
    let (starts, ends) = (host.starts.lock().unwrap(), host.ends.lock().unwrap());
    assert!(!starts.is_empty());
    for (end, next) in ends.iter().zip(starts.iter().skip(1)) {
        assert!(next >= end, "a run started before the previous one ended");
    }
}

#[tokio::test]
async fn run_now_runs_at_once_and_the_notifier_follows_the_states() {
    let host = Arc::new(Fake::new(300));
    let daemon = start(&host, FAR, true);
    assert!(until(1, || host.runs() == 1).await);
    assert_eq!(host.running.load(SeqCst), 1);
    assert!(until(2, || host.completions.load(SeqCst) == 1).await);
    assert_eq!(host.runs(), 1);
    let lines = daemon.stop().await;
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0], "READY=1");
    assert_eq!(lines[1], "STATUS=syncing");
    assert!(
        lines[2].starts_with("STATUS=idle, next run at ") && lines[2].ends_with(" UTC (UTC)"),
        "{lines:?}"
    );
    assert!(lines[2].contains("-01-01 00:00:00"), "{lines:?}");
    assert_eq!(lines[3], "STOPPING=1");
}

#[tokio::test]
async fn a_missed_fire_time_is_caught_up_once() {
    for run_now in [false, true] {
        let host = Arc::new(Fake::new(50));
        *host.last.lock().unwrap() = Some(Utc::now() - chrono::Duration::days(2));
        let daemon = start(&host, "0 0 2 * * *", run_now);
        assert!(until(2, || host.completions.load(SeqCst) == 1).await);
        sleep(Duration::from_millis(200)).await;
        daemon.stop().await;
        assert_eq!(host.runs(), 1, "run_now {run_now}");
        assert_eq!(host.completions.load(SeqCst), 1);
    }
    // Nothing due since the last run, or no run ever: wait for the schedule.
    for last in [Some(Utc::now() - chrono::Duration::minutes(1)), None] {
        let host = Arc::new(Fake::new(50));
        *host.last.lock().unwrap() = last;
        let daemon = start(&host, FAR, false);
        sleep(Duration::from_millis(300)).await;
        let lines = daemon.stop().await;
        assert_eq!(host.runs(), 0, "{last:?}");
        assert!(lines[1].starts_with("STATUS=idle"), "{lines:?}");
    }
}

#[tokio::test]
async fn shutdown_cancels_the_run_and_waits_for_it() {
    let host = Arc::new(Fake::new(10_000));
    let daemon = start(&host, FAR, true);
    assert!(until(1, || host.running.load(SeqCst) == 1).await);
    let asked = Instant::now();
    let lines = daemon.stop().await;
    let returned = Instant::now();
    assert_eq!(host.cancelled.load(SeqCst), 1);
    assert_eq!(host.running.load(SeqCst), 0);
    let ended = host.ends.lock().unwrap()[0];
    assert!(ended >= asked + Duration::from_millis(200) && ended <= returned);
    assert!(returned - asked < Duration::from_secs(2));
    // Cut short: not a completion, so the next start catches up.
    assert_eq!(host.completions.load(SeqCst), 0);
    assert_eq!(lines.last().map(String::as_str), Some("STOPPING=1"));
}

#[tokio::test]
async fn a_reload_during_a_run_is_applied_after_it() {
    let host = Arc::new(Fake::new(1_000));
    *host.reload_with.lock().unwrap() = Some(Ok(Schedule::parse(EVERY_SECOND, "UTC").unwrap()));
    let daemon = start(&host, FAR, true);
    assert!(until(1, || host.running.load(SeqCst) == 1).await);
    daemon.reload.send(()).await.unwrap();
    daemon.reload.send(()).await.unwrap();
    assert!(until(3, || host.completions.load(SeqCst) == 1).await);
    sleep(Duration::from_millis(100)).await;
    {
        let reloads = host.reloads.lock().unwrap();
        assert_eq!(reloads.len(), 1, "two requests during one run: one reload");
        let (at, running) = reloads[0];
        assert_eq!(running, 0);
        assert!(at >= host.ends.lock().unwrap()[0]);
    }
    // The new schedule (every second) took over from the far one.
    assert!(until(3, || host.runs() >= 2).await, "{} runs", host.runs());
    daemon.stop().await;
}

#[tokio::test]
async fn a_failed_reload_keeps_the_old_schedule() {
    let (logs, _guard) = Logs::capture();
    let host = Arc::new(Fake::new(50));
    *host.reload_with.lock().unwrap() = Some(Err("[schedule].cron: invalid".into()));
    let daemon = start(&host, EVERY_SECOND, false);
    daemon.reload.send(()).await.unwrap();
    assert!(until(1, || host.reloads.lock().unwrap().len() == 1).await);
    let reloaded = host.reloads.lock().unwrap()[0].0;
    let runs_after = || {
        host.starts
            .lock()
            .unwrap()
            .iter()
            .filter(|s| **s > reloaded)
            .count()
    };
    let later = until(4, || runs_after() >= 2).await;
    daemon.stop().await;
    assert!(later, "{} runs after the failed reload", runs_after());
    assert_eq!(
        logs.lines_with("WARN", "[schedule].cron: invalid"),
        1,
        "the message is logged"
    );
    let later = host
        .starts
        .lock()
        .unwrap()
        .iter()
        .filter(|s| **s > reloaded)
        .count();
    assert!(later >= 2, "{later} runs after the failed reload");
}

#[tokio::test]
async fn a_run_exiting_2_does_not_stop_the_schedule() {
    let (logs, _guard) = Logs::capture();
    let host = Arc::new(Fake::new(50));
    host.codes.lock().unwrap().extend([2, 2]);
    let daemon = start(&host, EVERY_SECOND, false);
    let went_on = until(4, || host.completions.load(SeqCst) >= 3).await;
    daemon.stop().await;
    assert!(went_on, "{} runs", host.runs());
    // Every run counts as completed, whatever its code; but one cut short by the shutdown.
    let cut_short = host.cancelled.load(SeqCst);
    assert_eq!(host.completions.load(SeqCst) + cut_short, host.runs());
    // The host logs a failed run's cause at error; the loop's own line is debug, so the
    // journal has one error line per failed run, not two.
    assert!(logs.lines_with("DEBUG", "Sync could not proceed") >= 2);
    assert_eq!(logs.lines_with("ERROR", "Sync"), 0);
}

/// The loop's lines about a run (start, finish, whatever the code) are debug: the run logs
/// its own `Run started.` and `Run finished.` at info.
#[tokio::test]
async fn the_loop_logs_its_runs_at_debug_only() {
    let (logs, _guard) = Logs::capture();
    let host = Arc::new(Fake::new(50));
    host.codes.lock().unwrap().extend([0, 1]);
    let daemon = start(&host, EVERY_SECOND, true);
    assert!(until(4, || host.completions.load(SeqCst) >= 3).await);
    daemon.stop().await;
    assert!(logs.lines_with("DEBUG", "Sync starting.") >= 3);
    assert!(logs.lines_with("DEBUG", "Sync finished") >= 2);
    for level in ["INFO", "WARN", "ERROR"] {
        assert_eq!(logs.lines_with(level, "Sync "), 0, "{level}");
    }
}

/// Records when each notice came, for the watchdog's pace.
struct TimedNotifier {
    watchdog: Duration,
    at: Mutex<Vec<(Instant, String)>>,
}

impl Notifier for TimedNotifier {
    fn notify(&self, notice: Notice<'_>) {
        let line = notice.to_string();
        self.at.lock().unwrap().push((Instant::now(), line));
    }
    fn watchdog_interval(&self) -> Option<Duration> {
        Some(self.watchdog)
    }
}

impl TimedNotifier {
    fn pings(&self) -> Vec<Instant> {
        let at = self.at.lock().unwrap();
        at.iter()
            .filter(|(_, l)| l == "WATCHDOG=1")
            .map(|(t, _)| *t)
            .collect()
    }
}

#[tokio::test]
async fn the_watchdog_is_pinged_at_half_its_interval_until_shutdown() {
    let host = Arc::new(Fake::new(50));
    let interval = Duration::from_millis(200);
    let notifier = Arc::new(TimedNotifier {
        watchdog: interval,
        at: Mutex::default(),
    });
    let started = Instant::now();
    let shutdown = CancellationToken::new();
    let (_reload, requests) = mpsc::channel(1);
    let task = tokio::spawn(serve(
        host.clone(),
        Schedule::parse(FAR, "UTC").unwrap(),
        DaemonOptions::default(),
        shutdown.clone(),
        requests,
        notifier.clone(),
    ));
    // Four pings take 300 ms at half the interval; 10 s is for a busy machine.
    assert!(
        until(10, || notifier.pings().len() >= 4).await,
        "{} pings",
        notifier.pings().len()
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve returns")
        .unwrap()
        .unwrap();
    // Ping k comes no earlier than k half-intervals after `started`: the ticker starts after
    // it, and a late tick (a busy machine) only pushes the later ones back. 1 ms for tokio's
    // millisecond timer wheel. Pinging in a loop, or at a shorter period, fails this.
    let pings = notifier.pings();
    let half = interval / 2;
    for (k, at) in pings.iter().enumerate() {
        let earliest = started + half * k as u32;
        assert!(
            *at + Duration::from_millis(1) >= earliest,
            "ping {k} came {:?} after the start, before {:?}",
            *at - started,
            earliest - started
        );
    }
    // No pings after shutdown: watched over more than two half-intervals. A window, not a
    // synchronisation: a slow machine can only make this miss a late ping, not fail.
    let seen = notifier.at.lock().unwrap().len();
    sleep(interval + half).await;
    assert_eq!(
        notifier.at.lock().unwrap().len(),
        seen,
        "no pings after shutdown"
    );
}

#[test]
fn notices_are_sd_notify_lines_and_a_missing_socket_is_no_error() {
    assert_eq!(Notice::Status("idle").to_string(), "STATUS=idle");
    // The test runner has no NOTIFY_SOCKET: SdNotifier sends nothing and does not fail.
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        let notifier = SdNotifier::new();
        notifier.notify(Notice::Ready);
        notifier.status("syncing");
        assert!(!notifier.warned.load(SeqCst));
    }
}
