//! HTTP plumbing shared by the upstream calls: bounded bodies, error descriptions without
//! secrets, client authentication at the token endpoint.

use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use super::settings::ClientAuthMethod;
use crate::auth::identity::Secret;

/// Default bound on one request to an upstream IdP, connection to last byte.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body read from an upstream IdP (1 MiB).
pub const MAX_UPSTREAM_BODY: usize = 1 << 20;

/// Reads a body of at most [`MAX_UPSTREAM_BODY`] bytes.
pub(super) async fn read_capped(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|n| n > MAX_UPSTREAM_BODY as u64) {
        return Err("response too large".into());
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e))? {
        if out.len() + chunk.len() > MAX_UPSTREAM_BODY {
            return Err("response too large".into());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Reads a bounded JSON body.
pub(super) async fn read_json(resp: reqwest::Response) -> Result<Value, String> {
    let body = read_capped(resp).await?;
    serde_json::from_slice(&body).map_err(|_| "response is not JSON".to_string())
}

/// What went wrong with a request, with the URL's origin and path only (no query).
pub(super) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_decode() || e.is_body() {
        "bad response body"
    } else {
        "request failed"
    };
    match e.url() {
        Some(u) => format!("{kind} ({}{})", u.origin().ascii_serialization(), u.path()),
        None => kind.to_string(),
    }
}

/// A token endpoint POST: `form` plus the client's credentials as `method` says, JSON asked
/// for (GitHub answers form-encoded otherwise), bounded by `timeout`.
pub(super) fn token_request(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
    method: ClientAuthMethod,
    client_id: &str,
    secret: Option<&Secret>,
    mut form: Vec<(&'static str, String)>,
) -> reqwest::RequestBuilder {
    let mut req =
        http.post(url).header(reqwest::header::ACCEPT, "application/json").timeout(timeout);
    match (method, secret) {
        (ClientAuthMethod::ClientSecretBasic, Some(s)) => {
            req = req.header(reqwest::header::AUTHORIZATION, basic_auth(client_id, s));
        }
        (ClientAuthMethod::ClientSecretPost, Some(s)) => {
            form.push(("client_id", client_id.to_string()));
            form.push(("client_secret", s.expose().to_string()));
        }
        _ => form.push(("client_id", client_id.to_string())),
    }
    req.form(&form)
}

/// `Basic base64(form(id):form(secret))` (RFC 6749 §2.3.1).
pub(super) fn basic_auth(client_id: &str, secret: &Secret) -> String {
    let raw = format!(
        "{}:{}",
        crate::auth::form_urlencode(client_id),
        crate::auth::form_urlencode(secret.expose())
    );
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_encoded() {
        let v = basic_auth("a b", &Secret::new("s:1"));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v.trim_start_matches("Basic "))
            .unwrap();
        assert_eq!(raw, b"a+b:s%3A1");
    }
}
