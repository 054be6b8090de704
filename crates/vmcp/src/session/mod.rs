//! Client sessions of the Legacy era (2025-11-25 and older): created by `initialize`, named by an
//! unguessable `Mcp-Session-Id`, ended by DELETE.
//!
//! The sessions also hold the client-facing admission limits (`server.limits`): how many sessions
//! exist in total and per principal, how many requests run at once in total and per session, and
//! per session how many GET streams, pending relays and subscriptions there are.
//!
//! Invariants:
//! - A session stores its [`Binding`] (who opened it), never a credential.
//! - Session ids carry 256 random bits.
//! - Locks here are held only for map operations, never across an await.
//! - Every count that client input can grow has a limit; hitting it refuses that one request
//!   ([`LimitError`]) and changes nothing else.
//! - An admitted request or stream holds a permit whose drop gives the slot back, so a slot is
//!   returned however the work ends (answer, error, abort, dropped connection).

mod limit;
mod listen;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use rand::RngCore;

use crate::auth::Binding;
use crate::backend::Backend;
use crate::config::LimitsConfig;
use crate::protocol::{Id, Message};

pub use limit::{LimitError, Permit};
pub use listen::ListenPermit;

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
    /// Relayed server-to-client requests, by the id the client saw, with when they were sent.
    relays: Mutex<HashMap<String, (Instant, PendingRelay, limit::Slot)>>,
    /// Relays pending in all sessions together (`maxPendingRelays`); each entry holds a slot.
    all_relays: Arc<AtomicUsize>,
    next_relay: AtomicU64,
    /// In-flight client requests, for `notifications/cancelled`.
    in_flight: Mutex<HashMap<Id, tokio::task::AbortHandle>>,
    /// Admitted requests still running (held by their [`Permit`]s).
    active: Arc<AtomicUsize>,
    /// Open GET streams (held by their [`Permit`]s).
    streams: Arc<AtomicUsize>,
    /// Last time a request used this session.
    last_seen: Mutex<Instant>,
    /// The gateway's limits (shared by all sessions).
    limits: Arc<LimitsConfig>,
}

/// Log levels in increasing severity (RFC 5424 names as MCP uses them).
pub const LOG_LEVELS: &[&str] =
    &["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"];

impl Session {
    /// A token cancelled when the session ends.
    pub fn closed(&self) -> tokio_util::sync::CancellationToken {
        self.closed.clone()
    }

    /// Records a resource subscription; returns whether it is new. A new one beyond
    /// `maxSubscriptionsPerSession` is refused.
    pub fn subscribe(&self, uri: &str) -> Result<bool, LimitError> {
        let mut subs = lock(&self.subscriptions);
        if subs.contains(uri) {
            return Ok(false);
        }
        let limit = self.limits.max_subscriptions_per_session;
        if subs.len() >= limit {
            return Err(LimitError::SubscriptionsPerSession { limit });
        }
        Ok(subs.insert(uri.to_owned()))
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
    ///
    /// Relays older than `pendingRelayTimeout`, and local ones nobody waits for any more, are
    /// dropped first; beyond `maxPendingRelaysPerSession` the relay is refused.
    pub fn add_relay(&self, relay: PendingRelay) -> Result<Id, LimitError> {
        let mut relays = lock(&self.relays);
        let max_age = self.limits.pending_relay_timeout;
        relays.retain(|_, (at, r, _)| {
            at.elapsed() < max_age && !matches!(r, PendingRelay::Local(tx) if tx.is_closed())
        });
        let limit = self.limits.max_pending_relays_per_session;
        if relays.len() >= limit {
            return Err(LimitError::PendingRelaysPerSession { limit });
        }
        let total = self.limits.max_pending_relays;
        let slot = Permit::acquire(&self.all_relays, total)
            .ok_or(LimitError::PendingRelays { limit: total })?;
        let n = self.next_relay.fetch_add(1, Ordering::Relaxed);
        let id = format!("vmcp-{n}");
        relays.insert(id.clone(), (Instant::now(), relay, slot));
        Ok(Id::String(id))
    }

    /// Takes the relay a client response answers (none once it has expired).
    pub fn take_relay(&self, id: &Id) -> Option<PendingRelay> {
        let Id::String(s) = id else { return None };
        let (at, relay, _slot) = lock(&self.relays).remove(s)?;
        (at.elapsed() < self.limits.pending_relay_timeout).then_some(relay)
    }

    /// Number of relays waiting for the client's answer (expired ones included until the next
    /// [`Session::add_relay`] drops them).
    pub fn pending_relays(&self) -> usize {
        lock(&self.relays).len()
    }

    /// Admits one more GET stream of this session; the permit keeps the slot until dropped.
    pub fn open_stream(&self) -> Result<Permit, LimitError> {
        let limit = self.limits.max_streams_per_session;
        Permit::acquire(&self.streams, limit)
            .ok_or(LimitError::StreamsPerSession { limit })
            .map(|slot| Permit::new(vec![slot]))
    }

    /// Spawns the task handling the client request `id`, tracked so that
    /// `notifications/cancelled` can abort it; `permit` is held until the task ends.
    ///
    /// The task waits until its abort handle is registered before it runs, so its own untrack
    /// always comes after the track: a task that finishes at once cannot leave a stale entry
    /// behind (which used to leak one entry per fast request). Untracking removes only this
    /// task's entry, so a client reusing an id cannot untrack another request.
    pub fn spawn_request<F>(
        self: &Arc<Self>,
        id: Id,
        permit: Permit,
        work: F,
    ) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tracked_tx, tracked_rx) = tokio::sync::oneshot::channel::<()>();
        let session = self.clone();
        let key = id.clone();
        let task = tokio::spawn(async move {
            let _permit = permit;
            let _ = tracked_rx.await;
            let out = work.await;
            session.untrack(&key, tokio::task::id());
            out
        });
        lock(&self.in_flight).insert(id, task.abort_handle());
        let _ = tracked_tx.send(());
        task
    }

    /// Stops tracking a finished request, if the entry is still the one of task `task`.
    fn untrack(&self, id: &Id, task: tokio::task::Id) {
        let mut in_flight = lock(&self.in_flight);
        if in_flight.get(id).is_some_and(|h| h.id() == task) {
            in_flight.remove(id);
        }
    }

    /// Number of tracked in-flight requests.
    pub fn tracked(&self) -> usize {
        lock(&self.in_flight).len()
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
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(LimitsConfig::default())
    }
}

impl Sessions {
    /// No sessions yet, with these limits.
    pub fn new(limits: LimitsConfig) -> Self {
        Self {
            map: RwLock::default(),
            next_key: AtomicU64::new(0),
            active: Arc::default(),
            active_per_principal: Default::default(),
            relays: Arc::default(),
            listens: Default::default(),
            limits: Arc::new(limits),
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

    /// Creates a session for a client that sent `initialize`, unless `maxSessions` or the
    /// principal's `maxSessionsPerPrincipal` is reached.
    pub fn create(
        &self,
        binding: Binding,
        protocol_version: String,
        client_capabilities: serde_json::Value,
        client_info: serde_json::Value,
    ) -> Result<Arc<Session>, LimitError> {
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
            all_relays: self.relays.clone(),
            next_relay: AtomicU64::new(1),
            in_flight: Mutex::default(),
            active: Arc::default(),
            streams: Arc::default(),
            last_seen: Mutex::new(Instant::now()),
            limits: self.limits.clone(),
        });
        // Counted under the write lock, so concurrent `initialize`s cannot both take the last slot.
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let limit = self.limits.max_sessions;
        if map.len() >= limit {
            return Err(LimitError::Sessions { limit });
        }
        let limit = self.limits.max_sessions_per_principal;
        if map.values().filter(|s| s.binding == session.binding).count() >= limit {
            return Err(LimitError::SessionsPerPrincipal { limit });
        }
        map.insert(id, session.clone());
        Ok(session)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(sub: &str) -> Binding {
        Binding::Principal { issuer: "iss".into(), subject: sub.into() }
    }

    fn sessions(limits: LimitsConfig) -> Sessions {
        Sessions::new(limits)
    }

    fn open(s: &Sessions, who: &str) -> Result<Arc<Session>, LimitError> {
        s.create(binding(who), "2025-11-25".into(), serde_json::json!({}), serde_json::json!({}))
    }

    #[test]
    fn session_caps_total_and_per_principal() {
        let s = sessions(LimitsConfig {
            max_sessions: 3,
            max_sessions_per_principal: 2,
            ..Default::default()
        });
        let a1 = open(&s, "a").unwrap();
        open(&s, "a").unwrap();
        assert_eq!(
            open(&s, "a").err(),
            Some(LimitError::SessionsPerPrincipal { limit: 2 }),
            "third of one principal"
        );
        open(&s, "b").unwrap();
        assert_eq!(open(&s, "c").err(), Some(LimitError::Sessions { limit: 3 }));
        assert_eq!(s.len(), 3, "a refused create adds nothing");
        s.remove(&a1.id, &binding("a")).unwrap();
        open(&s, "c").expect("a freed slot is usable again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fast_requests_leave_nothing_tracked() {
        // Before the fix the task was spawned and only then tracked: a task that finished first
        // untracked nothing and the later track left an entry behind forever. On a multi-thread
        // runtime that happened for a good share of these immediately-ready tasks.
        let s = sessions(LimitsConfig::default());
        let session = open(&s, "a").unwrap();
        for i in 0..2000 {
            let permit = s.admit(&session.binding, Some(&session)).unwrap();
            let task = session.spawn_request(Id::Number(i), permit, async {});
            task.await.unwrap();
        }
        // The permit is dropped when the task's future is dropped, right after it completes.
        assert_eq!(session.tracked(), 0, "in_flight entries leaked");
        assert_eq!(s.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_reused_id_does_not_untrack_the_other_request() {
        let s = sessions(LimitsConfig::default());
        let session = open(&s, "a").unwrap();
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let first = session.spawn_request(
            Id::Number(1),
            s.admit(&session.binding, Some(&session)).unwrap(),
            async {
                let _ = wait.await;
            },
        );
        // The client reuses id 1 while the first request runs; the entry is now the second's.
        let second = session.spawn_request(
            Id::Number(1),
            s.admit(&session.binding, Some(&session)).unwrap(),
            std::future::pending::<()>(),
        );
        release.send(()).unwrap();
        first.await.unwrap();
        assert_eq!(session.tracked(), 1, "the first request removed the second one's entry");
        assert!(session.cancel(&Id::Number(1)), "the running request stays cancellable");
        assert!(second.await.unwrap_err().is_cancelled());
        assert_eq!(s.in_flight(), 0, "aborted tasks give their slots back");
    }

    #[tokio::test]
    async fn in_flight_caps_refuse_and_give_back() {
        let s = sessions(LimitsConfig {
            max_in_flight: 3,
            max_in_flight_per_session: 2,
            ..Default::default()
        });
        let a = open(&s, "a").unwrap();
        let who = a.binding.clone();
        let p1 = s.admit(&who, Some(&a)).unwrap();
        let _p2 = s.admit(&who, Some(&a)).unwrap();
        assert_eq!(
            s.admit(&who, Some(&a)).err(),
            Some(LimitError::InFlightPerSession { limit: 2 })
        );
        assert_eq!(s.in_flight(), 2, "a refused per-session admit gives the global slot back");
        let _p3 = s.admit(&who, None).unwrap();
        assert_eq!(s.admit(&who, None).err(), Some(LimitError::InFlight { limit: 3 }));
        drop(p1);
        s.admit(&who, Some(&a)).expect("slot returned on drop");
    }

    #[tokio::test]
    async fn one_principal_cannot_take_every_slot() {
        let s = sessions(LimitsConfig {
            max_in_flight: 4,
            max_in_flight_per_principal: 2,
            ..Default::default()
        });
        let user = |n: &str| Binding::Principal { issuer: "i".into(), subject: n.into() };
        let (a, b) = (user("a"), user("b"));
        let _a1 = s.admit(&a, None).unwrap();
        let _a2 = s.admit(&a, None).unwrap();
        assert_eq!(s.admit(&a, None).err(), Some(LimitError::InFlightPerPrincipal { limit: 2 }));
        assert_eq!(s.in_flight(), 2, "a refused per-principal admit gives the global slot back");
        let _b1 = s.admit(&b, None).expect("another principal still gets in");
    }

    #[test]
    fn pending_relays_are_capped_across_sessions_and_given_back() {
        let s = sessions(LimitsConfig { max_pending_relays: 2, ..Default::default() });
        let a = open(&s, "a").unwrap();
        let b = open(&s, "b").unwrap();
        let (tx1, _rx1) = tokio::sync::oneshot::channel();
        let (tx2, _rx2) = tokio::sync::oneshot::channel();
        let (tx3, _rx3) = tokio::sync::oneshot::channel();
        let first = a.add_relay(PendingRelay::Local(tx1)).unwrap();
        b.add_relay(PendingRelay::Local(tx2)).unwrap();
        let (tx, _rx) = tokio::sync::oneshot::channel();
        assert_eq!(
            a.add_relay(PendingRelay::Local(tx)).err(),
            Some(LimitError::PendingRelays { limit: 2 })
        );
        // An answered relay gives its slot back to every session.
        assert!(a.take_relay(&first).is_some());
        b.add_relay(PendingRelay::Local(tx3)).expect("the answered relay freed its slot");
        // A closed session's relays go too.
        b.close();
        let (tx4, _rx4) = tokio::sync::oneshot::channel();
        a.add_relay(PendingRelay::Local(tx4)).expect("the closed session freed its slots");
    }

    #[test]
    fn relays_streams_and_subscriptions_are_capped() {
        let s = sessions(LimitsConfig {
            max_pending_relays_per_session: 2,
            max_streams_per_session: 1,
            max_subscriptions_per_session: 1,
            ..Default::default()
        });
        let a = open(&s, "a").unwrap();
        let (tx1, _rx1) = tokio::sync::oneshot::channel();
        let (tx2, rx2) = tokio::sync::oneshot::channel();
        let (tx3, _rx3) = tokio::sync::oneshot::channel();
        a.add_relay(PendingRelay::Local(tx1)).unwrap();
        a.add_relay(PendingRelay::Local(tx2)).unwrap();
        let (tx, _rx) = tokio::sync::oneshot::channel();
        assert_eq!(
            a.add_relay(PendingRelay::Local(tx)).err(),
            Some(LimitError::PendingRelaysPerSession { limit: 2 })
        );
        // A relay nobody waits for any more is dropped, freeing its slot.
        drop(rx2);
        a.add_relay(PendingRelay::Local(tx3)).expect("abandoned relay freed its slot");

        let stream = a.open_stream().unwrap();
        assert_eq!(a.open_stream().err(), Some(LimitError::StreamsPerSession { limit: 1 }));
        drop(stream);
        a.open_stream().expect("closed stream freed its slot");

        assert_eq!(a.subscribe("x://1"), Ok(true));
        assert_eq!(a.subscribe("x://1"), Ok(false), "a repeat is not a new subscription");
        assert_eq!(a.subscribe("x://2"), Err(LimitError::SubscriptionsPerSession { limit: 1 }));
    }

    #[test]
    fn expired_relays_are_dropped() {
        let s = sessions(LimitsConfig {
            pending_relay_timeout: std::time::Duration::from_millis(1),
            max_pending_relays_per_session: 1,
            ..Default::default()
        });
        let a = open(&s, "a").unwrap();
        let (tx, _rx) = tokio::sync::oneshot::channel();
        let id = a.add_relay(PendingRelay::Local(tx)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(a.take_relay(&id).is_none(), "an expired relay is not answered");
        let (tx, _rx2) = tokio::sync::oneshot::channel();
        a.add_relay(PendingRelay::Local(tx)).expect("expired relay freed its slot");
    }
}
