//! `AssumeRoleWithWebIdentity` through `aws-sdk-sts` (its own hyper + rustls client, no AWS
//! credentials: the call is unsigned), and the cache of the temporary credentials it returns.
//!
//! Invariants:
//! - Every call has a deadline ([`super::super::DEFAULT_EXCHANGE_TIMEOUT`] unless configured)
//!   and at most two attempts within it.
//! - Credentials are cached per key (SHA-256 of issuer, subject, role and session name: two
//!   principals never share an entry) until [`expiry_margin`] before they expire, at most
//!   [`CACHE_CAPACITY`] keys per backend. Concurrent misses share one call. An STS outage is
//!   remembered for [`NEGATIVE_TTL`]; a refusal of this caller is not (the next request, maybe
//!   with a fresh token, asks again).
//! - Errors name the backend, the role and STS's error code, never a token or a key; the secret
//!   key and the session token are [`Secret`]s.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_sts::config::retry::RetryConfig;
use aws_sdk_sts::config::timeout::TimeoutConfig;
use aws_sdk_sts::config::{BehaviorVersion, Region};
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use moka::Expiry;
use moka::future::Cache;

use crate::auth::identity::Secret;
use crate::auth::outgoing::OutgoingAuthError;

/// Most keys (principal, role, session name) kept at once, per backend.
pub(super) const CACHE_CAPACITY: u64 = 10_000;
/// How long an STS outage is remembered per key.
pub(super) const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Credentials stop being used this long before they expire (less for short-lived ones: a tenth
/// of their lifetime), so no request is signed with credentials that expire on the way.
pub(super) const MAX_EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// Temporary credentials of one assumed role. `Debug` shows the access key id only.
pub(crate) struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Secret,
    pub expires_at: SystemTime,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// How long before expiry credentials of this remaining lifetime stop being used.
pub(super) fn expiry_margin(lifetime: Duration) -> Duration {
    MAX_EXPIRY_MARGIN.min(lifetime / 10)
}

#[derive(Clone)]
enum Outcome {
    Creds(Arc<Credentials>, Duration),
    Failed(OutgoingAuthError),
}

struct OutcomeExpiry;

impl<K> Expiry<K, Outcome> for OutcomeExpiry {
    fn expire_after_create(&self, _: &K, value: &Outcome, _: Instant) -> Option<Duration> {
        Some(match value {
            Outcome::Creds(_, ttl) => *ttl,
            Outcome::Failed(_) => NEGATIVE_TTL,
        })
    }
}

/// What one assumption asks for.
pub(super) struct Ask<'a> {
    pub role_arn: &'a str,
    pub session_name: &'a str,
    pub duration_seconds: i32,
}

/// One backend's STS client and credential cache.
pub(super) struct Sts {
    client: aws_sdk_sts::Client,
    backend: String,
    endpoint: Option<String>,
    region: String,
    timeout: Duration,
    cache: Cache<[u8; 32], Outcome>,
}

impl Sts {
    pub(super) fn new(
        backend: &str,
        region: &str,
        endpoint: Option<&str>,
        timeout: Duration,
    ) -> Self {
        let mut conf = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            .timeout_config(TimeoutConfig::builder().operation_timeout(timeout).build());
        if let Some(url) = endpoint {
            conf = conf.endpoint_url(url);
        }
        let cache =
            Cache::builder().max_capacity(CACHE_CAPACITY).expire_after(OutcomeExpiry).build();
        Self {
            client: aws_sdk_sts::Client::from_conf(conf.build()),
            backend: backend.to_owned(),
            endpoint: endpoint.map(str::to_owned),
            region: region.to_owned(),
            timeout,
            cache,
        }
    }

    /// The same client settings with another deadline, and an empty cache.
    pub(super) fn with_timeout(&self, timeout: Duration) -> Self {
        Self::new(&self.backend, &self.region, self.endpoint.as_deref(), timeout)
    }

    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(super) fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// The cached credentials for `key`, else those of a new assumption with the web identity
    /// token `token` yields (resolved only on a miss).
    pub(super) async fn credentials(
        &self,
        key: [u8; 32],
        ask: Ask<'_>,
        token: impl Future<Output = Result<Secret, OutgoingAuthError>>,
    ) -> Result<Arc<Credentials>, OutgoingAuthError> {
        let outcome = self
            .cache
            .try_get_with(key, async {
                let token = token.await?;
                match self.assume(&ask, &token).await {
                    Ok((creds, ttl)) => Ok(Outcome::Creds(Arc::new(creds), ttl)),
                    // An outage is remembered a few seconds, so it is not hammered.
                    Err(e @ OutgoingAuthError::Unavailable(_)) => {
                        tracing::warn!(backend = %self.backend, "{e}");
                        Ok(Outcome::Failed(e))
                    }
                    Err(e) => {
                        tracing::info!(backend = %self.backend, "{e}");
                        Err(e)
                    }
                }
            })
            .await
            .map_err(|e| (*e).clone())?;
        match outcome {
            Outcome::Creds(c, _) => Ok(c),
            Outcome::Failed(e) => Err(e),
        }
    }

    /// One call, and how long its credentials may be used.
    async fn assume(
        &self,
        ask: &Ask<'_>,
        token: &Secret,
    ) -> Result<(Credentials, Duration), OutgoingAuthError> {
        let (backend, role) = (&self.backend, ask.role_arn);
        let unavailable = |what: String| {
            OutgoingAuthError::Unavailable(format!(
                "AssumeRoleWithWebIdentity of role {role} for backend {backend:?}: {what}"
            ))
        };
        // Boxed: the SDK's future type is deep enough to overflow the trait solver in every
        // async fn that awaits this one.
        let call: futures::future::BoxFuture<'_, _> = Box::pin(
            self.client
                .assume_role_with_web_identity()
                .role_arn(role)
                .role_session_name(ask.session_name)
                .web_identity_token(token.expose())
                .duration_seconds(ask.duration_seconds)
                .send(),
        );
        let out = match tokio::time::timeout(self.timeout, call).await {
            Err(_) => return Err(unavailable(format!("no answer within {:?}", self.timeout))),
            Ok(Err(e)) => return Err(self.classify(role, &e)),
            Ok(Ok(out)) => out,
        };
        let c =
            out.credentials.ok_or_else(|| unavailable("the answer has no credentials".into()))?;
        let expires_at = SystemTime::try_from(c.expiration)
            .map_err(|_| unavailable("the credentials' expiration is out of range".into()))?;
        let lifetime = expires_at
            .duration_since(SystemTime::now())
            .map_err(|_| unavailable("the credentials had expired on arrival".into()))?;
        let ttl = lifetime.saturating_sub(expiry_margin(lifetime));
        let creds = Credentials {
            access_key_id: c.access_key_id,
            secret_access_key: Secret::new(c.secret_access_key),
            session_token: Secret::new(c.session_token),
            expires_at,
        };
        Ok((creds, ttl))
    }

    /// A failed call as the client should see it: the caller's token expired (log in again),
    /// STS refused this caller the role (403), or STS cannot be used right now.
    fn classify<E: ProvideErrorMetadata, R>(
        &self,
        role: &str,
        e: &SdkError<E, R>,
    ) -> OutgoingAuthError {
        let backend = &self.backend;
        let SdkError::ServiceError(service) = e else {
            let what = match e {
                SdkError::TimeoutError(_) => "no answer in time",
                SdkError::DispatchFailure(_) => "cannot reach STS",
                SdkError::ResponseError(_) => "unreadable answer from STS",
                _ => "the request could not be made",
            };
            return OutgoingAuthError::Unavailable(format!(
                "AssumeRoleWithWebIdentity of role {role} for backend {backend:?}: {what}"
            ));
        };
        // STS error codes are short identifiers; anything else is not echoed.
        let code = service.err().code().filter(|c| {
            c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        });
        let detail = code.unwrap_or("an unnamed error");
        match code {
            Some("ExpiredTokenException" | "ExpiredToken") => {
                OutgoingAuthError::Reauthenticate(format!(
                    "STS refused the caller's expired token for role {role} (backend {backend:?}): {detail}"
                ))
            }
            Some(
                "AccessDenied"
                | "AccessDeniedException"
                | "InvalidIdentityToken"
                | "InvalidIdentityTokenException"
                | "IDPRejectedClaim"
                | "IDPRejectedClaimException",
            ) => OutgoingAuthError::Forbidden(format!(
                "STS refused to let the caller assume role {role} (backend {backend:?}): {detail}"
            )),
            _ => OutgoingAuthError::Unavailable(format!(
                "AssumeRoleWithWebIdentity of role {role} for backend {backend:?} failed: {detail}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins() {
        assert_eq!(expiry_margin(Duration::from_secs(3600)), MAX_EXPIRY_MARGIN);
        assert_eq!(expiry_margin(Duration::from_secs(300)), Duration::from_secs(30));
        assert_eq!(expiry_margin(Duration::from_secs(4)), Duration::from_millis(400));
    }

    #[test]
    fn debug_shows_no_secret() {
        let c = Credentials {
            access_key_id: "ASIAKEY".into(),
            secret_access_key: Secret::new("very-secret"),
            session_token: Secret::new("session-tok"),
            expires_at: SystemTime::now(),
        };
        let d = format!("{c:?}");
        assert!(d.contains("ASIAKEY") && !d.contains("very-secret") && !d.contains("session-tok"));
    }
}
