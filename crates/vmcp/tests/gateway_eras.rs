//! The eras matrix: Legacy and Modern clients × Legacy HTTP, Modern HTTP and stdio backends.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// A gateway in front of three fixtures: `hl` (HTTP, legacy era), `hm` (HTTP, modern era) and
/// `st` (stdio).
struct Setup {
    gw: Gateway,
    _hl: Fixture,
    _hm: Fixture,
}

fn setup() -> Setup {
    let hl = Fixture::http("legacy", "hl");
    let hm = Fixture::http("modern", "hm");
    let yaml = format!(
        "name: eras\nbackends:\n{}{}{}",
        http_backend("hl", &hl.url),
        http_backend("hm", &hm.url),
        stdio_backend("st")
    );
    let gw = Gateway::start(&yaml);
    Setup { gw, _hl: hl, _hm: hm }
}

async fn check(modern: bool, backend: &str) {
    let s = setup();
    let status = s.gw.backend_status(backend).await;
    assert_eq!(status["state"], "ready", "{status}");
    let c = client_for(&s.gw, modern).await;

    // tools/list has the prefixed names.
    let names = c.tool_names(modern).await;
    for t in ["echo", "counter", "test_tool_with_progress"] {
        let want = format!("{backend}_{t}");
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert!(!names.contains(&"echo".to_owned()), "bare name leaked: {names:?}");

    // tools/call reaches the backend.
    let r = c.tool(modern, &format!("{backend}_echo"), json!({ "message": "hi" })).await;
    assert_eq!(r.text(), "Echo: hi", "{:?}", r.message);
    let rt = r.result().get("resultType");
    if modern {
        assert_eq!(rt, Some(&json!("complete")), "Modern clients get resultType: {}", r.result());
    } else {
        assert_eq!(rt, None, "Legacy clients never see resultType: {}", r.result());
    }

    // Progress notifications come first, on the SSE stream, with the client's token.
    let params = json!({
        "name": format!("{backend}_test_tool_with_progress"),
        "arguments": {},
        "_meta": { "progressToken": "tok-1" },
    });
    let r = if modern {
        c.modern_call("tools/call", params).await
    } else {
        c.call("tools/call", params).await
    };
    assert_eq!(r.text(), "Progress test completed", "{:?}", r.message);
    let progress: Vec<&Value> =
        r.interim.iter().filter(|m| m["method"] == "notifications/progress").collect();
    assert_eq!(
        progress.len(),
        3,
        "three progress notifications before the result: {:?}",
        r.interim
    );
    for p in &progress {
        assert_eq!(p["params"]["progressToken"], "tok-1", "{p}");
    }
    let values: Vec<f64> =
        progress.iter().filter_map(|p| p["params"]["progress"].as_f64()).collect();
    assert_eq!(values, vec![0.0, 50.0, 100.0]);
    if modern {
        assert_eq!(r.result()["resultType"], "complete");
    } else {
        assert!(r.result().get("resultType").is_none(), "{}", r.result());
    }
}

#[tokio::test]
async fn legacy_client_legacy_http_backend() {
    check(false, "hl").await;
}

#[tokio::test]
async fn legacy_client_modern_http_backend() {
    check(false, "hm").await;
}

#[tokio::test]
async fn legacy_client_stdio_backend() {
    check(false, "st").await;
}

#[tokio::test]
async fn modern_client_legacy_http_backend() {
    check(true, "hl").await;
}

#[tokio::test]
async fn modern_client_modern_http_backend() {
    check(true, "hm").await;
}

#[tokio::test]
async fn modern_client_stdio_backend() {
    check(true, "st").await;
}

/// `/status` reports each backend's era as probed.
#[tokio::test]
async fn status_reports_backend_eras() {
    let s = setup();
    assert_eq!(s.gw.backend_status("hl").await["era"], "legacy");
    assert_eq!(s.gw.backend_status("hm").await["era"], "modern");
    let st = s.gw.backend_status("st").await;
    assert_eq!(st["state"], "ready", "{st}");
    assert_eq!(st["transport"], "stdio");
}

/// Log messages a tool sends while running, as the client receives them: on the request's stream,
/// or (Legacy clients) on the session's GET stream, where backend-level logs go. `want` bounds the
/// wait: the function returns as soon as that many arrived, else after a short quiet period.
async fn logs(
    c: &Client,
    get: Option<&mut Events>,
    backend: &str,
    level: Option<&str>,
    want: usize,
) -> Vec<Value> {
    let mut params =
        json!({ "name": format!("{backend}_test_tool_with_logging"), "arguments": {} });
    let modern = get.is_none();
    let r = if modern {
        if let Some(l) = level {
            params["_meta"] = json!({ "io.modelcontextprotocol/logLevel": l });
        }
        c.modern_call("tools/call", params).await
    } else {
        c.call("tools/call", params).await
    };
    assert_eq!(r.text(), "Logging test completed", "{:?}", r.message);
    let is_log = |m: &Value| m["method"] == "notifications/message";
    let mut got: Vec<Value> = r.interim.into_iter().filter(is_log).collect();
    if let Some(get) = get {
        let quiet = if want == 0 { Duration::from_millis(500) } else { Duration::from_secs(5) };
        let deadline = tokio::time::Instant::now() + quiet;
        while got.len() < want.max(1) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match get.next_within(left).await {
                Some(m) if is_log(&m) => got.push(m),
                Some(_) => {}
                None => break,
            }
        }
    }
    got
}

async fn check_logging(modern: bool, backend: &str) {
    let s = setup();
    let mut c = s.gw.client();
    let mut get = None;
    if !modern {
        c.legacy_init().await;
        let r = c.call("logging/setLevel", json!({ "level": "info" })).await;
        assert!(r.result().is_object(), "{:?}", r.message);
        get = Some(c.get_stream().await);
    }
    let got = logs(&c, get.as_mut(), backend, Some("info"), 3).await;
    let texts: Vec<&str> = got.iter().filter_map(|m| m["params"]["data"].as_str()).collect();
    assert_eq!(
        texts,
        vec!["Tool execution started", "Tool processing data", "Tool execution completed"],
        "info-level logs reach the client: {got:?}"
    );
    // Above the messages' level: nothing.
    if !modern {
        let r = c.call("logging/setLevel", json!({ "level": "error" })).await;
        assert!(r.result().is_object(), "{:?}", r.message);
    }
    let got = logs(&c, get.as_mut(), backend, Some("error"), 0).await;
    assert!(got.is_empty(), "error level filters info logs: {got:?}");
    if modern {
        // No level asked for: no logs (2026-07-28).
        let got = logs(&c, None, backend, None, 0).await;
        assert!(got.is_empty(), "no logLevel, no logs: {got:?}");
    }
}

#[tokio::test]
async fn logging_legacy_client_legacy_http_backend() {
    check_logging(false, "hl").await;
}

#[tokio::test]

async fn logging_legacy_client_modern_http_backend() {
    check_logging(false, "hm").await;
}

#[tokio::test]
async fn logging_legacy_client_stdio_backend() {
    check_logging(false, "st").await;
}

// Modern client × Legacy HTTP backend is left out on purpose: the Legacy HTTP fixture sends its
// log messages on its standalone GET stream, not on the request's stream, and a Modern client has
// no stream to receive backend-level messages on.

#[tokio::test]
async fn logging_modern_client_modern_http_backend() {
    check_logging(true, "hm").await;
}

#[tokio::test]
async fn logging_modern_client_stdio_backend() {
    check_logging(true, "st").await;
}

/// Resources and prompts from every backend, for both client eras.
#[tokio::test]
async fn resources_and_prompts_both_eras() {
    let s = setup();
    for modern in [false, true] {
        let c = client_for(&s.gw, modern).await;
        let call = |method: &'static str, params: Value| {
            let c = c.clone();
            async move {
                if modern {
                    c.modern_call(method, params).await
                } else {
                    c.call(method, params).await
                }
            }
        };
        let r = call("resources/list", json!({})).await;
        let uris: Vec<&str> = r.result()["resources"]
            .as_array()
            .unwrap_or_else(|| panic!("{:?}", r.message))
            .iter()
            .filter_map(|x| x["uri"].as_str())
            .collect();
        assert!(uris.contains(&"test://static-text"), "{uris:?}");
        let r = call("resources/read", json!({ "uri": "test://static-text" })).await;
        assert_eq!(
            r.result()["contents"][0]["text"],
            "This is the content of the static text resource.",
            "modern={modern}: {:?}",
            r.message
        );
        let r = call("resources/read", json!({ "uri": "test://template/7/data" })).await;
        assert!(
            r.message.as_ref().unwrap().get("result").is_some(),
            "template read, modern={modern}: {:?}",
            r.message
        );
        // SEP-2164: -32602 from 2026-07-28 on, -32002 before; the URI in `data` either way.
        let r = call("resources/read", json!({ "uri": "test://nope" })).await;
        let expected = if modern { -32602 } else { -32002 };
        assert_eq!(r.error_code(), expected, "modern={modern}: {:?}", r.message);
        assert_eq!(r.error()["data"]["uri"], "test://nope");

        let r = call("prompts/list", json!({})).await;
        let names: Vec<&str> = r.result()["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        for b in ["hl", "hm", "st"] {
            let want = format!("{b}_test_simple_prompt");
            assert!(names.contains(&want.as_str()), "{want} missing from {names:?}");
            let r = call("prompts/get", json!({ "name": want })).await;
            assert!(
                r.result()["messages"].as_array().is_some_and(|m| !m.is_empty()),
                "{want}, modern={modern}: {:?}",
                r.message
            );
        }
        let r = call("prompts/get", json!({ "name": "test_simple_prompt" })).await;
        assert_eq!(r.error_code(), -32602, "bare prompt name: {:?}", r.message);
    }
}

/// `initialize` negotiates: a supported Legacy version is echoed, an unknown one gets the latest.
#[tokio::test]
async fn legacy_version_negotiation() {
    let s = setup();
    let c = s.gw.client();
    for (asked, want) in
        [("2025-06-18", "2025-06-18"), ("2024-11-05", "2024-11-05"), ("1999-01-01", LEGACY)]
    {
        let body = request(
            1,
            "initialize",
            json!({ "protocolVersion": asked, "capabilities": {}, "clientInfo": { "name": "t", "version": "1" } }),
        );
        let ev = c.open(c.post().json(&body)).await;
        assert!(ev.headers.get("mcp-session-id").is_some());
        let r = ev.reply(1, STEP).await;
        assert_eq!(r.result()["protocolVersion"], want, "asked {asked}");
        assert_eq!(r.result()["serverInfo"]["name"], "eras");
    }
}
