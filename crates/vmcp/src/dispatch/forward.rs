//! Routing one request to one backend and relaying what comes back.
//!
//! While the backend works, its messages for this request are relayed to the client: progress and
//! logging notifications (logging filtered by the client's level), and server-to-client requests
//! (sampling, elicitation, roots), which a Legacy client answers through its session and a Modern
//! client cannot receive (the backend is told so at once, so nothing hangs).
//!
//! Invariant: the backend request carries `cx.caller`, the caller of this client request.

use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::{Client, Cx, Outcome};
use crate::backend::{Backend, BackendError, CallContext, Reply};
use crate::gateway::Gateway;
use crate::protocol::jsonrpc::{code, raw};
use crate::protocol::{Era, ErrorObject, ErrorResponse, Message, Request, meta, params};
use crate::session::{LOG_LEVELS, PendingRelay};

/// Keys of `_meta` that only Modern peers understand.
const MODERN_META_KEYS: &[&str] = &[
    meta::KEY_PROTOCOL_VERSION,
    meta::KEY_CLIENT_CAPABILITIES,
    meta::KEY_CLIENT_INFO,
    meta::KEY_LOG_LEVEL,
];

/// Sends `method` to the backend `name` on behalf of `cx.caller` and relays its messages to the
/// client until the reply arrives. A Modern backend's `input_required` result for a Legacy client
/// is answered by asking the client (server-to-client requests on this request's stream) and
/// retrying, up to [`MAX_INPUT_ROUNDS`] times.
pub async fn forward(
    gw: &Gateway,
    cx: &Cx,
    name: &str,
    method: &str,
    params: Option<Box<RawValue>>,
) -> Outcome {
    forward_with(gw, cx, name, method, params, None).await
}

/// Rounds of `input_required` the gateway answers for a Legacy client before giving up.
pub const MAX_INPUT_ROUNDS: usize = 10;

/// [`forward`], with the called tool's input schema (for `Mcp-Param-*` headers).
pub async fn forward_with(
    gw: &Gateway,
    cx: &Cx,
    name: &str,
    method: &str,
    mut params: Option<Box<RawValue>>,
    tool_schema: Option<std::sync::Arc<serde_json::Value>>,
) -> Outcome {
    let backend = &gw.backends.get(name).ok_or_else(|| {
        ErrorObject::new(code::INTERNAL_ERROR, format!("no backend named {name}"))
    })?;
    if let Some(health) = gw.backends.health(name) {
        health.admit().map_err(|r| refused(name, &r))?;
    }
    if let (Client::Modern(_), Some(Era::Legacy)) = (&cx.client, backend.info().map(|i| i.era)) {
        // The Legacy backend may ask the client things mid-call; a Modern client answers through
        // input_required rounds with the call parked in between.
        let params = params::strip_meta_keys(params.as_deref(), MODERN_META_KEYS);
        let target =
            super::park::Call { backend, name, method, client_meta: client_meta(cx), tool_schema };
        let result = super::park::call(gw, cx, target, params).await?;
        return Ok(fix_result(cx, method, result));
    }
    for _ in 0..MAX_INPUT_ROUNDS {
        let result =
            call_once(gw, cx, backend, name, method, params.clone(), tool_schema.clone()).await?;
        let Client::Legacy(session) = &cx.client else {
            return Ok(fix_result(cx, method, result));
        };
        let Some(round) = InputRequired::parse(&result) else {
            return Ok(fix_result(cx, method, result));
        };
        let responses = ask_client(gw, cx, session, name, round.input_requests).await?;
        let mut next = params::set(params.as_deref(), "inputResponses", &responses)
            .map_err(super::invalid_params)?;
        if let Some(state) = round.request_state {
            next =
                params::set(Some(&next), "requestState", &state).map_err(super::invalid_params)?;
        }
        params = Some(next);
    }
    Err(ErrorObject::new(
        code::INTERNAL_ERROR,
        format!("backend {name} still asked for input after {MAX_INPUT_ROUNDS} rounds"),
    ))
}

async fn call_once(
    gw: &Gateway,
    cx: &Cx,
    backend: &Arc<Backend>,
    name: &str,
    method: &str,
    params: Option<Box<RawValue>>,
    tool_schema: Option<std::sync::Arc<serde_json::Value>>,
) -> Outcome {
    let (events, mut rx) = mpsc::channel::<Message>(64);
    let ctx = CallContext {
        events,
        client_meta: client_meta(cx),
        tool_schema,
        session: cx.session_key(),
        headers: cx.headers.clone(),
    };
    let timeout = gw.backends.timeout(name);
    let health = gw.backends.health(name);
    let call = async {
        let started = tokio::time::Instant::now();
        let outcome =
            tokio::time::timeout(timeout, backend.request(&cx.caller, method, params, ctx)).await;
        // A transport that gives up as the deadline passes (its own HTTP timeout, a stream cut
        // then) reports a timeout too: one code for running out of time, whatever the transport.
        let timed_out = match &outcome {
            Err(_) => true,
            Ok(Err(e)) => e.is_timeout() || started.elapsed() + DEADLINE_SLACK >= timeout,
            Ok(Ok(_)) => false,
        };
        match (&outcome, health) {
            (_, None) => {}
            (Ok(Ok(_)), Some(h)) => h.success(),
            (_, Some(h)) if timed_out => {
                h.failure(&format!("{method} timed out after {timeout:?}"))
            }
            (Ok(Err(e)), Some(h)) if e.counts_against_health() => h.failure(&e.to_string()),
            _ => {}
        }
        match outcome {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) if !timed_out => Err(backend_error(&e)),
            _ => Err(ErrorObject::new(
                code::BACKEND_TIMEOUT,
                format!("backend {name} did not answer {method} within {timeout:?}"),
            )),
        }
    };
    let pump = async {
        while let Some(msg) = rx.recv().await {
            relay(cx, backend, msg).await;
        }
    };
    let (reply, ()) = futures::join!(call, pump);
    match reply? {
        Reply::Result(result) => Ok(result),
        Reply::Error(e) => Err(e),
    }
}

/// An `input_required` result (SEP-2322).
struct InputRequired {
    input_requests: serde_json::Map<String, serde_json::Value>,
    request_state: Option<serde_json::Value>,
}

impl InputRequired {
    fn parse(result: &RawValue) -> Option<InputRequired> {
        if !result.get().contains("input_required") {
            return None;
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct R {
            result_type: String,
            #[serde(default)]
            input_requests: serde_json::Map<String, serde_json::Value>,
            #[serde(default)]
            request_state: Option<serde_json::Value>,
        }
        let r: R = serde_json::from_str(result.get()).ok()?;
        (r.result_type == "input_required").then_some(InputRequired {
            input_requests: r.input_requests,
            request_state: r.request_state,
        })
    }
}

/// Asks a Legacy client each input request as a server-to-client request and collects the
/// results by key.
async fn ask_client(
    gw: &Gateway,
    cx: &Cx,
    session: &crate::session::Session,
    name: &str,
    requests: serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Map<String, serde_json::Value>, ErrorObject> {
    let mut responses = serde_json::Map::new();
    for (key, request) in requests {
        let method = request.get("method").and_then(|m| m.as_str()).unwrap_or_default().to_owned();
        if let Some(cap) = capability_for(&method)
            && session.client_capabilities.get(cap).is_none()
        {
            return Err(ErrorObject::with_data(
                code::MISSING_REQUIRED_CLIENT_CAPABILITY,
                format!(
                    "backend {name} needs the client's {cap} capability, which the client did not declare"
                ),
                &serde_json::json!({ "requiredCapabilities": { cap: {} } }),
            ));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let id = session.add_relay(PendingRelay::Local(tx)).map_err(|e| e.to_error())?;
        let params = request.get("params").map(raw);
        if cx.out.send(Message::Request(Request::new(id, method.clone(), params))).await.is_err() {
            return Err(ErrorObject::new(
                code::INTERNAL_ERROR,
                "the client is no longer listening",
            ));
        }
        let answer = tokio::time::timeout(gw.backends.timeout(name), rx).await;
        match answer {
            Ok(Ok(Message::Response(r))) => {
                let value = serde_json::from_str(r.result.get()).unwrap_or(serde_json::Value::Null);
                responses.insert(key, value);
            }
            Ok(Ok(Message::Error(e))) => return Err(e.error),
            Ok(_) => {
                return Err(ErrorObject::new(
                    code::INTERNAL_ERROR,
                    format!("no answer from the client to {method}"),
                ));
            }
            Err(_) => {
                return Err(ErrorObject::new(
                    code::BACKEND_TIMEOUT,
                    format!("the client did not answer {method} in time"),
                ));
            }
        }
    }
    Ok(responses)
}

pub(super) fn capability_for(method: &str) -> Option<&'static str> {
    match method {
        "sampling/createMessage" => Some("sampling"),
        "elicitation/create" => Some("elicitation"),
        "roots/list" => Some("roots"),
        _ => None,
    }
}

/// The client's protocol `_meta` for Modern backends.
fn client_meta(cx: &Cx) -> Option<serde_json::Map<String, serde_json::Value>> {
    match &cx.client {
        Client::Modern(m) => {
            let raw = m.raw.as_ref()?;
            Some(
                MODERN_META_KEYS
                    .iter()
                    .filter_map(|k| raw.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                    .collect(),
            )
        }
        Client::Legacy(s) => {
            let mut m = serde_json::Map::new();
            m.insert(meta::KEY_CLIENT_CAPABILITIES.into(), s.client_capabilities.clone());
            m.insert(meta::KEY_CLIENT_INFO.into(), s.client_info.clone());
            m.insert(meta::KEY_LOG_LEVEL.into(), s.log_level().into());
            Some(m)
        }
    }
}

/// Methods whose 2026-07-28 results are cacheable and so must carry `ttlMs` and `cacheScope`
/// (SEP-2549); the list methods are answered from the catalog (`lists.rs`), this one is relayed.
const CACHEABLE_RELAYED: &[&str] = &["resources/read"];

/// Results relayed to Modern clients carry `resultType` (a Legacy backend omits it) and, for a
/// cacheable method, the caching hints a Legacy backend cannot give: `ttlMs: 0` and
/// `cacheScope: "private"`, as for the catalog's lists, since the gateway cannot know how long the
/// backend's content stays fresh nor whether it differs per principal. Legacy clients get results
/// without the 2026-07-28 fields a Modern backend adds.
fn fix_result(cx: &Cx, method: &str, result: Box<RawValue>) -> Box<RawValue> {
    let has_type = result.get().contains("\"resultType\"");
    let needs_cache_hints = cx.is_modern()
        && CACHEABLE_RELAYED.contains(&method)
        && !(result.get().contains("\"ttlMs\"") && result.get().contains("\"cacheScope\""));
    if cx.is_modern() == has_type && !needs_cache_hints {
        return result;
    }
    let Ok(mut map) =
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(result.get())
    else {
        return result;
    };
    if cx.is_modern() {
        map.entry("resultType").or_insert("complete".into());
        // An `input_required` result is not cacheable content; only complete ones get hints.
        if needs_cache_hints && map.get("resultType").and_then(|v| v.as_str()) == Some("complete") {
            super::lists::modern_fields(&mut map);
        }
    } else if map.get("resultType").and_then(|v| v.as_str()) == Some("complete") {
        map.remove("resultType");
        map.remove("ttlMs");
        map.remove("cacheScope");
    } else {
        return result;
    }
    raw(&map)
}

/// How close to its deadline a transport failure counts as the deadline passing.
const DEADLINE_SLACK: std::time::Duration = std::time::Duration::from_millis(50);

/// A call the backend's health refuses (breaker open): -32001 at once, naming the backend and
/// when it will be tried again.
pub(super) fn refused(name: &str, r: &crate::backend::health::Refused) -> ErrorObject {
    let retry = r.retry_at.map(crate::backend::health::rfc3339);
    let when = match &retry {
        Some(t) => format!("; retried after {t}"),
        None => String::new(),
    };
    ErrorObject::with_data(
        code::BACKEND_UNAVAILABLE,
        format!("backend {name} is unavailable: {}{when}", r.reason),
        &serde_json::json!({ "backend": name, "retryAt": retry }),
    )
}

pub(super) fn backend_error(e: &BackendError) -> ErrorObject {
    match e {
        BackendError::Unavailable { .. } => {
            ErrorObject::new(code::BACKEND_UNAVAILABLE, e.to_string())
        }
        BackendError::Transport { .. } | BackendError::Exhausted { .. } => {
            ErrorObject::new(code::INTERNAL_ERROR, e.to_string())
        }
        BackendError::Auth(crate::auth::outgoing::OutgoingAuthError::Reauthenticate(_)) => {
            ErrorObject::new(code::REAUTHENTICATE, e.to_string())
        }
        BackendError::Auth(crate::auth::outgoing::OutgoingAuthError::UpstreamUnavailable(_)) => {
            ErrorObject::new(code::CREDENTIALS_UNAVAILABLE, e.to_string())
        }
        BackendError::Auth(crate::auth::outgoing::OutgoingAuthError::Forbidden(_)) => {
            ErrorObject::new(code::ACCESS_DENIED, e.to_string())
        }
        BackendError::Auth(_) => ErrorObject::new(code::BACKEND_UNAVAILABLE, e.to_string()),
        // The backend turned the caller's own credentials down: 401 asks the client to log in
        // again (its token may have expired), 403 says this principal may not.
        BackendError::Refused { status: 401, .. } => {
            ErrorObject::new(code::REAUTHENTICATE, e.to_string())
        }
        BackendError::Refused { .. } => ErrorObject::new(code::ACCESS_DENIED, e.to_string()),
    }
}

fn level_index(level: &str) -> usize {
    LOG_LEVELS.iter().position(|l| *l == level).unwrap_or(0)
}

/// Relays one message the backend sent while serving this request.
pub(super) async fn relay(cx: &Cx, backend: &Arc<Backend>, msg: Message) {
    match msg {
        Message::Notification(n) if n.method == "notifications/message" => {
            let level = params::get_str(n.params.as_deref(), "level").unwrap_or_default();
            let wanted = match &cx.client {
                Client::Legacy(s) => s.wants_log(&level),
                // 2026-07-28: no log messages unless the request asked for a level.
                Client::Modern(m) => m
                    .log_level
                    .as_deref()
                    .is_some_and(|min| level_index(&level) >= level_index(min)),
            };
            if wanted {
                let _ = cx.out.send(Message::Notification(n)).await;
            }
        }
        Message::Notification(n) => {
            let _ = cx.out.send(Message::Notification(n)).await;
        }
        Message::Request(r) => relay_request(cx, backend, r).await,
        Message::Response(_) | Message::Error(_) => {}
    }
}

/// A server-to-client request: through the Legacy session to the client, or refused.
async fn relay_request(cx: &Cx, backend: &Arc<Backend>, r: Request) {
    let capability = capability_for(&r.method);
    let refusal = match &cx.client {
        Client::Legacy(s) => {
            let declared = capability.is_none_or(|c| s.client_capabilities.get(c).is_some());
            if declared {
                let relay =
                    PendingRelay::Backend { backend: backend.clone(), backend_id: r.id.clone() };
                match s.add_relay(relay) {
                    Ok(id) => {
                        let forwarded = Message::Request(Request { id, ..r.clone() });
                        if cx.out.send(forwarded).await.is_ok() {
                            return;
                        }
                        "the client is no longer listening".to_owned()
                    }
                    // The backend hears why at once instead of waiting on a request never sent.
                    Err(e) => e.to_string(),
                }
            } else {
                format!(
                    "the client did not declare the {} capability",
                    capability.unwrap_or_default()
                )
            }
        }
        Client::Modern(_) => format!(
            "{} cannot be relayed: the client uses protocol 2026-07-28, which has no server-to-client requests",
            r.method
        ),
    };
    let error = Message::Error(ErrorResponse::new(
        Some(r.id),
        ErrorObject::new(code::METHOD_NOT_FOUND, refusal),
    ));
    let _ = backend.respond(&cx.caller, cx.session_key(), error).await;
}
