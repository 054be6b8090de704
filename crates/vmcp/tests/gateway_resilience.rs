//! Backends failing, coming back, crashing, hanging; and the gateway shutting down cleanly.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[tokio::test]
async fn backend_down_at_start_then_comes_up() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let yaml =
        format!("name: res\nbackends:\n{}{}", http_backend("late", &url), stdio_backend("s"));
    let gw = Gateway::start(&yaml);

    let down = poll(Duration::from_secs(10), "late to be reported down", || {
        let gw = &gw;
        async move {
            let b = gw.backend_status("late").await;
            (b["state"] == "down").then_some(b)
        }
    })
    .await;
    assert!(down["lastError"].as_str().is_some_and(|e| !e.is_empty()), "{down}");
    assert_eq!(gw.backend_status("s").await["state"], "ready");

    let c = client_for(&gw, false).await;
    let names = c.tool_names(false).await;
    assert!(!names.iter().any(|n| n.starts_with("late_")), "{names:?}");
    assert!(names.contains(&"s_echo".to_owned()), "{names:?}");
    assert_eq!(c.tool(false, "late_echo", json!({ "message": "x" })).await.error_code(), -32602);
    assert_eq!(c.tool(false, "s_echo", json!({ "message": "ok" })).await.text(), "Echo: ok");

    // Bring it up on the configured port; the gateway picks it up within its backoff.
    let _late = Fixture::http_on(port, "both", "late");
    poll(Duration::from_secs(40), "late_echo in tools/list", || {
        let c = c.clone();
        async move { c.tool_names(false).await.contains(&"late_echo".to_owned()).then_some(()) }
    })
    .await;
    assert_eq!(gw.backend_status("late").await["state"], "ready");
    assert_eq!(c.tool(false, "late_echo", json!({ "message": "up" })).await.text(), "Echo: up");
    assert_eq!(c.tool(true, "late_echo", json!({ "message": "up" })).await.text(), "Echo: up");
}

#[tokio::test]
async fn stdio_crash_restarts_the_backend_only() {
    let h = Fixture::http("both", "h");
    let yaml = format!("name: res\nbackends:\n{}{}", stdio_backend("s"), http_backend("h", &h.url));
    let gw = Gateway::start(&yaml);
    let c = client_for(&gw, false).await;
    assert_eq!(c.tool(false, "s_counter", json!({})).await.text(), "1");
    assert_eq!(c.tool(false, "s_counter", json!({})).await.text(), "2");
    assert_eq!(c.tool(false, "h_counter", json!({})).await.text(), "1");
    let old_child = children_of(gw.pid());
    assert_eq!(old_child.len(), 1, "one stdio child: {old_child:?}");

    let started = Instant::now();
    let r = c.tool(false, "s_crash", json!({})).await;
    assert!(
        r.message.as_ref().is_some_and(|m| m.get("error").is_some()),
        "the crash call errors: {r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "the crash call ended promptly");

    // The other backend is untouched during the outage.
    assert_eq!(
        c.tool(false, "h_echo", json!({ "message": "meanwhile" })).await.text(),
        "Echo: meanwhile"
    );
    assert_eq!(c.tool(false, "h_counter", json!({})).await.text(), "2");
    assert_eq!(gw.backend_status("h").await["state"], "ready");

    // The stdio backend comes back as a fresh process.
    let n = poll(Duration::from_secs(20), "s_counter to answer again", || {
        let c = c.clone();
        async move {
            let r = c.tool(false, "s_counter", json!({})).await;
            r.message.as_ref().and_then(|m| m.get("result")).map(|_| r.text())
        }
    })
    .await;
    assert_eq!(n, "1", "counter reset by the restart");
    assert!(!old_child.iter().any(|p| alive(*p)), "the crashed child is reaped");
    assert_eq!(gw.backend_status("s").await["state"], "ready");
    assert!(c.tool_names(false).await.contains(&"s_echo".to_owned()));
}

#[tokio::test]
async fn backend_timeout_is_32003() {
    let yaml = format!(
        "name: res\nbackends:\n{}    timeout: 1s\n{}",
        stdio_backend("slow"),
        stdio_backend("fast")
    );
    let gw = Gateway::start(&yaml);
    for modern in [false, true] {
        let c = client_for(&gw, modern).await;
        let started = Instant::now();
        let r = c.tool(modern, "slow_sleep", json!({ "ms": 60000 })).await;
        let took = started.elapsed();
        assert_eq!(r.error_code(), -32003, "modern={modern}: {:?}", r.message);
        assert!(took < Duration::from_secs(5), "timed out after {took:?}");
        // The backend still serves.
        assert_eq!(c.tool(modern, "slow_sleep", json!({ "ms": 1 })).await.text(), "Slept 1 ms");
        // Other backends use the default timeout.
        assert_eq!(
            c.tool(modern, "fast_sleep", json!({ "ms": 1500 })).await.text(),
            "Slept 1500 ms"
        );
    }
}

#[tokio::test]
async fn no_stdio_child_survives_shutdown() {
    let yaml = format!("name: res\nbackends:\n{}{}", stdio_backend("s1"), stdio_backend("s2"));
    let mut gw = Gateway::start(&yaml);
    let kids = poll(Duration::from_secs(10), "two stdio children", || {
        let pid = gw.pid();
        async move {
            let k = children_of(pid);
            (k.len() == 2).then_some(k)
        }
    })
    .await;
    // Open streams must not hold the shutdown up.
    let mut c = gw.client();
    c.legacy_init().await;
    let get = c.get_stream().await;
    assert_eq!(get.status, 200);
    let (_, listen) = c
        .modern_start(
            "subscriptions/listen",
            json!({ "notifications": { "toolsListChanged": true } }),
        )
        .await;
    assert_eq!(listen.status, 200);

    let started = Instant::now();
    let exited = gw.proc.terminate(Duration::from_secs(10));
    assert!(exited, "vmcp did not exit within 10s of SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    while kids.iter().any(|p| alive(*p)) {
        assert!(Instant::now() < deadline, "stdio children {kids:?} survived the gateway");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("shutdown took {:?}", started.elapsed());
    drop((get, listen));
}
