//! The eras matrix: Legacy and Modern clients × Legacy HTTP, Modern HTTP and stdio backends.

mod common;

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
