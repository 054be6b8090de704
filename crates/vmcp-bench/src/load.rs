//! The closed-loop load: workers that each hold one HTTP/1.1 connection (one `reqwest::Client`)
//! and, for the Legacy era, one MCP session, and call `echo` back to back, checking every reply.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use tokio::sync::Barrier;
use tokio::time::Instant;

/// The Modern protocol version (stateless requests).
pub const MODERN: &str = "2026-07-28";
/// The Legacy protocol version (`initialize` sessions).
pub const LEGACY: &str = "2025-11-25";

/// Bound for any single request, so a stuck server cannot stall the run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Error samples kept per run (every error is counted; only these are kept as text).
const ERROR_SAMPLES: usize = 5;

/// Which protocol era the workers speak.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Era {
    /// `initialize`, then requests on the `Mcp-Session-Id` session.
    Legacy,
    /// Stateless 2026-07-28 requests.
    Modern,
}

/// One MCP client over one HTTP connection.
struct McpClient {
    http: reqwest::Client,
    url: String,
    era: Era,
    session: Option<String>,
    next_id: i64,
}

impl McpClient {
    fn new(url: &str, era: Era) -> anyhow::Result<McpClient> {
        let http = reqwest::Client::builder()
            .http1_only()
            .no_proxy()
            .pool_max_idle_per_host(1)
            .tcp_nodelay(true)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(McpClient { http, url: url.to_owned(), era, session: None, next_id: 1 })
    }

    fn post(&self) -> reqwest::RequestBuilder {
        let mut b = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json");
        if let Some(s) = &self.session {
            b = b.header("mcp-session-id", s);
        }
        b
    }

    /// Legacy `initialize` + `notifications/initialized`; nothing for Modern.
    async fn connect(&mut self) -> anyhow::Result<()> {
        if self.era == Era::Modern {
            return Ok(());
        }
        let id = self.id();
        let body = json!({
            "jsonrpc": "2.0", "id": id, "method": "initialize",
            "params": {
                "protocolVersion": LEGACY,
                "capabilities": {},
                "clientInfo": { "name": "vmcp-bench", "version": env!("CARGO_PKG_VERSION") },
            }
        });
        let resp = self.post().body(body.to_string()).send().await.context("initialize")?;
        let session = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("initialize: no Mcp-Session-Id (HTTP {})", resp.status()))?;
        let reply = read_reply(resp, id).await.context("initialize")?;
        if reply.get("result").and_then(|r| r.get("protocolVersion")).is_none() {
            bail!("initialize failed: {reply}");
        }
        self.session = Some(session);
        let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        let resp = self.post().body(note.to_string()).send().await.context("initialized")?;
        let status = resp.status();
        // Read the (empty) body so the connection goes back to the pool.
        let _ = resp.bytes().await;
        if !status.is_success() {
            bail!("notifications/initialized: HTTP {status}");
        }
        Ok(())
    }

    /// Ends the Legacy session (best effort).
    async fn close(&mut self) {
        if let Some(s) = self.session.take() {
            let r = self.http.delete(&self.url).header("mcp-session-id", s).send().await;
            if let Ok(r) = r {
                let _ = r.bytes().await;
            }
        }
    }

    fn id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// `tools/call <tool> {"message"}` and checks the reply is `Echo: <message>`.
    async fn echo(&mut self, tool: &str, message: &str) -> anyhow::Result<()> {
        let id = self.id();
        let mut params = json!({ "name": tool, "arguments": { "message": message } });
        let mut req = self.post();
        if self.era == Era::Modern {
            params["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {
                    "name": "vmcp-bench", "version": env!("CARGO_PKG_VERSION")
                },
            });
            req = req
                .header("mcp-protocol-version", MODERN)
                .header("mcp-method", "tools/call")
                .header("mcp-name", tool);
        }
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params });
        let resp = req.body(body.to_string()).send().await.context("sending")?;
        let reply = read_reply(resp, id).await?;
        let text = reply
            .get("result")
            .and_then(|r| r.get("content"))
            .and_then(|c| c.get(0))
            .and_then(|c| c.get("text"))
            .and_then(Value::as_str);
        let expected = format!("Echo: {message}");
        match text {
            Some(t) if t == expected => Ok(()),
            _ => bail!("unexpected reply: {}", truncate(&reply.to_string(), 300)),
        }
    }
}

/// Reads a response to request `id`: a JSON body, or an SSE stream (`data:` lines) that is read
/// until it ends so the connection can be reused. Non-2xx statuses are errors.
async fn read_reply(mut resp: reqwest::Response, id: i64) -> anyhow::Result<Value> {
    let status = resp.status();
    let sse = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        bail!("HTTP {status}: {}", truncate(&text, 300));
    }
    if !sse {
        let bytes = resp.bytes().await.context("reading the body")?;
        let v: Value = serde_json::from_slice(&bytes).with_context(|| {
            format!("not JSON: {}", truncate(&String::from_utf8_lossy(&bytes), 300))
        })?;
        return if v.get("id") == Some(&json!(id)) {
            Ok(v)
        } else {
            Err(anyhow!("reply for another id: {}", truncate(&v.to_string(), 300)))
        };
    }
    let mut buf = String::new();
    let mut found = None;
    // Until the stream ends: the reply is normally its last event.
    while let Some(chunk) = resp.chunk().await.context("reading the event stream")? {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = event_end(&buf) {
            let event: String = buf.drain(..end).collect();
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if data.is_empty() {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(&data.join("\n")) else { continue };
            if found.is_none()
                && v.get("id") == Some(&json!(id))
                && (v.get("result").is_some() || v.get("error").is_some())
            {
                found = Some(v);
            }
        }
    }
    found.ok_or_else(|| anyhow!("event stream ended without the reply"))
}

/// The end (exclusive, separator included) of the first complete SSE event in `buf`.
fn event_end(buf: &str) -> Option<usize> {
    let lf = buf.find("\n\n").map(|i| i + 2);
    let crlf = buf.find("\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// What one load run measured.
#[derive(Debug, Default)]
pub struct RunResult {
    /// Latencies (ns) of the successful requests started in the measured window.
    pub latencies_ns: Vec<u64>,
    /// Failed requests started in the measured window.
    pub errors: u64,
    /// Failed requests started during the warm-up (not in `errors`, but reported).
    pub warmup_errors: u64,
    /// Workers that could not set up their session (they sent no load).
    pub setup_errors: u64,
    /// The measured window (wall time).
    pub window: Duration,
    /// A few error messages.
    pub error_samples: Vec<String>,
}

/// The phases every worker follows.
struct Plan {
    url: String,
    tool: String,
    era: Era,
    /// Set when all workers are connected: the warm-up starts then.
    start: Barrier,
    warmup: Duration,
    duration: Duration,
}

/// Runs `concurrency` workers calling `tool` at `url`: warm-up, then the measured window.
/// `on_window` is called right when the window opens and right after it closes (to sample the
/// servers' CPU time).
pub async fn run(
    url: &str,
    tool: &str,
    era: Era,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    mut on_window: impl FnMut(bool),
) -> RunResult {
    let plan = Arc::new(Plan {
        url: url.to_owned(),
        tool: tool.to_owned(),
        era,
        start: Barrier::new(concurrency + 1),
        warmup,
        duration,
    });
    let mut tasks = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let plan = plan.clone();
        tasks.push(tokio::spawn(worker(w, plan)));
    }
    // Session setup is not measured; workers are released together.
    plan.start.wait().await;
    let t0 = Instant::now();
    tokio::time::sleep_until(t0 + warmup).await;
    on_window(true);
    tokio::time::sleep_until(t0 + warmup + duration).await;
    on_window(false);

    let mut out = RunResult { window: duration, ..Default::default() };
    for t in tasks {
        match t.await {
            Ok(w) => {
                out.latencies_ns.extend(w.latencies_ns);
                out.errors += w.errors;
                out.warmup_errors += w.warmup_errors;
                out.setup_errors += u64::from(w.setup_failed);
                for e in w.error_samples {
                    if out.error_samples.len() < ERROR_SAMPLES {
                        out.error_samples.push(e);
                    }
                }
            }
            Err(e) => {
                out.setup_errors += 1;
                if out.error_samples.len() < ERROR_SAMPLES {
                    out.error_samples.push(format!("worker task failed: {e}"));
                }
            }
        }
    }
    out.latencies_ns.sort_unstable();
    out
}

#[derive(Default)]
struct WorkerResult {
    latencies_ns: Vec<u64>,
    errors: u64,
    warmup_errors: u64,
    setup_failed: bool,
    error_samples: Vec<String>,
}

async fn worker(w: usize, plan: Arc<Plan>) -> WorkerResult {
    let mut out = WorkerResult::default();
    let client = match McpClient::new(&plan.url, plan.era) {
        Ok(c) => Some(c),
        Err(e) => {
            out.error_samples.push(format!("worker {w}: {e:#}"));
            None
        }
    };
    let mut client = match client {
        Some(mut c) => match c.connect().await {
            Ok(()) => Some(c),
            Err(e) => {
                out.error_samples.push(format!("worker {w} setup: {e:#}"));
                None
            }
        },
        None => None,
    };
    // Every worker reaches the barrier, even a failed one, so the run cannot deadlock.
    plan.start.wait().await;
    let Some(c) = client.as_mut() else {
        out.setup_failed = true;
        return out;
    };
    let t0 = Instant::now();
    let open = t0 + plan.warmup;
    let close = open + plan.duration;
    let mut seq: u64 = 0;
    loop {
        let started = Instant::now();
        if started >= close {
            break;
        }
        seq += 1;
        let message = format!("w{w}-{seq}");
        let result = c.echo(&plan.tool, &message).await;
        let elapsed = started.elapsed();
        let measured = started >= open;
        match result {
            Ok(()) if measured => {
                out.latencies_ns.push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
            }
            Ok(()) => {}
            Err(e) => {
                if measured {
                    out.errors += 1;
                } else {
                    out.warmup_errors += 1;
                }
                if out.error_samples.len() < ERROR_SAMPLES {
                    out.error_samples.push(format!("worker {w}: {e:#}"));
                }
                // Do not spin on a dead server.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    c.close().await;
    out
}
