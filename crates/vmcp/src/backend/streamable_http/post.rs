//! One HTTP exchange with a Streamable HTTP backend: the POST (headers, session, credentials) and
//! the reading of its answer, JSON or an SSE stream of messages ending with the response.

use futures::StreamExt;
use serde_json::value::RawValue;
use sse_stream::SseByteStream;

use super::Inner;
use super::session::LegacySession;
use crate::auth::Caller;
use crate::backend::limit::{CappedError, read_body, sse_bytes};
use crate::backend::{BackendError, CallContext, Reply, ServerInfo};
use crate::protocol::{self, Era, Id, Message, headers};

/// Why a POST did not produce a usable response.
pub(super) enum PostError {
    /// The backend no longer knows the Legacy session (404).
    SessionExpired,
    /// A non-success status, with the JSON-RPC message in the body if there was one.
    Status(reqwest::StatusCode, Option<Message>),
    /// The connection failed or timed out. `connect`: the backend could not be reached (not set
    /// when connecting failed for want of a local resource, see [`local_exhaustion`]).
    Transport { reason: String, connect: bool },
    /// vmcp itself ran out of a local resource (file descriptors, buffers, memory) for this
    /// request: nothing is known about the backend.
    Exhausted(String),
    /// Outgoing credentials could not be resolved.
    Auth(crate::auth::outgoing::OutgoingAuthError),
}

impl PostError {
    pub(super) fn into_backend(self, backend: &str) -> BackendError {
        let backend = backend.to_owned();
        match self {
            PostError::SessionExpired => {
                BackendError::Transport { backend, reason: "backend session expired".into() }
            }
            PostError::Status(s, _) => {
                BackendError::Transport { backend, reason: format!("HTTP {s}") }
            }
            PostError::Transport { reason, .. } => BackendError::Transport { backend, reason },
            PostError::Exhausted(reason) => BackendError::Exhausted { backend, reason },
            PostError::Auth(e) => BackendError::Auth(e),
        }
    }
}

/// What to send.
#[derive(Clone, Copy)]
pub(super) struct Post<'a> {
    pub info: &'a ServerInfo,
    pub session: Option<&'a LegacySession>,
    pub body: &'a Message,
    /// For requests to Modern backends: method, params and tool schema for the standard headers.
    pub method: Option<&'a str>,
    pub params: Option<&'a RawValue>,
    pub tool_schema: Option<&'a serde_json::Value>,
    /// Forwarded client headers.
    pub headers: Option<&'a crate::backend::Forwarded>,
    /// A stream that stays open (`subscriptions/listen`): the timeout bounds only the wait for
    /// the response head, not the body.
    pub stream: bool,
}

impl<'a> Post<'a> {
    /// A message with no standard headers (notifications, responses).
    pub fn plain(
        info: &'a ServerInfo,
        session: Option<&'a LegacySession>,
        body: &'a Message,
    ) -> Self {
        Self {
            info,
            session,
            body,
            method: None,
            params: None,
            tool_schema: None,
            headers: None,
            stream: false,
        }
    }
}

impl Inner {
    pub(super) async fn post(
        &self,
        caller: &Caller,
        p: Post<'_>,
    ) -> Result<reqwest::Response, PostError> {
        let mut req = self
            .to(reqwest::Method::POST)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json, text/event-stream")
            .header(protocol::HEADER_PROTOCOL_VERSION, &p.info.protocol_version)
            .body(p.body.to_bytes());
        if !p.stream {
            req = req.timeout(self.spec.timeout);
        }
        let session_id =
            p.session.and_then(|s| s.id.as_deref()).filter(|_| p.info.era == Era::Legacy);
        if let Some(id) = session_id {
            req = req.header(protocol::HEADER_SESSION_ID, id);
        }
        if p.info.era == Era::Modern
            && let Some(method) = p.method
        {
            for (k, v) in headers::outgoing(method, p.params, p.tool_schema) {
                req = req.header(k, v);
            }
        }
        if let Some(headers) = p.headers {
            req = crate::backend::forward_headers(req, headers);
        }
        let req = crate::telemetry::inject(req);
        let req = self.spec.auth.apply(caller, req).await.map_err(PostError::Auth)?;
        let sent = if p.stream {
            tokio::time::timeout(self.spec.timeout, req.send())
                .await
                .map_err(|_| PostError::Transport { reason: "timed out".into(), connect: false })?
        } else {
            req.send().await
        };
        let resp = sent.map_err(|e| match local_exhaustion(&e) {
            true => PostError::Exhausted(describe(&e)),
            false => PostError::Transport { reason: describe(&e), connect: unreachable(&e) },
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == reqwest::StatusCode::NOT_FOUND && session_id.is_some() {
            return Err(PostError::SessionExpired);
        }
        // Modern servers answer protocol errors with 4xx and a JSON-RPC error body.
        let bytes = read_body(resp, self.spec.limits.max_reply_bytes).await.unwrap_or_default();
        Err(PostError::Status(status, Message::parse(&bytes).ok()))
    }

    /// Reads the reply to request `id`, passing the messages that come before it to `ctx.events`.
    pub(super) async fn read_reply(
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
            let bytes = read_body(resp, self.spec.limits.max_reply_bytes)
                .await
                .map_err(|e| transport(e.to_string()))?;
            return match Message::parse(&bytes) {
                Ok(Message::Response(r)) => Ok(Reply::Result(r.result)),
                Ok(Message::Error(e)) => Ok(Reply::Error(e.error)),
                Ok(_) => Err(transport("backend answered a request with a non-response".into())),
                Err(e) => Err(transport(format!("unreadable response: {e}"))),
            };
        }
        let mut events = SseByteStream::new(sse_bytes(resp, self.spec.limits.max_reply_bytes));
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| match CappedError::too_large_in(&e) {
                Some(too_large) => transport(too_large.to_string()),
                None => transport(format!("event stream failed: {e}")),
            })?;
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
}

/// Whether connecting failed because the backend could not be reached, so it is down. Not when
/// vmcp itself is out of a local resource (see [`local_exhaustion`]): that fails the request at
/// hand, but says nothing about the backend, and marking it down would fail every client's
/// requests to it.
pub(super) fn unreachable(e: &reqwest::Error) -> bool {
    e.is_connect() && !local_exhaustion(e)
}

/// Whether `e` comes from vmcp running out of a local resource: file descriptors (`EMFILE`,
/// `ENFILE`, e.g. for the socket of a new connection), buffers or memory (`ENOBUFS`, `ENOMEM`).
pub(super) fn local_exhaustion(e: &reqwest::Error) -> bool {
    use nix::errno::Errno;
    let local = [Errno::EMFILE, Errno::ENFILE, Errno::ENOBUFS, Errno::ENOMEM].map(|e| e as i32);
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.raw_os_error().is_some_and(|n| local.contains(&n))
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// A reqwest error without its URL (whose query string may carry secrets).
pub(super) fn describe(e: &reqwest::Error) -> String {
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
