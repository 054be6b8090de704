//! `GET /oauth/callback`: an upstream sends the user back. vmcp redeems the upstream code, puts
//! the tokens in the vault, then sends the user to the next upstream the vault holds nothing
//! usable for, or, when none is left, back to the client with a vmcp authorization code.
//!
//! The vmcp user id comes from the first upstream: a stable id per (upstream, subject) from the
//! store ([`super::store::AuthStore::user_id`], as ToolHive's `UserResolver`); later upstreams
//! only add tokens for that user. Each upstream is visited at most once per login. An unknown
//! or expired `state` gets 400 (there is no client to tell); everything else is redirected to
//! the client with `error`, `state` and `iss`.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AuthServer;
use super::authorize::{federation_error, store_error};
use super::memory::new_family_id;
use super::oauth::{
    OAuthError, Params, error_redirect, hash_secret, now_secs, random_token, redirect, with_query,
};
use super::store::{ClientRequest, CodeRecord, PendingAuthorization, UserInfo};
use crate::auth::upstream::TokenError;

pub(super) async fn handle(
    State(srv): State<Arc<AuthServer>>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match Params::parse(query.unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let state = match params.one("state") {
        Ok(Some(s)) => s,
        Ok(None) => return bad_request("the callback has no state"),
        Err(e) => return e.into_response(),
    };
    let pending = match srv.store.take_pending(state).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return bad_request("unknown or expired login; start again from the application");
        }
        Err(e) => return store_error(&e).into_response(),
    };
    let request = pending.request.clone();
    let back = |e: OAuthError| {
        error_redirect(&request.redirect_uri, request.state.as_deref(), srv.issuer(), &e)
    };
    if let Ok(Some(error)) = params.one("error") {
        let code: String = error.chars().take(64).filter(|c| c.is_ascii_graphic()).collect();
        tracing::info!(upstream = %pending.upstream, error = %code, "upstream refused the login");
        return back(OAuthError::access_denied(format!(
            "upstream {} refused the login ({code})",
            pending.upstream
        )));
    }
    let code = match params.one("code") {
        Ok(Some(c)) => c,
        _ => return back(OAuthError::access_denied("the upstream returned no code")),
    };
    match srv.complete_leg(pending, code).await {
        Ok(resp) => resp,
        Err(e) => back(e),
    }
}

fn bad_request(description: &str) -> Response {
    let mut e = OAuthError::invalid_request(description);
    e.status = StatusCode::BAD_REQUEST;
    e.into_response()
}

impl AuthServer {
    /// Redeems one upstream's code, stores its tokens, and goes on.
    async fn complete_leg(
        &self,
        pending: PendingAuthorization,
        code: &str,
    ) -> Result<Response, OAuthError> {
        let upstream = pending.upstream.as_str();
        let (tokens, identity) = self
            .federation
            .exchange_code(
                upstream,
                code,
                pending.upstream_verifier.expose(),
                &pending.callback_url,
                &pending.nonce,
            )
            .await
            .map_err(|e| federation_error(&e))?;
        let user = match pending.user {
            Some(u) => u,
            None => {
                if identity.subject.is_empty() {
                    return Err(OAuthError::access_denied(format!(
                        "upstream {upstream} named no subject"
                    )));
                }
                let id = self
                    .store
                    .user_id(upstream, &identity.subject)
                    .await
                    .map_err(|e| store_error(&e))?;
                UserInfo { id, name: identity.name, email: identity.email }
            }
        };
        self.vault.store(&user.id, upstream, tokens).await.map_err(|e| vault_error(&e))?;
        let mut visited = pending.visited;
        visited.push(upstream.to_string());
        tracing::debug!(user = %user.id, upstream, "upstream login complete");
        for next in &self.upstreams {
            if visited.contains(next) || self.vault.holds(&user.id, next).await {
                continue;
            }
            return self.send_to_upstream(pending.request, next, visited, Some(user)).await;
        }
        self.issue_code(pending.request, user).await
    }

    /// Ends the login: a vmcp code to the client's redirect URI.
    async fn issue_code(
        &self,
        request: ClientRequest,
        user: UserInfo,
    ) -> Result<Response, OAuthError> {
        let code = random_token();
        let record = CodeRecord {
            request: request.clone(),
            user,
            family_id: new_family_id(),
            expires_at: now_secs() + self.settings.auth_code_lifespan.as_secs(),
        };
        self.store.put_code(hash_secret(&code), record).await.map_err(|e| store_error(&e))?;
        let mut params = vec![("code", code.as_str())];
        if let Some(s) = request.state.as_deref() {
            params.push(("state", s));
        }
        params.push(("iss", self.issuer()));
        let location = with_query(&request.redirect_uri, &params)
            .ok_or_else(|| OAuthError::server_error("stored redirect URI is invalid"))?;
        tracing::info!(client_id = %request.client_id, "authorization code issued");
        Ok(redirect(&location))
    }
}

fn vault_error(e: &TokenError) -> OAuthError {
    tracing::warn!(error = %e, "upstream token vault");
    match e {
        TokenError::Reauthenticate { .. } => OAuthError::access_denied("upstream tokens refused"),
        TokenError::Unavailable { .. } => {
            OAuthError::temporarily_unavailable("upstream token storage unavailable")
        }
    }
}
