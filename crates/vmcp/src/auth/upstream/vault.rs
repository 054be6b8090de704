//! [`Vault`]: each user's upstream tokens, encrypted at rest, refreshed when a request needs
//! them.
//!
//! Invariants:
//! - Single flight per (user, upstream): while a refresh runs, every other caller for that key
//!   waits for its result; the in-flight map is a plain mutex never held across an `await`,
//!   with one entry per key being refreshed (bounded by the store). Across replicas sharing the
//!   store, a [`RefreshLease`] does the same: the flight that does not get the lease does not
//!   refresh; it polls the store (every [`VaultOptions::lease_poll`], for at most
//!   [`VaultOptions::lease_ttl`]) until the holder's new tokens are there, or the lease is free.
//!   The holder reads the entry again after taking the lease, so it never presents a refresh
//!   token another replica already rotated.
//! - A refresh runs in its own task, so a caller that gives up (client gone, request timeout)
//!   does not lose a rotated refresh token half way. The new tokens are written to the store
//!   before anyone gets the new access token, and before the flight ends.
//! - A refresh token is presented at most once unless the IdP provably did not act on it
//!   (see [`super::RefreshError`]): transient failures are retried with the same token
//!   ([`VaultOptions::refresh_attempts`], default 3, with 250 ms then 500 ms between them);
//!   a lost answer drops the grant.
//! - A refresh that ends after its entry was replaced (a new login) or dropped (logout) does
//!   not write. The check and the write are two store calls: a logout landing between them
//!   (microseconds) can leave the refreshed entry behind; closing that needs a compare-and-set
//!   in [`TokenStore`], which it does not have yet.
//! - Nothing else caches upstream tokens; no token reaches a log line or an error.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};

use super::crypto::{VaultKey, VaultKeyError};
use super::lease::{LocalLease, RefreshLease};
use super::record::Record;
use super::refresh::TokenRefresher;
use super::store::{MemoryTokenStore, StoreError, TokenStore};
use super::{TokenError, TokenSet, UpstreamTokens};
use crate::auth::identity::Secret;

/// Default number of concurrent refreshes (all users together).
pub const DEFAULT_MAX_CONCURRENT_REFRESHES: usize = 256;

/// Tunables of a [`Vault`].
#[derive(Debug, Clone)]
pub struct VaultOptions {
    /// Attempts of a refresh whose failures are transient (default 3).
    pub refresh_attempts: u32,
    /// Wait before the second attempt, doubled before each further one (default 250 ms).
    pub retry_backoff: Duration,
    /// Refreshes running at once, all keys together (default
    /// [`DEFAULT_MAX_CONCURRENT_REFRESHES`]); more wait for a slot.
    pub max_concurrent_refreshes: usize,
    /// How long a refresh lease is held at most (default 45 s: longer than three attempts at
    /// the 10 s upstream timeout with their backoff); also how long another replica waits for
    /// the holder's result before giving up with "unavailable".
    pub lease_ttl: Duration,
    /// How often a replica waiting on another's refresh looks at the store (default 100 ms).
    pub lease_poll: Duration,
}

impl Default for VaultOptions {
    fn default() -> Self {
        Self {
            refresh_attempts: 3,
            retry_backoff: Duration::from_millis(250),
            max_concurrent_refreshes: DEFAULT_MAX_CONCURRENT_REFRESHES,
            lease_ttl: Duration::from_secs(45),
            lease_poll: Duration::from_millis(100),
        }
    }
}

/// Counters since the vault was built, for metrics and status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VaultStats {
    /// Refreshes that produced new tokens.
    pub refreshed: u64,
    /// Refresh attempts that failed transiently (each retry counts).
    pub transient_failures: u64,
    /// Refreshes given up as unavailable after their attempts (the grant was kept).
    pub unavailable: u64,
    /// Refreshes refused for a reason not the grant's (the grant was kept).
    pub refused: u64,
    /// Grants found dead (`invalid_grant`, ...) and dropped.
    pub dead_grants: u64,
    /// Refreshes whose answer was lost after sending; grant dropped, never replayed.
    pub lost_responses: u64,
}

#[derive(Default)]
struct Counters {
    refreshed: AtomicU64,
    transient_failures: AtomicU64,
    unavailable: AtomicU64,
    refused: AtomicU64,
    dead_grants: AtomicU64,
    lost_responses: AtomicU64,
}

type Key = (String, String);

type Flight = Shared<BoxFuture<'static, Result<Secret, TokenError>>>;

struct Inner {
    refresher: Arc<dyn TokenRefresher>,
    store: Arc<dyn TokenStore>,
    lease: Arc<dyn RefreshLease>,
    key: VaultKey,
    options: VaultOptions,
    flights: Mutex<HashMap<Key, Flight>>,
    permits: tokio::sync::Semaphore,
    counters: Counters,
}

/// The upstream token vault. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("options", &self.inner.options)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn reauth(upstream: &str, reason: impl Into<String>) -> TokenError {
    TokenError::Reauthenticate { upstream: upstream.to_string(), reason: reason.into() }
}

fn unavailable(upstream: &str, reason: impl Into<String>) -> TokenError {
    TokenError::Unavailable { upstream: upstream.to_string(), reason: reason.into() }
}

/// Removes a flight from the map when its task ends, even by panic.
struct FlightGuard {
    inner: Arc<Inner>,
    key: Key,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.inner.flights.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
    }
}

impl Vault {
    /// A vault over `store`, sealing entries with `key`, refreshing through `refresher`
    /// (normally the [`super::Upstreams`]).
    pub fn new(
        refresher: Arc<dyn TokenRefresher>,
        store: Arc<dyn TokenStore>,
        key: VaultKey,
    ) -> Self {
        Self::with_options(refresher, store, key, VaultOptions::default())
    }

    /// [`Vault::new`] with other tunables.
    pub fn with_options(
        refresher: Arc<dyn TokenRefresher>,
        store: Arc<dyn TokenStore>,
        key: VaultKey,
        options: VaultOptions,
    ) -> Self {
        Self::shared(refresher, store, Arc::new(LocalLease), key, options)
    }

    /// A vault whose store other processes share, refreshing under `lease` (see the module
    /// doc); `key` must be the one every such process has.
    pub fn shared(
        refresher: Arc<dyn TokenRefresher>,
        store: Arc<dyn TokenStore>,
        lease: Arc<dyn RefreshLease>,
        key: VaultKey,
        options: VaultOptions,
    ) -> Self {
        let permits = tokio::sync::Semaphore::new(options.max_concurrent_refreshes.max(1));
        Self {
            inner: Arc::new(Inner {
                refresher,
                store,
                lease,
                key,
                options,
                flights: Mutex::new(HashMap::new()),
                permits,
                counters: Counters::default(),
            }),
        }
    }

    /// The in-process default: a [`MemoryTokenStore`] of default size and a random key.
    pub fn in_memory(refresher: Arc<dyn TokenRefresher>) -> Result<Self, VaultKeyError> {
        Ok(Self::new(refresher, Arc::new(MemoryTokenStore::default()), VaultKey::generate()?))
    }

    /// Counters so far.
    pub fn stats(&self) -> VaultStats {
        let c = &self.inner.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        VaultStats {
            refreshed: n(&c.refreshed),
            transient_failures: n(&c.transient_failures),
            unavailable: n(&c.unavailable),
            refused: n(&c.refused),
            dead_grants: n(&c.dead_grants),
            lost_responses: n(&c.lost_responses),
        }
    }

    async fn current(&self, user: &str, upstream: &str) -> Result<Secret, TokenError> {
        match self.inner.load(user, upstream).await? {
            None => return Err(reauth(upstream, "no upstream grant held")),
            Some(r) if !r.needs_refresh(SystemTime::now()) => return Ok(r.access()),
            Some(_) => {}
        }
        let key = (user.to_string(), upstream.to_string());
        let flight = {
            let mut flights = self.inner.flights.lock().unwrap_or_else(|e| e.into_inner());
            match flights.get(&key) {
                Some(f) => f.clone(),
                None => {
                    let guard = FlightGuard { inner: self.inner.clone(), key: key.clone() };
                    let task = tokio::spawn(async move {
                        let (user, upstream) = &guard.key;
                        guard.inner.refresh_flow(user, upstream).await
                    });
                    let up = upstream.to_string();
                    let f: Flight = async move {
                        task.await.unwrap_or_else(|_| Err(unavailable(&up, "refresh task failed")))
                    }
                    .boxed()
                    .shared();
                    flights.insert(key, f.clone());
                    f
                }
            }
        };
        flight.await
    }
}

impl Inner {
    /// The entry for (user, upstream), opened. An entry that does not open (another key,
    /// tampering) is dropped: the user logs in again.
    async fn load(&self, user: &str, upstream: &str) -> Result<Option<Record>, TokenError> {
        let blob = self
            .store
            .get(user, upstream)
            .await
            .map_err(|e| unavailable(upstream, e.to_string()))?;
        let Some(blob) = blob else { return Ok(None) };
        let record = self
            .key
            .open(user, upstream, &blob)
            .and_then(|plain| serde_json::from_slice::<Record>(&plain).ok());
        if record.is_none() {
            tracing::warn!(%user, %upstream, "upstream token entry does not decrypt; dropped");
            let _ = self.store.delete(user, upstream).await;
        }
        Ok(record)
    }

    async fn save(&self, user: &str, upstream: &str, r: &Record) -> Result<(), StoreError> {
        let plain =
            serde_json::to_vec(r).map_err(|_| StoreError::Unavailable("encoding".into()))?;
        let blob = self
            .key
            .seal(user, upstream, &plain)
            .ok_or_else(|| StoreError::Unavailable("encryption failed".into()))?;
        self.store.put(user, upstream, blob, r.useless_after()).await
    }

    /// Drops the entry if it is still the one of `generation` (a new login is left alone).
    async fn drop_grant(&self, user: &str, upstream: &str, generation: u64) {
        if let Ok(Some(r)) = self.load(user, upstream).await
            && r.generation != generation
        {
            return;
        }
        if let Err(e) = self.store.delete(user, upstream).await {
            tracing::warn!(%user, %upstream, error = %e, "could not drop a dead upstream grant");
        }
    }
}

impl UpstreamTokens for Vault {
    fn store<'a>(
        &'a self,
        user: &'a str,
        upstream: &'a str,
        tokens: TokenSet,
    ) -> BoxFuture<'a, Result<(), TokenError>> {
        Box::pin(async move {
            let r = Record::new(&tokens, SystemTime::now());
            self.inner
                .save(user, upstream, &r)
                .await
                .map_err(|e| unavailable(upstream, e.to_string()))
        })
    }

    fn access_token<'a>(
        &'a self,
        user: &'a str,
        upstream: &'a str,
    ) -> BoxFuture<'a, Result<Secret, TokenError>> {
        Box::pin(self.current(user, upstream))
    }

    fn id_token<'a>(
        &'a self,
        user: &'a str,
        upstream: &'a str,
    ) -> BoxFuture<'a, Result<Option<Secret>, TokenError>> {
        Box::pin(async move {
            // A grant that needs a new login fails here, as for the access token.
            self.current(user, upstream).await?;
            let record = self.inner.load(user, upstream).await?;
            Ok(record.and_then(|r| r.id_token).map(Secret::new))
        })
    }

    fn holds<'a>(&'a self, user: &'a str, upstream: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            match self.inner.load(user, upstream).await {
                Ok(Some(r)) => r.refresh_token.is_some() || !r.expired(SystemTime::now()),
                _ => false,
            }
        })
    }

    fn forget<'a>(&'a self, user: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Err(e) = self.inner.store.delete_user(user).await {
                tracing::warn!(%user, error = %e, "could not drop the user's upstream tokens");
            }
        })
    }
}

#[path = "vault_refresh.rs"]
mod refresh_flow;

#[cfg(test)]
#[path = "vault_tests.rs"]
mod tests;
