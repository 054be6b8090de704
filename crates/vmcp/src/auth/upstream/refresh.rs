//! The `refresh_token` grant, and what its failures mean for the grant.
//!
//! The classification is what keeps users logged in without ever replaying a refresh token:
//! - [`RefreshError::Transient`]: the IdP did not act on the request (connection refused,
//!   DNS/TLS failure, HTTP 5xx or 429): retrying with the same refresh token is safe.
//! - [`RefreshError::Lost`]: the request may have reached the IdP but its answer did not reach
//!   vmcp (timeout after sending, connection reset mid-response, an unreadable success body):
//!   the IdP may have rotated the refresh token, and presenting the old one again would look
//!   like theft to an IdP that detects reuse (it revokes the whole family). Never retried.
//! - [`RefreshError::Dead`]: the IdP says the grant is gone (`invalid_grant` and its
//!   provider-specific spellings).
//! - [`RefreshError::Refused`]: the IdP refused for a reason that is not this grant's (client
//!   misconfigured, unknown upstream): not retried, the grant is kept.

use std::time::SystemTime;

use futures::future::BoxFuture;
use serde_json::Value;

use super::TokenSet;
use super::http;
use super::oidc::IdTokenError;
use super::token_response::{error_code, parse_tokens};
use super::upstreams::{Upstreams, mapping};

/// OAuth error codes that mean the refresh token is dead: the standard one and the spellings of
/// providers that use their own (GitHub `bad_refresh_token`, Slack `invalid_refresh_token`).
pub const DEAD_GRANT_ERRORS: [&str; 6] = [
    "invalid_grant",
    "bad_refresh_token",
    "invalid_refresh_token",
    "token_revoked",
    "token_expired",
    "expired_token",
];

/// Why a refresh failed, by what it means for the refresh token. Messages carry no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    /// The grant is dead: the user must log in again.
    #[error("grant no longer valid: {0}")]
    Dead(String),
    /// Nothing reached the IdP, or it said it did not process the request: safe to retry.
    #[error("transient failure: {0}")]
    Transient(String),
    /// The request may have been processed but its answer was lost: the refresh token may be
    /// consumed and must never be presented again.
    #[error("answer lost after the request was sent: {0}")]
    Lost(String),
    /// Refused for a reason that is not this grant's: not retried, the grant is kept.
    #[error("refused: {0}")]
    Refused(String),
}

/// Redeems refresh tokens. [`Upstreams`] is the real one; tests may bring their own.
pub trait TokenRefresher: Send + Sync {
    /// Runs the `refresh_token` grant for `current` (whose refresh token must be set) at
    /// `upstream`. The result's `refresh_token` / `id_token` are `None` when the IdP sent none
    /// (the caller keeps the old ones).
    fn refresh<'a>(
        &'a self,
        upstream: &'a str,
        current: &'a TokenSet,
    ) -> BoxFuture<'a, Result<TokenSet, RefreshError>>;
}

impl TokenRefresher for Upstreams {
    fn refresh<'a>(
        &'a self,
        upstream: &'a str,
        current: &'a TokenSet,
    ) -> BoxFuture<'a, Result<TokenSet, RefreshError>> {
        Box::pin(self.refresh_grant(upstream, current))
    }
}

impl Upstreams {
    async fn refresh_grant(
        &self,
        name: &str,
        current: &TokenSet,
    ) -> Result<TokenSet, RefreshError> {
        let p = self
            .provider(name)
            .ok_or_else(|| RefreshError::Refused(format!("no upstream named {name:?}")))?;
        let s = &p.settings;
        let refresh_token = current
            .refresh_token
            .as_ref()
            .ok_or_else(|| RefreshError::Dead("no refresh token".into()))?;
        // Discovery talks to the IdP but not to its token endpoint: safe to retry.
        let ep = self.endpoints(p).await.map_err(RefreshError::Transient)?;
        let form = vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", refresh_token.expose().to_string()),
        ];
        let req = http::token_request(
            &self.http,
            &ep.token,
            self.timeout,
            ep.client_auth,
            &s.client_id,
            s.client_secret.as_ref(),
            form,
        );
        let resp = req.send().await.map_err(|e| classify_send_error(&e))?;
        let status = resp.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(RefreshError::Transient(format!(
                "token endpoint: HTTP {}",
                status.as_u16()
            )));
        }
        let body = http::read_json(resp).await;
        let body = match body {
            Ok(b) if status.is_success() && b.get("error").is_none() => b,
            Ok(b) => return Err(classify_error_body(status.as_u16(), &b)),
            // A success we cannot read may have rotated the refresh token.
            Err(e) if status.is_success() => {
                return Err(RefreshError::Lost(format!("token endpoint: {e}")));
            }
            Err(_) => {
                return Err(RefreshError::Refused(format!(
                    "token endpoint: HTTP {}",
                    status.as_u16()
                )));
            }
        };
        let mut tokens = parse_tokens(&body, mapping(s), SystemTime::now())
            .map_err(|e| RefreshError::Lost(format!("token endpoint: {e}")))?;
        if let (Some(oidc), Some(new_id)) = (&ep.oidc, &tokens.id_token) {
            // OIDC Core §12.2: a refreshed ID token has no nonce and the same `sub`.
            match oidc.verify(new_id.expose(), &s.client_id, None).await {
                Ok(claims) => {
                    let old_sub =
                        current.id_token.as_ref().and_then(|t| unverified_sub(t.expose()));
                    if old_sub.is_some()
                        && claims.get("sub").and_then(Value::as_str) != old_sub.as_deref()
                    {
                        return Err(RefreshError::Dead(
                            "refreshed ID token names another subject".into(),
                        ));
                    }
                }
                Err(IdTokenError::Invalid(m)) => {
                    return Err(RefreshError::Dead(format!("refreshed ID token: {m}")));
                }
                // The tokens are good; only the new ID token cannot be checked now: keep the
                // old one rather than losing the rotated refresh token.
                Err(IdTokenError::Unavailable(m)) => {
                    tracing::warn!(upstream = %name, error = %m, "refreshed ID token not verifiable; kept the previous one");
                    tokens.id_token = None;
                }
            }
        }
        Ok(tokens)
    }
}

/// A request that failed before an answer: only a failure to connect proves it never left.
fn classify_send_error(e: &reqwest::Error) -> RefreshError {
    let what = format!("token endpoint: {}", http::describe(e));
    if e.is_connect() {
        RefreshError::Transient(what)
    } else if e.is_builder() {
        RefreshError::Refused(what)
    } else {
        RefreshError::Lost(what)
    }
}

/// An answer carrying an OAuth error (or a non-success status with a JSON body).
fn classify_error_body(status: u16, body: &Value) -> RefreshError {
    match error_code(body) {
        Some(code) if DEAD_GRANT_ERRORS.contains(&code.as_str()) => {
            RefreshError::Dead(format!("token endpoint: {code}"))
        }
        Some(code) => RefreshError::Refused(format!("token endpoint: HTTP {status} {code}")),
        // A 2xx that is neither tokens nor an error: it may have consumed the token.
        None if (200..300).contains(&status) => {
            RefreshError::Lost("token endpoint: success without tokens".into())
        }
        None => RefreshError::Refused(format!("token endpoint: HTTP {status}")),
    }
}

/// The `sub` of a JWT's payload, unverified (it was verified when it was received).
fn unverified_sub(jwt: &str) -> Option<String> {
    let claims = super::token_response::unverified_claims(jwt)?;
    claims.get("sub").and_then(Value::as_str).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_bodies() {
        let dead = classify_error_body(400, &json!({"error": "invalid_grant"}));
        assert!(matches!(dead, RefreshError::Dead(_)));
        // GitHub answers 200 with an error.
        let gh = classify_error_body(200, &json!({"error": "bad_refresh_token"}));
        assert!(matches!(gh, RefreshError::Dead(_)));
        let client = classify_error_body(401, &json!({"error": "invalid_client"}));
        assert!(matches!(client, RefreshError::Refused(_)));
        assert!(matches!(classify_error_body(200, &json!({"ok": true})), RefreshError::Lost(_)));
        assert!(matches!(classify_error_body(404, &json!({})), RefreshError::Refused(_)));
    }

    #[test]
    fn sub_of_a_jwt() {
        use base64::Engine as _;
        let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"u1"}"#);
        assert_eq!(unverified_sub(&format!("h.{p}.s")).as_deref(), Some("u1"));
        assert_eq!(unverified_sub("nope"), None);
    }
}
