//! Validate: the API's rules, checked locally before anything is sent (CONTRACT §5), with
//! the API's own message texts so the data team sees one vocabulary whoever rejected a row.
//! **No IO here**; "today" is a parameter so the date rule is testable.

use chrono::NaiveDate;

use crate::config::Limits;
use crate::model::{CUSTOM_PREFIX, Fields, Problem, Value};

/// Checks an account reference (CONTRACT §3); it travels in the URL path, so `.`/`..`
/// and control characters could address another resource, and one too long for a URL
/// cannot be sent at all.
pub fn reference_problem(reference: &str) -> Option<Problem> {
    let bad = reference.is_empty()
        || reference == "."
        || reference == ".."
        || reference.chars().any(char::is_control)
        || (reference.len() > MAX_ENCODED_REFERENCE / 3
            && encoded_len(reference) > MAX_ENCODED_REFERENCE);
    bad.then(|| Problem::invalid("accountreference", "accountreference is invalid"))
}

/// The longest reference sent, in bytes once percent-encoded as a path segment. The `http`
/// crate refuses a URI over 65,534 bytes, so a longer reference failed on every attempt as a
/// "network error" and, kept as a transient failure, was retried every night without end.
/// Half of that leaves the rest of the URI to `[api].base_url`.
pub const MAX_ENCODED_REFERENCE: usize = 32 * 1024;

/// The reference's length percent-encoded as the client encodes it (`send::client`): RFC
/// 3986's unreserved bytes stay as they are, every other byte takes three.
fn encoded_len(reference: &str) -> usize {
    reference
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => 1,
            _ => 3,
        })
        .sum()
}

/// Every rule the record breaks, in a stable order (one report row each).
pub fn validate(fields: &Fields, limits: &Limits, today: NaiveDate) -> Vec<Problem> {
    let mut out = Vec::new();
    let max = &limits.max_length;
    for (field, value) in fields {
        let Value::Text(s) = value else { continue };
        let len = s.chars().count();
        let mut too_long = |limit: usize, message: &str| {
            if len > limit {
                out.push(Problem::invalid(field.as_str(), message));
            }
        };
        match field.as_str() {
            "clientuserid" => too_long(
                max.clientuserid,
                "clientuserid provided exceeds maximum length",
            ),
            "firstname" => too_long(max.firstname, "firstname provided exceeds maximum length"),
            "lastname" => too_long(max.lastname, "surname provided exceeds maximum length"),
            "phonenumber" => {
                phone_rules(s, max.phonenumber, "phone number", field, &mut out);
            }
            "mobilenumber" => {
                phone_rules(s, max.mobilenumber, "mobile number", field, &mut out);
            }
            "email" if !email_ok(s) => {
                out.push(Problem::invalid(
                    field.as_str(),
                    "email address format invalid",
                ));
            }
            "status" if !limits.statuses.contains(s) => {
                out.push(Problem::invalid(field.as_str(), "invalid status provided"));
            }
            "gender" if !limits.genders.contains(s) => {
                out.push(Problem::invalid(field.as_str(), "invalid gender provided"));
            }
            "dateofbirth" => {
                let past = NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok_and(|d| d < today);
                if !past {
                    out.push(Problem::invalid(
                        field.as_str(),
                        "dateofbirth must be a date in the past",
                    ));
                }
            }
            f => {
                if let Some(name) = f.strip_prefix(CUSTOM_PREFIX) {
                    too_long(
                        max.customparameter,
                        &format!("{name} provided exceeds maximum length"),
                    );
                }
            }
        }
    }
    out
}

fn phone_rules(s: &str, limit: usize, label: &str, field: &str, out: &mut Vec<Problem>) {
    if !s.chars().all(|c| c.is_ascii_digit()) {
        out.push(Problem::invalid(
            field,
            format!("{label} does not support non numeric characters"),
        ));
    }
    if s.chars().count() > limit {
        out.push(Problem::invalid(
            field,
            format!("{label} provided exceeds maximum length"),
        ));
    }
}

/// RFC 5322 address syntax (email_address), without a display name (`Jane <j@x.co>` is
/// not an address the API stores), and with a dotted domain: `jane@localhost` is a CRM
/// typo far more often than a real mailbox.
pub fn email_ok(s: &str) -> bool {
    let Some((_, domain)) = s.rsplit_once('@') else {
        return false;
    };
    let dotted = domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.');
    let options = email_address::Options {
        allow_display_text: false,
        ..email_address::Options::default()
    };
    dotted && email_address::EmailAddress::parse_with_options(s, options).is_ok()
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
