//! Log in once: a real client (the official Python SDK's OAuth client) registers with vmcp's
//! embedded authorization server, logs in through it to a real upstream IdP
//! (`oauth2-mock-server` behind `tests/support/upstream-idp.mjs`), and calls a tool whose backend
//! (`vmcp-fixture --user-tools`, which refuses everything without a bearer token) reports the
//! `Authorization` it received: the user's current upstream access token, refreshed by vmcp's
//! vault as it expires, never a stale one, without a second login.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::upstream_idp::UpstreamIdp;
use common::*;
use serde_json::{Value, json};

/// The whole stack: upstream IdP, backend, vmcp with its authorization server.
struct Stack {
    idp: UpstreamIdp,
    backend: Fixture,
    gw: Gateway,
    _dir: TempDir,
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the IdP (upstream access tokens live `access_ttl` seconds, refresh tokens rotate), the
/// backend and vmcp configured with `upstream_inject` for it.
async fn stack(access_ttl: u64) -> Stack {
    let idp = UpstreamIdp::launch().await;
    idp.config(json!({ "accessTtl": access_ttl, "rotate": true })).await;
    let backend = Fixture::http_args(0, "legacy", "api", &["--user-tools"]);
    let dir = TempDir(temp_path("login", "d"));
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

/// One line the login script printed.
struct Outcome {
    calls: Vec<Value>,
    summary: Value,
}

/// Runs `tests/python/oauth_login.py` against the gateway.
fn login(url: &str, args: &[&str]) -> Outcome {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/oauth_login.py");
    let out = Command::new(tools::python())
        .arg(&script)
        .arg(url)
        .args(args)
        .output()
        .expect("running the Python login client");
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
    let calls = lines.into_iter().filter(|l| l.get("call").is_some()).collect();
    Outcome { calls, summary }
}

/// `exp` of a JWT, unverified.
fn jwt_exp_ms(token: &str) -> u64 {
    let payload = token.split('.').nth(1).expect("a JWT");
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url"),
    )
    .expect("JSON claims");
    claims["exp"].as_u64().expect("exp") * 1000
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// What the backend received: `(method, path, arrival ms, bearer token)` of each request to
/// `/mcp`.
async fn backend_requests(backend: &Fixture) -> Vec<(String, u64, Option<String>)> {
    let url = backend.url.replace("/mcp", "/test/requests");
    let log: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    log.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["path"] == "/mcp")
        .map(|e| {
            let token = e["authorization"]
                .as_str()
                .and_then(|a| a.strip_prefix("Bearer "))
                .map(str::to_owned);
            (e["method"].as_str().unwrap().to_owned(), e["at"].as_u64().unwrap(), token)
        })
        .collect()
}

/// The daily re-login cannot happen: upstream tokens live 2 s, one client session calls for
/// 20+ lifetimes; every call reaches the backend with the user's current upstream token, every
/// backend request (listing and teardown included) carries a token valid when it arrived, the
/// client logs in once, and rotating refresh tokens are never replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_login_lasts_through_twenty_upstream_token_lifetimes() {
    let s = stack(2).await;
    let started = now_ms();
    let out = login(&s.gw.url, &["--tool", "api_whoami", "--seconds", "42", "--interval", "0.2"]);
    assert_eq!(out.summary["logins"], 1, "a second login happened: {}", out.summary);
    assert_eq!(out.summary["errors"], 0, "{:?}", out.calls.iter().find(|c| !c["error"].is_null()));
    let mut seen = std::collections::HashSet::new();
    for c in &out.calls {
        let headers: Value = serde_json::from_str(c["text"].as_str().unwrap()).unwrap();
        let token = headers["authorization"].as_str().unwrap().strip_prefix("Bearer ").unwrap();
        seen.insert(token.to_owned());
    }
    assert!(out.calls.len() >= 100, "{} calls", out.calls.len());
    // ~21 lifetimes passed: the backend saw the token change with each refresh.
    assert!(seen.len() >= 15, "only {} distinct upstream tokens reached the backend", seen.len());
    let stats = s.idp.stats().await;
    assert_eq!(stats.code_grants, 1, "one upstream login");
    assert!(stats.refresh_grants >= 15, "{} refreshes", stats.refresh_grants);
    assert_eq!(stats.replays, 0, "a rotated refresh token was replayed");
    assert_eq!(stats.rejected, 0, "the IdP rejected a refresh");

    // The session has ended (the SDK deletes it on exit): its teardown reaches the backend.
    poll(Duration::from_secs(10), "the backend session's DELETE", || async {
        let r = backend_requests(&s.backend).await;
        r.iter().any(|(m, _, _)| m == "DELETE").then_some(())
    })
    .await;
    let requests = backend_requests(&s.backend).await;
    // Before the login only the gateway's own connection probe ran (no user, no credentials);
    // from the login on, every request is the user's: the call, the listing, the teardown.
    let users: Vec<_> = requests.iter().filter(|r| r.1 >= started).collect();
    assert!(users.len() >= out.calls.len(), "{} backend requests", users.len());
    for (method, at, token) in users {
        let token = token.as_deref().unwrap_or_else(|| panic!("{method} without credentials"));
        let exp = jwt_exp_ms(token);
        assert!(at < &exp, "{method} at {at} carried a token that expired at {exp}");
    }
}

/// 20 concurrent calls just after the upstream token expired cause exactly one refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_after_expiry_makes_one_refresh() {
    let s = stack(3).await;
    // Log in, call once, wait past the token's life, then 20 calls at once.
    let out = login(
        &s.gw.url,
        &["--tool", "api_whoami", "--seconds", "3", "--interval", "3.5", "--concurrency", "20"],
    );
    assert_eq!(out.summary["logins"], 1);
    assert_eq!(out.summary["errors"], 0, "{:?}", out.calls);
    assert_eq!(out.calls.len(), 40);
    // The second burst came after the first token expired: exactly one refresh served it.
    let stats = s.idp.stats().await;
    assert_eq!(stats.refresh_grants, 1, "refreshes for one burst");
    assert_eq!(stats.replays, 0);
}
