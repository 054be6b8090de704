//! `xaa`: cross-app access with an identity assertion authorization grant
//! (draft-ietf-oauth-identity-assertion-authz-grant, "ID-JAG"), as ToolHive's `xaa` strategy
//! does it, in two steps per user:
//!
//! 1. IdP exchange (RFC 8693) at `idpTokenUrl`: the user's ID token
//!    (`subject_token_type=urn:ietf:params:oauth:token-type:id_token`) for an ID-JAG
//!    (`requested_token_type=urn:ietf:params:oauth:token-type:id-jag`, `audience` = the backend's
//!    authorization server, `resource` = the backend, `scope`). The answer must say
//!    `issued_token_type` ID-JAG and `token_type` `N_A`, and the assertion must be a JWT whose
//!    single `aud` is the requested audience and whose `resource` contains the requested one.
//! 2. Target grant (RFC 7523) at `targetTokenUrl`: `grant_type=...:jwt-bearer`,
//!    `assertion=<ID-JAG>`, `scope`, for the access token the backend gets as
//!    `Authorization: Bearer`.
//!
//! The subject is the user's ID token from the upstream `subjectProviderName` (else the first) of
//! vmcp's authorization server, read from the vault per request; without an authorization server,
//! the token the caller presented (which must then be an ID token). Both steps authenticate the
//! gateway with HTTP Basic when a client id is configured. The access token is cached per SHA-256
//! of (subject, audience, resource, scopes) until shortly before it expires, one flight per key
//! covering both steps, failures remembered for 5 s (see [`super::grant`]); the ID-JAG is not
//! kept.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use http::header::AUTHORIZATION;

use super::grant::{
    Answer, ClientAuth, DEFAULT_EXCHANGE_TIMEOUT, Endpoint, GrantCache, Granted, JWT_BEARER_GRANT,
    Subject, SystemGrant, cache_key,
};
use super::{OutgoingAuthConfigError, OutgoingAuthError, resolve_secret, set_header};
use crate::auth::Caller;
use crate::auth::identity::Secret;
use crate::config::auth::XaaConfig;

const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The only subject token type accepted (ToolHive's rule).
pub(crate) const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
const ID_JAG_TYPE: &str = "urn:ietf:params:oauth:token-type:id-jag";
const ID_JAG_JWT_TYPE: &str = "oauth-id-jag+jwt";

/// The cross-app access strategy of one backend.
pub(super) struct Xaa {
    idp: Endpoint,
    target: Endpoint,
    idp_client_id: Option<String>,
    target_client_id: Option<String>,
    audience: String,
    resource: Option<String>,
    /// `scopes`, space-joined; empty when none.
    scope: String,
    subject: Subject,
    http: reqwest::Client,
    cache: GrantCache<[u8; 32]>,
    /// The gateway's own token at the target authorization server for `Caller::System` work,
    /// with target client credentials.
    system: Option<SystemGrant>,
}

impl Xaa {
    pub(super) fn from_config(
        cfg: &XaaConfig,
        backend: &str,
        subject: Subject,
        http: reqwest::Client,
    ) -> Result<Self, OutgoingAuthConfigError> {
        let invalid = |message: String| OutgoingAuthConfigError::Invalid {
            backend: backend.to_owned(),
            message,
        };
        let idp_url = endpoint_url(&cfg.idp_token_url, false)
            .map_err(|why| invalid(format!("xaa.idpTokenUrl: {why}")))?;
        let target_url = endpoint_url(&cfg.target_token_url, cfg.insecure_target_token_url)
            .map_err(|why| invalid(format!("xaa.targetTokenUrl: {why}")))?;
        if cfg.target_audience.trim().is_empty() {
            return Err(invalid("xaa.targetAudience is required".into()));
        }
        if cfg.subject_token_type.as_deref().is_some_and(|t| !t.is_empty() && t != ID_TOKEN_TYPE) {
            return Err(invalid(format!("xaa.subjectTokenType must be {ID_TOKEN_TYPE}")));
        }
        let idp_client = client_auth(
            backend,
            cfg.idp_client_id.as_deref(),
            cfg.idp_client_secret.as_ref(),
            cfg.idp_client_secret_env.as_deref(),
            ["xaa.idpClientId", "xaa.idpClientSecret", "xaa.idpClientSecretEnv"],
        )?;
        let target_client = client_auth(
            backend,
            cfg.target_client_id.as_deref(),
            cfg.target_client_secret.as_ref(),
            cfg.target_client_secret_env.as_deref(),
            ["xaa.targetClientId", "xaa.targetClientSecret", "xaa.targetClientSecretEnv"],
        )?;
        let endpoint = |step, url, client| Endpoint {
            backend: backend.to_owned(),
            step,
            url,
            client,
            timeout: DEFAULT_EXCHANGE_TIMEOUT,
        };
        let id = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        let target = endpoint("xaa step 2 (target grant)", target_url, target_client);
        let scope = cfg.scopes.join(" ");
        Ok(Self {
            system: SystemGrant::new(&target, Some(&cfg.target_audience), &scope),
            idp: endpoint("xaa step 1 (IdP exchange)", idp_url, idp_client),
            target,
            idp_client_id: id(&cfg.idp_client_id),
            target_client_id: id(&cfg.target_client_id),
            audience: cfg.target_audience.clone(),
            resource: cfg.target_resource.clone().filter(|r| !r.is_empty()),
            scope,
            subject,
            cache: GrantCache::new(backend),
            http,
        })
    }

    /// A copy with another bound on each step's request and a cache of its own.
    pub(super) fn with_timeout(&self, timeout: Duration) -> Self {
        let (mut idp, mut target) = (self.idp.clone(), self.target.clone());
        idp.timeout = timeout;
        target.timeout = timeout;
        Self {
            system: SystemGrant::new(&target, Some(&self.audience), &self.scope),
            idp,
            target,
            idp_client_id: self.idp_client_id.clone(),
            target_client_id: self.target_client_id.clone(),
            audience: self.audience.clone(),
            resource: self.resource.clone(),
            scope: self.scope.clone(),
            subject: self.subject.clone(),
            http: self.http.clone(),
            cache: GrantCache::new(&self.idp.backend),
        }
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
        let subject = self.subject.resolve(caller, "cross-app access (xaa)").await?;
        let subject = subject.expose();
        let target = [self.audience.as_str(), self.resource.as_deref().unwrap_or(""), &self.scope];
        let key = cache_key(subject, &target);
        let authorization = self.cache.get(key, self.grant(subject)).await?;
        Ok(set_header(request, AUTHORIZATION, authorization))
    }

    /// Both steps.
    async fn grant(&self, subject: &str) -> Result<Granted, OutgoingAuthError> {
        let assertion = self.id_jag(subject).await?;
        let mut form = vec![("grant_type", JWT_BEARER_GRANT), ("assertion", assertion.expose())];
        if !self.scope.is_empty() {
            form.push(("scope", &self.scope));
        }
        let answer = self.target.post(&self.http, &form).await?;
        if self.target.text(&answer, "token_type").is_none() {
            return Err(self.target.unavailable("the response has no token_type"));
        }
        self.target.bearer_grant(&answer, None)
    }

    /// Step 1: the ID-JAG for `subject`, checked.
    async fn id_jag(&self, subject: &str) -> Result<Secret, OutgoingAuthError> {
        let mut form = vec![
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("subject_token", subject),
            ("subject_token_type", ID_TOKEN_TYPE),
            ("requested_token_type", ID_JAG_TYPE),
            ("audience", &self.audience),
        ];
        if !self.scope.is_empty() {
            form.push(("scope", &self.scope));
        }
        if let Some(r) = &self.resource {
            form.push(("resource", r));
        }
        let answer = self.idp.post(&self.http, &form).await?;
        self.check_id_jag(&answer).map(Secret::new)
    }

    /// The assertion of a step 1 answer, if the answer is an ID-JAG for what was requested.
    fn check_id_jag<'a>(&self, answer: &'a Answer) -> Result<&'a str, OutgoingAuthError> {
        let idp = &self.idp;
        if idp.text(answer, "issued_token_type") != Some(ID_JAG_TYPE) {
            return Err(idp.unavailable(format_args!(
                "the IdP did not issue an ID-JAG (issued_token_type must be {ID_JAG_TYPE})"
            )));
        }
        if !idp.text(answer, "token_type").is_some_and(|t| t.eq_ignore_ascii_case("N_A")) {
            return Err(idp.unavailable("the IdP's answer must have token_type N_A"));
        }
        let assertion = idp
            .text(answer, "access_token")
            .ok_or_else(|| idp.unavailable("the IdP returned no assertion"))?;
        let (header, claims) =
            jwt_parts(assertion).ok_or_else(|| idp.unavailable("the ID-JAG is not a JWT"))?;
        if header
            .get("typ")
            .and_then(|t| t.as_str())
            .is_none_or(|t| !t.eq_ignore_ascii_case(ID_JAG_JWT_TYPE))
        {
            // The issuer's duty, checked by the target authorization server: noted only.
            tracing::debug!(backend = %idp.backend, "the ID-JAG's typ is not {ID_JAG_JWT_TYPE}");
        }
        let aud_ok = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => *a == self.audience,
            Some(serde_json::Value::Array(a)) => {
                a.len() == 1 && a[0].as_str() == Some(self.audience.as_str())
            }
            _ => false,
        };
        if !aud_ok {
            return Err(idp.unavailable(format_args!(
                "the ID-JAG's aud is not the single audience requested, {:?}",
                self.audience
            )));
        }
        if let Some(want) = &self.resource {
            let has = match claims.get("resource") {
                Some(serde_json::Value::String(r)) => r == want,
                Some(serde_json::Value::Array(rs)) => rs.iter().any(|r| r.as_str() == Some(want)),
                _ => false,
            };
            if !has {
                return Err(idp.unavailable(format_args!(
                    "the ID-JAG's resource does not contain the resource requested, {want:?}"
                )));
            }
        }
        Ok(assertion)
    }
}

/// The decoded header and claims of a compact JWS, unverified (the target authorization server
/// verifies it; this only checks it was minted for what was asked).
fn jwt_parts(jwt: &str) -> Option<(serde_json::Value, serde_json::Map<String, serde_json::Value>)> {
    let mut parts = jwt.split('.');
    let (h, c, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let decode = |s: &str| {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .ok()?;
        serde_json::from_slice::<serde_json::Value>(&bytes).ok()
    };
    let header = decode(h).filter(|v| v.is_object())?;
    match decode(c)? {
        serde_json::Value::Object(claims) => Some((header, claims)),
        _ => None,
    }
}

/// Why `url` cannot be an xaa token endpoint, if it cannot: `https`, or `http` on a loopback host
/// (any host with `insecure`); a host; no fragment or credentials (ToolHive's rules).
pub(crate) fn endpoint_problem(url: &str, insecure: bool) -> Option<String> {
    endpoint_url(url, insecure).err()
}

fn endpoint_url(url: &str, insecure: bool) -> Result<reqwest::Url, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    match u.scheme() {
        "https" => {}
        "http" if insecure || crate::auth::server::clients::is_loopback_host(&u) => {}
        "http" => {
            return Err(format!("URL {url:?} must use https (http only on a loopback host)"));
        }
        _ => return Err(format!("URL {url:?} must start with https://")),
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("URL {url:?} has no host"));
    }
    if u.fragment().is_some() {
        return Err(format!("URL {url:?} must not have a fragment"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("the URL must not contain credentials".to_owned());
    }
    Ok(u)
}

/// The client authentication of one step: none without a client id; with one, a secret, inline
/// (which wins, as in ToolHive) or by environment variable. `keys`: id, inline, env key names.
fn client_auth(
    backend: &str,
    client_id: Option<&str>,
    inline: Option<&Secret>,
    env: Option<&str>,
    keys: [&str; 3],
) -> Result<ClientAuth, OutgoingAuthConfigError> {
    let [id_key, inline_key, env_key] = keys;
    let problem =
        |problem: String| OutgoingAuthConfigError::Secret { backend: backend.to_owned(), problem };
    let Some(id) = client_id.filter(|id| !id.is_empty()) else {
        if inline.is_some() || env.is_some() {
            return Err(problem(format!("a client secret needs `{id_key}`")));
        }
        return Ok(ClientAuth::None);
    };
    let secret = match inline {
        Some(s) => s.clone(),
        None => resolve_secret(backend, None, env, inline_key, env_key)?,
    };
    ClientAuth::basic(id, &secret).ok_or_else(|| OutgoingAuthConfigError::Invalid {
        backend: backend.to_owned(),
        message: format!("`{id_key}` or its secret cannot be sent in a header"),
    })
}

impl fmt::Debug for Xaa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |c: &ClientAuth| match c {
            ClientAuth::None => "none",
            _ => "***",
        };
        f.debug_struct("Xaa")
            .field("idp_token_url", &self.idp.url.as_str())
            .field("idp_client_id", &self.idp_client_id)
            .field("idp_client_secret", &secret(&self.idp.client))
            .field("target_token_url", &self.target.url.as_str())
            .field("target_client_id", &self.target_client_id)
            .field("target_client_secret", &secret(&self.target.client))
            .field("target_audience", &self.audience)
            .field("target_resource", &self.resource)
            .field("scope", &self.scope)
            .field("timeout", &self.idp.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_rules() {
        assert!(endpoint_problem("https://as.example/token", false).is_none());
        assert!(endpoint_problem("http://127.0.0.1:8080/token", false).is_none());
        assert!(endpoint_problem("http://localhost/token", false).is_none());
        assert!(endpoint_problem("http://[::1]:9/token", false).is_none());
        assert_eq!(
            endpoint_problem("http://as.example/token", false).unwrap(),
            "URL \"http://as.example/token\" must use https (http only on a loopback host)"
        );
        assert!(endpoint_problem("http://as.example/token", true).is_none());
        assert!(endpoint_problem("ftp://as.example/token", true).is_some());
        assert!(endpoint_problem("https://as.example/token#x", false).is_some());
        assert_eq!(
            endpoint_problem("https://u:p@as.example/token", false).unwrap(),
            "the URL must not contain credentials"
        );
    }

    #[test]
    fn jwt_parts_decode_unverified() {
        let b = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let jwt = format!(
            "{}.{}.sig",
            b(serde_json::json!({"typ": "oauth-id-jag+jwt"})),
            b(serde_json::json!({"aud": "x"}))
        );
        let (h, c) = jwt_parts(&jwt).unwrap();
        assert_eq!(h["typ"], "oauth-id-jag+jwt");
        assert_eq!(c["aud"], "x");
        assert!(jwt_parts("a.b").is_none());
        assert!(jwt_parts(&format!("{jwt}.extra")).is_none());
        assert!(jwt_parts("!!.??.sig").is_none());
    }
}
