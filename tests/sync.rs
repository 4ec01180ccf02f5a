//! End-to-end tests of what goes over the wire: the reference in the path, 401, 429 and
//! `Retry-After`, the rate ceiling, transient failures kept for the next run, remembered
//! rejections. The real `accountsync` binary against the real `accountsync-sandbox`; the
//! harness is `tests/util/mod.rs`.

mod util;

use std::collections::BTreeSet;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use serde_json::json;
use util::{Conf, Sandbox, Workdir, by_reference, numbered_export, small_export, wait_for};

/// Tests run in parallel threads; the one that measures arrival times runs alone so the
/// other tests' processes do not stall the sandbox under it. Every other test holds it
/// shared.
static TIMING: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    TIMING.read().unwrap_or_else(PoisonError::into_inner)
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    TIMING.write().unwrap_or_else(PoisonError::into_inner)
}

#[test]
fn reference_with_reserved_characters_travels_as_one_segment() {
    let _timing = shared();
    let wd = Workdir::new("encoding");
    let sb = Sandbox::start(&wd, &[]);
    wd.configure(&Conf::new(&sb));
    let odd = "a/b?c#d%e f";
    let file = wd.write(
        "export.csv",
        small_export(&[
            (odd, "odd@example.com", "Ann", "Lee"),
            ("café+1", "cafe@example.com", "Zoë", "Ünal"),
        ]),
    );
    let run = wd.run(&[&file.display().to_string()]);
    run.expect_code(0);
    let requests = sb.requests();
    let refs: BTreeSet<_> = requests.iter().map(|r| r.reference.clone()).collect();
    assert_eq!(
        refs,
        [Some(odd.to_owned()), Some("café+1".to_owned())].into(),
        "{requests:#?}\n{run}"
    );
    for r in &requests {
        let segment = r
            .path
            .strip_prefix("/rest/api/accounts/")
            .unwrap_or_else(|| panic!("unexpected path {:?}", r.path));
        assert!(
            !segment.is_empty() && !segment.contains(['/', '?', '#', ' ']),
            "the reference is not one encoded path segment: {:?}",
            r.path
        );
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(sb.accounts()[odd]["email"], json!("odd@example.com"));
}

#[test]
fn refused_token_stops_the_run_and_confirms_nothing() {
    let _timing = shared();
    let mut wd = Workdir::new("unauthorized");
    let sb = Sandbox::start_with_token(&wd, "the-right-token", &[]);
    let max_in_flight = 4;
    wd.configure(&Conf {
        max_in_flight,
        ..Conf::new(&sb)
    });
    let file = wd.write("export.csv", numbered_export("U-", 30));
    let file = file.display().to_string();

    wd.token = "a-wrong-token".into();
    let refused = wd.run(&[&file]);
    refused
        .expect_code(2)
        .expect_stderr("refused")
        .expect_stderr("token");
    let requests = sb.requests();
    assert!(
        !requests.is_empty() && requests.len() <= max_in_flight,
        "{} requests after a 401 (max_in_flight {max_in_flight})\n{refused}",
        requests.len()
    );
    assert!(requests.iter().all(|r| r.status == 401), "{requests:#?}");
    if refused.report.is_some() {
        assert_eq!(refused.count("updated"), 0, "{refused}");
    }

    // Nothing was confirmed: with the right token every record goes out, once.
    wd.token = "the-right-token".into();
    let accepted = wd.run(&[&file]);
    accepted.expect_code(0);
    accepted.expect_counts(30, 0, 30, 0, 0);
    let again = &sb.requests()[requests.len()..];
    let grouped = by_reference(again);
    assert_eq!(grouped.len(), 30, "{accepted}");
    for (reference, reqs) in grouped {
        assert_eq!(
            reqs.len(),
            1,
            "{reference} sent more than once: {reqs:#?}\n{accepted}\nsummary: {:#}",
            accepted.summary()
        );
        assert_eq!(reqs[0].status, 200, "{reference}: {reqs:#?}");
    }
}

#[test]
fn a_429_storm_still_lands_every_record() {
    let _timing = shared();
    let wd = Workdir::new("storm");
    let sb = Sandbox::start(&wd, &["--rate-limit", "5"]);
    wd.configure(&Conf {
        requests_per_second: 100.0,
        burst: 20,
        max_in_flight: 8,
        // Up to 8 requests race for 5 slots a second, and which ones lose is random; a
        // generous attempt budget keeps an unlucky record from giving up (not what this
        // test is about; `failed` has its own).
        max_attempts: 30,
        ..Conf::new(&sb)
    });
    let n = 20;
    let file = wd.write("export.csv", numbered_export("S-", n));
    let run = wd.run(&[&file.display().to_string()]);
    run.expect_code(0);
    run.expect_counts(n as u64, 0, n as u64, 0, 0);
    assert!(run.count("throttled") > 0, "no 429 was counted\n{run}");
    let requests = sb.requests();
    assert!(
        requests.iter().any(|r| r.status == 429),
        "the sandbox never throttled"
    );
    let accounts = sb.accounts();
    for i in 1..=n {
        let reference = format!("S-{i:03}");
        assert_eq!(
            accounts.get(&reference).map(|a| a["email"].clone()),
            Some(json!(format!("s-{i:03}@example.com"))),
            "{reference} did not land\n{run}"
        );
    }
}

/// A sync of `n` rows against a sandbox that allows 5 requests a second and answers the rest
/// with 429 and `Retry-After: 1`; every record must land. Returns the run, the sandbox's
/// request log and the 429s in it (at least one, or nothing was tested).
fn throttled_sync(
    name: &str,
    n: usize,
    max_in_flight: usize,
    max_attempts: u32,
) -> (util::Run, Vec<util::Logged>, Vec<util::Logged>) {
    let wd = Workdir::new(name);
    let sb = Sandbox::start(&wd, &["--rate-limit", "5"]);
    wd.configure(&Conf {
        requests_per_second: 100.0,
        burst: 20,
        max_in_flight,
        max_attempts,
        ..Conf::new(&sb)
    });
    let file = wd.write("export.csv", numbered_export(&format!("{name}-"), n));
    let run = wd.run(&[&file.display().to_string()]);
    run.expect_code(0);
    run.expect_counts(n as u64, 0, n as u64, 0, 0);
    let requests = sb.requests();
    let throttled: Vec<_> = requests
        .iter()
        .filter(|r| r.status == 429)
        .cloned()
        .collect();
    assert!(
        !throttled.is_empty(),
        "the sandbox never throttled: nothing tested"
    );
    assert!(run.count("throttled") as usize >= throttled.len(), "{run}");
    (run, requests, throttled)
}

#[test]
fn no_request_starts_before_retry_after_has_passed() {
    let _timing = shared();
    // One request at a time, so every request after a 429 is a new start.
    let (_, requests, throttled) = throttled_sync("retry-after", 12, 1, 10);
    // The sandbox stamps `received_ms` when a request reaches it; the 429 is written after
    // that and the product can only start its pause once it has read the answer, so every
    // later arrival is at least 1000 ms after the 429's own stamp on the sandbox's clock.
    // Both stamps come from one monotonic clock, so the only slack needed is timer
    // granularity (tokio rounds timers to whole milliseconds): 5 ms.
    const TOLERANCE_MS: f64 = 5.0;
    for t in &throttled {
        for later in requests.iter().filter(|r| r.seq > t.seq) {
            assert!(
                later.received_ms + TOLERANCE_MS >= t.received_ms + 1000.0,
                "request #{} at {:.1} ms started {:.1} ms after the 429 of #{} at {:.1} ms (Retry-After: 1)",
                later.seq,
                later.received_ms,
                later.received_ms - t.received_ms,
                t.seq,
                t.received_ms
            );
        }
    }
}

/// The pause is the whole sender's, not the throttled task's: with 8 requests in flight the
/// other 7 tasks have rows to send all along, yet nothing reaches the API between a 429 and
/// the end of its `Retry-After`.
#[test]
fn a_429_pauses_every_request_in_flight_not_only_its_own_task() {
    let _timing = exclusive();
    // 8 requests race for 5 slots a second: many attempts get a 429 (not what this test is
    // about, so no record may give up).
    let (run, requests, throttled) = throttled_sync("retry-after-8", 20, 8, 30);
    // The sandbox answers `Retry-After: 1` (whole seconds) and stamps `received_ms` when a
    // request arrives. The product's pause starts when it *receives* the 429, later than
    // that stamp, and requests already on their way then (up to 7 others) may still arrive:
    // SLACK_MS covers the 429's trip back, the product reading it, and those requests'
    // trip over the loopback, which a loaded 2-core machine can stretch to tens of ms (this
    // test holds the TIMING lock alone to keep that rare). After that nothing may arrive
    // until the second has passed, less 5 ms of timer granularity (tokio rounds timers to
    // whole milliseconds). A pause of only the throttled task fails by far: the other
    // tasks go on at the (adaptive) rate, dozens of ms apart, through the whole second.
    const SLACK_MS: f64 = 100.0;
    const TIMER_MS: f64 = 5.0;
    let mut early = Vec::new();
    for t in &throttled {
        let (from, to) = (t.received_ms + SLACK_MS, t.received_ms + 1000.0 - TIMER_MS);
        for r in requests
            .iter()
            .filter(|r| r.received_ms > from && r.received_ms < to)
        {
            early.push(format!(
                "#{} ({:?}) arrived {:.1} ms after the 429 of #{}",
                r.seq,
                r.reference,
                r.received_ms - t.received_ms,
                t.seq
            ));
        }
    }
    assert!(
        early.is_empty(),
        "{} requests arrived within a 429's Retry-After (1 s), e.g.:\n  {}\n{run}",
        early.len(),
        early[..early.len().min(10)].join("\n  ")
    );
}

#[test]
fn requests_never_exceed_the_rate_ceiling() {
    let _timing = exclusive();
    let wd = Workdir::new("rate");
    let sb = Sandbox::start(&wd, &[]);
    let (rps, burst) = (20.0, 5.0);
    wd.configure(&Conf {
        requests_per_second: rps,
        burst: 5,
        max_in_flight: 8,
        ..Conf::new(&sb)
    });
    let n = 80;
    let file = wd.write("export.csv", numbered_export("R-", n));
    let run = wd.run(&[&file.display().to_string()]);
    run.expect_code(0);
    let mut times: Vec<f64> = sb.requests().iter().map(|r| r.received_ms).collect();
    assert_eq!(times.len(), n, "{run}");
    times.sort_by(f64::total_cmp);
    // Within any window [t_i, t_j] the product may start at most `burst` requests plus
    // `rps` per second. The sandbox stamps arrivals, not starts, so two tolerances, as in
    // lychee's tests/rate_limit.rs (its EPSILON "for scheduler flakiness in CI"):
    // - +1 request: the GCRA cell at the window's edge, and one request overtaking another
    //   on the loopback;
    // - STALL_MS on the window: on a loaded 2-core CI machine the sandbox (or the
    //   connection set-up of the first requests) can stall for tens of ms, and requests
    //   started up to that far apart then arrive together. Seen: 8 arrivals within 48 ms
    //   right after the initial burst while the rest of the suite ran. This test holds the
    //   TIMING lock alone to keep such stalls rare; 100 ms is 2 requests at 20/s.
    // A limiter that is really off still fails: no limit sends all 80 in a fraction of a
    // second, a burst of 10 shows 10 arrivals at once, 30/s exceeds the bound over 1 s.
    const STALL_MS: f64 = 100.0;
    for i in 0..n {
        for j in i + 1..n {
            let count = (j - i + 1) as f64;
            let allowed = burst + rps * (times[j] - times[i] + STALL_MS) / 1000.0 + 1.0;
            assert!(
                count <= allowed,
                "{count} requests between {:.1} ms and {:.1} ms, at most {allowed:.2} allowed (rps {rps}, burst {burst})",
                times[i],
                times[j]
            );
        }
    }
}

#[test]
fn a_server_error_is_retried_then_kept_for_the_next_run() {
    let _timing = shared();
    let wd = Workdir::new("failed");
    let sb = Sandbox::start(&wd, &["--fail-reference", "F-1"]);
    let max_attempts = 3;
    wd.configure(&Conf {
        max_attempts,
        ..Conf::new(&sb)
    });
    let with_f = wd.write(
        "night1.csv",
        small_export(&[
            ("K-1", "k1@example.com", "Kim", "Ko"),
            ("F-1", "f1@example.com", "Fay", "Fu"),
            ("K-2", "k2@example.com", "Kai", "Ka"),
        ]),
    );
    let with_f = with_f.display().to_string();
    let run1 = wd.run(&[&with_f]);
    run1.expect_code(1);
    run1.expect_counts(3, 0, 2, 0, 1);
    run1.only_error([&with_f, "3", "F-1", "failed", "500"]);
    let sent1 = sb.requests();
    let f_attempts: Vec<_> = sent1
        .iter()
        .filter(|r| r.reference.as_deref() == Some("F-1"))
        .collect();
    assert_eq!(f_attempts.len(), max_attempts as usize, "{f_attempts:#?}");
    assert!(f_attempts.iter().all(|r| r.status == 500));

    // The API recovers; the next export no longer has F-1, which is sent anyway.
    sb.set_failures(&[]);
    let without_f = wd.write(
        "night2.csv",
        small_export(&[
            ("K-1", "k1@example.com", "Kim", "Ko"),
            ("K-2", "k2@example.com", "Kai", "Ka"),
        ]),
    );
    let without_f = without_f.display().to_string();
    let run2 = wd.run(&[&without_f]);
    run2.expect_code(0);
    run2.expect_counts(2, 2, 0, 0, 0);
    assert_eq!(run2.count("retried_from_earlier_runs.updated"), 1, "{run2}");
    let sent2 = &sb.requests()[sent1.len()..];
    assert_eq!(sent2.len(), 1, "{sent2:#?}\n{run2}");
    assert_eq!(sent2[0].reference.as_deref(), Some("F-1"));
    assert_eq!(sent2[0].status, 200);
    assert_eq!(sent2[0].body, f_attempts[0].body, "the kept record changed");
    assert_eq!(sb.accounts()["F-1"]["email"], json!("f1@example.com"));

    // Confirmed now: nothing more for it.
    let before = sb.request_count();
    let run3 = wd.run(&[&without_f]);
    run3.expect_code(0);
    assert_eq!(sb.request_count(), before, "{run3}");
    assert_eq!(
        run3.count("retried_from_earlier_runs.rows_read"),
        0,
        "{run3}"
    );
}

/// Network errors on every attempt (nothing listens at the URL): the record is `failed`
/// with no HTTP status and a message naming the attempts, kept, and sent by a later run
/// against an API that answers, from an export that no longer has it.
#[test]
fn a_record_that_met_only_network_errors_is_failed_kept_and_sent_later() {
    let _timing = shared();
    let wd = Workdir::new("refused");
    let sb = Sandbox::start(&wd, &[]);
    // Bound but never listening: every connect to it is refused, and no other process can
    // take the port while the socket lives.
    let closed =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    closed
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind a loopback port");
    let port = closed
        .local_addr()
        .expect("local_addr")
        .as_socket()
        .expect("an IP address")
        .port();
    let working = Conf {
        max_attempts: 2,
        ..Conf::new(&sb)
    };
    wd.configure(&Conf {
        base_url: format!("http://127.0.0.1:{port}/rest/api"),
        ..working.clone()
    });
    let night1 = wd.write(
        "night1.csv",
        small_export(&[("N-1", "n1@example.com", "Nia", "Ng")]),
    );
    let night1 = night1.display().to_string();
    let run1 = wd.run(&[&night1]);
    run1.expect_code(1);
    run1.expect_counts(1, 0, 0, 0, 1);
    let e = run1.only_error([&night1, "2", "N-1", "failed", ""]);
    let last = e["message"]
        .strip_prefix("gave up after 2 attempts; last: ")
        .unwrap_or_else(|| panic!("message {:?}\n{run1}", e["message"]));
    assert!(!last.is_empty(), "no last error in {:?}", e["message"]);
    assert_eq!(run1.count("requests_sent"), 2, "{run1}");
    assert_eq!(sb.request_count(), 0);

    // The API is reachable again; the next export has another account only. N-1 is sent
    // anyway, once, with its values.
    wd.configure(&working);
    let night2 = wd.write(
        "night2.csv",
        small_export(&[("O-1", "o1@example.com", "Oli", "Oh")]),
    );
    let run2 = wd.run(&[&night2.display().to_string()]);
    run2.expect_code(0);
    run2.expect_counts(1, 0, 1, 0, 0);
    assert_eq!(run2.count("retried_from_earlier_runs.updated"), 1, "{run2}");
    let requests = sb.requests();
    let grouped = by_reference(&requests);
    let kept = grouped.get("N-1").map(Vec::as_slice).unwrap_or_default();
    assert_eq!(kept.len(), 1, "{requests:#?}\n{run2}");
    assert_eq!(kept[0].status, 200);
    assert_eq!(
        kept[0].body,
        json!({"email": "n1@example.com", "firstname": "Nia", "lastname": "Ng"}),
        "the kept record changed"
    );
    drop(closed);
}

#[test]
fn retry_rejected_resends_a_remembered_rejection_and_a_plain_rerun_does_not() {
    let _timing = shared();
    let wd = Workdir::new("retry-rejected");
    let accounts = wd.write(
        "accounts.csv",
        "accountreference,email,locked\nK-1,k1@legacy.example.com,false\nK-2,k2@legacy.example.com,false\n",
    );
    let sb = Sandbox::start(&wd, &["--accounts", &accounts.display().to_string()]);
    wd.configure(&Conf::new(&sb));
    let file = wd.write(
        "export.csv",
        small_export(&[
            ("K-1", "k1@example.com", "Kim", "Ko"),
            ("GONE-1", "gone@example.com", "Gus", "Go"),
            ("K-2", "k2@example.com", "Kai", "Ka"),
        ]),
    );
    let file = file.display().to_string();
    let not_found = |run: &util::Run| {
        let errors = run.errors();
        assert_eq!(errors.len(), 1, "{errors:#?}\n{run}");
        let e = &errors[0];
        assert_eq!(
            [
                &e["line"],
                &e["accountreference"],
                &e["category"],
                &e["http_status"],
                &e["message"]
            ],
            ["3", "GONE-1", "not_found", "404", "account not found"],
            "{e:?}\n{run}"
        );
    };

    let run1 = wd.run(&[&file]);
    run1.expect_code(1);
    run1.expect_counts(3, 0, 2, 1, 0);
    not_found(&run1);
    let sent1 = sb.request_count();
    assert_eq!(sent1, 3);

    // Unchanged row, remembered rejection: not resent, still listed.
    let run2 = wd.run(&[&file]);
    run2.expect_code(1);
    run2.expect_counts(3, 2, 0, 1, 0);
    not_found(&run2);
    assert_eq!(
        sb.request_count(),
        sent1,
        "a plain rerun resent a rejection\n{run2}"
    );

    // --retry-rejected sends it again (and the API still says 404).
    let run3 = wd.run(&["--retry-rejected", &file]);
    run3.expect_code(1);
    not_found(&run3);
    let sent3 = &sb.requests()[sent1..];
    assert_eq!(sent3.len(), 1, "{sent3:#?}\n{run3}");
    assert_eq!(sent3[0].reference.as_deref(), Some("GONE-1"));
    assert_eq!(sent3[0].status, 404);
}

#[test]
fn a_newer_row_replaces_a_record_kept_from_an_earlier_run() {
    let _timing = shared();
    let wd = Workdir::new("kept-replaced");
    let sb = Sandbox::start(&wd, &[]);
    wd.configure(&Conf {
        max_attempts: 1,
        max_in_flight: 32,
        ..Conf::new(&sb)
    });
    // The rows come in descending reference order, so the last ones sent are the first a
    // replay of kept records (in reference order) would look at.
    let n = 300;
    let refs: Vec<String> = (1..=n).rev().map(|i| format!("N-{i:04}")).collect();
    let export = |tag: &str| {
        let rows: Vec<(String, String)> = refs
            .iter()
            .map(|r| (r.clone(), format!("{}-{tag}@example.com", r.to_lowercase())))
            .collect();
        let rows: Vec<(&str, &str, &str, &str)> = rows
            .iter()
            .map(|(r, e)| (r.as_str(), e.as_str(), "Ann", "Lee"))
            .collect();
        small_export(&rows)
    };
    let old = wd.write("night1.csv", export("old"));
    let new = wd.write("night2.csv", export("new"));

    // Night 1: the API is down for every account; all are kept for the next run.
    sb.set_failures(&refs.iter().map(String::as_str).collect::<Vec<_>>());
    let run1 = wd.run(&[&old.display().to_string()]);
    run1.expect_code(1);
    run1.expect_counts(n as u64, 0, 0, 0, n as u64);
    let sent1 = sb.request_count();

    // Night 2: the API is back and every account has a newer row, which replaces the kept
    // one: each account is sent once, with the new values, and nothing is replayed.
    sb.set_failures(&[]);
    let run2 = wd.run(&[&new.display().to_string()]);
    run2.expect_code(0);
    run2.expect_counts(n as u64, 0, n as u64, 0, 0);
    let sent2 = &sb.requests()[sent1..];
    let grouped = by_reference(sent2);
    let resent: Vec<_> = grouped
        .iter()
        .filter(|(_, reqs)| reqs.len() != 1)
        .map(|(r, reqs)| {
            let bodies: Vec<_> = reqs.iter().map(|q| q.body["email"].clone()).collect();
            format!("{r}: {bodies:?}")
        })
        .collect();
    let accounts = sb.accounts();
    let stale: Vec<_> = refs
        .iter()
        .filter(|r| {
            accounts[r.as_str()]["email"] != json!(format!("{}-new@example.com", r.to_lowercase()))
        })
        .map(|r| format!("{r}: {}", accounts[r.as_str()]["email"]))
        .collect();
    assert!(
        resent.is_empty() && stale.is_empty() && grouped.len() == n,
        "{} accounts sent more than once (e-mails in order), e.g. {:?}\n{} accounts left with the old values on the API, e.g. {:?}\n{run2}\nsummary: {:#}",
        resent.len(),
        &resent[..resent.len().min(5)],
        stale.len(),
        &stale[..stale.len().min(5)],
        run2.summary()
    );
    assert_eq!(
        run2.count("retried_from_earlier_runs.rows_read"),
        0,
        "{run2}"
    );
}

#[test]
fn a_redirect_stops_the_run_like_a_wrong_url() {
    let _timing = shared();
    let wd = Workdir::new("redirect");
    let sb = Sandbox::start(&wd, &["--fail-reference", "R-005", "--fail-status", "302"]);
    wd.configure(&Conf {
        max_in_flight: 1,
        ..Conf::new(&sb)
    });
    let file = wd.write("export.csv", numbered_export("R-", 20));
    let run = wd.run(&[&file.display().to_string()]);
    run.expect_code(2)
        .expect_stderr("HTTP 302")
        .expect_stderr("base_url");
    let summary = run.summary();
    assert!(
        summary["stopped"]
            .as_str()
            .is_some_and(|s| s.contains("HTTP 302")),
        "{summary:#}"
    );
    assert!(
        sb.request_count() < 20,
        "the run went on after the redirect\n{run}"
    );
    let redirected: Vec<_> = run
        .errors()
        .into_iter()
        .filter(|e| e["accountreference"] == "R-005")
        .collect();
    assert_eq!(redirected.len(), 1, "{run}");
    assert_eq!(redirected[0]["category"], "failed");
    assert_eq!(redirected[0]["http_status"], "302");
}

/// The row index answers "unchanged" without reading the cache, so it must never outlive
/// what makes that answer true. Night 2 changes an account's row; the API stores it but the
/// connection drops before the answer (the sandbox's applied-then-dropped fault), so the
/// client keeps the row as failed. Night 3 brings back exactly the row of night 1: equal to
/// what the API last confirmed, but the API now holds night 2's value, so it must be sent
/// (once), replacing the kept row, which is not replayed. Night 4 sends nothing.
#[test]
fn a_row_reverted_after_an_unanswered_request_is_sent_again_and_replaces_the_kept_one() {
    let _timing = shared();
    let wd = Workdir::new("index-revert");
    let sb = Sandbox::start(&wd, &["--seed", "1"]);
    wd.configure(&Conf {
        max_attempts: 1,
        ..Conf::new(&sb)
    });
    let night = |email: &str| {
        small_export(&[
            ("A-1", email, "Ann", "Lee"),
            ("A-2", "a2@example.com", "Bo", "Ng"),
        ])
    };
    let first = wd.write("n1.csv", night("a1@example.com"));
    let second = wd.write("n2.csv", night("a1-new@example.com"));
    let third = wd.write("n3.csv", night("a1@example.com"));

    wd.run(&[&first.display().to_string()]).expect_code(0);
    assert!(
        wd.path("cache/rows.idx").exists(),
        "a run leaves the row index"
    );
    sb.set_faults(r#"{"applied_drop": 1.0}"#);
    let run2 = wd.run(&[&second.display().to_string()]);
    run2.expect_code(1);
    run2.expect_counts(2, 1, 0, 0, 1);
    assert_eq!(
        sb.accounts()["A-1"]["email"],
        "a1-new@example.com",
        "the API applied night 2's row although the client never heard so"
    );
    sb.set_faults("{}");
    let before = sb.request_count();
    let run3 = wd.run(&[&third.display().to_string()]);
    run3.expect_code(0);
    run3.expect_counts(2, 1, 1, 0, 0);
    let sent = &sb.requests()[before..];
    assert_eq!(sent.len(), 1, "night 3 sent: {sent:#?}\n{run3}");
    assert_eq!(sent[0].reference.as_deref(), Some("A-1"));
    assert_eq!(sent[0].body, serde_json::json!({"email": "a1@example.com"}));
    assert_eq!(run3.summary()["retried_from_earlier_runs"]["rows_read"], 0);
    assert_eq!(sb.accounts()["A-1"]["email"], "a1@example.com");

    let before = sb.request_count();
    wd.run(&[&third.display().to_string()])
        .expect_code(0)
        .expect_counts(2, 2, 0, 0, 0);
    assert_eq!(sb.request_count(), before, "night 4 sent something");
}

/// Write-ahead outbox: a run given one file and killed (SIGKILL) while its request is in
/// flight leaves the record in the outbox, so the next run sends it although it is given
/// another file. Without the entry written before the request, nothing would remember it.
#[test]
fn a_record_in_flight_when_the_run_is_killed_is_sent_by_the_next_run_of_another_file() {
    let _timing = shared();
    let wd = Workdir::new("kill-in-flight");
    // Every answer waits 30 s: the request is surely in flight when the kill comes.
    let sb = Sandbox::start(&wd, &["--latency-ms", "30000"]);
    wd.configure(&Conf::new(&sb));
    let monday = wd.write(
        "mon.csv",
        small_export(&[("K-2", "k2@example.com", "Kim", "Oh")]),
    );
    let tuesday = wd.write(
        "tue.csv",
        small_export(&[("K-3", "k3@example.com", "Lu", "Oh")]),
    );
    let mut cmd = wd.command(&["run", &monday.display().to_string()]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("start the run");
    util::wait_for(
        "the request to reach the sandbox",
        std::time::Duration::from_secs(20),
        || (sb.request_count() > 0).then_some(()),
    );
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    drop(sb);

    let sb = Sandbox::start(&wd, &[]);
    wd.configure(&Conf::new(&sb));
    let run = wd.run(&[&tuesday.display().to_string()]);
    run.expect_code(0);
    let sent: BTreeSet<String> = sb
        .requests()
        .iter()
        .filter_map(|r| r.reference.clone())
        .collect();
    assert_eq!(
        sent,
        BTreeSet::from(["K-2".to_owned(), "K-3".to_owned()]),
        "{run}"
    );
    assert_eq!(
        run.summary()["retried_from_earlier_runs"]["updated"],
        1,
        "{run}"
    );
    assert_eq!(sb.accounts()["K-2"]["email"], "k2@example.com");
}

/// A second SIGTERM while the run waits for its requests in flight ends the process at once
/// with 143 (128 + SIGTERM), as a shell reports a killed command; the record whose answer it
/// did not wait for is sent by the next run (its outbox entry was written ahead).
#[test]
fn a_second_sigterm_ends_the_run_at_once_and_loses_nothing() {
    let _timing = shared();
    let wd = Workdir::new("second-signal");
    // Answers take 30 s: the first signal's grace (deadline 20 s less 2) is still running
    // when the second comes.
    let sb = Sandbox::start(&wd, &["--latency-ms", "30000"]);
    wd.configure(&Conf::new(&sb));
    let monday = wd.write(
        "mon.csv",
        small_export(&[("S-1", "s1@example.com", "Sam", "Oh")]),
    );
    let mut child = wd.spawn_logged(wd.command(&["run", &monday.display().to_string()]), "run");
    util::wait_for(
        "the request to reach the sandbox",
        std::time::Duration::from_secs(20),
        || (sb.request_count() > 0).then_some(()),
    );
    child.signal(libc::SIGTERM);
    child.wait_for_log(
        "a second signal ends it at once",
        std::time::Duration::from_secs(10),
    );
    let second = std::time::Instant::now();
    child.signal(libc::SIGTERM);
    let run = child.finish(&wd);
    run.expect_code(143);
    assert!(
        second.elapsed() < std::time::Duration::from_secs(5),
        "the second signal did not end the run at once\n{run}"
    );
    run.expect_stderr("Second signal: exiting now");
    drop(sb);

    let sb = Sandbox::start(&wd, &[]);
    wd.configure(&Conf::new(&sb));
    let tuesday = wd.write(
        "tue.csv",
        small_export(&[("S-2", "s2@example.com", "Su", "Oh")]),
    );
    wd.run(&[&tuesday.display().to_string()]).expect_code(0);
    let sent: BTreeSet<String> = sb
        .requests()
        .iter()
        .filter_map(|r| r.reference.clone())
        .collect();
    assert_eq!(sent, BTreeSet::from(["S-1".to_owned(), "S-2".to_owned()]));
}

/// A setting that changes how rows are checked makes the index miss, so a row confirmed
/// under the old limits is checked in full under the new ones.
#[test]
fn a_changed_limit_is_applied_to_rows_the_index_knows() {
    let _timing = shared();
    let wd = Workdir::new("index-config");
    let sb = Sandbox::start(&wd, &[]);
    let conf = Conf::new(&sb);
    wd.configure(&conf);
    let file = wd.write(
        "n.csv",
        small_export(&[("L-1", "l1@example.com", "Annabelle", "Lee")]),
    );
    let path = file.display().to_string();
    wd.run(&[&path]).expect_code(0);
    wd.run(&[&path]).expect_counts(1, 1, 0, 0, 0);

    wd.configure(&Conf {
        extra: "[validation.max_length]\nfirstname = 5\n".into(),
        ..conf
    });
    let run = wd.run(&[&path]);
    run.expect_code(1);
    run.expect_counts(1, 0, 0, 1, 0);
    let errors = run.errors();
    assert_eq!(
        errors
            .iter()
            .map(|e| e["message"].as_str())
            .collect::<Vec<_>>(),
        ["firstname provided exceeds maximum length"],
        "{run}"
    );
}

/// What the product logs at debug (`ACCOUNTSYNC_LOG`) once its SIGTERM/SIGINT handlers are in
/// place: from then on a signal stops the run cleanly instead of ending the process.
const HANDLERS_INSTALLED: &str = "SIGTERM/SIGINT handlers installed";

/// `accountsync run ARGS` with debug logs from accountsync itself (not its dependencies).
fn debug_run(wd: &Workdir, args: &[&str]) -> std::process::Command {
    let mut full = vec!["run"];
    full.extend_from_slice(args);
    let mut cmd = wd.command(&full);
    cmd.env("ACCOUNTSYNC_LOG", "info,accountsync=debug");
    cmd
}

/// SIGTERM while `run` waits for the inbox's files to settle (1 s): nothing is read or sent,
/// the files stay in the inbox, the report says interrupted, and the run exits 0: it was
/// asked to stop and did, and no record of its own was rejected or failed.
#[test]
fn sigterm_before_the_inbox_settles_leaves_every_file_and_exits_0() {
    let _timing = shared();
    let wd = Workdir::new("sigterm-settle");
    let sb = Sandbox::start(&wd, &[]);
    wd.configure(&Conf {
        archive_dir: Some(wd.path("archive")),
        ..Conf::new(&sb)
    });
    std::fs::create_dir_all(wd.path("archive")).expect("archive");
    wd.write("inbox/crm-1.csv", numbered_export("Q", 5));
    let mut child = wd.spawn_logged(debug_run(&wd, &[]), "run");
    // The handlers are installed before the run lists the inbox and starts its 1 s settle,
    // so a signal sent once the line is logged lands in the settle (or just before it, which
    // cancels it at once). The one timing assumption left is that this thread sends the
    // signal within the settle's 1 s of seeing the line; the message below says when not.
    child.wait_for_log(HANDLERS_INSTALLED, Duration::from_secs(30));
    let seen = Instant::now();
    child.signal(libc::SIGTERM);
    let late = seen.elapsed();
    let run = child.finish(&wd);
    assert_eq!(
        run.count("rows_read"),
        0,
        "rows were read: the signal came {late:?} after the handlers' line, past the settle?\n{run}"
    );
    assert_eq!(run.summary()["interrupted"], true, "{run}");
    assert_eq!(sb.request_count(), 0);
    assert!(
        wd.path("inbox/crm-1.csv").exists(),
        "the export waits\n{run}"
    );
    run.expect_stderr("wait for the next run");
    // Expects the change "SIGTERM during a run: exit 0 within the deadline" (not merged into
    // this branch yet, where this still exits 1): an interrupted run exits 0 unless records
    // were rejected or failed for reasons of their own. Checked last, so that until then
    // everything else is still checked.
    run.expect_code(0);
}

/// SIGTERM mid-run: the process stops reading, lets requests in flight answer, records
/// them, writes a report marked interrupted and exits 0 within `[shutdown].deadline_secs`:
/// the rows left unsent are `failed` ("not sent: the run was stopped") and kept, and no
/// record failed or was rejected for a reason of its own.
/// The next run sends exactly the accounts the API had not confirmed: none lost, none that
/// was confirmed sent again.
#[test]
fn sigterm_mid_run_exits_cleanly_and_the_next_run_sends_only_what_was_not_confirmed() {
    let _timing = shared();
    let wd = Workdir::new("sigterm");
    // 150 ms per request and 4 in flight: 200 rows take about 8 s.
    let sb = Sandbox::start(&wd, &["--latency-ms", "150"]);
    wd.configure(&Conf {
        max_in_flight: 4,
        requests_per_second: 1000.0,
        extra: "[shutdown]\ndeadline_secs = 5\n".into(),
        ..Conf::new(&sb)
    });
    let file = wd.write("n.csv", numbered_export("T", 200));
    let path = file.display().to_string();
    let child = wd.spawn_logged(wd.command(&["run", &path]), "run");
    // Signalled once 8 requests reached the sandbox (two rounds of 4 in flight): sending is
    // under way however slowly the process started, and with the send queue bounded
    // (max_in_flight * 2 + 16 rows) the reader is far from row 200.
    wait_for("8 requests at the sandbox", Duration::from_secs(30), || {
        (sb.request_count() >= 8).then_some(())
    });
    let signalled = Instant::now();
    child.signal(libc::SIGTERM);
    let run = child.finish(&wd);
    let took = signalled.elapsed();
    assert!(
        run.count("failed") > 0,
        "rows should be queued at the signal\n{run}"
    );
    let own: Vec<_> = run
        .errors()
        .into_iter()
        .filter(|e| e["message"] != "not sent: the run was stopped")
        .collect();
    assert!(
        own.is_empty() && run.count("rejected") == 0,
        "rows rejected or failed for a reason of their own: {own:#?}\n{run}"
    );
    // 5 s is `deadline_secs`, the product's own bound for stopping; measured from kill(2),
    // so it also covers the report, the cache flush and the process exit.
    assert!(
        took.as_secs_f64() < 5.0,
        "exit took {took:?} after SIGTERM\n{run}"
    );
    let summary = run.summary();
    assert_eq!(summary["interrupted"], true, "{summary:#}");
    let rows_read = run.count("rows_read");
    assert!(
        (1..200).contains(&rows_read),
        "the signal should land mid-file: {rows_read} rows read\n{run}"
    );
    let c = ["unchanged", "updated", "rejected", "failed"].map(|k| run.count(k));
    assert_eq!(
        c.iter().sum::<u64>(),
        rows_read,
        "every row read is in a bucket"
    );

    let first: Vec<_> = sb.requests();
    let confirmed: BTreeSet<String> = first
        .iter()
        .filter(|r| r.status == 200)
        .filter_map(|r| r.reference.clone())
        .collect();
    assert_eq!(
        confirmed.len() as u64,
        c[1],
        "updated = what the API confirmed\n{run}"
    );

    let again = wd.run(&[&path]);
    again.expect_code(0);
    let second: Vec<_> = sb.requests()[first.len()..].to_vec();
    let resent: BTreeSet<String> = second.iter().filter_map(|r| r.reference.clone()).collect();
    assert!(
        resent.is_disjoint(&confirmed),
        "confirmed accounts sent again: {:?}",
        resent.intersection(&confirmed).collect::<Vec<_>>()
    );
    assert_eq!(
        second.len(),
        resent.len(),
        "an account sent twice in the second run"
    );
    let all: BTreeSet<String> = (1..=200).map(|i| format!("T{i:03}")).collect();
    let union: BTreeSet<String> = confirmed.union(&resent).cloned().collect();
    assert_eq!(
        union, all,
        "every account reached the API exactly once across both runs"
    );
    // Expects the change "SIGTERM during a run: exit 0 within the deadline" (not merged into
    // this branch yet, where this still exits 1): the rows left unsent are listed as
    // `failed` and the report says `interrupted`, but only rows rejected or failed for
    // reasons of their own make the exit status 1. Checked last, so that until then
    // everything else is still checked.
    run.expect_code(0);
}

/// The API's real limit (20/s) is far below the configured rate (200/s): after the first
/// burst of 429s the adaptive rate settles under the API's limit, so later 429s stay rare,
/// and the summary reports how low it went.
#[test]
fn a_429_storm_lowers_the_rate_until_429s_are_rare() {
    let _timing = shared();
    let wd = Workdir::new("adaptive");
    let sb = Sandbox::start(&wd, &["--rate-limit", "20"]);
    wd.configure(&Conf {
        requests_per_second: 200.0,
        burst: 20,
        max_in_flight: 8,
        max_attempts: 30,
        ..Conf::new(&sb)
    });
    let n = 200;
    let file = wd.write("export.csv", numbered_export("A", n));
    let run = wd.run(&[&file.display().to_string()]);
    run.expect_code(0);
    run.expect_counts(n as u64, 0, n as u64, 0, 0);
    let summary = run.summary();
    let (sent, throttled) = (run.count("requests_sent"), run.count("throttled"));

    // The sandbox's log gives the timeline; it must be the same requests the product
    // counted, or splitting it says nothing about the summary's numbers.
    let requests = sb.requests();
    assert_eq!(requests.len() as u64, sent, "{run}");
    assert_eq!(
        requests.iter().filter(|r| r.status == 429).count() as u64,
        throttled,
        "{run}"
    );
    let first_429 = requests
        .iter()
        .find(|r| r.status == 429)
        .map(|r| r.received_ms)
        .expect("the sandbox throttled at least once");
    // The first burst is what the product sent before it could know of the 429: every
    // request that reached the sandbox within the first 429's `Retry-After: 1`. A request
    // sent after the product read that 429 starts a second after it at the earliest
    // (`no_request_starts_before_retry_after_has_passed`), so whatever arrived before that
    // was already on its way; everything from there on is the adaptive rate's doing.
    let burst = requests
        .iter()
        .filter(|r| r.received_ms < first_429 + 1000.0)
        .collect::<Vec<_>>();
    let burst_429 = burst.iter().filter(|r| r.status == 429).count() as u64;
    let (later, later_429) = (sent - burst.len() as u64, throttled - burst_429);
    let per_second = timeline(&requests);
    assert!(
        later > 0,
        "nothing after the first burst\n{per_second}\n{run}"
    );
    let share = later_429 as f64 / later as f64;
    assert!(
        share < 0.05,
        "{later_429} of the {later} requests after the first burst got a 429 ({:.1}%)\nper second (requests/429s): {per_second}\n{run}",
        share * 100.0
    );
    let lowest = summary["rate_limit_lowest"].as_f64().unwrap_or(f64::NAN);
    assert!(
        lowest < 20.0,
        "the rate never went under the API's limit: {lowest}\nper second (requests/429s): {per_second}"
    );
}

/// `second:requests/429s` for each second of the sandbox's log, for failure messages.
fn timeline(requests: &[util::Logged]) -> String {
    let Some(t0) = requests.first().map(|r| r.received_ms) else {
        return String::new();
    };
    let mut seconds: std::collections::BTreeMap<u64, (u32, u32)> = Default::default();
    for r in requests {
        let slot = seconds
            .entry(((r.received_ms - t0) / 1000.0) as u64)
            .or_default();
        slot.0 += 1;
        slot.1 += u32::from(r.status == 429);
    }
    seconds
        .iter()
        .map(|(s, (n, t))| format!("{s}:{n}/{t}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A 4xx the Accounts API does not document (here 405, as a proxy in front of a wrong URL
/// might answer) is not a permanent rejection (CONTRACT §4 lists 400, 403, 404, 409): the
/// record is `failed` after one attempt, the run goes on, and the next run sends it again.
#[test]
fn an_undocumented_4xx_fails_once_keeps_the_record_and_the_run_goes_on() {
    let _timing = shared();
    let wd = Workdir::new("undocumented-4xx");
    let sb = Sandbox::start(&wd, &["--fail-reference", "F-1", "--fail-status", "405"]);
    wd.configure(&Conf {
        max_attempts: 3,
        ..Conf::new(&sb)
    });
    let export = wd.write(
        "night1.csv",
        small_export(&[
            ("K-1", "k1@example.com", "Kim", "Ko"),
            ("F-1", "f1@example.com", "Fay", "Fu"),
            ("K-2", "k2@example.com", "Kai", "Ka"),
        ]),
    );
    let export = export.display().to_string();
    let run1 = wd.run(&[&export]);
    run1.expect_code(1);
    run1.expect_counts(3, 0, 2, 0, 1);
    assert_eq!(run1.summary()["stopped"], json!(null), "{run1}");
    let errors = run1.errors();
    assert_eq!(errors.len(), 1, "{errors:#?}\n{run1}");
    let e = &errors[0];
    assert_eq!(
        [&e["accountreference"], &e["category"], &e["http_status"]],
        ["F-1", "failed", "405"],
        "{e:?}"
    );
    assert!(
        e["message"].starts_with("unexpected HTTP 405") && e["message"].contains("[api].base_url"),
        "{e:?}"
    );
    let first = sb.requests();
    let f_attempts = first
        .iter()
        .filter(|r| r.reference.as_deref() == Some("F-1"))
        .count();
    assert_eq!(f_attempts, 1, "not retried within the run\n{run1}");

    // Kept, not remembered as rejected: the next run sends it although its row is unchanged.
    sb.set_failures(&[]);
    let run2 = wd.run(&[&export]);
    run2.expect_code(0);
    let second = &sb.requests()[first.len()..];
    assert_eq!(second.len(), 1, "{second:#?}\n{run2}");
    assert_eq!(second[0].reference.as_deref(), Some("F-1"));
    assert_eq!(second[0].status, 200);
}
