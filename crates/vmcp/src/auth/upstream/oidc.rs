//! An OIDC upstream's metadata (discovered once, on first use) and ID token verification.
//!
//! ID tokens are verified by the incoming-auth [`OidcAuthenticator`] configured for the
//! upstream's issuer, its `jwks_uri` and vmcp's client id as audience: signature by the
//! upstream's JWKS (cached, refetched on an unknown `kid`; asymmetric algorithms only), `iss`,
//! `aud`, `exp`, `nbf` (60 s leeway). This module adds the OIDC checks on top: `azp`, `nonce`.

use std::time::Duration;

use serde_json::{Map, Value};

use super::http;
use super::settings::{check_url, is_loopback};
use crate::auth::incoming::{AuthFailure, OidcAuthenticator};

/// What the discovery document says, checked.
#[derive(Debug)]
pub(super) struct Metadata {
    pub(super) issuer: String,
    pub(super) authorization_endpoint: String,
    pub(super) token_endpoint: String,
    pub(super) userinfo_endpoint: Option<String>,
    /// `token_endpoint_auth_methods_supported`, if listed.
    pub(super) auth_methods: Option<Vec<String>>,
}

/// A discovered OIDC upstream.
pub(super) struct Oidc {
    pub(super) meta: Metadata,
    verifier: OidcAuthenticator,
}

/// Why an ID token was not accepted.
#[derive(Debug)]
pub(super) enum IdTokenError {
    /// The token is not valid for vmcp (signature, issuer, audience, expiry, nonce...).
    Invalid(String),
    /// The upstream's keys could not be had.
    Unavailable(String),
}

impl Oidc {
    /// Fetches and checks `{issuer}/.well-known/openid-configuration`.
    pub(super) async fn discover(
        http: &reqwest::Client,
        issuer: &str,
        client_id: &str,
        allow_http: bool,
        timeout: Duration,
    ) -> Result<Self, String> {
        let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        let resp = http
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| format!("discovery: {}", http::describe(&e)))?;
        if !resp.status().is_success() {
            return Err(format!("discovery: HTTP {}", resp.status().as_u16()));
        }
        let doc = http::read_json(resp).await.map_err(|e| format!("discovery: {e}"))?;
        let meta = metadata(&doc, issuer, allow_http)?;
        let cfg = serde_json::json!({
            "issuer": meta.issuer,
            "audience": client_id,
            "jwksUrl": jwks_uri(&doc, issuer, allow_http)?,
            // The upstream's own settings already decided which URLs are acceptable.
            "insecureAllowHttp": allow_http,
            "jwksAllowPrivateIp": true,
        });
        let cfg = serde_json::from_value(cfg).map_err(|e| format!("discovery: {e}"))?;
        let verifier = OidcAuthenticator::new(&cfg, http.clone())
            .map_err(|e| format!("discovery: unusable metadata: {e}"))?;
        Ok(Self { meta, verifier })
    }

    /// Verifies an ID token for `client_id`; `nonce`, when given, must match its claim.
    pub(super) async fn verify(
        &self,
        id_token: &str,
        client_id: &str,
        nonce: Option<&str>,
    ) -> Result<Map<String, Value>, IdTokenError> {
        let identity =
            self.verifier.authenticate(Some(&format!("Bearer {id_token}"))).await.map_err(|f| {
                match f {
                    AuthFailure::Unavailable(m) => IdTokenError::Unavailable(m),
                    AuthFailure::InvalidToken(m) => IdTokenError::Invalid(m),
                    other => IdTokenError::Invalid(format!("{other:?}")),
                }
            })?;
        let claims = &identity.claims;
        // OIDC Core §3.1.3.7: an `azp` present must be vmcp.
        if let Some(azp) = claims.get("azp")
            && azp.as_str() != Some(client_id)
        {
            return Err(IdTokenError::Invalid("ID token azp is another client".into()));
        }
        if let Some(expected) = nonce.filter(|n| !n.is_empty()) {
            match claims.get("nonce").and_then(Value::as_str) {
                None => return Err(IdTokenError::Invalid("ID token has no nonce".into())),
                Some(n) if n != expected => {
                    return Err(IdTokenError::Invalid("ID token nonce does not match".into()));
                }
                Some(_) => {}
            }
        }
        Ok(identity.claims.clone())
    }
}

fn metadata(doc: &Value, issuer: &str, allow_http: bool) -> Result<Metadata, String> {
    let said = doc.get("issuer").and_then(Value::as_str).unwrap_or_default();
    if said.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err("discovery: the document names another issuer".into());
    }
    let endpoint = |field: &str, required: bool| -> Result<Option<String>, String> {
        match doc.get(field).and_then(Value::as_str) {
            Some(u) => {
                check_endpoint(field, u, issuer, allow_http)?;
                Ok(Some(u.to_string()))
            }
            None if required => Err(format!("discovery: no {field}")),
            None => Ok(None),
        }
    };
    let auth_methods = doc
        .get("token_endpoint_auth_methods_supported")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect());
    Ok(Metadata {
        issuer: said.to_string(),
        authorization_endpoint: endpoint("authorization_endpoint", true)?.unwrap_or_default(),
        token_endpoint: endpoint("token_endpoint", true)?.unwrap_or_default(),
        userinfo_endpoint: endpoint("userinfo_endpoint", false)?,
        auth_methods,
    })
}

fn jwks_uri(doc: &Value, issuer: &str, allow_http: bool) -> Result<String, String> {
    let u = doc.get("jwks_uri").and_then(Value::as_str).ok_or("discovery: no jwks_uri")?;
    check_endpoint("jwks_uri", u, issuer, allow_http)?;
    Ok(u.to_string())
}

/// An endpoint named by the discovery document: https (or http with `allow_http`), and on
/// loopback when the issuer is (a local test IdP must not send vmcp elsewhere).
fn check_endpoint(field: &str, url: &str, issuer: &str, allow_http: bool) -> Result<(), String> {
    let issuer_local = reqwest::Url::parse(issuer)
        .ok()
        .and_then(|u| u.host_str().map(is_loopback))
        .unwrap_or(false);
    let parsed = reqwest::Url::parse(url).map_err(|_| format!("discovery: bad {field}"))?;
    let local = parsed.host_str().is_some_and(is_loopback);
    if issuer_local && !local {
        return Err(format!("discovery: {field} leaves the loopback issuer's host"));
    }
    check_url(field, url, allow_http).map_err(|e| format!("discovery: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_checks() {
        let doc = json!({
            "issuer": "https://idp.example.com/",
            "authorization_endpoint": "https://idp.example.com/authorize",
            "token_endpoint": "https://login.example.net/token",
            "jwks_uri": "https://idp.example.com/jwks",
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
        });
        let m = metadata(&doc, "https://idp.example.com", false).unwrap();
        assert_eq!(m.auth_methods.as_deref(), Some(&["client_secret_post".to_string()][..]));
        assert!(metadata(&doc, "https://other.example.com", false).is_err());
        let mut bad = doc.clone();
        bad["token_endpoint"] = json!("http://idp.example.com/token");
        assert!(metadata(&bad, "https://idp.example.com", false).is_err());
        let local = json!({
            "issuer": "http://127.0.0.1:9",
            "authorization_endpoint": "http://127.0.0.1:9/authorize",
            "token_endpoint": "https://evil.example.com/token",
        });
        assert!(metadata(&local, "http://127.0.0.1:9", false).is_err());
    }
}
