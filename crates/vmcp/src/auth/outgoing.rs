//! Outgoing authentication: the credentials put on one HTTP request to a backend, resolved from the
//! [`Caller`] of that request at the moment it is sent.
//!
//! Invariant: strategies are stateless with respect to callers; any cache they keep is keyed by
//! the caller's own credential, so two callers never share a result.

use super::Caller;

/// How the gateway authenticates to one backend.
#[derive(Debug, Clone, Default)]
pub enum OutgoingAuth {
    /// No credentials.
    #[default]
    Unauthenticated,
}

/// Why credentials could not be resolved for a request.
#[derive(Debug, thiserror::Error)]
pub enum OutgoingAuthError {
    /// The caller must authenticate again.
    #[error("the caller must re-authenticate: {0}")]
    Reauthenticate(String),
    /// The credential service failed.
    #[error("backend credentials unavailable: {0}")]
    Unavailable(String),
}

impl OutgoingAuth {
    /// Adds this strategy's credentials for `caller` to an outgoing request.
    pub async fn apply(
        &self,
        _caller: &Caller,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, OutgoingAuthError> {
        match self {
            OutgoingAuth::Unauthenticated => Ok(request),
        }
    }
}
