//! The rate ceiling: a governor GCRA limiter (requests_per_second, burst) that every attempt
//! passes, retries included, plus a shared pause that a 429's `Retry-After` sets for the
//! whole sender, not one task.
//!
//! Below the ceiling, an adaptive rate (AIMD, as TCP does with its window): an API that keeps
//! answering 429 although we are within the agreed quota has a lower limit than agreed, and
//! hammering it after each pause only buys more 429s. A burst of 429s halves the rate (once
//! per second at most, so one burst of in-flight answers counts once); each second of
//! successes adds back 2% of the configured rate, up to 90% of the rate that drew the last
//! 429 (TCP's slow-start threshold), and 0.2% a second beyond it, so the rate does not run
//! straight back into the limit it just found; a 429 while probing past that threshold cuts
//! back to 90%, not to half. Any answer but a 429 or a failure counts as success here (a
//! night of rejected rows is no reason to stay slow). The configured rate stays the ceiling.
//!
//! Once the API has answered 429, requests are paced evenly for the rest of the run, at the
//! ceiling too: governor's burst is credit saved while sending slower, and spending it in one
//! go against an API that counts per rolling second is what drew the 429 (measured: 50,000
//! rows at 200/s against a 200-per-second API gave a 429 every 25 s and 144 req/s on average).

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use crate::config::Rate;

pub struct Throttle {
    limiter: DefaultDirectRateLimiter,
    pause_until: Mutex<Option<Instant>>,
    adaptive: Mutex<Adaptive>,
}

struct Adaptive {
    ceiling: f64,
    rate: f64,
    lowest: f64,
    /// When the next request may start under the adaptive rate (unused until a 429).
    next: Instant,
    last_cut: Option<Instant>,
    /// Pacing is even (no burst) from the first 429 on.
    last_429: Option<Instant>,
    /// 90% of the rate at the last cut: the raise slows down past it.
    threshold: f64,
    last_raise: Instant,
}

/// The adaptive rate never goes below this share of the configured one.
const FLOOR: f64 = 1.0 / 64.0;
/// Added back per second of successes, as a share of the configured rate, below and above
/// the threshold.
const RAISE: f64 = 0.02;
const RAISE_PAST_THRESHOLD: f64 = 0.002;

impl Adaptive {
    fn new(ceiling: f64, now: Instant) -> Adaptive {
        Adaptive {
            ceiling,
            rate: ceiling,
            lowest: ceiling,
            next: now,
            last_cut: None,
            last_429: None,
            threshold: ceiling,
            last_raise: now,
        }
    }

    /// A 429 at `now`: halve, or take 10% off while probing past the threshold (TCP's fast
    /// recovery, in spirit: the limit was found just under here); nothing if cut less than
    /// a second ago (the other answers of the same burst). Returns whether it cut.
    fn cut(&mut self, now: Instant) -> bool {
        self.last_429 = Some(now);
        if self
            .last_cut
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return false;
        }
        let probing = self.rate > self.threshold;
        self.threshold = self.rate * 0.9;
        let cut = if probing {
            self.threshold
        } else {
            self.rate / 2.0
        };
        self.rate = cut.max(self.ceiling * FLOOR);
        self.lowest = self.lowest.min(self.rate);
        self.last_cut = Some(now);
        self.last_raise = now;
        true
    }

    /// A 2xx at `now`: for each whole second since the last raise, creep back up.
    fn raise(&mut self, now: Instant) {
        if self.rate >= self.ceiling {
            return;
        }
        let secs = now.duration_since(self.last_raise).as_secs_f64().floor();
        if secs < 1.0 {
            return;
        }
        for _ in 0..secs as u32 {
            if self.rate >= self.ceiling {
                break;
            }
            let step = if self.rate < self.threshold {
                RAISE
            } else {
                RAISE_PAST_THRESHOLD
            };
            self.rate = (self.rate + self.ceiling * step).min(self.ceiling);
        }
        self.last_raise = now;
    }

    /// The start time for the next request, reserved; `None` before the first 429, when
    /// governor alone decides (and allows its burst, which a pause would otherwise refill).
    fn slot(&mut self, now: Instant) -> Option<Instant> {
        self.last_429?;
        let slot = self.next.max(now);
        self.next = slot + Duration::from_secs_f64(1.0 / self.rate);
        Some(slot)
    }
}

impl Throttle {
    pub fn new(rate: &Rate) -> Throttle {
        // Rounded up to the nanosecond: a period rounded down would let the rate creep over
        // the ceiling. Config bounds keep this finite and governor's arithmetic in range.
        let nanos = (1e9 / rate.requests_per_second).ceil().max(1.0) as u64;
        let quota = Quota::with_period(Duration::from_nanos(nanos))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(rate.burst);
        Throttle {
            limiter: RateLimiter::direct(quota),
            pause_until: Mutex::new(None),
            adaptive: Mutex::new(Adaptive::new(rate.requests_per_second, Instant::now())),
        }
    }

    /// The adaptive rate now, and the lowest it went, for the summary.
    pub fn rates(&self) -> (f64, f64) {
        let a = self.adaptive();
        (a.rate, a.lowest)
    }

    /// A 429: halve the rate, unless it was cut less than a second ago (the other answers of
    /// the same burst).
    pub fn throttled(&self) {
        let mut a = self.adaptive();
        if a.cut(Instant::now()) {
            tracing::info!(rate = a.rate, "The API keeps throttling: sending slower.");
        }
    }

    /// A 2xx or a rejection (any answer but a 429 or a failure): creep back towards the
    /// configured rate. A night of rejected rows is no reason to stay slow.
    pub fn succeeded(&self) {
        self.adaptive().raise(Instant::now());
    }

    fn adaptive(&self) -> std::sync::MutexGuard<'_, Adaptive> {
        self.adaptive.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn adaptive_slot(&self) -> Option<Instant> {
        self.adaptive().slot(Instant::now())
    }

    /// Waits until a request may start: after any pause, and within the quota. Checks the
    /// pause again after the limiter wait, since a 429 may have arrived meanwhile.
    pub async fn acquire(&self) {
        loop {
            if let Some(until) = self.paused_until() {
                tokio::time::sleep_until(until).await;
                continue;
            }
            if let Some(slot) = self.adaptive_slot() {
                tokio::time::sleep_until(slot).await;
            }
            self.limiter.until_ready().await;
            if self.paused_until().is_none() {
                return;
            }
        }
    }

    /// No request starts before `now + wait`.
    pub fn pause_for(&self, wait: Duration) {
        let Some(until) = Instant::now().checked_add(wait) else {
            return; // callers cap `wait`; an unrepresentable instant cannot be waited for anyway
        };
        let mut guard = self.pause_until.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none_or(|u| u < until) {
            *guard = Some(until);
        }
    }

    fn paused_until(&self) -> Option<Instant> {
        let mut guard = self.pause_until.lock().unwrap_or_else(|e| e.into_inner());
        match *guard {
            Some(until) if until > Instant::now() => Some(until),
            _ => {
                *guard = None;
                None
            }
        }
    }
}

#[cfg(test)]
#[path = "throttle_tests.rs"]
mod tests;
