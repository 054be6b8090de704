//! Semantic checks on `authserver-config.yaml`: ToolHive's `RunConfig` rules (issuer form,
//! upstream names and blocks, URL schemes, lifespan bounds, HMAC secret length, audiences and
//! scopes), the files it references being readable, and the refusal of settings vmcp does not
//! implement yet.
//!
//! Every check runs and every problem is returned. Findings name the key (snake_case, as in the
//! file) and never quote a secret: a secret file's problem names the path, never its content.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use super::{AuthServerConfig, StorageKind};
use crate::config::duration::display;
use crate::config::locate::{Index, index_path, key_path};
use crate::config::validate::Finding;

/// Largest key or secret file read while validating; real ones are a few KiB.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Collects findings.
pub(super) struct Checker<'a> {
    pub index: &'a Index,
    pub findings: Vec<Finding>,
}

impl Checker<'_> {
    pub fn report(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.findings.push(Finding { path: path.into(), message: message.into() });
    }

    /// "not supported by vmcp yet" for `key` (an entry of [`super::UNSUPPORTED`]), set at `path`.
    pub fn unsupported(&mut self, path: impl Into<String>, key: &str) {
        let what = super::UNSUPPORTED.iter().find(|(k, _)| *k == key).map_or(key, |(_, w)| w);
        self.report(path, format!("not supported by vmcp yet ({what}); remove it"));
    }

    /// "missing" or "must not be empty", depending on whether the key is written.
    pub fn required(&mut self, path: String, why: &str) {
        let msg = if self.index.pos(&path).is_some() { "must not be empty" } else { "missing" };
        self.report(path, format!("{msg}; {why}"));
    }
}

/// Runs every check on `cfg`, whose text `index` was built from.
pub(crate) fn check(cfg: &AuthServerConfig, index: &Index) -> Vec<Finding> {
    let mut c = Checker { index, findings: Vec::new() };
    check_issuer(cfg, &mut c);
    check_keys(cfg, &mut c);
    check_lifespans(cfg, &mut c);
    super::validate_upstream::check_upstreams(cfg, &mut c);
    check_scopes_and_audiences(cfg, &mut c);
    check_unsupported(cfg, &mut c);
    c.findings
}

fn check_issuer(cfg: &AuthServerConfig, c: &mut Checker<'_>) {
    if cfg.issuer.is_empty() {
        c.required(
            "issuer".to_owned(),
            "the authorization server's URL (the `iss` of its tokens) is required",
        );
    } else if let Some(problem) = issuer_problem(&cfg.issuer, cfg.insecure_allow_http) {
        c.report("issuer", problem);
    }
}

/// Why `issuer` cannot be this server's issuer identifier (RFC 8414 §2, OIDC Core §3.1.2.1, and
/// ToolHive's no-trailing-slash rule), if it cannot.
pub(super) fn issuer_problem(issuer: &str, insecure_allow_http: bool) -> Option<String> {
    let u = match reqwest::Url::parse(issuer) {
        Ok(u) => u,
        Err(e) => return Some(format!("invalid URL {issuer:?}: {e}")),
    };
    if !matches!(u.scheme(), "http" | "https") {
        return Some(format!("URL {issuer:?} must start with https://"));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Some(format!("URL {issuer:?} has no host"));
    }
    if u.query().is_some() {
        return Some("must not have a query (?...)".to_owned());
    }
    if u.fragment().is_some() {
        return Some("must not have a fragment (#...)".to_owned());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Some("must not contain credentials (user@host)".to_owned());
    }
    if let Some(problem) = http_problem(&u, insecure_allow_http, "insecure_allow_http") {
        return Some(problem);
    }
    issuer.ends_with('/').then(|| "must not end with a slash".to_owned())
}

/// `http://` is for loopback hosts, or anywhere when `insecure` (named `flag`) is set.
pub(super) fn http_problem(u: &reqwest::Url, insecure: bool, flag: &str) -> Option<String> {
    (u.scheme() == "http" && !insecure && !is_loopback(u)).then(|| {
        format!(
            "http:// is allowed only for a loopback host (localhost, 127.0.0.1, ::1) or with \
             {flag}: true; use https://"
        )
    })
}

/// Whether `u`'s host is `localhost` or a loopback address.
pub(super) fn is_loopback(u: &reqwest::Url) -> bool {
    let Some(host) = u.host_str() else { return false };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Signing keys and HMAC secrets: readable, and of the right kind and size.
fn check_keys(cfg: &AuthServerConfig, c: &mut Checker<'_>) {
    if let Some(sk) = &cfg.signing_key_config {
        let p = "signing_key_config";
        match &sk.signing_key_file {
            None if sk.key_dir.is_some() || !sk.fallback_key_files.is_empty() => c.report(
                key_path(p, "signing_key_file"),
                "required when key_dir or fallback_key_files is given (without it an ephemeral \
                 key would sign, and they would be ignored)",
            ),
            None => {}
            Some(file) => {
                check_pem_key(&sk.path(file), key_path(p, "signing_key_file"), c);
                for (i, f) in sk.fallback_key_files.iter().enumerate() {
                    check_pem_key(
                        &sk.path(f),
                        index_path(&key_path(p, "fallback_key_files"), i),
                        c,
                    );
                }
            }
        }
    }
    for (i, file) in cfg.hmac_secret_files.iter().enumerate() {
        let p = index_path("hmac_secret_files", i);
        if file.as_os_str().is_empty() {
            // ToolHive skips empty rotated entries but must read the current one.
            if i == 0 {
                c.report(p, "must not be empty: the first file holds the current secret");
            }
            continue;
        }
        match read_bounded(file) {
            Err(e) => c.report(p, format!("cannot read {}: {e}", file.display())),
            Ok(bytes) if bytes.len() < super::MIN_HMAC_SECRET_BYTES => c.report(
                p,
                format!(
                    "{} holds {} bytes; an HMAC secret needs at least {} (e.g. `openssl rand \
                     -base64 32`)",
                    file.display(),
                    bytes.len(),
                    super::MIN_HMAC_SECRET_BYTES
                ),
            ),
            Ok(_) => {}
        }
    }
}

/// A PEM private key file at `file`, named by `path` in findings. Only the armour is checked;
/// parsing the key is left to whoever loads it.
fn check_pem_key(file: &Path, path: String, c: &mut Checker<'_>) {
    match read_bounded(file) {
        Err(e) => c.report(path, format!("cannot read {}: {e}", file.display())),
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let pem = text.lines().any(|l| {
                let l = l.trim();
                l.starts_with("-----BEGIN ") && l.ends_with("PRIVATE KEY-----")
            });
            if !pem {
                c.report(
                    path,
                    format!(
                        "{} is not a PEM private key (no \"-----BEGIN ... PRIVATE KEY-----\" line)",
                        file.display()
                    ),
                );
            }
        }
    }
}

/// Reads at most [`MAX_FILE_BYTES`] of `path`.
pub(super) fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    std::fs::File::open(path)?.take(MAX_FILE_BYTES).read_to_end(&mut out)?;
    Ok(out)
}

fn check_lifespans(cfg: &AuthServerConfig, c: &mut Checker<'_>) {
    let Some(l) = &cfg.token_lifespans else { return };
    let checks = [
        (
            "access_token_lifespan",
            l.access_token_lifespan,
            super::MIN_ACCESS_TOKEN_LIFESPAN,
            super::MAX_ACCESS_TOKEN_LIFESPAN,
        ),
        (
            "refresh_token_lifespan",
            l.refresh_token_lifespan,
            super::MIN_REFRESH_TOKEN_LIFESPAN,
            super::MAX_REFRESH_TOKEN_LIFESPAN,
        ),
        (
            "auth_code_lifespan",
            l.auth_code_lifespan,
            super::MIN_AUTH_CODE_LIFESPAN,
            super::MAX_AUTH_CODE_LIFESPAN,
        ),
    ];
    for (key, value, min, max) in checks {
        // Zero means the default, as in ToolHive.
        if let Some(d) = value.filter(|d| !d.is_zero() && (*d < min || *d > max)) {
            c.report(
                key_path("token_lifespans", key),
                format!(
                    "{} is out of bounds: must be from {} to {}",
                    display(d),
                    display(min),
                    display(max)
                ),
            );
        }
    }
}

fn check_scopes_and_audiences(cfg: &AuthServerConfig, c: &mut Checker<'_>) {
    for (i, s) in cfg.scopes_supported.iter().enumerate() {
        if let Some(problem) = scope_problem(s) {
            c.report(index_path("scopes_supported", i), problem);
        }
    }
    let supported = cfg.scopes_supported();
    for (i, s) in cfg.baseline_client_scopes.iter().enumerate() {
        if !supported.contains(&s.as_str()) {
            let from = if cfg.scopes_supported.is_empty() { " (default)" } else { "" };
            c.report(
                index_path("baseline_client_scopes", i),
                format!("{s:?} is not in scopes_supported{from}: {}", supported.join(", ")),
            );
        }
    }
    if cfg.allowed_audiences.is_empty() {
        c.report(
            "allowed_audiences",
            "at least one is required: the resource URIs (RFC 8707) tokens may be issued for, \
             normally incomingAuth.oidc.audience of the main config",
        );
    }
    for (i, aud) in cfg.allowed_audiences.iter().enumerate() {
        if let Some(problem) = audience_problem(aud) {
            c.report(index_path("allowed_audiences", i), problem);
        }
    }
}

/// Why `scope` is not an RFC 6749 scope token, if it is not.
pub(super) fn scope_problem(scope: &str) -> Option<String> {
    if scope.is_empty() {
        return Some("must not be empty".to_owned());
    }
    // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
    let ok = |b: u8| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b);
    (!scope.bytes().all(ok)).then(|| {
        format!("invalid scope {scope:?}: no spaces, quotes, backslashes or non-ASCII characters")
    })
}

/// Why `aud` cannot be an RFC 8707 resource URI, if it cannot.
fn audience_problem(aud: &str) -> Option<String> {
    if aud.is_empty() {
        return Some("must not be empty".to_owned());
    }
    match reqwest::Url::parse(aud) {
        Err(e) => Some(format!("invalid resource URI {aud:?}: {e}")),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            Some(format!("resource URI {aud:?} must start with http:// or https://"))
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => {
            Some(format!("resource URI {aud:?} has no host"))
        }
        Ok(u) if u.fragment().is_some() => {
            Some(format!("resource URI {aud:?} must not have a fragment (#...)"))
        }
        Ok(_) => None,
    }
}

/// Settings vmcp does not implement yet, refused while they are set (see `UNSUPPORTED`).
fn check_unsupported(cfg: &AuthServerConfig, c: &mut Checker<'_>) {
    let set = [
        ("delegation_token_lifespan", cfg.delegation_token_lifespan.is_some()),
        ("trusted_issuers", !cfg.trusted_issuers.is_empty()),
        ("delegate_clients", !cfg.delegate_clients.is_empty()),
        ("allow_confidential_client_registration", cfg.allow_confidential_client_registration),
        ("force_confidential_redirect_uris", !cfg.force_confidential_redirect_uris.is_empty()),
    ];
    for (key, is_set) in set {
        if is_set {
            c.unsupported(key, key);
        }
    }
    if let Some(cimd) = &cfg.cimd
        && cimd.enabled
        && cimd.cache_fallback_ttl == Some(Duration::ZERO)
    {
        c.report("cimd.cache_fallback_ttl", "must be greater than zero");
    }
    if let Some(storage) = &cfg.storage {
        match storage.kind {
            StorageKind::Redis => c.report(
                "storage.type",
                "not supported yet: storage.type redis (Redis storage comes with scale-out)",
            ),
            StorageKind::Memory if storage.redis_config.is_some() => c.report(
                "storage.redis_config",
                "only used when storage.type is redis, but it is memory",
            ),
            StorageKind::Memory => {}
        }
    }
}
