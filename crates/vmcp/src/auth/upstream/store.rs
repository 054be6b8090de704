//! Where the vault keeps its entries: opaque encrypted blobs per (user, upstream).
//!
//! [`TokenStore`] is deliberately minimal (get, put, delete, delete a user) so that a shared
//! store (Redis) can implement it; the vault does the encryption, so a store never sees a token.
//! [`MemoryTokenStore`] is the in-process default, bounded in entries.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;

/// Default bound of [`MemoryTokenStore`]: (user, upstream) entries held at once.
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;
/// A full store looks for useless entries to drop at most this often.
const PURGE_INTERVAL: Duration = Duration::from_secs(1);

/// Why the token store failed. Never carries a blob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store holds its maximum number of entries and none could be dropped.
    #[error("upstream token store is full ({0} entries)")]
    Full(usize),
    /// The store could not be reached or failed.
    #[error("upstream token store unavailable: {0}")]
    Unavailable(String),
}

/// Storage of encrypted vault entries, keyed by (vmcp user id, upstream name).
pub trait TokenStore: Send + Sync {
    /// The blob stored for (user, upstream), if any (and not past its `useless_after`).
    fn get<'a>(
        &'a self,
        user: &'a str,
        upstream: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>>;

    /// Stores (replaces) the blob for (user, upstream). `useless_after`, when given, is the
    /// instant after which the entry can serve nothing (an access token without a refresh
    /// token): the store may drop it from then on (a shared store: an expiry on the key).
    fn put<'a>(
        &'a self,
        user: &'a str,
        upstream: &'a str,
        blob: Vec<u8>,
        useless_after: Option<SystemTime>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Removes the entry for (user, upstream), if any.
    fn delete<'a>(
        &'a self,
        user: &'a str,
        upstream: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Removes every entry of `user`.
    fn delete_user<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
}

struct Entry {
    blob: Vec<u8>,
    useless_after: Option<SystemTime>,
}

impl Entry {
    fn useless(&self, now: SystemTime) -> bool {
        self.useless_after.is_some_and(|t| t <= now)
    }
}

#[derive(Default)]
struct State {
    users: HashMap<String, HashMap<String, Entry>>,
    count: usize,
    last_purge: Option<Instant>,
}

impl State {
    fn remove(&mut self, user: &str, upstream: &str) {
        if let Some(m) = self.users.get_mut(user) {
            if m.remove(upstream).is_some() {
                self.count -= 1;
            }
            if m.is_empty() {
                self.users.remove(user);
            }
        }
    }

    /// Drops every entry past its `useless_after`.
    fn purge(&mut self, now: SystemTime) {
        let mut dropped = 0;
        self.users.retain(|_, m| {
            let before = m.len();
            m.retain(|_, e| !e.useless(now));
            dropped += before - m.len();
            !m.is_empty()
        });
        self.count -= dropped;
        self.last_purge = Some(Instant::now());
    }
}

/// The in-process token store: entries live as long as the process, at most `max_entries` of
/// them ([`DEFAULT_MAX_ENTRIES`] by default). When full, entries past their `useless_after` are
/// dropped to make room; if none are, `put` of a new key fails with [`StoreError::Full`]
/// (replacing an existing key always succeeds).
pub struct MemoryTokenStore {
    state: Mutex<State>,
    max_entries: usize,
}

impl Default for MemoryTokenStore {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_ENTRIES)
    }
}

impl std::fmt::Debug for MemoryTokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTokenStore")
            .field("entries", &self.len())
            .field("max_entries", &self.max_entries)
            .finish()
    }
}

impl MemoryTokenStore {
    /// A store holding at most `max_entries` entries (at least 1).
    pub fn new(max_entries: usize) -> Self {
        Self { state: Mutex::new(State::default()), max_entries: max_entries.max(1) }
    }

    /// Entries held now (including any not yet purged past their `useless_after`).
    pub fn len(&self) -> usize {
        self.lock().count
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get_now(&self, user: &str, upstream: &str) -> Option<Vec<u8>> {
        let now = SystemTime::now();
        let mut st = self.lock();
        let entry = st.users.get(user)?.get(upstream)?;
        if entry.useless(now) {
            st.remove(user, upstream);
            return None;
        }
        Some(entry.blob.clone())
    }

    fn put_now(
        &self,
        user: &str,
        upstream: &str,
        blob: Vec<u8>,
        useless_after: Option<SystemTime>,
    ) -> Result<(), StoreError> {
        let mut st = self.lock();
        let exists = st.users.get(user).is_some_and(|m| m.contains_key(upstream));
        if !exists && st.count >= self.max_entries {
            if st.last_purge.is_none_or(|t| t.elapsed() >= PURGE_INTERVAL) {
                st.purge(SystemTime::now());
            }
            if st.count >= self.max_entries {
                return Err(StoreError::Full(self.max_entries));
            }
        }
        let entry = Entry { blob, useless_after };
        if st
            .users
            .entry(user.to_string())
            .or_default()
            .insert(upstream.to_string(), entry)
            .is_none()
        {
            st.count += 1;
        }
        Ok(())
    }
}

impl TokenStore for MemoryTokenStore {
    fn get<'a>(
        &'a self,
        user: &'a str,
        upstream: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(async move { Ok(self.get_now(user, upstream)) })
    }

    fn put<'a>(
        &'a self,
        user: &'a str,
        upstream: &'a str,
        blob: Vec<u8>,
        useless_after: Option<SystemTime>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { self.put_now(user, upstream, blob, useless_after) })
    }

    fn delete<'a>(
        &'a self,
        user: &'a str,
        upstream: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.lock().remove(user, upstream);
            Ok(())
        })
    }

    fn delete_user<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut st = self.lock();
            if let Some(m) = st.users.remove(user) {
                st.count -= m.len();
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_with_eviction_of_useless_entries() {
        let s = MemoryTokenStore::new(2);
        let past = SystemTime::now() - Duration::from_secs(1);
        s.put("a", "x", vec![1], None).await.unwrap();
        s.put("b", "x", vec![2], Some(past)).await.unwrap();
        assert_eq!(s.len(), 2);
        // Replacing never fails.
        s.put("a", "x", vec![3], None).await.unwrap();
        // A new key: the useless entry goes to make room.
        s.put("c", "x", vec![4], None).await.unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.get("b", "x").await.unwrap(), None);
        // Nothing left to drop.
        assert_eq!(s.put("d", "x", vec![5], None).await, Err(StoreError::Full(2)));
        assert_eq!(s.get("a", "x").await.unwrap(), Some(vec![3]));
        s.delete_user("a").await.unwrap();
        s.put("d", "x", vec![5], None).await.unwrap();
        s.delete("d", "x").await.unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s.get("c", "x").await.unwrap(), Some(vec![4]));
    }

    #[tokio::test]
    async fn useless_entries_are_not_served() {
        let s = MemoryTokenStore::default();
        s.put("a", "x", vec![1], Some(SystemTime::now() - Duration::from_millis(1))).await.unwrap();
        assert_eq!(s.get("a", "x").await.unwrap(), None);
        assert!(s.is_empty());
    }
}
