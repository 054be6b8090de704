//! `token_exchange` (RFC 8693): the caller's token is exchanged at an authorization server for
//! one meant for this backend, which goes out as `Authorization: Bearer`.
//!
//! Results are cached per (SHA-256 of the subject token, audience, scopes, resource) until shortly
//! before the exchanged token expires. Concurrent misses for one key share a single exchange;
//! failures are remembered per key for a few seconds so a failing endpoint is not hammered. The
//! subject token itself is never stored, and two callers never share a result: their tokens
//! differ, and so do their keys.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::HeaderValue;
use http::header::{ACCEPT, AUTHORIZATION};
use moka::Expiry;
use moka::future::Cache;
use sha2::{Digest, Sha256};

use super::{
    OutgoingAuthConfigError, OutgoingAuthError, UpstreamSource, bearer, resolve_secret, set_header,
};
use crate::auth::Caller;
use crate::auth::current::CurrentIdentities;
use crate::auth::identity::Secret;
use crate::config::TokenExchangeConfig;

/// Bound on one exchange request, connection to last byte.
pub const DEFAULT_EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a failed exchange is remembered for its key.
const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Exchanged tokens are dropped this long before they expire (less for short-lived tokens).
const MAX_EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// Cache lifetime of a token whose response gave no `expires_in`.
const UNKNOWN_LIFETIME_TTL: Duration = Duration::from_secs(60);
/// Most keys kept at once.
const CACHE_CAPACITY: u64 = 10_000;
/// Largest token endpoint response read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// What is requested: part of the cache key.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Target {
    audience: Option<String>,
    scopes: Vec<String>,
    resource: Option<String>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    /// SHA-256 of the subject token: the token itself is never kept.
    subject: [u8; 32],
    target: Arc<Target>,
}

#[derive(Clone)]
enum Outcome {
    /// The ready `Authorization` value, and how long it may be reused.
    Token {
        authorization: HeaderValue,
        ttl: Duration,
    },
    Failed(OutgoingAuthError),
}

/// Per-entry lifetime: the token's own, or the negative-cache window for failures.
struct OutcomeExpiry;

impl Expiry<Key, Outcome> for OutcomeExpiry {
    fn expire_after_create(&self, _: &Key, value: &Outcome, _: Instant) -> Option<Duration> {
        Some(match value {
            Outcome::Token { ttl, .. } => *ttl,
            Outcome::Failed(_) => NEGATIVE_TTL,
        })
    }
}

#[derive(Clone)]
struct Settings {
    backend: String,
    token_url: reqwest::Url,
    client_id: String,
    /// `Basic base64(urlencode(client_id):urlencode(secret))`, marked sensitive.
    client_auth: HeaderValue,
    subject_token_type: String,
    target: Arc<Target>,
    timeout: Duration,
}

pub(super) struct TokenExchange {
    settings: Settings,
    identities: Arc<CurrentIdentities>,
    /// With vmcp's authorization server: the upstream whose token (from the vault) is the
    /// subject, instead of the caller's own token.
    subject_upstream: Option<(String, UpstreamSource)>,
    http: reqwest::Client,
    cache: Cache<Key, Outcome>,
}

impl TokenExchange {
    pub(super) fn from_config(
        cfg: &TokenExchangeConfig,
        backend: &str,
        identities: Arc<CurrentIdentities>,
        http: reqwest::Client,
        subject_upstream: Option<(String, UpstreamSource)>,
    ) -> Result<Self, OutgoingAuthConfigError> {
        let invalid = |message: String| OutgoingAuthConfigError::Invalid {
            backend: backend.to_owned(),
            message,
        };
        let token_url = reqwest::Url::parse(&cfg.token_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| {
                invalid(format!("tokenExchange.tokenUrl {:?} is not an http(s) URL", cfg.token_url))
            })?;
        let secret = resolve_secret(
            backend,
            cfg.client_secret.as_ref(),
            cfg.client_secret_env.as_deref(),
            "tokenExchange.clientSecret",
            "tokenExchange.clientSecretEnv",
        )?;
        let client_auth = basic_auth(&cfg.client_id, &secret).ok_or_else(|| {
            invalid("tokenExchange.clientId or the client secret cannot be sent in a header".into())
        })?;
        let settings = Settings {
            backend: backend.to_owned(),
            token_url,
            client_id: cfg.client_id.clone(),
            client_auth,
            subject_token_type: cfg
                .subject_token_type
                .clone()
                .unwrap_or_else(|| ACCESS_TOKEN_TYPE.to_owned()),
            target: Arc::new(Target {
                audience: cfg.audience.clone(),
                scopes: cfg.scopes.clone(),
                resource: cfg.resource.clone(),
            }),
            timeout: DEFAULT_EXCHANGE_TIMEOUT,
        };
        Ok(Self::new(settings, identities, http, subject_upstream))
    }

    fn new(
        settings: Settings,
        identities: Arc<CurrentIdentities>,
        http: reqwest::Client,
        subject_upstream: Option<(String, UpstreamSource)>,
    ) -> Self {
        let cache =
            Cache::builder().max_capacity(CACHE_CAPACITY).expire_after(OutcomeExpiry).build();
        Self { settings, identities, subject_upstream, http, cache }
    }

    /// A copy with another request timeout and a cache of its own.
    pub(super) fn with_timeout(&self, timeout: Duration) -> Self {
        let settings = Settings { timeout, ..self.settings.clone() };
        Self::new(
            settings,
            self.identities.clone(),
            self.http.clone(),
            self.subject_upstream.clone(),
        )
    }

    pub(super) async fn apply(
        &self,
        caller: &Caller,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, OutgoingAuthError> {
        if matches!(caller, Caller::System) {
            // Background work (discovery, notification streams) has no user to act for: it goes
            // without credentials rather than borrowing anyone's.
            return Ok(request);
        }
        let subject = match &self.subject_upstream {
            Some((provider, u)) => {
                super::upstream_inject::upstream_token(caller, &u.issuer, provider, &*u.tokens)
                    .await?
            }
            None => match self.identities.resolve(caller) {
                Some(identity) => identity.token.clone(),
                None => {
                    return Err(OutgoingAuthError::Reauthenticate(
                        "token exchange needs an authenticated caller".to_owned(),
                    ));
                }
            },
        };
        let subject = subject.expose();
        let key =
            Key { subject: Sha256::digest(subject).into(), target: self.settings.target.clone() };
        match self.cache.get_with(key, self.exchange(subject)).await {
            Outcome::Token { authorization, .. } => {
                Ok(set_header(request, AUTHORIZATION, authorization))
            }
            Outcome::Failed(e) => Err(e),
        }
    }

    /// One RFC 8693 exchange. Every failure becomes an `Outcome::Failed` whose message names
    /// neither token nor secret.
    async fn exchange(&self, subject: &str) -> Outcome {
        let s = &self.settings;
        let scope = s.target.scopes.join(" ");
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", GRANT_TYPE),
            ("subject_token", subject),
            ("subject_token_type", &s.subject_token_type),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
        ];
        if let Some(a) = &s.target.audience {
            form.push(("audience", a));
        }
        if !scope.is_empty() {
            form.push(("scope", &scope));
        }
        if let Some(r) = &s.target.resource {
            form.push(("resource", r));
        }
        let sent = self
            .http
            .post(s.token_url.clone())
            .header(AUTHORIZATION, s.client_auth.clone())
            .header(ACCEPT, "application/json")
            .form(&form)
            .timeout(s.timeout)
            .send()
            .await;
        let outcome = match sent {
            Ok(resp) => self.read_response(resp).await,
            Err(e) => Err(self.transport_error(&e)),
        };
        match outcome {
            Ok(token) => token,
            Err(e) => {
                tracing::warn!(backend = %s.backend, "{e}");
                Outcome::Failed(e)
            }
        }
    }

    async fn read_response(
        &self,
        mut resp: reqwest::Response,
    ) -> Result<Outcome, OutgoingAuthError> {
        let backend = &self.settings.backend;
        let status = resp.status();
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(OutgoingAuthError::Unavailable(format!(
                            "token exchange for backend {backend:?}: response over {MAX_RESPONSE_BYTES} bytes"
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(self.transport_error(&e)),
            }
        }
        let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        if !status.is_success() {
            return Err(classify_failure(backend, status, json.as_ref()));
        }
        let Some(json) = json else {
            return Err(OutgoingAuthError::Unavailable(format!(
                "token exchange for backend {backend:?}: the response is not JSON"
            )));
        };
        let authorization = json
            .get("access_token")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .and_then(bearer)
            .ok_or_else(|| {
                OutgoingAuthError::Unavailable(format!(
                    "token exchange for backend {backend:?}: the response has no usable access_token"
                ))
            })?;
        let ttl = match json.get("expires_in").and_then(seconds) {
            Some(lifetime) => lifetime.saturating_sub(MAX_EXPIRY_MARGIN.min(lifetime / 10)),
            None => UNKNOWN_LIFETIME_TTL,
        };
        Ok(Outcome::Token { authorization, ttl })
    }

    fn transport_error(&self, e: &reqwest::Error) -> OutgoingAuthError {
        let backend = &self.settings.backend;
        let what = if e.is_timeout() {
            format!("no answer within {:?}", self.settings.timeout)
        } else if e.is_connect() {
            "cannot connect to the token endpoint".to_owned()
        } else {
            // Without the URL: nothing of the request itself reaches the message.
            let mut e = e.to_string();
            e.truncate(200);
            e
        };
        OutgoingAuthError::Unavailable(format!("token exchange for backend {backend:?}: {what}"))
    }
}

/// A non-2xx token endpoint answer: the caller's token was refused (log in again), or the gateway
/// or the endpoint is at fault (unavailable).
fn classify_failure(
    backend: &str,
    status: reqwest::StatusCode,
    json: Option<&serde_json::Value>,
) -> OutgoingAuthError {
    // RFC 6749 §5.2 limits `error` to printable ASCII; anything else is not echoed.
    let code = json.and_then(|j| j.get("error")).and_then(|e| e.as_str()).filter(|c| {
        !c.is_empty()
            && c.len() <= 64
            && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    });
    let detail = match code {
        Some(c) => format!("{c} (HTTP {})", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    };
    // Errors about the gateway's own client or request: logging in again would not help, and
    // answering 401 would send the user round a login loop.
    let gateway_fault = matches!(
        code,
        Some(
            "invalid_client"
                | "unauthorized_client"
                | "unsupported_grant_type"
                | "invalid_scope"
                | "invalid_target"
        )
    );
    let caller_fault =
        code == Some("invalid_grant") || (!gateway_fault && matches!(status.as_u16(), 400 | 401));
    if caller_fault {
        OutgoingAuthError::Reauthenticate(format!(
            "the token endpoint refused the caller's token for backend {backend:?}: {detail}"
        ))
    } else if gateway_fault {
        OutgoingAuthError::Unavailable(format!(
            "the token endpoint refused the gateway's exchange request for backend {backend:?}: {detail}"
        ))
    } else {
        OutgoingAuthError::Unavailable(format!(
            "token exchange for backend {backend:?} failed: {detail}"
        ))
    }
}

/// `expires_in` as a number of seconds (some servers send a string).
fn seconds(v: &serde_json::Value) -> Option<Duration> {
    let n = match v {
        serde_json::Value::Number(n) => {
            n.as_u64().or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
        }
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }?;
    Some(Duration::from_secs(n))
}

/// HTTP Basic client authentication as RFC 6749 §2.3.1 specifies it: id and secret are
/// form-urlencoded before being joined and base64-encoded.
fn basic_auth(client_id: &str, secret: &Secret) -> Option<HeaderValue> {
    let raw = format!(
        "{}:{}",
        crate::auth::form_urlencode(client_id),
        crate::auth::form_urlencode(secret.expose())
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
    let mut v = HeaderValue::try_from(format!("Basic {encoded}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

impl fmt::Debug for TokenExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        f.debug_struct("TokenExchange")
            .field("token_url", &s.token_url.as_str())
            .field("client_id", &s.client_id)
            .field("client_secret", &"***")
            .field("audience", &s.target.audience)
            .field("scopes", &s.target.scopes)
            .field("resource", &s.target.resource)
            .field("timeout", &s.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_auth_is_form_encoded() {
        assert_eq!(crate::auth::form_urlencode("a b+c/d~é"), "a+b%2Bc%2Fd%7E%C3%A9");
        let v = basic_auth("gw", &Secret::new("s3:cr t")).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode("gw:s3%3Acr+t");
        assert_eq!(v.to_str().unwrap(), format!("Basic {b64}"));
        assert!(v.is_sensitive());
    }

    #[test]
    fn failure_classes() {
        use reqwest::StatusCode as S;
        let j = |c: &str| serde_json::json!({ "error": c, "error_description": "token abc" });
        let re = |e| matches!(e, OutgoingAuthError::Reauthenticate(_));
        assert!(re(classify_failure("b", S::BAD_REQUEST, Some(&j("invalid_grant")))));
        assert!(re(classify_failure("b", S::BAD_REQUEST, Some(&j("invalid_request")))));
        assert!(re(classify_failure("b", S::UNAUTHORIZED, None)));
        assert!(!re(classify_failure("b", S::UNAUTHORIZED, Some(&j("invalid_client")))));
        assert!(!re(classify_failure("b", S::BAD_REQUEST, Some(&j("invalid_target")))));
        assert!(!re(classify_failure("b", S::SERVICE_UNAVAILABLE, None)));
        assert!(!re(classify_failure("b", S::FORBIDDEN, None)));
        let e = classify_failure("b", S::BAD_REQUEST, Some(&j("invalid_grant")));
        assert_eq!(
            e.to_string(),
            "the caller must re-authenticate: the token endpoint refused the caller's token for backend \"b\": invalid_grant (HTTP 400)"
        );
        // A description, or a code that is not a code, is never echoed.
        let e = classify_failure("b", S::BAD_REQUEST, Some(&j("bad token abc")));
        assert!(!e.to_string().contains("abc"), "{e}");
    }

    #[test]
    fn expires_in_forms() {
        assert_eq!(seconds(&serde_json::json!(300)), Some(Duration::from_secs(300)));
        assert_eq!(seconds(&serde_json::json!("300")), Some(Duration::from_secs(300)));
        assert_eq!(seconds(&serde_json::json!(-1)), None);
        assert_eq!(seconds(&serde_json::json!(null)), None);
    }
}
