//! The progress bar of an interactive run. Hidden unless stderr is a terminal, so a systemd
//! journal never sees escape codes.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::send::SendStats;

#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(enabled: bool) -> Progress {
        let bar = if enabled && std::io::stderr().is_terminal() {
            ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Progress { bar }
    }

    pub fn start_file(&self, name: &str, size: u64) {
        self.bar.set_prefix(name.to_owned());
        self.bar.set_length(size);
        self.bar.set_position(0);
    }

    pub fn set_offset(&self, offset: u64) {
        self.bar.set_position(offset);
    }

    /// Refreshes the send counters until the returned handle is dropped/aborted.
    pub fn watch(&self, stats: Arc<SendStats>) -> tokio::task::JoinHandle<()> {
        let bar = self.bar.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                bar.set_message(format!(
                    "sent {} · in flight {} · 429s {}",
                    stats.requests.load(Ordering::Relaxed),
                    stats.in_flight.load(Ordering::Relaxed),
                    stats.throttled.load(Ordering::Relaxed),
                ));
            }
        })
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
