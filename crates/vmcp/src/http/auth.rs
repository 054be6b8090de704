//! Incoming authentication at the front door: every request to `/mcp` is turned into a [`Caller`]
//! here (or refused with 401/403 and `WWW-Authenticate`), and the RFC 9728 protected resource
//! metadata is served.
//!
//! Invariant: the caller is built from this request's own credentials; nothing is looked up from
//! a session or earlier request.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use std::sync::Arc;

use crate::auth::Caller;
use crate::auth::current::CurrentIdentities;
use crate::auth::identity::Secret;
use crate::auth::incoming::{
    AuthFailure, OidcAuthenticator, protected_resource_metadata, www_authenticate_with_scopes,
};
use crate::auth::server::AuthServer;
use crate::config::{IncomingAuthConfig, IncomingAuthKind, OidcConfig};

/// How callers are authenticated.
pub enum Gatekeeper {
    /// Everyone is anonymous.
    Anonymous,
    /// Bearer tokens, checked against the issuer.
    Oidc {
        /// The validator.
        auth: OidcAuthenticator,
        /// Its configuration, for the metadata document.
        config: Box<OidcConfig>,
        /// Where the metadata document is (RFC 9728 §3.1), when the resource is a URL; else it
        /// is derived from each request's `Host`.
        metadata_url: Option<String>,
        /// vmcp's own authorization server, when `oidc.issuer` is its issuer: tokens are
        /// checked with its local keys, without an HTTP round trip to itself.
        local: Option<Arc<AuthServer>>,
    },
}

/// The RFC 9728 metadata URL of a resource URL: the well-known path inserted between host and
/// path. `None` when the resource is not an http(s) URL (an audience like `vmcp`).
pub fn metadata_url(resource: &str) -> Option<String> {
    let url =
        reqwest::Url::parse(resource).ok().filter(|u| matches!(u.scheme(), "http" | "https"))?;
    let path = url.path().trim_end_matches('/');
    let origin = url.origin().ascii_serialization();
    Some(format!("{origin}/.well-known/oauth-protected-resource{path}"))
}

/// The metadata URL of this gateway's `/mcp` as the client reached it.
fn metadata_url_from_host(headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
    format!("http://{host}/.well-known/oauth-protected-resource/mcp")
}

impl Gatekeeper {
    /// Builds the gatekeeper for `incomingAuth`.
    pub fn from_config(
        cfg: &IncomingAuthConfig,
        http: reqwest::Client,
        local: Option<Arc<AuthServer>>,
    ) -> Result<Self, String> {
        match (cfg.kind, &cfg.oidc) {
            (IncomingAuthKind::Anonymous, _) => Ok(Gatekeeper::Anonymous),
            (IncomingAuthKind::Local, _) => {
                Err(format!("incomingAuth.type: {}", crate::config::auth::LOCAL_REFUSED))
            }
            (IncomingAuthKind::Oidc, None) => {
                Err("incomingAuth.type is oidc but incomingAuth.oidc is missing".into())
            }
            (IncomingAuthKind::Oidc, Some(oidc)) => {
                // Incoming auth's own client: ToolHive's address and scheme rules, extra roots.
                let _ = http;
                let idp = crate::auth::incoming::idp_client(oidc).map_err(|e| e.to_string())?;
                let auth = OidcAuthenticator::new(oidc, idp).map_err(|e| e.to_string())?;
                let metadata_url = metadata_url(auth.resource());
                let local = local.filter(|s| {
                    s.issuer().trim_end_matches('/') == oidc.issuer.trim().trim_end_matches('/')
                });
                Ok(Gatekeeper::Oidc { auth, config: Box::new(oidc.clone()), metadata_url, local })
            }
        }
    }

    /// Whether clients must authenticate.
    pub fn is_anonymous(&self) -> bool {
        matches!(self, Gatekeeper::Anonymous)
    }

    /// The caller of a request, or the response refusing it.
    pub async fn caller(
        &self,
        headers: &HeaderMap,
        current: &CurrentIdentities,
    ) -> Result<Caller, Response> {
        let Gatekeeper::Oidc { auth, metadata_url, local, .. } = self else {
            return Ok(Caller::Anonymous);
        };
        let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let outcome = match local {
            Some(server) => auth.authenticate_with(authorization, |token| {
                server
                    .verify_access_token(token, auth.audience())
                    .map(|v| v.into_identity(server.issuer(), Secret::new(token)))
                    .map_err(|e| e.to_string())
            }),
            None => auth.authenticate(authorization).await,
        };
        match outcome {
            Ok(identity) => {
                current.record(&identity);
                Ok(Caller::User(identity))
            }
            Err(failure) => {
                let url = metadata_url.clone().unwrap_or_else(|| metadata_url_from_host(headers));
                Err(refusal(&failure, &url, auth.advertised_scopes()))
            }
        }
    }

    /// The metadata document, when authentication is on.
    pub fn metadata(&self) -> Option<serde_json::Value> {
        match self {
            Gatekeeper::Anonymous => None,
            Gatekeeper::Oidc { config, .. } => Some(protected_resource_metadata(config)),
        }
    }

    /// The `WWW-Authenticate` challenge for a backend that needs the caller to log in again.
    pub fn reauthenticate(&self, headers: &HeaderMap, reason: &str) -> Option<HeaderValue> {
        let Gatekeeper::Oidc { auth, metadata_url, .. } = self else { return None };
        let url = metadata_url.clone().unwrap_or_else(|| metadata_url_from_host(headers));
        HeaderValue::from_str(&www_authenticate_with_scopes(
            &AuthFailure::InvalidToken(reason.to_owned()),
            &url,
            auth.advertised_scopes(),
        ))
        .ok()
    }
}

fn refusal(failure: &AuthFailure, metadata_url: &str, scopes: &[String]) -> Response {
    let status = match failure {
        AuthFailure::Missing | AuthFailure::InvalidToken(_) => StatusCode::UNAUTHORIZED,
        AuthFailure::InsufficientScope { .. } => StatusCode::FORBIDDEN,
        AuthFailure::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let message = match failure {
        AuthFailure::Missing => "authentication required".to_owned(),
        AuthFailure::InvalidToken(m) => format!("invalid token: {m}"),
        AuthFailure::InsufficientScope { required } => {
            format!("insufficient scope: needs {}", required.join(" "))
        }
        AuthFailure::Unavailable(m) => format!("cannot verify tokens right now: {m}"),
    };
    let mut resp = (status, axum::Json(serde_json::json!({
        "jsonrpc": "2.0", "id": null,
        "error": { "code": crate::protocol::jsonrpc::code::INVALID_REQUEST, "message": message },
    })))
        .into_response();
    if let Ok(v) =
        HeaderValue::from_str(&www_authenticate_with_scopes(failure, metadata_url, scopes))
    {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}
