//! Deciding one row: map -> validate -> diff, with the cache lookups the diff needs. Reads
//! the cache, never writes it; the answer is either a final [`Outcome`] or a [`Job`] to send.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use chrono::NaiveDate;
use csv::ByteRecord;

use crate::cache::{Cache, CacheError};
use crate::config::Limits;
use crate::diff::{diff, fingerprint};
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
        },
    };
    Outcome {
        origin: job.origin,
        pos: job.pos,
        reference: job.reference,
        verdict,
        stale: job.stale,
    }
}

pub enum Step {
    Done(Outcome),
    Send(Job),
}

/// References that appear on more than one row of a file, found by a first pass. The first
/// pass keeps a 128-bit hash and a line per row in one flat vector (24 bytes a row, sorted
/// once), not strings or a hash map; collisions at 128 bits are not a practical concern.
#[derive(Default)]
pub struct Duplicates {
    hashers: (RandomState, RandomState),
    lines: HashMap<[u64; 2], Vec<u64>>,
    /// Bytes the first pass read; the second pass must read the same, or the file changed
    /// in between and the duplicate verdicts would not cover it.
    pub bytes: u64,
}

impl Duplicates {
    pub fn scan(export: &mut Export, layout: &Layout) -> Result<Duplicates, ReadError> {
        let mut dups = Duplicates::default();
        let mut seen: Vec<([u64; 2], u64)> = Vec::new();
        let mut record = ByteRecord::new();
        while export.next_record(&mut record)? {
            let Some(reference) = layout.reference(&record) else {
                continue;
            };
            if reference_problem(reference).is_none() {
                seen.push((dups.key(reference), line_of(&record)));
            }
        }
        seen.sort_unstable();
        for group in seen.chunk_by(|a, b| a.0 == b.0) {
            if let [(key, _), _, ..] = group {
                dups.lines
                    .insert(*key, group.iter().map(|(_, line)| *line).collect());
            }
        }
        dups.bytes = export.offset();
        Ok(dups)
    }

    fn key(&self, reference: &str) -> [u64; 2] {
        [
            self.hashers.0.hash_one(reference),
            self.hashers.1.hash_one(reference),
        ]
    }

    pub fn lines(&self, reference: &str) -> Option<&[u64]> {
        if self.lines.is_empty() {
            return None;
        }
        self.lines.get(&self.key(reference)).map(Vec::as_slice)
    }
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
            let problem = Problem {
                category: Category::Duplicate,
                http_status: None,
                field: "accountreference".into(),
                message: format!(
                    "accountreference is on more than one row of this file (lines {}); none of them was sent",
                    list.join(", ")
                ),
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
        let stale = Stale {
            pending: valid_reference && self.cache.pending(&reference)?.is_some(),
            rejection: false,
        };
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
                }));
            }
            return self.fields(
                origin,
                pos,
                reference,
                mapped.fields,
                Stale {
                    rejection: true,
                    ..stale
                },
            );
        }
        self.fields(origin, pos, reference, mapped.fields, stale)
    }

    /// Decides a valid record: diff against the confirmed values.
    pub fn fields(
        &self,
        origin: Origin,
        pos: Position,
        reference: String,
        fields: Fields,
        stale: Stale,
    ) -> Result<Step, CacheError> {
        let unchanged = |reference, pos| {
            Step::Done(Outcome {
                origin,
                pos,
                reference,
                verdict: Verdict::Unchanged,
                stale,
            })
        };
        if self.cache.row_digest(&reference)? == Some(fingerprint(&fields)) {
            return Ok(unchanged(reference, pos));
        }
        let confirmed = self.cache.confirmed(&reference)?;
        Ok(match diff(&fields, &confirmed, self.address_types) {
            None => unchanged(reference, pos),
            Some(patch) => Step::Send(Job {
                origin,
                pos,
                reference,
                fields,
                patch,
                stale,
            }),
        })
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
