//! The rate ceiling: a governor GCRA limiter (requests_per_second, burst) that every attempt
//! passes, retries included, plus a shared pause that a 429's `Retry-After` sets for the
//! whole sender, not one task.
//!
//! Below the ceiling, an adaptive rate (AIMD, as TCP does with its window): an API that keeps
//! answering 429 although we are within the agreed quota has a lower limit than agreed, and
//! hammering it after each pause only buys more 429s. A burst of 429s halves the rate (once
//! per second at most, so one burst of in-flight answers counts once); each second of
//! successes adds back 2% of the configured rate. The configured rate stays the ceiling.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use crate::config::Rate;

pub struct Throttle {
    limiter: DefaultDirectRateLimiter,
    pause_until: Mutex<Option<Instant>>,
    ceiling: f64,
    adaptive: Mutex<Adaptive>,
}

struct Adaptive {
    rate: f64,
    lowest: f64,
    /// When the next request may start under the adaptive rate (unused at the ceiling).
    next: Instant,
    last_cut: Option<Instant>,
    last_raise: Instant,
}

/// The adaptive rate never goes below this share of the configured one.
const FLOOR: f64 = 1.0 / 64.0;
/// Added back per second of successes, as a share of the configured rate.
const RAISE: f64 = 0.02;

impl Throttle {
    pub fn new(rate: &Rate) -> Throttle {
        // Rounded up to the nanosecond: a period rounded down would let the rate creep over
        // the ceiling. Config bounds keep this finite and governor's arithmetic in range.
        let nanos = (1e9 / rate.requests_per_second).ceil().max(1.0) as u64;
        let quota = Quota::with_period(Duration::from_nanos(nanos))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(rate.burst);
        let now = Instant::now();
        Throttle {
            limiter: RateLimiter::direct(quota),
            pause_until: Mutex::new(None),
            ceiling: rate.requests_per_second,
            adaptive: Mutex::new(Adaptive {
                rate: rate.requests_per_second,
                lowest: rate.requests_per_second,
                next: now,
                last_cut: None,
                last_raise: now,
            }),
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
        let now = Instant::now();
        let mut a = self.adaptive();
        if a.last_cut
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        a.rate = (a.rate / 2.0).max(self.ceiling * FLOOR);
        a.lowest = a.lowest.min(a.rate);
        a.last_cut = Some(now);
        a.last_raise = now;
        tracing::info!(rate = a.rate, "The API keeps throttling: sending slower.");
    }

    /// A 2xx: creep back towards the configured rate.
    pub fn succeeded(&self) {
        let now = Instant::now();
        let mut a = self.adaptive();
        if a.rate >= self.ceiling {
            return;
        }
        let secs = now.duration_since(a.last_raise).as_secs_f64();
        if secs >= 1.0 {
            a.rate = (a.rate + self.ceiling * RAISE * secs.floor()).min(self.ceiling);
            a.last_raise = now;
        }
    }

    fn adaptive(&self) -> std::sync::MutexGuard<'_, Adaptive> {
        self.adaptive.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The start time the adaptive rate gives the next request, reserved; `None` at the
    /// ceiling, where governor alone decides (and allows its burst).
    fn adaptive_slot(&self) -> Option<Instant> {
        let mut a = self.adaptive();
        if a.rate >= self.ceiling {
            return None;
        }
        let now = Instant::now();
        let slot = a.next.max(now);
        a.next = slot + Duration::from_secs_f64(1.0 / a.rate);
        Some(slot)
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
