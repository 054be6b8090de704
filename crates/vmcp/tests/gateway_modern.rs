//! The 2026-07-28 client edge: discovery, the per-request `_meta` and header checks, removed
//! methods, and `subscriptions/listen`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn gateway() -> (Gateway, Fixture) {
    let f = Fixture::http("both", "a");
    let yaml =
        format!("name: modern-gw\nbackends:\n{}{}", http_backend("a", &f.url), stdio_backend("s"));
    (Gateway::start(&yaml), f)
}

/// A Modern-looking POST with hand-made headers and params.
fn raw_post(c: &Client, headers: &[(&str, &str)], body: &Value) -> reqwest::RequestBuilder {
    let mut b = c
        .http
        .post(&c.url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.json(body)
}

#[tokio::test]
async fn server_discover() {
    let (gw, _f) = gateway();
    let c = gw.client();
    let r = c.modern_call("server/discover", json!({})).await;
    assert_eq!(r.status, 200);
    let res = r.result();
    let versions: Vec<&str> =
        res["supportedVersions"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(versions.contains(&MODERN), "{versions:?}");
    assert_eq!(res["_meta"]["io.modelcontextprotocol/serverInfo"]["name"], "modern-gw", "{res}");
    assert_eq!(res["resultType"], "complete");
    assert!(res["capabilities"]["tools"].is_object(), "{res}");
}

#[tokio::test]
async fn missing_meta_is_invalid_params() {
    let (gw, _f) = gateway();
    let c = gw.client();
    let body = request(1, "tools/list", json!({}));
    let ev = c
        .open(raw_post(
            &c,
            &[("mcp-protocol-version", MODERN), ("mcp-method", "tools/list")],
            &body,
        ))
        .await;
    let r = ev.reply(1, STEP).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), -32602);
}

#[tokio::test]
async fn header_meta_version_mismatch_is_32020() {
    let (gw, _f) = gateway();
    let c = gw.client();
    let mut params = with_modern_meta(json!({}));
    params["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!(LEGACY);
    let body = request(1, "tools/list", params);
    let ev = c
        .open(raw_post(
            &c,
            &[("mcp-protocol-version", MODERN), ("mcp-method", "tools/list")],
            &body,
        ))
        .await;
    let r = ev.reply(1, STEP).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), -32020);
}

#[tokio::test]
async fn unsupported_version_is_32022_with_data() {
    let (gw, _f) = gateway();
    let c = gw.client();
    let mut params = with_modern_meta(json!({}));
    params["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("v999");
    let body = request(1, "tools/list", params);
    let ev = c
        .open(raw_post(
            &c,
            &[("mcp-protocol-version", "v999"), ("mcp-method", "tools/list")],
            &body,
        ))
        .await;
    let r = ev.reply(1, STEP).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), -32022);
    let data = &r.error()["data"];
    assert_eq!(data["requested"], "v999", "{data}");
    let supported: Vec<&str> = data["supported"]
        .as_array()
        .unwrap_or_else(|| panic!("{data}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(supported.contains(&MODERN), "{supported:?}");
}

#[tokio::test]
async fn mcp_name_mismatch_is_32020() {
    let (gw, _f) = gateway();
    let c = gw.client();
    let params = with_modern_meta(json!({ "name": "a_echo", "arguments": { "message": "x" } }));
    let body = request(1, "tools/call", params);
    let headers =
        [("mcp-protocol-version", MODERN), ("mcp-method", "tools/call"), ("mcp-name", "a_counter")];
    let r = c.open(raw_post(&c, &headers, &body)).await.reply(1, STEP).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), -32020);
    // Mcp-Method naming another method is a mismatch too.
    let headers =
        [("mcp-protocol-version", MODERN), ("mcp-method", "tools/list"), ("mcp-name", "a_echo")];
    let r = c.open(raw_post(&c, &headers, &body)).await.reply(1, STEP).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), -32020);
    // With matching headers the same body works.
    let r = c
        .modern_call("tools/call", json!({ "name": "a_echo", "arguments": { "message": "x" } }))
        .await;
    assert_eq!(r.text(), "Echo: x");
}

#[tokio::test]
async fn removed_method_ping_is_404() {
    let (gw, _f) = gateway();
    let c = gw.client();
    let r = c.modern_call("ping", json!({})).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.error_code(), -32601);
}

#[tokio::test]
async fn modern_requests_need_no_session() {
    let (gw, _f) = gateway();
    let c = gw.client();
    let r = c.modern_call("tools/list", json!({})).await;
    assert!(r.headers.get("mcp-session-id").is_none(), "no session for Modern clients");
    assert!(r.tool_names().contains(&"s_echo".to_owned()));
    assert_eq!(r.result()["resultType"], "complete", "{}", r.result());
    let st = gw.status().await;
    assert_eq!(st["sessions"], 0, "{st}");
}

#[tokio::test]
async fn subscriptions_listen_tools_list_changed() {
    let (gw, _f) = gateway();
    let c = gw.client();
    let (id, mut ev) = c
        .modern_start(
            "subscriptions/listen",
            json!({ "notifications": { "toolsListChanged": true } }),
        )
        .await;
    assert_eq!(ev.status, 200);
    assert!(ev.is_sse, "listen answers with an SSE stream");
    let ack = ev.next().await;
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged", "{ack}");
    let sub = ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"].clone();
    assert!(!sub.is_null(), "{ack}");
    assert_eq!(sub, json!(id), "the subscription id is the listen request's id");
    assert_eq!(ack["params"]["notifications"]["toolsListChanged"], true, "{ack}");

    let r = c
        .modern_call("tools/call", json!({ "name": "s_notify_list_changed", "arguments": {} }))
        .await;
    assert!(r.text().contains("dynamic_tool"), "{:?}", r.message);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let changed = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = ev.next_within(left).await.expect("tools/list_changed on the listen stream");
        if m["method"] == "notifications/tools/list_changed" {
            break m;
        }
    };
    assert_eq!(
        changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], sub,
        "{changed}"
    );
    let names = c.tool_names(true).await;
    assert!(names.contains(&"s_dynamic_tool".to_owned()), "{names:?}");
}

#[tokio::test]
async fn subscriptions_listen_filters_unrequested_kinds() {
    let (gw, _f) = gateway();
    let c = gw.client();
    let (_, mut ev) = c
        .modern_start(
            "subscriptions/listen",
            json!({ "notifications": { "promptsListChanged": true } }),
        )
        .await;
    let ack = ev.next().await;
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged", "{ack}");
    assert!(ack["params"]["notifications"].get("toolsListChanged").is_none(), "{ack}");
    c.modern_call("tools/call", json!({ "name": "s_notify_list_changed", "arguments": {} })).await;
    poll(Duration::from_secs(10), "dynamic_tool in the catalog", || {
        let c = c.clone();
        async move { c.tool_names(true).await.contains(&"s_dynamic_tool".to_owned()).then_some(()) }
    })
    .await;
    if let Some(m) = ev.next_within(Duration::from_millis(500)).await {
        assert_ne!(m["method"], "notifications/tools/list_changed", "not subscribed: {m}");
    }
}

#[tokio::test]
async fn missing_mcp_name_or_method_is_32020() {
    let (gw, _f) = gateway();
    let c = gw.client();
    let body = request(
        1,
        "tools/call",
        with_modern_meta(json!({ "name": "a_echo", "arguments": { "message": "x" } })),
    );
    let r = c
        .open(raw_post(
            &c,
            &[("mcp-protocol-version", MODERN), ("mcp-method", "tools/call")],
            &body,
        ))
        .await;
    let r = r.reply(1, STEP).await;
    assert_eq!((r.status, r.error_code()), (400, -32020), "missing Mcp-Name");
    let r = c
        .open(raw_post(&c, &[("mcp-protocol-version", MODERN), ("mcp-name", "a_echo")], &body))
        .await;
    let r = r.reply(1, STEP).await;
    assert_eq!((r.status, r.error_code()), (400, -32020), "missing Mcp-Method");
}

#[tokio::test]
async fn mcp_param_headers_are_checked() {
    let (gw, _f) = gateway();
    let c = gw.client();
    let params = with_modern_meta(
        json!({ "name": "a_test_custom_headers", "arguments": { "region": "eu-west" } }),
    );
    let body = request(1, "tools/call", params);
    let base = [
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "tools/call"),
        ("mcp-name", "a_test_custom_headers"),
    ];
    let with = |extra: Option<(&'static str, &'static str)>| {
        let mut h = base.to_vec();
        h.extend(extra);
        raw_post(&c, &h, &body)
    };
    let r = c.open(with(Some(("mcp-param-region", "us-east")))).await.reply(1, STEP).await;
    assert_eq!((r.status, r.error_code()), (400, -32020), "mismatched Mcp-Param-Region");
    let r = c.open(with(None)).await.reply(1, STEP).await;
    assert_eq!((r.status, r.error_code()), (400, -32020), "missing Mcp-Param-Region");
}

#[tokio::test]
async fn legacy_only_methods_are_not_found_for_modern_clients() {
    let (gw, _f) = gateway();
    let c = gw.client();
    for (method, params) in [
        ("logging/setLevel", json!({ "level": "info" })),
        ("resources/subscribe", json!({ "uri": "test://static-text" })),
    ] {
        let r = c.modern_call(method, params).await;
        assert_eq!(r.status, 404, "{method}: {}", r.text);
        assert_eq!(r.error_code(), -32601, "{method}");
    }
}

#[tokio::test]
async fn modern_input_required_passes_through() {
    let (gw, _f) = gateway();
    let c = gw.client();
    let r = c
        .modern_call(
            "tools/call",
            json!({ "name": "a_test_input_required_result_elicitation", "arguments": {} }),
        )
        .await;
    assert_eq!(r.result()["resultType"], "input_required", "{:?}", r.message);
}

/// A tool whose schema opts an argument into an `Mcp-Param-*` header, on a Modern backend, called
/// with correct headers (Modern client) or through a session (Legacy client).
#[tokio::test]

async fn mcp_param_tool_reaches_modern_backend() {
    let (gw, _f) = gateway();
    assert_eq!(gw.backend_status("a").await["era"], "modern");
    let c = gw.client();
    let params = with_modern_meta(
        json!({ "name": "a_test_custom_headers", "arguments": { "region": "eu-west" } }),
    );
    let body = request(1, "tools/call", params);
    let headers = [
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "tools/call"),
        ("mcp-name", "a_test_custom_headers"),
        ("mcp-param-region", "eu-west"),
    ];
    let r = c.open(raw_post(&c, &headers, &body)).await.reply(1, STEP).await;
    assert_eq!(r.text(), "region=eu-west", "Modern client: {:?}", r.message);
    let mut l = gw.client();
    l.legacy_init().await;
    let r = l.tool(false, "a_test_custom_headers", json!({ "region": "eu-west" })).await;
    assert_eq!(r.text(), "region=eu-west", "Legacy client: {:?}", r.message);
}

/// The same tool on a Legacy backend works: no headers are involved there.
#[tokio::test]
async fn mcp_param_tool_reaches_legacy_backend() {
    let f = Fixture::http("legacy", "l");
    let gw = Gateway::start(&format!("name: m\nbackends:\n{}", http_backend("l", &f.url)));
    let c = gw.client();
    let params = with_modern_meta(
        json!({ "name": "l_test_custom_headers", "arguments": { "region": "eu-west" } }),
    );
    let body = request(1, "tools/call", params);
    let headers = [
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "tools/call"),
        ("mcp-name", "l_test_custom_headers"),
        ("mcp-param-region", "eu-west"),
    ];
    let r = c.open(raw_post(&c, &headers, &body)).await.reply(1, STEP).await;
    assert_eq!(r.text(), "region=eu-west", "{:?}", r.message);
}
