//! One Legacy client session as this process holds it: what the client negotiated (shared with
//! other replicas through its record), and what only this process can hold (relays, in-flight
//! requests, GET streams).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::limit::{self, LimitError, Permit};
use super::link::Link;
use super::record::{RECORD_VERSION, SessionRecord};
use crate::auth::Binding;
use crate::backend::Backend;
use crate::config::LimitsConfig;
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
    /// When the session was created (seconds since the Unix epoch).
    pub created_at: u64,
    /// Cancelled when the session ends, which ends its GET streams.
    pub(super) closed: tokio_util::sync::CancellationToken,
    /// The tie to the shared record.
    pub(super) link: Link,
    /// Resource URIs this session subscribed to.
    pub(super) subscriptions: Mutex<HashSet<String>>,
    /// Minimum log level requested with `logging/setLevel` (index into [`LOG_LEVELS`]).
    pub(super) log_level: std::sync::atomic::AtomicUsize,
    /// Relayed server-to-client requests, by the id the client saw, with when they were sent.
    pub(super) relays: Mutex<HashMap<String, (Instant, PendingRelay, limit::Slot)>>,
    /// Relays pending in all sessions together (`maxPendingRelays`); each entry holds a slot.
    pub(super) all_relays: Arc<AtomicUsize>,
    pub(super) next_relay: AtomicU64,
    /// In-flight client requests, for `notifications/cancelled`.
    pub(super) in_flight: Mutex<HashMap<Id, tokio::task::AbortHandle>>,
    /// Admitted requests still running (held by their [`Permit`]s).
    pub(super) active: Arc<AtomicUsize>,
    /// Open GET streams (held by their [`Permit`]s).
    pub(super) streams: Arc<AtomicUsize>,
    /// Last time a request used this session.
    pub(super) last_seen: Mutex<Instant>,
    /// The gateway's limits (shared by all sessions).
    pub(super) limits: Arc<LimitsConfig>,
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
        subs.insert(uri.to_owned());
        self.link.changed();
        Ok(true)
    }

    /// Removes a resource subscription; returns whether it existed.
    pub fn unsubscribe(&self, uri: &str) -> bool {
        let removed = lock(&self.subscriptions).remove(uri);
        if removed {
            self.link.changed();
        }
        removed
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
                if self.log_level.swap(i, Ordering::Relaxed) != i {
                    self.link.changed();
                }
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

    /// Whether a GET stream of this session is open here.
    pub fn has_stream(&self) -> bool {
        self.streams.load(Ordering::Acquire) > 0
    }

    /// The key of this session's record (and bus channel).
    pub fn store_key(&self) -> &super::StoreKey {
        &self.link.key
    }

    /// Whether backend event `e` is for this session's GET stream: it came on this session's
    /// own backend session or on one of its principal's (or a shared one), and it is a resource
    /// update the session subscribed to, or a log message at a level it wants from its own
    /// backend session (a shared session's logs may be anyone's).
    pub fn wants(&self, e: &crate::backend::BackendEvent) -> bool {
        let ours = e.session.is_none_or(|k| k == self.key)
            && e.principal.as_ref().is_none_or(|p| *p == self.binding);
        let params = e.notification.params.as_deref();
        ours && match e.notification.method.as_str() {
            "notifications/resources/updated" => crate::protocol::params::get_str(params, "uri")
                .is_some_and(|u| self.is_subscribed(&u)),
            "notifications/message" => {
                e.session == Some(self.key)
                    && self.wants_log(
                        &crate::protocol::params::get_str(params, "level").unwrap_or_default(),
                    )
            }
            _ => false,
        }
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

    pub(super) fn touch(&self) {
        *lock(&self.last_seen) = Instant::now();
    }

    /// Time since the session was last used.
    pub fn idle(&self) -> std::time::Duration {
        lock(&self.last_seen).elapsed()
    }

    pub(super) fn close(&self) {
        self.closed.cancel();
        for (_, h) in lock(&self.in_flight).drain() {
            h.abort();
        }
        lock(&self.relays).clear();
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these short locks leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Session {
    /// What other replicas need to continue this session.
    pub fn record(&self) -> SessionRecord {
        let mut subscriptions = self.subscriptions();
        subscriptions.sort_unstable();
        let level = self.log_level.load(Ordering::Relaxed);
        SessionRecord {
            version: RECORD_VERSION,
            binding: self.binding.clone(),
            protocol_version: self.protocol_version.clone(),
            client_capabilities: self.client_capabilities.clone(),
            client_info: self.client_info.clone(),
            subscriptions,
            // `debug` is where every session starts: only a level the client set is recorded.
            log_level: (level != 0).then(|| self.log_level().to_owned()),
            created_at: self.created_at,
        }
    }

    /// Takes over what a record holds (restored on this replica, or changed on another one);
    /// returns the URIs it adds to this copy's subscriptions and those it removes. Not a change
    /// to write: the record already holds it.
    pub(super) fn adopt_changes(&self, record: &SessionRecord) -> (Vec<String>, Vec<String>) {
        let limit = self.limits.max_subscriptions_per_session;
        let theirs: HashSet<String> = record.subscriptions.iter().take(limit).cloned().collect();
        let mut ours = lock(&self.subscriptions);
        let added = theirs.difference(&ours).cloned().collect();
        let removed = ours.difference(&theirs).cloned().collect();
        *ours = theirs;
        drop(ours);
        let level =
            record.log_level.as_deref().and_then(|l| LOG_LEVELS.iter().position(|x| *x == l));
        self.log_level.store(level.unwrap_or(0), Ordering::Relaxed);
        (added, removed)
    }

    /// Writes changes to the subscriptions or log level to the shared record, if any are
    /// unwritten; called before a request's answer goes out, so a client that saw the answer
    /// finds the change on every replica. A failure is logged and the change stays unwritten
    /// (the next request's write tries again); the change holds in this process either way.
    pub async fn flush(&self) {
        if !self.link.dirty() {
            return;
        }
        let _turn = self.link.writer.lock().await;
        // A removed session is never written back.
        if !self.link.dirty() || self.closed.is_cancelled() {
            return;
        }
        let v = self.link.version();
        let record = self.record();
        let policy = self.link.policy;
        match policy.call(self.link.store.put(&self.link.key, &record, policy.ttl)).await {
            Ok(()) => self.link.written(v),
            Err(e) => tracing::warn!(
                session = self.key,
                error = %e,
                "could not write the session's change to the session store; another replica \
                 would continue without it until a later write succeeds"
            ),
        }
    }
}
