//! Client sessions and the backend sessions behind them: each Legacy client session gets its own
//! session at a Legacy HTTP backend (reused across calls, ended with the client's), Modern clients
//! share the gateway's session, and a restarted backend is picked up with a new session.
//!
//! Which backend session served a call is read from the fixture's `whoami`, which reports the
//! `mcp-session-id` header it received.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// A gateway with one Legacy-only HTTP fixture backend `f`.
fn legacy_gateway() -> (Gateway, Fixture) {
    let f = Fixture::http("legacy", "f");
    let gw = Gateway::start(&format!("name: sess\nbackends:\n{}", http_backend("f", &f.url)));
    (gw, f)
}

/// The backend session that served `c`'s `f_whoami` (Legacy or Modern).
async fn backend_session(c: &Client, modern: bool) -> String {
    let r = c.tool(modern, "f_whoami", json!({})).await;
    backend_session_of(&r)
        .unwrap_or_else(|| panic!("modern={modern}: whoami saw no mcp-session-id: {}", r.text()))
}

#[tokio::test]
async fn each_legacy_client_gets_its_own_reused_backend_session() {
    let (gw, _f) = legacy_gateway();
    let a = client_for(&gw, false).await;
    let b = client_for(&gw, false).await;

    let a1 = backend_session(&a, false).await;
    let b1 = backend_session(&b, false).await;
    assert_ne!(a1, b1, "two client sessions share one backend session");

    // Repeated calls reuse the session: no initialize per call.
    for _ in 0..3 {
        assert_eq!(backend_session(&a, false).await, a1, "client A's backend session changed");
        assert_eq!(backend_session(&b, false).await, b1, "client B's backend session changed");
    }
    // Other requests of the same client go to the same session too.
    assert_eq!(a.tool(false, "f_echo", json!({ "message": "x" })).await.text(), "Echo: x");
    assert_eq!(backend_session(&a, false).await, a1);
}

#[tokio::test]
async fn client_delete_ends_only_its_backend_session() {
    let (gw, f) = legacy_gateway();
    let a = client_for(&gw, false).await;
    let b = client_for(&gw, false).await;
    let a_backend = backend_session(&a, false).await;
    let b_backend = backend_session(&b, false).await;

    // Control: while A's client session lives, its backend session answers direct requests.
    let direct =
        post_on_backend_session(&f.url, &a_backend, "echo", json!({ "message": "d" })).await;
    assert_eq!(direct.status, 200, "{direct:?}");
    assert_eq!(direct.text(), "Echo: d");

    assert_eq!(a.delete_session().await, 200, "DELETE of A's session");

    // The DELETE ended A's backend session at the backend.
    let gone = post_on_backend_session(&f.url, &a_backend, "echo", json!({ "message": "d" })).await;
    assert_eq!(gone.status, 404, "A's backend session still exists after A's DELETE: {gone:?}");
    // A's own session is gone at the gateway as well.
    let r =
        a.call("tools/call", json!({ "name": "f_echo", "arguments": { "message": "x" } })).await;
    assert_eq!(r.status, 404, "{r:?}");

    // B is untouched: it still works and keeps its backend session.
    assert_eq!(b.tool(false, "f_echo", json!({ "message": "b" })).await.text(), "Echo: b");
    assert_eq!(backend_session(&b, false).await, b_backend);
    let direct =
        post_on_backend_session(&f.url, &b_backend, "echo", json!({ "message": "e" })).await;
    assert_eq!(direct.status, 200, "B's backend session was ended too: {direct:?}");
}

#[tokio::test]
async fn modern_clients_use_the_shared_backend_session() {
    let (gw, _f) = legacy_gateway();
    let a = client_for(&gw, false).await;
    let b = client_for(&gw, false).await;
    let a_backend = backend_session(&a, false).await;
    let b_backend = backend_session(&b, false).await;

    let m1 = gw.client();
    let m2 = gw.client();
    let s1 = backend_session(&m1, true).await;
    let s2 = backend_session(&m2, true).await;
    assert_eq!(s1, s2, "two Modern calls use different backend sessions");
    assert_eq!(backend_session(&m1, true).await, s1, "the shared session changed");
    assert_ne!(s1, a_backend, "a Modern client was served on client A's backend session");
    assert_ne!(s1, b_backend, "a Modern client was served on client B's backend session");
    // Legacy clients keep theirs.
    assert_eq!(backend_session(&a, false).await, a_backend);
}

#[tokio::test]
async fn legacy_client_survives_a_backend_restart_with_a_new_backend_session() {
    let f = Fixture::http("legacy", "f");
    let port = f.port;
    let gw = Gateway::start(&format!("name: sess\nbackends:\n{}", http_backend("f", &f.url)));
    let a = client_for(&gw, false).await;
    let before = backend_session(&a, false).await;
    assert_eq!(a.tool(false, "f_counter", json!({})).await.text(), "1");

    drop(f);
    // While the backend is gone a call fails promptly instead of hanging.
    let r = a.tool(false, "f_echo", json!({ "message": "x" })).await;
    assert!(
        r.message
            .as_ref()
            .is_some_and(|m| m.get("error").is_some() || m["result"]["isError"] == true),
        "a call to a dead backend did not fail: {r:?}"
    );

    let _f2 = Fixture::http_on(port, "legacy", "f");
    let after = poll(Duration::from_secs(40), "f_whoami to answer after the restart", || {
        let a = a.clone();
        async move {
            let r = a.tool(false, "f_whoami", json!({})).await;
            r.message.as_ref().and_then(|m| m.get("result"))?;
            backend_session_of(&r)
        }
    })
    .await;
    assert_ne!(after, before, "the restarted backend cannot know the old session");
    // It is a fresh process, and the client keeps its new backend session.
    assert_eq!(a.tool(false, "f_counter", json!({})).await.text(), "1");
    assert_eq!(backend_session(&a, false).await, after);
    assert_eq!(gw.backend_status("f").await["state"], "ready");
}

#[tokio::test]
async fn legacy_client_survives_a_quiet_backend_restart() {
    // The backend restarts between two calls: the client's next call finds its backend session
    // unknown (404) and gets a new one, without the caller seeing an error.
    let f = Fixture::http("legacy", "f");
    let port = f.port;
    let gw = Gateway::start(&format!("name: sess\nbackends:\n{}", http_backend("f", &f.url)));
    let a = client_for(&gw, false).await;
    let before = backend_session(&a, false).await;
    drop(f);
    let _f2 = Fixture::http_on(port, "legacy", "f");

    let after = poll(Duration::from_secs(40), "f_whoami to answer after the restart", || {
        let a = a.clone();
        async move {
            let r = a.tool(false, "f_whoami", json!({})).await;
            r.message.as_ref().and_then(|m| m.get("result"))?;
            backend_session_of(&r)
        }
    })
    .await;
    assert_ne!(after, before);
    assert_eq!(backend_session(&a, false).await, after);
}

#[tokio::test]
async fn session_ids_carry_at_least_128_random_bits() {
    let (gw, _f) = legacy_gateway();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut c = gw.client();
        ids.push(c.legacy_init().await);
    }
    for id in &ids {
        let hex = id.chars().filter(char::is_ascii_hexdigit).count();
        assert!(hex >= 32, "session id {id:?} has only {hex} hex digits");
        assert!(id.chars().all(|c| c.is_ascii_graphic()), "session id {id:?} is not visible ASCII");
    }
    assert_ne!(ids[0], ids[1], "two sessions got the same id");
}

#[tokio::test]
async fn twenty_concurrent_legacy_clients_get_their_own_answers() {
    let (gw, _f) = legacy_gateway();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let mut c = gw.client();
            tokio::spawn(async move {
                c.legacy_init().await;
                let message = format!("client-{i}");
                let r = c.tool(false, "f_echo", json!({ "message": message })).await;
                let whoami = c.tool(false, "f_whoami", json!({})).await;
                (i, r.text(), backend_session_of(&whoami))
            })
        })
        .collect();
    let mut backend_sessions = std::collections::HashSet::new();
    for t in tasks {
        let (i, text, backend) = t.await.expect("client task");
        assert_eq!(text, format!("Echo: client-{i}"));
        backend_sessions.insert(backend.expect("a backend session"));
    }
    assert_eq!(backend_sessions.len(), 20, "each client its own backend session");
}

#[tokio::test]
async fn racing_first_requests_of_one_client_open_one_backend_session() {
    let (gw, _f) = legacy_gateway();
    let mut c = gw.client();
    c.legacy_init().await;
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { backend_session(&c, false).await })
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for t in calls {
        seen.insert(t.await.expect("call task"));
    }
    assert_eq!(seen.len(), 1, "one client's racing first calls used several sessions: {seen:?}");
    assert_eq!(backend_session(&c, false).await, seen.into_iter().next().unwrap());
}

#[tokio::test]
async fn backend_session_ended_at_the_backend_is_reopened() {
    let (gw, f) = legacy_gateway();
    let a = client_for(&gw, false).await;
    let before = backend_session(&a, false).await;

    // End A's backend session behind the gateway's back.
    let resp = reqwest::Client::new()
        .delete(&f.url)
        .header("mcp-session-id", &before)
        .header("mcp-protocol-version", LEGACY)
        .send()
        .await
        .expect("DELETE at the backend");
    assert!(resp.status().is_success(), "DELETE at the backend: {}", resp.status());

    // The next call finds it gone (404) and is retried on a new session, invisibly.
    let r = a.tool(false, "f_whoami", json!({})).await;
    let after = backend_session_of(&r).expect("a backend session");
    assert_ne!(after, before);
    assert_eq!(backend_session(&a, false).await, after);
}

#[tokio::test]
async fn shared_session_is_renewed_after_a_backend_restart() {
    let f = Fixture::http("legacy", "f");
    let port = f.port;
    let gw = Gateway::start(&format!("name: sess\nbackends:\n{}", http_backend("f", &f.url)));
    let m = gw.client();
    let before = backend_session(&m, true).await;
    drop(f);
    let _f2 = Fixture::http_on(port, "legacy", "f");
    let after = poll(Duration::from_secs(40), "a Modern f_whoami after the restart", || {
        let m = m.clone();
        async move {
            let r = m.tool(true, "f_whoami", json!({})).await;
            r.message.as_ref().and_then(|m| m.get("result"))?;
            backend_session_of(&r)
        }
    })
    .await;
    assert_ne!(after, before);
    assert_eq!(backend_session(&m, true).await, after);
    // A Legacy client that starts now still gets a session of its own.
    let a = client_for(&gw, false).await;
    assert_ne!(backend_session(&a, false).await, after);
}

#[tokio::test]
async fn gateway_shutdown_ends_client_backend_sessions() {
    let (mut gw, f) = legacy_gateway();
    let a = client_for(&gw, false).await;
    let a_backend = backend_session(&a, false).await;
    let shared = backend_session(&gw.client(), true).await;
    assert!(gw.proc.terminate(Duration::from_secs(10)), "vmcp did not exit on SIGTERM");
    for (what, id) in [("client A's", &a_backend), ("the shared", &shared)] {
        let r = post_on_backend_session(&f.url, id, "echo", json!({ "message": "x" })).await;
        assert_eq!(r.status, 404, "{what} backend session outlived the gateway: {r:?}");
    }
}
