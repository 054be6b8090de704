//! The set of configured backends, started together and looked up by name.
//!
//! Invariant: the set is fixed at start; a backend that is down stays in the set (its state says
//! so) and comes back by itself.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Backend, BackendSpec, EventSender};
use crate::auth::outgoing::{Sources, for_backend};
use crate::config::{BackendAuthKind, Config, Isolation, TransportKind};

/// Without an explicit `isolation`, a backend whose outgoing credentials are the user's own gets
/// a child per principal; others share one.
fn default_isolation(config: &Config, backend: &str) -> Isolation {
    let auth = &config.outgoing_auth;
    match auth.backends.get(backend).or(auth.default.as_ref()).map(|a| a.kind) {
        Some(
            BackendAuthKind::Passthrough
            | BackendAuthKind::TokenExchange
            | BackendAuthKind::UpstreamInject
            | BackendAuthKind::Obo
            | BackendAuthKind::Xaa
            | BackendAuthKind::AwsSts,
        ) => Isolation::PerPrincipal,
        _ => Isolation::Shared,
    }
}

/// All backends, in config order.
pub struct Backends {
    list: Vec<(Arc<str>, Arc<Backend>)>,
    timeouts: Vec<std::time::Duration>,
    /// Whether each backend's outgoing credentials are the caller's own (see
    /// [`OutgoingAuth::is_user_bound`](crate::auth::outgoing::OutgoingAuth::is_user_bound)).
    user_bound: Vec<bool>,
    index: HashMap<Arc<str>, usize>,
}

impl Backends {
    /// Starts every configured backend (each connects in the background). Fails when a
    /// backend's outgoing authentication cannot be built (a secret's environment variable is
    /// unset, ...).
    pub fn start(
        config: &Config,
        events: &EventSender,
        sources: &Sources,
    ) -> Result<Self, crate::auth::outgoing::OutgoingAuthConfigError> {
        let mut list = Vec::with_capacity(config.backends.len());
        let mut index = HashMap::new();
        let mut timeouts = Vec::with_capacity(config.backends.len());
        let mut user_bound = Vec::with_capacity(config.backends.len());
        for b in &config.backends {
            let name: Arc<str> = Arc::from(b.name.as_str());
            let spec_timeout = config.backend_timeout(b);
            let auth = for_backend(&config.outgoing_auth, &b.name, sources)?;
            // stdio children get no outgoing credentials (static ones come through `env`).
            user_bound.push(auth.is_user_bound() && b.transport != TransportKind::Stdio);
            let spec = BackendSpec {
                name: name.clone(),
                config: b.clone(),
                timeout: spec_timeout,
                auth,
                events: events.clone(),
                isolation: b.isolation.unwrap_or_else(|| default_isolation(config, &b.name)),
                limits: super::limit::BackendLimits::from_config(&config.operational),
            };
            let backend = match b.transport {
                TransportKind::StreamableHttp => {
                    Backend::Http(super::streamable_http::HttpBackend::start(spec))
                }
                TransportKind::Sse => Backend::Sse(super::sse::SseBackend::start(spec)),
                TransportKind::Stdio => Backend::Stdio(super::stdio::StdioBackend::start(spec)),
            };
            timeouts.push(spec_timeout);
            index.insert(name.clone(), list.len());
            list.push((name, Arc::new(backend)));
        }
        Ok(Self { list, timeouts, user_bound, index })
    }

    /// The backend with this name.
    pub fn get(&self, name: &str) -> Option<&Arc<Backend>> {
        self.index.get(name).and_then(|&i| self.list.get(i)).map(|(_, b)| b)
    }

    /// The per-request timeout for the backend `name`.
    pub fn timeout(&self, name: &str) -> std::time::Duration {
        self.index
            .get(name)
            .and_then(|&i| self.timeouts.get(i).copied())
            .unwrap_or(std::time::Duration::from_secs(30))
    }

    /// Whether the backend `name` is reached with the caller's own credentials (`passthrough`,
    /// `token_exchange` on an HTTP or SSE backend), so it is discovered per principal.
    pub fn user_bound(&self, name: &str) -> bool {
        self.index.get(name).and_then(|&i| self.user_bound.get(i).copied()).unwrap_or(false)
    }

    /// All backends in config order.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<Backend>)> {
        self.list.iter().map(|(n, b)| (n, b))
    }

    /// Number of backends.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Stops every backend concurrently.
    pub async fn shutdown(&self) {
        futures::future::join_all(self.list.iter().map(|(_, b)| b.shutdown())).await;
    }
}
