//! The fault state of a running sandbox: the rates in force, the seeded RNGs, and the counts a
//! chaos test checks afterwards (faults drawn per kind, changes stored per account).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};

use crate::faults::{Fault, KINDS, Kind, Rates, jitter_seed, pick};

/// The fault state of a running sandbox.
pub struct Faults {
    pub slow: Duration,
    jitter: Duration,
    inner: Mutex<Inner>,
}

struct Inner {
    rates: Rates,
    seed: u64,
    rng: fastrand::Rng,
    jitter_rng: fastrand::Rng,
    /// PATCHes per fault kind drawn (`none` included).
    seen: BTreeMap<Kind, u64>,
    /// Changes stored per reference: answered 200, or applied then dropped.
    applied: BTreeMap<String, u64>,
}

impl Faults {
    /// No faults until [`Faults::set`].
    pub fn new(seed: u64, slow: Duration, jitter: Duration) -> Self {
        Faults {
            slow,
            jitter,
            inner: Mutex::new(Inner {
                rates: Rates::default(),
                seed,
                rng: fastrand::Rng::with_seed(seed),
                jitter_rng: fastrand::Rng::with_seed(jitter_seed(seed)),
                seen: KINDS.iter().map(|k| (*k, 0)).collect(),
                applied: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fault for the next PATCH (one draw), counted.
    pub fn draw(&self) -> Fault {
        let mut inner = self.lock();
        let draw = inner.rng.u64(..);
        let fault = pick(&inner.rates, draw);
        *inner.seen.entry(fault.kind()).or_default() += 1;
        fault
    }

    /// The jitter for the next API request.
    pub fn jitter(&self) -> Duration {
        if self.jitter.is_zero() {
            return Duration::ZERO;
        }
        let max = u64::try_from(self.jitter.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(self.lock().jitter_rng.u64(0..=max))
    }

    /// Replaces the rates (already checked); with `seed`, restarts both RNGs from it.
    pub fn set(&self, rates: Rates, seed: Option<u64>) {
        let mut inner = self.lock();
        inner.rates = rates;
        if let Some(seed) = seed {
            inner.seed = seed;
            inner.rng = fastrand::Rng::with_seed(seed);
            inner.jitter_rng = fastrand::Rng::with_seed(jitter_seed(seed));
        }
    }

    pub fn record_applied(&self, reference: &str) {
        *self
            .lock()
            .applied
            .entry(reference.to_string())
            .or_default() += 1;
    }

    /// `{"rates": {...}, "seed": N}`
    pub fn config_json(&self) -> Value {
        let inner = self.lock();
        json!({ "rates": inner.rates, "seed": inner.seed })
    }

    /// `{"seed": N, "rates": {...}, "faults": {kind: n}, "applied_per_account": {ref: n}}`
    pub fn stats_json(&self) -> Value {
        let inner = self.lock();
        let seen: serde_json::Map<String, Value> = inner
            .seen
            .iter()
            .map(|(k, n)| (k.name().to_string(), json!(n)))
            .collect();
        json!({
            "seed": inner.seed,
            "rates": inner.rates,
            "faults": seen,
            "applied_per_account": inner.applied,
        })
    }
}
