//! A real upstream IdP for the upstream-vault tests: `oauth2-mock-server` (Node 22) behind
//! `tests/support/upstream-idp.mjs`, which tracks refresh tokens like a strict IdP (single use
//! when rotating, replays counted) and injects faults on cue.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// The mock upstream IdP process; killed on drop.
pub struct UpstreamIdp {
    child: Child,
    /// Issuer URL.
    pub url: String,
    /// Control server URL.
    pub control: String,
    http: reqwest::Client,
}

/// What the IdP counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpStats {
    pub code_grants: u64,
    pub refresh_grants: u64,
    pub replays: u64,
    pub rejected: u64,
    pub client_auth: Option<String>,
}

impl UpstreamIdp {
    /// Starts the mock on free loopback ports. Panics without Node (see [`super::tools`]).
    pub async fn launch() -> UpstreamIdp {
        let node = super::tools::node();
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let script = root.join("tests/support/upstream-idp.mjs");
        let tools = super::tools::tools_dir();
        let lib = tools.join("node_modules/oauth2-mock-server/dist/index.mjs");
        assert!(
            lib.exists(),
            "oauth2-mock-server not found at {}: run scripts/install-test-tools.sh",
            lib.display()
        );
        let mut child = Command::new(&node)
            .arg(&script)
            .env("VMCP_TOOLS", std::fs::canonicalize(&tools).unwrap_or(tools))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {node}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("upstream-idp listening on ") {
                    let _ = tx.send(rest.trim().to_string());
                    break;
                }
            }
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("upstream-idp did not start");
        let (url, control) = line.split_once(" control ").expect("two URLs");
        UpstreamIdp {
            child,
            url: url.to_string(),
            control: control.to_string(),
            http: reqwest::Client::new(),
        }
    }

    async fn ctl(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.control))
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("control {path}: {e}"));
        assert!(resp.status().is_success(), "control {path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    /// Sets `accessTtl` (seconds), `rotate`, `authMethods`, `hangMs`.
    pub async fn config(&self, body: Value) {
        self.ctl(reqwest::Method::POST, "/ctl/config", body).await;
    }

    /// Queues `count` faults of `kind` ("503", "invalid_grant", "drop", "hang") for the next
    /// refresh requests.
    pub async fn fault(&self, kind: &str, count: u32) {
        self.ctl(reqwest::Method::POST, "/ctl/fault", json!({"kind": kind, "count": count})).await;
    }

    /// Stops accepting connections on the issuer's port (connection refused).
    pub async fn down(&self) {
        self.ctl(reqwest::Method::POST, "/ctl/down", json!({})).await;
    }

    /// Accepts connections again on the same port.
    pub async fn up(&self) {
        self.ctl(reqwest::Method::POST, "/ctl/up", json!({})).await;
    }

    /// Revokes `user`'s live refresh tokens; returns how many.
    pub async fn revoke(&self, user: &str) -> u64 {
        self.ctl(reqwest::Method::POST, "/ctl/revoke", json!({"user": user})).await["revoked"]
            .as_u64()
            .unwrap()
    }

    /// Whether the IdP would accept `access_token` now, and whose it is.
    pub async fn check(&self, access_token: &str) -> (bool, Option<String>) {
        let v = self.ctl(reqwest::Method::POST, "/ctl/check", json!({"token": access_token})).await;
        (v["active"].as_bool().unwrap(), v["sub"].as_str().map(str::to_string))
    }

    pub async fn stats(&self) -> IdpStats {
        let v = self.ctl(reqwest::Method::GET, "/ctl/stats", Value::Null).await;
        let n = |k: &str| v["grants"][k].as_u64().unwrap_or(0);
        IdpStats {
            code_grants: n("authorization_code"),
            refresh_grants: n("refresh_token"),
            replays: v["replays"].as_u64().unwrap(),
            rejected: v["rejected"].as_u64().unwrap(),
            client_auth: v["clientAuth"].as_str().map(str::to_string),
        }
    }
}

impl Drop for UpstreamIdp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
