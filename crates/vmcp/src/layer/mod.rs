//! The layers around dispatch: rate limits, authorization, audit, telemetry and metrics,
//! composed in one place ([`serve`]) so no handler calls them by hand.
//!
//! Each client request is read once into an [`Op`]: its method, the caller, and what it names
//! (a tool, prompt or resource, with the backend that serves it in the catalog this caller
//! sees). The layers see only the `Op` and the outcome; handlers see neither.
//!
//! Order, outermost first: telemetry (one span per request, so refusals are traced too), audit
//! (every operation, refused or not), rate limits, authorization, then dispatch. A refusal by an
//! inner layer is an ordinary outcome to the outer ones.
//!
//! Invariant: a layer never blocks the request path on its own I/O (exporters and the audit
//! sink run behind bounded queues) and never records a credential.

use std::sync::Arc;

use serde_json::value::RawValue;

use crate::dispatch::{self, Cx, Outcome};
use crate::gateway::Gateway;
use crate::protocol::params;

/// What a request names, resolved in the catalog its caller sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A tool, by its advertised name; `backend` is `None` when the name is unknown.
    Tool { name: String, backend: Option<Arc<str>> },
    /// A prompt, by its advertised name.
    Prompt { name: String, backend: Option<Arc<str>> },
    /// A resource (or a URI matching a template).
    Resource { uri: String, backend: Option<Arc<str>> },
    /// Nothing in particular (lists, discovery, ping, ...).
    None,
}

impl Target {
    /// The backend the request goes to, when it names a known item.
    pub fn backend(&self) -> Option<&Arc<str>> {
        match self {
            Target::Tool { backend, .. }
            | Target::Prompt { backend, .. }
            | Target::Resource { backend, .. } => backend.as_ref(),
            Target::None => None,
        }
    }
}

/// One client request as the layers see it.
pub struct Op<'a> {
    /// The JSON-RPC method.
    pub method: &'a str,
    /// What it names.
    pub target: Target,
    /// When it arrived.
    pub started: std::time::Instant,
    /// The catalog `target` was resolved in (`None` when it names nothing), for the layers
    /// that look at the item itself (authorization reads a tool's annotations).
    pub catalog: Option<Arc<crate::catalog::Catalog>>,
}

impl<'a> Op<'a> {
    /// Reads what `method` names from its params, resolved in the caller's catalog. Lookups that
    /// fail leave the backend `None`: dispatch gives the precise error.
    pub async fn read(gw: &Gateway, cx: &Cx, method: &'a str, params: Option<&RawValue>) -> Op<'a> {
        let started = std::time::Instant::now();
        let (target, catalog) = match method {
            "tools/call" | "prompts/get" => match params::get_str(params, "name") {
                Some(name) => {
                    let catalog = dispatch::catalog(gw, cx).await;
                    let target = if method == "tools/call" {
                        let backend = catalog.tool(&name).map(|r| r.backend.clone());
                        Target::Tool { name, backend }
                    } else {
                        let backend = catalog.prompt(&name).map(|r| r.backend.clone());
                        Target::Prompt { name, backend }
                    };
                    (target, Some(catalog))
                }
                None => (Target::None, None),
            },
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                match params::get_str(params, "uri") {
                    // Longer URIs are refused by dispatch before any matching.
                    Some(uri) if dispatch::check_uri(gw, &uri).is_ok() => {
                        let catalog = dispatch::catalog(gw, cx).await;
                        let backend = catalog.resource(&uri).cloned();
                        (Target::Resource { uri, backend }, Some(catalog))
                    }
                    Some(uri) => (Target::Resource { uri, backend: None }, None),
                    None => (Target::None, None),
                }
            }
            _ => (Target::None, None),
        };
        Op { method, target, started, catalog }
    }
}

/// Handles one client request through every layer.
pub async fn serve(gw: &Gateway, cx: &Cx, method: &str, params: Option<Box<RawValue>>) -> Outcome {
    // Boxed, as is dispatch below: each can hold a whole per-principal discovery (every
    // backend's auth and transport futures), too deep for a worker's stack when nested inline.
    let op = Box::pin(Op::read(gw, cx, method, params.as_deref())).await;
    // One snapshot for the whole request: a reload meanwhile applies to the next one.
    let layers = gw.layers.load_full();
    let telemetry = layers.telemetry.start(cx, &op, params.as_deref());
    // Dropped with this future if the request is cancelled: then it records that.
    let audit = layers.audit.as_ref().and_then(|a| {
        let pending = a.begin(&cx.caller, method, params.as_deref(), op.started)?;
        Some(crate::audit::Recording::new(a, pending, audit_facts(cx, &op)))
    });
    let inner = async {
        if let Some(rl) = &layers.rate_limits {
            rl.check(&cx.caller, &op).await?;
        }
        if let Some(authz) = &layers.authz {
            authz.admit(gw, cx, &op, params.as_deref()).await?;
        }
        Box::pin(dispatch::handle(gw, cx, op.method, params)).await
    };
    let outcome = match &telemetry {
        Some(t) => {
            use opentelemetry::context::FutureExt as _;
            inner.with_context(t.context()).await
        }
        None => inner.await,
    };
    if let Some(t) = telemetry {
        t.finish(&outcome);
    }
    if let Some(recording) = audit {
        recording.finish(outcome.as_deref());
    }
    outcome
}

/// Runs `answer` for a Legacy `initialize`, which `http/mcp.rs` answers before dispatch, and
/// records it (audit).
pub fn initialize(
    gw: &Gateway,
    caller: &crate::auth::Caller,
    source: &crate::audit::Source,
    params: Option<&RawValue>,
    answer: impl FnOnce() -> (axum::response::Response, Outcome),
) -> axum::response::Response {
    const METHOD: &str = "initialize";
    let started = std::time::Instant::now();
    let layers = gw.layers.load_full();
    let audit =
        layers.audit.as_ref().and_then(|a| Some((a, a.begin(caller, METHOD, params, started)?)));
    let (resp, outcome) = answer();
    if let Some((auditor, pending)) = audit {
        let init: Option<serde_json::Value> =
            params.and_then(|p| serde_json::from_str(p.get()).ok());
        let field = |k: &str| init.as_ref().and_then(|i| i.get(k));
        let facts = crate::audit::Facts {
            method: METHOD,
            target: &Target::None,
            caller,
            source,
            client_info: field("clientInfo"),
            protocol_version: field("protocolVersion").and_then(serde_json::Value::as_str),
            modern: false,
        };
        auditor.finish(pending, &facts, outcome.as_deref(), Some(resp.status().as_u16()));
    }
    resp
}

/// Records a request refused before it was read as an MCP operation (its credentials were
/// refused: 401, 403 or 503), as ToolHive does (`http_request`).
pub fn refused(
    gw: &Gateway,
    source: &crate::audit::Source,
    resp: axum::response::Response,
) -> axum::response::Response {
    if let Some(auditor) = &gw.layers.load().audit {
        auditor.refused(source, resp.status().as_u16());
    }
    resp
}

/// What the audit layer records about `op` besides its outcome.
fn audit_facts<'a>(cx: &'a Cx, op: &'a Op<'_>) -> crate::audit::Facts<'a> {
    let (client_info, protocol_version) = match &cx.client {
        dispatch::Client::Legacy(s) => (Some(&s.client_info), Some(s.protocol_version.as_str())),
        dispatch::Client::Modern(m) => (m.client_info.as_ref(), m.protocol_version.as_deref()),
    };
    crate::audit::Facts {
        method: op.method,
        target: &op.target,
        caller: &cx.caller,
        source: &cx.source,
        client_info,
        protocol_version,
        modern: cx.is_modern(),
    }
}

/// The state of every layer, built from the config at start and renewed by a reload. Each
/// concern keeps its own field (and its own module); a concern that is not configured costs
/// nothing on the request path.
#[derive(Default)]
pub struct Layers {
    /// Audit events (`audit`, `--enable-audit`), when enabled.
    pub audit: Option<Arc<crate::audit::Auditor>>,
    /// Token buckets on tool calls (`rateLimiting`), when configured.
    pub rate_limits: Option<Arc<crate::ratelimit::RateLimits>>,
    /// Traces and metrics (`telemetry`; restart-only, so one for the process).
    pub telemetry: crate::telemetry::Telemetry,
    /// What `audit` and `rate_limits` were built from: a reload that leaves a block as it was
    /// keeps its state (the open log and its queue, the buckets' tokens).
    built_from: (Option<crate::config::AuditConfig>, Option<crate::config::RateLimitConfig>),
    /// Cedar authorization (`incomingAuth.authz`); `None`: every request is allowed.
    pub authz: Option<Arc<crate::authz::Authz>>,
}

/// Why a layer could not be built from the config.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The audit log cannot be opened.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// `telemetry`: an exporter could not be built.
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
    /// `incomingAuth.authz` does not compile.
    #[error("incomingAuth.authz: {0}")]
    Authz(#[from] crate::authz::AuthzError),
}

impl Layers {
    /// Builds every configured layer.
    pub fn from_config(config: &crate::config::Config) -> Result<Layers, LayerError> {
        let telemetry =
            crate::telemetry::Telemetry::from_config(config.telemetry.as_ref(), &config.name)?;
        Self::build(config, None, telemetry)
    }

    /// The layers for a reloaded `config`: what it leaves unchanged is kept as it is (telemetry
    /// always: its keys need a restart), the rest is built anew.
    pub fn renew(&self, config: &crate::config::Config) -> Result<Layers, LayerError> {
        Self::build(config, Some(self), self.telemetry.clone())
    }

    fn build(
        config: &crate::config::Config,
        old: Option<&Layers>,
        telemetry: crate::telemetry::Telemetry,
    ) -> Result<Layers, LayerError> {
        let audit_cfg = config.audit.clone().filter(|a| a.is_enabled());
        let audit = match (&audit_cfg, old) {
            (None, _) => None,
            (Some(_), Some(old)) if old.built_from.0 == audit_cfg => old.audit.clone(),
            (Some(a), _) => Some(Arc::new(crate::audit::Auditor::start(a, &config.name)?)),
        };
        let rate_cfg = config.rate_limiting.clone();
        let rate_limits = match (&rate_cfg, old) {
            (None, _) => None,
            (Some(_), Some(old)) if old.built_from.1 == rate_cfg => old.rate_limits.clone(),
            (Some(r), _) => Some(Arc::new(crate::ratelimit::RateLimits::from_config(r))),
        };
        // Policies are cheap to compile and meant to change: always built anew.
        let authz = crate::authz::Authz::from_config(config)?.map(Arc::new);
        Ok(Layers { audit, rate_limits, telemetry, authz, built_from: (audit_cfg, rate_cfg) })
    }

    /// Finishes the layers' background work (queued audit events) by `until`.
    pub async fn shutdown(&self, until: tokio::time::Instant) {
        if let Some(audit) = &self.audit {
            audit.flush(until).await;
        }
    }
}
