//! Deciding one row: map -> validate -> diff, with the cache lookups the diff needs. Reads
//! the cache, never writes it; the answer is either a final [`Outcome`] or a [`Job`] to send.

use std::collections::{BTreeSet, HashMap};

use chrono::NaiveDate;
use csv::ByteRecord;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::cache::{Cache, CacheError, RowIndex, hash128, index_key_of as key_of};
use crate::config::{Config, Limits};
use crate::diff::{diff_against, fingerprint};
use crate::map::{Layout, map_record};
use crate::model::{Category, Fields, Patch, Position, Problem};
use crate::read::{Export, ReadError, line_of};
use crate::record::{Origin, Outcome, Stale, Verdict};
use crate::send::{Delivery, Outgoing};
use crate::validate::{reference_problem, validate};

/// A patch on its way to the API, with what the record stage needs afterwards.
#[derive(Clone, Debug)]
pub struct Job {
    pub origin: Origin,
    pub pos: Position,
    pub reference: String,
    /// The whole normalized row: remembered on rejection, kept in the outbox on failure.
    pub fields: Fields,
    pub patch: Patch,
    pub stale: Stale,
    /// The raw row's digest, for the row index once the outcome is known.
    pub raw: Option<u64>,
}

impl Outgoing for Job {
    fn reference(&self) -> &str {
        &self.reference
    }
    fn patch(&self) -> &Patch {
        &self.patch
    }
}

/// Turns the send stage's answer into the record stage's input.
pub fn delivered(job: Job, delivery: Delivery) -> Outcome {
    let verdict = match delivery {
        Delivery::Confirmed => Verdict::Updated(job.patch),
        Delivery::Rejected(problems) => Verdict::Rejected {
            problems,
            remember: Some(job.fields),
        },
        Delivery::Failed(problem) => Verdict::Failed {
            problem,
            fields: job.fields,
            attempted: job.patch.fields(),
        },
    };
    Outcome {
        origin: job.origin,
        pos: job.pos,
        reference: job.reference,
        verdict,
        stale: job.stale,
        raw: job.raw,
    }
}

pub enum Step {
    Done(Outcome),
    Send(Job),
}

/// What a raw row's digest is salted with: everything besides the row that shapes how it
/// is mapped and checked. A changed header, mapping, date format or limit, or a new release
/// (whose normalizing may differ), gives other digests, so the row index misses and every
/// row is decided in full once. Today's date is left out on purpose: the only rule that
/// reads it (a birth date before today) cannot turn a row that passed into one that fails.
#[derive(Clone, Copy, Debug)]
pub struct RowSeed(u64);

impl RowSeed {
    pub fn new(config: &Config, header: &[String]) -> RowSeed {
        let salt = format!(
            "{} {} {:?} {:?} {:?} {:?} {}",
            env!("CARGO_PKG_VERSION"),
            crate::map::RULES_REVISION,
            header,
            config.columns,
            config.input.date_formats,
            config.limits,
            config.input.delimiter,
        );
        RowSeed(xxh3_64_with_seed(salt.as_bytes(), 0x6163_6374_7379_6e63))
    }

    #[cfg(test)]
    pub fn from_salt(salt: &str) -> RowSeed {
        RowSeed(xxh3_64_with_seed(salt.as_bytes(), 0))
    }

    /// Covers the cells and where each ends, so `a,bc` and `ab,c` differ.
    pub fn digest(&self, record: &ByteRecord, scratch: &mut Vec<u8>) -> u64 {
        scratch.clear();
        for field in record {
            scratch.extend_from_slice(&(field.len() as u32).to_le_bytes());
        }
        let cells = xxh3_64_with_seed(record.as_slice(), self.0);
        xxh3_64_with_seed(scratch, cells)
    }
}

/// One row of the first pass: its reference's 128-bit hash (as two halves, so the struct is
/// 40 bytes, not 48 with a `u128`'s alignment), where it is, and its raw digest.
struct Seen {
    /// The high half: the row index's key.
    key: u64,
    low: u64,
    line: u64,
    row: u64,
    digest: u64,
}

impl Seen {
    fn hash(&self) -> u128 {
        (u128::from(self.key) << 64) | u128::from(self.low)
    }
}

/// The first pass over a file: which references appear on more than one row (a row may only
/// be sent once its reference is known to be alone), and which rows the row index already
/// knows as unchanged. It keeps a hash, a line, a row number and a digest per row in one
/// flat vector (40 bytes a row, sorted once) and a bit per row, not strings.
#[derive(Default)]
pub struct Duplicates {
    lines: HashMap<u128, Vec<u64>>,
    /// Bit `i`: row `i` (0-based, header excluded) is the row the index holds for its
    /// account. Such a row is unchanged unless it turns out to be a duplicate.
    known: Vec<u64>,
    known_rows: u64,
    pub rows: u64,
    /// Bytes the first pass read; the second pass must read the same, or the file changed
    /// in between and the duplicate verdicts would not cover it.
    pub bytes: u64,
}

impl Duplicates {
    pub fn scan(
        export: &mut Export,
        layout: &Layout,
        seed: RowSeed,
        index: &RowIndex,
        mut progress: impl FnMut(u64),
    ) -> Result<Duplicates, ReadError> {
        let mut dups = Duplicates::default();
        let mut seen: Vec<Seen> = Vec::new();
        let mut record = ByteRecord::new();
        let mut scratch = Vec::new();
        let check_index = !index.is_empty();
        while export.next_record(&mut record)? {
            let row = dups.rows;
            dups.rows += 1;
            if row % 64 == 0 {
                dups.known.push(0);
                progress(export.offset());
            }
            let Some(reference) = layout.reference(&record) else {
                continue;
            };
            if reference_problem(reference).is_some() {
                continue;
            }
            let hash = hash128(reference);
            seen.push(Seen {
                key: key_of(hash),
                low: hash as u64,
                line: line_of(&record),
                row,
                digest: match check_index {
                    true => seed.digest(&record, &mut scratch),
                    false => 0,
                },
            });
        }
        // One sort serves both questions: equal references are neighbours, and the index
        // key is the hash's high half, so the index is walked in order alongside.
        seen.sort_unstable_by_key(|s| (s.key, s.low));
        if check_index {
            let mut cursor = index.cursor();
            for s in &seen {
                if cursor.get(s.key) == Some(s.digest) {
                    dups.known[(s.row / 64) as usize] |= 1 << (s.row % 64);
                    dups.known_rows += 1;
                }
            }
        }
        for group in seen.chunk_by(|a, b| (a.key, a.low) == (b.key, b.low)) {
            if let [first, _, ..] = group {
                dups.lines
                    .insert(first.hash(), group.iter().map(|s| s.line).collect());
            }
        }
        dups.bytes = export.offset();
        Ok(dups)
    }

    pub fn lines(&self, reference: &str) -> Option<&[u64]> {
        if self.lines.is_empty() {
            return None;
        }
        self.lines.get(&hash128(reference)).map(Vec::as_slice)
    }

    /// Whether row `row` (0-based) is known unchanged from the index (duplicates aside).
    pub fn known(&self, row: u64) -> bool {
        self.known
            .get((row / 64) as usize)
            .is_some_and(|bits| bits & (1 << (row % 64)) != 0)
    }

    /// Every row is known unchanged and none is a duplicate: the file needs no second pass.
    pub fn all_known(&self) -> bool {
        self.lines.is_empty() && self.known_rows == self.rows
    }
}

/// The record a valid newer row makes of a kept (unconfirmed) one: the newer row's values
/// win, and what the kept row changed that the newer row leaves empty ("no change") is still
/// sent, since it was never confirmed and an unconfirmed change is always tried again. The
/// API then ends up with the latest value the exports gave for each field, whichever
/// requests failed on the way, and an address object sent whole keeps the kept street the
/// newer row leaves empty instead of losing it.
fn carry_forward(mut kept: Fields, row: Fields) -> Fields {
    if kept.is_empty() {
        return row;
    }
    kept.extend(row);
    kept
}

pub struct Decider<'a> {
    pub cache: &'a Cache,
    pub limits: &'a Limits,
    pub date_formats: &'a [String],
    pub address_types: &'a [String],
    pub today: NaiveDate,
    pub retry_rejected: bool,
}

impl Decider<'_> {
    /// Decides one record of a file.
    pub fn row(
        &self,
        file: usize,
        pos: Position,
        layout: &Layout,
        dups: &Duplicates,
        record: &ByteRecord,
        raw: Option<u64>,
    ) -> Result<Step, CacheError> {
        let origin = Origin::File(file);
        let done = |reference: String, problems: Vec<Problem>| {
            Step::Done(Outcome {
                origin,
                pos: pos.clone(),
                reference,
                verdict: Verdict::Rejected {
                    problems,
                    remember: None,
                },
                stale: Stale::default(),
                raw,
            })
        };
        if let Some(reference) = layout.reference(record)
            && let Some(lines) = dups.lines(reference)
        {
            // At most 10 lines: a reference column mapped to a constant would otherwise
            // write every line number on every row, quadratic in the file size.
            let mut list: Vec<String> = lines.iter().take(10).map(u64::to_string).collect();
            if lines.len() > 10 {
                list.push(format!("and {} more", lines.len() - 10));
            }
            let mut message = format!(
                "accountreference is on more than one row of this file (lines {}); none of them was sent",
                list.join(", ")
            );
            // CONTRACT §4: a duplicate is reported as `duplicate` only. A row that is also
            // malformed says so in the same message, so the data team fixes both at once.
            let mapped = map_record(layout, record, self.date_formats);
            if mapped.malformed {
                let why: Vec<&str> = mapped.problems.iter().map(|p| p.message.as_str()).collect();
                message.push_str(&format!("; this row is also malformed: {}", why.join("; ")));
            }
            let problem = Problem {
                category: Category::Duplicate,
                http_status: None,
                field: "accountreference".into(),
                message,
            };
            return Ok(done(reference.to_owned(), vec![problem]));
        }
        let mut mapped = map_record(layout, record, self.date_formats);
        let reference = mapped.reference.take().unwrap_or_default();
        if mapped.malformed {
            return Ok(done(reference, mapped.problems));
        }
        let mut problems = Vec::new();
        problems.extend(reference_problem(&reference));
        problems.extend(mapped.problems);
        problems.extend(validate(&mapped.fields, self.limits, self.today));
        let valid_reference = reference_problem(&reference).is_none();
        let pending = match valid_reference {
            true => self.cache.pending(&reference)?,
            false => None,
        };
        let stale = Stale {
            pending: pending.is_some(),
            rejection: false,
        };
        let (kept, uncertain) = pending.map(|p| (p.fields, p.uncertain)).unwrap_or_default();
        if !problems.is_empty() {
            let mut step = done(reference, problems);
            if let Step::Done(o) = &mut step {
                o.stale = stale; // a newer row replaces a kept one, even an invalid row
            }
            return Ok(step);
        }
        if let Some(rejection) = self.cache.rejection(&reference)? {
            if !self.retry_rejected && rejection.fields == mapped.fields {
                return Ok(Step::Done(Outcome {
                    origin,
                    pos,
                    reference,
                    verdict: Verdict::Rejected {
                        problems: rejection.problems,
                        remember: None,
                    },
                    stale,
                    raw,
                }));
            }
            let stale = Stale {
                rejection: true,
                ..stale
            };
            let fields = carry_forward(kept, mapped.fields);
            return self.fields(origin, pos, reference, fields, stale, raw, &uncertain);
        }
        let fields = carry_forward(kept, mapped.fields);
        self.fields(origin, pos, reference, fields, stale, raw, &uncertain)
    }

    /// Decides a valid record: diff against the confirmed values. `uncertain` are the
    /// fields a kept retry of the account may have changed at the API unconfirmed: they
    /// count as never confirmed, so the row sends whatever it has for them (even the value
    /// confirmed before: a row reverted after an applied-but-unanswered request must still
    /// put the API back).
    #[allow(clippy::too_many_arguments)]
    pub fn fields(
        &self,
        origin: Origin,
        pos: Position,
        reference: String,
        fields: Fields,
        stale: Stale,
        raw: Option<u64>,
        uncertain: &BTreeSet<String>,
    ) -> Result<Step, CacheError> {
        let unchanged = |reference, pos| {
            Step::Done(Outcome {
                origin,
                pos,
                reference,
                verdict: Verdict::Unchanged,
                stale,
                raw,
            })
        };
        if uncertain.is_empty() && self.cache.row_digest(&reference)? == Some(fingerprint(&fields))
        {
            return Ok(unchanged(reference, pos));
        }
        let confirmed = self.cache.confirmed(&reference)?;
        Ok(
            match diff_against(&fields, &confirmed, uncertain, self.address_types) {
                None => unchanged(reference, pos),
                Some(patch) => Step::Send(Job {
                    origin,
                    pos,
                    reference,
                    fields,
                    patch,
                    stale,
                    raw,
                }),
            },
        )
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
