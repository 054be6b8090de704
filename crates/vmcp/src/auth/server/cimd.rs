//! Client ID metadata documents: a `client_id` that is an https URL (or http on loopback, as
//! ToolHive allows for development) names a JSON document describing the client. vmcp fetches
//! it, requires its `client_id` to be exactly that URL, and takes its redirect URIs, grant
//! types and scope from it (ToolHive's `CIMDStorageDecorator`).
//!
//! Bounds: one fetch per URL at a time (concurrent lookups share it), at most
//! `cimd_max_concurrent_fetches` fetches in flight, each with `cimd_fetch_timeout` and a
//! `cimd_max_document_bytes` cap; at most `cache_max_size` documents cached, each for its
//! `Cache-Control: max-age` (clamped to 1 min .. 1 day) or `cache_fallback_ttl`. Failures are
//! not cached. Fetches never reach a private, link-local or otherwise non-public address
//! (loopback excepted, as in ToolHive): URLs with such an IP are refused here, and
//! [`cimd_http_client`] refuses to resolve a name to one and follows no redirect.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::clients::{
    ClientRecord, ClientSource, MAX_REDIRECT_URIS, RedirectPolicy, is_loopback_host,
    registered_scopes, validate_redirect_uri,
};
use super::oauth::now_secs;
use super::settings::Settings;

const MIN_TTL: Duration = Duration::from_secs(60);
const MAX_TTL: Duration = Duration::from_secs(86_400);

/// Why a client metadata document was not usable (the message is for logs and the client).
#[derive(Debug, Clone, thiserror::Error)]
#[error("client metadata document: {0}")]
pub struct CimdError(pub String);

fn err(msg: impl Into<String>) -> CimdError {
    CimdError(msg.into())
}

#[derive(Deserialize)]
struct Document {
    client_id: String,
    #[serde(default)]
    redirect_uris: Vec<String>,
    client_name: Option<String>,
    #[serde(default)]
    grant_types: Vec<String>,
    #[serde(default)]
    response_types: Vec<String>,
    scope: Option<String>,
    token_endpoint_auth_method: Option<String>,
}

struct Cached {
    record: ClientRecord,
    ttl: Duration,
}

struct PerEntry;

impl Expiry<String, Arc<Cached>> for PerEntry {
    fn expire_after_create(&self, _: &String, v: &Arc<Cached>, _: Instant) -> Option<Duration> {
        Some(v.ttl)
    }
}

/// Fetches and caches client metadata documents.
pub struct Cimd {
    http: reqwest::Client,
    cache: moka::future::Cache<String, Arc<Cached>>,
    permits: Semaphore,
    timeout: Duration,
    max_bytes: usize,
    fallback_ttl: Duration,
    scopes_supported: Vec<String>,
    baseline: Vec<String>,
}

/// Whether `client_id` names a metadata document (ToolHive's `IsClientIDMetadataDocumentURL`).
pub fn is_document_url(client_id: &str) -> bool {
    if client_id.starts_with("https://") {
        return true;
    }
    client_id.starts_with("http://") && Url::parse(client_id).is_ok_and(|u| is_loopback_host(&u))
}

/// A client for metadata document fetches: no redirects, a deadline, and names resolved only
/// to public (or loopback) addresses. What [`super::AuthServer::new`] should be given.
pub fn cimd_http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .dns_resolver(PublicOnly::default())
        .build()
        .unwrap_or_default()
}

/// A resolver that keeps only [`fetchable`] addresses of a name (public or loopback), and fails
/// when none is left, adding `hint` to the error (how to allow private ones, where that exists).
#[derive(Default)]
pub struct PublicOnly {
    pub hint: &'static str,
}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        let hint = self.hint;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| fetchable(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no public address{hint}").into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Loopback, or a globally routable unicast address.
pub fn fetchable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || !(v4.is_private()
                    || v4.is_link_local()
                    || v4.is_unspecified()
                    || v4.is_broadcast()
                    || v4.is_multicast()
                    || v4.is_documentation()
                    || o[0] == 0
                    || (o[0] == 100 && (64..128).contains(&o[1]))
                    || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                    || (o[0] == 198 && (18..20).contains(&o[1]))
                    || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return fetchable(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || !(v6.is_unspecified()
                    || v6.is_multicast()
                    || (s[0] & 0xfe00) == 0xfc00
                    || (s[0] & 0xffc0) == 0xfe80
                    || (s[0] == 0x2001 && s[1] == 0x0db8))
        }
    }
}

/// ToolHive's `validateCIMDClientURL`, plus the address rule for IP literals.
fn check_url(raw: &str) -> Result<Url, CimdError> {
    if raw.len() > 2048 {
        return Err(err("client_id URL too long"));
    }
    let url = Url::parse(raw).map_err(|_| err("client_id is not a valid URL"))?;
    let loopback = is_loopback_host(&url);
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        return Err(err("client_id URL must use https"));
    }
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(err("client_id URL must not have a fragment or userinfo"));
    }
    let path = raw.splitn(4, '/').nth(3).unwrap_or_default();
    let path = path.split(['?', '#']).next().unwrap_or_default();
    if path.is_empty() {
        return Err(err("client_id URL must have a path"));
    }
    if path.split('/').any(|s| s == "." || s == ".." || s.eq_ignore_ascii_case("%2e")) {
        return Err(err("client_id URL must not have dot segments"));
    }
    let host = url.host_str().unwrap_or_default();
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>()
        && !fetchable(ip)
    {
        return Err(err("client_id URL points at a non-public address"));
    }
    Ok(url)
}

impl Cimd {
    /// A fetcher with the settings' bounds, using `http` for fetches.
    pub fn new(settings: &Settings, http: reqwest::Client) -> Self {
        let b = &settings.bounds;
        Self {
            http,
            cache: moka::future::Cache::builder()
                .max_capacity(settings.cimd.cache_max_size)
                .expire_after(PerEntry)
                .build(),
            permits: Semaphore::new(b.cimd_max_concurrent_fetches.max(1)),
            timeout: b.cimd_fetch_timeout,
            max_bytes: b.cimd_max_document_bytes,
            fallback_ttl: settings.cimd.cache_fallback_ttl,
            scopes_supported: settings.effective_scopes(),
            baseline: settings.baseline_client_scopes.clone(),
        }
    }

    /// The client `client_id` describes, from cache or fetched now.
    pub async fn client(&self, client_id: &str) -> Result<ClientRecord, CimdError> {
        let url = check_url(client_id)?;
        let cached = self
            .cache
            .try_get_with(client_id.to_string(), async {
                self.fetch(client_id, url).await.map(Arc::new)
            })
            .await
            .map_err(|e| (*e).clone())?;
        Ok(cached.record.clone())
    }

    async fn fetch(&self, raw: &str, url: Url) -> Result<Cached, CimdError> {
        let _permit = self.permits.try_acquire().map_err(|_| err("too many fetches in flight"))?;
        let mut resp = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| err(format!("fetch failed: {}", describe(&e))))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(err(format!("fetch answered {}", resp.status().as_u16())));
        }
        if resp.url().as_str() != raw && Url::parse(raw).ok().as_ref() != Some(resp.url()) {
            return Err(err("fetch was redirected"));
        }
        if resp.content_length().is_some_and(|n| n > self.max_bytes as u64) {
            return Err(err("document too large"));
        }
        let ttl = ttl_of(resp.headers(), self.fallback_ttl);
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| err(describe(&e)))? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(err("document too large"));
            }
            body.extend_from_slice(&chunk);
        }
        let doc: Document =
            serde_json::from_slice(&body).map_err(|_| err("document is not valid JSON"))?;
        let record = self.to_client(raw, doc)?;
        Ok(Cached { record, ttl })
    }

    fn to_client(&self, raw: &str, doc: Document) -> Result<ClientRecord, CimdError> {
        if doc.client_id != raw {
            return Err(err("its client_id is not the URL it was fetched from"));
        }
        if doc.redirect_uris.is_empty() || doc.redirect_uris.len() > MAX_REDIRECT_URIS {
            return Err(err(format!("needs 1 to {MAX_REDIRECT_URIS} redirect_uris")));
        }
        for u in &doc.redirect_uris {
            validate_redirect_uri(u, RedirectPolicy::Strict).map_err(err)?;
        }
        if let Some(m) = doc.token_endpoint_auth_method.as_deref()
            && m != "none"
        {
            return Err(err(format!("token_endpoint_auth_method {m:?} is not supported")));
        }
        let mut grant_types: Vec<String> = doc
            .grant_types
            .into_iter()
            .filter(|g| g == "authorization_code" || g == "refresh_token")
            .collect();
        if grant_types.is_empty() {
            grant_types = vec!["authorization_code".into(), "refresh_token".into()];
        }
        if !grant_types.iter().any(|g| g == "authorization_code") {
            return Err(err("grant_types must include authorization_code"));
        }
        if !doc.response_types.is_empty() && !doc.response_types.iter().any(|r| r == "code") {
            return Err(err("response_types must include code"));
        }
        let requested: Vec<String> = doc
            .scope
            .as_deref()
            .map(|s| s.split(' ').filter(|s| !s.is_empty()).map(String::from).collect())
            .unwrap_or_default();
        let scopes =
            registered_scopes(&requested, &self.scopes_supported, &self.baseline).map_err(err)?;
        Ok(ClientRecord {
            client_id: raw.to_string(),
            redirect_uris: doc.redirect_uris,
            scopes,
            client_name: doc.client_name.map(|n| n.chars().take(256).collect()),
            grant_types,
            issued_at: now_secs(),
            source: ClientSource::MetadataDocument,
        })
    }
}

/// `Cache-Control: max-age`, clamped, or the fallback.
fn ttl_of(headers: &reqwest::header::HeaderMap, fallback: Duration) -> Duration {
    let cc =
        headers.get(reqwest::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut ttl = None;
    for d in cc.split(',').map(str::trim) {
        if d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("no-cache") {
            return MIN_TTL;
        }
        if let Some(v) = d.strip_prefix("max-age=") {
            ttl = v.trim_matches('"').parse::<u64>().ok().map(Duration::from_secs);
        }
    }
    ttl.unwrap_or(fallback).clamp(MIN_TTL, MAX_TTL)
}

/// A reqwest error without its URL (the URL is the client id, logged elsewhere).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else if e.is_redirect() {
        "redirected".into()
    } else {
        let mut s = e.to_string();
        if let Some(u) = e.url() {
            s = s.replace(u.as_str(), "<client_id URL>");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_urls() {
        assert!(is_document_url("https://app.example.com/client.json"));
        assert!(is_document_url("http://127.0.0.1:8/c.json"));
        assert!(!is_document_url("http://app.example.com/c.json"));
        assert!(!is_document_url("8a2b-uuid"));
        for bad in [
            "https://app.example.com",
            "https://app.example.com/",
            "https://app.example.com/a/../b",
            "https://u@app.example.com/c",
            "https://10.0.0.1/c.json",
            "https://169.254.169.254/latest",
            "https://[fd00::1]/c",
            "https://[::ffff:192.168.0.1]/c",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        check_url("https://app.example.com/c.json?v=1").unwrap();
        check_url("http://[::1]:9/c.json").unwrap();
        check_url("https://8.8.8.8/c.json").unwrap();
    }

    #[test]
    fn cache_ttl() {
        let mut h = reqwest::header::HeaderMap::new();
        let fb = Duration::from_secs(300);
        assert_eq!(ttl_of(&h, fb), fb);
        h.insert("cache-control", "public, max-age=7200".parse().unwrap());
        assert_eq!(ttl_of(&h, fb), Duration::from_secs(7200));
        h.insert("cache-control", "max-age=1".parse().unwrap());
        assert_eq!(ttl_of(&h, fb), MIN_TTL);
        h.insert("cache-control", "max-age=99999999".parse().unwrap());
        assert_eq!(ttl_of(&h, fb), MAX_TTL);
    }
}
