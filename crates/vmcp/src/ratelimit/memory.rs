//! Token buckets in this process's memory.
//!
//! Each bucket is its token count and the instant it was last updated; it is refilled lazily
//! when a call needs it, as ToolHive's Redis script does (`min(max, tokens + elapsed * rate)`).
//!
//! Bound: at most `max_keys` buckets ([`DEFAULT_MAX_KEYS`]). A bucket left alone for its whole
//! refill period is full again, which is exactly what a missing bucket means, so such buckets
//! are dropped first when room is needed, at no cost to accuracy. If every bucket is still
//! refilling (more active principals than `max_keys`), the one updated longest ago is dropped:
//! its principal gets a full bucket back early, which errs on letting calls through.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use super::store::{Bucket, Check, Decision, Key, RateLimitStore, StoreError};

/// Default bound on buckets held: about 6 MiB at most (each ~100 bytes with its key).
pub const DEFAULT_MAX_KEYS: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct State {
    tokens: f64,
    last: Instant,
    bucket: Bucket,
}

impl State {
    /// Tokens at `now`.
    fn refilled(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + elapsed * self.bucket.rate()).min(f64::from(self.bucket.max_tokens))
    }

    /// Full again at `now`: the same as absent.
    fn idle(&self, now: Instant) -> bool {
        self.refilled(now) >= f64::from(self.bucket.max_tokens)
    }
}

/// In-memory [`RateLimitStore`].
pub struct MemoryStore {
    max_keys: usize,
    buckets: Mutex<HashMap<Key, State>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new(DEFAULT_MAX_KEYS)
    }
}

impl MemoryStore {
    /// A store holding at most `max_keys` buckets (at least 1).
    pub fn new(max_keys: usize) -> MemoryStore {
        MemoryStore { max_keys: max_keys.max(1), buckets: Mutex::new(HashMap::new()) }
    }

    /// [`RateLimitStore::consume`] at a given instant (tests drive the clock).
    pub fn consume_at(&self, checks: &[Check], now: Instant) -> Decision {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let tokens: Vec<f64> = checks
            .iter()
            .map(|c| match map.get(&c.key) {
                // A bucket whose configuration changed starts over.
                Some(s) if s.bucket == c.bucket => s.refilled(now),
                _ => f64::from(c.bucket.max_tokens),
            })
            .collect();
        let mut refused = None;
        let mut wait = Duration::ZERO;
        for (i, (c, t)) in checks.iter().zip(&tokens).enumerate() {
            if *t < 1.0 {
                refused.get_or_insert(i);
                wait = wait.max(Duration::from_secs_f64((1.0 - t) / c.bucket.rate()));
            }
        }
        if let Some(index) = refused {
            // Nothing taken; buckets that exist keep refilling from where they are.
            return Decision::Limited { index, retry_after: wait.max(Duration::from_millis(1)) };
        }
        for (c, t) in checks.iter().zip(tokens) {
            let state = State { tokens: t - 1.0, last: now, bucket: c.bucket };
            if let Some(s) = map.get_mut(&c.key) {
                *s = state;
                continue;
            }
            if map.len() >= self.max_keys {
                make_room(&mut map, now);
            }
            map.insert(c.key.clone(), state);
        }
        Decision::Allowed
    }
}

/// Drops full buckets; if none was, the one updated longest ago.
fn make_room(map: &mut HashMap<Key, State>, now: Instant) {
    let before = map.len();
    map.retain(|_, s| !s.idle(now));
    if map.len() < before {
        return;
    }
    if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last).map(|(k, _)| k.clone()) {
        map.remove(&oldest);
    }
}

impl RateLimitStore for MemoryStore {
    fn consume<'a>(&'a self, checks: &'a [Check]) -> BoxFuture<'a, Result<Decision, StoreError>> {
        let decision = self.consume_at(checks, Instant::now());
        Box::pin(async move { Ok(decision) })
    }
}

impl MemoryStore {
    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.buckets.lock().map(|m| m.len()).unwrap_or_default()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::auth::Binding;

    fn bucket(max: u32, secs: u64) -> Bucket {
        Bucket { max_tokens: max, refill_period: Duration::from_secs(secs) }
    }

    fn user(sub: &str) -> Binding {
        Binding::Principal { issuer: "https://idp".into(), subject: sub.into() }
    }

    fn check(key: Key, b: Bucket) -> Check {
        Check { key, bucket: b }
    }

    #[test]
    fn a_burst_drains_the_bucket_and_time_refills_it() {
        let s = MemoryStore::default();
        let t0 = Instant::now();
        // 3 tokens per 3 s: one per second.
        let c = [check(Key::Shared, bucket(3, 3))];
        for _ in 0..3 {
            assert_eq!(s.consume_at(&c, t0), Decision::Allowed);
        }
        let Decision::Limited { index: 0, retry_after } = s.consume_at(&c, t0) else {
            panic!("allowed over the burst")
        };
        assert_eq!(retry_after, Duration::from_secs(1));
        // Half a token later: still refused, half a second to wait.
        let t = t0 + Duration::from_millis(500);
        assert_eq!(
            s.consume_at(&c, t),
            Decision::Limited { index: 0, retry_after: Duration::from_millis(500) }
        );
        assert_eq!(s.consume_at(&c, t0 + Duration::from_secs(1)), Decision::Allowed);
        // Never more than the capacity, however long it waited.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(s.consume_at(&c, later), Decision::Allowed);
        }
        assert!(matches!(s.consume_at(&c, later), Decision::Limited { .. }));
    }

    #[test]
    fn all_or_nothing_across_buckets() {
        let s = MemoryStore::default();
        let t0 = Instant::now();
        let shared = check(Key::Shared, bucket(10, 10));
        let tool = check(Key::SharedTool(Arc::from("echo")), bucket(1, 10));
        assert_eq!(s.consume_at(&[shared.clone(), tool.clone()], t0), Decision::Allowed);
        // The tool bucket is empty: the shared bucket is not charged for the refused call.
        for _ in 0..5 {
            let d = s.consume_at(&[shared.clone(), tool.clone()], t0);
            assert!(matches!(d, Decision::Limited { index: 1, .. }), "{d:?}");
        }
        for _ in 0..9 {
            assert_eq!(s.consume_at(std::slice::from_ref(&shared), t0), Decision::Allowed);
        }
        assert!(matches!(s.consume_at(&[shared], t0), Decision::Limited { index: 0, .. }));
    }

    #[test]
    fn users_have_their_own_buckets() {
        let s = MemoryStore::default();
        let t0 = Instant::now();
        let a = [check(Key::User(user("alice")), bucket(1, 60))];
        let b = [check(Key::User(user("bob")), bucket(1, 60))];
        assert_eq!(s.consume_at(&a, t0), Decision::Allowed);
        assert!(matches!(s.consume_at(&a, t0), Decision::Limited { .. }));
        assert_eq!(s.consume_at(&b, t0), Decision::Allowed);
    }

    #[test]
    fn bounded_idle_first_then_oldest() {
        let s = MemoryStore::new(2);
        let t0 = Instant::now();
        let k = |n: &str| [check(Key::User(user(n)), bucket(2, 10))];
        assert_eq!(s.consume_at(&k("a"), t0), Decision::Allowed);
        assert_eq!(s.consume_at(&k("b"), t0 + Duration::from_secs(9)), Decision::Allowed);
        // a is full again after 10 s: dropped for c, b kept (still refilling).
        let t = t0 + Duration::from_secs(10);
        assert_eq!(s.consume_at(&k("c"), t), Decision::Allowed);
        assert_eq!(s.len(), 2);
        assert_eq!(s.consume_at(&k("b"), t), Decision::Allowed);
        // Nothing idle: the bucket updated longest ago goes.
        let s = MemoryStore::new(2);
        assert_eq!(s.consume_at(&k("a"), t0), Decision::Allowed);
        assert_eq!(s.consume_at(&k("b"), t0 + Duration::from_millis(10)), Decision::Allowed);
        assert_eq!(s.consume_at(&k("c"), t0 + Duration::from_millis(20)), Decision::Allowed);
        assert_eq!(s.len(), 2);
        // a was dropped; b is still held, with 1 token left.
        let t = t0 + Duration::from_millis(30);
        assert_eq!(s.consume_at(&k("b"), t), Decision::Allowed);
        assert!(matches!(s.consume_at(&k("b"), t), Decision::Limited { .. }));
    }
}
