//! `trusted_issuers` and `delegate_clients`: ToolHive's RFC 8693 / RFC 7523 delegation settings.
//! vmcp parses them so a ToolHive file loads, and refuses them while they are non-empty (see
//! `UNSUPPORTED`): they are security policy, which must not be ignored.

use std::path::PathBuf;

use serde::Deserialize;

use super::de;

/// One `trusted_issuers[]` entry (ToolHive `tokenexchange.TrustedIssuer`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuer {
    /// Expected `iss`.
    #[serde(default, deserialize_with = "de::nullable")]
    pub issuer_url: String,
    /// Expected `aud` of subject tokens.
    #[serde(default, deserialize_with = "de::nullable")]
    pub expected_audience: String,
    /// JWKS URL instead of discovery.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub jwks_url: Option<String>,
    /// Plain-HTTP discovery and JWKS for this issuer.
    #[serde(default, deserialize_with = "de::nullable")]
    pub insecure_allow_http: bool,
    /// Private addresses for this issuer.
    #[serde(default, deserialize_with = "de::nullable")]
    pub allow_private_ips: bool,
    /// Claim naming the actor client (default `azp`).
    #[serde(default, deserialize_with = "de::opt_string")]
    pub actor_claim: Option<String>,
    /// Actor claim values allowed to exchange.
    #[serde(default, deserialize_with = "de::nullable")]
    pub allowed_actors: Vec<String>,
    /// CEL expression over the token's claims.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub actor_matcher: Option<String>,
    /// Client IDs allowed to exchange tokens from this issuer.
    #[serde(default, deserialize_with = "de::nullable")]
    pub allowed_delegate_clients: Vec<String>,
    /// Honour the `may_act` claim.
    #[serde(default, deserialize_with = "de::nullable")]
    pub allow_may_act: bool,
    /// RFC 7523 JWT-bearer grant policy.
    #[serde(default)]
    pub jwt_bearer_grant: Option<JwtBearerGrant>,
}

/// `trusted_issuers[].jwt_bearer_grant`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtBearerGrant {
    /// Oldest accepted assertion (Go duration).
    #[serde(default, deserialize_with = "de::opt_duration")]
    pub max_assertion_age: Option<std::time::Duration>,
    /// Subjects and the resources each may obtain tokens for.
    #[serde(default, deserialize_with = "de::nullable")]
    pub subject_bindings: Vec<JwtBearerSubjectBinding>,
    /// Audiences that identify this server.
    #[serde(default, deserialize_with = "de::nullable")]
    pub accepted_audiences: Vec<String>,
}

/// `trusted_issuers[].jwt_bearer_grant.subject_bindings[]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtBearerSubjectBinding {
    /// The assertion's `sub`.
    #[serde(default, deserialize_with = "de::nullable")]
    pub subject: String,
    /// Resources it may obtain tokens for.
    #[serde(default, deserialize_with = "de::nullable")]
    pub allowed_resources: Vec<String>,
}

/// One `delegate_clients[]` entry (ToolHive `DelegateClientRunConfig`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegateClient {
    /// The client's ID.
    #[serde(default, deserialize_with = "de::nullable")]
    pub client_id: String,
    /// File holding its secret.
    #[serde(default, deserialize_with = "de::opt_path")]
    pub client_secret_file: Option<PathBuf>,
    /// Environment variable holding its secret.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub client_secret_env_var: Option<String>,
    /// Scopes it may request.
    #[serde(default, deserialize_with = "de::nullable")]
    pub scopes: Vec<String>,
    /// Resources it may request tokens for.
    #[serde(default, deserialize_with = "de::nullable")]
    pub audiences: Vec<String>,
}
