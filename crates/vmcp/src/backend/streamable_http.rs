//! Streamable HTTP backends, in either protocol era.
//!
//! At connect the era is probed: `server/discover` (2026-07-28) first, then `initialize`. A Modern
//! backend is called statelessly, each request carrying `_meta` and the standard headers. A Legacy
//! backend gets one session (`Mcp-Session-Id`) for the whole gateway, reused by every request and
//! re-created only when the backend says it has expired (404). Each POST is answered as JSON or as
//! an SSE stream that carries the request's notifications and server-to-client requests before
//! its response.
//!
//! Invariant: the credentials on each POST come from that request's `Caller`; the session holds
//! only its id and version.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures::StreamExt;
use serde_json::value::RawValue;
use sse_stream::SseByteStream;
use tokio_util::sync::CancellationToken;

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
    client: reqwest::Client,
    status: Status,
    /// The Legacy session, when the backend is Legacy and connected.
    session: ArcSwapOption<LegacySession>,
    next_id: AtomicI64,
    stop: CancellationToken,
    /// Serializes reconnects so concurrent failures re-initialize once.
    reconnect: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct LegacySession {
    id: Option<String>,
    version: String,
}

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

impl HttpBackend {
    /// Starts connecting in the background.
    pub fn start(spec: BackendSpec) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(spec.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .unwrap_or_default();
        let inner = Arc::new(Inner {
            spec,
            client,
            status: Status::default(),
            session: ArcSwapOption::empty(),
            next_id: AtomicI64::new(1),
            stop: CancellationToken::new(),
            reconnect: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(supervise(inner.clone()));
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
        let info = inner.ready_info()?;
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut guard =
            CancelGuard { inner: inner.clone(), caller: caller.clone(), id, armed: true };
        let params = inner.outgoing_params(&info, params, ctx.client_meta.as_ref())?;
        let body = Message::Request(Request::new(Id::Number(id), method, params.clone()));
        let schema = ctx.tool_schema.as_ref();
        let mut result =
            inner.post(caller, &info, &body, Some(method), params.as_deref(), schema).await;
        if let Err(PostError::SessionExpired) = result {
            inner.reinitialize(caller).await?;
            let info = inner.ready_info()?;
            result =
                inner.post(caller, &info, &body, Some(method), params.as_deref(), schema).await;
        }
        let reply = match result {
            Ok(resp) => inner.read_reply(resp, id, &ctx).await,
            // Modern backends answer protocol errors (-32021, -32602, ...) with 4xx and a body.
            Err(PostError::Status(_, Some(Message::Error(e)))) => Ok(Reply::Error(e.error)),
            Err(e) => Err(e.into_backend(&inner.spec.name)),
        };
        // A transport failure may leave the request running at the backend: cancel it there.
        guard.armed = matches!(reply, Err(BackendError::Transport { .. }));
        reply
    }

    /// See [`super::Backend::notify`].
    pub async fn notify(
        &self,
        caller: &Caller,
        method: &str,
        params: Option<Box<RawValue>>,
    ) -> Result<(), BackendError> {
        let inner = &self.inner;
        let info = inner.ready_info()?;
        let body = Message::Notification(Notification::new(method, params));
        inner
            .post(caller, &info, &body, None, None, None)
            .await
            .map(drop)
            .map_err(|e| e.into_backend(&inner.spec.name))
    }

    /// See [`super::Backend::respond`].
    pub async fn respond(&self, caller: &Caller, response: Message) -> Result<(), BackendError> {
        let inner = &self.inner;
        let info = inner.ready_info()?;
        inner
            .post(caller, &info, &response, None, None, None)
            .await
            .map(drop)
            .map_err(|e| e.into_backend(&inner.spec.name))
    }

    /// See [`super::Backend::info`].
    pub fn info(&self) -> Option<ServerInfo> {
        self.inner.status.get().info
    }

    /// See [`super::Backend::state`].
    pub fn state(&self) -> State {
        self.inner.status.get().state
    }

    /// See [`super::Backend::last_error`].
    pub fn last_error(&self) -> Option<String> {
        self.inner.status.get().last_error
    }

    /// See [`super::Backend::watch`].
    pub fn watch(&self) -> tokio::sync::watch::Receiver<super::Snapshot> {
        self.inner.status.subscribe()
    }

    /// See [`super::Backend::first_attempt`].
    pub async fn first_attempt(&self) {
        self.inner.status.first_attempt().await
    }

    /// Ends the Legacy session (DELETE) and stops background work.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.stop.cancel();
        if let Some(session) = inner.session.swap(None)
            && let Some(id) = &session.id
        {
            let req = inner
                .client
                .delete(inner.url())
                .header(protocol::HEADER_SESSION_ID, id)
                .header(protocol::HEADER_PROTOCOL_VERSION, &session.version)
                .timeout(Duration::from_secs(2));
            if let Ok(req) = inner.spec.auth.apply(&Caller::System, req).await {
                let _ = req.send().await;
            }
        }
        inner.status.stopped();
    }
}

/// Sends `notifications/cancelled` when a request is abandoned before its reply.
struct CancelGuard {
    inner: Arc<Inner>,
    caller: Caller,
    id: i64,
    armed: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.armed || self.inner.stop.is_cancelled() {
            return;
        }
        let inner = self.inner.clone();
        let caller = self.caller.clone();
        let id = self.id;
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
                let _ = inner.post(&caller, &info, &msg, None, None, None).await;
            });
        }
    }
}

enum PostError {
    SessionExpired,
    Status(reqwest::StatusCode, Option<Message>),
    Transport(String),
    Auth(crate::auth::outgoing::OutgoingAuthError),
}

impl PostError {
    fn into_backend(self, backend: &str) -> BackendError {
        let backend = backend.to_owned();
        match self {
            PostError::SessionExpired => {
                BackendError::Transport { backend, reason: "session expired twice".into() }
            }
            PostError::Status(s, _) => {
                BackendError::Transport { backend, reason: format!("HTTP {s}") }
            }
            PostError::Transport(reason) => BackendError::Transport { backend, reason },
            PostError::Auth(e) => BackendError::Auth(e),
        }
    }
}

impl Inner {
    fn url(&self) -> String {
        self.spec.config.url.clone().unwrap_or_default()
    }

    fn unavailable(&self, reason: impl Into<String>) -> BackendError {
        BackendError::Unavailable { backend: self.spec.name.to_string(), reason: reason.into() }
    }

    fn ready_info(&self) -> Result<ServerInfo, BackendError> {
        let snap = self.status.get();
        match (snap.state, snap.info) {
            (State::Ready, Some(info)) => Ok(info),
            _ => Err(self.unavailable(snap.last_error.unwrap_or_else(|| "not connected".into()))),
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

    async fn post(
        &self,
        caller: &Caller,
        info: &ServerInfo,
        body: &Message,
        method: Option<&str>,
        params: Option<&RawValue>,
        tool_schema: Option<&serde_json::Value>,
    ) -> Result<reqwest::Response, PostError> {
        let session = self.session.load_full();
        let mut req = self
            .client
            .post(self.url())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json, text/event-stream")
            .header(protocol::HEADER_PROTOCOL_VERSION, &info.protocol_version)
            .timeout(self.spec.timeout)
            .body(body.to_bytes());
        if info.era == Era::Legacy
            && let Some(id) = session.as_ref().and_then(|s| s.id.as_ref())
        {
            req = req.header(protocol::HEADER_SESSION_ID, id);
        }
        if info.era == Era::Modern
            && let Some(method) = method
        {
            let parsed: Option<serde_json::Value> =
                params.and_then(|p| serde_json::from_str(p.get()).ok());
            for (k, v) in headers::outgoing(method, parsed.as_ref(), tool_schema) {
                req = req.header(k, v);
            }
        }
        let req = self.spec.auth.apply(caller, req).await.map_err(PostError::Auth)?;
        let resp = req.send().await.map_err(|e| PostError::Transport(describe(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == reqwest::StatusCode::NOT_FOUND
            && info.era == Era::Legacy
            && session.as_ref().is_some_and(|s| s.id.is_some())
        {
            return Err(PostError::SessionExpired);
        }
        // Modern servers answer protocol errors with 4xx and a JSON-RPC error body.
        let bytes = resp.bytes().await.unwrap_or_default();
        Err(PostError::Status(status, Message::parse(&bytes).ok()))
    }

    async fn read_reply(
        &self,
        resp: reqwest::Response,
        id: i64,
        ctx: &CallContext,
    ) -> Result<Reply, BackendError> {
        let transport = |reason: String| BackendError::Transport {
            backend: self.spec.name.to_string(),
            reason,
        };
        let is_sse = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            let bytes = resp.bytes().await.map_err(|e| transport(describe(&e)))?;
            return match Message::parse(&bytes) {
                Ok(Message::Response(r)) => Ok(Reply::Result(r.result)),
                Ok(Message::Error(e)) => Ok(Reply::Error(e.error)),
                Ok(_) => Err(transport("backend answered a request with a non-response".into())),
                Err(e) => Err(transport(format!("unreadable response: {e}"))),
            };
        }
        let mut events = SseByteStream::new(resp.bytes_stream());
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| transport(format!("event stream failed: {e}")))?;
            let Some(data) = event.data.filter(|d| !d.is_empty()) else { continue };
            match Message::parse(data.as_bytes()) {
                Ok(Message::Response(r)) if r.id == Id::Number(id) => {
                    return Ok(Reply::Result(r.result));
                }
                Ok(Message::Error(e)) if e.id.as_ref().is_none_or(|i| *i == Id::Number(id)) => {
                    return Ok(Reply::Error(e.error));
                }
                Ok(msg @ (Message::Notification(_) | Message::Request(_))) => {
                    // The receiver may be gone (the client stopped listening); the reply still matters.
                    let _ = ctx.events.send(msg).await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(backend = %self.spec.name, error = %e, "skipping unreadable event")
                }
            }
        }
        Err(transport("event stream ended before the response".into()))
    }

    /// Probes the era and opens a session (Legacy) or records discovery (Modern).
    async fn connect(&self, caller: &Caller) -> Result<ServerInfo, String> {
        if let Some(info) = self.try_discover(caller).await {
            self.session.store(None);
            return Ok(info);
        }
        self.initialize(caller).await
    }

    async fn try_discover(&self, caller: &Caller) -> Option<ServerInfo> {
        let params = protocol::jsonrpc::raw(&serde_json::json!({"_meta": {
            meta::KEY_PROTOCOL_VERSION: protocol::MODERN_VERSION,
            meta::KEY_CLIENT_CAPABILITIES: {},
            meta::KEY_CLIENT_INFO: {"name": "vmcp", "version": env!("CARGO_PKG_VERSION")},
        }}));
        let body = Message::Request(Request::new(Id::Number(0), "server/discover", Some(params)));
        let req = self
            .client
            .post(self.url())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json, text/event-stream")
            .header(protocol::HEADER_PROTOCOL_VERSION, protocol::MODERN_VERSION)
            .header("Mcp-Method", "server/discover")
            .timeout(self.spec.timeout)
            .body(body.to_bytes());
        let req = self.spec.auth.apply(caller, req).await.ok()?;
        let resp = req.send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let (events, _rx) = tokio::sync::mpsc::channel(8);
        let ctx = CallContext::new(events);
        let Reply::Result(result) = self.read_reply(resp, 0, &ctx).await.ok()? else { return None };
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
            protocol_version: protocol::MODERN_VERSION.into(),
            era: Era::Modern,
            capabilities: d.capabilities,
            server_info: d
                .meta
                .and_then(|m| m.get(meta::KEY_SERVER_INFO).cloned())
                .unwrap_or_default(),
            instructions: d.instructions,
        })
    }

    async fn initialize(&self, caller: &Caller) -> Result<ServerInfo, String> {
        let body = Message::Request(Request::new(
            Id::Number(0),
            "initialize",
            Some(super::initialize_params()),
        ));
        let req = self
            .client
            .post(self.url())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json, text/event-stream")
            .timeout(self.spec.timeout)
            .body(body.to_bytes());
        let req = self.spec.auth.apply(caller, req).await.map_err(|e| e.to_string())?;
        let resp = req.send().await.map_err(|e| describe(&e))?;
        if !resp.status().is_success() {
            return Err(format!("initialize answered HTTP {}", resp.status()));
        }
        let session_id = resp
            .headers()
            .get(protocol::HEADER_SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (events, _rx) = tokio::sync::mpsc::channel(8);
        let ctx = CallContext::new(events);
        let info = match self.read_reply(resp, 0, &ctx).await.map_err(|e| e.to_string())? {
            Reply::Result(r) => super::parse_initialize_result(&r)?,
            Reply::Error(e) => {
                return Err(format!("initialize failed: {} ({})", e.message, e.code));
            }
        };
        self.session.store(Some(Arc::new(LegacySession {
            id: session_id,
            version: info.protocol_version.clone(),
        })));
        let note = Message::Notification(Notification::new("notifications/initialized", None));
        self.post(caller, &info, &note, None, None, None)
            .await
            .map_err(|e| e.into_backend(&self.spec.name).to_string())?;
        Ok(info)
    }

    /// Re-creates an expired Legacy session, once for any number of concurrent callers.
    async fn reinitialize(&self, caller: &Caller) -> Result<(), BackendError> {
        let before = self.session.load_full();
        let _lock = self.reconnect.lock().await;
        let now = self.session.load_full();
        let changed = match (&before, &now) {
            (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
            _ => true,
        };
        if changed && now.is_some() {
            return Ok(());
        }
        tracing::info!(backend = %self.spec.name, "backend session expired; re-initializing");
        match self.initialize(caller).await {
            Ok(info) => {
                self.status.ready(info);
                Ok(())
            }
            Err(e) => {
                self.status.down(e.clone());
                Err(self.unavailable(e))
            }
        }
    }

    /// Listens on the Legacy GET stream for backend-level notifications until it ends.
    async fn listen(&self, info: &ServerInfo) {
        let Some(session) = self.session.load_full() else { return };
        let mut req = self
            .client
            .get(self.url())
            .header(http::header::ACCEPT, "text/event-stream")
            .header(protocol::HEADER_PROTOCOL_VERSION, &info.protocol_version);
        if let Some(id) = &session.id {
            req = req.header(protocol::HEADER_SESSION_ID, id);
        }
        let Ok(req) = self.spec.auth.apply(&Caller::System, req).await else { return };
        let Ok(resp) = req.send().await else { return };
        if !resp.status().is_success() {
            return;
        }
        let mut events = SseByteStream::new(resp.bytes_stream());
        while let Some(Ok(event)) = events.next().await {
            let Some(data) = event.data.filter(|d| !d.is_empty()) else { continue };
            if let Ok(Message::Notification(n)) = Message::parse(data.as_bytes()) {
                let _ = self
                    .spec
                    .events
                    .send(BackendEvent { backend: self.spec.name.clone(), notification: n });
            }
        }
    }
}

impl Inner {
    /// Holds a `subscriptions/listen` stream to a Modern backend open for the list_changed
    /// notifications its capabilities promise, passing them on as backend events.
    async fn listen_modern(&self, info: &ServerInfo) {
        let caps = &info.capabilities;
        let flag = |k: &str| {
            caps.get(k).and_then(|c| c.get("listChanged")).and_then(|v| v.as_bool()) == Some(true)
        };
        let (tools, prompts, resources) = (flag("tools"), flag("prompts"), flag("resources"));
        if !(tools || prompts || resources) {
            // Nothing to listen for: idle until the backend's state changes.
            std::future::pending::<()>().await;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let params = protocol::jsonrpc::raw(&serde_json::json!({
            "notifications": { "toolsListChanged": tools, "promptsListChanged": prompts, "resourcesListChanged": resources },
        }));
        let Ok(params) = self.outgoing_params(info, Some(params), None) else { return };
        let body =
            Message::Request(Request::new(Id::Number(id), "subscriptions/listen", params.clone()));
        let mut req = self
            .client
            .post(self.url())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json, text/event-stream")
            .header(protocol::HEADER_PROTOCOL_VERSION, &info.protocol_version)
            .body(body.to_bytes());
        for (k, v) in headers::outgoing("subscriptions/listen", None, None) {
            req = req.header(k, v);
        }
        let Ok(req) = self.spec.auth.apply(&Caller::System, req).await else { return };
        let Ok(resp) = req.send().await else { return };
        if !resp.status().is_success() {
            tracing::debug!(backend = %self.spec.name, status = %resp.status(), "backend refused subscriptions/listen");
            std::future::pending::<()>().await;
        }
        let mut events = SseByteStream::new(resp.bytes_stream());
        while let Some(Ok(event)) = events.next().await {
            let Some(data) = event.data.filter(|d| !d.is_empty()) else { continue };
            if let Ok(Message::Notification(n)) = Message::parse(data.as_bytes())
                && n.method != "notifications/subscriptions/acknowledged"
            {
                let _ = self
                    .spec
                    .events
                    .send(BackendEvent { backend: self.spec.name.clone(), notification: n });
            }
        }
    }
}

/// Connects with backoff; once connected, keeps the Legacy GET stream open for notifications.
async fn supervise(inner: Arc<Inner>) {
    let mut backoff = BACKOFF_START;
    loop {
        if inner.stop.is_cancelled() {
            return;
        }
        let connected = {
            let _lock = inner.reconnect.lock().await;
            inner.connect(&Caller::System).await
        };
        match connected {
            Ok(info) => {
                tracing::info!(backend = %inner.spec.name, era = ?info.era, version = %info.protocol_version, "backend connected");
                backoff = BACKOFF_START;
                inner.status.ready(info.clone());
                if info.era == Era::Legacy {
                    // Keep the notification stream open; reopen it while the session lives.
                    loop {
                        tokio::select! {
                            _ = inner.stop.cancelled() => return,
                            _ = inner.listen(&info) => {}
                        }
                        if inner.status.get().state != State::Ready {
                            break;
                        }
                        tokio::select! {
                            _ = inner.stop.cancelled() => return,
                            _ = tokio::time::sleep(BACKOFF_MAX) => {}
                        }
                    }
                } else {
                    // Modern backends are called statelessly; a `subscriptions/listen` stream
                    // carries their notifications. Reopen it while the backend stays ready.
                    let mut rx = inner.status.subscribe();
                    loop {
                        tokio::select! {
                            _ = inner.stop.cancelled() => return,
                            _ = rx.wait_for(|s| s.state != State::Ready) => break,
                            _ = inner.listen_modern(&info) => {}
                        }
                        tokio::select! {
                            _ = inner.stop.cancelled() => return,
                            _ = rx.wait_for(|s| s.state != State::Ready) => break,
                            _ = tokio::time::sleep(BACKOFF_START * 4) => {}
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(backend = %inner.spec.name, error = %e, retry_in = ?backoff, "backend unavailable");
                inner.status.down(e);
                tokio::select! {
                    _ = inner.stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                inner.status.connecting();
            }
        }
    }
}

/// A reqwest error without its URL's query string (which may carry secrets).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "response body failed"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() { kind.to_string() } else { format!("{kind}: {detail}") }
}
