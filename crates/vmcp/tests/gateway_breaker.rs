//! `operational.failureHandling` end to end: health probes, the circuit breaker, partial failure
//! modes, and the failure cases they fix (a dead backend left advertised, slow recovery after a
//! long outage, HTTP timeouts reported as -32603, an over-long stdio reply waiting for the
//! timeout). Fixture backends die (SIGTERM/SIGKILL), hang (SIGSTOP) and come back.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Probes every second, each bounded by 500 ms, plus `extra` keys.
fn failure_handling(extra: &str) -> String {
    format!(
        "operational:\n  failureHandling:\n    healthCheckInterval: 1s\n    healthCheckTimeout: 500ms\n{extra}"
    )
}

const BREAKER: &str =
    "    circuitBreaker:\n      enabled: true\n      failureThreshold: 2\n      timeout: 1s\n";

fn signal(pid: i32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// Waits for `notifications/tools/list_changed` on a Legacy GET stream.
async fn list_changed(stream: &mut Events, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = stream.next_within(left).await.expect("notifications/tools/list_changed");
        if m["method"] == "notifications/tools/list_changed" {
            return;
        }
    }
}

/// Calls `tool` and returns the reply and how long it took.
async fn timed(c: &Client, tool: &str) -> (Reply, Duration) {
    let started = Instant::now();
    let r = c.tool(false, tool, json!({ "message": "x" })).await;
    (r, started.elapsed())
}

trait Answer {
    /// The first text of a tool result; empty for an error.
    fn answer(&self) -> String;
}

impl Answer for Reply {
    fn answer(&self) -> String {
        let m = self.message.as_ref();
        let text = m.and_then(|m| m["result"]["content"][0]["text"].as_str());
        text.unwrap_or_default().to_owned()
    }
}

fn error_of(r: &Reply) -> Option<Value> {
    r.message.as_ref().and_then(|m| m.get("error")).cloned()
}

#[tokio::test]
async fn killed_backend_fails_fast_stays_known_and_returns() {
    let mut a = Fixture::http("legacy", "a");
    let port = a.port;
    let yaml = format!(
        "name: br\nbackends:\n{}{}{}",
        http_backend("a", &a.url),
        stdio_backend("b"),
        failure_handling(BREAKER)
    );
    let gw = Gateway::start(&yaml);
    let c = client_for(&gw, false).await;
    assert_eq!(timed(&c, "a_echo").await.0.answer(), "Echo: x");
    let mut stream = c.get_stream().await;

    // Load on the other backend throughout: it must keep answering.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, 0u32);
            while !stop.load(Ordering::Relaxed) {
                match timed(&c, "b_echo").await.0.answer().as_str() {
                    "Echo: x" => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        })
    };

    let killed = Instant::now();
    a.proc.terminate(Duration::from_secs(5));
    // Calls fail fast with "backend unavailable" naming it, never "Unknown tool".
    let (error, failing_fast_after) = poll(Duration::from_secs(5), "a_echo to fail fast", || {
        let c = c.clone();
        async move {
            let (r, took) = timed(&c, "a_echo").await;
            let e = error_of(&r)?;
            assert_ne!(e["code"], -32602, "a tool of a down backend stays known: {e}");
            (e["code"] == -32001 && took < Duration::from_millis(200))
                .then(|| (e, killed.elapsed()))
        }
    })
    .await;
    println!("calls to the killed backend fail fast {failing_fast_after:?} after the kill");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("backend a "), "{error}");
    assert_eq!(error["data"]["backend"], "a", "{error}");
    assert!(error["data"]["retryAt"].is_string(), "when it is retried: {error}");

    list_changed(&mut stream, Duration::from_secs(5)).await;
    assert!(!c.tool_names(false).await.contains(&"a_echo".to_owned()));
    let status = gw.backend_status("a").await;
    assert_eq!(status["inService"], false, "{status}");

    // Back on the same port: in service again within about one interval.
    let _a = Fixture::http_on(port, "legacy", "a");
    let returned = Instant::now();
    poll(Duration::from_secs(5), "a_echo to answer again", || {
        let c = c.clone();
        async move { (timed(&c, "a_echo").await.0.answer() == "Echo: x").then_some(()) }
    })
    .await;
    println!("the restarted backend answers {:?} after it came back", returned.elapsed());
    list_changed(&mut stream, Duration::from_secs(5)).await;
    assert!(c.tool_names(false).await.contains(&"a_echo".to_owned()));
    let status = gw.backend_status("a").await;
    assert_eq!(status["health"]["breaker"]["state"], "closed", "{status}");

    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = load.await.unwrap();
    assert!(ok > 0 && failed == 0, "the other backend kept answering: {ok} ok, {failed} failed");
}

#[tokio::test]
async fn hanging_backend_trips_the_breaker_by_timeouts() {
    let a = Fixture::http("legacy", "a");
    let yaml = format!(
        "name: br\nbackends:\n{}    timeout: 500ms\n{}{}",
        http_backend("a", &a.url),
        stdio_backend("b"),
        failure_handling(BREAKER)
    );
    let gw = Gateway::start(&yaml);
    let c = client_for(&gw, false).await;
    assert_eq!(timed(&c, "a_echo").await.0.answer(), "Echo: x");
    let mut stream = c.get_stream().await;

    signal(a.proc.pid(), "-STOP");
    // Timeouts (-32003) until the breaker opens; then calls fail at once (-32001).
    let timeouts = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (error, took) = poll(Duration::from_secs(10), "the breaker to open", || {
        let (c, timeouts) = (c.clone(), timeouts.clone());
        async move {
            let (r, took) = timed(&c, "a_echo").await;
            let e = error_of(&r).unwrap_or_else(|| panic!("a hung backend answered: {r:?}"));
            if e["code"] == -32003 {
                timeouts.fetch_add(1, Ordering::Relaxed);
            }
            (e["code"] == -32001).then_some((e, took))
        }
    })
    .await;
    let timeouts = timeouts.load(Ordering::Relaxed);
    println!("breaker open after {timeouts} timed-out calls; refused in {took:?}");
    assert!(took < Duration::from_millis(200), "refused at once: {took:?}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("backend a ") && message.contains("circuit breaker open"), "{error}");
    assert!(message.contains("retried after"), "{error}");
    let status = gw.backend_status("a").await;
    assert_eq!(status["health"]["breaker"]["state"], "open", "{status}");
    assert!(status["health"]["breaker"]["nextRetry"].is_string(), "{status}");
    assert!(status["health"]["consecutiveFailures"].as_u64() >= Some(2), "{status}");
    list_changed(&mut stream, Duration::from_secs(5)).await;
    assert!(!c.tool_names(false).await.contains(&"a_echo".to_owned()));
    assert_eq!(timed(&c, "b_echo").await.0.answer(), "Echo: x");

    signal(a.proc.pid(), "-CONT");
    let resumed = Instant::now();
    poll(Duration::from_secs(5), "a_echo to answer again", || {
        let c = c.clone();
        async move { (timed(&c, "a_echo").await.0.answer() == "Echo: x").then_some(()) }
    })
    .await;
    println!("back through half-open {:?} after the backend resumed", resumed.elapsed());
    list_changed(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(gw.backend_status("a").await["health"]["breaker"]["state"], "closed");
}

#[tokio::test]
async fn partial_failure_modes() {
    let dead = format!("http://127.0.0.1:{}/mcp", free_port());
    let init = json!({
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": { "name": "t", "version": "1" },
    });
    for mode in ["fail", "best_effort"] {
        let yaml = format!(
            "name: br\nbackends:\n{}{}{}",
            http_backend("dead", &dead),
            stdio_backend("s"),
            failure_handling(&format!("    partialFailureMode: {mode}\n"))
        );
        let gw = Gateway::start(&yaml);
        let r = gw.client().call("initialize", init.clone()).await;
        let modern = gw.client().modern_call("tools/list", json!({})).await;
        if mode == "fail" {
            for r in [&r, &modern] {
                let e = r.error();
                assert_eq!(e["code"], -32001, "{e}");
                assert!(e["message"].as_str().is_some_and(|m| m.contains("dead (")), "{e}");
                assert_eq!(e["data"]["backends"], json!(["dead"]), "{e}");
            }
        } else {
            assert!(r.result()["protocolVersion"].is_string(), "{:?}", r.message);
            assert!(modern.tool_names().contains(&"s_echo".to_owned()));
        }
    }
}

#[tokio::test]
async fn dead_modern_backend_is_noticed_without_traffic() {
    let mut m = Fixture::http("modern", "m");
    let yaml = format!(
        "name: br\nbackends:\n{}{}{}",
        http_backend("m", &m.url),
        stdio_backend("s"),
        failure_handling("")
    );
    let gw = Gateway::start(&yaml);
    let c = client_for(&gw, true).await;
    assert!(c.tool_names(true).await.contains(&"m_echo".to_owned()));
    assert_eq!(gw.backend_status("m").await["inService"], true);

    let killed = Instant::now();
    m.proc.terminate(Duration::from_secs(5));
    poll(Duration::from_secs(5), "m to leave service", || {
        let gw = &gw;
        async move { (gw.backend_status("m").await["inService"] == false).then_some(()) }
    })
    .await;
    let noticed = killed.elapsed();
    println!("death of an idle Modern backend noticed after {noticed:?}");
    // One interval (1 s) plus a probe's time.
    assert!(noticed < Duration::from_millis(2500), "noticed after {noticed:?}");
    assert!(!c.tool_names(true).await.contains(&"m_echo".to_owned()));
}

#[tokio::test]
async fn back_within_two_seconds_after_a_long_outage() {
    let mut a = Fixture::http("legacy", "a");
    let port = a.port;
    let yaml = format!("name: br\nbackends:\n{}", http_backend("a", &a.url));
    let gw = Gateway::start(&yaml);
    let c = client_for(&gw, false).await;
    assert_eq!(timed(&c, "a_echo").await.0.answer(), "Echo: x");
    let attempts = |s: &Value| s["connectAttempts"].as_u64().unwrap_or(0);
    let before = attempts(&gw.backend_status("a").await);

    a.proc.terminate(Duration::from_secs(5));
    // Eight failed reconnects: with a doubling delay they take 64 s; capped, about 7 s.
    let outage = Instant::now();
    poll(Duration::from_secs(20), "eight reconnect attempts", || {
        let gw = &gw;
        async move { (attempts(&gw.backend_status("a").await) >= before + 8).then_some(()) }
    })
    .await;
    println!("outage of {:?} so far", outage.elapsed());

    let _a = Fixture::http_on(port, "legacy", "a");
    let returned = Instant::now();
    poll(Duration::from_secs(10), "a_echo to answer again", || {
        let c = c.clone();
        async move { (timed(&c, "a_echo").await.0.answer() == "Echo: x").then_some(()) }
    })
    .await;
    let back = returned.elapsed();
    println!("back in service {back:?} after the backend returned");
    assert!(back < Duration::from_secs(2), "back after {back:?}");
}

#[tokio::test]
async fn http_timeouts_are_32003_every_time() {
    let a = Fixture::http("legacy", "a");
    let yaml = format!("name: br\nbackends:\n{}    timeout: 300ms\n", http_backend("a", &a.url));
    let gw = Gateway::start(&yaml);
    let c = client_for(&gw, false).await;
    let calls = (0..20).map(|_| {
        let c = c.clone();
        async move { c.tool(false, "a_sleep", json!({ "ms": 5000 })).await }
    });
    let codes: Vec<i64> =
        futures::future::join_all(calls).await.iter().map(Reply::error_code).collect();
    assert!(codes.iter().all(|c| *c == -32003), "{codes:?}");
}

#[tokio::test]
async fn over_long_stdio_reply_fails_at_once() {
    let yaml = format!(
        "name: br\nbackends:\n{}operational:\n  maxBackendReplyBytes: 65536\n",
        stdio_backend("s")
    );
    let gw = Gateway::start(&yaml);
    let c = client_for(&gw, false).await;
    let started = Instant::now();
    let r = c.tool(false, "s_echo", json!({ "message": "x".repeat(100_000) })).await;
    let took = started.elapsed();
    let e = r.error();
    assert!(took < Duration::from_secs(5), "failed after {took:?}: {e}");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("65536")), "{e}");
    assert_eq!(c.tool(false, "s_echo", json!({ "message": "ok" })).await.text(), "Echo: ok");
}
