//! The rate ceiling: a governor GCRA limiter (requests_per_second, burst) that every attempt
//! passes, retries included, plus a pause that a 429 sets for the whole sender, not one task
//! (its `Retry-After`, or the record's backoff when it has none).
//!
//! Below the ceiling, an adaptive rate (AIMD, as TCP does with its window): an API that keeps
//! answering 429 although we are within the agreed quota has a lower limit than agreed, and
//! hammering it after each pause only buys more 429s.
//!
//! **When 429s keep coming.** One 429 proves little: a busy API sends one now and then
//! whatever our rate, and halving on each took a 200/s ceiling down to about 28/s against an
//! API that throttled a random 1% of requests. An API over its limit is regular instead:
//! while we send too fast it throttles every time we come back, at once when nothing pauses
//! us, or after the few requests its window admits when its `Retry-After` does. So a cut
//! needs that cadence: [`STREAK`] 429s in a row, each within [`CADENCE`] answers of the one
//! before. Random 429s at 1% come that close one time in four (1 − 0.99³²), five in a row
//! once in about 175 429s; a storm of 429s cuts at its fifth answer, and an API that admits
//! 20 requests per `Retry-After` pause at its fifth 429. An API that admits more than
//! [`CADENCE`] requests between its pauses is left to those pauses: its 429s are then under
//! 3% of the answers and the pauses already hold us near its limit. While the cadence holds,
//! each further 429 cuts again, at most once a second: a cut shows in an API's per-second
//! count only a second later, and the 429s of requests sent before it say nothing of the
//! new rate.
//!
//! A cut halves the rate, or takes 10% off while probing past the threshold (TCP's fast
//! recovery, in spirit: the limit was found just under here). A success after at least a
//! second of sending since the last step adds 2% of the configured rate, up to 90% of the
//! rate that drew the last cut (TCP's slow-start threshold), and 0.2% beyond it, so the rate
//! does not run straight back into the limit it just found. Only sending counts: time under
//! a pause is left out, and one success is one step however long it waited, so neither a
//! long `Retry-After` nor an idle stretch brings the rate back at once. Any answer but a 429
//! or a failure counts as success here (a night of rejected rows is no reason to stay
//! slow). The configured rate stays the ceiling, and 1/64 of it the floor.
//!
//! **Pacing.** Once the API has answered 429, requests are paced evenly for the rest of the
//! run, at the ceiling too: governor's burst is credit saved while sending slower, and
//! spending it in one go against an API that counts per rolling second is what drew the 429
//! (measured: 50,000 rows at 200/s against a 200-per-second API gave a 429 every 25 s and
//! 144 req/s on average). Nothing is reserved: a waiter takes the next start from the last
//! actual start and the rate when it wakes, and looks again if another waiter got there
//! first. A start reserved ahead at a low rate would still hold its waiter back after the
//! rate recovered (eight of them at 1/64 of 10/s: 51 s), and one reserved before a pause
//! would be lost to it.

use std::num::NonZeroU32;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use crate::config::Rate;

/// A 429 is part of a cadence when at most this many answers passed since the previous one.
pub const CADENCE: u32 = 32;
/// A cut needs this many 429s in a row, each part of the cadence (the first one aside).
pub const STREAK: u32 = 5;
/// The adaptive rate never goes below this share of the configured one.
const FLOOR: f64 = 1.0 / 64.0;
/// Added back per step of successes, as a share of the configured rate, below and above
/// the threshold.
const RAISE: f64 = 0.02;
const RAISE_PAST_THRESHOLD: f64 = 0.002;
/// Between two cuts, and the sending time a step needs.
const SECOND: Duration = Duration::from_secs(1);

pub struct Throttle {
    limiter: DefaultDirectRateLimiter,
    pacer: Mutex<Pacer>,
}

/// Every decision of the throttle, without clocks or waiting, so it is tested as tables of
/// answers and instants.
#[derive(Debug)]
struct Pacer {
    ceiling: f64,
    rate: f64,
    lowest: f64,
    /// 90% of the rate at the last cut: the raise slows down past it.
    threshold: f64,
    /// Pacing is even (no burst) from the first 429 on.
    paced: bool,
    /// The last request start: the next may start one interval (at today's rate) later.
    last_start: Option<Instant>,
    /// No request starts before this.
    pause_until: Option<Instant>,
    /// The time covered by pauses so far, added as they are set: the raise leaves it out.
    paused: Duration,
    last_cut: Option<Instant>,
    /// When the rate last changed, and `paused` then.
    last_step: Instant,
    paused_at_step: Duration,
    /// Answers since the last 429; `None` before the first.
    since_429: Option<u32>,
    /// The 429s in a row each within [`CADENCE`] answers of the one before, the last one
    /// included.
    streak: u32,
}

impl Pacer {
    fn new(ceiling: f64, now: Instant) -> Pacer {
        Pacer {
            ceiling,
            rate: ceiling,
            lowest: ceiling,
            threshold: ceiling,
            paced: false,
            last_start: None,
            pause_until: None,
            paused: Duration::ZERO,
            last_cut: None,
            last_step: now,
            paused_at_step: Duration::ZERO,
            since_429: None,
            streak: 0,
        }
    }

    /// A request asks to start at `now`: `None` means go (and counts as its start), else it
    /// should ask again at the instant returned. Nothing is reserved by asking.
    fn claim(&mut self, now: Instant) -> Option<Instant> {
        if let Some(until) = self.paused(now) {
            return Some(until);
        }
        if self.paced
            && let Some(last) = self.last_start
        {
            // An interval too long to represent never comes: ask again in a while.
            let next = last
                .checked_add(self.interval())
                .unwrap_or(now + Duration::from_secs(3600));
            if next > now {
                return Some(next);
            }
        }
        self.last_start = Some(now);
        None
    }

    /// The request that claimed a start passed governor at `now` too: it starts, unless a
    /// pause began meanwhile (then it claims again once the pause is over; the start it had
    /// is not kept from anyone, since the next one is due from the last actual start).
    fn start(&mut self, now: Instant) -> bool {
        if self.paused(now).is_some() {
            return false;
        }
        self.last_start = Some(self.last_start.map_or(now, |last| last.max(now)));
        true
    }

    fn interval(&self) -> Duration {
        Duration::try_from_secs_f64(1.0 / self.rate).unwrap_or(Duration::MAX)
    }

    /// No request starts before `now + wait`; a shorter pause than the one running changes
    /// nothing.
    fn pause(&mut self, now: Instant, wait: Duration) {
        let Some(until) = now.checked_add(wait) else {
            return; // callers cap `wait`; an unrepresentable instant cannot be waited for anyway
        };
        let running = self.paused(now).unwrap_or(now);
        if until > running {
            self.paused += until - running;
            self.pause_until = Some(until);
        }
    }

    fn paused(&mut self, now: Instant) -> Option<Instant> {
        match self.pause_until {
            Some(until) if until > now => Some(until),
            _ => {
                self.pause_until = None;
                None
            }
        }
    }

    /// A 429 at `now`. Returns whether it cut the rate.
    fn throttled(&mut self, now: Instant) -> bool {
        self.paced = true;
        let close = self.since_429.is_some_and(|n| n < CADENCE);
        self.streak = if close { self.streak + 1 } else { 1 };
        self.since_429 = Some(0);
        if self.streak < STREAK
            || self
                .last_cut
                .is_some_and(|t| now.duration_since(t) < SECOND)
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
        self.stepped(now);
        true
    }

    /// Any answer but a 429 or a failure, at `now`: one step back up when a second of
    /// sending has passed since the last step.
    fn served(&mut self, now: Instant) {
        if let Some(n) = self.since_429.as_mut() {
            *n = n.saturating_add(1);
        }
        if self.rate >= self.ceiling {
            return;
        }
        let paused = self.paused.saturating_sub(self.paused_at_step);
        let sending = now.duration_since(self.last_step).saturating_sub(paused);
        if sending < SECOND {
            return;
        }
        // The fast climb stops at the threshold rather than jump past it.
        let raised = if self.rate < self.threshold {
            (self.rate + self.ceiling * RAISE).min(self.threshold)
        } else {
            self.rate + self.ceiling * RAISE_PAST_THRESHOLD
        };
        self.rate = raised.min(self.ceiling);
        self.stepped(now);
    }

    fn stepped(&mut self, now: Instant) {
        self.last_step = now;
        self.paused_at_step = self.paused;
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
            pacer: Mutex::new(Pacer::new(rate.requests_per_second, Instant::now())),
        }
    }

    /// The adaptive rate now, and the lowest it went, for the summary.
    pub fn rates(&self) -> (f64, f64) {
        let p = self.pacer();
        (p.rate, p.lowest)
    }

    /// A 429: paces evenly from now on, and cuts the rate when the 429s keep coming.
    pub fn throttled(&self) {
        let mut p = self.pacer();
        if p.throttled(Instant::now()) {
            tracing::info!(rate = p.rate, "The API keeps throttling: sending slower.");
        }
    }

    /// A 2xx or a rejection (any answer but a 429 or a failure): creep back towards the
    /// configured rate. A night of rejected rows is no reason to stay slow.
    pub fn succeeded(&self) {
        self.pacer().served(Instant::now());
    }

    fn pacer(&self) -> MutexGuard<'_, Pacer> {
        self.pacer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a request may start: after any pause, at the adaptive pace, and within
    /// the quota. Governor comes last, so nothing but the pause check stands between its
    /// permit and the start: the ceiling holds however the waits above interleave.
    pub async fn acquire(&self) {
        loop {
            let wait = self.pacer().claim(Instant::now());
            if let Some(until) = wait {
                tokio::time::sleep_until(until).await;
                continue;
            }
            self.limiter.until_ready().await;
            if self.pacer().start(Instant::now()) {
                return;
            }
        }
    }

    /// No request starts before `now + wait`.
    pub fn pause_for(&self, wait: Duration) {
        self.pacer().pause(Instant::now(), wait);
    }
}

#[cfg(test)]
#[path = "throttle_tests.rs"]
mod tests;
