//! Send: patches -> HTTP, at most `max_in_flight` at once, every attempt through the
//! [`Throttle`], transient failures retried with backoff. Returns a [`Delivery`] per job;
//! it never touches the cache (the record stage does, after the API confirmed).

pub mod client;
pub mod retry;
pub mod throttle;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Retry;
use crate::model::{Category, NOT_ANSWERED_INTERRUPTED, NOT_SENT_STOPPED, Patch, Problem};
use client::Client;
use retry::Decision;
use throttle::Throttle;

/// The outcome of sending one patch.
#[derive(Clone, Debug, PartialEq)]
pub enum Delivery {
    Confirmed,
    Rejected(Vec<Problem>),
    /// Not confirmed; kept and tried again on the next run.
    Failed(Problem),
}

/// Live counters, read by the progress line and the summary.
#[derive(Debug, Default)]
pub struct SendStats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub throttled: AtomicU64,
    pub in_flight: AtomicU64,
}

/// Why the send stage stopped the run early. `fatal` runs exit 2 (the run could not
/// proceed: the token or the URL is wrong); others exit 1 with the unsent records kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stop {
    pub reason: String,
    pub fatal: bool,
}

/// A `Retry-After` longer than this stops sending for the run instead of holding it open:
/// the records are kept and the next run tries again. The contract forbids starting a
/// request before the time has passed, not giving up earlier.
const MAX_PAUSE: Duration = Duration::from_secs(15 * 60);

pub struct Sender {
    client: Client,
    throttle: Throttle,
    retry: Retry,
    max_in_flight: usize,
    /// Cancelled on 401 (and by a caller that wants to stop): no new request starts.
    pub cancel: CancellationToken,
    /// Cancelled when a signalled run's deadline for requests in flight has passed: their
    /// answers are no longer awaited and the records are kept for the next run.
    abandon: CancellationToken,
    interrupted: AtomicBool,
    /// An undocumented 4xx was warned about in this run.
    unexpected_seen: AtomicBool,
    pub stats: Arc<SendStats>,
    stop: Mutex<Option<Stop>>,
}

impl Sender {
    pub fn new(client: Client, throttle: Throttle, retry: Retry, max_in_flight: usize) -> Sender {
        Sender {
            client,
            throttle,
            retry,
            max_in_flight,
            cancel: CancellationToken::new(),
            abandon: CancellationToken::new(),
            interrupted: AtomicBool::new(false),
            unexpected_seen: AtomicBool::new(false),
            stats: Arc::default(),
            stop: Mutex::new(None),
        }
    }

    /// Stops the run: no new request starts. The first reason wins.
    pub fn stop(&self, reason: String, fatal: bool) {
        self.halt(reason, fatal, false);
    }

    /// Logged at error, unless `asked` (a signal, the operator's own request), which is
    /// logged at warn: a routine `systemctl stop` is no error, and `journalctl -p err` should
    /// show only the stops that need a look.
    fn halt(&self, reason: String, fatal: bool, asked: bool) {
        let mut stop = self.stop.lock().unwrap_or_else(|e| e.into_inner());
        if stop.is_none() {
            if asked {
                tracing::warn!(reason, "Stopping the run.");
            } else {
                tracing::error!(reason, "Stopping the run.");
            }
            *stop = Some(Stop { reason, fatal });
        }
        self.cancel.cancel();
    }

    /// SIGTERM/SIGINT: no new request starts; those in flight get `grace` to answer, then
    /// are abandoned (kept for the next run: the API may or may not have applied them, and
    /// sending the same values again is harmless).
    pub fn interrupt(&self, grace: Duration) {
        self.interrupted.store(true, Ordering::Relaxed);
        self.halt(
            "interrupted by a signal; records not confirmed are kept for the next run".into(),
            false,
            true,
        );
        let abandon = self.abandon.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            abandon.cancel();
        });
    }

    /// The adaptive rate at the end and the lowest it went (requests/s).
    pub fn rates(&self) -> (f64, f64) {
        self.throttle.rates()
    }

    pub fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }

    pub fn stopped(&self) -> Option<Stop> {
        self.stop.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Delivers every job from `jobs` and hands `(job, delivery)` to `done`, in completion
    /// order. Returns when `jobs` is closed and every delivery is handed over.
    pub async fn run<J, T>(
        self: Arc<Self>,
        mut jobs: mpsc::Receiver<J>,
        done: mpsc::Sender<T>,
        wrap: fn(J, Delivery) -> T,
    ) where
        J: Outgoing + Send + 'static,
        T: Send + 'static,
    {
        let slots = Arc::new(Semaphore::new(self.max_in_flight));
        let mut tasks = JoinSet::new();
        while let Some(job) = jobs.recv().await {
            while tasks.try_join_next().is_some() {}
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let me = self.clone();
            let done = done.clone();
            tasks.spawn(async move {
                let delivery = me.deliver(job.reference(), job.patch()).await;
                drop(permit);
                // The receiver outlives the sender stage; a send error means the run is
                // being torn down and there is no one left to tell.
                let _ = done.send(wrap(job, delivery)).await;
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// One record: attempts until a final answer or the attempt budget is spent.
    pub async fn deliver(&self, reference: &str, patch: &Patch) -> Delivery {
        let body = match serde_json::to_vec(&patch.body) {
            Ok(b) => b,
            Err(e) => return Delivery::Failed(failed(None, format!("cannot encode body: {e}"))),
        };
        let mut last = (None, String::new());
        for attempt in 1..=self.retry.max_attempts {
            if attempt > 1 {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                let wait = retry::backoff(
                    attempt - 1,
                    self.retry.initial_backoff,
                    self.retry.max_backoff,
                    fastrand::f64(),
                );
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = self.cancel.cancelled() => break,
                }
            }
            tokio::select! {
                () = self.throttle.acquire() => {}
                () = self.cancel.cancelled() => break,
            }
            if self.cancel.is_cancelled() {
                break;
            }
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
            let answer = tokio::select! {
                a = self.client.patch(reference, body.clone()) => Some(a),
                () = self.abandon.cancelled() => None,
            };
            self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            let Some(answer) = answer else {
                return Delivery::Failed(failed(None, NOT_ANSWERED_INTERRUPTED.into()));
            };
            let decision = match answer {
                Ok(a) => {
                    let after = a
                        .retry_after
                        .as_deref()
                        .and_then(|v| retry::parse_retry_after(v, chrono::Utc::now()));
                    retry::classify(a.status, &a.body, after)
                }
                Err(e) => Decision::Retry {
                    status: None,
                    retry_after: None,
                    detail: network_detail(&e),
                },
            };
            match decision {
                Decision::Success => {
                    self.throttle.succeeded();
                    return Delivery::Confirmed;
                }
                Decision::Reject(problems) => {
                    // An answer, not back-pressure: the rate may creep back up.
                    self.throttle.succeeded();
                    return Delivery::Rejected(problems);
                }
                Decision::Unauthorized => {
                    let why = "the API refused the token (HTTP 401); the run stopped";
                    self.stop(format!("{why}; check [api].token_env / token_file"), true);
                    return Delivery::Failed(failed(Some(401), why.into()));
                }
                Decision::GiveUp { status, detail } => {
                    self.stop(detail.clone(), true);
                    return Delivery::Failed(failed(status, detail));
                }
                Decision::Unexpected { status, detail } => {
                    // Once a run: the report lists every record, and the likely cause (a
                    // wrong URL, a proxy) is one.
                    if !self.unexpected_seen.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            status,
                            "The API answered with a status it does not document; those records are kept for the next run. Check [api].base_url."
                        );
                    }
                    return Delivery::Failed(failed(Some(status), detail));
                }
                Decision::Retry {
                    status,
                    retry_after,
                    detail,
                } => {
                    if status == Some(429) {
                        self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                        self.throttle.throttled();
                    }
                    if retry_after.is_none() && status == Some(429) {
                        // A 429 speaks of the sender's rate, not of this record: everyone
                        // waits, this record's backoff without the jitter (which only
                        // spreads records that wait apart).
                        self.throttle.pause_for(retry::backoff_base(
                            attempt,
                            self.retry.initial_backoff,
                            self.retry.max_backoff,
                        ));
                    }
                    if let Some(wait) = retry_after {
                        if wait > MAX_PAUSE {
                            let why = format!(
                                "the API asked to wait {} s before the next request (Retry-After), more than {} s; records not sent are kept for the next run",
                                wait.as_secs(),
                                MAX_PAUSE.as_secs()
                            );
                            self.stop(why.clone(), false);
                            return Delivery::Failed(failed(status, why));
                        }
                        self.throttle.pause_for(wait);
                    }
                    last = (status, detail);
                }
            }
        }
        let (status, detail) = last;
        if self.cancel.is_cancelled() || detail.is_empty() {
            return Delivery::Failed(failed(None, NOT_SENT_STOPPED.into()));
        }
        Delivery::Failed(failed(
            status,
            format!(
                "gave up after {} attempts; last: {detail}",
                self.retry.max_attempts
            ),
        ))
    }
}

/// What the send stage needs of a job, so it stays ignorant of the pipeline's job type.
pub trait Outgoing {
    fn reference(&self) -> &str;
    fn patch(&self) -> &Patch;
}

fn failed(status: Option<u16>, message: String) -> Problem {
    Problem {
        category: Category::Failed,
        http_status: status,
        field: String::new(),
        message,
    }
}

/// A network error in one line, without the URL (it is in the report's reference column).
fn network_detail(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "network error"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut root = String::new();
    while let Some(s) = source {
        root = s.to_string();
        source = s.source();
    }
    if root.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {root}")
    }
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
