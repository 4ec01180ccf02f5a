//! Shared state of a running sandbox and the API's decision for one PATCH. The decision is a
//! plain function of (state, reference, body) so the check order can be tested without HTTP;
//! the parts that involve time on the wire (auth, rate, latency) live in `server.rs`.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use serde::Serialize;
use serde_json::{Value, json};

use crate::faults::Faults;
use crate::format::ErrorFormat;
use crate::rules;
use crate::store::Store;

/// What the command line fixes for the life of the server.
#[derive(Debug, Clone)]
pub struct Settings {
    pub token: String,
    pub custom_parameters: Vec<String>,
    pub rate_limit: Option<u32>,
    pub error_format: ErrorFormat,
    pub latency: Duration,
    pub fail_references: Vec<String>,
    pub fail_status: u16,
    /// Keep every request in the log; `false` (`--no-request-log`) keeps only the count.
    pub request_log: bool,
}

/// One request as the sandbox saw it, for tests to inspect.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub reference: Option<String>,
    pub body: Value,
    pub status: u16,
    pub received_ms: f64,
    /// The injected fault, if any (`faults::Kind::name`); absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<&'static str>,
}

#[derive(Debug, PartialEq)]
pub enum Reply {
    Messages(Vec<String>),
    Account(Value),
}

#[derive(Debug, PartialEq)]
pub struct Outcome {
    pub status: u16,
    pub reply: Reply,
}

impl Outcome {
    fn error(status: u16, messages: Vec<String>) -> Self {
        Outcome {
            status,
            reply: Reply::Messages(messages),
        }
    }
    fn one(status: u16, message: &str) -> Self {
        Outcome::error(status, vec![message.to_string()])
    }
}

pub struct Sandbox {
    pub settings: Settings,
    /// Off unless set with [`Sandbox::with_faults`]; has its own lock.
    pub faults: Faults,
    started: Instant,
    inner: Mutex<Inner>,
}

struct Inner {
    store: Store,
    log: Vec<LogEntry>,
    /// Requests arrived so far, logged or not.
    arrived: u64,
    /// Arrival times within the last second, for the rolling rate limit.
    arrivals: VecDeque<Instant>,
    fail_references: HashSet<String>,
    fail_status: u16,
    /// Error responses sent so far; drives `--error-format rotate`.
    errors_sent: usize,
}

impl Sandbox {
    pub fn new(settings: Settings, store: Store) -> Self {
        let inner = Inner {
            store,
            log: Vec::new(),
            arrived: 0,
            arrivals: VecDeque::new(),
            fail_references: settings.fail_references.iter().cloned().collect(),
            fail_status: settings.fail_status,
            errors_sent: 0,
        };
        Sandbox {
            settings,
            faults: Faults::new(fastrand::u64(..), Duration::from_secs(35), Duration::ZERO),
            started: Instant::now(),
            inner: Mutex::new(inner),
        }
    }

    pub fn with_faults(self, faults: Faults) -> Self {
        Sandbox { faults, ..self }
    }

    /// A panic in another request must not take the sandbox down with poisoned locks.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The scheme name is case-insensitive (RFC 9110); the token must match exactly.
    pub fn token_ok(&self, authorization: Option<&str>) -> bool {
        authorization
            .and_then(|h| h.split_once(' '))
            .is_some_and(|(scheme, t)| {
                scheme.eq_ignore_ascii_case("bearer") && t == self.settings.token
            })
    }

    /// Counts an arriving request and logs it (status 0 until answered); returns its index
    /// for [`Sandbox::finish`]. Without the request log nothing is kept and the index points
    /// nowhere.
    pub fn arrive(
        &self,
        method: &str,
        path: &str,
        reference: Option<String>,
        body: Value,
    ) -> usize {
        let received_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let mut inner = self.lock();
        inner.arrived += 1;
        if !self.settings.request_log {
            return usize::MAX;
        }
        let seq = inner.arrived;
        inner.log.push(LogEntry {
            seq,
            method: method.to_string(),
            path: path.to_string(),
            reference,
            body,
            status: 0,
            received_ms,
            fault: None,
        });
        inner.log.len() - 1
    }

    pub fn finish(&self, index: usize, status: u16) {
        if let Some(entry) = self.lock().log.get_mut(index) {
            entry.status = status;
        }
    }

    pub fn note_fault(&self, index: usize, fault: &'static str) {
        if let Some(entry) = self.lock().log.get_mut(index) {
            entry.fault = Some(fault);
        }
    }

    /// Counts this arrival and says whether it may be served: at most N per rolling second.
    /// Rejected arrivals count too, so a client that ignores `Retry-After` stays throttled.
    pub fn admit(&self) -> bool {
        let Some(limit) = self.settings.rate_limit else {
            return true;
        };
        let now = Instant::now();
        let mut inner = self.lock();
        while inner
            .arrivals
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            inner.arrivals.pop_front();
        }
        inner.arrivals.push_back(now);
        inner.arrivals.len() <= limit as usize
    }

    /// The body form for the next error response.
    pub fn next_error_format(&self) -> ErrorFormat {
        let mut inner = self.lock();
        inner.errors_sent += 1;
        self.settings.error_format.resolve(inner.errors_sent - 1)
    }

    /// Steps 4–10 of the check order for `PATCH /accounts/{reference}`; `body` is the parsed
    /// JSON, or `None` when the bytes were not JSON at all.
    pub fn patch(&self, reference: &str, body: Option<&Value>, today: NaiveDate) -> Outcome {
        let mut inner = self.lock();
        if inner.fail_references.contains(reference) {
            return Outcome::one(inner.fail_status, "internal server error");
        }
        let Some(Value::Object(body)) = body else {
            return Outcome::one(400, "body must be a JSON object");
        };
        if !inner.store.exists(reference) {
            return Outcome::one(404, "account not found");
        }
        let errors = rules::validate(body, &self.settings.custom_parameters, today);
        if !errors.is_empty() {
            return Outcome::error(400, errors);
        }
        if inner.store.is_locked(reference) && body.contains_key("clientuserid") {
            return Outcome::one(
                403,
                "unable to manage clientuserid with the provided authentication",
            );
        }
        if let Some(email) = body.get("email").and_then(Value::as_str)
            && inner.store.email_taken_by_other(email, reference)
        {
            return Outcome::one(409, "the email is already in use");
        }
        let mut account = inner.store.apply(reference, body);
        if let Value::Object(fields) = &mut account {
            fields.insert(
                "sessiontoken".into(),
                json!(format!("{:032x}", fastrand::u128(..))),
            );
        }
        Outcome {
            status: 200,
            reply: Reply::Account(account),
        }
    }

    pub fn set_failures(&self, references: Vec<String>, status: Option<u16>) {
        let mut inner = self.lock();
        inner.fail_references = references.into_iter().collect();
        inner.fail_status = status.unwrap_or(self.settings.fail_status);
    }

    pub fn requests_json(&self) -> Value {
        json!(self.lock().log)
    }

    /// Requests arrived so far, whether or not they are kept in the log.
    pub fn request_count(&self) -> usize {
        usize::try_from(self.lock().arrived).unwrap_or(usize::MAX)
    }

    pub fn accounts_json(&self) -> Value {
        self.lock().store.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(fail: &[&str]) -> Result<Sandbox, crate::store::LoadError> {
        let csv = "accountreference,email,locked\nA,a@x.com,\nB,b@x.com,true\n";
        let settings = Settings {
            token: "t".into(),
            custom_parameters: vec!["loyaltytier".into()],
            rate_limit: Some(2),
            error_format: ErrorFormat::Seed,
            latency: Duration::ZERO,
            fail_references: fail.iter().map(|s| s.to_string()).collect(),
            fail_status: 503,
            request_log: true,
        };
        Ok(Sandbox::new(settings, Store::from_csv(csv.as_bytes())?))
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 3).unwrap_or_default()
    }

    fn status(sb: &Sandbox, reference: &str, body: Option<Value>) -> u16 {
        sb.patch(reference, body.as_ref(), today()).status
    }

    #[test]
    fn check_order() -> Result<(), crate::store::LoadError> {
        let sb = sandbox(&["F"])?;
        // fail-reference wins over everything after it, even a non-JSON body.
        assert_eq!(status(&sb, "F", None), 503);
        // Not an object beats unknown account.
        assert_eq!(status(&sb, "nobody", Some(json!([1]))), 400);
        // Unknown account beats validation.
        assert_eq!(status(&sb, "nobody", Some(json!({"email": "bad"}))), 404);
        // Validation beats locked and conflict.
        assert_eq!(
            status(&sb, "B", Some(json!({"clientuserid": "c", "email": "bad"}))),
            400
        );
        // Locked beats conflict.
        assert_eq!(
            status(
                &sb,
                "B",
                Some(json!({"clientuserid": "c", "email": "A@X.COM"}))
            ),
            403
        );
        assert_eq!(status(&sb, "B", Some(json!({"email": "A@X.COM"}))), 409);
        // An account may re-send its own e-mail.
        assert_eq!(status(&sb, "A", Some(json!({"email": "A@x.com"}))), 200);
        // An applied e-mail is taken from then on.
        assert_eq!(status(&sb, "A", Some(json!({"email": "new@x.com"}))), 200);
        assert_eq!(status(&sb, "B", Some(json!({"email": "NEW@x.com"}))), 409);
        Ok(())
    }

    #[test]
    fn fail_list_changes_at_run_time() -> Result<(), crate::store::LoadError> {
        let sb = sandbox(&[])?;
        sb.set_failures(vec!["A".into()], None);
        assert_eq!(status(&sb, "A", Some(json!({}))), 503);
        sb.set_failures(vec!["A".into()], Some(502));
        assert_eq!(status(&sb, "A", Some(json!({}))), 502);
        sb.set_failures(vec![], None);
        assert_eq!(status(&sb, "A", Some(json!({}))), 200);
        Ok(())
    }

    #[test]
    fn rate_limit_counts_every_arrival() -> Result<(), crate::store::LoadError> {
        let sb = sandbox(&[])?;
        assert_eq!([sb.admit(), sb.admit(), sb.admit()], [true, true, false]);
        Ok(())
    }

    #[test]
    fn without_the_request_log_only_the_count_is_kept() -> Result<(), crate::store::LoadError> {
        let mut sb = sandbox(&[])?;
        sb.settings.request_log = false;
        for _ in 0..3 {
            let index = sb.arrive("PATCH", "/rest/api/accounts/A", Some("A".into()), json!({}));
            sb.finish(index, 200);
        }
        assert_eq!(sb.request_count(), 3);
        assert_eq!(sb.requests_json(), json!([]));

        let logged = sandbox(&[])?;
        let index = logged.arrive("PATCH", "/x", None, json!({"a": 1}));
        logged.finish(index, 404);
        assert_eq!(logged.request_count(), 1);
        assert_eq!(logged.requests_json()[0]["seq"], json!(1));
        assert_eq!(logged.requests_json()[0]["status"], json!(404));
        Ok(())
    }

    #[test]
    fn token_must_match_exactly() -> Result<(), crate::store::LoadError> {
        let sb = sandbox(&[])?;
        assert!(sb.token_ok(Some("Bearer t")) && sb.token_ok(Some("bearer t")));
        for bad in [
            None,
            Some("Bearer tt"),
            Some("Basic t"),
            Some("t"),
            Some("Bearer "),
        ] {
            assert!(!sb.token_ok(bad), "{bad:?}");
        }
        Ok(())
    }
}
