//! Fault injection end-to-end, across requests: seed replay, jitter, which requests faults
//! touch, and changing the faults of a running sandbox.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::fault_tests::{CHANGE, SEED, faults, start, start_always, stats};
use crate::faults::{Fault, Faults, Rates, jitter_seed, pick};
use crate::server_tests::{TestResult, client, get_json, patch};

/// What a client sees of one PATCH, in short: the status (429 with its `Retry-After` form),
/// or `reset` for a connection error.
async fn outcome(c: &reqwest::Client, base: &str) -> String {
    match patch(c, base, "A1", CHANGE).await {
        Ok((429, headers, _)) if headers["retry-after"] == "1" => "429 seconds".into(),
        Ok((429, ..)) => "429 date".into(),
        Ok((status, ..)) => status.to_string(),
        Err(e) if e.status().is_none() && !e.is_timeout() => "reset".into(),
        Err(e) => format!("unexpected: {e}"),
    }
}

/// The outcomes `rates` and `seed` give `n` PATCHes in a row, worked out from the RNG alone.
fn predicted(rates: &Rates, seed: u64, n: usize) -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|_| match pick(rates, rng.u64(..)) {
            Fault::None => "200".into(),
            Fault::Error500 => "500".into(),
            Fault::Unavailable(status) => status.to_string(),
            Fault::TooManyRequests { http_date: false } => "429 seconds".into(),
            Fault::TooManyRequests { http_date: true } => "429 date".into(),
            Fault::Reset | Fault::AppliedDrop => "reset".into(),
            Fault::Slow => "slow".into(),
        })
        .collect()
}

#[tokio::test]
async fn a_seed_replays_the_same_faults() -> TestResult {
    let rates = Rates {
        error_500: 0.15,
        error_503: 0.15,
        error_429: 0.15,
        reset: 0.1,
        applied_drop: 0.1,
        ..Rates::default()
    };
    let mut runs = Vec::new();
    for seed in [SEED, SEED, SEED + 1] {
        let faults = Faults::new(seed, Duration::from_secs(60), Duration::ZERO);
        faults.set(rates, None);
        let (running, base) = start(faults).await?;
        let c = client()?;
        let mut seen = Vec::new();
        for _ in 0..40 {
            seen.push(outcome(&c, &base).await);
        }
        running.stop().await?;
        assert_eq!(seen, predicted(&rates, seed, 40), "seed {seed}");
        runs.push(seen);
    }
    assert_eq!(runs[0], runs[1]);
    assert_ne!(runs[0], runs[2]);
    // The mix above is exercised: every kind of outcome shows up in the first run.
    for kind in ["200", "500", "502", "503", "429 seconds", "reset"] {
        assert!(runs[0].iter().any(|o| o == kind), "{kind}: {:?}", runs[0]);
    }
    Ok(())
}

#[tokio::test]
async fn jitter_adds_zero_to_j_per_request() -> TestResult {
    const J: u64 = 150;
    let (running, base) = start(faults(
        Rates::default(),
        Duration::from_secs(60),
        Duration::from_millis(J),
    ))
    .await?;
    let c = client()?;
    // The same draws the server makes, so each request's jitter is known exactly.
    let mut rng = fastrand::Rng::with_seed(jitter_seed(SEED));
    let mut draws = Vec::new();
    for _ in 0..12 {
        let jitter = rng.u64(0..=J);
        draws.push(jitter);
        let started = Instant::now();
        assert_eq!(patch(&c, &base, "A1", CHANGE).await?.0, 200);
        let took = started.elapsed();
        // The jitter is a floor. Above it there is only a loopback round trip (well under a
        // millisecond), but a debug build on a shared 2-core machine can stall: 250 ms slack.
        let floor = Duration::from_millis(jitter);
        assert!(
            took >= floor && took < floor + Duration::from_millis(250),
            "jitter {jitter} ms, took {took:?}"
        );
    }
    // The seeded draws spread over the range, so the bounds above were tested at both ends.
    assert!(draws.iter().any(|d| *d < J / 3) && draws.iter().any(|d| *d > 2 * J / 3));
    running.stop().await?;
    Ok(())
}

#[tokio::test]
async fn faults_touch_only_authorised_patches_and_change_at_run_time() -> TestResult {
    let (running, base) = start_always(Rates {
        error_500: 1.0,
        ..Rates::default()
    })
    .await?;
    let c = client()?;
    let url = format!("{base}/rest/api/accounts/A1");
    let unauthorised = c.patch(&url).body(CHANGE).send().await?;
    assert_eq!(unauthorised.status(), 401);
    assert_eq!(c.get(&url).bearer_auth("t0k").send().await?.status(), 405);
    let elsewhere = c.patch(format!("{base}/rest/api/other")).bearer_auth("t0k");
    assert_eq!(elsewhere.body("{}").send().await?.status(), 404);
    assert_eq!(patch(&c, &base, "A1", CHANGE).await?.0, 500);
    let zero =
        json!({"none": 0, "500": 0, "503": 0, "429": 0, "reset": 0, "slow": 0, "applied_drop": 0});
    let mut expected = zero.clone();
    expected["500"] = json!(1);
    assert_eq!(stats(&c, &base).await?["faults"], expected);

    let faults_url = format!("{base}/_sandbox/faults");
    let all_500 = json!({
        "rates": {"500": 1.0, "503": 0.0, "429": 0.0, "reset": 0.0, "slow": 0.0, "applied_drop": 0.0},
        "seed": SEED,
    });
    for bad in [
        r#"{"500": 2}"#,
        r#"{"500": 0.6, "slow": 0.6}"#,
        r#"{"typo": 0.1}"#,
        "x",
    ] {
        let refused = c.post(&faults_url).body(bad).send().await?;
        assert_eq!(refused.status(), 400, "{bad}");
    }
    assert_eq!(get_json(&c, faults_url.clone()).await?, all_500);

    // Off without a restart: the accounts and the counts stay.
    let off = c.post(&faults_url).body("{}").send().await?;
    assert_eq!(off.status(), 200);
    let off: serde_json::Value = serde_json::from_str(&off.text().await?)?;
    assert!(
        off["rates"]
            .as_object()
            .is_some_and(|r| r.values().all(|v| v == 0.0))
    );
    assert_eq!(patch(&c, &base, "A1", CHANGE).await?.0, 200);
    let reseeded = c.post(&faults_url).body(r#"{"seed": 5}"#).send().await?;
    assert_eq!(reseeded.status(), 200);

    let stats = stats(&c, &base).await?;
    expected["none"] = json!(1);
    assert_eq!(stats["faults"], expected);
    assert_eq!(stats["applied_per_account"], json!({"A1": 1}));
    assert_eq!(stats["seed"], 5);
    running.stop().await?;
    Ok(())
}
