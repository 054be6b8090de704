//! The instruments: client requests and backend requests (counts, errors, durations) per
//! method, tool and backend, token exchanges, and observable gauges that read the running
//! gateway when a reader collects (backend health and breaker, sessions, catalog size, the
//! upstream token vault's refreshes).
//!
//! Names: `mcp.server.operation.duration` and `mcp.client.operation.duration` are the OTel MCP
//! semantic conventions' (seconds, their bucket boundaries); the rest are vmcp's own under
//! `vmcp.` (Prometheus: dots become underscores, counters get `_total`, seconds `_seconds`).
//!
//! Invariant: every label value is bounded: methods by [`METHODS`] (others are `other`), tools
//! by the catalog (unknown names are `unknown`), backends by the config, error types by
//! JSON-RPC codes and a few fixed words.

use std::sync::Weak;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter};

use crate::backend::health::BreakerState;
use crate::gateway::Gateway;

/// The MCP methods that are labels as they are.
const METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "subscriptions/listen",
    "completion/complete",
    "logging/setLevel",
    "notifications/initialized",
    "notifications/cancelled",
];

/// Bucket boundaries (seconds) of the MCP semantic conventions' duration histograms.
const BUCKETS: &[f64] =
    &[0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// A method as a label: itself when it is an MCP method, else `other`.
pub(super) fn method_label(method: &str) -> &'static str {
    METHODS.iter().copied().find(|m| *m == method).unwrap_or("other")
}

/// The synchronous instruments.
pub(super) struct Instruments {
    requests: Counter<u64>,
    errors: Counter<u64>,
    duration: Histogram<f64>,
    backend_requests: Counter<u64>,
    backend_errors: Counter<u64>,
    backend_duration: Histogram<f64>,
}

impl Instruments {
    pub(super) fn new(meter: &Meter) -> Instruments {
        let histogram = |name: &'static str, what: &'static str| {
            meter
                .f64_histogram(name)
                .with_description(what)
                .with_unit("s")
                .with_boundaries(BUCKETS.to_vec())
                .build()
        };
        Instruments {
            requests: meter
                .u64_counter("vmcp.requests")
                .with_description("Client requests, by method, tool, backend and outcome")
                .build(),
            errors: meter
                .u64_counter("vmcp.request.errors")
                .with_description(
                    "Client requests that failed, by method, tool, backend and error type",
                )
                .build(),
            duration: histogram("mcp.server.operation.duration", "Duration of client requests"),
            backend_requests: meter
                .u64_counter("vmcp.backend.requests")
                .with_description("Requests sent to backends, by backend, method and outcome")
                .build(),
            backend_errors: meter
                .u64_counter("vmcp.backend.request.errors")
                .with_description("Backend requests that failed, by backend, method and error type")
                .build(),
            backend_duration: histogram(
                "mcp.client.operation.duration",
                "Duration of requests to backends",
            ),
        }
    }

    /// One client request ended.
    pub(super) fn request(
        &self,
        method: &'static str,
        tool: Option<&str>,
        backend: Option<&str>,
        error: Option<&str>,
        took: Duration,
    ) {
        let mut attrs = vec![KeyValue::new("mcp.method.name", method)];
        if let Some(t) = tool {
            attrs.push(KeyValue::new("gen_ai.tool.name", t.to_owned()));
        }
        if let Some(b) = backend {
            attrs.push(KeyValue::new("vmcp.backend", b.to_owned()));
        }
        let outcome = KeyValue::new("outcome", if error.is_some() { "error" } else { "ok" });
        let mut counted = attrs.clone();
        counted.push(outcome);
        self.requests.add(1, &counted);
        if let Some(e) = error {
            attrs.push(KeyValue::new("error.type", e.to_owned()));
            self.errors.add(1, &attrs);
        }
        self.duration.record(took.as_secs_f64(), &attrs);
    }

    /// One backend request ended.
    pub(super) fn backend_request(
        &self,
        method: &'static str,
        backend: &str,
        error: Option<&'static str>,
        took: Duration,
    ) {
        let mut attrs = vec![
            KeyValue::new("mcp.method.name", method),
            KeyValue::new("vmcp.backend", backend.to_owned()),
        ];
        let mut counted = attrs.clone();
        counted.push(KeyValue::new("outcome", if error.is_some() { "error" } else { "ok" }));
        self.backend_requests.add(1, &counted);
        if let Some(e) = error {
            attrs.push(KeyValue::new("error.type", e));
            self.backend_errors.add(1, &attrs);
        }
        self.backend_duration.record(took.as_secs_f64(), &attrs);
    }
}

/// Registers the observable instruments, reading `gw` at each collection (nothing once it is
/// gone). The SDK keeps their callbacks for the meter provider's life.
pub(super) fn observe(meter: &Meter, gw: Weak<Gateway>) {
    let g = gw.clone();
    meter
        .i64_observable_gauge("vmcp.backend.in_service")
        .with_description("1 when the backend is connected, healthy and its breaker not open")
        .with_callback(move |o| {
            let Some(gw) = g.upgrade() else { return };
            for (name, _) in gw.backends.iter() {
                let up = gw.backends.in_service(&name);
                o.observe(i64::from(up), &[KeyValue::new("vmcp.backend", name.to_string())]);
            }
        })
        .build();
    let g = gw.clone();
    meter
        .i64_observable_gauge("vmcp.backend.breaker.state")
        .with_description("Circuit breaker: 0 closed, 1 half-open, 2 open")
        .with_callback(move |o| {
            let Some(gw) = g.upgrade() else { return };
            for (name, _) in gw.backends.iter() {
                let Some(h) = gw.backends.health(&name) else { continue };
                let state = match h.breaker() {
                    BreakerState::Closed => 0,
                    BreakerState::HalfOpen => 1,
                    BreakerState::Open => 2,
                };
                o.observe(state, &[KeyValue::new("vmcp.backend", name.to_string())]);
            }
        })
        .build();
    let g = gw.clone();
    meter
        .i64_observable_gauge("vmcp.sessions.active")
        .with_description("Legacy client sessions open")
        .with_callback(move |o| {
            if let Some(gw) = g.upgrade() {
                o.observe(i64::try_from(gw.sessions.len()).unwrap_or(i64::MAX), &[]);
            }
        })
        .build();
    let g = gw.clone();
    meter
        .i64_observable_gauge("vmcp.catalog.items")
        .with_description("Items in the shared catalog, by kind")
        .with_callback(move |o| {
            let Some(gw) = g.upgrade() else { return };
            let c = gw.catalog.load().counts();
            for (kind, n) in [
                ("tools", c.tools),
                ("resources", c.resources),
                ("resource_templates", c.resource_templates),
                ("prompts", c.prompts),
            ] {
                o.observe(i64::try_from(n).unwrap_or(i64::MAX), &[KeyValue::new("kind", kind)]);
            }
        })
        .build();
    let g = gw.clone();
    meter
        .u64_observable_counter("vmcp.token.refreshes")
        .with_description("Upstream token refreshes by the vault, by outcome")
        .with_callback(move |o| {
            let Some(gw) = g.upgrade() else { return };
            let Some(e) = &gw.auth_server else { return };
            let s = e.vault.stats();
            for (outcome, n) in [
                ("refreshed", s.refreshed),
                ("transient_failure", s.transient_failures),
                ("unavailable", s.unavailable),
                ("refused", s.refused),
                ("dead_grant", s.dead_grants),
                ("lost_response", s.lost_responses),
            ] {
                o.observe(n, &[KeyValue::new("outcome", outcome)]);
            }
        })
        .build();
    meter
        .u64_observable_counter("vmcp.token.exchanges")
        .with_description("Token grants at a backend's token endpoint (token_exchange, obo, xaa)")
        .with_callback(move |o| {
            for ((backend, ok), n) in super::exchanges::snapshot() {
                o.observe(
                    n,
                    &[
                        KeyValue::new("vmcp.backend", backend),
                        KeyValue::new("outcome", if ok { "ok" } else { "error" }),
                    ],
                );
            }
        })
        .build();
}

#[cfg(test)]
mod tests {
    #[test]
    fn methods_outside_mcp_are_other() {
        assert_eq!(super::method_label("tools/call"), "tools/call");
        assert_eq!(super::method_label("x/evil-unbounded-123"), "other");
    }
}
