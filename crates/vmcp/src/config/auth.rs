//! Authentication configuration: `incomingAuth` (who may call the gateway) and `outgoingAuth`
//! (what the gateway presents to each backend), in ToolHive vMCP's key names, plus
//! `passthroughHeaders`.
//!
//! Secrets are given by environment variable name (`*Env` keys) or inline; inline ones are
//! wrapped in [`Secret`] so they never reach Debug output or logs.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::identity::Secret;

/// `incomingAuth`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IncomingAuthConfig {
    /// `anonymous` (the default) or `oidc`.
    #[serde(default, rename = "type")]
    pub kind: IncomingAuthKind,
    /// Required for `oidc`.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
    /// Serve anonymous clients on a non-loopback address. Off by default: an anonymous gateway
    /// listening beyond this machine is refused at startup unless this is set.
    #[serde(default)]
    pub allow_anonymous_non_loopback: bool,
    /// Authorization of each request (Cedar policies), see [`super::authz`].
    #[serde(default)]
    pub authz: Option<super::authz::AuthzConfig>,
}

/// `incomingAuth.type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncomingAuthKind {
    /// No authentication.
    #[default]
    Anonymous,
    /// Bearer tokens: JWTs validated against the issuer's keys, or opaque tokens introspected.
    Oidc,
    /// ToolHive's `local`: every request accepted unchecked under a synthetic identity named
    /// after the OS user running the server. Parsed so the refusal can say so; `vmcp validate`
    /// and `serve` refuse it (use `anonymous`).
    Local,
}

/// Why `incomingAuth.type: local` is refused.
pub const LOCAL_REFUSED: &str = "`local` (ToolHive: every request accepted without a check, as \
    the OS user running the server) is not supported: it authenticates nobody and would make \
    every client one principal. Use `type: anonymous` (on a non-loopback address also \
    `allowAnonymousNonLoopback: true`), or `type: oidc`";

/// `incomingAuth.oidc`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcConfig {
    /// Token issuer (`iss`); its `/.well-known/openid-configuration` is used unless `jwksUrl` is
    /// given.
    pub issuer: String,
    /// Accepted audience (`aud`).
    pub audience: String,
    /// This gateway's resource URI (RFC 8707 / RFC 9728); defaults to `audience`.
    #[serde(default)]
    pub resource: Option<String>,
    /// JWKS endpoint, instead of discovery.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// RFC 7662 introspection endpoint, for opaque (non-JWT) tokens.
    #[serde(default)]
    pub introspection_url: Option<String>,
    /// Client id for introspection.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Environment variable holding the introspection client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Scopes advertised to clients, as in ToolHive: in the `scope` of every `WWW-Authenticate`
    /// challenge and as `scopes_supported` of the protected resource metadata. Not enforced;
    /// see `requiredScopes`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// vmcp addition: scopes every token must carry (403 `insufficient_scope` otherwise).
    /// Empty (the default): no scope is required, as in ToolHive.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Accepted JWS algorithms (default: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384,
    /// EdDSA). `none` and HMAC algorithms are never accepted.
    #[serde(default)]
    pub allowed_algorithms: Vec<String>,
    /// Allow `http://` for the issuer, `jwksUrl`, `introspectionUrl` and a discovered
    /// `jwks_uri` on any host (ToolHive's meaning; testing only). Without it `http://` is
    /// allowed only for loopback hosts.
    #[serde(default)]
    pub insecure_allow_http: bool,
    /// Allow discovery, JWKS and introspection fetches to private addresses (RFC 1918, link-local,
    /// CGN, unique local, ...). Loopback is always allowed. As in ToolHive, this and
    /// `protectedResourceAllowPrivateIp` are one switch.
    #[serde(default)]
    pub jwks_allow_private_ip: bool,
    /// Same switch as `jwksAllowPrivateIp` (ToolHive ORs them). vmcp serves its protected
    /// resource metadata itself and fetches nothing for it.
    #[serde(default)]
    pub protected_resource_allow_private_ip: bool,
    /// PEM file of CA certificates trusted, besides the built-in roots, for discovery, JWKS and
    /// introspection over HTTPS.
    #[serde(default)]
    pub ca_bundle_path: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf` (default 60s, at most 5m).
    #[serde(default, with = "super::duration::option")]
    pub clock_skew: Option<Duration>,
}

/// `outgoingAuth`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutgoingAuthConfig {
    /// ToolHive's `inline` | `discovered`; only `inline` applies to static backends.
    #[serde(default)]
    pub source: Option<String>,
    /// Strategy for backends not listed in `backends`.
    #[serde(default)]
    pub default: Option<BackendAuthConfig>,
    /// Per backend name.
    #[serde(default)]
    pub backends: BTreeMap<String, BackendAuthConfig>,
}

/// One backend's outgoing authentication strategy.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendAuthConfig {
    /// `unauthenticated`, `header_injection`, `token_exchange`, `upstream_inject`, `obo`, `xaa`,
    /// `aws_sts` or `passthrough`.
    #[serde(rename = "type")]
    pub kind: BackendAuthKind,
    /// For `header_injection`.
    #[serde(default)]
    pub header_injection: Option<HeaderInjectionConfig>,
    /// For `token_exchange`.
    #[serde(default)]
    pub token_exchange: Option<TokenExchangeConfig>,
    /// For `upstream_inject`.
    #[serde(default)]
    pub upstream_inject: Option<UpstreamInjectConfig>,
    /// For `obo`.
    #[serde(default)]
    pub obo: Option<OboConfig>,
    /// For `xaa`.
    #[serde(default)]
    pub xaa: Option<XaaConfig>,
    /// For `aws_sts`.
    #[serde(default)]
    pub aws_sts: Option<AwsStsConfig>,
}

/// `outgoingAuth.*.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendAuthKind {
    /// No credentials.
    Unauthenticated,
    /// A fixed header (API key, static bearer).
    HeaderInjection,
    /// RFC 8693: the caller's token exchanged for one meant for this backend.
    TokenExchange,
    /// The caller's own bearer token, forwarded.
    Passthrough,
    /// The caller's current access token from an upstream IdP of the embedded authorization
    /// server (`authserver-config.yaml`), refreshed when needed.
    UpstreamInject,
    /// OAuth 2.0 on-behalf-of (Microsoft Entra's JWT bearer grant with
    /// `requested_token_use=on_behalf_of`): the caller's token is the assertion.
    Obo,
    /// Cross-app access (draft-ietf-oauth-identity-assertion-authz-grant): the user's ID token
    /// exchanged at the IdP for an identity assertion (ID-JAG), which the backend's authorization
    /// server exchanges for an access token.
    Xaa,
    /// AWS: the caller's token exchanged at STS (`AssumeRoleWithWebIdentity`) for temporary
    /// credentials of a role picked from its claims; every backend request is SigV4-signed.
    AwsSts,
}

/// `upstreamInject` (ToolHive `UpstreamInjectConfig`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamInjectConfig {
    /// The upstream (`upstreams[].name` of `authserver-config.yaml`) whose token is injected.
    /// Empty means `default`, the name of a single unnamed upstream, as in ToolHive.
    #[serde(default)]
    pub provider_name: String,
}

/// `headerInjection`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderInjectionConfig {
    /// Header name, e.g. `Authorization` or `X-API-Key`.
    pub header_name: String,
    /// The value, inline.
    #[serde(default)]
    pub header_value: Option<Secret>,
    /// Environment variable holding the value.
    #[serde(default)]
    pub header_value_env: Option<String>,
}

/// `tokenExchange` (RFC 8693).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenExchangeConfig {
    /// Token endpoint. The only required key, as in ToolHive.
    pub token_url: String,
    /// Client id the gateway authenticates with. Optional (some token endpoints, e.g. Google
    /// STS, take none): the client is authenticated (HTTP Basic) only when both a client id and
    /// a secret are given, as in ToolHive; a secret without a client id is refused.
    #[serde(default)]
    pub client_id: String,
    /// Client secret, inline.
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// Environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// `audience` of the requested token.
    #[serde(default)]
    pub audience: Option<String>,
    /// `scope` of the requested token.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `subject_token_type` (default `urn:ietf:params:oauth:token-type:access_token`). The
    /// short forms `access_token`, `id_token` and `jwt` stand for their RFC 8693 URNs (as in
    /// ToolHive); any other value is refused.
    #[serde(default)]
    pub subject_token_type: Option<String>,
    /// RFC 8707 `resource` of the requested token.
    #[serde(default)]
    pub resource: Option<String>,
    /// Exchange the caller's token from this upstream of the embedded authorization server
    /// (`upstreams[].name` of `authserver-config.yaml`) instead of the token the caller presented.
    /// Unset while an authorization server is configured: its first upstream (as in ToolHive).
    #[serde(default)]
    pub subject_provider_name: Option<String>,
}

/// RFC 8693 token type URNs a `subjectTokenType` may name.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The ID token type URN.
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
/// The JWT token type URN.
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// A token type as sent: the short forms `access_token`, `id_token` and `jwt` become their RFC
/// 8693 URNs (ToolHive's `NormalizeTokenType`), the URNs stay as they are, anything else is
/// `None`.
pub fn normalize_token_type(value: &str) -> Option<&'static str> {
    match value {
        "access_token" | ACCESS_TOKEN_TYPE => Some(ACCESS_TOKEN_TYPE),
        "id_token" | ID_TOKEN_TYPE => Some(ID_TOKEN_TYPE),
        "jwt" | JWT_TOKEN_TYPE => Some(JWT_TOKEN_TYPE),
        _ => None,
    }
}

impl TokenExchangeConfig {
    /// The `subject_token_type` sent: the access token URN when unset, else the normalised
    /// value; `Err` says why the value is refused.
    pub fn subject_token_urn(&self) -> Result<&'static str, String> {
        match self.subject_token_type.as_deref().map(str::trim) {
            None | Some("") => Ok(ACCESS_TOKEN_TYPE),
            Some(t) => normalize_token_type(t).ok_or_else(|| {
                format!(
                    "{t:?} is not a token type: use access_token, id_token or jwt (or their \
                     RFC 8693 URNs)"
                )
            }),
        }
    }
}

/// `obo` (ToolHive `OBOConfig`): Microsoft Entra's on-behalf-of flow.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OboConfig {
    /// The IdP's token endpoint, e.g. Entra's
    /// `https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token`. Required.
    #[serde(default)]
    pub token_url: String,
    /// The gateway's client id at the IdP. Required.
    #[serde(default)]
    pub client_id: String,
    /// Client secret, inline.
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// Environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// The backend's resource, sent as the `scope` when `scopes` is empty (ToolHive's exchange
    /// target rule: scopes win, else audience).
    #[serde(default)]
    pub audience: Option<String>,
    /// Delegated scopes requested (space-joined into `scope`), e.g. `api://backend/.default`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Use the user's token from this upstream of the embedded authorization server as the
    /// assertion, instead of the token the caller presented. Unset: the caller's own token (as in
    /// ToolHive; there is no first-upstream default for `obo`).
    #[serde(default)]
    pub subject_token_provider_name: Option<String>,
    /// Seconds before its expiry that a cached exchanged token stops being used. Unset: a tenth
    /// of the token's lifetime, at most 30 s.
    #[serde(default)]
    pub cache_skew_seconds: Option<i64>,
}

/// `xaa` (ToolHive `XAAConfig`): cross-app access with an identity assertion (ID-JAG).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct XaaConfig {
    /// The IdP's token endpoint (step 1, RFC 8693). Required.
    #[serde(default)]
    pub idp_token_url: String,
    /// The gateway's client id at the IdP; without it step 1 carries no client authentication.
    #[serde(default)]
    pub idp_client_id: Option<String>,
    /// The IdP client secret, inline.
    #[serde(default)]
    pub idp_client_secret: Option<Secret>,
    /// Environment variable holding the IdP client secret.
    #[serde(default)]
    pub idp_client_secret_env: Option<String>,
    /// The backend's authorization server's token endpoint (step 2, RFC 7523). Required.
    #[serde(default)]
    pub target_token_url: String,
    /// Allow plain `http://` for `targetTokenUrl` on any host (testing only).
    #[serde(default)]
    pub insecure_target_token_url: bool,
    /// The gateway's client id at the backend's authorization server.
    #[serde(default)]
    pub target_client_id: Option<String>,
    /// Its client secret, inline.
    #[serde(default)]
    pub target_client_secret: Option<Secret>,
    /// Environment variable holding that client secret.
    #[serde(default)]
    pub target_client_secret_env: Option<String>,
    /// The backend authorization server's issuer: the `audience` of the ID-JAG. Required.
    #[serde(default)]
    pub target_audience: String,
    /// RFC 8707 `resource` of step 1: the backend (MCP server) URL.
    #[serde(default)]
    pub target_resource: Option<String>,
    /// `scope` of both steps.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// With the embedded authorization server: the upstream whose ID token is the subject.
    /// Unset: its only upstream (an error when it has several, as in ToolHive).
    #[serde(default)]
    pub subject_provider_name: Option<String>,
    /// `subject_token_type` of step 1; only `urn:ietf:params:oauth:token-type:id_token` (the
    /// default) is accepted.
    #[serde(default)]
    pub subject_token_type: Option<String>,
}

/// `awsSts` (ToolHive `AwsStsConfig`): assume an IAM role with the caller's token and sign each
/// backend request with SigV4. Keys and defaults as in ToolHive, plus `stsEndpoint` (vmcp's).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsStsConfig {
    /// AWS region of STS and of the signature. Required.
    #[serde(default)]
    pub region: String,
    /// Service name in the signature's scope (default `aws-mcp`, AWS's MCP server).
    #[serde(default)]
    pub service: Option<String>,
    /// Role assumed when no `roleMappings` entry matches. Without it, such a caller is refused.
    #[serde(default)]
    pub fallback_role_arn: Option<String>,
    /// Claim-based role choice; the matching entry with the lowest `priority` wins, then the
    /// first in this list.
    #[serde(default)]
    pub role_mappings: Vec<AwsRoleMapping>,
    /// The claim a mapping's `claim` is looked up in (default `groups`).
    #[serde(default)]
    pub role_claim: Option<String>,
    /// `DurationSeconds` asked of STS: 900 to 43200 (default 3600).
    #[serde(default)]
    pub session_duration: Option<i64>,
    /// The claim whose value names the role session, `RoleSessionName` (default `sub`).
    #[serde(default)]
    pub session_name_claim: Option<String>,
    /// With the embedded authorization server: the upstream whose access token is the web
    /// identity token. Unset while an authorization server is configured: its first upstream
    /// (as for `token_exchange`); without one, the token the caller presented.
    #[serde(default)]
    pub subject_provider_name: Option<String>,
    /// vmcp extension: the STS endpoint URL, instead of the region's
    /// (`https://sts.<region>.amazonaws.com`). For VPC endpoints, FIPS endpoints and tests.
    #[serde(default)]
    pub sts_endpoint: Option<String>,
}

/// `awsSts.roleMappings[]`: exactly one of `claim` and `matcher`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsRoleMapping {
    /// Matches when this value is an element (list) or key (map) of the role claim, as CEL's
    /// `in` in ToolHive.
    #[serde(default)]
    pub claim: Option<String>,
    /// A CEL expression over `claims` (ToolHive's). vmcp evaluates the subset ToolHive documents
    /// (`==`, `!=`, `in`, `!`, `&&`, `||`, member access, literals); anything else is refused at
    /// load.
    #[serde(default)]
    pub matcher: Option<String>,
    /// The IAM role assumed when this entry wins.
    #[serde(default)]
    pub role_arn: String,
    /// Lower wins; unset is the lowest priority of all. Ties go to the earlier entry.
    #[serde(default)]
    pub priority: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_type_short_forms() {
        assert_eq!(normalize_token_type("access_token"), Some(ACCESS_TOKEN_TYPE));
        assert_eq!(normalize_token_type("id_token"), Some(ID_TOKEN_TYPE));
        assert_eq!(normalize_token_type("jwt"), Some(JWT_TOKEN_TYPE));
        assert_eq!(normalize_token_type(ID_TOKEN_TYPE), Some(ID_TOKEN_TYPE));
        assert_eq!(normalize_token_type("refresh_token"), None);
        assert_eq!(normalize_token_type("ID_TOKEN"), None);
    }
}
