//! Raw config -> checked [`Config`]: every value validated once, with the key and the file
//! in the message, relative paths resolved against the config's folder. A problem does not
//! stop the check: each independent value is checked, so one `check-config` lists every
//! problem instead of one per edit-and-retry.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::*;
use super::*;

/// The host reqwest will connect to names this machine: the token does not leave it.
/// Judged on the URL as reqwest's own parser (WHATWG) reads it, not on the text: that
/// parser takes `\\` for `/`, so `http://10.0.0.5\\@127.0.0.1/` goes to 10.0.0.5.
fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A portable environment variable name, `[A-Za-z_][A-Za-z0-9_]*` (POSIX's, which
/// systemd's `Environment=` also requires).
fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The line of a dotted key (`schedule.cron`) in the config text, or of the deepest table
/// of it that is written, so a semantic error points where a TOML syntax error would.
pub(super) fn key_line(text: &str, key: &str) -> Option<usize> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut at = None;
    for part in key.split('.') {
        let Some((k, v)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == part) else {
            break;
        };
        at = Some(k.span().start);
        match v.get_ref() {
            toml::de::DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    Some(1 + text.get(..at?)?.matches('\n').count())
}

pub(super) struct Checker<'a> {
    path: &'a Path,
    base: &'a Path,
    /// The file's text, for the line of each problem's key.
    text: &'a str,
    /// Problems found so far, in the order checked.
    problems: RefCell<Vec<ConfigError>>,
}

impl<'a> Checker<'a> {
    pub(super) fn new(path: &'a Path, text: &'a str) -> Self {
        Checker {
            path,
            base: path.parent().unwrap_or(Path::new(".")),
            text,
            problems: RefCell::new(Vec::new()),
        }
    }

    /// Notes a problem and lets the check go on. The value checked is then kept as it
    /// was written (or a stand-in): a config with problems is never handed out.
    fn problem(&self, key: &str, message: impl Into<String>) {
        self.problems.borrow_mut().push(ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: key_line(self.text, key),
            key: key.to_owned(),
            message: message.into(),
        });
    }

    /// Joins a relative path to the config's directory and folds `..` lexically, so logs
    /// and reports show `/srv/x/reports`, not `/srv/x/config/../reports`.
    fn resolve(&self, p: PathBuf) -> PathBuf {
        use std::path::Component;
        let joined = if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        };
        let mut out = PathBuf::new();
        for c in joined.components() {
            match c {
                Component::CurDir => {}
                Component::ParentDir
                    if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
                {
                    out.pop();
                }
                other => out.push(other),
            }
        }
        out
    }

    /// The checked config, or every problem found.
    pub(super) fn check(self, raw: RawConfig) -> Result<Config, ConfigErrors> {
        let memory_mb = raw.cache.memory_mb;
        if !(8..=65536).contains(&memory_mb) {
            self.problem("cache.memory_mb", "must be between 8 and 65536");
        }
        let deadline = raw.shutdown.deadline_secs;
        if !(1..=3600).contains(&deadline) {
            self.problem("shutdown.deadline_secs", "must be between 1 and 3600");
        }
        let cache_path = self.resolve(raw.cache.path);
        let cache_backup = raw.cache.backup_file.map(|f| self.resolve(f));
        if cache_backup
            .as_ref()
            .is_some_and(|b| b.starts_with(&cache_path))
        {
            // A damaged cache is moved aside whole, and its backup with it.
            self.problem(
                "cache.backup_file",
                "is inside [cache].path; put it beside the cache (a damaged cache is moved aside with everything in it, the backup too)",
            );
        }
        let config = Config {
            path: self.path.to_path_buf(),
            api: self.api(raw.api),
            rate: self.rate(raw.rate),
            retry: self.retry(raw.retry),
            input: self.input(raw.input),
            columns: self.columns(raw.columns),
            limits: self.limits(raw.validation),
            cache_memory_mb: memory_mb,
            cache_path,
            cache_backup,
            report_dir: self.resolve(raw.report.dir),
            metrics_file: raw.report.metrics_file.map(|f| self.resolve(f)),
            cron: self.schedule(raw.schedule.cron, &raw.schedule.timezone),
            timezone: raw.schedule.timezone,
            shutdown_deadline: Duration::from_secs(deadline),
        };
        match ConfigErrors::new(self.problems.into_inner()) {
            None => Ok(config),
            Some(problems) => Err(problems),
        }
    }

    /// Checked for `run` too, though only the daemon fires it: a config the daemon would
    /// refuse is a bad config whichever command reads it (CONTRACT §1, exit 2).
    fn schedule(&self, cron: String, timezone: &str) -> String {
        use crate::schedule::{Schedule, ScheduleError};
        match Schedule::parse(&cron, timezone) {
            Ok(_) => {}
            Err(e @ ScheduleError::UnknownTimezone { .. }) => {
                self.problem("schedule.timezone", e.to_string());
            }
            Err(e) => self.problem("schedule.cron", e.to_string()),
        }
        cron
    }

    fn api(&self, raw: RawApi) -> Api {
        if raw.timeout_secs == 0 {
            self.problem("api.timeout_secs", "must be at least 1");
        }
        Api {
            base_url: self.base_url(&raw.base_url, raw.allow_insecure_http),
            token: self.token(raw.token_env, raw.token_file),
            timeout: Duration::from_secs(raw.timeout_secs),
        }
    }

    /// Each check here assumes the ones before it passed, so only the first problem counts.
    fn base_url(&self, raw: &str, allow_insecure_http: bool) -> String {
        let base_url = raw.trim().trim_end_matches('/').to_owned();
        if let Err(message) = base_url_problem(&base_url, allow_insecure_http) {
            self.problem("api.base_url", message);
        }
        base_url
    }

    fn token(&self, token_env: Option<String>, token_file: Option<PathBuf>) -> TokenSource {
        let fallback = || TokenSource::Env("ACCOUNTSYNC_TOKEN".into());
        match (token_env, token_file) {
            (Some(_), Some(_)) => {
                self.problem("api", "token_env and token_file are both set; keep one");
                fallback()
            }
            (_, Some(file)) => match file
                .to_str()
                .and_then(|f| f.strip_prefix(CREDENTIALS_PREFIX))
            {
                Some(name) if !name.is_empty() && !name.contains('/') => {
                    TokenSource::Credential(name.to_owned())
                }
                _ => TokenSource::File(self.resolve(file)),
            },
            (Some(var), None) if var.trim().is_empty() => {
                self.problem("api.token_env", "is empty; name an environment variable");
                fallback()
            }
            // A token pasted where the variable's name belongs would otherwise come back
            // in "the environment variable … is not set", in the journal.
            (Some(var), None) if !is_variable_name(var.trim()) => {
                self.problem(
                    "api.token_env",
                    "does not look like a variable name; it is not shown in case it is the token itself. Name the environment variable that holds the token (letters, digits and _, not starting with a digit), e.g. ACCOUNTSYNC_TOKEN",
                );
                fallback()
            }
            (Some(var), None) => TokenSource::Env(var.trim().to_owned()),
            (None, None) => fallback(),
        }
    }

    fn rate(&self, raw: RawRate) -> Rate {
        if !(0.001..=1_000_000.0).contains(&raw.requests_per_second) {
            self.problem(
                "rate.requests_per_second",
                "must be between 0.001 and 1000000",
            );
        }
        let burst = NonZeroU32::new(raw.burst).filter(|b| b.get() <= 100_000);
        if burst.is_none() {
            self.problem("rate.burst", "must be between 1 and 100000");
        }
        if !(1..=1024).contains(&raw.max_in_flight) {
            self.problem("rate.max_in_flight", "must be between 1 and 1024");
        }
        Rate {
            requests_per_second: raw.requests_per_second,
            burst: burst.unwrap_or(NonZeroU32::MIN),
            max_in_flight: raw.max_in_flight,
        }
    }

    fn retry(&self, raw: RawRetry) -> Retry {
        if raw.max_attempts == 0 {
            self.problem("retry.max_attempts", "must be at least 1 (1 = no retry)");
        }
        if raw.max_backoff_ms < raw.initial_backoff_ms {
            self.problem(
                "retry.max_backoff_ms",
                "must not be below retry.initial_backoff_ms",
            );
        }
        Retry {
            max_attempts: raw.max_attempts,
            initial_backoff: Duration::from_millis(raw.initial_backoff_ms),
            max_backoff: Duration::from_millis(raw.max_backoff_ms),
        }
    }

    fn input(&self, raw: RawInput) -> Input {
        let delimiter = match raw.delimiter.as_bytes() {
            [b] if b.is_ascii() => *b,
            _ => {
                self.problem(
                    "input.delimiter",
                    format!("must be one ASCII character, got {:?}", raw.delimiter),
                );
                b','
            }
        };
        if raw.date_formats.is_empty() {
            self.problem("input.date_formats", "must list at least one format");
        }
        for f in &raw.date_formats {
            let broken = chrono::format::StrftimeItems::new(f)
                .any(|item| matches!(item, chrono::format::Item::Error));
            if broken {
                self.problem(
                    "input.date_formats",
                    format!("{f:?} is not a valid strftime format"),
                );
            }
        }
        if raw.pattern.is_empty() {
            self.problem("input.pattern", "must not be empty");
        }
        Input {
            dir: self.resolve(raw.dir),
            pattern: raw.pattern,
            archive_dir: raw.archive_dir.map(|p| self.resolve(p)),
            delimiter,
            date_formats: raw.date_formats,
        }
    }

    fn columns(&self, raw: RawColumns) -> Columns {
        let accountreference = match raw.accountreference {
            Some(h) if !h.trim().is_empty() => h.trim().to_owned(),
            _ => {
                self.problem(
                    "columns.accountreference",
                    "must name the CSV header that holds the account reference",
                );
                String::new()
            }
        };
        let mut fields = BTreeMap::new();
        for (key, value) in raw.fields {
            if !API_FIELDS.contains(&key.as_str()) {
                self.problem(
                    &format!("columns.{key}"),
                    format!(
                        "unknown API field; expected one of: {}",
                        API_FIELDS.join(" ")
                    ),
                );
                continue;
            }
            let toml::Value::String(header) = value else {
                self.problem(
                    &format!("columns.{key}"),
                    "must be a CSV header name (a string)",
                );
                continue;
            };
            fields.insert(key, header.trim().to_owned());
        }
        for (kind, map) in &raw.addresses {
            for key in map.keys() {
                if !ADDRESS_FIELDS.contains(&key.as_str()) {
                    self.problem(
                        &format!("columns.addresses.{kind}.{key}"),
                        format!(
                            "unknown address field; expected one of: {}",
                            ADDRESS_FIELDS.join(" ")
                        ),
                    );
                }
            }
        }
        let trim_all = |m: BTreeMap<String, String>| -> BTreeMap<String, String> {
            m.into_iter()
                .map(|(k, v)| (k, v.trim().to_owned()))
                .collect()
        };
        Columns {
            accountreference,
            fields,
            addresses: raw
                .addresses
                .into_iter()
                .map(|(k, m)| (k, trim_all(m)))
                .collect(),
            customparameters: trim_all(raw.customparameters),
        }
    }

    fn limits(&self, raw: RawValidation) -> Limits {
        let lower = |v: Vec<String>| v.into_iter().map(|s| s.trim().to_lowercase()).collect();
        if raw.statuses.is_empty() {
            self.problem("validation.statuses", "must list at least one status");
        }
        Limits {
            statuses: lower(raw.statuses),
            genders: lower(raw.genders),
            max_length: raw.max_length,
        }
    }
}

/// What is wrong with `base_url` (trimmed, without a trailing slash), if anything.
fn base_url_problem(base_url: &str, allow_insecure_http: bool) -> Result<(), String> {
    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
        return Err(format!(
            "must start with https:// (or http:// for a local test server), got {base_url:?}"
        ));
    }
    let url =
        reqwest::Url::parse(base_url).map_err(|e| format!("{base_url:?} is not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("holds a user name or password (`user@host`); give the host alone, the token goes in token_env or token_file".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{base_url:?} has a `?` or `#` part; requests go to {{base_url}}/accounts/{{ref}}, so give the path only"
        ));
    }
    if url.scheme() == "http" && !is_loopback(&url) && !allow_insecure_http {
        return Err(format!(
            "{base_url:?} is plain http to another machine: the token would travel unencrypted; use https://, or set [api].allow_insecure_http = true if you must"
        ));
    }
    Ok(())
}
