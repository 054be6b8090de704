//! What the authorization server is told at start: filled by the integrator from the
//! ToolHive-schema `authserver` configuration (this module parses no YAML), checked once by
//! [`Settings::validate`].
//!
//! Every bound has a documented default ([`Bounds::default`]); ToolHive's defaults are kept where
//! ToolHive has one (lifespans, scopes, client capacity, registration rate, CIMD cache).

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Url;

use super::clients::{RedirectPolicy, validate_redirect_uri};
use crate::auth::identity::Secret;

/// Scopes advertised when none are configured (ToolHive's `registration.DefaultScopes`).
pub const DEFAULT_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];
/// Default access-token lifespan (ToolHive: 1 h).
pub const DEFAULT_ACCESS_TOKEN_LIFESPAN: Duration = Duration::from_secs(3600);
/// Default refresh-token lifespan (ToolHive: 7 days).
pub const DEFAULT_REFRESH_TOKEN_LIFESPAN: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default authorization-code lifespan (ToolHive: 10 min).
pub const DEFAULT_AUTH_CODE_LIFESPAN: Duration = Duration::from_secs(600);

/// Lifespan ranges ToolHive accepts (`server/provider.go`); outside them `new` fails.
const ACCESS_RANGE: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(86_400));
const REFRESH_RANGE: (Duration, Duration) =
    (Duration::from_secs(3600), Duration::from_secs(30 * 86_400));
const CODE_RANGE: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(600));

/// The authorization server's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Issuer URL (`iss` of every token, base of every endpoint). https, or http on loopback or
    /// with `insecure_allow_http`; no query, fragment, userinfo or trailing slash. A path is
    /// allowed: endpoints then live under it and the metadata is also served path-inserted
    /// (RFC 8414 §3.1).
    pub issuer: String,
    /// Base URL advertised for `authorization_endpoint` instead of the issuer (ToolHive's
    /// `authorization_endpoint_base_url`); the route itself is under the issuer's path.
    pub authorization_endpoint_base_url: Option<String>,
    /// PEM private key that signs access tokens. `None`: an ephemeral ES256 key is generated at
    /// start (tokens die with the process; a warning is logged).
    pub signing_key: Option<Secret>,
    /// Older keys still accepted (and published in the JWKS) while clients' tokens age out.
    pub fallback_signing_keys: Vec<Secret>,
    /// Access-token lifespan, 1 min to 24 h. Default 1 h.
    pub access_token_lifespan: Duration,
    /// Refresh-token lifespan (each rotation starts it again), 1 h to 30 days. Default 7 days.
    pub refresh_token_lifespan: Duration,
    /// Authorization-code lifespan, 30 s to 10 min. Default 10 min.
    pub auth_code_lifespan: Duration,
    /// Scopes advertised and accepted. Empty: [`DEFAULT_SCOPES`].
    pub scopes_supported: Vec<String>,
    /// Scopes every registered (DCR or CIMD) client gets on top of what it asked for; a subset
    /// of `scopes_supported`.
    pub baseline_client_scopes: Vec<String>,
    /// Resources (RFC 8707) tokens may be issued for; the `aud` of each token is one of them.
    /// At least one is required. With exactly one, a request without `resource` gets it.
    pub allowed_audiences: Vec<String>,
    /// Client ID metadata documents.
    pub cimd: CimdSettings,
    /// Accept an http issuer (and http endpoint URLs) on a non-loopback host.
    pub insecure_allow_http: bool,
    /// vmcp's redirect URI at the upstream IdPs. Default `{issuer}/oauth/callback` (ToolHive's
    /// default for an upstream's `redirect_uri`).
    pub callback_url: Option<String>,
    /// Per-upstream redirect URIs that differ from `callback_url` (ToolHive lets each upstream
    /// set its own `redirect_uri`); each path is routed to the callback handler too.
    pub upstream_callback_urls: BTreeMap<String, String>,
    /// Clients registered in configuration (public clients only).
    pub clients: Vec<StaticClient>,
    /// Limits on everything input can grow.
    pub bounds: Bounds,
}

impl Settings {
    /// Settings for `issuer` with every default; `allowed_audiences` still needs filling.
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            authorization_endpoint_base_url: None,
            signing_key: None,
            fallback_signing_keys: Vec::new(),
            access_token_lifespan: DEFAULT_ACCESS_TOKEN_LIFESPAN,
            refresh_token_lifespan: DEFAULT_REFRESH_TOKEN_LIFESPAN,
            auth_code_lifespan: DEFAULT_AUTH_CODE_LIFESPAN,
            scopes_supported: Vec::new(),
            baseline_client_scopes: Vec::new(),
            allowed_audiences: Vec::new(),
            cimd: CimdSettings::default(),
            insecure_allow_http: false,
            callback_url: None,
            upstream_callback_urls: BTreeMap::new(),
            clients: Vec::new(),
            bounds: Bounds::default(),
        }
    }

    /// The scopes in force (`scopes_supported`, or the defaults).
    pub fn effective_scopes(&self) -> Vec<String> {
        if self.scopes_supported.is_empty() {
            DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect()
        } else {
            self.scopes_supported.clone()
        }
    }

    /// The callback URL sent to `upstream`.
    pub fn callback_for(&self, upstream: &str) -> String {
        if let Some(u) = self.upstream_callback_urls.get(upstream) {
            return u.clone();
        }
        self.callback_url.clone().unwrap_or_else(|| format!("{}/oauth/callback", self.issuer))
    }

    /// Checks everything that does not need the keys or the upstreams.
    pub fn validate(&self) -> Result<(), String> {
        check_base_url("issuer", &self.issuer, self.insecure_allow_http)?;
        if let Some(b) = &self.authorization_endpoint_base_url {
            check_base_url("authorization_endpoint_base_url", b, self.insecure_allow_http)?;
        }
        check_range("access_token_lifespan", self.access_token_lifespan, ACCESS_RANGE)?;
        check_range("refresh_token_lifespan", self.refresh_token_lifespan, REFRESH_RANGE)?;
        check_range("auth_code_lifespan", self.auth_code_lifespan, CODE_RANGE)?;
        let scopes = self.effective_scopes();
        for s in &scopes {
            if !valid_scope_token(s) {
                return Err(format!("scopes_supported: {s:?} is not a valid scope token"));
            }
        }
        for s in &self.baseline_client_scopes {
            if !scopes.contains(s) {
                return Err(format!(
                    "baseline_client_scopes contains {s:?} which is not in scopes_supported"
                ));
            }
        }
        if self.allowed_audiences.is_empty() {
            return Err("at least one allowed audience is required (RFC 8707 resource \
                        parameter validation)"
                .into());
        }
        for a in &self.allowed_audiences {
            validate_resource(a).map_err(|e| format!("allowed audience {a:?}: {e}"))?;
        }
        let mut callbacks = vec![self.callback_for("")];
        callbacks.extend(self.upstream_callback_urls.values().cloned());
        for c in &callbacks {
            check_endpoint_url("callback URL", c, self.insecure_allow_http)?;
        }
        if self.cimd.enabled && self.cimd.cache_max_size == 0 {
            return Err("cimd.cache_max_size must be at least 1".into());
        }
        for c in &self.clients {
            c.validate()?;
        }
        Ok(())
    }
}

/// Client ID metadata documents (draft-ietf-oauth-client-id-metadata-document): a client whose
/// `client_id` is an https URL is described by the JSON document at that URL.
#[derive(Debug, Clone)]
pub struct CimdSettings {
    /// Whether such client ids are accepted (and advertised). Default off, as in ToolHive.
    pub enabled: bool,
    /// Documents kept at once. Default 256 (ToolHive).
    pub cache_max_size: u64,
    /// How long a document is kept when its response has no `Cache-Control: max-age`.
    /// Default 5 min (ToolHive).
    pub cache_fallback_ttl: Duration,
}

impl Default for CimdSettings {
    fn default() -> Self {
        Self { enabled: false, cache_max_size: 256, cache_fallback_ttl: Duration::from_secs(300) }
    }
}

/// A client registered in configuration. Public: it authenticates by `client_id` alone.
#[derive(Debug, Clone)]
pub struct StaticClient {
    /// Its `client_id`.
    pub client_id: String,
    /// Redirect URIs (same rules as dynamic registration).
    pub redirect_uris: Vec<String>,
    /// Scopes it may ask for. Empty: every supported scope.
    pub scopes: Vec<String>,
    /// Display name.
    pub client_name: Option<String>,
}

impl StaticClient {
    fn validate(&self) -> Result<(), String> {
        if self.client_id.is_empty() || self.client_id.len() > 256 {
            return Err("a configured client needs a client_id of 1 to 256 characters".into());
        }
        if self.redirect_uris.is_empty() {
            return Err(format!("client {:?}: redirect_uris is empty", self.client_id));
        }
        for u in &self.redirect_uris {
            validate_redirect_uri(u, RedirectPolicy::AllowPrivateSchemes)
                .map_err(|e| format!("client {:?}: {e}", self.client_id))?;
        }
        Ok(())
    }
}

/// Limits on state the server keeps and on what clients may send.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Dynamically registered clients kept. Default 10 000 (ToolHive). At capacity the oldest
    /// registration older than `min_client_age` is dropped; if none is, registration gets 503.
    pub max_clients: usize,
    /// A registration younger than this is never dropped for room. Default 1 h (ToolHive).
    pub min_client_age: Duration,
    /// A registered client unused (no token issued) this long is forgotten. Default 30 days
    /// (ToolHive's DCR client TTL).
    pub client_idle_ttl: Duration,
    /// Logins in progress (between `/oauth/authorize` and the last upstream callback).
    /// Default 10 000; beyond it `/oauth/authorize` answers `temporarily_unavailable`.
    pub max_pending_authorizations: usize,
    /// How long a login may take at each upstream. Default 10 min (ToolHive).
    pub pending_authorization_ttl: Duration,
    /// Authorization codes kept, including used ones remembered for replay detection.
    /// Default 10 000.
    pub max_codes: usize,
    /// How long a used code is remembered, so a replay revokes what it issued. Default 30 min
    /// (ToolHive's invalidated-code TTL).
    pub used_code_ttl: Duration,
    /// Refresh-token families (one per login of one client). Default 100 000; beyond it the
    /// token request that would start one gets 503.
    pub max_refresh_families: usize,
    /// Upstream identities mapped to vmcp user ids. Default 100 000; beyond it the least
    /// recently seen mapping is forgotten (that user gets a new id at the next login).
    pub max_users: usize,
    /// Registrations one client IP may make at once. Default 5 (ToolHive's burst).
    pub registration_burst: u32,
    /// One more registration is allowed per IP each interval. Default 1 s (ToolHive: 1/s).
    pub registration_refill_interval: Duration,
    /// Client IPs tracked by the registration limiter. Default 10 000; when full, IPs whose
    /// bucket is full again are forgotten first, then all others share one bucket.
    pub max_rate_limited_ips: usize,
    /// Deadline of one client metadata document fetch. Default 5 s (ToolHive).
    pub cimd_fetch_timeout: Duration,
    /// Largest client metadata document. Default 64 KiB.
    pub cimd_max_document_bytes: usize,
    /// Client metadata document fetches in flight at once. Default 16.
    pub cimd_max_concurrent_fetches: usize,
    /// Largest POST body (registration, token). Default 64 KiB (ToolHive's DCR limit).
    pub max_body_bytes: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_clients: 10_000,
            min_client_age: Duration::from_secs(3600),
            client_idle_ttl: Duration::from_secs(30 * 86_400),
            max_pending_authorizations: 10_000,
            pending_authorization_ttl: Duration::from_secs(600),
            max_codes: 10_000,
            used_code_ttl: Duration::from_secs(1800),
            max_refresh_families: 100_000,
            max_users: 100_000,
            registration_burst: 5,
            registration_refill_interval: Duration::from_secs(1),
            max_rate_limited_ips: 10_000,
            cimd_fetch_timeout: Duration::from_secs(5),
            cimd_max_document_bytes: 64 * 1024,
            cimd_max_concurrent_fetches: 16,
            max_body_bytes: 64 * 1024,
        }
    }
}

fn check_range(what: &str, d: Duration, (min, max): (Duration, Duration)) -> Result<(), String> {
    if d < min || d > max {
        return Err(format!("{what} must be between {min:?} and {max:?}, got {d:?}"));
    }
    Ok(())
}

/// Issuer-like URL: absolute, https (http only on loopback or when allowed), no query,
/// fragment, userinfo or trailing slash.
fn check_base_url(what: &str, raw: &str, insecure_allow_http: bool) -> Result<(), String> {
    check_endpoint_url(what, raw, insecure_allow_http)?;
    let url = Url::parse(raw).map_err(|e| format!("{what}: {e}"))?;
    if url.query().is_some() {
        return Err(format!("{what} must not have a query"));
    }
    if raw.ends_with('/') {
        return Err(format!("{what} must not end with '/'"));
    }
    Ok(())
}

fn check_endpoint_url(what: &str, raw: &str, insecure_allow_http: bool) -> Result<(), String> {
    let url = Url::parse(raw).map_err(|e| format!("{what} {raw:?}: {e}"))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{what} {raw:?} has no host"));
    }
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{what} {raw:?} must not have a fragment or userinfo"));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if insecure_allow_http || super::clients::is_loopback_host(&url) => Ok(()),
        "http" => Err(format!("{what} {raw:?}: http only on loopback (or insecure_allow_http)")),
        s => Err(format!("{what} {raw:?}: scheme {s:?} is not https")),
    }
}

/// An RFC 8707 resource as ToolHive accepts it: absolute http(s) URI with a host, no fragment.
pub(crate) fn validate_resource(raw: &str) -> Result<(), String> {
    let url = Url::parse(raw).map_err(|_| "not an absolute URI".to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must use http or https".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must include a host".into());
    }
    if url.fragment().is_some() {
        return Err("must not contain a fragment".into());
    }
    Ok(())
}

/// RFC 6749 §3.3 scope-token: printable ASCII except space, `"` and `\`.
pub(crate) fn valid_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes().all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Settings {
        let mut s = Settings::new("https://vmcp.example.com");
        s.allowed_audiences = vec!["https://vmcp.example.com/mcp".into()];
        s
    }

    #[test]
    fn defaults_validate_and_match_toolhive() {
        let s = ok();
        s.validate().unwrap();
        assert_eq!(s.callback_for("any"), "https://vmcp.example.com/oauth/callback");
        assert_eq!(s.effective_scopes(), ["openid", "profile", "email", "offline_access"]);
        assert_eq!(s.refresh_token_lifespan, Duration::from_secs(604_800));
    }

    #[test]
    fn issuer_rules() {
        for (issuer, insecure, good) in [
            ("http://127.0.0.1:8080", false, true),
            ("http://localhost:8080/as", false, true),
            ("http://vmcp.internal", false, false),
            ("http://vmcp.internal", true, true),
            ("https://vmcp.example.com/", false, false),
            ("https://vmcp.example.com?x=1", false, false),
            ("https://u:p@vmcp.example.com", false, false),
            ("ftp://vmcp.example.com", false, false),
        ] {
            let mut s = ok();
            s.issuer = issuer.into();
            s.insecure_allow_http = insecure;
            assert_eq!(s.validate().is_ok(), good, "{issuer} insecure={insecure}");
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut s = ok();
        s.access_token_lifespan = Duration::from_secs(10);
        assert!(s.validate().unwrap_err().contains("access_token_lifespan"));
        let mut s = ok();
        s.allowed_audiences.clear();
        assert!(s.validate().is_err());
        let mut s = ok();
        s.allowed_audiences = vec!["urn:x".into()];
        assert!(s.validate().is_err());
        let mut s = ok();
        s.baseline_client_scopes = vec!["admin".into()];
        assert!(s.validate().unwrap_err().contains("baseline"));
        let mut s = ok();
        s.clients.push(StaticClient {
            client_id: "c".into(),
            redirect_uris: vec!["http://evil.example.com/cb".into()],
            scopes: vec![],
            client_name: None,
        });
        assert!(s.validate().is_err());
    }

    #[test]
    fn scope_tokens() {
        assert!(valid_scope_token("mcp:tools.read"));
        assert!(!valid_scope_token("a b"));
        assert!(!valid_scope_token("a\"b"));
        assert!(!valid_scope_token(""));
    }
}
