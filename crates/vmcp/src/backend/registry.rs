//! The set of configured backends, started together and looked up by name.
//!
//! Invariant: the set is fixed at start; a backend that is down stays in the set (its state says
//! so) and comes back by itself.

use std::collections::HashMap;
use std::sync::Arc;

use super::health::{Health, Policy};
use super::{Backend, BackendSpec, EventSender, State};
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
    /// Each backend's health and circuit breaker, fed by calls and probes.
    health: Vec<Arc<Health>>,
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
        let mut health = Vec::with_capacity(config.backends.len());
        let policy = Policy::from_config(&config.operational.failure_handling);
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
            health.push(Arc::new(Health::new(policy)));
            index.insert(name.clone(), list.len());
            list.push((name, Arc::new(backend)));
        }
        Ok(Self { list, timeouts, user_bound, health, index })
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

    /// The health and circuit breaker of the backend `name`.
    pub fn health(&self, name: &str) -> Option<&Arc<Health>> {
        self.index.get(name).and_then(|&i| self.health.get(i))
    }

    /// Whether the backend `name` is in service: connected, not unhealthy, breaker not open.
    pub fn in_service(&self, name: &str) -> bool {
        let ready = self.get(name).is_some_and(|b| b.state() == State::Ready);
        ready && self.health(name).is_none_or(|h| h.in_service())
    }

    /// Why the backend `name` is out of service (`None` when it is in service): its transport
    /// state and last error, or what its health says, and when a call will be let through again.
    pub fn out_of_service(&self, name: &str) -> Option<super::health::Refused> {
        let backend = self.get(name)?;
        let snap = backend.status().get();
        if snap.state != State::Ready {
            let state = match snap.state {
                State::Connecting => "connecting",
                State::Down => "down, reconnecting",
                State::Stopped => "stopped",
                State::Ready => "ready",
            };
            let reason = match snap.last_error {
                Some(e) => format!("{state} (last error: {e})"),
                None => state.to_owned(),
            };
            // Reconnect attempts are at most this far apart.
            let retry_at = (snap.state != State::Stopped)
                .then(|| std::time::SystemTime::now() + super::RECONNECT_MAX);
            return Some(super::health::Refused { reason, retry_at });
        }
        self.health(name).and_then(|h| h.refusal())
    }

    /// Why a call to the backend `name` would be refused now: not connected, or its breaker
    /// open. An unhealthy backend (out of the catalog) whose breaker lets calls through still
    /// gets them: a success brings it back.
    pub fn call_refusal(&self, name: &str) -> Option<super::health::Refused> {
        let ready = self.get(name).is_some_and(|b| b.state() == State::Ready);
        if !ready {
            return self.out_of_service(name);
        }
        self.health(name).and_then(|h| h.blocks_calls())
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
