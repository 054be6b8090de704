//! `storage`: where the authorization server keeps its state (ToolHive `storage.RunConfig`).
//! Only `memory` is supported; Redis settings are parsed so ToolHive files load, and refused.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::de;

/// `storage`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `memory` (the default, also for `""`) or `redis` (not supported yet).
    #[serde(default, rename = "type", deserialize_with = "de::nullable")]
    pub kind: StorageKind,
    /// For `redis`; read so ToolHive files parse, unused until Redis storage exists.
    #[serde(default)]
    pub redis_config: Option<RedisConfig>,
}

/// `storage.type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// In-process storage: state is lost at restart and not shared between replicas.
    #[default]
    #[serde(alias = "")]
    Memory,
    /// Redis (not supported yet).
    Redis,
}

/// `storage.redis_config` (ToolHive `storage.RedisRunConfig`). Parsed only; credentials are
/// environment variable names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `host:port` (standalone or cluster).
    #[serde(default, deserialize_with = "de::nullable")]
    pub addr: String,
    /// Redis Cluster protocol.
    #[serde(default, deserialize_with = "de::nullable")]
    pub cluster_mode: bool,
    /// Sentinel instead of `addr`.
    #[serde(default)]
    pub sentinel_config: Option<RedisSentinelConfig>,
    /// `aclUser`.
    #[serde(default, deserialize_with = "de::nullable")]
    pub auth_type: String,
    /// ACL credentials (environment variable names).
    #[serde(default)]
    pub acl_user_config: Option<RedisAclUserConfig>,
    /// Prefix of every key.
    #[serde(default, deserialize_with = "de::nullable")]
    pub key_prefix: String,
    /// Connect timeout.
    #[serde(default, deserialize_with = "de::opt_duration")]
    pub dial_timeout: Option<Duration>,
    /// Read timeout.
    #[serde(default, deserialize_with = "de::opt_duration")]
    pub read_timeout: Option<Duration>,
    /// Write timeout.
    #[serde(default, deserialize_with = "de::opt_duration")]
    pub write_timeout: Option<Duration>,
    /// TLS to the servers.
    #[serde(default)]
    pub tls: Option<RedisTlsConfig>,
    /// TLS to the sentinels.
    #[serde(default)]
    pub sentinel_tls: Option<RedisTlsConfig>,
}

/// `storage.redis_config.sentinel_config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSentinelConfig {
    /// Sentinel master name.
    #[serde(default, deserialize_with = "de::nullable")]
    pub master_name: String,
    /// Sentinel addresses.
    #[serde(default, deserialize_with = "de::nullable")]
    pub sentinel_addrs: Vec<String>,
    /// Database number.
    #[serde(default, deserialize_with = "de::nullable")]
    pub db: i64,
}

/// `storage.redis_config.tls` and `sentinel_tls`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisTlsConfig {
    /// Skip certificate verification.
    #[serde(default, deserialize_with = "de::nullable")]
    pub insecure_skip_verify: bool,
    /// CA certificate (PEM).
    #[serde(default, deserialize_with = "de::opt_path")]
    pub ca_cert_file: Option<PathBuf>,
}

/// `storage.redis_config.acl_user_config`: environment variable names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisAclUserConfig {
    /// Variable holding the user name.
    #[serde(default, deserialize_with = "de::nullable")]
    pub username_env_var: String,
    /// Variable holding the password.
    #[serde(default, deserialize_with = "de::nullable")]
    pub password_env_var: String,
}
