//! Where Legacy session records live so that any replica can continue a session: the
//! [`SessionStore`] trait, [`LocalSessionStore`] (one process, keeps nothing: the default) and
//! [`MemorySessionStore`] (in-process records, for several gateways in one process, as tests
//! run them); Redis's is `crate::store::sessions`.
//!
//! The trait is deliberately small (put, get, touch, delete, delete-if-idle) so that a shared
//! store (Redis: `SET … PX`, `GET`, `GETEX … PX`, `DEL`, `PTTL`) implements it directly. Every
//! record has a time to live; [`super::Sessions`] refreshes it at most every quarter of the idle
//! timeout, never on every request.
//!
//! Invariants:
//! - Records are keyed by [`StoreKey`], the SHA-256 of the session id: the store never sees an
//!   id, so reading it gives nobody a session.
//! - Records hold a binding, never a credential ([`SessionRecord`]).
//! - [`MemorySessionStore`] holds at most `max_records` ([`DEFAULT_MAX_RECORDS`] by default);
//!   expired records are dropped to make room, and a full store refuses new keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use super::bus::{MemoryBus, SessionBus};
use super::record::{RecordError, SessionRecord};

/// Default bound of [`MemorySessionStore`]: records held at once (ten times the default
/// `server.limits.maxSessions`, so one process's store never refuses what its limits admit).
pub const DEFAULT_MAX_RECORDS: usize = 100_000;
/// A full memory store looks for expired records to drop at most this often.
const PURGE_INTERVAL: Duration = Duration::from_secs(1);

/// The key a session's record is stored under: the hex SHA-256 of its id.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StoreKey(String);

impl StoreKey {
    /// The key of session `id`.
    pub fn of(id: &str) -> StoreKey {
        let digest = Sha256::digest(id.as_bytes());
        StoreKey(digest.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The key as text (64 hex digits), for a store that prefixes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not a secret, but long: a prefix names it well enough in logs.
        write!(f, "StoreKey({}…)", self.0.get(..12).unwrap_or(&self.0))
    }
}

/// Why the session store failed. Never carries a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store holds its maximum number of records.
    #[error("session store is full ({0} records)")]
    Full(usize),
    /// The store could not be reached, failed, or did not answer in time.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// A record could not be encoded or read.
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// Storage of session records shared by the replicas of one gateway.
pub trait SessionStore: Send + Sync {
    /// Stores (replaces) the record under `key`, living `ttl` from now.
    fn put<'a>(
        &'a self,
        key: &'a StoreKey,
        record: &'a SessionRecord,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The record under `key`, if there is one that has not expired.
    fn get<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<SessionRecord>, StoreError>>;

    /// Makes the record under `key` live `ttl` from now and returns it (Redis: `GETEX … PX`);
    /// `None` when there is none (deleted or expired). This is how a replica learns that a
    /// session ended, or changed, elsewhere.
    fn touch<'a>(
        &'a self,
        key: &'a StoreKey,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<SessionRecord>, StoreError>>;

    /// Removes the record under `key`, if any.
    fn delete<'a>(&'a self, key: &'a StoreKey) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Whether other gateways read this store. A store nobody else reads ([`LocalSessionStore`])
    /// is never touched to learn of changes made elsewhere: there are none.
    fn is_shared(&self) -> bool {
        true
    }

    /// The bus that carries notifications between the gateways sharing this store; `None` for
    /// a store nobody shares.
    fn bus(&self) -> Option<Arc<dyn SessionBus>> {
        None
    }

    /// Removes the record under `key` unless it was put or touched less than `min_idle` ago
    /// (every put and touch sets `ttl`, so a store that keeps only the expiry, like Redis's
    /// `PTTL`, can tell: idle = `ttl` − time left). Returns whether no record is left. Used by
    /// idle expiry, so that a replica whose copy went idle does not end a session another
    /// replica is still serving.
    fn delete_idle<'a>(
        &'a self,
        key: &'a StoreKey,
        ttl: Duration,
        min_idle: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
}

struct Entry {
    /// The encoded record: the memory store keeps exactly what a shared store would.
    bytes: Vec<u8>,
    touched: Instant,
    expires: Instant,
}

#[derive(Default)]
struct State {
    records: HashMap<StoreKey, Entry>,
    last_purge: Option<Instant>,
}

impl State {
    fn live(&mut self, key: &StoreKey, now: Instant) -> Option<&mut Entry> {
        if self.records.get(key).is_some_and(|e| e.expires <= now) {
            self.records.remove(key);
        }
        self.records.get_mut(key)
    }
}

/// The in-process session store, for one replica (the default) and for tests that run several
/// gateways in one process. At most `max_records` records ([`DEFAULT_MAX_RECORDS`] by default).
pub struct MemorySessionStore {
    state: Mutex<State>,
    max_records: usize,
    /// Notifications between the gateways on this store.
    bus: Arc<MemoryBus>,
}

impl Default for MemorySessionStore {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_RECORDS)
    }
}

impl MemorySessionStore {
    /// An empty store holding at most `max_records`.
    pub fn new(max_records: usize) -> Self {
        Self { state: Mutex::default(), max_records, bus: Arc::default() }
    }

    /// Records held now, expired ones not yet dropped included.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain data behind a short lock: a panic elsewhere leaves nothing half-done here.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn put_now(
        &self,
        key: &StoreKey,
        record: &SessionRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let bytes = record.encode()?;
        let now = Instant::now();
        let mut state = self.lock();
        if !state.records.contains_key(key) && state.records.len() >= self.max_records {
            if state.last_purge.is_none_or(|t| t.elapsed() >= PURGE_INTERVAL) {
                state.records.retain(|_, e| e.expires > now);
                state.last_purge = Some(now);
            }
            if state.records.len() >= self.max_records {
                return Err(StoreError::Full(self.max_records));
            }
        }
        state.records.insert(key.clone(), Entry { bytes, touched: now, expires: now + ttl });
        Ok(())
    }

    fn get_now(&self, key: &StoreKey) -> Result<Option<SessionRecord>, StoreError> {
        let bytes = match self.lock().live(key, Instant::now()) {
            Some(e) => e.bytes.clone(),
            None => return Ok(None),
        };
        Ok(Some(SessionRecord::decode(&bytes)?))
    }

    fn touch_now(
        &self,
        key: &StoreKey,
        ttl: Duration,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let now = Instant::now();
        let bytes = match self.lock().live(key, now) {
            Some(e) => {
                e.touched = now;
                e.expires = now + ttl;
                e.bytes.clone()
            }
            None => return Ok(None),
        };
        Ok(Some(SessionRecord::decode(&bytes)?))
    }

    fn delete_idle_now(&self, key: &StoreKey, min_idle: Duration) -> bool {
        let now = Instant::now();
        let mut state = self.lock();
        match state.live(key, now) {
            Some(e) if now.duration_since(e.touched) < min_idle => false,
            Some(_) => {
                state.records.remove(key);
                true
            }
            None => true,
        }
    }
}

impl SessionStore for MemorySessionStore {
    fn put<'a>(
        &'a self,
        key: &'a StoreKey,
        record: &'a SessionRecord,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { self.put_now(key, record, ttl) })
    }

    fn get<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<SessionRecord>, StoreError>> {
        Box::pin(async move { self.get_now(key) })
    }

    fn touch<'a>(
        &'a self,
        key: &'a StoreKey,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<SessionRecord>, StoreError>> {
        Box::pin(async move { self.touch_now(key, ttl) })
    }

    fn delete<'a>(&'a self, key: &'a StoreKey) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.lock().records.remove(key);
            Ok(())
        })
    }

    fn delete_idle<'a>(
        &'a self,
        key: &'a StoreKey,
        _ttl: Duration,
        min_idle: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move { Ok(self.delete_idle_now(key, min_idle)) })
    }

    fn bus(&self) -> Option<Arc<dyn SessionBus>> {
        Some(self.bus.clone())
    }
}

/// The store of a gateway that shares its sessions with nobody (no `sessionStorage`): it keeps
/// nothing, since the sessions themselves are the only copy anyone reads. A
/// [`MemorySessionStore`] would hold every record a second time (about 600 bytes a session).
pub struct LocalSessionStore;

impl SessionStore for LocalSessionStore {
    fn put<'a>(
        &'a self,
        _key: &'a StoreKey,
        _record: &'a SessionRecord,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn get<'a>(
        &'a self,
        _key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<SessionRecord>, StoreError>> {
        // A session this process does not hold exists nowhere.
        Box::pin(std::future::ready(Ok(None)))
    }

    fn touch<'a>(
        &'a self,
        _key: &'a StoreKey,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<SessionRecord>, StoreError>> {
        // Never asked (`is_shared` is false); if it were, "no record" would end the session.
        Box::pin(std::future::ready(Ok(None)))
    }

    fn delete<'a>(&'a self, _key: &'a StoreKey) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn delete_idle<'a>(
        &'a self,
        _key: &'a StoreKey,
        _ttl: Duration,
        _min_idle: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(std::future::ready(Ok(true)))
    }

    fn is_shared(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Binding;

    fn record() -> SessionRecord {
        SessionRecord {
            version: super::super::record::RECORD_VERSION,
            binding: Binding::Anonymous,
            protocol_version: "2025-11-25".into(),
            client_capabilities: serde_json::json!({}),
            client_info: serde_json::json!({}),
            subscriptions: vec![],
            log_level: None,
            created_at: 0,
        }
    }

    const LONG: Duration = Duration::from_secs(60);

    #[test]
    fn keys_are_hashes_of_the_id() {
        let id = "ab".repeat(32);
        let key = StoreKey::of(&id);
        assert_eq!(key.as_str().len(), 64);
        assert!(!key.as_str().contains(&id));
        assert_eq!(key, StoreKey::of(&id));
        assert_ne!(key, StoreKey::of("other"));
        assert!(!format!("{key:?}").contains(key.as_str()), "Debug shows a prefix only");
    }

    #[tokio::test]
    async fn put_get_touch_delete() {
        let s = MemorySessionStore::default();
        let k = StoreKey::of("a");
        assert_eq!(s.get(&k).await, Ok(None));
        assert_eq!(s.touch(&k, LONG).await, Ok(None), "nothing to touch");
        s.put(&k, &record(), LONG).await.unwrap();
        assert_eq!(s.get(&k).await, Ok(Some(record())));
        assert_eq!(s.touch(&k, LONG).await, Ok(Some(record())));
        s.delete(&k).await.unwrap();
        assert_eq!(s.get(&k).await, Ok(None));
        assert!(s.is_empty());
    }

    #[tokio::test]
    async fn records_expire_and_touch_extends_them() {
        let s = MemorySessionStore::default();
        let (a, b) = (StoreKey::of("a"), StoreKey::of("b"));
        let ttl = Duration::from_millis(150);
        s.put(&a, &record(), ttl).await.unwrap();
        s.put(&b, &record(), ttl).await.unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        // Keep `a` alive by touching it until `b` is gone.
        while s.get(&b).await.unwrap().is_some() {
            assert!(s.touch(&a, ttl).await.unwrap().is_some(), "a touched record stays");
            assert!(Instant::now() < until, "b never expired");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(s.get(&a).await.unwrap().is_some());
        assert!(s.touch(&b, ttl).await.unwrap().is_none(), "an expired record stays gone");
    }

    #[tokio::test]
    async fn a_full_store_refuses_new_keys_until_records_expire() {
        let s = MemorySessionStore::new(2);
        let short = Duration::from_millis(50);
        s.put(&StoreKey::of("a"), &record(), short).await.unwrap();
        s.put(&StoreKey::of("b"), &record(), LONG).await.unwrap();
        // Replacing a held key is always possible.
        s.put(&StoreKey::of("b"), &record(), LONG).await.unwrap();
        let c = StoreKey::of("c");
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            match s.put(&c, &record(), LONG).await {
                Ok(()) => break,
                Err(e) => assert_eq!(e, StoreError::Full(2)),
            }
            assert!(Instant::now() < until, "the expired record never made room");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(s.len(), 2);
        assert_eq!(s.put(&StoreKey::of("d"), &record(), LONG).await, Err(StoreError::Full(2)));
    }

    #[tokio::test]
    async fn delete_idle_spares_a_recently_touched_record() {
        let s = MemorySessionStore::default();
        let k = StoreKey::of("a");
        s.put(&k, &record(), LONG).await.unwrap();
        assert_eq!(s.delete_idle(&k, LONG, LONG).await, Ok(false), "touched just now");
        assert!(s.get(&k).await.unwrap().is_some());
        assert_eq!(s.delete_idle(&k, LONG, Duration::ZERO).await, Ok(true));
        assert_eq!(s.get(&k).await, Ok(None));
        assert_eq!(s.delete_idle(&k, LONG, LONG).await, Ok(true), "nothing left either way");
    }

    #[tokio::test]
    async fn oversize_records_are_refused_and_change_nothing() {
        let s = MemorySessionStore::default();
        let big = SessionRecord {
            client_info: serde_json::json!({ "n": "x".repeat(super::super::record::MAX_RECORD_BYTES) }),
            ..record()
        };
        assert!(matches!(
            s.put(&StoreKey::of("a"), &big, LONG).await,
            Err(StoreError::Record(RecordError::TooLarge(_)))
        ));
        assert!(s.is_empty());
    }
}
