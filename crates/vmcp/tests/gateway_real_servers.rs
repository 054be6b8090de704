//! The gateway in front of a real third-party server, `@modelcontextprotocol/server-everything`,
//! over each backend transport at once: `stdio`, `sse` (legacy HTTP+SSE) and `http` (Streamable
//! HTTP), driven by Legacy and Modern clients.
//!
//! Node and server-everything are found by `common::tools` (`VMCP_NODE`, `VMCP_EVERYTHING`, or
//! `<repo>/.tools`); without them the tests fail.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// The three backends, as named in the gateway's config, and the transport `/status` reports.
const BACKENDS: [(&str, &str); 3] =
    [("stdio", "stdio"), ("sse", "sse"), ("http", "streamable-http")];

/// `node` and server-everything's `dist/index.js`; panics naming the missing one.
fn everything() -> (String, String) {
    (tools::node(), tools::everything())
}

/// One gateway with server-everything behind it three times, once per transport.
struct Setup {
    gw: Gateway,
    /// server-everything in `sse` mode (backend `sse`).
    _sse: Proc,
    /// server-everything in `streamableHttp` mode (backend `http`).
    http: Proc,
}

async fn setup() -> Setup {
    let (node, script) = everything();
    let (sse, sse_port) = serve_everything("sse");
    let (http, http_port) = serve_everything("streamableHttp");
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
    for (b, _) in BACKENDS {
        assert!(
            lists_within(&gw, &format!("{b}_echo"), Duration::from_secs(10)).await,
            "the tools of {b} were never listed"
        );
    }
    Setup { gw, _sse: sse, http }
}

#[tokio::test]
async fn echo_over_every_transport_in_both_eras() {
    let s = setup().await;
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
    let s = setup().await;
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
            let progress: Vec<&Value> =
                r.interim.iter().filter(|m| m["method"] == "notifications/progress").collect();
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
    let s = setup().await;
    for (b, transport) in BACKENDS {
        let st = s.gw.backend_status(b).await;
        assert_eq!(st["state"], "ready", "{st}");
        assert_eq!(st["transport"], transport, "{st}");
        assert!(st["serverInfo"]["name"].is_string(), "{st}");
    }
}

#[tokio::test]
async fn sampling_from_a_real_server_is_relayed_to_a_legacy_client() {
    let s = setup().await;
    let mut c = s.gw.client();
    c.legacy_init_with(json!({ "sampling": {} })).await;
    for (b, _) in BACKENDS {
        let tool = format!("{b}_trigger-sampling-request");
        let (id, mut ev) =
            c.start("tools/call", json!({ "name": tool, "arguments": { "prompt": "ping" } })).await;
        assert_eq!(ev.status, 200, "{tool}: {}", ev.text);
        let req = ev.next().await;
        assert_eq!(req["method"], "sampling/createMessage", "{tool}: {req}");
        let text = req["params"]["messages"][0]["content"]["text"].as_str().unwrap_or_default();
        assert!(text.contains("ping"), "{tool}: {req}");
        let answer = json!({
            "jsonrpc": "2.0",
            "id": req["id"],
            "result": { "role": "assistant", "content": { "type": "text", "text": "pong" }, "model": "m" },
        });
        let posted = c.open(c.post().json(&answer)).await;
        assert_eq!(posted.status, 202, "{tool}: {}", posted.text);
        let r = ev.reply(id, Duration::from_secs(20)).await;
        let text = r.text();
        assert!(
            text.starts_with("LLM sampling result") && text.contains("pong"),
            "{tool}: {:?}",
            r.message
        );
    }
}

/// What server-everything's Streamable HTTP mode logged after `marker` on each line, in order.
fn logged(p: &Proc, marker: &str) -> Vec<String> {
    p.lines()
        .iter()
        .filter_map(|l| l.split_once(marker).map(|(_, id)| id.trim().to_owned()))
        .collect()
}

const INITIALIZED: &str = "Session initialized with ID: ";
const TERMINATED: &str = "Received session termination request for session ";

#[tokio::test]
async fn legacy_clients_get_their_own_real_backend_sessions_ended_on_delete() {
    let s = setup().await;
    // Sessions so far: the gateway's shared one (and those of gateways `setup` gave up on).
    let before = logged(&s.http, INITIALIZED);
    let ended_before = logged(&s.http, TERMINATED).len();
    assert!(!before.is_empty(), "the gateway opened no shared session");

    let a = client_for(&s.gw, false).await;
    let b = client_for(&s.gw, false).await;
    for c in [&a, &b, &a, &b] {
        assert_eq!(c.tool(false, "http_echo", json!({ "message": "x" })).await.text(), "Echo: x");
    }
    // One more session per Legacy client, reused across its calls.
    let ids = logged(&s.http, INITIALIZED);
    let opened = &ids[before.len()..];
    assert_eq!(opened.len(), 2, "sessions opened for two clients' four calls: {opened:?}");
    // Modern clients of one principal (here the anonymous one) share one session of their own,
    // not the gateway's: the first Modern call opens it, later ones reuse it.
    let m = s.gw.client();
    for message in ["m", "n"] {
        let r = m.tool(true, "http_echo", json!({ "message": message })).await;
        assert_eq!(r.text(), format!("Echo: {message}"));
    }
    let ids = logged(&s.http, INITIALIZED);
    assert_eq!(ids.len(), before.len() + 3, "Modern calls opened one principal session: {ids:?}");

    assert_eq!(a.delete_session().await, 200);
    let ended = poll(Duration::from_secs(10), "the backend to log a session termination", || {
        let ended = logged(&s.http, TERMINATED);
        async move { (ended.len() > ended_before).then_some(ended[ended_before..].to_vec()) }
    })
    .await;
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert!(opened.contains(&ended[0]), "ended {ended:?}, not a client's session of {opened:?}");
    assert_eq!(b.tool(false, "http_echo", json!({ "message": "y" })).await.text(), "Echo: y");
    assert_eq!(logged(&s.http, INITIALIZED).len(), ids.len(), "B kept its session");
    assert_eq!(logged(&s.http, TERMINATED).len(), ended_before + 1, "only A's session ended");
}

/// Whether `gw` lists `tool` within `within` (discovery is asynchronous).
async fn lists_within(gw: &Gateway, tool: &str, within: Duration) -> bool {
    let c = gw.client();
    tokio::time::timeout(within, async {
        while !c.tool_names(true).await.iter().any(|n| n == tool) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread")]

async fn sse_backend_tools_are_listed_once_ready() {
    let (_sse, port) = serve_everything("sse");
    let yaml = format!(
        "name: race\nbackends:\n  - name: sse\n    transport: sse\n    url: http://127.0.0.1:{port}/sse\n"
    );
    // Several gateways at once, so the race has load to show in.
    const RUNS: usize = 20;
    let gateways: Vec<Gateway> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..RUNS).map(|_| s.spawn(|| Gateway::start(&yaml))).collect();
        handles.into_iter().map(|h| h.join().expect("gateway start")).collect()
    });
    let mut missing = Vec::new();
    for (i, gw) in gateways.iter().enumerate() {
        poll(Duration::from_secs(30), "sse to be ready", || async move {
            (gw.backend_status("sse").await["state"] == "ready").then_some(())
        })
        .await;
        // Discovery has had ample time once the backend is ready.
        if !lists_within(gw, "sse_echo", Duration::from_secs(5)).await {
            let log: Vec<String> = gw
                .proc
                .stderr()
                .lines()
                .filter(|l| !l.contains("catalog problem"))
                .map(str::to_owned)
                .collect();
            eprintln!("gateway {i}: sse_echo never listed\n{}", log.join("\n"));
            missing.push(i);
        }
    }
    assert!(
        missing.is_empty(),
        "gateways {missing:?} of {RUNS} never listed the sse backend's tools"
    );
}
