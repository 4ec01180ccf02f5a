//! The HTTP client: one reqwest client (rustls, pooled) and the URL rule. The token lives
//! in a `SecretString` and is exposed only to build the header.

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};

use crate::config::Api;

/// Everything but RFC 3986's unreserved characters is encoded, so the reference is always
/// exactly one path segment: `/`, `?`, `#`, `%` and spaces cannot change the URL's meaning.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Bodies are read up to this size; more is noise, and a hostile or broken server must not
/// make us buffer without bound.
const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot build the HTTP client: {0}")]
    Build(#[from] reqwest::Error),
    #[error("the API token contains characters that cannot go in an HTTP header")]
    BadToken,
}

pub struct Client {
    http: reqwest::Client,
    base_url: String,
    auth: HeaderValue,
}

/// One answer, reduced to what the retry decision needs.
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: String,
}

impl Client {
    pub fn new(api: &Api, token: &SecretString) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(api.timeout)
            .connect_timeout(api.timeout.min(Duration::from_secs(10)))
            // Shorter than common load balancers' keep-alive (60-75 s), so a pooled
            // connection is not reused just as the far end closes it.
            .pool_idle_timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("accountsync/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            .map_err(|_| ClientError::BadToken)?;
        auth.set_sensitive(true);
        Ok(Client {
            http,
            base_url: api.base_url.clone(),
            auth,
        })
    }

    pub async fn patch(&self, reference: &str, body: Vec<u8>) -> Result<Answer, reqwest::Error> {
        let mut response = self
            .http
            .patch(account_url(&self.base_url, reference))
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // A 2xx body (the account echoed back) is not needed, since the cache keeps what was
        // sent, but it is read anyway: a connection goes back to the pool only once its
        // response is read to the end.
        let bytes = read_bounded(&mut response).await?;
        let body = if (200..300).contains(&status) {
            String::new()
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        };
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }
}

/// Reads a body up to [`MAX_BODY`]; a longer one is cut (and its connection not reused).
async fn read_bounded(response: &mut reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_BODY - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() == MAX_BODY {
            break;
        }
    }
    Ok(out)
}

/// `{base_url}/accounts/{reference}` with the reference as one encoded segment.
pub fn account_url(base_url: &str, reference: &str) -> String {
    format!(
        "{base_url}/accounts/{}",
        utf8_percent_encode(reference, SEGMENT)
    )
}
