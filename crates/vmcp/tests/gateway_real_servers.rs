//! The gateway in front of a real third-party server, `@modelcontextprotocol/server-everything`,
//! over each backend transport at once: `stdio`, `sse` (legacy HTTP+SSE) and `http` (Streamable
//! HTTP), driven by Legacy and Modern clients.
//!
//! Set `VMCP_NODE` (the node binary) and `VMCP_EVERYTHING` (the server's `dist/index.js`); without
//! them the tests print a note and pass.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// The three backends, as named in the gateway's config, and the transport `/status` reports.
const BACKENDS: [(&str, &str); 3] =
    [("stdio", "stdio"), ("sse", "sse"), ("http", "streamable-http")];

/// `node` and server-everything's `dist/index.js`, if configured.
fn everything() -> Option<(String, String)> {
    match (std::env::var("VMCP_NODE"), std::env::var("VMCP_EVERYTHING")) {
        (Ok(node), Ok(script)) => Some((node, script)),
        _ => {
            eprintln!("VMCP_NODE / VMCP_EVERYTHING not set; skipping the real-server tests");
            None
        }
    }
}

/// server-everything over a network transport (`sse` or `streamableHttp`) on a free port.
fn serve_everything(node: &str, script: &str, mode: &str) -> (Proc, u16) {
    let port = free_port();
    let mut cmd = Command::new(node);
    cmd.args([script, mode]).env("PORT", port.to_string());
    let mut proc = Proc::start(&format!("server-everything {mode}"), cmd);
    let ready = match mode {
        "sse" => format!("Server is running on port {port}"),
        _ => format!("MCP Streamable HTTP Server listening on port {port}"),
    };
    proc.wait_stderr(Duration::from_secs(30), &ready);
    (proc, port)
}

/// One gateway with server-everything behind it three times, once per transport.
struct Setup {
    gw: Gateway,
    _servers: Vec<Proc>,
}

async fn setup() -> Option<Setup> {
    let (node, script) = everything()?;
    let (sse, sse_port) = serve_everything(&node, &script, "sse");
    let (http, http_port) = serve_everything(&node, &script, "streamableHttp");
    let yaml = format!(
        "name: real\nbackends:\n  - name: stdio\n    transport: stdio\n    command: '{node}'\n    args: ['{script}', stdio]\n  - name: sse\n    transport: sse\n    url: http://127.0.0.1:{sse_port}/sse\n{}",
        http_backend("http", &format!("http://127.0.0.1:{http_port}/mcp")),
    );
    let gw = Gateway::start(&yaml);
    poll(Duration::from_secs(30), "every backend to be ready", || {
        let gw = &gw;
        async move {
            let s = gw.status().await;
            let ready = s["backends"].as_array()?.iter().filter(|b| b["state"] == "ready").count();
            (ready == BACKENDS.len()).then_some(())
        }
    })
    .await;
    Some(Setup { gw, _servers: vec![sse, http] })
}

#[tokio::test]
async fn echo_over_every_transport_in_both_eras() {
    let Some(s) = setup().await else { return };
    for modern in [false, true] {
        let c = client_for(&s.gw, modern).await;
        let names = c.tool_names(modern).await;
        for (b, _) in BACKENDS {
            let echo = format!("{b}_echo");
            assert!(names.contains(&echo), "modern={modern}: no {echo} in {names:?}");
            let r = c.tool(modern, &echo, json!({ "message": "hi" })).await;
            assert_eq!(r.text(), "Echo: hi", "modern={modern} {echo}: {:?}", r.message);
        }
    }
}

/// The argument names of `tool` in a `tools/list` result.
async fn argument_names(c: &Client, tool: &str) -> Vec<String> {
    let r = c.call("tools/list", json!({})).await;
    let t = r.result()["tools"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == tool))
        .unwrap_or_else(|| panic!("no {tool} in {}", r.msg()))
        .clone();
    let mut names: Vec<String> = t["inputSchema"]["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn progress_reaches_the_client_before_the_result() {
    let Some(s) = setup().await else { return };
    let legacy = client_for(&s.gw, false).await;
    for (b, _) in BACKENDS {
        let tool = format!("{b}_trigger-long-running-operation");
        assert_eq!(argument_names(&legacy, &tool).await, ["duration", "steps"], "{tool}");
    }
    for modern in [false, true] {
        let c = client_for(&s.gw, modern).await;
        for (b, _) in BACKENDS {
            let tool = format!("{b}_trigger-long-running-operation");
            let token = format!("tok-{b}-{modern}");
            let params = json!({
                "name": tool,
                "arguments": { "duration": 0.6, "steps": 3 },
                "_meta": { "progressToken": token },
            });
            let r = if modern {
                c.modern_call("tools/call", params).await
            } else {
                c.call("tools/call", params).await
            };
            let what = format!("modern={modern} {tool}");
            assert!(
                r.text().starts_with("Long running operation completed"),
                "{what}: {:?}",
                r.message
            );
            let progress: Vec<&Value> = r
                .interim
                .iter()
                .filter(|m| m["method"] == "notifications/progress")
                .collect();
            assert_eq!(progress.len(), 3, "{what}: progress before the result: {:?}", r.interim);
            for (i, p) in progress.iter().enumerate() {
                assert_eq!(p["params"]["progressToken"], token, "{what}: {p}");
                assert_eq!(p["params"]["progress"], i as u64 + 1, "{what}: {p}");
                assert_eq!(p["params"]["total"], 3, "{what}: {p}");
            }
        }
    }
}

#[tokio::test]
async fn status_shows_every_transport_ready() {
    let Some(s) = setup().await else { return };
    for (b, transport) in BACKENDS {
        let st = s.gw.backend_status(b).await;
        assert_eq!(st["state"], "ready", "{st}");
        assert_eq!(st["transport"], transport, "{st}");
        assert!(st["serverInfo"]["name"].is_string(), "{st}");
    }
}
