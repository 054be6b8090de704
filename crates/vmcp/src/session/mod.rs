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
//! - Locks here are held only for map operations, never across an await; the one exception is
//!   a session's writer turn (an async mutex), held across that session's own store write.
//! - Every count that client input can grow has a limit; hitting it refuses that one request
//!   ([`LimitError`]) and changes nothing else.
//! - An admitted request or stream holds a permit whose drop gives the slot back, so a slot is
//!   returned however the work ends (answer, error, abort, dropped connection).
//! - Every store call has a deadline ([`link::STORE_TIMEOUT`]).

pub mod bus;
mod client;
mod lifecycle;
mod limit;
pub mod link;
mod listen;
pub mod record;
mod resume;
pub mod store;
mod table;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use crate::auth::Binding;
use crate::config::LimitsConfig;

pub use bus::SessionBus;
pub use client::{LOG_LEVELS, PendingRelay, Session};
pub use limit::{LimitError, Permit};
pub use listen::ListenPermit;
pub use record::SessionRecord;
pub use resume::resume;
pub use store::{LocalSessionStore, MemorySessionStore, SessionStore, StoreError, StoreKey};

use link::Policy;

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
    map: RwLock<table::Table>,
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
    /// The store's bus, if it has one.
    bus: Option<Arc<dyn SessionBus>>,
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
            bus: store.bus(),
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

    /// Every session held here (for fan-out of notifications).
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// The sessions held here for which `keep` holds (one pass under the read lock).
    pub fn matching(&self, mut keep: impl FnMut(&Session) -> bool) -> Vec<Arc<Session>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.values().filter(|s| keep(s)).cloned().collect()
    }

    /// The bus carrying notifications to streams other replicas hold; `None` without a shared
    /// store.
    pub fn bus(&self) -> Option<&Arc<dyn SessionBus>> {
        self.bus.as_ref()
    }

    /// Number of sessions held here.
    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
