//! The config file, in two steps as ripgrep does: raw TOML types that only mirror the file,
//! then one checked [`Config`] that the rest of the program trusts. Every problem names the
//! key and the file, because the operator reading it is usually looking at a systemd log.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::model::{ADDRESS_FIELDS, API_FIELDS};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("config file {path}: [{key}] {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error(
        "no API token: the environment variable {var} is not set or empty (config [api].token_env in {path}); export it, or set [api].token_file"
    )]
    TokenEnvMissing { var: String, path: PathBuf },
    #[error("no API token: cannot read {file} (config [api].token_file in {path}): {source}")]
    TokenFileUnreadable {
        file: PathBuf,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no API token: {file} is empty (config [api].token_file in {path})")]
    TokenFileEmpty { file: PathBuf, path: PathBuf },
    #[error(
        "no API token: [api].token_file in {path} starts with ${{CREDENTIALS_DIRECTORY}}, which is not set; systemd sets it for a unit with LoadCredential=, elsewhere give the token file's path"
    )]
    NoCredentialsDirectory { path: PathBuf },
}

// ---------------------------------------------------------------------------------------
// Raw file shape. Defaults live here as functions so the README table can quote them.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    api: RawApi,
    #[serde(default)]
    rate: RawRate,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    input: RawInput,
    columns: RawColumns,
    #[serde(default)]
    validation: RawValidation,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    report: RawReport,
    #[serde(default)]
    schedule: RawSchedule,
    #[serde(default)]
    shutdown: RawShutdown,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    base_url: String,
    token_env: Option<String>,
    token_file: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    /// Plain http:// to a host other than this machine: the token would cross the network
    /// in clear text, so it takes an explicit yes.
    #[serde(default)]
    allow_insecure_http: bool,
}
const fn default_timeout() -> u64 {
    30
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRate {
    requests_per_second: f64,
    burst: u32,
    max_in_flight: usize,
}
impl Default for RawRate {
    fn default() -> Self {
        RawRate {
            requests_per_second: 10.0,
            burst: 10,
            max_in_flight: 8,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRetry {
    max_attempts: u32,
    initial_backoff_ms: u64,
    max_backoff_ms: u64,
}
impl Default for RawRetry {
    fn default() -> Self {
        RawRetry {
            max_attempts: 5,
            initial_backoff_ms: 200,
            max_backoff_ms: 30_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawInput {
    dir: PathBuf,
    pattern: String,
    archive_dir: Option<PathBuf>,
    delimiter: String,
    date_formats: Vec<String>,
}
impl Default for RawInput {
    fn default() -> Self {
        RawInput {
            dir: PathBuf::from("inbox"),
            pattern: "*.csv".into(),
            archive_dir: None,
            delimiter: ",".into(),
            date_formats: vec!["%Y-%m-%d".into()],
        }
    }
}

/// `[columns]` mixes fixed keys (API fields) with two sub-tables, so the API fields are
/// collected by `flatten` and checked by hand against [`API_FIELDS`].
#[derive(Debug, Deserialize)]
struct RawColumns {
    accountreference: Option<String>,
    #[serde(default)]
    addresses: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    customparameters: BTreeMap<String, String>,
    #[serde(flatten)]
    fields: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawValidation {
    statuses: Vec<String>,
    genders: Vec<String>,
    max_length: MaxLength,
}
impl Default for RawValidation {
    fn default() -> Self {
        RawValidation {
            statuses: ["active", "inactive", "suspended", "closed"]
                .map(String::from)
                .to_vec(),
            genders: ["male", "female", "notknown"].map(String::from).to_vec(),
            max_length: MaxLength::default(),
        }
    }
}

/// Limits in characters (Unicode scalar values), as the contract says, never bytes.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MaxLength {
    pub clientuserid: usize,
    pub firstname: usize,
    pub lastname: usize,
    pub phonenumber: usize,
    pub mobilenumber: usize,
    pub customparameter: usize,
}
impl Default for MaxLength {
    fn default() -> Self {
        MaxLength {
            clientuserid: 50,
            firstname: 50,
            lastname: 50,
            phonenumber: 20,
            mobilenumber: 20,
            customparameter: 100,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCache {
    path: PathBuf,
    memory_mb: u64,
    backup_file: Option<PathBuf>,
}
impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            path: PathBuf::from("state/cache"),
            memory_mb: 128,
            backup_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawReport {
    dir: PathBuf,
    metrics_file: Option<PathBuf>,
}
impl Default for RawReport {
    fn default() -> Self {
        RawReport {
            dir: PathBuf::from("reports"),
            metrics_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSchedule {
    cron: String,
    timezone: String,
}
impl Default for RawSchedule {
    fn default() -> Self {
        RawSchedule {
            cron: "0 0 2 * * *".into(),
            timezone: "UTC".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawShutdown {
    deadline_secs: u64,
}
impl Default for RawShutdown {
    fn default() -> Self {
        RawShutdown { deadline_secs: 20 }
    }
}

// ---------------------------------------------------------------------------------------
// Checked config.

#[derive(Clone, Debug)]
pub enum TokenSource {
    Env(String),
    File(PathBuf),
    /// `${CREDENTIALS_DIRECTORY}/name`: a systemd credential, found at run time, so one
    /// config serves the daemon unit and the timer's unit (each has its own directory).
    Credential(String),
}

/// The prefix of a `token_file` that names a systemd credential.
const CREDENTIALS_PREFIX: &str = "${CREDENTIALS_DIRECTORY}/";

#[derive(Clone, Debug)]
pub struct Api {
    /// Without a trailing slash, so `{base_url}/accounts/{ref}` joins cleanly.
    pub base_url: String,
    pub token: TokenSource,
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct Rate {
    pub requests_per_second: f64,
    pub burst: NonZeroU32,
    pub max_in_flight: usize,
}

#[derive(Clone, Debug)]
pub struct Retry {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

#[derive(Clone, Debug)]
pub struct Input {
    pub dir: PathBuf,
    pub pattern: String,
    pub archive_dir: Option<PathBuf>,
    pub delimiter: u8,
    pub date_formats: Vec<String>,
}

/// Which CSV header feeds which API field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Columns {
    pub accountreference: String,
    /// API field name -> header.
    pub fields: BTreeMap<String, String>,
    /// addresstype -> (address field -> header).
    pub addresses: BTreeMap<String, BTreeMap<String, String>>,
    /// parameter name -> header.
    pub customparameters: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Lowercased, since values are lowercased before the check.
    pub statuses: Vec<String>,
    pub genders: Vec<String>,
    pub max_length: MaxLength,
}

impl Default for Limits {
    fn default() -> Self {
        let raw = RawValidation::default();
        Limits {
            statuses: raw.statuses,
            genders: raw.genders,
            max_length: raw.max_length,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    /// The file it came from, for messages.
    pub path: PathBuf,
    pub api: Api,
    pub rate: Rate,
    pub retry: Retry,
    pub input: Input,
    pub columns: Columns,
    pub limits: Limits,
    pub cache_path: PathBuf,
    /// sled's page cache, in MiB.
    pub cache_memory_mb: u64,
    /// A `cache export` written after each run, and restored from if the cache is found
    /// damaged.
    pub cache_backup: Option<PathBuf>,
    pub report_dir: PathBuf,
    /// node_exporter textfile written after each run.
    pub metrics_file: Option<PathBuf>,
    pub cron: String,
    /// IANA zone the cron expression is read in.
    pub timezone: String,
    /// How long a signalled run may take to finish its requests in flight and its report.
    pub shutdown_deadline: Duration,
}

impl Config {
    /// Reads and checks a config file. Opening is split from parsing so tests feed text.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses config text as if read from `path`; relative paths resolve against its directory.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Checker { path, base }.check(raw)
    }

    /// Reads the bearer token. Separate from parsing so `check-config`-style callers and
    /// tests can parse without a secret, and so the secret is read once, late.
    pub fn token(&self) -> Result<SecretString, ConfigError> {
        match &self.api.token {
            TokenSource::Env(var) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(SecretString::from(v.trim().to_owned())),
                _ => Err(ConfigError::TokenEnvMissing {
                    var: var.clone(),
                    path: self.path.clone(),
                }),
            },
            TokenSource::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                    .filter(|d| !d.is_empty())
                    .ok_or_else(|| ConfigError::NoCredentialsDirectory {
                        path: self.path.clone(),
                    })?;
                self.token_from_file(&Path::new(&dir).join(name))
            }
            TokenSource::File(file) => self.token_from_file(file),
        }
    }

    fn token_from_file(&self, file: &Path) -> Result<SecretString, ConfigError> {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(file)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                file = %file.display(),
                "The token file is readable by other users; chmod 600 it (or use a systemd credential)."
            );
        }
        let text =
            std::fs::read_to_string(file).map_err(|source| ConfigError::TokenFileUnreadable {
                file: file.to_path_buf(),
                path: self.path.clone(),
                source,
            })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(ConfigError::TokenFileEmpty {
                file: file.to_path_buf(),
                path: self.path.clone(),
            });
        }
        Ok(SecretString::from(token.to_owned()))
    }
}

/// `host[:port]/...` of an http:// URL names this machine: the token does not leave it.
fn is_loopback(rest: &str) -> bool {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

struct Checker<'a> {
    path: &'a Path,
    base: &'a Path,
}

impl Checker<'_> {
    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
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

    fn check(&self, raw: RawConfig) -> Result<Config, ConfigError> {
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
            cron: raw.schedule.cron,
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

    fn api(&self, raw: RawApi) -> Result<Api, ConfigError> {
        let base_url = raw.base_url.trim().trim_end_matches('/').to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(self.invalid(
                "api.base_url",
                format!("must start with https:// (or http:// for a local test server), got {base_url:?}"),
            ));
        }
        if let Some(rest) = base_url.strip_prefix("http://")
            && !is_loopback(rest)
            && !raw.allow_insecure_http
        {
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
            (Some(var), None) => TokenSource::Env(var),
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

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
