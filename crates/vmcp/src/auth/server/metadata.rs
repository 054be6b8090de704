//! Discovery: RFC 8414 authorization server metadata, the OpenID configuration (the same
//! document plus the OIDC fields ToolHive adds) and the JWKS. Built once at start.

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::keys::KeySet;
use super::settings::Settings;

/// How long clients may cache discovery documents and the JWKS (ToolHive: 1 h).
const CACHE_CONTROL: &str = "public, max-age=3600";

/// The endpoint paths under the issuer (ToolHive's routes).
pub const AUTHORIZE_PATH: &str = "/oauth/authorize";
/// Token endpoint path.
pub const TOKEN_PATH: &str = "/oauth/token";
/// Registration endpoint path.
pub const REGISTER_PATH: &str = "/oauth/register";
/// JWKS path.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// The metadata document's well-known name (RFC 8414).
pub const OAUTH_METADATA: &str = "/.well-known/oauth-authorization-server";
/// The OpenID configuration's well-known name.
pub const OIDC_METADATA: &str = "/.well-known/openid-configuration";

/// The RFC 8414 document.
pub fn oauth_metadata(settings: &Settings) -> Value {
    let iss = &settings.issuer;
    let authz_base = settings.authorization_endpoint_base_url.as_deref().unwrap_or(iss);
    let mut doc = json!({
        "issuer": iss,
        "authorization_endpoint": format!("{authz_base}{AUTHORIZE_PATH}"),
        "token_endpoint": format!("{iss}{TOKEN_PATH}"),
        "registration_endpoint": format!("{iss}{REGISTER_PATH}"),
        "jwks_uri": format!("{iss}{JWKS_PATH}"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        // Public clients only: no confidential registration, so no client_secret_* method.
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": settings.effective_scopes(),
        "authorization_response_iss_parameter_supported": true,
    });
    if settings.cimd.enabled {
        doc["client_id_metadata_document_supported"] = Value::Bool(true);
    }
    doc
}

/// The OpenID configuration: the same plus `subject_types_supported` and the signing
/// algorithms.
pub fn oidc_metadata(settings: &Settings, keys: &KeySet) -> Value {
    let mut doc = oauth_metadata(settings);
    let algs: Vec<String> = keys.algorithms().iter().map(|a| format!("{a:?}")).collect();
    doc["subject_types_supported"] = json!(["public"]);
    doc["id_token_signing_alg_values_supported"] = json!(algs);
    doc
}

/// A cacheable JSON answer.
pub fn cacheable_json(body: &Value) -> Response {
    let mut resp = axum::Json(body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

/// CORS for the endpoints browser-based clients call from script: any origin, no credentials;
/// preflights answered here.
pub async fn cors(req: Request, next: Next) -> Response {
    let mut resp = if req.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, Content-Type, MCP-Protocol-Version"),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
        r
    } else {
        next.run(req).await
    };
    resp.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_fields() {
        let mut s = Settings::new("https://vmcp.example.com/as");
        s.allowed_audiences = vec!["https://vmcp.example.com/mcp".into()];
        let keys = KeySet::load(None, &[]).unwrap();
        let m = oauth_metadata(&s);
        assert_eq!(m["issuer"], "https://vmcp.example.com/as");
        assert_eq!(m["authorization_endpoint"], "https://vmcp.example.com/as/oauth/authorize");
        assert_eq!(m["token_endpoint_auth_methods_supported"], json!(["none"]));
        assert!(m.get("client_id_metadata_document_supported").is_none());
        s.cimd.enabled = true;
        s.authorization_endpoint_base_url = Some("https://login.example.com".into());
        let o = oidc_metadata(&s, &keys);
        assert_eq!(o["client_id_metadata_document_supported"], true);
        assert_eq!(o["authorization_endpoint"], "https://login.example.com/oauth/authorize");
        assert_eq!(o["id_token_signing_alg_values_supported"], json!(["ES256"]));
    }
}
