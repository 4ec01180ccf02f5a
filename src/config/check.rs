//! Raw config -> checked [`Config`]: every value validated once, with the key and the file
//! in the message, relative paths resolved against the config's folder.

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
    pub(super) path: &'a Path,
    pub(super) base: &'a Path,
}

impl Checker<'_> {
    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: None,
            key: key.to_owned(),
            message: message.into(),
        }
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

    pub(super) fn check(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        Ok(Config {
            path: self.path.to_path_buf(),
            api: self.api(raw.api)?,
            rate: self.rate(raw.rate)?,
            retry: self.retry(raw.retry)?,
            input: self.input(raw.input)?,
            columns: self.columns(raw.columns)?,
            limits: self.limits(raw.validation)?,
            cache_memory_mb: match raw.cache.memory_mb {
                m @ 8..=65536 => m,
                _ => return Err(self.invalid("cache.memory_mb", "must be between 8 and 65536")),
            },
            cache_path: self.resolve(raw.cache.path),
            cache_backup: raw.cache.backup_file.map(|f| self.resolve(f)),
            report_dir: self.resolve(raw.report.dir),
            metrics_file: raw.report.metrics_file.map(|f| self.resolve(f)),
            cron: self.schedule(&raw.schedule.cron, &raw.schedule.timezone)?,
            timezone: raw.schedule.timezone,
            shutdown_deadline: match raw.shutdown.deadline_secs {
                s @ 1..=3600 => Duration::from_secs(s),
                _ => {
                    return Err(
                        self.invalid("shutdown.deadline_secs", "must be between 1 and 3600")
                    );
                }
            },
        })
    }

    /// Checked for `run` too, though only the daemon fires it: a config the daemon would
    /// refuse is a bad config whichever command reads it (CONTRACT §1, exit 2).
    fn schedule(&self, cron: &str, timezone: &str) -> Result<String, ConfigError> {
        use crate::schedule::{Schedule, ScheduleError};
        match Schedule::parse(cron, timezone) {
            Ok(_) => Ok(cron.to_owned()),
            Err(e @ ScheduleError::UnknownTimezone { .. }) => {
                Err(self.invalid("schedule.timezone", e.to_string()))
            }
            Err(e) => Err(self.invalid("schedule.cron", e.to_string())),
        }
    }

    fn api(&self, raw: RawApi) -> Result<Api, ConfigError> {
        let base_url = raw.base_url.trim().trim_end_matches('/').to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(self.invalid(
                "api.base_url",
                format!("must start with https:// (or http:// for a local test server), got {base_url:?}"),
            ));
        }
        let url = reqwest::Url::parse(&base_url)
            .map_err(|e| self.invalid("api.base_url", format!("{base_url:?} is not a URL: {e}")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(self.invalid(
                "api.base_url",
                "holds a user name or password (`user@host`); give the host alone, the token goes in token_env or token_file",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(self.invalid(
                "api.base_url",
                format!("{base_url:?} has a `?` or `#` part; requests go to {{base_url}}/accounts/{{ref}}, so give the path only"),
            ));
        }
        if url.scheme() == "http" && !is_loopback(&url) && !raw.allow_insecure_http {
            return Err(self.invalid(
                "api.base_url",
                format!("{base_url:?} is plain http to another machine: the token would travel unencrypted; use https://, or set [api].allow_insecure_http = true if you must"),
            ));
        }
        let token = match (raw.token_env, raw.token_file) {
            (Some(_), Some(_)) => {
                return Err(self.invalid("api", "token_env and token_file are both set; keep one"));
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
                return Err(self.invalid("api.token_env", "is empty; name an environment variable"));
            }
            // A token pasted where the variable's name belongs would otherwise come back
            // in "the environment variable … is not set", in the journal.
            (Some(var), None) if !is_variable_name(var.trim()) => {
                return Err(self.invalid(
                    "api.token_env",
                    "does not look like a variable name; it is not shown in case it is the token itself. Name the environment variable that holds the token (letters, digits and _, not starting with a digit), e.g. ACCOUNTSYNC_TOKEN",
                ));
            }
            (Some(var), None) => TokenSource::Env(var.trim().to_owned()),
            (None, None) => TokenSource::Env("ACCOUNTSYNC_TOKEN".into()),
        };
        if raw.timeout_secs == 0 {
            return Err(self.invalid("api.timeout_secs", "must be at least 1"));
        }
        Ok(Api {
            base_url,
            token,
            timeout: Duration::from_secs(raw.timeout_secs),
        })
    }

    fn rate(&self, raw: RawRate) -> Result<Rate, ConfigError> {
        if !(0.001..=1_000_000.0).contains(&raw.requests_per_second) {
            return Err(self.invalid(
                "rate.requests_per_second",
                "must be between 0.001 and 1000000",
            ));
        }
        let burst = NonZeroU32::new(raw.burst)
            .filter(|b| b.get() <= 100_000)
            .ok_or_else(|| self.invalid("rate.burst", "must be between 1 and 100000"))?;
        if !(1..=1024).contains(&raw.max_in_flight) {
            return Err(self.invalid("rate.max_in_flight", "must be between 1 and 1024"));
        }
        Ok(Rate {
            requests_per_second: raw.requests_per_second,
            burst,
            max_in_flight: raw.max_in_flight,
        })
    }

    fn retry(&self, raw: RawRetry) -> Result<Retry, ConfigError> {
        if raw.max_attempts == 0 {
            return Err(self.invalid("retry.max_attempts", "must be at least 1 (1 = no retry)"));
        }
        if raw.max_backoff_ms < raw.initial_backoff_ms {
            return Err(self.invalid(
                "retry.max_backoff_ms",
                "must not be below retry.initial_backoff_ms",
            ));
        }
        Ok(Retry {
            max_attempts: raw.max_attempts,
            initial_backoff: Duration::from_millis(raw.initial_backoff_ms),
            max_backoff: Duration::from_millis(raw.max_backoff_ms),
        })
    }

    fn input(&self, raw: RawInput) -> Result<Input, ConfigError> {
        let delimiter = match raw.delimiter.as_bytes() {
            [b] if b.is_ascii() => *b,
            _ => {
                return Err(self.invalid(
                    "input.delimiter",
                    format!("must be one ASCII character, got {:?}", raw.delimiter),
                ));
            }
        };
        if raw.date_formats.is_empty() {
            return Err(self.invalid("input.date_formats", "must list at least one format"));
        }
        for f in &raw.date_formats {
            let broken = chrono::format::StrftimeItems::new(f)
                .any(|item| matches!(item, chrono::format::Item::Error));
            if broken {
                return Err(self.invalid(
                    "input.date_formats",
                    format!("{f:?} is not a valid strftime format"),
                ));
            }
        }
        if raw.pattern.is_empty() {
            return Err(self.invalid("input.pattern", "must not be empty"));
        }
        Ok(Input {
            dir: self.resolve(raw.dir),
            pattern: raw.pattern,
            archive_dir: raw.archive_dir.map(|p| self.resolve(p)),
            delimiter,
            date_formats: raw.date_formats,
        })
    }

    fn columns(&self, raw: RawColumns) -> Result<Columns, ConfigError> {
        let accountreference = match raw.accountreference {
            Some(h) if !h.trim().is_empty() => h.trim().to_owned(),
            _ => {
                return Err(self.invalid(
                    "columns.accountreference",
                    "must name the CSV header that holds the account reference",
                ));
            }
        };
        let mut fields = BTreeMap::new();
        for (key, value) in raw.fields {
            if !API_FIELDS.contains(&key.as_str()) {
                return Err(self.invalid(
                    &format!("columns.{key}"),
                    format!(
                        "unknown API field; expected one of: {}",
                        API_FIELDS.join(" ")
                    ),
                ));
            }
            let toml::Value::String(header) = value else {
                return Err(self.invalid(
                    &format!("columns.{key}"),
                    "must be a CSV header name (a string)",
                ));
            };
            fields.insert(key, header.trim().to_owned());
        }
        for (kind, map) in &raw.addresses {
            for key in map.keys() {
                if !ADDRESS_FIELDS.contains(&key.as_str()) {
                    return Err(self.invalid(
                        &format!("columns.addresses.{kind}.{key}"),
                        format!(
                            "unknown address field; expected one of: {}",
                            ADDRESS_FIELDS.join(" ")
                        ),
                    ));
                }
            }
        }
        let trim_all = |m: BTreeMap<String, String>| -> BTreeMap<String, String> {
            m.into_iter()
                .map(|(k, v)| (k, v.trim().to_owned()))
                .collect()
        };
        Ok(Columns {
            accountreference,
            fields,
            addresses: raw
                .addresses
                .into_iter()
                .map(|(k, m)| (k, trim_all(m)))
                .collect(),
            customparameters: trim_all(raw.customparameters),
        })
    }

    fn limits(&self, raw: RawValidation) -> Result<Limits, ConfigError> {
        let lower = |v: Vec<String>| v.into_iter().map(|s| s.trim().to_lowercase()).collect();
        if raw.statuses.is_empty() {
            return Err(self.invalid("validation.statuses", "must list at least one status"));
        }
        Ok(Limits {
            statuses: lower(raw.statuses),
            genders: lower(raw.genders),
            max_length: raw.max_length,
        })
    }
}
