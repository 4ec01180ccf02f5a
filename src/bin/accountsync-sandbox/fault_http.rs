//! What each fault does on the wire, and the endpoints that show and change the faults:
//! `GET /_sandbox/stats`, `GET`/`POST /_sandbox/faults`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::conn::Connection;
use crate::faults::{Fault, Rates};
use crate::format;
use crate::state::Sandbox;

/// The fault for this request: drawn for a PATCH of an account (which has passed auth), noted
/// in its log entry; none for anything else.
pub fn draw(sandbox: &Sandbox, method: &Method, reference: Option<&str>, index: usize) -> Fault {
    if method != Method::PATCH || reference.is_none() {
        return Fault::None;
    }
    let fault = sandbox.faults.draw();
    if fault != Fault::None {
        sandbox.note_fault(index, fault.kind().name());
    }
    fault
}

/// The answer a fault gives instead of the API's, before the change is looked at (so nothing
/// is applied); `None` lets the request through: no fault, or applied-drop, which resets only
/// after the change is stored.
pub async fn instead(
    fault: Fault,
    sandbox: &Sandbox,
    connection: Option<&Connection>,
) -> Option<Response> {
    match fault {
        Fault::None | Fault::AppliedDrop => None,
        Fault::Error500 => Some(seed_error(500, "internal server error", None)),
        Fault::Unavailable(502) => Some(seed_error(502, "bad gateway", None)),
        Fault::Unavailable(_) => Some(seed_error(503, "service unavailable", None)),
        Fault::TooManyRequests { http_date } => {
            let retry_after = if http_date {
                // Whole seconds only: 2 s ahead, truncated, is 1–2 s ahead.
                imf_fixdate(Utc::now() + chrono::Duration::seconds(2))
            } else {
                "1".to_string()
            };
            Some(seed_error(429, "too many requests", Some(retry_after)))
        }
        Fault::Reset => Some(reset(connection).await),
        Fault::Slow => {
            // A client that waits this long gets a 504, a transient error like the others.
            let sleep = tokio::time::sleep(sandbox.faults.slow);
            match connection {
                Some(connection) => tokio::select! {
                    () = sleep => {},
                    () = connection.stopping() => {},
                },
                None => sleep.await,
            }
            Some(seed_error(504, "gateway timeout", None))
        }
    }
}

/// Resets the request's connection: the client gets no response at all.
pub async fn reset(connection: Option<&Connection>) -> Response {
    match connection {
        Some(connection) => connection.reset().await,
        // Only when the router is served without `conn::serve`, which nothing does.
        None => seed_error(500, "connection cannot be reset", None),
    }
}

/// An HTTP-date in the IMF-fixdate form (RFC 9110 §5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn imf_fixdate(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Always the seed's form: a fault stands for the infrastructure in front of the API, which
/// does not follow `--error-format`.
fn seed_error(status: u16, message: &str, retry_after: Option<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = format::bulleted(&[message.to_string()]);
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    if let Some(value) = retry_after.and_then(|v| v.parse().ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// `{"seed": N, "rates": {...}, "faults": {kind: n}, "applied_per_account": {ref: n}}`
pub async fn stats(State(sandbox): State<Arc<Sandbox>>) -> Response {
    json_response(StatusCode::OK, &sandbox.faults.stats_json())
}

/// `{"rates": {...}, "seed": N}`
pub async fn get_faults(State(sandbox): State<Arc<Sandbox>>) -> Response {
    json_response(StatusCode::OK, &sandbox.faults.config_json())
}

/// Replaces the rates (an absent one is 0, so `{}` turns faults off); a `seed` restarts the
/// RNGs from it. Answers like `GET`. The counts and the accounts are kept.
pub async fn set_faults(State(sandbox): State<Arc<Sandbox>>, body: Bytes) -> Response {
    match parse_update(&body) {
        Ok((rates, seed)) => {
            sandbox.faults.set(rates, seed);
            json_response(StatusCode::OK, &sandbox.faults.config_json())
        }
        Err(message) => json_response(StatusCode::BAD_REQUEST, &json!({ "message": message })),
    }
}

fn parse_update(body: &[u8]) -> Result<(Rates, Option<u64>), String> {
    const SHAPE: &str = r#"expected {"500": 0.1, "503": 0, "429": 0, "reset": 0, "slow": 0, "applied_drop": 0, "seed": 7} (all optional)"#;
    let mut object: serde_json::Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| format!("{SHAPE}: {e}"))?;
    let seed = match object.remove("seed") {
        None | Some(Value::Null) => None,
        Some(seed) => Some(
            seed.as_u64()
                .ok_or_else(|| format!("{SHAPE}: seed must be an unsigned integer"))?,
        ),
    };
    let rates: Rates =
        serde_json::from_value(Value::Object(object)).map_err(|e| format!("{SHAPE}: {e}"))?;
    rates.check()?;
    Ok((rates, seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_bodies() {
        let ok = parse_update(br#"{"500": 0.5, "applied_drop": 0.5, "seed": 9}"#);
        let expected = Rates {
            error_500: 0.5,
            applied_drop: 0.5,
            ..Rates::default()
        };
        assert_eq!(ok, Ok((expected, Some(9))));
        assert_eq!(parse_update(b"{}"), Ok((Rates::default(), None)));
        for bad in [
            &br#"{"500": 1.5}"#[..],
            br#"{"500": 0.6, "reset": 0.6}"#,
            br#"{"500": -0.1}"#,
            br#"{"fault_500": 0.1}"#,
            br#"{"seed": -1}"#,
            br#"{"500": "0.1"}"#,
            b"[]",
            b"",
        ] {
            assert!(
                parse_update(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn http_date_is_imf_fixdate() {
        let at = DateTime::parse_from_rfc3339("1994-11-06T08:49:37Z")
            .map(|t| t.with_timezone(&Utc))
            .ok();
        assert_eq!(
            at.map(imf_fixdate).as_deref(),
            Some("Sun, 06 Nov 1994 08:49:37 GMT")
        );
    }
}
