//! `authserver-config.yaml`: the embedded OAuth 2.1 authorization server, in the snake_case schema
//! of ToolHive's `authserver.RunConfig`, read from the directory of the main config file.
//!
//! A ToolHive file works here unchanged and means the same: every key ToolHive reads is accepted
//! with ToolHive's defaults, `null` and `""` mean "not set" as they do for Go's zero values, and
//! durations are Go duration strings. Unlike ToolHive, unknown keys are errors, and keys for
//! features vmcp does not have yet ([`UNSUPPORTED`]) are accepted only while empty: a security
//! setting is never silently ignored.
//!
//! Invariant: these structs hold no secret. Client secrets, HMAC secrets and signing keys are
//! referenced by file path or environment variable name and read by whoever builds the runtime
//! server; validation reads the files only to check them, and keeps nothing.

pub(crate) mod cross;
mod de;
mod delegation;
mod storage;
mod upstream;
pub(crate) mod validate;
mod validate_upstream;
mod warnings;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use delegation::{DelegateClient, JwtBearerGrant, JwtBearerSubjectBinding, TrustedIssuer};
pub use storage::{
    RedisAclUserConfig, RedisConfig, RedisSentinelConfig, RedisTlsConfig, StorageConfig,
    StorageKind,
};
pub use upstream::{
    DcrConfig, IdentityFromToken, OAuth2Upstream, OidcUpstream, SecretRef, TokenResponseMapping,
    UpstreamConfig, UpstreamKind, UserInfoConfig, UserInfoFieldMapping,
};
pub(crate) use warnings::warnings;

/// The file name, looked up beside the main config file (as ToolHive's vMCP does).
pub const FILE_NAME: &str = "authserver-config.yaml";

/// The schema version ToolHive writes (`schema_version`); any value is accepted, as in ToolHive.
pub const SCHEMA_VERSION: &str = "v0.1.0";

/// The name a single unnamed upstream gets (ToolHive's `DefaultUpstreamName`).
pub const DEFAULT_UPSTREAM_NAME: &str = "default";

/// Default access token lifespan.
pub const DEFAULT_ACCESS_TOKEN_LIFESPAN: Duration = Duration::from_secs(3600);
/// Shortest accepted access token lifespan.
pub const MIN_ACCESS_TOKEN_LIFESPAN: Duration = Duration::from_secs(60);
/// Longest accepted access token lifespan.
pub const MAX_ACCESS_TOKEN_LIFESPAN: Duration = Duration::from_secs(24 * 3600);
/// Default refresh token lifespan (7 days).
pub const DEFAULT_REFRESH_TOKEN_LIFESPAN: Duration = Duration::from_secs(7 * 24 * 3600);
/// Shortest accepted refresh token lifespan.
pub const MIN_REFRESH_TOKEN_LIFESPAN: Duration = Duration::from_secs(3600);
/// Longest accepted refresh token lifespan (30 days).
pub const MAX_REFRESH_TOKEN_LIFESPAN: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default authorization code lifespan.
pub const DEFAULT_AUTH_CODE_LIFESPAN: Duration = Duration::from_secs(600);
/// Shortest accepted authorization code lifespan.
pub const MIN_AUTH_CODE_LIFESPAN: Duration = Duration::from_secs(30);
/// Longest accepted authorization code lifespan (RFC 6749 recommends at most 10 minutes).
pub const MAX_AUTH_CODE_LIFESPAN: Duration = Duration::from_secs(600);

/// Smallest HMAC secret, in bytes (each of `hmac_secret_files`).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// `scopes_supported` when the file leaves it empty.
pub const DEFAULT_SCOPES_SUPPORTED: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// Default `cimd.cache_max_size`.
pub const DEFAULT_CIMD_CACHE_MAX_SIZE: usize = 256;
/// Default `cimd.cache_fallback_ttl`.
pub const DEFAULT_CIMD_CACHE_FALLBACK_TTL: Duration = Duration::from_secs(300);

/// ToolHive keys vmcp accepts only while empty (absent, `null`, `""`, `false`, `[]`), with what
/// each would enable. Setting one is a validation error ("not supported by vmcp yet (WHAT); remove
/// it") rather than a silently ignored setting; implementing a feature means deleting its entry
/// and its check in `validate.rs`. `storage.type: redis` is refused likewise.
pub const UNSUPPORTED: [(&str, &str); 6] = [
    ("delegation_token_lifespan", "RFC 8693 delegation tokens"),
    ("trusted_issuers", "external issuers for RFC 8693 and RFC 7523 grants"),
    ("delegate_clients", "pre-registered RFC 8693 delegate clients"),
    (
        "allow_confidential_client_registration",
        "registration of confidential clients; vmcp registers public clients with PKCE",
    ),
    ("force_confidential_redirect_uris", "registration of confidential clients"),
    ("dcr_config", "dynamic client registration at the upstream"),
];

/// The whole `authserver-config.yaml` (ToolHive `authserver.RunConfig`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthServerConfig {
    /// ToolHive's schema version (`v0.1.0`); informational.
    #[serde(default, deserialize_with = "de::nullable")]
    pub schema_version: String,
    /// This server's issuer identifier: the `iss` of its tokens and the base of its endpoints.
    /// Required; an `https` URL (`http` for a loopback host or with `insecure_allow_http`) with no
    /// query, fragment, credentials or trailing slash.
    #[serde(default, deserialize_with = "de::nullable")]
    pub issuer: String,
    /// Base URL advertised for the authorization endpoint instead of the issuer (the route
    /// itself stays under the issuer).
    #[serde(default, deserialize_with = "de::opt_string")]
    pub authorization_endpoint_base_url: Option<String>,
    /// Where the JWT signing keys are; absent: an ephemeral key is generated at start.
    #[serde(default)]
    pub signing_key_config: Option<SigningKeyConfig>,
    /// Files holding the HMAC secrets for authorization codes and refresh tokens: the first
    /// signs, the others still verify (rotation). Each at least [`MIN_HMAC_SECRET_BYTES`] bytes,
    /// used as they are (not trimmed). Empty: an ephemeral secret is generated at start.
    #[serde(default, deserialize_with = "de::nullable")]
    pub hmac_secret_files: Vec<PathBuf>,
    /// Token lifetimes; absent: the defaults.
    #[serde(default)]
    pub token_lifespans: Option<TokenLifespans>,
    /// Not supported yet (see [`UNSUPPORTED`]).
    #[serde(default, deserialize_with = "de::opt_duration")]
    pub delegation_token_lifespan: Option<Duration>,
    /// The upstream identity providers users sign in with; at least one.
    #[serde(default, deserialize_with = "de::nullable")]
    pub upstreams: Vec<UpstreamConfig>,
    /// Scopes advertised in discovery; empty: [`DEFAULT_SCOPES_SUPPORTED`].
    #[serde(default, deserialize_with = "de::nullable")]
    pub scopes_supported: Vec<String>,
    /// Scopes added to every dynamically registered client; each must be supported.
    #[serde(default, deserialize_with = "de::nullable")]
    pub baseline_client_scopes: Vec<String>,
    /// Resource URIs (RFC 8707) tokens may be issued for; at least one. A token's `aud` is the
    /// `resource` the client asked for, which must be one of these.
    #[serde(default, deserialize_with = "de::nullable")]
    pub allowed_audiences: Vec<String>,
    /// Where the server keeps its state; absent: memory.
    #[serde(default)]
    pub storage: Option<StorageConfig>,
    /// ToolHive's proxy runner strips client credentials instead of injecting upstream tokens
    /// when set; its vMCP, like vmcp, does not read it (upstream tokens reach a backend only
    /// through `outgoingAuth` type `upstream_inject`). Accepted; a warning when set.
    #[serde(default, deserialize_with = "de::nullable")]
    pub disable_upstream_token_injection: bool,
    /// Client ID metadata documents; `enabled: true` is not supported yet.
    #[serde(default)]
    pub cimd: Option<CimdConfig>,
    /// Accept `http://` URLs for non-loopback hosts (issuer and every upstream URL). For trusted
    /// in-cluster networks only.
    #[serde(default, deserialize_with = "de::nullable")]
    pub insecure_allow_http: bool,
    /// Not supported yet (see [`UNSUPPORTED`]).
    #[serde(default, deserialize_with = "de::nullable")]
    pub trusted_issuers: Vec<TrustedIssuer>,
    /// Not supported yet (see [`UNSUPPORTED`]).
    #[serde(default, deserialize_with = "de::nullable")]
    pub allow_confidential_client_registration: bool,
    /// Not supported yet (see [`UNSUPPORTED`]).
    #[serde(default, deserialize_with = "de::nullable")]
    pub force_confidential_redirect_uris: Vec<String>,
    /// Allow confidential clients with a plain-HTTP loopback issuer. Without confidential clients
    /// (which vmcp does not register yet) it has no effect, as in ToolHive.
    #[serde(default, deserialize_with = "de::nullable")]
    pub insecure_allow_confidential_over_loopback_http: bool,
    /// Not supported yet (see [`UNSUPPORTED`]).
    #[serde(default, deserialize_with = "de::nullable")]
    pub delegate_clients: Vec<DelegateClient>,
}

/// `signing_key_config`: PEM private keys (RSA, ECDSA or Ed25519) on disk.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeyConfig {
    /// Directory the key file names are relative to; empty: the working directory.
    #[serde(default, deserialize_with = "de::opt_path")]
    pub key_dir: Option<PathBuf>,
    /// The key that signs new tokens. Without it an ephemeral key is generated, so it is required
    /// whenever `key_dir` or `fallback_key_files` is given.
    #[serde(default, deserialize_with = "de::opt_path")]
    pub signing_key_file: Option<PathBuf>,
    /// Older keys still published in the JWKS (rotation); never used to sign.
    #[serde(default, deserialize_with = "de::nullable")]
    pub fallback_key_files: Vec<PathBuf>,
}

impl SigningKeyConfig {
    /// `file` resolved against `key_dir`.
    pub fn path(&self, file: &std::path::Path) -> PathBuf {
        match &self.key_dir {
            Some(dir) => dir.join(file),
            None => file.to_owned(),
        }
    }

    /// The signing key's path, if one is configured.
    pub fn signing_key_path(&self) -> Option<PathBuf> {
        self.signing_key_file.as_deref().map(|f| self.path(f))
    }

    /// The fallback keys' paths, in order.
    pub fn fallback_key_paths(&self) -> Vec<PathBuf> {
        self.fallback_key_files.iter().map(|f| self.path(f)).collect()
    }
}

/// `token_lifespans`; each unset (or zero, as in ToolHive) value takes its default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenLifespans {
    /// Access tokens: default 1h, from 1m to 24h.
    #[serde(default, deserialize_with = "de::opt_duration")]
    pub access_token_lifespan: Option<Duration>,
    /// Refresh tokens: default 168h (7 days), from 1h to 720h (30 days).
    #[serde(default, deserialize_with = "de::opt_duration")]
    pub refresh_token_lifespan: Option<Duration>,
    /// Authorization codes: default 10m, from 30s to 10m.
    #[serde(default, deserialize_with = "de::opt_duration")]
    pub auth_code_lifespan: Option<Duration>,
}

/// `cimd`: client ID metadata documents (HTTPS URLs as client IDs).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CimdConfig {
    /// Accept (and advertise) https URLs as client IDs. Default off, as in ToolHive.
    #[serde(default, deserialize_with = "de::nullable")]
    pub enabled: bool,
    /// Documents cached; 0: [`DEFAULT_CIMD_CACHE_MAX_SIZE`].
    #[serde(default, deserialize_with = "de::nullable")]
    pub cache_max_size: usize,
    /// How long a document is cached; unset: [`DEFAULT_CIMD_CACHE_FALLBACK_TTL`].
    #[serde(default, deserialize_with = "de::opt_duration")]
    pub cache_fallback_ttl: Option<Duration>,
}

impl AuthServerConfig {
    /// Upstream names as they are resolved (a single unnamed upstream is
    /// [`DEFAULT_UPSTREAM_NAME`]), in file order: the names `providerName` and
    /// `subjectProviderName` refer to.
    pub fn upstream_names(&self) -> Vec<&str> {
        self.upstreams.iter().map(UpstreamConfig::resolved_name).collect()
    }

    /// The upstream `name` refers to; an empty `name` means [`DEFAULT_UPSTREAM_NAME`].
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        let name = if name.is_empty() { DEFAULT_UPSTREAM_NAME } else { name };
        self.upstreams.iter().find(|u| u.resolved_name() == name)
    }

    /// The upstream whose token `token_exchange` uses when `subjectProviderName` is unset: the
    /// first one (ToolHive's `ResolveFirstUpstreamName`).
    pub fn default_subject_provider(&self) -> &str {
        self.upstreams.first().map_or(DEFAULT_UPSTREAM_NAME, UpstreamConfig::resolved_name)
    }

    /// Where upstream IdPs send users back to: the upstream's `redirect_uri`, else
    /// `{issuer}/oauth/callback`.
    pub fn redirect_uri(&self, upstream: &UpstreamConfig) -> String {
        match upstream.redirect_uri() {
            Some(uri) => uri.to_owned(),
            None => format!("{}/oauth/callback", self.issuer.trim_end_matches('/')),
        }
    }

    /// `token_lifespans.access_token_lifespan` or its default.
    pub fn access_token_lifespan(&self) -> Duration {
        self.lifespan(|l| l.access_token_lifespan).unwrap_or(DEFAULT_ACCESS_TOKEN_LIFESPAN)
    }

    /// `token_lifespans.refresh_token_lifespan` or its default.
    pub fn refresh_token_lifespan(&self) -> Duration {
        self.lifespan(|l| l.refresh_token_lifespan).unwrap_or(DEFAULT_REFRESH_TOKEN_LIFESPAN)
    }

    /// `token_lifespans.auth_code_lifespan` or its default.
    pub fn auth_code_lifespan(&self) -> Duration {
        self.lifespan(|l| l.auth_code_lifespan).unwrap_or(DEFAULT_AUTH_CODE_LIFESPAN)
    }

    /// A set, non-zero lifespan (zero means the default, as in ToolHive).
    fn lifespan(&self, get: impl Fn(&TokenLifespans) -> Option<Duration>) -> Option<Duration> {
        self.token_lifespans.as_ref().and_then(get).filter(|d| !d.is_zero())
    }

    /// `scopes_supported`, or [`DEFAULT_SCOPES_SUPPORTED`] when empty.
    pub fn scopes_supported(&self) -> Vec<&str> {
        if self.scopes_supported.is_empty() {
            DEFAULT_SCOPES_SUPPORTED.to_vec()
        } else {
            self.scopes_supported.iter().map(String::as_str).collect()
        }
    }

    /// The storage kind (memory unless `storage.type` says otherwise).
    pub fn storage_kind(&self) -> StorageKind {
        self.storage.as_ref().map(|s| s.kind).unwrap_or_default()
    }

    /// The signing key file and the fallback key files, resolved against `key_dir`; `None`:
    /// generate an ephemeral key.
    pub fn signing_key_paths(&self) -> Option<(PathBuf, Vec<PathBuf>)> {
        let cfg = self.signing_key_config.as_ref()?;
        Some((cfg.signing_key_path()?, cfg.fallback_key_paths()))
    }

    /// The HMAC secret files: the current one, then the rotated ones (empty paths skipped, as
    /// ToolHive does). `None`: generate an ephemeral secret.
    pub fn hmac_secret_paths(&self) -> Option<(&std::path::Path, Vec<&std::path::Path>)> {
        let (first, rest) = self.hmac_secret_files.split_first()?;
        let rotated =
            rest.iter().map(PathBuf::as_path).filter(|p| !p.as_os_str().is_empty()).collect();
        Some((first.as_path(), rotated))
    }
}
