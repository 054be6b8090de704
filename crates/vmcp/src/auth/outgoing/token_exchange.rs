//! `token_exchange` (RFC 8693): the caller's token is exchanged at an authorization server for
//! one meant for this backend, which goes out as `Authorization: Bearer`.
//!
//! Results are cached per (SHA-256 of the subject token, audience, scopes, resource) until shortly
//! before the exchanged token expires. Concurrent misses for one key share a single exchange;
//! failures are remembered per key for a few seconds so a failing endpoint is not hammered. The
//! subject token itself is never stored, and two callers never share a result: their tokens
//! differ, and so do their keys. (The request, its bounds and the cache are in [`super::grant`].)

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::AUTHORIZATION;

use super::grant::{
    ClientAuth, DEFAULT_EXCHANGE_TIMEOUT, Endpoint, GrantCache, Granted, Subject, SystemGrant,
    cache_key,
};
use super::{OutgoingAuthConfigError, OutgoingAuthError, resolve_secret, set_header};
use crate::auth::Caller;
use crate::config::TokenExchangeConfig;

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// What is requested: part of the cache key.
#[derive(Debug)]
struct Target {
    audience: Option<String>,
    scopes: Vec<String>,
    resource: Option<String>,
}

#[derive(Clone)]
struct Settings {
    endpoint: Endpoint,
    client_id: String,
    subject_token_type: String,
    target: Arc<Target>,
}

pub(super) struct TokenExchange {
    settings: Settings,
    /// The caller's own token, or with vmcp's authorization server the user's token at an
    /// upstream (from the vault).
    subject: Subject,
    http: reqwest::Client,
    cache: GrantCache<[u8; 32]>,
    /// The gateway's own token for `Caller::System` work, with client credentials.
    system: Option<SystemGrant>,
}

impl TokenExchange {
    pub(super) fn from_config(
        cfg: &TokenExchangeConfig,
        backend: &str,
        subject: Subject,
        http: reqwest::Client,
    ) -> Result<Self, OutgoingAuthConfigError> {
        let invalid = |message: String| OutgoingAuthConfigError::Invalid {
            backend: backend.to_owned(),
            message,
        };
        let token_url = reqwest::Url::parse(&cfg.token_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| {
                invalid(format!("tokenExchange.tokenUrl {:?} is not an http(s) URL", cfg.token_url))
            })?;
        let has_secret = cfg.client_secret.is_some() || cfg.client_secret_env.is_some();
        // ToolHive: client authentication only with both an id and a secret; without a client
        // id the exchange carries none, and a secret without an id is a mistake.
        let client = match (cfg.client_id.trim().is_empty(), has_secret) {
            (true, true) => {
                return Err(invalid(
                    "tokenExchange.clientSecret/clientSecretEnv needs tokenExchange.clientId"
                        .into(),
                ));
            }
            (_, false) => ClientAuth::None,
            (false, true) => {
                let secret = resolve_secret(
                    backend,
                    cfg.client_secret.as_ref(),
                    cfg.client_secret_env.as_deref(),
                    "tokenExchange.clientSecret",
                    "tokenExchange.clientSecretEnv",
                )?;
                ClientAuth::basic(&cfg.client_id, &secret).ok_or_else(|| {
                    invalid(
                        "tokenExchange.clientId or the client secret cannot be sent in a header"
                            .into(),
                    )
                })?
            }
        };
        let subject_token_type = cfg
            .subject_token_urn()
            .map_err(|e| invalid(format!("tokenExchange.subjectTokenType: {e}")))?;
        let settings = Settings {
            endpoint: Endpoint {
                backend: backend.to_owned(),
                step: "token exchange",
                url: token_url,
                client,
                timeout: DEFAULT_EXCHANGE_TIMEOUT,
            },
            client_id: cfg.client_id.clone(),
            subject_token_type: subject_token_type.to_owned(),
            target: Arc::new(Target {
                audience: cfg.audience.clone(),
                scopes: cfg.scopes.clone(),
                resource: cfg.resource.clone(),
            }),
        };
        Ok(Self::new(settings, subject, http))
    }

    fn new(settings: Settings, subject: Subject, http: reqwest::Client) -> Self {
        let cache = GrantCache::new(&settings.endpoint.backend);
        let t = &settings.target;
        let system =
            SystemGrant::new(&settings.endpoint, t.audience.as_deref(), &t.scopes.join(" "));
        Self { settings, subject, http, cache, system }
    }

    /// A copy with another request timeout and a cache of its own.
    pub(super) fn with_timeout(&self, timeout: Duration) -> Self {
        let mut settings = self.settings.clone();
        settings.endpoint.timeout = timeout;
        Self::new(settings, self.subject.clone(), self.http.clone())
    }

    /// The gateway's own grant for `Caller::System` work, if it has client credentials, and the
    /// client to ask it with.
    pub(super) fn system_grant(&self) -> (Option<&SystemGrant>, &reqwest::Client) {
        (self.system.as_ref(), &self.http)
    }

    pub(super) async fn apply(
        &self,
        caller: &Caller,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, OutgoingAuthError> {
        let subject = self.subject.resolve(caller, "token exchange").await?;
        let subject = subject.expose();
        // One strategy serves one backend, so the target is the same for every key; it is in
        // the key all the same, so a key always says what it is for.
        let t = &self.settings.target;
        let scopes = t.scopes.join(" ");
        let target =
            [t.audience.as_deref().unwrap_or(""), &scopes, t.resource.as_deref().unwrap_or("")];
        let key = cache_key(subject, &target);
        let authorization = self.cache.get(key, self.exchange(subject)).await?;
        Ok(set_header(request, AUTHORIZATION, authorization))
    }

    /// One RFC 8693 exchange.
    async fn exchange(&self, subject: &str) -> Result<Granted, OutgoingAuthError> {
        let s = &self.settings;
        let scope = s.target.scopes.join(" ");
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", GRANT_TYPE),
            ("subject_token", subject),
            ("subject_token_type", &s.subject_token_type),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
        ];
        if let Some(a) = &s.target.audience {
            form.push(("audience", a));
        }
        if !scope.is_empty() {
            form.push(("scope", &scope));
        }
        if let Some(r) = &s.target.resource {
            form.push(("resource", r));
        }
        let answer = s.endpoint.post(&self.http, &form).await?;
        s.endpoint.bearer_grant(&answer, None)
    }
}

impl fmt::Debug for TokenExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        f.debug_struct("TokenExchange")
            .field("token_url", &s.endpoint.url.as_str())
            .field("client_id", &s.client_id)
            .field("client_auth", &!matches!(s.endpoint.client, ClientAuth::None))
            .field("audience", &s.target.audience)
            .field("scopes", &s.target.scopes)
            .field("resource", &s.target.resource)
            .field("timeout", &s.endpoint.timeout)
            .finish_non_exhaustive()
    }
}
