//! Periodic health probes (`operational.failureHandling.healthCheckInterval`).
//!
//! Each connected backend gets a `ping` every interval, as `Caller::System` through its
//! configured outgoing auth (a backend that does not know `ping` is asked for `tools/list`
//! instead, unless it is user-bound: it is never listed without a user's credentials, and its
//! "method not found" answer already shows it is up). The outcome feeds the backend's [`Health`]: so a backend that died with no traffic
//! (a Modern backend holds no connection) is noticed within one interval, and a backend whose
//! breaker is open is tried again as soon as its breaker timeout has passed.
//!
//! A user-bound backend (its outgoing credentials are the caller's own) gets no credentials for
//! `Caller::System`; if it answers the probe with HTTP 401 or 403, it is reachable, not down
//! (`/status` reports `authRequired`).
//!
//! Invariant: every probe is bounded by `healthCheckTimeout` (or the backend's request timeout);
//! a probe never runs while the backend is not connected (its transport reconnects by itself).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::health::Health;
use super::registry::Backends;
use super::{Backend, CallContext, Reply, State};
use crate::auth::Caller;
use crate::protocol::jsonrpc::code;

/// Probes every backend of the current set until `stop` fires. A reload stops this and starts
/// it again for the new set and policy.
pub async fn run(
    backends: Arc<Backends>,
    config: crate::config::FailureHandlingConfig,
    stop: CancellationToken,
) {
    let set = backends.snapshot();
    let tasks = set.entries().iter().map(|e| {
        let target = Target {
            name: e.name.clone(),
            backend: e.backend.clone(),
            health: e.health.clone(),
            timeout: config.probe_timeout(e.timeout),
            user_bound: e.user_bound,
        };
        target.watch(config.health_check_interval, stop.clone())
    });
    futures::future::join_all(tasks).await;
}

struct Target {
    name: Arc<str>,
    backend: Arc<Backend>,
    health: Arc<Health>,
    timeout: Duration,
    user_bound: bool,
}

impl Target {
    /// Probes every `interval`, when the backend (re)connects, and when its breaker lets a trial
    /// through.
    async fn watch(self, interval: Duration, stop: CancellationToken) {
        let mut status = self.backend.watch();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut was_ready = self.backend.state() == State::Ready;
        loop {
            // Only while connected: a trial time already past would otherwise wake at once.
            let trial = if was_ready { self.health.trial_at() } else { None };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
                r = status.changed() => {
                    if r.is_err() {
                        return;
                    }
                    // A (re)connection is worth a probe: an unhealthy backend may be back.
                    let ready = self.backend.state() == State::Ready;
                    let connected = ready && !was_ready;
                    was_ready = ready;
                    if !connected {
                        continue;
                    }
                }
                _ = sleep_until(trial) => {}
            }
            if self.backend.state() != State::Ready {
                continue;
            }
            // An open breaker lets a probe through only when its time has come.
            if self.health.admit().is_err() {
                continue;
            }
            self.probe().await;
        }
    }

    /// One probe, its outcome recorded.
    async fn probe(&self) {
        let outcome = match self.ask("ping").await {
            // The answer itself shows the backend is up; a user-bound backend is never listed
            // without a user's credentials, so its answer is enough.
            Ok(Reply::Error(e)) if e.code == code::METHOD_NOT_FOUND && !self.user_bound => {
                self.ask("tools/list").await
            }
            other => other,
        };
        match outcome {
            Ok(_) => {
                self.health.probed(false);
                self.health.success();
            }
            Err(Failure::Backend(e))
                if self.user_bound && matches!(e.http_status(), Some(401 | 403)) =>
            {
                self.health.probed(true);
                self.health.success();
            }
            Err(Failure::Backend(e)) if e.counts_against_health() => {
                self.health.probed(false);
                tracing::warn!(backend = %self.name, error = %e, "health check failed");
                self.health.failure(&format!("health check: {e}"));
            }
            // Not connected any more, or a credential failure: nothing about the backend's health.
            Err(Failure::Backend(_)) => self.health.probed(false),
            Err(Failure::Timeout) => {
                self.health.probed(false);
                tracing::warn!(backend = %self.name, timeout = ?self.timeout, "health check timed out");
                self.health.failure(&format!("health check timed out after {:?}", self.timeout));
            }
        }
    }

    async fn ask(&self, method: &str) -> Result<Reply, Failure> {
        let request = self.backend.request(&Caller::System, method, None, CallContext::detached());
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) if e.is_timeout() => Err(Failure::Timeout),
            Ok(Err(e)) => Err(Failure::Backend(e)),
            Err(_) => Err(Failure::Timeout),
        }
    }
}

enum Failure {
    Backend(super::BackendError),
    Timeout,
}

async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
