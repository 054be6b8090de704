//! Outgoing authentication: the credentials put on one HTTP request to a backend, resolved from the
//! [`Caller`] of that request at the moment it is sent.
//!
//! Invariant: strategies are stateless with respect to callers; any cache they keep is keyed by
//! the caller's own credential, so two callers never share a result. No strategy stores a
//! caller's credential anywhere else: the token of a request is read from the [`Caller`] (or, for
//! teardown, from [`CurrentIdentities`]) each time a request is sent.

mod aws_sts;
mod grant;
mod header_injection;
mod obo;
mod passthrough;
mod token_exchange;
mod upstream_inject;
mod xaa;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::Caller;
use super::current::CurrentIdentities;
use super::identity::Secret;
use crate::config::{BackendAuthConfig, BackendAuthKind, OutgoingAuthConfig};

use aws_sts::{AwsSts, WebIdentity};
use grant::Subject;
use header_injection::HeaderInjection;
use obo::Obo;
use passthrough::Passthrough;
use token_exchange::TokenExchange;
use upstream_inject::UpstreamInject;
use xaa::Xaa;

pub(crate) use aws_sts::{
    RoleMatcher as AwsRoleMatcher, role_arn_problem as aws_role_arn_problem,
    session_duration_problem as aws_session_duration_problem,
};
pub use grant::DEFAULT_EXCHANGE_TIMEOUT;
pub(crate) use xaa::{
    ID_TOKEN_TYPE as XAA_SUBJECT_TOKEN_TYPE, endpoint_problem as xaa_url_problem,
};

/// How the gateway authenticates to one backend. Cheap to clone; `Debug` never shows a secret.
#[derive(Clone, Default)]
pub struct OutgoingAuth(Strategy);

#[derive(Clone, Default)]
enum Strategy {
    #[default]
    Unauthenticated,
    HeaderInjection(Arc<HeaderInjection>),
    Passthrough(Arc<Passthrough>),
    TokenExchange(Arc<TokenExchange>),
    UpstreamInject(Arc<UpstreamInject>),
    Obo(Arc<Obo>),
    Xaa(Arc<Xaa>),
    AwsSts(Arc<AwsSts>),
}

/// Where user-bound strategies find a user's upstream tokens: the vault of vmcp's embedded
/// authorization server. Absent when no `authserver-config.yaml` is loaded.
#[derive(Clone)]
pub struct UpstreamSource {
    /// Issuer of vmcp's own tokens: only its users have upstream tokens.
    pub issuer: String,
    /// The vault.
    pub tokens: Arc<dyn crate::auth::upstream::UpstreamTokens>,
    /// The upstream `token_exchange` and `xaa` use when `subjectProviderName` is unset.
    pub default_provider: String,
}

/// What building a strategy may draw on.
#[derive(Clone)]
pub struct Sources {
    /// Latest identity per principal (for teardown).
    pub identities: Arc<CurrentIdentities>,
    /// For token exchange.
    pub http: reqwest::Client,
    /// The upstream token vault, when vmcp runs its authorization server.
    pub upstream: Option<UpstreamSource>,
}

/// Why credentials could not be resolved for a request. Messages never contain a token or secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OutgoingAuthError {
    /// The caller must authenticate again (the client gets a 401).
    #[error("the caller must re-authenticate: {0}")]
    Reauthenticate(String),
    /// The credential service failed.
    #[error("backend credentials unavailable: {0}")]
    Unavailable(String),
    /// The user's upstream identity provider cannot refresh their token right now (after
    /// retries); the user stays logged in and the client gets HTTP 503.
    #[error("{0}")]
    UpstreamUnavailable(String),
    /// The caller is authenticated but may not reach this backend (no role maps to its claims,
    /// or the credential service refused it); logging in again would not help: HTTP 403.
    #[error("access denied: {0}")]
    Forbidden(String),
}

/// Why a backend's outgoing authentication cannot be built from its configuration. Messages name
/// the backend and the key or environment variable, never a secret value.
#[derive(Debug, thiserror::Error)]
pub enum OutgoingAuthConfigError {
    /// The strategy's own block is missing (`headerInjection`, `tokenExchange`, `obo`, `xaa`).
    #[error("backend {backend:?}: outgoing auth type {kind} needs a `{key}` block")]
    MissingBlock {
        /// Backend name.
        backend: String,
        /// The strategy type.
        kind: &'static str,
        /// The missing key.
        key: &'static str,
    },
    /// A secret is given neither inline nor by environment variable, or both ways.
    #[error("backend {backend:?}: {problem}")]
    Secret {
        /// Backend name.
        backend: String,
        /// What is wrong.
        problem: String,
    },
    /// The environment variable named by an `*Env` key is unset or unusable.
    #[error("backend {backend:?}: environment variable {var} {problem}")]
    Env {
        /// Backend name.
        backend: String,
        /// Variable name.
        var: String,
        /// What is wrong with it (never its value).
        problem: &'static str,
    },
    /// Any other invalid setting.
    #[error("backend {backend:?}: {message}")]
    Invalid {
        /// Backend name.
        backend: String,
        /// What is wrong.
        message: String,
    },
}

impl OutgoingAuth {
    /// Compatibility alias of [`OutgoingAuth::unauthenticated`] for code written when this type
    /// was an enum.
    #[allow(non_upper_case_globals)]
    pub const Unauthenticated: OutgoingAuth = OutgoingAuth(Strategy::Unauthenticated);

    /// No credentials.
    pub fn unauthenticated() -> Self {
        Self(Strategy::Unauthenticated)
    }

    /// Builds the strategy `cfg` describes for `backend`. Secrets given by environment variable
    /// are read here, once.
    pub fn from_config(
        cfg: &BackendAuthConfig,
        backend: &str,
        sources: &Sources,
    ) -> Result<Self, OutgoingAuthConfigError> {
        let identities = sources.identities.clone();
        let http = sources.http.clone();
        let missing = |kind, key| OutgoingAuthConfigError::MissingBlock {
            backend: backend.to_owned(),
            kind,
            key,
        };
        Ok(Self(match cfg.kind {
            BackendAuthKind::Unauthenticated => Strategy::Unauthenticated,
            BackendAuthKind::HeaderInjection => {
                let hi = cfg
                    .header_injection
                    .as_ref()
                    .ok_or_else(|| missing("header_injection", "headerInjection"))?;
                Strategy::HeaderInjection(Arc::new(HeaderInjection::from_config(hi, backend)?))
            }
            BackendAuthKind::Passthrough => {
                Strategy::Passthrough(Arc::new(Passthrough::new(identities)))
            }
            BackendAuthKind::TokenExchange => {
                let te = cfg
                    .token_exchange
                    .as_ref()
                    .ok_or_else(|| missing("token_exchange", "tokenExchange"))?;
                // With an authorization server, the subject is the user's upstream token
                // (`subjectProviderName`, else the first upstream), as in ToolHive.
                let subject = match &sources.upstream {
                    Some(u) => Subject::UpstreamAccess {
                        provider: named_or_first(te.subject_provider_name.as_deref(), u),
                        source: u.clone(),
                    },
                    None => Subject::Caller(identities),
                };
                Strategy::TokenExchange(Arc::new(TokenExchange::from_config(
                    te, backend, subject, http,
                )?))
            }
            BackendAuthKind::Obo => {
                let o = cfg.obo.as_ref().ok_or_else(|| missing("obo", "obo"))?;
                // As in ToolHive: the caller's own token, unless an upstream is named (no
                // first-upstream default for obo).
                let subject =
                    match o.subject_token_provider_name.as_deref().filter(|p| !p.is_empty()) {
                        None => Subject::Caller(identities),
                        Some(provider) => match &sources.upstream {
                            Some(u) => Subject::UpstreamAccess {
                                provider: provider.to_owned(),
                                source: u.clone(),
                            },
                            None => {
                                return Err(OutgoingAuthConfigError::Invalid {
                                    backend: backend.to_owned(),
                                    message: "obo.subjectTokenProviderName needs the embedded \
                                          authorization server (authserver-config.yaml beside \
                                          the config file)"
                                        .to_owned(),
                                });
                            }
                        },
                    };
                Strategy::Obo(Arc::new(Obo::from_config(o, backend, subject, http)?))
            }
            BackendAuthKind::Xaa => {
                let x = cfg.xaa.as_ref().ok_or_else(|| missing("xaa", "xaa"))?;
                // With an authorization server, the user's ID token from an upstream (as in
                // ToolHive); without one, the token the caller presented.
                let subject = match &sources.upstream {
                    Some(u) => Subject::UpstreamId {
                        provider: named_or_first(x.subject_provider_name.as_deref(), u),
                        source: u.clone(),
                    },
                    None if x.subject_provider_name.as_deref().is_some_and(|p| !p.is_empty()) => {
                        return Err(OutgoingAuthConfigError::Invalid {
                            backend: backend.to_owned(),
                            message: "xaa.subjectProviderName needs the embedded authorization \
                                      server (authserver-config.yaml beside the config file)"
                                .to_owned(),
                        });
                    }
                    None => Subject::Caller(identities),
                };
                Strategy::Xaa(Arc::new(Xaa::from_config(x, backend, subject, http)?))
            }
            BackendAuthKind::AwsSts => {
                let a = cfg.aws_sts.as_ref().ok_or_else(|| missing("aws_sts", "awsSts"))?;
                // As `token_exchange`: with an authorization server, the user's upstream token
                // (`subjectProviderName`, else the first upstream); else the caller's own.
                let web_identity = match &sources.upstream {
                    Some(u) => WebIdentity::Upstream {
                        provider: named_or_first(a.subject_provider_name.as_deref(), u),
                        source: u.clone(),
                    },
                    None if a.subject_provider_name.as_deref().is_some_and(|p| !p.is_empty()) => {
                        return Err(OutgoingAuthConfigError::Invalid {
                            backend: backend.to_owned(),
                            message: "awsSts.subjectProviderName needs the embedded \
                                      authorization server (authserver-config.yaml beside the \
                                      config file)"
                                .to_owned(),
                        });
                    }
                    None => WebIdentity::Caller,
                };
                Strategy::AwsSts(Arc::new(AwsSts::from_config(
                    a,
                    backend,
                    identities,
                    web_identity,
                )?))
            }
            BackendAuthKind::UpstreamInject => {
                let Some(upstream) = &sources.upstream else {
                    return Err(OutgoingAuthConfigError::Invalid {
                        backend: backend.to_owned(),
                        message: "upstream_inject needs the embedded authorization server \
                                  (authserver-config.yaml beside the config file)"
                            .to_owned(),
                    });
                };
                let provider = cfg
                    .upstream_inject
                    .as_ref()
                    .map(|u| u.provider_name.clone())
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| crate::config::authserver::DEFAULT_UPSTREAM_NAME.to_owned());
                Strategy::UpstreamInject(Arc::new(UpstreamInject::new(
                    provider,
                    upstream.issuer.clone(),
                    upstream.tokens.clone(),
                )))
            }
        }))
    }

    /// The same strategy with another bound on each token endpoint request (`token_exchange`,
    /// `obo`, each step of `xaa`, the STS call of `aws_sts`; default
    /// [`DEFAULT_EXCHANGE_TIMEOUT`]); other strategies are returned unchanged. The result has a
    /// cache of its own.
    pub fn with_exchange_timeout(self, timeout: Duration) -> Self {
        match &self.0 {
            Strategy::TokenExchange(te) => {
                Self(Strategy::TokenExchange(Arc::new(te.with_timeout(timeout))))
            }
            Strategy::Obo(o) => Self(Strategy::Obo(Arc::new(o.with_timeout(timeout)))),
            Strategy::Xaa(x) => Self(Strategy::Xaa(Arc::new(x.with_timeout(timeout)))),
            Strategy::AwsSts(a) => Self(Strategy::AwsSts(Arc::new(a.with_timeout(timeout)))),
            _ => self,
        }
    }

    /// Whether the credentials sent are derived from the caller's own identity (`passthrough`,
    /// `token_exchange`, `upstream_inject`, `obo`, `xaa`, `aws_sts`). Such a backend may refuse to list
    /// anything without a user's token, or list different things per user, so it is discovered
    /// per principal (`catalog::principal`), never as `Caller::System`.
    pub fn is_user_bound(&self) -> bool {
        match &self.0 {
            Strategy::Unauthenticated | Strategy::HeaderInjection(_) => false,
            Strategy::Passthrough(_)
            | Strategy::TokenExchange(_)
            | Strategy::UpstreamInject(_)
            | Strategy::Obo(_)
            | Strategy::Xaa(_)
            | Strategy::AwsSts(_) => true,
        }
    }

    /// Adds this strategy's credentials for `caller` to an outgoing request. Call it last, on
    /// the finished request (method, URL, headers, body): `aws_sts` signs all of them, so
    /// anything changed afterwards breaks the signature.
    pub async fn apply(
        &self,
        caller: &Caller,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, OutgoingAuthError> {
        if matches!(caller, Caller::System) && self.is_user_bound() {
            // Background work (discovery, probes, notification streams) has no user to act for:
            // a user-bound strategy sends no credentials rather than borrowing anyone's, or,
            // where the strategy has client credentials, the gateway's own token (as ToolHive's
            // health checks do).
            let (grant, http) = match &self.0 {
                Strategy::TokenExchange(t) => t.system_grant(),
                Strategy::Xaa(x) => x.system_grant(),
                _ => return Ok(request),
            };
            return Ok(grant::SystemGrant::apply(grant, http, request).await);
        }
        match &self.0 {
            Strategy::Unauthenticated => Ok(request),
            Strategy::HeaderInjection(h) => Ok(h.apply(request)),
            Strategy::Passthrough(p) => Ok(p.apply(caller, request)),
            Strategy::TokenExchange(t) => t.apply(caller, request).await,
            Strategy::UpstreamInject(u) => u.apply(caller, request).await,
            Strategy::Obo(o) => o.apply(caller, request).await,
            Strategy::Xaa(x) => x.apply(caller, request).await,
            // Signs the finished request, so it must stay the last change to it.
            Strategy::AwsSts(a) => a.apply(caller, request).await,
        }
    }
}

impl fmt::Debug for OutgoingAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Strategy::Unauthenticated => f.write_str("OutgoingAuth::Unauthenticated"),
            Strategy::HeaderInjection(h) => write!(f, "OutgoingAuth::{h:?}"),
            Strategy::Passthrough(p) => write!(f, "OutgoingAuth::{p:?}"),
            Strategy::TokenExchange(t) => write!(f, "OutgoingAuth::{t:?}"),
            Strategy::UpstreamInject(u) => write!(f, "OutgoingAuth::{u:?}"),
            Strategy::Obo(o) => write!(f, "OutgoingAuth::{o:?}"),
            Strategy::Xaa(x) => write!(f, "OutgoingAuth::{x:?}"),
            Strategy::AwsSts(a) => write!(f, "OutgoingAuth::{a:?}"),
        }
    }
}

/// The strategy for `backend`: its entry in `backends`, else `default`, else none.
pub fn for_backend(
    cfg: &OutgoingAuthConfig,
    backend: &str,
    sources: &Sources,
) -> Result<OutgoingAuth, OutgoingAuthConfigError> {
    match cfg.backends.get(backend).or(cfg.default.as_ref()) {
        Some(b) => OutgoingAuth::from_config(b, backend, sources),
        None => Ok(OutgoingAuth::unauthenticated()),
    }
}

/// `name` unless empty, else the authorization server's first upstream.
fn named_or_first(name: Option<&str>, upstream: &UpstreamSource) -> String {
    name.filter(|p| !p.is_empty()).unwrap_or(&upstream.default_provider).to_owned()
}

/// A secret given inline (`inline_key`) or by environment variable (`env_key`): exactly one.
fn resolve_secret(
    backend: &str,
    inline: Option<&Secret>,
    env: Option<&str>,
    inline_key: &str,
    env_key: &str,
) -> Result<Secret, OutgoingAuthConfigError> {
    let err =
        |problem: String| OutgoingAuthConfigError::Secret { backend: backend.to_owned(), problem };
    match (inline, env) {
        (Some(_), Some(_)) => {
            Err(err(format!("give either `{inline_key}` or `{env_key}`, not both")))
        }
        (None, None) => Err(err(format!("`{inline_key}` or `{env_key}` is required"))),
        (Some(s), None) => Ok(s.clone()),
        (None, Some(var)) => {
            let env_err = |problem| OutgoingAuthConfigError::Env {
                backend: backend.to_owned(),
                var: var.to_owned(),
                problem,
            };
            match std::env::var(var) {
                Ok(v) if v.is_empty() => Err(env_err("is empty")),
                Ok(v) => Ok(Secret::new(v)),
                Err(std::env::VarError::NotPresent) => Err(env_err("is not set")),
                Err(std::env::VarError::NotUnicode(_)) => Err(env_err("is not valid UTF-8")),
            }
        }
    }
}

/// Sets (replaces, never appends) one header on `request`.
fn set_header(
    request: reqwest::RequestBuilder,
    name: HeaderName,
    value: HeaderValue,
) -> reqwest::RequestBuilder {
    let mut headers = HeaderMap::with_capacity(1);
    headers.insert(name, value);
    // `RequestBuilder::headers` replaces existing values of the same name.
    request.headers(headers)
}

/// `Bearer <token>` as a sensitive header value; `None` if the token cannot be a header value.
fn bearer(token: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::try_from(format!("Bearer {token}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenExchangeConfig;

    fn sources(ids: &Arc<CurrentIdentities>, http: &reqwest::Client) -> Sources {
        Sources { identities: ids.clone(), http: http.clone(), upstream: None }
    }

    #[test]
    fn resolution_order() {
        let ids = Arc::new(CurrentIdentities::default());
        let http = reqwest::Client::new();
        let mut cfg = OutgoingAuthConfig::default();
        let a = for_backend(&cfg, "x", &sources(&ids, &http)).unwrap();
        assert_eq!(format!("{a:?}"), "OutgoingAuth::Unauthenticated");

        cfg.default = Some(BackendAuthConfig {
            kind: BackendAuthKind::Passthrough,
            header_injection: None,
            token_exchange: None,
            upstream_inject: None,
            obo: None,
            xaa: None,
            aws_sts: None,
        });
        cfg.backends.insert(
            "x".into(),
            BackendAuthConfig {
                kind: BackendAuthKind::Unauthenticated,
                header_injection: None,
                token_exchange: None,
                upstream_inject: None,
                obo: None,
                xaa: None,
                aws_sts: None,
            },
        );
        let x = for_backend(&cfg, "x", &sources(&ids, &http)).unwrap();
        assert_eq!(format!("{x:?}"), "OutgoingAuth::Unauthenticated");
        assert!(!x.is_user_bound());
        let y = for_backend(&cfg, "y", &sources(&ids, &http)).unwrap();
        assert_eq!(format!("{y:?}"), "OutgoingAuth::Passthrough");
        assert!(y.is_user_bound());
    }

    #[test]
    fn missing_blocks_and_env() {
        let ids = Arc::new(CurrentIdentities::default());
        let http = reqwest::Client::new();
        let cfg = BackendAuthConfig {
            kind: BackendAuthKind::TokenExchange,
            header_injection: None,
            token_exchange: None,
            upstream_inject: None,
            obo: None,
            xaa: None,
            aws_sts: None,
        };
        let e = OutgoingAuth::from_config(&cfg, "b", &sources(&ids, &http)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "backend \"b\": outgoing auth type token_exchange needs a `tokenExchange` block"
        );
        let cfg = BackendAuthConfig {
            kind: BackendAuthKind::TokenExchange,
            header_injection: None,
            token_exchange: Some(TokenExchangeConfig {
                token_url: "http://idp/token".into(),
                client_id: "gw".into(),
                client_secret: None,
                client_secret_env: Some("VMCP_TEST_UNSET_SECRET_VAR".into()),
                audience: None,
                scopes: vec![],
                subject_token_type: None,
                resource: None,
                subject_provider_name: None,
            }),
            upstream_inject: None,
            obo: None,
            xaa: None,
            aws_sts: None,
        };
        let e = OutgoingAuth::from_config(&cfg, "b", &sources(&ids, &http)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "backend \"b\": environment variable VMCP_TEST_UNSET_SECRET_VAR is not set"
        );
    }
}
