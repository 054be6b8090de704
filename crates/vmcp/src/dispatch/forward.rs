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
/// client until the reply arrives.
pub async fn forward(
    gw: &Gateway,
    cx: &Cx,
    name: &str,
    method: &str,
    params: Option<Box<RawValue>>,
) -> Outcome {
    let backend = gw.backends.get(name).ok_or_else(|| {
        ErrorObject::new(code::INTERNAL_ERROR, format!("no backend named {name}"))
    })?;
    let backend_era = backend.info().map(|i| i.era);
    let params = match (&cx.client, backend_era) {
        (Client::Modern(_), Some(Era::Legacy)) => {
            params::strip_meta_keys(params.as_deref(), MODERN_META_KEYS)
        }
        _ => params,
    };
    let (events, mut rx) = mpsc::channel::<Message>(64);
    let ctx = CallContext { events, client_meta: client_meta(cx) };
    let timeout = gw.backends.timeout(name);
    let call = async {
        match tokio::time::timeout(timeout, backend.request(&cx.caller, method, params, ctx)).await
        {
            Ok(r) => r.map_err(|e| backend_error(&e)),
            Err(_) => Err(ErrorObject::new(
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
        Reply::Result(result) => Ok(fix_result(cx, result)),
        Reply::Error(e) => Err(e),
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
            Some(m)
        }
    }
}

/// Results relayed to Modern clients carry `resultType` (a Legacy backend omits it); Legacy
/// clients get results without the 2026-07-28 fields a Modern backend adds.
fn fix_result(cx: &Cx, result: Box<RawValue>) -> Box<RawValue> {
    let has_type = result.get().contains("\"resultType\"");
    if cx.is_modern() == has_type {
        return result;
    }
    let Ok(mut map) =
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(result.get())
    else {
        return result;
    };
    if cx.is_modern() {
        map.insert("resultType".into(), "complete".into());
    } else if map.get("resultType").and_then(|v| v.as_str()) == Some("complete") {
        map.remove("resultType");
        map.remove("ttlMs");
        map.remove("cacheScope");
    } else {
        return result;
    }
    raw(&map)
}

fn backend_error(e: &BackendError) -> ErrorObject {
    match e {
        BackendError::Unavailable { .. } => {
            ErrorObject::new(code::BACKEND_UNAVAILABLE, e.to_string())
        }
        BackendError::Transport { .. } => ErrorObject::new(code::INTERNAL_ERROR, e.to_string()),
        BackendError::Auth(_) => ErrorObject::new(code::INTERNAL_ERROR, e.to_string()),
    }
}

fn level_index(level: &str) -> usize {
    LOG_LEVELS.iter().position(|l| *l == level).unwrap_or(0)
}

/// Relays one message the backend sent while serving this request.
async fn relay(cx: &Cx, backend: &Arc<Backend>, msg: Message) {
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
    let capability = match r.method.as_str() {
        "sampling/createMessage" => Some("sampling"),
        "elicitation/create" => Some("elicitation"),
        "roots/list" => Some("roots"),
        _ => None,
    };
    let refusal = match &cx.client {
        Client::Legacy(s) => {
            let declared = capability.is_none_or(|c| s.client_capabilities.get(c).is_some());
            if declared {
                let id = s
                    .add_relay(PendingRelay { backend: backend.clone(), backend_id: r.id.clone() });
                let forwarded = Message::Request(Request { id, ..r.clone() });
                if cx.out.send(forwarded).await.is_ok() {
                    return;
                }
                "the client is no longer listening".to_owned()
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
    let _ = backend.respond(&cx.caller, error).await;
}
