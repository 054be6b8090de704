//! Bad input at the client edge: each is refused with the right status and code, and none of them
//! disturbs the gateway or the session.

mod common;

use common::*;
use serde_json::json;

fn gateway() -> (Gateway, Fixture) {
    let f = Fixture::http("both", "a");
    let yaml = format!(
        "name: bad-input\nbackends:\n{}server:\n  maxRequestBodyBytes: 4096\n",
        http_backend("a", &f.url)
    );
    (Gateway::start(&yaml), f)
}

/// The gateway still serves, and the session is still valid.
async fn still_serving(c: &Client) {
    let r = c.tool(false, "a_echo", json!({ "message": "still here" })).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Echo: still here", "{:?}", r.message);
}

#[tokio::test]
async fn malformed_json_is_a_parse_error() {
    let (gw, _f) = gateway();
    let mut c = gw.client();
    c.legacy_init().await;
    let r = c.open(c.post().body("{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": ")).await;
    let r = r.reply(1, STEP).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), -32700);
    still_serving(&c).await;
}

#[tokio::test]
async fn unknown_method_is_method_not_found() {
    let (gw, _f) = gateway();
    let mut c = gw.client();
    c.legacy_init().await;
    let r = c.call("tools/frobnicate", json!({})).await;
    assert_eq!(r.error_code(), -32601, "{:?}", r.message);
    still_serving(&c).await;
}

#[tokio::test]
async fn tools_call_without_name_is_invalid_params() {
    let (gw, _f) = gateway();
    let mut c = gw.client();
    c.legacy_init().await;
    let r = c.call("tools/call", json!({ "arguments": {} })).await;
    assert_eq!(r.error_code(), -32602, "{:?}", r.message);
    let r = c.call("tools/call", json!({ "name": 42 })).await;
    assert_eq!(r.error_code(), -32602, "{:?}", r.message);
    still_serving(&c).await;
}

#[tokio::test]
async fn unknown_tool_is_invalid_params() {
    let (gw, _f) = gateway();
    let mut c = gw.client();
    c.legacy_init().await;
    // The backend's own name without the prefix is not a gateway tool either.
    for name in ["no_such_tool", "echo"] {
        let r = c.tool(false, name, json!({})).await;
        assert_eq!(r.error_code(), -32602, "{name}: {:?}", r.message);
    }
    still_serving(&c).await;
}

#[tokio::test]
async fn oversized_body_is_413() {
    let (gw, _f) = gateway();
    let mut c = gw.client();
    c.legacy_init().await;
    let big = "x".repeat(8192);
    let body =
        request(99, "tools/call", json!({ "name": "a_echo", "arguments": { "message": big } }));
    let ev = c.open(c.post().json(&body)).await;
    assert_eq!(ev.status, 413, "{}", ev.text);
    // A body just under the limit passes.
    let r = c.tool(false, "a_echo", json!({ "message": "y".repeat(3000) })).await;
    assert_eq!(r.text(), format!("Echo: {}", "y".repeat(3000)));
    still_serving(&c).await;
}

#[tokio::test]
async fn unknown_session_is_404() {
    let (gw, _f) = gateway();
    let mut c = gw.client();
    c.legacy_init().await;
    let mut other = c.clone();
    other.session = Some("00000000-not-a-session".into());
    let r = other.call("tools/list", json!({})).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let ev = other.get_stream().await;
    assert_eq!(ev.status, 404);
    still_serving(&c).await;
}

#[tokio::test]
async fn no_session_and_not_modern_is_400() {
    let (gw, _f) = gateway();
    let mut c = gw.client();
    c.legacy_init().await;
    let mut bare = c.clone();
    bare.session = None;
    let r = bare.call("tools/list", json!({})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.message.as_ref().is_some_and(|m| m.get("error").is_some()), "{}", r.text);
    // A notification without a session is refused too.
    assert_eq!(bare.notify("notifications/initialized", json!({})).await, 400);
    still_serving(&c).await;
}

#[tokio::test]
async fn delete_ends_the_session() {
    let (gw, _f) = gateway();
    let mut c = gw.client();
    let sid = c.legacy_init().await;
    let mut keep = gw.client();
    keep.legacy_init().await;
    let resp = c.http.delete(&c.url).header("mcp-session-id", &sid).send().await.unwrap();
    assert!(resp.status().is_success(), "DELETE: {}", resp.status());
    let r = c.call("tools/list", json!({})).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let resp = c.http.delete(&c.url).header("mcp-session-id", &sid).send().await.unwrap();
    assert_eq!(resp.status(), 404, "second DELETE");
    // Other sessions are untouched.
    still_serving(&keep).await;
}

#[tokio::test]
async fn foreign_host_is_403() {
    let (gw, _f) = gateway();
    let mut c = gw.client();
    c.legacy_init().await;
    let body = request(5, "tools/list", json!({}));
    let ev = c.open(c.post().header("host", "evil.example.com").json(&body)).await;
    assert_eq!(ev.status, 403, "{}", ev.text);
    let ev = c
        .open(
            c.http
                .get(&c.url)
                .header("host", "evil.example.com:80")
                .header("mcp-session-id", c.session.clone().unwrap()),
        )
        .await;
    assert_eq!(ev.status, 403, "{}", ev.text);
    still_serving(&c).await;
}

#[tokio::test]
async fn foreign_origin_is_403() {
    let (gw, _f) = gateway();
    let mut c = gw.client();
    c.legacy_init().await;
    let body = request(5, "tools/list", json!({}));
    let ev = c.open(c.post().header("origin", "http://evil.example.com").json(&body)).await;
    assert_eq!(ev.status, 403, "{}", ev.text);
    // A loopback origin is fine.
    let ev = c.open(c.post().header("origin", "http://localhost:3000").json(&body)).await;
    assert_eq!(ev.status, 200, "{}", ev.text);
    still_serving(&c).await;
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let (gw, _f) = gateway();
    let mut c = gw.client();
    c.legacy_init().await;
    let body = request(5, "tools/list", json!({})).to_string();
    let post = c
        .http
        .post(&c.url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "text/plain")
        .header("mcp-session-id", c.session.clone().unwrap());
    let ev = c.open(post.body(body)).await;
    assert_eq!(ev.status, 415, "{}", ev.text);
    still_serving(&c).await;
}

#[tokio::test]
async fn answering_an_unknown_relay_is_400() {
    let (gw, _f) = gateway();
    let mut c = gw.client();
    c.legacy_init().await;
    let body = json!({ "jsonrpc": "2.0", "id": "nope", "result": {} });
    let ev = c.open(c.post().json(&body)).await;
    assert_eq!(ev.status, 400, "{}", ev.text);
    still_serving(&c).await;
}
