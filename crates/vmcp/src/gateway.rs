//! The running gateway's shared state, assembled at the composition root (`cli::serve`) and
//! partly replaced by a config reload ([`reload`]).
//!
//! Invariant: this is a bundle of independent parts (backends, catalog, sessions); each part owns
//! its own state and none reaches into another's. Request handling borrows it immutably; what a
//! reload replaces (the backend set, the catalog, the layers, [`Settings`]) is swapped whole
//! inside its part, so a request reads either the old value or the new one, never a mix within
//! one part.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::backend::registry::Backends;
use crate::backend::{BackendEvent, EventSender};
use crate::catalog::live::{Discovery, LiveCatalog, Seed};
use crate::config::Config;
use crate::session::Sessions;

mod diff;
mod fanout;
pub mod reload;

pub use reload::{Applied, ConfigStatus, ReloadError, Settings};

/// Ends idle sessions until the gateway stops, checking a few times per idle timeout (at most
/// once a minute).
///
/// The sweep never waits on a backend: each expired session's teardown runs in its own task,
/// bounded by `teardownTimeout` (per backend call, and as a whole), so one silent backend cannot
/// delay the expiry of other sessions.
async fn expire_sessions(gw: std::sync::Weak<Gateway>, max_idle: std::time::Duration) {
    let period = (max_idle / 4)
        .clamp(std::time::Duration::from_millis(100), std::time::Duration::from_secs(60));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let Some(gw) = gw.upgrade() else { return };
        if gw.stop.is_cancelled() {
            return;
        }
        for s in gw.sessions.expire(max_idle).await {
            let gw = gw.clone();
            tokio::spawn(async move {
                let deadline = gw.sessions.limits().teardown_timeout;
                if tokio::time::timeout(deadline, gw.end_backend_sessions(&s)).await.is_err() {
                    tracing::warn!(
                        session = s.key,
                        "backend teardown of an expired session did not finish within {deadline:?}"
                    );
                }
            });
        }
    }
}

/// Shared state of a running gateway.
pub struct Gateway {
    /// `serverInfo.name`.
    pub name: String,
    /// The backends, in config order.
    pub backends: Arc<Backends>,
    /// The published catalog.
    pub catalog: Arc<LiveCatalog>,
    /// Legacy client sessions.
    pub sessions: Sessions,
    /// Backend-level notifications (list_changed, resources/updated, logging).
    pub events: EventSender,
    /// Items per page in list results (0: no paging). Restart-only.
    pub page_size: usize,
    /// Settings a reload may change: `partialFailureMode`, `passthroughHeaders`, metadata.
    pub settings: ArcSwap<Settings>,
    /// Stops background tasks.
    pub stop: CancellationToken,
    /// Backend calls waiting for a Modern client's input.
    pub parked: crate::dispatch::park::Parked,
    /// Resource subscriptions shared across clients.
    pub subscriptions: crate::dispatch::subscriptions::Subscriptions,
    /// The latest identity of each principal (for teardown).
    pub identities: Arc<crate::auth::current::CurrentIdentities>,
    /// Incoming authentication.
    pub gatekeeper: crate::http::auth::Gatekeeper,
    /// The embedded authorization server and its upstream token vault, when configured.
    pub auth_server: Option<crate::auth::embedded::Embedded>,
    /// Shared storage (`sessionStorage: {provider: redis}`), when configured.
    pub storage: Option<crate::store::Redis>,
    /// The layers around dispatch (rate limits, authorization, audit, telemetry), rebuilt by a
    /// reload (load once per request: `gw.layers.load()`).
    pub layers: ArcSwap<crate::layer::Layers>,
    /// The config in force and the tasks of the current backend set; locked by a reload.
    running: tokio::sync::Mutex<reload::Running>,
    /// The config generation and the last reload's outcome.
    config_status: std::sync::Mutex<ConfigStatus>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A backend's outgoing authentication is misconfigured.
    #[error(transparent)]
    OutgoingAuth(#[from] crate::auth::outgoing::OutgoingAuthConfigError),
    /// The embedded authorization server cannot be built.
    #[error(transparent)]
    AuthServer(#[from] crate::auth::embedded::EmbeddedError),
    /// Incoming authentication is misconfigured.
    #[error("incomingAuth: {0}")]
    IncomingAuth(String),
    /// A layer around dispatch cannot be built.
    #[error(transparent)]
    Layer(#[from] crate::layer::LayerError),
    /// `sessionStorage` cannot be used.
    #[error(transparent)]
    Storage(#[from] crate::store::StorageError),
}

impl Gateway {
    /// Starts backends and discovery for `config`, with Legacy session records in Redis under
    /// `sessionStorage: {provider: redis}`, else kept by nobody (one process). Returns at once; backends connect in the background (see
    /// [`crate::catalog::live::settle`]).
    pub fn start(config: &Config) -> Result<Arc<Gateway>, StartError> {
        Self::build(config, None)
    }

    /// [`Gateway::start`] with Legacy session records in `store`: replicas (or gateways in one
    /// test process) given the same store continue each other's sessions.
    pub fn start_with(
        config: &Config,
        store: Arc<dyn crate::session::SessionStore>,
    ) -> Result<Arc<Gateway>, StartError> {
        Self::build(config, Some(store))
    }

    /// Starts the gateway; session records go to `store` when given, else to Redis with
    /// `sessionStorage: {provider: redis}`, else stay in this process.
    fn build(
        config: &Config,
        store: Option<Arc<dyn crate::session::SessionStore>>,
    ) -> Result<Arc<Gateway>, StartError> {
        let (events, _) = broadcast::channel::<BackendEvent>(1024);
        let identities = Arc::new(crate::auth::current::CurrentIdentities::default());
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        let storage = crate::store::from_config(config)?;
        let store = store.unwrap_or_else(|| match &storage {
            Some(redis) => Arc::new(crate::store::sessions::RedisSessionStore::new(redis.clone())),
            None => Arc::new(crate::session::LocalSessionStore),
        });
        let auth_server = match &config.auth_server {
            // The upstream IdPs' token endpoints get client secrets and refresh tokens: no
            // redirects there either.
            Some(cfg) => Some(crate::auth::embedded::build_with_storage(
                cfg,
                crate::auth::token_client(std::time::Duration::from_secs(10)),
                storage.as_ref().zip(config.session_storage.as_ref()),
            )?),
            None => None,
        };
        let sources = crate::auth::outgoing::Sources {
            identities: identities.clone(),
            http: crate::auth::token_client(std::time::Duration::from_secs(30)),
            upstream: auth_server.as_ref().map(|e| crate::auth::outgoing::UpstreamSource {
                issuer: e.issuer.clone(),
                tokens: e.tokens.clone(),
                default_provider: e.default_provider.clone(),
            }),
        };
        let backends = Arc::new(Backends::start(config, &events, &sources)?);
        let gatekeeper = crate::http::auth::Gatekeeper::from_config(
            &config.incoming_auth,
            http,
            auth_server.as_ref().map(|e| e.server.clone()),
        )
        .map_err(StartError::IncomingAuth)?;
        // With anonymous incoming auth there are no principals: user-bound backends stay in the
        // shared catalog (discovered without credentials, as the config check warns).
        let per_principal = config.incoming_auth.kind != crate::config::IncomingAuthKind::Anonymous;
        let catalog = Arc::new(LiveCatalog::new(
            &config.aggregation,
            &backends,
            per_principal,
            crate::catalog::principal::PrincipalLimits::default(),
        ));
        let mut layers = crate::layer::Layers::from_config(config)?;
        crate::store::ratelimit::share(&mut layers, config, storage.as_ref(), None);
        let stop = CancellationToken::new();
        let discovery = Discovery::spawn(
            backends.clone(),
            config.aggregation.clone(),
            catalog.clone(),
            &events,
            &stop,
            Seed::default(),
        );
        let probes = stop.child_token();
        tokio::spawn(crate::backend::probe::run(
            backends.clone(),
            config.operational.failure_handling.clone(),
            probes.clone(),
        ));
        let running =
            reload::Running { config: config.clone(), sources, discovery: Some(discovery), probes };
        let gw = Arc::new(Gateway {
            name: config.name.clone(),
            backends,
            catalog,
            sessions: Sessions::new(config.server.limits.clone(), store),
            events,
            page_size: config.server.page_size,
            settings: ArcSwap::from_pointee(Settings::from_config(config)),
            stop,
            parked: Default::default(),
            subscriptions: Default::default(),
            identities,
            gatekeeper,
            auth_server,
            storage,
            layers: ArcSwap::from_pointee(layers),
            running: tokio::sync::Mutex::new(running),
            config_status: std::sync::Mutex::new(ConfigStatus::new()),
        });
        gw.layers.load().telemetry.observe(&gw);
        if let Some(bus) = gw.sessions.bus() {
            tokio::spawn(fanout::run(Arc::downgrade(&gw), bus.clone(), gw.events.subscribe()));
        }
        tokio::spawn(expire_sessions(
            Arc::downgrade(&gw),
            config.server.limits.session_idle_timeout,
        ));
        Ok(gw)
    }

    /// With `partialFailureMode: fail`, the error for a session's `initialize` or a list while
    /// some backends are out of service, naming them and why; `None` otherwise.
    pub fn partial_failure_error(&self) -> Option<crate::protocol::ErrorObject> {
        if self.settings.load().partial_failure != crate::config::PartialFailureMode::Fail {
            return None;
        }
        let set = self.backends.snapshot();
        let out: Vec<String> = set
            .entries()
            .iter()
            .filter_map(|e| e.out_of_service().map(|r| format!("{} ({})", e.name, r.reason)))
            .collect();
        if out.is_empty() {
            return None;
        }
        let names: Vec<&str> =
            set.entries().iter().filter(|e| !e.in_service()).map(|e| &*e.name).collect();
        Some(crate::protocol::ErrorObject::with_data(
            crate::protocol::jsonrpc::code::BACKEND_UNAVAILABLE,
            format!(
                "backends unavailable (operational.failureHandling.partialFailureMode: fail): {}",
                out.join(", ")
            ),
            &serde_json::json!({ "backends": names }),
        ))
    }

    /// The headers of a client request that go on to backends.
    pub fn forwarded(&self, headers: &http::HeaderMap) -> crate::backend::Forwarded {
        let settings = self.settings.load();
        if settings.passthrough.is_empty() {
            return crate::backend::Forwarded::from([]);
        }
        settings
            .passthrough
            .iter()
            .flat_map(|name| headers.get_all(name).iter().map(move |v| (name.clone(), v.clone())))
            .collect()
    }

    /// `serverInfo` as the gateway reports it.
    pub fn server_info(&self) -> serde_json::Value {
        serde_json::json!({ "name": self.name, "version": env!("CARGO_PKG_VERSION") })
    }

    /// The capabilities the gateway advertises to clients: everything it can relay.
    pub fn capabilities(&self) -> serde_json::Value {
        serde_json::json!({
            "tools": { "listChanged": true },
            "resources": { "subscribe": true, "listChanged": true },
            "prompts": { "listChanged": true },
            "completions": {},
            "logging": {},
        })
    }

    /// Ends the backend sessions of a client session that has ended, with the principal's
    /// current credentials (`Caller::Teardown`), never ones captured earlier.
    ///
    /// Every backend call here waits at most `teardownTimeout`: a backend that does not answer
    /// loses its chance to hear of the end, nothing more.
    pub async fn end_backend_sessions(&self, session: &crate::session::Session) {
        let caller = crate::auth::Caller::Teardown(session.binding.clone());
        let catalog = self.catalog.cached(&session.binding).await;
        let timeout = self.sessions.limits().teardown_timeout;
        for uri in session.subscriptions() {
            let Some(name) = catalog.resource(&uri) else { continue };
            if let Some(backend) = self.backends.get(name) {
                // A per-client backend session ends below, taking its subscriptions with it.
                let target =
                    crate::dispatch::subscriptions::Target { name, backend: &backend, timeout };
                let _ = self
                    .subscriptions
                    .change(&caller, Some(session.key), target, &uri, false)
                    .await;
            }
        }
        let caller = &caller;
        futures::future::join_all(self.backends.iter().map(|(_, b)| async move {
            tokio::time::timeout(timeout, b.end_session(caller, session.key)).await
        }))
        .await;
        tracing::info!(session = session.key, "session ended");
    }

    /// Stops background work and every backend (child processes are killed), all within
    /// `deadline`: a backend that hangs is left behind (the caller kills stdio groups still
    /// alive) rather than holding shutdown for its whole request timeout.
    pub async fn shutdown(&self, deadline: std::time::Duration) {
        let until = tokio::time::Instant::now() + deadline;
        // End client sessions first, so their backend sessions end with the principals'
        // teardown credentials rather than the gateway's. Only this process's copies end: the
        // records stay, so other replicas continue the sessions.
        let ended = self.sessions.drain();
        let teardown = futures::StreamExt::for_each_concurrent(
            futures::stream::iter(ended),
            16,
            |s| async move { self.end_backend_sessions(&s).await },
        );
        if tokio::time::timeout_at(until, teardown).await.is_err() {
            tracing::warn!(?deadline, "ending client sessions' backend sessions took too long");
        }
        self.stop.cancel();
        let retiring = self.backends.retiring().into_iter().map(|b| (Arc::from("(retired)"), b));
        futures::future::join_all(self.backends.iter().chain(retiring).map(
            |(name, b)| async move {
                if tokio::time::timeout_at(until, b.shutdown()).await.is_err() {
                    tracing::warn!(backend = %name, ?deadline, "backend did not stop in time");
                }
            },
        ))
        .await;
        self.layers.load_full().shutdown(until).await;
    }
}
