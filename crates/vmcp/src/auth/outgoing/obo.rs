//! `obo`: OAuth 2.0 on-behalf-of as Microsoft Entra defines it (and ToolHive's `obo` strategy
//! configures it). The caller's token is the assertion of a JWT bearer grant
//! (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`, `requested_token_use=on_behalf_of`)
//! at the IdP's token endpoint; the token it returns goes to the backend as
//! `Authorization: Bearer`.
//!
//! - The assertion is the token the caller presented, or, with `subjectTokenProviderName`, the
//!   user's current access token at that upstream of vmcp's authorization server (from the
//!   vault). It is read for each request, never kept.
//! - The gateway authenticates with `client_id` and `client_secret` in the form
//!   (`client_secret_post`, as in Entra's on-behalf-of request).
//! - `scope` is the exchange target: `scopes` space-joined, else `audience` (ToolHive's rule).
//! - Results are cached per SHA-256 of (assertion, scope) until `cacheSkewSeconds` (default: a
//!   tenth of the lifetime, at most 30 s) before they expire; concurrent misses share one
//!   request; failures are remembered for 5 s (see [`super::grant`]).

use std::fmt;
use std::time::Duration;

use http::header::AUTHORIZATION;

use super::grant::{
    ClientAuth, DEFAULT_EXCHANGE_TIMEOUT, Endpoint, GrantCache, Granted, JWT_BEARER_GRANT, Subject,
    cache_key,
};
use super::{OutgoingAuthConfigError, OutgoingAuthError, resolve_secret, set_header};
use crate::auth::Caller;
use crate::config::auth::OboConfig;

/// The on-behalf-of strategy of one backend.
pub(super) struct Obo {
    endpoint: Endpoint,
    client_id: String,
    /// The `scope` requested: the exchange target.
    scope: String,
    skew: Option<Duration>,
    subject: Subject,
    http: reqwest::Client,
    cache: GrantCache<[u8; 32]>,
}

impl Obo {
    pub(super) fn from_config(
        cfg: &OboConfig,
        backend: &str,
        subject: Subject,
        http: reqwest::Client,
    ) -> Result<Self, OutgoingAuthConfigError> {
        let invalid = |message: String| OutgoingAuthConfigError::Invalid {
            backend: backend.to_owned(),
            message,
        };
        let url = token_url(&cfg.token_url).ok_or_else(|| {
            invalid(format!("obo.tokenUrl {:?} is not an http(s) URL", cfg.token_url))
        })?;
        if cfg.client_id.trim().is_empty() {
            return Err(invalid("obo.clientId is required".into()));
        }
        let secret = resolve_secret(
            backend,
            cfg.client_secret.as_ref(),
            cfg.client_secret_env.as_deref(),
            "obo.clientSecret",
            "obo.clientSecretEnv",
        )?;
        let scope = if cfg.scopes.is_empty() {
            cfg.audience.clone().unwrap_or_default()
        } else {
            cfg.scopes.join(" ")
        };
        if scope.trim().is_empty() {
            return Err(invalid("obo needs `audience` or `scopes`: the token to request".into()));
        }
        let skew = match cfg.cache_skew_seconds {
            None => None,
            Some(s) => Some(Duration::from_secs(
                u64::try_from(s)
                    .map_err(|_| invalid("obo.cacheSkewSeconds must not be negative".into()))?,
            )),
        };
        Ok(Self {
            endpoint: Endpoint {
                backend: backend.to_owned(),
                step: "on-behalf-of exchange",
                url,
                client: ClientAuth::Post { client_id: cfg.client_id.clone(), secret },
                timeout: DEFAULT_EXCHANGE_TIMEOUT,
            },
            client_id: cfg.client_id.clone(),
            scope,
            skew,
            subject,
            cache: GrantCache::new(backend),
            http,
        })
    }

    /// A copy with another request timeout and a cache of its own.
    pub(super) fn with_timeout(&self, timeout: Duration) -> Self {
        let mut endpoint = self.endpoint.clone();
        endpoint.timeout = timeout;
        Self {
            endpoint,
            client_id: self.client_id.clone(),
            scope: self.scope.clone(),
            skew: self.skew,
            subject: self.subject.clone(),
            http: self.http.clone(),
            cache: GrantCache::new(&self.endpoint.backend),
        }
    }

    pub(super) async fn apply(
        &self,
        caller: &Caller,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, OutgoingAuthError> {
        let assertion = self.subject.resolve(caller, "on-behalf-of exchange").await?;
        let assertion = assertion.expose();
        let key = cache_key(assertion, &[&self.scope]);
        let authorization = self.cache.get(key, self.exchange(assertion)).await?;
        Ok(set_header(request, AUTHORIZATION, authorization))
    }

    async fn exchange(&self, assertion: &str) -> Result<Granted, OutgoingAuthError> {
        let form = [
            ("grant_type", JWT_BEARER_GRANT),
            ("assertion", assertion),
            ("requested_token_use", "on_behalf_of"),
            ("scope", self.scope.as_str()),
        ];
        let answer = self.endpoint.post(&self.http, &form).await?;
        self.endpoint.bearer_grant(&answer, self.skew)
    }
}

/// An `http(s)` URL with a host, or `None`.
pub(super) fn token_url(url: &str) -> Option<reqwest::Url> {
    reqwest::Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

impl fmt::Debug for Obo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Obo")
            .field("token_url", &self.endpoint.url.as_str())
            .field("client_id", &self.client_id)
            .field("client_secret", &"***")
            .field("scope", &self.scope)
            .field("timeout", &self.endpoint.timeout)
            .finish_non_exhaustive()
    }
}
