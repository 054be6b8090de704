//! `telemetry`: OpenTelemetry traces and metrics (OTLP over HTTP) and the Prometheus `/metrics`
//! route. The keys are ToolHive's (`pkg/telemetry/config.go`), all of them accepted.
//!
//! Invariant: a `TelemetryConfig` that leaves `load` is usable: the sampling rate is a number in
//! [0, 1], the endpoint parses as an authority (with an optional scheme and path), every header
//! is a valid HTTP header, and `caCertPath` is a readable PEM bundle. Header values are
//! credentials: `Debug` prints their names only.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::validate::Finding;

/// Default `samplingRate`: ToolHive's documented default (5 % of traces not already sampled by
/// the client).
pub const DEFAULT_SAMPLING_RATE: f64 = 0.05;

/// `telemetry`.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/HTTP collector: `host:port` (scheme from `insecure`), or a full `http(s)://` URL.
    /// `/v1/traces` and `/v1/metrics` are appended. Empty: no OTLP export.
    #[serde(default)]
    pub endpoint: String,
    /// `service.name`; default the gateway's `name`.
    #[serde(default)]
    pub service_name: String,
    /// `service.version`; default vmcp's version.
    #[serde(default)]
    pub service_version: String,
    /// Export traces (needs `endpoint`). Default false, as in a ToolHive file.
    #[serde(default)]
    pub tracing_enabled: bool,
    /// Export metrics over OTLP (needs `endpoint`). Default false. Independent of
    /// `enablePrometheusMetricsPath`.
    #[serde(default)]
    pub metrics_enabled: bool,
    /// Share of new traces sampled, 0 to 1, as a string (ToolHive's type) or a number. A client
    /// request that carries a sampled parent is always traced (parent-based sampling).
    #[serde(default)]
    pub sampling_rate: Option<SamplingRate>,
    /// Headers sent to the collector with every export (often a credential).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `http://` instead of `https://` for a scheme-less `endpoint`.
    #[serde(default)]
    pub insecure: bool,
    /// Serve Prometheus text at `/metrics` on the gateway's port.
    #[serde(default)]
    pub enable_prometheus_metrics_path: bool,
    /// ToolHive's separate diagnostics port for `/metrics` (its proxy runner). ToolHive's vMCP
    /// serves `/metrics` on its main port, and so does vmcp: accepted, with a warning when set.
    #[serde(default)]
    pub prometheus_port: Option<u16>,
    /// ToolHive: also serve `/metrics` on the transport port. vmcp (like ToolHive's vMCP)
    /// serves it only there: `false` is refused, `true` is what vmcp does.
    #[serde(default)]
    pub metrics_on_transport_port: Option<bool>,
    /// Names of environment variables whose values (read once at start) go on every request
    /// span as `environment.<NAME>`.
    #[serde(default)]
    pub environment_variables: Vec<String>,
    /// Extra resource attributes on every span and metric.
    #[serde(default)]
    pub custom_attributes: BTreeMap<String, String>,
    /// Also emit the pre-semconv attribute names (`mcp.method`, `rpc.system`, `mcp.request.id`,
    /// `mcp.tool.name`, ...). Default true, ToolHive's documented default.
    #[serde(default = "yes")]
    pub use_legacy_attributes: bool,
    /// PEM bundle of extra roots trusted for an `https` collector.
    #[serde(default)]
    pub ca_cert_path: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

impl std::fmt::Debug for TelemetryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryConfig")
            .field("endpoint", &self.endpoint)
            .field("service_name", &self.service_name)
            .field("tracing_enabled", &self.tracing_enabled)
            .field("metrics_enabled", &self.metrics_enabled)
            .field("sampling_rate", &self.sampling_rate)
            // Values are credentials.
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("insecure", &self.insecure)
            .field("enable_prometheus_metrics_path", &self.enable_prometheus_metrics_path)
            .finish_non_exhaustive()
    }
}

/// `samplingRate`: ToolHive writes a string (`"0.05"`); a number is accepted too.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SamplingRate {
    /// A YAML number.
    Number(f64),
    /// A string holding a number.
    Text(String),
}

impl SamplingRate {
    fn value(&self) -> Option<f64> {
        match self {
            SamplingRate::Number(n) => Some(*n),
            SamplingRate::Text(s) if s.trim().is_empty() => Some(DEFAULT_SAMPLING_RATE),
            SamplingRate::Text(s) => s.trim().parse().ok(),
        }
    }
}

impl TelemetryConfig {
    /// The sampling rate in [0, 1] (validated at load; out-of-range values are clamped).
    pub fn sampling_rate(&self) -> f64 {
        let rate = self.sampling_rate.as_ref().and_then(SamplingRate::value);
        rate.unwrap_or(DEFAULT_SAMPLING_RATE).clamp(0.0, 1.0)
    }

    /// The collector URL for one signal (`v1/traces`, `v1/metrics`); `None` without `endpoint`.
    pub fn signal_url(&self, signal: &str) -> Option<String> {
        let endpoint = self.endpoint.trim().trim_end_matches('/');
        if endpoint.is_empty() {
            return None;
        }
        let base = if endpoint.contains("://") {
            endpoint.to_owned()
        } else if self.insecure {
            format!("http://{endpoint}")
        } else {
            format!("https://{endpoint}")
        };
        Some(format!("{base}/{signal}"))
    }
}

/// Load-time errors.
pub(crate) fn check(cfg: &TelemetryConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut report = |path: &str, message: String| {
        out.push(Finding { path: format!("telemetry.{path}"), message });
    };
    if let Some(r) = &cfg.sampling_rate {
        match r.value() {
            Some(v) if (0.0..=1.0).contains(&v) => {}
            _ => {
                let shown = match r {
                    SamplingRate::Number(n) => n.to_string(),
                    SamplingRate::Text(t) => format!("{t:?}"),
                };
                report("samplingRate", format!("{shown} is not a number from 0 to 1"))
            }
        }
    }
    if let Some(url) = cfg.signal_url("v1/traces") {
        match url.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
            _ => report(
                "endpoint",
                "must be host:port (with `insecure` choosing http) or an http(s):// URL".into(),
            ),
        }
    }
    for (name, value) in &cfg.headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            report(&format!("headers.{name}"), "not a valid HTTP header name".into());
        } else if http::HeaderValue::from_str(value).is_err() {
            // Never echo the value: it is usually a credential.
            report(&format!("headers.{name}"), "the value is not a valid HTTP header value".into());
        }
    }
    if cfg.metrics_on_transport_port == Some(false) {
        report(
            "metricsOnTransportPort",
            "vmcp serves /metrics only on the gateway's own port (as ToolHive's vMCP does); \
             remove the key or set it to true"
                .into(),
        );
    }
    for name in &cfg.environment_variables {
        if name.is_empty() || name.contains('=') {
            report("environmentVariables", format!("{name:?} is not a variable name"));
        }
    }
    if let Some(path) = &cfg.ca_cert_path
        && let Err(e) = super::ca_bundle::CaBundle::read(path)
    {
        report("caCertPath", e);
    }
    out
}

/// Advisory lines: keys that change nothing as set.
pub(crate) fn warnings(cfg: &TelemetryConfig) -> Vec<String> {
    let mut out = Vec::new();
    if cfg.endpoint.trim().is_empty() {
        for (on, key) in
            [(cfg.tracing_enabled, "tracingEnabled"), (cfg.metrics_enabled, "metricsEnabled")]
        {
            if on {
                out.push(format!("telemetry.{key}: true has no effect without telemetry.endpoint"));
            }
        }
    } else if !cfg.tracing_enabled && !cfg.metrics_enabled {
        out.push(
            "telemetry.endpoint is set but tracingEnabled and metricsEnabled are both false: \
             nothing is exported"
                .into(),
        );
    }
    if let Some(port) = cfg.prometheus_port {
        out.push(format!(
            "telemetry.prometheusPort: {port} is ignored; vmcp serves /metrics on the gateway's \
             own port (as ToolHive's vMCP does)"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::super::validate::tests::problems;

    const HEAD: &str = "name: gw\nbackends:\n  - name: a\n    transport: streamable-http\n    url: https://h/mcp\n";

    #[test]
    fn every_toolhive_key_parses() {
        let text = format!(
            "{HEAD}telemetry:\n  endpoint: otel:4318\n  serviceName: s\n  serviceVersion: '1'\n  \
             tracingEnabled: true\n  metricsEnabled: true\n  samplingRate: '0.5'\n  \
             headers: {{x-api-key: k}}\n  insecure: true\n  enablePrometheusMetricsPath: true\n  \
             prometheusPort: 9464\n  metricsOnTransportPort: true\n  \
             environmentVariables: [HOME]\n  customAttributes: {{team: a}}\n  \
             useLegacyAttributes: false\n"
        );
        let cfg = parse(&text, "t.yaml").expect("valid");
        let t = cfg.telemetry.expect("block");
        assert_eq!(t.sampling_rate(), 0.5);
        assert_eq!(t.signal_url("v1/traces").as_deref(), Some("http://otel:4318/v1/traces"));
        assert!(!t.use_legacy_attributes);
        assert!(!format!("{t:?}").contains(": k"), "header value in Debug: {t:?}");
    }

    #[test]
    fn defaults_and_forms() {
        let cfg =
            parse(&format!("{HEAD}telemetry:\n  endpoint: otel:4318\n"), "t.yaml").expect("valid");
        let t = cfg.telemetry.expect("block");
        assert_eq!(t.sampling_rate(), super::DEFAULT_SAMPLING_RATE);
        assert!(!t.tracing_enabled && !t.metrics_enabled && t.use_legacy_attributes);
        assert_eq!(t.signal_url("v1/metrics").as_deref(), Some("https://otel:4318/v1/metrics"));
        let cfg = parse(
            &format!("{HEAD}telemetry:\n  endpoint: http://c:1/base/\n  samplingRate: 1\n"),
            "t.yaml",
        )
        .expect("valid");
        let t = cfg.telemetry.expect("block");
        assert_eq!(t.sampling_rate(), 1.0);
        assert_eq!(t.signal_url("v1/traces").as_deref(), Some("http://c:1/base/v1/traces"));
    }

    #[test]
    fn bad_values_are_named() {
        let ps = problems(&format!(
            "{HEAD}telemetry:\n  endpoint: 'a b'\n  samplingRate: '2'\n  headers: {{'bad name': v}}\n  \
             metricsOnTransportPort: false\n"
        ));
        let paths: Vec<&str> = ps.iter().map(|(_, p, _)| p.as_str()).collect();
        assert_eq!(ps[1].2, "\"2\" is not a number from 0 to 1");
        assert_eq!(
            paths,
            [
                "telemetry.endpoint",
                "telemetry.samplingRate",
                "telemetry.headers.bad name",
                "telemetry.metricsOnTransportPort"
            ],
            "{ps:?}"
        );
        let err = match parse(&format!("{HEAD}telemetry:\n  sampling: 1\n"), "t.yaml") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        };
        assert!(err.contains("t.yaml:7") && err.contains("sampling"), "{err}");
    }
}
