//! `GET /oauth/authorize`: checks the client's request and sends the user to the first upstream.
//!
//! Order matters: the client and its redirect URI are checked first and their errors answered
//! directly (400 JSON), because redirecting to an unverified URI would make vmcp an open
//! redirector. Every later error goes back to the client's redirect URI with `error`, `state`
//! and `iss`.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::clients::{ClientRecord, parse_scope};
use super::oauth::{
    OAuthError, Params, error_redirect, now_secs, pkce_s256, random_token, redirect,
    valid_challenge,
};
use super::settings::validate_resource;
use super::store::{ClientRequest, PendingAuthorization, StoreError, UserInfo};
use super::{AuthServer, LookupError};
use crate::auth::identity::Secret;
use crate::auth::upstream::{AuthorizationRequest, FederationError};

/// Longest `state` accepted from a client.
pub const MAX_STATE_LEN: usize = 2048;

pub(super) async fn handle(
    State(srv): State<Arc<AuthServer>>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match Params::parse(query.unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let (client, redirect_uri, sent) = match trusted_redirect(&srv, &params).await {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    // From here on errors are redirected. A repeated or oversized state is not echoed.
    let state = match params.one("state") {
        Ok(s) if s.is_none_or(|s| s.len() <= MAX_STATE_LEN) => s,
        _ => {
            let e = OAuthError::invalid_request("state is repeated or too long");
            return error_redirect(&redirect_uri, None, srv.issuer(), &e);
        }
    };
    let back = |e: OAuthError| error_redirect(&redirect_uri, state, srv.issuer(), &e);
    let request = match check_request(&srv, &params, &client, &redirect_uri, sent, state) {
        Ok(r) => r,
        Err(e) => return back(e),
    };
    let Some(first) = srv.upstreams.first().cloned() else {
        return back(OAuthError::server_error("no upstream identity provider"));
    };
    tracing::debug!(client_id = %request.client_id, upstream = %first, "authorization started");
    match srv.send_to_upstream(request, &first, Vec::new(), None).await {
        Ok(resp) => resp,
        Err(e) => back(e),
    }
}

/// The client and the redirect URI to answer to: (client, URI as requested, whether it was in
/// the request). Errors here are never redirected.
async fn trusted_redirect(
    srv: &AuthServer,
    params: &Params,
) -> Result<(ClientRecord, String, bool), OAuthError> {
    let client_id = params
        .one("client_id")?
        .ok_or_else(|| OAuthError::invalid_request("client_id is required"))?;
    let client = match srv.lookup_client(client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(unknown_client("unknown client_id")),
        Err(LookupError::Document(e)) => {
            tracing::info!(client_id, error = %e, "client metadata document refused");
            return Err(unknown_client(&e.to_string()));
        }
        Err(LookupError::Store(e)) => return Err(store_error(&e)),
    };
    match params.one("redirect_uri")? {
        Some(requested) => match client.match_redirect_uri(requested) {
            Some(_) => Ok((client, requested.to_string(), true)),
            None => {
                Err(OAuthError::invalid_request("redirect_uri is not registered for this client"))
            }
        },
        None if client.redirect_uris.len() == 1 => {
            let only = client.redirect_uris[0].clone();
            Ok((client, only, false))
        }
        None => Err(OAuthError::invalid_request("redirect_uri is required")),
    }
}

fn unknown_client(description: &str) -> OAuthError {
    let mut e = OAuthError::invalid_client(description);
    // Shown to a browser, not an HTTP-authenticating client.
    e.status = StatusCode::BAD_REQUEST;
    e
}

/// A store failure as an OAuth error: capacity and outages are temporary.
pub(super) fn store_error(e: &StoreError) -> OAuthError {
    tracing::warn!(error = %e, "authorization store");
    OAuthError::temporarily_unavailable(e.to_string())
}

/// Everything after the redirect URI: response type, PKCE, scope, resource.
fn check_request(
    srv: &AuthServer,
    params: &Params,
    client: &ClientRecord,
    redirect_uri: &str,
    redirect_uri_sent: bool,
    state: Option<&str>,
) -> Result<ClientRequest, OAuthError> {
    match params.one("response_type")? {
        Some("code") => {}
        Some(_) => {
            return Err(OAuthError::unsupported_response_type(
                "only response_type=code is supported",
            ));
        }
        None => return Err(OAuthError::invalid_request("response_type is required")),
    }
    let challenge = params
        .one("code_challenge")?
        .ok_or_else(|| OAuthError::invalid_request("code_challenge is required (PKCE)"))?;
    match params.one("code_challenge_method")? {
        Some("S256") => {}
        Some(_) | None => {
            return Err(OAuthError::invalid_request(
                "code_challenge_method must be S256 (plain is refused)",
            ));
        }
    }
    if !valid_challenge(challenge) {
        return Err(OAuthError::invalid_request("code_challenge is not an S256 challenge"));
    }
    let scopes = match params.one("scope")? {
        Some(raw) => {
            parse_scope(raw).ok_or_else(|| OAuthError::invalid_scope("malformed scope"))?
        }
        None => Vec::new(),
    };
    let supported = srv.settings.effective_scopes();
    if let Some(s) = scopes.iter().find(|s| !supported.contains(s) || !client.scopes.contains(s)) {
        return Err(OAuthError::invalid_scope(format!(
            "scope {s:?} is not allowed for this client"
        )));
    }
    // No scope asked for: the client's registered scope (RFC 6749 §3.3 "pre-defined default").
    let scopes = if scopes.is_empty() { client.scopes.clone() } else { scopes };
    let resource = resource_of(&srv.settings.allowed_audiences, &params.all("resource"))?;
    Ok(ClientRequest {
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.to_string(),
        redirect_uri_sent,
        state: state.map(String::from),
        code_challenge: challenge.to_string(),
        scopes,
        resource: Some(resource),
    })
}

/// The RFC 8707 resource: the one given (an allowed audience), or the only allowed audience.
pub(super) fn resource_of(allowed: &[String], given: &[&str]) -> Result<String, OAuthError> {
    match given {
        [] if allowed.len() == 1 => Ok(allowed[0].clone()),
        [] => {
            Err(OAuthError::invalid_target("resource is required (several resources are served)"))
        }
        [one] => {
            validate_resource(one)
                .map_err(|e| OAuthError::invalid_target(format!("resource {e}")))?;
            if !allowed.iter().any(|a| a == one) {
                return Err(OAuthError::invalid_target("resource is not served by this server"));
            }
            Ok(one.to_string())
        }
        _ => Err(OAuthError::invalid_target("only one resource is supported")),
    }
}

impl AuthServer {
    /// Sends the user to `upstream` for this login: vmcp's own PKCE, state and nonce, kept in a
    /// pending authorization until the callback.
    pub(super) async fn send_to_upstream(
        &self,
        request: ClientRequest,
        upstream: &str,
        visited: Vec<String>,
        user: Option<UserInfo>,
    ) -> Result<Response, OAuthError> {
        let state = random_token();
        let verifier = random_token();
        let challenge = pkce_s256(&verifier);
        let nonce = random_token();
        let callback_url = self.settings.callback_for(upstream);
        let url = self
            .federation
            .authorization_url(
                upstream,
                AuthorizationRequest {
                    redirect_uri: &callback_url,
                    state: &state,
                    code_challenge: &challenge,
                    nonce: &nonce,
                },
            )
            .await
            .map_err(|e| federation_error(&e))?;
        let pending = PendingAuthorization {
            request,
            upstream: upstream.to_string(),
            callback_url,
            upstream_verifier: Secret::new(verifier),
            nonce,
            visited,
            user,
            expires_at: now_secs() + self.settings.bounds.pending_authorization_ttl.as_secs(),
        };
        self.store.put_pending(state, pending).await.map_err(|e| store_error(&e))?;
        Ok(redirect(&url))
    }
}

/// A federation failure as the error the client sees.
pub(super) fn federation_error(e: &FederationError) -> OAuthError {
    tracing::warn!(error = %e, "upstream identity provider");
    match e {
        FederationError::Refused { upstream, .. } => {
            OAuthError::access_denied(format!("upstream {upstream} refused the login"))
        }
        FederationError::Unavailable { upstream, .. } => {
            OAuthError::temporarily_unavailable(format!("upstream {upstream} is unavailable"))
        }
        FederationError::UnknownUpstream(_) => OAuthError::server_error("upstream misconfigured"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_selection() {
        let one = vec!["https://a/mcp".to_string()];
        let two = vec!["https://a/mcp".to_string(), "https://b/mcp".to_string()];
        assert_eq!(resource_of(&one, &[]).unwrap(), "https://a/mcp");
        assert_eq!(resource_of(&two, &["https://b/mcp"]).unwrap(), "https://b/mcp");
        assert_eq!(resource_of(&two, &[]).unwrap_err().code, "invalid_target");
        assert_eq!(resource_of(&one, &["https://c/mcp"]).unwrap_err().code, "invalid_target");
        assert_eq!(resource_of(&one, &["https://a/mcp#x"]).unwrap_err().code, "invalid_target");
        assert_eq!(
            resource_of(&two, &["https://a/mcp", "https://b/mcp"]).unwrap_err().code,
            "invalid_target"
        );
    }
}
