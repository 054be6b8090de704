//! `POST /oauth/token`: `authorization_code` (PKCE S256) and `refresh_token` (rotation).
//!
//! Clients are public: they name themselves by `client_id` (form, or HTTP Basic with an empty
//! password) and never present a secret. A code is single use; presenting it again revokes the
//! refresh-token family it started. A refresh token is single use too: each refresh returns a
//! new one, and presenting a rotated-away token revokes the whole family (OAuth 2.1 §4.3.1).
//! Access tokens already issued stay valid until they expire (they are self-contained JWTs).
//! Every answer is JSON with `Cache-Control: no-store`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::authorize::{resource_of, store_error};
use super::clients::{ClientRecord, parse_scope};
use super::jwt::{Grant, mint};
use super::oauth::{
    OAuthError, Params, hash_secret, no_store, now_secs, pkce_s256, random_token, same,
    valid_verifier,
};
use super::store::{CodeTake, RefreshFamily, Rotation, UserInfo};
use super::{AuthServer, LookupError};

pub(super) async fn handle(
    State(srv): State<Arc<AuthServer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let basic = headers.contains_key(header::AUTHORIZATION);
    match exchange(&srv, &headers, &body).await {
        Ok(resp) => resp,
        Err(e) => {
            let mut resp = e.clone().into_response();
            if e.code == "invalid_client" && basic {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"vmcp\""),
                );
            }
            resp
        }
    }
}

async fn exchange(
    srv: &AuthServer,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, OAuthError> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if !form {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let params = Params::parse(body)?;
    let client = authenticate(srv, headers, &params).await?;
    match params.one("grant_type")? {
        Some("authorization_code") => code_grant(srv, &client, &params).await,
        Some("refresh_token") => refresh_grant(srv, &client, &params).await,
        Some(_) => {
            Err(OAuthError::unsupported_grant_type("supported: authorization_code, refresh_token"))
        }
        None => Err(OAuthError::invalid_request("grant_type is required")),
    }
}

/// The public client the request names; a secret is refused (none was ever issued).
async fn authenticate(
    srv: &AuthServer,
    headers: &HeaderMap,
    params: &Params,
) -> Result<ClientRecord, OAuthError> {
    let mut id = params.one("client_id")?.map(String::from);
    if params.one("client_secret")?.is_some() {
        return Err(OAuthError::invalid_client("public clients authenticate without a secret"));
    }
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let (basic_id, secret) = parse_basic(auth)
            .ok_or_else(|| OAuthError::invalid_client("malformed Authorization header"))?;
        if !secret.is_empty() {
            return Err(OAuthError::invalid_client("public clients authenticate without a secret"));
        }
        if id.as_ref().is_some_and(|i| *i != basic_id) {
            return Err(OAuthError::invalid_client(
                "client_id differs from the Authorization header",
            ));
        }
        id = Some(basic_id);
    }
    let id = id.ok_or_else(|| OAuthError::invalid_client("client_id is required"))?;
    match srv.lookup_client(&id).await {
        Ok(Some(c)) => Ok(c),
        Ok(None) | Err(LookupError::Document(_)) => {
            Err(OAuthError::invalid_client("unknown client"))
        }
        Err(LookupError::Store(e)) => Err(store_error(&e)),
    }
}

/// `Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1).
fn parse_basic(value: &HeaderValue) -> Option<(String, String)> {
    let v = value.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(rest.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let dec = |s: &str| {
        form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned())
    };
    Some((dec(id)?, dec(secret)?))
}

async fn code_grant(
    srv: &AuthServer,
    client: &ClientRecord,
    params: &Params,
) -> Result<Response, OAuthError> {
    let code =
        params.one("code")?.ok_or_else(|| OAuthError::invalid_request("code is required"))?;
    let record = match srv.store.take_code(&hash_secret(code)).await.map_err(|e| store_error(&e))? {
        CodeTake::Fresh(r) => r,
        CodeTake::Replayed { family_id } => {
            srv.store.revoke_family(&family_id).await.map_err(|e| store_error(&e))?;
            tracing::warn!(client_id = %client.client_id, "authorization code replayed: its tokens are revoked");
            return Err(OAuthError::invalid_grant(
                "authorization code already used; tokens issued from it are revoked",
            ));
        }
        CodeTake::Unknown => {
            return Err(OAuthError::invalid_grant("authorization code unknown or expired"));
        }
    };
    let req = &record.request;
    if record.expires_at <= now_secs() {
        return Err(OAuthError::invalid_grant("authorization code expired"));
    }
    if req.client_id != client.client_id {
        return Err(OAuthError::invalid_grant("authorization code was issued to another client"));
    }
    match params.one("redirect_uri")? {
        Some(r) if r == req.redirect_uri => {}
        None if !req.redirect_uri_sent => {}
        _ => {
            return Err(OAuthError::invalid_grant(
                "redirect_uri does not match the authorization request",
            ));
        }
    }
    let verifier = params
        .one("code_verifier")?
        .ok_or_else(|| OAuthError::invalid_request("code_verifier is required (PKCE)"))?;
    if !valid_verifier(verifier) || !same(&pkce_s256(verifier), &req.code_challenge) {
        return Err(OAuthError::invalid_grant("PKCE verification failed"));
    }
    let resource = narrow_resource(srv, req.resource.as_deref(), &params.all("resource"))?;
    let refresh = issues_refresh(srv, client, &req.scopes).then(random_token);
    if let Some(rt) = &refresh {
        let family = RefreshFamily {
            family_id: record.family_id.clone(),
            client_id: client.client_id.clone(),
            user: record.user.clone(),
            scopes: req.scopes.clone(),
            resource: Some(resource.clone()),
            current_hash: hash_secret(rt),
            expires_at: now_secs() + srv.settings.refresh_token_lifespan.as_secs(),
        };
        srv.store.put_family(family).await.map_err(|e| store_error(&e))?;
    }
    respond(srv, client, &record.user, &req.scopes, &resource, refresh).await
}

async fn refresh_grant(
    srv: &AuthServer,
    client: &ClientRecord,
    params: &Params,
) -> Result<Response, OAuthError> {
    let presented = params
        .one("refresh_token")?
        .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
    if !client.may_refresh() {
        return Err(OAuthError::unauthorized_client(
            "this client did not register the refresh_token grant",
        ));
    }
    let hash = hash_secret(presented);
    let next = random_token();
    let next_expiry = now_secs() + srv.settings.refresh_token_lifespan.as_secs();
    // Checked before rotating, so a bad scope or resource does not cost the client its token.
    let (scopes, resource) =
        match srv.store.family_by_token(&hash).await.map_err(|e| store_error(&e))? {
            Some(f) if f.client_id == client.client_id => {
                let scopes = match params.one("scope")? {
                    Some(raw) => {
                        let asked = parse_scope(raw)
                            .ok_or_else(|| OAuthError::invalid_scope("malformed scope"))?;
                        if let Some(s) = asked.iter().find(|s| !f.scopes.contains(s)) {
                            return Err(OAuthError::invalid_scope(format!(
                                "scope {s:?} was not granted"
                            )));
                        }
                        if asked.is_empty() { f.scopes.clone() } else { asked }
                    }
                    None => f.scopes.clone(),
                };
                (scopes, narrow_resource(srv, f.resource.as_deref(), &params.all("resource"))?)
            }
            // Unknown, another client's, or rotated away: rotation below tells which (and revokes
            // the family on reuse).
            _ => (Vec::new(), String::new()),
        };
    let rotation = srv
        .store
        .rotate_refresh(&hash, &client.client_id, hash_secret(&next), next_expiry)
        .await
        .map_err(|e| store_error(&e))?;
    let family = match rotation {
        Rotation::Rotated(f) => f,
        Rotation::Reused { family_id } => {
            // The store revoked it already; again here so a store that only reports is safe.
            srv.store.revoke_family(&family_id).await.map_err(|e| store_error(&e))?;
            tracing::warn!(client_id = %client.client_id, "refresh token reused: its family is revoked");
            return Err(OAuthError::invalid_grant(
                "refresh token already used; the grant is revoked",
            ));
        }
        Rotation::Invalid => {
            return Err(OAuthError::invalid_grant("refresh token unknown, expired or revoked"));
        }
    };
    if resource.is_empty() {
        // The family was rotated by a request that raced this one's check: stay safe.
        srv.store.revoke_family(&family.family_id).await.map_err(|e| store_error(&e))?;
        return Err(OAuthError::invalid_grant(
            "refresh token used concurrently; the grant is revoked",
        ));
    }
    respond(srv, client, &family.user, &scopes, &resource, Some(next)).await
}

/// The audience: the grant's resource, which a `resource` parameter may only repeat.
fn narrow_resource(
    srv: &AuthServer,
    granted: Option<&str>,
    given: &[&str],
) -> Result<String, OAuthError> {
    let asked = resource_of(&srv.settings.allowed_audiences, given);
    match (granted, given) {
        (Some(g), []) => Ok(g.to_string()),
        (Some(g), _) => match asked? {
            a if a == g => Ok(a),
            _ => Err(OAuthError::invalid_target("resource differs from the authorization request")),
        },
        (None, _) => asked,
    }
}

/// Refresh tokens go to clients registered for the grant that were granted `offline_access`
/// (as ToolHive's fosite setup does), or to all of them if `offline_access` is not a scope here.
fn issues_refresh(srv: &AuthServer, client: &ClientRecord, scopes: &[String]) -> bool {
    let offline = "offline_access".to_string();
    client.may_refresh()
        && (scopes.contains(&offline) || !srv.settings.effective_scopes().contains(&offline))
}

async fn respond(
    srv: &AuthServer,
    client: &ClientRecord,
    user: &UserInfo,
    scopes: &[String],
    resource: &str,
    refresh: Option<String>,
) -> Result<Response, OAuthError> {
    let grant = Grant { user, client_id: &client.client_id, scopes, resource: Some(resource) };
    let lifespan = srv.settings.access_token_lifespan;
    let access = mint(&srv.keys, srv.issuer(), &grant, lifespan, now_secs()).map_err(|e| {
        tracing::error!(error = %e, "signing an access token");
        OAuthError::server_error("could not sign the access token")
    })?;
    srv.store.touch_client(&client.client_id).await.map_err(|e| store_error(&e))?;
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": lifespan.as_secs(),
        "scope": scopes.join(" "),
    });
    if let Some(rt) = refresh {
        body["refresh_token"] = rt.into();
    }
    tracing::info!(client_id = %client.client_id, user = %user.id, "tokens issued");
    let mut resp = axum::Json(body).into_response();
    no_store(&mut resp);
    Ok(resp)
}
