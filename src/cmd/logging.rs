//! Where log lines go and how they look. A person at a terminal gets coloured, human lines;
//! systemd's journal (or any pipe) gets plain lines, one event each, and under the journal a
//! `<N>` priority prefix (sd-daemon(3)) so `journalctl -p warning` shows what matters; log
//! shippers ask for JSON. The level comes from `ACCOUNTSYNC_LOG` (default `info`), and at
//! info nothing names an e-mail, a phone number or the token: events carry counts and
//! references.

use std::io::IsTerminal;

use accountsync::pipeline::LogWriter;
use clap::ValueEnum;
use tracing::Level;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human on a terminal, plain (with journal priorities under systemd) otherwise.
    Auto,
    Text,
    Json,
}

pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ACCOUNTSYNC_LOG")
        // tokio-cron-scheduler logs each job it creates at info (once per tick, noise) and,
        // racing its own shutdown, "Error receiving value Closed" at error on a clean stop.
        // Every scheduler call the daemon makes returns its own error, which it logs.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_cron_scheduler=off"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogWriter::default())
        .with_target(false);
    let terminal = std::io::stderr().is_terminal();
    match format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Auto if journal() => builder
            .with_ansi(false)
            .without_time() // the journal stamps every line itself
            .event_format(OneLine {
                inner: tracing_subscriber::fmt::format()
                    .without_time()
                    .with_target(false),
                priority: true,
            })
            .init(),
        LogFormat::Auto | LogFormat::Text if terminal => builder.with_ansi(true).init(),
        LogFormat::Auto | LogFormat::Text => builder
            .with_ansi(false)
            .event_format(OneLine {
                inner: tracing_subscriber::fmt::format()
                    .with_ansi(false)
                    .with_target(false),
                priority: false,
            })
            .init(),
    }
}

/// stderr is systemd's journal: systemd sets `JOURNAL_STREAM` for a unit's streams.
pub fn journal() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some() && !std::io::stderr().is_terminal()
}

/// A message printed outside tracing (the fatal error, check-config's findings), shaped as
/// the log lines are: in the journal on one line behind its priority (3 error, 4 warning,
/// 6 info), so `journalctl -p warning` shows why a start failed; elsewhere as it is.
pub fn plain(priority: u8, text: &str) -> String {
    if journal() {
        format!("<{priority}>{}", one_line(text))
    } else {
        text.to_owned()
    }
}

/// The journal and line-based shippers take each line for an entry: a multi-line message
/// (a TOML error's excerpt) keeps its lines, joined by ` ⏎ `.
fn one_line(text: &str) -> String {
    text.trim_end_matches('\n').replace('\n', " \u{23ce} ")
}

/// One event, one line; under the journal prefixed with its syslog priority, which the
/// journal turns into the entry's level: error 3, warning 4, info 6, debug 7.
struct OneLine<F> {
    inner: F,
    priority: bool,
}

impl<S, N, F> FormatEvent<S, N> for OneLine<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if self.priority {
            let priority = match *event.metadata().level() {
                Level::ERROR => 3,
                Level::WARN => 4,
                Level::INFO => 6,
                Level::DEBUG | Level::TRACE => 7,
            };
            write!(writer, "<{priority}>")?;
        }
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        writeln!(writer, "{}", one_line(&line))
    }
}
