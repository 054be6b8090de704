//! Backend sessions of Streamable HTTP Legacy backends, end to end: the principal-aware pool
//! (one backend session per principal for Modern clients, per client session for Legacy ones,
//! the gateway's own for discovery), renewal when the backend forgets sessions, GET listeners
//! that stop on 405, idle expiry, and the reply size cap.
//!
//! What the backend saw is read from the fixture's `request_log` (method, session, authorization
//! of every HTTP request it received). Tests with principals need the mock IdP (`VMCP_NODE`, see
//! `.tools/env.sh`) and fail, saying so, without it.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::idp::Idp;
use common::*;
use serde_json::{Value, json};

const AUDIENCE: &str = "vmcp-test";

/// The mock IdP; these tests do not skip.
async fn idp(test: &str) -> Idp {
    Idp::start(test)
        .await
        .unwrap_or_else(|| panic!("{test} needs VMCP_NODE: run `source .tools/env.sh`"))
}

/// A fresh token for `sub` (a unique `jti` makes each token differ).
async fn token(idp: &Idp, sub: &str) -> String {
    static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let jti = NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    idp.token(json!({ "claims": { "sub": sub, "jti": format!("s{jti}") } })).await
}

/// `vmcp-fixture http` with extra arguments (`--get-status 405`, `--json-response`).
fn fixture(era: &str, name: &str, extra: &[&str]) -> Fixture {
    Fixture::http_args(0, era, name, extra)
}

/// A gateway requiring tokens from `idp` that passes each caller's token through to `h`.
fn oidc_gateway(idp: &Idp, h: &Fixture, operational: &str) -> Gateway {
    Gateway::start(&format!(
        "name: pool\nincomingAuth:\n  type: oidc\n  oidc:\n    issuer: {}\n    audience: {AUDIENCE}\n\
         outgoingAuth:\n  backends:\n    h: {{ type: passthrough }}\n{operational}backends:\n{}",
        idp.url,
        http_backend("h", &h.url),
    ))
}

/// Every HTTP request the fixture at `url` received so far, oldest first.
async fn request_log(url: &str) -> Vec<Value> {
    let mut c = Client::new(url);
    c.legacy_init().await;
    let text = c.tool(false, "request_log", json!({})).await.text();
    match serde_json::from_str(&text) {
        Ok(Value::Array(log)) => log,
        other => panic!("request_log answered {text:?}: {other:?}"),
    }
}

fn auth_of(r: &Reply) -> Option<String> {
    whoami_of(r).get("authorization").and_then(Value::as_str).map(str::to_owned)
}

fn session_of(r: &Reply) -> String {
    backend_session_of(r).unwrap_or_else(|| panic!("no backend session in {:?}", r.message))
}

/// Checks that every logged request carrying one of `tokens` was made on one of `sessions` (or
/// on none: an `initialize`), and every request on one of `sessions` carried one of `tokens`.
fn only_own_credentials(log: &[Value], who: &str, tokens: &[String], sessions: &HashSet<String>) {
    let bearer: HashSet<String> = tokens.iter().map(|t| format!("Bearer {t}")).collect();
    for e in log {
        let auth = e["authorization"].as_str();
        let session = e["session"].as_str();
        if auth.is_some_and(|a| bearer.contains(a)) {
            assert!(
                session.is_none_or(|s| sessions.contains(s)),
                "{who}'s credentials on another session: {e}"
            );
        }
        if session.is_some_and(|s| sessions.contains(s)) {
            assert!(
                auth.is_some_and(|a| bearer.contains(a)),
                "{who}'s session without {who}'s credentials: {e}"
            );
        }
    }
}

/// Two principals as Modern clients get two backend sessions (neither is the gateway's own), each
/// reused across that principal's fresh tokens; a Legacy client gets its own; nobody's
/// credentials ever appear on a request made for someone else.
#[tokio::test]
async fn principals_get_their_own_backend_sessions() {
    let idp = idp("principals_get_their_own_backend_sessions").await;
    let h = Fixture::http("legacy", "h");
    let gw = oidc_gateway(&idp, &h, "");
    let mut tokens: [Vec<String>; 2] = Default::default();
    let mut sessions: [HashSet<String>; 2] = Default::default();
    for round in 0..3 {
        for (i, who) in ["alice", "bob"].iter().enumerate() {
            let t = token(&idp, who).await;
            let mut c = gw.client();
            c.bearer = Some(t.clone());
            let r = c.tool(true, "h_whoami", json!({})).await;
            assert_eq!(auth_of(&r), Some(format!("Bearer {t}")), "{who} round {round}");
            sessions[i].insert(session_of(&r));
            tokens[i].push(t);
        }
    }
    assert_eq!(sessions[0].len(), 1, "alice's Modern calls share one backend session");
    assert_eq!(sessions[1].len(), 1, "bob's Modern calls share one backend session");
    assert!(sessions[0].is_disjoint(&sessions[1]), "alice and bob share a backend session");

    // A Legacy client of alice's has a backend session of its own.
    let t = token(&idp, "alice").await;
    let mut legacy = gw.client();
    legacy.bearer = Some(t.clone());
    legacy.legacy_init().await;
    let r = legacy.tool(false, "h_whoami", json!({})).await;
    assert_eq!(auth_of(&r), Some(format!("Bearer {t}")));
    let own = session_of(&r);
    assert!(!sessions[0].contains(&own) && !sessions[1].contains(&own), "{own}");
    tokens[0].push(t);
    sessions[0].insert(own);

    let log = request_log(&h.url).await;
    only_own_credentials(&log, "alice", &tokens[0], &sessions[0]);
    only_own_credentials(&log, "bob", &tokens[1], &sessions[1]);
    // The gateway's own session (discovery, its GET listener) carries no caller's credentials
    // (passthrough has none for background work), and is neither principal's.
    let system: HashSet<&str> = log
        .iter()
        .filter(|e| e["method"] == "GET")
        .filter_map(|e| e["session"].as_str())
        .filter(|s| !sessions[0].contains(*s) && !sessions[1].contains(*s))
        .collect();
    assert_eq!(system.len(), 1, "one gateway session listening: {log:?}");
    for e in log.iter().filter(|e| e["session"].as_str().is_some_and(|s| system.contains(s))) {
        assert!(e["authorization"].is_null(), "credentials on the gateway's session: {e}");
    }
}

/// A principal's backend session unused for `idleTimeout` is ended (DELETE) with that
/// principal's current credentials, and the next call opens a new one.
#[tokio::test]
async fn idle_principal_session_is_ended_with_its_principals_credentials() {
    let idp = idp("idle_principal_session_is_ended_with_its_principals_credentials").await;
    let h = Fixture::http("legacy", "h");
    let gw = oidc_gateway(&idp, &h, "operational:\n  backendSessions:\n    idleTimeout: 1s\n");
    let mut c = gw.client();
    c.bearer = Some(token(&idp, "alice").await);
    let first = session_of(&c.tool(true, "h_whoami", json!({})).await);
    // A later request of the same principal makes its newest token the teardown credential.
    let latest = token(&idp, "alice").await;
    c.bearer = Some(latest.clone());
    let r = c.tool(true, "h_whoami", json!({})).await;
    assert_eq!(session_of(&r), first, "reused while in use");
    let delete = poll(Duration::from_secs(15), "the idle session's DELETE", || async {
        request_log(&h.url)
            .await
            .into_iter()
            .find(|e| e["method"] == "DELETE" && e["session"] == json!(first))
    })
    .await;
    assert_eq!(delete["authorization"], json!(format!("Bearer {latest}")));
    let again = session_of(&c.tool(true, "h_whoami", json!({})).await);
    assert_ne!(again, first, "a new session after the idle one ended");
}

/// With room for one pooled session: while the first principal's session is busy, a second
/// principal's request fails at once naming the limit; once it is idle, it is ended (with its own
/// principal's latest credentials) to make room.
#[tokio::test]
async fn full_pool_ends_the_least_recently_used_idle_session() {
    let idp = idp("full_pool_ends_the_least_recently_used_idle_session").await;
    let h = Fixture::http("legacy", "h");
    let gw = oidc_gateway(&idp, &h, "operational:\n  backendSessions:\n    maxPerBackend: 1\n");
    let mut alice = gw.client();
    alice.bearer = Some(token(&idp, "alice").await);
    let sa = session_of(&alice.tool(true, "h_whoami", json!({})).await);
    let mut bob = gw.client();
    bob.bearer = Some(token(&idp, "bob").await);

    // Alice's session is busy (her call has reached the backend): no room for bob, and he is
    // told so at once.
    let ta = token(&idp, "alice").await;
    alice.bearer = Some(ta.clone());
    let busy = {
        let alice = alice.clone();
        tokio::spawn(async move { alice.tool(true, "h_sleep", json!({ "ms": 3000 })).await })
    };
    let seen = json!(format!("Bearer {ta}"));
    poll(Duration::from_secs(10), "alice's call at the backend", || async {
        request_log(&h.url).await.iter().any(|e| e["authorization"] == seen).then_some(())
    })
    .await;
    let r = bob.tool(true, "h_whoami", json!({})).await;
    assert_eq!(r.error_code(), -32001, "{:?}", r.message);
    let msg = r.error()["message"].as_str().unwrap_or_default().to_owned();
    assert!(msg.contains("operational.backendSessions.maxPerBackend"), "{msg}");
    assert_eq!(busy.await.expect("alice's call").text(), "Slept 3000 ms");

    // Idle now: alice's session is ended to make room for bob's, with alice's credentials.
    let r = bob.tool(true, "h_whoami", json!({})).await;
    assert_ne!(session_of(&r), sa);
    let delete = poll(Duration::from_secs(10), "the evicted session's DELETE", || async {
        request_log(&h.url)
            .await
            .into_iter()
            .find(|e| e["method"] == "DELETE" && e["session"] == json!(sa))
    })
    .await;
    assert_eq!(delete["authorization"], json!(format!("Bearer {ta}")));
}

/// The backend forgets every session (as after a restart on the same port). Each pool entry is
/// renewed with its own caller: a principal's with that principal's token of the request that
/// found it gone, the gateway's own as System (no credentials); list_changed still reaches the
/// catalog through the renewed gateway session; the old listener does not poll the dead id.
#[tokio::test]
async fn forgotten_sessions_are_renewed_per_entry() {
    let idp = idp("forgotten_sessions_are_renewed_per_entry").await;
    let h = Fixture::http("legacy", "h");
    let gw = oidc_gateway(&idp, &h, "");
    let t1 = token(&idp, "alice").await;
    let mut alice = gw.client();
    alice.bearer = Some(t1.clone());
    let s1 = session_of(&alice.tool(true, "h_whoami", json!({})).await);
    let b1 = token(&idp, "bob").await;
    let mut bob = gw.client();
    bob.bearer = Some(b1.clone());
    bob.legacy_init().await;
    let bob_s1 = session_of(&bob.tool(false, "h_whoami", json!({})).await);

    let before = request_log(&h.url).await;
    let forgotten: HashSet<String> =
        before.iter().filter_map(|e| e["session"].as_str().map(str::to_owned)).collect();
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/test/forget-sessions", h.port))
        .send()
        .await
        .expect("forget");
    assert!(resp.status().is_success());

    // Each principal's next request renews its own entry with its own, current token.
    let t2 = token(&idp, "alice").await;
    alice.bearer = Some(t2.clone());
    let r = alice.tool(true, "h_whoami", json!({})).await;
    let s2 = session_of(&r);
    assert_ne!(s2, s1);
    assert_eq!(auth_of(&r), Some(format!("Bearer {t2}")));
    let b2 = token(&idp, "bob").await;
    bob.bearer = Some(b2.clone());
    let r = bob.tool(false, "h_whoami", json!({})).await;
    let bob_s2 = session_of(&r);
    assert_ne!(bob_s2, bob_s1);
    assert_eq!(auth_of(&r), Some(format!("Bearer {b2}")));

    // list_changed still reaches the catalog: through the gateway's renewed session. (The
    // notification is sent to the sessions listening at that moment, so ask until it lands.)
    let mut listing = gw.client();
    listing.bearer = Some(t2.clone());
    poll(Duration::from_secs(20), "h_dynamic_tool in the catalog", || async {
        let r = alice.tool(true, "h_notify_list_changed", json!({})).await;
        assert!(r.msg().get("result").is_some(), "{:?}", r.message);
        let names = listing.tool_names(true).await;
        names.iter().any(|n| n == "h_dynamic_tool").then_some(())
    })
    .await;

    // No orphan listener: give a listener still polling a forgotten id time to show itself
    // (its retries come 0.5 s, 1 s, 2 s apart), then count.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let log = request_log(&h.url).await;
    let after = &log[before.len()..];
    let dead_gets = after
        .iter()
        .filter(|e| e["method"] == "GET")
        .filter(|e| e["session"].as_str().is_some_and(|s| forgotten.contains(s)))
        .count();
    assert!(dead_gets <= 1, "a listener keeps polling a forgotten session: {after:?}");
    // Exactly one live listener afterwards: the gateway's renewed session's, without credentials.
    let live: HashSet<&str> = after
        .iter()
        .filter(|e| e["method"] == "GET")
        .filter_map(|e| e["session"].as_str())
        .filter(|s| !forgotten.contains(*s))
        .collect();
    assert_eq!(live.len(), 1, "{after:?}");
    for e in after.iter().filter(|e| e["session"].as_str().is_some_and(|s| live.contains(s))) {
        assert!(e["authorization"].is_null(), "credentials on the gateway's session: {e}");
    }
    only_own_credentials(&log, "alice", &[t1, t2], &HashSet::from([s1, s2]));
    // Bob's catalog is discovered on a backend session of his principal's, besides his Legacy
    // client's: those must carry his credentials only, like his client's.
    let bearer = [format!("Bearer {b1}"), format!("Bearer {b2}")];
    let mut bobs: HashSet<String> = log
        .iter()
        .filter(|e| e["authorization"].as_str().is_some_and(|a| bearer.iter().any(|b| b == a)))
        .filter_map(|e| e["session"].as_str().map(str::to_owned))
        .collect();
    bobs.extend([bob_s1, bob_s2]);
    only_own_credentials(&log, "bob", &[b1, b2], &bobs);
}

/// A backend answering GET with 405 has no stream: the listener asks once and stops.
#[tokio::test]
async fn get_405_is_not_retried() {
    let h = fixture("legacy", "h", &["--get-status", "405"]);
    let gw = Gateway::start(&format!("name: no-get\nbackends:\n{}", http_backend("h", &h.url)));
    // A Legacy client that sets a log level arms its backend session's listener too.
    let mut c = gw.client();
    c.legacy_init().await;
    let r = c.call("logging/setLevel", json!({ "level": "debug" })).await;
    assert!(r.msg().get("result").is_some(), "{:?}", r.message);
    let gets = |log: &[Value]| log.iter().filter(|e| e["method"] == "GET").count();
    let first = poll(Duration::from_secs(10), "both listeners' GET", || async {
        let n = gets(&request_log(&h.url).await);
        (n >= 2).then_some(n)
    })
    .await;
    assert_eq!(first, 2, "the gateway's listener and the client's");
    // Retries, if any, would come after 0.5 s, 1 s and 2 s.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(gets(&request_log(&h.url).await), 2, "a GET answered 405 was retried");
    assert_eq!(c.tool(false, "h_echo", json!({ "message": "still" })).await.text(), "Echo: still");
}

/// A reply over `operational.maxBackendReplyBytes` (as an SSE event or a JSON body) fails the
/// request at once with an error naming the limit; smaller replies still pass.
#[tokio::test]
async fn oversized_reply_fails_fast_naming_the_limit() {
    let sse = Fixture::http("legacy", "sse");
    let json_body = fixture("legacy", "js", &["--json-response"]);
    let gw = Gateway::start(&format!(
        "name: capped\noperational:\n  maxBackendReplyBytes: 65536\n  timeouts:\n    default: 60s\nbackends:\n{}{}",
        http_backend("sse", &sse.url),
        http_backend("js", &json_body.url),
    ));
    let big = "x".repeat(100_000);
    for modern in [false, true] {
        let c = client_for(&gw, modern).await;
        for backend in ["sse", "js"] {
            let started = Instant::now();
            let r = c.tool(modern, &format!("{backend}_echo"), json!({ "message": big })).await;
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{backend}: took {:?}",
                started.elapsed()
            );
            let e = r.error();
            assert_eq!(e["code"], -32603, "{backend}: {e}");
            let msg = e["message"].as_str().unwrap_or_default();
            assert!(
                msg.contains("65536") && msg.contains("operational.maxBackendReplyBytes"),
                "{backend}: {msg}"
            );
            let ok =
                c.tool(modern, &format!("{backend}_echo"), json!({ "message": "small" })).await;
            assert_eq!(ok.text(), "Echo: small", "{backend}");
        }
    }
}

/// The legacy SSE transport caps each event too: a backend whose stream sends an event over
/// `operational.maxBackendReplyBytes` is refused at once (and retried), with the limit named in
/// `/status`, instead of being buffered.
// Multi-threaded: the stub server must serve while `Gateway::start` blocks this thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_sse_transport_event_is_refused_naming_the_limit() {
    // A legacy HTTP+SSE "server" whose stream starts with one 100 kB event and then idles.
    async fn stream() -> axum::response::Response {
        let big = format!("event: message\ndata: {}\n\n", "x".repeat(100_000));
        let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(big))])
            .chain(futures::stream::pending());
        axum::response::Response::builder()
            .header("content-type", "text/event-stream")
            .body(axum::body::Body::from_stream(body))
            .unwrap()
    }
    use futures::StreamExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sse", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/sse", axum::routing::get(stream));
    let _server = tokio::spawn(async move { axum::serve(listener, app).await });
    let gw = Gateway::start(&format!(
        "name: sse-capped\noperational:\n  maxBackendReplyBytes: 65536\n  timeouts:\n    default: 60s\n\
         backends:\n  - name: big\n    transport: sse\n    url: {url}\n"
    ));
    let status =
        poll(Duration::from_secs(10), "the backend refused for its event size", || async {
            let b = gw.backend_status("big").await;
            let error = b["lastError"].as_str().unwrap_or_default().to_owned();
            error.contains("operational.maxBackendReplyBytes").then_some(b)
        })
        .await;
    assert_ne!(status["state"], "ready", "{status}");
}
