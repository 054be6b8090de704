//! Sessions coming and going: `initialize`, lookup (restoring a session held elsewhere), DELETE,
//! idle expiry and shutdown, each with what it does to the session's shared record (see the
//! module doc of [`super`]).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use rand::RngCore;

use super::link::Link;
use super::{
    CreateError, Got, LimitError, Lookup, Session, SessionRecord, Sessions, StoreError, StoreKey,
    record,
};
use crate::auth::Binding;

/// Record deletions of one expiry sweep in flight at once.
const EXPIRY_CONCURRENCY: usize = 16;

impl Sessions {
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
        if map.count(&session.binding) >= limit {
            return Err(LimitError::SessionsPerPrincipal { limit });
        }
        map.insert(session.clone());
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
            Ok(Some(latest)) => {
                // Changed between the read and the touch: the later one holds.
                session.adopt_changes(&latest);
                session.link.synced_now();
            }
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
        if !self.store.is_shared() || !session.link.claim_refresh() {
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
        let store_up = AtomicBool::new(true);
        let deletes = futures::stream::iter(idle).map(|s| {
            let store_up = &store_up;
            async move {
                if store_up.load(Ordering::Relaxed) {
                    let delete = self.store.delete_idle(&s.link.key, self.policy.ttl, min_idle);
                    match self.policy.call(delete).await {
                        Ok(true) => {}
                        Ok(false) => tracing::debug!(session = s.key, "session in use elsewhere"),
                        Err(e) => {
                            if store_up.swap(false, Ordering::Relaxed) {
                                tracing::warn!(error = %e, "cannot delete expired session records");
                            }
                        }
                    }
                }
                s
            }
        });
        // A few at a time: a slow store delays the sweep, never stalls it for long.
        let done: Vec<Arc<Session>> = deletes.buffer_unordered(EXPIRY_CONCURRENCY).collect().await;
        done.into_iter().filter(|s| self.unlink(s)).collect()
    }

    /// Ends every local copy without touching the store, and returns them (their backend
    /// sessions still need ending): at shutdown, other replicas continue the sessions.
    pub fn drain(&self) -> Vec<Arc<Session>> {
        let all: Vec<Arc<Session>> = {
            let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
            map.drain()
        };
        for s in &all {
            s.close();
        }
        all
    }
}
