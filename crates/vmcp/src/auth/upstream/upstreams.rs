//! [`Upstreams`]: the configured upstream IdPs, as the authorization server uses them during a
//! login ([`Federation`]) and as the vault uses them to refresh ([`super::TokenRefresher`]).
//!
//! Invariants: one shared `reqwest::Client`; every request has a timeout and every body read is
//! capped; OIDC metadata is fetched on first use and kept; nothing here stores a token.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use tokio::sync::OnceCell;

use super::http::{self, DEFAULT_UPSTREAM_TIMEOUT};
use super::oidc::Oidc;
use super::settings::{ClientAuthMethod, ProviderKind, ProviderSettings, SettingsError};
use super::token_response::{error_code, parse_tokens};
use super::{AuthorizationRequest, Federation, FederationError, TokenSet, UpstreamIdentity};

/// Prefix of a subject made up from the access token when an OAuth 2.0 upstream has no way to
/// say who the user is (ToolHive's "synthesis mode"): stable only as long as the token.
pub const SYNTHESIZED_SUBJECT_PREFIX: &str = "tk-";

pub(super) struct Provider {
    pub(super) settings: ProviderSettings,
    scopes: Vec<String>,
    oidc: OnceCell<Arc<Oidc>>,
}

/// Where a provider's endpoints are, for one call.
pub(super) struct Endpoints {
    pub(super) authorization: String,
    pub(super) token: String,
    pub(super) client_auth: ClientAuthMethod,
    pub(super) oidc: Option<Arc<Oidc>>,
}

/// The configured upstream IdPs, in configuration order. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Upstreams {
    pub(super) providers: Arc<Vec<Provider>>,
    pub(super) http: reqwest::Client,
    pub(super) timeout: Duration,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("providers", &self.providers.iter().map(|p| &p.settings).collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Upstreams {
    /// Checks the settings and builds the set. No I/O: OIDC discovery happens on first use. A
    /// single upstream with an empty name is called `default`.
    pub fn new(
        settings: Vec<ProviderSettings>,
        http: reqwest::Client,
    ) -> Result<Self, SettingsError> {
        if settings.is_empty() {
            return Err(SettingsError::NoUpstreams);
        }
        let single = settings.len() == 1;
        let mut providers: Vec<Provider> = Vec::with_capacity(settings.len());
        for mut s in settings {
            if single && s.name.trim().is_empty() {
                s.name = "default".into();
            }
            s.validate()?;
            if providers.iter().any(|p| p.settings.name == s.name) {
                return Err(SettingsError::Duplicate(s.name));
            }
            let scopes = s.effective_scopes();
            providers.push(Provider { settings: s, scopes, oidc: OnceCell::new() });
        }
        Ok(Self { providers: Arc::new(providers), http, timeout: DEFAULT_UPSTREAM_TIMEOUT })
    }

    /// Sets the bound on each request to an upstream (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The settings of `upstream`.
    pub fn settings(&self, upstream: &str) -> Option<&ProviderSettings> {
        self.provider(upstream).map(|p| &p.settings)
    }

    pub(super) fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.settings.name == name)
    }

    fn known(&self, name: &str) -> Result<&Provider, FederationError> {
        self.provider(name).ok_or_else(|| FederationError::UnknownUpstream(name.to_string()))
    }

    /// The provider's endpoints (discovering an OIDC upstream on first use).
    pub(super) async fn endpoints(&self, p: &Provider) -> Result<Endpoints, String> {
        let s = &p.settings;
        match &s.kind {
            ProviderKind::OAuth2 { authorization_endpoint, token_endpoint, .. } => Ok(Endpoints {
                authorization: authorization_endpoint.clone(),
                token: token_endpoint.clone(),
                client_auth: client_auth(s, None),
                oidc: None,
            }),
            ProviderKind::Oidc { issuer_url, .. } => {
                let oidc = p
                    .oidc
                    .get_or_try_init(|| async {
                        let d = Oidc::discover(
                            &self.http,
                            issuer_url,
                            &s.client_id,
                            s.insecure_allow_http,
                            self.timeout,
                        )
                        .await?;
                        tracing::debug!(upstream = %s.name, "upstream OIDC metadata discovered");
                        Ok::<_, String>(Arc::new(d))
                    })
                    .await?
                    .clone();
                Ok(Endpoints {
                    authorization: oidc.meta.authorization_endpoint.clone(),
                    token: oidc.meta.token_endpoint.clone(),
                    client_auth: client_auth(s, oidc.meta.auth_methods.as_deref()),
                    oidc: Some(oidc),
                })
            }
        }
    }

    async fn authorization_url_of(
        &self,
        name: &str,
        r: AuthorizationRequest<'_>,
    ) -> Result<String, FederationError> {
        let p = self.known(name)?;
        let s = &p.settings;
        let refused = |reason: &str| FederationError::Refused {
            upstream: name.to_string(),
            reason: reason.to_string(),
        };
        if r.state.is_empty() || r.code_challenge.is_empty() {
            return Err(refused("state and a PKCE code challenge are required"));
        }
        let redirect = redirect_uri(s, r.redirect_uri).ok_or_else(|| refused("no redirect_uri"))?;
        let ep = self.endpoints(p).await.map_err(|e| unavailable(name, e))?;
        let mut url = reqwest::Url::parse(&ep.authorization)
            .map_err(|_| refused("authorization endpoint is not a URL"))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &s.client_id)
                .append_pair("redirect_uri", redirect);
            if !p.scopes.is_empty() {
                q.append_pair("scope", &p.scopes.join(" "));
            }
            q.append_pair("state", r.state)
                .append_pair("code_challenge", r.code_challenge)
                .append_pair("code_challenge_method", "S256");
            if ep.oidc.is_some() && !r.nonce.is_empty() {
                q.append_pair("nonce", r.nonce);
            }
            for (k, v) in &s.additional_authorization_params {
                q.append_pair(k, v);
            }
        }
        Ok(url.into())
    }

    async fn exchange(
        &self,
        name: &str,
        code: &str,
        verifier: &str,
        redirect: &str,
        nonce: &str,
    ) -> Result<(TokenSet, UpstreamIdentity), FederationError> {
        let p = self.known(name)?;
        let s = &p.settings;
        let refused = |reason: String| FederationError::Refused { upstream: name.into(), reason };
        let redirect =
            redirect_uri(s, redirect).ok_or_else(|| refused("no redirect_uri".into()))?;
        if code.is_empty() {
            return Err(refused("no authorization code".into()));
        }
        let ep = self.endpoints(p).await.map_err(|e| unavailable(name, e))?;
        let mut form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.to_string()),
            ("redirect_uri", redirect.to_string()),
        ];
        if !verifier.is_empty() {
            form.push(("code_verifier", verifier.to_string()));
        }
        let req = http::token_request(
            &self.http,
            &ep.token,
            self.timeout,
            ep.client_auth,
            &s.client_id,
            s.client_secret.as_ref(),
            form,
        );
        let resp = req.send().await.map_err(|e| unavailable(name, http::describe(&e)))?;
        let status = resp.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(unavailable(name, format!("token endpoint: HTTP {}", status.as_u16())));
        }
        let body = http::read_json(resp).await;
        let body = match (status.is_success(), body) {
            (true, Ok(b)) if b.get("error").is_none() => b,
            (true, Err(e)) => return Err(unavailable(name, format!("token endpoint: {e}"))),
            (_, Ok(b)) if error_code(&b).is_some() => {
                let code = error_code(&b).unwrap_or_default();
                return Err(refused(format!("token endpoint: {code}")));
            }
            _ => return Err(refused(format!("token endpoint: HTTP {}", status.as_u16()))),
        };
        let tokens = parse_tokens(&body, mapping(s), SystemTime::now())
            .map_err(|e| refused(format!("token endpoint: {e}")))?;
        let identity = self.identity(p, &ep, &tokens, &body, nonce).await?;
        Ok((tokens, identity))
    }
}

pub(super) fn mapping(s: &ProviderSettings) -> Option<&super::settings::TokenResponseMapping> {
    match &s.kind {
        ProviderKind::OAuth2 { token_response_mapping, .. } => token_response_mapping.as_ref(),
        ProviderKind::Oidc { .. } => None,
    }
}

/// The redirect URI of a request: its own, else the configured one.
fn redirect_uri<'a>(s: &'a ProviderSettings, requested: &'a str) -> Option<&'a str> {
    if requested.is_empty() { s.redirect_uri.as_deref() } else { Some(requested) }
}

/// Configured method; else `none` without a secret; else basic, unless the metadata lists
/// `client_secret_post` and not basic.
fn client_auth(s: &ProviderSettings, supported: Option<&[String]>) -> ClientAuthMethod {
    if let Some(m) = s.client_auth {
        return m;
    }
    if s.client_secret.is_none() {
        return ClientAuthMethod::None;
    }
    let has = |m: &str| supported.is_some_and(|l| l.iter().any(|x| x == m));
    if has("client_secret_post") && !has("client_secret_basic") {
        ClientAuthMethod::ClientSecretPost
    } else {
        ClientAuthMethod::ClientSecretBasic
    }
}

pub(super) fn unavailable(upstream: &str, reason: String) -> FederationError {
    FederationError::Unavailable { upstream: upstream.to_string(), reason }
}

impl Federation for Upstreams {
    fn upstreams(&self) -> Vec<String> {
        self.providers.iter().map(|p| p.settings.name.clone()).collect()
    }

    fn authorization_url<'a>(
        &'a self,
        upstream: &'a str,
        request: AuthorizationRequest<'a>,
    ) -> BoxFuture<'a, Result<String, FederationError>> {
        Box::pin(self.authorization_url_of(upstream, request))
    }

    fn exchange_code<'a>(
        &'a self,
        upstream: &'a str,
        code: &'a str,
        code_verifier: &'a str,
        redirect_uri: &'a str,
        nonce: &'a str,
    ) -> BoxFuture<'a, Result<(TokenSet, UpstreamIdentity), FederationError>> {
        Box::pin(self.exchange(upstream, code, code_verifier, redirect_uri, nonce))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::identity::Secret;

    #[test]
    fn client_auth_choice() {
        let mut s = ProviderSettings {
            name: "x".into(),
            kind: ProviderKind::Oidc {
                issuer_url: "https://x".into(),
                subject_claim: None,
                userinfo: None,
            },
            client_id: "c".into(),
            client_secret: None,
            redirect_uri: None,
            scopes: vec![],
            additional_authorization_params: Default::default(),
            client_auth: None,
            insecure_allow_http: false,
        };
        assert_eq!(client_auth(&s, None), ClientAuthMethod::None);
        s.client_secret = Some(Secret::new("s"));
        assert_eq!(client_auth(&s, None), ClientAuthMethod::ClientSecretBasic);
        let post = vec!["client_secret_post".to_string()];
        assert_eq!(client_auth(&s, Some(&post)), ClientAuthMethod::ClientSecretPost);
        let both = vec!["client_secret_post".to_string(), "client_secret_basic".to_string()];
        assert_eq!(client_auth(&s, Some(&both)), ClientAuthMethod::ClientSecretBasic);
        s.client_auth = Some(ClientAuthMethod::ClientSecretPost);
        assert_eq!(client_auth(&s, None), ClientAuthMethod::ClientSecretPost);
    }
}
