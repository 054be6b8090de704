//! Shared storage for replicas: one Redis connection ([`Redis`]) and the Redis implementations
//! of the storage traits (`sessionStorage: {provider: redis}`):
//! rate-limit buckets ([`ratelimit::RedisRateLimitStore`]), the upstream token vault's sealed
//! entries and its refresh lease ([`tokens::RedisTokenStore`], [`tokens::RedisRefreshLease`]),
//! the authorization server's state ([`auth::RedisAuthStore`]), and Legacy session records
//! ([`sessions::RedisSessionStore`]) with the bus between replicas that carries their
//! notifications ([`bus::RedisBus`]).
//!
//! Connection: a redis-rs `ConnectionManager` (one multiplexed connection that reconnects by
//! itself), created without connecting, so vmcp starts while Redis is down and recovers when it
//! comes back without a restart. Every command has a deadline ([`DEFAULT_COMMAND_TIMEOUT`], 2 s,
//! connecting included): a Redis that is down or stuck fails the request that needed it with
//! [`StorageError::Unavailable`] within that time, and callers answer 503 (HTTP) or a JSON-RPC
//! error naming the storage; nothing waits longer.
//!
//! Key layout, every key under `keyPrefix` (default `thv:vmcp:session:`, ToolHive's). `<x>` is a
//! value with `%` and `:` percent-encoded ([`part`]), so no two values share a key:
//!
//! | key | type | what | expiry |
//! |---|---|---|---|
//! | `sess:<sha256>` | string | a Legacy session record (hash of the session id) | idle timeout |
//! | `rl:<sha256>` | hash `t`, `ts` | a token bucket (hash of bucket id and size) | when full again |
//! | `vault:<user>:<upstream>` | string | a sealed vault entry (AES-256-GCM) | its `useless_after` |
//! | `vault-idx:<user>` | set | the upstreams of a user's entries | the longest entry's |
//! | `vault-lease:<user>:<upstream>` | string | the refresh lease (random holder id) | lease TTL |
//! | `as:client:<id>` | string (JSON) | a registered OAuth client | its idle TTL |
//! | `as:pending:<state>` | string (sealed JSON) | a login at an upstream | its `expires_at` |
//! | `as:code:<sha256>` | string (JSON) | an authorization code, then its "used" marker | code / used TTL |
//! | `as:family:<id>` | string (JSON) | a refresh-token family | its `expires_at` |
//! | `as:token:<sha256>` | string | refresh-token hash to family id | its family's |
//! | `as:user:<upstream>:<subject>` | string | the vmcp user id of an upstream identity | idle TTL |
//! | `ev:<sha256>` | pub/sub channel | notifications for a Legacy session's GET stream | none |
//!
//! Invariants: the password is a [`Secret`] and appears in no `Debug`, log or error; no bearer
//! token of a client is stored (codes and refresh tokens only as SHA-256 hashes), upstream
//! tokens and the upstream PKCE verifier only sealed with the vault key; every key expires.

pub mod auth;
mod auth_codec;
mod auth_lua;
pub mod bus;
pub mod ratelimit;
pub mod sessions;
pub mod tokens;

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, IntoConnectionInfo as _, RedisConnectionInfo};

use crate::auth::identity::Secret;
use crate::config::SessionStorageConfig;

/// Default deadline of one Redis command, connecting included.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Default deadline of establishing one connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest error text kept from the Redis client (its messages carry no secret, only addresses).
const MAX_ERROR_TEXT: usize = 200;

/// Why shared storage failed. Never carries a password, token or stored value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// Redis could not be reached, did not answer in time, or refused the command.
    #[error("shared storage unavailable: {0}")]
    Unavailable(String),
    /// Configuration that can only be checked at start (an unreadable password file).
    #[error("sessionStorage.{key}: {reason}")]
    Config {
        /// The key.
        key: &'static str,
        /// Why (never the file's content).
        reason: String,
    },
}

/// How to reach Redis.
#[derive(Clone)]
pub struct RedisSettings {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database number.
    pub db: i64,
    /// Prefix of every key.
    pub key_prefix: String,
    /// `AUTH` password, if any.
    pub password: Option<Secret>,
    /// Deadline of one command ([`DEFAULT_COMMAND_TIMEOUT`]).
    pub command_timeout: Duration,
    /// Deadline of one connection attempt ([`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("key_prefix", &self.key_prefix)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl RedisSettings {
    /// Settings for `host:port` with the defaults (db 0, ToolHive's prefix, no password).
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            db: 0,
            key_prefix: crate::config::session_storage::DEFAULT_KEY_PREFIX.to_owned(),
            password: None,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// The settings of a validated `sessionStorage` block; reads the password now (from
    /// `passwordFile`, else the environment variable `THV_SESSION_REDIS_PASSWORD`).
    pub fn from_config(cfg: &SessionStorageConfig) -> Result<Self, StorageError> {
        let bad = |reason: &str| StorageError::Config { key: "address", reason: reason.into() };
        let (host, port) = cfg.address.rsplit_once(':').ok_or_else(|| bad("not host:port"))?;
        let port = port.parse::<u16>().map_err(|_| bad("bad port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let mut s = Self::new(host, port);
        s.db = cfg.db;
        s.key_prefix = cfg.key_prefix().to_owned();
        s.password = match &cfg.password_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| StorageError::Config {
                    key: "passwordFile",
                    reason: format!("cannot read {}: {}", path.display(), e.kind()),
                })?;
                Some(Secret::new(text.trim()))
            }
            None => std::env::var(crate::config::session_storage::PASSWORD_ENV)
                .ok()
                .filter(|p| !p.is_empty())
                .map(Secret::new),
        };
        Ok(s)
    }
}

/// The Redis handle `config` asks for: `None` with the memory provider.
pub fn from_config(config: &crate::config::Config) -> Result<Option<Redis>, StorageError> {
    match &config.session_storage {
        Some(s) if s.provider() == crate::config::session_storage::Provider::Redis => {
            let settings = RedisSettings::from_config(s)?;
            tracing::info!(
                host = %settings.host, port = settings.port, db = settings.db,
                key_prefix = %settings.key_prefix, password = settings.password.is_some(),
                "shared storage: redis"
            );
            Redis::new(&settings).map(Some)
        }
        _ => Ok(None),
    }
}

/// A handle on the shared Redis: cheap to clone (one multiplexed connection underneath).
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    /// For connections of their own (pub/sub subscriptions, `bus.rs`).
    client: redis::Client,
    prefix: String,
    timeout: Duration,
    connect_timeout: Duration,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl Redis {
    /// A handle for `settings`. Does not connect: the first command does, and a lost
    /// connection is re-established by the next command. Must run inside a Tokio runtime.
    pub fn new(settings: &RedisSettings) -> Result<Self, StorageError> {
        let mut redis = RedisConnectionInfo::default().set_db(settings.db);
        if let Some(p) = &settings.password {
            redis = redis.set_password(p.expose());
        }
        let info = ConnectionAddr::Tcp(settings.host.clone(), settings.port)
            .into_connection_info()
            .map_err(unavailable)?
            .set_redis_settings(redis);
        let client = redis::Client::open(info).map_err(unavailable)?;
        // Few, short reconnect attempts: a command waits on them, and its own deadline is short.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.command_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(unavailable)?;
        Ok(Self {
            conn,
            client,
            prefix: settings.key_prefix.clone(),
            timeout: settings.command_timeout,
            connect_timeout: settings.connect_timeout,
        })
    }

    /// The key `<prefix><kind>:<part>:<part>...`, each part encoded with [`part`].
    pub fn key(&self, kind: &str, parts: &[&str]) -> String {
        let mut k = String::with_capacity(self.prefix.len() + kind.len() + 16);
        k.push_str(&self.prefix);
        k.push_str(kind);
        for p in parts {
            k.push(':');
            k.push_str(&part(p));
        }
        k
    }

    /// Runs one command within the deadline.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, StorageError> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(timed_out(self.timeout)),
        }
    }

    /// Runs one script within the deadline (EVALSHA, loading it first when Redis lacks it).
    pub async fn eval<T: redis::FromRedisValue, A: redis::ToRedisArgs>(
        &self,
        script: &redis::Script,
        keys: &[String],
        args: &[A],
    ) -> Result<T, StorageError> {
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(k);
        }
        for a in args {
            inv.arg(a);
        }
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, inv.invoke_async::<T>(&mut conn)).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(timed_out(self.timeout)),
        }
    }
}

impl Redis {
    /// Runs one pipeline (`MULTI`/`EXEC` when atomic) within the deadline.
    pub async fn pipeline<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StorageError> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, pipe.query_async::<T>(&mut conn)).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(timed_out(self.timeout)),
        }
    }
}

/// `d` as a Redis `PX` expiry: whole milliseconds, at least 1 (Redis refuses 0).
pub fn px(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// `value` with `%` and `:` percent-encoded, so it cannot end one key part early.
pub fn part(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            c => out.push(c),
        }
    }
    out
}

fn unavailable(e: redis::RedisError) -> StorageError {
    let mut text = e.to_string();
    if text.len() > MAX_ERROR_TEXT {
        let mut cut = MAX_ERROR_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    StorageError::Unavailable(text)
}

fn timed_out(after: Duration) -> StorageError {
    StorageError::Unavailable(format!("no answer from Redis within {} ms", after.as_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_unambiguous() {
        assert_eq!(part("a:b%c"), "a%3Ab%25c");
        assert_ne!(part("a:b"), part("a%3Ab"));
    }

    #[test]
    fn password_never_in_debug() {
        let mut s = RedisSettings::new("h", 1);
        s.password = Some(Secret::new("hunter2"));
        let d = format!("{s:?}");
        assert!(!d.contains("hunter2") && d.contains("***"), "{d}");
    }

    #[test]
    fn from_config_reads_the_password_file() {
        let dir = std::env::temp_dir().join(format!("vmcp-redis-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        let cfg = SessionStorageConfig {
            provider: "redis".into(),
            address: "[::1]:6380".into(),
            db: 3,
            password_file: Some(f.clone()),
            ..Default::default()
        };
        let s = RedisSettings::from_config(&cfg).unwrap();
        assert_eq!((s.host.as_str(), s.port, s.db), ("::1", 6380, 3));
        assert_eq!(s.password.unwrap().expose(), "s3cret");
        std::fs::remove_file(&f).unwrap();
        let e = RedisSettings::from_config(&cfg).unwrap_err().to_string();
        assert!(e.starts_with("sessionStorage.passwordFile: cannot read"), "{e}");
    }
}
