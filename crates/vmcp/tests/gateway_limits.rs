//! `server.limits` end to end: each bound is hit by one client, answered with the documented HTTP
//! status and JSON-RPC error naming the key, while another client is still served; and session
//! expiry and teardown keep their deadlines when a backend goes silent.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const URI: &str = "test://static-text";

/// A config with one stdio fixture backend `s` and the given `server.limits` lines (each
/// `key: value`).
fn yaml_with(limits: &[&str]) -> String {
    let mut y = format!("name: limits\nbackends:\n{}", stdio_backend("s"));
    if !limits.is_empty() {
        y.push_str("server:\n  limits:\n");
        for l in limits {
            y.push_str(&format!("    {l}\n"));
        }
    }
    y
}

/// The error object of a response that must be a JSON-RPC error.
fn error_of(ev_msg: &Value) -> &Value {
    ev_msg.get("error").unwrap_or_else(|| panic!("expected an error, got {ev_msg}"))
}

/// Sends `initialize` and returns the HTTP status and the message.
async fn raw_initialize(c: &Client) -> (u16, Value) {
    let id = c.id();
    let body = request(
        id,
        "initialize",
        json!({
            "protocolVersion": LEGACY,
            "capabilities": {},
            "clientInfo": { "name": "vmcp-itest", "version": "1" },
        }),
    );
    let mut ev = c.open(c.post().json(&body)).await;
    let status = ev.status;
    (status, ev.next().await)
}

/// `GET /health` answers: the gateway serves.
async fn healthy(gw: &Gateway) {
    let r = reqwest::get(format!("{}/health", gw.base)).await.expect("GET /health");
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn long_uri_is_refused_with_the_limit_named() {
    let gw = Gateway::start(&yaml_with(&[]));
    let mut a = gw.client();
    a.legacy_init().await;
    // 1 MiB: far over the 8 KiB default, still under the request body limit.
    let long = format!("test://template/{}/data", "a".repeat(1 << 20));
    let r = a.call("resources/read", json!({ "uri": long })).await;
    assert_eq!(r.error_code(), -32602, "{:?}", r.message);
    let msg = r.error()["message"].as_str().unwrap_or_default().to_owned();
    assert!(msg.contains("server.limits.maxUriLength"), "{msg}");
    assert!(msg.contains("8192"), "{msg}");
    let r = a.call("resources/subscribe", json!({ "uri": long })).await;
    assert_eq!(r.error_code(), -32602, "{:?}", r.message);

    // A Modern request repeats the URI in its `Mcp-Name` header, so a 1 MiB one never gets past
    // HTTP header limits (431); 16 KiB does, and is refused by the gateway.
    let b = gw.client();
    let long = format!("test://template/{}/data", "a".repeat(16 << 10));
    let r = b.modern_call("resources/read", json!({ "uri": long })).await;
    assert_eq!(r.error_code(), -32602, "{:?}", r.message);
    assert!(r.error()["message"].as_str().unwrap_or_default().contains("maxUriLength"));

    // Meanwhile, and afterwards, ordinary URIs are read, templates included.
    let r = b.modern_call("resources/read", json!({ "uri": URI })).await;
    assert!(r.msg().get("error").is_none(), "{:?}", r.message);
    let r = a.call("resources/read", json!({ "uri": "test://template/42/data" })).await;
    assert!(r.msg().get("error").is_none(), "{:?}", r.message);
}

#[tokio::test]
async fn sessions_over_the_total_get_503() {
    let gw = Gateway::start(&yaml_with(&["maxSessions: 2", "maxSessionsPerPrincipal: 2"]));
    let mut a = gw.client();
    a.legacy_init().await;
    let mut b = gw.client();
    b.legacy_init().await;
    let (status, msg) = raw_initialize(&gw.client()).await;
    assert_eq!(status, 503, "{msg}");
    let e = error_of(&msg);
    assert_eq!(e["code"], -32600, "{msg}");
    assert!(e["message"].as_str().unwrap_or_default().contains("server.limits.maxSessions"));
    assert_eq!(e["data"]["limit"], "maxSessions");
    // Existing sessions and stateless clients are still served.
    assert!(!a.tool_names(false).await.is_empty());
    assert!(!gw.client().tool_names(true).await.is_empty());
    // Ending a session frees its slot.
    assert_eq!(b.delete_session().await, 200);
    let mut c = gw.client();
    c.legacy_init().await;
}

#[tokio::test]
async fn sessions_over_the_principal_share_get_429() {
    // Anonymous clients are one principal.
    let gw = Gateway::start(&yaml_with(&["maxSessions: 10", "maxSessionsPerPrincipal: 2"]));
    let mut a = gw.client();
    a.legacy_init().await;
    let mut b = gw.client();
    b.legacy_init().await;
    let (status, msg) = raw_initialize(&gw.client()).await;
    assert_eq!(status, 429, "{msg}");
    let e = error_of(&msg);
    assert_eq!(e["code"], -32600, "{msg}");
    assert!(
        e["message"].as_str().unwrap_or_default().contains("server.limits.maxSessionsPerPrincipal"),
        "{msg}"
    );
    assert!(!b.tool_names(false).await.is_empty());
    assert_eq!(gw.status().await["sessions"], 2, "a refused initialize creates nothing");
}

/// Starts a slow tool call in the background; the returned handle ends when it is answered.
/// Starts a slow call and waits until the backend has it, so it holds its in-flight slot before
/// anything else is sent (otherwise a racing request could take the slot first).
async fn slow_call(
    gw: &Gateway,
    c: &Client,
    modern: bool,
    ms: u64,
) -> tokio::task::JoinHandle<Reply> {
    let c = c.clone();
    let task = tokio::spawn(async move { c.tool(modern, "s_sleep", json!({ "ms": ms })).await });
    poll(STEP, "the slow call in flight at the backend", || async {
        let st = gw.backend_status("s").await;
        (st["isolation"]["inFlight"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    task
}

/// Pings until one is refused (the slow call has been admitted), returning that refusal.
async fn refused_ping(c: &Client, modern: bool) -> (u16, Value) {
    poll(STEP, "a request refused for in-flight limits", || async {
        let (_, mut ev) = if modern {
            c.modern_start("tools/list", json!({})).await
        } else {
            c.start("ping", json!({})).await
        };
        let status = ev.status;
        let msg = ev.next().await;
        (status != 200).then_some((status, msg))
    })
    .await
}

#[tokio::test]
async fn in_flight_per_session_gets_429() {
    let gw = Gateway::start(&yaml_with(&["maxInFlightPerSession: 1"]));
    let mut a = gw.client();
    a.legacy_init().await;
    let mut b = gw.client();
    b.legacy_init().await;
    let slow = slow_call(&gw, &a, false, 3000).await;
    let (status, msg) = refused_ping(&a, false).await;
    assert_eq!(status, 429, "{msg}");
    let e = error_of(&msg);
    assert_eq!(e["code"], -32600);
    assert!(
        e["message"].as_str().unwrap_or_default().contains("server.limits.maxInFlightPerSession"),
        "{msg}"
    );
    // Another session is served while `a` is at its limit.
    let r = b.call("ping", json!({})).await;
    assert!(r.msg().get("error").is_none(), "{:?}", r.message);
    let done = slow.await.expect("slow call");
    assert!(done.msg().get("error").is_none(), "{:?}", done.message);
    // The slot came back with the answer.
    let r = a.call("ping", json!({})).await;
    assert!(r.msg().get("error").is_none(), "{:?}", r.message);
}

/// One principal's requests cannot take every in-flight slot: past its share it gets 429 naming
/// the key, while another principal is served.
#[tokio::test]
async fn in_flight_per_principal_gets_429() {
    use common::local_idp::{AUDIENCE, LocalIdp};
    let idp = LocalIdp::start();
    let yaml = format!(
        "name: limits\nincomingAuth:\n  type: oidc\n  oidc:\n    issuer: {}\n    audience: {AUDIENCE}\n\
         backends:\n{}server:\n  limits:\n    maxInFlightPerPrincipal: 1\n",
        idp.url,
        stdio_backend("s"),
    );
    let gw = Gateway::start(&yaml);
    let mut alice = gw.client();
    alice.bearer = Some(idp.token("alice"));
    let mut bob = gw.client();
    bob.bearer = Some(idp.token("bob"));
    let slow = slow_call(&gw, &alice, true, 3000).await;
    let (status, msg) = refused_ping(&alice, true).await;
    assert_eq!(status, 429, "{msg}");
    let e = error_of(&msg);
    assert!(
        e["message"].as_str().unwrap_or_default().contains("server.limits.maxInFlightPerPrincipal"),
        "{msg}"
    );
    assert!(!bob.tool_names(true).await.is_empty(), "another principal is served meanwhile");
    assert!(slow.await.expect("slow call").msg().get("error").is_none());
    assert!(!alice.tool_names(true).await.is_empty(), "served again once the slot is free");
}

#[tokio::test]
async fn in_flight_total_gets_503() {
    let gw = Gateway::start(&yaml_with(&["maxInFlight: 1", "maxInFlightPerSession: 1"]));
    let a = gw.client();
    let slow = slow_call(&gw, &a, true, 3000).await;
    let b = gw.client();
    let (status, msg) = refused_ping(&b, true).await;
    assert_eq!(status, 503, "{msg}");
    let e = error_of(&msg);
    assert_eq!(e["code"], -32600);
    assert!(e["message"].as_str().unwrap_or_default().contains("server.limits.maxInFlight"));
    // Requests are refused, not queued: the gateway itself still answers at once.
    healthy(&gw).await;
    assert!(slow.await.expect("slow call").msg().get("error").is_none());
    assert!(!b.tool_names(true).await.is_empty(), "served again once the slot is free");
}

#[tokio::test]
async fn get_streams_per_session_get_429() {
    let gw = Gateway::start(&yaml_with(&["maxStreamsPerSession: 1"]));
    let mut a = gw.client();
    a.legacy_init().await;
    let mut b = gw.client();
    b.legacy_init().await;
    let first = a.get_stream().await;
    assert_eq!(first.status, 200);
    let mut second = a.get_stream().await;
    assert_eq!(second.status, 429);
    let msg = second.next().await;
    let e = error_of(&msg);
    assert_eq!(e["code"], -32600);
    assert!(
        e["message"].as_str().unwrap_or_default().contains("server.limits.maxStreamsPerSession"),
        "{msg}"
    );
    // Another session gets its stream.
    assert_eq!(b.get_stream().await.status, 200);
    // Closing the first stream frees the slot. The server may notice the closed connection only
    // at the stream's next write (a keep-alive every 15s), hence the longer wait.
    drop(first);
    poll(Duration::from_secs(40), "a GET stream after the first closed", || async {
        (a.get_stream().await.status == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn subscriptions_per_session_are_capped() {
    let gw = Gateway::start(&yaml_with(&["maxSubscriptionsPerSession: 1"]));
    let mut a = gw.client();
    a.legacy_init().await;
    let mut b = gw.client();
    b.legacy_init().await;
    let r = a.call("resources/subscribe", json!({ "uri": URI })).await;
    assert!(r.msg().get("error").is_none(), "{:?}", r.message);
    let r = a.call("resources/subscribe", json!({ "uri": "test://watched-resource" })).await;
    assert_eq!(r.error_code(), -32600, "{:?}", r.message);
    assert!(
        r.error()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("server.limits.maxSubscriptionsPerSession"),
        "{:?}",
        r.message
    );
    // Re-subscribing the same URI is no new subscription; another session subscribes freely.
    let r = a.call("resources/subscribe", json!({ "uri": URI })).await;
    assert!(r.msg().get("error").is_none(), "{:?}", r.message);
    let r = b.call("resources/subscribe", json!({ "uri": "test://watched-resource" })).await;
    assert!(r.msg().get("error").is_none(), "{:?}", r.message);
    // A listen stream asking for more URIs than the limit is refused as a whole.
    let c = gw.client();
    let (_, mut ev) = c
        .modern_start(
            "subscriptions/listen",
            json!({ "notifications": { "resourceSubscriptions": [URI, "test://watched-resource"] } }),
        )
        .await;
    assert_eq!(ev.status, 429);
    let msg = ev.next().await;
    assert_eq!(error_of(&msg)["data"]["limit"], "maxSubscriptionsPerSession");
}

/// `subscriptions/listen` streams are counted while open: one principal beyond
/// `maxListenStreamsPerPrincipal` gets 429 naming the key, and a closed stream gives its slot
/// back.
#[tokio::test]
async fn listen_streams_per_principal_are_capped() {
    let gw = Gateway::start(&yaml_with(&["maxListenStreamsPerPrincipal: 2"]));
    let c = gw.client();
    let listen = json!({ "notifications": { "toolsListChanged": true } });
    let (_, mut first) = c.modern_start("subscriptions/listen", listen.clone()).await;
    assert_eq!(first.status, 200);
    first.next().await;
    let (_, mut second) = c.modern_start("subscriptions/listen", listen.clone()).await;
    assert_eq!(second.status, 200);
    second.next().await;
    assert_eq!(gw.status().await["listenStreams"], 2);
    let (_, mut third) = c.modern_start("subscriptions/listen", listen.clone()).await;
    assert_eq!(third.status, 429);
    let msg = third.next().await;
    assert_eq!(error_of(&msg)["data"]["limit"], "maxListenStreamsPerPrincipal", "{msg}");
    drop(first);
    poll(STEP, "the closed stream's slot to come back", || async {
        (gw.status().await["listenStreams"] == 1).then_some(())
    })
    .await;
    let (_, mut again) = c.modern_start("subscriptions/listen", listen).await;
    assert_eq!(again.status, 200);
    again.next().await;
}

#[tokio::test]
async fn idle_sessions_expire_after_the_configured_timeout() {
    let gw = Gateway::start(&yaml_with(&["sessionIdleTimeout: 1s"]));
    let mut a = gw.client();
    a.legacy_init().await;
    assert_eq!(gw.status().await["sessions"], 1);
    // /status does not touch sessions, so watching it does not keep `a` alive.
    poll(STEP, "the idle session to expire", || async {
        (gw.status().await["sessions"] == 0).then_some(())
    })
    .await;
    let r = a.call("ping", json!({})).await;
    assert_eq!(r.error_code(), -32600, "an expired session is unknown: {:?}", r.message);
}

/// Starts `vmcp serve` with extra arguments; returns the process and the `/mcp` URL.
fn start_vmcp_with(yaml: &str, extra: &[&str]) -> (Proc, String) {
    let config = temp_path("limits", "yaml");
    std::fs::write(&config, yaml).expect("writing the config");
    let mut cmd = Command::new(vmcp_bin());
    cmd.arg("serve").arg("--config").arg(&config).args(["--port", "0"]).args(extra);
    cmd.env("VMCP_LOG", "info");
    let proc = Proc::start("vmcp", cmd);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines = proc.lines();
        let url = lines
            .iter()
            .find_map(|l| l.split_once("listening on ").map(|(_, u)| u.trim().to_owned()));
        if let Some(url) = url
            && lines.iter().any(|l| l.trim_start().starts_with("catalog:"))
        {
            return (proc, url);
        }
        assert!(Instant::now() < deadline, "vmcp did not start: {}", proc.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn session_ttl_flag_overrides_the_config() {
    let (mut proc, url) =
        start_vmcp_with(&yaml_with(&["sessionIdleTimeout: 1h"]), &["--session-ttl", "1s"]);
    let status_url = url.trim_end_matches("/mcp").to_owned() + "/status";
    let sessions = || async {
        let s: Value = reqwest::get(&status_url).await.ok()?.json().await.ok()?;
        s["sessions"].as_u64()
    };
    let mut a = Client::new(&url);
    // The server may still be binding its router for a moment after printing the summary.
    poll(STEP, "vmcp to serve", || async { sessions().await }).await;
    a.legacy_init().await;
    assert_eq!(sessions().await, Some(1));
    poll(STEP, "the session to expire after --session-ttl", || async {
        (sessions().await == Some(0)).then_some(())
    })
    .await;
    proc.terminate(Duration::from_secs(10));
}

#[tokio::test]
async fn a_bad_session_ttl_is_refused() {
    let out = Command::new(vmcp_bin())
        .args(["serve", "--config", "/nonexistent.yaml", "--session-ttl", "10"])
        .output()
        .expect("running vmcp");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--session-ttl") && err.contains("invalid duration"), "{err}");
}

/// A Legacy HTTP fixture that never answers the requests named in `hang` (`unsubscribe`,
/// `delete`).
fn silent_teardown_fixture(hang: &[&str]) -> (Proc, String) {
    let mut cmd = Command::new(fixture_bin());
    cmd.args(["http", "--port", "0", "--era", "legacy", "--name", "h"]);
    for h in hang {
        cmd.args(["--hang-on", h]);
    }
    let proc = Proc::start("fixture h", cmd);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(url) =
            proc.lines().iter().find_map(|l| l.strip_prefix("listening on ").map(str::to_owned))
        {
            return (proc, url.trim().to_owned());
        }
        assert!(Instant::now() < deadline, "fixture did not start: {}", proc.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Legacy session with a per-client backend session at `h` holding a subscription, so that
/// ending it needs an unsubscribe and a DELETE at the silent backend.
async fn subscribed_session(gw: &Gateway) -> Client {
    let mut c = gw.client();
    c.legacy_init().await;
    let r = c.call("resources/subscribe", json!({ "uri": URI })).await;
    assert!(r.msg().get("error").is_none(), "{:?}", r.message);
    c
}

#[tokio::test]
async fn a_silent_backend_does_not_delay_other_sessions_expiry() {
    let (_fixture, url) = silent_teardown_fixture(&["unsubscribe", "delete"]);
    // Teardown may take 60s per backend call: far longer than the test waits for `b` to expire.
    let yaml = format!(
        "name: limits\nbackends:\n{}server:\n  limits:\n    sessionIdleTimeout: 1s\n    teardownTimeout: 60s\n",
        http_backend("h", &url)
    );
    let gw = Gateway::start(&yaml);
    subscribed_session(&gw).await;
    poll(STEP, "the first session to expire", || async {
        (gw.status().await["sessions"] == 0).then_some(())
    })
    .await;
    // The first session's teardown now hangs at the backend; the reaper must go on regardless.
    let mut b = gw.client();
    b.legacy_init().await;
    assert_eq!(gw.status().await["sessions"], 1);
    poll(STEP, "the second session to expire while the first teardown hangs", || async {
        (gw.status().await["sessions"] == 0).then_some(())
    })
    .await;
    // And the gateway serves a new client meanwhile.
    let mut c = gw.client();
    c.legacy_init().await;
    assert!(!c.tool_names(false).await.is_empty());
}

#[tokio::test]
async fn delete_keeps_its_deadline_with_a_silent_backend() {
    let (_fixture, url) = silent_teardown_fixture(&["unsubscribe", "delete"]);
    let yaml = format!(
        "name: limits\nbackends:\n{}server:\n  limits:\n    teardownTimeout: 1s\n",
        http_backend("h", &url)
    );
    let gw = Gateway::start(&yaml);
    let a = subscribed_session(&gw).await;
    let b = subscribed_session(&gw).await;
    // Without a deadline this waits for the HTTP client's own 30s timeout, twice;
    // `delete_session` fails the test after STEP (15s).
    assert_eq!(a.delete_session().await, 200);
    assert_eq!(gw.status().await["sessions"], 1);
    assert!(!b.tool_names(false).await.is_empty(), "the other session is still served");
}

#[tokio::test]
async fn sigterm_keeps_its_deadline_with_a_silent_backend() {
    // Only the unsubscribe hangs: the backend's own shutdown (its DELETEs) is not this test's.
    let (_fixture, url) = silent_teardown_fixture(&["unsubscribe"]);
    let yaml = format!(
        "name: limits\nbackends:\n{}server:\n  limits:\n    teardownTimeout: 1s\n",
        http_backend("h", &url)
    );
    let mut gw = Gateway::start(&yaml);
    let _a = subscribed_session(&gw).await;
    // Shutdown ends the open session first; its unsubscribe gets 1s, not the HTTP client's 30s.
    assert!(
        gw.proc.terminate(Duration::from_secs(10)),
        "vmcp did not exit on SIGTERM with a silent backend\n{}",
        gw.proc.stderr()
    );
}

/// `_meta` of a Modern client that declares sampling.
fn sampling_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": { "sampling": {} },
        "io.modelcontextprotocol/clientInfo": { "name": "vmcp-itest", "version": "1" },
    })
}

/// The text of a reply that must be a failure: a JSON-RPC error's message or an `isError` tool
/// result's text.
fn failure_text(r: &Reply) -> String {
    let m = r.msg();
    if let Some(e) = m.get("error") {
        return e.to_string();
    }
    assert_eq!(m["result"]["isError"], json!(true), "expected a failure, got {m}");
    m["result"].to_string()
}

#[tokio::test]
async fn pending_relays_per_session_are_capped() {
    let hl = Fixture::http("legacy", "hl");
    let yaml = format!(
        "name: limits\nbackends:\n{}server:\n  limits:\n    maxPendingRelaysPerSession: 1\n",
        http_backend("hl", &hl.url)
    );
    let gw = Gateway::start(&yaml);
    let mut a = gw.client();
    a.legacy_init_with(json!({ "sampling": {} })).await;
    let sample = json!({ "name": "hl_test_sampling", "arguments": { "prompt": "hi" } });
    let (first_id, mut first) = a.start("tools/call", sample.clone()).await;
    let req = first.next().await;
    assert_eq!(req["method"], "sampling/createMessage", "{req}");
    // The session's one relay slot is taken: the next server-to-client request is refused to the
    // backend at once, naming the limit, instead of piling up.
    let second = a.call("tools/call", sample.clone()).await;
    let text = failure_text(&second);
    assert!(text.contains("maxPendingRelaysPerSession"), "{text}");
    // Another session gets its relay meanwhile.
    let mut b = gw.client();
    b.legacy_init_with(json!({ "sampling": {} })).await;
    let (_, mut other) = b.start("tools/call", sample.clone()).await;
    assert_eq!(other.next().await["method"], "sampling/createMessage");
    // Answering frees the slot.
    let answer = json!({
        "jsonrpc": "2.0",
        "id": req["id"],
        "result": { "role": "assistant", "content": { "type": "text", "text": "ok" }, "model": "m" },
    });
    assert_eq!(a.open(a.post().json(&answer)).await.status, 202);
    let done = first.reply(first_id, STEP).await;
    assert_eq!(done.text(), "LLM response: ok", "{:?}", done.message);
    let (_, mut third) = a.start("tools/call", sample).await;
    assert_eq!(third.next().await["method"], "sampling/createMessage");
}

#[tokio::test]
async fn parked_calls_per_principal_are_capped() {
    // A Legacy HTTP backend: each call's sampling request comes on that call's own response
    // stream. (On a shared stdio child, two Modern calls in flight could not be told apart, and
    // the second call's sampling request would be refused before reaching the cap.)
    let f = Fixture::http("legacy", "s");
    let yaml = format!(
        "name: limits\nbackends:\n{}server:\n  limits:\n    maxParkedCalls: 5\n    maxParkedCallsPerPrincipal: 1\n",
        http_backend("s", &f.url)
    );
    let gw = Gateway::start(&yaml);
    let c = gw.client();
    let call = json!({ "name": "s_test_sampling", "arguments": { "prompt": "q" }, "_meta": sampling_meta() });
    let first = c.modern_call("tools/call", call.clone()).await;
    assert_eq!(first.result()["resultType"], "input_required", "{:?}", first.message);
    let state = first.result()["requestState"].as_str().expect("requestState").to_owned();
    let key = first.result()["inputRequests"]
        .as_object()
        .and_then(|r| r.keys().next().cloned())
        .expect("one input request");
    // Anonymous clients are one principal: its one parked slot is taken.
    let second = c.modern_call("tools/call", call.clone()).await;
    assert_eq!(second.error_code(), -32600, "{:?}", second.message);
    assert_eq!(second.error()["data"]["limit"], "maxParkedCallsPerPrincipal");
    assert!(
        second.error()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("server.limits.maxParkedCallsPerPrincipal")
    );
    // Everything else is served meanwhile.
    let mut legacy = gw.client();
    legacy.legacy_init().await;
    assert!(!legacy.tool_names(false).await.is_empty());
    // Resuming the parked call frees the slot.
    let answer =
        json!({ "role": "assistant", "content": { "type": "text", "text": "A" }, "model": "m" });
    let retry = json!({
        "name": "s_test_sampling",
        "arguments": { "prompt": "q" },
        "requestState": state,
        "inputResponses": { key: answer },
        "_meta": sampling_meta(),
    });
    let done = c.modern_call("tools/call", retry).await;
    assert_eq!(done.result()["content"][0]["text"], "LLM response: A", "{:?}", done.message);
    let again = c.modern_call("tools/call", call).await;
    assert_eq!(again.result()["resultType"], "input_required", "{:?}", again.message);
}
