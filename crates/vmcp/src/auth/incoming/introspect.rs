//! RFC 7662 token introspection for opaque tokens, with a bounded cache of active results.
//!
//! Invariant: the cache is keyed by the SHA-256 of the token, never by the token; an entry
//! lives no longer than the token (`exp`) and at most [`MAX_CACHE_TTL`] (`verified.rs`, shared
//! with JWTs: at most 10,000 entries).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use super::jwt::{JwtPolicy, identity_from_claims, now_secs};
use super::verified::Verified;
use super::{AuthFailure, IDP_TIMEOUT, describe_http_error, read_body};
use crate::auth::identity::{Identity, Secret};

/// Longest time an introspection result is trusted without asking again.
const MAX_CACHE_TTL: Duration = Duration::from_secs(300);
/// How long a result without `exp` is trusted.
const NO_EXP_TTL: Duration = Duration::from_secs(30);

pub(super) struct Introspector {
    http: reqwest::Client,
    url: String,
    client_id: Option<String>,
    client_secret: Option<Secret>,
    /// Active results (`verified.rs`), exactly until `exp`: no skew beyond it.
    cache: Verified,
}

impl fmt::Debug for Introspector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Introspector")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "***"))
            .field("cached", &self.cache.len())
            .finish()
    }
}

impl Introspector {
    pub(super) fn new(
        http: reqwest::Client,
        url: String,
        client_id: Option<String>,
        client_secret: Option<Secret>,
    ) -> Self {
        let cache = Verified::new(Duration::ZERO);
        Self { http, url, client_id, client_secret, cache }
    }

    pub(super) async fn introspect(
        &self,
        token: &str,
        policy: &JwtPolicy,
    ) -> Result<Arc<Identity>, AuthFailure> {
        let hash = Verified::key(token);
        if let Some(identity) = self.cache.get(&hash) {
            return Ok(identity);
        }
        let claims = self.ask(token).await?;
        let identity = Arc::new(check(claims, token, policy)?);
        self.cache.keep(hash, identity.clone(), MAX_CACHE_TTL, NO_EXP_TTL);
        Ok(identity)
    }

    async fn ask(&self, token: &str) -> Result<Map<String, Value>, AuthFailure> {
        let body =
            format!("token={}&token_type_hint=access_token", crate::auth::form_urlencode(token));
        let mut req = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(IDP_TIMEOUT)
            .body(body);
        if let Some(id) = &self.client_id {
            // RFC 6749 §2.3.1: both parts form-encoded before base64.
            let secret = self.client_secret.as_ref().map(Secret::expose).unwrap_or_default();
            let basic = STANDARD.encode(format!(
                "{}:{}",
                crate::auth::form_urlencode(id),
                crate::auth::form_urlencode(secret)
            ));
            req = req.header(reqwest::header::AUTHORIZATION, format!("Basic {basic}"));
        }
        let unavailable = |m: String| AuthFailure::Unavailable(format!("introspection: {m}"));
        let resp = req.send().await.map_err(|e| unavailable(describe_http_error(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            tracing::warn!(status = status.as_u16(), "token introspection refused");
            return Err(unavailable(format!("HTTP {}", status.as_u16())));
        }
        let body = read_body(resp).await.map_err(unavailable)?;
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(unavailable("response is not a JSON object".into())),
        }
    }
}

/// Applies RFC 7662 and this gateway's rules to an introspection response.
fn check(
    mut claims: Map<String, Value>,
    token: &str,
    policy: &JwtPolicy,
) -> Result<Identity, AuthFailure> {
    let invalid = |m: &str| AuthFailure::InvalidToken(m.to_string());
    if claims.get("active") != Some(&Value::Bool(true)) {
        return Err(invalid("token is not active"));
    }
    if let Some(iss) = claims.get("iss")
        && iss.as_str().map(|s| s.trim_end_matches('/'))
            != Some(policy.issuer.trim_end_matches('/'))
    {
        return Err(invalid("wrong issuer"));
    }
    if let Some(aud) = claims.get("aud") {
        let ok = match aud {
            Value::String(s) => *s == policy.audience,
            Value::Array(a) => a.iter().any(|v| v.as_str() == Some(&policy.audience)),
            _ => false,
        };
        if !ok {
            return Err(invalid("wrong audience"));
        }
    }
    let now = now_secs();
    let skew = policy.skew.as_secs();
    if let Some(exp) = claims.get("exp") {
        let exp = exp.as_u64().ok_or_else(|| invalid("malformed claim exp"))?;
        if exp.saturating_add(skew) < now {
            return Err(invalid("token expired"));
        }
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_u64().ok_or_else(|| invalid("malformed claim nbf"))?;
        if nbf > now.saturating_add(skew) {
            return Err(invalid("token not yet valid (nbf)"));
        }
    }
    // `sub` is optional in RFC 7662: fall back to the username, then the client.
    if !matches!(claims.get("sub"), Some(Value::String(s)) if !s.is_empty()) {
        let fallback = ["username", "client_id"]
            .iter()
            .find_map(|k| claims.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty()))
            .map(str::to_string);
        if let Some(sub) = fallback {
            claims.insert("sub".into(), Value::String(sub));
        }
    }
    identity_from_claims(claims, token, &policy.issuer)
}
