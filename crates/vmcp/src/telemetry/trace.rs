//! Spans and trace context: the server span of a client request (its parent from the client's
//! `_meta.traceparent`, else its `traceparent` header), the client span of each backend request
//! under it, and the `traceparent` sent to the backend.
//!
//! Names and attributes follow the OpenTelemetry semantic conventions for MCP: span name
//! `{mcp.method.name} {target}`, `mcp.method.name`, `mcp.protocol.version`, `mcp.session.id`,
//! `gen_ai.tool.name`, `gen_ai.prompt.name`, `mcp.resource.uri`, `gen_ai.operation.name`,
//! `error.type`, `rpc.response.status_code`; `vmcp.backend` names the backend.
//!
//! Invariant: the request's `Context` carries an [`Active`] value, so code below the layer
//! (backend calls) finds the telemetry of its own gateway without a global; outside a client
//! request (discovery, probes, teardown) there is none and nothing is recorded.

use std::future::Future;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures::future::Either;
use opentelemetry::context::FutureExt as _;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use serde_json::value::RawValue;

use super::{ANY_ACTIVE, Inner, Telemetry, metrics};
use crate::dispatch::{Client, Cx, Outcome};
use crate::layer::{Op, Target};

/// What a client request's context carries for the code below the layer.
#[derive(Clone)]
struct Active {
    inner: Arc<Inner>,
    /// The backend the request names (the label of its backend calls).
    backend: Option<Arc<str>>,
}

/// One client request being recorded: its span (when traces are exported) and what its
/// metrics are labelled with.
pub struct RequestScope {
    cx: Context,
    inner: Arc<Inner>,
    method: &'static str,
    tool: Option<String>,
    backend: Option<Arc<str>>,
    started: Instant,
}

/// `_meta` of a request's params, as a propagation carrier.
struct MetaCarrier(serde_json::Map<String, serde_json::Value>);

impl Extractor for MetaCarrier {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The parent a client gave in `params._meta` (`traceparent`, `tracestate`), if any.
fn meta_parent(params: Option<&RawValue>) -> Option<Context> {
    #[derive(serde::Deserialize)]
    struct Params {
        #[serde(rename = "_meta", default)]
        meta: Option<serde_json::Map<String, serde_json::Value>>,
    }
    let p: Params = serde_json::from_str(params?.get()).ok()?;
    let carrier = MetaCarrier(p.meta?);
    carrier.get("traceparent")?;
    let cx = TraceContextPropagator::new().extract_with_context(&Context::new(), &carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// A resource URI without its query and fragment (which could carry a credential).
fn bare_uri(uri: &str) -> &str {
    uri.split(['?', '#']).next().unwrap_or(uri)
}

impl Telemetry {
    /// The trace context a client sent in its HTTP headers (`traceparent`, `tracestate`), to
    /// hand to [`carry`]; `None` when telemetry is off.
    pub fn parent(&self, headers: &http::HeaderMap) -> Option<Context> {
        self.0.as_ref()?;
        let carrier = opentelemetry_http::HeaderExtractor(headers);
        Some(TraceContextPropagator::new().extract_with_context(&Context::new(), &carrier))
    }

    /// Opens the scope of one client request (after the layer read its [`Op`]); `None` when
    /// telemetry is off. Run the request inside [`RequestScope::context`].
    pub fn start(&self, cx: &Cx, op: &Op<'_>, params: Option<&RawValue>) -> Option<RequestScope> {
        let inner = self.0.as_ref()?;
        let method = metrics::method_label(op.method);
        let (tool, backend) = match &op.target {
            // Unknown names are not labels: the catalog bounds them.
            Target::Tool { name, backend } => {
                (Some(if backend.is_some() { name.clone() } else { "unknown".into() }), backend)
            }
            Target::Prompt { backend, .. } | Target::Resource { backend, .. } => (None, backend),
            Target::None => (None, &None),
        };
        let backend = backend.clone();
        let parent = meta_parent(params).unwrap_or_else(Context::current);
        let active = Active { inner: inner.clone(), backend: backend.clone() };
        let cx_out = match &inner.tracer {
            Some(tracer) => {
                let mut attrs = vec![KeyValue::new("mcp.method.name", method)];
                let mut name = method.to_owned();
                match &op.target {
                    Target::Tool { .. } => {
                        let tool = tool.clone().unwrap_or_default();
                        name = format!("{method} {tool}");
                        attrs.push(KeyValue::new("gen_ai.operation.name", "execute_tool"));
                        attrs.push(KeyValue::new("gen_ai.tool.name", tool.clone()));
                        if inner.legacy {
                            attrs.push(KeyValue::new("mcp.tool.name", tool));
                        }
                    }
                    Target::Prompt { name: prompt, backend } => {
                        let prompt = if backend.is_some() { prompt.as_str() } else { "unknown" };
                        name = format!("{method} {prompt}");
                        attrs.push(KeyValue::new("gen_ai.prompt.name", prompt.to_owned()));
                        if inner.legacy {
                            attrs.push(KeyValue::new("mcp.prompt.name", prompt.to_owned()));
                        }
                    }
                    Target::Resource { uri, .. } => {
                        let uri: String = bare_uri(uri).chars().take(512).collect();
                        attrs.push(KeyValue::new("mcp.resource.uri", uri.clone()));
                        if inner.legacy {
                            attrs.push(KeyValue::new("mcp.resource.id", uri));
                        }
                    }
                    Target::None => {}
                }
                if let Some(b) = &backend {
                    attrs.push(KeyValue::new("vmcp.backend", b.to_string()));
                }
                attrs.extend(common_attributes(inner, cx));
                let span = tracer
                    .span_builder(name)
                    .with_kind(SpanKind::Server)
                    .with_start_time(SystemTime::now() - op.started.elapsed())
                    .with_attributes(attrs)
                    .start_with_context(tracer, &parent);
                parent.with_span(span).with_value(active)
            }
            None => parent.with_value(active),
        };
        Some(RequestScope {
            cx: cx_out,
            inner: inner.clone(),
            method,
            tool,
            backend,
            started: op.started,
        })
    }

    /// Records a Legacy `initialize`, answered before the layer: its span and metrics.
    pub fn initialized(
        &self,
        parent: Option<Context>,
        started: Instant,
        session: Option<(u64, &str)>,
        error: Option<String>,
    ) {
        let Some(inner) = &self.0 else { return };
        let parent = parent.unwrap_or_default();
        let cx = match &inner.tracer {
            Some(tracer) => {
                let mut attrs = vec![KeyValue::new("mcp.method.name", "initialize")];
                if let Some((key, version)) = session {
                    attrs.push(KeyValue::new("mcp.session.id", key.to_string()));
                    attrs.push(KeyValue::new("mcp.protocol.version", version.to_owned()));
                }
                attrs.extend(legacy_attributes(inner, "initialize"));
                let span = tracer
                    .span_builder("initialize")
                    .with_kind(SpanKind::Server)
                    .with_start_time(SystemTime::now() - started.elapsed())
                    .with_attributes(attrs)
                    .start_with_context(tracer, &parent);
                parent.with_span(span)
            }
            None => parent,
        };
        RequestScope {
            cx,
            inner: inner.clone(),
            method: "initialize",
            tool: None,
            backend: None,
            started,
        }
        .end(error);
    }
}

/// Attributes every server span carries: session, protocol version, legacy names, the
/// configured environment variables.
fn common_attributes(inner: &Inner, cx: &Cx) -> Vec<KeyValue> {
    let mut attrs = Vec::new();
    match &cx.client {
        Client::Legacy(session) => {
            // The numeric key, never the id: a session id is a bearer handle.
            attrs.push(KeyValue::new("mcp.session.id", session.key.to_string()));
            attrs.push(KeyValue::new("mcp.protocol.version", session.protocol_version.clone()));
        }
        Client::Modern(meta) => {
            if let Some(v) = &meta.protocol_version {
                attrs.push(KeyValue::new("mcp.protocol.version", v.clone()));
            }
        }
    }
    attrs.push(KeyValue::new("network.transport", "tcp"));
    attrs.push(KeyValue::new("network.protocol.name", "http"));
    attrs.extend(inner.env_attributes.iter().cloned());
    attrs
}

fn legacy_attributes(inner: &Inner, method: &'static str) -> Vec<KeyValue> {
    if !inner.legacy {
        return Vec::new();
    }
    vec![
        KeyValue::new("mcp.method", method),
        KeyValue::new("rpc.system", "jsonrpc"),
        KeyValue::new("rpc.service", "mcp"),
    ]
}

impl RequestScope {
    /// The context to run the request in (its span current, and what backend calls need).
    pub fn context(&self) -> Context {
        self.cx.clone()
    }

    /// Ends the span and records the request's metrics.
    pub fn finish(self, outcome: &Outcome) {
        let error = match outcome {
            Err(e) => Some(e.code.to_string()),
            Ok(result) if self.method == "tools/call" && is_tool_error(result) => {
                Some("tool_error".to_owned())
            }
            Ok(_) => None,
        };
        if let Err(e) = outcome {
            self.cx
                .span()
                .set_attribute(KeyValue::new("rpc.response.status_code", e.code.to_string()));
        }
        self.cx.span().set_attributes(legacy_attributes(&self.inner, self.method));
        self.end(error);
    }

    fn end(self, error: Option<String>) {
        let span = self.cx.span();
        if let Some(kind) = &error {
            span.set_attribute(KeyValue::new("error.type", kind.clone()));
            span.set_status(Status::error(kind.clone()));
        }
        span.end();
        self.inner.instruments.request(
            self.method,
            self.tool.as_deref(),
            self.backend.as_deref(),
            error.as_deref(),
            self.started.elapsed(),
        );
    }
}

/// A `tools/call` result with `isError: true` (the tool failed; the call did not).
fn is_tool_error(result: &RawValue) -> bool {
    #[derive(serde::Deserialize)]
    struct R {
        #[serde(rename = "isError", default)]
        is_error: bool,
    }
    serde_json::from_str::<R>(result.get()).is_ok_and(|r| r.is_error)
}

/// Runs `fut` (a client request's task) in the trace context the client sent; with telemetry
/// off (`parent` is `None`) it is `fut` itself.
pub fn carry<F: Future>(parent: Option<Context>, fut: F) -> impl Future<Output = F::Output> {
    match parent {
        Some(cx) => Either::Left(fut.with_context(cx)),
        None => Either::Right(fut),
    }
}

/// Runs one backend request under a client span, child of the current client request's span,
/// and records its duration; outside a client request, or with telemetry off, it is `fut`.
pub async fn backend_call<T>(
    method: &str,
    fut: impl Future<Output = Result<T, crate::backend::BackendError>>,
) -> Result<T, crate::backend::BackendError> {
    if !ANY_ACTIVE.load(std::sync::atomic::Ordering::Relaxed) {
        return fut.await;
    }
    let parent = Context::current();
    let Some(active) = parent.get::<Active>().cloned() else { return fut.await };
    let method = metrics::method_label(method);
    let backend = active.backend.as_deref().unwrap_or("unknown").to_owned();
    let cx = match &active.inner.tracer {
        Some(tracer) => {
            let span = tracer
                .span_builder(format!("{method} {backend}"))
                .with_kind(SpanKind::Client)
                .with_attributes([
                    KeyValue::new("mcp.method.name", method),
                    KeyValue::new("vmcp.backend", backend.clone()),
                    KeyValue::new("network.transport", "tcp"),
                ])
                .start_with_context(tracer, &parent);
            parent.with_span(span)
        }
        None => parent,
    };
    let started = Instant::now();
    let result = fut.with_context(cx.clone()).await;
    let error = result.as_ref().err().map(error_type);
    if let Some(kind) = error {
        cx.span().set_attribute(KeyValue::new("error.type", kind));
        cx.span().set_status(Status::error(kind));
    }
    cx.span().end();
    active.inner.instruments.backend_request(method, &backend, error, started.elapsed());
    result
}

/// `error.type` of a failed backend request (the variant, never its text).
fn error_type(e: &crate::backend::BackendError) -> &'static str {
    use crate::backend::BackendError as E;
    match e {
        E::Unavailable { .. } => "unavailable",
        E::Transport { .. } => "transport",
        E::Auth(_) => "auth",
        E::Exhausted { .. } => "exhausted",
        E::Refused { .. } => "refused",
    }
}

/// Adds the current trace context (`traceparent`, `tracestate`) to a backend request, when
/// it runs under a client request's span.
pub fn inject(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    if !ANY_ACTIVE.load(std::sync::atomic::Ordering::Relaxed) {
        return req;
    }
    let cx = Context::current();
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return req;
    }
    // W3C Trace Context, as `TraceContextPropagator` writes it, without a header map per call.
    let flags = sc.trace_flags() & opentelemetry::trace::TraceFlags::SAMPLED;
    let traceparent = format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), flags.to_u8());
    let req = req.header("traceparent", traceparent);
    let state = sc.trace_state().header();
    if state.is_empty() { req } else { req.header("tracestate", state) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(v: serde_json::Value) -> Box<RawValue> {
        RawValue::from_string(v.to_string()).unwrap()
    }

    #[test]
    fn meta_traceparent_is_the_parent() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let p = raw(serde_json::json!({ "name": "x", "_meta": { "traceparent": tp } }));
        let cx = meta_parent(Some(&p)).expect("a parent");
        let sc = cx.span().span_context().clone();
        assert_eq!(sc.trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(sc.span_id().to_string(), "b7ad6b7169203331");
        assert!(sc.is_remote() && sc.is_sampled());
        // Absent or malformed: no parent.
        assert!(meta_parent(Some(&raw(serde_json::json!({ "name": "x" })))).is_none());
        let bad = raw(serde_json::json!({ "_meta": { "traceparent": "00-zz-yy-01" } }));
        assert!(meta_parent(Some(&bad)).is_none());
        assert!(meta_parent(None).is_none());
    }

    #[test]
    fn resource_uris_lose_query_and_fragment() {
        assert_eq!(bare_uri("https://h/x?token=abc#f"), "https://h/x");
        assert_eq!(bare_uri("file:///a#b"), "file:///a");
        assert_eq!(bare_uri("mem://plain"), "mem://plain");
    }

    #[test]
    fn tool_errors_are_read_from_results() {
        assert!(is_tool_error(&raw(serde_json::json!({ "content": [], "isError": true }))));
        assert!(!is_tool_error(&raw(serde_json::json!({ "content": [] }))));
    }

    #[test]
    fn off_means_no_parent_and_no_header() {
        let off = Telemetry::default();
        assert!(!off.enabled() && !off.serves_prometheus());
        let mut h = http::HeaderMap::new();
        h.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".parse().unwrap(),
        );
        assert!(off.parent(&h).is_none());
        // Outside any span nothing is injected, whatever the flag says.
        let req = inject(reqwest::Client::new().post("http://127.0.0.1:9/x")).build().unwrap();
        assert!(req.headers().get("traceparent").is_none());
    }
}
