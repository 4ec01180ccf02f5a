//! End-to-end: the real server on 127.0.0.1:0, spoken to over real HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::format::ErrorFormat;
use crate::server::Running;
use crate::state::{Sandbox, Settings};
use crate::store::Store;

pub(crate) type TestResult = Result<(), Box<dyn std::error::Error>>;

pub(crate) const ACCOUNTS: &str = "accountreference,email,locked\n\
                        A1,one@example.com,\n\
                        L1,locked@example.com,true\n\
                        a/b?c#d%e f,odd@example.com,\n";

pub(crate) fn settings() -> Settings {
    Settings {
        token: "t0k".into(),
        custom_parameters: vec!["loyaltytier".into()],
        rate_limit: None,
        error_format: ErrorFormat::Seed,
        latency: Duration::ZERO,
        fail_references: Vec::new(),
        fail_status: 500,
        request_log: true,
    }
}

async fn start(settings: Settings) -> Result<(Running, String), Box<dyn std::error::Error>> {
    let store = Store::from_csv(ACCOUNTS.as_bytes())?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let running = Running::spawn(listener, Arc::new(Sandbox::new(settings, store)))?;
    let base = format!("http://{}", running.addr);
    Ok((running, base))
}

pub(crate) fn client() -> Result<reqwest::Client, reqwest::Error> {
    // No proxy: an http_proxy in the test environment must not swallow 127.0.0.1.
    reqwest::Client::builder().no_proxy().build()
}

/// PATCH `body` to the raw (already encoded) path segment; returns status, headers, body.
pub(crate) async fn patch(
    c: &reqwest::Client,
    base: &str,
    segment: &str,
    body: &str,
) -> Result<(u16, reqwest::header::HeaderMap, String), reqwest::Error> {
    let response = c
        .patch(format!("{base}/rest/api/accounts/{segment}"))
        .bearer_auth("t0k")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    Ok((status, headers, response.text().await?))
}

pub(crate) async fn get_json(
    c: &reqwest::Client,
    url: String,
) -> Result<Value, Box<dyn std::error::Error>> {
    Ok(serde_json::from_str(
        &c.get(url).send().await?.text().await?,
    )?)
}

#[tokio::test]
async fn api_over_http() -> TestResult {
    let (running, base) = start(settings()).await?;
    let c = client()?;

    let unauthorised = c
        .patch(format!("{base}/rest/api/accounts/A1"))
        .body("{}")
        .send()
        .await?;
    assert_eq!(unauthorised.status().as_u16(), 401);
    assert_eq!(unauthorised.text().await?, r#"{"message":"invalid token"}"#);

    let (status, headers, body) = patch(&c, &base, "nobody", "{}").await?;
    assert_eq!((status, body.as_str()), (404, "• account not found"));
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");

    let (status, _, body) = patch(
        &c,
        &base,
        "A1",
        r#"{"email":"x","firstname":"é","status":"gone"}"#,
    )
    .await?;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        "• email address format invalid <br />• invalid status provided"
    );

    let (status, _, body) = patch(&c, &base, "A1", "not json").await?;
    assert_eq!(
        (status, body.as_str()),
        (400, "• body must be a JSON object")
    );

    let segment = "a%2Fb%3Fc%23d%25e%20f";
    let (status, _, body) = patch(&c, &base, segment, r#"{"firstname":"Odd"}"#).await?;
    assert_eq!(status, 200, "{body}");
    let account: Value = serde_json::from_str(&body)?;
    assert_eq!(account["accountreference"], "a/b?c#d%e f");
    assert_eq!(account["firstname"], "Odd");
    assert!(
        account["sessiontoken"]
            .as_str()
            .is_some_and(|t| t.len() == 32)
    );

    let (status, _, _) = patch(&c, &base, "L1", r#"{"clientuserid":"c"}"#).await?;
    assert_eq!(status, 403);
    let (status, _, body) = patch(&c, &base, "A1", r#"{"email":"ODD@example.com"}"#).await?;
    assert_eq!(
        (status, body.as_str()),
        (409, "• the email is already in use")
    );

    let fail = c
        .post(format!("{base}/_sandbox/fail"))
        .body(r#"{"references":["A1"],"status":503}"#);
    assert_eq!(fail.send().await?.status().as_u16(), 200);
    let (status, _, body) = patch(&c, &base, "A1", "{}").await?;
    assert_eq!((status, body.as_str()), (503, "• internal server error"));
    c.post(format!("{base}/_sandbox/fail"))
        .body(r#"{"references":[]}"#)
        .send()
        .await?;
    assert_eq!(patch(&c, &base, "A1", r#"{"lastname":"Ng"}"#).await?.0, 200);

    let log = get_json(&c, format!("{base}/_sandbox/requests")).await?;
    let statuses: Vec<_> = log
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        [401, 404, 400, 400, 200, 403, 409, 503, 200].map(|s| json!(s))
    );
    assert_eq!(log[4]["path"], format!("/rest/api/accounts/{segment}"));
    assert_eq!(log[4]["reference"], "a/b?c#d%e f");
    assert_eq!(log[4]["body"], json!({"firstname": "Odd"}));
    assert_eq!(log[3]["body"], "not json");
    assert_eq!(log[8]["seq"], 9);

    let accounts = get_json(&c, format!("{base}/_sandbox/accounts")).await?;
    assert_eq!(accounts["A1"]["lastname"], "Ng");
    assert_eq!(accounts["A1"]["email"], "one@example.com");
    assert!(accounts["A1"].get("sessiontoken").is_none());

    running.stop().await?;
    Ok(())
}

#[tokio::test]
async fn rate_limit_and_rotating_error_forms() -> TestResult {
    let (running, base) = start(Settings {
        rate_limit: Some(5),
        error_format: ErrorFormat::Rotate,
        ..settings()
    })
    .await?;
    let c = client()?;
    let mut bodies = Vec::new();
    for _ in 0..5 {
        bodies.push(patch(&c, &base, "nobody", "{}").await?.2);
    }
    assert_eq!(
        bodies,
        [
            "• account not found",
            r#"{"message":"• account not found"}"#,
            r#"{"errors":["account not found"]}"#,
            r#"{"errors":[{"message":"account not found"}]}"#,
            "account not found",
        ]
    );
    // Five requests above all arrived well within one second (a loopback round trip takes
    // microseconds), so the sixth is over the limit.
    let (status, headers, body) = patch(&c, &base, "A1", "{}").await?;
    assert_eq!((status, body.as_str()), (429, "• too many requests"));
    assert_eq!(headers["retry-after"], "1");
    running.stop().await?;
    Ok(())
}

#[tokio::test]
async fn latency_delays_answers_but_not_401() -> TestResult {
    let (running, base) = start(Settings {
        latency: Duration::from_millis(150),
        ..settings()
    })
    .await?;
    let c = client()?;
    let started = Instant::now();
    assert_eq!(patch(&c, &base, "A1", "{}").await?.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
    // Generous bound: only checks the 401 does not wait the full latency.
    let started = Instant::now();
    let unauthorised = c
        .patch(format!("{base}/rest/api/accounts/A1"))
        .send()
        .await?;
    assert_eq!(unauthorised.status().as_u16(), 401);
    assert!(started.elapsed() < Duration::from_millis(150));
    running.stop().await?;
    Ok(())
}
