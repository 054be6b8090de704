//! The principal-aware pool of Legacy backend sessions of one Streamable HTTP backend: which
//! backend session a request uses is decided here, and only here.
//!
//! An entry is keyed by who it serves ([`Key`]):
//! - the gateway itself (`Caller::System`: discovery, catalog refresh, list_changed listening):
//!   one entry, opened at connect, never evicted or idled, never used for a client request;
//! - a Legacy client session: one entry per (principal binding, client session), opened on the
//!   client's first request with its capabilities, ended when the client session ends;
//! - a principal's Modern clients: one entry per principal binding, ended after
//!   `operational.backendSessions.idleTimeout` without use.
//!
//! Invariants:
//! - A key is derived from the caller of the request at hand ([`Key::of`]), so a request only
//!   ever reaches a backend session of its own principal, and a session is only ever (re)opened
//!   with credentials of the principal it belongs to. `Caller::System` has a key of its own, not
//!   the anonymous principal's.
//! - Entries hold ids, versions and the binding in their key; never a credential. Ending an
//!   entry resolves its caller at that moment ([`Key::ending_caller`]).
//! - The number of client and principal entries is bounded (`maxPerBackend`); to make room the
//!   least recently used entry that no request is using is ended. When all are busy, the request
//!   that needed a new entry fails; nothing else does.
//! - The map's lock is held for map operations only, never across an `.await`.
//! - What a client set at the backend through an entry (resource subscriptions, a log level) is
//!   remembered with the entry ([`SessionState`]) and set again on the entry's next session, so a
//!   renewed or re-opened backend session serves its client as before. An entry holding such
//!   state does not idle out, is evicted only when no stateless one can go, and then leaves its
//!   state parked for its next session (bounded like the entries).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::OnceCell;

use super::session::LegacySession;
use crate::auth::{Binding, Caller};

/// Whom a pooled backend session serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Owner {
    /// The gateway's own background work.
    System,
    /// One principal (or the anonymous one).
    Principal(Binding),
}

/// A pool key: the owner and, for a Legacy client, its client session number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub owner: Owner,
    pub client: Option<u64>,
}

impl Key {
    /// The gateway's own entry.
    pub fn system() -> Key {
        Key { owner: Owner::System, client: None }
    }

    /// The entry a request by `caller` for client session `client` (none for Modern clients and
    /// background work) uses.
    pub fn of(caller: &Caller, client: Option<u64>) -> Key {
        match caller {
            // `Caller::binding` maps System to Anonymous; the gateway's work must not share a
            // backend session with anonymous clients.
            Caller::System => Key::system(),
            other => Key { owner: Owner::Principal(other.binding()), client },
        }
    }

    /// The principal this entry serves; `None` for the gateway's own.
    pub fn principal(&self) -> Option<Binding> {
        match &self.owner {
            Owner::System => None,
            Owner::Principal(b) => Some(b.clone()),
        }
    }

    /// The caller that ends this entry's session when nobody's request is behind it (eviction,
    /// idle expiry, shutdown): resolved when used, never stored.
    pub fn ending_caller(&self) -> Caller {
        match &self.owner {
            Owner::System => Caller::System,
            Owner::Principal(b) => Caller::Teardown(b.clone()),
        }
    }

    /// Whether this is a principal's Modern entry (the kind that idles out).
    pub fn is_principal_modern(&self) -> bool {
        matches!(self.owner, Owner::Principal(_)) && self.client.is_none()
    }
}

/// What clients set at the backend through an entry's session, to be set again on its next one.
/// Holds no credential.
#[derive(Debug, Default, Clone)]
pub(super) struct SessionState {
    /// Resource URIs subscribed with `resources/subscribe`.
    pub subscriptions: BTreeSet<String>,
    /// The level of the last `logging/setLevel`.
    pub log_level: Option<String>,
}

impl SessionState {
    fn is_empty(&self) -> bool {
        self.subscriptions.is_empty() && self.log_level.is_none()
    }

    /// Records a request the backend accepted, if it changes the session's state.
    pub fn record(&mut self, method: &str, params: Option<&serde_json::value::RawValue>) {
        let get = |k: &str| crate::protocol::params::get_str(params, k);
        match method {
            "resources/subscribe" => {
                if let Some(uri) = get("uri") {
                    self.subscriptions.insert(uri);
                }
            }
            "resources/unsubscribe" => {
                if let Some(uri) = get("uri") {
                    self.subscriptions.remove(&uri);
                }
            }
            "logging/setLevel" => self.log_level = get("level"),
            _ => {}
        }
    }
}

/// One pool entry: its key and the backend session currently serving it.
pub(super) struct Slot {
    pub key: Key,
    /// The session, opened once by the first request that needs it. Renewal swaps in an empty
    /// cell so exactly one of the requests that find the old session gone opens the next.
    pub cell: ArcSwap<OnceCell<Arc<LegacySession>>>,
    /// Whether the entry keeps a GET listener: always for the System entry, and for others once
    /// something was asked through them that the backend answers on the GET stream (resource
    /// subscriptions, a log level). Kept across renewals.
    pub listening: AtomicBool,
    /// What its sessions are to carry (see [`SessionState`]).
    pub state: Mutex<SessionState>,
    /// The client's capabilities and info its first session was opened with (a client's
    /// entry), for sessions opened with no request of that client behind them.
    pub client_meta: std::sync::OnceLock<serde_json::Map<String, serde_json::Value>>,
}

impl Slot {
    fn new(key: Key) -> Self {
        Self {
            key,
            cell: ArcSwap::from_pointee(OnceCell::new()),
            listening: AtomicBool::new(false),
            state: Mutex::default(),
            client_meta: std::sync::OnceLock::new(),
        }
    }

    /// The state its sessions carry, for reading or recording.
    pub fn state(&self) -> std::sync::MutexGuard<'_, SessionState> {
        // Each critical section is one small update, so a poisoned lock is still sound.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn has_state(&self) -> bool {
        !self.state().is_empty()
    }

    /// The session now serving the entry, if one was opened.
    pub fn current(&self) -> Option<Arc<LegacySession>> {
        self.cell.load().get().cloned()
    }
}

struct Entry {
    slot: Arc<Slot>,
    last_used: Instant,
}

impl Entry {
    /// A request holds the slot (a lease is a clone of the `Arc`).
    fn busy(&self) -> bool {
        Arc::strong_count(&self.slot) > 1
    }
}

/// The pool is full of busy entries.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "too many backend sessions in use ({0}, operational.backendSessions.maxPerBackend); try again later"
)]
pub(super) struct Full(pub usize);

/// The pool of one backend.
pub(super) struct Pool {
    entries: Mutex<Entries>,
    max: usize,
    idle: Duration,
}

#[derive(Default)]
struct Entries {
    map: HashMap<Key, Entry>,
    /// State of entries evicted while holding some, for their next session.
    parked: HashMap<Key, SessionState>,
}

impl std::ops::Deref for Entries {
    type Target = HashMap<Key, Entry>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl std::ops::DerefMut for Entries {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.map
    }
}

impl Pool {
    pub fn new(max: usize, idle: Duration) -> Self {
        Self { entries: Mutex::default(), max: max.max(1), idle }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry for `key`, created if missing, marked used now. Also returns the entries
    /// evicted to make room, for the caller to end outside the lock.
    pub fn checkout(&self, key: Key) -> Result<(Arc<Slot>, Vec<Arc<Slot>>), Full> {
        let now = Instant::now();
        let mut map = self.lock();
        if let Some(e) = map.get_mut(&key) {
            e.last_used = now;
            return Ok((e.slot.clone(), Vec::new()));
        }
        let mut evicted = Vec::new();
        if key.owner != Owner::System {
            let counted =
                |m: &HashMap<Key, Entry>| m.keys().filter(|k| k.owner != Owner::System).count();
            while counted(&map) >= self.max {
                // Entries whose sessions carry state go last: their clients count on them.
                let victim = map
                    .iter()
                    .filter(|(k, e)| k.owner != Owner::System && !e.busy())
                    .min_by_key(|(_, e)| (e.slot.has_state(), e.last_used))
                    .map(|(k, _)| k.clone());
                let Some(victim) = victim else { return Err(Full(self.max)) };
                if let Some(e) = map.remove(&victim) {
                    let state = e.slot.state().clone();
                    if !state.is_empty() {
                        if map.parked.len() >= self.max {
                            // Bounded like the entries: the oldest parking is not known, any goes.
                            let any = map.parked.keys().next().cloned();
                            if let Some(k) = any {
                                map.parked.remove(&k);
                            }
                        }
                        map.parked.insert(victim, state);
                    }
                    evicted.push(e.slot);
                }
            }
        }
        let slot = Arc::new(Slot::new(key.clone()));
        if let Some(state) = map.parked.remove(&key) {
            *slot.state() = state;
            slot.listening.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        map.insert(key, Entry { slot: slot.clone(), last_used: now });
        Ok((slot, evicted))
    }

    /// Puts an already opened session in the System entry (at connect).
    pub fn install_system(&self, session: Arc<LegacySession>) -> Arc<Slot> {
        let slot = Arc::new(Slot::new(Key::system()));
        slot.cell.store(Arc::new(OnceCell::new_with(Some(session))));
        slot.listening.store(true, std::sync::atomic::Ordering::Relaxed);
        let old = self
            .lock()
            .insert(Key::system(), Entry { slot: slot.clone(), last_used: Instant::now() });
        if let Some(old) = old.and_then(|e| e.slot.current()) {
            old.listener.cancel();
        }
        slot
    }

    /// Removes the entries of client session `client` (whatever principal: a client session has
    /// exactly one).
    pub fn remove_client(&self, client: u64) -> Vec<Arc<Slot>> {
        let mut map = self.lock();
        map.parked.retain(|k, _| k.client != Some(client));
        let keys: Vec<Key> = map.keys().filter(|k| k.client == Some(client)).cloned().collect();
        keys.iter().filter_map(|k| map.remove(k)).map(|e| e.slot).collect()
    }

    /// Removes principals' Modern entries unused for the idle timeout, not in use and holding no
    /// state (a standing subscription keeps its entry).
    pub fn expire(&self) -> Vec<Arc<Slot>> {
        let now = Instant::now();
        let mut map = self.lock();
        let keys: Vec<Key> = map
            .iter()
            .filter(|(k, e)| {
                k.is_principal_modern()
                    && !e.busy()
                    && now.duration_since(e.last_used) >= self.idle
                    && !e.slot.has_state()
            })
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter().filter_map(|k| map.remove(k)).map(|e| e.slot).collect()
    }

    /// Removes every entry (backend gone, or shutdown).
    pub fn drain(&self) -> Vec<Arc<Slot>> {
        let mut map = self.lock();
        map.parked.clear();
        map.drain().map(|(_, e)| e.slot).collect()
    }

    /// How often [`Pool::expire`] should run.
    pub fn sweep_every(&self) -> Duration {
        (self.idle / 2).clamp(Duration::from_millis(250), Duration::from_secs(30))
    }

    /// Number of entries (System included), for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(sub: &str) -> Binding {
        Binding::Principal { issuer: "iss".into(), subject: sub.into() }
    }

    fn key(sub: &str, client: Option<u64>) -> Key {
        Key { owner: Owner::Principal(user(sub)), client }
    }

    #[test]
    fn keys_separate_system_principals_and_clients() {
        assert_eq!(Key::of(&Caller::System, Some(3)), Key::system());
        assert_ne!(Key::of(&Caller::Anonymous, None), Key::system());
        assert_eq!(
            Key::of(&Caller::Teardown(user("a")), Some(1)),
            key("a", Some(1)),
            "teardown reaches the same entry as the principal's requests"
        );
        assert_ne!(key("a", None), key("b", None));
        assert!(matches!(key("a", None).ending_caller(), Caller::Teardown(b) if b == user("a")));
        assert!(matches!(Key::system().ending_caller(), Caller::System));
    }

    #[test]
    fn bounded_lru_skips_busy_entries() {
        let pool = Pool::new(2, Duration::from_secs(60));
        let (_sys, _) = pool.checkout(Key::system()).unwrap();
        let (a, _) = pool.checkout(key("a", None)).unwrap();
        drop(a);
        std::thread::sleep(Duration::from_millis(2));
        let (b, _) = pool.checkout(key("b", None)).unwrap();
        // Full (System not counted): the least recently used idle one (a) goes.
        let (_c, evicted) = pool.checkout(key("c", None)).unwrap();
        assert_eq!(evicted.iter().map(|s| s.key.clone()).collect::<Vec<_>>(), [key("a", None)]);
        assert_eq!(pool.len(), 3);
        // b and c are both held by requests: no room, and nobody is evicted.
        assert!(pool.checkout(key("d", None)).is_err());
        drop(b);
        let (_d, evicted) = pool.checkout(key("d", None)).unwrap();
        assert_eq!(evicted.len(), 1);
    }

    #[test]
    fn only_idle_principal_entries_expire() {
        let pool = Pool::new(10, Duration::ZERO);
        let _ = pool.checkout(Key::system()).unwrap();
        let _ = pool.checkout(key("a", Some(1))).unwrap();
        let _ = pool.checkout(key("a", None)).unwrap();
        let (held, _) = pool.checkout(key("b", None)).unwrap();
        let gone: Vec<Key> = pool.expire().iter().map(|s| s.key.clone()).collect();
        assert_eq!(gone, [key("a", None)]);
        drop(held);
        assert_eq!(pool.expire().len(), 1);
        assert_eq!(pool.remove_client(1).len(), 1);
        assert_eq!(pool.len(), 1);
    }

    fn subscribed(slot: &Slot, uri: &str) {
        let params = crate::protocol::jsonrpc::raw(&serde_json::json!({ "uri": uri }));
        slot.state().record("resources/subscribe", Some(&params));
    }

    #[test]
    fn entries_carrying_state_stay_and_their_state_outlives_eviction() {
        let pool = Pool::new(2, Duration::ZERO);
        let (a, _) = pool.checkout(key("a", None)).unwrap();
        subscribed(&a, "test://x");
        drop(a);
        let (b, _) = pool.checkout(key("b", None)).unwrap();
        drop(b);
        // Idle for the (zero) timeout: only the stateless entry expires.
        let expired: Vec<Key> = pool.expire().iter().map(|s| s.key.clone()).collect();
        assert_eq!(expired, [key("b", None)]);
        let (b, _) = pool.checkout(key("b", None)).unwrap();
        drop(b);
        std::thread::sleep(Duration::from_millis(2));
        // Full: the stateless entry goes first, although a was used longer ago.
        let (c, evicted) = pool.checkout(key("c", None)).unwrap();
        assert_eq!(evicted.iter().map(|s| s.key.clone()).collect::<Vec<_>>(), [key("b", None)]);
        drop(c);
        // With only stateful entries idle, one goes; its state waits for its next session.
        let (c, _) = pool.checkout(key("c", None)).unwrap();
        subscribed(&c, "test://y");
        drop(c);
        let (_d, evicted) = pool.checkout(key("d", None)).unwrap();
        assert_eq!(evicted.len(), 1);
        let gone = evicted[0].key.clone();
        let (back, _) = pool.checkout(gone).unwrap();
        assert_eq!(back.state().subscriptions.len(), 1, "the evicted entry's state came back");
        assert!(back.listening.load(std::sync::atomic::Ordering::Relaxed));
    }
}
