//! OAuth clients: what the server knows of one, where it may be sent back to, and which scopes
//! it may ask for.
//!
//! Redirect URIs follow ToolHive (`oauthproto.ValidateRedirectURI`, `registration/client.go`):
//! absolute, no fragment, no userinfo, at most 2048 characters; `http` only on a loopback host
//! (`localhost`, `127.0.0.0/8`, `::1`); `https` anywhere; private-use schemes (`com.example.app:/cb`)
//! for registered native clients, except schemes that run code or read files in a browser
//! (`javascript`, `data`, `vbscript`, `file`, `blob`), which vmcp refuses on top of ToolHive.
//! At `/oauth/authorize` a redirect URI matches a registered one exactly, or, for an `http`
//! loopback URI, with any port (RFC 8252 §7.3): same host (`localhost` case-insensitive; an IP
//! only itself), same path and query.

use std::net::IpAddr;

use reqwest::Url;

/// Longest redirect URI accepted (ToolHive's `MaxRedirectURILength`).
pub const MAX_REDIRECT_URI_LEN: usize = 2048;
/// Most redirect URIs one client may register (ToolHive's `MaxRedirectURICount`).
pub const MAX_REDIRECT_URIS: usize = 10;

/// Schemes a redirect URI may never use.
const FORBIDDEN_SCHEMES: [&str; 5] = ["javascript", "data", "vbscript", "file", "blob"];

/// Where a client came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientSource {
    /// Registered through `/oauth/register` (RFC 7591).
    Registered,
    /// Listed in the configuration.
    Configured,
    /// Described by a client ID metadata document fetched from its `client_id` URL.
    MetadataDocument,
}

/// A public client (no secret; `token_endpoint_auth_method: none`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    /// Its `client_id`.
    pub client_id: String,
    /// Registered redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Scopes it may be granted.
    pub scopes: Vec<String>,
    /// Display name, if it gave one.
    pub client_name: Option<String>,
    /// Grant types it registered (a subset of `authorization_code`, `refresh_token`).
    pub grant_types: Vec<String>,
    /// When it was registered (Unix seconds).
    pub issued_at: u64,
    /// Where it came from.
    pub source: ClientSource,
}

impl ClientRecord {
    /// The registered URI `requested` matches, if any (exact, or loopback with any port).
    pub fn match_redirect_uri(&self, requested: &str) -> Option<&str> {
        if let Some(exact) = self.redirect_uris.iter().find(|r| *r == requested) {
            return Some(exact);
        }
        let req = Url::parse(requested).ok()?;
        self.redirect_uris.iter().find(|r| loopback_match(&req, r)).map(String::as_str)
    }

    /// Whether it may use the refresh-token grant.
    pub fn may_refresh(&self) -> bool {
        self.grant_types.iter().any(|g| g == "refresh_token")
    }
}

/// How strict redirect URI validation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectPolicy {
    /// `https`, or `http` on loopback (client ID metadata documents).
    Strict,
    /// Also private-use schemes (dynamic registration, configured clients).
    AllowPrivateSchemes,
}

/// Checks one redirect URI against `policy`.
pub fn validate_redirect_uri(raw: &str, policy: RedirectPolicy) -> Result<Url, String> {
    if raw.len() > MAX_REDIRECT_URI_LEN {
        return Err(format!("redirect_uri too long (maximum {MAX_REDIRECT_URI_LEN} characters)"));
    }
    let url = Url::parse(raw).map_err(|_| "redirect_uri must be an absolute URI".to_string())?;
    if url.fragment().is_some() || raw.contains('#') {
        return Err("redirect_uri must not contain a fragment".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("redirect_uri must not contain userinfo".into());
    }
    match url.scheme() {
        "https" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(url),
        "https" => Err("redirect_uri must have a host".into()),
        "http" if is_loopback_host(&url) => Ok(url),
        "http" => Err("redirect_uri may use http only on a loopback host".into()),
        s if FORBIDDEN_SCHEMES.contains(&s) => Err(format!("redirect_uri scheme {s:?} refused")),
        _ if policy == RedirectPolicy::AllowPrivateSchemes => Ok(url),
        _ => Err("redirect_uri must use https (or http on a loopback host)".into()),
    }
}

/// Whether the URL's host is `localhost`, a `127.0.0.0/8` address or `::1`.
pub fn is_loopback_host(url: &Url) -> bool {
    let Some(host) = url.host_str() else { return false };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// RFC 8252 §7.3: `http` loopback URIs that differ only in the port.
fn loopback_match(requested: &Url, registered: &str) -> bool {
    let Ok(reg) = Url::parse(registered) else { return false };
    if requested.scheme() != "http" || reg.scheme() != "http" {
        return false;
    }
    if !is_loopback_host(requested) || !is_loopback_host(&reg) {
        return false;
    }
    if !requested.username().is_empty() || requested.password().is_some() {
        return false;
    }
    if requested.fragment().is_some() {
        return false;
    }
    let same_host = match (requested.host_str(), reg.host_str()) {
        (Some(a), Some(b)) => {
            a == b || (a.eq_ignore_ascii_case("localhost") && a.eq_ignore_ascii_case(b))
        }
        _ => false,
    };
    same_host && requested.path() == reg.path() && requested.query() == reg.query()
}

/// The scope a client registers: what it asked for (each supported), or ToolHive's default set
/// (those of the defaults that are supported), plus the baseline.
pub fn registered_scopes(
    requested: &[String],
    supported: &[String],
    baseline: &[String],
) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for s in requested {
        if !supported.contains(s) {
            return Err(format!("unsupported scope: {s}"));
        }
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    if out.is_empty() {
        out = super::settings::DEFAULT_SCOPES
            .iter()
            .map(|s| s.to_string())
            .filter(|s| supported.contains(s))
            .collect();
    }
    for s in baseline {
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    Ok(out)
}

/// Splits a space-separated scope parameter; `None` if a token is malformed.
pub fn parse_scope(raw: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for s in raw.split(' ').filter(|s| !s.is_empty()) {
        if !super::settings::valid_scope_token(s) {
            return None;
        }
        if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(uris: &[&str]) -> ClientRecord {
        ClientRecord {
            client_id: "c".into(),
            redirect_uris: uris.iter().map(|s| s.to_string()).collect(),
            scopes: vec![],
            client_name: None,
            grant_types: vec!["authorization_code".into()],
            issued_at: 0,
            source: ClientSource::Registered,
        }
    }

    #[test]
    fn redirect_uri_policy() {
        use RedirectPolicy::*;
        for (uri, policy, good) in [
            ("https://app.example.com/cb", Strict, true),
            ("http://127.0.0.1/cb", Strict, true),
            ("http://127.5.0.1:99/cb", Strict, true),
            ("http://[::1]:8080/cb", Strict, true),
            ("http://LOCALHOST:1/cb", Strict, true),
            ("http://app.example.com/cb", AllowPrivateSchemes, false),
            ("http://localhost.evil.com/cb", AllowPrivateSchemes, false),
            ("https://app.example.com/cb#x", AllowPrivateSchemes, false),
            ("https://u@app.example.com/cb", AllowPrivateSchemes, false),
            ("com.example.app:/oauth", AllowPrivateSchemes, true),
            ("com.example.app:/oauth", Strict, false),
            ("javascript:alert(1)", AllowPrivateSchemes, false),
            ("data:text/html,x", AllowPrivateSchemes, false),
            ("/relative", AllowPrivateSchemes, false),
        ] {
            assert_eq!(validate_redirect_uri(uri, policy).is_ok(), good, "{uri} {policy:?}");
        }
        let long = format!("https://a.example.com/{}", "x".repeat(MAX_REDIRECT_URI_LEN));
        assert!(validate_redirect_uri(&long, Strict).is_err());
    }

    #[test]
    fn loopback_port_agnostic_matching() {
        let c = client(&[
            "http://127.0.0.1/callback",
            "http://localhost:3000/cb?x=1",
            "https://app.example.com/cb",
        ]);
        assert_eq!(
            c.match_redirect_uri("http://127.0.0.1:53412/callback"),
            Some("http://127.0.0.1/callback")
        );
        assert_eq!(
            c.match_redirect_uri("http://127.0.0.1/callback"),
            Some("http://127.0.0.1/callback")
        );
        assert_eq!(
            c.match_redirect_uri("http://LocalHost:9/cb?x=1"),
            Some("http://localhost:3000/cb?x=1")
        );
        // Another host, path or query, or https, never matches by port.
        assert_eq!(c.match_redirect_uri("http://localhost:53412/callback"), None);
        assert_eq!(c.match_redirect_uri("http://127.0.0.1:1/callback/x"), None);
        assert_eq!(c.match_redirect_uri("http://localhost:9/cb?x=2"), None);
        assert_eq!(c.match_redirect_uri("https://app.example.com:8443/cb"), None);
        assert_eq!(c.match_redirect_uri("http://u@127.0.0.1:5/callback"), None);
    }

    #[test]
    fn scopes() {
        let supported: Vec<String> = ["openid", "offline_access", "mcp"].map(String::from).to_vec();
        assert_eq!(registered_scopes(&[], &supported, &[]).unwrap(), ["openid", "offline_access"]);
        assert_eq!(
            registered_scopes(&["mcp".into()], &supported, &["openid".into()]).unwrap(),
            ["mcp", "openid"]
        );
        assert!(registered_scopes(&["admin".into()], &supported, &[]).is_err());
        assert_eq!(parse_scope(" a  b a ").unwrap(), ["a", "b"]);
        assert!(parse_scope("a \"b").is_none());
    }
}
