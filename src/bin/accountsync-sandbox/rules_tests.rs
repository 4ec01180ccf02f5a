//! The rules as a table of bodies and the exact messages each one earns.

use super::*;
use serde_json::json;

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 3).unwrap_or_default()
}

/// One body in, the whole list of messages out.
fn check(body: Value, expected: &[&str]) {
    let configured = vec!["loyaltytier".to_string(), "preferredstore".to_string()];
    let Value::Object(map) = body else {
        panic!("test body must be an object")
    };
    assert_eq!(
        validate(&map, &configured, today()),
        expected,
        "body: {map:?}"
    );
}

#[test]
fn valid_body_passes() {
    check(
        json!({"email": "a.b@example.com", "status": "active", "verified": true,
               "firstname": "Zoë", "lastname": "Ng", "phonenumber": "00441234",
               "dateofbirth": "2026-12-02", "gender": "anything", "salutation": "Dr",
               "marketingallowed": false,
               "addresses": [{"addresstype": "home", "street": "1 High St"},
                             {"addresstype": "work"}],
               "customparameters": {"loyaltytier": "gold"}}),
        &[],
    );
}

#[test]
fn each_message() {
    let long51 = "é".repeat(51);
    check(
        json!({"accountreference": "x"}),
        &["accountreference must not be in the body"],
    );
    check(
        json!({"nickname": "x"}),
        &["nickname is not a recognised field"],
    );
    check(json!({"email": "nope"}), &["email address format invalid"]);
    check(json!({"status": "Active"}), &["invalid status provided"]);
    check(
        json!({"clientuserid": long51}),
        &["clientuserid provided exceeds maximum length"],
    );
    check(
        json!({"firstname": long51}),
        &["firstname provided exceeds maximum length"],
    );
    check(
        json!({"lastname": long51}),
        &["surname provided exceeds maximum length"],
    );
    check(
        json!({"phonenumber": "+44 1234"}),
        &["phone number does not support non numeric characters"],
    );
    check(
        json!({"mobilenumber": "1".repeat(21)}),
        &["mobile number provided exceeds maximum length"],
    );
    check(
        json!({"dateofbirth": "2026-12-03"}),
        &["dateofbirth must be a date in the past"],
    );
    check(json!({"verified": "true"}), &["verified must be a boolean"]);
    check(
        json!({"marketingallowed": 1}),
        &["marketingallowed must be a boolean"],
    );
    check(json!({"gender": 3}), &["gender must be a string"]);
    check(json!({"email": null}), &["email must be a string"]);
    check(json!({"addresses": {}}), &["addresses are malformed"]);
    check(
        json!({"customparameters": {"tier": "x"}}),
        &["tier not configured"],
    );
    check(
        json!({"customparameters": {"loyaltytier": "x".repeat(101)}}),
        &["loyaltytier provided exceeds maximum length"],
    );
}

#[test]
fn limits_are_inclusive_and_count_chars() {
    check(
        json!({"firstname": "é".repeat(50), "phonenumber": "1".repeat(20),
               "customparameters": {"loyaltytier": "ü".repeat(100)}}),
        &[],
    );
}

#[test]
fn all_messages_in_seed_order() {
    check(
        json!({"accountreference": "r", "zzz": 1, "email": "a@b", "status": "x",
               "clientuserid": "c".repeat(51), "firstname": "f".repeat(51),
               "lastname": "l".repeat(51), "phonenumber": "1x".repeat(11),
               "mobilenumber": "m".repeat(21), "dateofbirth": "2999-01-01",
               "customparameters": {"loyaltytier": "v".repeat(101), "other": "1"}}),
        &[
            "accountreference must not be in the body",
            "zzz is not a recognised field",
            "email address format invalid",
            "invalid status provided",
            "clientuserid provided exceeds maximum length",
            "firstname provided exceeds maximum length",
            "surname provided exceeds maximum length",
            "phone number provided exceeds maximum length",
            "phone number does not support non numeric characters",
            "mobile number provided exceeds maximum length",
            "mobile number does not support non numeric characters",
            "dateofbirth must be a date in the past",
            "loyaltytier provided exceeds maximum length",
            "other not configured",
        ],
    );
}

#[test]
fn email_cases() {
    for ok in ["a@b.co", "first.last+tag@sub.example.org", "ü@例え.jp"] {
        assert!(email_ok(ok), "{ok}");
    }
    for bad in [
        "",
        "a",
        "@b.co",
        "a@",
        "a@b",
        "a@.b",
        "a@b.",
        "a@@b.co",
        "a@b@c.co",
        "a b@c.co",
        "a@b..co",
        "a..b@c.co",
        "a@b.co\n",
    ] {
        assert!(!email_ok(bad), "{bad:?}");
    }
}

#[test]
fn date_cases() {
    assert!(date_in_past("2026-12-02", today()));
    assert!(date_in_past("1900-02-28", today()));
    for bad in [
        "2026-12-03",
        "2027-01-01",
        "2026-1-05",
        "02/12/2026",
        "2026-02-30",
        "",
    ] {
        assert!(!date_in_past(bad, today()), "{bad}");
    }
}

#[test]
fn address_cases() {
    for bad in [
        json!([{"street": "x"}]),
        json!([{"addresstype": 1}]),
        json!([{"addresstype": "home", "planet": "x"}]),
        json!([{"addresstype": "home", "street": 5}]),
        json!([{"addresstype": "home"}, {"addresstype": "home"}]),
        json!(["home"]),
    ] {
        assert!(!addresses_ok(&bad), "{bad}");
    }
    assert!(addresses_ok(&json!([])));
}
