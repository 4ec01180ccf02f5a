use super::*;

#[test]
fn statuses_decide_retry_reject_or_stop() {
    // (status, what it decides): CONTRACT §4 names the permanent rejections (400, 403, 404,
    // 409); any other 4xx is unexpected, kept for the next run without stopping this one.
    let table: &[(u16, &str)] = &[
        (200, "success"),
        (204, "success"),
        (302, "give up"),
        (400, "invalid"),
        (401, "unauthorized"),
        (403, "forbidden"),
        (404, "not_found"),
        (405, "unexpected"),
        (406, "unexpected"),
        (407, "unexpected"),
        (408, "retry"),
        (409, "conflict"),
        (410, "unexpected"),
        (411, "unexpected"),
        (413, "unexpected"),
        (414, "unexpected"),
        (415, "unexpected"),
        (422, "unexpected"),
        (425, "retry"),
        (429, "retry"),
        (431, "unexpected"),
        (451, "unexpected"),
        (499, "unexpected"),
        (500, "retry"),
        (502, "retry"),
        (503, "retry"),
        (504, "retry"),
        (599, "retry"),
        (600, "give up"),
    ];
    for &(status, expected) in table {
        let got = match classify(status, "• boom", None) {
            Decision::Success => "success",
            Decision::Unauthorized => "unauthorized",
            Decision::Retry { .. } => "retry",
            Decision::GiveUp { .. } => "give up",
            Decision::Unexpected { .. } => "unexpected",
            Decision::Reject(p) => p[0].category.as_str(),
        };
        assert_eq!(got, expected, "HTTP {status}");
    }
}

#[test]
fn an_unexpected_4xx_says_so_and_points_at_the_url() {
    let d = classify(405, "Method Not Allowed", None);
    assert_eq!(
        d,
        Decision::Unexpected {
            status: 405,
            detail: "unexpected HTTP 405 (not an answer the Accounts API documents); check [api].base_url; kept for the next run: Method Not Allowed".into()
        }
    );
    let Decision::Unexpected { detail, .. } = classify(422, "", None) else {
        panic!()
    };
    assert!(detail.ends_with("kept for the next run"), "{detail}");
}

#[test]
fn retry_after_travels_with_the_decision() {
    let d = classify(429, "", Some(Duration::from_secs(3)));
    assert_eq!(
        d,
        Decision::Retry {
            status: Some(429),
            retry_after: Some(Duration::from_secs(3)),
            detail: "HTTP 429: HTTP 429 without a message".into()
        }
    );
    let now = DateTime::parse_from_rfc3339("2026-12-03T02:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
    assert_eq!(
        parse_retry_after("Thu, 03 Dec 2026 02:00:05 GMT", now),
        Some(Duration::from_secs(5))
    );
    assert_eq!(
        parse_retry_after("Thu, 03 Dec 2026 01:00:00 GMT", now),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after("soon", now), None);
}

/// Every body form of CONTRACT §5 gives the same two messages.
#[test]
fn error_bodies_in_every_form_split_into_messages() {
    let expected = ["email address format invalid", "invalid status provided"];
    for body in [
        "• email address format invalid <br />• invalid status provided",
        "β€’ email address format invalid \\<br />β€’ invalid status provided",
        "• email address format invalid<br>• invalid status provided",
        r#"{"message": "• email address format invalid <br />• invalid status provided"}"#,
        r#"{"errors": ["email address format invalid", "invalid status provided"]}"#,
        r#"{"errors": [{"message": "email address format invalid"}, {"message": "invalid status provided"}]}"#,
        "email address format invalid\ninvalid status provided\n",
        "email address format invalid\r\n\r\ninvalid status provided",
    ] {
        assert_eq!(parse_messages(body), expected, "{body}");
    }
    assert_eq!(parse_messages("  "), Vec::<String>::new());
    assert_eq!(parse_messages("{not json"), ["{not json"]);
}

/// Found by the `error_body` fuzz target: a lone CR stayed inside a message, which then
/// spanned two lines on a terminal and in log files.
#[test]
fn a_lone_carriage_return_ends_a_message() {
    assert_eq!(
        parse_messages("email address format invalid\rinvalid status provided\r"),
        ["email address format invalid", "invalid status provided"]
    );
    assert_eq!(parse_messages(r#"{"message": "• a\r• b"}"#), ["a", "b"]);
}

#[test]
fn each_message_maps_to_its_field_and_category() {
    let body = "• email address format invalid <br />• loyaltytier provided exceeds maximum length <br />• referralcode not configured <br />• surname provided exceeds maximum length <br />• something else";
    let Decision::Reject(problems) = classify(400, body, None) else {
        panic!()
    };
    let got: Vec<(&str, &str, Option<u16>)> = problems
        .iter()
        .map(|p| (p.category.as_str(), p.field.as_str(), p.http_status))
        .collect();
    assert_eq!(
        got,
        [
            ("invalid", "email", Some(400)),
            ("invalid", "customparameters.loyaltytier", Some(400)),
            ("not_configured", "customparameters.referralcode", Some(400)),
            ("invalid", "lastname", Some(400)),
            ("invalid", "", Some(400)),
        ]
    );
    for (message, field) in [
        (
            "unable to manage clientuserid with the provided authentication",
            "clientuserid",
        ),
        ("the email is already in use", "email"),
        (
            "phone number does not support non numeric characters",
            "phonenumber",
        ),
        (
            "mobile number provided exceeds maximum length",
            "mobilenumber",
        ),
        ("dateofbirth must be a date in the past", "dateofbirth"),
        (
            "clientuserid provided exceeds maximum length",
            "clientuserid",
        ),
        ("firstname provided exceeds maximum length", "firstname"),
        ("invalid gender provided", "gender"),
        ("verified is not a valid boolean", "verified"),
        ("internal server error", ""),
    ] {
        assert_eq!(field_of(message), field, "{message}");
    }
}

#[test]
fn backoff_doubles_within_bounds_with_equal_jitter() {
    let (initial, max) = (Duration::from_millis(200), Duration::from_millis(1000));
    let b = |attempt, jitter| backoff(attempt, initial, max, jitter);
    assert_eq!(b(1, 0.0), Duration::from_millis(100));
    assert_eq!(
        b(1, 0.999_999),
        Duration::from_micros(199_999) + Duration::from_nanos(900)
    );
    assert_eq!(b(2, 0.0), Duration::from_millis(200));
    assert_eq!(b(3, 0.5), Duration::from_millis(600));
    assert_eq!(b(4, 1.0), Duration::from_millis(1000)); // capped
    assert_eq!(b(40, 1.0), Duration::from_millis(1000)); // no overflow
    // The base: what a 429 without Retry-After pauses everyone for, with no jitter.
    for (attempt, ms) in [(1, 200), (2, 400), (3, 800), (4, 1000), (u32::MAX, 1000)] {
        assert_eq!(
            backoff_base(attempt, initial, max),
            Duration::from_millis(ms),
            "attempt {attempt}"
        );
    }
}
