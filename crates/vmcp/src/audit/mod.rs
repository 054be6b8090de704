//! Audit events (`audit`, `serve --enable-audit`): one JSON line per MCP operation, in the shape
//! ToolHive writes (`pkg/audit`, `toolhive-core/audit`), so log pipelines built for ToolHive
//! read vmcp's too.
//!
//! A line is ToolHive's slog record: `time`, `level` (`AUDIT`), `msg` (`audit_event`),
//! `audit_id`, `type`, `logged_at`, `outcome`, `component`, `source` (`type`, `value`,
//! `extra.user_agent`, `extra.request_id`), `subjects` (`user_id`, `user`, `client_name`,
//! `client_version`), `delegation` (RFC 8693 `act` chain), `target` (`endpoint`, `method`,
//! `type`, `name`), `metadata.extra` (`duration_ms`, `transport`, `backend_name`,
//! `response_size_bytes`, `jsonrpc_error_code`, `jsonrpc_error_message`) and `data`
//! (`request`, `response`). vmcp adds `subjects.issuer`, `source.extra.remote_addr` (the TCP
//! peer; `source.value` is, as in ToolHive, the first `X-Forwarded-For` address, else
//! `X-Real-IP`, else the peer), `metadata.extra.mcp_version` and `metadata.extra.data_truncated`,
//! and fills `client_name`/`client_version` from the MCP `clientInfo` when the token has none.
//!
//! Which operations: every client request that reaches dispatch (`layer::serve`), refused by a
//! layer or not, `initialize` (`http/mcp.rs`), and a POST whose token is refused
//! (`http_request`, as ToolHive records it). An operation is recorded from the moment its task
//! first runs (`/status` `audit.inProgress` counts those under way): a request cancelled before
//! that leaves no event.
//!
//! Invariants: recording never waits on I/O (`sink.rs`: bounded queue, drops counted and shown
//! in `/status`); no credential reaches a line: the caller's token is never written, and request
//! and response data are redacted before they are cut to `maxDataSize` (`redact.rs`).

pub mod event;
pub mod redact;
pub mod sink;

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::config::AuditConfig;
use crate::layer::Target;
use crate::protocol::ErrorObject;

/// Where a request came from; no credential.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// ToolHive's `source.value`: the first `X-Forwarded-For` address, else `X-Real-IP`, else
    /// the peer address.
    pub value: String,
    /// The TCP peer.
    pub remote_addr: Option<SocketAddr>,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// `X-Request-ID`.
    pub request_id: Option<String>,
}

impl Source {
    /// The source of a request with `headers` from `peer`.
    pub fn of(headers: &http::HeaderMap, peer: Option<SocketAddr>) -> Source {
        let h = |name: &str| {
            headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
        };
        let value = h("x-forwarded-for")
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .or_else(|| h("x-real-ip"))
            .map(event::field)
            .or_else(|| peer.map(|p| p.ip().to_string()))
            .unwrap_or_default();
        Source {
            value,
            remote_addr: peer,
            user_agent: h("user-agent").map(event::field),
            request_id: h("x-request-id").map(event::field),
        }
    }
}

/// What the auditor needs to know about one operation besides its outcome.
pub struct Facts<'a> {
    /// The JSON-RPC method.
    pub method: &'a str,
    /// What it names, and the backend that serves it.
    pub target: &'a Target,
    /// Who asked.
    pub caller: &'a Caller,
    /// From where.
    pub source: &'a Source,
    /// The client's MCP `clientInfo`, if known.
    pub client_info: Option<&'a Value>,
    /// The protocol version of the request.
    pub protocol_version: Option<&'a str>,
    /// Whether the client is Modern (for the HTTP status of errors).
    pub modern: bool,
}

/// An operation being audited: started before dispatch, finished with its outcome.
pub struct Pending {
    event_type: &'static str,
    started: Instant,
    /// The redacted request data as JSON text, and whether it was cut.
    request: Option<(Box<RawValue>, bool)>,
}

/// Why audit could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// `logFile` cannot be opened.
    #[error("audit.logFile {path}: cannot open: {source}")]
    Open {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The writer thread cannot start.
    #[error("audit: cannot start the writer thread: {0}")]
    Thread(std::io::Error),
}

/// The audit layer.
pub struct Auditor {
    cfg: AuditConfig,
    component: String,
    max_data: usize,
    sink: sink::Sink,
    /// Operations begun and not yet recorded ([`Recording`]s alive).
    in_progress: std::sync::atomic::AtomicU64,
}

/// The bearer token of `caller`, for redaction only.
fn token_of(caller: &Caller) -> Option<&str> {
    match caller {
        Caller::User(id) => Some(id.token.expose()),
        _ => None,
    }
}

impl Auditor {
    /// Opens the log and starts the writer; `name` is the default `component`.
    pub fn start(cfg: &AuditConfig, name: &str) -> Result<Auditor, AuditError> {
        let path = cfg.log_file();
        let target = sink::Target::open(path).map_err(|source| AuditError::Open {
            path: path.map(|p| p.display().to_string()).unwrap_or_default(),
            source,
        })?;
        let sink = sink::Sink::start(target).map_err(AuditError::Thread)?;
        let component = cfg.component.clone().filter(|c| !c.is_empty()).unwrap_or(name.to_owned());
        tracing::info!(
            to = %path.map(|p| p.display().to_string()).unwrap_or_else(|| "stdout".into()),
            %component,
            "audit logging enabled"
        );
        let in_progress = Default::default();
        Ok(Auditor {
            max_data: cfg.max_data_size(),
            cfg: cfg.clone(),
            component,
            sink,
            in_progress,
        })
    }

    /// The writer's counters.
    pub fn stats(&self) -> &sink::Stats {
        self.sink.stats()
    }

    /// Waits (until `until` at the latest) for the writer to write what is queued, at shutdown.
    pub async fn flush(&self, until: tokio::time::Instant) {
        while self.stats().queued() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if self.stats().queued() > 0 {
            tracing::warn!(queued = self.stats().queued(), "audit events not written at shutdown");
        }
    }

    /// `/status`'s `audit`.
    pub fn status(&self) -> Value {
        use std::sync::atomic::Ordering::Relaxed;
        let s = self.stats();
        json!({
            "written": s.written.load(Relaxed),
            "queued": s.queued(),
            "dropped": s.dropped.load(Relaxed),
            "writeFailures": s.failed.load(Relaxed),
            "inProgress": self.in_progress.load(Relaxed),
        })
    }

    /// Starts auditing a `method` request: `None` when its event type is not wanted. Captures the
    /// request data now (dispatch consumes the params).
    pub fn begin(
        &self,
        caller: &Caller,
        method: &str,
        params: Option<&RawValue>,
        started: Instant,
    ) -> Option<Pending> {
        let event_type = event::event_type(method);
        if !self.cfg.wants(event_type) {
            return None;
        }
        let request = self.cfg.include_request_data.then(|| {
            // Most requests carry nothing to redact: their text is the data, decoded never.
            #[derive(serde::Serialize)]
            struct Req<'a> {
                jsonrpc: &'static str,
                method: &'a str,
                #[serde(skip_serializing_if = "Option::is_none")]
                params: Option<&'a RawValue>,
            }
            let text = serde_json::value::to_raw_value(&Req { jsonrpc: "2.0", method, params });
            if let Ok(text) = text
                && redact::unchanged(text.get(), token_of(caller))
            {
                let (text, _, cut) = redact::capture_clean(text, self.max_data);
                return (text, cut);
            }
            let params = params.and_then(|p| serde_json::from_str::<Value>(p.get()).ok());
            let mut req = json!({ "jsonrpc": "2.0", "method": method });
            if let Some(p) = params {
                req["params"] = p;
            }
            let (text, _, cut) = redact::capture(req, token_of(caller), self.max_data);
            (text, cut)
        });
        Some(Pending { event_type, started, request })
    }

    /// Records a `POST /mcp` refused before it was read as an MCP operation, with the HTTP
    /// `status` it got; the caller is unknown (`anonymous`).
    pub fn refused(&self, source: &Source, status: u16) {
        const TYPE: &str = "http_request";
        if !self.cfg.wants(TYPE) {
            return;
        }
        let p = Pending { event_type: TYPE, started: Instant::now(), request: None };
        let facts = Facts {
            method: "POST",
            target: &Target::None,
            caller: &Caller::Anonymous,
            source,
            client_info: None,
            protocol_version: None,
            modern: false,
        };
        self.write(p, &facts, None, status);
    }

    /// Records the operation with its outcome. `status` is the HTTP status when the caller
    /// decided it; else it is derived from the error as `http/stream.rs` does.
    pub fn finish(
        &self,
        p: Pending,
        facts: &Facts<'_>,
        outcome: Result<&RawValue, &ErrorObject>,
        status: Option<u16>,
    ) {
        let status = status.unwrap_or_else(|| event::status_of(outcome.err(), facts.modern));
        self.write(p, facts, Some(outcome), status);
    }

    /// Builds and queues the line; `outcome` is `None` for a request refused before dispatch.
    fn write(
        &self,
        p: Pending,
        facts: &Facts<'_>,
        outcome: Option<Result<&RawValue, &ErrorObject>>,
        status: u16,
    ) {
        let error = outcome.and_then(Result::err);
        let mut truncated = false;
        let request = p.request.map(|(text, cut)| {
            truncated |= cut;
            text
        });
        let mut response_size = None;
        let response = outcome.filter(|_| self.cfg.include_response_data).map(|outcome| {
            let response = match outcome {
                Ok(r) => json!({ "result": serde_json::from_str::<Value>(r.get()).ok() }),
                Err(e) => json!({ "error": e }),
            };
            let (text, size, cut) =
                redact::capture(response, token_of(facts.caller), self.max_data);
            response_size = Some(size);
            truncated |= cut;
            text
        });
        let name = match facts.target {
            Target::Tool { name, .. } | Target::Prompt { name, .. } => Some(event::field(name)),
            Target::Resource { uri, .. } => Some(event::field(uri)),
            Target::None => None,
        };
        let s = facts.source;
        let now = SystemTime::now();
        let line = Line {
            time: event::rfc3339(now, 3),
            level: "AUDIT",
            msg: "audit_event",
            audit_id: event::uuid(),
            kind: p.event_type,
            logged_at: event::rfc3339(now, 6),
            outcome: event::outcome(status, error, self.cfg.detect_application_errors()),
            component: &self.component,
            source: LineSource {
                kind: "network",
                value: &s.value,
                extra: SourceExtra {
                    user_agent: s.user_agent.as_deref(),
                    request_id: s.request_id.as_deref(),
                    remote_addr: s.remote_addr,
                },
            },
            subjects: Value::Object(event::subjects(facts.caller, facts.client_info)),
            delegation: event::delegation(facts.caller, self.cfg.max_delegation_depth()),
            target: LineTarget {
                endpoint: "/mcp",
                method: event::field(facts.method),
                kind: event::target_type(p.event_type),
                name,
            },
            metadata: Metadata {
                extra: Extra {
                    duration_ms: p.started.elapsed().as_millis() as u64,
                    transport: "http",
                    backend_name: facts.target.backend().map(|b| &**b),
                    mcp_version: facts.protocol_version.map(event::field),
                    jsonrpc_error_code: error.map(|e| e.code),
                    jsonrpc_error_message: error.map(|e| event::field(&e.message)),
                    response_size_bytes: response_size,
                    data_truncated: truncated.then_some(true),
                },
            },
            data: (request.is_some() || response.is_some()).then_some(Data { request, response }),
        };
        match serde_json::to_string(&line) {
            Ok(text) => self.sink.send(text),
            Err(e) => tracing::warn!(error = %e, "audit event not serialisable"),
        }
    }
}

/// An operation being handled: recorded with its outcome by [`Recording::finish`], or, if the
/// request's task is dropped first (cancelled by the client, or a Modern client gone), as
/// cancelled when it drops, so no operation goes unrecorded.
pub struct Recording<'a> {
    auditor: &'a Auditor,
    pending: Option<Pending>,
    facts: Facts<'a>,
}

impl<'a> Recording<'a> {
    /// Starts recording (see [`Auditor::begin`]).
    pub fn new(auditor: &'a Auditor, pending: Pending, facts: Facts<'a>) -> Recording<'a> {
        auditor.in_progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Recording { auditor, pending: Some(pending), facts }
    }

    /// Records the outcome.
    pub fn finish(mut self, outcome: Result<&RawValue, &ErrorObject>) {
        if let Some(p) = self.pending.take() {
            self.auditor.in_progress.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            self.auditor.finish(p, &self.facts, outcome, None);
        }
    }
}

impl Drop for Recording<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.pending.take() {
            self.auditor.in_progress.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            // What the client is told too (`http/stream.rs`).
            let code = crate::protocol::jsonrpc::code::INTERNAL_ERROR;
            let e = ErrorObject::new(code, "request cancelled");
            self.auditor.finish(p, &self.facts, Err(&e), None);
        }
    }
}

/// One line, fields in ToolHive's order; written straight from borrowed parts (no map built
/// per event).
#[derive(serde::Serialize)]
struct Line<'a> {
    time: String,
    level: &'static str,
    msg: &'static str,
    audit_id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    logged_at: String,
    outcome: &'static str,
    component: &'a str,
    source: LineSource<'a>,
    subjects: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    delegation: Option<Value>,
    target: LineTarget,
    metadata: Metadata<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Data>,
}

#[derive(serde::Serialize)]
struct LineSource<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    value: &'a str,
    extra: SourceExtra<'a>,
}

#[derive(serde::Serialize)]
struct SourceExtra<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_addr: Option<SocketAddr>,
}

#[derive(serde::Serialize)]
struct LineTarget {
    endpoint: &'static str,
    method: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

#[derive(serde::Serialize)]
struct Metadata<'a> {
    extra: Extra<'a>,
}

#[derive(serde::Serialize)]
struct Extra<'a> {
    duration_ms: u64,
    transport: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    backend_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mcp_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jsonrpc_error_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jsonrpc_error_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_size_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_truncated: Option<bool>,
}

#[derive(serde::Serialize)]
struct Data {
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<Box<RawValue>>,
}
