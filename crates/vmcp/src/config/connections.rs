//! `server.connections`: bounds on client connections (how many, how long they may stay silent)
//! and the deadlines of a graceful shutdown.
//!
//! Invariant: every value here is finite and, where zero would disable a bound, non-zero; the
//! checks are in [`check`], run with the other semantic checks at load. Defaults are the
//! `DEFAULT_*` constants, which `docs/configuration.md` repeats.

use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::validate::Finding;

/// Default `maxConnections`: far above what one gateway serves in practice, far below what
/// exhausts file descriptors with a typical `ulimit -n` of 65536.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default `headerReadTimeout` (nginx's `client_header_timeout` is 60s; MCP clients send their
/// headers at once, so 10s only ever cuts off slow or silent peers).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `bodyReadTimeout`: a whole request body, at most `maxRequestBodyBytes` (4 MiB by
/// default) of JSON, in 30s is about 1 Mbit/s; anything slower is a stalled or hostile client.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `idleTimeout`, nginx's `keepalive_timeout`. A load balancer in front should close its
/// pooled connections before vmcp does (else a request can race the close), and the common ones
/// idle out at 60s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// Default `shutdownGracePeriod`: with the backend deadline and the stdio TERM grace it stays
/// under Kubernetes' default 30s `terminationGracePeriodSeconds`.
pub const DEFAULT_SHUTDOWN_GRACE_PERIOD: Duration = Duration::from_secs(15);
/// Default `backendShutdownTimeout`.
pub const DEFAULT_BACKEND_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest accepted `maxConnections` (tokio's semaphore limit is far above; this keeps a typo
/// from reading as "unbounded").
const MAX_MAX_CONNECTIONS: usize = 10_000_000;
/// Durations above this are almost certainly a unit mistake.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// `server.connections`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionsConfig {
    /// Most client connections open at once. At the limit vmcp stops accepting; new connections
    /// wait in the kernel's listen backlog until one closes.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long a new connection may take to deliver its first request's headers, and a
    /// kept-alive connection the rest of a request's headers once the first byte arrived.
    #[serde(default = "default_header_read_timeout", with = "duration")]
    pub header_read_timeout: Duration,
    /// How long a request body may take to arrive in full, counted from when vmcp starts
    /// reading it; then the connection is dropped.
    #[serde(default = "default_body_read_timeout", with = "duration")]
    pub body_read_timeout: Duration,
    /// How long a kept-alive connection may sit between requests before vmcp closes it.
    #[serde(default = "default_idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
    /// At SIGINT/SIGTERM, how long requests in progress may take to finish before they are
    /// answered 503 and their connections closed.
    #[serde(default = "default_shutdown_grace_period", with = "duration")]
    pub shutdown_grace_period: Duration,
    /// At shutdown, how long each backend gets to end its sessions and stop; stdio process
    /// groups still left then are killed.
    #[serde(default = "default_backend_shutdown_timeout", with = "duration")]
    pub backend_shutdown_timeout: Duration,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            shutdown_grace_period: DEFAULT_SHUTDOWN_GRACE_PERIOD,
            backend_shutdown_timeout: DEFAULT_BACKEND_SHUTDOWN_TIMEOUT,
        }
    }
}

fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}

fn default_header_read_timeout() -> Duration {
    DEFAULT_HEADER_READ_TIMEOUT
}

fn default_body_read_timeout() -> Duration {
    DEFAULT_BODY_READ_TIMEOUT
}

fn default_idle_timeout() -> Duration {
    DEFAULT_IDLE_TIMEOUT
}

fn default_shutdown_grace_period() -> Duration {
    DEFAULT_SHUTDOWN_GRACE_PERIOD
}

fn default_backend_shutdown_timeout() -> Duration {
    DEFAULT_BACKEND_SHUTDOWN_TIMEOUT
}

/// Semantic checks of `server.connections`.
pub(crate) fn check(c: &ConnectionsConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut report = |key: &str, message: String| {
        out.push(Finding { path: format!("server.connections.{key}"), message });
    };
    if c.max_connections == 0 {
        report("maxConnections", "must be at least 1".into());
    } else if c.max_connections > MAX_MAX_CONNECTIONS {
        report("maxConnections", format!("must be at most {MAX_MAX_CONNECTIONS}"));
    }
    // Zero would close every connection at once (the client timeouts); the shutdown
    // deadlines may be zero ("do not wait").
    for (key, value, zero_ok) in [
        ("headerReadTimeout", c.header_read_timeout, false),
        ("bodyReadTimeout", c.body_read_timeout, false),
        ("idleTimeout", c.idle_timeout, false),
        ("shutdownGracePeriod", c.shutdown_grace_period, true),
        ("backendShutdownTimeout", c.backend_shutdown_timeout, true),
    ] {
        if value.is_zero() && !zero_ok {
            report(key, "must be greater than zero".into());
        } else if value > MAX_DURATION {
            report(
                key,
                format!("{}s is over 24 hours; write e.g. \"30s\" or \"5m\"", value.as_secs()),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::super::validate::tests::problems;
    use super::*;

    const HEAD: &str = "name: gw\nbackends: []\n";

    /// Every field, for one comparison.
    fn fields(c: &ConnectionsConfig) -> (usize, Duration, Duration, Duration, Duration, Duration) {
        (
            c.max_connections,
            c.header_read_timeout,
            c.body_read_timeout,
            c.idle_timeout,
            c.shutdown_grace_period,
            c.backend_shutdown_timeout,
        )
    }

    #[test]
    fn defaults_when_absent() {
        let cfg = parse(HEAD, "t.yaml").map_err(|e| e.to_string());
        let c = cfg.map(|c| c.server.connections);
        let c = c.as_ref().map(fields);
        assert_eq!(
            c,
            Ok((
                10_000,
                Duration::from_secs(10),
                Duration::from_secs(30),
                Duration::from_secs(75),
                Duration::from_secs(15),
                Duration::from_secs(5)
            ))
        );
    }

    #[test]
    fn values_are_read() {
        let text = format!(
            "{HEAD}server:\n  connections:\n    maxConnections: 7\n    headerReadTimeout: 250ms\n    \
             bodyReadTimeout: 3s\n    idleTimeout: 1m30s\n    shutdownGracePeriod: 0s\n    backendShutdownTimeout: 2s\n"
        );
        let c = parse(&text, "t.yaml").map(|c| c.server.connections).map_err(|e| e.to_string());
        let c = c.as_ref().map(fields);
        assert_eq!(
            c,
            Ok((
                7,
                Duration::from_millis(250),
                Duration::from_secs(3),
                Duration::from_secs(90),
                Duration::ZERO,
                Duration::from_secs(2)
            ))
        );
    }

    #[test]
    fn bad_values_are_located() {
        let text = format!(
            "{HEAD}server:\n  connections:\n    maxConnections: 0\n    headerReadTimeout: 0s\n    \
             idleTimeout: 25h\n"
        );
        let got = problems(&text);
        let got: Vec<_> = got.iter().map(|(l, p, m)| (*l, p.as_str(), m.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(5), "server.connections.maxConnections", "must be at least 1"),
                (Some(6), "server.connections.headerReadTimeout", "must be greater than zero"),
                (
                    Some(7),
                    "server.connections.idleTimeout",
                    "90000s is over 24 hours; write e.g. \"30s\" or \"5m\""
                ),
            ]
        );
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_refused() {
        for (text, needle) in [
            ("server:\n  connections:\n    maxConns: 5\n", "maxConns"),
            ("server:\n  connections:\n    idleTimeout: 60\n", "invalid duration \"60\""),
        ] {
            let err = match parse(&format!("{HEAD}{text}"), "t.yaml") {
                Ok(_) => panic!("accepted: {text}"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(needle), "{err}");
            assert!(err.contains("server.connections"), "{err}");
        }
    }
}
