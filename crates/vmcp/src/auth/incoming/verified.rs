//! Tokens already verified (a JWT's signature, an introspection answer), so that a client's next
//! request with the same token costs a hash and a cache lookup.
//!
//! Invariants: entries are keyed by the SHA-256 of the token, never by the token, and an entry
//! answers only a request presenting that very token (so the identity it returns, token
//! included, is that request's own); an entry lives no longer than the token (`exp` plus the
//! allowed clock skew) and at most the `max_ttl` its caller gives (for JWTs [`MAX_TTL`], so a
//! signing key withdrawn from the issuer's JWKS stops being honoured within that time); at most
//! [`CAPACITY`] entries. Only successful verifications are kept: a refused token is verified
//! (and refused) again each time.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use crate::auth::identity::Identity;

/// Longest time a verified JWT is trusted without verifying its signature again.
pub const MAX_TTL: Duration = Duration::from_secs(60);
/// Tokens kept at most.
pub const CAPACITY: u64 = 10_000;

pub(super) type TokenHash = [u8; 32];

#[derive(Clone)]
struct Entry {
    identity: Arc<Identity>,
    ttl: Duration,
}

struct EntryExpiry;

impl moka::Expiry<TokenHash, Entry> for EntryExpiry {
    fn expire_after_create(&self, _: &TokenHash, value: &Entry, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// A verified-token cache.
pub(super) struct Verified {
    cache: moka::sync::Cache<TokenHash, Entry>,
    skew: Duration,
}

impl Verified {
    /// An empty cache; `skew` is the clock skew allowed on `exp`.
    pub(super) fn new(skew: Duration) -> Self {
        let cache =
            moka::sync::Cache::builder().max_capacity(CAPACITY).expire_after(EntryExpiry).build();
        Self { cache, skew }
    }

    /// The key of `token`.
    pub(super) fn key(token: &str) -> TokenHash {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The identity `token` was verified to, if it was and is not expired since.
    pub(super) fn get(&self, key: &TokenHash) -> Option<Arc<Identity>> {
        let entry = self.cache.get(key)?;
        // The entry's ttl never outlives exp, but re-check with the clock anyway.
        if self.alive(&entry.identity, SystemTime::now()) {
            Some(entry.identity)
        } else {
            self.cache.invalidate(key);
            None
        }
    }

    /// Keeps a freshly verified identity until its `exp` (`without_exp` when it has none), at
    /// most `max_ttl`.
    pub(super) fn keep(
        &self,
        key: TokenHash,
        identity: Arc<Identity>,
        max_ttl: Duration,
        without_exp: Duration,
    ) {
        let ttl = match identity.expires_at {
            Some(exp) => (exp + self.skew).duration_since(SystemTime::now()).unwrap_or_default(),
            None => without_exp,
        }
        .min(max_ttl);
        if !ttl.is_zero() {
            self.cache.insert(key, Entry { identity, ttl });
        }
    }

    /// Entries held (expired ones not yet dropped included).
    pub(super) fn len(&self) -> u64 {
        self.cache.entry_count()
    }

    fn alive(&self, identity: &Identity, now: SystemTime) -> bool {
        identity.expires_at.is_none_or(|exp| exp + self.skew > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::identity::Secret;

    fn identity(expires_at: Option<SystemTime>) -> Arc<Identity> {
        Arc::new(Identity {
            issuer: "https://idp".into(),
            subject: "alice".into(),
            claims: serde_json::Map::new(),
            token: Secret::new("t"),
            expires_at,
            scopes: Vec::new(),
        })
    }

    #[test]
    fn a_verified_token_is_kept_until_it_expires_and_no_longer() {
        let v = Verified::new(Duration::ZERO);
        let (a, b) = (Verified::key("token-a"), Verified::key("token-b"));
        let soon = SystemTime::now() + Duration::from_secs(30);
        v.keep(a, identity(Some(soon)), MAX_TTL, MAX_TTL);
        assert!(v.get(&a).is_some());
        assert!(v.get(&b).is_none(), "another token is verified on its own");
        // Expired (past exp + skew): never kept, and never returned.
        let past = SystemTime::now() - Duration::from_secs(1);
        v.keep(b, identity(Some(past)), MAX_TTL, MAX_TTL);
        assert!(v.get(&b).is_none());
        let lenient = Verified::new(Duration::from_secs(60));
        lenient.keep(b, identity(Some(past)), MAX_TTL, MAX_TTL);
        assert!(lenient.get(&b).is_some(), "within the allowed skew");
        assert!(!lenient.alive(&identity(Some(past)), past + Duration::from_secs(61)));
    }
}
