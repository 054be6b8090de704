//! Client sessions of the Legacy era (2025-11-25 and older): created by `initialize`, named by an
//! unguessable `Mcp-Session-Id`, ended by DELETE.
//!
//! Invariants:
//! - A session stores its [`Binding`] (who opened it), never a credential.
//! - Session ids carry 256 random bits.
//! - Locks here are held only for map operations, never across an await.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use rand::RngCore;

use crate::auth::Binding;
use crate::backend::Backend;
use crate::protocol::{Id, Message};

/// A server-to-client request relayed to this session's client, awaiting its answer.
pub enum PendingRelay {
    /// A backend asked (Legacy backend): the answer goes back to it under its own id.
    Backend {
        /// The backend that asked.
        backend: Arc<Backend>,
        /// The backend's own id for the request.
        backend_id: Id,
    },
    /// The gateway asked on a Modern backend's behalf (an `input_required` round): the answer
    /// completes the round.
    Local(tokio::sync::oneshot::Sender<Message>),
}

/// One Legacy client session.
pub struct Session {
    /// The session id (a bearer handle: never logged whole).
    pub id: String,
    /// A number naming the session inside the gateway (logs, backend sessions).
    pub key: u64,
    /// Who opened it.
    pub binding: Binding,
    /// Negotiated protocol version.
    pub protocol_version: String,
    /// The client's declared capabilities (from `initialize`).
    pub client_capabilities: serde_json::Value,
    /// The client's `clientInfo`.
    pub client_info: serde_json::Value,
    /// Cancelled when the session ends, which ends its GET streams.
    closed: tokio_util::sync::CancellationToken,
    /// Resource URIs this session subscribed to.
    subscriptions: Mutex<HashSet<String>>,
    /// Minimum log level requested with `logging/setLevel` (index into [`LOG_LEVELS`]).
    log_level: std::sync::atomic::AtomicUsize,
    /// Relayed server-to-client requests, by the id the client saw.
    relays: Mutex<HashMap<String, PendingRelay>>,
    next_relay: AtomicU64,
    /// In-flight client requests, for `notifications/cancelled`.
    in_flight: Mutex<HashMap<Id, tokio::task::AbortHandle>>,
    /// Last time a request used this session.
    last_seen: Mutex<Instant>,
}

/// Log levels in increasing severity (RFC 5424 names as MCP uses them).
pub const LOG_LEVELS: &[&str] =
    &["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"];

impl Session {
    /// A token cancelled when the session ends.
    pub fn closed(&self) -> tokio_util::sync::CancellationToken {
        self.closed.clone()
    }

    /// Records a resource subscription; returns whether it is new.
    pub fn subscribe(&self, uri: &str) -> bool {
        lock(&self.subscriptions).insert(uri.to_owned())
    }

    /// Removes a resource subscription; returns whether it existed.
    pub fn unsubscribe(&self, uri: &str) -> bool {
        lock(&self.subscriptions).remove(uri)
    }

    /// Every URI this session subscribed to.
    pub fn subscriptions(&self) -> Vec<String> {
        lock(&self.subscriptions).iter().cloned().collect()
    }

    /// Whether the session subscribed to `uri`.
    pub fn is_subscribed(&self, uri: &str) -> bool {
        lock(&self.subscriptions).contains(uri)
    }

    /// Sets the minimum log level; `false` for an unknown level.
    pub fn set_log_level(&self, level: &str) -> bool {
        match LOG_LEVELS.iter().position(|l| *l == level) {
            Some(i) => {
                self.log_level.store(i, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// The minimum log level this client asked for (`debug` until it sets one).
    pub fn log_level(&self) -> &'static str {
        LOG_LEVELS.get(self.log_level.load(Ordering::Relaxed)).copied().unwrap_or("debug")
    }

    /// Whether a log message at `level` should reach this client.
    pub fn wants_log(&self, level: &str) -> bool {
        LOG_LEVELS
            .iter()
            .position(|l| *l == level)
            .is_none_or(|i| i >= self.log_level.load(Ordering::Relaxed))
    }

    /// Registers a relayed server-to-client request and returns the id to show the client.
    pub fn add_relay(&self, relay: PendingRelay) -> Id {
        let n = self.next_relay.fetch_add(1, Ordering::Relaxed);
        let id = format!("vmcp-{n}");
        lock(&self.relays).insert(id.clone(), relay);
        Id::String(id)
    }

    /// Takes the relay a client response answers.
    pub fn take_relay(&self, id: &Id) -> Option<PendingRelay> {
        match id {
            Id::String(s) => lock(&self.relays).remove(s),
            Id::Number(_) => None,
        }
    }

    /// Tracks an in-flight request so the client can cancel it.
    pub fn track(&self, id: Id, handle: tokio::task::AbortHandle) {
        lock(&self.in_flight).insert(id, handle);
    }

    /// Stops tracking a finished request.
    pub fn untrack(&self, id: &Id) {
        lock(&self.in_flight).remove(id);
    }

    /// Cancels an in-flight request (the backend is told through the dropped future).
    pub fn cancel(&self, id: &Id) -> bool {
        match lock(&self.in_flight).remove(id) {
            Some(h) => {
                h.abort();
                true
            }
            None => false,
        }
    }

    fn touch(&self) {
        *lock(&self.last_seen) = Instant::now();
    }

    /// Time since the session was last used.
    pub fn idle(&self) -> std::time::Duration {
        lock(&self.last_seen).elapsed()
    }

    fn close(&self) {
        self.closed.cancel();
        for (_, h) in lock(&self.in_flight).drain() {
            h.abort();
        }
        lock(&self.relays).clear();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these short locks leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a session lookup failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// No such session (never existed, expired or deleted): HTTP 404.
    NotFound,
    /// The session belongs to another principal: HTTP 403, session untouched.
    Forbidden,
}

/// All live sessions.
#[derive(Default)]
pub struct Sessions {
    map: RwLock<HashMap<String, Arc<Session>>>,
    next_key: AtomicU64,
}

impl Sessions {
    /// Creates a session for a client that sent `initialize`.
    pub fn create(
        &self,
        binding: Binding,
        protocol_version: String,
        client_capabilities: serde_json::Value,
        client_info: serde_json::Value,
    ) -> Arc<Session> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let session = Arc::new(Session {
            id: id.clone(),
            key: self.next_key.fetch_add(1, Ordering::Relaxed) + 1,
            binding,
            protocol_version,
            client_capabilities,
            client_info,
            closed: tokio_util::sync::CancellationToken::new(),
            subscriptions: Mutex::default(),
            log_level: Default::default(),
            relays: Mutex::default(),
            next_relay: AtomicU64::new(1),
            in_flight: Mutex::default(),
            last_seen: Mutex::new(Instant::now()),
        });
        self.map.write().unwrap_or_else(|e| e.into_inner()).insert(id, session.clone());
        session
    }

    /// The session `id`, if it exists and belongs to `binding`.
    pub fn get(&self, id: &str, binding: &Binding) -> Result<Arc<Session>, Lookup> {
        let session = self
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or(Lookup::NotFound)?;
        if session.binding != *binding {
            return Err(Lookup::Forbidden);
        }
        session.touch();
        Ok(session)
    }

    /// Ends the session `id` if it belongs to `binding`.
    pub fn remove(&self, id: &str, binding: &Binding) -> Result<Arc<Session>, Lookup> {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        match map.get(id) {
            None => Err(Lookup::NotFound),
            Some(s) if s.binding != *binding => Err(Lookup::Forbidden),
            Some(_) => {
                let s = map.remove(id).ok_or(Lookup::NotFound)?;
                s.close();
                Ok(s)
            }
        }
    }

    /// Every live session (for fan-out of notifications).
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends sessions idle for longer than `max_idle` and returns them (their backend sessions
    /// still need ending).
    pub fn expire(&self, max_idle: std::time::Duration) -> Vec<Arc<Session>> {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let idle: Vec<String> =
            map.iter().filter(|(_, s)| s.idle() >= max_idle).map(|(k, _)| k.clone()).collect();
        idle.iter().filter_map(|k| map.remove(k)).inspect(|s| s.close()).collect()
    }
}
