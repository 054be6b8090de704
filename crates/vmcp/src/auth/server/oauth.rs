//! OAuth plumbing shared by the endpoints: random values, hashes, PKCE, request parameters
//! (duplicates refused, RFC 6749 §3.1), and error responses (RFC 6749 §4.1.2.1 and §5.2).

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Url;
use sha2::{Digest, Sha256};

/// Longest value accepted for any one request parameter.
pub const MAX_PARAM_LEN: usize = 4096;
/// Most parameters accepted in one request.
pub const MAX_PARAMS: usize = 64;

/// Current time, Unix seconds.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// 256 random bits, base64url (43 characters).
pub fn random_token() -> String {
    use rand::RngCore as _;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// SHA-256, base64url: how codes and refresh tokens are stored.
pub fn hash_secret(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(secret.as_bytes()))
}

/// The S256 code challenge of a PKCE verifier (RFC 7636 §4.2).
pub fn pkce_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether a PKCE verifier is well formed (43 to 128 unreserved characters, RFC 7636 §4.1).
pub fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Whether an S256 challenge is well formed (base64url of 32 bytes).
pub fn valid_challenge(c: &str) -> bool {
    c.len() == 43 && c.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// Constant-time string comparison (for PKCE).
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Request parameters (query or form body), in order. Values may be secrets (codes, refresh
/// tokens, verifiers): `Debug` shows the names only.
#[derive(Default)]
pub struct Params(Vec<(String, String)>);

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(k, _)| k)).finish()
    }
}

impl Params {
    /// Parses `application/x-www-form-urlencoded` bytes; refuses too many or too long values.
    pub fn parse(raw: &[u8]) -> Result<Self, OAuthError> {
        let mut out = Vec::new();
        for (k, v) in form_urlencoded::parse(raw) {
            if out.len() >= MAX_PARAMS {
                return Err(OAuthError::invalid_request("too many parameters"));
            }
            if k.len() > 64 || v.len() > MAX_PARAM_LEN {
                return Err(OAuthError::invalid_request("parameter too long"));
            }
            out.push((k.into_owned(), v.into_owned()));
        }
        Ok(Self(out))
    }

    /// The one value of `name` (empty counts as absent); a repeated parameter is an error.
    pub fn one(&self, name: &str) -> Result<Option<&str>, OAuthError> {
        let mut found = None;
        for (k, v) in &self.0 {
            if k == name {
                if found.is_some() {
                    return Err(OAuthError::invalid_request(format!(
                        "{name} given more than once"
                    )));
                }
                found = Some(v.as_str());
            }
        }
        Ok(found.filter(|v| !v.is_empty()))
    }

    /// Every non-empty value of `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, v)| k == name && !v.is_empty()).map(|(_, v)| v.as_str()).collect()
    }
}

/// An OAuth error: its code, a description for the client, and the HTTP status it gets when
/// answered directly (not by redirect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// RFC 6749 / RFC 8707 error code.
    pub code: &'static str,
    /// Human-readable description (never a secret).
    pub description: String,
    /// Status for a direct answer.
    pub status: StatusCode,
}

macro_rules! oauth_errors {
    ($($fn_name:ident => $code:literal, $status:ident;)*) => {
        impl OAuthError {
            $(
                #[doc = concat!("`", $code, "`.")]
                pub fn $fn_name(description: impl Into<String>) -> Self {
                    Self { code: $code, description: description.into(), status: StatusCode::$status }
                }
            )*
        }
    };
}

oauth_errors! {
    invalid_request => "invalid_request", BAD_REQUEST;
    invalid_client => "invalid_client", UNAUTHORIZED;
    invalid_grant => "invalid_grant", BAD_REQUEST;
    unauthorized_client => "unauthorized_client", BAD_REQUEST;
    unsupported_grant_type => "unsupported_grant_type", BAD_REQUEST;
    unsupported_response_type => "unsupported_response_type", BAD_REQUEST;
    invalid_scope => "invalid_scope", BAD_REQUEST;
    invalid_target => "invalid_target", BAD_REQUEST;
    access_denied => "access_denied", FORBIDDEN;
    server_error => "server_error", INTERNAL_SERVER_ERROR;
    temporarily_unavailable => "temporarily_unavailable", SERVICE_UNAVAILABLE;
}

impl OAuthError {
    /// The JSON body `{"error", "error_description"}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.code, "error_description": self.description })
    }
}

impl IntoResponse for OAuthError {
    /// A direct JSON answer, never cached.
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        no_store(&mut resp);
        resp
    }
}

/// `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 §5.1).
pub fn no_store(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// A 302 to `location`.
pub fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => {
            let mut resp = StatusCode::FOUND.into_response();
            resp.headers_mut().insert(header::LOCATION, v);
            no_store(&mut resp);
            resp
        }
        Err(_) => OAuthError::server_error("redirect target is not a valid header").into_response(),
    }
}

/// `redirect_uri` with `params` appended to its query (RFC 6749 §4.1.2: existing query kept).
pub fn with_query(redirect_uri: &str, params: &[(&str, &str)]) -> Option<String> {
    let mut url = Url::parse(redirect_uri).ok()?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    Some(url.to_string())
}

/// The redirect that reports `err` to the client (with `state` and, RFC 9207, `iss`).
pub fn error_redirect(
    redirect_uri: &str,
    state: Option<&str>,
    iss: &str,
    err: &OAuthError,
) -> Response {
    let mut params = vec![("error", err.code), ("error_description", err.description.as_str())];
    if let Some(s) = state {
        params.push(("state", s));
    }
    params.push(("iss", iss));
    match with_query(redirect_uri, &params) {
        Some(loc) => redirect(&loc),
        None => err.clone().into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_rfc7636_appendix_b() {
        let v = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(valid_verifier(v));
        assert_eq!(pkce_s256(v), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert!(valid_challenge(&pkce_s256(v)));
        assert!(!valid_verifier("short"));
        assert!(!valid_verifier(&"a+".repeat(30)));
    }

    #[test]
    fn params_refuse_duplicates_and_keep_repeatable_ones() {
        let p = Params::parse(b"a=1&b=&resource=x&resource=y&c=%20z+").unwrap();
        assert_eq!(p.one("a").unwrap(), Some("1"));
        assert_eq!(p.one("b").unwrap(), None);
        assert_eq!(p.one("c").unwrap(), Some(" z "));
        assert!(p.one("resource").is_err());
        assert_eq!(p.all("resource"), ["x", "y"]);
        assert_eq!(format!("{p:?}"), r#"["a", "b", "resource", "resource", "c"]"#);
        let long = format!("a={}", "x".repeat(MAX_PARAM_LEN + 1));
        assert!(Params::parse(long.as_bytes()).is_err());
    }

    #[test]
    fn error_redirects_keep_the_query_and_add_iss() {
        let err = OAuthError::invalid_scope("no");
        let resp = error_redirect("http://127.0.0.1:5/cb?x=1", Some("s t"), "https://as", &err);
        assert_eq!(resp.status(), StatusCode::FOUND);
        let loc = resp.headers()[header::LOCATION].to_str().unwrap();
        assert_eq!(
            loc,
            "http://127.0.0.1:5/cb?x=1&error=invalid_scope&error_description=no&state=s+t&iss=https%3A%2F%2Fas"
        );
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
