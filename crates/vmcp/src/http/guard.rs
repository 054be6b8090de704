//! DNS-rebinding protection: `Host` and `Origin` must name this machine (loopback) or an
//! explicitly allowed value; anything else is refused with 403 before any MCP handling.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Allowed `Host` and `Origin` values.
#[derive(Debug, Clone)]
pub struct HostGuard {
    hosts: Vec<String>,
    origins: Vec<String>,
    any_host: bool,
    any_origin: bool,
}

const LOOPBACK: &[&str] = &["localhost", "127.0.0.1", "[::1]", "::1"];

impl HostGuard {
    /// Loopback plus the configured extras (`"*"` allows any).
    pub fn new(hosts: &[String], origins: &[String]) -> Self {
        Self {
            hosts: hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            origins: origins.iter().map(|o| o.trim_end_matches('/').to_ascii_lowercase()).collect(),
            any_host: hosts.iter().any(|h| h == "*"),
            any_origin: origins.iter().any(|o| o == "*"),
        }
    }

    fn host_ok(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let name = strip_port(&host);
        self.any_host
            || LOOPBACK.contains(&name)
            || self.hosts.iter().any(|h| *h == host || h == name)
    }

    fn origin_ok(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.any_origin || self.origins.contains(&origin) {
            return true;
        }
        let Some((_, rest)) = origin.split_once("://") else { return false };
        LOOPBACK.contains(&strip_port(rest))
    }

    /// `Err` with the reason when the request must be refused.
    pub fn check_headers(&self, headers: &HeaderMap) -> Result<(), String> {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        match host {
            Some(h) if self.host_ok(h) => {}
            Some(h) => return Err(format!("Host {h:?} is not allowed (see server.allowedHosts)")),
            None => return Err("missing Host header".into()),
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or_default();
            if !self.origin_ok(origin) {
                return Err(format!(
                    "Origin {origin:?} is not allowed (see server.allowedOrigins)"
                ));
            }
        }
        Ok(())
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(host, |(h, _)| if h == "::1" { "[::1]" } else { h });
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// The middleware.
pub async fn check(State(guard): State<Arc<HostGuard>>, request: Request, next: Next) -> Response {
    match guard.check_headers(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(reason) => {
            tracing::warn!(%reason, "refused request (DNS-rebinding protection)");
            (StatusCode::FORBIDDEN, reason).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(host: &str, origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn loopback_only_by_default() {
        let g = HostGuard::new(&[], &[]);
        assert!(g.check_headers(&headers("127.0.0.1:4483", None)).is_ok());
        assert!(g.check_headers(&headers("localhost", Some("http://localhost:3000"))).is_ok());
        assert!(g.check_headers(&headers("[::1]:80", None)).is_ok());
        assert!(g.check_headers(&headers("evil.example.com", None)).is_err());
        assert!(g.check_headers(&headers("127.0.0.1:1", Some("http://evil.example.com"))).is_err());
        assert!(g.check_headers(&headers("localhost.evil.com", None)).is_err());
    }

    #[test]
    fn configured_hosts_and_origins() {
        let g = HostGuard::new(&["mcp.example.com".into()], &["https://app.example.com".into()]);
        assert!(
            g.check_headers(&headers("mcp.example.com:443", Some("https://app.example.com")))
                .is_ok()
        );
        assert!(
            g.check_headers(&headers("mcp.example.com", Some("https://other.example.com")))
                .is_err()
        );
        let any = HostGuard::new(&["*".into()], &["*".into()]);
        assert!(any.check_headers(&headers("x.y", Some("https://z"))).is_ok());
    }
}
