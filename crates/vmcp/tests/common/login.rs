//! The "log in once" stack for the `gateway_login*` tests: the real upstream IdP
//! ([`UpstreamIdp`]), a backend that wants the user's upstream token (`vmcp-fixture
//! --user-tools`), vmcp with its embedded authorization server and `upstream_inject`, and the
//! official Python SDK's OAuth client (`tests/python/oauth_login.py`), run to completion
//! ([`login`]) or driven command by command ([`Script`]).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::upstream_idp::UpstreamIdp;
use super::{Fixture, Gateway, TempDir, free_port, tools};

/// Bound for one step of the script (a login, a call).
pub const SCRIPT_STEP: Duration = Duration::from_secs(60);

/// The whole stack: upstream IdP, backend, vmcp with its authorization server.
pub struct Stack {
    pub idp: UpstreamIdp,
    pub backend: Fixture,
    pub gw: Gateway,
    _dir: TempDir,
}

/// Starts the IdP (upstream access tokens live `access_ttl` seconds, refresh tokens rotate), the
/// backend and vmcp configured with `upstream_inject` for it.
pub async fn stack(access_ttl: u64) -> Stack {
    let idp = UpstreamIdp::launch().await;
    idp.config(json!({ "accessTtl": access_ttl, "rotate": true })).await;
    let backend = Fixture::http_args(0, "legacy", "api", &["--user-tools"]);
    let dir = TempDir::new("login");
    std::fs::create_dir_all(&dir.0).unwrap();
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let config = format!(
        "name: login
backends:
  - name: api
    transport: streamable-http
    url: {backend}
incomingAuth:
  type: oidc
  oidc:
    issuer: {issuer}
    audience: {issuer}/mcp
outgoingAuth:
  backends:
    api:
      type: upstream_inject
      upstreamInject:
        providerName: corp
",
        backend = backend.url
    );
    let auth = format!(
        "issuer: {issuer}
allowed_audiences: [{issuer}/mcp]
upstreams:
  - name: corp
    type: oidc
    oidc_config:
      issuer_url: {idp}
      client_id: vmcp-gateway
",
        idp = idp.url
    );
    std::fs::write(dir.0.join("config.yaml"), config).unwrap();
    std::fs::write(dir.0.join("authserver-config.yaml"), auth).unwrap();
    let gw = Gateway::start_dir(&dir.0, port, &[]);
    Stack { idp, backend, gw, _dir: dir }
}

fn script_command(url: &str, args: &[&str]) -> tokio::process::Command {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/oauth_login.py");
    let mut cmd = tokio::process::Command::new(tools::python());
    cmd.arg(&script).arg(url).args(args).kill_on_drop(true);
    cmd
}

/// What a run of the login script printed.
pub struct Outcome {
    /// The call lines.
    pub calls: Vec<Value>,
    /// The summary line.
    pub summary: Value,
    /// The tool names (`--list`), if printed.
    pub tools: Option<Vec<String>>,
}

/// Runs `tests/python/oauth_login.py URL ARGS...` to its end.
pub async fn login(url: &str, args: &[&str]) -> Outcome {
    let out = script_command(url, args).output().await.expect("running the Python login client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "login script failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let summary = lines.iter().find(|l| l["summary"] == true).cloned().unwrap_or_else(|| {
        panic!("no summary\nstdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
    });
    let tools = lines.iter().find_map(|l| l.get("tools")).map(tool_names);
    let calls = lines.into_iter().filter(|l| l.get("call").is_some()).collect();
    Outcome { calls, summary, tools }
}

fn tool_names(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_owned()).collect()
}

/// The login script in `--interactive` mode: logged in once started, then one command at a
/// time, each answered by one JSON line. Killed on drop.
pub struct Script {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
}

impl Script {
    /// Starts the script with `--interactive` and `args`. The login happens on the first
    /// request (at `initialize` in the Legacy era).
    pub async fn start(url: &str, args: &[&str]) -> Script {
        let mut cmd = script_command(url, args);
        cmd.arg("--interactive")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning the Python login client");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 8192];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Script { child, stdin, stdout, stderr }
    }

    /// The script's stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The next JSON line the script prints.
    async fn next(&mut self, what: &str) -> Value {
        loop {
            let line = tokio::time::timeout(SCRIPT_STEP, self.stdout.next_line()).await;
            match line {
                Ok(Ok(Some(l))) => {
                    if let Ok(v) = serde_json::from_str::<Value>(&l) {
                        return v;
                    }
                }
                Ok(_) => panic!("login script ended before {what}\nstderr: {}", self.stderr()),
                Err(_) => panic!("no answer to {what} within {SCRIPT_STEP:?}\n{}", self.stderr()),
            }
        }
    }

    /// Sends one command and returns its answer.
    pub async fn send(&mut self, command: &str) -> Value {
        let stdin = self.stdin.as_mut().expect("script still open");
        stdin.write_all(format!("{command}\n").as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
        self.next(command).await
    }

    /// One tool call through the SDK (`call [TOOL]`).
    pub async fn call(&mut self) -> Value {
        self.send("call").await
    }

    /// A call that must succeed: the upstream access token the backend received.
    pub async fn call_ok(&mut self) -> String {
        let c = self.call().await;
        assert!(c["error"].is_null(), "call failed: {c}\nstderr: {}", self.stderr());
        bearer_of_whoami(&c)
    }

    /// The SDK's last tools/call, sent again by plain HTTP with the SDK's current vmcp token.
    pub async fn raw(&mut self) -> Value {
        self.send("raw").await
    }

    /// `{"logins", "token" (fingerprint), "statuses"}` now.
    pub async fn state(&mut self) -> Value {
        self.send("state").await
    }

    /// Ends the session (the SDK deletes it) and returns the summary.
    pub async fn quit(mut self) -> Value {
        drop(self.stdin.take());
        let summary = self.next("the summary").await;
        assert_eq!(summary["summary"], true, "{summary}");
        let status = tokio::time::timeout(SCRIPT_STEP, self.child.wait()).await;
        let status = status.expect("script exit").expect("script status");
        assert!(status.success(), "login script failed: {status}\n{}", self.stderr());
        summary
    }
}

/// The upstream token a `whoami` call line shows the backend received.
pub fn bearer_of_whoami(call: &Value) -> String {
    let text = call["text"].as_str().unwrap_or_else(|| panic!("no text in {call}"));
    let headers: Value = serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    let auth = headers["authorization"].as_str().unwrap_or_else(|| panic!("no token: {text}"));
    auth.strip_prefix("Bearer ").expect("a bearer token").to_owned()
}

/// The claims of a JWT, unverified.
pub fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url"),
    )
    .expect("JSON claims")
}

/// `exp` of a JWT, unverified, in ms.
pub fn jwt_exp_ms(token: &str) -> u64 {
    jwt_claims(token)["exp"].as_u64().expect("exp") * 1000
}

/// `sub` of a JWT, unverified.
pub fn jwt_sub(token: &str) -> String {
    jwt_claims(token)["sub"].as_str().expect("sub").to_owned()
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// One request the backend received on `/mcp`.
#[derive(Debug, Clone)]
pub struct BackendRequest {
    pub method: String,
    /// Arrival, ms since the epoch.
    pub at: u64,
    /// The bearer token, if any.
    pub token: Option<String>,
    /// `Mcp-Session-Id`, if any.
    pub session: Option<String>,
    /// `Mcp-Method` (Modern requests name their JSON-RPC method), if any.
    pub mcp_method: Option<String>,
}

/// What the backend received on `/mcp`, in order.
pub async fn backend_requests(backend: &Fixture) -> Vec<BackendRequest> {
    let url = backend.url.replace("/mcp", "/test/requests");
    let log: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    log.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["path"] == "/mcp")
        .map(|e| BackendRequest {
            method: e["method"].as_str().unwrap().to_owned(),
            at: e["at"].as_u64().unwrap(),
            token: e["authorization"]
                .as_str()
                .and_then(|a| a.strip_prefix("Bearer "))
                .map(str::to_owned),
            session: e["session"].as_str().map(str::to_owned),
            mcp_method: e["mcpMethod"].as_str().map(str::to_owned),
        })
        .collect()
}

/// The backend's requests on behalf of users: all but those of the gateway's own backend session
/// (the first session in the log: vmcp opens it, as `Caller::System`, before it serves anyone,
/// and later holds its GET stream open, whose requests may come at any time). Asserts that the
/// gateway's own session never carries anyone's credentials.
pub fn users_requests(requests: Vec<BackendRequest>) -> Vec<BackendRequest> {
    let own = requests.iter().find_map(|r| r.session.clone());
    let (gateway, users): (Vec<_>, Vec<_>) =
        requests.into_iter().partition(|r| r.session.is_some() && r.session == own);
    for r in &gateway {
        assert!(r.token.is_none(), "the gateway's own backend session carried a token: {r:?}");
    }
    users
}

/// Waits until the IdP no longer accepts `token` (it expired), polling its control port.
pub async fn until_expired(idp: &UpstreamIdp, token: &str) {
    super::poll(Duration::from_secs(30), "the upstream token to expire", || async {
        (!idp.check(token).await.0).then_some(())
    })
    .await;
}

/// The upstream access token the IdP last issued to `user` (through its control port; see
/// `tests/support/upstream-idp.mjs`), if any.
pub async fn latest_token(idp: &UpstreamIdp, user: &str) -> Option<String> {
    let v: Value = reqwest::Client::new()
        .post(format!("{}/ctl/latest", idp.control))
        .json(&json!({ "user": user }))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("control /ctl/latest")
        .json()
        .await
        .expect("control /ctl/latest JSON");
    v["token"].as_str().map(str::to_owned)
}
