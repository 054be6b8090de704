//! Upstream identity providers and the upstream token vault: the contract between the embedded
//! authorization server (which sends users to an upstream IdP and receives their tokens) and the
//! outgoing strategies (which put a user's current upstream access token on backend requests).
//!
//! Invariants: an upstream token is looked up for one user and one upstream at the moment a
//! request needs it, refreshed there if it is about to expire; nothing outside the vault keeps a
//! copy. Every type here that holds a token redacts it in `Debug`.
//!
//! Implementations: [`Upstreams`] (the configured IdPs, built from [`ProviderSettings`]) is the
//! [`Federation`] and the [`TokenRefresher`]; [`Vault`] (over a [`TokenStore`], sealing entries
//! with a [`VaultKey`]) is the [`UpstreamTokens`].
//!
//! ```text
//! settings ──▶ Upstreams::new ──┬─▶ Federation (authorization server: login)
//!                               └─▶ TokenRefresher ──▶ Vault ──▶ UpstreamTokens (AS: store,
//!                                                                 strategies: access_token)
//! ```

mod crypto;
mod http;
mod identity;
mod lease;
mod oidc;
mod record;
mod refresh;
mod settings;
mod store;
mod token_response;
mod upstreams;
mod vault;

pub use crypto::{KEY_LEN, VaultKey, VaultKeyError};
pub use http::{DEFAULT_UPSTREAM_TIMEOUT, MAX_UPSTREAM_BODY};
pub use lease::{LeaseHolder, LocalLease, RefreshLease};
pub use record::{MAX_REFRESH_MARGIN, MIN_REFRESH_MARGIN, refresh_margin};
pub use refresh::{DEAD_GRANT_ERRORS, RefreshError, TokenRefresher};
pub use settings::{
    ClientAuthMethod, DEFAULT_OIDC_SCOPES, FieldMapping, IdentityFromToken, ProviderKind,
    ProviderSettings, RESERVED_AUTHORIZATION_PARAMS, SettingsError, TokenResponseMapping, UserInfo,
    UserInfoMethod,
};
pub use store::{DEFAULT_MAX_ENTRIES, MemoryTokenStore, StoreError, TokenStore};
pub use upstreams::{SYNTHESIZED_SUBJECT_PREFIX, Upstreams};
pub use vault::{DEFAULT_MAX_CONCURRENT_REFRESHES, Vault, VaultOptions, VaultStats};

use std::fmt;
use std::time::SystemTime;

use futures::future::BoxFuture;

use super::identity::Secret;

/// Tokens an upstream IdP issued to one user.
#[derive(Clone)]
pub struct TokenSet {
    /// The access token backends receive.
    pub access_token: Secret,
    /// The refresh token, if the IdP gave one.
    pub refresh_token: Option<Secret>,
    /// The OIDC ID token, if any.
    pub id_token: Option<Secret>,
    /// When `access_token` expires, if the IdP said.
    pub expires_at: Option<SystemTime>,
    /// Granted scopes (space separated), if the IdP said.
    pub scope: Option<String>,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("refresh_token", &self.refresh_token.is_some())
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Who an upstream IdP says the user is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamIdentity {
    /// The upstream's stable subject identifier.
    pub subject: String,
    /// Display name, if known.
    pub name: Option<String>,
    /// Email, if known.
    pub email: Option<String>,
}

/// What the authorization server asks an upstream to do when it sends a user there.
#[derive(Debug, Clone, Copy)]
pub struct AuthorizationRequest<'a> {
    /// vmcp's callback URL registered at the upstream.
    pub redirect_uri: &'a str,
    /// Opaque state vmcp checks on the callback.
    pub state: &'a str,
    /// PKCE S256 challenge of vmcp's own verifier (vmcp is the upstream's client).
    pub code_challenge: &'a str,
    /// OIDC nonce (ignored by plain OAuth 2.0 upstreams).
    pub nonce: &'a str,
}

/// Why talking to an upstream IdP failed. Messages never contain a token or secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FederationError {
    /// No upstream of that name is configured.
    #[error("no upstream identity provider named {0:?}")]
    UnknownUpstream(String),
    /// The upstream refused (bad code, invalid client, bad ID token, ...).
    #[error("upstream {upstream:?} refused: {reason}")]
    Refused {
        /// Upstream name.
        upstream: String,
        /// What it said, without secrets.
        reason: String,
    },
    /// The upstream could not be reached or answered nonsense.
    #[error("upstream {upstream:?} unavailable: {reason}")]
    Unavailable {
        /// Upstream name.
        upstream: String,
        /// What went wrong.
        reason: String,
    },
}

/// Why a user's current upstream access token cannot be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// The user must log in again (no grant held, or the refresh token is invalid/revoked): the
    /// client request gets 401 with `WWW-Authenticate`.
    #[error("the user must log in to upstream {upstream:?} again: {reason}")]
    Reauthenticate {
        /// Upstream name.
        upstream: String,
        /// Why.
        reason: String,
    },
    /// The upstream or the store failed even after retries: 503, the user stays logged in.
    #[error("upstream {upstream:?} tokens unavailable: {reason}")]
    Unavailable {
        /// Upstream name.
        upstream: String,
        /// Why.
        reason: String,
    },
}

/// The upstream IdPs, as the authorization server uses them during a login.
pub trait Federation: Send + Sync {
    /// Configured upstream names, in configuration order.
    fn upstreams(&self) -> Vec<String>;

    /// The URL of `upstream`'s authorization endpoint to send the user's browser to.
    fn authorization_url<'a>(
        &'a self,
        upstream: &'a str,
        request: AuthorizationRequest<'a>,
    ) -> BoxFuture<'a, Result<String, FederationError>>;

    /// Redeems an authorization code from `upstream`'s callback (with vmcp's PKCE verifier) and
    /// says who the tokens belong to. Stores nothing.
    fn exchange_code<'a>(
        &'a self,
        upstream: &'a str,
        code: &'a str,
        code_verifier: &'a str,
        redirect_uri: &'a str,
        nonce: &'a str,
    ) -> BoxFuture<'a, Result<(TokenSet, UpstreamIdentity), FederationError>>;
}

/// The upstream token vault, keyed by (vmcp user id, upstream name). The vmcp user id is the
/// `sub` of the tokens vmcp's authorization server issues.
pub trait UpstreamTokens: Send + Sync {
    /// Stores (replaces) `user`'s tokens for `upstream`.
    fn store<'a>(
        &'a self,
        user: &'a str,
        upstream: &'a str,
        tokens: TokenSet,
    ) -> BoxFuture<'a, Result<(), TokenError>>;

    /// `user`'s access token for `upstream` as it is now: refreshed first when it expires soon.
    fn access_token<'a>(
        &'a self,
        user: &'a str,
        upstream: &'a str,
    ) -> BoxFuture<'a, Result<Secret, TokenError>>;

    /// `user`'s OIDC ID token from `upstream` (the latest: a refresh may rotate it), after
    /// refreshing as [`UpstreamTokens::access_token`] does; `None` when the upstream issued none.
    /// It may have expired: whoever presents it must handle a refusal. The default holds none.
    fn id_token<'a>(
        &'a self,
        user: &'a str,
        upstream: &'a str,
    ) -> BoxFuture<'a, Result<Option<Secret>, TokenError>> {
        let _ = (user, upstream);
        Box::pin(async { Ok(None) })
    }

    /// Whether a grant usable without a new login is held (an unexpired access token or a
    /// refresh token not known to be dead), so a login can skip that upstream.
    fn holds<'a>(&'a self, user: &'a str, upstream: &'a str) -> BoxFuture<'a, bool>;

    /// Drops every token of `user` (logout, or a refresh token found revoked).
    fn forget<'a>(&'a self, user: &'a str) -> BoxFuture<'a, ()>;
}
