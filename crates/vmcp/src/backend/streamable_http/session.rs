//! Legacy (2025-11-25 and older) backend sessions: the shared one the gateway opens at connect
//! (discovery, Modern clients, background work) and one per Legacy client session, opened on the
//! client's first request with the client's own capabilities and ended when the client's session
//! ends.
//!
//! Invariant: a session holds its id, version and listener; never a credential. Every exchange on
//! it takes the caller of the request that causes it.

use std::sync::Arc;

use futures::StreamExt;
use sse_stream::SseByteStream;
use tokio_util::sync::CancellationToken;

use super::Inner;
use super::post::{Post, describe};
use crate::auth::Caller;
use crate::backend::{BackendError, BackendEvent, CallContext, Reply, ServerInfo};
use crate::protocol::{self, Id, Message, Notification, Request, meta};

/// One backend session.
#[derive(Debug)]
pub(super) struct LegacySession {
    /// `Mcp-Session-Id` the backend assigned (a backend may run without sessions).
    pub id: Option<String>,
    /// Negotiated version.
    pub version: String,
    /// The client session this backend session serves; `None` for the shared one.
    pub key: Option<u64>,
    /// Stops this session's notification listener.
    pub listener: CancellationToken,
}

/// Per-client sessions, opened once even when a client's first requests race.
pub(super) type ClientSessions = std::sync::Mutex<
    std::collections::HashMap<u64, Arc<tokio::sync::OnceCell<Arc<LegacySession>>>>,
>;

impl Inner {
    /// `initialize` + `notifications/initialized`. With `client_meta`, the backend is told the
    /// client's capabilities and info, so it offers that client only what it can relay.
    pub(super) async fn open_session(
        &self,
        caller: &Caller,
        key: Option<u64>,
        client_meta: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<(ServerInfo, Arc<LegacySession>), String> {
        let mut params: serde_json::Value =
            serde_json::from_str(crate::backend::initialize_params().get())
                .map_err(|e| e.to_string())?;
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
        let id = resp
            .headers()
            .get(protocol::HEADER_SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let ctx = CallContext::detached();
        let info = match self.read_reply(resp, 0, &ctx).await.map_err(|e| e.to_string())? {
            Reply::Result(r) => crate::backend::parse_initialize_result(&r)?,
            Reply::Error(e) => {
                return Err(format!("initialize failed: {} ({})", e.message, e.code));
            }
        };
        let session = Arc::new(LegacySession {
            id,
            version: info.protocol_version.clone(),
            key,
            listener: self.stop.child_token(),
        });
        let note = Message::Notification(Notification::new("notifications/initialized", None));
        self.post(caller, Post::plain(&info, Some(&session), &note))
            .await
            .map_err(|e| e.into_backend(&self.spec.name).to_string())?;
        Ok((info, session))
    }

    /// Ends a backend session: stops its listener and sends DELETE with `caller`'s credentials.
    pub(super) async fn close_session(&self, caller: &Caller, session: &LegacySession) {
        session.listener.cancel();
        let Some(id) = &session.id else { return };
        let req = self
            .client
            .delete(self.url())
            .header(protocol::HEADER_SESSION_ID, id)
            .header(protocol::HEADER_PROTOCOL_VERSION, &session.version)
            .timeout(std::time::Duration::from_secs(5));
        if let Ok(req) = self.spec.auth.apply(caller, req).await
            && let Err(e) = req.send().await
        {
            tracing::debug!(backend = %self.spec.name, error = %describe(&e), "ending backend session failed");
        }
    }

    /// The session a Legacy request uses: its client's own (opened on first use) or the shared one.
    pub(super) async fn session_for(
        self: &Arc<Self>,
        caller: &Caller,
        key: Option<u64>,
        client_meta: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Arc<LegacySession>, BackendError> {
        let Some(key) = key else {
            return self.shared.load_full().ok_or_else(|| self.unavailable("no backend session"));
        };
        let cell = {
            let mut map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key).or_default().clone()
        };
        let session = cell
            .get_or_try_init(|| async {
                let (info, session) = self.open_session(caller, Some(key), client_meta).await?;
                tokio::spawn(self.clone().listen(info, session.clone()));
                Ok::<_, String>(session)
            })
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(session.clone())
    }

    /// Forgets a client's backend session the backend no longer knows, so the next request opens
    /// a new one.
    pub(super) fn forget(&self, stale: &LegacySession) {
        let Some(key) = stale.key else { return };
        let mut map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&key).and_then(|c| c.get()).is_some_and(|s| s.id == stale.id) {
            map.remove(&key);
        }
        stale.listener.cancel();
    }

    /// Removes a client's backend session, if it has one.
    pub(super) fn take_client(&self, key: u64) -> Option<Arc<LegacySession>> {
        let cell = self.clients.lock().unwrap_or_else(|e| e.into_inner()).remove(&key)?;
        cell.get().cloned()
    }

    /// Every client session, for shutdown.
    pub(super) fn take_all_clients(&self) -> Vec<Arc<LegacySession>> {
        let mut map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        map.drain().filter_map(|(_, c)| c.get().cloned()).collect()
    }

    /// Holds the session's GET stream open for server-initiated notifications, tagged with the
    /// client session it serves, until the session ends. Background work: `Caller::System`.
    pub(super) async fn listen(self: Arc<Self>, info: ServerInfo, session: Arc<LegacySession>) {
        let mut delay = std::time::Duration::from_millis(500);
        while !session.listener.is_cancelled() {
            tokio::select! {
                _ = session.listener.cancelled() => return,
                opened = self.listen_once(&info, &session) => {
                    if opened {
                        delay = std::time::Duration::from_millis(500);
                    } else {
                        delay = (delay * 2).min(std::time::Duration::from_secs(30));
                    }
                }
            }
            tokio::select! {
                _ = session.listener.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One GET stream; `false` when it could not be opened (the backend may not offer one).
    async fn listen_once(&self, info: &ServerInfo, session: &LegacySession) -> bool {
        let mut req = self
            .client
            .get(self.url())
            .header(http::header::ACCEPT, "text/event-stream")
            .header(protocol::HEADER_PROTOCOL_VERSION, &info.protocol_version);
        if let Some(id) = &session.id {
            req = req.header(protocol::HEADER_SESSION_ID, id);
        }
        let Ok(req) = self.spec.auth.apply(&Caller::System, req).await else { return false };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                if e.is_connect() && session.key.is_none() {
                    // The shared session's stream cannot reach the backend: it is down.
                    self.status.down(describe(&e));
                }
                return false;
            }
        };
        if !resp.status().is_success() {
            return false;
        }
        let mut events = SseByteStream::new(resp.bytes_stream());
        while let Some(Ok(event)) = events.next().await {
            let Some(data) = event.data.filter(|d| !d.is_empty()) else { continue };
            if let Ok(Message::Notification(n)) = Message::parse(data.as_bytes()) {
                let _ = self.spec.events.send(BackendEvent {
                    backend: self.spec.name.clone(),
                    session: session.key,
                    notification: n,
                });
            }
        }
        true
    }
}
