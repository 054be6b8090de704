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
    use std::sync::Arc;

    use futures::future::BoxFuture;

    use super::*;
    use crate::auth::Identity;
    use crate::auth::identity::Secret;
    use crate::auth::upstream::TokenSet;

    /// A vault holding one access token (and maybe an ID token) for user `u` at `github`.
    struct Vault {
        access: String,
        id: Option<String>,
    }

    impl UpstreamTokens for Vault {
        fn store<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: TokenSet,
        ) -> BoxFuture<'a, Result<(), TokenError>> {
            Box::pin(async { Ok(()) })
        }
        fn access_token<'a>(
            &'a self,
            user: &'a str,
            upstream: &'a str,
        ) -> BoxFuture<'a, Result<Secret, TokenError>> {
            let found =
                (user == "u" && upstream == "github").then(|| Secret::new(self.access.clone()));
            Box::pin(async move {
                found.ok_or(TokenError::Reauthenticate {
                    upstream: "github".into(),
                    reason: "none".into(),
                })
            })
        }
        fn id_token<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
        ) -> BoxFuture<'a, Result<Option<Secret>, TokenError>> {
            let id = self.id.clone().map(Secret::new);
            Box::pin(async move { Ok(id) })
        }
        fn holds<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, bool> {
            Box::pin(async { true })
        }
        fn forget<'a>(&'a self, _: &'a str) -> BoxFuture<'a, ()> {
            Box::pin(async {})
        }
    }

    fn user(issuer: &str, subject: &str) -> Caller {
        let claims = serde_json::json!({ "sub": subject, "groups": ["from-vmcp-token"] });
        let Value::Object(claims) = claims else { panic!() };
        Caller::User(Arc::new(Identity {
            issuer: issuer.into(),
            subject: subject.into(),
            claims,
            token: Secret::new("t"),
            expires_at: None,
            scopes: Vec::new(),
        }))
    }

    fn request(c: &Caller) -> Map<String, Value> {
        match c {
            Caller::User(id) => id.claims.clone(),
            _ => Map::new(),
        }
    }

    #[tokio::test]
    async fn claims_come_from_the_upstream_token_with_profile_from_its_id_token() {
        let vault = Vault {
            access: jwt(&serde_json::json!({ "sub": "gh-1", "groups": ["upstream"], "name": "A" })),
            id: Some(jwt(
                &serde_json::json!({ "email": "a@x", "name": "ignored", "groups": ["no"] }),
            )),
        };
        let c = user("https://vmcp", "u");
        let req = request(&c);
        let got = claims(&c, &req, "https://vmcp", "github", &vault).await.unwrap();
        assert_eq!(got["sub"], "gh-1");
        assert_eq!(got["groups"], serde_json::json!(["upstream"]));
        // Only name and email are taken from the ID token, and only when missing.
        assert_eq!((got["name"].as_str(), got["email"].as_str()), (Some("A"), Some("a@x")));

        // An opaque upstream token: the request's own claims.
        let opaque = Vault { access: "gho_opaque".into(), id: None };
        let got = claims(&c, &req, "https://vmcp", "github", &opaque).await.unwrap();
        assert_eq!(got["groups"], serde_json::json!(["from-vmcp-token"]));
        // A JWT-shaped token that does not decode: denied, no fallback.
        let bad = Vault { access: "a.%%%.c".into(), id: None };
        let e = claims(&c, &req, "https://vmcp", "github", &bad).await.unwrap_err();
        assert_eq!(e.code, code::ACCESS_DENIED);
        // Another issuer's user, or no tokens held: no claims to decide on.
        let other = user("https://elsewhere", "u");
        let e = claims(&other, &req, "https://vmcp", "github", &vault).await.unwrap_err();
        assert_eq!(e.code, code::ACCESS_DENIED);
        let stranger = user("https://vmcp", "nobody");
        let e = claims(&stranger, &req, "https://vmcp", "github", &vault).await.unwrap_err();
        assert_eq!(e.code, code::REAUTHENTICATE);
    }

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
