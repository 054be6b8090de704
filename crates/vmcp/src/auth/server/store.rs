//! What the authorization server keeps between requests, behind [`AuthStore`] (memory by
//! default, [`super::memory::MemoryAuthStore`]; a shared store for replicas comes later).
//!
//! Invariants every implementation keeps:
//! - everything expires (records carry `expires_at`, Unix seconds) and every collection is
//!   bounded; at capacity an insert fails with [`StoreError::Capacity`], it never evicts a live
//!   login, code or token family (registered clients and user mappings are the exceptions, as
//!   documented on their methods);
//! - single use is atomic: [`AuthStore::take_pending`] and [`AuthStore::take_code`] hand a record
//!   out once, [`AuthStore::rotate_refresh`] moves a family forward only from its current token;
//! - secrets are stored only as what cannot be replayed: codes and refresh tokens as SHA-256
//!   hashes (keys and `current_hash`); the upstream PKCE verifier of a pending login is the one
//!   secret kept as is, for at most the pending TTL.

use std::fmt;

use futures::future::BoxFuture;

use super::clients::ClientRecord;
use crate::auth::identity::Secret;

/// Why the store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A bound is reached; the request that hit it fails (503), nothing else does.
    #[error("{0} capacity reached")]
    Capacity(&'static str),
    /// The store could not be reached or answered nonsense.
    #[error("authorization store unavailable: {0}")]
    Unavailable(String),
}

/// Who a login resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The vmcp user id (`sub` of vmcp's tokens, key of the upstream token vault).
    pub id: String,
    /// Display name from the first upstream, if it said.
    pub name: Option<String>,
    /// Email from the first upstream, if it said.
    pub email: Option<String>,
}

/// What the client asked for at `/oauth/authorize`, carried to the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest {
    /// The client.
    pub client_id: String,
    /// The redirect URI the response goes to (as requested: a loopback port is kept).
    pub redirect_uri: String,
    /// Whether `redirect_uri` was in the request (then the token request must repeat it).
    pub redirect_uri_sent: bool,
    /// The client's `state`, returned as is.
    pub state: Option<String>,
    /// The client's PKCE S256 challenge.
    pub code_challenge: String,
    /// Scopes to grant.
    pub scopes: Vec<String>,
    /// The RFC 8707 resource (the token's `aud`).
    pub resource: Option<String>,
}

/// A login in progress: the user is at `upstream`.
#[derive(Clone)]
pub struct PendingAuthorization {
    /// The client's request.
    pub request: ClientRequest,
    /// The upstream the user was sent to.
    pub upstream: String,
    /// The redirect URI given to that upstream.
    pub callback_url: String,
    /// vmcp's PKCE verifier for that upstream.
    pub upstream_verifier: Secret,
    /// The OIDC nonce sent there.
    pub nonce: String,
    /// Upstreams already visited in this login, in order.
    pub visited: Vec<String>,
    /// The user, once the first upstream has said who it is.
    pub user: Option<UserInfo>,
    /// Unix seconds.
    pub expires_at: u64,
}

impl fmt::Debug for PendingAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAuthorization")
            .field("client_id", &self.request.client_id)
            .field("upstream", &self.upstream)
            .field("visited", &self.visited)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// An issued authorization code (stored under the SHA-256 of the code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRecord {
    /// The client's request.
    pub request: ClientRequest,
    /// The user.
    pub user: UserInfo,
    /// The refresh-token family this code starts (revoked if the code is replayed).
    pub family_id: String,
    /// Unix seconds.
    pub expires_at: u64,
}

/// What [`AuthStore::take_code`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeTake {
    /// First use: the record (the code is now spent).
    Fresh(Box<CodeRecord>),
    /// The code was used before: revoke what it issued.
    Replayed {
        /// The family the first use started.
        family_id: String,
    },
    /// Unknown or expired.
    Unknown,
}

/// One login's chain of refresh tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshFamily {
    /// Its id.
    pub family_id: String,
    /// The client it belongs to.
    pub client_id: String,
    /// The user.
    pub user: UserInfo,
    /// Scopes granted at login (a refresh may narrow the access token, never widen).
    pub scopes: Vec<String>,
    /// The resource of the login.
    pub resource: Option<String>,
    /// SHA-256 of the one usable refresh token.
    pub current_hash: String,
    /// When the current token expires (Unix seconds).
    pub expires_at: u64,
}

/// What [`AuthStore::rotate_refresh`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The presented token was current: the family now has the new one (returned updated).
    Rotated(RefreshFamily),
    /// The presented token was already rotated away: the store has revoked the family.
    Reused {
        /// The revoked family.
        family_id: String,
    },
    /// Unknown, expired, revoked, or another client's.
    Invalid,
}

/// The authorization server's state. Object safe; every method is one atomic step.
pub trait AuthStore: Send + Sync {
    /// Stores a dynamically registered client. At capacity the oldest registration older than
    /// the store's minimum age is dropped for it, else [`StoreError::Capacity`].
    fn put_client(&self, client: ClientRecord) -> BoxFuture<'_, Result<(), StoreError>>;

    /// A registered client, if known and not idle past the store's TTL.
    fn client<'a>(
        &'a self,
        client_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ClientRecord>, StoreError>>;

    /// Marks a client as used now (its idle TTL starts again).
    fn touch_client<'a>(&'a self, client_id: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Stores a pending login under its (random) upstream `state`.
    fn put_pending(
        &self,
        state: String,
        pending: PendingAuthorization,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Removes and returns the pending login for `state`, if there is an unexpired one.
    fn take_pending<'a>(
        &'a self,
        state: &'a str,
    ) -> BoxFuture<'a, Result<Option<PendingAuthorization>, StoreError>>;

    /// Stores a new code under its hash.
    fn put_code(
        &self,
        code_hash: String,
        code: CodeRecord,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Spends a code: the record on first use, [`CodeTake::Replayed`] on any later one (for as
    /// long as the store remembers used codes).
    fn take_code<'a>(&'a self, code_hash: &'a str) -> BoxFuture<'a, Result<CodeTake, StoreError>>;

    /// Starts a refresh-token family.
    fn put_family(&self, family: RefreshFamily) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The family whose *current* token has this hash, if unexpired and not revoked.
    fn family_by_token<'a>(
        &'a self,
        token_hash: &'a str,
    ) -> BoxFuture<'a, Result<Option<RefreshFamily>, StoreError>>;

    /// Replaces the family's current token `presented_hash` by `next_hash` (valid until
    /// `next_expires_at`) if `presented_hash` is current and the family is `client_id`'s. A
    /// presented token that was current earlier revokes the whole family.
    fn rotate_refresh<'a>(
        &'a self,
        presented_hash: &'a str,
        client_id: &'a str,
        next_hash: String,
        next_expires_at: u64,
    ) -> BoxFuture<'a, Result<Rotation, StoreError>>;

    /// Revokes a family: none of its tokens works again. Unknown ids are fine.
    fn revoke_family<'a>(&'a self, family_id: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The vmcp user id for this upstream identity, created (random) on first sight. ToolHive
    /// derives `sub` the same way (`UserResolver`): a stable internal id per (upstream,
    /// upstream subject), not the upstream's subject itself.
    fn user_id<'a>(
        &'a self,
        upstream: &'a str,
        subject: &'a str,
    ) -> BoxFuture<'a, Result<String, StoreError>>;
}
