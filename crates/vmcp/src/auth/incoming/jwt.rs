//! JWT checks: the header read without trusting it, the algorithm policy, the key-type match,
//! and claim validation.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

use super::AuthFailure;
use crate::auth::identity::{Identity, Secret};

/// What a token must satisfy.
pub(super) struct JwtPolicy {
    pub(super) issuer: String,
    pub(super) audience: String,
    pub(super) algorithms: Vec<Algorithm>,
    pub(super) skew: Duration,
    pub(super) required_scopes: Vec<String>,
}

/// The parts of a JOSE header used before the signature is checked.
#[derive(Debug)]
pub(super) struct JwtHeader {
    pub(super) alg: Algorithm,
    pub(super) kid: Option<String>,
}

fn invalid(msg: &str) -> AuthFailure {
    AuthFailure::InvalidToken(msg.to_string())
}

/// Three base64url segments (the last, the signature, may be empty).
pub(super) fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && !parts[0].is_empty()
        && !parts[1].is_empty()
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

/// Reads the header without trusting it and applies the algorithm allow-list.
pub(super) fn read_header(token: &str, allowed: &[Algorithm]) -> Result<JwtHeader, AuthFailure> {
    let segment = token.split('.').next().unwrap_or_default();
    let raw = URL_SAFE_NO_PAD.decode(segment).map_err(|_| invalid("malformed JWT header"))?;
    let header: Map<String, Value> =
        serde_json::from_slice(&raw).map_err(|_| invalid("malformed JWT header"))?;
    let alg = header.get("alg").and_then(Value::as_str).ok_or_else(|| invalid("JWT has no alg"))?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(invalid("unsigned JWT (alg none) not accepted"));
    }
    let parsed: Algorithm = alg
        .parse()
        .map_err(|_| invalid(&format!("JWT algorithm {} not allowed", printable(alg))))?;
    if !allowed.contains(&parsed) {
        return Err(invalid(&format!("JWT algorithm {parsed:?} not allowed")));
    }
    if header.contains_key("crit") {
        return Err(invalid("JWT has critical header extensions"));
    }
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(invalid("malformed JWT kid")),
    };
    Ok(JwtHeader { alg: parsed, kid })
}

/// A short, printable rendition of an attacker-controlled string for a message.
fn printable(s: &str) -> String {
    let mut out: String =
        s.chars().take(16).map(|c| if c.is_ascii_graphic() { c } else { '?' }).collect();
    if s.chars().count() > 16 {
        out.push('…');
    }
    out
}

/// Whether a JWK may verify a signature made with `alg`: the key type must belong to the
/// algorithm's family (never a symmetric key), its curve must match, and its own `alg`/`use`,
/// when given, must agree.
pub(super) fn key_matches(jwk: &Jwk, alg: Algorithm) -> bool {
    if let Some(key_alg) = jwk.common.key_algorithm
        && key_alg.to_string() != format!("{alg:?}")
    {
        return false;
    }
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return false;
    }
    match (&jwk.algorithm, alg) {
        (
            AlgorithmParameters::RSA(_),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
        ) => true,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES384) => p.curve == EllipticCurve::P384,
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        _ => false,
    }
}

impl JwtPolicy {
    /// Verifies signature and claims and builds the identity.
    pub(super) fn verify(
        &self,
        token: &str,
        header: &JwtHeader,
        key: &DecodingKey,
    ) -> Result<Identity, AuthFailure> {
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.skew.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_audience(&[&self.audience]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
            .map_err(|e| AuthFailure::InvalidToken(describe(e.kind())))?;
        identity_from_claims(data.claims, token, &self.issuer)
    }

    /// Checks the required scopes.
    pub(super) fn check_scopes(&self, granted: &[String]) -> Result<(), AuthFailure> {
        if self.required_scopes.iter().all(|s| granted.contains(s)) {
            Ok(())
        } else {
            Err(AuthFailure::InsufficientScope { required: self.required_scopes.clone() })
        }
    }
}

/// A fixed message per validation error (never the token, never a claim value).
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidSignature => "signature does not verify".into(),
        ErrorKind::ExpiredSignature => "token expired".into(),
        ErrorKind::ImmatureSignature => "token not yet valid (nbf)".into(),
        ErrorKind::InvalidIssuer => "wrong issuer".into(),
        ErrorKind::InvalidAudience => "wrong audience".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("missing claim {}", printable(c)),
        ErrorKind::InvalidClaimFormat(c) => format!("malformed claim {}", printable(c)),
        ErrorKind::InvalidAlgorithm => "algorithm does not match the key".into(),
        ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidKeyFormat => "unusable signing key".into(),
        _ => "malformed token".into(),
    }
}

/// Builds an identity from verified claims (JWT payload or introspection response).
pub(super) fn identity_from_claims(
    claims: Map<String, Value>,
    token: &str,
    default_issuer: &str,
) -> Result<Identity, AuthFailure> {
    let issuer = match claims.get("iss") {
        Some(Value::String(s)) => s.clone(),
        None => default_issuer.to_string(),
        Some(_) => return Err(invalid("malformed claim iss")),
    };
    let subject = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(invalid("missing claim sub")),
    };
    let expires_at = match claims.get("exp") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                .map(|s| UNIX_EPOCH + Duration::from_secs(s))
                .ok_or_else(|| invalid("malformed claim exp"))?,
        ),
    };
    let scopes = scopes_of(&claims);
    Ok(Identity { issuer, subject, claims, token: Secret::new(token), expires_at, scopes })
}

/// Scopes from `scope` (space separated) or `scp` (array or string).
pub(super) fn scopes_of(claims: &Map<String, Value>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |s: &str| {
        for part in s.split_whitespace() {
            if !out.iter().any(|o| o == part) {
                out.push(part.to_string());
            }
        }
    };
    match claims.get("scope") {
        Some(Value::String(s)) => add(s),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).for_each(&mut add),
        _ => {}
    }
    match claims.get("scp") {
        Some(Value::String(s)) => add(s),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).for_each(&mut add),
        _ => {}
    }
    out
}

/// Seconds since the epoch.
pub(super) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("a.b.c"));
        assert!(looks_like_jwt("a.b."));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("opaque-token"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt("a+.b.c"));
    }

    #[test]
    fn header_policy() {
        let allowed = super::super::DEFAULT_ALGORITHMS;
        let none = format!(
            "{}.{}.",
            seg(&serde_json::json!({"alg": "none"})),
            seg(&serde_json::json!({}))
        );
        assert!(
            matches!(read_header(&none, &allowed), Err(AuthFailure::InvalidToken(m)) if m.contains("none"))
        );
        let hs = format!("{}.e30.x", seg(&serde_json::json!({"alg": "HS256", "kid": "k"})));
        assert!(
            matches!(read_header(&hs, &allowed), Err(AuthFailure::InvalidToken(m)) if m.contains("HS256"))
        );
        let rs = format!("{}.e30.x", seg(&serde_json::json!({"alg": "RS256", "kid": "k"})));
        let h = read_header(&rs, &allowed).unwrap();
        assert_eq!((h.alg, h.kid.as_deref()), (Algorithm::RS256, Some("k")));
        let crit = format!("{}.e30.x", seg(&serde_json::json!({"alg": "RS256", "crit": ["b64"]})));
        assert!(read_header(&crit, &allowed).is_err());
    }

    #[test]
    fn key_type_must_match() {
        let oct: Jwk =
            serde_json::from_value(serde_json::json!({"kty": "oct", "k": "c2VjcmV0"})).unwrap();
        assert!(!key_matches(&oct, Algorithm::RS256));
        assert!(!key_matches(&oct, Algorithm::HS256));
        let rsa: Jwk = serde_json::from_value(
            serde_json::json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "alg": "RS256"}),
        )
        .unwrap();
        assert!(key_matches(&rsa, Algorithm::RS256));
        assert!(!key_matches(&rsa, Algorithm::PS256));
        assert!(!key_matches(&rsa, Algorithm::ES256));
    }

    #[test]
    fn scopes() {
        let c: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"scope": "a b", "scp": ["b", "c"]})).unwrap();
        assert_eq!(scopes_of(&c), vec!["a", "b", "c"]);
    }
}
