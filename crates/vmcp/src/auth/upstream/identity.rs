//! Who the user is, once the upstream has issued tokens: from the verified ID token (OIDC,
//! with userinfo as fallback or override), from the token response body, from a userinfo
//! endpoint, or (an OAuth 2.0 upstream with none of these) made up from the access token.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::http;
use super::oidc::IdTokenError;
use super::settings::{FieldMapping, ProviderKind, UserInfo, UserInfoMethod};
use super::token_response::{first_field, identity_from_body};
use super::upstreams::{Endpoints, Provider, SYNTHESIZED_SUBJECT_PREFIX, Upstreams, unavailable};
use super::{FederationError, TokenSet, UpstreamIdentity};
use crate::auth::identity::Secret;

impl Upstreams {
    /// Who the tokens belong to, as the provider's kind and settings say.
    pub(super) async fn identity(
        &self,
        p: &Provider,
        ep: &Endpoints,
        tokens: &TokenSet,
        body: &Value,
        nonce: &str,
    ) -> Result<UpstreamIdentity, FederationError> {
        let s = &p.settings;
        let name = s.name.as_str();
        let refused = |reason: String| FederationError::Refused { upstream: name.into(), reason };
        match &s.kind {
            ProviderKind::Oidc { subject_claim, userinfo, .. } => {
                let oidc = ep.oidc.as_ref().ok_or_else(|| refused("not discovered".into()))?;
                let id_token =
                    tokens.id_token.as_ref().ok_or_else(|| refused("no ID token".into()))?;
                let claims = oidc
                    .verify(id_token.expose(), &s.client_id, Some(nonce))
                    .await
                    .map_err(|e| match e {
                        IdTokenError::Invalid(m) => refused(format!("ID token: {m}")),
                        IdTokenError::Unavailable(m) => unavailable(name, m),
                    })?;
                let claim = subject_claim.as_deref().unwrap_or("sub");
                let subject = claims
                    .get(claim)
                    .and_then(Value::as_str)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| {
                    refused(format!("ID token has no string claim {claim:?}"))
                })?;
                let text = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_string);
                let mut id = UpstreamIdentity {
                    subject: subject.to_string(),
                    name: text("name"),
                    email: text("email"),
                };
                // Userinfo: an override always, the discovered endpoint when the ID token
                // lacks name or email. Best effort: the ID token alone identifies the user.
                let endpoint = match userinfo {
                    Some(u) => Some((u.endpoint_url.clone(), Some(u))),
                    None if id.name.is_none() || id.email.is_none() => {
                        oidc.meta.userinfo_endpoint.clone().map(|e| (e, None))
                    }
                    None => None,
                };
                if let Some((url, cfg)) = endpoint {
                    self.merge_userinfo(name, &url, cfg, tokens, &claims, &mut id).await;
                }
                Ok(id)
            }
            ProviderKind::OAuth2 { identity_from_token: Some(cfg), .. } => {
                identity_from_body(body, cfg).map_err(refused)
            }
            ProviderKind::OAuth2 { userinfo: Some(u), .. } => {
                let claims = self
                    .fetch_userinfo(&u.endpoint_url, Some(u), &tokens.access_token)
                    .await
                    .map_err(|e| unavailable(name, format!("userinfo: {e}")))?;
                let m = &u.field_mapping;
                let subject = first_field(&claims, &m.subject_fields, "sub")
                    .ok_or_else(|| refused("userinfo names no subject".into()))?;
                Ok(UpstreamIdentity {
                    subject,
                    name: first_field(&claims, &m.name_fields, "name"),
                    email: first_field(&claims, &m.email_fields, "email"),
                })
            }
            ProviderKind::OAuth2 { .. } => {
                let digest = Sha256::digest(tokens.access_token.expose().as_bytes());
                let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
                Ok(UpstreamIdentity {
                    subject: format!("{SYNTHESIZED_SUBJECT_PREFIX}{hex}"),
                    name: None,
                    email: None,
                })
            }
        }
    }

    /// Takes name and email from a userinfo response about the same `sub` as the ID token
    /// (OIDC Core §5.3.2); an override's values win over the ID token's.
    async fn merge_userinfo(
        &self,
        name: &str,
        url: &str,
        cfg: Option<&UserInfo>,
        tokens: &TokenSet,
        id_claims: &Map<String, Value>,
        id: &mut UpstreamIdentity,
    ) {
        let claims = match self.fetch_userinfo(url, cfg, &tokens.access_token).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(upstream = %name, error = %e, "userinfo request failed");
                return;
            }
        };
        if claims.get("sub").is_some() && claims.get("sub") != id_claims.get("sub") {
            tracing::warn!(upstream = %name, "userinfo is about another subject; ignored");
            return;
        }
        let default = FieldMapping::default();
        let m = cfg.map(|u| &u.field_mapping).unwrap_or(&default);
        let (n, e) = (
            first_field(&claims, &m.name_fields, "name"),
            first_field(&claims, &m.email_fields, "email"),
        );
        if cfg.is_some() {
            id.name = n.or(id.name.take());
            id.email = e.or(id.email.take());
        } else {
            id.name = id.name.take().or(n);
            id.email = id.email.take().or(e);
        }
    }

    async fn fetch_userinfo(
        &self,
        url: &str,
        cfg: Option<&UserInfo>,
        access_token: &Secret,
    ) -> Result<Value, String> {
        let method = match cfg.map(|c| c.http_method) {
            Some(UserInfoMethod::Post) => reqwest::Method::POST,
            _ => reqwest::Method::GET,
        };
        let mut req = self
            .http
            .request(method, url)
            .bearer_auth(access_token.expose())
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.timeout);
        for (k, v) in cfg.map(|c| &c.additional_headers).into_iter().flatten() {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req.send().await.map_err(|e| http::describe(&e))?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status().as_u16()));
        }
        let v = http::read_json(resp).await?;
        if v.is_object() { Ok(v) } else { Err("not a JSON object".into()) }
    }
}
