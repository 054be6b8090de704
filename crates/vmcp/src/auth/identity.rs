//! The verified identity of a client request, and the caller value every backend request takes.

use std::fmt;
use std::sync::Arc;

/// A verified client identity. Immutable once built; shared by `Arc` for the life of one request.
pub struct Identity {
    /// Token issuer (`iss`).
    pub issuer: String,
    /// Subject (`sub`).
    pub subject: String,
    /// All claims of the token, for policies and claim-based routing.
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// The raw bearer token this request presented. Never logged.
    pub token: Secret,
    /// When the token expires (`exp`), if it says.
    pub expires_at: Option<std::time::SystemTime>,
    /// Scopes the token grants.
    pub scopes: Vec<String>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// A secret string that redacts itself in `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Who a session belongs to: the principal, not a credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Binding {
    /// A session opened without authentication.
    Anonymous,
    /// A session opened by this principal.
    Principal {
        /// Token issuer.
        issuer: String,
        /// Subject.
        subject: String,
    },
}

/// On whose behalf a backend request is made. Built fresh for each client request and passed down
/// explicitly to every function that talks to a backend.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A client request without authentication.
    Anonymous,
    /// A client request with a verified identity.
    User(Arc<Identity>),
    /// Work with no client request behind it (discovery, health probes, list_changed resync).
    System,
    /// Teardown of a session bound to this principal: credentials must be resolved now, for this
    /// binding, never replayed from an earlier request.
    Teardown(Binding),
}

impl Caller {
    /// The binding a session opened by this caller gets.
    pub fn binding(&self) -> Binding {
        match self {
            Caller::User(id) => {
                Binding::Principal { issuer: id.issuer.clone(), subject: id.subject.clone() }
            }
            Caller::Teardown(b) => b.clone(),
            Caller::Anonymous | Caller::System => Binding::Anonymous,
        }
    }
}
