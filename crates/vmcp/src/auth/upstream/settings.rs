//! Runtime settings of one upstream identity provider, as the configuration layer fills them
//! (ToolHive's `UpstreamRunConfig` with secrets already resolved), and their validation.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::auth::identity::Secret;

/// Scopes an OIDC upstream is asked for when none are configured: `offline_access` is the
/// standard way to get a refresh token (IdPs with their own mechanism, e.g. Google's
/// `access_type=offline`, need explicit scopes and an additional authorization parameter).
pub const DEFAULT_OIDC_SCOPES: [&str; 2] = ["openid", "offline_access"];

/// Authorization parameters vmcp sets itself; configuration may not override them.
pub const RESERVED_AUTHORIZATION_PARAMS: [&str; 8] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
];

/// One upstream identity provider.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// Unique name (the vault's key and the `upstream_inject` strategy's reference). May be
    /// empty when it is the only upstream: it is then called `default`.
    pub name: String,
    /// OIDC (discovery, ID token) or plain OAuth 2.0 (explicit endpoints).
    pub kind: ProviderKind,
    /// vmcp's client id at the upstream.
    pub client_id: String,
    /// vmcp's client secret at the upstream; `None` for a public client (PKCE only).
    pub client_secret: Option<Secret>,
    /// vmcp's callback registered at the upstream, used when a request does not name one.
    pub redirect_uri: Option<String>,
    /// Scopes to request. OIDC: [`DEFAULT_OIDC_SCOPES`] when empty, and must include `openid`.
    pub scopes: Vec<String>,
    /// Extra authorization request parameters (e.g. `access_type=offline`, `prompt=consent`);
    /// none of [`RESERVED_AUTHORIZATION_PARAMS`].
    pub additional_authorization_params: BTreeMap<String, String>,
    /// How vmcp authenticates at the token endpoint; `None`: `client_secret_basic` with a
    /// secret (`client_secret_post` when the OIDC metadata lists only that), `none` without.
    pub client_auth: Option<ClientAuthMethod>,
    /// Allow plain `http` endpoints on hosts other than loopback (in-cluster development only).
    pub insecure_allow_http: bool,
}

/// The kind of an upstream and what only that kind has.
#[derive(Debug, Clone)]
pub enum ProviderKind {
    /// An OpenID Connect provider: endpoints from `{issuer_url}/.well-known/openid-configuration`,
    /// identity from the verified ID token.
    Oidc {
        /// The issuer.
        issuer_url: String,
        /// Top-level ID token claim naming the user (default `sub`; e.g. Entra's `oid`).
        subject_claim: Option<String>,
        /// A userinfo endpoint to ask for name and email instead of the discovered one; its
        /// answers override the ID token's name and email.
        userinfo: Option<UserInfo>,
    },
    /// A plain OAuth 2.0 provider.
    OAuth2 {
        /// Authorization endpoint.
        authorization_endpoint: String,
        /// Token endpoint.
        token_endpoint: String,
        /// Where to ask who the user is (with the access token).
        userinfo: Option<UserInfo>,
        /// Where the fields are in a non-standard token response.
        token_response_mapping: Option<TokenResponseMapping>,
        /// Identity read from the token response itself (skips userinfo).
        identity_from_token: Option<IdentityFromToken>,
    },
}

/// A userinfo endpoint.
#[derive(Clone)]
pub struct UserInfo {
    /// Its URL.
    pub endpoint_url: String,
    /// GET (default) or POST.
    pub http_method: UserInfoMethod,
    /// Extra request headers (e.g. GitHub's `Accept`).
    pub additional_headers: BTreeMap<String, String>,
    /// Which fields hold subject, name and email.
    pub field_mapping: FieldMapping,
}

impl fmt::Debug for UserInfo {
    /// Header values may be API keys: only their names are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserInfo")
            .field("endpoint_url", &self.endpoint_url)
            .field("http_method", &self.http_method)
            .field("additional_headers", &self.additional_headers.keys().collect::<Vec<_>>())
            .field("field_mapping", &self.field_mapping)
            .finish()
    }
}

/// The HTTP method of a userinfo request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UserInfoMethod {
    /// `GET`.
    #[default]
    Get,
    /// `POST`.
    Post,
}

impl FromStr for UserInfoMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "" | "GET" => Ok(Self::Get),
            "POST" => Ok(Self::Post),
            _ => Err(format!("userinfo http_method must be GET or POST, not {s:?}")),
        }
    }
}

/// Field names tried in order (first non-empty value wins) in a userinfo response. Empty lists
/// mean `sub`, `name`, `email`.
#[derive(Debug, Clone, Default)]
pub struct FieldMapping {
    /// Candidates for the subject.
    pub subject_fields: Vec<String>,
    /// Candidates for the display name.
    pub name_fields: Vec<String>,
    /// Candidates for the email.
    pub email_fields: Vec<String>,
}

/// Dotted paths (`authed_user.access_token`; a numeric segment indexes an array) into a
/// non-standard token response (GitHub, Slack).
#[derive(Debug, Clone, Default)]
pub struct TokenResponseMapping {
    /// Path of the access token (required).
    pub access_token_path: String,
    /// Path of the scope (default `scope`).
    pub scope_path: Option<String>,
    /// Path of the refresh token (default `refresh_token`).
    pub refresh_token_path: Option<String>,
    /// Path of the lifetime in seconds (default `expires_in`).
    pub expires_in_path: Option<String>,
}

/// Dotted paths to the user's identity in the token response body.
#[derive(Debug, Clone, Default)]
pub struct IdentityFromToken {
    /// Path of the subject (required; a string or a number).
    pub subject_path: String,
    /// Path of the display name.
    pub name_path: Option<String>,
    /// Path of the email.
    pub email_path: Option<String>,
}

/// Client authentication at the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    /// HTTP Basic with the form-encoded id and secret.
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A public client: `client_id` in the body, no secret.
    None,
}

impl FromStr for ClientAuthMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "client_secret_basic" => Ok(Self::ClientSecretBasic),
            "client_secret_post" => Ok(Self::ClientSecretPost),
            "none" => Ok(Self::None),
            _ => Err(format!("unsupported token endpoint auth method {s:?}")),
        }
    }
}

/// Why a set of upstream settings is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// No upstream at all.
    #[error("at least one upstream identity provider is required")]
    NoUpstreams,
    /// Two upstreams share a name.
    #[error("upstream name {0:?} is used twice")]
    Duplicate(String),
    /// One upstream's settings are wrong.
    #[error("upstream {upstream:?}: {problem}")]
    Invalid {
        /// Upstream name.
        upstream: String,
        /// What is wrong.
        problem: String,
    },
}

impl ProviderSettings {
    /// The scopes actually requested (OIDC defaults applied).
    pub fn effective_scopes(&self) -> Vec<String> {
        match self.kind {
            ProviderKind::Oidc { .. } if self.scopes.is_empty() => {
                DEFAULT_OIDC_SCOPES.iter().map(|s| s.to_string()).collect()
            }
            _ => self.scopes.clone(),
        }
    }

    /// Checks everything that can be checked without talking to the upstream.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.check()
            .map_err(|problem| SettingsError::Invalid { upstream: self.name.clone(), problem })
    }

    fn check(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name is required when several upstreams are configured".into());
        }
        if self.client_id.trim().is_empty() {
            return Err("client_id is required".into());
        }
        if let Some(r) = &self.redirect_uri {
            check_url("redirect_uri", r, true)?;
        }
        for k in self.additional_authorization_params.keys() {
            if RESERVED_AUTHORIZATION_PARAMS.contains(&k.as_str()) {
                return Err(format!("additional_authorization_params may not set {k:?}"));
            }
        }
        if matches!(
            self.client_auth,
            Some(ClientAuthMethod::ClientSecretBasic | ClientAuthMethod::ClientSecretPost)
        ) && self.client_secret.is_none()
        {
            return Err("client_auth needs a client_secret".into());
        }
        let http = self.insecure_allow_http;
        match &self.kind {
            ProviderKind::Oidc { issuer_url, subject_claim, userinfo } => {
                check_url("issuer_url", issuer_url, http)?;
                if !self.effective_scopes().iter().any(|s| s == "openid") {
                    return Err("an OIDC upstream must request the openid scope".into());
                }
                if let Some(c) = subject_claim {
                    let mut chars = c.chars();
                    let ok = chars.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
                        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !ok {
                        return Err(format!("subject_claim {c:?} is not a claim name"));
                    }
                }
                if let Some(u) = userinfo {
                    check_userinfo(u, http)?;
                }
            }
            ProviderKind::OAuth2 {
                authorization_endpoint,
                token_endpoint,
                userinfo,
                token_response_mapping,
                identity_from_token,
            } => {
                check_url("authorization_endpoint", authorization_endpoint, http)?;
                check_url("token_endpoint", token_endpoint, http)?;
                if let Some(u) = userinfo {
                    check_userinfo(u, http)?;
                }
                if let Some(m) = token_response_mapping {
                    let paths = [
                        Some(&m.access_token_path),
                        m.scope_path.as_ref(),
                        m.refresh_token_path.as_ref(),
                        m.expires_in_path.as_ref(),
                    ];
                    if m.access_token_path.trim().is_empty() {
                        return Err("token_response_mapping.access_token_path is required".into());
                    }
                    paths.into_iter().flatten().try_for_each(|p| check_path(p))?;
                }
                if let Some(i) = identity_from_token {
                    if i.subject_path.trim().is_empty() {
                        return Err("identity_from_token.subject_path is required".into());
                    }
                    [Some(&i.subject_path), i.name_path.as_ref(), i.email_path.as_ref()]
                        .into_iter()
                        .flatten()
                        .try_for_each(|p| check_path(p))?;
                }
            }
        }
        Ok(())
    }
}

fn check_path(p: &str) -> Result<(), String> {
    if p.is_empty() || p.split('.').any(str::is_empty) {
        Err(format!("{p:?} is not a dotted path"))
    } else {
        Ok(())
    }
}

fn check_userinfo(u: &UserInfo, allow_http: bool) -> Result<(), String> {
    check_url("userinfo.endpoint_url", &u.endpoint_url, allow_http)?;
    for (k, v) in &u.additional_headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("userinfo header name {k:?} is not valid"))?;
        if name == http::header::AUTHORIZATION {
            return Err("userinfo headers may not set Authorization".into());
        }
        http::HeaderValue::from_str(v)
            .map_err(|_| format!("userinfo header {k:?} has an invalid value"))?;
    }
    Ok(())
}

/// An absolute `https` URL, or `http` on a loopback host (or anywhere with `allow_http`).
pub(super) fn check_url(field: &str, value: &str, allow_http: bool) -> Result<(), String> {
    let url = reqwest::Url::parse(value).map_err(|_| format!("{field} {value:?} is not a URL"))?;
    let Some(host) = url.host_str() else {
        return Err(format!("{field} {value:?} has no host"));
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_http || is_loopback(host) => Ok(()),
        "http" => Err(format!("{field} must use https (http only on loopback)")),
        _ => Err(format!("{field} {value:?} must be an http(s) URL")),
    }
}

pub(super) fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl fmt::Display for ClientAuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::None => "none",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oidc(issuer: &str) -> ProviderSettings {
        ProviderSettings {
            name: "corp".into(),
            kind: ProviderKind::Oidc {
                issuer_url: issuer.into(),
                subject_claim: None,
                userinfo: None,
            },
            client_id: "vmcp".into(),
            client_secret: None,
            redirect_uri: None,
            scopes: vec![],
            additional_authorization_params: BTreeMap::new(),
            client_auth: None,
            insecure_allow_http: false,
        }
    }

    #[test]
    fn validation() {
        assert!(oidc("https://idp.example.com").validate().is_ok());
        assert_eq!(oidc("https://x").effective_scopes(), vec!["openid", "offline_access"]);
        assert!(oidc("http://127.0.0.1:9").validate().is_ok());
        assert!(oidc("http://idp.example.com").validate().is_err());
        let mut s = oidc("http://idp.example.com");
        s.insecure_allow_http = true;
        assert!(s.validate().is_ok());
        let mut s = oidc("https://x");
        s.scopes = vec!["profile".into()];
        assert!(s.validate().is_err());
        let mut s = oidc("https://x");
        s.additional_authorization_params.insert("nonce".into(), "x".into());
        assert!(s.validate().is_err());
        let mut s = oidc("https://x");
        s.kind = ProviderKind::Oidc {
            issuer_url: "https://x".into(),
            subject_claim: Some("oid.x".into()),
            userinfo: None,
        };
        assert!(s.validate().is_err());
        let mut s = oidc("https://x");
        s.client_auth = Some(ClientAuthMethod::ClientSecretPost);
        assert!(s.validate().is_err());
        let mut s = oidc("https://x");
        s.kind = ProviderKind::OAuth2 {
            authorization_endpoint: "https://x/authorize".into(),
            token_endpoint: "https://x/token".into(),
            userinfo: None,
            token_response_mapping: Some(TokenResponseMapping {
                access_token_path: "authed_user..token".into(),
                ..Default::default()
            }),
            identity_from_token: None,
        };
        assert!(s.validate().is_err());
        assert_eq!("POST".parse::<UserInfoMethod>(), Ok(UserInfoMethod::Post));
        assert!("PUT".parse::<UserInfoMethod>().is_err());
    }
}
