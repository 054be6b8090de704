//! Telemetry end to end, with real peers: an OTLP/HTTP receiver built on the official OTLP
//! protobuf definitions (`tests/support/otlp_receiver.py`, PyPI `opentelemetry-proto`) gets the
//! gateway's spans and metrics, the fixture backend logs the `traceparent` it received, and a
//! real Prometheus (Debian's `prometheus`) scrapes `/metrics` and answers PromQL queries.
//!
//! A missing peer fails the test (see `scripts/install-test-tools.sh`); nothing is skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// The credential the gateway injects towards the backend: it must never reach the collector.
const BACKEND_TOKEN: &str = "tok-5b1f0c-never-in-telemetry";
/// The export header configured in `telemetry.headers`.
const COLLECTOR_KEY: &str = "collector-key-7d2e";

// ---------------------------------------------------------------------------------------------
// Peers
// ---------------------------------------------------------------------------------------------

/// `tests/support/otlp_receiver.py` on a free port, dumping to a file.
struct Receiver {
    _proc: Proc,
    port: u16,
    dump: PathBuf,
}

impl Receiver {
    fn start(dir: &Path) -> Receiver {
        let dump = dir.join("otlp.jsonl");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/otlp_receiver.py");
        let mut cmd = Command::new(python());
        cmd.arg(script).arg(&dump);
        let mut proc = Proc::start("otlp receiver", cmd);
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Some(p) = proc.lines().iter().find_map(|l| l.strip_prefix("listening on ")) {
                break p.trim().parse().expect("a port");
            }
            assert!(!proc.exited(), "the OTLP receiver exited: {}", proc.stderr());
            assert!(
                Instant::now() < deadline,
                "the OTLP receiver did not start: {}",
                proc.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Receiver { _proc: proc, port, dump }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.dump).unwrap_or_default()
    }

    fn lines(&self, signal: &str) -> Vec<Value> {
        self.text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["signal"] == signal)
            .collect()
    }

    fn requests(&self) -> Vec<Value> {
        let path = format!("{}.requests", self.dump.display());
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// The test tools' Python (with `opentelemetry-proto`). Not `tools::python()`: that resolves
/// the venv's symlink to the system interpreter, which is outside the venv.
fn python() -> PathBuf {
    let p = match std::env::var_os("VMCP_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => tools::tools_dir().join("py/bin/python"),
    };
    assert!(
        p.exists(),
        "Python with opentelemetry-proto not found at {} (VMCP_PYTHON): run \
         scripts/install-test-tools.sh",
        p.display()
    );
    p
}

/// Debian's Prometheus, unpacked by `scripts/install-test-tools.sh`.
fn prometheus_bin() -> PathBuf {
    let p = match std::env::var_os("VMCP_PROMETHEUS") {
        Some(p) => PathBuf::from(p),
        None => tools::tools_dir().join("deb/usr/bin/prometheus"),
    };
    assert!(
        p.exists(),
        "Prometheus not found at {} (VMCP_PROMETHEUS): run scripts/install-test-tools.sh",
        p.display()
    );
    p
}

/// A Prometheus scraping `target` (`host:port`) every second.
struct Prometheus {
    _proc: Proc,
    base: String,
}

impl Prometheus {
    async fn start(dir: &Path, target: &str) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
                 - job_name: vmcp\n    metrics_path: /metrics\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let mut cmd = Command::new(prometheus_bin());
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let proc = Proc::start("prometheus", cmd);
        let base = format!("http://127.0.0.1:{port}");
        let ready = format!("{base}/-/ready");
        poll(Duration::from_secs(60), "Prometheus ready", || {
            let ready = ready.clone();
            async move {
                let r = reqwest::get(&ready).await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        Prometheus { _proc: proc, base }
    }

    /// The single value of an instant PromQL query, if it has one.
    async fn value(&self, query: &str) -> Option<f64> {
        let r = reqwest::Client::new()
            .post(format!("{}/api/v1/query", self.base))
            .form(&[("query", query)])
            .send()
            .await
            .ok()?;
        let body: Value = r.json().await.ok()?;
        let result = body["data"]["result"].as_array()?;
        let [one] = result.as_slice() else { return None };
        one["value"][1].as_str()?.parse().ok()
    }

    /// Polls `query` until it equals `want`.
    async fn expect(&self, query: &str, want: f64) {
        let mut last = None;
        let got = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                last = self.value(query).await;
                if last.is_some_and(|v| (v - want).abs() < 1e-9) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        assert!(got.is_ok(), "PromQL {query}: wanted {want}, last got {last:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn traceparent(trace: &str, parent: &str) -> String {
    format!("00-{trace}-{parent}-01")
}

/// A Legacy `tools/call` with extra headers; returns the reply.
async fn call(c: &Client, tool: &str, args: Value, headers: &[(&str, String)]) -> Reply {
    let id = c.id();
    let mut b =
        c.post().json(&request(id, "tools/call", json!({ "name": tool, "arguments": args })));
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    c.open(b).await.reply(id, STEP).await
}

/// The `traceparent`s the backend received with `tools/call`s, oldest first.
async fn backend_traceparents(backend: &Fixture) -> Vec<String> {
    let url = backend.url.replace("/mcp", "/test/requests");
    let log: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    log.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["path"] == "/mcp" && e["method"] == "POST")
        .filter_map(|e| e["traceparent"].as_str().map(str::to_owned))
        .collect()
}

fn config(backend_url: &str, telemetry: &str) -> String {
    format!(
        "name: telemetry-gw\nbackends:\n{}outgoingAuth:\n  backends:\n    api:\n      \
         type: header_injection\n      headerInjection:\n        headerName: Authorization\n        \
         headerValueEnv: VMCP_TEST_BACKEND_TOKEN\ntelemetry:\n{telemetry}",
        http_backend("api", backend_url)
    )
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// One trace per call: the client's span is the parent of the gateway's server span, whose child
/// is the backend span; the backend received that trace id with the backend span as parent.
/// The trace context comes from the `traceparent` header or from `_meta.traceparent`; without
/// either the gateway starts a trace of its own. No credential reaches the collector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_reach_the_collector_with_the_backend_span_as_child() {
    let dir = TempDir::new("telemetry-traces");
    let receiver = Receiver::start(&dir.0);
    let backend = Fixture::http("legacy", "api");
    let telemetry = format!(
        "  endpoint: 127.0.0.1:{}\n  insecure: true\n  serviceName: vmcp-itest\n  \
         tracingEnabled: true\n  metricsEnabled: true\n  samplingRate: '1.0'\n  \
         headers:\n    x-collector-key: {COLLECTOR_KEY}\n  customAttributes:\n    \
         deployment: itest\n  environmentVariables: [VMCP_TEST_ENV_ATTR]\n",
        receiver.port
    );
    let bearer = format!("Bearer {BACKEND_TOKEN}");
    let gw = Gateway::start_env(
        &config(&backend.url, &telemetry),
        &[
            ("VMCP_TEST_BACKEND_TOKEN", bearer.as_str()),
            ("VMCP_TEST_ENV_ATTR", "blue"),
            // Export quickly: spans every 100 ms, metrics every second.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
        ],
    );
    let mut c = gw.client();
    let session = c.legacy_init().await;

    // (trace id, the client's span id, how it is sent)
    let mut traced = Vec::new();
    for i in 0..3u64 {
        let (trace, parent) = (format!("{:032x}", 0xabc000 + i), format!("{:016x}", 0xd00 + i));
        let r = call(
            &c,
            "api_echo",
            json!({ "message": BACKEND_TOKEN }),
            &[("traceparent", traceparent(&trace, &parent))],
        )
        .await;
        assert!(r.text().contains(BACKEND_TOKEN), "{:?}", r.message);
        traced.push((trace, parent));
    }
    // `_meta.traceparent` (the MCP convention), no header.
    let (trace, parent) = (format!("{:032x}", 0xfeed_u64), format!("{:016x}", 0xbeef_u64));
    let id = c.id();
    let params = json!({
        "name": "api_echo",
        "arguments": { "message": "meta" },
        "_meta": { "traceparent": traceparent(&trace, &parent) },
    });
    let r = c.open(c.post().json(&request(id, "tools/call", params))).await.reply(id, STEP).await;
    assert_eq!(r.text(), "Echo: meta", "{:?}", r.message);
    traced.push((trace, parent));
    // No trace context at all: the gateway's span is a root.
    let r = call(&c, "api_echo", json!({ "message": "root" }), &[]).await;
    assert_eq!(r.text(), "Echo: root");

    let spans = poll(Duration::from_secs(30), "the spans of every call", || {
        let spans = receiver.lines("span");
        let calls = spans
            .iter()
            .filter(|s| s["kind"] == 2 && s["attributes"]["mcp.method.name"] == "tools/call")
            .count();
        let clients = spans.iter().filter(|s| s["kind"] == 3).count();
        async move { (calls >= 5 && clients >= 5).then_some(spans) }
    })
    .await;
    let at_backend = backend_traceparents(&backend).await;

    for (trace, parent) in &traced {
        let of_trace: Vec<&Value> = spans.iter().filter(|s| s["trace_id"] == *trace).collect();
        assert_eq!(of_trace.len(), 2, "trace {trace}: {of_trace:#?}");
        let server = of_trace.iter().find(|s| s["kind"] == 2).expect("a server span");
        let client = of_trace.iter().find(|s| s["kind"] == 3).expect("a client span");
        assert_eq!(server["parent_span_id"], *parent, "{server}");
        assert_eq!(server["name"], "tools/call api_echo");
        let a = &server["attributes"];
        assert_eq!(a["gen_ai.tool.name"], "api_echo", "{server}");
        assert_eq!(a["vmcp.backend"], "api");
        assert!(a["mcp.session.id"].as_str().is_some_and(|k| k.parse::<u64>().is_ok()), "{a}");
        assert_eq!(a["mcp.protocol.version"], LEGACY);
        assert_eq!(a["environment.VMCP_TEST_ENV_ATTR"], "blue");
        assert_eq!(server["resource"]["service.name"], "vmcp-itest");
        assert_eq!(server["resource"]["deployment"], "itest");
        assert_eq!(client["parent_span_id"], server["span_id"], "{client}");
        assert_eq!(client["attributes"]["vmcp.backend"], "api");
        // The backend saw this trace, with the backend span as its parent.
        let sent = traceparent(trace, client["span_id"].as_str().unwrap());
        assert!(at_backend.contains(&sent), "{sent} not in {at_backend:?}");
    }
    let root = spans
        .iter()
        .find(|s| s["kind"] == 2 && s["parent_span_id"] == "" && s["name"] == "tools/call api_echo")
        .expect("a root server span for the call without trace context");
    let trace = root["trace_id"].as_str().unwrap();
    assert!(at_backend.iter().any(|t| t.contains(trace)), "{trace} not in {at_backend:?}");
    let init = spans.iter().find(|s| s["name"] == "initialize").expect("the initialize span");
    assert_eq!(init["kind"], 2);

    // Metrics over OTLP too.
    poll(Duration::from_secs(30), "vmcp.requests over OTLP", || {
        let found = receiver.lines("metric").iter().any(|m| m["name"] == "vmcp.requests");
        async move { found.then_some(()) }
    })
    .await;
    // The configured export headers went with the exports.
    let requests = receiver.requests();
    assert!(
        requests.iter().all(|r| r["headers"]["x-collector-key"] == COLLECTOR_KEY
            || r["headers"]["X-Collector-Key"] == COLLECTOR_KEY),
        "{requests:?}"
    );
    // No credential, no session id in anything exported.
    let dump = receiver.text();
    for secret in [BACKEND_TOKEN, COLLECTOR_KEY, session.as_str()] {
        assert!(!dump.contains(secret), "{secret:?} reached the collector");
    }
}

/// A real Prometheus scrapes `/metrics`; PromQL gives the calls made and the error rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_call_counts_and_error_rate() {
    let dir = TempDir::new("telemetry-prometheus");
    let backend = Fixture::http("legacy", "api");
    let bearer = format!("Bearer {BACKEND_TOKEN}");
    let gw = Gateway::start_env(
        &config(&backend.url, "  enablePrometheusMetricsPath: true\n"),
        &[("VMCP_TEST_BACKEND_TOKEN", bearer.as_str())],
    );
    let mut c = gw.client();
    c.legacy_init().await;
    for i in 0..4 {
        let r = call(&c, "api_echo", json!({ "message": format!("m{i}") }), &[]).await;
        assert_eq!(r.text(), format!("Echo: m{i}"));
    }
    for _ in 0..2 {
        let r = call(&c, "api_fail", json!({ "code": -32000 }), &[]).await;
        assert_eq!(r.error_code(), -32000, "{:?}", r.message);
    }
    // An unknown tool is an error too, labelled `unknown`, not by its name.
    let r = call(&c, "no_such_tool_x1", json!({}), &[]).await;
    assert!(r.error_code() != 0, "{:?}", r.message);

    // `/metrics` sits behind the Host/Origin guard, like `/status`.
    let page = reqwest::get(format!("{}/metrics", gw.base)).await.unwrap();
    assert_eq!(page.status(), 200);
    let text = page.text().await.unwrap();
    assert!(!text.contains("no_such_tool_x1"), "an unknown tool name became a label");
    assert!(!text.contains(BACKEND_TOKEN));
    let foreign = reqwest::Client::new()
        .get(format!("{}/metrics", gw.base))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);

    let target = gw.base.trim_start_matches("http://").to_owned();
    let prom = Prometheus::start(&dir.0, &target).await;
    let calls = r#"sum(vmcp_requests_total{mcp_method_name="tools/call"})"#;
    prom.expect(calls, 7.0).await;
    prom.expect(
        r#"sum(vmcp_requests_total{mcp_method_name="tools/call",outcome="error"}) / sum(vmcp_requests_total{mcp_method_name="tools/call"})"#,
        3.0 / 7.0,
    )
    .await;
    prom.expect(r#"sum(vmcp_request_errors_total{gen_ai_tool_name="api_fail"})"#, 2.0).await;
    prom.expect(r#"sum(vmcp_request_errors_total{gen_ai_tool_name="unknown"})"#, 1.0).await;
    prom.expect(
        r#"sum(mcp_server_operation_duration_seconds_count{mcp_method_name="tools/call",vmcp_backend="api"})"#,
        6.0,
    )
    .await;
    prom.expect(
        r#"sum(vmcp_backend_requests_total{vmcp_backend="api",mcp_method_name="tools/call"})"#,
        6.0,
    )
    .await;
    prom.expect(r#"vmcp_backend_in_service{vmcp_backend="api"}"#, 1.0).await;
    prom.expect(r#"vmcp_backend_breaker_state{vmcp_backend="api"}"#, 0.0).await;
    prom.expect(r#"vmcp_sessions_active"#, 1.0).await;
    let tools = gw.status().await["catalog"]["tools"].as_f64().unwrap();
    prom.expect(r#"vmcp_catalog_items{kind="tools"}"#, tools).await;
}
