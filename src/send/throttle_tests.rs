use super::*;

fn secs(n: f64) -> Duration {
    Duration::from_secs_f64(n)
}

/// Feeds `pattern` (true = a 429) to a pacer, one answer every `every` seconds, and returns
/// the indices of the answers that cut the rate, and the pacer.
fn feed(ceiling: f64, every: f64, pattern: impl IntoIterator<Item = bool>) -> (Vec<usize>, Pacer) {
    let t0 = Instant::now();
    let mut p = Pacer::new(ceiling, t0);
    let mut cuts = Vec::new();
    for (i, throttled) in pattern.into_iter().enumerate() {
        let now = t0 + secs(every * i as f64);
        if throttled {
            if p.throttled(now) {
                cuts.push(i);
            }
        } else {
            p.served(now);
        }
    }
    (cuts, p)
}

/// `n` answers, a 429 every `period`-th one (the last of each period).
fn every_nth(period: usize, n: usize) -> impl Iterator<Item = bool> {
    (1..=n).map(move |i| i % period == 0)
}

/// A fixed pseudo-random share of answers are 429s (xorshift, so the test needs no crate
/// and never changes under a dependency update).
fn random_share(seed: u64, per_mille: u64, n: usize) -> impl Iterator<Item = bool> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0xD134_2543_DE82_EF95);
    (0..n).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % 1000 < per_mille
    })
}

#[test]
fn sporadic_429s_do_not_cut() {
    // An answer every 10 ms.
    let cases: Vec<(&str, Vec<bool>)> = vec![
        ("1 in 100", every_nth(100, 100_000).collect()),
        // 32 answers between two 429s: just outside the cadence.
        ("1 in 33", every_nth(33, 100_000).collect()),
    ];
    for (name, pattern) in cases {
        let (cuts, p) = feed(200.0, 0.01, pattern);
        assert_eq!(cuts, Vec::<usize>::new(), "{name}");
        assert_eq!((p.rate, p.lowest), (200.0, 200.0), "{name}");
    }

    // At random, ten runs of 100,000 answers with about 1,000 429s each: a streak of five
    // close ones is due about once in 175 429s (the module doc), so a few cuts a run, and
    // the rate spends most of the run at the ceiling. Halving on every 429 (at most once a
    // second) cut here on most of them.
    let mut all = 0;
    for seed in 0..10 {
        let pattern: Vec<bool> = random_share(seed, 10, 100_000).collect();
        let throttled = pattern.iter().filter(|t| **t).count();
        let (cuts, _) = feed(200.0, 0.01, pattern);
        assert!(
            cuts.len() <= 20,
            "seed {seed}: {} cuts for {throttled} 429s",
            cuts.len()
        );
        all += cuts.len();
    }
    assert!(all <= 100, "{all} cuts in ten runs");
}

#[test]
fn a_storm_cuts_within_a_few_answers() {
    // (pattern, seconds between answers, the answer that cuts first)
    let storm = vec![true; 20];
    let alternating: Vec<bool> = (0..40).map(|i| i % 2 == 1).collect();
    // What a `Retry-After: 1` API that admits 20 requests a second gives: 20 served, a 429,
    // a pause, again; 0.06 s between answers puts a second between the 429s.
    let admits_20: Vec<bool> = every_nth(21, 210).collect();
    let one_in_32: Vec<bool> = every_nth(32, 320).collect();
    let cases: Vec<(&str, Vec<bool>, f64, usize)> = vec![
        ("every answer a 429", storm, 0.3, 4),
        ("every other answer", alternating, 0.3, 9),
        ("20 served, a 429", admits_20, 0.06, 5 * 21 - 1),
        ("31 served, a 429", one_in_32, 0.05, 5 * 32 - 1),
    ];
    for (name, pattern, every, first) in cases {
        let (cuts, p) = feed(200.0, every, pattern);
        assert_eq!(cuts.first(), Some(&first), "{name}: cuts at {cuts:?}");
        assert!(p.rate <= 100.0, "{name}: {}", p.rate);
    }
}

#[test]
fn while_429s_keep_coming_the_rate_halves_once_a_second_down_to_its_floor() {
    // A 429 every 0.25 s: the fifth cuts, then every fourth (a second later) again.
    let (cuts, p) = feed(64.0, 0.25, vec![true; 60]);
    assert_eq!(cuts[..4], [4, 8, 12, 16]);
    assert_eq!(
        p.rate, 1.0,
        "64/s halved six times or more stops at 1/64 of it"
    );
    assert_eq!(p.lowest, 1.0);
}

#[test]
fn the_rate_climbs_back_to_the_ceiling_by_seconds_of_sending_and_never_above() {
    let t0 = Instant::now();
    let mut p = Pacer::new(200.0, t0);
    for i in 0..5 {
        p.throttled(t0 + secs(0.01 * f64::from(i)));
    }
    assert_eq!(p.rate, 100.0);
    let mut now = t0 + secs(0.04);
    // A success `dt` seconds after the previous answer; the rate after it.
    let at = |p: &mut Pacer, now: &mut Instant, dt: f64| {
        *now += secs(dt);
        p.served(*now);
        p.rate
    };
    assert_eq!(
        at(&mut p, &mut now, 0.9),
        100.0,
        "less than a second of sending"
    );
    assert_eq!(at(&mut p, &mut now, 0.2), 104.0, "2% of the ceiling");
    assert_eq!(
        at(&mut p, &mut now, 60.0),
        108.0,
        "an idle minute is one step, not sixty"
    );
    // Half a second of sending, then a 30 s pause: no step when it ends.
    at(&mut p, &mut now, 0.5);
    p.pause(now, secs(30.0));
    assert_eq!(at(&mut p, &mut now, 30.1), 108.0, "a pause is not sending");
    assert_eq!(
        at(&mut p, &mut now, 0.5),
        112.0,
        "a second of sending in all"
    );

    // Up to 90% of the rate that drew the cut (180) by 2%, then by 0.2%, up to the ceiling.
    for _ in 0..16 {
        at(&mut p, &mut now, 1.0);
    }
    assert_eq!(p.rate, 176.0);
    p.rate = 178.0;
    assert_eq!(
        at(&mut p, &mut now, 1.0),
        180.0,
        "the fast climb stops at the threshold"
    );
    let past = at(&mut p, &mut now, 1.0);
    assert!((past - 180.4).abs() < 1e-9, "{past}");
    for _ in 0..100 {
        at(&mut p, &mut now, 1.0);
    }
    assert_eq!(p.rate, 200.0, "never above the ceiling");
    assert_eq!(p.lowest, 100.0);
}

#[test]
fn a_429_while_probing_past_the_threshold_takes_a_tenth_off_not_half() {
    let t0 = Instant::now();
    let mut p = Pacer::new(200.0, t0);
    for i in 0..5 {
        p.throttled(t0 + secs(0.01 * f64::from(i)));
    }
    // Threshold 180; one step past it, and the streak goes on.
    p.rate = 184.0;
    let later = t0 + secs(10.0);
    assert!(p.throttled(later));
    assert!((p.rate - 184.0 * 0.9).abs() < 1e-9, "{}", p.rate);
    // Under the threshold again, the next cut halves.
    p.throttled(later + secs(1.1));
    assert!((p.rate - 184.0 * 0.9 / 2.0).abs() < 1e-9, "{}", p.rate);
}

#[test]
fn before_any_429_governor_alone_paces_and_after_one_starts_are_even() {
    let t0 = Instant::now();
    let mut p = Pacer::new(100.0, t0);
    assert_eq!(
        [p.claim(t0), p.claim(t0), p.claim(t0)],
        [None, None, None],
        "before a 429, the burst is governor's to allow"
    );
    p.throttled(t0);
    assert_eq!(p.rate, 100.0, "one 429 paces, it does not cut");
    let ms = |n: u64| t0 + Duration::from_millis(n);
    // (asks at, answer): the next start is 10 ms after the last one, whoever asks.
    let table = [
        (0, Some(ms(10))),
        (0, Some(ms(10))),
        (10, None),
        (10, Some(ms(20))),
        (25, None),
        (30, Some(ms(35))),
    ];
    for (asks, expected) in table {
        assert_eq!(p.claim(ms(asks)), expected, "asked at {asks} ms");
    }
}

#[test]
fn a_waiter_holds_no_start_across_a_recovery_or_a_pause() {
    let t0 = Instant::now();
    let mut p = Pacer::new(10.0, t0);
    // Down to the floor: 10/64 per second, a start every 6.4 s.
    for i in 0..40 {
        p.throttled(t0 + secs(f64::from(i) * 0.3));
    }
    assert_eq!(p.rate, 10.0 / 64.0);
    let t1 = t0 + secs(20.0);
    assert_eq!(p.claim(t1), None);
    let due = t1 + secs(6.4);
    for _ in 0..7 {
        assert_eq!(
            p.claim(t1),
            Some(due),
            "seven waiters are told the same instant"
        );
    }
    // The rate recovers meanwhile: at `due` the seven start 100 ms apart, not 6.4 s.
    p.rate = 10.0;
    let mut now = due;
    for _ in 0..7 {
        assert_eq!(p.claim(now), None);
        let next = p.claim(now).unwrap_or(now);
        assert!(next.duration_since(now) <= secs(0.1), "{:?}", next - now);
        now = next;
    }
    assert!(now.duration_since(due) < secs(1.0));

    // A start claimed just before a 429's pause does not happen, and is not lost: the first
    // ask when the pause is over goes at once.
    assert_eq!(p.claim(now + secs(1.0)), None);
    p.pause(now + secs(1.0), secs(2.0));
    assert!(
        !p.start(now + secs(1.0)),
        "the pause came between claim and start"
    );
    assert_eq!(p.claim(now + secs(1.5)), Some(now + secs(3.0)));
    assert_eq!(p.claim(now + secs(3.0)), None);
}

#[test]
fn a_pause_only_ever_grows() {
    let t0 = Instant::now();
    let mut p = Pacer::new(10.0, t0);
    p.pause(t0, secs(5.0));
    p.pause(t0 + secs(1.0), secs(1.0));
    assert_eq!(p.claim(t0 + secs(2.0)), Some(t0 + secs(5.0)));
    p.pause(t0 + secs(4.0), secs(3.0));
    assert_eq!(p.claim(t0 + secs(5.0)), Some(t0 + secs(7.0)));
    assert_eq!(p.paused, secs(7.0), "overlapping pauses count once");
    assert_eq!(p.claim(t0 + secs(7.0)), None);
}
