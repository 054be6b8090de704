//! Configuration: the YAML schema, loading and validation.
//!
//! Keys are camelCase and follow ToolHive vMCP's static-backend schema so its users can bring their
//! configs over; `stdio` backends (`command`, `args`, `env`, `cwd`) and the `server` block are ours.
//!
//! `authserver-config.yaml` beside the config file, when present, configures the embedded
//! authorization server ([`authserver`]); it is loaded and validated together with the main file.
//!
//! Invariant: a `Config` that leaves this module has been validated: backend names are unique,
//! every backend has what its transport needs, and every reference (priority order, per-backend
//! timeouts, tool rules, upstream names) names something configured. Errors name the key and the
//! line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::IgnoredAny;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// The gateway's name, reported as `serverInfo.name`. Required; defaulted here only so a
    /// missing name is reported with the other semantic problems instead of alone.
    #[serde(default)]
    pub name: String,
    /// ToolHive group. vmcp does not discover backends: with `backends` listed it is ignored
    /// (a warning); without, the file is refused (see `toolhive_compat.rs`).
    #[serde(default)]
    pub group_ref: Option<String>,
    /// The MCP servers behind the gateway.
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    /// Free-form labels for the whole gateway, shown in `/status` as `metadata`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// How backend capabilities are merged into one catalog.
    #[serde(default)]
    pub aggregation: AggregationConfig,
    /// Timeouts and other operational knobs.
    #[serde(default)]
    pub operational: OperationalConfig,
    /// The client-facing HTTP server.
    #[serde(default)]
    pub server: ServerConfig,
    /// Who may call the gateway.
    #[serde(default)]
    pub incoming_auth: IncomingAuthConfig,
    /// What the gateway presents to each backend.
    #[serde(default)]
    pub outgoing_auth: OutgoingAuthConfig,
    /// Client headers forwarded to backends (an allow-list).
    #[serde(default)]
    pub passthrough_headers: Vec<String>,
    /// OpenTelemetry traces and metrics, Prometheus `/metrics` (`telemetry.rs`).
    #[serde(default)]
    pub telemetry: Option<TelemetryConfig>,
    // ToolHive features vmcp does not have yet: recognised so that the file is refused with a
    // message naming the feature (`toolhive_compat.rs`); their contents are never read.
    /// Audit events (`config/audit.rs`).
    #[serde(default)]
    pub audit: Option<AuditConfig>,
    /// `optimizer`: not available yet.
    #[serde(default)]
    pub optimizer: Option<IgnoredAny>,
    /// `codeMode`: not available yet.
    #[serde(default)]
    pub code_mode: Option<IgnoredAny>,
    /// Where state shared by replicas lives (`config/session_storage.rs`).
    #[serde(default)]
    pub session_storage: Option<SessionStorageConfig>,
    /// Token buckets on tool calls (`config/rate_limit.rs`).
    #[serde(default)]
    pub rate_limiting: Option<RateLimitConfig>,
    /// `compositeTools`: not available yet.
    #[serde(default)]
    pub composite_tools: Option<IgnoredAny>,
    /// `compositeToolRefs`: not available yet.
    #[serde(default)]
    pub composite_tool_refs: Option<IgnoredAny>,
    /// The embedded authorization server, from `authserver-config.yaml` beside the config file;
    /// `None` when that file is absent.
    #[serde(skip)]
    pub auth_server: Option<AuthServerConfig>,
}

/// One backend MCP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendConfig {
    /// Unique name; used in prefixes, routing, logs and `/status`. Required; defaulted here only
    /// so a missing name is reported with the other semantic problems.
    #[serde(default)]
    pub name: String,
    /// How the gateway talks to it.
    pub transport: TransportKind,
    /// Endpoint for `streamable-http` (the MCP endpoint) and `sse` (the SSE endpoint).
    #[serde(default)]
    pub url: Option<String>,
    /// Program to run for `stdio`.
    #[serde(default)]
    pub command: Option<String>,
    /// Arguments for `command`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment for `command` (static credentials for stdio backends go here).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory for `command`.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Per-request timeout for this backend; overrides `operational.timeouts`.
    #[serde(default, with = "duration::option")]
    pub timeout: Option<Duration>,
    /// stdio and sse: which clients share a child process or event stream. Unset:
    /// `perPrincipal` when the backend's outgoing auth is bound to the user (`passthrough`,
    /// `token_exchange`, `upstream_inject`), else `shared`.
    #[serde(default)]
    pub isolation: Option<Isolation>,
    /// stdio with `perPrincipal`/`perSession`: most child processes alive at once (besides the
    /// gateway's own, used for discovery). Default [`DEFAULT_MAX_PROCESSES`].
    #[serde(default)]
    pub max_processes: Option<usize>,
    /// stdio with `perPrincipal`/`perSession`: a child with no request in flight for this long is
    /// stopped. Default [`DEFAULT_PROCESS_IDLE_TIMEOUT`].
    #[serde(default, with = "duration::option")]
    pub process_idle_timeout: Option<Duration>,
    /// ToolHive's workload type: `entry` (an MCPServerEntry, reached directly) or empty. vmcp
    /// reaches every backend directly, so it changes nothing; other values are refused.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// PEM file of extra root CAs trusted for this backend's HTTPS (on top of the system's).
    #[serde(default)]
    pub ca_bundle_path: Option<PathBuf>,
    /// The certificates of `caBundlePath`, read and checked at load.
    #[serde(skip)]
    pub ca_bundle: Option<ca_bundle::CaBundle>,
    /// Free-form labels, shown in `/status` per backend as `metadata`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// Default `maxProcesses`.
pub const DEFAULT_MAX_PROCESSES: usize = 32;
/// Default `processIdleTimeout`.
pub const DEFAULT_PROCESS_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Which clients share one stdio child process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Isolation {
    /// One child for everyone. A message the child sends that cannot be tied to one client's
    /// request is dropped, so logs and server-to-client requests reach clients only while their
    /// request is the only one in flight.
    Shared,
    /// One child per principal (Modern and Legacy clients of the same user share it).
    PerPrincipal,
    /// One child per Legacy client session (per principal for Modern clients): every message the
    /// child sends belongs to that client.
    PerSession,
}

/// Backend transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    /// MCP Streamable HTTP (either protocol era; probed at connect).
    StreamableHttp,
    /// Legacy HTTP+SSE (2024-11-05).
    Sse,
    /// A child process speaking newline-delimited JSON-RPC on stdin/stdout.
    Stdio,
}

/// `aggregation`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AggregationConfig {
    /// How name collisions between backends are resolved.
    #[serde(default)]
    pub conflict_resolution: ConflictResolution,
    /// Parameters of the chosen strategy.
    #[serde(default)]
    pub conflict_resolution_config: ConflictResolutionConfig,
    /// Per-backend tool rules.
    #[serde(default)]
    pub tools: Vec<ToolRules>,
    /// Hide every tool (resources and prompts are unaffected).
    #[serde(default)]
    pub exclude_all_tools: bool,
    /// Whether a backend with no `tools` entry advertises its tools (ToolHive's key).
    #[serde(default)]
    pub default_tool_visibility: ToolVisibility,
}

/// `aggregation.defaultToolVisibility`: tools of backends that have no `aggregation.tools` entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolVisibility {
    /// Advertised (the default).
    #[default]
    Allow,
    /// Hidden: only backends named in `aggregation.tools` contribute tools (resources, templates
    /// and prompts are unaffected).
    Deny,
}

/// `aggregation.conflictResolution`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictResolution {
    /// Every tool and prompt is renamed with `prefixFormat`.
    #[default]
    Prefix,
    /// The first backend in `priorityOrder` keeps a contested name; others lose it.
    Priority,
    /// Every collision must be resolved by an override: `vmcp serve` refuses to start on an
    /// unresolved one; one that appears later is left out of the catalog (for every claimant) and
    /// reported in `/status` problems.
    Manual,
}

/// `aggregation.conflictResolutionConfig`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConflictResolutionConfig {
    /// Prefix template; `{backend}` (or its alias `{workload}`) is replaced by the backend name.
    /// Default `{backend}_`. Names tools under `prefix`, and prompts under every strategy.
    #[serde(default)]
    pub prefix_format: Option<String>,
    /// Backends in decreasing priority, for `priority`.
    #[serde(default)]
    pub priority_order: Vec<String>,
}

/// One entry of `aggregation.tools`: rules for one backend's tools.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolRules {
    /// The backend these rules apply to (`workload` in ToolHive configs).
    #[serde(alias = "workload")]
    pub backend: String,
    /// Allow-list of tool names to advertise, as named after `overrides` (as in ToolHive); absent
    /// or empty means all.
    #[serde(default)]
    pub filter: Option<Vec<String>>,
    /// Per original tool name: a new name, description or annotations.
    #[serde(default)]
    pub overrides: BTreeMap<String, ToolOverride>,
    /// Hide all of this backend's tools.
    #[serde(default)]
    pub exclude_all: bool,
}

/// `aggregation.tools[].overrides.<tool>`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolOverride {
    /// The tool's new name; conflict resolution treats it as the tool's own name (so `prefix`
    /// prefixes it).
    #[serde(default)]
    pub name: Option<String>,
    /// Advertised description.
    #[serde(default)]
    pub description: Option<String>,
    /// Annotation fields to set; unset fields keep the backend's values.
    #[serde(default)]
    pub annotations: Option<AnnotationOverrides>,
}

/// Tool annotation overrides.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnnotationOverrides {
    /// `title`.
    #[serde(default)]
    pub title: Option<String>,
    /// `readOnlyHint`.
    #[serde(default)]
    pub read_only_hint: Option<bool>,
    /// `destructiveHint`.
    #[serde(default)]
    pub destructive_hint: Option<bool>,
    /// `idempotentHint`.
    #[serde(default)]
    pub idempotent_hint: Option<bool>,
    /// `openWorldHint`.
    #[serde(default)]
    pub open_world_hint: Option<bool>,
}

/// `operational`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperationalConfig {
    /// ToolHive's `logLevel`: `debug` logs at debug level (unless `VMCP_LOG` is set); empty or
    /// absent means info. Checked in `toolhive_compat.rs`.
    #[serde(default)]
    pub log_level: Option<String>,
    /// Request timeouts.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Backend sessions of Streamable HTTP backends (see `backend_sessions.rs`).
    #[serde(default)]
    pub backend_sessions: BackendSessionsConfig,
    /// Largest HTTP backend reply (JSON body or one SSE event) in bytes; default 16 MiB.
    #[serde(default)]
    pub max_backend_reply_bytes: Option<usize>,
    /// Health probes, the circuit breaker and partial failure (see `failure_handling.rs`).
    #[serde(default)]
    pub failure_handling: FailureHandlingConfig,
}

/// `operational.timeouts`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// Default per-request backend timeout (30s).
    #[serde(default = "default_timeout", with = "duration")]
    pub default: Duration,
    /// Per-backend overrides (`perWorkload` in ToolHive configs).
    #[serde(default, with = "duration::map")]
    pub per_workload: BTreeMap<String, Duration>,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self { default: default_timeout(), per_workload: BTreeMap::new() }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// `server`: the client-facing HTTP listener.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerConfig {
    /// Extra `Host` header values accepted besides loopback ones (DNS-rebinding protection).
    /// `"*"` accepts any host.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Extra `Origin` values accepted besides loopback origins. `"*"` accepts any origin.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Largest accepted request body in bytes (default 4 MiB).
    #[serde(default)]
    pub max_request_body_bytes: Option<usize>,
    /// Items per page in `tools/list` and the other list results; 0 (the default) sends every
    /// item in one page.
    #[serde(default)]
    pub page_size: usize,
    /// Bounds on what clients can make the gateway hold (`config/limits.rs`).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Client connection bounds and shutdown deadlines.
    #[serde(default)]
    pub connections: ConnectionsConfig,
}

impl Config {
    /// The timeout for requests to `backend`: its own `timeout`, else `perWorkload`, else the default.
    pub fn backend_timeout(&self, backend: &BackendConfig) -> Duration {
        backend
            .timeout
            .or_else(|| self.operational.timeouts.per_workload.get(&backend.name).copied())
            .unwrap_or(self.operational.timeouts.default)
    }
}

pub mod audit;
pub mod auth;
pub mod authserver;
pub mod authz;
pub mod backend_sessions;
pub mod ca_bundle;
pub mod connections;
pub mod duration;
pub mod failure_handling;
pub mod limits;
pub mod rate_limit;
pub mod session_storage;
pub mod telemetry;

pub use audit::AuditConfig;
pub use auth::{
    BackendAuthConfig, BackendAuthKind, HeaderInjectionConfig, IncomingAuthConfig,
    IncomingAuthKind, OidcConfig, OutgoingAuthConfig, TokenExchangeConfig, UpstreamInjectConfig,
};
pub use authserver::AuthServerConfig;
pub use backend_sessions::BackendSessionsConfig;
pub use connections::ConnectionsConfig;
pub use failure_handling::{CircuitBreakerConfig, FailureHandlingConfig, PartialFailureMode};
mod aggregation_validate;
mod auth_validate;
mod load;
mod locate;
mod toolhive_compat;
mod validate;

pub use limits::LimitsConfig;
pub use load::{ConfigError, Problem, load, parse, parse_with_auth_server};
pub use rate_limit::RateLimitConfig;
pub use session_storage::SessionStorageConfig;
pub use telemetry::TelemetryConfig;
pub use toolhive_compat::debug_logging;
pub use validate::validate_warnings;
