//! Fault injection: the faults, their rates and flags, and which fault (if any) one draw of
//! the seeded RNG gives a PATCH. The RNGs and counts of a running sandbox are in
//! `fault_state.rs`; what each fault does on the wire is in `fault_http.rs`.
//!
//! One draw per PATCH decides both the fault and its variant (502 or 503, the `Retry-After`
//! form), so a seed replays the same sequence of faults for the same order of PATCHes,
//! whatever the rates of the other requests or the jitter. Jitter has its own RNG, seeded from
//! the same seed, for the same reason.

use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

pub use crate::fault_state::Faults;

/// The rates, each the chance (0.0–1.0) that a PATCH gets that fault. Also the JSON of
/// `GET`/`POST /_sandbox/faults`, where an absent rate is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rates {
    #[serde(rename = "500")]
    pub error_500: f64,
    #[serde(rename = "503")]
    pub error_503: f64,
    #[serde(rename = "429")]
    pub error_429: f64,
    pub reset: f64,
    pub slow: f64,
    pub applied_drop: f64,
}

impl Rates {
    /// In the fixed order a draw is matched against them.
    fn in_order(&self) -> [(Kind, f64); 6] {
        [
            (Kind::Error500, self.error_500),
            (Kind::Error503, self.error_503),
            (Kind::Error429, self.error_429),
            (Kind::Reset, self.reset),
            (Kind::Slow, self.slow),
            (Kind::AppliedDrop, self.applied_drop),
        ]
    }

    /// Each rate within 0–1, and together at most 1: a request gets one fault at most.
    pub fn check(&self) -> Result<(), String> {
        let rates = self.in_order();
        if let Some((kind, rate)) = rates.iter().find(|(_, r)| !(0.0..=1.0).contains(r)) {
            return Err(format!(
                "rate {} for {} is not within 0.0-1.0",
                rate,
                kind.name()
            ));
        }
        let sum: f64 = rates.iter().map(|(_, r)| r).sum();
        // Tolerance: 0.1 + 0.2 + 0.7 must pass.
        if sum > 1.0 + 1e-9 {
            return Err(format!(
                "the fault rates add up to {sum}; at most 1.0 (one fault per request)"
            ));
        }
        Ok(())
    }

    pub fn any(&self) -> bool {
        self.in_order().iter().any(|(_, r)| *r > 0.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    None,
    Error500,
    Error503,
    Error429,
    Reset,
    Slow,
    AppliedDrop,
}

pub const KINDS: [Kind; 7] = [
    Kind::None,
    Kind::Error500,
    Kind::Error503,
    Kind::Error429,
    Kind::Reset,
    Kind::Slow,
    Kind::AppliedDrop,
];

impl Kind {
    /// The name in `/_sandbox/stats` and the request log (the JSON keys of [`Rates`]).
    pub fn name(self) -> &'static str {
        match self {
            Kind::None => "none",
            Kind::Error500 => "500",
            Kind::Error503 => "503",
            Kind::Error429 => "429",
            Kind::Reset => "reset",
            Kind::Slow => "slow",
            Kind::AppliedDrop => "applied_drop",
        }
    }
}

/// The fault one PATCH gets, with its variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Error500,
    /// 502 or 503.
    Unavailable(u16),
    /// `Retry-After` as an HTTP-date (else in seconds).
    TooManyRequests {
        http_date: bool,
    },
    Reset,
    Slow,
    AppliedDrop,
}

impl Fault {
    pub fn kind(self) -> Kind {
        match self {
            Fault::None => Kind::None,
            Fault::Error500 => Kind::Error500,
            Fault::Unavailable(_) => Kind::Error503,
            Fault::TooManyRequests { .. } => Kind::Error429,
            Fault::Reset => Kind::Reset,
            Fault::Slow => Kind::Slow,
            Fault::AppliedDrop => Kind::AppliedDrop,
        }
    }
}

/// The fault for one 64-bit draw: the top 53 bits make a uniform number in [0, 1) matched
/// against the rates in order; the low bits choose the variant.
pub fn pick(rates: &Rates, draw: u64) -> Fault {
    let x = (draw >> 11) as f64 / (1u64 << 53) as f64;
    let mut upto = 0.0;
    let kind = rates
        .in_order()
        .into_iter()
        .find_map(|(kind, rate)| {
            upto += rate;
            (rate > 0.0 && x < upto).then_some(kind)
        })
        .unwrap_or(Kind::None);
    match kind {
        Kind::None => Fault::None,
        Kind::Error500 => Fault::Error500,
        Kind::Error503 => Fault::Unavailable(if draw & 1 == 0 { 503 } else { 502 }),
        // One in four.
        Kind::Error429 => Fault::TooManyRequests {
            http_date: (draw >> 1) & 3 == 0,
        },
        Kind::Reset => Fault::Reset,
        Kind::Slow => Fault::Slow,
        Kind::AppliedDrop => Fault::AppliedDrop,
    }
}

/// The jitter RNG's seed: derived from the fault seed so one `--seed` fixes both, but a
/// different stream so jitter draws do not shift the fault sequence.
pub fn jitter_seed(seed: u64) -> u64 {
    seed ^ 0x9E37_79B9_7F4A_7C15
}

/// `--fault-*`, `--seed`, `--slow-ms`, `--jitter-ms`.
#[derive(Debug, Clone, Args)]
#[command(
    next_help_heading = "Fault injection (RATE: 0.0-1.0 per authorised PATCH, together at most 1; \
                              change at run time with POST /_sandbox/faults)"
)]
pub struct FaultArgs {
    /// Rate of 500 `• internal server error`.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_500: f64,
    /// Rate of 502 or 503 (half each).
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_503: f64,
    /// Rate of 429 with `Retry-After: 1`, or (one in four) an HTTP-date 1-2 s ahead.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_429: f64,
    /// Rate of connection resets (RST) before any response; the change is not applied.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_reset: f64,
    /// Rate of answers delayed by --slow-ms, then 504; the change is not applied.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_slow: f64,
    /// Rate of changes applied and stored, then the connection reset with no response.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_applied_drop: f64,
    /// Seed of the fault (and jitter) RNG, to replay a sequence; default: random, shown by
    /// GET /_sandbox/stats.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// How long a `--fault-slow` answer is delayed (meant to outlast the client's timeout).
    #[arg(long, value_name = "MS", default_value_t = 35_000)]
    pub slow_ms: u64,
    /// Adds a uniform 0..=J ms to --latency-ms, per API request (seeded).
    #[arg(long, value_name = "J", default_value_t = 0)]
    pub jitter_ms: u64,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err("a rate is a number from 0.0 to 1.0".into())
    }
}

impl FaultArgs {
    pub fn rates(&self) -> Rates {
        Rates {
            error_500: self.fault_500,
            error_503: self.fault_503,
            error_429: self.fault_429,
            reset: self.fault_reset,
            slow: self.fault_slow,
            applied_drop: self.fault_applied_drop,
        }
    }

    pub fn build(&self) -> anyhow::Result<Faults> {
        let rates = self.rates();
        rates.check().map_err(anyhow::Error::msg)?;
        let seed = self.seed.unwrap_or_else(|| fastrand::u64(..));
        if rates.any() {
            tracing::warn!(seed, "fault injection is on");
        }
        let faults = Faults::new(
            seed,
            Duration::from_millis(self.slow_ms),
            Duration::from_millis(self.jitter_ms),
        );
        faults.set(rates, None);
        Ok(faults)
    }
}

#[cfg(test)]
#[path = "faults_tests.rs"]
mod tests;
