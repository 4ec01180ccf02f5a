//! Seen from the API: how often the sandbox stored each account (its
//! `applied_per_account`) against what the exports asked plus what dropped answers and kills
//! can repeat, and the figures for the closing note.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::Value;

use crate::bench::Bench;
use crate::checks::story;
use crate::exports::{FIELDS, Night, State, Universe, Values};
use crate::kills::kills;
use crate::util::{self, Logged};

/// Seen from the API. The sandbox counts, per account, every change it stored (answered
/// 200, or stored and the answer dropped). The bound, per account:
///
///   applied <= asked + dropped + killed
///
/// `asked`: exports whose valid row gave the account other values than the export before
/// left it with (its first valid row included), each sent and stored once when all goes
/// well. `dropped`: its requests the sandbox stored and then reset (`applied_drop`): the
/// client cannot know they landed, keeps the fields uncertain and sends them once more,
/// in the same run or with the next row. `killed`: runs killed before their end-of-run
/// flush while the sandbox saw a request for the account; its last one may have been
/// stored but not answered or not recorded, or its confirmation lost with sled's
/// unflushed last half second: one repeat each. A kill after the flush (row index, open
/// records, backup, archive, summary) finds every outcome on disk and can make nothing be
/// sent again; nor can a run that sent the account nothing. Should a kill damage the
/// cache, the backup it is restored from lacks what runs killed after their flush but
/// before their backup confirmed: then every killed run with a request for the account
/// counts. A client timeout on a stored answer would be one more kind of repeat; with a
/// 1 s timeout and answers within milliseconds (slow faults store nothing) there are none.
pub(crate) struct Applied {
    requests: usize,
    faults: Value,
    accounts: usize,
    stored: u64,
    /// (ref, applied, asked, dropped, killed) of every account over the bound.
    over: Vec<(String, u64, u64, u64, u64)>,
    repeats: u64,
    reverts_after_drop: usize,
}

impl Applied {
    /// Counts, once the runs are over, what the sandbox stored for each account.
    pub(crate) fn count(bench: &Bench, history: &[State], nights: &[Night]) -> Self {
        let sb = bench.sb;
        let requests = sb.requests();
        let stats = sb.stats();
        let applied = stats["applied_per_account"]
            .as_object()
            .expect("applied_per_account");
        let mut over = Vec::new();
        let mut repeats = 0;
        let mut mine: BTreeMap<&str, Vec<&Logged>> = BTreeMap::new();
        for r in &requests {
            if let Some(reference) = &r.reference {
                mine.entry(reference).or_default().push(r);
            }
        }
        for (reference, n) in applied {
            let n = n.as_u64().unwrap_or(0);
            let asked = changes_asked(history, reference);
            let mine = mine.get(reference.as_str()).cloned().unwrap_or_default();
            let dropped = mine
                .iter()
                .filter(|r| r.fault.as_deref() == Some("applied_drop"))
                .count() as u64;
            let killed = bench
                .runs
                .iter()
                .filter(|run| run.before_flush || (run.killed.is_some() && bench.recoveries > 0))
                .filter(|run| mine.iter().any(|r| run.sent(r)))
                .count() as u64;
            repeats += n.saturating_sub(asked);
            if n > asked + dropped + killed {
                over.push((reference.clone(), n, asked, dropped, killed));
            }
        }
        // Reverts that only the uncertainty rule sends: after the last confirmed request with
        // the values reverted from, one with them was stored and its answer dropped, and then
        // the revert's values went out.
        let mut reverts_after_drop = 0;
        for export in nights.iter().flat_map(|n| &n.exports) {
            for (reference, (from, to)) in &export.reverts {
                let mine = mine.get(reference.as_str()).cloned().unwrap_or_default();
                let Some(t) = mine.iter().rposition(|r| carries(&r.body, to, from)) else {
                    continue;
                };
                reverts_after_drop += usize::from(
                    mine[..t]
                        .iter()
                        .rev()
                        .filter(|r| carries(&r.body, from, to))
                        .take_while(|r| r.status != 200)
                        .any(|r| r.fault.as_deref() == Some("applied_drop")),
                );
            }
        }
        Applied {
            requests: requests.len(),
            faults: stats["faults"].clone(),
            accounts: applied.len(),
            stored: applied.values().filter_map(Value::as_u64).sum::<u64>(),
            over,
            repeats,
            reverts_after_drop,
        }
    }

    /// Figures for the closing note.
    pub(crate) fn note(
        &self,
        nights: &[Night],
        bench: &Bench,
        history: &[State],
        universe: &Universe,
        clock: Instant,
    ) {
        let (kills, phases) = kills(&bench.runs);
        let target = history.last().expect("history");
        let Applied {
            repeats,
            reverts_after_drop,
            ..
        } = self;
        for export in nights.iter().flat_map(|n| &n.exports) {
            eprintln!("chaos export {}: {:?}", export.name, export.figures);
        }
        eprintln!(
            "chaos: {} runs, {} killed with SIGKILL {phases:?}; {} requests, faults {}; {} accounts applied {} times ({repeats} beyond what was asked); {reverts_after_drop} reverts after a dropped answer; {} accounts expected, {} never valid; {} cache recoveries; {:.1} s",
            bench.runs.len(),
            kills.len(),
            self.requests,
            self.faults,
            self.accounts,
            self.stored,
            target.len(),
            universe.never_valid.len(),
            bench.recoveries,
            clock.elapsed().as_secs_f64()
        );
    }

    /// No account was stored more often than the bound allows.
    pub(crate) fn check_bound(&self, failures: &mut Vec<String>, bench: &Bench, history: &[State]) {
        let over = &self.over;
        check!(
            failures,
            over.is_empty(),
            "{} accounts stored more often than asked + dropped + killed, e.g. (ref, applied, asked, dropped, killed) {:?}\n{}",
            over.len(),
            &over[..over.len().min(5)],
            over.first()
                .map(|o| story(&o.0, history, bench.sb, &bench.runs))
                .unwrap_or_default()
        );
    }
}

/// How many values each account was asked to take, export after export (its first valid
/// row included): an export that leaves the account's values as they were asks nothing.
fn changes_asked(history: &[State], reference: &str) -> u64 {
    let mut last: Option<&Values> = None;
    let mut n = 0;
    for state in history {
        let now = state.get(reference);
        if now.is_some() && now != last {
            n += 1;
        }
        last = now;
    }
    n
}

/// Whether a PATCH body carries the values wherever they differ from `other`.
fn carries(body: &Value, values: &Values, other: &Values) -> bool {
    (0..6)
        .filter(|f| values[*f] != other[*f])
        .all(|f| util::body_value(body, FIELDS[f]) == values[f])
}
