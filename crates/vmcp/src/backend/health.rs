//! Health of one backend, fed by real traffic and by periodic probes ([`super::probe`]), and its
//! circuit breaker (`operational.failureHandling`).
//!
//! - Every call routed to the backend and every probe ends in [`Health::success`] or
//!   [`Health::failure`]. Failures are what says the backend is in trouble: a timeout, a transport
//!   error, an HTTP 5xx. A JSON-RPC error answer is a success (the backend answered), and so are
//!   credential refusals (they are about the caller).
//! - `unhealthyThreshold` consecutive failures make the backend unhealthy: its items leave the
//!   catalog until a call or probe succeeds.
//! - With the breaker enabled, `failureThreshold` consecutive failures open it: calls fail at once
//!   (naming the backend and the retry time) until `timeout` has passed; then one call or probe
//!   goes through (half-open) and decides: success closes the breaker, failure opens it again.
//!
//! Invariants: state changes that matter to the catalog (in service or not) bump the watch
//! [`Health::subscribe`] gives; a half-open breaker lets one trial through at a time (a trial
//! that never reports back is given up after the breaker timeout).

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::config::FailureHandlingConfig;

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail at once until the retry time.
    Open,
    /// One trial call or probe is let through.
    HalfOpen,
}

/// Why a call is not sent to the backend now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// What is wrong (no secret in it: transport errors only).
    pub reason: String,
    /// When a call will be let through again, if known.
    pub retry_at: Option<SystemTime>,
}

/// What the breaker and the health counters need from the config.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    unhealthy_threshold: u32,
    /// `None`: breaker disabled.
    breaker: Option<(u32, Duration)>,
}

impl Policy {
    /// From `operational.failureHandling`.
    pub fn from_config(fh: &FailureHandlingConfig) -> Self {
        let cb = &fh.circuit_breaker;
        Self {
            unhealthy_threshold: fh.unhealthy_threshold.max(1),
            breaker: cb.enabled.then_some((cb.failure_threshold.max(1), cb.timeout)),
        }
    }
}

#[derive(Debug)]
struct Inner {
    /// Replaced by a config reload ([`Health::set_policy`]); the counters stay.
    policy: Policy,
    consecutive_failures: u32,
    last_failure: Option<String>,
    breaker: BreakerState,
    /// Open: when a trial may go. Half-open: when the trial in flight is given up.
    until: Option<Instant>,
    /// A user-bound backend answered the gateway's own (credential-less) probe with 401/403:
    /// reachable, but only with a user's credentials.
    auth_required: bool,
    last_probe: Option<SystemTime>,
}

/// One backend's health and breaker. Cheap to share; all methods are short critical sections.
#[derive(Debug)]
pub struct Health {
    inner: Mutex<Inner>,
    /// Bumped when [`Health::in_service`] or the breaker state changes.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Health {
    /// A healthy backend with a closed breaker.
    pub fn new(policy: Policy) -> Self {
        Self {
            inner: Mutex::new(Inner {
                policy,
                consecutive_failures: 0,
                last_failure: None,
                breaker: BreakerState::Closed,
                until: None,
                auth_required: false,
                last_probe: None,
            }),
            changed: tokio::sync::watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call may go to the backend now. An open breaker whose time has come turns
    /// half-open and admits this call as its trial.
    pub fn admit(&self) -> Result<(), Refused> {
        let now = Instant::now();
        let mut s = self.lock();
        let Some((_, timeout)) = s.policy.breaker else { return Ok(()) };
        match s.breaker {
            BreakerState::Closed => Ok(()),
            BreakerState::Open | BreakerState::HalfOpen if s.until.is_none_or(|t| now >= t) => {
                let was = s.breaker;
                s.breaker = BreakerState::HalfOpen;
                s.until = Some(now + timeout);
                drop(s);
                if was != BreakerState::HalfOpen {
                    self.bump();
                }
                Ok(())
            }
            BreakerState::Open | BreakerState::HalfOpen => Err(self.refusal_of(&s, now)),
        }
    }

    fn refusal_of(&self, s: &Inner, now: Instant) -> Refused {
        let retry_at = s.until.map(|t| SystemTime::now() + t.saturating_duration_since(now));
        let last = s.last_failure.as_deref().unwrap_or("failures");
        let reason = match s.breaker {
            BreakerState::Open => format!(
                "circuit breaker open after {} consecutive failures (last: {last})",
                s.consecutive_failures
            ),
            BreakerState::HalfOpen => "circuit breaker half-open: a trial call is under way".into(),
            BreakerState::Closed => {
                format!(
                    "unhealthy after {} consecutive failures (last: {last})",
                    s.consecutive_failures
                )
            }
        };
        Refused { reason, retry_at }
    }

    /// Why a call would be refused now (breaker open, or half-open with its trial under way),
    /// without taking the trial: `None` when [`Health::admit`] would let a call through.
    pub fn blocks_calls(&self) -> Option<Refused> {
        let now = Instant::now();
        let s = self.lock();
        let blocked = s.policy.breaker.is_some()
            && s.breaker != BreakerState::Closed
            && s.until.is_some_and(|t| now < t);
        blocked.then(|| self.refusal_of(&s, now))
    }

    /// Why the backend is out of service (breaker open, or unhealthy), if it is.
    pub fn refusal(&self) -> Option<Refused> {
        let s = self.lock();
        let out = s.breaker == BreakerState::Open
            || s.consecutive_failures >= s.policy.unhealthy_threshold;
        out.then(|| self.refusal_of(&s, Instant::now()))
    }

    /// Whether the backend's items belong in the catalog: not unhealthy, breaker not open.
    pub fn in_service(&self) -> bool {
        self.refusal().is_none()
    }

    /// A call or probe succeeded: the failure count restarts and the breaker closes.
    pub fn success(&self) {
        self.change(|s| {
            s.consecutive_failures = 0;
            s.breaker = BreakerState::Closed;
            s.until = None;
        });
    }

    /// A call or probe failed for a reason that says the backend is in trouble.
    pub fn failure(&self, reason: &str) {
        let now = Instant::now();
        self.change(|s| {
            s.consecutive_failures = s.consecutive_failures.saturating_add(1);
            s.last_failure = Some(reason.chars().take(300).collect());
            if let Some((threshold, timeout)) = s.policy.breaker {
                let trip = match s.breaker {
                    BreakerState::HalfOpen => true,
                    BreakerState::Closed => s.consecutive_failures >= threshold,
                    BreakerState::Open => false,
                };
                if trip {
                    s.breaker = BreakerState::Open;
                    s.until = Some(now + timeout);
                    tracing::warn!(
                        failures = s.consecutive_failures,
                        ?timeout,
                        reason,
                        "circuit breaker opened"
                    );
                }
            }
        });
    }

    /// Applies a new policy (a config reload), keeping the counters: a breaker that is now
    /// disabled closes; thresholds apply from the next call on.
    pub fn set_policy(&self, policy: Policy) {
        self.change(|s| {
            s.policy = policy;
            if policy.breaker.is_none() {
                s.breaker = BreakerState::Closed;
                s.until = None;
            }
        });
    }

    /// Applies `f` to the state; watchers hear of it when what they see changed.
    fn change(&self, f: impl FnOnce(&mut Inner)) {
        let mut s = self.lock();
        let before = self.key(&s);
        f(&mut s);
        let after = self.key(&s);
        drop(s);
        if before != after {
            self.bump();
        }
    }

    /// Records a probe's time and whether it found the backend asking for user credentials.
    pub fn probed(&self, auth_required: bool) {
        let mut s = self.lock();
        s.last_probe = Some(SystemTime::now());
        s.auth_required = auth_required;
    }

    /// When an open breaker lets a trial through (for the prober to wake then).
    pub fn trial_at(&self) -> Option<Instant> {
        let s = self.lock();
        (s.breaker == BreakerState::Open).then_some(s.until).flatten()
    }

    /// The breaker's state.
    pub fn breaker(&self) -> BreakerState {
        self.lock().breaker
    }

    /// A feed that changes when the backend goes in or out of service.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn key(&self, s: &Inner) -> (bool, BreakerState) {
        let unhealthy = s.consecutive_failures >= s.policy.unhealthy_threshold;
        (unhealthy, s.breaker)
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// For `/status`: health, breaker state, consecutive failures, next retry time.
    pub fn report(&self) -> serde_json::Value {
        let now = Instant::now();
        let s = self.lock();
        let healthy = s.consecutive_failures < s.policy.unhealthy_threshold;
        let health = match (healthy, s.consecutive_failures, s.auth_required) {
            (false, _, _) => "unhealthy",
            (true, 0, true) => "authRequired",
            (true, 0, false) => "healthy",
            (true, _, _) => "degraded",
        };
        let next_retry = match s.breaker {
            BreakerState::Closed => None,
            _ => s.until.map(|t| rfc3339(SystemTime::now() + t.saturating_duration_since(now))),
        };
        serde_json::json!({
            "health": health,
            "consecutiveFailures": s.consecutive_failures,
            "lastFailure": s.last_failure,
            "lastProbe": s.last_probe.map(rfc3339),
            "breaker": {
                "enabled": s.policy.breaker.is_some(),
                "state": s.breaker,
                "nextRetry": next_retry,
            },
        })
    }
}

/// `2026-01-02T03:04:05.678Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let ms = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let (secs, ms) = ((ms / 1000) as i64, (ms % 1000) as u32);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(unhealthy: u32, breaker: Option<(u32, Duration)>) -> Policy {
        Policy { unhealthy_threshold: unhealthy, breaker }
    }

    /// A reload's new policy applies to the counters a backend already has.
    #[test]
    fn a_new_policy_keeps_the_counters() {
        let h = Health::new(policy(3, Some((2, Duration::from_secs(60)))));
        h.failure("HTTP 502");
        h.failure("HTTP 502");
        assert_eq!(h.breaker(), BreakerState::Open);
        let rx = h.subscribe();
        // Breaker disabled: it closes; two failures are under the new threshold of 5.
        h.set_policy(policy(5, None));
        assert_eq!(h.breaker(), BreakerState::Closed);
        assert!(h.in_service() && h.admit().is_ok());
        assert!(rx.has_changed().unwrap(), "listeners are told it is back");
        // A lower threshold makes the same count unhealthy at once.
        h.set_policy(policy(2, None));
        assert!(!h.in_service());
        assert_eq!(h.report()["consecutiveFailures"], 2);
    }

    #[test]
    fn breaker_opens_after_threshold_then_half_opens_once_and_closes_on_success() {
        let h = Health::new(policy(10, Some((3, Duration::from_millis(50)))));
        let mut rx = h.subscribe();
        for _ in 0..2 {
            h.failure("HTTP 502");
            assert_eq!(h.admit(), Ok(()));
        }
        assert!(!rx.has_changed().unwrap());
        h.failure("HTTP 502");
        assert_eq!(h.breaker(), BreakerState::Open);
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        let reason = |r: Option<Refused>| r.map(|r| r.reason);
        assert_eq!(reason(h.blocks_calls()), reason(h.admit().err()));
        let refused = h.admit().unwrap_err();
        assert!(refused.reason.contains("3 consecutive failures"), "{refused:?}");
        assert!(refused.reason.contains("HTTP 502"), "{refused:?}");
        assert!(refused.retry_at.is_some());
        assert!(!h.in_service());

        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(h.admit(), Ok(()), "the trial");
        assert_eq!(h.breaker(), BreakerState::HalfOpen);
        assert!(h.blocks_calls().is_some() && h.admit().is_err(), "one trial at a time");
        h.success();
        assert_eq!(h.breaker(), BreakerState::Closed);
        assert!(h.in_service());
        assert!(rx.has_changed().unwrap());
    }

    #[test]
    fn a_failed_trial_opens_the_breaker_again() {
        let h = Health::new(policy(10, Some((1, Duration::from_millis(20)))));
        h.failure("timed out");
        assert_eq!(h.breaker(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(h.admit(), Ok(()));
        h.failure("timed out");
        assert_eq!(h.breaker(), BreakerState::Open);
        assert!(h.admit().is_err());
        assert!(h.trial_at().is_some());
    }

    #[test]
    fn unhealthy_without_a_breaker_still_admits_calls() {
        let h = Health::new(policy(2, None));
        h.failure("x");
        assert!(h.in_service());
        h.failure("x");
        assert!(!h.in_service());
        assert_eq!(h.admit(), Ok(()), "no breaker: calls still go through");
        assert_eq!(h.blocks_calls(), None);
        assert_eq!(h.report()["health"], "unhealthy");
        assert_eq!(h.report()["breaker"]["enabled"], false);
        h.success();
        assert!(h.in_service());
        assert_eq!(h.report()["health"], "healthy");
        h.probed(true);
        assert_eq!(h.report()["health"], "authRequired");
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_709_251_200_123);
        assert_eq!(rfc3339(t), "2024-03-01T00:00:00.123Z");
    }
}
