//! Bytes -> CSV records under the demo export's fixed header -> map -> validate -> diff,
//! through the library's public functions, as `pipeline::decide` calls them.
//!
//! Besides "no panic", it checks the invariants the nightly sync rests on:
//! - normalizing is idempotent: a record rebuilt from a row's normalized values maps to the
//!   same values with no problem (a value the API confirmed, seen again, is unchanged);
//! - normalized text is non-empty and trimmed; a malformed row carries no values;
//! - the duplicate scan's view of the reference agrees with the mapper's;
//! - diff against an empty and against non-empty confirmed records (a fixed account and the
//!   previous row) sends exactly the differing fields, and the row diffed against the
//!   confirmed state with that patch applied is empty; the body holds every change, never
//!   the reference, and each address object is the complete merged address.
#![no_main]

use std::sync::LazyLock;

use accountsync::config::Config;
use accountsync::diff::{apply, diff, fingerprint};
use accountsync::map::{Layout, map_record};
use accountsync::model::{ADDRESS_PREFIX, CUSTOM_PREFIX, Category, Fields, Patch, Value};
use accountsync::read::CrlfToLf;
use accountsync::validate::{reference_problem, validate};
use chrono::NaiveDate;
use csv::ByteRecord;
use libfuzzer_sys::fuzz_target;
use serde_json::Value as Json;

/// The header of `samples/crm-export-2026-12-03.csv`, which `config/demo.toml` maps.
const HEADER: &[&str] = &[
    "Account Reference",
    "Owner",
    "Status",
    "Verified",
    "Email",
    "Client User ID",
    "Salutation",
    "First Name",
    "Last Name",
    "Phone",
    "Mobile",
    "Date of Birth",
    "Gender",
    "Marketing Opt-In",
    "House Name",
    "House Number",
    "Street",
    "City",
    "District",
    "State",
    "County",
    "Postcode",
    "Country",
    "Loyalty Tier",
    "Preferred Store",
    "Referral Code",
    "Last Modified",
];

/// Rows per input: enough for duplicates and diffs against the previous row, few enough
/// to keep executions fast.
const MAX_ROWS: usize = 64;

struct Setup {
    config: Config,
    header: Vec<String>,
    layout: Layout,
    /// Per header column, the field path it feeds (None: unmapped or the reference).
    paths: Vec<Option<String>>,
    reference: usize,
    /// A typical account as the API last confirmed it.
    confirmed: Fields,
    today: NaiveDate,
}

static SETUP: LazyLock<Setup> = LazyLock::new(|| {
    let config = Config::parse(
        include_str!("../../config/demo.toml"),
        std::path::Path::new("/nonexistent/config/demo.toml"),
    )
    .expect("config/demo.toml parses");
    let header: Vec<String> = HEADER.iter().map(|h| h.to_string()).collect();
    let layout = Layout::resolve(&config.columns, &header).expect("demo columns resolve");
    let c = &config.columns;
    let mut by_header: Vec<(String, String)> = Vec::new(); // header -> path
    for (field, h) in &c.fields {
        by_header.push((h.clone(), field.clone()));
    }
    for (kind, map) in &c.addresses {
        for (field, h) in map {
            by_header.push((h.clone(), format!("{ADDRESS_PREFIX}{kind}.{field}")));
        }
    }
    for (name, h) in &c.customparameters {
        by_header.push((h.clone(), format!("{CUSTOM_PREFIX}{name}")));
    }
    let paths = header
        .iter()
        .map(|h| {
            by_header
                .iter()
                .find(|(bh, _)| bh == h)
                .map(|(_, p)| p.clone())
        })
        .collect();
    let reference = header
        .iter()
        .position(|h| *h == c.accountreference)
        .expect("reference column");
    let text = |s: &str| Value::Text(s.to_owned());
    let confirmed: Fields = [
        ("email", text("jane@example.com")),
        ("firstname", text("Jane")),
        ("marketingallowed", Value::Bool(false)),
        ("phonenumber", text("00442079460958")),
        ("addresses.home.street", text("1 Old St")),
        ("addresses.home.postcode", text("N1 1AA")),
        ("customparameters.loyaltytier", text("gold")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Setup {
        config,
        header,
        layout,
        paths,
        reference,
        confirmed,
        today: NaiveDate::from_ymd_opt(2026, 12, 3).expect("date"),
    }
});

fuzz_target!(|data: &[u8]| {
    let s = &*SETUP;
    let mut input = Vec::with_capacity(data.len() + 512);
    {
        let mut w = csv::Writer::from_writer(&mut input);
        w.write_record(&s.header).expect("header");
        w.flush().expect("flush");
    }
    input.extend_from_slice(data);
    // As `read::Export::open` reads a file.
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(s.config.input.delimiter)
        .flexible(true)
        .from_reader(CrlfToLf::new(&input[..]));
    let read_header: Vec<String> = reader
        .byte_headers()
        .expect("header reads")
        .iter()
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .collect();
    assert_eq!(read_header, s.header);

    let mut record = ByteRecord::new();
    let mut previous = Fields::new();
    for _ in 0..MAX_ROWS {
        match reader.read_byte_record(&mut record) {
            Ok(true) => check_row(s, &record, &mut previous),
            Ok(false) => break,
            // A flexible byte reader over memory has no error to give; one here would stop
            // a real run at this file.
            Err(e) => panic!("csv error on in-memory bytes: {e}"),
        }
    }
});

fn check_row(s: &Setup, record: &ByteRecord, previous: &mut Fields) {
    let formats = &s.config.input.date_formats;
    let m = map_record(&s.layout, record, formats);

    if record.len() == s.header.len()
        && record
            .get(s.reference)
            .is_some_and(|r| std::str::from_utf8(r).is_ok())
    {
        assert_eq!(s.layout.reference(record), m.reference.as_deref());
    }
    if m.malformed {
        assert!(m.fields.is_empty(), "malformed row with values: {m:?}");
        assert!(!m.problems.is_empty());
        assert!(m.problems.iter().all(|p| p.category == Category::Malformed));
        return;
    }
    for p in &m.problems {
        assert_eq!(p.category, Category::Invalid, "{p:?}");
        assert!(!p.message.is_empty() && !p.field.is_empty(), "{p:?}");
        assert!(!m.fields.contains_key(&p.field), "{p:?} and a value: {m:?}");
    }
    for (path, v) in &m.fields {
        if let Value::Text(t) = v {
            assert!(!t.is_empty(), "{path}: empty value");
            assert_eq!(t.trim(), t, "{path}: untrimmed value {t:?}");
        }
    }

    // Idempotence: the normalized values, written back into their cells, map to themselves.
    let cells: Vec<String> = (0..s.header.len())
        .map(|i| {
            if i == s.reference {
                return m.reference.clone().unwrap_or_default();
            }
            s.paths[i]
                .as_ref()
                .and_then(|p| m.fields.get(p))
                .map(ToString::to_string)
                .unwrap_or_default()
        })
        .collect();
    let again = map_record(&s.layout, &ByteRecord::from(cells), formats);
    assert_eq!(again.fields, m.fields, "normalizing twice changed values");
    assert!(
        again.problems.is_empty(),
        "normalized values fail normalizing: {:?} (from {:?})",
        again.problems,
        m.fields
    );
    assert_eq!(again.reference, m.reference);

    if let Some(reference) = &m.reference {
        if let Some(p) = reference_problem(reference) {
            assert_eq!(p.category, Category::Invalid);
        }
    }
    for p in validate(&m.fields, &s.config.limits, s.today) {
        assert_eq!(p.category, Category::Invalid, "{p:?}");
        assert!(!p.message.is_empty(), "{p:?}");
        assert!(
            m.fields.contains_key(&p.field),
            "{p:?} names no field of {m:?}"
        );
    }

    let types = s.layout.address_types();
    let empty = Fields::new();
    match diff(&m.fields, &empty, types) {
        None => assert!(m.fields.is_empty(), "values but no patch: {m:?}"),
        Some(patch) => {
            assert_eq!(patch.changes.len(), m.fields.len());
            assert!(patch.changes.iter().all(|c| c.old.is_none()));
            assert_eq!(patch.row, fingerprint(&m.fields));
            let after = apply(&empty, &patch.changes);
            assert_eq!(after, m.fields);
            check_patch(&patch, &after, types);
            assert!(diff(&m.fields, &after, types).is_none());
        }
    }
    for confirmed in [&s.confirmed, &*previous] {
        let differing: Vec<&String> = m
            .fields
            .iter()
            .filter(|(k, v)| confirmed.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .collect();
        match diff(&m.fields, confirmed, types) {
            None => assert!(differing.is_empty(), "{differing:?} not sent"),
            Some(patch) => {
                let changed: Vec<&String> = patch.changes.iter().map(|c| &c.field).collect();
                assert_eq!(changed, differing);
                for c in &patch.changes {
                    assert_eq!(c.old.as_ref(), confirmed.get(&c.field));
                    assert_eq!(Some(&c.new), m.fields.get(&c.field));
                }
                let after = apply(confirmed, &patch.changes);
                for (k, v) in confirmed {
                    if !m.fields.contains_key(k) {
                        assert_eq!(after.get(k), Some(v), "{k} lost by apply");
                    }
                }
                check_patch(&patch, &after, types);
                assert!(
                    diff(&m.fields, &after, types).is_none(),
                    "the row differs from the state its own patch made"
                );
            }
        }
    }
    *previous = m.fields;
}

/// The body carries every change under its API name, never the reference, and each
/// address object is the complete merged address of its type.
fn check_patch(patch: &Patch, after: &Fields, types: &[String]) {
    let body = &patch.body;
    assert!(!body.contains_key("accountreference"));
    let mut addresses = false;
    for c in &patch.changes {
        let json = Json::from(&c.new);
        if c.field.starts_with(ADDRESS_PREFIX) {
            addresses = true;
        } else if let Some(name) = c.field.strip_prefix(CUSTOM_PREFIX) {
            assert_eq!(body["customparameters"].get(name), Some(&json));
        } else {
            assert_eq!(body.get(&c.field), Some(&json), "{}", c.field);
        }
    }
    assert_eq!(body.contains_key("addresses"), addresses);
    if addresses {
        let array = body["addresses"].as_array().expect("addresses array");
        let mut expected = Vec::new();
        for kind in types {
            let prefix = format!("{ADDRESS_PREFIX}{kind}.");
            let mut obj: serde_json::Map<String, Json> = after
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|f| (f.to_owned(), v.into())))
                .collect();
            if !obj.is_empty() {
                obj.insert("addresstype".into(), Json::String(kind.clone()));
                expected.push(Json::Object(obj));
            }
        }
        assert_eq!(array, &expected);
    }
}
