//! The refresh lease: across replicas sharing one token store, a refresh of (user, upstream)
//! started on one replica is not repeated on another.
//!
//! The vault's in-process single flight covers one process; [`RefreshLease`] covers the others:
//! the replica that takes the lease refreshes and stores the new tokens, the others wait
//! (bounded: the lease's TTL) and read the result from the store. The memory default
//! ([`LocalLease`]) is always granted: one process, nothing to coordinate. The Redis one is
//! `crate::store::tokens::RedisRefreshLease` (`SET NX PX`, released by compare-and-delete).
//!
//! The TTL bounds how long a replica that died mid-refresh blocks the others; it must exceed
//! the longest refresh (attempts × the upstream timeout), see
//! [`super::VaultOptions::lease_ttl`].

use std::time::Duration;

use futures::future::BoxFuture;

use super::store::StoreError;

/// Proof of holding a lease: a random id only its holder knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder(pub String);

impl LeaseHolder {
    /// A fresh random holder id.
    pub fn random() -> Self {
        use rand::RngCore as _;
        let mut b = [0u8; 16];
        rand::rng().fill_bytes(&mut b);
        Self(b.iter().map(|x| format!("{x:02x}")).collect())
    }
}

/// A lease per (user, upstream) on running its refresh.
pub trait RefreshLease: Send + Sync {
    /// Takes the lease for `ttl` if nobody holds it: `Some(holder)`, else `None`.
    fn try_acquire<'a>(
        &'a self,
        user: &'a str,
        upstream: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<LeaseHolder>, StoreError>>;

    /// Gives the lease back if `holder` still holds it (an expired lease taken by another
    /// replica is left alone).
    fn release<'a>(
        &'a self,
        user: &'a str,
        upstream: &'a str,
        holder: &'a LeaseHolder,
    ) -> BoxFuture<'a, ()>;
}

/// The lease of a vault no other process shares: always granted.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalLease;

impl RefreshLease for LocalLease {
    fn try_acquire<'a>(
        &'a self,
        _user: &'a str,
        _upstream: &'a str,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<LeaseHolder>, StoreError>> {
        Box::pin(async { Ok(Some(LeaseHolder(String::new()))) })
    }

    fn release<'a>(
        &'a self,
        _user: &'a str,
        _upstream: &'a str,
        _holder: &'a LeaseHolder,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}
