//! Per-principal catalogs: a backend reached with the caller's own credentials (`passthrough`)
//! is discovered with each principal's token and its tools are that principal's alone.
//!
//! The user-bound backend is `vmcp-fixture --user-tools`: it refuses `tools/list` and
//! `tools/call` without a bearer token (HTTP 401), lists `whoami_<sub>` for the token's subject,
//! and counts `tools/list` requests by subject (`/test/stats`). Next to it, a shared backend.
//! Tokens come from the OIDC provider inside the test process (`common::local_idp`).

mod common;

use std::time::Duration;

use common::local_idp::{AUDIENCE, LocalIdp};
use common::*;
use serde_json::{Value, json};

/// A gateway requiring tokens from `idp`, with the shared backend `s` and the user-bound
/// (`passthrough`) backend `u`.
fn gateway(idp: &LocalIdp, s: &Fixture, u: &Fixture, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "name: principals\nincomingAuth:\n  type: oidc\n  oidc:\n    issuer: {}\n    audience: {AUDIENCE}\n\
         outgoingAuth:\n  backends:\n    u: {{ type: passthrough }}\nbackends:\n{}{}{extra}",
        idp.url,
        http_backend("s", &s.url),
        http_backend("u", &u.url),
    ))
}

/// The user-bound fixture.
fn user_bound(era: &str) -> Fixture {
    Fixture::http_args(0, era, "u", &["--user-tools"])
}

fn client(gw: &Gateway, idp: &LocalIdp, sub: &str) -> Client {
    let mut c = gw.client();
    c.bearer = Some(idp.token(sub));
    c
}

/// `tools/list` requests the fixture at `url` received, by token subject (`""`: without one).
async fn list_counts(url: &str) -> Value {
    let stats: Value = reqwest::get(url.replace("/mcp", "/test/stats"))
        .await
        .expect("GET /test/stats")
        .json()
        .await
        .expect("stats JSON");
    stats["toolsList"].clone()
}

fn with_prefix(names: &[String], prefix: &str) -> Vec<String> {
    names.iter().filter(|n| n.starts_with(prefix)).cloned().collect()
}

/// Every page of `tools/list` for `c`, checking each page's Modern caching hints.
async fn all_tools(c: &Client, modern: bool) -> Vec<String> {
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let params = match &cursor {
            Some(cur) => json!({ "cursor": cur }),
            None => json!({}),
        };
        let r = if modern {
            c.modern_call("tools/list", params).await
        } else {
            c.call("tools/list", params).await
        };
        if modern {
            // The list may be this principal's own: never cacheable for anyone else.
            assert_eq!(r.result()["cacheScope"], "private", "{}", r.result());
            assert_eq!(r.result()["ttlMs"], 0, "{}", r.result());
        }
        names.extend(r.tool_names());
        match r.result().get("nextCursor").and_then(Value::as_str) {
            Some(next) => cursor = Some(next.to_owned()),
            None => return names,
        }
    }
}

/// Alice and Bob each see the shared tools plus their own user-bound ones, over pages; each can
/// call only their own, with their own token reaching the backend; `/status` shows the
/// user-bound backend ready; nobody's tools were listed without a token.
async fn principals_see_their_own(modern: bool, backend_era: &str) {
    let idp = LocalIdp::start();
    let s = Fixture::http("both", "s");
    let u = user_bound(backend_era);
    let gw = gateway(&idp, &s, &u, "server:\n  pageSize: 10\n");
    let mut alice = client(&gw, &idp, "alice");
    let mut bob = client(&gw, &idp, "bob");
    if !modern {
        alice.legacy_init().await;
        bob.legacy_init().await;
    }

    let a = all_tools(&alice, modern).await;
    let b = all_tools(&bob, modern).await;
    assert!(a.contains(&"u_whoami_alice".to_owned()), "{a:?}");
    assert!(!a.contains(&"u_whoami_bob".to_owned()), "{a:?}");
    assert!(b.contains(&"u_whoami_bob".to_owned()), "{b:?}");
    assert!(!b.contains(&"u_whoami_alice".to_owned()), "{b:?}");
    let mut unique = a.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), a.len(), "a tool came twice over the pages: {a:?}");
    // The shared backend's tools, and the tools the user-bound one lists for everyone, are the
    // same for both.
    assert!(a.contains(&"s_echo".to_owned()) && a.contains(&"u_echo".to_owned()), "{a:?}");
    assert_eq!(with_prefix(&a, "s_"), with_prefix(&b, "s_"));
    let own = |names: &[String], me: &str| {
        with_prefix(names, "u_").into_iter().filter(|n| n != me).collect::<Vec<_>>()
    };
    assert_eq!(own(&a, "u_whoami_alice"), own(&b, "u_whoami_bob"));

    // Alice's call reaches the backend with Alice's token.
    let r = alice.tool(modern, "u_whoami_alice", json!({})).await;
    let alice_token = alice.bearer.clone().unwrap();
    assert_eq!(whoami_of(&r)["authorization"], format!("Bearer {alice_token}"));
    // Bob has no such tool.
    let r = bob.tool(modern, "u_whoami_alice", json!({})).await;
    assert_eq!(r.error_code(), -32602, "{:?}", r.message);
    assert!(r.error()["message"].as_str().unwrap().contains("Unknown tool"), "{:?}", r.message);
    assert_eq!(bob.tool(modern, "s_echo", json!({ "message": "b" })).await.text(), "Echo: b");

    // Another principal sees neither.
    let carol = client(&gw, &idp, "carol");
    let c = carol.tool_names(true).await;
    assert!(!c.iter().any(|n| n == "u_whoami_alice" || n == "u_whoami_bob"), "{c:?}");

    let st = gw.backend_status("u").await;
    assert_eq!(st["state"], "ready", "{st}");
    assert_eq!(st["lastError"], Value::Null, "{st}");
    assert_eq!(st["userBound"], true, "{st}");
    poll(Duration::from_secs(10), "three principal catalogs in /status", || async {
        (gw.status().await["principalCatalogs"].as_u64() >= Some(3)).then_some(())
    })
    .await;
    // The gateway never listed the user-bound backend's tools without a user's token.
    let counts = list_counts(&u.url).await;
    assert_eq!(counts.get(""), None, "{counts}");
}

#[tokio::test]
async fn legacy_sessions_see_their_principals_tools() {
    principals_see_their_own(false, "legacy").await;
}

#[tokio::test]
async fn modern_requests_see_their_principals_tools() {
    principals_see_their_own(true, "both").await;
}

/// Concurrent first requests of one principal (lists and calls, both eras) discover the
/// user-bound backend once.
#[tokio::test]
async fn concurrent_first_requests_discover_once() {
    let idp = LocalIdp::start();
    let s = Fixture::http("both", "s");
    let u = user_bound("both");
    let gw = gateway(&idp, &s, &u, "");
    let mut legacy = client(&gw, &idp, "dave");
    legacy.legacy_init().await;
    let modern = client(&gw, &idp, "dave");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let c = if i % 2 == 0 { modern.clone() } else { legacy.clone() };
        let era = i % 2 == 0;
        tasks.push(tokio::spawn(async move {
            if i % 4 < 2 {
                c.tool_names(era).await.contains(&"u_whoami_dave".to_owned())
            } else {
                let r = c.tool(era, "u_whoami_dave", json!({})).await;
                whoami_of(&r)["authorization"].as_str().is_some_and(|a| a.starts_with("Bearer "))
            }
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap(), "a first request did not see dave's own tool");
    }
    assert_eq!(list_counts(&u.url).await["dave"], 1, "dave's tools were listed more than once");
}

/// A list_changed from the user-bound backend refreshes the principal whose list changed, and
/// only that principal is told; a shared change reaches everybody. Legacy sessions (GET stream)
/// and a Modern listen stream.
#[tokio::test]
async fn list_changed_refreshes_only_that_principal() {
    let idp = LocalIdp::start();
    let s = Fixture::http("both", "s");
    let u = user_bound("legacy");
    let gw = gateway(&idp, &s, &u, "");
    let mut alice = client(&gw, &idp, "alice");
    let mut bob = client(&gw, &idp, "bob");
    alice.legacy_init().await;
    bob.legacy_init().await;
    let bob_before = bob.tool_names(false).await;
    assert!(!alice.tool_names(false).await.contains(&"u_alices".to_owned()));
    let mut alice_stream = alice.get_stream().await;
    let mut bob_stream = bob.get_stream().await;
    assert!(alice_stream.is_sse && bob_stream.is_sse);
    let modern_alice = client(&gw, &idp, "alice");
    let (_, mut alice_listen) = modern_alice
        .modern_start(
            "subscriptions/listen",
            json!({ "notifications": { "toolsListChanged": true } }),
        )
        .await;
    let ack = alice_listen.next().await;
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged", "{ack}");
    let bob_lists = list_counts(&u.url).await["bob"].as_u64().unwrap();

    // Alice adds a tool to her own list at the backend, which announces a change.
    let r = alice.tool(false, "u_add_user_tool", json!({ "name": "alices" })).await;
    assert!(r.text().contains("Added alices"), "{:?}", r.message);
    for stream in [&mut alice_stream, &mut alice_listen] {
        next_list_changed(stream, "alice").await;
    }
    assert!(alice.tool_names(false).await.contains(&"u_alices".to_owned()));
    assert_eq!(alice.tool(true, "u_alices", json!({})).await.text(), "alices called by alice");

    // Bob's lists were fetched again (nobody can tell whose changed), but his catalog did not
    // change: he is not told, and does not have Alice's tool.
    poll(Duration::from_secs(10), "bob's lists fetched again", || {
        let url = u.url.clone();
        async move { (list_counts(&url).await["bob"].as_u64() > Some(bob_lists)).then_some(()) }
    })
    .await;
    let quiet = bob_stream.next_within(Duration::from_millis(500)).await;
    assert_eq!(quiet, None, "bob was told of a change to alice's catalog");
    assert_eq!(bob.tool_names(false).await, bob_before);
    assert_eq!(bob.tool(false, "u_alices", json!({})).await.error_code(), -32602);

    // A shared change reaches both, and the shared tools stay the same for both.
    let r = bob.tool(false, "s_notify_list_changed", json!({})).await;
    assert!(r.text().contains("dynamic_tool"), "{:?}", r.message);
    next_list_changed(&mut bob_stream, "bob").await;
    next_list_changed(&mut alice_stream, "alice").await;
    let (a, b) = (alice.tool_names(false).await, bob.tool_names(false).await);
    assert!(b.contains(&"s_dynamic_tool".to_owned()), "{b:?}");
    assert_eq!(with_prefix(&a, "s_"), with_prefix(&b, "s_"));
    assert!(a.contains(&"u_alices".to_owned()) && !b.contains(&"u_alices".to_owned()));
}

async fn next_list_changed(stream: &mut Events, who: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = stream
            .next_within(left)
            .await
            .unwrap_or_else(|| panic!("no tools/list_changed for {who}"));
        if m["method"] == "notifications/tools/list_changed" {
            return;
        }
    }
}

/// Without incoming authentication there are no principals: a user-bound backend stays in the
/// shared catalog (discovered without credentials, so here it lists nothing), and it is not
/// marked down for that.
#[tokio::test]
async fn an_anonymous_gateway_keeps_user_bound_backends_shared() {
    let s = Fixture::http("both", "s");
    let u = user_bound("both");
    let gw = Gateway::start(&format!(
        "name: anon\noutgoingAuth:\n  backends:\n    u: {{ type: passthrough }}\nbackends:\n{}{}",
        http_backend("s", &s.url),
        http_backend("u", &u.url),
    ));
    let c = gw.client();
    let names = c.tool_names(true).await;
    assert!(names.contains(&"s_echo".to_owned()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("u_")), "{names:?}");
    let st = gw.backend_status("u").await;
    assert_eq!((st["state"].as_str(), st["userBound"].as_bool()), (Some("ready"), Some(false)));
    assert_eq!(gw.status().await["principalCatalogs"], 0);
}

/// A user-bound backend that cannot be listed for a principal (here its token exchange has no
/// endpoint) leaves the principal's other tools alone; a call to a name the principal's catalog
/// lacks says which backend could not be listed and why (-32001), not just "unknown tool"; the
/// backend is not marked down.
#[tokio::test]
async fn an_unlistable_user_bound_backend_is_named_in_errors() {
    let idp = LocalIdp::start();
    let s = Fixture::http("both", "s");
    let u = user_bound("both");
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gw = Gateway::start_env(
        &format!(
            "name: unlisted\nincomingAuth:\n  type: oidc\n  oidc:\n    issuer: {}\n    audience: {AUDIENCE}\n\
             outgoingAuth:\n  backends:\n    u:\n      type: token_exchange\n      tokenExchange:\n        \
             tokenUrl: http://{dead}/token\n        clientId: vmcp\n        clientSecretEnv: VMCP_TEST_EXCHANGE_SECRET\n\
             backends:\n{}{}",
            idp.url,
            http_backend("s", &s.url),
            http_backend("u", &u.url),
        ),
        &[("VMCP_TEST_EXCHANGE_SECRET", "exchange-secret")],
    );
    let alice = client(&gw, &idp, "alice");
    let names = alice.tool_names(true).await;
    assert!(names.contains(&"s_echo".to_owned()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("u_")), "{names:?}");
    for modern in [true, false] {
        let mut c = alice.clone();
        if !modern {
            c.legacy_init().await;
        }
        let r = c.tool(modern, "u_echo", json!({ "message": "x" })).await;
        assert_eq!(r.error_code(), -32001, "{:?}", r.message);
        let msg = r.error()["message"].as_str().unwrap_or_default().to_owned();
        assert!(msg.starts_with("Unknown tool: u_echo") && msg.contains("u ("), "{msg}");
        assert_eq!(c.tool(modern, "s_echo", json!({ "message": "ok" })).await.text(), "Echo: ok");
    }
    assert_eq!(gw.backend_status("u").await["state"], "ready");
    assert_eq!(list_counts(&u.url).await, json!({}), "nothing reached the backend's tools/list");
}
