//! Property tests (issue 4, part 5):
//! - `changes.csv` round-trips any value through the report writer and the csv crate;
//! - normalizing is idempotent for every field kind, with generators per kind (the mixed
//!   generator in `src/map_tests.rs` stays as it is);
//! - a sync of a generated export against a fault-free sandbox leaves the sandbox holding
//!   exactly what an independent model of CONTRACT §3–§5, written here from the generated
//!   cells, predicts. That one runs both real binaries per case, so it has few cases.

mod util;

use std::collections::BTreeMap;
use std::sync::Arc;

use accountsync::map::{Kind, normalize};
use accountsync::model::{Change, Position, Value};
use accountsync::report::{Counts, Report, Summary};
use chrono::{NaiveDate, Utc};
use proptest::prelude::*;
use serde_json::{Value as Json, json};
use util::{Conf, Sandbox, Workdir};

// ---------------------------------------------------------------------------------------
// changes.csv round trip

/// Cells that stress CSV quoting and spreadsheet formula prefixes, and anything at all.
fn cell() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[=+@\t\r\n,\"' -]{0,3}(\\PC|[\r\n\t\",'])*",
        1 => any::<String>(),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => any::<bool>().prop_map(Value::Bool),
        4 => cell().prop_map(Value::Text),
    ]
}

/// What a reader of `changes.csv` recovers of `original` from `read`. Another change
/// neutralises spreadsheet formulas by prepending `'` to cells starting with one of
/// `= + - @` TAB CR; the property holds with or without it.
/// The README's recovery rule for report cells: remove one leading `'` from every cell that
/// has one. A cell as written never starts like a formula.
fn unneutralize<'a>(_original: &str, read: &'a str) -> &'a str {
    assert!(
        !read.starts_with(['=', '+', '-', '@', '\t', '\r']),
        "a cell that a spreadsheet would evaluate: {read:?}"
    );
    read.strip_prefix('\'').unwrap_or(read)
}

fn summary(run_id: &str) -> Summary {
    let now = Utc::now();
    Summary {
        run_id: run_id.to_owned(),
        dry_run: false,
        baseline: false,
        files: Vec::new(),
        counts: Counts::default(),
        retried_from_earlier_runs: Counts::default(),
        errors_by_category: Default::default(),
        requests_sent: 0,
        retries: 0,
        throttled: 0,
        started_at: now,
        finished_at: now,
        elapsed_secs: 0.0,
        requests_per_second: 0.0,
        cache_recovered: None,
        rate_limit_final: 0.0,
        rate_limit_lowest: 0.0,
        stopped: None,
        interrupted: false,
        exit_code: 0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    })]

    /// Every (file, line, reference, field, old, new) written by the report comes back from
    /// the csv crate unchanged: unicode, quotes, commas, newlines, leading/trailing space.
    #[test]
    fn changes_csv_round_trips(
        rows in prop::collection::vec(
            (cell(), any::<u64>(), cell(), cell(), prop::option::of(value()), value()),
            1..8,
        )
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut report = Report::create(dir.path(), Utc::now()).expect("report");
        let mut expected = Vec::new();
        for (file, line, reference, field, old, new) in &rows {
            let pos = Position { file: Arc::from(file.as_str()), line: *line };
            let change = Change { field: field.clone(), old: old.clone(), new: new.clone() };
            report.change(&pos, reference, &change).expect("write change");
            expected.push(vec![
                file.clone(),
                line.to_string(),
                reference.clone(),
                field.clone(),
                old.as_ref().map(ToString::to_string).unwrap_or_default(),
                new.to_string(),
            ]);
        }
        let run_id = report.run_id().to_owned();
        let folder = report.finish(&summary(&run_id)).expect("finish");

        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_path(folder.join("changes.csv"))
            .expect("open changes.csv");
        let mut read: Vec<Vec<String>> = reader
            .records()
            .map(|r| r.expect("csv record").iter().map(str::to_owned).collect())
            .collect();
        prop_assert_eq!(
            read.remove(0),
            ["file", "line", "accountreference", "field", "old", "new"].map(String::from).to_vec()
        );
        prop_assert_eq!(read.len(), expected.len());
        for (got, want) in read.iter().zip(&expected) {
            let got: Vec<&str> =
                got.iter().zip(want).map(|(g, w)| unneutralize(w, g)).collect();
            prop_assert_eq!(got, want.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
}

// ---------------------------------------------------------------------------------------
// normalize ∘ normalize = normalize, per field kind

const FORMATS: [&str; 3] = ["%Y-%m-%d", "%d/%m/%Y", "%d.%m.%Y"];

/// White space of every sort, around and inside values.
fn space() -> impl Strategy<Value = String> {
    "[ \t\u{a0}\u{2003}\u{3000}\u{2028}\u{85}\u{b}\u{c}]{0,2}"
}

fn padded(core: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (space(), core, space()).prop_map(|(a, c, b)| format!("{a}{c}{b}"))
}

fn idempotent(kind: Kind, raw: &str) -> Result<(), TestCaseError> {
    let formats: Vec<String> = FORMATS.map(String::from).to_vec();
    if let Ok(Some(once)) = normalize(kind, "field", raw, &formats) {
        let twice = normalize(kind, "field", &once.to_string(), &formats);
        prop_assert_eq!(twice, Ok(Some(once.clone())), "{:?} -> {:?}", raw, once);
        if let Value::Text(t) = &once {
            prop_assert!(!t.is_empty() && t.trim() == t, "{:?} -> {:?}", raw, t);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    })]

    #[test]
    fn email_normalizing_is_idempotent(
        raw in padded("[A-Za-zÀ-ÖØ-öø-ÿİıΣςẞß.+_-]{1,10}@[A-Za-zİΣ-]{1,8}\\.[A-Za-z]{2,4}|\\PC{0,20}")
    ) {
        idempotent(Kind::Lower, &raw)?;
    }

    #[test]
    fn phone_normalizing_is_idempotent(
        raw in padded("[+]?[0-9 ().\t\u{a0}\u{2003}+x-]{0,25}")
    ) {
        idempotent(Kind::Phone, &raw)?;
    }

    #[test]
    fn boolean_normalizing_is_idempotent(
        raw in padded("(?i)(true|false|yes|no|y|n|1|0)|\\PC{0,6}")
    ) {
        idempotent(Kind::Bool, &raw)?;
    }

    #[test]
    fn status_and_gender_normalizing_is_idempotent(
        raw in padded("(?i)(active|inactive|suspended|closed|male|female|notknown)|\\PC{0,12}")
    ) {
        idempotent(Kind::Lower, &raw)?;
    }

    #[test]
    fn date_normalizing_is_idempotent(
        raw in padded(
            "[0-9]{1,5}-[0-9]{1,2}-[0-9]{1,2}|[0-9]{1,2}/[0-9]{1,2}/[+-]?[0-9]{1,6}|[0-9]{2}\\.[0-9]{2}\\.[0-9]{4}"
        )
    ) {
        idempotent(Kind::Date, &raw)?;
    }

    #[test]
    fn text_normalizing_is_idempotent(raw in padded("(\\PC|[\n\t\r])*")) {
        idempotent(Kind::Text, &raw)?;
    }
}

// ---------------------------------------------------------------------------------------
// A sync of a generated export against a model

/// One cell as generated, with what the model expects of it.
#[derive(Clone, Debug)]
struct Cell {
    raw: String,
    expect: Expect,
}

#[derive(Clone, Debug, PartialEq)]
enum Expect {
    /// Nothing to send.
    Empty,
    /// This JSON value is sent.
    Sent(Json),
    /// The local rules reject the row.
    Bad,
}

impl Cell {
    fn empty() -> Cell {
        Cell {
            raw: String::new(),
            expect: Expect::Empty,
        }
    }
}

/// An e-mail as generated: unique per row (its row number is added when the export is
/// written), one that belongs to a holder account (409), or a malformed one.
#[derive(Clone, Debug)]
enum Email {
    None,
    Fresh {
        local: String,
        domain: &'static str,
        upper: u32,
        pad: (String, String),
    },
    Taken {
        holder: usize,
        upper: u32,
    },
    Malformed(&'static str),
}

/// Leading/trailing padding: plain and Unicode white space, which `str::trim` removes.
fn pad() -> impl Strategy<Value = (String, String)> {
    let one = prop::sample::select(vec!["", "", " ", "\t", "\u{a0}", " \u{2003} "]);
    (one.clone(), one).prop_map(|(a, b)| (a.to_owned(), b.to_owned()))
}

fn with_case(s: &str, upper: u32) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if upper & (1 << (i % 32)) != 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// Free text: trimmed by the product, at most `max` characters when given. Only with `bad`
/// can it be too long.
fn text(max: Option<usize>, bad: bool) -> BoxedStrategy<Cell> {
    let short = "(\\PC|\n){0,14}".boxed();
    let core = match max {
        Some(max) if bad => prop_oneof![
            2 => short,
            1 => proptest::string::string_regex(&format!("\\PC{{{},{}}}", max - 2, max + 5))
                .expect("regex")
                .boxed(),
        ]
        .boxed(),
        _ => short,
    };
    let filled = (pad(), core).prop_map(move |((a, b), core)| {
        let raw = format!("{a}{core}{b}");
        let t = raw.trim();
        let expect = if t.is_empty() {
            Expect::Empty
        } else if max.is_some_and(|m| t.chars().count() > m) {
            Expect::Bad
        } else {
            Expect::Sent(json!(t))
        };
        Cell { raw, expect }
    });
    prop_oneof![1 => Just(Cell::empty()), 2 => filled].boxed()
}

/// One of `allowed` in any case, padded, sent lowercased; with `bad`, one of `refused`.
fn word(
    allowed: &'static [&'static str],
    refused: &'static [&'static str],
    bad: bool,
) -> BoxedStrategy<Cell> {
    let choices = if bad { refused } else { allowed };
    let filled =
        (pad(), prop::sample::select(choices), any::<u32>()).prop_map(move |((a, b), w, upper)| {
            Cell {
                raw: format!("{a}{}{b}", with_case(w, upper)),
                expect: if bad {
                    Expect::Bad
                } else {
                    Expect::Sent(json!(w))
                },
            }
        });
    prop_oneof![1 => Just(Cell::empty()), 1 => filled].boxed()
}

fn boolean(bad: bool) -> BoxedStrategy<Cell> {
    let words: Vec<(&str, Option<bool>)> = if bad {
        vec![("maybe", None), ("2", None), ("yess", None)]
    } else {
        vec![
            ("yes", Some(true)),
            ("No", Some(false)),
            ("Y", Some(true)),
            ("n", Some(false)),
            ("TRUE", Some(true)),
            ("false", Some(false)),
            ("1", Some(true)),
            ("0", Some(false)),
        ]
    };
    let filled = (pad(), prop::sample::select(words)).prop_map(|((a, b), (w, v))| Cell {
        raw: format!("{a}{w}{b}"),
        expect: v.map_or(Expect::Bad, |v| Expect::Sent(json!(v))),
    });
    prop_oneof![1 => Just(Cell::empty()), 1 => filled].boxed()
}

/// Separators the product strips from phone numbers; a leading `+` becomes `00`. With
/// `bad`: an extension, or more than 20 digits.
fn phone(bad: bool) -> BoxedStrategy<Cell> {
    let sep = prop::sample::select(vec!["", "", "", " ", "-", ".", "(", ")"]);
    let digits = prop::collection::vec(("[0-9]", sep), if bad { 1..26 } else { 1..19 });
    let filled = (pad(), any::<bool>(), digits, any::<bool>()).prop_map(
        move |((a, b), plus, digits, extension)| {
            let extension = bad && extension;
            let mut raw = a;
            let mut expected = String::new();
            if plus {
                raw.push('+');
                expected.push_str("00");
            }
            for (d, s) in &digits {
                raw.push_str(d);
                raw.push_str(s);
                expected.push_str(d);
            }
            if extension {
                raw.push_str(" x204");
            }
            raw.push_str(&b);
            let expect = if extension || expected.chars().count() > 20 {
                Expect::Bad
            } else {
                Expect::Sent(json!(expected))
            };
            Cell { raw, expect }
        },
    );
    prop_oneof![1 => Just(Cell::empty()), 1 => filled].boxed()
}

/// Dates in either accepted format. With `bad`: impossible days, far future ones, words.
/// Years stay far from today so the test does not depend on the date it runs.
fn date(bad: bool) -> BoxedStrategy<Cell> {
    let (years, last_day) = if bad {
        (prop_oneof![1900i32..=2020, 2100i32..=2200].boxed(), 31)
    } else {
        ((1900i32..=2020).boxed(), 28)
    };
    let filled = (pad(), years, 1u32..=12, 1u32..=last_day, any::<bool>()).prop_map(
        |((a, b), y, m, d, iso)| {
            let raw = if iso {
                format!("{a}{y:04}-{m:02}-{d:02}{b}")
            } else {
                format!("{a}{d:02}/{m:02}/{y:04}{b}")
            };
            let expect = match NaiveDate::from_ymd_opt(y, m, d) {
                Some(_) if y <= 2020 => Expect::Sent(json!(format!("{y:04}-{m:02}-{d:02}"))),
                _ => Expect::Bad,
            };
            Cell { raw, expect }
        },
    );
    if bad {
        prop_oneof![
            3 => filled,
            1 => Just(Cell { raw: "soon".into(), expect: Expect::Bad }),
        ]
        .boxed()
    } else {
        prop_oneof![1 => Just(Cell::empty()), 1 => filled].boxed()
    }
}

fn email(bad: bool) -> BoxedStrategy<Email> {
    if bad {
        return prop::sample::select(vec![
            "no-at-sign.example.com",
            "two@@example.com",
            "john smith@example.com",
            "@example.com",
            "jane@localhost",
        ])
        .prop_map(Email::Malformed)
        .boxed();
    }
    prop_oneof![
        3 => Just(Email::None),
        8 => ("[a-z]{1,6}", prop::sample::select(vec!["example.com", "mail.example.org"]), any::<u32>(), pad())
            .prop_map(|(local, domain, upper, pad)| Email::Fresh { local, domain, upper, pad }),
        1 => (0..HOLDERS.len(), any::<u32>()).prop_map(|(holder, upper)| Email::Taken { holder, upper }),
    ]
    .boxed()
}

/// Accounts the sandbox knows (its `--accounts` file): 40 plain ones and some with
/// characters that need quoting in CSV or encoding in the URL path.
fn known() -> Vec<String> {
    let odd = ["Ünï-4", "a,b \"5\"", "x/y?6", "two words 7", "東京-9"];
    (0..40)
        .map(|i| format!("K-{i}"))
        .chain(odd.map(String::from))
        .collect()
}

/// References the sandbox does not know (404) and ones refused locally (empty, `.`, `..`,
/// control characters).
const UNKNOWN: &[&str] = &["U-1", "U-2", "ghost 3", "U-4"];
const BAD_REFERENCES: &[&str] = &["", "   ", ".", "..", "x\u{7}y"];
/// Accounts no row touches, holding e-mails some rows try to take (409).
const HOLDERS: &[(&str, &str)] = &[
    ("HOLDER-1", "taken1@example.com"),
    ("HOLDER-2", "taken2@example.org"),
];

fn reference() -> impl Strategy<Value = String> {
    let core = prop_oneof![
        16 => prop::sample::select(known()),
        2 => prop::sample::select(UNKNOWN).prop_map(String::from),
        1 => prop::sample::select(BAD_REFERENCES).prop_map(String::from),
    ];
    (pad(), core).prop_map(|((a, b), c)| format!("{a}{c}{b}"))
}

/// The export's columns, in file order after `ref` and `email`, with the API path each
/// feeds.
const COLUMNS: &[(&str, &str)] = &[
    ("first", "firstname"),
    ("last", "lastname"),
    ("phone", "phonenumber"),
    ("status", "status"),
    ("gender", "gender"),
    ("optin", "marketingallowed"),
    ("dob", "dateofbirth"),
    ("street", "addresses.home.street"),
    ("postcode", "addresses.home.postcode"),
    ("worktown", "addresses.work.towncity"),
    ("tier", "customparameters.tier"),
];

const CONFIG_COLUMNS: &str = r#"[columns]
accountreference = "ref"
email = "email"
firstname = "first"
lastname = "last"
phonenumber = "phone"
status = "status"
gender = "gender"
marketingallowed = "optin"
dateofbirth = "dob"

[columns.addresses.home]
street = "street"
postcode = "postcode"

[columns.addresses.work]
towncity = "worktown"

[columns.customparameters]
tier = "tier"
"#;

#[derive(Clone, Debug)]
struct Row {
    reference: String,
    email: Email,
    /// One per [`COLUMNS`] entry.
    cells: Vec<Cell>,
}

/// A row whose cells all pass the local rules, or one with a bad cell, or a blank one.
fn row() -> impl Strategy<Value = Row> {
    let cells = |bad: [bool; 12]| {
        (
            (
                email(bad[0]),
                text(Some(50), bad[1]),
                text(Some(50), bad[2]),
                phone(bad[3]),
                word(
                    &["active", "inactive", "suspended", "closed"],
                    &["pending", "actïve"],
                    bad[4],
                ),
                word(&["male", "female", "notknown"], &["other"], bad[5]),
            ),
            (
                boolean(bad[6]),
                date(bad[7]),
                text(None, false),
                text(None, false),
                text(None, false),
                text(Some(100), bad[11]),
            ),
        )
            .prop_map(|((email, a, b, c, d, e), (f, g, h, i, j, k))| {
                (email, vec![a, b, c, d, e, f, g, h, i, j, k])
            })
    };
    // None: every cell valid; Some(12): a blank row (unchanged); Some(i): cell i bad.
    let bad_at = prop_oneof![
        12 => Just(None),
        4 => (0usize..12).prop_map(Some),
        1 => Just(Some(12)),
    ];
    (reference(), bad_at)
        .prop_flat_map(move |(reference, bad_at)| {
            let mut bad = [false; 12];
            match bad_at {
                Some(12) => {
                    let blank = (Email::None, vec![Cell::empty(); COLUMNS.len()]);
                    return (Just(reference), Just(blank).boxed());
                }
                // Columns 8-10 (addresses) have no rule: such a row stays valid.
                Some(i) => bad[i] = true,
                None => {}
            }
            (Just(reference), cells(bad).boxed())
        })
        .prop_map(|(reference, (email, cells))| Row {
            reference,
            email,
            cells,
        })
}

/// The e-mail cell of row `i`.
fn email_cell(email: &Email, i: usize) -> (Cell, bool) {
    match email {
        Email::None => (Cell::empty(), false),
        Email::Fresh {
            local,
            domain,
            upper,
            pad: (a, b),
        } => {
            let address = format!("{local}.{i}@{domain}");
            let cell = Cell {
                raw: format!("{a}{}{b}", with_case(&address, *upper)),
                expect: Expect::Sent(json!(address)),
            };
            (cell, false)
        }
        Email::Taken { holder, upper } => {
            let address = HOLDERS[*holder].1;
            let cell = Cell {
                raw: with_case(address, *upper),
                expect: Expect::Sent(json!(address)),
            };
            (cell, true)
        }
        Email::Malformed(s) => (
            Cell {
                raw: (*s).to_owned(),
                expect: Expect::Bad,
            },
            false,
        ),
    }
}

#[derive(Debug, Default, PartialEq)]
struct Buckets {
    unchanged: u64,
    updated: u64,
    rejected: u64,
}

/// The accounts file, and the sandbox's accounts before the run as the model sees them.
fn initial_accounts() -> (String, BTreeMap<String, Json>) {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["accountreference", "email"])
        .expect("header");
    let mut state = BTreeMap::new();
    let all = known()
        .into_iter()
        .enumerate()
        .map(|(i, r)| (r, format!("init-{i}@legacy.example.com")))
        .chain(
            HOLDERS
                .iter()
                .map(|(r, e)| ((*r).to_owned(), (*e).to_owned())),
        );
    for (id, (reference, email)) in all.enumerate() {
        w.write_record([reference.as_str(), email.as_str()])
            .expect("row");
        state.insert(
            reference.clone(),
            json!({
                "accountid": id + 1,
                "accountreference": reference,
                "email": email,
                "addresses": [],
                "customparameters": {},
            }),
        );
    }
    let csv = String::from_utf8(w.into_inner().expect("flush")).expect("utf-8");
    (csv, state)
}

/// The export file and what the model expects: the sandbox's accounts after the run and
/// the summary's buckets.
fn model(rows: &[Row]) -> (String, BTreeMap<String, Json>, Buckets) {
    let (_, mut state) = initial_accounts();
    let mut buckets = Buckets::default();
    let mut w = csv::Writer::from_writer(Vec::new());
    let header: Vec<&str> = ["ref", "email"]
        .into_iter()
        .chain(COLUMNS.iter().map(|(h, _)| *h))
        .collect();
    w.write_record(&header).expect("header");

    let valid_reference = |r: &str| {
        let t = r.trim();
        !t.is_empty() && t != "." && t != ".." && !t.chars().any(char::is_control)
    };
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for r in rows.iter().filter(|r| valid_reference(&r.reference)) {
        *seen.entry(r.reference.trim()).or_default() += 1;
    }

    for (i, r) in rows.iter().enumerate() {
        let (email, taken) = email_cell(&r.email, i);
        let mut record = vec![r.reference.clone(), email.raw.clone()];
        record.extend(r.cells.iter().map(|c| c.raw.clone()));
        w.write_record(&record).expect("row");

        let reference = r.reference.trim();
        let cells =
            std::iter::once(("email", &email)).chain(COLUMNS.iter().map(|(_, p)| *p).zip(&r.cells));
        let mut fields: Vec<(&str, &Json)> = Vec::new();
        let mut bad = false;
        for (path, cell) in cells {
            match &cell.expect {
                Expect::Empty => {}
                Expect::Bad => bad = true,
                Expect::Sent(v) => fields.push((path, v)),
            }
        }
        if !valid_reference(reference) || seen[reference] > 1 || bad {
            buckets.rejected += 1;
        } else if fields.is_empty() {
            buckets.unchanged += 1;
        } else if !state.contains_key(reference) || taken {
            buckets.rejected += 1; // 404 unknown account, 409 e-mail in use
        } else {
            buckets.updated += 1;
            let account = state.get_mut(reference).expect("known account");
            let mut addresses: BTreeMap<String, serde_json::Map<String, Json>> = BTreeMap::new();
            for (path, v) in fields {
                if let Some(rest) = path.strip_prefix("addresses.") {
                    let (kind, field) = rest.split_once('.').expect("addresses.type.field");
                    addresses
                        .entry(kind.to_owned())
                        .or_insert_with(|| {
                            serde_json::Map::from_iter([("addresstype".into(), json!(kind))])
                        })
                        .insert(field.to_owned(), v.clone());
                } else if let Some(name) = path.strip_prefix("customparameters.") {
                    account["customparameters"][name] = v.clone();
                } else {
                    account[path] = v.clone();
                }
            }
            // The account is fresh to the product, so each type's object is the row's
            // cells alone, replacing the sandbox's object of that type.
            let list = account["addresses"].as_array_mut().expect("addresses");
            for (kind, obj) in addresses {
                list.retain(|a| a["addresstype"] != json!(kind));
                list.push(Json::Object(obj));
            }
        }
    }
    let csv = String::from_utf8(w.into_inner().expect("flush")).expect("utf-8");
    (csv, state, buckets)
}

/// Accounts with their `addresses` sorted: the order carries no meaning (CONTRACT §4).
fn comparable(accounts: &BTreeMap<String, Json>) -> BTreeMap<String, Json> {
    accounts
        .iter()
        .map(|(k, v)| {
            let mut v = v.clone();
            if let Some(list) = v.get_mut("addresses").and_then(Json::as_array_mut) {
                list.sort_by_key(|a| a.to_string());
            }
            (k.clone(), v)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    /// The sandbox ends up holding exactly the model's accounts: every valid, unique row's
    /// normalized values on its existing account; nothing of invalid or duplicate rows, of
    /// rows for unknown accounts (404) or of rows taking a holder's e-mail (409).
    #[test]
    fn a_sync_leaves_the_sandbox_as_the_model_predicts(
        rows in prop::collection::vec(row(), 1..=40)
    ) {
        let (export, expected, buckets) = model(&rows);
        let (accounts_csv, _) = initial_accounts();
        let wd = Workdir::new("props-sync");
        let accounts = wd.write("accounts.csv", accounts_csv);
        let sb = Sandbox::start(
            &wd,
            &["--accounts", &accounts.display().to_string(), "--custom-parameters", "tier"],
        );
        wd.configure(&Conf {
            columns: CONFIG_COLUMNS.into(),
            date_formats: vec!["%Y-%m-%d".into(), "%d/%m/%Y".into()],
            ..Conf::new(&sb)
        });
        let file = wd.write("export.csv", &export);
        let run = wd.run(&[&file.display().to_string()]);

        let actual = sb.accounts();
        prop_assert_eq!(
            comparable(&actual),
            comparable(&expected),
            "\nexport:\n{}\n{}\nerrors: {:#?}",
            export,
            run,
            run.errors()
        );
        let got = Buckets {
            unchanged: run.count("unchanged"),
            updated: run.count("updated"),
            rejected: run.count("rejected"),
        };
        prop_assert_eq!(&got, &buckets, "\nexport:\n{}\n{}\nerrors: {:#?}", export, run, run.errors());
        prop_assert_eq!(run.count("rows_read"), rows.len() as u64);
        prop_assert_eq!(run.count("failed"), 0);
        prop_assert_eq!(run.code(), Some(if buckets.rejected > 0 { 1 } else { 0 }), "{}", run);
    }
}
