//! The data that flows between stages. Kept free of IO and of any stage's logic so every
//! stage can be tested with plain values.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A normalized API value. Only two JSON types ever leave the CSV: strings and the two
/// boolean fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Text(String),
}

/// By hand rather than `#[serde(untagged)]`: untagged buffers each value and builds an
/// error for every string it first tries as a bool, which showed up in profiles of the
/// cache lookup done for every row.
impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a boolean")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
                Ok(Value::Bool(b))
            }
            fn visit_str<E>(self, s: &str) -> Result<Value, E> {
                Ok(Value::Text(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Value, E> {
                Ok(Value::Text(s))
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Text(s) => f.write_str(s),
        }
    }
}

impl From<&Value> for serde_json::Value {
    fn from(v: &Value) -> Self {
        match v {
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Text(s) => serde_json::Value::String(s.clone()),
        }
    }
}

/// Normalized values of one account keyed by their report path: `email`,
/// `addresses.home.street`, `customparameters.loyaltytier`. One flat map makes the diff a
/// plain map comparison and gives `changes.csv` its `field` column for free.
pub type Fields = BTreeMap<String, Value>;

pub const ADDRESS_PREFIX: &str = "addresses.";
pub const CUSTOM_PREFIX: &str = "customparameters.";

/// Where a record starts: the file as the operator named it and the 1-based physical line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub file: Arc<str>,
    pub line: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// The report categories of CONTRACT §6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Invalid,
    Conflict,
    Forbidden,
    NotFound,
    NotConfigured,
    Duplicate,
    Malformed,
    Failed,
}

impl Category {
    /// Every category, in the order of declaration (`c as usize` indexes it) and of
    /// CONTRACT §6's list.
    pub const ALL: [Category; 8] = [
        Category::Invalid,
        Category::Conflict,
        Category::Forbidden,
        Category::NotFound,
        Category::NotConfigured,
        Category::Duplicate,
        Category::Malformed,
        Category::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Invalid => "invalid",
            Category::Conflict => "conflict",
            Category::Forbidden => "forbidden",
            Category::NotFound => "not_found",
            Category::NotConfigured => "not_configured",
            Category::Duplicate => "duplicate",
            Category::Malformed => "malformed",
            Category::Failed => "failed",
        }
    }
}

/// One message about one record: a row of `errors.csv`. Row problems are data, never `Err`:
/// a bad row must not abort a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub category: Category,
    pub http_status: Option<u16>,
    /// API field path (same naming as [`Fields`]) or empty when the message names none.
    pub field: String,
    pub message: String,
}

impl Problem {
    /// A problem found by the local rules: nothing was sent, so no status.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            category: Category::Invalid,
            http_status: None,
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn malformed(field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            category: Category::Malformed,
            ..Problem::invalid(field, message)
        }
    }

    /// A record the run did not get to send, or whose answer it stopped waiting for,
    /// because it was stopped: kept for the next run, and no fault of the record's.
    pub fn cut_short(&self) -> bool {
        self.category == Category::Failed
            && self.http_status.is_none()
            && (self.message == NOT_SENT_STOPPED || self.message == NOT_ANSWERED_INTERRUPTED)
    }
}

/// The `failed` messages of records a stopped run left for the next one.
pub const NOT_SENT_STOPPED: &str = "not sent: the run was stopped";
pub const NOT_ANSWERED_INTERRUPTED: &str =
    "interrupted before the API answered; kept for the next run";

/// One field the API is (or would be) asked to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub field: String,
    pub old: Option<Value>,
    pub new: Value,
}

/// A stable fingerprint of a row's normalized values (see `diff::fingerprint`).
pub type RowDigest = [u8; 16];

/// What to send for one account: the body and the field-level changes it carries.
#[derive(Clone, Debug, PartialEq)]
pub struct Patch {
    pub changes: Vec<Change>,
    pub body: serde_json::Map<String, serde_json::Value>,
    /// The fingerprint of the whole row this patch brings the account to: once the API
    /// confirms the patch, that row diffs as unchanged.
    pub row: RowDigest,
}

impl Patch {
    /// The fields the request carries: what the API may hold once it was sent, answered or
    /// not.
    pub fn fields(&self) -> std::collections::BTreeSet<String> {
        self.changes.iter().map(|c| c.field.clone()).collect()
    }
}

/// The account fields the API takes at top level (besides `addresses` and
/// `customparameters`), as named in the seed page.
pub const API_FIELDS: &[&str] = &[
    "status",
    "verified",
    "email",
    "clientuserid",
    "salutation",
    "firstname",
    "lastname",
    "phonenumber",
    "mobilenumber",
    "dateofbirth",
    "gender",
    "marketingallowed",
];

/// The fields of one `addresses` object besides its `addresstype`.
pub const ADDRESS_FIELDS: &[&str] = &[
    "housename",
    "housenumber",
    "street",
    "towncity",
    "district",
    "state",
    "county",
    "postcode",
    "country",
];
