//! Fault injection end-to-end: the real server on 127.0.0.1:0, what a client sees of each
//! fault, and what the sandbox stored and counted.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveDateTime, Utc};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::faults::{Faults, Rates};
use crate::server::Running;
use crate::server_tests::{ACCOUNTS, TestResult, client, get_json, patch, settings};
use crate::state::Sandbox;
use crate::store::Store;

pub(crate) const SEED: u64 = 20261203;
pub(crate) const CHANGE: &str = r#"{"lastname":"Ng"}"#;

pub(crate) fn faults(rates: Rates, slow: Duration, jitter: Duration) -> Faults {
    let faults = Faults::new(SEED, slow, jitter);
    faults.set(rates, None);
    faults
}

pub(crate) async fn start(faults: Faults) -> Result<(Running, String), Box<dyn std::error::Error>> {
    let store = Store::from_csv(ACCOUNTS.as_bytes())?;
    let sandbox = Sandbox::new(settings(), store).with_faults(faults);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let running = Running::spawn(listener, Arc::new(sandbox))?;
    let base = format!("http://{}", running.addr);
    Ok((running, base))
}

/// A server where every PATCH gets the fault of `rates`.
pub(crate) async fn start_always(
    rates: Rates,
) -> Result<(Running, String), Box<dyn std::error::Error>> {
    start(faults(rates, Duration::from_secs(60), Duration::ZERO)).await
}

/// A PATCH written on a raw socket; the bytes of the answer, up to the server's close.
async fn raw_patch(addr: SocketAddr, body: &str) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "PATCH /rest/api/accounts/A1 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer t0k\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(answer)
}

pub(crate) async fn stats(
    c: &reqwest::Client,
    base: &str,
) -> Result<Value, Box<dyn std::error::Error>> {
    get_json(c, format!("{base}/_sandbox/stats")).await
}

pub(crate) async fn lastname(
    c: &reqwest::Client,
    base: &str,
) -> Result<Value, Box<dyn std::error::Error>> {
    Ok(get_json(c, format!("{base}/_sandbox/accounts")).await?["A1"]["lastname"].clone())
}

#[tokio::test]
async fn status_faults_answer_in_the_seed_form_and_apply_nothing() -> TestResult {
    let c = client()?;
    let cases = [
        (
            Rates {
                error_500: 1.0,
                ..Rates::default()
            },
            "500",
            vec![(500, "• internal server error")],
        ),
        (
            Rates {
                error_503: 1.0,
                ..Rates::default()
            },
            "503",
            vec![(502, "• bad gateway"), (503, "• service unavailable")],
        ),
    ];
    for (rates, kind, expected) in cases {
        let (running, base) = start_always(rates).await?;
        let mut seen = Vec::new();
        for _ in 0..20 {
            let (status, headers, body) = patch(&c, &base, "A1", CHANGE).await?;
            assert_eq!(headers["content-type"], "text/html; charset=utf-8");
            if !seen.contains(&(status, body.clone())) {
                seen.push((status, body));
            }
        }
        seen.sort();
        let expected: Vec<_> = expected.iter().map(|(s, b)| (*s, b.to_string())).collect();
        // 20 draws at one in two: both 502 and 503 appear (the seed makes this fixed).
        assert_eq!(seen, expected, "{kind}");
        let stats = stats(&c, &base).await?;
        assert_eq!(stats["faults"][kind], 20);
        assert_eq!(stats["applied_per_account"], json!({}));
        assert_eq!(lastname(&c, &base).await?, Value::Null);
        running.stop().await?;
    }
    Ok(())
}

#[tokio::test]
async fn too_many_requests_says_when_in_seconds_or_as_a_date() -> TestResult {
    let (running, base) = start_always(Rates {
        error_429: 1.0,
        ..Rates::default()
    })
    .await?;
    let c = client()?;
    let (mut seconds, mut dates) = (0, 0);
    for _ in 0..40 {
        let before = Utc::now();
        let (status, headers, body) = patch(&c, &base, "A1", CHANGE).await?;
        let after = Utc::now();
        assert_eq!((status, body.as_str()), (429, "• too many requests"));
        let retry_after = headers["retry-after"].to_str()?;
        if retry_after == "1" {
            seconds += 1;
            continue;
        }
        let at = NaiveDateTime::parse_from_str(retry_after, "%a, %d %b %Y %H:%M:%S GMT")?.and_utc();
        // Whole seconds, 2 s after the server's clock, truncated: more than 1 s after the
        // request left, at most 2 s after its answer arrived.
        assert!(
            at > before + Duration::from_secs(1),
            "{retry_after} {before}"
        );
        assert!(
            at <= after + Duration::from_secs(2),
            "{retry_after} {after}"
        );
        dates += 1;
    }
    // About one in four as a date; the seed fixes the count.
    assert!(seconds > 20 && dates > 3, "{seconds} {dates}");
    assert_eq!(stats(&c, &base).await?["faults"]["429"], 40);
    assert_eq!(lastname(&c, &base).await?, Value::Null);
    running.stop().await?;
    Ok(())
}

#[tokio::test]
async fn reset_is_a_connection_error_and_applies_nothing() -> TestResult {
    let (running, base) = start_always(Rates {
        reset: 1.0,
        ..Rates::default()
    })
    .await?;
    // RST, not a clean close (that would read as Ok with no bytes) nor a partial answer.
    let raw = raw_patch(running.addr, CHANGE).await;
    assert!(
        raw.as_ref()
            .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionReset),
        "{raw:?}"
    );
    let c = client()?;
    let err = patch(&c, &base, "A1", CHANGE).await.err();
    assert!(err.is_some_and(|e| e.status().is_none() && !e.is_timeout()));

    assert_eq!(lastname(&c, &base).await?, Value::Null);
    let counts = stats(&c, &base).await?;
    assert_eq!(counts["faults"]["reset"], 2);
    assert_eq!(counts["applied_per_account"], json!({}));
    let log = get_json(&c, format!("{base}/_sandbox/requests")).await?;
    // Nothing was answered (status 0), and the log says why.
    let entries: Vec<_> = log
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (e["status"].clone(), e["fault"].clone()))
        .collect();
    assert_eq!(entries, vec![(json!(0), json!("reset")); 2]);
    running.stop().await?;
    Ok(())
}

#[tokio::test]
async fn applied_drop_stores_the_change_then_resets() -> TestResult {
    let (running, base) = start_always(Rates {
        applied_drop: 1.0,
        ..Rates::default()
    })
    .await?;
    let raw = raw_patch(running.addr, CHANGE).await;
    assert!(
        raw.as_ref()
            .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionReset),
        "{raw:?}"
    );
    let c = client()?;
    assert_eq!(lastname(&c, &base).await?, "Ng");
    // Resent, as a client that saw only the error would: applied again, counted twice.
    assert!(patch(&c, &base, "A1", CHANGE).await.is_err());
    // A rejected change is reset as well, but nothing is stored or counted.
    assert!(patch(&c, &base, "A1", r#"{"email":"bad"}"#).await.is_err());
    let stats = stats(&c, &base).await?;
    assert_eq!(stats["faults"]["applied_drop"], 3);
    assert_eq!(stats["applied_per_account"], json!({"A1": 2}));
    let accounts = get_json(&c, format!("{base}/_sandbox/accounts")).await?;
    assert_eq!(accounts["A1"]["email"], "one@example.com");
    running.stop().await?;
    Ok(())
}

#[tokio::test]
async fn slow_outlasts_the_client_timeout_and_applies_nothing() -> TestResult {
    let slow = Duration::from_millis(800);
    let (running, base) = start(faults(
        Rates {
            slow: 1.0,
            ..Rates::default()
        },
        slow,
        Duration::ZERO,
    ))
    .await?;
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(200))
        .build()?;
    let err = patch(&impatient, &base, "A1", CHANGE).await.err();
    assert!(err.is_some_and(|e| e.is_timeout()));
    // A client that waits gets a transient error after the delay.
    let c = client()?;
    let started = Instant::now();
    let (status, _, body) = patch(&c, &base, "A1", CHANGE).await?;
    assert_eq!((status, body.as_str()), (504, "• gateway timeout"));
    assert!(started.elapsed() >= slow);
    assert_eq!(lastname(&c, &base).await?, Value::Null);
    let counts = stats(&c, &base).await?;
    assert_eq!(counts["faults"]["slow"], 2);
    assert_eq!(counts["applied_per_account"], json!({}));

    running.stop().await?;

    // Stopping does not wait the delay out (60 s here): the slow answer goes out at once.
    let (running, base) = start_always(Rates {
        slow: 1.0,
        ..Rates::default()
    })
    .await?;
    let waiting = tokio::spawn({
        let (c, base) = (c.clone(), base.clone());
        async move { patch(&c, &base, "A1", CHANGE).await.map(|r| r.0) }
    });
    while stats(&c, &base).await?["faults"]["slow"] != 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    running.stop().await?;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(waiting.await??, 504);
    Ok(())
}
