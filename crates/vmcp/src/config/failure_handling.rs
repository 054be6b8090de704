//! `operational.failureHandling`: how the gateway watches backends' health, when it stops
//! sending them calls (circuit breaker), and what a client gets while some are down.
//!
//! The keys, defaults and bounds are ToolHive's (`pkg/vmcp/config/config.go`,
//! `FailureHandlingConfig`), with one exception: `partialFailureMode` defaults to `best_effort`.
//! ToolHive declares `fail` but never reads the key at run time, so a ToolHive gateway in fact
//! serves the backends that are up; vmcp keeps that behaviour unless `fail` is asked for.
//!
//! Invariant: every value that leaves `load` is usable: intervals and thresholds are non-zero,
//! a probe's timeout is shorter than the interval between probes, and the breaker's timeout is
//! at least one second (ToolHive's floor, against thrashing).

use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::validate::Finding;

/// Default `healthCheckInterval`.
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// Default `unhealthyThreshold`.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
/// Default `healthCheckTimeout`.
pub const DEFAULT_HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `statusReportingInterval` (accepted for ToolHive configs; vmcp has no Kubernetes
/// status to report: `/status` is always current).
pub const DEFAULT_STATUS_REPORTING_INTERVAL: Duration = Duration::from_secs(30);
/// Default `circuitBreaker.failureThreshold`.
pub const DEFAULT_BREAKER_FAILURE_THRESHOLD: u32 = 5;
/// Default `circuitBreaker.timeout`.
pub const DEFAULT_BREAKER_TIMEOUT: Duration = Duration::from_secs(60);

/// `operational.failureHandling`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FailureHandlingConfig {
    /// Time between two health probes of a backend.
    #[serde(with = "duration")]
    pub health_check_interval: Duration,
    /// Consecutive failures (probes or calls) after which a backend is unhealthy: its items leave
    /// the catalog until a probe or call succeeds.
    pub unhealthy_threshold: u32,
    /// Longest a probe may take; `0s` means the backend's request timeout.
    #[serde(with = "duration")]
    pub health_check_timeout: Duration,
    /// Accepted for ToolHive configs; no effect.
    #[serde(with = "duration")]
    pub status_reporting_interval: Duration,
    /// What a client gets while a backend is down.
    pub partial_failure_mode: PartialFailureMode,
    /// The per-backend circuit breaker.
    pub circuit_breaker: CircuitBreakerConfig,
}

impl Default for FailureHandlingConfig {
    fn default() -> Self {
        Self {
            health_check_interval: DEFAULT_HEALTH_CHECK_INTERVAL,
            unhealthy_threshold: DEFAULT_UNHEALTHY_THRESHOLD,
            health_check_timeout: DEFAULT_HEALTH_CHECK_TIMEOUT,
            status_reporting_interval: DEFAULT_STATUS_REPORTING_INTERVAL,
            partial_failure_mode: PartialFailureMode::default(),
            circuit_breaker: CircuitBreakerConfig::default(),
        }
    }
}

/// Where these keys mean more in vmcp than in ToolHive, for `vmcp validate`.
pub fn warnings(fh: &FailureHandlingConfig) -> Vec<String> {
    let mut out = Vec::new();
    if fh.partial_failure_mode == PartialFailureMode::Fail {
        // ToolHive's operator writes `fail` into every config it generates, but ToolHive never
        // acts on it; vmcp does, so say so before it surprises anyone.
        out.push(
            "operational.failureHandling.partialFailureMode: fail: ToolHive accepts this key \
             but serves the healthy backends anyway; vmcp enforces it: while any backend is down, \
             initialize and list requests fail naming it. Use best_effort for ToolHive's behaviour"
                .to_owned(),
        );
    }
    out
}

/// `partialFailureMode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartialFailureMode {
    /// A session's `initialize` and list requests fail (naming the backends) while any backend
    /// is down or unhealthy.
    Fail,
    /// The backends that are up are served; the others' items are left out.
    #[default]
    BestEffort,
}

/// `circuitBreaker`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    /// Whether calls to a failing backend are refused at once for a while.
    pub enabled: bool,
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long an open breaker refuses calls before letting one through (half-open).
    #[serde(with = "duration")]
    pub timeout: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            failure_threshold: DEFAULT_BREAKER_FAILURE_THRESHOLD,
            timeout: DEFAULT_BREAKER_TIMEOUT,
        }
    }
}

impl FailureHandlingConfig {
    /// The probe timeout for a backend whose request timeout is `request_timeout`.
    pub fn probe_timeout(&self, request_timeout: Duration) -> Duration {
        if self.health_check_timeout.is_zero() {
            request_timeout
        } else {
            self.health_check_timeout
        }
    }
}

/// Checks the keys of this block.
pub(crate) fn check(fh: &FailureHandlingConfig) -> Vec<Finding> {
    const P: &str = "operational.failureHandling";
    let mut out = Vec::new();
    let mut report = |key: &str, message: String| {
        out.push(Finding { path: format!("{P}.{key}"), message });
    };
    if fh.health_check_interval.is_zero() {
        report("healthCheckInterval", "must be greater than zero".into());
    }
    if fh.unhealthy_threshold == 0 {
        report("unhealthyThreshold", "must be greater than zero".into());
    }
    if !fh.health_check_timeout.is_zero() && fh.health_check_timeout >= fh.health_check_interval {
        report(
            "healthCheckTimeout",
            format!(
                "must be less than healthCheckInterval ({:?}), so probes do not queue up",
                fh.health_check_interval
            ),
        );
    }
    let cb = &fh.circuit_breaker;
    if cb.enabled && cb.failure_threshold == 0 {
        report("circuitBreaker.failureThreshold", "must be at least 1".into());
    }
    if cb.enabled && cb.timeout < Duration::from_secs(1) {
        report("circuitBreaker.timeout", "must be at least 1s (against thrashing)".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::super::validate::tests::problems;
    use super::*;

    const BASE: &str = "name: gw\nbackends:\n  - name: web\n    transport: streamable-http\n    url: http://localhost:9000/mcp\n";

    #[test]
    fn defaults_are_toolhives() {
        let cfg = parse(BASE, "t.yaml").expect("valid");
        let fh = &cfg.operational.failure_handling;
        assert_eq!(fh.health_check_interval, Duration::from_secs(30));
        assert_eq!(fh.unhealthy_threshold, 3);
        assert_eq!(fh.health_check_timeout, Duration::from_secs(10));
        assert_eq!(fh.status_reporting_interval, Duration::from_secs(30));
        assert_eq!(fh.partial_failure_mode, PartialFailureMode::BestEffort);
        assert!(!fh.circuit_breaker.enabled);
        assert_eq!(fh.circuit_breaker.failure_threshold, 5);
        assert_eq!(fh.circuit_breaker.timeout, Duration::from_secs(60));
    }

    #[test]
    fn set_as_toolhive_writes_it() {
        let text = format!(
            "{BASE}operational:\n  failureHandling:\n    healthCheckInterval: 5s\n    unhealthyThreshold: 2\n    healthCheckTimeout: 1500ms\n    statusReportingInterval: 1m\n    partialFailureMode: fail\n    circuitBreaker:\n      enabled: true\n      failureThreshold: 4\n      timeout: 1m30s\n"
        );
        let cfg = parse(&text, "t.yaml").expect("valid");
        let fh = &cfg.operational.failure_handling;
        assert_eq!(fh.health_check_interval, Duration::from_secs(5));
        assert_eq!(fh.unhealthy_threshold, 2);
        assert_eq!(fh.health_check_timeout, Duration::from_millis(1500));
        assert_eq!(fh.partial_failure_mode, PartialFailureMode::Fail);
        assert_eq!(
            fh.circuit_breaker,
            CircuitBreakerConfig {
                enabled: true,
                failure_threshold: 4,
                timeout: Duration::from_secs(90)
            }
        );
        // Zero means "the request timeout", as in ToolHive ("no timeout"), but still bounded.
        assert_eq!(fh.probe_timeout(Duration::from_secs(7)), Duration::from_millis(1500));
        let zero = FailureHandlingConfig { health_check_timeout: Duration::ZERO, ..fh.clone() };
        assert_eq!(zero.probe_timeout(Duration::from_secs(7)), Duration::from_secs(7));
    }

    #[test]
    fn bad_values_are_reported_on_their_lines() {
        let bad = format!(
            "{BASE}operational:\n  failureHandling:\n    healthCheckInterval: 0s\n    unhealthyThreshold: 0\n    healthCheckTimeout: 1s\n    circuitBreaker:\n      enabled: true\n      failureThreshold: 0\n      timeout: 500ms\n"
        );
        let ps = problems(&bad);
        let got: Vec<(Option<usize>, &str)> = ps.iter().map(|(l, p, _)| (*l, p.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(8), "operational.failureHandling.healthCheckInterval"),
                (Some(9), "operational.failureHandling.unhealthyThreshold"),
                (Some(10), "operational.failureHandling.healthCheckTimeout"),
                (Some(13), "operational.failureHandling.circuitBreaker.failureThreshold"),
                (Some(14), "operational.failureHandling.circuitBreaker.timeout"),
            ],
            "{ps:?}"
        );
        // A disabled breaker's values are not checked (ToolHive does the same).
        let off = format!(
            "{BASE}operational:\n  failureHandling:\n    circuitBreaker:\n      failureThreshold: 0\n"
        );
        assert!(parse(&off, "t.yaml").is_ok());
    }

    #[test]
    fn unknown_keys_and_modes_are_refused() {
        let text = format!("{BASE}operational:\n  failureHandling:\n    retries: 3\n");
        assert!(parse(&text, "t.yaml").is_err());
        let text =
            format!("{BASE}operational:\n  failureHandling:\n    partialFailureMode: maybe\n");
        assert!(parse(&text, "t.yaml").is_err());
    }

    #[test]
    fn fail_mode_is_flagged_as_enforced_unlike_toolhive() {
        let yaml =
            format!("{BASE}operational:\n  failureHandling:\n    partialFailureMode: fail\n");
        let cfg = parse(&yaml, "t").unwrap();
        let w = crate::config::validate_warnings(&cfg);
        assert!(
            w.iter().any(|w| w.contains("partialFailureMode: fail") && w.contains("ToolHive")),
            "{w:?}"
        );
        assert!(warnings(&FailureHandlingConfig::default()).is_empty());
    }
}
