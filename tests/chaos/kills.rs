//! When a run is killed: the triggers (a moment, a number of requests, a step of the
//! end-of-run sequence), each night's kill schedule, and where the kills landed.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::bench::{Bench, RunLog};
use crate::exports::Night;

const KILLS_PER_NIGHT: usize = 4;
/// Runs tried per night to get its kills: a run can end before its kill moment comes.
const ATTEMPTS_PER_NIGHT: usize = 8;

/// A step of the end-of-run sequence (ARCHITECTURE.md, the write order, step 5), seen from
/// outside: the file it writes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Step {
    RowIndex,
    OpenRecords,
    Backup,
    Archived,
}

pub(crate) const STEPS: [Step; 4] = [
    Step::RowIndex,
    Step::OpenRecords,
    Step::Backup,
    Step::Archived,
];

#[derive(Clone, Copy, Debug)]
pub(crate) enum Trigger {
    /// Killed this long after the start.
    At(Duration),
    /// Killed once the sandbox has drawn a fault (or none) for this many more PATCHes.
    Requests(u64),
    /// Killed as soon as the step's file is seen.
    After(Step),
}

impl Bench<'_> {
    /// Kill moments: each night tries each kind of trigger once, in a seeded order, then
    /// seeded picks until it has its kills.
    pub(crate) fn kill_runs(&mut self, night: &Night) {
        let mut kinds = vec![0, 1, 2];
        self.rng.shuffle(&mut kinds);
        let (mut kills, mut attempts) = (0, 0);
        while kills < KILLS_PER_NIGHT && attempts < ATTEMPTS_PER_NIGHT {
            let kind = kinds
                .get(attempts)
                .copied()
                .unwrap_or_else(|| self.rng.u32(..3));
            attempts += 1;
            let trigger = self.trigger(night, kind);
            self.run(night, Some(trigger));
            kills += usize::from(self.runs.last().is_some_and(|r| r.killed.is_some()));
        }
    }

    /// A trigger of the kind drawn (0: a moment, 1: a number of requests, 2: a step), fitted
    /// to the work the night has left.
    fn trigger(&mut self, night: &Night, kind: u32) -> Trigger {
        // Work left, roughly: accounts the cache does not hold confirmed at the night's
        // values, and those the night takes through other values first.
        let left = night
            .target()
            .iter()
            .filter(|(r, v)| {
                self.last.confirmed.get(*r) != Some(*v)
                    || self.last.open.contains(*r)
                    || !night.steady(r)
            })
            .count();
        let inbox = night
            .exports
            .iter()
            .any(|e| self.wd.path("inbox").join(&e.name).exists());
        match (kind, left, inbox) {
            // A run: about 1 s of inbox settling (none with an empty inbox), the
            // sending, then the end sequence (a few hundred ms with a 5,000-account
            // backup). Up to 1.1 of that, so some runs outlive their kill.
            (0, _, _) | (1, 0, _) => {
                let settle = if inbox { 1.2 } else { 0.1 };
                let expected = settle + left as f64 / self.throughput + 0.3;
                Trigger::At(Duration::from_secs_f64(expected * self.rng.f64() * 1.1))
            }
            (1, _, _) => Trigger::Requests(self.rng.u64(1..=left as u64)),
            // Archiving needs an export in the inbox.
            (_, _, true) => Trigger::After(STEPS[self.rng.usize(..STEPS.len())]),
            (_, _, false) => Trigger::After(STEPS[self.rng.usize(..STEPS.len() - 1)]),
        }
    }
}

/// Where the kills landed: every killed run's phase, and how many kills each phase got.
pub(crate) fn kills(runs: &[RunLog]) -> (Vec<&String>, BTreeMap<&str, usize>) {
    let kills: Vec<&String> = runs.iter().filter_map(|r| r.killed.as_ref()).collect();
    let mut phases: BTreeMap<&str, usize> = BTreeMap::new();
    for k in &kills {
        *phases.entry(k.as_str()).or_default() += 1;
    }
    (kills, phases)
}

/// Kills spread over the whole run: enough of them, and some in the end-of-run sequence.
pub(crate) fn check_kills_spread(runs: &[RunLog]) {
    let (kills, phases) = kills(runs);
    assert!(
        kills.len() >= 10,
        "only {} runs were killed mid-way",
        kills.len()
    );
    assert!(
        phases.keys().any(|p| p.starts_with("after")),
        "no kill landed in the end-of-run sequence: {phases:?}"
    );
}
