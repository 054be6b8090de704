//! What the strategies that call a token endpoint share (`token_exchange`, `obo`, `xaa`): one
//! bounded form POST to an OAuth token endpoint, its answer classified, and a cache of outcomes.
//!
//! Invariants:
//! - Every request has a deadline ([`DEFAULT_EXCHANGE_TIMEOUT`] unless the strategy says
//!   otherwise) and at most [`MAX_RESPONSE_BYTES`] of the answer are read.
//! - Errors name the backend and the step (`token exchange`, `on-behalf-of exchange`, ...), never
//!   a token, a secret, the request, or what the endpoint wrote beyond a well-formed OAuth error
//!   code.
//! - The cache is keyed by a SHA-256 digest of the subject credential and the target: the
//!   credential itself is never stored, and two callers never share an entry. Concurrent misses
//!   for one key share one flight; failures are remembered for [`NEGATIVE_TTL`].

use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::HeaderValue;
use http::header::{ACCEPT, AUTHORIZATION};
use moka::Expiry;
use moka::future::Cache;
use sha2::{Digest, Sha256};

use super::upstream_inject::{upstream_token, upstream_user, vault_error};
use super::{OutgoingAuthError, UpstreamSource, bearer};
use crate::auth::Caller;
use crate::auth::current::CurrentIdentities;
use crate::auth::identity::Secret;

/// Bound on one token endpoint request, connection to last byte.
pub const DEFAULT_EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a failed grant is remembered for its key.
pub(super) const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Granted tokens are dropped this long before they expire (less for short-lived tokens: a tenth
/// of their lifetime).
pub(super) const MAX_EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// Cache lifetime of a token whose response gave no `expires_in`.
pub(super) const UNKNOWN_LIFETIME_TTL: Duration = Duration::from_secs(60);
/// Most keys kept at once, per strategy (per backend).
pub(super) const CACHE_CAPACITY: u64 = 10_000;
/// Largest token endpoint response read.
pub(super) const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// `grant_type` of RFC 7523 (and of Entra's on-behalf-of flow).
pub(super) const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// How the gateway authenticates itself to a token endpoint.
#[derive(Clone)]
pub(super) enum ClientAuth {
    /// None (a public client, or none configured).
    None,
    /// `client_secret_basic`: the ready `Authorization` value, marked sensitive.
    Basic(HeaderValue),
    /// `client_secret_post`: `client_id` and `client_secret` in the form.
    Post { client_id: String, secret: Secret },
}

impl ClientAuth {
    /// HTTP Basic as RFC 6749 §2.3.1 specifies it: id and secret are form-urlencoded before
    /// being joined and base64-encoded. `None` if the result cannot be a header value.
    pub(super) fn basic(client_id: &str, secret: &Secret) -> Option<Self> {
        let raw = format!(
            "{}:{}",
            crate::auth::form_urlencode(client_id),
            crate::auth::form_urlencode(secret.expose())
        );
        let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
        let mut v = HeaderValue::try_from(format!("Basic {encoded}")).ok()?;
        v.set_sensitive(true);
        Some(Self::Basic(v))
    }
}

/// One token endpoint as one step of one backend's strategy uses it.
#[derive(Clone)]
pub(super) struct Endpoint {
    /// Backend name, for messages.
    pub backend: String,
    /// What this step is called in messages (`token exchange`, ...).
    pub step: &'static str,
    pub url: reqwest::Url,
    pub client: ClientAuth,
    pub timeout: Duration,
}

/// A successful token endpoint answer: its JSON object.
pub(super) type Answer = serde_json::Map<String, serde_json::Value>;

impl Endpoint {
    /// `Unavailable`, naming the backend and the step.
    pub(super) fn unavailable(&self, what: impl std::fmt::Display) -> OutgoingAuthError {
        OutgoingAuthError::Unavailable(format!(
            "{} for backend {:?}: {what}",
            self.step, self.backend
        ))
    }

    /// POSTs `form` (plus the client authentication) and returns the JSON object of a 2xx
    /// answer; every failure is classified (see [`Endpoint::refused`]).
    pub(super) async fn post(
        &self,
        http: &reqwest::Client,
        form: &[(&str, &str)],
    ) -> Result<Answer, OutgoingAuthError> {
        let mut form = form.to_vec();
        let mut request = http.post(self.url.clone()).header(ACCEPT, "application/json");
        match &self.client {
            ClientAuth::None => {}
            ClientAuth::Basic(v) => request = request.header(AUTHORIZATION, v.clone()),
            ClientAuth::Post { client_id, secret } => {
                form.push(("client_id", client_id));
                form.push(("client_secret", secret.expose()));
            }
        }
        let resp = request
            .form(&form)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        let body = self.read_capped(resp).await?;
        let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        // RFC 6749 §5.2: an `error` member means failure, whatever the status says.
        let error_code = json.as_ref().and_then(|j| j.get("error")).is_some();
        if !status.is_success() || error_code {
            return Err(self.refused(status, json.as_ref()));
        }
        match json {
            Some(serde_json::Value::Object(map)) => Ok(map),
            _ => Err(self.unavailable("the response is not a JSON object")),
        }
    }

    async fn read_capped(&self, mut resp: reqwest::Response) -> Result<Vec<u8>, OutgoingAuthError> {
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(self.unavailable(format_args!(
                            "response over {MAX_RESPONSE_BYTES} bytes"
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(e) => return Err(self.transport_error(&e)),
            }
        }
    }

    fn transport_error(&self, e: &reqwest::Error) -> OutgoingAuthError {
        let what = if e.is_timeout() {
            format!("no answer within {:?}", self.timeout)
        } else if e.is_connect() {
            "cannot connect to the token endpoint".to_owned()
        } else {
            // Without the URL: nothing of the request itself reaches the message.
            let mut m = e.to_string();
            if let Some(u) = e.url() {
                m = m.replace(u.as_str(), "the token endpoint");
            }
            // At most 200 bytes, cut on a character boundary.
            let cut = (0..=m.len().min(200)).rev().find(|i| m.is_char_boundary(*i)).unwrap_or(0);
            m.truncate(cut);
            m
        };
        self.unavailable(what)
    }

    /// A refusal: the caller's credential was refused (log in again), or the gateway or the
    /// endpoint is at fault (unavailable).
    pub(super) fn refused(
        &self,
        status: reqwest::StatusCode,
        json: Option<&serde_json::Value>,
    ) -> OutgoingAuthError {
        // RFC 6749 §5.2 limits `error` to printable ASCII; anything else is not echoed.
        let code = json.and_then(|j| j.get("error")).and_then(|e| e.as_str()).filter(|c| {
            !c.is_empty()
                && c.len() <= 64
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        });
        let detail = match code {
            Some(c) => format!("{c} (HTTP {})", status.as_u16()),
            None => format!("HTTP {}", status.as_u16()),
        };
        // Errors about the gateway's own client or request: logging in again would not help,
        // and answering 401 would send the user round a login loop.
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
        let caller_fault = code == Some("invalid_grant")
            || (!gateway_fault && matches!(status.as_u16(), 400 | 401));
        let (step, backend) = (self.step, &self.backend);
        if caller_fault {
            OutgoingAuthError::Reauthenticate(format!(
                "{step} for backend {backend:?}: the token endpoint refused the caller's token: {detail}"
            ))
        } else if gateway_fault {
            OutgoingAuthError::Unavailable(format!(
                "{step} for backend {backend:?}: the token endpoint refused the gateway's request: {detail}"
            ))
        } else {
            OutgoingAuthError::Unavailable(format!(
                "{step} for backend {backend:?} failed: {detail}"
            ))
        }
    }

    /// The non-empty string member `name` of an answer.
    pub(super) fn text<'a>(&self, answer: &'a Answer, name: &str) -> Option<&'a str> {
        answer.get(name).and_then(|v| v.as_str()).filter(|s| !s.is_empty())
    }

    /// The `Authorization: Bearer` value of an answer's `access_token` and how long it may be
    /// reused: its `expires_in` less `skew` (unset: a tenth of it, at most
    /// [`MAX_EXPIRY_MARGIN`]).
    pub(super) fn bearer_grant(
        &self,
        answer: &Answer,
        skew: Option<Duration>,
    ) -> Result<Granted, OutgoingAuthError> {
        let authorization = self
            .text(answer, "access_token")
            .and_then(bearer)
            .ok_or_else(|| self.unavailable("the response has no usable access_token"))?;
        let ttl = match answer.get("expires_in").and_then(seconds) {
            Some(lifetime) => {
                let margin = skew.unwrap_or_else(|| MAX_EXPIRY_MARGIN.min(lifetime / 10));
                lifetime.saturating_sub(margin)
            }
            None => UNKNOWN_LIFETIME_TTL,
        };
        Ok(Granted { authorization, ttl })
    }
}

/// `expires_in` as a number of seconds (some servers send a string).
pub(super) fn seconds(v: &serde_json::Value) -> Option<Duration> {
    let n = match v {
        serde_json::Value::Number(n) => {
            n.as_u64().or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
        }
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }?;
    Some(Duration::from_secs(n))
}

/// A token ready to send, and how long it may be reused.
#[derive(Clone)]
pub(super) struct Granted {
    pub authorization: HeaderValue,
    pub ttl: Duration,
}

/// Cache key: SHA-256 over the subject credential and the target, each length-prefixed.
pub(super) fn cache_key(subject: &str, target: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in std::iter::once(subject).chain(target.iter().copied()) {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

#[derive(Clone)]
enum Outcome {
    Token(Granted),
    Failed(OutgoingAuthError),
}

/// Per-entry lifetime: the token's own, or the negative-cache window for failures.
struct OutcomeExpiry;

impl<K> Expiry<K, Outcome> for OutcomeExpiry {
    fn expire_after_create(&self, _: &K, value: &Outcome, _: Instant) -> Option<Duration> {
        Some(match value {
            Outcome::Token(g) => g.ttl,
            Outcome::Failed(_) => NEGATIVE_TTL,
        })
    }
}

/// Outcomes of grants per key, with single flight and a negative cache.
pub(super) struct GrantCache<K: Hash + Eq + Send + Sync + 'static> {
    cache: Cache<K, Outcome>,
    backend: String,
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> GrantCache<K> {
    pub(super) fn new(backend: &str) -> Self {
        let cache =
            Cache::builder().max_capacity(CACHE_CAPACITY).expire_after(OutcomeExpiry).build();
        Self { cache, backend: backend.to_owned() }
    }

    /// The cached outcome for `key`, else the one `grant` produces (run once for concurrent
    /// misses). A failure is logged (it names no secret) and remembered for [`NEGATIVE_TTL`].
    pub(super) async fn get(
        &self,
        key: K,
        grant: impl Future<Output = Result<Granted, OutgoingAuthError>>,
    ) -> Result<HeaderValue, OutgoingAuthError> {
        let backend = &self.backend;
        let outcome = self
            .cache
            .get_with(key, async move {
                let granted = grant.await;
                crate::telemetry::exchanges::record(backend, granted.is_ok());
                match granted {
                    Ok(g) => Outcome::Token(g),
                    Err(e) => {
                        tracing::warn!(backend = %backend, "{e}");
                        Outcome::Failed(e)
                    }
                }
            })
            .await;
        match outcome {
            Outcome::Token(g) => Ok(g.authorization),
            Outcome::Failed(e) => Err(e),
        }
    }
}

/// Where a strategy's subject credential comes from: resolved for each request, never kept.
#[derive(Clone)]
pub(super) enum Subject {
    /// The token the caller presented (for teardown: the principal's latest unexpired one).
    Caller(Arc<CurrentIdentities>),
    /// The user's current access token at an upstream of vmcp's authorization server.
    UpstreamAccess { provider: String, source: UpstreamSource },
    /// The user's OIDC ID token from an upstream of vmcp's authorization server.
    UpstreamId { provider: String, source: UpstreamSource },
}

impl Subject {
    /// The subject credential for `caller`. `what` names the strategy in the message of an
    /// unauthenticated caller. `OutgoingAuth::apply` handles `Caller::System` before any strategy asks.
    pub(super) async fn resolve(
        &self,
        caller: &Caller,
        what: &str,
    ) -> Result<Secret, OutgoingAuthError> {
        match self {
            Subject::Caller(identities) => match identities.resolve(caller) {
                Some(identity) => Ok(identity.token.clone()),
                None => Err(OutgoingAuthError::Reauthenticate(format!(
                    "{what} needs an authenticated caller"
                ))),
            },
            Subject::UpstreamAccess { provider, source } => {
                upstream_token(caller, &source.issuer, provider, &*source.tokens).await
            }
            Subject::UpstreamId { provider, source } => {
                let user = upstream_user(caller, &source.issuer, provider)?;
                match source.tokens.id_token(user, provider).await.map_err(vault_error)? {
                    Some(t) => Ok(t),
                    // Logging in again would bring none either: the upstream is not asked for one.
                    None => Err(OutgoingAuthError::Unavailable(format!(
                        "{what}: upstream {provider:?} holds no ID token for the user (its \
                         scopes must include openid)"
                    ))),
                }
            }
        }
    }
}

/// The gateway's own token at a token endpoint (OAuth 2.0 client credentials, RFC 6749 §4.4),
/// for `Caller::System` work (health probes, connecting, the gateway's notification stream) on a
/// backend whose requests otherwise carry a user's exchanged token, as ToolHive does for its
/// health checks. Only when the strategy has client credentials; the token is the gateway's,
/// never a user's, and is cached until shortly before it expires.
pub(super) struct SystemGrant {
    endpoint: Endpoint,
    audience: Option<String>,
    scope: String,
    cache: GrantCache<()>,
}

impl SystemGrant {
    /// `None` when `endpoint` has no client authentication: System work then goes without
    /// credentials.
    pub(super) fn new(endpoint: &Endpoint, audience: Option<&str>, scope: &str) -> Option<Self> {
        if matches!(endpoint.client, ClientAuth::None) {
            return None;
        }
        let mut endpoint = endpoint.clone();
        endpoint.step = "client credentials grant";
        let cache = GrantCache::new(&endpoint.backend);
        Some(Self {
            endpoint,
            audience: audience.filter(|a| !a.is_empty()).map(str::to_owned),
            scope: scope.to_owned(),
            cache,
        })
    }

    /// `Caller::System` work on a strategy with (`grant`) or without a system grant: the
    /// gateway's own token, or none. A token endpoint that does not grant the gateway a token of
    /// its own (the grant is logged where it failed) leaves the request without credentials.
    pub(super) async fn apply(
        grant: Option<&Self>,
        http: &reqwest::Client,
        request: reqwest::RequestBuilder,
    ) -> reqwest::RequestBuilder {
        match grant {
            Some(g) => match g.authorization(http).await {
                Ok(token) => super::set_header(request, AUTHORIZATION, token),
                Err(_) => request,
            },
            None => request,
        }
    }

    /// `Authorization: Bearer` with the gateway's own token.
    pub(super) async fn authorization(
        &self,
        http: &reqwest::Client,
    ) -> Result<HeaderValue, OutgoingAuthError> {
        self.cache
            .get((), async {
                let mut form = vec![("grant_type", "client_credentials")];
                if let Some(a) = &self.audience {
                    form.push(("audience", a));
                }
                if !self.scope.is_empty() {
                    form.push(("scope", &self.scope));
                }
                let answer = self.endpoint.post(http, &form).await?;
                self.endpoint.bearer_grant(&answer, None)
            })
            .await
    }
}

impl std::fmt::Debug for SystemGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemGrant")
            .field("token_url", &self.endpoint.url.as_str())
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Endpoint {
        Endpoint {
            backend: "b".into(),
            step: "token exchange",
            url: reqwest::Url::parse("http://idp/token").unwrap(),
            client: ClientAuth::None,
            timeout: DEFAULT_EXCHANGE_TIMEOUT,
        }
    }

    #[test]
    fn client_auth_is_form_encoded() {
        assert_eq!(crate::auth::form_urlencode("a b+c/d~é"), "a+b%2Bc%2Fd%7E%C3%A9");
        let Some(ClientAuth::Basic(v)) = ClientAuth::basic("gw", &Secret::new("s3:cr t")) else {
            panic!()
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode("gw:s3%3Acr+t");
        assert_eq!(v.to_str().unwrap(), format!("Basic {b64}"));
        assert!(v.is_sensitive());
    }

    #[test]
    fn failure_classes() {
        use reqwest::StatusCode as S;
        let ep = endpoint();
        let j = |c: &str| serde_json::json!({ "error": c, "error_description": "token abc" });
        let re = |e| matches!(e, OutgoingAuthError::Reauthenticate(_));
        assert!(re(ep.refused(S::BAD_REQUEST, Some(&j("invalid_grant")))));
        assert!(re(ep.refused(S::BAD_REQUEST, Some(&j("invalid_request")))));
        assert!(re(ep.refused(S::UNAUTHORIZED, None)));
        assert!(!re(ep.refused(S::UNAUTHORIZED, Some(&j("invalid_client")))));
        assert!(!re(ep.refused(S::BAD_REQUEST, Some(&j("invalid_target")))));
        assert!(!re(ep.refused(S::SERVICE_UNAVAILABLE, None)));
        assert!(!re(ep.refused(S::FORBIDDEN, None)));
        let e = ep.refused(S::BAD_REQUEST, Some(&j("invalid_grant")));
        assert_eq!(
            e.to_string(),
            "the caller must re-authenticate: token exchange for backend \"b\": the token endpoint refused the caller's token: invalid_grant (HTTP 400)"
        );
        // A description, or a code that is not a code, is never echoed.
        let e = ep.refused(S::BAD_REQUEST, Some(&j("bad token abc")));
        assert!(!e.to_string().contains("abc"), "{e}");
    }

    #[test]
    fn expires_in_forms_and_margins() {
        assert_eq!(seconds(&serde_json::json!(300)), Some(Duration::from_secs(300)));
        assert_eq!(seconds(&serde_json::json!("300")), Some(Duration::from_secs(300)));
        assert_eq!(seconds(&serde_json::json!(-1)), None);
        assert_eq!(seconds(&serde_json::json!(null)), None);
        let ep = endpoint();
        let answer = |e: u64| -> Answer {
            serde_json::from_value(serde_json::json!({"access_token": "t", "expires_in": e}))
                .unwrap()
        };
        let ttl = |e, skew| ep.bearer_grant(&answer(e), skew).unwrap().ttl.as_secs();
        assert_eq!(ttl(3600, None), 3570);
        assert_eq!(ttl(100, None), 90);
        assert_eq!(ttl(3600, Some(Duration::from_secs(300))), 3300);
        assert_eq!(ttl(3600, Some(Duration::ZERO)), 3600);
        assert_eq!(ttl(10, Some(Duration::from_secs(60))), 0);
    }

    #[test]
    fn keys_separate_subjects_and_targets() {
        assert_eq!(cache_key("a", &["t"]), cache_key("a", &["t"]));
        assert_ne!(cache_key("a", &["t"]), cache_key("b", &["t"]));
        assert_ne!(cache_key("a", &["t"]), cache_key("a", &["u"]));
        // Length prefixes: no two splits of the same bytes collide.
        assert_ne!(cache_key("ab", &["c"]), cache_key("a", &["bc"]));
    }
}
