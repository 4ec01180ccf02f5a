//! The Accounts API's validation rules, written from the seed page and the contract, and on
//! purpose without the product's code: the sandbox exists to catch a product whose local copy
//! of a rule is wrong, which it could not do if both shared one implementation.

use std::collections::HashSet;

use chrono::NaiveDate;
use serde_json::{Map, Value};

/// Top-level body keys the API accepts; `accountreference` travels in the path only.
pub const KNOWN_FIELDS: &[&str] = &[
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
    "addresses",
    "customparameters",
    "marketingallowed",
];

const ADDRESS_FIELDS: &[&str] = &[
    "addresstype",
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

const STATUSES: &[&str] = &["active", "inactive", "suspended", "closed"];

/// Every message the body earns, in the seed page's order, so a test can compare the whole
/// list the product reports. An empty list means the body passes.
pub fn validate(body: &Map<String, Value>, configured: &[String], today: NaiveDate) -> Vec<String> {
    let mut errs = Vec::new();
    if body.contains_key("accountreference") {
        errs.push("accountreference must not be in the body".to_string());
    }
    for key in body.keys() {
        if key != "accountreference" && !KNOWN_FIELDS.contains(&key.as_str()) {
            errs.push(format!("{key} is not a recognised field"));
        }
    }
    if let Some(email) = string_field(body, "email", &mut errs)
        && !email_ok(email)
    {
        errs.push("email address format invalid".to_string());
    }
    if let Some(status) = string_field(body, "status", &mut errs)
        && !STATUSES.contains(&status)
    {
        errs.push("invalid status provided".to_string());
    }
    max_len(body, "clientuserid", "clientuserid", 50, &mut errs);
    max_len(body, "firstname", "firstname", 50, &mut errs);
    // The API names the field `lastname` but says `surname` in its message.
    max_len(body, "lastname", "surname", 50, &mut errs);
    phone(body, "phonenumber", "phone number", &mut errs);
    phone(body, "mobilenumber", "mobile number", &mut errs);
    if let Some(date) = string_field(body, "dateofbirth", &mut errs)
        && !date_in_past(date, today)
    {
        errs.push("dateofbirth must be a date in the past".to_string());
    }
    for field in ["verified", "marketingallowed"] {
        if body.get(field).is_some_and(|v| !v.is_boolean()) {
            errs.push(format!("{field} must be a boolean"));
        }
    }
    // The real API's gender rule is unknown: any string passes.
    string_field(body, "gender", &mut errs);
    string_field(body, "salutation", &mut errs);
    if body.get("addresses").is_some_and(|v| !addresses_ok(v)) {
        errs.push("addresses are malformed".to_string());
    }
    if let Some(params) = body.get("customparameters") {
        custom_parameters(params, configured, &mut errs);
    }
    errs
}

/// The field's text when present and a string; a present non-string earns its message.
fn string_field<'a>(
    body: &'a Map<String, Value>,
    field: &str,
    errs: &mut Vec<String>,
) -> Option<&'a str> {
    match body.get(field)? {
        Value::String(s) => Some(s),
        _ => {
            errs.push(format!("{field} must be a string"));
            None
        }
    }
}

/// Limits count Unicode scalar values, as the contract says, not bytes.
fn max_len(
    body: &Map<String, Value>,
    field: &str,
    label: &str,
    max: usize,
    errs: &mut Vec<String>,
) {
    if let Some(s) = string_field(body, field, errs)
        && s.chars().count() > max
    {
        errs.push(format!("{label} provided exceeds maximum length"));
    }
}

/// Both phone messages can appear together; the seed lists the length one first.
fn phone(body: &Map<String, Value>, field: &str, label: &str, errs: &mut Vec<String>) {
    if let Some(s) = string_field(body, field, errs) {
        if s.chars().count() > 20 {
            errs.push(format!("{label} provided exceeds maximum length"));
        }
        if !s.chars().all(|c| c.is_ascii_digit()) {
            errs.push(format!("{label} does not support non numeric characters"));
        }
    }
}

/// A deliberately plain check, independent of any e-mail crate the product may use: one `@`,
/// non-empty parts, no white space, no `..`, and a domain with a dot inside it (not at either
/// end).
pub fn email_ok(s: &str) -> bool {
    if s.chars().any(char::is_whitespace) || s.contains("..") {
        return false;
    }
    let mut parts = s.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
}

/// Exactly `YYYY-MM-DD` (chrono alone would also take `2020-1-5`) and strictly before today.
pub fn date_in_past(s: &str, today: NaiveDate) -> bool {
    let b = s.as_bytes();
    let shaped = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        });
    shaped && NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok_and(|d| d < today)
}

/// An array of objects with string values, each with an `addresstype` seen only once.
fn addresses_ok(v: &Value) -> bool {
    let Some(items) = v.as_array() else {
        return false;
    };
    let mut seen = HashSet::new();
    items.iter().all(|item| {
        let Some(obj) = item.as_object() else {
            return false;
        };
        let Some(kind) = obj.get("addresstype").and_then(Value::as_str) else {
            return false;
        };
        obj.iter()
            .all(|(k, v)| ADDRESS_FIELDS.contains(&k.as_str()) && v.is_string())
            && seen.insert(kind)
    })
}

fn custom_parameters(v: &Value, configured: &[String], errs: &mut Vec<String>) {
    let Some(params) = v.as_object() else {
        errs.push("customparameters must be an object".to_string());
        return;
    };
    for (name, value) in params {
        if !configured.iter().any(|c| c == name) {
            errs.push(format!("{name} not configured"));
        } else if let Value::String(s) = value {
            if s.chars().count() > 100 {
                errs.push(format!("{name} provided exceeds maximum length"));
            }
        } else {
            errs.push(format!("{name} must be a string"));
        }
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
