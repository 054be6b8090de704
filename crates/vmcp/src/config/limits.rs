//! `server.limits`: bounds on everything client input can make the gateway hold (URI length,
//! sessions, in-flight requests, streams, pending relays, parked calls, subscriptions) and the
//! deadlines of session expiry and teardown.
//!
//! Invariants: every bound has a finite default that is safe for a single gateway process; a
//! count of zero is refused at load (it would refuse every request, which is never what an
//! operator means); durations are Go-style strings (`config/duration.rs`).

use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::validate::Finding;

/// Default `maxUriLength`: 8 KiB, far above any real resource URI and far below what makes
/// matching or logging costly.
pub const DEFAULT_MAX_URI_LENGTH: usize = 8 * 1024;
/// Default `maxSessions`.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
/// Default `maxSessionsPerPrincipal`.
pub const DEFAULT_MAX_SESSIONS_PER_PRINCIPAL: usize = 100;
/// Default `maxInFlight`.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Default `maxInFlightPerPrincipal`: a quarter of `maxInFlight`, so one principal (all
/// anonymous clients are one) cannot take every slot from the others.
pub const DEFAULT_MAX_IN_FLIGHT_PER_PRINCIPAL: usize = 256;
/// Default `maxInFlightPerSession`.
pub const DEFAULT_MAX_IN_FLIGHT_PER_SESSION: usize = 64;
/// Default `maxStreamsPerSession`.
pub const DEFAULT_MAX_STREAMS_PER_SESSION: usize = 4;
/// Default `maxPendingRelaysPerSession`.
pub const DEFAULT_MAX_PENDING_RELAYS_PER_SESSION: usize = 64;
/// Default `maxPendingRelays`.
pub const DEFAULT_MAX_PENDING_RELAYS: usize = 10_000;
/// Default `maxParkedCalls`.
pub const DEFAULT_MAX_PARKED_CALLS: usize = 1024;
/// Default `maxParkedCallsPerPrincipal`.
pub const DEFAULT_MAX_PARKED_CALLS_PER_PRINCIPAL: usize = 64;
/// Default `maxSubscriptionsPerSession`.
pub const DEFAULT_MAX_SUBSCRIPTIONS_PER_SESSION: usize = 256;
/// Default `maxListenStreams`.
pub const DEFAULT_MAX_LISTEN_STREAMS: usize = 5_000;
/// Default `maxListenStreamsPerPrincipal`.
pub const DEFAULT_MAX_LISTEN_STREAMS_PER_PRINCIPAL: usize = 32;
/// Default `sessionIdleTimeout`.
pub const DEFAULT_SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default `pendingRelayTimeout`.
pub const DEFAULT_PENDING_RELAY_TIMEOUT: Duration = Duration::from_secs(300);
/// Default `teardownTimeout`.
pub const DEFAULT_TEARDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// `server.limits`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Longest URI accepted in `resources/read`, `resources/subscribe`/`unsubscribe`,
    /// `completion/complete` and `subscriptions/listen`, in bytes.
    pub max_uri_length: usize,
    /// Live Legacy sessions in total; `initialize` beyond it gets HTTP 503.
    pub max_sessions: usize,
    /// Live Legacy sessions of one principal; `initialize` beyond it gets HTTP 429.
    pub max_sessions_per_principal: usize,
    /// Client requests being handled at once, all clients together (HTTP 503 beyond).
    pub max_in_flight: usize,
    /// Client requests of one principal being handled at once, Legacy and Modern together (HTTP
    /// 429 beyond).
    pub max_in_flight_per_principal: usize,
    /// Requests being handled at once in one Legacy session (HTTP 429 beyond).
    pub max_in_flight_per_session: usize,
    /// Open GET streams of one Legacy session (HTTP 429 beyond).
    pub max_streams_per_session: usize,
    /// Server-to-client requests relayed to one session's client and not yet answered.
    pub max_pending_relays_per_session: usize,
    /// Server-to-client requests relayed and not yet answered, all sessions together.
    pub max_pending_relays: usize,
    /// Calls parked for a Modern client's input, in total.
    pub max_parked_calls: usize,
    /// Calls parked for one principal's input.
    pub max_parked_calls_per_principal: usize,
    /// Resource subscriptions of one Legacy session (or URIs in one `subscriptions/listen`).
    pub max_subscriptions_per_session: usize,
    /// Open `subscriptions/listen` streams (2026-07-28), all clients together (HTTP 503 beyond).
    pub max_listen_streams: usize,
    /// Open `subscriptions/listen` streams of one principal (HTTP 429 beyond).
    pub max_listen_streams_per_principal: usize,
    /// A Legacy session unused this long is ended. `vmcp serve --session-ttl` overrides it.
    #[serde(with = "duration")]
    pub session_idle_timeout: Duration,
    /// A relayed server-to-client request the client has not answered in this time is dropped.
    #[serde(with = "duration")]
    pub pending_relay_timeout: Duration,
    /// Longest wait for a backend while a session ends (unsubscribe, end of backend session).
    #[serde(with = "duration")]
    pub teardown_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_uri_length: DEFAULT_MAX_URI_LENGTH,
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_sessions_per_principal: DEFAULT_MAX_SESSIONS_PER_PRINCIPAL,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_in_flight_per_principal: DEFAULT_MAX_IN_FLIGHT_PER_PRINCIPAL,
            max_in_flight_per_session: DEFAULT_MAX_IN_FLIGHT_PER_SESSION,
            max_streams_per_session: DEFAULT_MAX_STREAMS_PER_SESSION,
            max_pending_relays_per_session: DEFAULT_MAX_PENDING_RELAYS_PER_SESSION,
            max_pending_relays: DEFAULT_MAX_PENDING_RELAYS,
            max_parked_calls: DEFAULT_MAX_PARKED_CALLS,
            max_parked_calls_per_principal: DEFAULT_MAX_PARKED_CALLS_PER_PRINCIPAL,
            max_subscriptions_per_session: DEFAULT_MAX_SUBSCRIPTIONS_PER_SESSION,
            max_listen_streams: DEFAULT_MAX_LISTEN_STREAMS,
            max_listen_streams_per_principal: DEFAULT_MAX_LISTEN_STREAMS_PER_PRINCIPAL,
            session_idle_timeout: DEFAULT_SESSION_IDLE_TIMEOUT,
            pending_relay_timeout: DEFAULT_PENDING_RELAY_TIMEOUT,
            teardown_timeout: DEFAULT_TEARDOWN_TIMEOUT,
        }
    }
}

impl LimitsConfig {
    /// The counts, with their key names, for checks that treat them alike.
    fn counts(&self) -> [(&'static str, usize); 14] {
        [
            ("maxUriLength", self.max_uri_length),
            ("maxSessions", self.max_sessions),
            ("maxSessionsPerPrincipal", self.max_sessions_per_principal),
            ("maxInFlight", self.max_in_flight),
            ("maxInFlightPerPrincipal", self.max_in_flight_per_principal),
            ("maxInFlightPerSession", self.max_in_flight_per_session),
            ("maxStreamsPerSession", self.max_streams_per_session),
            ("maxPendingRelaysPerSession", self.max_pending_relays_per_session),
            ("maxPendingRelays", self.max_pending_relays),
            ("maxParkedCalls", self.max_parked_calls),
            ("maxParkedCallsPerPrincipal", self.max_parked_calls_per_principal),
            ("maxSubscriptionsPerSession", self.max_subscriptions_per_session),
            ("maxListenStreams", self.max_listen_streams),
            ("maxListenStreamsPerPrincipal", self.max_listen_streams_per_principal),
        ]
    }
}

/// Semantic checks of `server.limits`.
pub(crate) fn check(limits: &LimitsConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    let at = |key: &str| format!("server.limits.{key}");
    for (key, value) in limits.counts() {
        if value == 0 {
            out.push(Finding {
                path: at(key),
                message: "must be greater than zero (0 would refuse every request)".into(),
            });
        }
    }
    for (key, value) in [
        ("sessionIdleTimeout", limits.session_idle_timeout),
        ("pendingRelayTimeout", limits.pending_relay_timeout),
        ("teardownTimeout", limits.teardown_timeout),
    ] {
        if value.is_zero() {
            out.push(Finding { path: at(key), message: "must be longer than zero".into() });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<LimitsConfig, serde_saphyr::Error> {
        serde_saphyr::from_str(yaml)
    }

    #[test]
    fn defaults_apply_to_missing_keys() {
        let l = parse("maxSessions: 5\nsessionIdleTimeout: 90s\n").unwrap();
        assert_eq!(l.max_sessions, 5);
        assert_eq!(l.session_idle_timeout, Duration::from_secs(90));
        assert_eq!(l.max_uri_length, DEFAULT_MAX_URI_LENGTH);
        assert_eq!(l.teardown_timeout, DEFAULT_TEARDOWN_TIMEOUT);
        assert!(check(&l).is_empty(), "{:?}", check(&l));
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_refused() {
        let e = parse("maxSesions: 5\n").unwrap_err().to_string();
        assert!(e.contains("maxSesions"), "{e}");
        let e = parse("sessionIdleTimeout: 10\n").unwrap_err().to_string();
        assert!(e.contains("invalid duration"), "{e}");
    }

    #[test]
    fn zero_values_are_reported() {
        let l = parse("maxInFlight: 0\nmaxSessions: 2\nteardownTimeout: 0s\n").unwrap();
        let paths: Vec<String> = check(&l).into_iter().map(|f| f.path).collect();
        assert_eq!(paths, ["server.limits.maxInFlight", "server.limits.teardownTimeout"]);
    }

    #[test]
    fn load_reports_the_key_and_line() {
        let text = "name: gw\nbackends: []\nserver:\n  limits:\n    maxSessions: 0\n";
        let e = crate::config::parse(text, "t.yaml").unwrap_err().to_string();
        assert!(e.starts_with("t.yaml:5:5: "), "{e}");
        assert!(e.contains("server.limits.maxSessions"), "{e}");
        assert!(e.contains("greater than zero"), "{e}");
    }
}
