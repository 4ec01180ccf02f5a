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
        // tokio-cron-scheduler logs each job it creates at info: once per tick, noise.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_cron_scheduler=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogWriter::default())
        .with_target(false);
    let terminal = std::io::stderr().is_terminal();
    // systemd sets JOURNAL_STREAM when stderr is connected to the journal.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some() && !terminal;
    match format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Auto if journal => builder
            .with_ansi(false)
            .without_time() // the journal stamps every line itself
            .event_format(Priority(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_target(false),
            ))
            .init(),
        LogFormat::Auto | LogFormat::Text => builder.with_ansi(terminal).init(),
    }
}

/// Prefixes each line with its syslog priority, which the journal turns into the entry's
/// level: error 3, warning 4, info 6, debug 7.
struct Priority<F>(F);

impl<S, N, F> FormatEvent<S, N> for Priority<F>
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
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}
