//! OpenTelemetry: one server span per client request, a client span per backend request (its
//! W3C `traceparent` sent to the backend), metrics per method, tool and backend, gauges of the
//! gateway's state, OTLP/HTTP export and the Prometheus text of `/metrics`.
//!
//! - `config/telemetry.rs` holds the keys (ToolHive's `telemetry` block).
//! - [`Telemetry`] is the layer's state (`gw.layers.telemetry`), built at start; [`Telemetry::start`]
//!   opens a request's scope in `layer::serve`, [`RequestScope::finish`] records its outcome.
//! - `trace.rs`: spans, the parent taken from the client (`traceparent` header or
//!   `_meta.traceparent`), [`backend_call`] and [`inject`] for backend requests.
//! - `metrics.rs`: the instruments and the observable gauges reading the gateway.
//! - `http_client.rs`: the exporters' HTTP client (our reqwest, on our runtime).
//!
//! Invariants: not configured, the request path pays one branch (`Telemetry(None)`, and a
//! relaxed atomic load in [`inject`] and [`backend_call`]); exporters never block a request
//! (batch span processor with a bounded queue, [`SPAN_QUEUE`], spans dropped when full;
//! metrics are aggregated in memory and read by the periodic reader or a scrape); shutdown
//! flushes within a deadline. No attribute carries a credential: no header values, no session
//! id (its numeric key instead), no tool arguments, resource URIs without their query.

pub mod exchanges;
mod http_client;
mod metrics;
mod trace;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};

use crate::config::TelemetryConfig;

pub use http_client::{EXPORT_TIMEOUT, MAX_ANSWER_BYTES};
pub use trace::{RequestScope, backend_call, carry, inject};

/// Spans waiting for export; more are dropped (never blocking a request).
pub const SPAN_QUEUE: usize = 2048;
/// The instrumentation scope of every span and instrument.
const SCOPE: &str = "vmcp";

/// Set once any gateway in the process has telemetry: the fast path of [`inject`] and
/// [`backend_call`] when none has.
static ANY_ACTIVE: AtomicBool = AtomicBool::new(false);

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// An exporter could not be built (the message names no header value).
    #[error("telemetry: {0}")]
    Exporter(String),
}

/// The telemetry layer; `Telemetry::default()` is "not configured".
#[derive(Default, Clone)]
pub struct Telemetry(Option<Arc<Inner>>);

struct Inner {
    /// Present when traces are exported.
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: SdkMeterProvider,
    instruments: metrics::Instruments,
    /// Present with `enablePrometheusMetricsPath`.
    registry: Option<prometheus::Registry>,
    /// `useLegacyAttributes`.
    legacy: bool,
    /// `environmentVariables`, read at start.
    env_attributes: Vec<KeyValue>,
}

impl Telemetry {
    /// Builds exporters and instruments for `cfg`; `None` (no `telemetry` block) or a block
    /// that exports nothing costs nothing. Must run inside the tokio runtime (exports are
    /// spawned on it).
    pub fn from_config(
        cfg: Option<&TelemetryConfig>,
        gateway_name: &str,
    ) -> Result<Telemetry, TelemetryError> {
        let Some(cfg) = cfg else { return Ok(Telemetry(None)) };
        let traces_url = cfg.signal_url("v1/traces").filter(|_| cfg.tracing_enabled);
        let metrics_url = cfg.signal_url("v1/metrics").filter(|_| cfg.metrics_enabled);
        if traces_url.is_none() && metrics_url.is_none() && !cfg.enable_prometheus_metrics_path {
            return Ok(Telemetry(None));
        }
        let err = |what: &str, e: &dyn std::fmt::Display| {
            TelemetryError::Exporter(format!("{what}: {e}"))
        };
        let bundle = match &cfg.ca_cert_path {
            Some(p) => Some(
                crate::config::ca_bundle::CaBundle::read(p).map_err(|e| err("caCertPath", &e))?,
            ),
            None => None,
        };
        let client = http_client::ReqwestClient::new(bundle.as_ref()).ok_or_else(|| {
            TelemetryError::Exporter("no async runtime or TLS setup for the exporters".into())
        })?;
        let headers: std::collections::HashMap<String, String> =
            cfg.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let resource = resource(cfg, gateway_name);

        let tracer_provider = match traces_url {
            Some(url) => {
                let exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_http_client(client.clone())
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(url)
                    .with_timeout(EXPORT_TIMEOUT)
                    .with_headers(headers.clone())
                    .build()
                    .map_err(|e| err("trace exporter", &e))?;
                let batch = BatchSpanProcessor::builder(exporter)
                    .with_batch_config(
                        BatchConfigBuilder::default().with_max_queue_size(SPAN_QUEUE).build(),
                    )
                    .build();
                let sampler =
                    Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(cfg.sampling_rate())));
                Some(
                    SdkTracerProvider::builder()
                        .with_span_processor(batch)
                        .with_sampler(sampler)
                        .with_resource(resource.clone())
                        .build(),
                )
            }
            None => None,
        };

        let mut meters = SdkMeterProvider::builder().with_resource(resource);
        if let Some(url) = metrics_url {
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(url)
                .with_timeout(EXPORT_TIMEOUT)
                .with_headers(headers)
                .build()
                .map_err(|e| err("metric exporter", &e))?;
            // The interval is the SDK's (60 s, or OTEL_METRIC_EXPORT_INTERVAL).
            meters = meters.with_reader(PeriodicReader::builder(exporter).build());
        }
        let registry = if cfg.enable_prometheus_metrics_path {
            let registry = prometheus::Registry::new();
            let reader = opentelemetry_prometheus::exporter()
                .with_registry(registry.clone())
                .build()
                .map_err(|e| err("prometheus exporter", &e))?;
            meters = meters.with_reader(reader);
            Some(registry)
        } else {
            None
        };
        let meter_provider = meters.build();
        let instruments = metrics::Instruments::new(&meter_provider.meter(SCOPE));
        let env_attributes = cfg
            .environment_variables
            .iter()
            .filter_map(|name| {
                let value = std::env::var(name).ok()?;
                Some(KeyValue::new(format!("environment.{name}"), value))
            })
            .collect();
        ANY_ACTIVE.store(true, Ordering::Relaxed);
        Ok(Telemetry(Some(Arc::new(Inner {
            tracer: tracer_provider.as_ref().map(|p| p.tracer(SCOPE)),
            tracer_provider,
            meter_provider,
            instruments,
            registry,
            legacy: cfg.use_legacy_attributes,
            env_attributes,
        }))))
    }

    /// Whether anything is recorded.
    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Registers the gauges that read the running gateway (backends, breakers, sessions,
    /// catalog, token refreshes). Called once the gateway exists; they hold it weakly.
    pub fn observe(&self, gw: &Arc<crate::gateway::Gateway>) {
        if let Some(inner) = &self.0 {
            metrics::observe(&inner.meter_provider.meter(SCOPE), Arc::downgrade(gw));
        }
    }

    /// Whether `/metrics` is served (`enablePrometheusMetricsPath`).
    pub fn serves_prometheus(&self) -> bool {
        self.0.as_ref().is_some_and(|i| i.registry.is_some())
    }

    /// The Prometheus text exposition of every instrument; `None` unless
    /// `enablePrometheusMetricsPath` is set.
    pub fn prometheus_text(&self) -> Option<String> {
        let registry = self.0.as_ref()?.registry.as_ref()?;
        let encoder = prometheus::TextEncoder::new();
        match encoder.encode_to_string(&registry.gather()) {
            Ok(text) => Some(text),
            Err(e) => {
                tracing::warn!("could not encode /metrics: {e}");
                Some(String::new())
            }
        }
    }

    /// Flushes and stops the exporters, waiting at most `deadline` (spans still queued then
    /// are lost). The SDK's shutdown blocks, so it runs on a blocking thread while the runtime
    /// carries the exports.
    pub async fn shutdown(&self, deadline: Duration) {
        let Some(inner) = self.0.clone() else { return };
        let work = tokio::task::spawn_blocking(move || {
            if let Some(p) = &inner.tracer_provider
                && let Err(e) = p.shutdown_with_timeout(deadline)
            {
                tracing::warn!("trace export at shutdown: {e}");
            }
            if let Err(e) = inner.meter_provider.shutdown_with_timeout(deadline) {
                tracing::warn!("metric export at shutdown: {e}");
            }
        });
        if tokio::time::timeout(deadline, work).await.is_err() {
            tracing::warn!(?deadline, "telemetry export did not finish at shutdown");
        }
    }
}

/// `service.name`, `service.version`, `customAttributes`.
fn resource(cfg: &TelemetryConfig, gateway_name: &str) -> Resource {
    let name = if cfg.service_name.is_empty() { gateway_name } else { &cfg.service_name };
    let version = if cfg.service_version.is_empty() {
        env!("CARGO_PKG_VERSION")
    } else {
        &cfg.service_version
    };
    Resource::builder()
        .with_service_name(name.to_owned())
        .with_attributes(
            std::iter::once(KeyValue::new("service.version", version.to_owned())).chain(
                cfg.custom_attributes.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            ),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> TelemetryConfig {
        let text = format!("name: gw\ntelemetry:\n{yaml}");
        crate::config::parse(&text, "t.yaml").expect("valid").telemetry.expect("block")
    }

    #[tokio::test]
    async fn nothing_to_export_is_off() {
        assert!(!Telemetry::from_config(None, "gw").unwrap().enabled());
        // An endpoint with both signals off, or signals on without an endpoint: off.
        let t = Telemetry::from_config(Some(&cfg("  endpoint: c:4318\n")), "gw").unwrap();
        assert!(!t.enabled());
        let t = Telemetry::from_config(Some(&cfg("  tracingEnabled: true\n")), "gw").unwrap();
        assert!(!t.enabled());
    }

    #[tokio::test]
    async fn prometheus_text_names_the_instruments() {
        let t = Telemetry::from_config(Some(&cfg("  enablePrometheusMetricsPath: true\n")), "gw")
            .unwrap();
        assert!(t.enabled() && t.serves_prometheus());
        let inner = t.0.as_ref().unwrap();
        inner.instruments.request("tools/call", Some("a_echo"), Some("a"), None, Duration::ZERO);
        inner.instruments.request(
            "tools/call",
            Some("a_echo"),
            Some("a"),
            Some("-32000"),
            Duration::ZERO,
        );
        let text = t.prometheus_text().unwrap();
        assert!(text.contains("vmcp_requests_total{"), "{text}");
        assert!(text.contains("outcome=\"error\""), "{text}");
        assert!(text.contains("mcp_server_operation_duration_seconds_bucket{"), "{text}");
        assert!(text.contains("service_name=\"gw\""), "{text}");
        t.shutdown(Duration::from_secs(2)).await;
    }
}
