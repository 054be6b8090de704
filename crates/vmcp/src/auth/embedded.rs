//! Assembly of the embedded authorization server from `authserver-config.yaml`: the upstream
//! providers, the upstream token vault and the server itself, with every secret (client
//! secrets, signing keys, the vault key) read here, once, at start.
//!
//! Invariant: this is the only place that turns ToolHive's configuration schema into the
//! runtime types of `auth::server` and `auth::upstream`; those modules never see the YAML.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::identity::Secret;
use super::server::memory::MemoryAuthStore;
use super::server::settings::{CimdSettings, Settings};
use super::server::{AuthServer, AuthStore, cimd_http_client};
use super::upstream::{
    FieldMapping, IdentityFromToken, MemoryTokenStore, ProviderKind, ProviderSettings,
    TokenResponseMapping, UpstreamTokens, Upstreams, UserInfo, UserInfoMethod, Vault, VaultKey,
    VaultOptions,
};
use crate::config::SessionStorageConfig;
use crate::config::authserver::{
    AuthServerConfig, SecretRef, UpstreamConfig, UpstreamKind, UserInfoConfig,
};
use crate::store::auth::RedisAuthStore;
use crate::store::tokens::{RedisRefreshLease, RedisTokenStore};

/// The running authorization server and the vault its logins fill.
pub struct Embedded {
    /// The server (routes, local token verification).
    pub server: Arc<AuthServer>,
    /// The vault, for stats.
    pub vault: Vault,
    /// The vault as outgoing strategies use it.
    pub tokens: Arc<dyn UpstreamTokens>,
    /// The issuer of vmcp's tokens: the users whose upstream tokens the vault holds.
    pub issuer: String,
    /// The upstream `token_exchange` uses when `subjectProviderName` is unset.
    pub default_provider: String,
}

/// Why the authorization server could not be assembled. Never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// A secret file could not be read.
    #[error("authserver-config.yaml: {key}: cannot read {path}: {source}")]
    File {
        /// The key naming the file.
        key: String,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// An environment variable named by the config is unset or empty.
    #[error("authserver-config.yaml: {key}: environment variable {var} is not set or empty")]
    Env {
        /// The key naming the variable.
        key: String,
        /// The variable.
        var: String,
    },
    /// The upstream providers are inconsistent.
    #[error("authserver-config.yaml: upstreams: {0}")]
    Upstreams(String),
    /// The server refused its settings or keys.
    #[error("authserver-config.yaml: {0}")]
    Server(String),
}

/// Builds the server, its providers and its vault, all in memory. Performs no network I/O.
pub fn build(cfg: &AuthServerConfig, http: reqwest::Client) -> Result<Embedded, EmbeddedError> {
    build_with_storage(cfg, http, None)
}

/// [`build`], with the vault (and its refresh lease) in shared storage when `shared` is given
/// (`sessionStorage: {provider: redis}`): then the vault key is one every replica has
/// (`sessionStorage.vaultKeyFile`, else derived from `hmac_secret_files`).
pub fn build_with_storage(
    cfg: &AuthServerConfig,
    http: reqwest::Client,
    shared: Option<(&crate::store::Redis, &SessionStorageConfig)>,
) -> Result<Embedded, EmbeddedError> {
    let providers =
        cfg.upstreams.iter().map(|u| provider(cfg, u)).collect::<Result<Vec<_>, _>>()?;
    let upstreams =
        Upstreams::new(providers, http).map_err(|e| EmbeddedError::Upstreams(e.to_string()))?;
    let vault = match shared {
        None => Vault::new(
            Arc::new(upstreams.clone()),
            Arc::new(MemoryTokenStore::default()),
            vault_key(cfg)?,
        ),
        Some((redis, storage)) => Vault::shared(
            Arc::new(upstreams.clone()),
            Arc::new(RedisTokenStore::new(redis.clone())),
            Arc::new(RedisRefreshLease::new(redis.clone())),
            shared_vault_key(cfg, storage)?,
            VaultOptions::default(),
        ),
    };
    let tokens: Arc<dyn UpstreamTokens> = Arc::new(vault.clone());
    let settings = settings(cfg)?;
    let store: Arc<dyn AuthStore> = match shared {
        None => Arc::new(MemoryAuthStore::new(&settings.bounds)),
        Some((redis, storage)) => Arc::new(RedisAuthStore::new(
            redis.clone(),
            &settings.bounds,
            shared_vault_key(cfg, storage)?,
        )),
    };
    let server =
        AuthServer::new(settings, Arc::new(upstreams), tokens.clone(), store, cimd_http_client())
            .map_err(|e| EmbeddedError::Server(e.to_string()))?;
    Ok(Embedded {
        server,
        vault,
        tokens,
        issuer: cfg.issuer.clone(),
        default_provider: cfg.default_subject_provider().to_owned(),
    })
}

fn settings(cfg: &AuthServerConfig) -> Result<Settings, EmbeddedError> {
    let mut s = Settings::new(cfg.issuer.clone());
    s.authorization_endpoint_base_url = cfg.authorization_endpoint_base_url.clone();
    if let Some((current, fallbacks)) = cfg.signing_key_paths() {
        let key = "signing_key_config.signing_key_file";
        s.signing_key = Some(read_secret(key, &current, false)?);
        s.fallback_signing_keys = fallbacks
            .iter()
            .map(|p| read_secret("signing_key_config.fallback_key_files", p, false))
            .collect::<Result<_, _>>()?;
    }
    s.access_token_lifespan = cfg.access_token_lifespan();
    s.refresh_token_lifespan = cfg.refresh_token_lifespan();
    s.auth_code_lifespan = cfg.auth_code_lifespan();
    s.scopes_supported = cfg.scopes_supported().into_iter().map(str::to_owned).collect();
    s.baseline_client_scopes = cfg.baseline_client_scopes.clone();
    s.allowed_audiences = cfg.allowed_audiences.clone();
    if let Some(c) = &cfg.cimd {
        let defaults = CimdSettings::default();
        s.cimd = CimdSettings {
            enabled: c.enabled,
            cache_max_size: if c.cache_max_size == 0 {
                defaults.cache_max_size
            } else {
                c.cache_max_size as u64
            },
            cache_fallback_ttl: c.cache_fallback_ttl.unwrap_or(defaults.cache_fallback_ttl),
        };
    }
    s.insecure_allow_http = cfg.insecure_allow_http;
    let default_callback = format!("{}/oauth/callback", cfg.issuer.trim_end_matches('/'));
    for u in &cfg.upstreams {
        let uri = cfg.redirect_uri(u);
        if uri != default_callback {
            s.upstream_callback_urls.insert(u.resolved_name().to_owned(), uri);
        }
    }
    Ok(s)
}

fn provider(cfg: &AuthServerConfig, u: &UpstreamConfig) -> Result<ProviderSettings, EmbeddedError> {
    let name = u.resolved_name().to_owned();
    let at = |key: &str| format!("upstreams[{name}].{key}");
    let client_secret = match u.client_secret() {
        None => None,
        Some(SecretRef::File(p)) => Some(read_secret(&at("client_secret_file"), p, true)?),
        Some(SecretRef::Env(var)) => match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Some(Secret::new(v.trim())),
            _ => {
                return Err(EmbeddedError::Env {
                    key: at("client_secret_env_var"),
                    var: var.to_owned(),
                });
            }
        },
    };
    let (kind, extra) = match (u.kind, &u.oidc_config, &u.oauth2_config) {
        (UpstreamKind::Oidc, Some(o), _) => (
            ProviderKind::Oidc {
                issuer_url: o.issuer_url.clone(),
                subject_claim: o.subject_claim.clone(),
                userinfo: o.userinfo_override.as_ref().map(userinfo).transpose()?,
            },
            o.additional_authorization_params.clone(),
        ),
        (UpstreamKind::OAuth2, _, Some(o)) => (
            ProviderKind::OAuth2 {
                authorization_endpoint: o.authorization_endpoint.clone(),
                token_endpoint: o.token_endpoint.clone(),
                userinfo: o.userinfo.as_ref().map(userinfo).transpose()?,
                token_response_mapping: o.token_response_mapping.as_ref().map(|m| {
                    TokenResponseMapping {
                        access_token_path: m.access_token_path.clone(),
                        scope_path: m.scope_path.clone(),
                        refresh_token_path: m.refresh_token_path.clone(),
                        expires_in_path: m.expires_in_path.clone(),
                    }
                }),
                identity_from_token: o.identity_from_token.as_ref().map(|i| IdentityFromToken {
                    subject_path: i.subject_path.clone(),
                    name_path: i.name_path.clone(),
                    email_path: i.email_path.clone(),
                }),
            },
            o.additional_authorization_params.clone(),
        ),
        // Validation guarantees the block that matches the type.
        _ => return Err(EmbeddedError::Upstreams(format!("{name}: no config for its type"))),
    };
    Ok(ProviderSettings {
        name: name.clone(),
        kind,
        client_id: u.client_id().unwrap_or_default().to_owned(),
        client_secret,
        redirect_uri: Some(cfg.redirect_uri(u)),
        scopes: u.scopes().into_iter().map(str::to_owned).collect(),
        additional_authorization_params: extra,
        client_auth: None,
        insecure_allow_http: u.insecure_allow_http(cfg.insecure_allow_http),
    })
}

fn userinfo(c: &UserInfoConfig) -> Result<UserInfo, EmbeddedError> {
    let http_method = match c.http_method.as_deref() {
        None => UserInfoMethod::default(),
        Some(m) => m.parse().map_err(|_| {
            EmbeddedError::Upstreams(format!("userinfo http_method {m:?} is not GET or POST"))
        })?,
    };
    Ok(UserInfo {
        endpoint_url: c.endpoint_url.clone(),
        http_method,
        additional_headers: c.additional_headers.clone(),
        field_mapping: c
            .field_mapping
            .as_ref()
            .map(|m| FieldMapping {
                subject_fields: m.subject_fields.clone(),
                name_fields: m.name_fields.clone(),
                email_fields: m.email_fields.clone(),
            })
            .unwrap_or_default(),
    })
}

/// The vault's AES-256 key: derived from the first HMAC secret file when one is configured (so
/// a store that outlives the process stays readable across restarts and replicas), else random
/// (the in-memory store dies with the process anyway).
fn vault_key(cfg: &AuthServerConfig) -> Result<VaultKey, EmbeddedError> {
    let key = match cfg.hmac_secret_paths() {
        Some((first, _)) => {
            let secret = std::fs::read(first).map_err(|source| EmbeddedError::File {
                key: "hmac_secret_files".into(),
                path: first.display().to_string(),
                source,
            })?;
            // Domain-separated, so the vault key is not the HMAC key itself.
            let mut h = Sha256::new();
            h.update(b"vmcp upstream token vault v1\0");
            h.update(&secret);
            VaultKey::from_bytes(&h.finalize())
        }
        None => VaultKey::generate(),
    };
    key.map_err(|e| EmbeddedError::Server(format!("vault key: {e}")))
}

/// The vault key of replicas sharing a store: `sessionStorage.vaultKeyFile`, else the one
/// derived from `hmac_secret_files`; never a random one (validation refuses that config).
fn shared_vault_key(
    cfg: &AuthServerConfig,
    storage: &SessionStorageConfig,
) -> Result<VaultKey, EmbeddedError> {
    match &storage.vault_key_file {
        Some(path) => VaultKey::from_file(path)
            .map_err(|e| EmbeddedError::Server(format!("sessionStorage.vaultKeyFile: {e}"))),
        None if cfg.hmac_secret_paths().is_some() => vault_key(cfg),
        None => Err(EmbeddedError::Server(
            "sessionStorage.vaultKeyFile: required with provider redis (or hmac_secret_files)"
                .into(),
        )),
    }
}

fn read_secret(key: &str, path: &Path, trim: bool) -> Result<Secret, EmbeddedError> {
    let text = std::fs::read_to_string(path).map_err(|source| EmbeddedError::File {
        key: key.to_owned(),
        path: path.display().to_string(),
        source,
    })?;
    Ok(Secret::new(if trim { text.trim().to_owned() } else { text }))
}
