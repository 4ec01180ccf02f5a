use chrono::{DateTime, TimeZone, Utc};

use super::*;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

fn schedule(cron: &str, tz: &str) -> Schedule {
    Schedule::parse(cron, tz).unwrap()
}

/// The fire times after `from`, `n` of them.
fn fires(s: &Schedule, from: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    std::iter::successors(s.next_after(from), |t| s.next_after(*t))
        .take(n)
        .collect()
}

#[test]
fn daily_0200_in_london_stays_at_0200_local_across_both_changes() {
    let s = schedule("0 0 2 * * *", "Europe/London");
    // 2026: clocks go forward on 29 March, back on 25 October (both at 01:00 UTC).
    assert_eq!(
        fires(&s, utc(2026, 3, 27, 12, 0, 0), 3),
        [
            utc(2026, 3, 28, 2, 0, 0), // GMT
            utc(2026, 3, 29, 1, 0, 0), // 02:00 BST, just after the gap (01:00-02:00 local)
            utc(2026, 3, 30, 1, 0, 0),
        ]
    );
    assert_eq!(
        fires(&s, utc(2026, 10, 23, 12, 0, 0), 3),
        [
            utc(2026, 10, 24, 1, 0, 0), // BST
            utc(2026, 10, 25, 2, 0, 0), // 02:00 GMT: the repeated hour is 01:00-02:00
            utc(2026, 10, 26, 2, 0, 0),
        ]
    );
}

#[test]
fn a_time_skipped_in_spring_runs_once_right_after_the_gap() {
    // Berlin, 29 March 2026: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist.
    let s = schedule("0 30 2 * * *", "Europe/Berlin");
    assert_eq!(
        fires(&s, utc(2026, 3, 27, 12, 0, 0), 3),
        [
            utc(2026, 3, 28, 1, 30, 0), // 02:30 CET
            utc(2026, 3, 29, 1, 0, 0),  // 03:00 CEST, the first instant after the gap
            utc(2026, 3, 30, 0, 30, 0), // 02:30 CEST
        ]
    );
    assert_eq!(
        s.format_local(utc(2026, 3, 29, 1, 0, 0)),
        "2026-03-29 03:00:00 CEST (Europe/Berlin)"
    );
}

#[test]
fn a_time_repeated_in_autumn_runs_once_at_its_first_occurrence() {
    // Berlin, 25 October 2026: 03:00 CEST falls back to 02:00 CET, so 02:30 happens twice
    // (00:30 and 01:30 UTC).
    let s = schedule("0 30 2 * * *", "Europe/Berlin");
    assert_eq!(
        fires(&s, utc(2026, 10, 24, 12, 0, 0), 2),
        [utc(2026, 10, 25, 0, 30, 0), utc(2026, 10, 26, 1, 30, 0)]
    );
    // Asked between the two passes (e.g. after a restart), the second pass is not a fire time.
    assert_eq!(
        s.next_after(utc(2026, 10, 25, 1, 0, 0)),
        Some(utc(2026, 10, 26, 1, 30, 0))
    );
}

#[test]
fn a_list_of_hours_is_wall_clock_too() {
    // croner alone would drop 02:30 on the spring day for a list; here it runs after the gap.
    let s = schedule("0 30 2,14 * * *", "Europe/Berlin");
    assert_eq!(
        fires(&s, utc(2026, 3, 29, 0, 0, 0), 2),
        [utc(2026, 3, 29, 1, 0, 0), utc(2026, 3, 29, 12, 30, 0)]
    );
}

#[test]
fn interval_expressions_keep_real_time_across_the_changes() {
    let s = schedule("0 */30 * * * *", "Europe/Berlin");
    assert_eq!(
        fires(&s, utc(2026, 3, 29, 0, 0, 0), 3),
        [
            utc(2026, 3, 29, 0, 30, 0), // 01:30 CET
            utc(2026, 3, 29, 1, 0, 0),  // 03:00 CEST
            utc(2026, 3, 29, 1, 30, 0),
        ]
    );
    assert_eq!(
        fires(&s, utc(2026, 10, 25, 0, 0, 0), 4),
        [
            utc(2026, 10, 25, 0, 30, 0), // 02:30 CEST
            utc(2026, 10, 25, 1, 0, 0),  // 02:00 CET, the repeated hour runs again
            utc(2026, 10, 25, 1, 30, 0), // 02:30 CET
            utc(2026, 10, 25, 2, 0, 0),  // 03:00 CET
        ]
    );
}

#[test]
fn every_two_seconds() {
    let s = schedule("*/2 * * * * *", "UTC");
    assert_eq!(
        fires(&s, utc(2026, 12, 3, 1, 59, 59), 3),
        [
            utc(2026, 12, 3, 2, 0, 0),
            utc(2026, 12, 3, 2, 0, 2),
            utc(2026, 12, 3, 2, 0, 4),
        ]
    );
    // Strictly after, also from inside a second.
    let half = utc(2026, 12, 3, 2, 0, 2) + Duration::milliseconds(500);
    assert_eq!(s.next_after(half), Some(utc(2026, 12, 3, 2, 0, 4)));
    let just_before = utc(2026, 12, 3, 2, 0, 2) - Duration::milliseconds(1);
    assert_eq!(s.next_after(just_before), Some(utc(2026, 12, 3, 2, 0, 2)));
}

#[test]
fn missed_is_a_fire_time_between_the_last_run_and_now() {
    let s = schedule("0 0 2 * * *", "UTC");
    let now = utc(2026, 12, 3, 9, 0, 0);
    // A fresh install does not run at once.
    assert!(!s.missed(None, now));
    // Last run yesterday morning: today's 02:00 passed while the service was down.
    assert!(s.missed(Some(utc(2026, 12, 2, 2, 20, 0)), now));
    // Last run finished after today's 02:00: nothing missed.
    assert!(!s.missed(Some(utc(2026, 12, 3, 2, 20, 0)), now));
    // The fire time itself counts, the last run's instant does not.
    assert!(s.missed(Some(utc(2026, 12, 2, 9, 0, 0)), utc(2026, 12, 3, 2, 0, 0)));
    assert!(!s.missed(Some(utc(2026, 12, 3, 2, 0, 0)), now));
    // A clock that went backwards since the last run.
    assert!(!s.missed(Some(utc(2026, 12, 4, 2, 20, 0)), now));
}

#[test]
fn five_fields_explain_the_seconds_field() {
    let err = Schedule::parse("30 2 * * *", "UTC").unwrap_err();
    assert_eq!(
        err.to_string(),
        "cron expression `30 2 * * *` has 5 fields; accountsync needs 6, seconds first: \
         `0 0 2 * * *` runs at 02:00:00 daily (yours at second 0 is `0 30 2 * * *`)"
    );
}

#[test]
fn other_bad_expressions_name_the_expression() {
    for cron in [
        "0 61 2 * * *",
        "0 0 2 * * * 2027",
        "daily",
        "",
        "0 0 2 * * FOO",
    ] {
        let err = Schedule::parse(cron, "UTC").unwrap_err();
        assert!(
            matches!(err, ScheduleError::Invalid { .. }),
            "{cron}: {err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(&format!("`{cron}`")), "{text}");
        assert!(text.contains("seconds first"), "{text}");
    }
    assert_eq!(
        Schedule::parse("0 0 0 30 2 *", "UTC").unwrap_err(),
        ScheduleError::Never {
            cron: "0 0 0 30 2 *".into()
        }
    );
    // 29 February comes every four years.
    let leap = schedule("0 0 0 29 2 *", "UTC");
    assert_eq!(
        leap.next_after(utc(2026, 12, 3, 0, 0, 0)),
        Some(utc(2028, 2, 29, 0, 0, 0))
    );
}

#[test]
fn nicknames_and_day_rules_follow_tokio_cron_scheduler() {
    let daily = schedule("@daily", "UTC");
    assert_eq!(
        daily.next_after(utc(2026, 12, 3, 9, 0, 0)),
        Some(utc(2026, 12, 4, 0, 0, 0))
    );
    // Day of month AND day of week, as tokio-cron-scheduler parses it: the first Monday
    // that is a 1st. 1 February 2027 is a Monday.
    let s = schedule("0 0 2 1 * MON", "UTC");
    assert_eq!(
        s.next_after(utc(2026, 12, 3, 0, 0, 0)),
        Some(utc(2027, 2, 1, 2, 0, 0))
    );
}

#[test]
fn time_zones_are_iana_names() {
    let err = Schedule::parse("0 0 2 * * *", "Europe/Berln").unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown time zone `Europe/Berln`: use an IANA name such as `Europe/Berlin`, or `UTC`"
    );
    let err = Schedule::parse("0 0 2 * * *", "europe/berlin").unwrap_err();
    assert!(
        err.to_string().contains("(did you mean `Europe/Berlin`?)"),
        "{err}"
    );
    assert_eq!(
        schedule("0 0 2 * * *", DEFAULT_TIMEZONE).timezone(),
        Tz::UTC
    );
    assert_eq!(
        schedule(" 0 0 2 * * * ", "Europe/Berlin").to_string(),
        "`0 0 2 * * *` in Europe/Berlin"
    );
}
