//! Progress of a run. On a terminal: a read bar per file (bytes, rows/s, ETA) and a send
//! line (sent, in flight, rate, 429s, rejected so far), with log lines printed above them
//! rather than through them. Without a terminal (systemd, cron, a pipe): one log line every
//! 10 s, so a journal shows a long run moving without escape codes or a flood.

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::record::Live;
use crate::send::SendStats;

#[derive(Clone)]
pub struct Progress {
    /// `None` without a terminal: the periodic log line stands in.
    bars: Option<(MultiProgress, ProgressBar, ProgressBar)>,
    enabled: bool,
    pub live: Arc<Live>,
    file: Arc<Mutex<FileState>>,
}

#[derive(Default)]
struct FileState {
    label: String,
    size: u64,
    offset: u64,
}

/// The bars currently drawn, for log lines to print above: see [`LogWriter`].
static DRAWN: Mutex<Option<MultiProgress>> = Mutex::new(None);

impl Progress {
    pub fn new(enabled: bool) -> Progress {
        let bars = (enabled && std::io::stderr().is_terminal()).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let read = multi.add(ProgressBar::new(0));
            read.set_style(style(
                "{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
            ));
            let send = multi.add(ProgressBar::new_spinner());
            send.set_style(style("{spinner} {msg}"));
            *DRAWN.lock().unwrap_or_else(|e| e.into_inner()) = Some(multi.clone());
            (multi, read, send)
        });
        Progress {
            bars,
            enabled,
            live: Arc::default(),
            file: Arc::default(),
        }
    }

    /// `n` of `of`, for the label; `pass` 1 finds duplicates, 2 decides and sends.
    pub fn start_file(&self, name: &str, n: usize, of: usize, pass: u8, size: u64) {
        let label = format!("{name} ({n}/{of}, pass {pass}/2)");
        if let Some((_, read, _)) = &self.bars {
            read.set_prefix(label.clone());
            read.set_length(size);
            read.set_position(0);
            read.reset_eta();
        }
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        *f = FileState {
            label,
            size,
            offset: 0,
        };
    }

    pub fn set_offset(&self, offset: u64) {
        if let Some((_, read, _)) = &self.bars {
            read.set_position(offset);
        }
        self.file.lock().unwrap_or_else(|e| e.into_inner()).offset = offset;
    }

    /// Refreshes the counters (4 times a second on a terminal, a log line every 10 s
    /// otherwise) until the returned handle is aborted.
    pub fn watch(&self, stats: Arc<SendStats>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            if !me.enabled {
                return;
            }
            let every = match me.bars {
                Some(_) => Duration::from_millis(250),
                None => log_interval(),
            };
            let started = Instant::now();
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                me.show(&stats, started.elapsed());
            }
        })
    }

    fn show(&self, stats: &SendStats, elapsed: Duration) {
        let sent = stats.requests.load(Ordering::Relaxed);
        let rows = self.live.rows.load(Ordering::Relaxed);
        let secs = elapsed.as_secs_f64().max(0.001);
        let send_line = format!(
            "sent {sent} · in flight {} · {:.1} req/s · 429s {} · rejected {}",
            stats.in_flight.load(Ordering::Relaxed),
            sent as f64 / secs,
            stats.throttled.load(Ordering::Relaxed),
            self.live.rejected.load(Ordering::Relaxed),
        );
        match &self.bars {
            Some((_, read, send)) => {
                read.set_message(format!("{rows} rows ({:.0}/s)", rows as f64 / secs));
                send.set_message(send_line);
                send.tick();
            }
            None => {
                let f = self.file.lock().unwrap_or_else(|e| e.into_inner());
                let percent = if f.size > 0 {
                    f.offset as f64 * 100.0 / f.size as f64
                } else {
                    100.0
                };
                tracing::info!(
                    "Progress: {} {percent:.0}% · {rows} rows recorded · {send_line}",
                    f.label
                );
            }
        }
    }

    pub fn finish(&self) {
        if let Some((multi, read, send)) = &self.bars {
            read.finish_and_clear();
            send.finish_and_clear();
            let _ = multi.clear();
            *DRAWN.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

/// 10 s, or `ACCOUNTSYNC_PROGRESS_SECS` (a busy journal may want less, a test more often).
fn log_interval() -> Duration {
    std::env::var("ACCOUNTSYNC_PROGRESS_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.1)
        .map_or(Duration::from_secs(10), Duration::from_secs_f64)
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// stderr for log lines that prints above the bars instead of through them. One event is
/// buffered whole and written in one go when the writer is dropped.
#[derive(Default)]
pub struct LogWriter(Vec<u8>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let line = std::mem::take(&mut self.0);
        let drawn = DRAWN.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // A log line that cannot be written has nowhere else to go.
        let write = || {
            let _ = std::io::stderr().lock().write_all(&line);
        };
        match drawn {
            Some(multi) => multi.suspend(write),
            None => write(),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        LogWriter::default()
    }
}
