//! `upstreams[]`: the identity providers users sign in with (ToolHive `UpstreamRunConfig`).
//!
//! Client secrets are referenced ([`SecretRef`]): by file (read as-is, surrounding whitespace
//! trimmed, as ToolHive does) or by environment variable name. A client with neither is a public
//! client that authenticates with PKCE alone.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::de;
use crate::auth::identity::Secret;

/// One `upstreams[]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Unique name (lowercase letters, digits and `-`), used by `providerName` and
    /// `subjectProviderName`. May be left out when there is only one upstream, which is then
    /// called `default`; required, and not `default`, when there are several.
    #[serde(default, deserialize_with = "de::nullable")]
    pub name: String,
    /// `oidc` (discovery from `issuer_url`, identity from the ID token) or `oauth2` (explicit
    /// endpoints).
    #[serde(rename = "type")]
    pub kind: UpstreamKind,
    /// Required for `oidc`; absent for `oauth2`.
    #[serde(default)]
    pub oidc_config: Option<OidcUpstream>,
    /// Required for `oauth2`; absent for `oidc`.
    #[serde(default)]
    pub oauth2_config: Option<OAuth2Upstream>,
}

/// `upstreams[].type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    /// OpenID Connect.
    Oidc,
    /// Plain OAuth 2.0.
    #[serde(rename = "oauth2")]
    OAuth2,
}

impl UpstreamKind {
    /// The name written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamKind::Oidc => "oidc",
            UpstreamKind::OAuth2 => "oauth2",
        }
    }
}

/// Where a client secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef<'a> {
    /// A file; its content, trimmed, is the secret.
    File(&'a Path),
    /// An environment variable's name.
    Env(&'a str),
}

/// `upstreams[].oidc_config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcUpstream {
    /// The provider's issuer; its `/.well-known/openid-configuration` gives the endpoints.
    #[serde(default, deserialize_with = "de::nullable")]
    pub issuer_url: String,
    /// vmcp's client ID at the provider.
    #[serde(default, deserialize_with = "de::nullable")]
    pub client_id: String,
    /// File holding the client secret (not with `client_secret_env_var`).
    #[serde(default, deserialize_with = "de::opt_path")]
    pub client_secret_file: Option<PathBuf>,
    /// Environment variable holding the client secret (not with `client_secret_file`).
    #[serde(default, deserialize_with = "de::opt_string")]
    pub client_secret_env_var: Option<String>,
    /// The callback URL registered at the provider; default `{issuer}/oauth/callback`.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub redirect_uri: Option<String>,
    /// Scopes requested; empty: `openid offline_access`.
    #[serde(default, deserialize_with = "de::nullable")]
    pub scopes: Vec<String>,
    /// A userinfo endpoint asked for the user's name and email, overriding the ID token's (the
    /// subject still comes from the ID token). ToolHive reads but ignores it.
    #[serde(default)]
    pub userinfo_override: Option<UserInfoConfig>,
    /// Extra query parameters on the authorization request (e.g. `access_type: offline`);
    /// parameters vmcp sets itself are refused.
    #[serde(default, deserialize_with = "de::nullable")]
    pub additional_authorization_params: BTreeMap<String, String>,
    /// The ID token claim that identifies the user; default `sub`.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub subject_claim: Option<String>,
    /// Let the provider's HTTP client reach private addresses (RFC 1918, link-local).
    #[serde(default, deserialize_with = "de::nullable")]
    pub allow_private_ips: bool,
    /// Accept `http://` URLs for this provider on non-loopback hosts.
    #[serde(default, deserialize_with = "de::nullable")]
    pub insecure_allow_http: bool,
}

/// `upstreams[].oauth2_config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Upstream {
    /// The provider's authorization endpoint.
    #[serde(default, deserialize_with = "de::nullable")]
    pub authorization_endpoint: String,
    /// The provider's token endpoint.
    #[serde(default, deserialize_with = "de::nullable")]
    pub token_endpoint: String,
    /// vmcp's client ID at the provider.
    #[serde(default, deserialize_with = "de::nullable")]
    pub client_id: String,
    /// File holding the client secret (not with `client_secret_env_var`).
    #[serde(default, deserialize_with = "de::opt_path")]
    pub client_secret_file: Option<PathBuf>,
    /// Environment variable holding the client secret (not with `client_secret_file`).
    #[serde(default, deserialize_with = "de::opt_string")]
    pub client_secret_env_var: Option<String>,
    /// The callback URL registered at the provider; default `{issuer}/oauth/callback`.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub redirect_uri: Option<String>,
    /// Scopes requested (none by default).
    #[serde(default, deserialize_with = "de::nullable")]
    pub scopes: Vec<String>,
    /// How to learn who the user is from a userinfo endpoint.
    #[serde(default)]
    pub userinfo: Option<UserInfoConfig>,
    /// Where the fields of a non-standard token response are.
    #[serde(default)]
    pub token_response_mapping: Option<TokenResponseMapping>,
    /// Read the user's identity from the token response instead of calling a userinfo endpoint.
    /// With neither this nor `userinfo`, the subject is derived from the access token (it
    /// changes at every sign-in; no name or email), as in ToolHive.
    #[serde(default)]
    pub identity_from_token: Option<IdentityFromToken>,
    /// Extra query parameters on the authorization request; parameters vmcp sets itself are
    /// refused.
    #[serde(default, deserialize_with = "de::nullable")]
    pub additional_authorization_params: BTreeMap<String, String>,
    /// Not supported yet: dynamic client registration at the provider.
    #[serde(default)]
    pub dcr_config: Option<DcrConfig>,
    /// Let the provider's HTTP client reach private addresses (RFC 1918, link-local).
    #[serde(default, deserialize_with = "de::nullable")]
    pub allow_private_ips: bool,
    /// Accept `http://` URLs for this provider on non-loopback hosts.
    #[serde(default, deserialize_with = "de::nullable")]
    pub insecure_allow_http: bool,
}

/// `userinfo` (OAuth 2.0) and `userinfo_override` (OIDC).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserInfoConfig {
    /// The userinfo endpoint.
    #[serde(default, deserialize_with = "de::nullable")]
    pub endpoint_url: String,
    /// `GET` (the default) or `POST`.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub http_method: Option<String>,
    /// Extra request headers (e.g. GitHub's `Accept`). Their values are not shown by `Debug`.
    #[serde(default, deserialize_with = "de::nullable")]
    pub additional_headers: BTreeMap<String, String>,
    /// Which response fields hold the subject, name and email.
    #[serde(default)]
    pub field_mapping: Option<UserInfoFieldMapping>,
}

impl fmt::Debug for UserInfoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A header value may be a credential (an API key the endpoint wants).
        f.debug_struct("UserInfoConfig")
            .field("endpoint_url", &self.endpoint_url)
            .field("http_method", &self.http_method)
            .field("additional_headers", &self.additional_headers.keys().collect::<Vec<_>>())
            .field("field_mapping", &self.field_mapping)
            .finish()
    }
}

/// `userinfo.field_mapping`: response fields tried in order, the first non-empty one wins.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserInfoFieldMapping {
    /// Default `[sub]`.
    #[serde(default, deserialize_with = "de::nullable")]
    pub subject_fields: Vec<String>,
    /// Default `[name]`.
    #[serde(default, deserialize_with = "de::nullable")]
    pub name_fields: Vec<String>,
    /// Default `[email]`.
    #[serde(default, deserialize_with = "de::nullable")]
    pub email_fields: Vec<String>,
}

/// `token_response_mapping`: dot-separated paths (`authed_user.access_token`) into the token
/// endpoint's JSON response.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenResponseMapping {
    /// Required.
    #[serde(default, deserialize_with = "de::nullable")]
    pub access_token_path: String,
    /// Default `scope`.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub scope_path: Option<String>,
    /// Default `refresh_token`.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub refresh_token_path: Option<String>,
    /// Default `expires_in`.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub expires_in_path: Option<String>,
}

/// `identity_from_token`: dot-separated paths into the token endpoint's JSON response.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityFromToken {
    /// The user's stable identifier. Required.
    #[serde(default, deserialize_with = "de::nullable")]
    pub subject_path: String,
    /// Display name.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub name_path: Option<String>,
    /// Email.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub email_path: Option<String>,
}

/// `dcr_config` (RFC 7591 registration at the upstream). Parsed so ToolHive files load; not
/// supported yet.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DcrConfig {
    /// RFC 8414 / OIDC discovery document URL.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub discovery_url: Option<String>,
    /// Registration endpoint, used without discovery.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub registration_endpoint: Option<String>,
    /// File holding the initial access token.
    #[serde(default, deserialize_with = "de::opt_path")]
    pub initial_access_token_file: Option<PathBuf>,
    /// Environment variable holding the initial access token.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub initial_access_token_env_var: Option<String>,
    /// RFC 7591 `software_id`.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub software_id: Option<String>,
    /// RFC 7591 `software_statement` (a signed JWT; kept out of `Debug`).
    #[serde(default)]
    pub software_statement: Option<Secret>,
}

impl UpstreamConfig {
    /// The name other settings use for this upstream: `name`, or `default` when unnamed.
    pub fn resolved_name(&self) -> &str {
        if self.name.is_empty() { super::DEFAULT_UPSTREAM_NAME } else { &self.name }
    }

    /// The configured `redirect_uri`, if any (see `AuthServerConfig::redirect_uri` for the
    /// default).
    pub fn redirect_uri(&self) -> Option<&str> {
        match self.kind {
            UpstreamKind::Oidc => self.oidc_config.as_ref()?.redirect_uri.as_deref(),
            UpstreamKind::OAuth2 => self.oauth2_config.as_ref()?.redirect_uri.as_deref(),
        }
    }

    /// The client ID, if the block for `type` is present.
    pub fn client_id(&self) -> Option<&str> {
        match self.kind {
            UpstreamKind::Oidc => self.oidc_config.as_ref().map(|c| c.client_id.as_str()),
            UpstreamKind::OAuth2 => self.oauth2_config.as_ref().map(|c| c.client_id.as_str()),
        }
    }

    /// Where the client secret comes from; `None` for a public client.
    pub fn client_secret(&self) -> Option<SecretRef<'_>> {
        let (file, env) = match self.kind {
            UpstreamKind::Oidc => {
                let c = self.oidc_config.as_ref()?;
                (c.client_secret_file.as_deref(), c.client_secret_env_var.as_deref())
            }
            UpstreamKind::OAuth2 => {
                let c = self.oauth2_config.as_ref()?;
                (c.client_secret_file.as_deref(), c.client_secret_env_var.as_deref())
            }
        };
        file.map(SecretRef::File).or(env.map(SecretRef::Env))
    }

    /// The scopes to request: as configured, or for OIDC `openid offline_access` when empty.
    pub fn scopes(&self) -> Vec<&str> {
        match self.kind {
            UpstreamKind::Oidc => match &self.oidc_config {
                Some(c) if !c.scopes.is_empty() => c.scopes.iter().map(String::as_str).collect(),
                _ => vec!["openid", "offline_access"],
            },
            UpstreamKind::OAuth2 => self
                .oauth2_config
                .iter()
                .flat_map(|c| c.scopes.iter().map(String::as_str))
                .collect(),
        }
    }

    /// Whether `http://` URLs are accepted for this upstream (its own flag or the server's).
    pub fn insecure_allow_http(&self, server_flag: bool) -> bool {
        server_flag
            || match self.kind {
                UpstreamKind::Oidc => {
                    self.oidc_config.as_ref().is_some_and(|c| c.insecure_allow_http)
                }
                UpstreamKind::OAuth2 => {
                    self.oauth2_config.as_ref().is_some_and(|c| c.insecure_allow_http)
                }
            }
    }
}
