//! SigV4 signing of one finished backend request with `aws-sigv4`: method, URL, every header
//! already set, and the SHA-256 of the body (an empty body for GET and DELETE).
//!
//! The signature covers the headers present when it is made, so it is made last, after the
//! transport and any forwarded client headers are set (`OutgoingAuth::apply` runs last at every
//! call site). Headers the HTTP client adds afterwards (`content-length`, `host`, which is
//! derived from the URL for the signature and sent the same) are outside it or equal.

use std::time::SystemTime;

use aws_credential_types::Credentials as AwsCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use http::{HeaderName, HeaderValue};

use super::sts::Credentials;

/// Where a request is signed for.
#[derive(Debug, Clone)]
pub(super) struct Scope {
    pub region: String,
    pub service: String,
}

/// Signs `request` in place with `creds` at `time`: sets `authorization`, `x-amz-date` and
/// `x-amz-security-token` (the last two marked sensitive where they carry secrets). Errors say
/// what was wrong, never a credential.
pub(super) fn sign_request(
    request: &mut reqwest::Request,
    creds: &Credentials,
    scope: &Scope,
    time: SystemTime,
) -> Result<(), String> {
    if request.url().host_str().is_none() {
        return Err("the backend URL has no host".into());
    }
    let body: &[u8] = match request.body() {
        None => &[],
        Some(b) => b.as_bytes().ok_or("a streamed request body cannot be signed")?,
    };
    let identity = AwsCredentials::new(
        creds.access_key_id.clone(),
        creds.secret_access_key.expose(),
        Some(creds.session_token.expose().to_owned()),
        Some(creds.expires_at),
        "vmcp-aws-sts",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&scope.region)
        .name(&scope.service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("signing parameters: {e}"))?
        .into();
    let mut headers = Vec::with_capacity(request.headers().len());
    for (name, value) in request.headers() {
        let value = value
            .to_str()
            .map_err(|_| format!("header {name} is not visible ASCII and cannot be signed"))?;
        headers.push((name.as_str(), value));
    }
    let signable = SignableRequest::new(
        request.method().as_str(),
        request.url().as_str(),
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("request cannot be signed: {e}"))?;
    let (instructions, _signature) =
        sign(signable, &params).map_err(|e| format!("signing failed: {e}"))?.into_parts();
    let (new_headers, query) = instructions.into_parts();
    if !query.is_empty() {
        // Header signing never adds query parameters; if it did, the URL would change under it.
        return Err("the signature asked for query parameters".into());
    }
    for header in new_headers {
        let name = HeaderName::from_bytes(header.name().as_bytes())
            .map_err(|_| "the signer produced an invalid header name".to_owned())?;
        let mut value = HeaderValue::from_str(header.value())
            .map_err(|_| "the signer produced an invalid header value".to_owned())?;
        value.set_sensitive(header.sensitive() || name == http::header::AUTHORIZATION);
        request.headers_mut().insert(name, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::identity::Secret;
    use std::time::Duration;

    fn creds() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: Secret::new("session-token-value"),
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000),
        }
    }

    fn signed(method: &str, body: Option<&'static str>) -> reqwest::Request {
        let client = reqwest::Client::new();
        let mut b = client
            .request(method.parse().unwrap(), "http://127.0.0.1:8123/mcp")
            .header("content-type", "application/json")
            .header("mcp-session-id", "abc");
        if let Some(body) = body {
            b = b.body(body);
        }
        let mut req = b.build().unwrap();
        let scope = Scope { region: "us-east-1".into(), service: "aws-mcp".into() };
        // 2015-08-30T12:36:00Z, the date of AWS's published test suite.
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        sign_request(&mut req, &creds(), &scope, t).unwrap();
        req
    }

    fn header<'a>(r: &'a reqwest::Request, n: &str) -> &'a str {
        r.headers().get(n).unwrap().to_str().unwrap()
    }

    #[test]
    fn signs_headers_scope_and_body() {
        let r = signed("POST", Some("{\"a\":1}"));
        let auth = header(&r, "authorization");
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/aws-mcp/aws4_request, \
                 SignedHeaders=content-type;host;mcp-session-id;x-amz-date;x-amz-security-token, \
                 Signature="
            ),
            "{auth}"
        );
        assert_eq!(header(&r, "x-amz-date"), "20150830T123600Z");
        assert_eq!(header(&r, "x-amz-security-token"), "session-token-value");
        assert!(r.headers().get("authorization").unwrap().is_sensitive());
        assert!(r.headers().get("x-amz-security-token").unwrap().is_sensitive());
        // The body is part of the signature: another body, another signature.
        let other = signed("POST", Some("{\"a\":2}"));
        assert_ne!(auth, header(&other, "authorization"));
        let same = signed("POST", Some("{\"a\":1}"));
        assert_eq!(auth, header(&same, "authorization"));
        // GET and DELETE (no body) are signed too.
        for m in ["GET", "DELETE"] {
            assert!(header(&signed(m, None), "authorization").starts_with("AWS4-HMAC-SHA256 "));
        }
    }
}
