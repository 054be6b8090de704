//! Where incoming auth may fetch from: the rules of ToolHive's OIDC HTTP client, for discovery,
//! the JWKS and introspection.
//!
//! - `https` only, except on a loopback host (`localhost`, 127.0.0.0/8, `::1`) or with
//!   `insecureAllowHttp`.
//! - No private, link-local, shared (CGN), documentation, multicast or reserved address, unless
//!   `jwksAllowPrivateIp` or `protectedResourceAllowPrivateIp` is set (ToolHive ORs the two into
//!   one switch). The check runs on every address a name resolves to and on IP literals, also
//!   in redirects. Loopback stays reachable: a gateway and its development IdP on one machine
//!   need no flag (vmcp's rule; ToolHive's validator blocks loopback too).
//! - `caBundlePath`: PEM roots trusted in addition to the built-in ones, read as a backend's
//!   `caBundlePath` is (`config::ca_bundle`: an absolute path, at most 1 MiB).
//!
//! Invariant: the client built here never follows more than [`MAX_REDIRECTS`] redirects, never
//! to a refused address, and every request has the [`super::IDP_TIMEOUT`] deadline.

use std::net::IpAddr;

use super::{AuthConfigError, IDP_TIMEOUT};
use crate::auth::server::cimd::{PublicOnly, fetchable};
use crate::auth::server::clients::is_loopback_host;
use crate::config::auth::OidcConfig;
use crate::config::ca_bundle::CaBundle;

/// Redirects followed by one discovery, JWKS or introspection request.
const MAX_REDIRECTS: usize = 5;

/// The network rules of one `incomingAuth.oidc` block.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct NetPolicy {
    /// `insecureAllowHttp`.
    pub(super) allow_http: bool,
    /// `jwksAllowPrivateIp || protectedResourceAllowPrivateIp`.
    pub(super) allow_private: bool,
}

impl NetPolicy {
    pub(super) fn of(cfg: &OidcConfig) -> Self {
        Self {
            allow_http: cfg.insecure_allow_http,
            allow_private: cfg.jwks_allow_private_ip || cfg.protected_resource_allow_private_ip,
        }
    }

    /// Why `url` may not be fetched, if it may not.
    pub(super) fn refuse(&self, url: &reqwest::Url) -> Option<String> {
        if let Some(why) = scheme_refusal(url, self.allow_http) {
            return Some(why.into());
        }
        match literal_ip(url) {
            Some(ip) if !self.allow_private && !fetchable(ip) => {
                Some("a private address: set jwksAllowPrivateIp to allow it".into())
            }
            _ => None,
        }
    }
}

/// Why `url`'s scheme is refused under `insecureAllowHttp = allow_http`, if it is (also used by
/// config validation, so `vmcp validate` says what `serve` would refuse).
pub fn scheme_refusal(url: &reqwest::Url, allow_http: bool) -> Option<&'static str> {
    match url.scheme() {
        "https" => None,
        "http" if allow_http || is_loopback_host(url) => None,
        "http" => Some("http:// is only allowed for loopback hosts or with insecureAllowHttp"),
        _ => Some("not an http(s) URL"),
    }
}

fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host).parse().ok()
}

/// The HTTP client incoming auth uses for `cfg`: its deadline, its redirect rule, its address
/// guard and its extra roots.
pub fn idp_client(cfg: &OidcConfig) -> Result<reqwest::Client, AuthConfigError> {
    let policy = NetPolicy::of(cfg);
    let mut b = reqwest::Client::builder().timeout(IDP_TIMEOUT).redirect(
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error("too many redirects");
            }
            match policy.refuse(attempt.url()) {
                Some(why) => attempt.error(format!("redirect refused: {why}")),
                None => attempt.follow(),
            }
        }),
    );
    if !policy.allow_private {
        b = b.dns_resolver(PublicOnly { hint: " (set jwksAllowPrivateIp to allow private ones)" });
    }
    if let Some(path) = cfg.ca_bundle_path.as_deref().filter(|p| !p.trim().is_empty()) {
        // The same reader, checks and bounds as a backend's `caBundlePath`.
        let bundle =
            CaBundle::read(std::path::Path::new(path)).map_err(AuthConfigError::CaBundle)?;
        b = CaBundle::apply(Some(&bundle), b);
    }
    b.build().map_err(|_| AuthConfigError::CaBundle("the HTTP client cannot be built".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refuse(p: NetPolicy, u: &str) -> Option<String> {
        p.refuse(&reqwest::Url::parse(u).unwrap())
    }

    #[test]
    fn url_rules() {
        let strict = NetPolicy::default();
        assert_eq!(refuse(strict, "https://idp.example/"), None);
        assert_eq!(refuse(strict, "http://127.0.0.1:9/"), None);
        assert_eq!(refuse(strict, "http://localhost:9/"), None);
        assert_eq!(refuse(strict, "http://[::1]:9/"), None);
        assert!(refuse(strict, "http://idp.example/").unwrap().contains("insecureAllowHttp"));
        assert!(refuse(strict, "https://10.1.2.3/").unwrap().contains("jwksAllowPrivateIp"));
        assert!(refuse(strict, "https://169.254.169.254/").is_some());
        assert!(refuse(strict, "https://[fd00::1]/").is_some());
        assert!(refuse(strict, "ftp://idp.example/").is_some());
        let open = NetPolicy { allow_http: true, allow_private: true };
        assert_eq!(refuse(open, "http://idp.example/"), None);
        assert_eq!(refuse(open, "http://10.1.2.3/"), None);
    }
}
