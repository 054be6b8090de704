//! A local session's tie to its shared record: when it last heard from the store, which of its
//! changes are written, and the store calls with their deadline.
//!
//! Timing ([`Policy`]), with `idle` = `server.limits.sessionIdleTimeout`:
//! - `refresh` = min(idle / 4, [`MAX_STALENESS`]): a session in use touches its record at most
//!   this often. The touch both extends the record's life and tells this replica whether the
//!   session still exists (a DELETE on another replica): a replica serves from its local copy
//!   for at most `refresh` after the session ended elsewhere. Checking on every request would
//!   cost a store round trip per request; this costs at most one per session per `refresh`.
//! - `ttl` = idle + `refresh`: since the last touch is at most `refresh` older than the last
//!   use, the record outlives every replica's idle timer, and dies on its own once the session
//!   has been idle everywhere.
//! - every store call has a deadline, [`STORE_TIMEOUT`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::store::{SessionStore, StoreError, StoreKey};

/// Longest a replica serves a session from its local copy without asking the store whether it
/// still exists (default 1 s).
pub const MAX_STALENESS: Duration = Duration::from_secs(1);
/// Deadline of every session store call (default 2 s); a store that does not answer in time
/// counts as unavailable.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// How records are timed, derived from the idle timeout (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Time to live set by every put and touch.
    pub ttl: Duration,
    /// Shortest interval between two touches of one session.
    pub refresh: Duration,
    /// Deadline of one store call.
    pub timeout: Duration,
}

impl Policy {
    /// The policy for sessions that end after `idle` without use.
    pub fn for_idle(idle: Duration) -> Policy {
        let refresh = (idle / 4).min(MAX_STALENESS);
        Policy { ttl: idle.saturating_add(refresh), refresh, timeout: STORE_TIMEOUT }
    }

    /// Runs one store call within [`Policy::timeout`].
    pub async fn call<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(format!("no answer within {:?}", self.timeout))),
        }
    }
}

/// One local session's bookkeeping against its record.
pub struct Link {
    /// Where the record lives.
    pub store: std::sync::Arc<dyn SessionStore>,
    /// The record's key (hash of the session id).
    pub key: StoreKey,
    pub policy: Policy,
    /// Last time the store confirmed (or received) the record.
    synced: Mutex<Instant>,
    /// Bumped by every change to what the record holds.
    version: AtomicU64,
    /// The version last written.
    written: AtomicU64,
    /// Held while writing, so writes of one session happen one at a time and the last one
    /// carries the latest state; and by removal, so no write can put a deleted record back.
    pub writer: tokio::sync::Mutex<()>,
}

impl Link {
    /// A link whose record was just written or read.
    pub fn new(store: std::sync::Arc<dyn SessionStore>, key: StoreKey, policy: Policy) -> Link {
        Link {
            store,
            key,
            policy,
            synced: Mutex::new(Instant::now()),
            version: AtomicU64::new(0),
            written: AtomicU64::new(0),
            writer: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether a touch is due; if so, claims it (concurrent requests do not all touch).
    pub fn claim_refresh(&self) -> bool {
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        if synced.elapsed() < self.policy.refresh {
            return false;
        }
        *synced = Instant::now();
        true
    }

    /// Makes the next use touch the record.
    #[cfg(test)]
    pub fn force_due(&self) {
        let past = Instant::now().checked_sub(self.policy.refresh);
        *self.synced.lock().unwrap_or_else(|e| e.into_inner()) = past.unwrap_or_else(Instant::now);
    }

    /// The store just confirmed the record.
    pub fn synced_now(&self) {
        *self.synced.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// What the record holds changed.
    pub fn changed(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether a change is not written yet.
    pub fn dirty(&self) -> bool {
        self.version.load(Ordering::Acquire) != self.written.load(Ordering::Acquire)
    }

    /// The current version, to pass to [`Link::written`] once the state read with it is stored.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The state of version `v` is stored.
    pub fn written(&self, v: u64) {
        self.written.store(v, Ordering::Release);
        self.synced_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_bounds_staleness_and_outlives_the_idle_timeout() {
        let p = Policy::for_idle(Duration::from_secs(3600));
        assert_eq!(p.refresh, MAX_STALENESS);
        assert_eq!(p.ttl, Duration::from_secs(3601));
        let p = Policy::for_idle(Duration::from_secs(1));
        assert_eq!((p.refresh, p.ttl), (Duration::from_millis(250), Duration::from_millis(1250)));
    }

    #[tokio::test]
    async fn a_silent_store_is_unavailable_after_the_deadline() {
        let p = Policy { timeout: Duration::from_millis(20), ..Policy::for_idle(Duration::ZERO) };
        let r: Result<(), _> = p.call(std::future::pending()).await;
        assert!(matches!(r, Err(StoreError::Unavailable(m)) if m.contains("no answer")));
    }
}
