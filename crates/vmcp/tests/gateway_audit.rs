//! Audit end to end: every operation of a scripted session is one JSON line with ToolHive's
//! fields (who, what, outcome, duration), data is cut to `maxDataSize` and redacted, the caller's
//! token appears nowhere in the file, `--enable-audit` writes ToolHive's defaults to stdout, and
//! a log that cannot be written (a FIFO nobody reads, a full disk) never stalls calls: events
//! are dropped and counted in `/status` instead.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::local_idp::{AUDIENCE, LocalIdp};
use common::*;
use serde_json::{Value, json};

/// A gateway behind `idp` with a stdio fixture `s` and the given `audit` block lines.
fn gateway(idp: &LocalIdp, audit: &str) -> Gateway {
    Gateway::start(&format!(
        "name: audited\nincomingAuth:\n  type: oidc\n  oidc:\n    issuer: {}\n    audience: {AUDIENCE}\n\
         backends:\n{}audit:\n{audit}",
        idp.url,
        stdio_backend("s"),
    ))
}

/// The JSON lines of the file at `path`, once there are at least `n`.
async fn lines_of(path: &std::path::Path, n: usize) -> Vec<Value> {
    poll(Duration::from_secs(15), &format!("{n} audit lines"), || async {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        (lines.len() >= n).then_some(lines)
    })
    .await
}

fn ok(r: &Reply) {
    assert!(r.msg().get("error").is_none(), "{:?}", r.message);
}

#[tokio::test]
async fn every_operation_is_one_event_with_toolhives_fields() {
    let idp = LocalIdp::start();
    let dir = TempDir::new("audit");
    let log = dir.0.join("audit.log");
    let gw = gateway(
        &idp,
        &format!(
            "  component: gw-audit\n  includeRequestData: true\n  includeResponseData: true\n  \
             maxDataSize: 512\n  logFile: {}\n",
            log.display()
        ),
    );
    let token = idp.mint(json!({ "sub": "alice", "preferred_username": "Alice A." }));

    // A scripted Legacy session, then a Modern request.
    let mut c = gw.client();
    c.bearer = Some(token.clone());
    c.legacy_init().await;
    ok(&c.call("tools/list", json!({})).await);
    ok(&c.tool(false, "s_echo", json!({ "message": "hi", "password": "hunter2" })).await);
    ok(&c.call("resources/read", json!({ "uri": "test://static-text" })).await);
    ok(&c.call("prompts/get", json!({ "name": "s_test_simple_prompt" })).await);
    ok(&c.call("ping", json!({})).await);
    let big = "x".repeat(1 << 20);
    ok(&c.tool(false, "s_echo", json!({ "message": big, "note": format!("token {token}") })).await);
    let r = c.tool(false, "nope", json!({})).await;
    assert_eq!(r.error_code(), -32602, "{:?}", r.message);
    let mut m = gw.client();
    m.bearer = Some(token.clone());
    ok(&m.modern_call("tools/list", json!({})).await);

    let expected = [
        ("mcp_initialize", "initialize", "endpoint", None, "success"),
        ("mcp_tools_list", "tools/list", "endpoint", None, "success"),
        ("mcp_tool_call", "tools/call", "tool", Some("s_echo"), "success"),
        ("mcp_resource_read", "resources/read", "resource", Some("test://static-text"), "success"),
        ("mcp_prompt_get", "prompts/get", "prompt", Some("s_test_simple_prompt"), "success"),
        ("mcp_ping", "ping", "endpoint", None, "success"),
        ("mcp_tool_call", "tools/call", "tool", Some("s_echo"), "success"),
        ("mcp_tool_call", "tools/call", "tool", Some("nope"), "application_error"),
        ("mcp_tools_list", "tools/list", "endpoint", None, "success"),
    ];
    // Each event is queued before its response is sent: once the writer has written them all,
    // the file is complete.
    poll(Duration::from_secs(15), "the writer done", || async {
        let s = gw.status().await;
        (s["audit"]["queued"] == 0 && s["audit"]["written"].as_u64() >= Some(9)).then_some(())
    })
    .await;
    let events = lines_of(&log, expected.len()).await;
    assert_eq!(events.len(), expected.len(), "one event per operation: {events:#?}");

    let mut ids = HashSet::new();
    for (e, (kind, method, target_type, name, outcome)) in events.iter().zip(expected) {
        let what = format!("{kind} {name:?}: {e}");
        assert_eq!(e["type"], kind, "{what}");
        assert_eq!(e["level"], "AUDIT", "{what}");
        assert_eq!(e["msg"], "audit_event", "{what}");
        assert_eq!(e["outcome"], outcome, "{what}");
        assert_eq!(e["component"], "gw-audit", "{what}");
        assert!(ids.insert(e["audit_id"].as_str().unwrap().to_owned()), "{what}");
        assert!(e["logged_at"].as_str().unwrap().ends_with('Z'), "{what}");
        assert_eq!(e["source"]["type"], "network", "{what}");
        assert_eq!(e["source"]["value"], "127.0.0.1", "{what}");
        let subjects = &e["subjects"];
        assert_eq!(subjects["user_id"], "alice", "{what}");
        assert_eq!(subjects["user"], "Alice A.", "{what}");
        assert_eq!(subjects["issuer"], idp.url, "{what}");
        assert_eq!(subjects["client_name"], "vmcp-itest", "{what}");
        assert_eq!(e["target"]["method"], method, "{what}");
        assert_eq!(e["target"]["type"], target_type, "{what}");
        assert_eq!(e["target"]["endpoint"], "/mcp", "{what}");
        assert_eq!(e["target"].get("name").and_then(Value::as_str), name, "{what}");
        let extra = &e["metadata"]["extra"];
        assert!(extra["duration_ms"].is_u64(), "{what}");
        assert_eq!(extra["transport"], "http", "{what}");
        if name.is_some() && name != Some("nope") {
            assert_eq!(extra["backend_name"], "s", "{what}");
        }
    }
    assert_eq!(events[0]["metadata"]["extra"]["mcp_version"], LEGACY);
    assert_eq!(events[8]["metadata"]["extra"]["mcp_version"], MODERN);
    assert_eq!(events[7]["metadata"]["extra"]["jsonrpc_error_code"], -32602);

    // Data: redacted, whole when small.
    let echo = &events[2]["data"];
    assert_eq!(echo["request"]["params"]["arguments"]["password"], "[REDACTED]", "{echo}");
    assert_eq!(echo["request"]["params"]["arguments"]["message"], "hi", "{echo}");
    assert_eq!(echo["response"]["result"]["content"][0]["text"], "Echo: hi", "{echo}");
    // The 1 MiB argument is cut to maxDataSize.
    let big_event = &events[6];
    let request = big_event["data"]["request"].as_str().expect("cut data is a string");
    assert!(request.len() <= 512 && request.len() > 400, "{}", request.len());
    assert!(
        request.starts_with(r#"{"jsonrpc":"2.0","method":"tools/call","params":"#),
        "{request}"
    );
    assert!(big_event["data"]["response"].as_str().unwrap().len() <= 512);
    assert_eq!(big_event["metadata"]["extra"]["data_truncated"], true);
    assert!(big_event["metadata"]["extra"]["response_size_bytes"].as_u64() > Some(1 << 20));

    // A refused token is audited as ToolHive does (`http_request`, denied).
    let mut bad = gw.client();
    let forged = idp.forged(json!({ "sub": "mallory" }));
    bad.bearer = Some(forged.clone());
    let (_, ev) = bad.start("tools/list", json!({})).await;
    assert_eq!(ev.status, 401);
    let events = lines_of(&log, expected.len() + 1).await;
    let refused = &events[expected.len()];
    assert_eq!(refused["type"], "http_request", "{refused}");
    assert_eq!(refused["outcome"], "denied", "{refused}");
    assert_eq!(refused["subjects"]["user"], "anonymous", "{refused}");
    assert_eq!(refused["target"]["method"], "POST", "{refused}");

    // No bearer token appears, not even where the client put one in an argument.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(&token), "the caller's token is in the audit log");
    assert!(!text.contains(&forged), "a refused token is in the audit log");
    assert!(!text.contains("hunter2"));
    let audit = poll(Duration::from_secs(10), "the count of written events", || async {
        let s = gw.status().await;
        (s["audit"]["written"] == expected.len() as u64 + 1).then(|| s["audit"].clone())
    })
    .await;
    assert_eq!(audit["dropped"], 0, "{audit}");
    assert_eq!(audit["writeFailures"], 0, "{audit}");
}

#[tokio::test]
async fn enable_audit_writes_toolhives_defaults_to_stdout() {
    let mut cmd = std::process::Command::new(vmcp_bin());
    let config = temp_path("audit-cli", "yaml");
    std::fs::write(&config, format!("name: cli\nbackends:\n{}", stdio_backend("s"))).unwrap();
    cmd.args(["serve", "--enable-audit", "--port", "0", "--config"]).arg(&config);
    let mut proc = Proc::start("vmcp --enable-audit", cmd);
    proc.wait_stderr(Duration::from_secs(30), "audit logging enabled");
    let url = poll(Duration::from_secs(30), "listening line", || async {
        proc.lines()
            .iter()
            .find_map(|l| l.split_once("listening on ").map(|(_, u)| u.trim().to_owned()))
    })
    .await;
    let mut c = Client::new(&url);
    poll(Duration::from_secs(30), "catalog line", || async {
        proc.lines().iter().any(|l| l.trim_start().starts_with("catalog:")).then_some(())
    })
    .await;
    c.legacy_init().await;
    ok(&c.tool(false, "s_echo", json!({ "message": "from stdout" })).await);
    let events: Vec<Value> = poll(Duration::from_secs(15), "two events on stdout", || async {
        let ev: Vec<Value> = proc
            .lines()
            .iter()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (ev.len() >= 2).then_some(ev)
    })
    .await;
    assert_eq!(events[0]["type"], "mcp_initialize");
    assert_eq!(events[1]["type"], "mcp_tool_call");
    for e in &events {
        assert_eq!(e["component"], "vmcp-server", "{e}");
        assert_eq!(e["subjects"]["user"], "anonymous", "{e}");
        assert!(e.get("data").is_none(), "no data by default: {e}");
    }
    let _ = std::fs::remove_file(&config);
}

/// Calls `s_echo` `n` times with a 1 MiB message, each answered within [`STEP`].
async fn big_calls(c: &Client, n: usize) {
    let big = "y".repeat(1 << 20);
    for _ in 0..n {
        let start = Instant::now();
        ok(&c.tool(false, "s_echo", json!({ "message": big })).await);
        assert!(start.elapsed() < STEP, "a call waited on the audit log");
    }
}

#[tokio::test]
async fn a_fifo_nobody_reads_does_not_stall_calls() {
    let idp = LocalIdp::start();
    let dir = TempDir::new("audit-fifo");
    let fifo = dir.0.join("audit.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    // Every event is about 2 MiB (1 MiB each way): the 64 MiB queue fills after ~32.
    let gw = gateway(
        &idp,
        &format!(
            "  includeRequestData: true\n  includeResponseData: true\n  maxDataSize: 1048576\n  \
             logFile: {}\n",
            fifo.display()
        ),
    );
    let mut c = gw.client();
    c.bearer = Some(idp.token("alice"));
    c.legacy_init().await;
    big_calls(&c, 40).await;
    let status = gw.status().await;
    let audit = &status["audit"];
    assert_eq!(audit["written"], 0, "{status}");
    assert!(audit["dropped"].as_u64() > Some(0), "{status}");
    assert!(audit["queued"].as_u64() > Some(0), "{status}");
    poll(Duration::from_secs(10), "a drop warning", || async {
        gw.proc.stderr().contains("audit events dropped").then_some(())
    })
    .await;
    // Other requests go on too.
    assert!(!c.tool_names(false).await.is_empty());

    // A reader comes: the queued events flow.
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::open(&fifo).unwrap();
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut f, &mut sink);
    });
    poll(Duration::from_secs(15), "queued events written", || async {
        let s = gw.status().await;
        (s["audit"]["written"].as_u64() > Some(0) && s["audit"]["queued"] == 0).then_some(())
    })
    .await;
    drop(gw);
    let _ = reader.join();
}

#[tokio::test]
async fn a_full_disk_does_not_stall_calls() {
    let idp = LocalIdp::start();
    let gw = gateway(&idp, "  includeRequestData: true\n  logFile: /dev/full\n");
    let mut c = gw.client();
    c.bearer = Some(idp.token("alice"));
    c.legacy_init().await;
    big_calls(&c, 5).await;
    let audit = poll(Duration::from_secs(10), "write failures counted", || async {
        let s = gw.status().await;
        (s["audit"]["writeFailures"].as_u64() >= Some(6)).then(|| s["audit"].clone())
    })
    .await;
    assert_eq!(audit["written"], 0, "{audit}");
    assert!(gw.proc.stderr().contains("audit events could not be written"));
}

#[tokio::test]
async fn a_cancelled_call_is_recorded_too() {
    let idp = LocalIdp::start();
    let dir = TempDir::new("audit-cancel");
    let log = dir.0.join("audit.log");
    let gw = gateway(&idp, &format!("  logFile: {}\n", log.display()));
    let mut c = gw.client();
    c.bearer = Some(idp.token("alice"));
    c.legacy_init().await;
    let id = c.id();
    let body =
        request(id, "tools/call", json!({ "name": "s_sleep", "arguments": { "ms": 30000 } }));
    let call = tokio::spawn(c.post().json(&body).send());
    // Begun as an operation (not merely admitted): a request cancelled before its task first
    // runs leaves no event (see the module docs of `audit`).
    poll(Duration::from_secs(10), "the call being audited", || async {
        (gw.status().await["audit"]["inProgress"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    assert_eq!(c.notify("notifications/cancelled", json!({ "requestId": id })).await, 202);
    let events = lines_of(&log, 2).await;
    let e = &events[1];
    assert_eq!(e["type"], "mcp_tool_call", "{e}");
    assert_eq!(e["target"]["name"], "s_sleep", "{e}");
    assert_eq!(e["outcome"], "application_error", "{e}");
    assert_eq!(e["metadata"]["extra"]["jsonrpc_error_message"], "request cancelled", "{e}");
    call.abort();
}
