//! One client's traffic never reaches another: stdio backends with `isolation: perSession` give
//! each client session its own child, and a shared child drops what it cannot attribute rather
//! than guess.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn gateway(isolation: &str, extra: &str) -> Gateway {
    let yaml =
        format!("name: iso\nbackends:\n{}    isolation: {isolation}\n{extra}", stdio_backend("st"));
    Gateway::start(&yaml)
}

async fn legacy_client(gw: &Gateway) -> Client {
    let mut c = gw.client();
    c.legacy_init_with(json!({ "sampling": {} })).await;
    c
}

/// Starts a 1.5 s `st_sleep` for `c` in the background and waits until the backend has it.
async fn sleeping(gw: &Gateway, c: &Client, before: u64) -> tokio::task::JoinHandle<Reply> {
    let c = c.clone();
    let task = tokio::spawn(async move {
        c.call("tools/call", json!({ "name": "st_sleep", "arguments": { "ms": 1500 } })).await
    });
    poll(Duration::from_secs(10), "the sleep in flight", || async {
        let st = gw.backend_status("st").await;
        (st["isolation"]["inFlight"].as_u64() > Some(before)).then_some(())
    })
    .await;
    task
}

fn logs(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m["method"] == "notifications/message")
        .map(|m| m["params"]["data"].to_string())
        .collect()
}

/// Calls `st_test_sampling` with `prompt`, answers the relayed request with `answer`, returns
/// the tool's text.
async fn sample(c: &Client, prompt: &str, answer: &str) -> String {
    let (id, mut ev) = c
        .start(
            "tools/call",
            json!({ "name": "st_test_sampling", "arguments": { "prompt": prompt } }),
        )
        .await;
    let req = ev.next().await;
    assert_eq!(req["method"], "sampling/createMessage", "{req}");
    assert_eq!(req["params"]["messages"][0]["content"]["text"], prompt, "{req}");
    let reply = json!({
        "jsonrpc": "2.0",
        "id": req["id"],
        "result": { "role": "assistant", "content": { "type": "text", "text": answer }, "model": "m" },
    });
    assert_eq!(c.open(c.post().json(&reply)).await.status, 202);
    ev.reply(id, Duration::from_secs(10)).await.text()
}

#[tokio::test]
async fn per_session_children_keep_each_clients_messages_with_it() {
    let gw = gateway("perSession", "");
    let a = legacy_client(&gw).await;
    let b = legacy_client(&gw).await;

    // Each session has a child of its own: per-process counters start over.
    let count = |c: &Client| {
        let c = c.clone();
        async move {
            c.call("tools/call", json!({ "name": "st_counter", "arguments": {} })).await.text()
        }
    };
    let (a1, a2, b1) = (count(&a).await, count(&a).await, count(&b).await);
    assert_ne!(a1, a2, "a's counter moves");
    assert_eq!(a1, b1, "b's child is not a's");
    let st = gw.backend_status("st").await;
    assert_eq!(st["isolation"]["mode"], "perSession", "{st}");
    assert_eq!(st["isolation"]["clientProcesses"], 2, "{st}");

    // B has a call in flight while A's call logs: A gets its logs, B none.
    let bt = sleeping(&gw, &b, 0).await;
    let r =
        a.call("tools/call", json!({ "name": "st_test_tool_with_logging", "arguments": {} })).await;
    assert_eq!(r.text(), "Logging test completed");
    assert_eq!(logs(&r.interim).len(), 3, "{:?}", r.interim);
    let rb = bt.await.expect("b's call");
    assert_eq!(rb.text(), "Slept 1500 ms");
    assert!(logs(&rb.interim).is_empty(), "B saw A's logs: {:?}", rb.interim);

    // Both ask for sampling at once: each client gets its own request and its own answer back.
    let (ra, rb) = tokio::join!(sample(&a, "from-a", "answer-a"), sample(&b, "from-b", "answer-b"));
    assert_eq!(ra, "LLM response: answer-a");
    assert_eq!(rb, "LLM response: answer-b");

    // Ending A's session ends its child.
    assert_eq!(a.delete_session().await, 200);
    poll(Duration::from_secs(10), "a's child stopped", || async {
        let st = gw.backend_status("st").await;
        (st["isolation"]["clientProcesses"] == 1).then_some(())
    })
    .await;
    assert_eq!(gw.backend_status("st").await["unroutableMessages"], 0);
}

#[tokio::test]
async fn a_shared_child_drops_what_it_cannot_attribute() {
    let gw = gateway("shared", "");
    let a = legacy_client(&gw).await;
    let b = legacy_client(&gw).await;

    // Alone in flight, A's logs reach A.
    let r =
        a.call("tools/call", json!({ "name": "st_test_tool_with_logging", "arguments": {} })).await;
    assert_eq!(logs(&r.interim).len(), 3, "{:?}", r.interim);

    // With B's call in flight too, nobody can tell whose logs they are: neither gets them.
    let bt = sleeping(&gw, &b, 0).await;
    let r =
        a.call("tools/call", json!({ "name": "st_test_tool_with_logging", "arguments": {} })).await;
    assert_eq!(r.text(), "Logging test completed");
    let rb = bt.await.expect("b's call");
    assert!(logs(&rb.interim).is_empty(), "B saw A's logs: {:?}", rb.interim);
    assert!(logs(&r.interim).is_empty(), "A's logs were guessed: {:?}", r.interim);
    let st = gw.backend_status("st").await;
    assert!(st["unroutableMessages"].as_u64().unwrap_or(0) >= 3, "{st}");

    // A sampling request while both are in flight is refused at the backend, never shown to B.
    let bt = sleeping(&gw, &b, 0).await;
    let r = a
        .call("tools/call", json!({ "name": "st_test_sampling", "arguments": { "prompt": "x" } }))
        .await;
    let m = r.msg().to_string();
    assert!(
        r.msg().get("error").is_some() || r.result()["isError"] == json!(true),
        "the refused sampling fails A's call: {m}"
    );
    assert!(r.interim.iter().all(|m| m["method"] != "sampling/createMessage"), "{:?}", r.interim);
    let rb = bt.await.expect("b's call");
    assert_eq!(rb.text(), "Slept 1500 ms");
    assert!(
        rb.interim.iter().all(|m| m["method"] != "sampling/createMessage"),
        "B got A's sampling request: {:?}",
        rb.interim
    );
}

#[tokio::test]
async fn max_processes_refuses_when_every_child_is_busy() {
    let gw = gateway("perSession", "    maxProcesses: 1\n");
    let a = legacy_client(&gw).await;
    let b = legacy_client(&gw).await;
    let at = sleeping(&gw, &a, 0).await;
    let r =
        b.call("tools/call", json!({ "name": "st_echo", "arguments": { "message": "hi" } })).await;
    assert_eq!(r.error_code(), -32001, "{:?}", r.message);
    assert!(
        r.error()["message"].as_str().unwrap_or("").contains("maxProcesses"),
        "{:?}",
        r.message
    );
    // The gateway's own child still serves discovery, and A's call completes.
    assert_eq!(at.await.expect("a's call").text(), "Slept 1500 ms");
    // Now A's child is idle: it makes room for B.
    let r =
        b.call("tools/call", json!({ "name": "st_echo", "arguments": { "message": "hi" } })).await;
    assert_eq!(r.text(), "Echo: hi");
}

#[tokio::test]
async fn idle_children_are_stopped() {
    let gw = gateway("perPrincipal", "    processIdleTimeout: 1s\n");
    let a = legacy_client(&gw).await;
    let count = || async {
        a.call("tools/call", json!({ "name": "st_counter", "arguments": {} })).await.text()
    };
    let (first, second) = (count().await, count().await);
    assert_ne!(first, second, "back-to-back calls share the principal's child");
    poll(Duration::from_secs(10), "idle child stopped", || async {
        let st = gw.backend_status("st").await;
        (st["isolation"]["clientProcesses"] == 0).then_some(())
    })
    .await;
    // The next call starts a new child: its counter starts over.
    assert_eq!(count().await, first);
}

#[tokio::test]
async fn an_oversized_stdio_reply_fails_its_call_at_once() {
    let yaml = format!(
        "name: iso\nbackends:\n{}    timeout: 5m\noperational:\n  maxBackendReplyBytes: 65536\n",
        stdio_backend("st")
    );
    let gw = Gateway::start(&yaml);
    let a = legacy_client(&gw).await;
    let big = "x".repeat(100_000);
    // The timeout is minutes: an answer within the test's step means the line limit failed it.
    let r =
        a.call("tools/call", json!({ "name": "st_echo", "arguments": { "message": big } })).await;
    let msg = r.error()["message"].as_str().unwrap_or_default().to_owned();
    assert!(msg.contains("operational.maxBackendReplyBytes"), "{msg}");
    // The child is still serving.
    let r =
        a.call("tools/call", json!({ "name": "st_echo", "arguments": { "message": "hi" } })).await;
    assert_eq!(r.text(), "Echo: hi");
}

/// The third-party server over stdio: two clients of a `perSession` server-everything ask for
/// sampling at the same time and each answers its own; a roots request reaches the client whose
/// call raised it.
#[tokio::test]
async fn server_everything_per_session_sampling_and_roots() {
    let (node, script) = (tools::node(), tools::everything());
    let yaml = format!(
        "name: iso\nbackends:\n  - name: ev\n    transport: stdio\n    command: '{node}'\n    args: ['{script}', stdio]\n    isolation: perSession\n"
    );
    sampling_and_roots_stay_with_their_client(&yaml).await;
}

/// The same over legacy HTTP+SSE: each session gets its own event stream (backend session).
#[tokio::test]
async fn server_everything_over_sse_per_session_sampling_and_roots() {
    let (_server, port) = serve_everything("sse");
    let yaml = format!(
        "name: iso\nbackends:\n  - name: ev\n    transport: sse\n    url: http://127.0.0.1:{port}/sse\n    isolation: perSession\n"
    );
    sampling_and_roots_stay_with_their_client(&yaml).await;
}

async fn sampling_and_roots_stay_with_their_client(yaml: &str) {
    let gw = Gateway::start(yaml);
    poll(Duration::from_secs(30), "server-everything listed", || async {
        let c = legacy_client(&gw).await;
        c.tool_names(false).await.iter().any(|n| n == "ev_trigger-sampling-request").then_some(())
    })
    .await;
    let mut a = gw.client();
    a.legacy_init_with(json!({ "sampling": {}, "roots": {} })).await;
    let mut b = gw.client();
    b.legacy_init_with(json!({ "sampling": {}, "roots": {} })).await;

    /// Calls `tool`, answers the one server-to-client request it raises with `answer`.
    async fn call_answering(c: &Client, tool: &str, args: Value, answer: Value) -> String {
        let (id, mut ev) = c.start("tools/call", json!({ "name": tool, "arguments": args })).await;
        let req = ev.next().await;
        assert!(req["method"].is_string() && req.get("id").is_some(), "{req}");
        let reply = json!({ "jsonrpc": "2.0", "id": req["id"], "result": answer });
        assert_eq!(c.open(c.post().json(&reply)).await.status, 202);
        let r = ev.reply(id, Duration::from_secs(20)).await;
        format!("{} {}", req["method"], r.msg())
    }
    let sampled = |who: &'static str| json!({ "role": "assistant", "content": { "type": "text", "text": format!("answer-{who}") }, "model": "m" });
    let tool = "ev_trigger-sampling-request";
    let (ra, rb) = tokio::join!(
        call_answering(&a, tool, json!({ "prompt": "from-a" }), sampled("a")),
        call_answering(&b, tool, json!({ "prompt": "from-b" }), sampled("b")),
    );
    assert!(ra.starts_with("\"sampling/createMessage\"") && ra.contains("answer-a"), "{ra}");
    assert!(!ra.contains("answer-b"), "{ra}");
    assert!(rb.contains("answer-b") && !rb.contains("answer-a"), "{rb}");

    let roots = json!({ "roots": [{ "uri": "file:///a-root", "name": "a" }] });
    let r = call_answering(&a, "ev_get-roots-list", json!({}), roots).await;
    // (No check of `unroutableMessages`: server-everything may log on the gateway's own
    // connection between requests, which is rightly dropped.)
    assert!(r.starts_with("\"roots/list\"") && r.contains("a-root"), "{r}");
}

/// Progress through one shared server-everything child: two sessions' long-running calls run at
/// the same time, and each session receives exactly its own progress notifications, under its
/// own token (progress is routed by token, so sharing the connection is safe for it).
#[tokio::test]
async fn server_everything_progress_stays_with_its_session_on_a_shared_child() {
    let (node, script) = (tools::node(), tools::everything());
    let yaml = format!(
        "name: iso\nbackends:\n  - name: ev\n    transport: stdio\n    command: '{node}'\n    args: ['{script}', stdio]\n    isolation: shared\n"
    );
    let gw = Gateway::start(&yaml);
    poll(Duration::from_secs(30), "server-everything listed", || async {
        let c = legacy_client(&gw).await;
        let names = c.tool_names(false).await;
        names.iter().any(|n| n == "ev_trigger-long-running-operation").then_some(())
    })
    .await;
    let a = legacy_client(&gw).await;
    let b = legacy_client(&gw).await;

    /// Runs a 1 s, 5-step operation with `token`; returns the progress notifications seen.
    async fn run(c: &Client, token: &str) -> Vec<Value> {
        let params = json!({
            "name": "ev_trigger-long-running-operation",
            "arguments": { "duration": 1, "steps": 5 },
            "_meta": { "progressToken": token },
        });
        let (id, mut ev) = c.start("tools/call", params).await;
        let mut progress = Vec::new();
        loop {
            let m = ev.next().await;
            if m["method"] == "notifications/progress" {
                progress.push(m);
            } else if m["id"] == json!(id) {
                assert!(m["result"]["content"][0]["text"].is_string(), "{m}");
                return progress;
            }
        }
    }
    let (pa, pb) = tokio::join!(run(&a, "tok-a"), run(&b, "tok-b"));
    for (who, p) in [("a", &pa), ("b", &pb)] {
        assert_eq!(p.len(), 5, "{who}: {p:?}");
        let token = format!("tok-{who}");
        assert!(p.iter().all(|m| m["params"]["progressToken"] == token.as_str()), "{who}: {p:?}");
        let steps: Vec<u64> = p.iter().filter_map(|m| m["params"]["progress"].as_u64()).collect();
        assert_eq!(steps, vec![1, 2, 3, 4, 5], "{who}");
    }
}
