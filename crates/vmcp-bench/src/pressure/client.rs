//! A small MCP client for the pressure scenarios: Legacy sessions and Modern requests with a
//! bearer token, whose replies are read as they come (JSON, or an SSE stream read event by
//! event), so that a scenario can hold a stream open or stop at a relayed server request.
//!
//! Every request has a timeout (`REQUEST_TIMEOUT`), except the streams a scenario means to hold,
//! which end when their [`Events`] is dropped.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};

use crate::load::{LEGACY, MODERN};

/// Bound for a request whose answer is awaited (not for held streams' bodies).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest buffered part of one SSE event; a server sending more is an error, not a leak.
const MAX_EVENT_BYTES: usize = 4 << 20;

/// One client identity (a bearer token) and optionally one Legacy session. Cheap to clone: the
/// HTTP pool is shared.
#[derive(Clone)]
pub struct Mcp {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    session: Option<String>,
}

/// Request ids are unique per process, which is all a server needs.
fn next_id() -> i64 {
    static ID: AtomicI64 = AtomicI64::new(1);
    ID.fetch_add(1, Ordering::Relaxed)
}

/// An HTTP client for the aggressors: no overall timeout (held streams), a connect timeout.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .http1_only()
        .no_proxy()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .context("building the HTTP client")
}

/// `_meta` of a Modern request; `sampling` declares that the client can answer sampling.
fn modern_meta(sampling: bool) -> Value {
    let caps = if sampling { json!({ "sampling": {} }) } else { json!({}) };
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": caps,
        "io.modelcontextprotocol/clientInfo": { "name": "vmcp-bench", "version": env!("CARGO_PKG_VERSION") },
    })
}

impl Mcp {
    pub fn new(http: &reqwest::Client, url: &str, token: Option<String>) -> Mcp {
        Mcp { http: http.clone(), url: url.to_owned(), token, session: None }
    }

    fn authed(&self, b: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => b.bearer_auth(t),
            None => b,
        }
    }

    fn post(&self) -> reqwest::RequestBuilder {
        let mut b = self
            .authed(self.http.post(&self.url))
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json");
        if let Some(s) = &self.session {
            b = b.header("mcp-session-id", s);
        }
        b
    }

    /// Legacy `initialize`: the HTTP status and the answer. On success the session is kept and
    /// `notifications/initialized` is sent.
    pub async fn initialize(&mut self, sampling: bool) -> anyhow::Result<(u16, Value)> {
        let caps = if sampling { json!({ "sampling": {} }) } else { json!({}) };
        let id = next_id();
        let body = json!({
            "jsonrpc": "2.0", "id": id, "method": "initialize",
            "params": {
                "protocolVersion": LEGACY,
                "capabilities": caps,
                "clientInfo": { "name": "vmcp-bench", "version": env!("CARGO_PKG_VERSION") },
            }
        });
        let resp = self.post().timeout(REQUEST_TIMEOUT).body(body.to_string()).send().await?;
        let session =
            resp.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mut ev = Events::new(resp);
        let status = ev.status;
        let msg = ev.reply(id).await?;
        if let (200, Some(s)) = (status, session) {
            self.session = Some(s);
            let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
            let r = self.post().timeout(REQUEST_TIMEOUT).body(note.to_string()).send().await?;
            let st = r.status();
            let _ = r.bytes().await;
            if !st.is_success() {
                bail!("notifications/initialized: HTTP {st}");
            }
        }
        Ok((status, msg))
    }

    /// Whether a Legacy session is held.
    pub fn has_session(&self) -> bool {
        self.session.is_some()
    }

    /// Starts a request (Legacy if a session is held, else Modern) and returns its id and the
    /// response, to be read or held. `timeout` bounds the whole exchange when given.
    pub async fn start(
        &self,
        method: &str,
        params: Value,
        sampling: bool,
        timeout: Option<Duration>,
    ) -> anyhow::Result<(i64, Events)> {
        let id = next_id();
        let mut params = params;
        let mut b = self.post();
        if self.session.is_none() {
            if let Some(p) = params.as_object_mut() {
                p.insert("_meta".into(), modern_meta(sampling));
            }
            b = b.header("mcp-protocol-version", MODERN).header("mcp-method", method);
            let name = match method {
                "tools/call" => params.get("name"),
                "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                    params.get("uri")
                }
                _ => None,
            };
            if let Some(n) = name.and_then(Value::as_str) {
                b = b.header("mcp-name", n);
            }
        }
        if let Some(t) = timeout {
            b = b.timeout(t);
        }
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let resp = b.body(body.to_string()).send().await.with_context(|| method.to_owned())?;
        Ok((id, Events::new(resp)))
    }

    /// A request answered in full: the HTTP status and the reply to it.
    pub async fn call(&self, method: &str, params: Value) -> anyhow::Result<(u16, Value)> {
        let (id, mut ev) = self.start(method, params, false, Some(REQUEST_TIMEOUT)).await?;
        let status = ev.status;
        Ok((status, ev.reply(id).await?))
    }

    /// `GET /mcp` on the session: the status and the (held) stream.
    pub async fn get_stream(&self) -> anyhow::Result<Events> {
        let mut b = self.authed(self.http.get(&self.url)).header("accept", "text/event-stream");
        if let Some(s) = &self.session {
            b = b.header("mcp-session-id", s);
        }
        Ok(Events::new(b.send().await.context("GET /mcp")?))
    }

    /// Ends the Legacy session (`DELETE /mcp`); the status, if any.
    pub async fn delete(&mut self) -> Option<u16> {
        let s = self.session.take()?;
        let r = self
            .authed(self.http.delete(&self.url))
            .header("mcp-session-id", s)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        let _ = r.bytes().await;
        Some(status)
    }
}

/// The messages of one response, read incrementally. Dropping it closes the response.
pub struct Events {
    pub status: u16,
    resp: reqwest::Response,
    sse: bool,
    buf: String,
    done: bool,
}

impl Events {
    fn new(resp: reqwest::Response) -> Events {
        let status = resp.status().as_u16();
        let sse = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        Events { status, resp, sse, buf: String::new(), done: false }
    }

    /// The next JSON-RPC message, or `None` at the end of the response.
    pub async fn next(&mut self) -> anyhow::Result<Option<Value>> {
        if self.done {
            return Ok(None);
        }
        if !self.sse {
            self.done = true;
            let mut body = Vec::new();
            while let Some(c) = self.resp.chunk().await.context("reading the body")? {
                if body.len() + c.len() > MAX_EVENT_BYTES {
                    bail!("response body over {MAX_EVENT_BYTES} bytes");
                }
                body.extend_from_slice(&c);
            }
            if body.is_empty() {
                return Ok(None);
            }
            return serde_json::from_slice(&body).map(Some).map_err(|_| {
                anyhow!(
                    "HTTP {}: not JSON: {}",
                    self.status,
                    short(&String::from_utf8_lossy(&body))
                )
            });
        }
        loop {
            if let Some(end) = event_end(&self.buf) {
                let event: String = self.buf.drain(..end).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if data.is_empty() {
                    continue;
                }
                match serde_json::from_str::<Value>(&data.join("\n")) {
                    Ok(v) => return Ok(Some(v)),
                    Err(_) => continue,
                }
            }
            match self.resp.chunk().await.context("reading the event stream")? {
                Some(c) => {
                    self.buf.push_str(&String::from_utf8_lossy(&c));
                    if self.buf.len() > MAX_EVENT_BYTES {
                        bail!("SSE event over {MAX_EVENT_BYTES} bytes");
                    }
                }
                None => {
                    self.done = true;
                    return Ok(None);
                }
            }
        }
    }

    /// The reply (result or error) to request `id`; other messages are skipped.
    pub async fn reply(&mut self, id: i64) -> anyhow::Result<Value> {
        while let Some(m) = self.next().await? {
            if m.get("id") == Some(&json!(id))
                && (m.get("result").is_some() || m.get("error").is_some())
            {
                return Ok(m);
            }
        }
        bail!("HTTP {}: the response ended without the reply", self.status)
    }
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

/// At most 200 bytes of `s`, for error samples.
pub fn short(s: &str) -> String {
    let mut end = s.len().min(200);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    if end < s.len() { format!("{}…", &s[..end]) } else { s.to_owned() }
}

/// The `server.limits` key a JSON-RPC error names (`data.limit`), if it is one.
pub fn limit_of(msg: &Value) -> Option<&str> {
    msg.get("error")?.get("data")?.get("limit")?.as_str()
}

/// The error's code, if the message is an error.
pub fn error_code(msg: &Value) -> Option<i64> {
    msg.get("error")?.get("code")?.as_i64()
}

/// The text of a failure: an error's message, or an `isError` tool result's content.
pub fn failure_text(msg: &Value) -> Option<String> {
    if let Some(e) = msg.get("error") {
        return Some(e.to_string());
    }
    let r = msg.get("result")?;
    (r.get("isError") == Some(&json!(true))).then(|| r.to_string())
}
