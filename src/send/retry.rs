//! What a response means, as pure functions (vector's `RetryAction` idea): tested as tables
//! of statuses and bodies, no network needed.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::{CUSTOM_PREFIX, Category, Problem};

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Success,
    /// Permanent: the record is reported and remembered, not retried.
    Reject(Vec<Problem>),
    /// The token was refused: nothing else can succeed, the run stops.
    Unauthorized,
    /// Transient: try again after a backoff (and after `retry_after`, for everyone).
    Retry {
        status: Option<u16>,
        retry_after: Option<Duration>,
        detail: String,
    },
    /// Not retryable in this run but not the record's fault (an unexpected redirect): kept
    /// for the next run like a transient failure, and the run stops (the URL is wrong).
    GiveUp {
        status: Option<u16>,
        detail: String,
    },
    /// A 4xx the API's reference does not list (405, 410, 413, 415, 422, …): more likely a
    /// proxy or a wrong `base_url` than the record's fault, so it is neither remembered as a
    /// rejection nor sent again in this run, where it would get the same answer; the record
    /// is kept for the next run and the run goes on.
    Unexpected {
        status: u16,
        detail: String,
    },
}

/// Classifies one HTTP answer. The permanent rejections are those CONTRACT §4 lists (400,
/// 403, 404, 409); other 4xx are [`Decision::Unexpected`].
pub fn classify(status: u16, body: &str, retry_after: Option<Duration>) -> Decision {
    let messages = || {
        let m = parse_messages(body);
        if m.is_empty() {
            vec![format!("HTTP {status} without a message")]
        } else {
            m
        }
    };
    let reject = |category: Category| {
        Decision::Reject(
            messages()
                .into_iter()
                .map(|message| Problem {
                    category: if status == 400 && message.ends_with(" not configured") {
                        Category::NotConfigured
                    } else {
                        category
                    },
                    http_status: Some(status),
                    field: field_of(&message),
                    message,
                })
                .collect(),
        )
    };
    match status {
        200..=299 => Decision::Success,
        400 => reject(Category::Invalid),
        401 => Decision::Unauthorized,
        403 => reject(Category::Forbidden),
        404 => reject(Category::NotFound),
        409 => reject(Category::Conflict),
        408 | 425 | 429 | 500..=599 => Decision::Retry {
            status: Some(status),
            retry_after,
            detail: format!("HTTP {status}: {}", messages().join("; ")),
        },
        // The arms above took 400, 401, 403, 404, 408, 409, 425 and 429.
        402..=499 => {
            let said = parse_messages(body);
            let mut detail = format!(
                "unexpected HTTP {status} (not an answer the Accounts API documents); check [api].base_url; kept for the next run"
            );
            if !said.is_empty() {
                detail = format!("{detail}: {}", said.join("; "));
            }
            Decision::Unexpected { status, detail }
        }
        _ => Decision::GiveUp {
            status: Some(status),
            detail: format!(
                "unexpected HTTP {status} (redirects are not followed); check [api].base_url"
            ),
        },
    }
}

/// Splits an error body into its messages. Accepts the seed's `• a <br />• b` (also
/// mis-decoded as `β€’`), JSON `{"message": "..."}`, JSON `{"errors": [..]}` of strings or
/// of objects with `message`, and plain text with one message per line.
pub fn parse_messages(body: &str) -> Vec<String> {
    let body = body.trim();
    if body.starts_with('{')
        && let Ok(serde_json::Value::Object(obj)) = serde_json::from_str(body)
    {
        if let Some(serde_json::Value::Array(errors)) = obj.get("errors") {
            let out: Vec<String> = errors
                .iter()
                .filter_map(|e| match e {
                    serde_json::Value::String(s) => Some(s.as_str()),
                    serde_json::Value::Object(o) => o.get("message").and_then(|m| m.as_str()),
                    _ => None,
                })
                .flat_map(split_text)
                .collect();
            if !out.is_empty() {
                return out;
            }
        }
        for key in ["message", "error", "detail"] {
            if let Some(serde_json::Value::String(s)) = obj.get(key) {
                return split_text(s);
            }
        }
    }
    split_text(body)
}

fn split_text(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let lower = text.to_ascii_lowercase();
    // Split on `<br>`, `<br/>` and `<br />`, case-insensitively, and on newlines.
    let mut start = 0;
    let mut pieces = Vec::new();
    let mut i = 0;
    while let Some(pos) = lower[i..].find("<br") {
        let at = i + pos;
        if let Some(end) = lower[at..].find('>') {
            pieces.push(&text[start..at]);
            start = at + end + 1;
            i = start;
        } else {
            break;
        }
    }
    pieces.push(&text[start..]);
    for piece in pieces {
        // A lone CR ends a line too: each message is one report row and one log line.
        for line in piece.split(['\n', '\r']) {
            // The seed page shows `\<br />`: a markdown escape that a copied body may keep.
            let m = line
                .trim()
                .trim_end_matches('\\')
                .trim_end()
                .trim_start_matches(['•', '\u{2022}'])
                .trim_start_matches("β€’")
                .trim_start_matches("&bull;")
                .trim();
            if !m.is_empty() {
                out.push(m.to_owned());
            }
        }
    }
    out
}

/// The field a message is about, in report naming, or empty when it names none.
pub fn field_of(message: &str) -> String {
    let fixed = [
        ("email address format invalid", "email"),
        ("the email is already in use", "email"),
        ("invalid status provided", "status"),
        ("invalid gender provided", "gender"),
        (
            "clientuserid provided exceeds maximum length",
            "clientuserid",
        ),
        ("unable to manage clientuserid", "clientuserid"),
        ("firstname provided exceeds maximum length", "firstname"),
        ("surname provided", "lastname"),
        ("phone number ", "phonenumber"),
        ("mobile number ", "mobilenumber"),
        ("dateofbirth ", "dateofbirth"),
        ("accountreference ", "accountreference"),
    ];
    if let Some((_, field)) = fixed.iter().find(|(prefix, _)| message.starts_with(prefix)) {
        return (*field).to_owned();
    }
    if let Some(field) = message.strip_suffix(" is not a valid boolean") {
        return field.to_owned();
    }
    for suffix in [" provided exceeds maximum length", " not configured"] {
        if let Some(name) = message.strip_suffix(suffix)
            && !name.contains(' ')
        {
            return format!("{CUSTOM_PREFIX}{name}");
        }
    }
    String::new()
}

/// Exponential backoff with "equal jitter": half fixed, half random, so retries of many
/// records spread out instead of returning in lockstep. `jitter` is in `[0, 1)`.
pub fn backoff(attempt: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let base = backoff_base(attempt, initial, max);
    base / 2 + base.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
}

/// The backoff after `attempt` failed attempts before jitter: `initial` doubled per attempt,
/// at most `max`. A 429 without `Retry-After` pauses the whole sender this long; no jitter
/// there, since one pause for everyone has no lockstep to break.
pub fn backoff_base(attempt: u32, initial: Duration, max: Duration) -> Duration {
    initial
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
        .min(max)
}

/// `Retry-After` in seconds or as an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
#[path = "retry_tests.rs"]
mod tests;
