//! The issuer's signing keys: discovered lazily, cached, refetched on an unknown `kid`.
//!
//! Invariants: at most one fetch is in flight (concurrent misses wait for it and share its
//! result); refetches caused by unknown key ids happen at most once per `min_refetch`; a failed
//! fetch never discards keys already cached.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use super::jwt::key_matches;
use super::net::NetPolicy;
use super::{AuthFailure, IDP_TIMEOUT, describe_http_error, read_body};

/// Default least time between two refetches caused by unknown key ids.
const DEFAULT_MIN_REFETCH: Duration = Duration::from_secs(10);
/// Cached keys older than this are refreshed on the next request (kept if that fails).
const KEYS_TTL: Duration = Duration::from_secs(3600);
/// After a failed first load, requests fail fast for this long before the next attempt.
const LOAD_RETRY_BACKOFF: Duration = Duration::from_secs(1);

struct CachedKey {
    kid: Option<String>,
    jwk: Jwk,
    key: Arc<DecodingKey>,
}

#[derive(Default)]
struct State {
    /// `None` until a fetch has succeeded.
    keys: Option<Arc<Vec<CachedKey>>>,
    loaded_at: Option<Instant>,
    /// Fetch attempts so far (success or not): waiters compare it to know a fetch happened.
    attempts: u64,
    last_attempt: Option<Instant>,
    /// Last refetch caused by an unknown key id.
    last_refetch: Option<Instant>,
    last_error: Option<String>,
}

pub(super) struct KeyStore {
    http: reqwest::Client,
    issuer: String,
    jwks_url: Option<String>,
    net: NetPolicy,
    discovered: tokio::sync::OnceCell<String>,
    state: RwLock<State>,
    fetch_lock: tokio::sync::Mutex<()>,
    min_refetch_ms: AtomicU64,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self.read().keys.as_ref().map(|k| k.len());
        f.debug_struct("KeyStore")
            .field(
                "jwks_url",
                &self.jwks_url.as_deref().or(self.discovered.get().map(String::as_str)),
            )
            .field("cached_keys", &cached)
            .finish()
    }
}

enum Lookup {
    Found(Arc<DecodingKey>),
    Miss,
    Reject(AuthFailure),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Why {
    NotLoaded,
    Stale,
    UnknownKid,
}

impl KeyStore {
    pub(super) fn new(
        http: reqwest::Client,
        issuer: String,
        jwks_url: Option<String>,
        net: NetPolicy,
    ) -> Self {
        Self {
            http,
            issuer,
            jwks_url,
            net,
            discovered: tokio::sync::OnceCell::new(),
            state: RwLock::new(State::default()),
            fetch_lock: tokio::sync::Mutex::new(()),
            min_refetch_ms: AtomicU64::new(DEFAULT_MIN_REFETCH.as_millis() as u64),
        }
    }

    pub(super) fn set_min_refetch_interval(&self, interval: Duration) {
        self.min_refetch_ms.store(interval.as_millis() as u64, Ordering::Relaxed);
    }

    fn min_refetch(&self) -> Duration {
        Duration::from_millis(self.min_refetch_ms.load(Ordering::Relaxed))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The key that verifies a token with this `kid` and `alg`.
    pub(super) async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<DecodingKey>, AuthFailure> {
        let (why, attempts_seen) = {
            let st = self.read();
            match &st.keys {
                None => (Why::NotLoaded, st.attempts),
                Some(keys) => match lookup(keys, kid, alg) {
                    Lookup::Found(k) => {
                        if st.loaded_at.is_some_and(|t| t.elapsed() < KEYS_TTL) {
                            return Ok(k);
                        }
                        (Why::Stale, st.attempts)
                    }
                    Lookup::Reject(f) => return Err(f),
                    Lookup::Miss => (Why::UnknownKid, st.attempts),
                },
            }
        };

        let _guard = self.fetch_lock.lock().await;
        let fetch = {
            let st = self.read();
            if st.attempts != attempts_seen {
                // Someone fetched while we waited: use what they got.
                false
            } else {
                match why {
                    Why::NotLoaded => {
                        st.last_attempt.is_none_or(|t| t.elapsed() >= LOAD_RETRY_BACKOFF)
                    }
                    Why::Stale => true,
                    Why::UnknownKid => {
                        st.last_refetch.is_none_or(|t| t.elapsed() >= self.min_refetch())
                    }
                }
            }
        };
        if fetch {
            let result = self.fetch().await;
            let mut st = self.write();
            st.attempts += 1;
            let now = Instant::now();
            st.last_attempt = Some(now);
            if why == Why::UnknownKid {
                st.last_refetch = Some(now);
            }
            match result {
                Ok(keys) => {
                    tracing::debug!(issuer = %self.issuer, keys = keys.len(), "JWKS fetched");
                    st.keys = Some(Arc::new(keys));
                    st.loaded_at = Some(now);
                    st.last_error = None;
                }
                Err(e) => {
                    tracing::warn!(issuer = %self.issuer, error = %e, "JWKS fetch failed");
                    if why == Why::Stale {
                        // Do not retry on every request while the IdP is down.
                        st.loaded_at = Some(now);
                    }
                    st.last_error = Some(e);
                }
            }
        }

        let st = self.read();
        match &st.keys {
            None => Err(AuthFailure::Unavailable(format!(
                "no signing keys: {}",
                st.last_error.as_deref().unwrap_or("identity provider not reachable")
            ))),
            Some(keys) => match lookup(keys, kid, alg) {
                Lookup::Found(k) => Ok(k),
                Lookup::Reject(f) => Err(f),
                Lookup::Miss => Err(AuthFailure::InvalidToken("unknown signing key".into())),
            },
        }
    }

    async fn jwks_url(&self) -> Result<String, String> {
        if let Some(u) = &self.jwks_url {
            return Ok(u.clone());
        }
        self.discovered.get_or_try_init(|| self.discover()).await.cloned()
    }

    async fn discover(&self) -> Result<String, String> {
        let url = format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'));
        let doc = self.get_json(&url).await.map_err(|e| format!("discovery: {e}"))?;
        let issuer = doc.get("issuer").and_then(Value::as_str).unwrap_or_default();
        if issuer.trim_end_matches('/') != self.issuer.trim_end_matches('/') {
            return Err("discovery: document names another issuer".into());
        }
        let jwks = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .and_then(|u| reqwest::Url::parse(u).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or("discovery: no usable jwks_uri")?;
        // The document names where keys come from: the same rules as a configured jwksUrl.
        if let Some(why) = self.net.refuse(&jwks) {
            return Err(format!("discovery: jwks_uri refused: {why}"));
        }
        Ok(jwks.to_string())
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let resp = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(IDP_TIMEOUT)
            .send()
            .await
            .map_err(|e| describe_http_error(&e))?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status().as_u16()));
        }
        let body = read_body(resp).await?;
        serde_json::from_slice(&body).map_err(|_| "response is not JSON".to_string())
    }

    async fn fetch(&self) -> Result<Vec<CachedKey>, String> {
        let url = self.jwks_url().await?;
        let doc = self.get_json(&url).await.map_err(|e| format!("JWKS: {e}"))?;
        let Some(Value::Array(entries)) = doc.get("keys") else {
            return Err("JWKS: no keys array".into());
        };
        let mut keys = Vec::new();
        for entry in entries {
            // One unusable key must not take the others down.
            let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else { continue };
            if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(&jwk) else { continue };
            keys.push(CachedKey { kid: jwk.common.key_id.clone(), jwk, key: Arc::new(key) });
        }
        Ok(keys)
    }
}

fn lookup(keys: &[CachedKey], kid: Option<&str>, alg: Algorithm) -> Lookup {
    match kid {
        Some(kid) => {
            let mut same_kid = keys.iter().filter(|k| k.kid.as_deref() == Some(kid)).peekable();
            if same_kid.peek().is_none() {
                return Lookup::Miss;
            }
            match same_kid.find(|k| key_matches(&k.jwk, alg)) {
                Some(k) => Lookup::Found(k.key.clone()),
                None => Lookup::Reject(AuthFailure::InvalidToken(
                    "key type does not match the JWT algorithm".into(),
                )),
            }
        }
        None => {
            let mut usable = keys.iter().filter(|k| key_matches(&k.jwk, alg));
            match (usable.next(), usable.next()) {
                (Some(k), None) => Lookup::Found(k.key.clone()),
                (None, _) => Lookup::Miss,
                (Some(_), Some(_)) => Lookup::Reject(AuthFailure::InvalidToken(
                    "JWT has no kid and the issuer has several keys".into(),
                )),
            }
        }
    }
}
