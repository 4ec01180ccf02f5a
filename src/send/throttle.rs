//! The rate ceiling: a governor GCRA limiter (requests_per_second, burst) that every attempt
//! passes, retries included, plus a shared pause that a 429's `Retry-After` sets for the
//! whole sender, not one task.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use crate::config::Rate;

pub struct Throttle {
    limiter: DefaultDirectRateLimiter,
    pause_until: Mutex<Option<Instant>>,
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
        }
    }

    /// Waits until a request may start: after any pause, and within the quota. Checks the
    /// pause again after the limiter wait, since a 429 may have arrived meanwhile.
    pub async fn acquire(&self) {
        loop {
            if let Some(until) = self.paused_until() {
                tokio::time::sleep_until(until).await;
                continue;
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
