//! The nights' exports and what they mean, worked out here from CONTRACT §3-4 alone.

use std::collections::{BTreeMap, BTreeSet};

use crate::rows::{account_rng, again, broken_row, fresh, full_row};

/// Accounts of the first night; later nights add [`NEW_PER_NIGHT`] each.
const ACCOUNTS: usize = 5_000;
const NEW_PER_NIGHT: usize = 40;
pub(crate) const NIGHTS: usize = 4;

const HEADER: [&str; 7] = [
    "ref", "email", "first", "last", "street", "city", "postcode",
];
/// The API fields behind the columns after `ref`, named as the cache and `changes.csv` name
/// them (and as `util::body_value` reads them from an account).
pub(crate) const FIELDS: [&str; 6] = [
    "email",
    "firstname",
    "lastname",
    "addresses.home.street",
    "addresses.home.towncity",
    "addresses.home.postcode",
];

/// An account's values, normalized, in [`FIELDS`] order; `None`: never given.
pub(crate) type Values = [Option<String>; 6];
/// Reference -> the values the API must hold (accounts that had a valid row so far).
pub(crate) type State = BTreeMap<String, Values>;

/// CONTRACT §3 for these columns: trimmed (Rust's `str::trim`), empty means no change, the
/// e-mail lowercased.
fn normalize(field: usize, cell: &str) -> Option<String> {
    let v = cell.trim();
    match (v.is_empty(), field) {
        (true, _) => None,
        (false, 0) => Some(v.to_lowercase()),
        (false, _) => Some(v.to_owned()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Valid,
    /// Breaks a local rule (CONTRACT §5): category `invalid`.
    Invalid,
    /// One of two rows with the same reference: category `duplicate`.
    Duplicate,
}

impl Kind {
    fn category(self) -> &'static str {
        match self {
            Kind::Valid => "",
            Kind::Invalid => "invalid",
            Kind::Duplicate => "duplicate",
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Figures {
    rows: usize,
    new: usize,
    changed: usize,
    reverted: usize,
    dropped: usize,
    invalid: usize,
    /// Rows that only differ in white space, case or an empty cell: nothing to send.
    cosmetic: usize,
}

/// How an export differs from the one before it, in percent of the accounts it had.
struct Shape {
    new: usize,
    dropped: u32,
    changed: u32,
    /// Of the accounts the previous export changed: put back to their values before it.
    reverted: u32,
}

/// One CSV file the CRM drops into the inbox.
pub(crate) struct Export {
    pub(crate) name: String,
    pub(crate) text: String,
    /// (line, reference, category) of every row that must be reported, never sent.
    pub(crate) invalid: Vec<(u64, String, &'static str)>,
    /// Reverted accounts: the values they had, and the older values they go back to.
    pub(crate) reverts: BTreeMap<String, (Values, Values)>,
    /// What the API must hold after this file.
    target: State,
    pub(crate) figures: Figures,
}

/// One night: the exports in the inbox when it starts, synced in name order.
pub(crate) struct Night {
    pub(crate) number: usize,
    pub(crate) exports: Vec<Export>,
}

impl Night {
    /// What the API must hold after the night.
    pub(crate) fn target(&self) -> &State {
        &self.exports.last().expect("an export").target
    }

    /// Whether every export of the night leaves the account at the night's values, so that
    /// reading any of them again has nothing to send for it.
    pub(crate) fn steady(&self, reference: &str) -> bool {
        let last = self.target().get(reference);
        self.exports.iter().all(|e| e.target.get(reference) == last)
    }
}

/// The nights: a full first export, then nights that change, revert, drop and add accounts.
/// Night 3 holds two exports: a bulk edit and, later the same day, its partial rollback,
/// which puts many of the edited accounts back to the values the API confirmed the night
/// before. Synced in one run, an edit whose request was applied, never answered and kept
/// after its attempts is followed by a row equal to the confirmed values, which must be
/// sent all the same (ARCHITECTURE.md: the uncertain fields).
fn exports_of(night: usize) -> Vec<(&'static str, Shape)> {
    let normal = Shape {
        new: NEW_PER_NIGHT,
        dropped: 5,
        changed: 12,
        reverted: 25,
    };
    match night {
        1 => vec![(
            "night-1.csv",
            Shape {
                new: ACCOUNTS,
                dropped: 0,
                changed: 0,
                reverted: 0,
            },
        )],
        2 => vec![("night-2.csv", normal)],
        3 => vec![
            (
                "night-3a.csv",
                Shape {
                    changed: 25,
                    ..normal
                },
            ),
            (
                "night-3b.csv",
                Shape {
                    new: 0,
                    dropped: 0,
                    changed: 0,
                    reverted: 60,
                },
            ),
        ],
        _ => vec![("night-4.csv", normal)],
    }
}

/// References in the order they were first exported, and those that never get a valid row.
#[derive(Default)]
pub(crate) struct Universe {
    refs: Vec<String>,
    pub(crate) never_valid: BTreeSet<String>,
}

/// The next export (`history` holds the target after each earlier one).
///
/// Invalid and duplicate rows go only to accounts without a valid row so far (2% of the
/// first night's accounts never get one; a fifth of each later night's new accounts come
/// with an error first and are fixed in the next export). A newer invalid row replaces a
/// kept retry (CONTRACT §4: "the newer row replaces the kept one"), so for an account with
/// a kept retry the overlay of valid rows would not be what the contract asks.
fn make_export(
    name: &str,
    shape: &Shape,
    seed: u64,
    universe: &mut Universe,
    history: &[State],
) -> Export {
    let number = history.len() + 1;
    let empty = State::new();
    let prev = history.last().unwrap_or(&empty);
    let older = history.len().checked_sub(2).map(|i| &history[i]);
    let mut figures = Figures::default();
    let first_new = universe.refs.len();
    for i in 0..shape.new {
        let reference = format!("C{:05}", first_new + i);
        if number == 1 && account_rng(seed, 0, first_new + i).u32(..100) < 2 {
            universe.never_valid.insert(reference.clone());
        }
        universe.refs.push(reference);
    }
    let mut rows: Vec<([String; 7], Kind)> = Vec::new();
    let mut twins: Vec<([String; 7], Kind)> = Vec::new();
    let mut reverts = BTreeMap::new();
    for (index, reference) in universe.refs.iter().enumerate() {
        let mut rng = account_rng(seed, number, index);
        if universe.never_valid.contains(reference) {
            match rng.u32(..10) {
                0 => {} // not in this export
                1..=3 => {
                    rows.push((full_row(&mut rng, reference, number), Kind::Duplicate));
                    twins.push((full_row(&mut rng, reference, number), Kind::Duplicate));
                }
                _ => rows.push((broken_row(&mut rng, reference, number), Kind::Invalid)),
            }
            continue;
        }
        let Some(old) = prev.get(reference) else {
            if number > 1 && index >= first_new && rng.u32(..5) == 0 {
                rows.push((broken_row(&mut rng, reference, number), Kind::Invalid));
            } else {
                rows.push((full_row(&mut rng, reference, number), Kind::Valid));
                figures.new += 1;
            }
            continue;
        };
        let (drop, revert, change) = (rng.u32(..100), rng.u32(..100), rng.u32(..100));
        if drop < shape.dropped {
            figures.dropped += 1;
            continue;
        }
        // The values before the previous export changed the account, if it did.
        let before = older.and_then(|o| o.get(reference)).filter(|b| *b != old);
        let mut row: [String; 7] = Default::default();
        row[0] = reference.clone();
        let mut cosmetic = false;
        match before {
            Some(b) if revert < shape.reverted => {
                figures.reverted += 1;
                reverts.insert(reference.clone(), (old.clone(), b.clone()));
                for field in 0..6 {
                    row[field + 1] = again(&mut rng, field, &b[field], &mut cosmetic);
                }
            }
            _ if change < shape.changed => {
                figures.changed += 1;
                let forced = rng.usize(..6);
                for field in 0..6 {
                    row[field + 1] = match rng.u32(..100) {
                        _ if field == forced => fresh(&mut rng, reference, number, field),
                        0..=34 => fresh(&mut rng, reference, number, field),
                        35..=44 => String::new(), // no change
                        _ => again(&mut rng, field, &old[field], &mut cosmetic),
                    };
                }
            }
            _ => {
                let blank = (rng.u32(..100) < 3).then(|| rng.usize(..6));
                for field in 0..6 {
                    row[field + 1] = match blank == Some(field) {
                        true => String::new(),
                        false => again(&mut rng, field, &old[field], &mut cosmetic),
                    };
                }
                cosmetic |= blank.is_some();
                figures.cosmetic += usize::from(cosmetic);
            }
        }
        rows.push((row, Kind::Valid));
    }
    // A duplicate's twin comes at the end of the file, not next to it.
    rows.extend(twins);

    let mut target = prev.clone();
    let mut invalid = Vec::new();
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(HEADER).expect("csv header");
    for (i, (row, kind)) in rows.iter().enumerate() {
        out.write_record(row).expect("csv row");
        let line = i as u64 + 2; // the header is line 1; no cell holds a line break
        match kind {
            Kind::Valid => {
                let values = target.entry(row[0].clone()).or_default();
                for field in 0..6 {
                    if let Some(v) = normalize(field, &row[field + 1]) {
                        values[field] = Some(v);
                    }
                }
            }
            _ => invalid.push((line, row[0].clone(), kind.category())),
        }
    }
    figures.rows = rows.len();
    figures.invalid = invalid.len();
    Export {
        name: name.to_owned(),
        text: String::from_utf8(out.into_inner().expect("csv flush")).expect("utf-8"),
        invalid,
        reverts,
        target,
        figures,
    }
}

/// Night `number`: its exports, made in the order they are synced; `history` gets the
/// target after each.
pub(crate) fn night(
    number: usize,
    seed: u64,
    universe: &mut Universe,
    history: &mut Vec<State>,
) -> Night {
    let mut exports = Vec::new();
    for (name, shape) in exports_of(number) {
        let export = make_export(name, &shape, seed, &mut *universe, history);
        history.push(export.target.clone());
        exports.push(export);
    }
    Night { number, exports }
}
