//! `primaryUpstreamProvider`: the claims Cedar sees come from the caller's access token at that
//! upstream identity provider (the embedded authorization server's vault holds it), not from
//! the token vmcp issued. As in ToolHive: an opaque (non-JWT) upstream token falls back to the
//! request's claims; a JWT-shaped one that does not decode fails the request; `name` and
//! `email` missing from the access token are taken from the same provider's ID token.
//!
//! Invariant: the token is fetched for this request and dropped with it; only the decoded
//! claims live on, for this request's evaluation. Tokens are read without verifying a
//! signature: the vault got them from the IdP's token endpoint over TLS.

use std::borrow::Cow;

use base64::Engine;
use serde_json::{Map, Value};

use crate::auth::Caller;
use crate::auth::upstream::{TokenError, UpstreamTokens};
use crate::protocol::ErrorObject;
use crate::protocol::jsonrpc::code;

/// Largest upstream token decoded, in bytes.
const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// Profile claims an ID token may supply when the access token lacks them (ToolHive's list).
const PROFILE_CLAIMS: [&str; 2] = ["name", "email"];

/// The claims for `caller` from `provider`'s token: `request` (the caller's own claims) when the
/// upstream token is opaque.
pub async fn claims<'a>(
    caller: &Caller,
    request: &'a Map<String, Value>,
    issuer: &str,
    provider: &str,
    vault: &dyn UpstreamTokens,
) -> Result<Cow<'a, Map<String, Value>>, ErrorObject> {
    let Caller::User(id) = caller else { return Err(super::denied()) };
    if id.issuer != issuer {
        // Only users of vmcp's own authorization server have upstream tokens.
        return Err(super::denied());
    }
    let token = vault.access_token(&id.subject, provider).await.map_err(vault_error)?;
    let Some(mut access) = decode(token.expose()) else {
        if token.expose().matches('.').count() == 2 {
            tracing::warn!(provider, "upstream access token is JWT-shaped but does not decode");
            return Err(super::denied());
        }
        return Ok(Cow::Borrowed(request));
    };
    if PROFILE_CLAIMS.iter().any(|c| !access.contains_key(*c))
        && let Ok(Some(id_token)) = vault.id_token(&id.subject, provider).await
        && let Some(from_id) = decode(id_token.expose())
    {
        for c in PROFILE_CLAIMS {
            if let (false, Some(v)) = (access.contains_key(c), from_id.get(c)) {
                access.insert(c.to_owned(), v.clone());
            }
        }
    }
    Ok(Cow::Owned(access))
}

/// The payload of a compact JWT, unverified; `None` unless it is one with an object payload.
fn decode(token: &str) -> Option<Map<String, Value>> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let mut parts = token.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// A vault failure as the client sees it: log in again (-32004, HTTP 401) or retry (-32005,
/// HTTP 503), as for outgoing `upstream_inject`.
fn vault_error(e: TokenError) -> ErrorObject {
    match &e {
        TokenError::Reauthenticate { upstream, .. } => ErrorObject::new(
            code::REAUTHENTICATE,
            format!("authorization needs a new login to upstream {upstream:?}"),
        ),
        TokenError::Unavailable { upstream, .. } => {
            tracing::warn!(error = %e, "upstream tokens unavailable for authorization");
            ErrorObject::new(
                code::CREDENTIALS_UNAVAILABLE,
                format!(
                    "upstream identity provider {upstream:?} unavailable right now; retry later"
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &Value) -> String {
        let b = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!("{}.{}.sig", b(b"{\"alg\":\"none\"}"), b(payload.to_string().as_bytes()))
    }

    #[test]
    fn decodes_jwt_payloads_only() {
        let m = decode(&jwt(&serde_json::json!({"sub": "u", "groups": ["a"]}))).unwrap();
        assert_eq!(m["sub"], "u");
        assert!(decode("gho_opaque").is_none());
        assert!(decode("a.b").is_none());
        assert!(decode("a.!!!.c").is_none());
        assert!(decode(&jwt(&serde_json::json!([1]))).is_none());
        assert!(decode(&"a.".repeat(MAX_TOKEN_BYTES)).is_none());
    }
}
