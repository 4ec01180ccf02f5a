//! The config file's shape as written: every key, its default, unknown keys refused. Checked
//! and turned into [`super::Config`] by `check.rs` (ripgrep's low-level / high-level split).
//! Defaults live here as functions so the README table can quote them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) api: RawApi,
    #[serde(default)]
    pub(super) rate: RawRate,
    #[serde(default)]
    pub(super) retry: RawRetry,
    #[serde(default)]
    pub(super) input: RawInput,
    pub(super) columns: RawColumns,
    #[serde(default)]
    pub(super) validation: RawValidation,
    #[serde(default)]
    pub(super) cache: RawCache,
    #[serde(default)]
    pub(super) report: RawReport,
    #[serde(default)]
    pub(super) schedule: RawSchedule,
    #[serde(default)]
    pub(super) shutdown: RawShutdown,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    pub(super) base_url: String,
    pub(super) token_env: Option<String>,
    pub(super) token_file: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    pub(super) timeout_secs: u64,
    /// Plain http:// to a host other than this machine: the token would cross the network
    /// in clear text, so it takes an explicit yes.
    #[serde(default)]
    pub(super) allow_insecure_http: bool,
}
pub(super) const fn default_timeout() -> u64 {
    30
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRate {
    pub(super) requests_per_second: f64,
    pub(super) burst: u32,
    pub(super) max_in_flight: usize,
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
pub(super) struct RawRetry {
    pub(super) max_attempts: u32,
    pub(super) initial_backoff_ms: u64,
    pub(super) max_backoff_ms: u64,
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
pub(super) struct RawInput {
    pub(super) dir: PathBuf,
    pub(super) pattern: String,
    pub(super) archive_dir: Option<PathBuf>,
    pub(super) delimiter: String,
    pub(super) date_formats: Vec<String>,
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
pub(super) struct RawColumns {
    pub(super) accountreference: Option<String>,
    #[serde(default)]
    pub(super) addresses: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    pub(super) customparameters: BTreeMap<String, String>,
    #[serde(flatten)]
    pub(super) fields: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawValidation {
    pub(super) statuses: Vec<String>,
    pub(super) genders: Vec<String>,
    pub(super) max_length: MaxLength,
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
pub(super) struct RawCache {
    pub(super) path: PathBuf,
    pub(super) memory_mb: u64,
    pub(super) backup_file: Option<PathBuf>,
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
pub(super) struct RawReport {
    pub(super) dir: PathBuf,
    pub(super) metrics_file: Option<PathBuf>,
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
pub(super) struct RawSchedule {
    pub(super) cron: String,
    pub(super) timezone: String,
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
pub(super) struct RawShutdown {
    pub(super) deadline_secs: u64,
}
impl Default for RawShutdown {
    fn default() -> Self {
        RawShutdown { deadline_secs: 20 }
    }
}
