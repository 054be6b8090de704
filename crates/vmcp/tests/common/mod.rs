//! Shared harness for the `gateway_*` integration tests: real `vmcp` and `vmcp-fixture` processes,
//! and a small MCP client for both protocol eras over `reqwest`.
//!
//! Every wait is a poll with a deadline; nothing sleeps for a fixed time.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

pub mod idp;
pub mod local_idp;
pub mod login;
pub mod redis;
pub mod tls;
pub mod tools;
pub mod upstream_idp;

pub const MODERN: &str = "2026-07-28";
pub const LEGACY: &str = "2025-11-25";

/// Default bound for one request in tests.
pub const STEP: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------------------------

/// The `vmcp` binary cargo built for these tests.
pub fn vmcp_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vmcp"))
}

/// `target/<profile>` of the running test executable (`target/<profile>/deps/<test>`).
fn profile_dir() -> PathBuf {
    if let Ok(d) = std::env::var("VMCP_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps").to_path_buf()
}

/// The `vmcp-fixture` binary, built once if it is missing.
pub fn fixture_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = profile_dir();
        let bin = dir.join("vmcp-fixture");
        if !bin.exists() {
            let target = dir.parent().expect("target dir").to_path_buf();
            let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cmd.args(["build", "-p", "vmcp-fixture"]).env("CARGO_TARGET_DIR", &target);
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("running cargo build -p vmcp-fixture");
            assert!(status.success(), "cargo build -p vmcp-fixture failed");
        }
        assert!(bin.exists(), "no vmcp-fixture at {}", bin.display());
        bin
    })
    .clone()
}

/// A unique temp file path.
pub fn temp_path(stem: &str, ext: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!("vmcp-itest-{stem}-{}-{n}.{ext}", std::process::id()))
}

/// A fresh directory under the system temp dir, removed (with its contents) on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `vmcp-itest-STEM-...d`.
    pub fn new(stem: &str) -> TempDir {
        let d = temp_path(stem, "d");
        std::fs::create_dir_all(&d).expect("creating a temp dir");
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TCP port nobody listens on (right now).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A child process whose stdout lines and stderr are collected by threads; SIGTERM (then SIGKILL)
/// on drop.
pub struct Proc {
    child: Child,
    name: String,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {name}: {e} ({cmd:?})"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                l.lock().unwrap().push(line);
            }
        });
        let mut err = child.stderr.take().unwrap();
        let e = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match err.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => e.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        });
        Proc { child, name: name.to_owned(), lines, stderr }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Stdout lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (bounded) for a stdout line satisfying `f`.
    fn wait_line(&mut self, within: Duration, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| f(l)) {
                return l;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before printing the expected line\nstdout: {:?}\nstderr: {}",
                    self.name,
                    self.lines(),
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: expected line not printed within {within:?}\nstdout: {:?}\nstderr: {}",
                self.name,
                self.lines(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait up to `grace`, then SIGKILL. Returns whether it exited on its own.
    pub fn terminate(&mut self, grace: Duration) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return true;
        }
        let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(5));
    }
}

/// A `vmcp-fixture http` server.
pub struct Fixture {
    pub proc: Proc,
    /// `http://127.0.0.1:PORT/mcp`.
    pub url: String,
    pub port: u16,
}

impl Fixture {
    /// `vmcp-fixture http --port 0 --era <era> --name <name>`.
    pub fn http(era: &str, name: &str) -> Fixture {
        Self::http_on(0, era, name)
    }

    /// The same on a given port.
    pub fn http_on(port: u16, era: &str, name: &str) -> Fixture {
        Self::http_args(port, era, name, &[])
    }

    /// The same with extra arguments (`--get-status 405`, `--json-response`, ...).
    pub fn http_args(port: u16, era: &str, name: &str, extra: &[&str]) -> Fixture {
        let mut cmd = Command::new(fixture_bin());
        cmd.args(["http", "--port", &port.to_string(), "--era", era, "--name", name]).args(extra);
        let mut proc = Proc::spawn(&format!("fixture {name}"), cmd);
        let line = proc.wait_line(Duration::from_secs(20), |l| l.starts_with("listening on "));
        let url = line.trim_start_matches("listening on ").trim().to_owned();
        let port = url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Fixture { proc, url, port }
    }
}

/// `@modelcontextprotocol/server-everything` over a network transport (`sse` or
/// `streamableHttp`) on a free port.
pub fn serve_everything(mode: &str) -> (Proc, u16) {
    let port = free_port();
    let mut cmd = Command::new(tools::node());
    cmd.args([tools::everything().as_str(), mode]).env("PORT", port.to_string());
    let mut proc = Proc::start(&format!("server-everything {mode}"), cmd);
    let ready = match mode {
        "sse" => format!("Server is running on port {port}"),
        _ => format!("MCP Streamable HTTP Server listening on port {port}"),
    };
    proc.wait_stderr(Duration::from_secs(30), &ready);
    (proc, port)
}

/// YAML for a stdio fixture backend.
pub fn stdio_backend(name: &str) -> String {
    format!(
        "  - name: {name}\n    transport: stdio\n    command: {}\n    args: [stdio, --name, {name}]\n",
        fixture_bin().display()
    )
}

/// YAML for a streamable-http backend.
pub fn http_backend(name: &str, url: &str) -> String {
    format!("  - name: {name}\n    transport: streamable-http\n    url: {url}\n")
}

/// A running `vmcp serve`.
pub struct Gateway {
    pub proc: Proc,
    /// `http://ADDR/mcp`.
    pub url: String,
    /// `http://ADDR`.
    pub base: String,
    config: PathBuf,
}

impl Gateway {
    /// Starts `vmcp serve --config <yaml> --port 0` and waits until it serves.
    pub fn start(yaml: &str) -> Gateway {
        Self::start_env(yaml, &[])
    }

    /// [`Gateway::start`] with extra environment variables for the vmcp process.
    pub fn start_env(yaml: &str, env: &[(&str, &str)]) -> Gateway {
        Self::launch(yaml, env, None)
    }

    /// [`Gateway::start`] with vmcp's soft limit of open files (`RLIMIT_NOFILE`) set to
    /// `soft_nofile` by `prlimit` (the hard limit is left as it is). Fails the test when `prlimit`
    /// (util-linux) is missing or the limit did not take.
    pub fn start_fd_limited(yaml: &str, soft_nofile: u32) -> Gateway {
        let found = Command::new("prlimit")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(found, "this test needs `prlimit` (util-linux) on PATH to limit vmcp's open files");
        let gw = Self::launch(yaml, &[], Some(soft_nofile));
        let soft = fd_limit(gw.pid());
        assert_eq!(soft, Some(soft_nofile as u64), "vmcp's soft limit of open files");
        gw
    }

    /// Starts `vmcp serve --config DIR/config.yaml --port PORT`: the directory may hold other
    /// files vmcp reads beside its config (`authserver-config.yaml`).
    pub fn start_dir(dir: &std::path::Path, port: u16, env: &[(&str, &str)]) -> Gateway {
        Self::launch_path(dir.join("config.yaml"), port, env, None)
    }

    fn launch(yaml: &str, env: &[(&str, &str)], soft_nofile: Option<u32>) -> Gateway {
        let config = temp_path("config", "yaml");
        std::fs::write(&config, yaml).expect("writing the config");
        Self::launch_path(config, 0, env, soft_nofile)
    }

    fn launch_path(
        config: PathBuf,
        port: u16,
        env: &[(&str, &str)],
        soft_nofile: Option<u32>,
    ) -> Gateway {
        // `prlimit` execs vmcp, so the child's pid is vmcp's.
        let mut cmd = match soft_nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:")).arg("--").arg(vmcp_bin());
                c
            }
            None => Command::new(vmcp_bin()),
        };
        cmd.arg("serve").arg("--config").arg(&config).args(["--port", &port.to_string()]);
        cmd.env("VMCP_LOG", std::env::var("VMCP_LOG").unwrap_or_else(|_| "info".into()));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut proc = Proc::spawn("vmcp", cmd);
        let line = proc.wait_line(Duration::from_secs(30), |l| l.contains(" listening on http://"));
        let url = line
            .split_once("listening on ")
            .map(|(_, u)| u.trim().to_owned())
            .unwrap_or_else(|| panic!("no url in {line:?}"));
        let base = url.trim_end_matches("/mcp").to_owned();
        // The router is built after the summary, whose last line is the catalog's.
        proc.wait_line(Duration::from_secs(30), |l| l.trim_start().starts_with("catalog:"));
        let gw = Gateway { proc, url, base, config };
        gw.wait_http();
        gw
    }

    fn wait_http(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ok = std::net::TcpStream::connect(self.base.trim_start_matches("http://")).is_ok();
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "gateway does not accept connections");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// A client for this gateway.
    pub fn client(&self) -> Client {
        Client::new(&self.url)
    }

    /// `GET /status`.
    pub async fn status(&self) -> Value {
        reqwest::get(format!("{}/status", self.base))
            .await
            .expect("GET /status")
            .json()
            .await
            .expect("/status JSON")
    }

    /// The `/status` entry of backend `name`.
    pub async fn backend_status(&self, name: &str) -> Value {
        let s = self.status().await;
        s["backends"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no backend {name} in {s}"))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.proc.terminate(Duration::from_secs(10));
        let _ = std::fs::remove_file(&self.config);
        if std::thread::panicking() {
            eprintln!("---- vmcp stderr ----\n{}", self.proc.stderr());
        }
    }
}

/// Polls `f` every 50ms until it returns `Some`, failing after `within`.
pub async fn poll<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Children of `pid` (from `/proc/*/stat`).
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        // `pid (comm) state ppid ...`; comm may contain spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(pid) && state != Some("Z") {
            out.push(child);
        }
    }
    out
}

/// The soft limit of open files of process `pid` (`/proc/PID/limits`), `None` if unlimited or
/// unreadable.
pub fn fd_limit(pid: i32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}

/// How many file descriptors process `pid` has open (`/proc/PID/fd`), `None` if unreadable.
pub fn open_fds(pid: i32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Whether a process with this pid exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|s| s != "Z"),
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// A JSON-RPC request object.
pub fn request(id: i64, method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
}

/// The 2026-07-28 request `_meta` this harness sends.
pub fn modern_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": { "name": "vmcp-itest", "version": "1" },
    })
}

/// `params` with the Modern `_meta` merged in (existing `_meta` keys are kept).
pub fn with_modern_meta(params: Value) -> Value {
    let mut params = match params {
        Value::Object(m) => m,
        Value::Null => serde_json::Map::new(),
        other => panic!("params must be an object: {other}"),
    };
    let meta = params.entry("_meta").or_insert_with(|| json!({}));
    for (k, v) in modern_meta().as_object().unwrap() {
        meta.as_object_mut().unwrap().entry(k.clone()).or_insert(v.clone());
    }
    Value::Object(params)
}

/// The `Mcp-Name` a Modern request for `method` carries, if any.
pub fn mcp_name(method: &str, params: &Value) -> Option<String> {
    let field = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => "uri",
        _ => return None,
    };
    params.get(field).and_then(Value::as_str).map(str::to_owned)
}

/// Messages of one HTTP response: a JSON body (one message) or an SSE stream, read incrementally.
pub struct Events {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub is_sse: bool,
    json: Option<Value>,
    /// Non-JSON-RPC body text (e.g. a plain 403).
    pub text: String,
    body: Option<futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>>,
    buf: String,
    queue: std::collections::VecDeque<Value>,
}

impl Events {
    pub async fn from_response(resp: reqwest::Response) -> Events {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let ct = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut ev = Events {
            status,
            headers,
            is_sse: ct.starts_with("text/event-stream"),
            json: None,
            text: String::new(),
            body: None,
            buf: String::new(),
            queue: Default::default(),
        };
        if ev.is_sse {
            ev.body = Some(resp.bytes_stream().boxed());
        } else {
            ev.text = tokio::time::timeout(STEP, resp.text())
                .await
                .expect("response body in time")
                .unwrap_or_default();
            ev.json = serde_json::from_str(&ev.text).ok();
        }
        ev
    }

    /// The next message, or `None` when the response ends or nothing comes within `within`.
    pub async fn next_within(&mut self, within: Duration) -> Option<Value> {
        if let Some(v) = self.json.take() {
            return Some(v);
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(v) = self.queue.pop_front() {
                return Some(v);
            }
            let body = self.body.as_mut()?;
            let chunk = match tokio::time::timeout_at(deadline, body.next()).await {
                Err(_) => return None,
                Ok(None) | Ok(Some(Err(_))) => {
                    self.body = None;
                    return None;
                }
                Ok(Some(Ok(c))) => c,
            };
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
            self.buf = self.buf.replace("\r\n", "\n");
            while let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if data.is_empty() {
                    continue;
                }
                if let Ok(v) = serde_json::from_str::<Value>(&data.join("\n")) {
                    self.queue.push_back(v);
                }
            }
        }
    }

    /// The next message, failing the test if none comes within [`STEP`].
    pub async fn next(&mut self) -> Value {
        self.next_within(STEP).await.expect("a message on the stream within the step timeout")
    }

    /// Reads until the response to `id`; everything before it is interim.
    pub async fn reply(mut self, id: i64, within: Duration) -> Reply {
        let mut interim = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        let status = self.status;
        let headers = self.headers.clone();
        let text = self.text.clone();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Some(m)
                    if m.get("id") == Some(&json!(id))
                        && (m.get("result").is_some() || m.get("error").is_some()) =>
                {
                    return Reply { status, headers, interim, message: Some(m), text };
                }
                // An error without an id (e.g. a parse error) answers whatever was sent.
                Some(m) if m.get("error").is_some() && m.get("id").is_none_or(Value::is_null) => {
                    return Reply { status, headers, interim, message: Some(m), text };
                }
                Some(m) => interim.push(m),
                None => return Reply { status, headers, interim, message: None, text },
            }
        }
    }
}

/// One request's outcome.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// Messages before the response (SSE).
    pub interim: Vec<Value>,
    /// The JSON-RPC response or error, if any came.
    pub message: Option<Value>,
    /// The body text of a JSON (non-SSE) response.
    pub text: String,
}

impl Reply {
    pub fn msg(&self) -> &Value {
        self.message.as_ref().unwrap_or_else(|| panic!("no JSON-RPC reply: {self:?}"))
    }
    pub fn result(&self) -> &Value {
        let m = self.msg();
        m.get("result").unwrap_or_else(|| panic!("expected a result, got {m}"))
    }
    pub fn error(&self) -> &Value {
        let m = self.msg();
        m.get("error").unwrap_or_else(|| panic!("expected an error, got {m}"))
    }
    pub fn error_code(&self) -> i64 {
        self.error()["code"].as_i64().unwrap_or_else(|| panic!("no error code in {}", self.msg()))
    }
    /// The first text content of a tool result.
    pub fn text(&self) -> String {
        self.result()["content"][0]["text"].as_str().unwrap_or_default().to_owned()
    }
    /// Names in a `tools/list` result.
    pub fn tool_names(&self) -> Vec<String> {
        self.result()["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("no tools in {}", self.msg()))
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect()
    }
}

/// A client of the gateway's `/mcp`.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
    /// The Legacy session, once initialized.
    pub session: Option<String>,
    /// Sent as `Authorization: Bearer ...` on every request when set.
    pub bearer: Option<String>,
    next_id: Arc<AtomicI64>,
}

impl Client {
    pub fn new(url: &str) -> Client {
        Client {
            http: reqwest::Client::builder().build().expect("reqwest client"),
            url: url.to_owned(),
            session: None,
            bearer: None,
            next_id: Arc::new(AtomicI64::new(1)),
        }
    }

    /// Adds the bearer token, if any.
    pub fn authed(&self, b: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.bearer {
            Some(t) => b.header("authorization", format!("Bearer {t}")),
            None => b,
        }
    }

    pub fn id(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::SeqCst)
    }

    /// A POST to `/mcp` with the usual headers (and the session, if any).
    pub fn post(&self) -> reqwest::RequestBuilder {
        let mut b = self
            .authed(self.http.post(&self.url))
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json");
        if let Some(s) = &self.session {
            b = b.header("mcp-session-id", s);
        }
        b
    }

    /// Sends `b` and returns its messages.
    pub async fn open(&self, b: reqwest::RequestBuilder) -> Events {
        let resp = tokio::time::timeout(STEP, b.send())
            .await
            .expect("response headers in time")
            .expect("sending the request");
        Events::from_response(resp).await
    }

    /// Legacy `initialize` (+ `notifications/initialized`) declaring `capabilities`.
    pub async fn legacy_init_with(&mut self, capabilities: Value) -> String {
        let id = self.id();
        let body = request(
            id,
            "initialize",
            json!({
                "protocolVersion": LEGACY,
                "capabilities": capabilities,
                "clientInfo": { "name": "vmcp-itest", "version": "1" },
            }),
        );
        let ev = self.open(self.post().json(&body)).await;
        let sid = ev
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no Mcp-Session-Id (status {})", ev.status));
        let reply = ev.reply(id, STEP).await;
        assert_eq!(reply.result()["protocolVersion"], LEGACY, "{:?}", reply.message);
        self.session = Some(sid.clone());
        let st = self.notify("notifications/initialized", json!({})).await;
        assert_eq!(st, 202, "notifications/initialized");
        sid
    }

    /// Legacy `initialize` with no client capabilities.
    pub async fn legacy_init(&mut self) -> String {
        self.legacy_init_with(json!({})).await
    }

    /// A Legacy notification; returns the HTTP status.
    pub async fn notify(&self, method: &str, params: Value) -> u16 {
        let body = json!({ "jsonrpc": "2.0", "method": method, "params": params });
        let resp = tokio::time::timeout(STEP, self.post().json(&body).send())
            .await
            .expect("in time")
            .expect("send");
        resp.status().as_u16()
    }

    /// Starts a Legacy request (session header if any) and returns its id and stream.
    pub async fn start(&self, method: &str, params: Value) -> (i64, Events) {
        let id = self.id();
        let ev = self.open(self.post().json(&request(id, method, params))).await;
        (id, ev)
    }

    /// A Legacy request (the session header if any); JSON or SSE.
    pub async fn call(&self, method: &str, params: Value) -> Reply {
        let (id, ev) = self.start(method, params).await;
        ev.reply(id, STEP).await
    }

    /// A 2026-07-28 request builder: `_meta` merged into params, and the standard headers.
    pub fn modern_post(&self, id: i64, method: &str, params: Value) -> reqwest::RequestBuilder {
        let params = with_modern_meta(params);
        let mut b = self
            .authed(self.http.post(&self.url))
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", MODERN)
            .header("mcp-method", method);
        if let Some(name) = mcp_name(method, &params) {
            b = b.header("mcp-name", name);
        }
        b.json(&request(id, method, params))
    }

    /// Starts a 2026-07-28 request.
    pub async fn modern_start(&self, method: &str, params: Value) -> (i64, Events) {
        let id = self.id();
        let ev = self.open(self.modern_post(id, method, params)).await;
        (id, ev)
    }

    /// A 2026-07-28 request; JSON or SSE.
    pub async fn modern_call(&self, method: &str, params: Value) -> Reply {
        let (id, ev) = self.modern_start(method, params).await;
        ev.reply(id, STEP).await
    }

    /// `tools/list` names, Legacy or Modern depending on whether a session is set.
    pub async fn tool_names(&self, modern: bool) -> Vec<String> {
        let r = if modern {
            self.modern_call("tools/list", json!({})).await
        } else {
            self.call("tools/list", json!({})).await
        };
        r.tool_names()
    }

    /// `tools/call`, Legacy or Modern.
    pub async fn tool(&self, modern: bool, name: &str, arguments: Value) -> Reply {
        let params = json!({ "name": name, "arguments": arguments });
        if modern {
            self.modern_call("tools/call", params).await
        } else {
            self.call("tools/call", params).await
        }
    }

    /// GET `/mcp` (the Legacy session's notification stream).
    pub async fn get_stream(&self) -> Events {
        let mut b = self.authed(self.http.get(&self.url)).header("accept", "text/event-stream");
        if let Some(s) = &self.session {
            b = b.header("mcp-session-id", s);
        }
        self.open(b).await
    }
}

/// A gateway client in the given era: Modern clients need no handshake.
pub async fn client_for(gw: &Gateway, modern: bool) -> Client {
    let mut c = gw.client();
    if !modern {
        c.legacy_init().await;
    }
    c
}

// ---------------------------------------------------------------------------------------------
// Backend sessions
// ---------------------------------------------------------------------------------------------

/// The JSON object a fixture `whoami` call answered with.
pub fn whoami_of(r: &Reply) -> Value {
    let text = r.text();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("whoami answered {text:?}: {e}"))
}

/// The backend `mcp-session-id` a fixture `whoami` call arrived with, if any.
pub fn backend_session_of(r: &Reply) -> Option<String> {
    whoami_of(r).get("mcp-session-id").and_then(Value::as_str).map(str::to_owned)
}

impl Client {
    /// DELETE `/mcp` for this client's session; returns the HTTP status.
    pub async fn delete_session(&self) -> u16 {
        let mut b = self.authed(self.http.delete(&self.url));
        if let Some(s) = &self.session {
            b = b.header("mcp-session-id", s);
        }
        let resp = tokio::time::timeout(STEP, b.send()).await.expect("in time").expect("DELETE");
        resp.status().as_u16()
    }
}

/// A Legacy `tools/call` POSTed straight to `url` (a backend, bypassing the gateway) on backend
/// session `session`; returns the HTTP status and whatever messages came.
pub async fn post_on_backend_session(url: &str, session: &str, tool: &str, args: Value) -> Reply {
    let c = Client::new(url);
    let b = c
        .post()
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", LEGACY)
        .json(&request(9000, "tools/call", json!({ "name": tool, "arguments": args })));
    c.open(b).await.reply(9000, STEP).await
}

// ---------------------------------------------------------------------------------------------
// Other processes
// ---------------------------------------------------------------------------------------------

impl Proc {
    /// Starts any program, collecting its output like the gateway's and the fixture's.
    pub fn start(name: &str, cmd: Command) -> Proc {
        Proc::spawn(name, cmd)
    }

    /// Waits (bounded) until stderr contains `needle`.
    pub fn wait_stderr(&mut self, within: Duration, needle: &str) {
        let deadline = Instant::now() + within;
        while !self.stderr().contains(needle) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before printing {needle:?}\nstderr: {}",
                    self.name,
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: {needle:?} not printed within {within:?}\nstderr: {}",
                self.name,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A refresher for vaults in tests that never refresh: every refresh is refused.
pub struct NoRefresh;

impl vmcp::auth::upstream::TokenRefresher for NoRefresh {
    fn refresh<'a>(
        &'a self,
        _: &'a str,
        _: &'a vmcp::auth::upstream::TokenSet,
    ) -> futures::future::BoxFuture<
        'a,
        Result<vmcp::auth::upstream::TokenSet, vmcp::auth::upstream::RefreshError>,
    > {
        Box::pin(async {
            Err(vmcp::auth::upstream::RefreshError::Refused("not in this test".into()))
        })
    }
}
