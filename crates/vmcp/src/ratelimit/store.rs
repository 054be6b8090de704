//! Where token buckets live: the [`RateLimitStore`] trait, with an in-memory implementation
//! ([`super::memory::MemoryStore`]); a Redis one, shared by replicas, comes with the shared
//! session store.
//!
//! A store takes one token from *every* bucket a call needs, or from none: a call refused by
//! its per-tool bucket must not drain the shared one (ToolHive's `ConsumeAll` does the same in
//! one Lua script, which is how the Redis store will keep it atomic).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::auth::Binding;

/// A token bucket: `max_tokens` at most, refilled evenly at `max_tokens / refill_period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Capacity (at least 1).
    pub max_tokens: u32,
    /// Time to refill an empty bucket (non-zero).
    pub refill_period: Duration,
}

impl Bucket {
    /// Tokens added per second.
    pub fn rate(&self) -> f64 {
        f64::from(self.max_tokens) / self.refill_period.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// Which bucket: keys never hold a credential, only names and principals' bindings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// `rateLimiting.shared`.
    Shared,
    /// `rateLimiting.tools[name].shared`.
    SharedTool(Arc<str>),
    /// `rateLimiting.perUser`, for this principal.
    User(Binding),
    /// `rateLimiting.tools[name].perUser`, for this principal.
    UserTool(Arc<str>, Binding),
}

/// One bucket a call needs a token from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Which bucket.
    pub key: Key,
    /// Its size and rate.
    pub bucket: Bucket,
}

/// What a store decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A token was taken from every bucket.
    Allowed,
    /// No token was taken: the bucket at `index` (the first one short) is empty.
    Limited {
        /// Index into the checks of the first bucket without a token.
        index: usize,
        /// When every refusing bucket will have a token again.
        retry_after: Duration,
    },
}

/// The store could not decide (a shared store that is unreachable); the caller fails open.
#[derive(Debug, thiserror::Error)]
#[error("rate limit store unavailable: {0}")]
pub struct StoreError(pub String);

/// Token buckets, keyed.
pub trait RateLimitStore: Send + Sync {
    /// Takes one token from each bucket of `checks`, or none if any is empty.
    fn consume<'a>(&'a self, checks: &'a [Check]) -> BoxFuture<'a, Result<Decision, StoreError>>;
}
