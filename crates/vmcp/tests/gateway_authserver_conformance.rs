//! The official MCP conformance suite's authorization server scenarios
//! (`@modelcontextprotocol/conformance` `authorization`: `authorization-server-metadata-endpoint`
//! and `authorization-code-grant`) against the real `vmcp serve` binary, configured by an
//! `authserver-config.yaml` beside its config and federated to a real upstream IdP
//! (`oauth2-mock-server` behind `tests/support/upstream-idp.mjs`, which auto-approves).
//!
//! The suite needs a client id known to vmcp (the code-grant scenario is SKIPPED without
//! `--client-id`; the suite neither registers one nor serves a client metadata document), so
//! the test gets one as real MCP clients do, once per way vmcp offers:
//! - dynamic registration (RFC 7591) at the `registration_endpoint` the metadata names, as a
//!   public client with the loopback redirect URI `http://127.0.0.1/callback` (any port matches,
//!   RFC 8252 §7.3), so the suite's callback port need not be known when registering;
//! - a client ID metadata document: the client id is the URL of a JSON document the test serves
//!   on loopback (vmcp fetches `http://` client ids on loopback hosts only), with `cimd.enabled`.
//!
//! The suite prints the authorization URL and waits for a browser; the test is that browser:
//! it follows the URL through vmcp, the upstream IdP and vmcp's callback up to the suite's own
//! callback server (`http://127.0.0.1:<port>/callback`), and delivers that last redirect once the
//! suite says the server listens. It passes when the suite exits 0 and the results it saved
//! (`-o DIR`, one `checks.json` per scenario) hold exactly the expected checks, all SUCCESS: a
//! WARNING (for instance `client_id_metadata_document_supported` missing) or SKIPPED fails it.
//!
//! Node 22 and the suite come from `VMCP_NODE` / `VMCP_CONFORMANCE` or `<repo>/.tools`
//! (`source .tools/env.sh`); without them the test fails naming what is missing.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::upstream_idp::UpstreamIdp;
use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// Everything one run may take: the suite, the browser's hops, the token request.
const SUITE_DEADLINE: Duration = Duration::from_secs(45);

/// The checks each scenario must report, all `SUCCESS`, and nothing else.
const EXPECTED: &[(&str, &[&str])] = &[
    (
        "authorization-server-metadata-endpoint",
        &["authorization-server-metadata", "authorization-server-metadata-cimd"],
    ),
    ("authorization-code-grant", &["authorization-code-grant"]),
];

/// The upstream IdP and vmcp with its authorization server (CIMD enabled), no backends.
struct Stack {
    idp: UpstreamIdp,
    gw: Gateway,
    issuer: String,
    resource: String,
    _dir: TempDir,
}

async fn stack() -> Stack {
    let idp = UpstreamIdp::launch().await;
    let dir = TempDir::new("as-conformance");
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let resource = format!("{issuer}/mcp");
    let config = format!(
        "name: as-conformance
backends: []
incomingAuth:
  type: oidc
  oidc:
    issuer: {issuer}
    audience: {resource}
"
    );
    let auth = format!(
        "schema_version: v0.1.0
issuer: {issuer}
allowed_audiences: [{resource}]
cimd:
  enabled: true
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
    Stack { idp, gw, issuer, resource, _dir: dir }
}

/// A browser that does not follow redirects by itself.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(STEP)
        .build()
        .unwrap()
}

/// Registers a public client the way an MCP client does: the `registration_endpoint` from the
/// metadata, loopback redirect URI. Returns its `client_id`.
async fn register(issuer: &str) -> String {
    let http = browser();
    let meta: Value = http
        .get(format!("{issuer}/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let endpoint = meta["registration_endpoint"].as_str().expect("registration_endpoint");
    let resp = http
        .post(endpoint)
        .json(&json!({
            "client_name": "MCP conformance suite",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap_or_default());
    let body: Value = resp.json().await.unwrap();
    body["client_id"].as_str().expect("client_id").to_owned()
}

/// Serves a client ID metadata document on loopback; returns its URL (the client id) and the
/// server task (the test aborts it; the runtime ends it at the latest).
async fn serve_client_document() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/client.json", listener.local_addr().unwrap());
    let doc = json!({
        "client_id": url,
        "client_name": "MCP conformance suite (CIMD)",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    });
    let app = axum::Router::new()
        .route("/client.json", axum::routing::get(move || async move { axum::Json(doc) }));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

/// What one run of the suite produced.
struct SuiteRun {
    success: bool,
    output: String,
    /// `checks.json` of each scenario, by scenario name.
    checks: BTreeMap<String, Vec<Value>>,
}

/// Plays the browser from the authorization URL: through vmcp, the upstream IdP and vmcp's
/// callback; returns the redirect to `callback` (not visited), every hop having redirected.
async fn follow(http: &reqwest::Client, start: &str, callback: &str) -> String {
    let mut url = start.to_owned();
    let mut hops = Vec::new();
    for _ in 0..10 {
        let resp = http.get(&url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status();
        assert!(
            status.is_redirection(),
            "{url} answered {status} after {hops:?}: {}",
            resp.text().await.unwrap_or_default()
        );
        let loc = resp.headers()[reqwest::header::LOCATION].to_str().unwrap().to_owned();
        let next = reqwest::Url::parse(&url).unwrap().join(&loc).unwrap().to_string();
        if next.starts_with(callback) {
            return next;
        }
        hops.push(next.clone());
        url = next;
    }
    panic!("no redirect to {callback} after {hops:?}");
}

/// Runs `conformance authorization` (both scenarios) against `issuer` with `client_id`,
/// following the authorization URL it prints.
async fn run_suite(issuer: &str, client_id: &str, resource: &str) -> SuiteRun {
    let out = TempDir::new("as-conformance-results");
    let port = free_port();
    let mut child = tokio::process::Command::new(tools::node())
        .arg(tools::conformance())
        .args(["authorization", "--url", issuer, "--client-id", client_id])
        .args(["--resource", resource, "--port", &port.to_string()])
        .arg("-o")
        .arg(&out.0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let authorize = format!("{issuer}/oauth/authorize?");
    let callback = format!("http://127.0.0.1:{port}/callback");
    let listening = format!("Callback server started: http://127.0.0.1:{port}");
    let http = browser();
    let mut output = Vec::new();
    let run = async {
        // The suite prints the URL before its callback server listens, and says when it does.
        let (mut ready, mut deliver, mut delivered) = (false, None, false);
        while let Some(line) = lines.next_line().await.unwrap() {
            output.push(line.clone());
            if line.starts_with(&authorize) {
                deliver = Some(follow(&http, &line, &callback).await);
            }
            ready |= line.starts_with(&listening);
            if ready && let Some(url) = deliver.take() {
                let resp = http.get(&url).send().await.unwrap();
                assert!(resp.status().is_success(), "callback: {}", resp.status());
                delivered = true;
            }
        }
        (child.wait().await.unwrap(), delivered)
    };
    let (status, delivered) = tokio::time::timeout(SUITE_DEADLINE, run)
        .await
        .unwrap_or_else(|_| panic!("the suite did not finish in {SUITE_DEADLINE:?}"));
    let mut output = output.join("\n");
    let err = stderr.await.unwrap();
    if !err.is_empty() {
        output.push_str("\n--- stderr ---\n");
        output.push_str(&err);
    }
    assert!(delivered, "the suite printed no authorization URL:\n{output}");
    SuiteRun { success: status.success(), checks: read_checks(&out.0), output }
}

/// `DIR/authorization-server-<scenario>-<time>/checks.json`, by scenario.
fn read_checks(dir: &Path) -> BTreeMap<String, Vec<Value>> {
    let mut all = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let scenario = EXPECTED
            .iter()
            .map(|(s, _)| *s)
            .find(|s| name.starts_with(&format!("authorization-server-{s}-")))
            .unwrap_or_else(|| panic!("unexpected result directory {name}"));
        let text = std::fs::read_to_string(path.join("checks.json")).unwrap();
        let checks: Vec<Value> = serde_json::from_str(&text).unwrap();
        assert!(all.insert(scenario.to_owned(), checks).is_none(), "{scenario} twice");
    }
    all
}

/// The suite passed, every expected check is there and SUCCESS, and nothing else was reported.
fn assert_all_passed(run: &SuiteRun, issuer: &str) {
    let output = &run.output;
    eprintln!("{output}");
    assert!(run.success, "the suite failed:\n{output}");
    let scenarios: Vec<&str> = run.checks.keys().map(String::as_str).collect();
    let mut expected: Vec<&str> = EXPECTED.iter().map(|(s, _)| *s).collect();
    expected.sort();
    assert_eq!(scenarios, expected, "scenarios run:\n{output}");
    for (scenario, ids) in EXPECTED {
        let checks = &run.checks[*scenario];
        let got: Vec<(&str, &str)> = checks
            .iter()
            .map(|c| (c["id"].as_str().unwrap(), c["status"].as_str().unwrap()))
            .collect();
        let want: Vec<(&str, &str)> = ids.iter().map(|id| (*id, "SUCCESS")).collect();
        assert_eq!(got, want, "{scenario}: {}", serde_json::to_string_pretty(checks).unwrap());
    }
    // vmcp's own answers, as the suite recorded them.
    let meta = &run.checks["authorization-server-metadata-endpoint"][0]["details"]["body"];
    assert_eq!(meta["issuer"], issuer);
    assert_eq!(meta["client_id_metadata_document_supported"], true);
    let grant = &run.checks["authorization-code-grant"][0]["details"];
    let response =
        reqwest::Url::parse(grant["authorizationResponseUrl"].as_str().unwrap()).unwrap();
    let iss = response.query_pairs().find(|(k, _)| k == "iss").map(|(_, v)| v.into_owned());
    assert_eq!(iss.as_deref(), Some(issuer), "RFC 9207 iss in the authorization response");
    assert_eq!(grant["body"]["token_type"], "Bearer", "{grant}");
    assert!(output.contains("Total: 3 passed, 0 failed"), "{output}");
}

/// A dynamically registered public client: both scenarios pass, through the upstream IdP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_passes_with_a_dynamically_registered_client() {
    let s = stack().await;
    let client_id = register(&s.issuer).await;
    let run = run_suite(&s.issuer, &client_id, &s.resource).await;
    assert_all_passed(&run, &s.issuer);
    assert_eq!(s.idp.stats().await.code_grants, 1, "one upstream login");
    // `/status` names the authorization server; its vault has not needed a refresh yet.
    let status = s.gw.status().await;
    assert_eq!(status["authServer"]["issuer"], s.issuer.as_str(), "{status}");
    assert_eq!(status["authServer"]["vault"]["refreshed"], 0, "{status}");
    assert_eq!(status["authServer"]["vault"]["deadGrants"], 0, "{status}");
}

/// A client ID metadata document as the client id: both scenarios pass, through the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_passes_with_a_client_id_metadata_document() {
    let s = stack().await;
    let (client_id, server) = serve_client_document().await;
    let run = run_suite(&s.issuer, &client_id, &s.resource).await;
    server.abort();
    assert_all_passed(&run, &s.issuer);
    assert_eq!(s.idp.stats().await.code_grants, 1, "one upstream login");
}
