//! One MCP client over one HTTP/1.1 connection, and the operations a load worker repeats, each
//! with its reply checked: a wrong or missing reply is an error, never a timed sample.
//!
//! Extra headers (`--header`, or a user's bearer token in the `auth` preset) go on every request
//! and are never printed: they may hold credentials.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Era, LEGACY, MODERN};

/// Bound for any single request, so a stuck server cannot stall the run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest reply read (a 2,000-tool list is about 0.5 MiB); a larger one is an error.
const MAX_REPLY_BYTES: usize = 16 << 20;

/// What a worker does, over and over.
#[derive(Clone, Debug)]
pub enum Op {
    /// `tools/call <tool> {"message"}`, expecting `Echo: <message>`.
    Call { tool: String },
    /// `tools/list` (first page), expecting a `tools` array, of exactly `expect` tools if given.
    List { expect: Option<usize> },
    /// Legacy `initialize` (the timed part), then `notifications/initialized` and `DELETE`, each
    /// checked; the worker holds no session between steps.
    Init,
}

impl Op {
    /// Whether the worker opens a session before its loop (Legacy era, except `Init`).
    fn needs_session(&self, era: Era) -> bool {
        era == Era::Legacy && !matches!(self, Op::Init)
    }
}

/// What one checked step saw.
pub struct Step {
    /// The timed part (the whole request, or `initialize` alone for `Op::Init`).
    pub latency: Duration,
    /// Items in the reply (`tools/list`), if any.
    pub items: Option<usize>,
    /// Size of the timed reply's body.
    pub bytes: usize,
}

/// One MCP client over one HTTP connection.
pub struct McpClient {
    http: reqwest::Client,
    url: String,
    era: Era,
    headers: HeaderMap,
    session: Option<String>,
    next_id: i64,
}

impl McpClient {
    pub fn new(url: &str, era: Era, headers: HeaderMap) -> anyhow::Result<McpClient> {
        let http = reqwest::Client::builder()
            .http1_only()
            .no_proxy()
            .pool_max_idle_per_host(1)
            .tcp_nodelay(true)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(McpClient { http, url: url.to_owned(), era, headers, session: None, next_id: 1 })
    }

    fn post(&self) -> reqwest::RequestBuilder {
        let mut b = self
            .http
            .post(&self.url)
            .headers(self.headers.clone())
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json");
        if let Some(s) = &self.session {
            b = b.header("mcp-session-id", s);
        }
        b
    }

    fn id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Takes the session id out (the client then holds none).
    pub fn take_session(&mut self) -> Option<String> {
        self.session.take()
    }

    /// Holds `id` as the session (to `delete` it).
    pub fn set_session(&mut self, id: String) {
        self.session = Some(id);
    }

    /// Opens the session the worker's operation needs (Legacy `initialize` +
    /// `notifications/initialized`); nothing otherwise.
    pub async fn prepare(&mut self, op: &Op) -> anyhow::Result<()> {
        if op.needs_session(self.era) { self.connect().await.map(|_| ()) } else { Ok(()) }
    }

    /// Legacy `initialize` + `notifications/initialized`: the time and body size of the
    /// `initialize` exchange.
    pub async fn connect(&mut self) -> anyhow::Result<(Duration, usize)> {
        let id = self.id();
        let body = json!({
            "jsonrpc": "2.0", "id": id, "method": "initialize",
            "params": {
                "protocolVersion": LEGACY,
                "capabilities": {},
                "clientInfo": { "name": "vmcp-bench", "version": env!("CARGO_PKG_VERSION") },
            }
        });
        self.session = None;
        let started = Instant::now();
        let resp = self.post().body(body.to_string()).send().await.context("initialize")?;
        let session = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("initialize: no Mcp-Session-Id (HTTP {})", resp.status()))?;
        let (reply, bytes) = read_reply(resp, id).await.context("initialize")?;
        let took = started.elapsed();
        if reply.get("result").and_then(|r| r.get("protocolVersion")).is_none() {
            bail!("initialize failed: {}", truncate(&reply.to_string(), 300));
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
        Ok((took, bytes))
    }

    /// Ends the Legacy session with `DELETE`; an answer other than 2xx is an error.
    pub async fn delete(&mut self) -> anyhow::Result<()> {
        let Some(s) = self.session.take() else { return Ok(()) };
        let r = self
            .http
            .delete(&self.url)
            .headers(self.headers.clone())
            .header("mcp-session-id", s)
            .send()
            .await
            .context("DELETE")?;
        let status = r.status();
        let _ = r.bytes().await;
        if !status.is_success() {
            bail!("DELETE: HTTP {status}");
        }
        Ok(())
    }

    /// Ends the Legacy session (best effort).
    pub async fn close(&mut self) {
        let _ = self.delete().await;
    }

    /// One step of `op`, checked. `message` makes each call's reply unique.
    pub async fn step(&mut self, op: &Op, message: &str) -> anyhow::Result<Step> {
        match op {
            Op::Call { tool } => self.call(tool, message).await,
            Op::List { expect } => self.list(*expect).await,
            Op::Init => {
                let (latency, bytes) = self.connect().await?;
                self.delete().await?;
                Ok(Step { latency, items: None, bytes })
            }
        }
    }

    /// A request in this client's era: `_meta` and the standard headers for Modern.
    async fn request(
        &mut self,
        method: &str,
        mut params: Value,
        name: Option<&str>,
    ) -> anyhow::Result<(Value, usize, Duration)> {
        let id = self.id();
        let mut req = self.post();
        if self.era == Era::Modern {
            params["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {
                    "name": "vmcp-bench", "version": env!("CARGO_PKG_VERSION")
                },
            });
            req = req.header("mcp-protocol-version", MODERN).header("mcp-method", method);
            if let Some(n) = name {
                req = req.header("mcp-name", n);
            }
        }
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let started = Instant::now();
        let resp = req.body(body.to_string()).send().await.context("sending")?;
        let (reply, bytes) = read_reply(resp, id).await?;
        Ok((reply, bytes, started.elapsed()))
    }

    /// `tools/call <tool> {"message"}` and checks the reply is `Echo: <message>`.
    async fn call(&mut self, tool: &str, message: &str) -> anyhow::Result<Step> {
        let params = json!({ "name": tool, "arguments": { "message": message } });
        let (reply, bytes, latency) = self.request("tools/call", params, Some(tool)).await?;
        let text = reply
            .get("result")
            .and_then(|r| r.get("content"))
            .and_then(|c| c.get(0))
            .and_then(|c| c.get("text"))
            .and_then(Value::as_str);
        match text {
            Some(t) if t.strip_prefix("Echo: ") == Some(message) => {
                Ok(Step { latency, items: None, bytes })
            }
            _ => bail!("unexpected reply: {}", truncate(&reply.to_string(), 300)),
        }
    }

    /// `tools/list` and checks the reply lists named tools (exactly `expect` if given).
    async fn list(&mut self, expect: Option<usize>) -> anyhow::Result<Step> {
        let (reply, bytes, latency) = self.request("tools/list", json!({}), None).await?;
        let Some(tools) =
            reply.get("result").and_then(|r| r.get("tools")).and_then(Value::as_array)
        else {
            bail!("no tools in the reply: {}", truncate(&reply.to_string(), 300));
        };
        if let Some(bad) = tools.iter().find(|t| t.get("name").and_then(Value::as_str).is_none()) {
            bail!("a tool without a name: {}", truncate(&bad.to_string(), 300));
        }
        match expect {
            Some(n) if n != tools.len() => bail!("{} tools listed, expected {n}", tools.len()),
            None if tools.is_empty() => bail!("no tools listed"),
            _ => Ok(Step { latency, items: Some(tools.len()), bytes }),
        }
    }
}

/// Reads a response to request `id`: a JSON body, or an SSE stream (`data:` lines) that is read
/// until it ends so the connection can be reused. Non-2xx statuses are errors. Returns the reply
/// and the body's size.
async fn read_reply(mut resp: reqwest::Response, id: i64) -> anyhow::Result<(Value, usize)> {
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
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.context("reading the body")? {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            bail!("reply over {MAX_REPLY_BYTES} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    let bytes = body.len();
    if !sse {
        let v: Value = serde_json::from_slice(&body).with_context(|| {
            format!("not JSON: {}", truncate(&String::from_utf8_lossy(&body), 300))
        })?;
        return if v.get("id") == Some(&json!(id)) {
            Ok((v, bytes))
        } else {
            Err(anyhow!("reply for another id: {}", truncate(&v.to_string(), 300)))
        };
    }
    let text = String::from_utf8_lossy(&body);
    let mut rest: &str = &text;
    // The reply is normally the stream's last event; any event with its id and a result or
    // error is it.
    while let Some(end) = event_end(rest) {
        let (event, tail) = rest.split_at(end);
        rest = tail;
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if data.is_empty() {
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(&data.join("\n")) else { continue };
        if v.get("id") == Some(&json!(id))
            && (v.get("result").is_some() || v.get("error").is_some())
        {
            return Ok((v, bytes));
        }
    }
    Err(anyhow!("event stream ended without the reply"))
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

pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
