//! The embedded OAuth 2.1 authorization server, federated to the upstream IdPs.
//!
//! An MCP client registers (RFC 7591, or names a client ID metadata document), sends the user to
//! `/oauth/authorize` with PKCE (S256 only); vmcp sends the user on to the first upstream IdP
//! ([`Federation`]) with its own PKCE, state and nonce, and on `/oauth/callback` redeems the
//! upstream code, stores the upstream tokens in the vault ([`UpstreamTokens`]) under the vmcp
//! user id, visits each further upstream the vault holds nothing usable for, and finally
//! redirects to the client with a vmcp authorization code (with `state` and `iss`, RFC 9207).
//! `/oauth/token` redeems it (PKCE checked) for a vmcp access token (a JWT, RFC 9068) and a
//! rotating refresh token. [`AuthServer::verify_access_token`] checks vmcp's tokens with the
//! local keys.
//!
//! Routes (paths under the issuer's path; ToolHive's `handlers/handler.go`):
//! - `GET /.well-known/oauth-authorization-server[/{*}]` (RFC 8414, also path-inserted),
//!   `GET /.well-known/openid-configuration[/{*}]`, and `GET {issuer path}/.well-known/openid-configuration`
//! - `GET /.well-known/jwks.json`
//! - `GET /oauth/authorize`, `GET /oauth/callback` (or the paths of the configured callback
//!   URLs), `POST /oauth/token`, `POST /oauth/register`
//!
//! Invariants: the server keeps no user's credential beyond the store's records (hashed codes
//! and refresh tokens, a pending login's upstream PKCE verifier until it completes or expires);
//! upstream tokens go straight to the vault. Every collection is bounded ([`Bounds`]); every
//! POST body is limited; the one outbound call of its own (client metadata documents) has a
//! deadline and a size cap. Errors before the client's redirect URI is known to be registered
//! are answered directly (400), never by a redirect.
//!
//! Integration (not done here): build with [`AuthServer::new`] (a [`MemoryAuthStore`], and
//! [`cimd_http_client`] for `http`), merge [`AuthServer::router`] into the main router after
//! the Host/Origin guard layer, and turn [`VerifiedToken`]s into identities with
//! [`VerifiedToken::into_identity`]. Per-IP registration limits need the TCP peer as
//! `axum::extract::ConnectInfo<SocketAddr>` in each request's extensions; without it all
//! registrations share one bucket (ToolHive's behaviour).

mod authorize;
mod callback;
pub mod cimd;
pub mod clients;
pub mod jwt;
pub mod keys;
pub mod memory;
pub mod metadata;
pub mod oauth;
pub mod pem;
pub mod ratelimit;
mod registration;
pub mod settings;
pub mod store;
mod token;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use jsonwebtoken::jwk::JwkSet;
use reqwest::Url;
use serde_json::Value;

pub use cimd::cimd_http_client;
pub use clients::{ClientRecord, ClientSource};
pub use jwt::{VerifiedToken, VerifyError};
pub use memory::MemoryAuthStore;
pub use settings::{Bounds, CimdSettings, Settings, StaticClient};
pub use store::AuthStore;

use crate::auth::upstream::{Federation, UpstreamTokens};
use keys::{KeyError, KeySet};
use metadata::{
    AUTHORIZE_PATH, JWKS_PATH, OAUTH_METADATA, OIDC_METADATA, REGISTER_PATH, TOKEN_PATH,
};
use oauth::now_secs;

/// Why the authorization server could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuthServerError {
    /// The settings are inconsistent.
    #[error("authorization server settings: {0}")]
    Settings(String),
    /// A signing key is unusable.
    #[error("authorization server keys: {0}")]
    Keys(#[from] KeyError),
    /// The federation names no upstream, or one twice.
    #[error("authorization server upstreams: {0}")]
    Upstreams(String),
}

/// The authorization server. Shared by `Arc`; its router and verifier use the same keys.
pub struct AuthServer {
    settings: Settings,
    keys: KeySet,
    federation: Arc<dyn Federation>,
    vault: Arc<dyn UpstreamTokens>,
    store: Arc<dyn AuthStore>,
    cimd: Option<cimd::Cimd>,
    limiter: ratelimit::RateLimiter,
    upstreams: Vec<String>,
    static_clients: HashMap<String, ClientRecord>,
    oauth_doc: Value,
    oidc_doc: Value,
    jwks_doc: Value,
}

impl std::fmt::Debug for AuthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthServer")
            .field("issuer", &self.settings.issuer)
            .field("upstreams", &self.upstreams)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// How a client lookup failed.
pub(crate) enum LookupError {
    /// The store failed.
    Store(store::StoreError),
    /// A metadata document could not be used.
    Document(cimd::CimdError),
}

impl AuthServer {
    /// Checks the settings, loads (or generates) the keys and builds the server. `http` fetches
    /// client ID metadata documents: pass [`cimd_http_client`] (no redirects, public addresses
    /// only) unless tests need otherwise.
    pub fn new(
        settings: Settings,
        federation: Arc<dyn Federation>,
        vault: Arc<dyn UpstreamTokens>,
        store: Arc<dyn AuthStore>,
        http: reqwest::Client,
    ) -> Result<Arc<AuthServer>, AuthServerError> {
        settings.validate().map_err(AuthServerError::Settings)?;
        let upstreams = federation.upstreams();
        if upstreams.is_empty() {
            return Err(AuthServerError::Upstreams("at least one upstream is required".into()));
        }
        let mut seen = BTreeSet::new();
        for u in &upstreams {
            if !seen.insert(u) {
                return Err(AuthServerError::Upstreams(format!("upstream {u:?} listed twice")));
            }
        }
        let keys = KeySet::load(settings.signing_key.as_ref(), &settings.fallback_signing_keys)?;
        if keys.is_ephemeral() {
            tracing::warn!(
                kid = keys.current().kid(),
                "no signing key configured: generated an ephemeral ES256 key; vmcp's access \
                 tokens become invalid when this process ends"
            );
        }
        let supported = settings.effective_scopes();
        let mut static_clients = HashMap::new();
        for c in &settings.clients {
            let scopes = if c.scopes.is_empty() { supported.clone() } else { c.scopes.clone() };
            if let Some(s) = scopes.iter().find(|s| !supported.contains(s)) {
                return Err(AuthServerError::Settings(format!(
                    "client {:?}: scope {s:?} is not in scopes_supported",
                    c.client_id
                )));
            }
            static_clients.insert(
                c.client_id.clone(),
                ClientRecord {
                    client_id: c.client_id.clone(),
                    redirect_uris: c.redirect_uris.clone(),
                    scopes,
                    client_name: c.client_name.clone(),
                    grant_types: vec!["authorization_code".into(), "refresh_token".into()],
                    issued_at: now_secs(),
                    source: ClientSource::Configured,
                },
            );
        }
        let b = &settings.bounds;
        let limiter = ratelimit::RateLimiter::new(
            b.registration_burst,
            b.registration_refill_interval,
            b.max_rate_limited_ips,
        );
        let cimd = settings.cimd.enabled.then(|| cimd::Cimd::new(&settings, http));
        let jwks_doc = serde_json::to_value(keys.jwks())
            .map_err(|e| AuthServerError::Settings(format!("JWKS: {e}")))?;
        let server = AuthServer {
            oauth_doc: metadata::oauth_metadata(&settings),
            oidc_doc: metadata::oidc_metadata(&settings, &keys),
            jwks_doc,
            settings,
            keys,
            federation,
            vault,
            store,
            cimd,
            limiter,
            upstreams,
            static_clients,
        };
        server.routes().map_err(AuthServerError::Settings)?;
        Ok(Arc::new(server))
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// The public keys (current first), as served at the JWKS endpoint.
    pub fn jwks(&self) -> JwkSet {
        self.keys.jwks()
    }

    /// Verifies one of vmcp's access tokens for `audience` with the local keys: signature (any
    /// current or fallback key), `typ`, issuer, audience, `exp` and `nbf` (30 s skew).
    pub fn verify_access_token(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<VerifiedToken, VerifyError> {
        jwt::verify(&self.keys, &self.settings.issuer, token, audience)
    }

    /// The routes, with their own state: merge into the main router, outside the Host/Origin
    /// guard (browsers arrive here from the IdP's and the client's origins).
    ///
    /// The endpoints scripts call (discovery, JWKS, token, registration) answer CORS requests
    /// from any origin (no cookies are involved), so browser-based MCP clients can use them;
    /// the endpoints a browser navigates to (authorize, callback) do not need it. Every body is
    /// limited to `bounds.max_body_bytes` (413 beyond).
    pub fn router(self: &Arc<Self>) -> Router {
        let (mut api, mut pages) = (Router::new(), Router::new());
        for (path, kind) in self.routes().unwrap_or_default() {
            match kind {
                Route::OAuthMetadata => api = api.route(&path, get(oauth_metadata)),
                Route::OidcMetadata => api = api.route(&path, get(oidc_metadata)),
                Route::Jwks => api = api.route(&path, get(jwks)),
                Route::Token => api = api.route(&path, post(token::handle)),
                Route::Register => api = api.route(&path, post(registration::handle)),
                Route::Authorize => pages = pages.route(&path, get(authorize::handle)),
                Route::Callback => pages = pages.route(&path, get(callback::handle)),
            }
        }
        api.layer(axum::middleware::from_fn(metadata::cors))
            .merge(pages)
            .layer(DefaultBodyLimit::max(self.settings.bounds.max_body_bytes))
            .with_state(self.clone())
    }

    /// Every (path, handler) pair; fails if two would collide.
    fn routes(&self) -> Result<Vec<(String, Route)>, String> {
        let base = path_of(&self.settings.issuer)?;
        let mut routes = vec![
            (OAUTH_METADATA.to_string(), Route::OAuthMetadata),
            (format!("{OAUTH_METADATA}/{{*rest}}"), Route::OAuthMetadata),
            (OIDC_METADATA.to_string(), Route::OidcMetadata),
            (format!("{OIDC_METADATA}/{{*rest}}"), Route::OidcMetadata),
            (format!("{base}{JWKS_PATH}"), Route::Jwks),
            (format!("{base}{AUTHORIZE_PATH}"), Route::Authorize),
            (format!("{base}{TOKEN_PATH}"), Route::Token),
            (format!("{base}{REGISTER_PATH}"), Route::Register),
        ];
        if !base.is_empty() {
            routes.push((format!("{base}{OIDC_METADATA}"), Route::OidcMetadata));
        }
        let mut callbacks = vec![self.settings.callback_for("")];
        callbacks.extend(self.upstreams.iter().map(|u| self.settings.callback_for(u)));
        for c in callbacks {
            let path = path_of(&c)?;
            let path = if path.is_empty() { "/".to_string() } else { path };
            match routes.iter().find(|(p, _)| *p == path) {
                Some((_, Route::Callback)) => {}
                Some(_) => {
                    return Err(format!("callback URL {c:?} collides with another endpoint"));
                }
                None => routes.push((path, Route::Callback)),
            }
        }
        Ok(routes)
    }

    /// A client by id: configured, described by a metadata document, or registered.
    pub(crate) async fn lookup_client(
        &self,
        client_id: &str,
    ) -> Result<Option<ClientRecord>, LookupError> {
        if let Some(c) = self.static_clients.get(client_id) {
            return Ok(Some(c.clone()));
        }
        if let Some(cimd) = &self.cimd
            && cimd::is_document_url(client_id)
        {
            return cimd.client(client_id).await.map(Some).map_err(LookupError::Document);
        }
        self.store.client(client_id).await.map_err(LookupError::Store)
    }
}

#[derive(Debug, Clone, Copy)]
enum Route {
    OAuthMetadata,
    OidcMetadata,
    Jwks,
    Authorize,
    Callback,
    Token,
    Register,
}

/// The path of a URL without its trailing slash ("" for the root).
fn path_of(url: &str) -> Result<String, String> {
    let u = Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
    Ok(u.path().trim_end_matches('/').to_string())
}

type Srv = axum::extract::State<Arc<AuthServer>>;

async fn oauth_metadata(srv: Srv) -> axum::response::Response {
    metadata::cacheable_json(&srv.oauth_doc)
}

async fn oidc_metadata(srv: Srv) -> axum::response::Response {
    metadata::cacheable_json(&srv.oidc_doc)
}

async fn jwks(srv: Srv) -> axum::response::Response {
    metadata::cacheable_json(&srv.jwks_doc)
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
