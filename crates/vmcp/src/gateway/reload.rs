//! Config reload: a validated new config replaces the running one without a restart.
//!
//! One reload at a time ([`Gateway::reload_with`] holds the [`Running`] lock from reading the
//! file to the end). Steps, each of the fallible ones before anything changes:
//! 1. load and validate the file as at start (the caller's loader: same errors, same lines);
//! 2. refuse it when a restart-only key changed ([`super::diff`]), naming each;
//! 3. plan the backends ([`Backends::plan`]): unchanged ones (same effective settings) are kept
//!    as the same objects; the outgoing auth of added and changed ones is built; then the layers;
//! 4. start added and changed backends and wait (at most [`RELOAD_SETTLE`]) for their first
//!    connection and lists, while the old config keeps serving;
//! 5. swap: stop discovery and probes (handing over their lists), publish the new backend set,
//!    the catalog under the new rules seeded with the kept backends' lists and the new ones',
//!    the layers and settings; start discovery and probes again;
//! 6. retire the old objects of changed and removed backends: each waits for its requests in
//!    flight (up to `teardownTimeout`) and stops within `backendShutdownTimeout`.
//!
//! A refused reload changes nothing; its errors go to the log and to `/status`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::Gateway;
use crate::backend::registry::Entry;
use crate::catalog::BackendLists;
use crate::catalog::live::{Discovery, Seed};
use crate::config::Config;

/// Longest a reload waits for the backends it starts to connect and list, before the swap (as
/// `serve` waits at start). A backend not ready by then joins the catalog when it connects.
pub const RELOAD_SETTLE: Duration = Duration::from_secs(10);

/// The parts of a running config that a reload replaces, behind the lock that serializes
/// reloads.
pub struct Running {
    /// The config in force.
    pub(super) config: Config,
    /// What outgoing auth strategies draw on (the same for every generation).
    pub(super) sources: crate::auth::outgoing::Sources,
    /// The discovery task of the current backend set.
    pub(super) discovery: Option<Discovery>,
    /// Stops the probes of the current backend set.
    pub(super) probes: CancellationToken,
}

/// What `/status` shows of a running config's settings that a reload may change.
pub struct Settings {
    /// `operational.failureHandling.partialFailureMode`.
    pub partial_failure: crate::config::PartialFailureMode,
    /// Client headers forwarded to backends (`passthroughHeaders`).
    pub passthrough: Vec<http::HeaderName>,
    /// The config's `metadata`.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Each backend's `metadata` (backends without any are absent).
    pub backend_metadata:
        std::collections::HashMap<String, std::collections::BTreeMap<String, String>>,
}

impl Settings {
    pub(super) fn from_config(config: &Config) -> Settings {
        Settings {
            partial_failure: config.operational.failure_handling.partial_failure_mode,
            // Validated at load: every entry is a header name and none is refused.
            passthrough: config
                .passthrough_headers
                .iter()
                .filter_map(|h| http::HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
            metadata: config.metadata.clone(),
            backend_metadata: config
                .backends
                .iter()
                .filter(|b| !b.metadata.is_empty())
                .map(|b| (b.name.clone(), b.metadata.clone()))
                .collect(),
        }
    }
}

/// The config generation and the last reload's outcome, for `/status`.
#[derive(Debug, Clone)]
pub struct ConfigStatus {
    /// 1 at start, one more for each reload applied.
    pub generation: u64,
    /// When the config in force was loaded.
    pub loaded_at: SystemTime,
    /// When a reload was last attempted.
    pub last_reload_at: Option<SystemTime>,
    /// Why the last reload was refused (`None` once one is applied).
    pub last_error: Option<String>,
}

impl ConfigStatus {
    pub(super) fn new() -> Self {
        Self { generation: 1, loaded_at: SystemTime::now(), last_reload_at: None, last_error: None }
    }

    /// As `/status` shows it.
    pub fn report(&self) -> serde_json::Value {
        use crate::backend::health::rfc3339;
        serde_json::json!({
            "generation": self.generation,
            "loadedAt": rfc3339(self.loaded_at),
            "lastReloadAt": self.last_reload_at.map(rfc3339),
            "lastReloadError": self.last_error,
        })
    }
}

/// A reload that was applied: the new generation and what happened to each backend.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The config generation now in force.
    pub generation: u64,
    /// Backends started.
    pub added: Vec<Arc<str>>,
    /// Backends whose settings changed: a new object replaced the old one.
    pub changed: Vec<Arc<str>>,
    /// Backends stopped.
    pub removed: Vec<Arc<str>>,
    /// Backends kept as they were (connections, sessions and health stay).
    pub kept: Vec<Arc<str>>,
}

/// Why a reload was refused; the old config keeps serving. Messages hold no secret.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not load or validate (every problem, with its line).
    #[error("{0}")]
    Invalid(#[from] crate::config::ConfigError),
    /// Keys that only a restart can change.
    #[error("these keys cannot change without a restart: {}", .0.join(", "))]
    RestartRequired(Vec<String>),
    /// A backend's outgoing authentication cannot be built.
    #[error(transparent)]
    OutgoingAuth(#[from] crate::auth::outgoing::OutgoingAuthConfigError),
    /// A layer around dispatch cannot be built.
    #[error(transparent)]
    Layer(#[from] crate::layer::LayerError),
    /// The gateway is shutting down.
    #[error("the gateway is shutting down")]
    Stopping,
}

impl Gateway {
    /// Reloads the config that `load` reads (called with reloads serialized: one at a time),
    /// logs the outcome and records it for `/status`.
    pub async fn reload_with(
        &self,
        load: impl FnOnce() -> Result<Config, ReloadError>,
    ) -> Result<Applied, ReloadError> {
        let mut running = self.running.lock().await;
        let result = match load() {
            Ok(config) => self.apply(&mut running, config).await,
            Err(e) => Err(e),
        };
        let mut status = self.config_status.lock().unwrap_or_else(|e| e.into_inner());
        status.last_reload_at = Some(SystemTime::now());
        match &result {
            Ok(a) => {
                status.generation = a.generation;
                status.loaded_at = SystemTime::now();
                status.last_error = None;
                tracing::info!(
                    generation = a.generation,
                    added = ?names(&a.added),
                    changed = ?names(&a.changed),
                    removed = ?names(&a.removed),
                    kept = ?names(&a.kept),
                    "config reloaded"
                );
            }
            Err(e) => {
                status.last_error = Some(e.to_string());
                tracing::error!(
                    generation = status.generation,
                    "config reload refused; the running config keeps serving:\n{e}"
                );
            }
        }
        result
    }

    /// The config generation and the last reload's outcome.
    pub fn config_status(&self) -> ConfigStatus {
        self.config_status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn apply(&self, running: &mut Running, config: Config) -> Result<Applied, ReloadError> {
        if self.stop.is_cancelled() {
            return Err(ReloadError::Stopping);
        }
        let restart = super::diff::restart_only(&running.config, &config);
        if !restart.is_empty() {
            return Err(ReloadError::RestartRequired(restart));
        }
        let plan = self.backends.plan(&config, &self.events, &running.sources)?;
        let old_layers = self.layers.load();
        let mut layers = old_layers.renew(&config)?;
        let kept = old_layers.rate_limits.as_ref();
        crate::store::ratelimit::share(&mut layers, &config, self.storage.as_ref(), kept);
        let started = plan.start();
        let per_principal = config.incoming_auth.kind != crate::config::IncomingAuthKind::Anonymous;
        let lists = first_lists(&started.fresh, per_principal).await;
        if self.stop.is_cancelled() {
            for e in &started.fresh {
                e.backend.shutdown().await;
            }
            return Err(ReloadError::Stopping);
        }
        // The swap. Nothing below fails.
        let mut seed = match running.discovery.take() {
            Some(d) => d.stop().await,
            None => Seed::default(),
        };
        running.probes.cancel();
        for e in &started.retired {
            let changed = started.changed.contains(&e.name);
            seed.forget(&e.name, changed);
        }
        for l in lists {
            seed.insert(l);
        }
        let old_order: Vec<Arc<str>> = self.backends.iter().map(|(n, _)| n).collect();
        self.backends.swap(started.set);
        let new_order: Vec<Arc<str>> = self.backends.iter().map(|(n, _)| n).collect();
        let aggregation_changed =
            format!("{:?}", running.config.aggregation) != format!("{:?}", config.aggregation);
        let reset = aggregation_changed
            || old_order != new_order
            || !started.added.is_empty()
            || !started.changed.is_empty();
        self.catalog.reconfigure(
            &config.aggregation,
            &self.backends,
            per_principal,
            crate::catalog::principal::PrincipalLimits::default(),
            &seed,
            reset,
        );
        running.discovery = Some(Discovery::spawn(
            self.backends.clone(),
            config.aggregation.clone(),
            self.catalog.clone(),
            &self.events,
            &self.stop,
            seed,
        ));
        running.probes = self.stop.child_token();
        tokio::spawn(crate::backend::probe::run(
            self.backends.clone(),
            config.operational.failure_handling.clone(),
            running.probes.clone(),
        ));
        self.layers.store(Arc::new(layers));
        self.settings.store(Arc::new(Settings::from_config(&config)));
        let drain = self.sessions.limits().teardown_timeout;
        let deadline = config.server.connections.backend_shutdown_timeout;
        let removed = started
            .retired
            .iter()
            .filter(|e| !started.changed.contains(&e.name))
            .map(|e| e.name.clone())
            .collect();
        for e in started.retired {
            let backends = self.backends.clone();
            tokio::spawn(async move { backends.retire(e, drain, deadline).await });
        }
        running.config = config;
        let generation = self.config_status().generation + 1;
        Ok(Applied {
            generation,
            added: started.added,
            changed: started.changed,
            removed,
            kept: started.kept,
        })
    }
}

fn names(list: &[Arc<str>]) -> Vec<&str> {
    list.iter().map(|n| &**n).collect()
}

/// Waits (at most [`RELOAD_SETTLE`]) for the first connection of each backend a reload started,
/// then lists those in service that are shared (user-bound ones are listed per principal).
async fn first_lists(fresh: &[Arc<Entry>], per_principal: bool) -> Vec<BackendLists> {
    let deadline = tokio::time::Instant::now() + RELOAD_SETTLE;
    let lists = futures::future::join_all(fresh.iter().map(|e| async move {
        let _ = tokio::time::timeout_at(deadline, e.backend.first_attempt()).await;
        if !e.in_service() || (per_principal && e.user_bound) {
            return None;
        }
        let listing = crate::catalog::live::discover(&e.name, &e.backend, None);
        tokio::time::timeout(e.timeout.min(RELOAD_SETTLE), listing).await.ok().map(|(l, _)| l)
    }));
    lists.await.into_iter().flatten().collect()
}
