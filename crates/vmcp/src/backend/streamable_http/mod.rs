//! Streamable HTTP backends, in either protocol era.
//!
//! At connect the era is probed: `server/discover` (2026-07-28) first, then `initialize`.
//! - A Modern backend is called statelessly: each request carries `_meta` and the standard headers,
//!   and one `subscriptions/listen` stream carries its list_changed notifications.
//! - A Legacy backend's sessions come from a principal-aware [`pool`]: the gateway's own (opened
//!   at connect, for discovery and list_changed), one per Legacy client session, one per
//!   principal for its Modern clients. A session the backend forgets (404) is renewed in its
//!   entry, with the credentials of the request that found it gone ([`session`]).
//!
//! Each POST is answered as JSON or as an SSE stream carrying the request's notifications and
//! server-to-client requests before its response ([`post`]); replies are read through the size
//! cap of [`crate::backend::limit`].
//!
//! Invariant: the credentials on each POST come from that request's `Caller`; sessions hold only
//! ids and versions, and the pool only bindings.

mod listen;
mod pool;
mod post;
mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde_json::value::RawValue;
use sse_stream::SseByteStream;
use tokio_util::sync::CancellationToken;

pub use self::listen::ListenError;
use self::listen::PrincipalListens;
use self::pool::Pool;
use self::post::{Post, PostError};
use self::session::{Lease, LegacySession};
use super::{
    BackendError, BackendEvent, BackendSpec, CallContext, Reply, ServerInfo, State, Status,
};
use crate::auth::Caller;
use crate::protocol::{self, Era, Id, Message, Notification, Request, headers, meta, params};

/// A backend reached over Streamable HTTP.
pub struct HttpBackend {
    inner: Arc<Inner>,
}

struct Inner {
    spec: BackendSpec,
    /// `spec`'s URL, parsed.
    url: Option<reqwest::Url>,
    client: reqwest::Client,
    status: Status,
    /// Legacy backend sessions, by whom they serve.
    pool: Pool,
    next_id: AtomicI64,
    stop: CancellationToken,
    /// Resource URIs carried on a Modern backend's listen stream.
    listened: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Wakes the listen stream to reopen it with a changed set.
    relisten: tokio::sync::Notify,
    /// Each principal's own listen stream, when the credentials are the user's (see [`listen`]).
    principals: PrincipalListens,
    /// Serialises learning the server info with a user's credentials (see `info_for`).
    learning: tokio::sync::Mutex<()>,
}

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = super::RECONNECT_MAX;
/// Upper bound on establishing a TCP (and TLS) connection to a backend.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive interval on backend connections.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

impl HttpBackend {
    /// Starts connecting in the background.
    pub fn start(spec: BackendSpec) -> Self {
        // `caBundlePath`: extra roots, checked at config load.
        let builder = crate::config::ca_bundle::CaBundle::apply(
            spec.config.ca_bundle.as_ref(),
            reqwest::Client::builder(),
        );
        let client = builder
            .connect_timeout(spec.timeout.min(CONNECT_TIMEOUT))
            .pool_idle_timeout(Duration::from_secs(90))
            // Long-lived GET and listen streams sit idle for long stretches: keepalive probes
            // notice a peer that vanished without closing the connection.
            .tcp_keepalive(TCP_KEEPALIVE)
            .build()
            .unwrap_or_default();
        let pool = Pool::new(spec.limits.max_sessions, spec.limits.session_idle);
        let principals = PrincipalListens::new(spec.limits.max_sessions);
        let url = spec.config.url.as_deref().and_then(|u| reqwest::Url::parse(u).ok());
        let inner = Arc::new(Inner {
            spec,
            url,
            client,
            status: Status::default(),
            pool,
            next_id: AtomicI64::new(1),
            stop: CancellationToken::new(),
            listened: Default::default(),
            relisten: tokio::sync::Notify::new(),
            principals,
            learning: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(supervise(inner.clone()));
        tokio::spawn(expire_idle(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// See [`super::Backend::request`].
    pub async fn request(
        &self,
        caller: &Caller,
        method: &str,
        params: Option<Box<RawValue>>,
        ctx: CallContext,
    ) -> Result<Reply, BackendError> {
        let inner = &self.inner;
        let info = inner.info_for(caller).await?;
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let params = inner.outgoing_params(&info, params, ctx.client_meta.as_ref())?;
        let body = Message::Request(Request::new(Id::Number(id), method, params.clone()));
        let mut lease = inner.legacy_lease(&info, caller, &ctx).await?;
        let mut guard = CancelGuard {
            inner: inner.clone(),
            caller: caller.clone(),
            id,
            session: lease.as_ref().map(|l| l.session.clone()),
            armed: true,
        };
        let schema = ctx.tool_schema.as_deref();
        let base = Post {
            info: &info,
            session: None,
            body: &body,
            method: Some(method),
            params: params.as_deref(),
            tool_schema: schema,
            headers: Some(&ctx.headers),
            stream: false,
        };
        let session_of = |l: &Option<Lease>| l.as_ref().map(|l| l.session.clone());
        let current = session_of(&lease);
        let mut result = inner.post(caller, Post { session: current.as_deref(), ..base }).await;
        if let (Err(PostError::SessionExpired), Some(stale)) = (&result, &lease) {
            lease = Some(inner.renew(caller, stale, ctx.client_meta.as_ref()).await?);
            guard.session = session_of(&lease);
            let current = session_of(&lease);
            result = inner.post(caller, Post { session: current.as_deref(), ..base }).await;
        }
        let reply = match result {
            Ok(resp) => inner.read_reply(resp, id, &ctx).await,
            // Modern backends answer protocol errors (-32021, -32602, ...) with 4xx and a body.
            Err(PostError::Status(_, Some(Message::Error(e)))) => Ok(Reply::Error(e.error)),
            Err(e) => Err(inner.failed(e)),
        };
        if let (Ok(Reply::Result(_)), Some(lease)) = (&reply, &lease)
            && KEEPS_STATE.contains(&method)
        {
            // Set again on the entry's next session, should this one be renewed or evicted.
            lease.slot.state().record(method, params.as_deref());
            if method != "resources/unsubscribe" {
                // From now on the backend reports on this session's GET stream.
                inner.arm(&info, lease);
            }
        }
        // A transport failure may leave the request running at the backend: cancel it there.
        guard.armed = matches!(reply, Err(BackendError::Transport { .. }));
        reply
    }

    /// See [`super::Backend::notify`]. `session` names the client session whose backend session
    /// the notification belongs to.
    pub async fn notify(
        &self,
        caller: &Caller,
        session: Option<u64>,
        method: &str,
        params: Option<Box<RawValue>>,
    ) -> Result<(), BackendError> {
        self.send(caller, session, &Message::Notification(Notification::new(method, params))).await
    }

    /// See [`super::Backend::respond`].
    pub async fn respond(
        &self,
        caller: &Caller,
        session: Option<u64>,
        response: Message,
    ) -> Result<(), BackendError> {
        self.send(caller, session, &response).await
    }

    async fn send(
        &self,
        caller: &Caller,
        session: Option<u64>,
        msg: &Message,
    ) -> Result<(), BackendError> {
        let inner = &self.inner;
        let info = inner.ready_info()?;
        let lease = match info.era {
            Era::Legacy => Some(inner.lease(caller, session, None).await?),
            Era::Modern => None,
        };
        let session = lease.as_ref().map(|l| &*l.session);
        inner
            .post(caller, Post::plain(&info, session, msg))
            .await
            .map(drop)
            .map_err(|e| inner.failed(e))
    }

    /// Ends the backend session of a client session, with the credentials of `caller` (the
    /// principal's current ones, resolved now).
    pub async fn end_session(&self, caller: &Caller, session: u64) {
        let sessions = self.inner.pool.remove_client(session);
        let sessions = sessions.iter().filter_map(|slot| slot.current());
        futures::future::join_all(sessions.map(|s| async move {
            self.inner.close_session(caller, &s).await;
        }))
        .await;
    }

    /// See [`super::Backend::listen_resource`]. A backend whose credentials are the user's gets
    /// each principal's URIs on a stream of that principal's ([`listen`]); others get them on
    /// the gateway's own stream.
    pub async fn listen_resource(
        &self,
        caller: &Caller,
        uri: &str,
        on: bool,
    ) -> Result<(), ListenError> {
        if self.inner.spec.auth.is_user_bound() && !matches!(caller, Caller::System) {
            let info = self.inner.ready_info()?;
            return self.inner.listen_as(&info, caller, uri, on).await;
        }
        let mut set = self.inner.listened.lock().unwrap_or_else(|e| e.into_inner());
        let changed = if on { set.insert(uri.to_owned()) } else { set.remove(uri) };
        drop(set);
        if changed {
            self.inner.relisten.notify_one();
        }
        Ok(())
    }

    /// See [`super::Backend::info_as`].
    pub async fn info_as(&self, caller: &Caller) -> Result<Option<ServerInfo>, BackendError> {
        let snap = self.inner.status.get();
        if snap.state == State::Ready && snap.info.is_none() {
            // Waiting for a user's credentials: connecting with these may fail, and says why.
            return self.inner.info_for(caller).await.map(|i| Some((*i).clone()));
        }
        Ok(snap.info.map(|i| (*i).clone()))
    }

    /// Whether the outgoing credentials are the caller's own.
    pub fn user_bound(&self) -> bool {
        self.inner.spec.auth.is_user_bound()
    }

    /// Principals holding a subscription stream of their own, for `/status`.
    pub fn principal_listens(&self) -> usize {
        self.inner.principals.len()
    }

    /// Connection status (state, server info, last error, change feed).
    pub fn status(&self) -> &Status {
        &self.inner.status
    }

    /// Ends every backend session (DELETE) and stops background work.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.stop.cancel();
        // Each entry ends with its own ending caller: the gateway's as System, a principal's
        // with that principal's current credentials.
        let slots = inner.pool.drain();
        futures::future::join_all(slots.iter().filter_map(|slot| {
            let session = slot.current()?;
            Some(async move { inner.close_session(&slot.key.ending_caller(), &session).await })
        }))
        .await;
        inner.status.stopped();
    }
}

/// Sends `notifications/cancelled` when a request is abandoned before its reply.
struct CancelGuard {
    inner: Arc<Inner>,
    caller: Caller,
    id: i64,
    session: Option<Arc<LegacySession>>,
    armed: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.armed || self.inner.stop.is_cancelled() {
            return;
        }
        let (inner, caller, id, session) =
            (self.inner.clone(), self.caller.clone(), self.id, self.session.take());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let Ok(info) = inner.ready_info() else { return };
                let params = protocol::jsonrpc::raw(&serde_json::json!({
                    "requestId": id, "reason": "cancelled by the client",
                }));
                let msg = Message::Notification(Notification::new(
                    "notifications/cancelled",
                    Some(params),
                ));
                let _ = inner.post(&caller, Post::plain(&info, session.as_deref(), &msg)).await;
            });
        }
    }
}

impl Inner {
    /// A request to the backend's endpoint, parsed once at start (a URL the config check
    /// refused never gets here; if it did, reqwest reports it on the request).
    fn to(&self, method: reqwest::Method) -> reqwest::RequestBuilder {
        match &self.url {
            Some(url) => self.client.request(method, url.clone()),
            None => {
                self.client.request(method, self.spec.config.url.as_deref().unwrap_or_default())
            }
        }
    }

    fn unavailable(&self, reason: impl Into<String>) -> BackendError {
        BackendError::Unavailable { backend: self.spec.name.to_string(), reason: reason.into() }
    }

    fn ready_info(&self) -> Result<Arc<ServerInfo>, BackendError> {
        let snap = self.status.get();
        match (snap.state, snap.info) {
            (State::Ready, Some(info)) => Ok(info),
            _ => Err(self.unavailable(snap.last_error.unwrap_or_else(|| "not connected".into()))),
        }
    }

    /// Maps a failed POST; a refused connection means the backend is down, so the supervisor
    /// reconnects with backoff and callers fail fast meanwhile.
    fn failed(&self, e: PostError) -> BackendError {
        if let PostError::Transport { connect: true, reason } = &e {
            self.status.down(reason.clone());
        }
        e.into_backend(&self.spec.name)
    }

    /// The pool lease for this request: `None` for Modern backends (stateless).
    async fn legacy_lease(
        self: &Arc<Self>,
        info: &ServerInfo,
        caller: &Caller,
        ctx: &CallContext,
    ) -> Result<Option<Lease>, BackendError> {
        match info.era {
            Era::Legacy => {
                Ok(Some(self.lease(caller, ctx.session, ctx.client_meta.as_ref()).await?))
            }
            Era::Modern => Ok(None),
        }
    }

    /// Params as the backend's era wants them: Modern backends get the protocol `_meta`.
    fn outgoing_params(
        &self,
        info: &ServerInfo,
        params: Option<Box<RawValue>>,
        client_meta: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Option<Box<RawValue>>, BackendError> {
        if info.era == Era::Legacy {
            return Ok(params);
        }
        // A Modern client's own `_meta` usually has all of it already: then nothing is decoded
        // or re-encoded.
        let required = client_meta
            .into_iter()
            .flat_map(|m| m.keys().map(String::as_str))
            .chain([meta::KEY_CLIENT_CAPABILITIES, meta::KEY_CLIENT_INFO])
            .filter(|k| *k != meta::KEY_PROTOCOL_VERSION);
        let pinned = (meta::KEY_PROTOCOL_VERSION, protocol::MODERN_VERSION);
        if params::meta_covers(params.as_deref(), pinned, required) {
            return Ok(params);
        }
        let mut always = serde_json::Map::new();
        always.insert(meta::KEY_PROTOCOL_VERSION.into(), protocol::MODERN_VERSION.into());
        let mut defaults = client_meta.cloned().unwrap_or_default();
        defaults.remove(meta::KEY_PROTOCOL_VERSION);
        defaults.entry(meta::KEY_CLIENT_CAPABILITIES).or_insert_with(|| serde_json::json!({}));
        defaults.entry(meta::KEY_CLIENT_INFO).or_insert_with(
            || serde_json::json!({"name": "vmcp", "version": env!("CARGO_PKG_VERSION")}),
        );
        params::merge_meta(params.as_deref(), &always, &defaults)
            .map(Some)
            .map_err(|e| BackendError::Transport { backend: self.spec.name.to_string(), reason: e })
    }

    /// Probes the era; a Legacy backend gets the gateway's own (System) pool entry, listening.
    async fn connect(self: &Arc<Self>, caller: &Caller) -> Result<ServerInfo, BackendError> {
        if let Some(info) = self.try_discover(caller).await {
            self.end_slots(self.pool.drain());
            return Ok(info);
        }
        let (info, session) = self.open_session(caller, None, None).await?;
        let slot = self.pool.install_system(session.clone());
        self.spawn_listener(info.clone(), session, &slot);
        Ok(info)
    }

    /// The backend's server info for a request by `caller`. A backend that turned the gateway's
    /// own connection down for want of a user's credentials ([`Status::awaiting_user`]) is
    /// connected with the first user request's credentials: its era and info are learned then
    /// (with a session opened only for that and ended at once), and kept; no credential is.
    async fn info_for(self: &Arc<Self>, caller: &Caller) -> Result<Arc<ServerInfo>, BackendError> {
        let not_ready = match self.ready_info() {
            Ok(info) => return Ok(info),
            Err(e) => e,
        };
        let snap = self.status.get();
        if snap.state != State::Ready || snap.info.is_some() || matches!(caller, Caller::System) {
            return Err(not_ready);
        }
        // One learner at a time; the others find what it learned.
        let _turn = self.learning.lock().await;
        if let Ok(info) = self.ready_info() {
            return Ok(info);
        }
        let info = match self.try_discover(caller).await {
            Some(info) => info,
            None => {
                let (info, session) = self.open_session(caller, None, None).await?;
                self.close_session(caller, &session).await;
                info
            }
        };
        tracing::info!(backend = %self.spec.name, era = ?info.era, version = %info.protocol_version, "backend connected with a user's credentials");
        self.status.ready(info.clone());
        Ok(Arc::new(info))
    }

    async fn try_discover(&self, caller: &Caller) -> Option<ServerInfo> {
        let params = protocol::jsonrpc::raw(&serde_json::json!({"_meta": {
            meta::KEY_PROTOCOL_VERSION: protocol::MODERN_VERSION,
            meta::KEY_CLIENT_CAPABILITIES: {},
            meta::KEY_CLIENT_INFO: {"name": "vmcp", "version": env!("CARGO_PKG_VERSION")},
        }}));
        let body = Message::Request(Request::new(Id::Number(0), "server/discover", Some(params)));
        let modern = ServerInfo {
            protocol_version: protocol::MODERN_VERSION.into(),
            era: Era::Modern,
            capabilities: serde_json::Value::Null,
            server_info: serde_json::Value::Null,
            instructions: None,
        };
        let p = Post { method: Some("server/discover"), ..Post::plain(&modern, None, &body) };
        let resp = self.post(caller, p).await.ok()?;
        let Reply::Result(result) =
            self.read_reply(resp, 0, &CallContext::detached()).await.ok()?
        else {
            return None;
        };
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Discover {
            supported_versions: Vec<String>,
            #[serde(default)]
            capabilities: serde_json::Value,
            #[serde(default)]
            instructions: Option<String>,
            #[serde(default, rename = "_meta")]
            meta: Option<serde_json::Map<String, serde_json::Value>>,
        }
        let d: Discover = serde_json::from_str(result.get()).ok()?;
        if !d.supported_versions.iter().any(|v| v == protocol::MODERN_VERSION) {
            return None;
        }
        Some(ServerInfo {
            capabilities: d.capabilities,
            server_info: d
                .meta
                .and_then(|m| m.get(meta::KEY_SERVER_INFO).cloned())
                .unwrap_or_default(),
            instructions: d.instructions,
            ..modern
        })
    }

    /// Holds a `subscriptions/listen` stream to a Modern backend open for the list_changed
    /// notifications its capabilities promise and the resources clients subscribed to, passing
    /// them on as backend events. `true`: reopen at once (the subscription set changed).
    async fn listen_modern(&self, info: &ServerInfo) -> bool {
        let caps = &info.capabilities;
        let flag = |k: &str| {
            caps.get(k).and_then(|c| c.get("listChanged")).and_then(|v| v.as_bool()) == Some(true)
        };
        let (tools, prompts, resources) = (flag("tools"), flag("prompts"), flag("resources"));
        let can_subscribe =
            caps.get("resources").and_then(|c| c.get("subscribe")).and_then(|v| v.as_bool())
                == Some(true);
        let uris: Vec<String> = if can_subscribe {
            self.listened.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
        } else {
            Vec::new()
        };
        if !(tools || prompts || resources || !uris.is_empty()) {
            // Nothing to listen for: idle until there is.
            self.relisten.notified().await;
            return true;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut filter = serde_json::json!({
            "toolsListChanged": tools, "promptsListChanged": prompts, "resourcesListChanged": resources,
        });
        if !uris.is_empty() {
            filter["resourceSubscriptions"] = uris.into();
        }
        let params = protocol::jsonrpc::raw(&serde_json::json!({ "notifications": filter }));
        let Ok(params) = self.outgoing_params(info, Some(params), None) else { return false };
        let body =
            Message::Request(Request::new(Id::Number(id), "subscriptions/listen", params.clone()));
        let p = Post { method: Some("subscriptions/listen"), ..Post::plain(info, None, &body) };
        // The listen stream is long-lived: no request timeout on it.
        let resp = match self.post_unbounded(&Caller::System, p).await {
            Some(r) => r,
            None => return false,
        };
        let mut events = SseByteStream::new(crate::backend::limit::sse_bytes(
            resp,
            self.spec.limits.max_reply_bytes,
        ));
        loop {
            let event = tokio::select! {
                // The subscription set changed: reopen with the new one.
                _ = self.relisten.notified() => return true,
                e = events.next() => match e {
                    Some(Ok(e)) => e,
                    _ => return false,
                },
            };
            let Some(data) = event.data.filter(|d| !d.is_empty()) else { continue };
            if let Ok(Message::Notification(n)) = Message::parse(data.as_bytes())
                && n.method != "notifications/subscriptions/acknowledged"
            {
                let _ = self.spec.events.send(BackendEvent {
                    backend: self.spec.name.clone(),
                    session: None,
                    principal: None,
                    notification: n,
                });
            }
        }
    }

    /// A POST without the per-request timeout, for streams that stay open.
    async fn post_unbounded(&self, caller: &Caller, p: Post<'_>) -> Option<reqwest::Response> {
        let mut req = self
            .to(reqwest::Method::POST)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json, text/event-stream")
            .header(protocol::HEADER_PROTOCOL_VERSION, &p.info.protocol_version)
            .body(p.body.to_bytes());
        if let Some(method) = p.method {
            for (k, v) in headers::outgoing(method, None, None) {
                req = req.header(k, v);
            }
        }
        let req = self.spec.auth.apply(caller, req).await.ok()?;
        let resp = req.send().await.ok()?;
        if !resp.status().is_success() {
            tracing::debug!(backend = %self.spec.name, status = %resp.status(), "backend refused a stream");
            std::future::pending::<()>().await;
        }
        Some(resp)
    }
}

/// Connects with backoff; while connected, keeps the notification stream of a Modern backend
/// open, and reconnects when a request finds the backend gone.
async fn supervise(inner: Arc<Inner>) {
    let mut backoff = BACKOFF_START;
    loop {
        if inner.stop.is_cancelled() {
            return;
        }
        let info = match inner.connect(&Caller::System).await {
            Ok(info) => {
                tracing::info!(backend = %inner.spec.name, era = ?info.era, version = %info.protocol_version, "backend connected");
                inner.status.ready(info.clone());
                info
            }
            // A backend that wants the user's credentials for everything, `initialize`
            // included, is up: it is connected with its first user's request instead.
            Err(BackendError::Refused { status, .. }) if inner.spec.auth.is_user_bound() => {
                tracing::info!(backend = %inner.spec.name, status, "backend refused the gateway's own connection; connecting with its first user's request");
                inner.status.awaiting_user(format!(
                    "refused a connection without a user's credentials (HTTP {status}); \
                     connects with its first user's request"
                ));
                let mut rx = inner.status.subscribe();
                let learned = tokio::select! {
                    _ = inner.stop.cancelled() => return,
                    s = rx.wait_for(|s| s.state != State::Ready || s.info.is_some()) => {
                        s.ok().and_then(|s| s.info.clone().filter(|_| s.state == State::Ready))
                    }
                };
                match learned {
                    Some(info) => (*info).clone(),
                    None => {
                        inner.status.connecting();
                        continue;
                    }
                }
            }
            Err(e) => {
                let e = match e {
                    BackendError::Unavailable { reason, .. } => reason,
                    other => other.to_string(),
                };
                tracing::warn!(backend = %inner.spec.name, error = %e, retry_in = ?backoff, "backend unavailable");
                inner.status.down(e);
                tokio::select! {
                    _ = inner.stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                inner.status.connecting();
                continue;
            }
        };
        backoff = BACKOFF_START;
        if !serve_connected(&inner, &info).await {
            return;
        }
    }
}

/// While the backend stays connected, keeps the notification stream of a Modern backend open.
/// Returns `false` when the backend is stopping, `true` when it must reconnect.
async fn serve_connected(inner: &Inner, info: &ServerInfo) -> bool {
    let mut rx = inner.status.subscribe();
    loop {
        tokio::select! {
            _ = inner.stop.cancelled() => return false,
            _ = rx.wait_for(|s| s.state != State::Ready) => break,
            again = async {
                if info.era == Era::Modern {
                    inner.listen_modern(info).await
                } else {
                    std::future::pending::<bool>().await
                }
            } => if again { continue },
        }
        tokio::select! {
            _ = inner.stop.cancelled() => return false,
            _ = rx.wait_for(|s| s.state != State::Ready) => break,
            _ = tokio::time::sleep(BACKOFF_START * 4) => {}
        }
    }
    // The backend went away: its sessions are gone with it (no DELETE to send).
    for slot in inner.pool.drain() {
        if let Some(s) = slot.current() {
            s.listener.cancel();
        }
    }
    if inner.stop.is_cancelled() {
        return false;
    }
    inner.status.connecting();
    true
}

/// Methods that change what a Legacy backend session carries for its client (see
/// [`pool::SessionState`]); all but unsubscribe also make the backend report on the session's
/// GET stream, so the entry keeps a listener from then on.
const KEEPS_STATE: [&str; 3] = ["resources/subscribe", "resources/unsubscribe", "logging/setLevel"];

/// Ends principals' backend sessions that have been idle for the configured time, until the
/// backend stops.
async fn expire_idle(inner: std::sync::Weak<Inner>) {
    let every = match inner.upgrade() {
        Some(i) => i.pool.sweep_every(),
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.stop.is_cancelled() {
            return;
        }
        let idle = inner.pool.expire();
        if !idle.is_empty() {
            tracing::debug!(backend = %inner.spec.name, ended = idle.len(), "ending idle backend sessions");
        }
        inner.end_slots(idle);
    }
}
