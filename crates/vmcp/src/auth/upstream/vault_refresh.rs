//! The refresh path of [`super::Vault`]: the cross-replica lease, the refresh with its retries,
//! and what each failure does to the grant (see the invariants in the parent module).

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::super::lease::LeaseHolder;
use super::super::record::Record;
use super::super::refresh::RefreshError;
use super::super::{TokenError, TokenSet};
use super::{Inner, reauth, unavailable};
use crate::auth::identity::Secret;

/// What taking the refresh lease gave.
enum Leased {
    /// This flight holds it and refreshes.
    Held(LeaseHolder),
    /// Another replica refreshed meanwhile: its access token.
    Done(Secret),
}

impl Inner {
    pub(super) async fn refresh_flow(
        &self,
        user: &str,
        upstream: &str,
    ) -> Result<Secret, TokenError> {
        let _permit = self.permits.acquire().await.map_err(|_| unavailable(upstream, "closed"))?;
        let holder = match self.take_lease(user, upstream).await? {
            Leased::Held(h) => h,
            Leased::Done(token) => return Ok(token),
        };
        let result = self.refresh_held(user, upstream).await;
        self.lease.release(user, upstream, &holder).await;
        result
    }

    /// The lease on refreshing (user, upstream), or the result of the replica that holds it.
    async fn take_lease(&self, user: &str, upstream: &str) -> Result<Leased, TokenError> {
        let ttl = self.options.lease_ttl;
        let deadline = tokio::time::Instant::now() + ttl;
        loop {
            match self.lease.try_acquire(user, upstream, ttl).await {
                Ok(Some(h)) => return Ok(Leased::Held(h)),
                Ok(None) => {}
                Err(e) => return Err(unavailable(upstream, e.to_string())),
            }
            // Another replica refreshes: its tokens land in the store.
            match self.load(user, upstream).await? {
                None => return Err(reauth(upstream, "grant dropped during refresh")),
                Some(r) if !r.needs_refresh(SystemTime::now()) => {
                    return Ok(Leased::Done(r.access()));
                }
                Some(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(unavailable(upstream, "another replica's refresh did not finish"));
            }
            tokio::time::sleep(self.options.lease_poll).await;
        }
    }

    /// The refresh proper, under the lease: the entry is read again, since another replica may
    /// have refreshed (and rotated the refresh token) before the lease was taken.
    async fn refresh_held(&self, user: &str, upstream: &str) -> Result<Secret, TokenError> {
        let Some(rec) = self.load(user, upstream).await? else {
            return Err(reauth(upstream, "no upstream grant held"));
        };
        let now = SystemTime::now();
        // Someone may have refreshed while this flight was being set up.
        if !rec.needs_refresh(now) {
            return Ok(rec.access());
        }
        if rec.refresh_token.is_none() {
            if !rec.expired(now) {
                return Ok(rec.access());
            }
            self.drop_grant(user, upstream, rec.generation).await;
            return Err(reauth(upstream, "access token expired and no refresh token"));
        }
        let current = rec.tokens();
        let c = &self.counters;
        let mut attempt = 1;
        let outcome = loop {
            match self.refresher.refresh(upstream, &current).await {
                Err(RefreshError::Transient(m)) => {
                    c.transient_failures.fetch_add(1, Ordering::Relaxed);
                    if attempt >= self.options.refresh_attempts {
                        break Err(RefreshError::Transient(m));
                    }
                    tracing::debug!(%user, %upstream, attempt, error = %m, "upstream refresh failed; retrying");
                    tokio::time::sleep(self.options.retry_backoff * 2u32.pow(attempt - 1)).await;
                    attempt += 1;
                }
                other => break other,
            }
        };
        let new = match outcome {
            Ok(new) => new,
            Err(e) => {
                let err = self.failed(user, upstream, &rec, e).await;
                // The grant is kept and the token is still good for a moment: use it.
                if matches!(err, TokenError::Unavailable { .. }) && !rec.expired(SystemTime::now())
                {
                    return Ok(rec.access());
                }
                return Err(err);
            }
        };
        let rotated =
            new.refresh_token.as_ref().is_some_and(|r| Some(r) != current.refresh_token.as_ref());
        let merged = TokenSet {
            refresh_token: new.refresh_token.or(current.refresh_token),
            id_token: new.id_token.or(current.id_token),
            ..new
        };
        let fresh = Record::new(&merged, SystemTime::now());
        // A logout or a new login may have happened while the IdP answered.
        match self.load(user, upstream).await {
            Ok(None) => return Err(reauth(upstream, "grant dropped during refresh")),
            Ok(Some(r)) if r.generation != rec.generation => return Ok(fresh.access()),
            _ => {}
        }
        if let Err(e) = self.save(user, upstream, &fresh).await {
            tracing::warn!(%user, %upstream, error = %e, rotated, "refreshed upstream tokens not stored");
            if rotated {
                // The stored refresh token is consumed: it must not be presented again.
                self.drop_grant(user, upstream, rec.generation).await;
                return Err(reauth(upstream, "refreshed tokens could not be stored"));
            }
            // The old refresh token is still good; the new access token is too.
        }
        c.refreshed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%user, %upstream, rotated, "upstream tokens refreshed");
        Ok(fresh.access())
    }

    async fn failed(
        &self,
        user: &str,
        upstream: &str,
        rec: &Record,
        e: RefreshError,
    ) -> TokenError {
        let c = &self.counters;
        match e {
            RefreshError::Dead(m) => {
                c.dead_grants.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%user, %upstream, reason = %m, "upstream grant is dead; dropped");
                self.drop_grant(user, upstream, rec.generation).await;
                reauth(upstream, m)
            }
            RefreshError::Lost(m) => {
                c.lost_responses.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%user, %upstream, reason = %m, "upstream refresh answer lost; grant dropped, the refresh token is never replayed");
                self.drop_grant(user, upstream, rec.generation).await;
                reauth(upstream, format!("refresh answer lost ({m})"))
            }
            RefreshError::Transient(m) => {
                c.unavailable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%user, %upstream, reason = %m, "upstream refresh failed; grant kept");
                unavailable(upstream, m)
            }
            RefreshError::Refused(m) => {
                c.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%user, %upstream, reason = %m, "upstream refused the refresh; grant kept");
                unavailable(upstream, m)
            }
        }
    }
}
