//! `check-config [EXPORT]`: everything a run would refuse, found before the night it runs.
//! Used by the service's `ExecStartPre=`, so a broken config fails `systemctl start`, not a
//! 2 a.m. run. Prints one line per finding; exit 2 when any is an error.

use std::path::{Path, PathBuf};

use accountsync::config::{Config, ConfigError, TokenSource};
use accountsync::map::{Layout, MapError, show_headers, unread_headers};
use accountsync::read::Export;
use accountsync::schedule::Schedule;

use crate::cmd::logging::plain;

#[derive(Default)]
struct Findings {
    lines: Vec<(&'static str, String)>,
}

impl Findings {
    fn ok(&mut self, s: String) {
        self.lines.push(("ok", s));
    }
    /// Worth knowing, not wrong: does not fail the check.
    fn note(&mut self, s: String) {
        self.lines.push(("note", s));
    }
    fn warn(&mut self, s: String) {
        self.lines.push(("warning", s));
    }
    fn error(&mut self, s: String) {
        self.lines.push(("error", s));
    }
    fn errors(&self) -> usize {
        self.lines.iter().filter(|(l, _)| *l == "error").count()
    }
}

/// The longest shutdown deadline the shipped units leave room for: their TimeoutStopSec=30s,
/// less 2 s for the process to exit after its report.
const UNIT_STOP_MARGIN_SECS: u64 = 28;

/// Returns whether everything checked is usable.
pub fn check(config_path: &Path, export: Option<&Path>) -> bool {
    let mut f = Findings::default();
    match Config::load_all(config_path) {
        Ok(config) => checks(&config, export, &mut f),
        Err(problems) => {
            for e in problems.iter() {
                f.error(e.to_string());
            }
        }
    }
    for (level, line) in &f.lines {
        let priority = match *level {
            "error" => 3,
            "warning" => 4,
            "note" => 5,
            _ => 6,
        };
        println!("{}", plain(priority, &format!("{level}: {line}")));
    }
    let errors = f.errors();
    if errors == 0 {
        println!("{} is usable", config_path.display());
    } else {
        println!("{}: {errors} problem(s) to fix", config_path.display());
    }
    errors == 0
}

fn checks(config: &Config, export: Option<&Path>, f: &mut Findings) {
    f.ok(format!("config {} parses", config.path.display()));
    match (config.token(), &config.api.token) {
        (Ok(_), _) => f.ok("the API token is readable".into()),
        // An operator's shell has no credentials directory: only systemd makes one, for the
        // unit's processes. `run` and `daemon` still refuse to go on without the token.
        (Err(ConfigError::NoCredentialsDirectory { .. }), TokenSource::Credential(name)) => {
            f.note(credential_note(config, name, export))
        }
        (Err(e), _) => f.error(e.to_string()),
    }
    match Schedule::parse(&config.cron, &config.timezone) {
        Ok(s) => match s.next_after(chrono::Utc::now()) {
            Some(next) => f.ok(format!(
                "[schedule] {:?} in {}: next run {}",
                config.cron,
                config.timezone,
                s.format_local(next)
            )),
            None => f.warn(format!("[schedule] {:?} never fires", config.cron)),
        },
        Err(e) => f.error(format!("[schedule] {e}")),
    }
    let deadline = config.shutdown_deadline.as_secs();
    if deadline > UNIT_STOP_MARGIN_SECS {
        f.warn(format!(
            "[shutdown].deadline_secs = {deadline} is above {UNIT_STOP_MARGIN_SECS} s: the shipped units' TimeoutStopSec=30s SIGKILLs a stopping run before it has written its report; lower it, or raise TimeoutStopSec in a drop-in for both services"
        ));
    }
    folder(f, "[input].dir", &config.input.dir, false);
    if let Some(dir) = &config.input.archive_dir {
        folder(f, "[input].archive_dir", dir, true);
    }
    folder(f, "[cache].path", &config.cache_path, true);
    folder(f, "[report].dir", &config.report_dir, true);
    if let Some(file) = &config.metrics_file {
        match file.parent() {
            Some(dir) => folder(f, "[report].metrics_file's folder", dir, false),
            None => f.error("[report].metrics_file has no folder".into()),
        }
    }
    if let Some(path) = export {
        headers(config, path, f);
    }
}

/// How to check a credential token outside the service: the same `LoadCredential=` as the
/// shipped units, in a transient unit whose output comes back to the shell.
fn credential_note(config: &Config, name: &str, export: Option<&Path>) -> String {
    let export = export
        .map(|p| format!(" {}", p.display()))
        .unwrap_or_default();
    format!(
        "the token is read from the service's credentials; not checked outside systemd: run `sudo systemd-run --pipe --wait -p LoadCredential={name}:/etc/accountsync/{name} accountsync --config {} check-config{export}` to check it",
        config.path.display()
    )
}

/// A folder a run reads or writes. `creatable`: a run creates it when missing, so only its
/// nearest existing parent must be there.
fn folder(f: &mut Findings, key: &str, dir: &Path, creatable: bool) {
    if dir.is_dir() {
        f.ok(format!("{key} {} exists", dir.display()));
        return;
    }
    let parent: Option<PathBuf> = dir
        .ancestors()
        .skip(1)
        .find(|p| p.is_dir())
        .map(Path::to_path_buf);
    match (creatable, parent) {
        (true, Some(p)) => f.ok(format!(
            "{key} {} does not exist yet; the first run creates it under {}",
            dir.display(),
            p.display()
        )),
        _ => f.warn(format!(
            "{key} {} does not exist; create it before the first run",
            dir.display()
        )),
    }
}

/// The export's header against `[columns]`: missing mapped headers stop a run; unmapped
/// ones are listed so a new or renamed CRM column is noticed.
fn headers(config: &Config, path: &Path, f: &mut Findings) {
    let export = match Export::open(path, config.input.delimiter) {
        Ok(e) => e,
        Err(e) => return f.error(e.to_string()),
    };
    match Layout::resolve(&config.columns, export.header()) {
        Ok(layout) => {
            f.ok(format!(
                "{}: every mapped column is in the header",
                path.display()
            ));
            let unmapped = layout.unmapped(export.header());
            if !unmapped.is_empty() {
                let list: Vec<String> = unmapped.iter().map(|h| format!("{h:?}")).collect();
                f.warn(format!(
                    "{}: columns no [columns] key reads (ignored): {}",
                    path.display(),
                    list.join(", ")
                ));
            }
        }
        Err(e) => {
            f.error(format!("{}: {e}", path.display()));
            // The headers nothing reads are where a missing one's misspelling is.
            let unread = unread_headers(&config.columns, export.header());
            if matches!(e, MapError::MissingColumns { .. }) && !unread.is_empty() {
                f.note(format!(
                    "{}: columns no [columns] key reads (is a missing one spelled differently here?): {}",
                    path.display(),
                    show_headers(&unread)
                ));
            }
        }
    }
}
