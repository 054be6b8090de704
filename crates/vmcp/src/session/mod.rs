//! Client sessions of the Legacy era (2025-11-25 and older): created by `initialize`, named by an
//! unguessable `Mcp-Session-Id`, ended by DELETE, and continued by any replica that shares the
//! session store.
//!
//! The sessions also hold the client-facing admission limits (`server.limits`): how many sessions
//! exist in total and per principal, how many requests run at once in total and per session, and
//! per session how many GET streams, pending relays and subscriptions there are.
//!
//! Sessions across replicas: every session has a record in a [`SessionStore`] (in memory by
//! default, shared by replicas when the store is) under a hash of its id ([`record`], [`store`]).
//! - `initialize` writes the record before the client gets the id; a store failure refuses the
//!   `initialize` and leaves no session behind.
//! - Subscriptions and the log level are written before the answer of the request that changed
//!   them goes out ([`Session::flush`]).
//! - A request for a session this process does not hold loads the record, checks the binding
//!   exactly as for a local session, and restores a local copy (same id, new local `key`)
//!   counted against `maxSessions` and `maxSessionsPerPrincipal` like a new one. Backend
//!   sessions are opened anew, as the principal, on first use (see [`record`] for why).
//! - A session in use touches its record at most every `refresh` ([`link`]): that extends the
//!   record's life and brings this replica's copy up to date: a session ended elsewhere (DELETE
//!   on another replica) outlives it here by at most `refresh` (1 s), and subscriptions or a
//!   log level changed elsewhere are taken over within the same bound. Concurrent changes of one
//!   session on two replicas: the last write wins.
//! - DELETE deletes the record (a store failure refuses the DELETE and changes nothing). Idle
//!   expiry ends the local copy and deletes the record unless another replica used it recently.
//!   Shutdown ([`Sessions::drain`]) ends local copies only, so other replicas continue them.
//! - What cannot move stays behind: relays awaiting the client's answer, in-flight requests
//!   (and so their `notifications/cancelled`), GET streams.
//!
//! Invariants:
//! - A session stores its [`Binding`] (who opened it), never a credential; so does its record.
//! - Session ids carry 256 random bits; the store never sees one.
//! - Locks here are held only for map operations, never across an await.
//! - Every count that client input can grow has a limit; hitting it refuses that one request
//!   ([`LimitError`]) and changes nothing else.
//! - An admitted request or stream holds a permit whose drop gives the slot back, so a slot is
//!   returned however the work ends (answer, error, abort, dropped connection).
//! - Every store call has a deadline ([`link::STORE_TIMEOUT`]).

mod client;
mod limit;
pub mod link;
mod listen;
pub mod record;
mod resume;
pub mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::RngCore;

use crate::auth::Binding;
use crate::config::LimitsConfig;

pub use client::{LOG_LEVELS, PendingRelay, Session};
pub use limit::{LimitError, Permit};
pub use listen::ListenPermit;
pub use record::SessionRecord;
pub use resume::resume;
pub use store::{MemorySessionStore, SessionStore, StoreError, StoreKey};

use link::{Link, Policy};

/// Why a session lookup failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// No such session (never existed, expired or deleted): HTTP 404.
    NotFound,
    /// The session belongs to another principal: HTTP 403, session untouched.
    Forbidden,
    /// This process does not hold the session and the store cannot say whether it exists:
    /// HTTP 503 (not 404: the session may well exist).
    Unavailable(StoreError),
    /// Restoring the session here would exceed a session limit: refused as `initialize` is.
    Limit(LimitError),
}

/// A session found by [`Sessions::get`].
pub enum Got {
    /// Held here and still in the store (as far as this process knows).
    Live(Arc<Session>),
    /// Restored here from its record by this lookup: its backend state (subscriptions) still
    /// needs re-establishing with this request's caller.
    Restored(Arc<Session>),
    /// Held here, and its record changed on another replica: this copy now has the record's
    /// subscriptions; those `added` and `removed` still need changing at this replica's backend
    /// sessions, with this request's caller.
    Updated {
        /// The session.
        session: Arc<Session>,
        /// URIs subscribed elsewhere.
        added: Vec<String>,
        /// URIs unsubscribed elsewhere.
        removed: Vec<String>,
    },
    /// Held here, but its record is gone (deleted on another replica): the local copy is now
    /// ended and its backend sessions still need ending. To the client: not found.
    Gone(Arc<Session>),
}

/// Why `initialize` could not create a session.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    /// A session limit is reached.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// The record could not be stored (or is too large to store): no session was created.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// All live sessions, and the gateway-wide request count.
pub struct Sessions {
    map: RwLock<HashMap<String, Arc<Session>>>,
    next_key: AtomicU64,
    /// Admitted client requests still running, all clients together.
    active: Arc<AtomicUsize>,
    /// Admitted client requests still running, per principal.
    active_per_principal: limit::PerPrincipal,
    /// Relays pending in all sessions together.
    relays: Arc<AtomicUsize>,
    /// Open `subscriptions/listen` streams.
    listens: listen::ListenStreams,
    limits: Arc<LimitsConfig>,
    /// Where records live.
    store: Arc<dyn SessionStore>,
    /// How records are timed (from `sessionIdleTimeout`).
    policy: Policy,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(LimitsConfig::default(), Arc::new(MemorySessionStore::default()))
    }
}

impl Sessions {
    /// No sessions yet, with these limits, keeping records in `store` (shared with other
    /// replicas when the store is).
    pub fn new(limits: LimitsConfig, store: Arc<dyn SessionStore>) -> Self {
        let policy = Policy::for_idle(limits.session_idle_timeout);
        Self {
            map: RwLock::default(),
            next_key: AtomicU64::new(0),
            active: Arc::default(),
            active_per_principal: Default::default(),
            relays: Arc::default(),
            listens: Default::default(),
            limits: Arc::new(limits),
            store,
            policy,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &LimitsConfig {
        &self.limits
    }

    /// Admits one client request of `binding`: one slot of `maxInFlight`, one of the principal's
    /// `maxInFlightPerPrincipal` and, for a Legacy request, one of its session's
    /// `maxInFlightPerSession`. Refused (and nothing taken) when any is full.
    pub fn admit(
        &self,
        binding: &Binding,
        session: Option<&Session>,
    ) -> Result<Permit, LimitError> {
        let limit = self.limits.max_in_flight;
        let global = Permit::acquire(&self.active, limit).ok_or(LimitError::InFlight { limit })?;
        let limit = self.limits.max_in_flight_per_principal;
        // On refusal the slots taken so far drop here and are given back.
        let principal = self
            .active_per_principal
            .acquire(binding, limit)
            .ok_or(LimitError::InFlightPerPrincipal { limit })?;
        let mut slots = vec![global, principal];
        if let Some(s) = session {
            let limit = self.limits.max_in_flight_per_session;
            // On refusal `slots` drops here and gives the global slot back.
            let own = Permit::acquire(&s.active, limit)
                .ok_or(LimitError::InFlightPerSession { limit })?;
            slots.push(own);
        }
        Ok(Permit::new(slots))
    }

    /// Admits one `subscriptions/listen` stream of `binding` (`maxListenStreams`,
    /// `maxListenStreamsPerPrincipal`); the stream keeps the permit while it is open.
    pub fn open_listen(&self, binding: &Binding) -> Result<ListenPermit, LimitError> {
        let l = &self.limits;
        self.listens.open(binding, l.max_listen_streams, l.max_listen_streams_per_principal)
    }

    /// Open `subscriptions/listen` streams, all clients together.
    pub fn listen_streams(&self) -> usize {
        self.listens.open_count()
    }

    /// Requests admitted and still running, all clients together.
    pub fn in_flight(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// A local session object for `id` (not yet in the map).
    fn build(&self, id: String, record: &SessionRecord) -> Session {
        let link = Link::new(self.store.clone(), StoreKey::of(&id), self.policy);
        let session = Session {
            id,
            key: self.next_key.fetch_add(1, Ordering::Relaxed) + 1,
            binding: record.binding.clone(),
            protocol_version: record.protocol_version.clone(),
            client_capabilities: record.client_capabilities.clone(),
            client_info: record.client_info.clone(),
            created_at: record.created_at,
            closed: tokio_util::sync::CancellationToken::new(),
            link,
            subscriptions: Mutex::default(),
            log_level: Default::default(),
            relays: Mutex::default(),
            all_relays: self.relays.clone(),
            next_relay: AtomicU64::new(1),
            in_flight: Mutex::default(),
            active: Arc::default(),
            streams: Arc::default(),
            last_seen: Mutex::new(Instant::now()),
            limits: self.limits.clone(),
        };
        session.adopt_changes(record);
        session
    }

    /// Adds `session` to the map unless `maxSessions` or the principal's
    /// `maxSessionsPerPrincipal` is reached; returns the session now held under its id (an
    /// earlier one, when a concurrent restore of the same id won).
    fn insert(&self, session: Arc<Session>) -> Result<Arc<Session>, LimitError> {
        // Counted under the write lock, so concurrent `initialize`s cannot both take the last slot.
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = map.get(&session.id) {
            return Ok(held.clone());
        }
        let limit = self.limits.max_sessions;
        if map.len() >= limit {
            return Err(LimitError::Sessions { limit });
        }
        let limit = self.limits.max_sessions_per_principal;
        if map.values().filter(|s| s.binding == session.binding).count() >= limit {
            return Err(LimitError::SessionsPerPrincipal { limit });
        }
        map.insert(session.id.clone(), session.clone());
        Ok(session)
    }

    /// Ends the local copy `session`, if it is still the one held under its id; returns whether
    /// it was.
    fn unlink(&self, session: &Arc<Session>) -> bool {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if !map.get(&session.id).is_some_and(|s| Arc::ptr_eq(s, session)) {
            return false;
        }
        map.remove(&session.id);
        drop(map);
        session.close();
        true
    }

    /// Creates a session for a client that sent `initialize`, unless `maxSessions` or the
    /// principal's `maxSessionsPerPrincipal` is reached or its record cannot be stored (then
    /// nothing of it is left behind).
    pub async fn create(
        &self,
        binding: Binding,
        protocol_version: String,
        client_capabilities: serde_json::Value,
        client_info: serde_json::Value,
    ) -> Result<Arc<Session>, CreateError> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let created_at =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        let record = SessionRecord {
            version: record::RECORD_VERSION,
            binding,
            protocol_version,
            client_capabilities,
            client_info,
            subscriptions: Vec::new(),
            log_level: None,
            created_at,
        };
        // An oversize record is refused before it takes a slot.
        record.encode().map_err(StoreError::from)?;
        let session = self.insert(Arc::new(self.build(id, &record)))?;
        let put = self.store.put(&session.link.key, &record, self.policy.ttl);
        if let Err(e) = self.policy.call(put).await {
            self.unlink(&session);
            return Err(e.into());
        }
        Ok(session)
    }

    /// The session `id`, if it exists and belongs to `binding`: held here, or restored from the
    /// store (see the module doc).
    pub async fn get(&self, id: &str, binding: &Binding) -> Result<Got, Lookup> {
        let held = self.map.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned();
        if let Some(session) = held {
            if session.binding != *binding {
                return Err(Lookup::Forbidden);
            }
            session.touch();
            return Ok(self.refresh(session).await);
        }
        let key = StoreKey::of(id);
        let record = match self.policy.call(self.store.get(&key)).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(Lookup::NotFound),
            Err(e) => {
                tracing::warn!(error = %e, "cannot look a session up in the session store");
                return Err(Lookup::Unavailable(e));
            }
        };
        if record.binding != *binding {
            return Err(Lookup::Forbidden);
        }
        let fresh = Arc::new(self.build(id.to_owned(), &record));
        let session = self.insert(fresh.clone()).map_err(Lookup::Limit)?;
        if !Arc::ptr_eq(&session, &fresh) {
            // Restored meanwhile by a concurrent request (with the same record and binding).
            session.touch();
            return Ok(Got::Live(session));
        }
        // Any use gives the record a full life again; the session may have been idle elsewhere.
        match self.policy.call(self.store.touch(&key, self.policy.ttl)).await {
            Ok(Some(_)) => session.link.synced_now(),
            Ok(None) => {
                // Ended between the read and the touch.
                self.unlink(&session);
                return Err(Lookup::NotFound);
            }
            Err(e) => {
                tracing::warn!(session = session.key, error = %e, "cannot touch a session record")
            }
        }
        tracing::info!(session = session.key, "session restored from the session store");
        Ok(Got::Restored(session))
    }

    /// Touches a held session's record when due: a record that is gone ends the local copy, and
    /// one changed on another replica updates it (unless this copy has a change of its own not
    /// yet written: the write that follows wins, as the last write always does).
    async fn refresh(&self, session: Arc<Session>) -> Got {
        if !session.link.claim_refresh() {
            return Got::Live(session);
        }
        let touch = self.store.touch(&session.link.key, self.policy.ttl);
        match self.policy.call(touch).await {
            Ok(Some(record)) if !session.link.dirty() => {
                let (added, removed) = session.adopt_changes(&record);
                if added.is_empty() && removed.is_empty() {
                    Got::Live(session)
                } else {
                    Got::Updated { session, added, removed }
                }
            }
            Ok(Some(_)) => Got::Live(session),
            Ok(None) => {
                tracing::info!(session = session.key, "session ended on another replica");
                self.unlink(&session);
                Got::Gone(session)
            }
            // This process can still serve it; the next use tries the store again.
            Err(e) => {
                tracing::warn!(session = session.key, error = %e, "cannot touch a session record");
                Got::Live(session)
            }
        }
    }

    /// Ends the session `id` if it belongs to `binding`: its record is deleted (a store failure
    /// refuses and changes nothing), and the local copy, if held here, is returned (its backend
    /// sessions still need ending). `Ok(None)`: the session lived on other replicas only; they
    /// notice within `refresh` of their next use, or at their idle expiry.
    pub async fn remove(
        &self,
        id: &str,
        binding: &Binding,
    ) -> Result<Option<Arc<Session>>, Lookup> {
        let held = self.map.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned();
        let key = match &held {
            Some(s) if s.binding != *binding => return Err(Lookup::Forbidden),
            Some(s) => s.link.key.clone(),
            None => {
                let key = StoreKey::of(id);
                match self.policy.call(self.store.get(&key)).await {
                    Ok(None) => return Err(Lookup::NotFound),
                    Ok(Some(r)) if r.binding != *binding => return Err(Lookup::Forbidden),
                    Ok(Some(_)) => key,
                    Err(e) => return Err(Lookup::Unavailable(e)),
                }
            }
        };
        // No write of the session's may run between the delete and the end of the local copy,
        // or it would put the record back.
        let Some(session) = held else {
            self.policy.call(self.store.delete(&key)).await.map_err(Lookup::Unavailable)?;
            return Ok(None);
        };
        let turn = session.link.writer.lock().await;
        self.policy.call(self.store.delete(&key)).await.map_err(Lookup::Unavailable)?;
        let ended = self.unlink(&session);
        drop(turn);
        Ok(ended.then_some(session))
    }

    /// Every session held here (for fan-out of notifications).
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// Number of sessions held here.
    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends the local copies of sessions idle here for longer than `max_idle` and returns them
    /// (their backend sessions still need ending). Each one's record is deleted too, unless
    /// another replica used the session within `max_idle` (then it lives on there). A store
    /// that fails is not asked again in this sweep: those records expire by their TTL.
    pub async fn expire(&self, max_idle: std::time::Duration) -> Vec<Arc<Session>> {
        let idle: Vec<Arc<Session>> = {
            let map = self.map.read().unwrap_or_else(|e| e.into_inner());
            map.values().filter(|s| s.idle() >= max_idle).cloned().collect()
        };
        // This replica's last touch may come a little after its last use; half a refresh of
        // slack keeps it from counting as another replica's.
        let min_idle = max_idle.saturating_sub(self.policy.refresh / 2);
        let mut store_up = true;
        let mut ended = Vec::with_capacity(idle.len());
        for s in idle {
            if store_up {
                let delete = self.store.delete_idle(&s.link.key, self.policy.ttl, min_idle);
                match self.policy.call(delete).await {
                    Ok(true) => {}
                    Ok(false) => tracing::debug!(session = s.key, "session in use elsewhere"),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot delete expired session records");
                        store_up = false;
                    }
                }
            }
            if self.unlink(&s) {
                ended.push(s);
            }
        }
        ended
    }

    /// Ends every local copy without touching the store, and returns them (their backend
    /// sessions still need ending): at shutdown, other replicas continue the sessions.
    pub fn drain(&self) -> Vec<Arc<Session>> {
        let all: Vec<Arc<Session>> = {
            let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
            map.drain().map(|(_, s)| s).collect()
        };
        for s in &all {
            s.close();
        }
        all
    }
}

#[cfg(test)]
mod tests;
