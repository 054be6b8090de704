//! `upstream_inject`: the user's own access token from an upstream identity provider, as the
//! upstream token vault holds it at the moment the backend request is sent (refreshed there when
//! it is about to expire), forwarded as `Authorization: Bearer`.
//!
//! Invariant: the token is looked up per backend request, for the user the request's [`Caller`]
//! names; this strategy keeps no token. Only users of vmcp's own authorization server have
//! upstream tokens, so a caller from another issuer or an anonymous caller gets an error, and
//! system work goes without credentials, rather than anyone getting someone else's token.

use std::fmt;
use std::sync::Arc;

use http::header::AUTHORIZATION;

use super::{OutgoingAuthError, bearer, set_header};
use crate::auth::identity::Secret;
use crate::auth::upstream::{TokenError, UpstreamTokens};
use crate::auth::{Binding, Caller};

/// Which upstream, in which vault, for users of which issuer.
pub(crate) struct UpstreamInject {
    provider: String,
    issuer: String,
    vault: Arc<dyn UpstreamTokens>,
}

impl UpstreamInject {
    /// Tokens of `provider` for users whose vmcp tokens `issuer` issued.
    pub(crate) fn new(provider: String, issuer: String, vault: Arc<dyn UpstreamTokens>) -> Self {
        Self { provider, issuer, vault }
    }

    pub(super) async fn apply(
        &self,
        caller: &Caller,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, OutgoingAuthError> {
        let token = upstream_token(caller, &self.issuer, &self.provider, &*self.vault).await?;
        match bearer(token.expose()) {
            Some(v) => Ok(set_header(request, AUTHORIZATION, v)),
            None => Err(OutgoingAuthError::Unavailable(format!(
                "the access token of upstream {:?} is not a valid header value",
                self.provider
            ))),
        }
    }
}

/// The current access token of `provider` for the user `caller` acts for.
pub(super) async fn upstream_token(
    caller: &Caller,
    issuer: &str,
    provider: &str,
    vault: &dyn UpstreamTokens,
) -> Result<Secret, OutgoingAuthError> {
    let user = upstream_user(caller, issuer, provider)?;
    vault.access_token(user, provider).await.map_err(vault_error)
}

/// The vault's user id of the user `caller` acts for: only users of vmcp's own authorization
/// server (`issuer`) have upstream tokens.
pub(super) fn upstream_user<'a>(
    caller: &'a Caller,
    issuer: &str,
    provider: &str,
) -> Result<&'a str, OutgoingAuthError> {
    match caller {
        Caller::User(id) if id.issuer == issuer => Ok(id.subject.as_str()),
        Caller::Teardown(Binding::Principal { issuer: i, subject }) if i == issuer => {
            Ok(subject.as_str())
        }
        _ => Err(OutgoingAuthError::Reauthenticate(format!(
            "upstream {provider:?} tokens need a login through this gateway"
        ))),
    }
}

/// A vault failure as the client should see it: log in again, or 503 (the user stays logged in).
pub(super) fn vault_error(e: TokenError) -> OutgoingAuthError {
    match &e {
        TokenError::Reauthenticate { .. } => OutgoingAuthError::Reauthenticate(e.to_string()),
        // The detail (which IdP endpoint failed, how) is for the operator; the client learns
        // which upstream and that it should retry, not the gateway's internal addresses.
        TokenError::Unavailable { upstream, .. } => {
            tracing::warn!(upstream = %upstream, error = %e, "upstream tokens unavailable");
            OutgoingAuthError::UpstreamUnavailable(format!(
                "upstream identity provider {upstream:?} unavailable right now; retry later"
            ))
        }
    }
}

impl fmt::Debug for UpstreamInject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UpstreamInject({:?})", self.provider)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_idp_is_not_described_to_the_client() {
        let e = vault_error(TokenError::Unavailable {
            upstream: "corp".into(),
            reason: "connection failed (http://10.0.0.7:8443/oauth2/token)".into(),
        });
        let m = e.to_string();
        assert!(matches!(e, OutgoingAuthError::UpstreamUnavailable(_)), "{e:?}");
        assert!(m.contains("\"corp\"") && !m.contains("10.0.0.7"), "{m}");
    }
}
