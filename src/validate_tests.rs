use super::*;
use crate::model::Fields;

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 3).unwrap()
}

/// Validates one field and returns the messages, in order.
#[track_caller]
fn check(field: &str, value: &str, expected: &[&str]) {
    let mut fields = Fields::new();
    fields.insert(field.to_owned(), Value::Text(value.to_owned()));
    let got: Vec<String> = validate(&fields, &Limits::default(), today())
        .into_iter()
        .inspect(|p| assert_eq!(p.field, field, "every problem names its field"))
        .map(|p| p.message)
        .collect();
    assert_eq!(got, expected, "{field} = {value:?}");
}

#[test]
fn the_api_rules_with_their_messages() {
    check("email", "jane@example.com", &[]);
    for bad in [
        "no-at-sign.example.com",
        "two@@example.com",
        "john smith@example.com",
        "@example.com",
        "jane@",
        "jane@localhost",
    ] {
        check("email", bad, &["email address format invalid"]);
    }
    check("status", "active", &[]);
    check("status", "pending", &["invalid status provided"]);
    check("gender", "notknown", &[]);
    check("gender", "unknown", &["invalid gender provided"]);
    check("clientuserid", &"x".repeat(50), &[]);
    check(
        "clientuserid",
        &"x".repeat(51),
        &["clientuserid provided exceeds maximum length"],
    );
    check("firstname", &"é".repeat(50), &[]); // 100 bytes, 50 characters
    check(
        "firstname",
        &"é".repeat(51),
        &["firstname provided exceeds maximum length"],
    );
    check(
        "lastname",
        &"ß".repeat(51),
        &["surname provided exceeds maximum length"],
    );
    check("phonenumber", &"1".repeat(20), &[]);
    check(
        "phonenumber",
        &"1".repeat(21),
        &["phone number provided exceeds maximum length"],
    );
    check(
        "phonenumber",
        "02079460958x204",
        &["phone number does not support non numeric characters"],
    );
    check(
        "mobilenumber",
        "0123456789abcdefghijk",
        &[
            "mobile number does not support non numeric characters",
            "mobile number provided exceeds maximum length",
        ],
    );
    check("dateofbirth", "2026-12-02", &[]);
    check(
        "dateofbirth",
        "2026-12-03",
        &["dateofbirth must be a date in the past"],
    );
    check(
        "dateofbirth",
        "2099-01-01",
        &["dateofbirth must be a date in the past"],
    );
    check("customparameters.tier", &"x".repeat(100), &[]);
    check(
        "customparameters.tier",
        &"x".repeat(101),
        &["tier provided exceeds maximum length"],
    );
    check("addresses.home.street", &"x".repeat(500), &[]);
}

#[test]
fn limits_come_from_config() {
    let mut limits = Limits::default();
    limits.max_length.firstname = 3;
    limits.statuses = vec!["pending".into()];
    let mut fields = Fields::new();
    fields.insert("firstname".into(), Value::Text("Anna".into()));
    fields.insert("status".into(), Value::Text("pending".into()));
    let got: Vec<String> = validate(&fields, &limits, today())
        .into_iter()
        .map(|p| p.message)
        .collect();
    assert_eq!(got, ["firstname provided exceeds maximum length"]);
}

#[test]
fn references_that_could_leave_their_path_segment_are_invalid() {
    for bad in [
        "",
        ".",
        "..",
        "a\u{0}b",
        "tab\there",
        "line\nbreak",
        "\u{85}",
    ] {
        assert!(reference_problem(bad).is_some(), "{bad:?}");
    }
    for good in ["ACC-1", "a/b?c#d%e f", "...", "José"] {
        assert!(reference_problem(good).is_none(), "{good:?}");
    }
}

#[test]
fn a_reference_too_long_for_a_url_is_invalid() {
    // 32 KiB once percent-encoded: unreserved bytes count one, the others three.
    assert!(reference_problem(&"r".repeat(MAX_ENCODED_REFERENCE)).is_none());
    assert!(reference_problem(&"r".repeat(MAX_ENCODED_REFERENCE + 1)).is_some());
    let slashes = MAX_ENCODED_REFERENCE / 3;
    assert!(reference_problem(&"/".repeat(slashes)).is_none());
    assert!(reference_problem(&"/".repeat(slashes + 1)).is_some());
    // "é" is two bytes, six encoded.
    assert!(reference_problem(&"é".repeat(MAX_ENCODED_REFERENCE / 6)).is_none());
    assert!(reference_problem(&"é".repeat(MAX_ENCODED_REFERENCE / 6 + 1)).is_some());
}

#[test]
fn the_encoded_length_is_what_the_client_sends() {
    for reference in [
        "ACC-1",
        "a/b?c#d%e f",
        "José",
        "~._-",
        "=HYPERLINK(\"x\")",
        "日本",
    ] {
        let url = crate::send::client::account_url("", reference);
        assert_eq!(
            encoded_len(reference),
            url.len() - "/accounts/".len(),
            "{reference:?}"
        );
    }
}
