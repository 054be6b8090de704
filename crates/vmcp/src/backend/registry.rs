//! The configured backends, in config order, looked up by name; replaced whole by a config
//! reload.
//!
//! One [`BackendSet`] is immutable: each [`Entry`] bundles a backend with its request timeout,
//! its health and whether it is user-bound, so lookups of one name within a set agree.
//! [`Backends`] publishes the current set through `ArcSwap`; a reload ([`Backends::plan`],
//! [`Plan::start`], [`Backends::swap`]) builds the next set, reusing the entry of every backend
//! whose effective settings are unchanged as the same object (its connection, backend sessions,
//! subscriptions and health stay), and starting new objects for added and changed ones.
//!
//! Invariants: a lookup never locks and never sees half a reload; a backend that is down stays
//! in the set (its state says so) and comes back by itself; a backend taken out of the set by a
//! reload is kept in [`Backends::retiring`] until it has stopped, so a forced exit still kills
//! its processes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use super::health::{Health, Policy};
use super::{Backend, BackendSpec, EventSender, State};
use crate::auth::outgoing::{OutgoingAuthConfigError, Sources, for_backend};
use crate::config::TransportKind;
use crate::config::{BackendAuthConfig, BackendAuthKind, BackendConfig, Config, Isolation};

/// Without an explicit `isolation`, a backend whose outgoing credentials are the user's own gets
/// a child per principal; others share one.
fn default_isolation(config: &Config, backend: &str) -> Isolation {
    match effective_auth(config, backend).map(|a| a.kind) {
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

/// The outgoing auth block that applies to `backend`: its own, else `outgoingAuth.default`.
fn effective_auth<'a>(config: &'a Config, backend: &str) -> Option<&'a BackendAuthConfig> {
    let auth = &config.outgoing_auth;
    auth.backends.get(backend).or(auth.default.as_ref())
}

/// One backend of a set, with what the gateway keeps about it.
pub struct Entry {
    /// Its name.
    pub name: Arc<str>,
    /// The running backend.
    pub backend: Arc<Backend>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Whether its outgoing credentials are the caller's own (see
    /// [`OutgoingAuth::is_user_bound`](crate::auth::outgoing::OutgoingAuth::is_user_bound)).
    pub user_bound: bool,
    /// Health and circuit breaker, fed by calls and probes.
    pub health: Arc<Health>,
    /// Digest of the effective settings the backend was started with ([`fingerprint`]).
    fingerprint: [u8; 32],
}

impl Entry {
    /// Whether the backend is in service: connected, not unhealthy, breaker not open.
    pub fn in_service(&self) -> bool {
        self.backend.state() == State::Ready && self.health.in_service()
    }

    /// Why the backend is out of service (`None` when it is in service): its transport state
    /// and last error, or what its health says, and when a call will be let through again.
    pub fn out_of_service(&self) -> Option<super::health::Refused> {
        let snap = self.backend.status().get();
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
        self.health.refusal()
    }

    /// Why a call would be refused now: not connected, or its breaker open. An unhealthy
    /// backend (out of the catalog) whose breaker lets calls through still gets them: a success
    /// brings it back.
    pub fn call_refusal(&self) -> Option<super::health::Refused> {
        if self.backend.state() != State::Ready {
            return self.out_of_service();
        }
        self.health.blocks_calls()
    }
}

/// One generation of backends, in config order. Immutable once built.
#[derive(Default)]
pub struct BackendSet {
    list: Vec<Arc<Entry>>,
    index: HashMap<Arc<str>, usize>,
}

impl BackendSet {
    fn new(list: Vec<Arc<Entry>>) -> Self {
        let index = list.iter().enumerate().map(|(i, e)| (e.name.clone(), i)).collect();
        Self { list, index }
    }

    /// The entry of backend `name`.
    pub fn entry(&self, name: &str) -> Option<&Arc<Entry>> {
        self.index.get(name).and_then(|&i| self.list.get(i))
    }

    /// Every entry, in config order.
    pub fn entries(&self) -> &[Arc<Entry>] {
        &self.list
    }
}

/// All backends, in config order: the current [`BackendSet`], swapped whole by a reload.
pub struct Backends {
    current: ArcSwap<BackendSet>,
    /// Backends a reload took out of the set, until they have stopped.
    retiring: Mutex<Vec<(u64, Arc<Backend>)>>,
    next_retiring: std::sync::atomic::AtomicU64,
}

impl Backends {
    /// Starts every configured backend (each connects in the background). Fails when a
    /// backend's outgoing authentication cannot be built (a secret's environment variable is
    /// unset, ...).
    pub fn start(
        config: &Config,
        events: &EventSender,
        sources: &Sources,
    ) -> Result<Self, OutgoingAuthConfigError> {
        let empty = Self::from_set(BackendSet::default());
        let started = empty.plan(config, events, sources)?.start();
        empty.current.store(Arc::new(started.set));
        Ok(empty)
    }

    fn from_set(set: BackendSet) -> Self {
        Self {
            current: ArcSwap::from_pointee(set),
            retiring: Mutex::new(Vec::new()),
            next_retiring: Default::default(),
        }
    }

    /// The current set (hold it for one piece of work that must see one generation).
    pub fn snapshot(&self) -> Arc<BackendSet> {
        self.current.load_full()
    }

    /// The entry of backend `name` in the current set.
    pub fn entry(&self, name: &str) -> Option<Arc<Entry>> {
        self.current.load().entry(name).cloned()
    }

    /// The backend with this name.
    pub fn get(&self, name: &str) -> Option<Arc<Backend>> {
        self.current.load().entry(name).map(|e| e.backend.clone())
    }

    /// The per-request timeout for the backend `name`.
    pub fn timeout(&self, name: &str) -> Duration {
        self.current.load().entry(name).map_or(Duration::from_secs(30), |e| e.timeout)
    }

    /// Whether the backend `name` is reached with the caller's own credentials (`passthrough`,
    /// `token_exchange` on an HTTP or SSE backend), so it is discovered per principal.
    pub fn user_bound(&self, name: &str) -> bool {
        self.current.load().entry(name).is_some_and(|e| e.user_bound)
    }

    /// The health and circuit breaker of the backend `name`.
    pub fn health(&self, name: &str) -> Option<Arc<Health>> {
        self.current.load().entry(name).map(|e| e.health.clone())
    }

    /// Whether the backend `name` is in service: connected, not unhealthy, breaker not open.
    pub fn in_service(&self, name: &str) -> bool {
        self.current.load().entry(name).is_some_and(|e| e.in_service())
    }

    /// Why the backend `name` is out of service (`None` when it is in service or unknown).
    pub fn out_of_service(&self, name: &str) -> Option<super::health::Refused> {
        self.current.load().entry(name).and_then(|e| e.out_of_service())
    }

    /// Why a call to the backend `name` would be refused now (see [`Entry::call_refusal`]).
    pub fn call_refusal(&self, name: &str) -> Option<super::health::Refused> {
        self.current.load().entry(name).and_then(|e| e.call_refusal())
    }

    /// All backends of the current set, in config order.
    pub fn iter(&self) -> impl Iterator<Item = (Arc<str>, Arc<Backend>)> + use<> {
        let set = self.current.load();
        let all: Vec<_> = set.list.iter().map(|e| (e.name.clone(), e.backend.clone())).collect();
        all.into_iter()
    }

    /// Number of backends.
    pub fn len(&self) -> usize {
        self.current.load().list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.current.load().list.is_empty()
    }

    /// Stops every backend of the current set, and those still retiring, concurrently.
    pub async fn shutdown(&self) {
        let all = self.iter().map(|(_, b)| b).chain(self.retiring());
        futures::future::join_all(all.map(|b| async move { b.shutdown().await })).await;
    }

    /// Backends taken out of the set by a reload that have not finished stopping.
    pub fn retiring(&self) -> Vec<Arc<Backend>> {
        let r = self.retiring.lock().unwrap_or_else(|e| e.into_inner());
        r.iter().map(|(_, b)| b.clone()).collect()
    }

    /// Works out what `config` does to the current set, without starting anything: which
    /// backends are kept (same effective settings), started (added or changed) and removed.
    /// Fails when a new backend's outgoing authentication cannot be built.
    pub fn plan(
        &self,
        config: &Config,
        events: &EventSender,
        sources: &Sources,
    ) -> Result<Plan, OutgoingAuthConfigError> {
        let current = self.snapshot();
        let policy = Policy::from_config(&config.operational.failure_handling);
        let mut steps = Vec::with_capacity(config.backends.len());
        for b in &config.backends {
            let fingerprint = fingerprint(config, b);
            let old = current.entry(&b.name);
            if let Some(old) = old.filter(|o| o.fingerprint == fingerprint) {
                steps.push(Step::Keep(old.clone()));
                continue;
            }
            let name: Arc<str> = Arc::from(b.name.as_str());
            let auth = for_backend(&config.outgoing_auth, &b.name, sources)?;
            // stdio children get no outgoing credentials (static ones come through `env`).
            let user_bound = auth.is_user_bound() && b.transport != TransportKind::Stdio;
            let spec = BackendSpec {
                name,
                config: b.clone(),
                timeout: config.backend_timeout(b),
                auth,
                events: events.clone(),
                isolation: b.isolation.unwrap_or_else(|| default_isolation(config, &b.name)),
                limits: super::limit::BackendLimits::from_config(&config.operational),
            };
            steps.push(Step::Start {
                spec: Box::new(spec),
                user_bound,
                fingerprint,
                replaces: old.cloned(),
            });
        }
        let removed = current
            .entries()
            .iter()
            .filter(|e| !config.backends.iter().any(|b| *b.name == *e.name))
            .cloned()
            .collect();
        Ok(Plan { steps, removed, policy })
    }

    /// Publishes `set` as the current one; returns the one it replaces.
    pub fn swap(&self, set: BackendSet) -> Arc<BackendSet> {
        self.current.swap(Arc::new(set))
    }

    /// Stops the backend of `entry`, taken out of the set by a reload: first waits (up to
    /// `drain`) for the requests still holding it to finish, then shuts it down within
    /// `deadline`.
    pub async fn retire(&self, entry: Arc<Entry>, drain: Duration, deadline: Duration) {
        let id = self.next_retiring.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let backend = entry.backend.clone();
        self.retiring.lock().unwrap_or_else(|e| e.into_inner()).push((id, backend.clone()));
        // Besides requests in flight, the entry, the retiring list and this task hold it.
        let until = tokio::time::Instant::now() + drain;
        while Arc::strong_count(&backend) > 3 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if tokio::time::timeout(deadline, backend.shutdown()).await.is_err() {
            tracing::warn!(backend = %entry.name, ?deadline, "retired backend did not stop in time");
        }
        self.retiring.lock().unwrap_or_else(|e| e.into_inner()).retain(|(i, _)| *i != id);
    }
}

/// What a reload does to the backends, worked out by [`Backends::plan`].
pub struct Plan {
    steps: Vec<Step>,
    /// Backends no longer configured.
    pub removed: Vec<Arc<Entry>>,
    policy: Policy,
}

enum Step {
    /// Same effective settings: the running backend stays.
    Keep(Arc<Entry>),
    /// Added (`replaces: None`) or changed.
    Start {
        spec: Box<BackendSpec>,
        user_bound: bool,
        fingerprint: [u8; 32],
        replaces: Option<Arc<Entry>>,
    },
}

/// A plan carried out: the new set (not yet published) and what changed.
pub struct Started {
    /// The new set, in config order.
    pub set: BackendSet,
    /// Kept as they were.
    pub kept: Vec<Arc<str>>,
    /// Newly configured.
    pub added: Vec<Arc<str>>,
    /// Changed: a new object replaces the old one.
    pub changed: Vec<Arc<str>>,
    /// The old objects of changed backends and removed backends, to stop after the swap.
    pub retired: Vec<Arc<Entry>>,
    /// Entries whose object is new (added and changed).
    pub fresh: Vec<Arc<Entry>>,
}

impl Plan {
    /// Names of the backends the plan starts afresh, and whether each replaces one.
    pub fn started(&self) -> impl Iterator<Item = (&str, bool)> {
        self.steps.iter().filter_map(|s| match s {
            Step::Start { spec, replaces, .. } => Some((&*spec.name, replaces.is_some())),
            Step::Keep(_) => None,
        })
    }

    /// Starts the new backends (each connects in the background) and applies the health policy
    /// to the kept ones.
    pub fn start(self) -> Started {
        let mut out = Started {
            set: BackendSet::default(),
            kept: Vec::new(),
            added: Vec::new(),
            changed: Vec::new(),
            retired: self.removed,
            fresh: Vec::new(),
        };
        let mut list = Vec::with_capacity(self.steps.len());
        for step in self.steps {
            match step {
                Step::Keep(e) => {
                    e.health.set_policy(self.policy);
                    out.kept.push(e.name.clone());
                    list.push(e);
                }
                Step::Start { spec, user_bound, fingerprint, replaces } => {
                    let spec = *spec;
                    let name = spec.name.clone();
                    let timeout = spec.timeout;
                    let backend = match spec.config.transport {
                        TransportKind::StreamableHttp => {
                            Backend::Http(super::streamable_http::HttpBackend::start(spec))
                        }
                        TransportKind::Sse => Backend::Sse(super::sse::SseBackend::start(spec)),
                        TransportKind::Stdio => {
                            Backend::Stdio(super::stdio::StdioBackend::start(spec))
                        }
                    };
                    let entry = Arc::new(Entry {
                        name: name.clone(),
                        backend: Arc::new(backend),
                        timeout,
                        user_bound,
                        health: Arc::new(Health::new(self.policy)),
                        fingerprint,
                    });
                    match replaces {
                        Some(old) => {
                            out.changed.push(name);
                            out.retired.push(old);
                        }
                        None => out.added.push(name),
                    }
                    out.fresh.push(entry.clone());
                    list.push(entry);
                }
            }
        }
        out.set = BackendSet::new(list);
        out
    }
}

/// Digest of everything a running backend object was started with: its config entry (but its
/// `metadata`, which only `/status` shows), the CA bundle file's content, its effective timeout,
/// isolation and limits, and its effective outgoing auth (inline secrets included, so a rotated
/// secret restarts it). Two equal digests mean the object can be kept. Never shown anywhere.
fn fingerprint(config: &Config, b: &BackendConfig) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut part = |label: &str, bytes: &[u8]| {
        h.update((label.len() as u64).to_le_bytes());
        h.update(label.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    let entry = BackendConfig { metadata: Default::default(), ..b.clone() };
    part("entry", format!("{entry:?}").as_bytes());
    if let Some(path) = &b.ca_bundle_path {
        // Read at load already (and bounded there); a file that changed since is a change.
        let digest = std::fs::read(path).map(|bytes| Sha256::digest(&bytes).to_vec());
        part("caBundle", &digest.unwrap_or_default());
    }
    part("timeout", format!("{:?}", config.backend_timeout(b)).as_bytes());
    let isolation = b.isolation.unwrap_or_else(|| default_isolation(config, &b.name));
    part("isolation", format!("{isolation:?}").as_bytes());
    let limits = super::limit::BackendLimits::from_config(&config.operational);
    part("limits", format!("{limits:?}").as_bytes());
    match effective_auth(config, &b.name) {
        Some(auth) => {
            part("auth", format!("{auth:?}").as_bytes());
            for secret in inline_secrets(auth) {
                part("secret", secret.as_bytes());
            }
        }
        None => part("auth", b"none"),
    }
    h.finalize().into()
}

/// The inline secrets of an outgoing auth block (`Debug` redacts them, so they are hashed
/// separately).
fn inline_secrets(a: &BackendAuthConfig) -> Vec<&str> {
    use crate::auth::identity::Secret;
    let mut out: Vec<Option<&Secret>> = Vec::new();
    if let Some(h) = &a.header_injection {
        out.push(h.header_value.as_ref());
    }
    if let Some(t) = &a.token_exchange {
        out.push(t.client_secret.as_ref());
    }
    if let Some(o) = &a.obo {
        out.push(o.client_secret.as_ref());
    }
    if let Some(x) = &a.xaa {
        out.push(x.idp_client_secret.as_ref());
        out.push(x.target_client_secret.as_ref());
    }
    out.into_iter().flatten().map(Secret::expose).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        crate::config::parse(yaml, "t").unwrap()
    }

    const BASE: &str = "name: g\nbackends:\n  - name: a\n    transport: streamable-http\n    url: http://127.0.0.1:1/mcp\n";

    fn fp(yaml: &str) -> [u8; 32] {
        let c = config(yaml);
        fingerprint(&c, &c.backends[0])
    }

    #[test]
    fn metadata_and_unrelated_keys_do_not_change_a_backend() {
        let base = fp(BASE);
        assert_eq!(base, fp(&format!("{BASE}    metadata: {{ team: x }}\n")));
        assert_eq!(
            base,
            fp(&format!(
                "{BASE}aggregation:\n  conflictResolution: priority\n  conflictResolutionConfig:\n    priorityOrder: [a]\n"
            ))
        );
        assert_eq!(base, fp(&format!("{BASE}metadata:\n  env: prod\n")));
    }

    #[test]
    fn effective_settings_change_a_backend() {
        let base = fp(BASE);
        assert_ne!(base, fp(&BASE.replace(":1/mcp", ":2/mcp")));
        assert_ne!(base, fp(&format!("{BASE}    timeout: 5s\n")));
        assert_ne!(base, fp(&format!("{BASE}operational:\n  timeouts:\n    default: 5s\n")));
        assert_ne!(
            base,
            fp(&format!("{BASE}operational:\n  backendSessions:\n    maxPerBackend: 7\n"))
        );
        let header = |v: &str| {
            format!(
                "{BASE}outgoingAuth:\n  backends:\n    a:\n      type: header_injection\n      headerInjection:\n        headerName: X-Key\n        headerValue: {v}\n"
            )
        };
        assert_ne!(base, fp(&header("one")));
        // A rotated inline secret is a change, though Debug redacts it.
        assert_ne!(fp(&header("one")), fp(&header("two")));
        assert_eq!(fp(&header("one")), fp(&header("one")));
    }
}
