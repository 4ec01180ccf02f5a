//! The HTTP face of the sandbox. Every request outside `/_sandbox/` is an API request and is
//! logged, whatever its path or method, so a test can see exactly what the product sent —
//! including a reference that was not encoded as one path segment.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::conn::{self, Connection};
use crate::faults::Fault;
use crate::state::{Reply, Sandbox};
use crate::{fault_http, format};

const ACCOUNTS_PREFIX: &str = "/rest/api/accounts/";

pub fn router(sandbox: Arc<Sandbox>) -> Router {
    Router::new()
        .route("/_sandbox/requests", get(requests))
        .route("/_sandbox/accounts", get(accounts))
        .route("/_sandbox/fail", post(fail))
        .route("/_sandbox/stats", get(fault_http::stats))
        .route(
            "/_sandbox/faults",
            get(fault_http::get_faults).post(fault_http::set_faults),
        )
        .fallback(api)
        .with_state(sandbox)
}

/// Serves until `shutdown` completes; requests in flight are answered first.
pub async fn serve(
    listener: TcpListener,
    sandbox: Arc<Sandbox>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    conn::serve(listener, router(sandbox), shutdown).await
}

/// A server running on a task, for the demo and the tests, which stop it themselves.
pub struct Running {
    pub addr: SocketAddr,
    pub sandbox: Arc<Sandbox>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

impl Running {
    pub fn spawn(listener: TcpListener, sandbox: Arc<Sandbox>) -> io::Result<Running> {
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            // A dropped sender stops the server as well.
            let _ = stopped.await;
        };
        let task = tokio::spawn(serve(listener, Arc::clone(&sandbox), shutdown));
        Ok(Running {
            addr,
            sandbox,
            stop,
            task,
        })
    }

    pub async fn stop(self) -> io::Result<()> {
        let _ = self.stop.send(());
        self.task.await.map_err(io::Error::other)?
    }
}

/// Completes on SIGTERM or SIGINT. If a handler cannot be installed the server keeps running
/// rather than stopping at once.
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

/// The decoded reference when `path` is `/rest/api/accounts/{one segment}`. Decoding is done
/// here on the raw path, so `%2F` stays inside the segment and becomes `/` only afterwards.
pub fn reference_of(path: &str) -> Option<String> {
    let raw = path.strip_prefix(ACCOUNTS_PREFIX)?;
    if raw.is_empty() || raw.contains('/') {
        return None;
    }
    Some(percent_decode_str(raw).decode_utf8_lossy().into_owned())
}

async fn api(
    State(sandbox): State<Arc<Sandbox>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    connection: Option<Extension<Connection>>,
    body: Bytes,
) -> Response {
    let path = uri
        .path_and_query()
        .map_or(uri.path(), |p| p.as_str())
        .to_string();
    let reference = reference_of(uri.path());
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let logged = parsed
        .clone()
        .unwrap_or_else(|| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let index = sandbox.arrive(method.as_str(), &path, reference.clone(), logged);
    // If the client hangs up during the latency sleep this future is dropped and the entry
    // keeps status 0: nothing was answered.
    let response = answer(
        &sandbox,
        &method,
        reference.as_deref(),
        parsed.as_ref(),
        &headers,
        index,
        connection.as_ref().map(|Extension(c)| c),
    )
    .await;
    sandbox.finish(index, response.status().as_u16());
    tracing::debug!(%method, %path, status = response.status().as_u16(), "answered");
    response
}

/// The check order: auth, rate, fault draw, latency and jitter, the fault, then the API's own
/// decision (and an applied-drop's reset after it). `index` is the request's log entry.
async fn answer(
    sandbox: &Sandbox,
    method: &Method,
    reference: Option<&str>,
    body: Option<&Value>,
    headers: &HeaderMap,
    index: usize,
    connection: Option<&Connection>,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !sandbox.token_ok(authorization) {
        let body = json!({ "message": "invalid token" }).to_string();
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
    }
    if !sandbox.admit() {
        let headers = [
            (header::RETRY_AFTER, "1"),
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        ];
        return (
            StatusCode::TOO_MANY_REQUESTS,
            headers,
            "\u{2022} too many requests",
        )
            .into_response();
    }
    // Drawn before the latency, so the draws follow the order in which requests arrive.
    let fault = fault_http::draw(sandbox, method, reference, index);
    let delay = sandbox.settings.latency + sandbox.faults.jitter();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let Some(reference) = reference else {
        return messages(sandbox, 404, vec!["not found".to_string()]);
    };
    if method != Method::PATCH {
        return messages(sandbox, 405, vec!["method not allowed".to_string()]);
    }
    if let Some(response) = fault_http::instead(fault, sandbox, connection).await {
        return response;
    }
    let outcome = sandbox.patch(reference, body, chrono::Utc::now().date_naive());
    if matches!(outcome.reply, Reply::Account(_)) {
        sandbox.faults.record_applied(reference);
    }
    if fault == Fault::AppliedDrop {
        return fault_http::reset(connection).await;
    }
    match outcome.reply {
        Reply::Account(account) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            account.to_string(),
        )
            .into_response(),
        Reply::Messages(list) => messages(sandbox, outcome.status, list),
    }
}

/// An error response carrying messages, in the configured (or next rotated) body form.
fn messages(sandbox: &Sandbox, status: u16, list: Vec<String>) -> Response {
    let (content_type, body) = format::render(sandbox.next_error_format(), &list);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

async fn requests(State(sandbox): State<Arc<Sandbox>>) -> Response {
    json_response(StatusCode::OK, &sandbox.requests_json())
}

async fn accounts(State(sandbox): State<Arc<Sandbox>>) -> Response {
    json_response(StatusCode::OK, &sandbox.accounts_json())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailRequest {
    references: Vec<String>,
    /// Absent: the `--fail-status` given at start.
    status: Option<u16>,
}

/// Parses the body itself (rather than axum's `Json`) so a test that forgets the
/// content-type header still works.
async fn fail(State(sandbox): State<Arc<Sandbox>>, body: Bytes) -> Response {
    let request: FailRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let message = format!("expected {{\"references\": [...], \"status\": 500}}: {e}");
            return json_response(StatusCode::BAD_REQUEST, &json!({ "message": message }));
        }
    };
    if request.status.is_some_and(|s| !(100..=599).contains(&s)) {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "message": "status must be 100-599" }),
        );
    }
    let echo = json!({ "references": request.references, "status": request.status });
    sandbox.set_failures(request.references, request.status);
    json_response(StatusCode::OK, &echo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_is_one_decoded_segment() {
        let cases = [
            ("/rest/api/accounts/A1", Some("A1")),
            (
                "/rest/api/accounts/a%2Fb%3Fc%23d%25e%20f",
                Some("a/b?c#d%e f"),
            ),
            ("/rest/api/accounts/a%2fb", Some("a/b")),
            ("/rest/api/accounts/caf%C3%A9", Some("café")),
            ("/rest/api/accounts/a+b", Some("a+b")),
            ("/rest/api/accounts/a/b", None),
            ("/rest/api/accounts/", None),
            ("/rest/api/accounts", None),
            ("/rest/api/other/A1", None),
        ];
        for (path, expected) in cases {
            assert_eq!(reference_of(path).as_deref(), expected, "{path}");
        }
    }
}
