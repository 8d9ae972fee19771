//! SMART Backend Services (the `client_credentials` grant with a signed JWT client assertion), as the
//! Bulk Data IG asks servers to authorize system clients:
//!
//! 1. discovery: `[base]/.well-known/smart-configuration` gives `token_endpoint`, `scopes_supported`,
//!    `token_endpoint_auth_signing_alg_values_supported`;
//! 2. each token request carries a new JWT (`iss` = `sub` = client id, `aud` = token endpoint, a fresh
//!    `jti`, `exp` at most 5 minutes ahead) signed RS384 or ES384 with the registered key ([`key`]);
//! 3. scopes: v2 `system/*.rs` or v1 `system/*.read`, as the server advertises (or given);
//! 4. tokens are renewed before they expire and whenever the server answers 401.

pub mod key;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use url::Url;

pub use key::{Algorithm, ClientKey};

use crate::error::Error;

/// `client_assertion_type` of a JWT client assertion.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Lifetime of a client assertion (the spec allows at most 5 minutes).
const ASSERTION_LIFETIME_S: i64 = 300;

/// What discovery found.
#[derive(Debug, Clone)]
pub struct SmartConfiguration {
    pub token_endpoint: Url,
    pub scopes_supported: Vec<String>,
    pub signing_algs: Vec<String>,
    pub capabilities: Vec<String>,
}

impl SmartConfiguration {
    /// Reads `[base]/.well-known/smart-configuration`.
    pub async fn discover(http: &reqwest::Client, base: &Url) -> Result<Self, Error> {
        let url = Url::parse(&format!(
            "{}/.well-known/smart-configuration",
            base.as_str().trim_end_matches('/')
        ))
        .map_err(|e| auth_error(base.as_str(), format!("discovery URL: {e}")))?;
        let response = http
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| auth_error(url.as_str(), crate::bulk::http::describe_reqwest_error(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(auth_error(
                url.as_str(),
                format!("HTTP {status}: no SMART configuration (give the token URL explicitly)"),
            ));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| auth_error(url.as_str(), e.to_string()))?;
        let doc: Value = serde_json::from_slice(&body)
            .map_err(|_| auth_error(url.as_str(), "the SMART configuration is not JSON"))?;
        let strings = |key: &str| -> Vec<String> {
            doc.get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let token_endpoint = doc
            .get("token_endpoint")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                auth_error(
                    url.as_str(),
                    "no `token_endpoint` in the SMART configuration",
                )
            })?;
        let token_endpoint = url
            .join(token_endpoint)
            .map_err(|e| auth_error(url.as_str(), format!("token_endpoint: {e}")))?;
        Ok(SmartConfiguration {
            token_endpoint,
            scopes_supported: strings("scopes_supported"),
            signing_algs: strings("token_endpoint_auth_signing_alg_values_supported"),
            capabilities: strings("capabilities"),
        })
    }

    /// The system scope to ask for: v2 `system/*.rs` when the server advertises v2 scopes, v1
    /// `system/*.read` when it advertises v1 ones, v1 when it says nothing (the most widely accepted).
    pub fn default_scope(&self) -> String {
        let v2 = self.scopes_supported.iter().any(|s| {
            s.rsplit_once('.')
                .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b"cruds".contains(&b)))
        }) || self.capabilities.iter().any(|c| c == "permission-v2");
        if v2 {
            "system/*.rs".into()
        } else {
            "system/*.read".into()
        }
    }
}

struct Token {
    value: String,
    renew_at: Instant,
}

/// A SMART Backend Services session: gets, caches and renews access tokens.
pub struct SmartAuth {
    http: reqwest::Client,
    client_id: String,
    key: Arc<ClientKey>,
    token_endpoint: Url,
    scope: String,
    current: tokio::sync::Mutex<Option<Token>>,
    issued: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for SmartAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmartAuth")
            .field("client_id", &self.client_id)
            .field("key", &self.key)
            .field("token_endpoint", &self.token_endpoint.as_str())
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl SmartAuth {
    /// A session for `client_id` with `key`. Without `token_endpoint`, discovery on `base` finds it;
    /// without `scope`, the scope follows what the server advertises. Fails early when the server does
    /// not accept the key's algorithm.
    pub async fn connect(
        http: reqwest::Client,
        base: &Url,
        client_id: String,
        key: ClientKey,
        token_endpoint: Option<Url>,
        scope: Option<String>,
    ) -> Result<Self, Error> {
        let (token_endpoint, scope) = match token_endpoint {
            Some(endpoint) => (endpoint, scope.unwrap_or_else(|| "system/*.read".into())),
            None => {
                let config = SmartConfiguration::discover(&http, base).await?;
                let alg = key.algorithm().as_str();
                if !config.signing_algs.is_empty() && !config.signing_algs.iter().any(|a| a == alg)
                {
                    return Err(auth_error(
                        config.token_endpoint.as_str(),
                        format!(
                            "the server accepts client assertions signed {} only; the key is {alg}",
                            config.signing_algs.join(", ")
                        ),
                    ));
                }
                let scope = scope.unwrap_or_else(|| config.default_scope());
                (config.token_endpoint, scope)
            }
        };
        Ok(SmartAuth {
            http,
            client_id,
            key: Arc::new(key),
            token_endpoint,
            scope,
            current: tokio::sync::Mutex::new(None),
            issued: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The scope asked for.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// Tokens obtained so far.
    pub fn tokens_issued(&self) -> u64 {
        self.issued.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A valid access token: the cached one, or a new one when it is near its expiry.
    pub async fn token(&self) -> Result<String, Error> {
        let mut current = self.current.lock().await;
        if let Some(token) = current.as_ref()
            && Instant::now() < token.renew_at
        {
            return Ok(token.value.clone());
        }
        let token = self.request_token().await?;
        let value = token.value.clone();
        *current = Some(token);
        Ok(value)
    }

    /// A new token after the server rejected `stale` (401); if another task already renewed it, that
    /// one is returned.
    pub async fn refresh(&self, stale: &str) -> Result<String, Error> {
        let mut current = self.current.lock().await;
        if let Some(token) = current.as_ref()
            && token.value != stale
            && Instant::now() < token.renew_at
        {
            return Ok(token.value.clone());
        }
        let token = self.request_token().await?;
        let value = token.value.clone();
        *current = Some(token);
        Ok(value)
    }

    async fn request_token(&self) -> Result<Token, Error> {
        let now = chrono::Utc::now().timestamp();
        let assertion = self.key.sign_jwt(&json!({
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_endpoint.as_str(),
            "exp": now + ASSERTION_LIFETIME_S,
            "iat": now,
            "jti": uuid::Uuid::now_v7().to_string(),
        }))?;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("scope", &self.scope)
            .append_pair("client_assertion_type", JWT_BEARER)
            .append_pair("client_assertion", &assertion)
            .finish();
        let location = self.token_endpoint.as_str();
        let requested = Instant::now();
        let response = self
            .http
            .post(self.token_endpoint.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(form)
            .send()
            .await
            .map_err(|e| auth_error(location, crate::bulk::http::describe_reqwest_error(&e)))?;
        let status = response.status();
        let body = crate::bulk::http::read_limited(response).await;
        let doc: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            let detail = match (doc.get("error"), doc.get("error_description")) {
                (Some(e), Some(d)) => format!(
                    "{}: {}",
                    e.as_str().unwrap_or_default(),
                    d.as_str().unwrap_or_default()
                ),
                (Some(e), None) => e.as_str().unwrap_or_default().to_string(),
                _ => "no OAuth error in the body".into(),
            };
            return Err(auth_error(
                location,
                format!(
                    "token request refused: HTTP {status}: {detail} (client id `{}`, key id `{}`, {}, scope `{}`)",
                    self.client_id,
                    self.key.kid(),
                    self.key.algorithm().as_str(),
                    self.scope
                ),
            ));
        }
        let value = doc
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| auth_error(location, "token response without `access_token`"))?
            .to_string();
        let expires_in = doc
            .get("expires_in")
            .and_then(Value::as_f64)
            .unwrap_or(300.0)
            .max(0.0);
        // Renew before expiry: a minute early for long tokens, half the lifetime for short ones.
        let margin = (expires_in / 2.0).min(60.0);
        self.issued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(expires_in, "obtained an access token");
        Ok(Token {
            value,
            renew_at: requested + Duration::from_secs_f64(expires_in - margin),
        })
    }
}

fn auth_error(location: &str, reason: impl Into<String>) -> Error {
    Error::Auth {
        location: location.to_string(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(scopes: &[&str]) -> SmartConfiguration {
        SmartConfiguration {
            token_endpoint: Url::parse("http://127.0.0.1/token").unwrap(),
            scopes_supported: scopes.iter().map(|s| s.to_string()).collect(),
            signing_algs: vec![],
            capabilities: vec![],
        }
    }

    #[test]
    fn scope_follows_what_the_server_advertises() {
        assert_eq!(
            config(&["system/*.rs", "system/*.read"]).default_scope(),
            "system/*.rs"
        );
        assert_eq!(
            config(&["system/Patient.rs"]).default_scope(),
            "system/*.rs"
        );
        assert_eq!(config(&["system/*.read"]).default_scope(), "system/*.read");
        assert_eq!(config(&[]).default_scope(), "system/*.read");
    }
}
