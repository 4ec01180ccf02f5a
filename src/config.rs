//! The config file, in two steps as ripgrep does: raw TOML types that only mirror the file,
//! then one checked [`Config`] that the rest of the program trusts. Every problem names the
//! key and the file, because the operator reading it is usually looking at a systemd log.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::model::{ADDRESS_FIELDS, API_FIELDS};

mod check;
mod raw;
mod redact;

use check::Checker;
pub use raw::MaxLength;
use raw::*;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `detail` is toml's message with its excerpt redacted (`redact.rs`), not the
    /// `toml::de::Error` itself: that one's text quotes the line, a pasted token included.
    #[error("config file {path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("config file {path}{}: [{key}] {message}", .line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        /// Where the key is written (1-based); `None` when it is absent (a default).
        line: Option<usize>,
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
    #[error(
        "the API token (config [api] in {path}) holds a control character or a non-ASCII character, which cannot go in an HTTP header; copy the token again without them"
    )]
    TokenNotHeaderSafe { path: PathBuf },
}

/// Every problem found in one config file, ordered by line (problems of keys not written
/// last); never empty. `check-config` lists them all, a run reports the first.
#[derive(Debug)]
pub struct ConfigErrors {
    first: ConfigError,
    more: Vec<ConfigError>,
}

impl ConfigErrors {
    /// `None` for no problems.
    fn new(mut all: Vec<ConfigError>) -> Option<ConfigErrors> {
        let line = |e: &ConfigError| match e {
            ConfigError::Invalid { line, .. } => line.unwrap_or(usize::MAX),
            _ => 0,
        };
        all.sort_by_key(line); // stable: one line's problems keep the order checked
        let mut all = all.into_iter();
        let first = all.next()?;
        Some(ConfigErrors {
            first,
            more: all.collect(),
        })
    }

    pub fn first(self) -> ConfigError {
        self.first
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        std::iter::once(&self.first).chain(&self.more)
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(first: ConfigError) -> Self {
        ConfigErrors {
            first,
            more: Vec::new(),
        }
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
    /// Reads and checks a config file; the first problem, as a run reports it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_all(path).map_err(ConfigErrors::first)
    }

    /// Reads and checks a config file, with every value problem found (`check-config`). A
    /// file that cannot be read or is not TOML has that one problem.
    pub fn load_all(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse_all(&text, path)
    }

    /// Parses config text as if read from `path`; relative paths resolve against its directory.
    /// Opening is split from parsing so tests feed text.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_all(text, path).map_err(ConfigErrors::first)
    }

    /// [`Config::parse`] with every value problem found.
    pub fn parse_all(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            detail: redact::parse_error(text, &e),
        })?;
        Checker::new(path, text).check(raw)
    }

    /// Reads the bearer token. Separate from parsing so `check-config`-style callers and
    /// tests can parse without a secret, and so the secret is read once, late.
    /// The token, checked as the client will send it, so `check-config` refuses what a run
    /// would (the message never shows the token).
    pub fn token(&self) -> Result<SecretString, ConfigError> {
        let token = self.read_token()?;
        // What `HeaderValue::from_str` takes: visible ASCII, space and tab.
        let fits = token
            .expose_secret()
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b));
        if !fits {
            return Err(ConfigError::TokenNotHeaderSafe {
                path: self.path.clone(),
            });
        }
        Ok(token)
    }

    fn read_token(&self) -> Result<SecretString, ConfigError> {
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

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
