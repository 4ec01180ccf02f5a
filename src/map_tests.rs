use proptest::prelude::*;

use super::*;
use crate::model::Category;

fn formats() -> Vec<String> {
    ["%Y-%m-%d", "%d/%m/%Y"].map(String::from).to_vec()
}

#[track_caller]
fn check(kind: Kind, raw: &str, expected: Result<Option<Value>, &str>) {
    let got = normalize(kind, "field", raw, &formats()).map_err(|p| p.message);
    assert_eq!(
        got,
        expected.map_err(str::to_owned),
        "normalizing {raw:?} as {kind:?}"
    );
}

fn text(s: &str) -> Result<Option<Value>, &'static str> {
    Ok(Some(Value::Text(s.to_owned())))
}

#[test]
fn normalizes_each_kind_per_contract() {
    check(Kind::Text, "  José \u{a0}", text("José"));
    check(Kind::Text, " \t ", Ok(None));
    check(
        Kind::Lower,
        " Jane.DOE@Example.COM ",
        text("jane.doe@example.com"),
    );
    check(Kind::Lower, "ACTIVE", text("active"));
    check(Kind::Phone, "+44 (20) 7946-0958", text("00442079460958"));
    check(Kind::Phone, "020.7946.0958", text("02079460958"));
    check(Kind::Phone, "020 7946 0958 x204", text("02079460958x204"));
    check(Kind::Phone, " - ", Ok(None));
    check(Kind::Bool, "Yes", Ok(Some(Value::Bool(true))));
    check(Kind::Bool, "n", Ok(Some(Value::Bool(false))));
    check(Kind::Bool, "0", Ok(Some(Value::Bool(false))));
    check(Kind::Bool, "TRUE", Ok(Some(Value::Bool(true))));
    check(Kind::Bool, "maybe", Err("field is not a valid boolean"));
    check(Kind::Date, "1990-02-28", text("1990-02-28"));
    check(Kind::Date, "28/02/1990", text("1990-02-28"));
    check(
        Kind::Date,
        "31/02/1990",
        Err("dateofbirth is not a valid date"),
    );
}

/// `%Y` in chrono reads any number of digits and a sign; a birth date needs four digits.
#[test]
fn a_date_needs_a_four_digit_year() {
    for raw in ["02/01/80", "-0001-01-01", "+12345-01-01", "0999-12-31"] {
        check(Kind::Date, raw, Err("dateofbirth is not a valid date"));
    }
    check(Kind::Date, "1000-01-01", text("1000-01-01"));
    // A later format may still read a two-digit year.
    let with_short = ["%d/%m/%Y", "%d/%m/%y"].map(String::from);
    let got = normalize(Kind::Date, "dateofbirth", "02/01/80", &with_short);
    assert_eq!(got.ok(), Some(Some(Value::Text("1980-01-02".into()))));
}

/// CONTRACT §3 removes spaces; a no-break or thin space looks the same in a CRM.
#[test]
fn phone_spaces_of_any_width_are_removed() {
    check(
        Kind::Phone,
        "020\u{a0}7946\u{202f}0958",
        text("02079460958"),
    );
    check(
        Kind::Phone,
        "+44\u{2009}20 7946 0958",
        text("00442079460958"),
    );
    // A tab is not a space inside a number: reported, not dropped.
    check(Kind::Phone, "020\t7946", text("020\t7946"));
}

/// Found by the per-kind property test in tests/properties.rs: stripping punctuation bared
/// white space other than a plain space at an end, which only the next normalizing trimmed.
#[test]
fn phone_punctuation_next_to_other_white_space_normalizes_in_one_pass() {
    check(Kind::Phone, "+\u{2003}(", text("00"));
    check(Kind::Phone, "(\u{a0}020 7946 0958)", text("02079460958"));
    check(Kind::Phone, "020\t-", text("020"));
    check(Kind::Phone, "(\u{a0})", Ok(None));
}

fn columns() -> Columns {
    let mut c = Columns {
        accountreference: "Ref".into(),
        ..Columns::default()
    };
    c.fields.insert("email".into(), "Email".into());
    c.fields.insert("marketingallowed".into(), "Opt In".into());
    c.addresses
        .entry("home".into())
        .or_default()
        .insert("street".into(), "Street".into());
    c.customparameters.insert("tier".into(), "Tier".into());
    c
}

fn header(h: &[&str]) -> Vec<String> {
    h.iter().map(|s| s.to_string()).collect()
}

#[test]
fn maps_a_row_to_report_paths() {
    let layout = Layout::resolve(
        &columns(),
        &header(&[" Ref ", "Email", "Opt In", "Street", "Tier", "Unmapped"]),
    )
    .unwrap();
    let record = ByteRecord::from(vec![" A-1 ", "X@Y.COM", "yes", "", "Gold", "ignored"]);
    let m = map_record(&layout, &record, &formats());
    assert_eq!(m.reference.as_deref(), Some("A-1"));
    assert!(m.problems.is_empty());
    let keys: Vec<&str> = m.fields.keys().map(String::as_str).collect();
    assert_eq!(keys, ["customparameters.tier", "email", "marketingallowed"]);
    assert_eq!(m.fields["email"], Value::Text("x@y.com".into()));
}

#[test]
fn missing_columns_are_all_named_with_the_headers_found() {
    let err = Layout::resolve(&columns(), &header(&["Reference", "Email"])).unwrap_err();
    let msg = err.to_string();
    for needle in [
        "\"Ref\"",
        "[columns] accountreference",
        "\"Opt In\"",
        "headers found: \"Reference\", \"Email\"",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in {msg}");
    }
}

#[test]
fn a_huge_or_very_wide_header_gives_a_short_message() {
    // One 1 MB line without a newline (a binary file, another delimiter) reads as one header.
    let err = Layout::resolve(&columns(), &[format!("ab{}", "x".repeat(1 << 20))]).unwrap_err();
    let msg = err.to_string();
    assert!(msg.len() < 1000, "{} bytes: {}", msg.len(), &msg[..1000]);
    assert!(
        msg.contains(&format!("\"ab{}\"… (1048578 bytes)", "x".repeat(58))),
        "{msg}"
    );
    // 5,000 columns: the first 50 and a count.
    let wide: Vec<String> = (0..5000).map(|i| format!("c{i}")).collect();
    let msg = Layout::resolve(&columns(), &wide).unwrap_err().to_string();
    assert!(msg.contains("\"c0\", \"c1\""), "{msg}");
    assert!(msg.ends_with("\"c49\", and 4950 more"), "{msg}");
    // Cut on a character boundary, never inside one.
    let msg = show_headers(&["é".repeat(100)]);
    assert_eq!(msg, format!("{:?}… (200 bytes)", "é".repeat(60)));
}

#[test]
fn a_ragged_row_over_several_lines_says_so() {
    let layout = Layout::resolve(
        &columns(),
        &header(&["Ref", "Email", "Opt In", "Street", "Tier"]),
    )
    .unwrap();
    // `A-2,"x@y.com,…` never closes its quote: the next two rows are inside its cell.
    let swallowed = ByteRecord::from(vec!["A-2", "x@y.com,1,S,T\nA-3,z@y.com,1,S,T\nA-4,w"]);
    let m = map_record(&layout, &swallowed, &formats());
    assert!(m.malformed);
    assert_eq!(
        m.problems[0].message,
        "row has 2 fields but the header has 5 (this row spans 3 lines: a quote that is not closed takes in the lines after it)"
    );
    // Open to the end of a file that ends with a newline: that last one ends line 3.
    let to_end = ByteRecord::from(vec!["A-2", "x@y.com,1,S,T\nA-3,z@y.com,1,S,T\nA-4,w\n"]);
    let m = map_record(&layout, &to_end, &formats());
    assert!(m.problems[0].message.contains("spans 3 lines"), "{m:?}");
}

#[test]
fn a_mapped_header_twice_is_refused() {
    let err = Layout::resolve(
        &columns(),
        &header(&["Ref", "Email", "Opt In", "Street", "Tier", "Email"]),
    )
    .unwrap_err();
    assert_eq!(
        err,
        MapError::AmbiguousHeader {
            header: "Email".into(),
            count: 2
        }
    );
}

#[test]
fn ragged_and_non_utf8_rows_are_malformed_only() {
    let layout = Layout::resolve(
        &columns(),
        &header(&["Ref", "Email", "Opt In", "Street", "Tier"]),
    )
    .unwrap();
    let short = ByteRecord::from(vec!["A-1", "x@y.com"]);
    let m = map_record(&layout, &short, &formats());
    assert!(m.malformed);
    assert_eq!(
        m.problems[0].message,
        "row has 2 fields but the header has 5"
    );

    let bad: Vec<&[u8]> = vec![b"A-2", b"x@y.com", b"maybe", b"M\xfcller", b""];
    let m = map_record(&layout, &ByteRecord::from(bad), &formats());
    assert!(m.malformed);
    assert_eq!(m.reference.as_deref(), Some("A-2"));
    // The bad boolean is not reported: a malformed row's cells are not trusted.
    assert_eq!(m.problems.len(), 1);
    assert_eq!(m.problems[0].category, Category::Malformed);
    assert_eq!(m.problems[0].field, "addresses.home.street");
    assert_eq!(
        m.problems[0].message,
        "column \"Street\" is not valid UTF-8"
    );
    assert!(m.fields.is_empty());
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Text),
        Just(Kind::Lower),
        Just(Kind::Phone),
        Just(Kind::Bool),
        Just(Kind::Date)
    ]
}

proptest! {
    /// normalize ∘ normalize = normalize: a value the API confirmed must compare equal when
    /// it comes back through the next export, or every night would resend it.
    #[test]
    fn normalize_is_idempotent(kind in kind(), raw in "\\PC{0,30}|[ +()0-9.-]{0,20}|(?i)(yes|no|y|n|true|false|1|0)|[0-9]{2}/[0-9]{2}/[0-9]{4}") {
        let f = ["%Y-%m-%d".to_owned(), "%d/%m/%Y".to_owned()];
        if let Ok(Some(once)) = normalize(kind, "field", &raw, &f) {
            let twice = normalize(kind, "field", &once.to_string(), &f);
            prop_assert_eq!(twice, Ok(Some(once)));
        }
    }
}

#[test]
fn unmapped_headers_are_listed_in_file_order() {
    let mut columns = Columns {
        accountreference: "Ref".into(),
        ..Columns::default()
    };
    columns.fields.insert("email".into(), "Email".into());
    let header: Vec<String> = ["Notes", "Ref", "Email", "Fax"].map(String::from).to_vec();
    let layout = Layout::resolve(&columns, &header).unwrap();
    assert_eq!(layout.unmapped(&header), ["Notes", "Fax"]);
}
