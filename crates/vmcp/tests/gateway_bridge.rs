//! A Modern client bridged to a Legacy-only backend (vmcp-fixture --era legacy): the 2026-07-28
//! fields the gateway adds, the backend's server-to-client requests as `input_required` rounds,
//! and -32021 when the client did not declare what the backend asks for.

mod common;

use common::*;
use serde_json::{Value, json};

fn gateway() -> (Gateway, Fixture) {
    let hl = Fixture::http("legacy", "hl");
    let yaml = format!("name: bridge\nbackends:\n{}", http_backend("hl", &hl.url));
    (Gateway::start(&yaml), hl)
}

/// `_meta` of a Modern client declaring `capabilities`.
fn meta(capabilities: Value) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": { "name": "vmcp-itest", "version": "1" },
    })
}

fn elicited(content: Value) -> Value {
    json!({ "action": "accept", "content": content })
}

/// The one input request of an `input_required` result: its key, method and params, and the
/// `requestState`.
fn one_request(r: &Reply) -> (String, String, Value, String) {
    let result = r.result();
    assert_eq!(result["resultType"], "input_required", "{result}");
    let requests = result["inputRequests"].as_object().expect("inputRequests");
    assert_eq!(requests.len(), 1, "{result}");
    let (key, request) = requests.iter().next().expect("one request");
    let method = request["method"].as_str().expect("method").to_owned();
    let state = result["requestState"].as_str().expect("requestState").to_owned();
    (key.clone(), method, request["params"].clone(), state)
}

/// A Legacy backend gives no caching hints; the gateway adds the same ones as for its lists, and
/// only for Modern clients.
#[tokio::test]
async fn bridged_resources_read_carries_caching_hints() {
    let (gw, _f) = gateway();
    let mut c = gw.client();
    let uri = json!({ "uri": "test://static-text" });
    let modern = c.modern_call("resources/read", uri.clone()).await;
    let result = modern.result();
    assert_eq!(result["resultType"], "complete", "{result}");
    assert_eq!(result["ttlMs"], 0, "{result}");
    assert_eq!(result["cacheScope"], "private", "{result}");
    assert_eq!(result["contents"][0]["uri"], "test://static-text", "{result}");

    c.legacy_init().await;
    let legacy = c.call("resources/read", uri).await;
    let result = legacy.result();
    assert!(result["contents"].is_array(), "{result}");
    for field in ["resultType", "ttlMs", "cacheScope"] {
        assert!(result.get(field).is_none(), "a Legacy client gets no {field}: {result}");
    }
}

/// The backend's sampling request for a Modern client that did not declare sampling: the client
/// gets -32021 naming the capability (HTTP 400), and the call is not carried out.
#[tokio::test]
async fn undeclared_capability_via_legacy_backend_is_32021() {
    let (gw, _f) = gateway();
    let c = gw.client();
    let call = |caps: Value| json!({ "name": "hl_test_missing_capability", "arguments": {}, "_meta": meta(caps) });
    let r = c.modern_call("tools/call", call(json!({ "elicitation": {} }))).await;
    assert_eq!(r.status, 400, "{:?}", r.msg());
    assert_eq!(r.error()["code"], -32021, "{:?}", r.msg());
    assert!(r.error()["data"]["requiredCapabilities"]["sampling"].is_object(), "{:?}", r.msg());

    // Declared, the same tool's request reaches the client as a round, and the call completes.
    let r = c.modern_call("tools/call", call(json!({ "sampling": {} }))).await;
    let (key, method, _, state) = one_request(&r);
    assert_eq!(method, "sampling/createMessage");
    let answer =
        json!({ "role": "assistant", "content": { "type": "text", "text": "ok" }, "model": "m" });
    let retry = json!({
        "name": "hl_test_missing_capability",
        "arguments": {},
        "requestState": state,
        "inputResponses": { key: answer },
        "_meta": meta(json!({ "sampling": {} })),
    });
    let done = c.modern_call("tools/call", retry).await;
    assert_eq!(
        done.result()["content"][0]["text"],
        "The client declared sampling",
        "{:?}",
        done.msg()
    );
}

/// A Legacy backend's elicitation reaches a Modern client as an `input_required` round; a retry
/// with a malformed `inputResponses` is refused and leaves the call parked, the proper retry
/// completes it.
#[tokio::test]
async fn legacy_backend_elicitation_is_an_input_required_round() {
    let (gw, _f) = gateway();
    let c = gw.client();
    let caps = json!({ "elicitation": {} });
    let name = "hl_test_input_required_result_elicitation";
    let first = c
        .modern_call(
            "tools/call",
            json!({ "name": name, "arguments": {}, "_meta": meta(caps.clone()) }),
        )
        .await;
    let (key, method, params, state) = one_request(&first);
    assert_eq!(method, "elicitation/create");
    assert_eq!(params["message"], "What is your name?", "{params}");

    let retry = |responses: Value| {
        json!({
            "name": name,
            "arguments": {},
            "requestState": state,
            "inputResponses": responses,
            "_meta": meta(caps.clone()),
        })
    };
    let bad = c.modern_call("tools/call", retry(json!(12345))).await;
    assert_eq!(bad.error()["code"], -32602, "{:?}", bad.msg());

    let done = c
        .modern_call("tools/call", retry(json!({ key: elicited(json!({ "name": "Alice" })) })))
        .await;
    assert_eq!(done.result()["resultType"], "complete", "{:?}", done.msg());
    assert_eq!(done.result()["content"][0]["text"], "Hello, Alice!", "{:?}", done.msg());
}

/// Requests the backend sends at once form one round; beside declared ones, an undeclared
/// capability's request is refused at the backend instead of failing the call.
#[tokio::test]
async fn concurrent_backend_requests_form_one_round() {
    let (gw, _f) = gateway();
    let c = gw.client();
    let all = json!({ "sampling": {}, "elicitation": {}, "roots": {} });
    let r = c
        .modern_call(
            "tools/call",
            json!({ "name": "hl_test_input_required_result_multiple_inputs", "arguments": {}, "_meta": meta(all) }),
        )
        .await;
    let result = r.result();
    assert_eq!(result["resultType"], "input_required", "{result}");
    let mut methods: Vec<&str> = result["inputRequests"]
        .as_object()
        .expect("inputRequests")
        .values()
        .filter_map(|r| r["method"].as_str())
        .collect();
    methods.sort_unstable();
    assert_eq!(methods, ["elicitation/create", "roots/list", "sampling/createMessage"], "{result}");

    let sampling_only = json!({ "sampling": {} });
    let name = "hl_test_input_required_result_capabilities";
    let first = c
        .modern_call(
            "tools/call",
            json!({ "name": name, "arguments": {}, "_meta": meta(sampling_only.clone()) }),
        )
        .await;
    let (key, method, _, state) = one_request(&first);
    assert_eq!(method, "sampling/createMessage", "only what the client declared");
    let answer = json!({ "role": "assistant", "content": { "type": "text", "text": "Paris" }, "model": "m" });
    let done = c
        .modern_call(
            "tools/call",
            json!({
                "name": name,
                "arguments": {},
                "requestState": state,
                "inputResponses": { key: answer },
                "_meta": meta(sampling_only),
            }),
        )
        .await;
    assert_eq!(
        done.result()["content"][0]["text"],
        "Received the requested input",
        "{:?}",
        done.msg()
    );
}
