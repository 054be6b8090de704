//! `operational.backendSessions` and `operational.maxBackendReplyBytes`: how many backend sessions
//! the gateway keeps per Streamable HTTP backend, how long an unused one lives, and the largest
//! reply it reads from an HTTP backend.
//!
//! Invariant: every value that leaves `load` is usable (non-zero); the defaults bound memory and
//! connections for a gateway nobody tuned.

use std::time::Duration;

use serde::Deserialize;

use super::locate::Index;
use super::validate::Finding;
use super::{Config, OperationalConfig};

/// Default for `operational.backendSessions.maxPerBackend`.
pub const DEFAULT_MAX_PER_BACKEND: usize = 1000;
/// Default for `operational.backendSessions.idleTimeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Default for `operational.maxBackendReplyBytes` (16 MiB).
pub const DEFAULT_MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;

/// `operational.backendSessions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendSessionsConfig {
    /// Most backend sessions kept open per backend (client and principal sessions together; the
    /// gateway's own session is not counted). The least recently used idle one is ended to make
    /// room; when every one is busy, the request that needed a new one fails.
    #[serde(default = "default_max_per_backend")]
    pub max_per_backend: usize,
    /// A principal's backend session (serving its Modern clients) unused this long is ended.
    #[serde(default = "default_idle_timeout", with = "super::duration")]
    pub idle_timeout: Duration,
}

impl Default for BackendSessionsConfig {
    fn default() -> Self {
        Self { max_per_backend: DEFAULT_MAX_PER_BACKEND, idle_timeout: DEFAULT_IDLE_TIMEOUT }
    }
}

fn default_max_per_backend() -> usize {
    DEFAULT_MAX_PER_BACKEND
}

fn default_idle_timeout() -> Duration {
    DEFAULT_IDLE_TIMEOUT
}

impl OperationalConfig {
    /// `maxBackendReplyBytes`, or its default.
    pub fn max_backend_reply_bytes(&self) -> usize {
        self.max_backend_reply_bytes.unwrap_or(DEFAULT_MAX_REPLY_BYTES)
    }
}

/// Checks the keys of this file.
pub(crate) fn check(cfg: &Config, _index: &Index) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut report = |path: &str, message: &str| {
        out.push(Finding { path: path.to_owned(), message: message.to_owned() });
    };
    let op = &cfg.operational;
    if op.backend_sessions.max_per_backend == 0 {
        report("operational.backendSessions.maxPerBackend", "must be greater than zero");
    }
    if op.backend_sessions.idle_timeout.is_zero() {
        report("operational.backendSessions.idleTimeout", "must be greater than zero");
    }
    if op.max_backend_reply_bytes == Some(0) {
        report("operational.maxBackendReplyBytes", "must be greater than zero");
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
    fn defaults() {
        let cfg = parse(BASE, "t.yaml").expect("valid");
        assert_eq!(cfg.operational.backend_sessions.max_per_backend, 1000);
        assert_eq!(cfg.operational.backend_sessions.idle_timeout, Duration::from_secs(600));
        assert_eq!(cfg.operational.max_backend_reply_bytes(), 16 * 1024 * 1024);
    }

    #[test]
    fn set_and_checked() {
        let text = format!(
            "{BASE}operational:\n  maxBackendReplyBytes: 1024\n  backendSessions:\n    maxPerBackend: 5\n    idleTimeout: 1m30s\n"
        );
        let cfg = parse(&text, "t.yaml").expect("valid");
        assert_eq!(cfg.operational.backend_sessions.max_per_backend, 5);
        assert_eq!(cfg.operational.backend_sessions.idle_timeout, Duration::from_secs(90));
        assert_eq!(cfg.operational.max_backend_reply_bytes(), 1024);

        let bad = format!(
            "{BASE}operational:\n  maxBackendReplyBytes: 0\n  backendSessions:\n    maxPerBackend: 0\n    idleTimeout: 0s\n"
        );
        let ps = problems(&bad);
        let paths: Vec<(Option<usize>, &str)> =
            ps.iter().map(|(l, p, _)| (*l, p.as_str())).collect();
        assert_eq!(
            paths,
            [
                (Some(7), "operational.maxBackendReplyBytes"),
                (Some(9), "operational.backendSessions.maxPerBackend"),
                (Some(10), "operational.backendSessions.idleTimeout"),
            ]
        );
        assert!(ps.iter().all(|(_, _, m)| m == "must be greater than zero"), "{ps:?}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = format!("{BASE}operational:\n  backendSessions:\n    maxSessions: 5\n");
        assert!(parse(&text, "t.yaml").is_err());
    }
}
