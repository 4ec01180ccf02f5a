//! What the daemon tells systemd, behind a small trait so tests record it instead.
//!
//! The daemon sends `READY=1` once the first tick is scheduled, `STATUS=` lines as it goes
//! idle or starts syncing, `STOPPING=1` on shutdown and, when the unit sets `WatchdogSec=`,
//! `WATCHDOG=1` at half that interval. The host shares the same notifier (it is an `Arc`) to
//! report finer progress such as `syncing export.csv 2/3`.

use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;

/// One message to the service manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice<'a> {
    Ready,
    Status(&'a str),
    Stopping,
    Watchdog,
}

/// The `sd_notify(3)` form: `READY=1`, `STATUS=…`, `STOPPING=1`, `WATCHDOG=1`.
impl fmt::Display for Notice<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Ready => f.write_str("READY=1"),
            Notice::Status(text) => write!(f, "STATUS={text}"),
            Notice::Stopping => f.write_str("STOPPING=1"),
            Notice::Watchdog => f.write_str("WATCHDOG=1"),
        }
    }
}

pub trait Notifier: Send + Sync + 'static {
    /// Best effort: a service manager that cannot be told is no reason to stop syncing.
    fn notify(&self, notice: Notice<'_>);

    /// How often the service manager expects `WATCHDOG=1`, when it watches this process.
    fn watchdog_interval(&self) -> Option<Duration> {
        None
    }

    /// A free-form `STATUS=` line (`systemctl status` shows the latest).
    fn status(&self, text: &str) {
        self.notify(Notice::Status(text));
    }
}

/// The real one, over the `sd-notify` crate: a datagram to `$NOTIFY_SOCKET`, and nothing at
/// all when that variable is unset (not started by systemd, or `Type=` is not `notify`).
#[derive(Debug, Default)]
pub struct SdNotifier {
    pub(super) warned: AtomicBool,
}

impl SdNotifier {
    pub fn new() -> SdNotifier {
        SdNotifier::default()
    }
}

impl Notifier for SdNotifier {
    fn notify(&self, notice: Notice<'_>) {
        let state = match notice {
            Notice::Ready => NotifyState::Ready,
            Notice::Status(text) => NotifyState::Status(text),
            Notice::Stopping => NotifyState::Stopping,
            Notice::Watchdog => NotifyState::Watchdog,
        };
        if let Err(error) = sd_notify::notify(&[state]) {
            // Once per process: a broken socket would otherwise repeat this at every status.
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(%error, "Cannot notify systemd (NOTIFY_SOCKET); carrying on without it.");
            }
        }
    }

    /// `$WATCHDOG_USEC`, when `$WATCHDOG_PID` is unset or names this process.
    fn watchdog_interval(&self) -> Option<Duration> {
        sd_notify::watchdog_enabled()
    }
}

/// Keeps every notice as its `sd_notify` line, for tests (the library's and the integrator's).
#[derive(Debug, Default)]
pub struct RecordingNotifier {
    lines: Mutex<Vec<String>>,
    watchdog: Option<Duration>,
}

impl RecordingNotifier {
    pub fn new() -> RecordingNotifier {
        RecordingNotifier::default()
    }

    /// One that claims the service manager wants `WATCHDOG=1` within `interval`.
    pub fn with_watchdog(interval: Duration) -> RecordingNotifier {
        RecordingNotifier {
            watchdog: Some(interval),
            ..RecordingNotifier::default()
        }
    }

    /// Every line so far, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Notifier for RecordingNotifier {
    fn notify(&self, notice: Notice<'_>) {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.push(notice.to_string());
    }

    fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }
}

/// Pings `WATCHDOG=1` at half the interval the service manager asked for, from its own task,
/// until dropped. Nothing when no watchdog is configured.
pub(super) struct Watchdog(Option<JoinHandle<()>>);

impl Watchdog {
    pub(super) fn start(notifier: Arc<dyn Notifier>) -> Watchdog {
        let Some(interval) = notifier.watchdog_interval() else {
            return Watchdog(None);
        };
        let period = (interval / 2).max(Duration::from_millis(1));
        Watchdog(Some(tokio::spawn(async move {
            let mut timer = tokio::time::interval(period);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                timer.tick().await;
                notifier.notify(Notice::Watchdog);
            }
        })))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}
