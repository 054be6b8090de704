//! `/mcp`: the Streamable HTTP endpoint for both protocol eras.
//!
//! POST carries one JSON-RPC message. An `initialize`, or anything with `Mcp-Session-Id`, is
//! Legacy; a request whose `MCP-Protocol-Version` header or `_meta` names 2026-07-28 (and every
//! `server/discover`) is Modern and is validated as the spec requires before dispatch. GET opens a
//! Legacy session's notification stream; DELETE ends the session.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::AppState;
use super::stream::{self, json, legacy_status, modern_status};
use crate::auth::Caller;
use crate::dispatch::{Client, Cx};
use crate::gateway::Gateway;
use crate::protocol::jsonrpc::{ParseError, code, raw};
use crate::protocol::meta::RequestMeta;
use crate::protocol::{
    self, Era, ErrorObject, ErrorResponse, Id, Message, Notification, Request, SUPPORTED_VERSIONS,
    headers, params,
};
use crate::session::{CreateError, LimitError, Lookup, PendingRelay, Session, StoreError};

/// A request refused by a `server.limits` bound: 503 when the gateway as a whole is full, 429
/// when this client or principal is over its share.
fn refused(id: Option<Id>, e: &LimitError) -> Response {
    let status =
        if e.is_global() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::TOO_MANY_REQUESTS };
    tracing::warn!(limit = e.key(), "request refused: {e}");
    json(status, &Message::Error(ErrorResponse::new(id, e.to_error())))
}

/// A failed session lookup: JSON-RPC for POST (`rpc`), plain text for GET and DELETE. A store
/// that cannot answer is 503 with `Retry-After`, never 404: the session may well exist.
fn lookup_refused(e: &Lookup, id: Option<Id>, rpc: bool) -> Response {
    let (status, code, message) = match e {
        Lookup::NotFound => (StatusCode::NOT_FOUND, code::INVALID_REQUEST, "Session not found"),
        Lookup::Forbidden => {
            (StatusCode::FORBIDDEN, code::INVALID_REQUEST, "Session belongs to another principal")
        }
        Lookup::Unavailable(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, code::INTERNAL_ERROR, STORE_DOWN)
        }
        Lookup::Limit(e) => return refused(id, e),
    };
    let mut resp =
        if rpc { error(status, id, code, message) } else { (status, message).into_response() };
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// The client-facing text for a session store that cannot answer (the cause is logged, not
/// shown: it may name the store's address).
const STORE_DOWN: &str = "session store unavailable: this session cannot be looked up or changed right now; retry shortly";

/// `initialize` refused because the session's record could not be stored.
fn create_refused(id: Id, e: &StoreError) -> (Response, ErrorObject) {
    let (status, e) = match e {
        StoreError::Record(crate::session::record::RecordError::TooLarge(n)) => (
            StatusCode::BAD_REQUEST,
            ErrorObject::new(
                code::INVALID_PARAMS,
                format!(
                    "initialize: capabilities and clientInfo take {n} bytes, over the limit of {} bytes",
                    crate::session::record::MAX_RECORD_BYTES
                ),
            ),
        ),
        other => {
            tracing::warn!(error = %other, "initialize refused: cannot store the session");
            (StatusCode::SERVICE_UNAVAILABLE, ErrorObject::new(code::INTERNAL_ERROR, STORE_DOWN))
        }
    };
    let mut resp = json(status, &Message::Error(ErrorResponse::new(Some(id), e.clone())));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    (resp, e)
}

fn error(status: StatusCode, id: Option<Id>, code: i64, message: impl Into<String>) -> Response {
    json(status, &Message::Error(ErrorResponse::new(id, ErrorObject::new(code, message))))
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The `error_description` when a backend's credential service refused the caller's token.
const REFUSED_DOWNSTREAM: &str = "the token was refused for a backend; sign in again";

/// POST /mcp.
pub async fn post(
    State(app): State<AppState>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    // Read up to the configured limit ourselves, so an oversize body gets a JSON-RPC error.
    let body: Bytes = match axum::body::to_bytes(body, app.max_body).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
                code::INVALID_REQUEST,
                format!(
                    "request body exceeds the limit of {} bytes (server.maxRequestBodyBytes)",
                    app.max_body
                ),
            );
        }
    };
    if let Some(ct) = header_str(&headers, header::CONTENT_TYPE.as_str())
        && !ct.to_ascii_lowercase().starts_with("application/json")
    {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
            code::INVALID_REQUEST,
            "Content-Type must be application/json",
        );
    }
    let msg = match Message::parse(&body) {
        Ok(m) => m,
        Err(ParseError::Json(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                None,
                code::PARSE_ERROR,
                format!("Parse error: {e}"),
            );
        }
        Err(ParseError::Invalid { id, message }) => {
            return error(
                StatusCode::BAD_REQUEST,
                id,
                code::INVALID_REQUEST,
                format!("Invalid request: {message}"),
            );
        }
    };
    let gw = app.gw.clone();
    let source = match &gw.layers.load().audit {
        Some(_) => crate::audit::Source::of(&headers, peer.map(|p| p.0.0)),
        None => crate::audit::Source::default(),
    };
    let caller = match gw.gatekeeper.caller(&headers, &gw.identities).await {
        Ok(c) => c,
        Err(refusal) => return crate::layer::refused(&gw, &source, refusal),
    };
    let session_id = header_str(&headers, protocol::HEADER_SESSION_ID).map(str::to_owned);
    // The client's trace context (`traceparent`); `None` with telemetry off.
    let trace = gw.layers.load().telemetry.parent(&headers);
    if let Message::Request(req) = &msg
        && req.method == "initialize"
        && params::get_str(req.params.as_deref(), "protocolVersion").is_some()
    {
        let started = std::time::Instant::now();
        // Answered before the layer records it: creating a session awaits the session store.
        let (resp, outcome, session) = initialize(&gw, &caller, req).await;
        let answer = || (resp, outcome);
        let resp = crate::layer::initialize(&gw, &caller, &source, req.params.as_deref(), answer);
        let version = session.as_ref().map(|s| (s.key, s.protocol_version.as_str()));
        // `error.type`: the JSON-RPC code of a refusal in a 200, else the HTTP status.
        let failed = session.is_none().then(|| match resp.status() {
            StatusCode::OK => code::BACKEND_UNAVAILABLE.to_string(),
            status => status.as_u16().to_string(),
        });
        gw.layers.load().telemetry.initialized(trace, started, version, failed);
        return resp;
    }
    if let Some(sid) = session_id {
        let session = match crate::session::resume(&gw, &caller, &sid).await {
            Ok(s) => s,
            Err(e) => return lookup_refused(&e, msg.id().cloned(), true),
        };
        let forwarded = gw.forwarded(&headers);
        let challenge = gw.gatekeeper.reauthenticate(&headers, REFUSED_DOWNSTREAM);
        let edge = Edge { source, trace };
        return legacy(gw, caller, session, msg, forwarded, challenge, edge).await;
    }
    match msg {
        Message::Request(req) if is_modern(&headers, &req) => {
            modern(gw, caller, &headers, req, Edge { source, trace }).await
        }
        Message::Request(req) => error(
            StatusCode::BAD_REQUEST,
            Some(req.id),
            code::INVALID_REQUEST,
            "Bad Request: no Mcp-Session-Id; send initialize first, or use protocol 2026-07-28",
        ),
        // Stateless clients have no session to attach notifications or responses to.
        _ if header_str(&headers, protocol::HEADER_PROTOCOL_VERSION)
            .is_some_and(|v| Era::of(v) == Era::Modern) =>
        {
            StatusCode::ACCEPTED.into_response()
        }
        other => error(
            StatusCode::BAD_REQUEST,
            other.id().cloned(),
            code::INVALID_REQUEST,
            "Bad Request: no Mcp-Session-Id",
        ),
    }
}

/// What the layers took from a request's HTTP edge, carried into its task: where it came from
/// (audit) and the client's trace context (telemetry).
struct Edge {
    source: crate::audit::Source,
    trace: Option<opentelemetry::Context>,
}

fn is_modern(headers: &HeaderMap, req: &Request) -> bool {
    req.method == "server/discover"
        || header_str(headers, protocol::HEADER_PROTOCOL_VERSION)
            .is_some_and(|v| Era::of(v) == Era::Modern)
        || RequestMeta::from_params(req.params.as_deref()).protocol_version.is_some()
}

/// Answers a Legacy `initialize`: the response, its outcome (for audit) and the session it
/// created, if it did (for telemetry).
async fn initialize(
    gw: &Gateway,
    caller: &Caller,
    req: &Request,
) -> (Response, crate::dispatch::Outcome, Option<Arc<Session>>) {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Init {
        protocol_version: String,
        #[serde(default)]
        capabilities: serde_json::Value,
        #[serde(default)]
        client_info: serde_json::Value,
    }
    let init: Init = match req.params.as_deref().map(|p| serde_json::from_str(p.get())) {
        Some(Ok(i)) => i,
        _ => {
            let e = ErrorObject::new(
                code::INVALID_PARAMS,
                "initialize needs protocolVersion, capabilities and clientInfo",
            );
            let resp = json(
                StatusCode::BAD_REQUEST,
                &Message::Error(ErrorResponse::new(Some(req.id.clone()), e.clone())),
            );
            return (resp, Err(e), None);
        }
    };
    // partialFailureMode: fail: no session while a backend is out of service.
    if let Some(e) = gw.partial_failure_error() {
        let msg = Message::Error(ErrorResponse::new(Some(req.id.clone()), e.clone()));
        return (json(StatusCode::OK, &msg), Err(e), None);
    }
    let version = protocol::negotiate_legacy(&init.protocol_version);
    let created = gw.sessions.create(
        caller.binding(),
        version.to_owned(),
        init.capabilities,
        init.client_info,
    );
    let session = match created.await {
        Ok(s) => s,
        Err(CreateError::Limit(e)) => {
            return (refused(Some(req.id.clone()), &e), Err(e.to_error()), None);
        }
        Err(CreateError::Store(e)) => {
            let (resp, e) = create_refused(req.id.clone(), &e);
            return (resp, Err(e), None);
        }
    };
    tracing::info!(session = session.key, version, "session started");
    let result = raw(&serde_json::json!({
        "protocolVersion": version,
        "capabilities": gw.capabilities(),
        "serverInfo": gw.server_info(),
    }));
    let mut resp = json(
        StatusCode::OK,
        &Message::Response(protocol::Response::new(req.id.clone(), result.clone())),
    );
    if let Ok(v) = HeaderValue::from_str(&session.id) {
        resp.headers_mut().insert(protocol::HEADER_SESSION_ID, v);
    }
    (resp, Ok(result), Some(session))
}

async fn legacy(
    gw: Arc<Gateway>,
    caller: Caller,
    session: Arc<Session>,
    msg: Message,
    headers: crate::backend::Forwarded,
    gw_challenge: Option<HeaderValue>,
    edge: Edge,
) -> Response {
    match msg {
        Message::Request(req) => {
            let permit = match gw.sessions.admit(&session.binding, Some(&session)) {
                Ok(p) => p,
                Err(e) => return refused(Some(req.id), &e),
            };
            let (out_tx, out_rx) = mpsc::channel(64);
            let client = Client::Legacy(session.clone());
            let Edge { source, trace } = edge;
            let cx = Cx { caller, client, out: out_tx, headers, source };
            let id = req.id.clone();
            let own = session.clone();
            let serve = async move {
                let out = crate::layer::serve(&gw, &cx, &req.method, req.params).await;
                // A change this request made (subscription, log level) reaches the store
                // before the client hears it is done.
                own.flush().await;
                out
            };
            let task =
                session.spawn_request(id.clone(), permit, crate::telemetry::carry(trace, serve));
            stream::respond(id, out_rx, stream::Task::Detached(task), legacy_status, gw_challenge)
                .await
        }
        Message::Notification(n) => {
            if n.method == "notifications/cancelled"
                && let Some(params) = n.params.as_deref()
                && let Ok(p) = serde_json::from_str::<serde_json::Value>(params.get())
                && let Some(id) =
                    p.get("requestId").and_then(|v| serde_json::from_value::<Id>(v.clone()).ok())
            {
                session.cancel(&id);
            }
            StatusCode::ACCEPTED.into_response()
        }
        Message::Response(r) => {
            let id = r.id.clone();
            answer_relay(&session, &caller, &id, Message::Response(r)).await
        }
        Message::Error(e) => match e.id.clone() {
            Some(id) => answer_relay(&session, &caller, &id, Message::Error(e)).await,
            None => StatusCode::ACCEPTED.into_response(),
        },
    }
}

/// A client's answer to a server-to-client request the gateway relayed: passed to the backend
/// that asked, under the backend's id, with this request's caller.
async fn answer_relay(session: &Session, caller: &Caller, id: &Id, mut msg: Message) -> Response {
    let Some(relay) = session.take_relay(id) else {
        return error(
            StatusCode::BAD_REQUEST,
            Some(id.clone()),
            code::INVALID_REQUEST,
            "no pending request with this id",
        );
    };
    match relay {
        PendingRelay::Backend { backend, backend_id } => {
            match &mut msg {
                Message::Response(r) => r.id = backend_id,
                Message::Error(e) => e.id = Some(backend_id),
                _ => {}
            }
            if let Err(e) = backend.respond(caller, Some(session.key), msg).await {
                tracing::warn!(error = %e, "could not pass the client's answer to the backend");
            }
        }
        PendingRelay::Local(tx) => {
            let _ = tx.send(msg);
        }
    }
    StatusCode::ACCEPTED.into_response()
}

/// A 2026-07-28 request: protocol checks, then dispatch (or a listen stream).
async fn modern(
    gw: Arc<Gateway>,
    caller: Caller,
    headers: &HeaderMap,
    req: Request,
    edge: Edge,
) -> Response {
    let meta = RequestMeta::from_params(req.params.as_deref());
    let header_version = header_str(headers, protocol::HEADER_PROTOCOL_VERSION);
    let bad = |status: StatusCode, code: i64, message: String| {
        error(status, Some(req.id.clone()), code, message)
    };
    if let Some(meta_version) = meta.protocol_version.as_deref() {
        match header_version {
            None => {
                return bad(
                    StatusCode::BAD_REQUEST,
                    code::HEADER_MISMATCH,
                    "request _meta protocolVersion requires the MCP-Protocol-Version header".into(),
                );
            }
            Some(h) if h != meta_version => {
                return bad(
                    StatusCode::BAD_REQUEST,
                    code::HEADER_MISMATCH,
                    format!(
                        "MCP-Protocol-Version header ({h}) does not match request _meta protocolVersion ({meta_version})"
                    ),
                );
            }
            Some(_) => {}
        }
        if Era::of(meta_version) != Era::Modern || !SUPPORTED_VERSIONS.contains(&meta_version) {
            let supported: Vec<&str> =
                SUPPORTED_VERSIONS.iter().copied().filter(|v| Era::of(v) == Era::Modern).collect();
            let e = ErrorObject::with_data(
                code::UNSUPPORTED_PROTOCOL_VERSION,
                format!("Unsupported protocol version: {meta_version}"),
                &serde_json::json!({ "supported": supported, "requested": meta_version }),
            );
            return json(
                StatusCode::BAD_REQUEST,
                &Message::Error(ErrorResponse::new(Some(req.id.clone()), e)),
            );
        }
    }
    let missing = meta.missing_required();
    if !missing.is_empty() {
        return bad(
            StatusCode::BAD_REQUEST,
            code::INVALID_PARAMS,
            format!(
                "Invalid params: request _meta is missing or has malformed required fields: {}",
                missing.join(", ")
            ),
        );
    }
    if protocol::REMOVED_IN_MODERN.contains(&req.method.as_str()) {
        return bad(
            StatusCode::NOT_FOUND,
            code::METHOD_NOT_FOUND,
            format!("Method not found: {} (removed in 2026-07-28)", req.method),
        );
    }
    let schema = tool_schema(&gw, &caller, &req.method, req.params.as_deref()).await;
    if let Err(reason) =
        headers::validate(headers, &req.method, req.params.as_deref(), schema.as_deref())
    {
        return bad(
            StatusCode::BAD_REQUEST,
            code::HEADER_MISMATCH,
            format!("Header mismatch: {reason}"),
        );
    }
    if req.method == "subscriptions/listen" {
        return super::listen::listen(gw, caller, req).await;
    }
    let permit = match gw.sessions.admit(&caller.binding(), None) {
        Ok(p) => p,
        Err(e) => return refused(Some(req.id), &e),
    };
    let (out_tx, out_rx) = mpsc::channel(64);
    let gw_challenge = gw.gatekeeper.reauthenticate(headers, REFUSED_DOWNSTREAM);
    let forwarded = gw.forwarded(headers);
    let Edge { source, trace } = edge;
    let cx = Cx { caller, client: Client::Modern(meta), out: out_tx, headers: forwarded, source };
    let id = req.id.clone();
    let task = tokio::spawn(crate::telemetry::carry(trace, async move {
        let _permit = permit;
        crate::layer::serve(&gw, &cx, &req.method, req.params).await
    }));
    let task = stream::Task::Owned(tokio_util::task::AbortOnDropHandle::new(task));
    stream::respond(id, out_rx, task, modern_status, gw_challenge).await
}

/// The input schema of the tool a `tools/call` names (in the catalog this caller sees), for
/// `Mcp-Param-*` checks.
async fn tool_schema(
    gw: &Gateway,
    caller: &Caller,
    method: &str,
    params: Option<&serde_json::value::RawValue>,
) -> Option<std::sync::Arc<serde_json::Value>> {
    if method != "tools/call" {
        return None;
    }
    let name = crate::protocol::params::get_str(params, "name")?;
    gw.catalog.for_caller(&gw.backends, caller).await.tool_schema(&name)
}

/// GET /mcp: a Legacy session's stream of server-initiated messages.
pub async fn get(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let Some(sid) = header_str(&headers, protocol::HEADER_SESSION_ID) else {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "POST")],
            "GET needs an Mcp-Session-Id (2026-07-28 clients use subscriptions/listen)",
        )
            .into_response();
    };
    let gw = app.gw.clone();
    let caller = match gw.gatekeeper.caller(&headers, &gw.identities).await {
        Ok(c) => c,
        Err(refusal) => return refusal,
    };
    let session = match crate::session::resume(&gw, &caller, sid).await {
        Ok(s) => s,
        Err(e) => return lookup_refused(&e, None, false),
    };
    // The permit rides in the stream's state, so the slot is free again when the stream ends.
    let permit = match session.open_stream() {
        Ok(p) => p,
        Err(e) => return refused(None, &e),
    };
    // What other replicas have for this session (they publish once this stream is open here).
    let bus = match gw.sessions.bus() {
        Some(bus) => Some(bus.listen(session.store_key()).await),
        None => None,
    };
    let state = (
        session.closed(),
        gw.catalog.changes_for(session.binding.clone()),
        gw.events.subscribe(),
        gw.stop.clone(),
        session,
        (std::collections::VecDeque::<Message>::new(), permit, bus),
    );
    let stream = futures::stream::unfold(
        state,
        |(closed, mut changes, mut events, stop, session, (mut queue, permit, mut bus))| async move {
            loop {
                if let Some(m) = queue.pop_front() {
                    return Some((
                        m,
                        (closed, changes, events, stop, session, (queue, permit, bus)),
                    ));
                }
                let from_bus = async {
                    match bus.as_mut() {
                        Some(l) => l.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    // The session ended (DELETE or idle expiry): so does its stream.
                    _ = closed.cancelled() => return None,
                    c = changes.recv() => if let Ok(c) = c {
                        for (on, method) in [(c.tools, "notifications/tools/list_changed"), (c.prompts, "notifications/prompts/list_changed"), (c.resources, "notifications/resources/list_changed")] {
                            if on {
                                queue.push_back(Message::Notification(Notification::new(method, None)));
                            }
                        }
                    },
                    e = events.recv() => if let Ok(e) = e && session.wants(&e) {
                        queue.push_back(Message::Notification(e.notification));
                    },
                    m = from_bus => match m {
                        // The replica that published checked the session's filters.
                        Some(m) => if let Some(n) = crate::session::bus::decode(&m, &session.binding) {
                            queue.push_back(Message::Notification(n));
                        },
                        None => bus = None,
                    },
                }
            }
        },
    );
    stream::sse(stream)
}

/// DELETE /mcp: ends a Legacy session.
pub async fn delete(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let Some(sid) = header_str(&headers, protocol::HEADER_SESSION_ID) else {
        return (StatusCode::BAD_REQUEST, "DELETE needs an Mcp-Session-Id").into_response();
    };
    let caller = match app.gw.gatekeeper.caller(&headers, &app.gw.identities).await {
        Ok(c) => c,
        Err(refusal) => return refusal,
    };
    match app.gw.sessions.remove(sid, &caller.binding()).await {
        Ok(Some(session)) => {
            app.gw.end_backend_sessions(&session).await;
            StatusCode::OK.into_response()
        }
        // Held on other replicas only: they end their copies when they next see it.
        Ok(None) => StatusCode::OK.into_response(),
        Err(e) => lookup_refused(&e, None, false),
    }
}
