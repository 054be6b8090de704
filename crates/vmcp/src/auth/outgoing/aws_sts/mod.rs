//! `aws_sts`: the caller's token is exchanged at AWS STS (`AssumeRoleWithWebIdentity`) for
//! temporary credentials of an IAM role chosen from the caller's claims, and every backend
//! request (POST, GET stream, DELETE) is signed with SigV4 for `region` and `service`, body
//! included.
//!
//! For each request: the identity of the [`Caller`] (for teardown, the principal's latest) gives
//! the claims; [`roles`] picks the role (none: 403) and the role session name (from
//! `sessionNameClaim`); [`sts`] gives cached credentials of (principal, role, session name) or
//! assumes the role with the web identity token — the caller's own, or with vmcp's authorization
//! server the user's upstream access token from the vault, read only on a cache miss; [`sign`]
//! signs the finished request. `Caller::System` never gets here (`OutgoingAuth::apply`).
//!
//! Invariant: no credential outlives its cache entry, which ends before the credentials expire;
//! the web identity token is never stored.

mod matcher;
mod roles;
mod sign;
mod sts;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::grant::{DEFAULT_EXCHANGE_TIMEOUT, cache_key};
use super::upstream_inject::upstream_token;
use super::{OutgoingAuthConfigError, OutgoingAuthError, UpstreamSource};
use crate::auth::Caller;
use crate::auth::current::CurrentIdentities;
use crate::auth::identity::{Identity, Secret};
use crate::config::auth::AwsStsConfig;

pub(crate) use matcher::Matcher as RoleMatcher;
use matcher::Matcher;
pub(crate) use roles::{DEFAULT_SESSION_SECONDS, role_arn_problem, session_duration_problem};
use roles::{Mapping, Roles, Rule};
use sign::Scope;
use sts::{Ask, Sts};

/// Where the web identity token comes from.
pub(super) enum WebIdentity {
    /// The token the caller presented.
    Caller,
    /// The user's current access token at this upstream of vmcp's authorization server.
    Upstream { provider: String, source: UpstreamSource },
}

/// The `aws_sts` strategy of one backend.
pub(super) struct AwsSts {
    backend: String,
    roles: Roles,
    session_name_claim: String,
    duration_seconds: i32,
    scope: Scope,
    identities: Arc<CurrentIdentities>,
    web_identity: Arc<WebIdentity>,
    sts: Sts,
}

impl AwsSts {
    pub(super) fn from_config(
        cfg: &AwsStsConfig,
        backend: &str,
        identities: Arc<CurrentIdentities>,
        web_identity: WebIdentity,
    ) -> Result<Self, OutgoingAuthConfigError> {
        let invalid = |message: String| OutgoingAuthConfigError::Invalid {
            backend: backend.to_owned(),
            message: format!("awsSts.{message}"),
        };
        if cfg.region.trim().is_empty() {
            return Err(invalid("region is required".into()));
        }
        let fallback = cfg.fallback_role_arn.clone().filter(|r| !r.is_empty());
        if let Some(p) = fallback.as_deref().and_then(role_arn_problem) {
            return Err(invalid(format!("fallbackRoleArn: {p}")));
        }
        let mut mappings = Vec::with_capacity(cfg.role_mappings.len());
        for (i, m) in cfg.role_mappings.iter().enumerate() {
            let claim = m.claim.clone().filter(|c| !c.is_empty());
            let matcher = m.matcher.as_deref().filter(|c| !c.is_empty());
            let rule = match (claim, matcher) {
                (Some(c), None) => Rule::Claim(c),
                (None, Some(x)) => Rule::Matcher(
                    Matcher::parse(x)
                        .map_err(|e| invalid(format!("roleMappings[{i}].matcher: {e}")))?,
                ),
                _ => {
                    return Err(invalid(format!(
                        "roleMappings[{i}]: exactly one of claim and matcher is required"
                    )));
                }
            };
            if let Some(p) = role_arn_problem(&m.role_arn) {
                return Err(invalid(format!("roleMappings[{i}].roleArn: {p}")));
            }
            mappings.push(Mapping { rule, role_arn: m.role_arn.clone(), priority: m.priority });
        }
        if mappings.is_empty() && fallback.is_none() {
            return Err(invalid("fallbackRoleArn or roleMappings is required".into()));
        }
        let seconds = cfg.session_duration.unwrap_or(DEFAULT_SESSION_SECONDS);
        if let Some(p) = session_duration_problem(seconds) {
            return Err(invalid(format!("sessionDuration: {p}")));
        }
        let non_empty = |v: &Option<String>, default: &str| {
            v.clone().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| default.to_owned())
        };
        let endpoint = cfg.sts_endpoint.as_deref().filter(|e| !e.is_empty());
        if let Some(e) = endpoint
            && reqwest::Url::parse(e)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                .is_none()
        {
            return Err(invalid(format!("stsEndpoint {e:?} is not an http(s) URL")));
        }
        Ok(Self {
            backend: backend.to_owned(),
            roles: Roles {
                mappings,
                fallback,
                role_claim: non_empty(&cfg.role_claim, roles::DEFAULT_ROLE_CLAIM),
            },
            session_name_claim: non_empty(
                &cfg.session_name_claim,
                roles::DEFAULT_SESSION_NAME_CLAIM,
            ),
            // In range (checked above), so it fits.
            duration_seconds: i32::try_from(seconds).unwrap_or(3600),
            scope: Scope {
                region: cfg.region.trim().to_owned(),
                service: non_empty(&cfg.service, roles::DEFAULT_SERVICE),
            },
            identities,
            web_identity: Arc::new(web_identity),
            sts: Sts::new(backend, cfg.region.trim(), endpoint, DEFAULT_EXCHANGE_TIMEOUT),
        })
    }

    /// A copy with another STS deadline and a cache of its own.
    pub(super) fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            backend: self.backend.clone(),
            roles: self.roles.clone(),
            session_name_claim: self.session_name_claim.clone(),
            duration_seconds: self.duration_seconds,
            scope: self.scope.clone(),
            identities: self.identities.clone(),
            web_identity: self.web_identity.clone(),
            sts: self.sts.with_timeout(timeout),
        }
    }

    pub(super) async fn apply(
        &self,
        caller: &Caller,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, OutgoingAuthError> {
        let backend = &self.backend;
        let identity = self.identities.resolve(caller).ok_or_else(|| {
            OutgoingAuthError::Reauthenticate(format!(
                "aws_sts for backend {backend:?} needs an authenticated caller"
            ))
        })?;
        let role = self.roles.select(&identity.claims).map_err(|e| {
            OutgoingAuthError::Forbidden(format!("aws_sts for backend {backend:?}: {}", e.0))
        })?;
        let claim = &self.session_name_claim;
        let session = roles::session_name(&identity.claims, claim).ok_or_else(|| {
            OutgoingAuthError::Forbidden(format!(
                "aws_sts for backend {backend:?}: the caller's token has no {claim:?} claim \
                 (a non-empty string) to name the session of role {role}"
            ))
        })?;
        let key = cache_key(&identity.issuer, &[&identity.subject, role, &session]);
        let ask =
            Ask { role_arn: role, session_name: &session, duration_seconds: self.duration_seconds };
        let creds = self.sts.credentials(key, ask, self.token(caller, &identity)).await?;
        let (client, built) = request.build_split();
        let mut request = built.map_err(|e| {
            OutgoingAuthError::Unavailable(format!(
                "aws_sts for backend {backend:?}: the request cannot be built: {}",
                e.without_url()
            ))
        })?;
        sign::sign_request(&mut request, &creds, &self.scope, SystemTime::now()).map_err(|e| {
            OutgoingAuthError::Unavailable(format!("aws_sts for backend {backend:?}: {e}"))
        })?;
        Ok(reqwest::RequestBuilder::from_parts(client, request))
    }

    /// The web identity token for `caller`, read when an assumption needs it.
    async fn token(
        &self,
        caller: &Caller,
        identity: &Identity,
    ) -> Result<Secret, OutgoingAuthError> {
        match &*self.web_identity {
            WebIdentity::Caller => Ok(identity.token.clone()),
            WebIdentity::Upstream { provider, source } => {
                upstream_token(caller, &source.issuer, provider, &*source.tokens).await
            }
        }
    }
}

impl fmt::Debug for AwsSts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let subject = match &*self.web_identity {
            WebIdentity::Caller => "caller",
            WebIdentity::Upstream { provider, .. } => provider.as_str(),
        };
        f.debug_struct("AwsSts")
            .field("region", &self.scope.region)
            .field("service", &self.scope.service)
            .field("roles", &self.roles.mappings.len())
            .field("fallback_role_arn", &self.roles.fallback)
            .field("duration_seconds", &self.duration_seconds)
            .field("web_identity", &subject)
            .field("sts_endpoint", &self.sts.endpoint())
            .field("timeout", &self.sts.timeout())
            .finish_non_exhaustive()
    }
}
