//! When the daemon syncs: a six-field cron expression read on the wall clock of one IANA time
//! zone. Pure, no clock and no IO: every function is handed the instant it reasons about, so
//! the daylight-saving cases are tested with fixed dates instead of waiting for March.
//!
//! The expression is parsed by croner exactly as tokio-cron-scheduler 0.15 parses it (seconds
//! required, day-of-month AND day-of-week), so `[schedule].cron` means what that crate's docs
//! say. The zone is applied here rather than through tokio-cron-scheduler's `_tz` jobs, which
//! freeze the zone's UTC offset when the job is created and so run an hour off after the next
//! DST change (tokio-cron-scheduler #87, #107): every fire time is computed afresh in the zone.
//!
//! # Daylight-saving changes
//!
//! Expressions come in two kinds, told apart by the hour field as Vixie cron does:
//!
//! - **wall-clock** (the hour field lists hours: `0 30 2 * * *`, `0 0 2,14 * * 1-5`): every
//!   local time the expression names fires exactly once. A time the spring change skips
//!   (02:30 in Berlin on the last Sunday of March) fires at the first instant after the gap
//!   (03:00 CEST) — never skipped, and several skipped times collapse into that one run. A
//!   time the autumn change repeats (02:30 on the last Sunday of October) fires at its first
//!   occurrence (02:30 CEST) only.
//! - **interval** (hour field `*` or stepped: `*/2 * * * * *`, `0 */15 * * * *`): matched
//!   against the clock as it actually reads at each instant, so it keeps its rhythm in real
//!   time: nothing fires inside the skipped hour (the clock never shows it) and the repeated
//!   hour fires in both passes.

use std::fmt;

use chrono::{DateTime, Duration, FixedOffset, NaiveDateTime, Offset, SubsecRound, TimeZone, Utc};
use chrono_tz::{TZ_VARIANTS, Tz};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// The zone used when the config names none.
pub const DEFAULT_TIMEZONE: &str = "UTC";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error(
        "cron expression `{cron}` has 5 fields; accountsync needs 6, seconds first: `0 0 2 * * *` runs at 02:00:00 daily (yours at second 0 is `0 {cron}`)"
    )]
    FiveFields { cron: String },
    #[error(
        "cron expression `{cron}` is invalid: {message} (accountsync needs 6 fields, seconds first: sec min hour day month weekday, e.g. `0 0 2 * * *`)"
    )]
    Invalid { cron: String, message: String },
    #[error("cron expression `{cron}` never fires: no date on the calendar matches it")]
    Never { cron: String },
    #[error("unknown time zone `{name}`{}: use an IANA name such as `Europe/Berlin`, or `UTC`",
        .suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownTimezone {
        name: String,
        suggestion: Option<String>,
    },
}

/// A parsed cron expression in a time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    expression: String,
    tz: Tz,
    /// See the module doc: true when the hour field lists hours (neither `*` nor a step).
    wall_clock: bool,
}

impl Schedule {
    /// `cron` has 6 fields, seconds first (`0 30 2 * * *`); croner's `@daily`-style nicknames
    /// work too. `timezone` is an IANA name (`Europe/Berlin`); [`DEFAULT_TIMEZONE`] is `UTC`.
    pub fn parse(cron: &str, timezone: &str) -> Result<Schedule, ScheduleError> {
        let expression = cron.trim().to_owned();
        // croner would quietly read five fields as "second 0" or fail with a bare message;
        // five fields is the classic crontab habit, so it gets its own explanation.
        if !expression.starts_with('@') && expression.split_whitespace().count() == 5 {
            return Err(ScheduleError::FiveFields { cron: expression });
        }
        let parsed = CronParser::builder()
            .seconds(Seconds::Required)
            .year(Year::Disallowed)
            .dom_and_dow(true)
            .build()
            .parse(&expression)
            .map_err(|e| ScheduleError::Invalid {
                cron: expression.clone(),
                message: e.to_string(),
            })?;
        let tz = parse_timezone(timezone)?;
        let hours = &parsed.pattern.hours;
        let wall_clock = !(hours.from_wildcard || hours.step > 1);
        let schedule = Schedule {
            cron: parsed,
            expression,
            tz,
            wall_clock,
        };
        // 30 February parses but never comes; refuse it now instead of idling forever. The
        // probe starts on a fixed date to keep this pure; a match within the next 8 years
        // covers 29 February (1972).
        let probe = DateTime::<Utc>::UNIX_EPOCH;
        if schedule.next_after(probe).is_none() {
            return Err(ScheduleError::Never {
                cron: schedule.expression,
            });
        }
        Ok(schedule)
    }

    /// The expression as written (trimmed).
    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// `at` on the schedule's wall clock, with the zone, for logs and the systemd status line:
    /// `2026-03-29 03:00:00 CEST (Europe/Berlin)`.
    pub fn format_local(&self, at: DateTime<Utc>) -> String {
        let local = at.with_timezone(&self.tz);
        format!(
            "{} ({})",
            local.format("%Y-%m-%d %H:%M:%S %Z"),
            self.tz.name()
        )
    }

    /// Next fire time strictly after `after`, computed in the named zone each time so DST
    /// changes are honoured (see the module doc for the skipped and repeated hour). `None`
    /// only when the expression has no later date.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Fire times are whole seconds, so the first one after `after` is the first one after
        // its whole second; croner then never sees a fraction.
        let after = after.trunc_subsecs(0);
        if self.wall_clock {
            self.next_wall_clock(after)
        } else {
            self.next_interval(after)
        }
    }

    /// Catch-up at start, like systemd's `Persistent=true`: true when a fire time fell in
    /// `(last_completed, now]`, i.e. a run was due while the service was down.
    ///
    /// No `last_completed` (a fresh install, or a cache from before the daemon existed) is
    /// `false`: a first start waits for the schedule, and `--run-now` is the way to sync at
    /// once.
    pub fn missed(&self, last_completed: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        last_completed
            .and_then(|last| self.next_after(last))
            .is_some_and(|due| due <= now)
    }

    /// Walks the wall-clock times the expression names, from `after`'s own local time. Each
    /// maps to one instant ([`Schedule::instant_of`]) and that mapping never goes backwards,
    /// so the first instant past `after` is the answer. Only inside a repeated hour do a few
    /// candidates map to instants already passed.
    fn next_wall_clock(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // UTC carries the naive wall time through croner: it has no gaps or repeats.
        let start = after.with_timezone(&self.tz).naive_local().and_utc();
        self.cron
            .iter_after(start)
            .take(MAX_CANDIDATES)
            .map(|wall| self.instant_of(wall.naive_utc()))
            .find(|at| *at > after)
    }

    /// The instant a named wall-clock time fires at: itself; the first of two; or, in the
    /// spring gap, the first instant after the gap.
    fn instant_of(&self, wall: NaiveDateTime) -> DateTime<Utc> {
        match self.tz.from_local_datetime(&wall).earliest() {
            Some(at) => at.with_timezone(&Utc),
            None => self.end_of_gap(wall),
        }
    }

    /// First instant after the spring gap that contains `wall`: bisects on the local time
    /// between `wall` (does not exist) and a time a day later (does).
    fn end_of_gap(&self, wall: NaiveDateTime) -> DateTime<Utc> {
        let exists = |t: NaiveDateTime| self.tz.from_local_datetime(&t).earliest();
        let (mut missing, mut present) = (wall, wall + Duration::days(1));
        while present - missing > Duration::seconds(1) {
            let mid = missing + Duration::seconds((present - missing).num_seconds() / 2);
            if exists(mid).is_some() {
                present = mid;
            } else {
                missing = mid;
            }
        }
        // A time a day after a gap always exists; reading the wall time as UTC is only a
        // fallback so a zone database oddity cannot end the daemon.
        exists(present).map_or_else(
            || chrono::TimeZone::from_utc_datetime(&Utc, &wall),
            |at| at.with_timezone(&Utc),
        )
    }

    /// Matches the expression against the clock as it reads: under the offset in force at
    /// `from`; when the candidate lies beyond an offset change, searches again from the change
    /// (inclusive) under the new offset.
    fn next_interval(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let (mut from, mut inclusive) = (after, false);
        for _ in 0..MAX_OFFSET_CHANGES {
            let offset = self.offset_at(from);
            let candidate = self
                .cron
                .find_next_occurrence(&from.with_timezone(&offset), inclusive)
                .ok()?
                .with_timezone(&Utc);
            if self.offset_at(candidate) == offset {
                return Some(candidate);
            }
            from = self.first_change(from, candidate, offset);
            inclusive = true;
        }
        None
    }

    fn offset_at(&self, at: DateTime<Utc>) -> FixedOffset {
        self.tz.offset_from_utc_datetime(&at.naive_utc()).fix()
    }

    /// The first whole second in `(before, after]` whose offset is no longer `offset`.
    fn first_change(
        &self,
        mut before: DateTime<Utc>,
        mut after: DateTime<Utc>,
        offset: FixedOffset,
    ) -> DateTime<Utc> {
        while after - before > Duration::seconds(1) {
            let mid = before + Duration::seconds((after - before).num_seconds() / 2);
            if self.offset_at(mid) == offset {
                before = mid;
            } else {
                after = mid;
            }
        }
        after
    }
}

/// Enough for an every-second expression to walk out of a two-hour repeated period.
const MAX_CANDIDATES: usize = 8_000;
/// Offset changes crossed looking for one fire time: two a year is the norm.
const MAX_OFFSET_CHANGES: usize = 8;

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` in {}", self.expression, self.tz.name())
    }
}

fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    let name = name.trim();
    name.parse::<Tz>()
        .map_err(|_| ScheduleError::UnknownTimezone {
            name: name.to_owned(),
            suggestion: TZ_VARIANTS
                .iter()
                .find(|tz| tz.name().eq_ignore_ascii_case(name))
                .map(|tz| tz.name().to_owned()),
        })
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
