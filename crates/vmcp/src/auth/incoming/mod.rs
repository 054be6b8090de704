//! Incoming authentication: who is calling the gateway.
//!
//! [`OidcAuthenticator`] turns the `Authorization` header of a client request into a verified
//! [`Identity`]: a JWT is checked against the issuer's JWKS (fetched lazily, cached, refetched
//! on an unknown `kid`), then trusted until its `exp`, at most 60 s, without checking its
//! signature again (`verified.rs`); an opaque token is introspected (RFC 7662) when an
//! introspection endpoint is configured. [`AuthFailure`] is what the HTTP layer turns into a 401/403/503, with
//! [`www_authenticate`] building the challenge and [`protected_resource_metadata`] the RFC 9728
//! document the challenge points to.
//!
//! Invariants: no token or client secret ever appears in a log line, an error message or a
//! `Debug` output; caches are keyed by a SHA-256 of the token, never by the token itself.

mod introspect;
mod jwks;
mod jwt;
mod net;
mod verified;

pub use net::scheme_refusal;

pub use net::idp_client;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;

use crate::auth::identity::{Identity, Secret};
use crate::config::auth::OidcConfig;

use introspect::Introspector;
use jwks::KeyStore;
use jwt::JwtPolicy;
use net::NetPolicy;

/// Default tolerated clock skew on `exp`/`nbf`.
const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Upper bound of the configurable clock skew.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);
/// Timeout of one request to the identity provider.
const IDP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body accepted from the identity provider.
const MAX_IDP_BODY: usize = 1 << 20;

/// Algorithms accepted when `allowedAlgorithms` is empty.
pub const DEFAULT_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why a request is not authenticated; the HTTP layer maps each variant to a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No bearer credentials: 401 with a challenge carrying no error.
    Missing,
    /// The token is malformed, expired, badly signed or not meant for this gateway: 401
    /// `error="invalid_token"`. The message never contains the token.
    InvalidToken(String),
    /// The token is valid but lacks scopes: 403 `error="insufficient_scope"`.
    InsufficientScope {
        /// Every scope a request must carry.
        required: Vec<String>,
    },
    /// The identity provider cannot be reached and nothing usable is cached: 503.
    Unavailable(String),
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthFailure::Missing => f.write_str("no bearer token"),
            AuthFailure::InvalidToken(m) => write!(f, "invalid token: {m}"),
            AuthFailure::InsufficientScope { required } => {
                write!(f, "insufficient scope: requires {}", required.join(" "))
            }
            AuthFailure::Unavailable(m) => write!(f, "identity provider unavailable: {m}"),
        }
    }
}

impl std::error::Error for AuthFailure {}

/// The `incomingAuth.oidc` configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthConfigError {
    /// A required field is empty.
    #[error("incomingAuth.oidc.{0} must not be empty")]
    Empty(&'static str),
    /// A URL is not an absolute http(s) URL.
    #[error("incomingAuth.oidc.{field} is not an http(s) URL: {value}")]
    BadUrl {
        /// The configuration key.
        field: &'static str,
        /// The value given.
        value: String,
    },
    /// An algorithm name is unknown or not allowed.
    #[error("incomingAuth.oidc.allowedAlgorithms: {0}")]
    Algorithm(String),
    /// A URL may not be fetched under the network rules (`insecureAllowHttp`,
    /// `jwksAllowPrivateIp`).
    #[error("incomingAuth.oidc.{field}: {value}: {why}")]
    Refused {
        /// The configuration key.
        field: &'static str,
        /// The value given.
        value: String,
        /// Why.
        why: String,
    },
    /// `caBundlePath` cannot be used.
    #[error("incomingAuth.oidc.caBundlePath: {0}")]
    CaBundle(String),
    /// The client secret's environment variable is not set.
    #[error("incomingAuth.oidc.clientSecretEnv: environment variable {0} is not set")]
    MissingSecretEnv(String),
}

/// Validates bearer tokens for one issuer and audience. Cheap to clone (shared state).
#[derive(Clone)]
pub struct OidcAuthenticator {
    inner: Arc<Inner>,
}

struct Inner {
    resource: String,
    /// `oidc.scopes`: advertised in challenges, never enforced.
    advertised_scopes: Vec<String>,
    policy: JwtPolicy,
    keys: KeyStore,
    introspector: Option<Introspector>,
    /// JWTs already verified (`verified.rs`).
    verified: verified::Verified,
}

impl fmt::Debug for OidcAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcAuthenticator")
            .field("issuer", &self.inner.policy.issuer)
            .field("audience", &self.inner.policy.audience)
            .field("resource", &self.inner.resource)
            .field("algorithms", &self.inner.policy.algorithms)
            .field("required_scopes", &self.inner.policy.required_scopes)
            .field("advertised_scopes", &self.inner.advertised_scopes)
            .field("keys", &self.inner.keys)
            .field("introspection", &self.inner.introspector)
            .finish()
    }
}

impl OidcAuthenticator {
    /// Builds an authenticator from configuration. Performs no I/O: discovery and the JWKS are
    /// fetched on first use. Reads the introspection client secret from its environment
    /// variable.
    pub fn new(cfg: &OidcConfig, http: reqwest::Client) -> Result<Self, AuthConfigError> {
        let issuer = cfg.issuer.trim();
        if issuer.is_empty() {
            return Err(AuthConfigError::Empty("issuer"));
        }
        if cfg.audience.trim().is_empty() {
            return Err(AuthConfigError::Empty("audience"));
        }
        let net = NetPolicy::of(cfg);
        check_url("issuer", issuer, net)?;
        if let Some(u) = &cfg.jwks_url {
            check_url("jwksUrl", u, net)?;
        }
        if let Some(u) = &cfg.introspection_url {
            check_url("introspectionUrl", u, net)?;
        }
        let algorithms = parse_algorithms(&cfg.allowed_algorithms)?;
        let skew = cfg.clock_skew.unwrap_or(DEFAULT_CLOCK_SKEW).min(MAX_CLOCK_SKEW);
        let policy = JwtPolicy {
            issuer: issuer.to_string(),
            audience: cfg.audience.clone(),
            algorithms,
            skew,
            required_scopes: cfg.required_scopes.clone(),
        };
        let keys = KeyStore::new(http.clone(), issuer.to_string(), cfg.jwks_url.clone(), net);
        let introspector = match &cfg.introspection_url {
            Some(url) => {
                let secret = match &cfg.client_secret_env {
                    Some(var) => Some(Secret::new(
                        std::env::var(var)
                            .map_err(|_| AuthConfigError::MissingSecretEnv(var.clone()))?,
                    )),
                    None => None,
                };
                Some(Introspector::new(http, url.clone(), cfg.client_id.clone(), secret))
            }
            None => None,
        };
        let resource = cfg.resource.clone().unwrap_or_else(|| cfg.audience.clone());
        let advertised_scopes = cfg.scopes.clone();
        Ok(Self {
            inner: Arc::new(Inner {
                resource,
                advertised_scopes,
                verified: verified::Verified::new(policy.skew),
                policy,
                keys,
                introspector,
            }),
        })
    }

    /// Changes the least time between two JWKS refetches caused by unknown key ids (default
    /// 10s). For tests and unusual deployments; call before first use.
    pub fn with_min_refetch_interval(self, interval: Duration) -> Self {
        self.inner.keys.set_min_refetch_interval(interval);
        self
    }

    /// This gateway's resource URI: `resource`, else `audience`.
    pub fn resource(&self) -> &str {
        &self.inner.resource
    }

    /// Verifies the `Authorization` header value of one request.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<Arc<Identity>, AuthFailure> {
        let token = bearer_token(authorization)?;
        let identity = if jwt::looks_like_jwt(token) {
            self.authenticate_jwt(token).await?
        } else if let Some(introspector) = &self.inner.introspector {
            introspector.introspect(token, &self.inner.policy).await?
        } else {
            return Err(AuthFailure::InvalidToken("token is not a JWT".into()));
        };
        self.inner.policy.check_scopes(&identity.scopes)?;
        Ok(identity)
    }

    /// Verifies the `Authorization` header value of one request with `verify` instead of the
    /// issuer's published keys: for tokens vmcp's own authorization server issued, checked with
    /// its local keys (no HTTP round trip to itself). The scope policy applies as for any token.
    pub fn authenticate_with(
        &self,
        authorization: Option<&str>,
        verify: impl FnOnce(&str) -> Result<Identity, String>,
    ) -> Result<Arc<Identity>, AuthFailure> {
        let token = bearer_token(authorization)?;
        let identity = verify(token).map_err(AuthFailure::InvalidToken)?;
        self.inner.policy.check_scopes(&identity.scopes)?;
        Ok(Arc::new(identity))
    }

    /// The scopes advertised in challenges and metadata (`oidc.scopes`).
    pub fn advertised_scopes(&self) -> &[String] {
        &self.inner.advertised_scopes
    }

    /// The accepted audience (`aud`).
    pub fn audience(&self) -> &str {
        &self.inner.policy.audience
    }

    async fn authenticate_jwt(&self, token: &str) -> Result<Arc<Identity>, AuthFailure> {
        let cache_key = verified::Verified::key(token);
        if let Some(identity) = self.inner.verified.get(&cache_key) {
            return Ok(identity);
        }
        let policy = &self.inner.policy;
        let header = jwt::read_header(token, &policy.algorithms)?;
        let key = self.inner.keys.key_for(header.kid.as_deref(), header.alg).await?;
        let identity = policy.verify(token, &header, &key).map(Arc::new)?;
        self.inner.verified.keep(cache_key, identity.clone(), verified::MAX_TTL, verified::MAX_TTL);
        Ok(identity)
    }
}

/// The bearer token of an `Authorization` header value. Anything but the `Bearer` scheme
/// counts as no credentials.
fn bearer_token(authorization: Option<&str>) -> Result<&str, AuthFailure> {
    let Some(value) = authorization.map(str::trim).filter(|v| !v.is_empty()) else {
        return Err(AuthFailure::Missing);
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthFailure::Missing);
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(AuthFailure::InvalidToken("empty bearer token".into()));
    }
    // RFC 6750 b64token: ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/", then "="*.
    let body = token.trim_end_matches('=');
    let ok = body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/'));
    if !ok || body.is_empty() {
        return Err(AuthFailure::InvalidToken("malformed bearer token".into()));
    }
    Ok(token)
}

fn check_url(field: &'static str, value: &str, net: NetPolicy) -> Result<(), AuthConfigError> {
    let url = reqwest::Url::parse(value)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| AuthConfigError::BadUrl { field, value: value.to_string() })?;
    match net.refuse(&url) {
        Some(why) => Err(AuthConfigError::Refused { field, value: value.to_string(), why }),
        None => Ok(()),
    }
}

fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, AuthConfigError> {
    if names.is_empty() {
        return Ok(DEFAULT_ALGORITHMS.to_vec());
    }
    let mut out = Vec::new();
    for name in names {
        let alg = name
            .parse::<Algorithm>()
            .map_err(|_| AuthConfigError::Algorithm(format!("unknown algorithm {name:?}")))?;
        if !DEFAULT_ALGORITHMS.contains(&alg) {
            return Err(AuthConfigError::Algorithm(format!(
                "{name} is not allowed (asymmetric algorithms only)"
            )));
        }
        if !out.contains(&alg) {
            out.push(alg);
        }
    }
    Ok(out)
}

/// The `WWW-Authenticate` value for a failure (RFC 6750 §3, RFC 9728 §5.1), advertising no
/// scopes.
pub fn www_authenticate(failure: &AuthFailure, resource_metadata_url: &str) -> String {
    www_authenticate_with_scopes(failure, resource_metadata_url, &[])
}

/// The `WWW-Authenticate` value for a failure, with `advertised` (`oidc.scopes`) as its `scope`
/// attribute when not empty, as ToolHive sends it. An `insufficient_scope` challenge names the
/// required scopes instead.
pub fn www_authenticate_with_scopes(
    failure: &AuthFailure,
    resource_metadata_url: &str,
    advertised: &[String],
) -> String {
    let mut out = format!("Bearer resource_metadata={}", quoted(resource_metadata_url));
    if !advertised.is_empty() && !matches!(failure, AuthFailure::InsufficientScope { .. }) {
        out.push_str(", scope=");
        out.push_str(&quoted(&scope_chars(&advertised.join(" "))));
    }
    match failure {
        AuthFailure::Missing | AuthFailure::Unavailable(_) => {}
        AuthFailure::InvalidToken(msg) => {
            out.push_str(", error=\"invalid_token\", error_description=");
            out.push_str(&quoted(&description(msg)));
        }
        AuthFailure::InsufficientScope { required } => {
            let scope = required.join(" ");
            out.push_str(", error=\"insufficient_scope\", scope=");
            out.push_str(&quoted(&scope_chars(&scope)));
            out.push_str(", error_description=");
            out.push_str(&quoted(&description(&format!("requires scope {scope}"))));
        }
    }
    out
}

/// RFC 9110 quoted-string.
fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c == '\t' || (' '..='~').contains(&c) => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
    out
}

/// RFC 6750 `error_description` characters: %x20-21 / %x23-5B / %x5D-7E.
fn description(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if (' '..='~').contains(&c) => c,
            _ => '?',
        })
        .collect()
}

/// RFC 6749 scope-token characters plus the separating space.
fn scope_chars(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            '"' | '\\' => '?',
            c if (' '..='~').contains(&c) => c,
            _ => '?',
        })
        .collect()
}

/// The RFC 9728 protected resource metadata document of this gateway.
pub fn protected_resource_metadata(cfg: &OidcConfig) -> serde_json::Value {
    let mut doc = serde_json::Map::new();
    let resource = cfg.resource.clone().unwrap_or_else(|| cfg.audience.clone());
    doc.insert("resource".into(), resource.into());
    doc.insert("authorization_servers".into(), serde_json::json!([cfg.issuer.trim()]));
    if !cfg.scopes.is_empty() {
        doc.insert("scopes_supported".into(), serde_json::json!(cfg.scopes));
    }
    doc.insert("bearer_methods_supported".into(), serde_json::json!(["header"]));
    serde_json::Value::Object(doc)
}

/// A body from the identity provider, bounded in size.
async fn read_body(resp: reqwest::Response) -> Result<bytes::Bytes, String> {
    if resp.content_length().is_some_and(|n| n > MAX_IDP_BODY as u64) {
        return Err("response too large".into());
    }
    let body = resp.bytes().await.map_err(|e| describe_http_error(&e))?;
    if body.len() > MAX_IDP_BODY {
        return Err("response too large".into());
    }
    Ok(body)
}

/// A reqwest error without its URL's query (which never carries a token here, but keep it
/// short).
fn describe_http_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_decode() || e.is_body() {
        "bad response body"
    } else if e.is_status() {
        "error status"
    } else {
        "request failed"
    };
    match e.url() {
        Some(u) => format!("{kind} ({}{})", u.origin().ascii_serialization(), u.path()),
        None => kind.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(None), Err(AuthFailure::Missing));
        assert_eq!(bearer_token(Some("  ")), Err(AuthFailure::Missing));
        assert_eq!(bearer_token(Some("Basic abc")), Err(AuthFailure::Missing));
        assert_eq!(bearer_token(Some("bearer abc.def")), Ok("abc.def"));
        assert_eq!(bearer_token(Some("Bearer  x_y-z~+/==")), Ok("x_y-z~+/=="));
        assert!(matches!(bearer_token(Some("Bearer")), Err(AuthFailure::InvalidToken(_))));
        assert!(matches!(bearer_token(Some("Bearer a b")), Err(AuthFailure::InvalidToken(_))));
    }

    #[test]
    fn algorithms() {
        assert_eq!(parse_algorithms(&[]).unwrap(), DEFAULT_ALGORITHMS.to_vec());
        assert!(parse_algorithms(&["HS256".into()]).is_err());
        assert!(parse_algorithms(&["none".into()]).is_err());
        assert_eq!(parse_algorithms(&["ES256".into()]).unwrap(), vec![Algorithm::ES256]);
    }

    #[test]
    fn challenge_quoting() {
        let h = www_authenticate(
            &AuthFailure::InvalidToken("bad \"x\" \\ é".into()),
            "https://gw/.well-known/oauth-protected-resource",
        );
        assert_eq!(
            h,
            "Bearer resource_metadata=\"https://gw/.well-known/oauth-protected-resource\", \
             error=\"invalid_token\", error_description=\"bad 'x' ' ?\""
        );
        let h = www_authenticate(&AuthFailure::Missing, "u\"v");
        assert_eq!(h, "Bearer resource_metadata=\"u\\\"v\"");
    }
}
