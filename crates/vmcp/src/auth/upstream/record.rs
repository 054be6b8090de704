//! One vault entry in clear (it only exists in memory; the store sees it sealed), and when it
//! must be refreshed.
//!
//! Refresh margin: a token is refreshed once less than [`refresh_margin`] of its life remains:
//! 20 % of the lifetime it was issued with, at least 0.5 s and at most 60 s, and never more
//! than half the lifetime (a 2 s token is refreshed in its last 0.5 s, a 1 h token in its last
//! minute, a 0.4 s token in its last 0.2 s).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::TokenSet;
use crate::auth::identity::Secret;

/// Least refresh margin (unless the lifetime is shorter than twice it).
pub const MIN_REFRESH_MARGIN: Duration = Duration::from_millis(500);
/// Largest refresh margin.
pub const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// How long before its expiry a token that lives `lifetime` is refreshed.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 5).clamp(MIN_REFRESH_MARGIN, MAX_REFRESH_MARGIN).min(lifetime / 2)
}

/// The clear form of an entry. Deliberately not `Debug`.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Record {
    /// Random per write: tells a refresh whether the entry was replaced while it ran.
    #[serde(rename = "g")]
    pub(super) generation: u64,
    #[serde(rename = "a")]
    pub(super) access_token: String,
    #[serde(rename = "r", default)]
    pub(super) refresh_token: Option<String>,
    #[serde(rename = "i", default)]
    pub(super) id_token: Option<String>,
    /// Expiry of the access token, ms since the epoch.
    #[serde(rename = "e", default)]
    pub(super) expires_at_ms: Option<u64>,
    /// When these tokens were stored, ms since the epoch: with the expiry, their lifetime.
    #[serde(rename = "t")]
    pub(super) issued_at_ms: u64,
    #[serde(rename = "s", default)]
    pub(super) scope: Option<String>,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

impl Record {
    pub(super) fn new(t: &TokenSet, now: SystemTime) -> Self {
        Self {
            generation: rand::random(),
            access_token: t.access_token.expose().to_string(),
            refresh_token: t.refresh_token.as_ref().map(|s| s.expose().to_string()),
            id_token: t.id_token.as_ref().map(|s| s.expose().to_string()),
            expires_at_ms: t.expires_at.map(ms),
            issued_at_ms: ms(now),
            scope: t.scope.clone(),
        }
    }

    pub(super) fn tokens(&self) -> TokenSet {
        TokenSet {
            access_token: Secret::new(self.access_token.clone()),
            refresh_token: self.refresh_token.clone().map(Secret::new),
            id_token: self.id_token.clone().map(Secret::new),
            expires_at: self.expires_at_ms.map(time),
            scope: self.scope.clone(),
        }
    }

    pub(super) fn access(&self) -> Secret {
        Secret::new(self.access_token.clone())
    }

    /// Whether the access token is past its expiry.
    pub(super) fn expired(&self, now: SystemTime) -> bool {
        self.expires_at_ms.is_some_and(|e| e <= ms(now))
    }

    /// Whether the access token is within its refresh margin (or past it). A token without
    /// an expiry never is.
    pub(super) fn needs_refresh(&self, now: SystemTime) -> bool {
        let Some(exp) = self.expires_at_ms else { return false };
        let lifetime = Duration::from_millis(exp.saturating_sub(self.issued_at_ms));
        let remaining = Duration::from_millis(exp.saturating_sub(ms(now)));
        remaining <= refresh_margin(lifetime)
    }

    /// When this entry can serve nothing any more: the access token's expiry, if there is no
    /// refresh token.
    pub(super) fn useless_after(&self) -> Option<SystemTime> {
        match self.refresh_token {
            Some(_) => None,
            None => self.expires_at_ms.map(time),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        assert_eq!(refresh_margin(s(2)), ms(500));
        assert_eq!(refresh_margin(s(10)), s(2));
        assert_eq!(refresh_margin(s(3600)), s(60));
        assert_eq!(refresh_margin(ms(400)), ms(200));
        assert_eq!(refresh_margin(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn refresh_due() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let tokens = TokenSet {
            access_token: Secret::new("a"),
            refresh_token: Some(Secret::new("r")),
            id_token: None,
            expires_at: Some(t0 + Duration::from_secs(2)),
            scope: None,
        };
        let r = Record::new(&tokens, t0);
        assert!(!r.needs_refresh(t0));
        assert!(!r.needs_refresh(t0 + Duration::from_millis(1499)));
        assert!(r.needs_refresh(t0 + Duration::from_millis(1500)));
        assert!(r.needs_refresh(t0 + Duration::from_secs(5)));
        assert!(!r.expired(t0 + Duration::from_millis(1999)));
        assert!(r.expired(t0 + Duration::from_secs(2)));
        assert_eq!(r.useless_after(), None);
        let forever =
            Record::new(&TokenSet { expires_at: None, refresh_token: None, ..tokens }, t0);
        assert!(!forever.needs_refresh(t0 + Duration::from_secs(1 << 30)));
        assert_eq!(forever.useless_after(), None);
    }
}
