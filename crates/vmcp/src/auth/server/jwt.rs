//! vmcp's access tokens: minted as JWTs (RFC 9068 profile) with the current key, verified
//! locally with any key of the set.
//!
//! Claims: `iss`, `sub` (the vmcp user id), `aud` (the RFC 8707 resource, when there is one),
//! `exp`, `iat`, `nbf`, `jti`, `client_id`, `scope` (space separated) and, when the first
//! upstream said, `name` and `email`. Header: `alg` of the key, `kid`, `typ: at+jwt`.
//! Verification accepts only `typ: at+jwt` (so no other JWT from these keys passes as an access
//! token), a `kid` of the set with that key's own algorithm, the issuer, the expected audience,
//! and `exp`/`nbf` within [`CLOCK_SKEW`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode, decode_header};
use serde::Serialize;
use serde_json::{Map, Value};

use super::keys::{ACCESS_TOKEN_TYP, KeyError, KeySet};
use super::store::UserInfo;
use crate::auth::identity::{Identity, Secret};

/// Tolerated clock difference for `exp` and `nbf`.
pub const CLOCK_SKEW: Duration = Duration::from_secs(30);

/// A verified vmcp access token.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// `sub`: the vmcp user id (the key of the user's upstream tokens in the vault).
    pub subject: String,
    /// `aud`.
    pub audience: Vec<String>,
    /// `scope`, split.
    pub scopes: Vec<String>,
    /// `client_id`.
    pub client_id: Option<String>,
    /// `exp`.
    pub expires_at: SystemTime,
    /// Every claim.
    pub claims: Map<String, Value>,
}

impl VerifiedToken {
    /// The gateway's identity for this token; `token` is the bearer string it was read from
    /// (kept only in the identity of the one request that carried it).
    pub fn into_identity(self, issuer: &str, token: Secret) -> Identity {
        Identity {
            issuer: issuer.to_string(),
            subject: self.subject,
            claims: self.claims,
            token,
            expires_at: Some(self.expires_at),
            scopes: self.scopes,
        }
    }
}

/// Why a token was refused. Messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not a JWT, or its header is unusable.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// Not an access token (`typ` is not `at+jwt`).
    #[error("not a vmcp access token (typ)")]
    WrongType,
    /// Signed with a key that is not one of ours (or with another algorithm than the key's).
    #[error("token signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad token signature")]
    BadSignature,
    /// Another issuer.
    #[error("token issued by another issuer")]
    WrongIssuer,
    /// Not for this audience.
    #[error("token not issued for this audience")]
    WrongAudience,
    /// Expired.
    #[error("token expired")]
    Expired,
    /// `nbf` in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// A required claim is missing or of the wrong type.
    #[error("invalid token claims: {0}")]
    Invalid(String),
}

#[derive(Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    exp: u64,
    iat: u64,
    nbf: u64,
    jti: String,
    client_id: &'a str,
    #[serde(skip_serializing_if = "String::is_empty")]
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
}

/// What one access token says.
pub struct Grant<'a> {
    /// The user.
    pub user: &'a UserInfo,
    /// The client it is issued to.
    pub client_id: &'a str,
    /// Granted scopes.
    pub scopes: &'a [String],
    /// The resource (becomes `aud`).
    pub resource: Option<&'a str>,
}

/// Signs an access token valid from `now` (Unix seconds) for `lifespan`. Returns the token and
/// its lifetime in seconds.
pub fn mint(
    keys: &KeySet,
    issuer: &str,
    grant: &Grant<'_>,
    lifespan: Duration,
    now: u64,
) -> Result<String, KeyError> {
    let claims = AccessClaims {
        iss: issuer,
        sub: &grant.user.id,
        aud: grant.resource,
        exp: now + lifespan.as_secs(),
        iat: now,
        nbf: now,
        jti: super::oauth::random_token(),
        client_id: grant.client_id,
        scope: grant.scopes.join(" "),
        name: grant.user.name.as_deref(),
        email: grant.user.email.as_deref(),
    };
    keys.current().sign(ACCESS_TOKEN_TYP, &claims)
}

/// Verifies an access token issued by `issuer` for `audience`.
pub fn verify(
    keys: &KeySet,
    issuer: &str,
    token: &str,
    audience: &str,
) -> Result<VerifiedToken, VerifyError> {
    let header = decode_header(token).map_err(|_| VerifyError::Malformed("bad header".into()))?;
    let typ = header.typ.as_deref().unwrap_or_default().to_ascii_lowercase();
    if typ != ACCESS_TOKEN_TYP && typ != "application/at+jwt" {
        return Err(VerifyError::WrongType);
    }
    let kid = header.kid.as_deref().ok_or(VerifyError::UnknownKey)?;
    let key = keys.find(kid).ok_or(VerifyError::UnknownKey)?;
    if key.alg() != header.alg {
        return Err(VerifyError::UnknownKey);
    }
    let mut validation = Validation::new(key.alg());
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.leeway = CLOCK_SKEW.as_secs();
    validation.validate_nbf = true;
    let data =
        decode::<Map<String, Value>>(token, key.decoding(), &validation).map_err(|e| {
            match e.kind() {
                ErrorKind::ExpiredSignature => VerifyError::Expired,
                ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
                ErrorKind::InvalidIssuer => VerifyError::WrongIssuer,
                ErrorKind::InvalidAudience => VerifyError::WrongAudience,
                ErrorKind::InvalidSignature => VerifyError::BadSignature,
                ErrorKind::MissingRequiredClaim(c) => VerifyError::Invalid(format!("no {c}")),
                ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                    VerifyError::Malformed("bad encoding".into())
                }
                _ => VerifyError::Invalid("rejected".into()),
            }
        })?;
    let claims = data.claims;
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| VerifyError::Invalid("sub".into()))?
        .to_string();
    let audience = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(String::from).collect(),
        _ => Vec::new(),
    };
    let exp =
        claims.get("exp").and_then(Value::as_u64).ok_or(VerifyError::Invalid("exp".into()))?;
    let scopes = claims
        .get("scope")
        .and_then(Value::as_str)
        .map(|s| s.split(' ').filter(|s| !s.is_empty()).map(String::from).collect())
        .unwrap_or_default();
    let client_id = claims.get("client_id").and_then(Value::as_str).map(String::from);
    Ok(VerifiedToken {
        subject,
        audience,
        scopes,
        client_id,
        expires_at: UNIX_EPOCH + Duration::from_secs(exp),
        claims,
    })
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::super::keys::tests::pem;
    use super::super::oauth::now_secs;
    use super::*;

    const ISS: &str = "https://vmcp.example.com";
    const AUD: &str = "https://vmcp.example.com/mcp";

    fn user() -> UserInfo {
        UserInfo { id: "u-1".into(), name: Some("Ada".into()), email: None }
    }

    fn token(keys: &KeySet, now: u64) -> String {
        let u = user();
        let scopes = vec!["openid".to_string(), "mcp".to_string()];
        let grant = Grant { user: &u, client_id: "c1", scopes: &scopes, resource: Some(AUD) };
        mint(keys, ISS, &grant, Duration::from_secs(3600), now).unwrap()
    }

    #[test]
    fn minted_tokens_verify_with_their_claims() {
        let keys = KeySet::load(Some(&pem("ES256")), &[]).unwrap();
        let t = verify(&keys, ISS, &token(&keys, now_secs()), AUD).unwrap();
        assert_eq!(t.subject, "u-1");
        assert_eq!(t.audience, [AUD]);
        assert_eq!(t.scopes, ["openid", "mcp"]);
        assert_eq!(t.client_id.as_deref(), Some("c1"));
        assert_eq!(t.claims["name"], "Ada");
        assert!(t.claims.get("email").is_none());
        let id = t.into_identity(ISS, Secret::new("tok"));
        assert_eq!((id.issuer.as_str(), id.subject.as_str()), (ISS, "u-1"));
        assert_eq!(id.scopes, ["openid", "mcp"]);
        let header = decode_header(token(&keys, now_secs())).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid.as_deref(), Some(keys.current().kid()));
    }

    #[test]
    fn wrong_audience_issuer_time_and_keys_are_refused() {
        let keys = KeySet::load(Some(&pem("EdDSA")), &[]).unwrap();
        let now = now_secs();
        let good = token(&keys, now);
        assert_eq!(
            verify(&keys, ISS, &good, "https://other/mcp").unwrap_err(),
            VerifyError::WrongAudience
        );
        assert_eq!(
            verify(&keys, "https://other", &good, AUD).unwrap_err(),
            VerifyError::WrongIssuer
        );
        assert_eq!(
            verify(&keys, ISS, &token(&keys, now - 7200), AUD).unwrap_err(),
            VerifyError::Expired
        );
        assert_eq!(
            verify(&keys, ISS, &token(&keys, now + 600), AUD).unwrap_err(),
            VerifyError::NotYetValid
        );
        // Within the skew both ways.
        verify(&keys, ISS, &token(&keys, now + 10), AUD).unwrap();
        let other = KeySet::load(Some(&pem("EdDSA")), &[]).unwrap();
        assert_eq!(verify(&other, ISS, &good, AUD).unwrap_err(), VerifyError::UnknownKey);
        assert!(matches!(verify(&keys, ISS, "not.a.jwt", AUD), Err(VerifyError::Malformed(_))));
    }

    #[test]
    fn forged_tokens_are_refused() {
        let keys = KeySet::load(Some(&pem("ES256")), &[]).unwrap();
        let good = token(&keys, now_secs());
        let parts: Vec<&str> = good.split('.').collect();
        // Another subject under the original signature.
        let mut claims: Map<String, Value> =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims.insert("sub".into(), "admin".into());
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        let forged = format!("{}.{body}.{}", parts[0], parts[2]);
        assert_eq!(verify(&keys, ISS, &forged, AUD).unwrap_err(), VerifyError::BadSignature);
        // alg none, and a plain JWT typ, with our kid.
        let kid = keys.current().kid();
        for header in [
            format!(r#"{{"alg":"none","typ":"at+jwt","kid":"{kid}"}}"#),
            format!(r#"{{"alg":"HS256","typ":"at+jwt","kid":"{kid}"}}"#),
        ] {
            let h = URL_SAFE_NO_PAD.encode(header);
            let t = format!("{h}.{}.{}", parts[1], parts[2]);
            assert!(verify(&keys, ISS, &t, AUD).is_err(), "{t}");
        }
        let h = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"ES256","typ":"JWT","kid":"{kid}"}}"#));
        let t = format!("{h}.{}.{}", parts[1], parts[2]);
        assert_eq!(verify(&keys, ISS, &t, AUD).unwrap_err(), VerifyError::WrongType);
    }

    #[test]
    fn fallback_keys_verify_old_tokens() {
        let (old, new) = (pem("ES384"), pem("ES256"));
        let before = KeySet::load(Some(&old), &[]).unwrap();
        let old_token = token(&before, now_secs());
        let after = KeySet::load(Some(&new), &[old]).unwrap();
        verify(&after, ISS, &old_token, AUD).unwrap();
        let fresh = token(&after, now_secs());
        assert_eq!(decode_header(&fresh).unwrap().kid.as_deref(), Some(after.current().kid()));
        // The old server does not know the new key.
        assert_eq!(verify(&before, ISS, &fresh, AUD).unwrap_err(), VerifyError::UnknownKey);
    }
}
