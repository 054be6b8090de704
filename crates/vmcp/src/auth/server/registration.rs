//! `POST /oauth/register`: RFC 7591 dynamic registration of public clients.
//!
//! Checks follow ToolHive (`registration/dcr.go`): JSON body of at most `max_body_bytes`,
//! 1 to 10 redirect URIs (see [`super::clients`]), `client_name` and `software_id` of at most 256
//! characters, `token_endpoint_auth_method` `none` (the default; confidential registration is
//! not offered), grant types including `authorization_code` (others than it and
//! `refresh_token` are dropped, where ToolHive refuses them), response types including `code`,
//! scope within `scopes_supported` (default: ToolHive's default set) plus the baseline. Registrations are rate limited per client IP (429 with
//! `Retry-After`); a full client table that cannot make room answers 503.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AuthServer;
use super::clients::{
    ClientRecord, ClientSource, MAX_REDIRECT_URIS, RedirectPolicy, registered_scopes,
    validate_redirect_uri,
};
use super::memory::new_uuid;
use super::oauth::{no_store, now_secs};
use super::store::StoreError;

/// Longest `client_name` and `software_id` (ToolHive).
pub const MAX_NAME_LEN: usize = 256;

#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeField {
    Text(String),
    List(Vec<String>),
}

#[derive(Deserialize)]
struct RegistrationRequest {
    redirect_uris: Option<Vec<String>>,
    client_name: Option<String>,
    token_endpoint_auth_method: Option<String>,
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
    scope: Option<ScopeField>,
    software_id: Option<String>,
}

/// A registration error: status, RFC 7591 code, description.
struct DcrError(StatusCode, &'static str, String);

impl IntoResponse for DcrError {
    fn into_response(self) -> Response {
        dcr_error(self.0, self.1, &self.2)
    }
}

fn invalid_uri(description: impl Into<String>) -> DcrError {
    DcrError(StatusCode::BAD_REQUEST, "invalid_redirect_uri", description.into())
}

fn invalid_metadata(description: impl Into<String>) -> DcrError {
    DcrError(StatusCode::BAD_REQUEST, "invalid_client_metadata", description.into())
}

fn dcr_error(status: StatusCode, code: &str, description: &str) -> Response {
    let mut resp = (status, axum::Json(json!({ "error": code, "error_description": description })))
        .into_response();
    no_store(&mut resp);
    resp
}

fn bad_metadata(description: &str) -> Response {
    dcr_error(StatusCode::BAD_REQUEST, "invalid_client_metadata", description)
}

pub(super) async fn handle(State(srv): State<Arc<AuthServer>>, req: Request) -> Response {
    let ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    if let Err(wait) = srv.limiter.check(ip) {
        let mut resp = dcr_error(
            StatusCode::TOO_MANY_REQUESTS,
            "temporarily_unavailable",
            "too many registrations; retry later",
        );
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    let json_body = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    if !json_body {
        return bad_metadata("Content-Type must be application/json");
    }
    let limit = srv.settings.bounds.max_body_bytes;
    let body = match axum::body::to_bytes(req.into_body(), limit).await {
        Ok(b) => b,
        Err(_) => {
            return dcr_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_client_metadata",
                "body too large",
            );
        }
    };
    let Ok(request) = serde_json::from_slice::<RegistrationRequest>(&body) else {
        return bad_metadata("invalid JSON request body");
    };
    let client = match validate(&srv, request) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = srv.store.put_client(client.clone()).await {
        tracing::warn!(error = %e, "client registration");
        let why = match e {
            StoreError::Capacity(_) => "client registration capacity reached; try again later",
            StoreError::Unavailable(_) => "authorization storage unavailable; try again later",
        };
        let mut resp = dcr_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", why);
        if matches!(e, StoreError::Capacity(_)) {
            let retry = srv.settings.bounds.min_client_age.as_secs().max(1).to_string();
            if let Ok(v) = HeaderValue::from_str(&retry) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        return resp;
    }
    tracing::info!(client_id = %client.client_id, name = ?client.client_name, "client registered");
    let mut body = json!({
        "client_id": client.client_id,
        "client_id_issued_at": client.issued_at,
        "redirect_uris": client.redirect_uris,
        "token_endpoint_auth_method": "none",
        "grant_types": client.grant_types,
        "response_types": ["code"],
        "scope": client.scopes.join(" "),
    });
    if let Some(n) = &client.client_name {
        body["client_name"] = n.clone().into();
    }
    let mut resp = (StatusCode::CREATED, axum::Json(body)).into_response();
    no_store(&mut resp);
    resp
}

fn validate(srv: &AuthServer, req: RegistrationRequest) -> Result<ClientRecord, DcrError> {
    let redirect_uris = req.redirect_uris.unwrap_or_default();
    if redirect_uris.is_empty() {
        return Err(invalid_uri("redirect_uris is required"));
    }
    if redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(invalid_uri(format!("too many redirect_uris (maximum {MAX_REDIRECT_URIS})")));
    }
    for u in &redirect_uris {
        validate_redirect_uri(u, RedirectPolicy::AllowPrivateSchemes).map_err(invalid_uri)?;
    }
    if req.client_name.as_ref().is_some_and(|n| n.chars().count() > MAX_NAME_LEN) {
        return Err(invalid_metadata("client_name too long (maximum 256 characters)"));
    }
    if let Some(s) = &req.software_id
        && (s.len() > MAX_NAME_LEN || !s.bytes().all(|b| (0x20..=0x7e).contains(&b)))
    {
        return Err(invalid_metadata("software_id must be at most 256 printable ASCII characters"));
    }
    match req.token_endpoint_auth_method.as_deref() {
        None | Some("none") => {}
        Some("client_secret_basic" | "client_secret_post") => {
            return Err(invalid_metadata(
                "this authorization server only supports token_endpoint_auth_method 'none'",
            ));
        }
        Some(_) => return Err(invalid_metadata("unsupported token_endpoint_auth_method")),
    }
    // Grant and response types this server does not offer are dropped (RFC 7591 §3.2.1 lets
    // the server replace requested metadata; the response says what was registered), as
    // ToolHive does for metadata documents; `authorization_code` and `code` must remain.
    let grant_types: Vec<String> = match req.grant_types {
        Some(asked) if !asked.is_empty() => asked
            .into_iter()
            .filter(|g| g == "authorization_code" || g == "refresh_token")
            .collect(),
        _ => vec!["authorization_code".to_string(), "refresh_token".to_string()],
    };
    if !grant_types.iter().any(|g| g == "authorization_code") {
        return Err(invalid_metadata("grant_types must include 'authorization_code'"));
    }
    let response_types = req.response_types.unwrap_or_default();
    if !response_types.is_empty() && !response_types.iter().any(|r| r == "code") {
        return Err(invalid_metadata("response_types must include 'code'"));
    }
    let requested: Vec<String> = match req.scope {
        Some(ScopeField::Text(s)) => {
            s.split(' ').filter(|s| !s.is_empty()).map(String::from).collect()
        }
        Some(ScopeField::List(l)) => l,
        None => Vec::new(),
    };
    let scopes = registered_scopes(
        &requested,
        &srv.settings.effective_scopes(),
        &srv.settings.baseline_client_scopes,
    )
    .map_err(invalid_metadata)?;
    Ok(ClientRecord {
        client_id: new_uuid(),
        redirect_uris,
        scopes,
        client_name: req.client_name,
        grant_types,
        issued_at: now_secs(),
        source: ClientSource::Registered,
    })
}
