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
}

impl<'a> Op<'a> {
    /// Reads what `method` names from its params, resolved in the caller's catalog. Lookups that
    /// fail leave the backend `None`: dispatch gives the precise error.
    pub async fn read(gw: &Gateway, cx: &Cx, method: &'a str, params: Option<&RawValue>) -> Op<'a> {
        let started = std::time::Instant::now();
        let target = match method {
            "tools/call" | "prompts/get" => match params::get_str(params, "name") {
                Some(name) => {
                    let catalog = dispatch::catalog(gw, cx).await;
                    if method == "tools/call" {
                        let backend = catalog.tool(&name).map(|r| r.backend.clone());
                        Target::Tool { name, backend }
                    } else {
                        let backend = catalog.prompt(&name).map(|r| r.backend.clone());
                        Target::Prompt { name, backend }
                    }
                }
                None => Target::None,
            },
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                match params::get_str(params, "uri") {
                    // Longer URIs are refused by dispatch before any matching.
                    Some(uri) if dispatch::check_uri(gw, &uri).is_ok() => {
                        let backend = dispatch::catalog(gw, cx).await.resource(&uri).cloned();
                        Target::Resource { uri, backend }
                    }
                    Some(uri) => Target::Resource { uri, backend: None },
                    None => Target::None,
                }
            }
            _ => Target::None,
        };
        Op { method, target, started }
    }
}

/// Handles one client request through every layer.
pub async fn serve(gw: &Gateway, cx: &Cx, method: &str, params: Option<Box<RawValue>>) -> Outcome {
    let op = Op::read(gw, cx, method, params.as_deref()).await;
    if let Some(authz) = &gw.layers.authz {
        authz.admit(gw, cx, &op, params.as_deref()).await?;
    }
    let outcome = dispatch::handle(gw, cx, op.method, params).await;
    let _ = op.started.elapsed();
    outcome
}

/// The state of every layer, built from the config at start. Each concern keeps its own field
/// (and its own module); a concern that is not configured costs nothing on the request path.
#[derive(Default)]
pub struct Layers {
    /// Cedar authorization (`incomingAuth.authz`); `None`: every request is allowed.
    pub authz: Option<Arc<crate::authz::Authz>>,
}

/// Why a layer could not be built from the config.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// `incomingAuth.authz` does not compile.
    #[error("incomingAuth.authz: {0}")]
    Authz(#[from] crate::authz::AuthzError),
}

impl Layers {
    /// Builds every configured layer.
    pub fn from_config(config: &crate::config::Config) -> Result<Layers, LayerError> {
        Ok(Layers { authz: crate::authz::Authz::from_config(config)?.map(Arc::new) })
    }
}
