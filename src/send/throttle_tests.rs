use super::*;

fn secs(n: f64) -> Duration {
    Duration::from_secs_f64(n)
}

#[test]
fn a_burst_of_429s_halves_once_and_the_rate_creeps_back_slower_past_the_threshold() {
    let t0 = Instant::now();
    let mut a = Adaptive::new(200.0, t0);
    assert_eq!(a.slot(t0), None, "before any 429, governor alone paces");

    assert!(a.cut(t0));
    assert_eq!(a.rate, 100.0);
    assert!(!a.cut(t0 + secs(0.5)), "the same burst counts once");
    assert_eq!(a.rate, 100.0);

    // 2% of 200 a second up to 90% of the rate that drew the 429 (180), then 0.2%.
    a.raise(t0 + secs(0.9));
    assert_eq!(
        a.rate, 100.0,
        "less than a second of successes adds nothing"
    );
    a.raise(t0 + secs(20.0));
    assert!((a.rate - 180.0).abs() < 1e-9, "{}", a.rate);
    a.raise(t0 + secs(30.0));
    assert!((a.rate - 184.0).abs() < 1e-9, "{}", a.rate);

    // A 429 while probing past 180: back under the limit just found, not halved.
    assert!(a.cut(t0 + secs(30.0)));
    assert!((a.rate - 184.0 * 0.9).abs() < 1e-9, "{}", a.rate);
    // Under the threshold again, a 429 halves.
    assert!(a.cut(t0 + secs(32.0)));
    assert!((a.rate - 184.0 * 0.9 / 2.0).abs() < 1e-9, "{}", a.rate);

    a.raise(t0 + secs(10_000.0));
    assert_eq!(a.rate, 200.0, "never above the ceiling");
    assert!((a.lowest - 184.0 * 0.9 / 2.0).abs() < 1e-9, "{}", a.lowest);
}

#[test]
fn after_a_429_requests_are_paced_evenly_even_at_the_ceiling() {
    let t0 = Instant::now();
    let mut a = Adaptive::new(100.0, t0);
    a.cut(t0);
    a.raise(t0 + secs(10_000.0));
    assert_eq!(a.rate, 100.0);
    // No burst: back-to-back asks get slots 10 ms apart.
    let now = t0 + secs(10_000.0);
    let slots: Vec<Instant> = (0..5).filter_map(|_| a.slot(now)).collect();
    assert_eq!(slots.len(), 5);
    for pair in slots.windows(2) {
        assert!(pair[1].duration_since(pair[0]) >= Duration::from_millis(10));
    }
}

#[test]
fn the_rate_never_falls_under_its_floor() {
    let t0 = Instant::now();
    let mut a = Adaptive::new(64.0, t0);
    for i in 0..20 {
        a.cut(t0 + secs(f64::from(i) * 2.0));
    }
    assert_eq!(a.rate, 1.0);
}
