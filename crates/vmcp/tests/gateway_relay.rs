//! Server-to-client requests relayed through the gateway, and client cancellation.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn gateway() -> (Gateway, Fixture) {
    let hl = Fixture::http("legacy", "hl");
    let yaml =
        format!("name: relay\nbackends:\n{}{}", http_backend("hl", &hl.url), stdio_backend("st"));
    (Gateway::start(&yaml), hl)
}

/// Whether `r` is a failure: a JSON-RPC error or a tool result with `isError`.
fn failed(r: &Reply) -> bool {
    let m = r.msg();
    m.get("error").is_some() || m["result"]["isError"] == json!(true)
}

async fn sampling_relayed(backend: &str) {
    let (gw, _f) = gateway();
    let mut c = gw.client();
    c.legacy_init_with(json!({ "sampling": {} })).await;
    let (id, mut ev) = c
        .start(
            "tools/call",
            json!({ "name": format!("{backend}_test_sampling"), "arguments": { "prompt": "hi" } }),
        )
        .await;
    assert_eq!(ev.status, 200);
    assert!(ev.is_sse, "the relayed request comes on the POST's SSE stream");
    let req = ev.next().await;
    assert_eq!(req["method"], "sampling/createMessage", "{req}");
    let relay_id = req["id"].clone();
    assert!(!relay_id.is_null(), "{req}");
    assert_ne!(relay_id, json!(id), "the relayed request has the gateway's own id");
    assert_eq!(req["params"]["messages"][0]["content"]["text"], "hi", "{req}");

    let answer = json!({
        "jsonrpc": "2.0",
        "id": relay_id,
        "result": { "role": "assistant", "content": { "type": "text", "text": "ok" }, "model": "m" },
    });
    let posted = c.open(c.post().json(&answer)).await;
    assert_eq!(posted.status, 202, "{}", posted.text);

    let r = ev.reply(id, Duration::from_secs(10)).await;
    assert_eq!(r.text(), "LLM response: ok", "{:?}", r.message);
    // The same relay id cannot be answered twice.
    let again = c.open(c.post().json(&answer)).await;
    assert_eq!(again.status, 400, "{}", again.text);
}

#[tokio::test]
async fn sampling_relayed_to_legacy_client_from_http_backend() {
    sampling_relayed("hl").await;
}

#[tokio::test]
async fn sampling_relayed_to_legacy_client_from_stdio_backend() {
    sampling_relayed("st").await;
}

#[tokio::test]
async fn sampling_error_answer_is_relayed() {
    let (gw, _f) = gateway();
    let mut c = gw.client();
    c.legacy_init_with(json!({ "sampling": {} })).await;
    let (id, mut ev) = c
        .start("tools/call", json!({ "name": "hl_test_sampling", "arguments": { "prompt": "hi" } }))
        .await;
    let req = ev.next().await;
    assert_eq!(req["method"], "sampling/createMessage", "{req}");
    let answer = json!({ "jsonrpc": "2.0", "id": req["id"], "error": { "code": -1, "message": "user refused" } });
    assert_eq!(c.open(c.post().json(&answer)).await.status, 202);
    let r = ev.reply(id, Duration::from_secs(10)).await;
    assert!(failed(&r), "{:?}", r.message);
    assert!(r.msg().to_string().contains("user refused"), "{:?}", r.message);
}

#[tokio::test]
async fn sampling_without_capability_fails_fast() {
    let (gw, _f) = gateway();
    let c = client_for(&gw, false).await;
    for backend in ["hl", "st"] {
        let name = format!("{backend}_test_sampling");
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            c.tool(false, &name, json!({ "prompt": "hi" })),
        )
        .await
        .unwrap_or_else(|_| panic!("{name} hung for a client without sampling"));
        assert!(failed(&r), "{name}: {:?}", r.message);
        assert!(
            !r.interim.iter().any(|m| m["method"] == "sampling/createMessage"),
            "{:?}",
            r.interim
        );
    }
}

#[tokio::test]
async fn sampling_for_modern_client_fails_fast() {
    let (gw, _f) = gateway();
    let c = gw.client();
    for backend in ["hl", "st"] {
        let name = format!("{backend}_test_sampling");
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            c.tool(true, &name, json!({ "prompt": "hi" })),
        )
        .await
        .unwrap_or_else(|_| panic!("{name} hung for a Modern client"));
        assert!(failed(&r), "{name}: {:?}", r.message);
        assert!(
            !r.interim.iter().any(|m| m.get("method").is_some() && m.get("id").is_some()),
            "{:?}",
            r.interim
        );
    }
}

async fn cancel(backend: &str) {
    let (gw, _f) = gateway();
    let mut c = gw.client();
    c.legacy_init().await;
    let id = c.id();
    let body = request(
        id,
        "tools/call",
        json!({ "name": format!("{backend}_sleep"), "arguments": { "ms": 30000 } }),
    );
    let pending = tokio::spawn({
        let c = c.clone();
        async move {
            let resp = c.post().json(&body).send().await.expect("send");
            Events::from_response(resp).await.reply(id, Duration::from_secs(20)).await
        }
    });
    // The request may not be tracked yet when the first cancel arrives: repeat until it ends.
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(10);
    while !pending.is_finished() {
        assert!(tokio::time::Instant::now() < deadline, "the cancelled request did not end");
        let st =
            c.notify("notifications/cancelled", json!({ "requestId": id, "reason": "test" })).await;
        assert_eq!(st, 202);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r: Reply = pending.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    if let Some(m) = &r.message {
        assert!(m.get("error").is_some(), "an aborted request must not look successful: {m}");
        eprintln!("cancelled request answered: {m}");
    }
    // The session still works, and so does the backend.
    let r = c.tool(false, &format!("{backend}_echo"), json!({ "message": "after" })).await;
    assert_eq!(r.text(), "Echo: after");
    let r = c.tool(false, &format!("{backend}_sleep"), json!({ "ms": 10 })).await;
    assert_eq!(r.text(), "Slept 10 ms");
}

#[tokio::test]
async fn cancellation_ends_the_request_http_backend() {
    cancel("hl").await;
}

#[tokio::test]
async fn cancellation_ends_the_request_stdio_backend() {
    cancel("st").await;
}

/// The relayed sampling request and the final reply use different ids; the final reply keeps the
/// client's id even when the client uses a string id.
#[tokio::test]
async fn string_request_ids_survive_relay() {
    let (gw, _f) = gateway();
    let mut c = gw.client();
    c.legacy_init_with(json!({ "sampling": {} })).await;
    let body = json!({
        "jsonrpc": "2.0", "id": "req-α", "method": "tools/call",
        "params": { "name": "st_test_sampling", "arguments": { "prompt": "p" } },
    });
    let mut ev = c.open(c.post().json(&body)).await;
    let req = ev.next().await;
    assert_eq!(req["method"], "sampling/createMessage", "{req}");
    let answer = json!({
        "jsonrpc": "2.0", "id": req["id"],
        "result": { "role": "assistant", "content": { "type": "text", "text": "s" }, "model": "m" },
    });
    assert_eq!(c.open(c.post().json(&answer)).await.status, 202);
    let fin: Value = loop {
        let m = ev.next().await;
        if m.get("result").is_some() || m.get("error").is_some() {
            break m;
        }
    };
    assert_eq!(fin["id"], "req-α", "{fin}");
    assert_eq!(fin["result"]["content"][0]["text"], "LLM response: s", "{fin}");
}

/// `_meta` of a Modern client that declares sampling.
fn sampling_meta() -> serde_json::Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": { "sampling": {} },
        "io.modelcontextprotocol/clientInfo": { "name": "vmcp-itest", "version": "1" },
    })
}

/// A Legacy backend's sampling request reaches a Modern client as an `input_required` round; the
/// retry with the answer resumes the parked backend call, and the state cannot be replayed.
#[tokio::test]
async fn legacy_backend_sampling_reaches_modern_client_as_input_required() {
    let (gw, _f) = gateway();
    let c = gw.client();
    for backend in ["hl", "st"] {
        let name = format!("{backend}_test_sampling");
        let first = c
            .modern_call(
                "tools/call",
                json!({ "name": name, "arguments": { "prompt": "capital?" }, "_meta": sampling_meta() }),
            )
            .await;
        let result = first.result();
        assert_eq!(result["resultType"], "input_required", "{result}");
        let requests = result["inputRequests"].as_object().expect("inputRequests");
        assert_eq!(requests.len(), 1);
        let (key, request) = requests.iter().next().expect("one request");
        assert_eq!(request["method"], "sampling/createMessage");
        assert_eq!(request["params"]["messages"][0]["content"]["text"], "capital?");
        let state = result["requestState"].as_str().expect("requestState").to_owned();

        let answer = json!({ "role": "assistant", "content": { "type": "text", "text": "Paris" }, "model": "m" });
        let retry = json!({
            "name": name,
            "arguments": { "prompt": "capital?" },
            "requestState": state,
            "inputResponses": { key.clone(): answer },
            "_meta": sampling_meta(),
        });
        let done = c.modern_call("tools/call", retry.clone()).await;
        assert_eq!(done.result()["content"][0]["text"], "LLM response: Paris", "{backend}");
        assert_eq!(done.result()["resultType"], "complete");

        let replay = c.modern_call("tools/call", retry).await;
        assert_eq!(replay.error()["code"], -32602, "a used requestState must not resume again");
    }
}

/// Without the sampling capability a Modern client gets -32021 naming it, at once.
#[tokio::test]
async fn legacy_backend_sampling_needs_the_modern_clients_capability() {
    let (gw, _f) = gateway();
    let c = gw.client();
    let r =
        c.modern_call("tools/call", json!({ "name": "st_test_sampling", "arguments": {} })).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error()["code"], -32021);
    assert!(r.error()["data"]["requiredCapabilities"]["sampling"].is_object());
}
