//! Legacy (2025-11-25 and older) backend sessions: opening (`initialize`), ending (DELETE),
//! leasing one from the pool ([`super::pool`] decides which), renewing one the backend forgot, and
//! the GET listener that carries the backend's server-initiated notifications.
//!
//! Invariants:
//! - A session holds its id, version and listener token; never a credential. Every exchange on
//!   it takes the caller of the request that causes it; work without a request behind it (ending
//!   a session, holding its GET stream) uses the entry's own caller ([`Key::ending_caller`]):
//!   `Caller::System` for the gateway's entry, `Caller::Teardown(binding)` for a principal's,
//!   which resolves that principal's current credentials when used.
//! - At most one listener runs per session, and a session's listener stops when the session is
//!   renewed, ended, or the backend says there is no stream (405) or no session (404).
//! - A GET stream is held only where something arrives on it for someone: the gateway's own
//!   entry (list_changed for the catalog) and entries that subscribed to resources or set a log
//!   level. An idle client session costs no connection.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use sse_stream::SseByteStream;
use tokio_util::sync::CancellationToken;

use super::Inner;
use super::pool::{Key, Slot};
use super::post::{Post, describe};
use crate::auth::Caller;
use crate::backend::limit::sse_bytes;
use crate::backend::{BackendError, BackendEvent, CallContext, Reply, ServerInfo};
use crate::protocol::{self, Id, Message, Notification, Request, meta};

/// One backend session.
#[derive(Debug)]
pub(super) struct LegacySession {
    /// `Mcp-Session-Id` the backend assigned (a backend may run without sessions).
    pub id: Option<String>,
    /// Negotiated version.
    pub version: String,
    /// Stops this session's notification listener.
    pub listener: CancellationToken,
}

impl Inner {
    /// `initialize` + `notifications/initialized`. With `client_meta`, the backend is told the
    /// client's capabilities and info, so it offers that client only what it can relay.
    pub(super) async fn open_session(
        &self,
        caller: &Caller,
        client: Option<u64>,
        client_meta: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<(ServerInfo, Arc<LegacySession>), BackendError> {
        let fail = |reason: String| self.unavailable(reason);
        // Only a client's own entry tells the backend that client's capabilities.
        let client_meta = client_meta.filter(|_| client.is_some());
        let mut params: serde_json::Value =
            serde_json::from_str(crate::backend::initialize_params().get())
                .map_err(|e| fail(e.to_string()))?;
        if let Some(m) = client_meta {
            if let Some(caps) = m.get(meta::KEY_CLIENT_CAPABILITIES) {
                params["capabilities"] = caps.clone();
            }
            if let Some(info) = m.get(meta::KEY_CLIENT_INFO).filter(|v| v.is_object()) {
                params["clientInfo"] = info.clone();
            }
        }
        let body = Message::Request(Request::new(
            Id::Number(0),
            "initialize",
            Some(protocol::jsonrpc::raw(&params)),
        ));
        let req = self
            .to(reqwest::Method::POST)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json, text/event-stream")
            .timeout(self.spec.timeout)
            .body(body.to_bytes());
        // A credential failure stays what it is: it decides between "log in again" (401) and
        // "retry later" (503) for the client, where "backend unavailable" would decide nothing.
        let req = self.spec.auth.apply(caller, req).await?;
        let resp = req.send().await.map_err(|e| fail(describe(&e)))?;
        match resp.status() {
            s if s.is_success() => {}
            s @ (reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN) => {
                return Err(BackendError::Refused {
                    backend: self.spec.name.to_string(),
                    status: s.as_u16(),
                });
            }
            s => return Err(fail(format!("initialize answered HTTP {s}"))),
        }
        let id = resp
            .headers()
            .get(protocol::HEADER_SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let ctx = CallContext::detached();
        let info = match self.read_reply(resp, 0, &ctx).await.map_err(|e| fail(e.to_string()))? {
            Reply::Result(r) => crate::backend::parse_initialize_result(&r).map_err(fail)?,
            Reply::Error(e) => {
                return Err(fail(format!("initialize failed: {} ({})", e.message, e.code)));
            }
        };
        let session = Arc::new(LegacySession {
            id,
            version: info.protocol_version.clone(),
            listener: self.stop.child_token(),
        });
        let note = Message::Notification(Notification::new("notifications/initialized", None));
        self.post(caller, Post::plain(&info, Some(&session), &note)).await.map_err(|e| match e
            .into_backend(&self.spec.name)
        {
            BackendError::Auth(e) => BackendError::Auth(e),
            other => fail(other.to_string()),
        })?;
        Ok((info, session))
    }

    /// Ends a backend session: stops its listener and sends DELETE with `caller`'s credentials.
    pub(super) async fn close_session(&self, caller: &Caller, session: &LegacySession) {
        session.listener.cancel();
        let Some(id) = &session.id else { return };
        let req = self
            .to(reqwest::Method::DELETE)
            .header(protocol::HEADER_SESSION_ID, id)
            .header(protocol::HEADER_PROTOCOL_VERSION, &session.version)
            .timeout(std::time::Duration::from_secs(5));
        if let Ok(req) = self.spec.auth.apply(caller, req).await
            && let Err(e) = req.send().await
        {
            tracing::debug!(backend = %self.spec.name, error = %describe(&e), "ending backend session failed");
        }
    }

    /// The backend session a Legacy-backend request by `caller` for client session `client` uses:
    /// its pool entry's (see [`super::pool`]), opened on first use with `caller`'s credentials
    /// and, for a client's entry, the client's capabilities.
    pub(super) async fn lease(
        self: &Arc<Self>,
        caller: &Caller,
        client: Option<u64>,
        client_meta: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Lease, BackendError> {
        let (slot, evicted) = self
            .pool
            .checkout(Key::of(caller, client))
            .map_err(|full| self.unavailable(full.to_string()))?;
        self.end_slots(evicted);
        let session = self.session_of(&slot, caller, client_meta).await?;
        Ok(Lease { slot, session })
    }

    /// The entry's current session, or a new one opened with `caller` (who owns the entry: its
    /// key was derived from this caller).
    async fn session_of(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        caller: &Caller,
        client_meta: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Arc<LegacySession>, BackendError> {
        // The pool's promise, checked where a session is opened: an entry's session is only
        // ever opened (or renewed) with the credentials of the principal it belongs to.
        if Key::of(caller, slot.key.client) != slot.key {
            return Err(self.unavailable("backend session belongs to another principal"));
        }
        if let Some(m) = client_meta {
            let _ = slot.client_meta.set(m.clone());
        }
        let client_meta = client_meta.or(slot.client_meta.get());
        let cell = slot.cell.load_full();
        let session = cell
            .get_or_try_init(|| async {
                let (info, session) =
                    self.open_session(caller, slot.key.client, client_meta).await?;
                self.restore(caller, &info, &session, slot).await;
                if slot.listening.load(Ordering::Relaxed) {
                    self.spawn_listener(info.clone(), session.clone(), slot);
                }
                if slot.key == Key::system() {
                    // A renewed gateway session: rediscover, the backend may have changed.
                    self.status.ready(info);
                }
                Ok::<_, BackendError>(session)
            })
            .await?;
        Ok(session.clone())
    }

    /// Sets again on a new session what its entry's earlier sessions carried (log level,
    /// resource subscriptions), as `caller`, the entry's own principal. A refusal is logged: the
    /// backend may have withdrawn what it allowed before, and the client's next request tells.
    async fn restore(
        &self,
        caller: &Caller,
        info: &ServerInfo,
        session: &LegacySession,
        slot: &Slot,
    ) {
        let state = slot.state().clone();
        let level = state.log_level.iter().map(|l| ("logging/setLevel", "level", l.as_str()));
        let uris = state.subscriptions.iter().map(|u| ("resources/subscribe", "uri", u.as_str()));
        for (method, key, value) in level.chain(uris) {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let params = protocol::jsonrpc::raw(&serde_json::json!({ key: value }));
            let body = Message::Request(Request::new(Id::Number(id), method, Some(params)));
            let outcome = match self.post(caller, Post::plain(info, Some(session), &body)).await {
                Ok(resp) => self.read_reply(resp, id, &CallContext::detached()).await,
                Err(e) => Err(e.into_backend(&self.spec.name)),
            };
            if !matches!(outcome, Ok(Reply::Result(_))) {
                tracing::warn!(backend = %self.spec.name, method, "could not restore a renewed backend session's state");
            }
        }
    }

    /// The backend answered 404 for `lease`'s session: it forgot it. Stops that session's
    /// listener and opens the entry's next session with `caller`, the caller of the request that
    /// found it gone (the entry's own principal, by its key; `Caller::System` for the gateway's).
    /// Concurrent renewals of one entry open one session.
    pub(super) async fn renew(
        self: &Arc<Self>,
        caller: &Caller,
        lease: &Lease,
        client_meta: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Lease, BackendError> {
        let current = lease.slot.cell.load_full();
        if current.get().is_some_and(|s| Arc::ptr_eq(s, &lease.session)) {
            // Only the first to notice replaces the cell; later ones find the new one.
            lease.slot.cell.compare_and_swap(&current, Arc::new(tokio::sync::OnceCell::new()));
        }
        lease.session.listener.cancel();
        tracing::info!(backend = %self.spec.name, client = ?lease.slot.key.client, "backend session expired; opening a new one");
        let session = self.session_of(&lease.slot, caller, client_meta).await?;
        Ok(Lease { slot: lease.slot.clone(), session })
    }

    /// Keeps a GET listener on `lease`'s entry from now on, after a request whose effects the
    /// backend reports on the GET stream (a resource subscription, a log level).
    pub(super) fn arm(self: &Arc<Self>, info: &ServerInfo, lease: &Lease) {
        if !lease.slot.listening.swap(true, Ordering::Relaxed) {
            // The entry's current session: `lease`'s may have been renewed meanwhile.
            let session = lease.slot.current().unwrap_or_else(|| lease.session.clone());
            self.spawn_listener(info.clone(), session, &lease.slot);
        }
    }

    pub(super) fn spawn_listener(
        self: &Arc<Self>,
        info: ServerInfo,
        session: Arc<LegacySession>,
        slot: &Arc<Slot>,
    ) {
        tokio::spawn(self.clone().listen(info, session, Arc::downgrade(slot)));
    }

    /// Ends the sessions of entries removed from the pool (evicted or idle), each with its
    /// entry's ending caller, in the background: the request that made room does not wait.
    pub(super) fn end_slots(self: &Arc<Self>, slots: Vec<Arc<Slot>>) {
        for slot in slots {
            let Some(session) = slot.current() else { continue };
            session.listener.cancel();
            let inner = self.clone();
            tokio::spawn(async move {
                inner.close_session(&slot.key.ending_caller(), &session).await;
            });
        }
    }

    /// Holds the session's GET stream open for server-initiated notifications until the session
    /// ends. No request is behind it: each (re)open goes with the entry's own caller, so a
    /// principal's stream carries that principal's current credentials. A 405 means the backend offers no stream: the
    /// listener stops for good. A 404 means the backend forgot the session: the listener stops
    /// (the gateway's own entry, and one carrying subscriptions or a log level, is renewed at
    /// once, with the entry's own caller, and its state set again; another is renewed by its
    /// client's next request).
    async fn listen(
        self: Arc<Self>,
        info: ServerInfo,
        session: Arc<LegacySession>,
        slot: Weak<Slot>,
    ) {
        let mut delay = LISTEN_RETRY_START;
        let key = match slot.upgrade() {
            Some(s) => s.key.clone(),
            None => return,
        };
        while !session.listener.is_cancelled() {
            let outcome = tokio::select! {
                _ = session.listener.cancelled() => return,
                o = self.listen_once(&info, &session, &key) => o,
            };
            match outcome {
                Listened::Streamed => delay = LISTEN_RETRY_START,
                Listened::Failed => delay = (delay * 2).min(LISTEN_RETRY_MAX),
                Listened::NoStream => {
                    tracing::debug!(backend = %self.spec.name, "backend offers no GET stream (405); not listening");
                    return;
                }
                Listened::Gone => {
                    let Some(slot) = slot.upgrade() else { return };
                    // The gateway's own session, and one carrying a client's subscriptions or log
                    // level, are renewed now: their notifications must not wait for a request.
                    // Others wait for their client's next request.
                    if key != Key::system() && !slot.has_state() {
                        session.listener.cancel();
                        return;
                    }
                    let lease = Lease { slot, session: session.clone() };
                    match self.renew(&key.ending_caller(), &lease, None).await {
                        Ok(_) => {}
                        Err(e) if key == Key::system() => {
                            // Without its own session the gateway would miss list_changed:
                            // let the supervisor reconnect with backoff instead.
                            tracing::warn!(backend = %self.spec.name, error = %e, "renewing the gateway's backend session failed");
                            self.status.down(e.to_string());
                        }
                        Err(e) => {
                            tracing::debug!(backend = %self.spec.name, error = %e, "renewing a client's backend session failed; its next request will");
                        }
                    }
                    return;
                }
            }
            tokio::select! {
                _ = session.listener.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One GET stream, read to its end.
    async fn listen_once(&self, info: &ServerInfo, session: &LegacySession, key: &Key) -> Listened {
        let mut req = self
            .to(reqwest::Method::GET)
            .header(http::header::ACCEPT, "text/event-stream")
            .header(protocol::HEADER_PROTOCOL_VERSION, &info.protocol_version);
        if let Some(id) = &session.id {
            req = req.header(protocol::HEADER_SESSION_ID, id);
        }
        // A principal's stream is theirs (their log messages, their subscriptions): with no
        // credentials a backend that wants the user's token would refuse it.
        let Ok(req) = self.spec.auth.apply(&key.ending_caller(), req).await else {
            return Listened::Failed;
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                if super::post::unreachable(&e) && *key == Key::system() {
                    // The gateway's stream cannot reach the backend: it is down.
                    self.status.down(describe(&e));
                }
                return Listened::Failed;
            }
        };
        match resp.status() {
            s if s.is_success() => {}
            reqwest::StatusCode::METHOD_NOT_ALLOWED => return Listened::NoStream,
            reqwest::StatusCode::NOT_FOUND if session.id.is_some() => return Listened::Gone,
            _ => return Listened::Failed,
        }
        let mut events = SseByteStream::new(sse_bytes(resp, self.spec.limits.max_reply_bytes));
        while let Some(Ok(event)) = events.next().await {
            let Some(data) = event.data.filter(|d| !d.is_empty()) else { continue };
            let Ok(Message::Notification(n)) = Message::parse(data.as_bytes()) else { continue };
            // A principal's Modern entry is shared by no client session, so what it hears has
            // no single recipient; only resource updates (for subscriptions the gateway keeps per
            // URI across clients) go on. Nothing else is broadcast.
            if key.is_principal_modern() && n.method != "notifications/resources/updated" {
                tracing::debug!(backend = %self.spec.name, method = %n.method, "dropped a notification of a principal's backend session");
                continue;
            }
            let _ = self.spec.events.send(BackendEvent {
                backend: self.spec.name.clone(),
                session: key.client,
                principal: key.principal(),
                notification: n,
            });
        }
        Listened::Streamed
    }
}

/// How one GET stream went.
enum Listened {
    /// It opened and later ended.
    Streamed,
    /// It could not be opened (transport failure, an unexpected status): retry with backoff.
    Failed,
    /// 405: the backend has no GET stream.
    NoStream,
    /// 404: the backend forgot the session.
    Gone,
}

const LISTEN_RETRY_START: Duration = Duration::from_millis(500);
const LISTEN_RETRY_MAX: Duration = Duration::from_secs(30);

/// A request's hold on a pool entry and the session serving it. While a lease lives, the entry is
/// not evicted or idled out.
#[derive(Clone)]
pub(super) struct Lease {
    pub slot: Arc<Slot>,
    pub session: Arc<LegacySession>,
}
