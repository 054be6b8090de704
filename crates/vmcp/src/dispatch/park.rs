//! Bridging a Legacy backend's server-to-client requests (sampling, elicitation, roots) to a
//! Modern client, which cannot receive requests: the backend call is parked, the client gets an
//! `input_required` result whose `requestState` names the parked call, and the client's retry
//! (with `inputResponses`) answers the backend and resumes waiting.
//!
//! Invariants:
//! - A parked call resumes only for the principal that started it, and only once per round.
//! - Answers to the backend carry the caller of the request that brought them.
//! - A parked call that nobody resumes is abandoned (and so cancelled at the backend) when its
//!   backend timeout passes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand::RngCore;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Cx, Outcome, invalid_params};
use crate::auth::Binding;
use crate::backend::{Backend, CallContext, Reply};
use crate::config::LimitsConfig;
use crate::gateway::Gateway;
use crate::protocol::jsonrpc::{code, raw};
use crate::protocol::{ErrorObject, ErrorResponse, Id, Message, Request, Response, params};
use crate::session::LimitError;

/// Prefix of the `requestState` values the gateway issues for parked calls.
pub const STATE_PREFIX: &str = "vmcp-parked.";

type CallResult = Result<Reply, ErrorObject>;

struct ParkedCall {
    binding: Binding,
    /// Input request key → the backend's id for that request.
    pending: Vec<(String, Id)>,
    events: mpsc::Receiver<Message>,
    task: JoinHandle<CallResult>,
    deadline: Instant,
}

impl Drop for ParkedCall {
    /// A call dropped before its end (the client went away, or nobody resumed it in time) is
    /// abandoned, which cancels it at the backend.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Calls waiting for a Modern client's input.
#[derive(Default)]
pub struct Parked {
    calls: Mutex<HashMap<String, ParkedCall>>,
}

impl Parked {
    /// Parks `call` and returns its token; expired and finished calls are dropped first, and
    /// beyond `maxParkedCalls` (or the principal's `maxParkedCallsPerPrincipal`) the call is
    /// refused (and, being dropped, cancelled at the backend).
    fn insert(&self, call: ParkedCall, limits: &LimitsConfig) -> Result<String, LimitError> {
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        calls.retain(|_, c| c.deadline > now && !c.task.is_finished());
        let limit = limits.max_parked_calls;
        if calls.len() >= limit {
            return Err(LimitError::ParkedCalls { limit });
        }
        let limit = limits.max_parked_calls_per_principal;
        if calls.values().filter(|c| c.binding == call.binding).count() >= limit {
            return Err(LimitError::ParkedCallsPerPrincipal { limit });
        }
        calls.insert(token.clone(), call);
        Ok(token)
    }

    /// Number of parked calls (expired ones included until the next park drops them).
    pub fn len(&self) -> usize {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no call is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take(&self, token: &str, binding: &Binding) -> Result<ParkedCall, ErrorObject> {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        match calls.get(token) {
            // Also what a retry that reached another replica gets: parked calls cannot move
            // between processes. Starting over is always safe, so the error says so.
            None => Err(ErrorObject::with_data(
                code::INVALID_PARAMS,
                "requestState names no pending request on this gateway instance (expired, \
                 already used, or started on another replica): retry the original request \
                 without requestState",
                &serde_json::json!({ "retryable": true }),
            )),
            Some(c) if c.binding != *binding => {
                Err(invalid_params("requestState belongs to another principal"))
            }
            Some(_) => {
                calls.remove(token).ok_or_else(|| invalid_params("requestState already used"))
            }
        }
    }
}

/// One call to a Legacy backend on behalf of a Modern client.
pub struct Call<'a> {
    /// The backend.
    pub backend: &'a Arc<Backend>,
    /// Its name.
    pub name: &'a str,
    /// The method.
    pub method: &'a str,
    /// The client's protocol `_meta`.
    pub client_meta: Option<serde_json::Map<String, serde_json::Value>>,
    /// The called tool's input schema.
    pub tool_schema: Option<std::sync::Arc<serde_json::Value>>,
}

/// Runs, or resumes, a call by a Modern client to a Legacy backend.
pub async fn call(
    gw: &Gateway,
    cx: &Cx,
    target: Call<'_>,
    params: Option<Box<RawValue>>,
) -> Outcome {
    let backend = target.backend;
    let state = params::get_str(params.as_deref(), "requestState");
    let mut call = match state.as_deref().and_then(|s| s.strip_prefix(STATE_PREFIX)) {
        Some(token) => resume(gw, cx, backend, token, params.as_deref()).await?,
        None => start(gw, cx, target.clone_parts(), params),
    };
    while let Some(msg) = call.events.recv().await {
        let Message::Request(first) = msg else {
            super::forward::relay(cx, backend, msg).await;
            continue;
        };
        let batch = gather(&mut call, cx, backend, first).await;
        let mut asks = Vec::new();
        let mut undeclared = Vec::new();
        for r in batch {
            match super::forward::capability_for(&r.method) {
                None => {
                    let refusal = ErrorObject::new(
                        code::METHOD_NOT_FOUND,
                        format!("{} is not relayed to 2026-07-28 clients", r.method),
                    );
                    refuse(cx, backend, r.id, refusal).await;
                }
                Some(cap) if declared(cx, cap) => asks.push(r),
                Some(cap) => undeclared.push((r, cap)),
            }
        }
        let missing = |cap: &str| {
            ErrorObject::with_data(
                code::MISSING_REQUIRED_CLIENT_CAPABILITY,
                format!(
                    "backend {} needs the client's {cap} capability, which the request did not declare",
                    target.name
                ),
                &serde_json::json!({ "requiredCapabilities": { cap: {} } }),
            )
        };
        if asks.is_empty() {
            // The backend can go no further without what the client lacks: the client is told
            // which capability, and the call, dropped here, is cancelled at the backend.
            if let Some((_, cap)) = undeclared.first() {
                return Err(missing(cap));
            }
            continue;
        }
        // Asked together with things the client can answer, an undeclared capability may be
        // optional to the backend: it hears the refusal and decides, and the client is asked
        // only what it declared.
        for (r, cap) in undeclared {
            refuse(cx, backend, r.id, missing(cap)).await;
        }
        let mut requests = serde_json::Map::new();
        for r in asks {
            let key = format!("{}-{}", r.method.replace('/', "-"), call.pending.len());
            let request_params: Option<serde_json::Value> =
                r.params.as_deref().and_then(|p| serde_json::from_str(p.get()).ok());
            requests.insert(
                key.clone(),
                serde_json::json!({ "method": r.method, "params": request_params }),
            );
            call.pending.push((key, r.id));
        }
        let token = gw.parked.insert(call, gw.sessions.limits()).map_err(|e| e.to_error())?;
        return Ok(raw(&serde_json::json!({
            "resultType": "input_required",
            "inputRequests": requests,
            "requestState": format!("{STATE_PREFIX}{token}"),
        })));
    }
    match (&mut call.task).await {
        Ok(Ok(Reply::Result(r))) => Ok(r),
        Ok(Ok(Reply::Error(e))) => Err(e),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ErrorObject::new(code::INTERNAL_ERROR, "the backend call was abandoned")),
    }
}

/// How long to wait, after a server-to-client request, for more that the backend sends at once
/// (a Legacy server may ask for several inputs concurrently): they go to the client in one
/// `input_required` round instead of one round each.
const GATHER_WINDOW: std::time::Duration = std::time::Duration::from_millis(25);

/// `first` and the server-to-client requests that follow it within [`GATHER_WINDOW`] of each
/// other (in all at most ten windows, so a backend streaming notifications cannot hold the round
/// back); notifications meanwhile are relayed as usual.
async fn gather(
    call: &mut ParkedCall,
    cx: &Cx,
    backend: &Arc<Backend>,
    first: Request,
) -> Vec<Request> {
    let start = tokio::time::Instant::now();
    let cap = start + GATHER_WINDOW * 10;
    let mut deadline = start + GATHER_WINDOW;
    let mut batch = vec![first];
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, call.events.recv()).await {
        match msg {
            Message::Request(r) => {
                batch.push(r);
                deadline = (tokio::time::Instant::now() + GATHER_WINDOW).min(cap);
            }
            other => super::forward::relay(cx, backend, other).await,
        }
    }
    batch
}

fn declared(cx: &Cx, cap: &str) -> bool {
    match &cx.client {
        super::Client::Modern(m) => m.has_capability(cap),
        super::Client::Legacy(_) => true,
    }
}

/// Answers one of the backend's requests with an error, so it does not wait for an answer that
/// will never come.
async fn refuse(cx: &Cx, backend: &Arc<Backend>, id: Id, error: ErrorObject) {
    let reply = Message::Error(ErrorResponse::new(Some(id), error));
    let _ = backend.respond(&cx.caller, None, reply).await;
}

struct Parts {
    backend: Arc<Backend>,
    name: String,
    method: String,
    client_meta: Option<serde_json::Map<String, serde_json::Value>>,
    tool_schema: Option<std::sync::Arc<serde_json::Value>>,
}

impl Call<'_> {
    fn clone_parts(&self) -> Parts {
        Parts {
            backend: self.backend.clone(),
            name: self.name.to_owned(),
            method: self.method.to_owned(),
            client_meta: self.client_meta.clone(),
            tool_schema: self.tool_schema.clone(),
        }
    }
}

/// Starts the backend call in its own task, so it can outlive this client request while parked.
fn start(gw: &Gateway, cx: &Cx, parts: Parts, params: Option<Box<RawValue>>) -> ParkedCall {
    let (events, rx) = mpsc::channel::<Message>(64);
    let Parts { backend, name, method, client_meta, tool_schema } = parts;
    let headers = cx.headers.clone();
    let ctx = CallContext { events, client_meta, tool_schema, session: None, headers };
    let timeout = gw.backends.timeout(&name);
    let caller = cx.caller.clone();
    let task = tokio::spawn(async move {
        match tokio::time::timeout(timeout, backend.request(&caller, &method, params, ctx)).await {
            Ok(r) => r.map_err(|e| super::forward::backend_error(&e)),
            Err(_) => Err(ErrorObject::new(
                code::BACKEND_TIMEOUT,
                format!("backend {name} did not answer {method} within {timeout:?}"),
            )),
        }
    });
    ParkedCall {
        binding: cx.caller.binding(),
        pending: Vec::new(),
        events: rx,
        task,
        deadline: Instant::now() + timeout,
    }
}

async fn resume(
    gw: &Gateway,
    cx: &Cx,
    backend: &Arc<Backend>,
    token: &str,
    params: Option<&RawValue>,
) -> Result<ParkedCall, ErrorObject> {
    // Checked before the call is taken, so a malformed retry leaves it parked for a good one.
    let responses: serde_json::Map<String, serde_json::Value> =
        match params.and_then(|p| serde_json::from_str::<serde_json::Value>(p.get()).ok()) {
            Some(v) => match v.get("inputResponses") {
                None => serde_json::Map::new(),
                Some(serde_json::Value::Object(m)) => m.clone(),
                Some(_) => return Err(invalid_params("inputResponses must be an object")),
            },
            None => serde_json::Map::new(),
        };
    let mut call = gw.parked.take(token, &cx.caller.binding())?;
    for (key, backend_id) in std::mem::take(&mut call.pending) {
        let answer = match responses.get(&key) {
            // Every answer to sampling, elicitation or roots is a result object.
            Some(v) if v.is_object() => Message::Response(Response::new(backend_id, raw(v))),
            Some(_) => Message::Error(ErrorResponse::new(
                Some(backend_id),
                ErrorObject::new(
                    code::INVALID_PARAMS,
                    "the client's answer is not a result object",
                ),
            )),
            None => Message::Error(ErrorResponse::new(
                Some(backend_id),
                ErrorObject::new(code::INVALID_PARAMS, "the client did not answer this request"),
            )),
        };
        if let Err(e) = backend.respond(&cx.caller, None, answer).await {
            return Err(super::forward::backend_error(&e));
        }
    }
    Ok(call)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(subject: &str) -> ParkedCall {
        let (_tx, events) = mpsc::channel(1);
        ParkedCall {
            binding: Binding::Principal { issuer: "i".into(), subject: subject.into() },
            pending: Vec::new(),
            events,
            task: tokio::spawn(std::future::pending()),
            deadline: Instant::now() + std::time::Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn parked_calls_are_capped_in_total_and_per_principal() {
        let limits = LimitsConfig {
            max_parked_calls: 3,
            max_parked_calls_per_principal: 2,
            ..Default::default()
        };
        let parked = Parked::default();
        parked.insert(call("a"), &limits).unwrap();
        let a2 = parked.insert(call("a"), &limits).unwrap();
        assert_eq!(
            parked.insert(call("a"), &limits).err(),
            Some(LimitError::ParkedCallsPerPrincipal { limit: 2 })
        );
        parked.insert(call("b"), &limits).unwrap();
        assert_eq!(
            parked.insert(call("c"), &limits).err(),
            Some(LimitError::ParkedCalls { limit: 3 })
        );
        assert_eq!(parked.len(), 3, "refused calls are not parked");
        let binding = Binding::Principal { issuer: "i".into(), subject: "a".into() };
        drop(parked.take(&a2, &binding).unwrap());
        parked.insert(call("c"), &limits).expect("a resumed call frees its slot");
    }

    #[tokio::test]
    async fn expired_parked_calls_free_their_slots() {
        let limits = LimitsConfig { max_parked_calls: 1, ..Default::default() };
        let parked = Parked::default();
        let mut old = call("a");
        old.deadline = Instant::now();
        parked.insert(old, &limits).unwrap();
        parked.insert(call("b"), &limits).expect("the expired call was dropped");
    }
}
