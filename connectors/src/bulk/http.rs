//! The HTTP side of the client: one `reqwest` client, the bearer token (sent only to the FHIR server's
//! own origin), and the retry loop shared by kick-off, status polling and downloads: network errors,
//! 5xx, transient OperationOutcomes and 429 are retried with `Retry-After` or backoff; 401 gets a new
//! token once; other errors become [`Error::Server`] with the OperationOutcome text.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use url::Url;

use super::outcome::read_error_body;
use super::retry::{RetryPolicy, jitter};
use crate::error::Error;
use crate::smart::SmartAuth;

/// Largest error body read (an OperationOutcome is small; a proxy page may not be).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// What a retried request reports (for the progress display and the event log).
#[derive(Debug, Clone)]
pub struct RetryNote {
    pub url: String,
    /// HTTP status, `None` for a network error.
    pub status: Option<u16>,
    pub reason: String,
    pub wait: Duration,
}

/// How 404 / 410 answers are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoneMeans {
    /// A plain server error.
    Error,
    /// The export expired ([`Error::ExportExpired`]).
    Expired,
}

/// The shared HTTP client.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    auth: Option<Arc<SmartAuth>>,
    origin: url::Origin,
    /// Retry waits and limits.
    pub policy: RetryPolicy,
    expired_hint: String,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("auth", &self.auth.is_some())
            .field("policy", &self.policy)
            .finish()
    }
}

/// A reqwest client with fhirlake's timeouts and user agent.
pub fn client() -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .user_agent(concat!("fhirlake/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(300))
        .build()
        .map_err(|e| Error::Http {
            location: "HTTP client".into(),
            reason: e.to_string(),
        })
}

impl Http {
    /// A client for the FHIR server at `base`.
    pub fn new(
        client: reqwest::Client,
        base: &Url,
        auth: Option<Arc<SmartAuth>>,
        policy: RetryPolicy,
        expired_hint: String,
    ) -> Self {
        Http {
            client,
            auth,
            origin: base.origin(),
            policy,
            expired_hint,
        }
    }

    /// Whether `url` is on the FHIR server's own origin (scheme, host and port).
    pub fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.origin
    }

    async fn bearer(&self, url: &Url, with_token: bool) -> Result<Option<String>, Error> {
        match &self.auth {
            Some(auth) if with_token && self.same_origin(url) => auth.token().await.map(Some),
            _ => Ok(None),
        }
    }

    /// Sends `method url` (with `build` adding headers and body) until it succeeds (2xx), retrying what
    /// can be retried. `with_token`: send the bearer token (only ever to the server's origin).
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        with_token: bool,
        gone: GoneMeans,
        build: &(dyn Fn(RequestBuilder) -> RequestBuilder + Sync),
        on_retry: &(dyn Fn(&RetryNote) + Sync),
    ) -> Result<Response, Error> {
        let mut failures = 0u32;
        let mut throttled = 0u32;
        let mut refreshed = false;
        let mut token = self.bearer(url, with_token).await?;
        loop {
            let mut request = build(self.client.request(method.clone(), url.clone()));
            if let Some(token) = &token {
                request = request.bearer_auth(token);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => {
                    failures += 1;
                    let reason = describe_reqwest_error(&e);
                    if failures >= self.policy.max_attempts {
                        return Err(Error::Http {
                            location: url.to_string(),
                            reason: format!("{reason} (gave up after {failures} attempts)"),
                        });
                    }
                    let wait = self.policy.backoff_wait(failures - 1);
                    let wait = wait + jitter(wait);
                    on_retry(&RetryNote {
                        url: url.to_string(),
                        status: None,
                        reason,
                        wait,
                    });
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if status == StatusCode::UNAUTHORIZED
                && let Some(auth) = &self.auth
                && token.is_some()
                && !refreshed
            {
                // The token expired or was revoked: one new token, then the same request again.
                refreshed = true;
                let stale = token.take().unwrap_or_default();
                token = Some(auth.refresh(&stale).await?);
                continue;
            }
            if gone == GoneMeans::Expired
                && matches!(status, StatusCode::NOT_FOUND | StatusCode::GONE)
            {
                return Err(Error::ExportExpired {
                    location: url.to_string(),
                    status: status.as_u16(),
                    hint: self.expired_hint.clone(),
                });
            }
            let body = read_limited(response).await;
            let error = read_error_body(&body);
            let reason = error.text.clone();
            let (retry, wait) = if status == StatusCode::TOO_MANY_REQUESTS {
                throttled += 1;
                (
                    throttled < self.policy.max_throttled,
                    self.policy.wait(retry_after.as_deref(), throttled.min(4)),
                )
            } else if (status.is_server_error() && !error.is_outcome) || error.transient {
                // A proxy's 502/503/504 page, or the server saying the error is transient.
                failures += 1;
                (
                    failures < self.policy.max_attempts,
                    self.policy.wait(retry_after.as_deref(), failures - 1),
                )
            } else {
                (false, Duration::ZERO)
            };
            if !retry {
                return Err(Error::Server {
                    location: url.to_string(),
                    status: status.as_u16(),
                    outcome: if status == StatusCode::UNAUTHORIZED && self.auth.is_none() {
                        format!(
                            "{reason} (the server requires authorization: give the SMART client id and key)"
                        )
                    } else {
                        reason
                    },
                });
            }
            on_retry(&RetryNote {
                url: url.to_string(),
                status: Some(status.as_u16()),
                reason,
                wait,
            });
            tokio::time::sleep(wait).await;
        }
    }

    /// Sends one request without retries (DELETE of a status URL); errors are returned as is.
    pub async fn send_once(&self, method: Method, url: &Url) -> Result<(u16, String), Error> {
        let mut request = self.client.request(method, url.clone());
        if let Some(token) = self.bearer(url, true).await? {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| Error::Http {
            location: url.to_string(),
            reason: describe_reqwest_error(&e),
        })?;
        let status = response.status().as_u16();
        let body = read_limited(response).await;
        Ok((status, read_error_body(&body).text))
    }
}

/// Largest manifest page read (a manifest lists one entry per file: thousands of files fit easily).
pub const MAX_MANIFEST_BODY: usize = 64 * 1024 * 1024;

/// The body of an error response, at most [`MAX_ERROR_BODY`] bytes.
pub async fn read_limited(response: Response) -> Vec<u8> {
    read_body(response, MAX_ERROR_BODY).await.0
}

/// At most `max` bytes of a body; the flag says whether all of it was read (not cut at `max`, no
/// transfer error).
pub async fn read_body(mut response: Response, max: usize) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = max.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if chunk.len() > room {
                    return (body, false);
                }
            }
            Ok(None) => return (body, true),
            Err(_) => return (body, false),
        }
    }
}

/// A reqwest error in words, with its causes (reqwest's own message is often just "error sending request").
pub fn describe_reqwest_error(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if let Some(url) = e.url() {
        // The URL is reported by the caller as the location.
        text = text.replace(&format!(" for url ({url})"), "");
    }
    text
}
