//! `sessionStorage`: where state that replicas share lives (see `crate::store`).
//!
//! ToolHive's keys (`pkg/vmcp/config` `SessionStorageConfig`): `provider` (`memory`, the default,
//! or `redis`), `address` (`host:port`, required with `redis`), `db` (default 0) and `keyPrefix`
//! (default [`DEFAULT_KEY_PREFIX`], ToolHive's). As in ToolHive the password is not in the file:
//! it is read at start from the environment variable [`PASSWORD_ENV`]. vmcp additions:
//! `passwordFile` (a file holding the password, for a mounted secret; it wins over the variable)
//! and `vaultKeyFile` (the AES-256 key every replica seals upstream tokens with, see
//! [`SessionStorageConfig::vault_key_file`]).
//!
//! Invariant: a config that leaves `load` with `provider: redis` has an address that parses as
//! `host:port` and a `db` in range; with the embedded authorization server it also names a vault
//! key every replica shares (`vaultKeyFile`, or `hmac_secret_files` in `authserver-config.yaml`,
//! from which the key is derived) and signing keys every replica shares. Secrets are never read
//! here: files are read at start by whoever needs them.

use std::path::PathBuf;

use serde::Deserialize;

use super::Config;
use super::validate::Finding;

/// ToolHive's default key prefix (`pkg/vmcp/server` `buildSessionDataStorage`).
pub const DEFAULT_KEY_PREFIX: &str = "thv:vmcp:session:";
/// The environment variable holding the Redis password (ToolHive's name).
pub const PASSWORD_ENV: &str = "THV_SESSION_REDIS_PASSWORD";
/// Largest `db` accepted (Redis's `databases` setting can go this high).
pub const MAX_DB: i64 = i32::MAX as i64;
/// Longest `keyPrefix` accepted: every key carries it.
pub const MAX_KEY_PREFIX: usize = 256;

/// `sessionStorage.provider`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Provider {
    /// In this process only (the default).
    #[default]
    Memory,
    /// A Redis server shared by every replica.
    Redis,
}

/// `sessionStorage`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionStorageConfig {
    /// `memory` (or empty) or `redis`. Kept as written so that a wrong value is reported with
    /// its line instead of as a schema error.
    #[serde(default)]
    pub provider: String,
    /// `host:port` of the Redis server.
    #[serde(default)]
    pub address: String,
    /// Redis database number.
    #[serde(default)]
    pub db: i64,
    /// Prefix of every key vmcp writes; empty means [`DEFAULT_KEY_PREFIX`].
    #[serde(default)]
    pub key_prefix: String,
    /// vmcp addition: a file holding the Redis password (trimmed). Without it the password is
    /// [`PASSWORD_ENV`] when set, else none.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// vmcp addition: a file holding the upstream token vault's AES-256 key (32 raw bytes, 64
    /// hex digits or base64). With `redis` and the embedded authorization server every replica
    /// must open what another sealed: this, or a key derived from `hmac_secret_files`.
    #[serde(default)]
    pub vault_key_file: Option<PathBuf>,
}

impl SessionStorageConfig {
    /// The provider (`memory` when the value is unknown: validation refuses those).
    pub fn provider(&self) -> Provider {
        if self.provider == "redis" { Provider::Redis } else { Provider::Memory }
    }

    /// The key prefix in force.
    pub fn key_prefix(&self) -> &str {
        if self.key_prefix.is_empty() { DEFAULT_KEY_PREFIX } else { &self.key_prefix }
    }
}

impl Config {
    /// The storage provider in force (`memory` without a `sessionStorage` block).
    pub fn storage_provider(&self) -> Provider {
        self.session_storage.as_ref().map(SessionStorageConfig::provider).unwrap_or_default()
    }
}

/// Whether `address` is `host:port` with a non-empty host and a port in 1..=65535.
fn address_problem(address: &str) -> Option<&'static str> {
    let Some((host, port)) = address.rsplit_once(':') else {
        return Some("must be host:port (e.g. redis:6379)");
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains('/') {
        return Some("must be host:port (e.g. redis:6379), without a scheme");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => None,
        _ => Some("the port must be a number between 1 and 65535"),
    }
}

/// Checks the block, and what `redis` needs of `authserver-config.yaml`.
pub(crate) fn check(cfg: &Config) -> Vec<Finding> {
    const P: &str = "sessionStorage";
    let mut out = Vec::new();
    let Some(s) = &cfg.session_storage else { return out };
    let mut report = |key: &str, message: String| {
        let path = if key.is_empty() { P.to_owned() } else { format!("{P}.{key}") };
        out.push(Finding { path, message });
    };
    match s.provider.as_str() {
        "redis" => {}
        p if p.is_empty() || p.eq_ignore_ascii_case("memory") => {
            for (set, key) in [
                (!s.address.is_empty(), "address"),
                (s.password_file.is_some(), "passwordFile"),
                (s.vault_key_file.is_some(), "vaultKeyFile"),
            ] {
                if set {
                    report(key, "only used with provider \"redis\"".into());
                }
            }
            return out;
        }
        p => {
            report("provider", format!("unknown provider {p:?}; supported: \"memory\", \"redis\""));
            return out;
        }
    }
    if s.address.is_empty() {
        report("address", "required with provider \"redis\" (host:port)".into());
    } else if let Some(m) = address_problem(&s.address) {
        report("address", m.into());
    }
    if !(0..=MAX_DB).contains(&s.db) {
        report("db", format!("must be between 0 and {MAX_DB}"));
    }
    if s.key_prefix.len() > MAX_KEY_PREFIX {
        report("keyPrefix", format!("at most {MAX_KEY_PREFIX} bytes"));
    }
    if let Some(auth) = &cfg.auth_server {
        if s.vault_key_file.is_none() && auth.hmac_secret_paths().is_none() {
            report(
                "vaultKeyFile",
                "required with provider \"redis\" and the embedded authorization server: every \
                 replica must decrypt the upstream tokens another stored (or set \
                 hmac_secret_files in authserver-config.yaml, from which the key is derived)"
                    .into(),
            );
        }
        if auth.signing_key_paths().is_none() {
            report(
                "provider",
                "with \"redis\" and the embedded authorization server, \
                 authserver-config.yaml needs signing_key_config: a key generated per process \
                 signs tokens no other replica accepts"
                    .into(),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::tests::problems;

    const HEAD: &str = "name: gw\nbackends: []\n";

    fn parse(text: &str) -> Config {
        crate::config::parse(&format!("{HEAD}{text}"), "t.yaml").unwrap()
    }

    #[test]
    fn absent_memory_and_redis() {
        assert_eq!(parse("").storage_provider(), Provider::Memory);
        assert_eq!(
            parse("sessionStorage: {provider: memory}\n").storage_provider(),
            Provider::Memory
        );
        let c = parse("sessionStorage:\n  provider: redis\n  address: redis:6379\n  db: 2\n");
        assert_eq!(c.storage_provider(), Provider::Redis);
        let s = c.session_storage.unwrap();
        assert_eq!(
            (s.address.as_str(), s.db, s.key_prefix()),
            ("redis:6379", 2, DEFAULT_KEY_PREFIX)
        );
        let c = parse(
            "sessionStorage: {provider: redis, address: '[::1]:7000', keyPrefix: 'a:', \
             passwordFile: /run/pw}\n",
        );
        let s = c.session_storage.unwrap();
        assert_eq!(
            (s.key_prefix(), s.password_file.clone().unwrap()),
            ("a:", PathBuf::from("/run/pw"))
        );
    }

    #[test]
    fn errors_name_key_and_line() {
        let ps = problems(&format!("{HEAD}sessionStorage:\n  provider: valkey\n"));
        assert_eq!(ps.len(), 1, "{ps:?}");
        assert_eq!((ps[0].0, ps[0].1.as_str()), (Some(4), "sessionStorage.provider"));
        assert!(ps[0].2.starts_with("unknown provider \"valkey\""), "{}", ps[0].2);

        let ps = problems(&format!("{HEAD}sessionStorage:\n  provider: redis\n  db: -1\n"));
        let got: Vec<_> = ps.iter().map(|p| (p.0, p.1.as_str())).collect();
        assert_eq!(got, [(Some(3), "sessionStorage.address"), (Some(5), "sessionStorage.db")]);

        for (addr, msg) in [
            ("redis", "must be host:port"),
            ("redis://h:6379", "without a scheme"),
            ("h:0", "the port must be"),
            ("h:x", "the port must be"),
            (":6379", "must be host:port"),
        ] {
            let ps = problems(&format!(
                "{HEAD}sessionStorage:\n  provider: redis\n  address: '{addr}'\n"
            ));
            assert_eq!(ps.len(), 1, "{addr}: {ps:?}");
            assert_eq!((ps[0].0, ps[0].1.as_str()), (Some(5), "sessionStorage.address"));
            assert!(ps[0].2.contains(msg), "{addr}: {}", ps[0].2);
        }

        let ps = problems(&format!("{HEAD}sessionStorage:\n  address: h:1\n"));
        assert_eq!(ps[0].1, "sessionStorage.address");
        assert!(ps[0].2.contains("only used with provider \"redis\""));
        // Unknown keys are schema errors, as everywhere.
        assert!(
            crate::config::parse(
                &format!("{HEAD}sessionStorage: {{provider: redis, pw: x}}\n"),
                "t"
            )
            .is_err()
        );
    }

    /// A gateway and an authorization server file (the pair of `authserver/tests`).
    const MAIN: &str = "name: gw\nbackends:\n  - name: github\n    transport: streamable-http\n    \
                        url: https://api.githubcopilot.com/mcp\nincomingAuth:\n  type: oidc\n  \
                        oidc:\n    issuer: https://vmcp.example.com\n    \
                        audience: https://vmcp.example.com/mcp\n";
    const AUTH: &str = "issuer: https://vmcp.example.com\n\
                        allowed_audiences: [https://vmcp.example.com/mcp]\nupstreams:\n  \
                        - name: github\n    type: oauth2\n    oauth2_config:\n      \
                        authorization_endpoint: https://github.com/login/oauth/authorize\n      \
                        token_endpoint: https://github.com/login/oauth/access_token\n      \
                        client_id: Iv1.0123456789abcdef\n      userinfo:\n        \
                        endpoint_url: https://api.github.com/user\n";

    fn with_auth(storage: &str, auth_extra: &str) -> Result<Config, crate::config::ConfigError> {
        crate::config::parse_with_auth_server(
            &format!("{MAIN}{storage}"),
            "config.yaml",
            &format!("{AUTH}{auth_extra}"),
            "authserver-config.yaml",
        )
    }

    #[test]
    fn redis_with_the_authorization_server_needs_shared_keys() {
        let storage = "sessionStorage:\n  provider: redis\n  address: redis:6379\n";
        let e = with_auth(storage, "").unwrap_err();
        let ps: Vec<String> = e.problems().iter().map(ToString::to_string).collect();
        assert_eq!(ps.len(), 2, "{ps:#?}");
        // The block's line for the missing key, the provider's for the other file's lack.
        assert!(ps[0].starts_with("config.yaml:11:1: sessionStorage.vaultKeyFile: required"));
        assert!(ps[0].contains("hmac_secret_files"), "{}", ps[0]);
        assert!(ps[1].starts_with("config.yaml:12:3: sessionStorage.provider: with \"redis\""));
        assert!(ps[1].contains("signing_key_config"), "{}", ps[1]);

        let dir = std::env::temp_dir().join(format!("vmcp-storage-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (pem, hmac) = (dir.join("k.pem"), dir.join("hmac"));
        std::fs::write(
            &pem,
            "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap();
        std::fs::write(&hmac, [1u8; 32]).unwrap();
        let keys = format!(
            "signing_key_config:\n  signing_key_file: {}\nhmac_secret_files: [{}]\n",
            pem.display(),
            hmac.display()
        );
        let c = with_auth(storage, &keys).unwrap();
        assert_eq!(c.storage_provider(), Provider::Redis);
        // Or the vault key in a file of its own.
        let signing = format!("signing_key_config:\n  signing_key_file: {}\n", pem.display());
        let own = format!("{storage}  vaultKeyFile: /run/vault-key\n");
        assert!(with_auth(&own, &signing).is_ok());
        assert!(with_auth(storage, &signing).is_err());
        // Memory needs neither.
        assert!(with_auth("sessionStorage: {provider: memory}\n", "").is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
