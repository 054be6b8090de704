//! Log in once, when things go wrong and when there are two users: the stack of
//! `gateway_login.rs` (real upstream IdP, `--user-tools` backend, vmcp with its authorization
//! server, the Python SDK's OAuth client), with the IdP down, a refresh token revoked, a refresh
//! answer lost; the IdP down and a dead grant also before the user's first call, when their
//! backend session and catalog are still to be opened; and two users side by side, whose
//! upstream tokens and tool lists never cross.
//!
//! The SDK is driven command by command ([`Script`]) so that each fault lands at a known point:
//! the test waits (polling the IdP) until the upstream token it saw has expired, so the next
//! call is the one that needs a refresh.

mod common;

use std::collections::{HashMap, HashSet};

use common::MODERN;
use common::login::*;
use serde_json::Value;

/// The JSON-RPC error code of a raw answer.
fn error_code(raw: &Value) -> i64 {
    raw["body"]["error"]["code"].as_i64().unwrap_or_else(|| panic!("no JSON-RPC error: {raw}"))
}

/// A 401 that sends the client back to log in: `WWW-Authenticate: Bearer` naming the protected
/// resource metadata, and the gateway's "authenticate again" error.
fn assert_login_challenge(raw: &Value, base: &str) {
    assert_eq!(raw["raw"], 401, "{raw}");
    let challenge =
        raw["www_authenticate"].as_str().unwrap_or_else(|| panic!("no challenge: {raw}"));
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    let metadata = format!("resource_metadata=\"{base}/.well-known/oauth-protected-resource");
    assert!(challenge.contains(&metadata), "{challenge}");
    assert_eq!(error_code(raw), -32004, "{raw}");
}

/// IdP down: the vault keeps serving the still-valid token; once it has expired, calls fail with
/// 503 + Retry-After (-32005), the user stays logged in (the SDK keeps its vmcp token, no second
/// login, no 401), and once the IdP is back the next call succeeds with a refreshed token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_down_during_refresh_is_a_retry_not_a_logout() {
    idp_down_during_refresh("legacy").await;
}

/// The same in the stateless era (2026-07-28).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_down_during_refresh_is_a_retry_not_a_logout_in_the_stateless_era() {
    idp_down_during_refresh(MODERN).await;
}

async fn idp_down_during_refresh(mode: &str) {
    // 3 s: a fresh token stays out of its refresh margin (0.6 s) for 2.4 s, long enough for the
    // first call after `down` to be served without a refresh on a loaded machine.
    let s = stack(3).await;
    let mut script = Script::start(&s.gw.url, &["--mode", mode, "--tool", "api_whoami"]).await;
    let first = script.call_ok().await;
    let logged_in = script.state().await;
    assert_eq!(logged_in["logins"], 1, "{logged_in}");

    s.idp.down().await;
    let served = script.call_ok().await;
    assert_eq!(served, first, "a still-valid token is served while the IdP is down");

    until_expired(&s.idp, &first).await;
    let raw = script.raw().await;
    assert_eq!(raw["raw"], 503, "{raw}");
    assert!(raw["retry_after"].is_string(), "no Retry-After: {raw}");
    assert!(raw["www_authenticate"].is_null(), "a 503 is not a login challenge: {raw}");
    assert_eq!(error_code(&raw), -32005, "{raw}");
    // The SDK's call fails too, and it does not log in again over it.
    let failed = script.call().await;
    let error = failed["error"].as_str().unwrap_or_else(|| panic!("call succeeded: {failed}"));
    assert!(error.contains("unavailable") || error.contains("32005"), "{error}");
    let during = script.state().await;
    assert_eq!(during["logins"], 1, "logged out by an IdP outage: {during}");
    assert_eq!(during["token"], logged_in["token"], "the SDK dropped its vmcp token");
    // (The raw request went by another client: the SDK saw one 503, its own.)
    assert_eq!(during["statuses"]["503"], 1, "{during}");

    s.idp.up().await;
    let refreshed = script.call_ok().await;
    assert_ne!(refreshed, first);
    assert_eq!(s.idp.check(&refreshed).await, (true, Some("johndoe".into())));
    let summary = script.quit().await;
    assert_eq!(summary["logins"], 1, "{summary}");
    assert_eq!(summary["token"], logged_in["token"], "{summary}");
    assert_eq!(summary["statuses"]["401"], 1, "only the first request was challenged");
    let stats = s.idp.stats().await;
    assert_eq!(stats.code_grants, 1);
    assert_eq!(stats.refresh_grants, 1, "the IdP saw exactly the refresh after it came back");
    assert_eq!(stats.replays, 0);
}

/// Refresh token revoked at the IdP: the next call that needs a refresh gets 401 with a
/// `resource_metadata` challenge; the SDK logs in again by itself and carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_refresh_token_sends_the_user_to_log_in_again() {
    let s = stack(2).await;
    let mut script = Script::start(&s.gw.url, &["--tool", "api_whoami"]).await;
    let first = script.call_ok().await;
    let before = script.state().await;
    assert!(s.idp.revoke("johndoe").await >= 1, "nothing to revoke");

    until_expired(&s.idp, &first).await;
    // With the vmcp token the SDK holds (still valid for vmcp), by plain HTTP.
    let raw = script.raw().await;
    assert_login_challenge(&raw, &s.gw.base);
    // The SDK is challenged too, logs in again, and its call goes through.
    let after = script.call_ok().await;
    assert_ne!(after, first);
    assert_eq!(s.idp.check(&after).await, (true, Some("johndoe".into())));
    let state = script.state().await;
    assert_eq!(state["logins"], 2, "{state}");
    assert_ne!(state["token"], before["token"], "a new vmcp token after the new login");
    assert_eq!(state["statuses"]["401"], 2, "the first request and the dead grant: {state}");
    script.call_ok().await;
    let summary = script.quit().await;
    assert_eq!(summary["logins"], 2, "{summary}");
    let stats = s.idp.stats().await;
    assert_eq!(stats.code_grants, 2);
    assert_eq!(stats.rejected, 1, "the revoked refresh token was presented once");
    assert_eq!(stats.replays, 0);
}

/// The refresh answer is lost (the IdP rotated the refresh token, then the connection died):
/// the consumed refresh token is never presented again, the user is asked to log in (401), and
/// the new login works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_refresh_answer_is_never_replayed() {
    let s = stack(2).await;
    let mut script = Script::start(&s.gw.url, &["--tool", "api_whoami"]).await;
    let first = script.call_ok().await;
    s.idp.fault("drop", 1).await;

    until_expired(&s.idp, &first).await;
    let raw = script.raw().await;
    assert_login_challenge(&raw, &s.gw.base);
    let stats = s.idp.stats().await;
    assert_eq!(stats.refresh_grants, 1, "the lost refresh was processed once: {stats:?}");
    assert_eq!(stats.replays, 0, "the consumed refresh token was replayed");

    let after = script.call_ok().await;
    assert_eq!(s.idp.check(&after).await, (true, Some("johndoe".into())));
    let summary = script.quit().await;
    assert_eq!(summary["logins"], 2, "{summary}");
    let stats = s.idp.stats().await;
    assert_eq!(stats.code_grants, 2);
    assert_eq!(stats.replays, 0, "the consumed refresh token was replayed");
    assert_eq!(stats.rejected, 0);
}

/// Two users calling at once over several token lifetimes: each user's calls reach the backend
/// with that user's upstream tokens only, every backend session carries one user's tokens, and
/// every token the backend got is one of theirs. Each round starts when both users' tokens have
/// expired, with the IdP holding each refresh answer back 300 ms, so the two users' refreshes
/// are in flight at the same time (a single flight keyed by anything less than the user would
/// hand one user the other's token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_never_get_each_others_upstream_tokens() {
    let s = stack(2).await;
    s.idp.config(serde_json::json!({ "hangMs": 300 })).await;
    let started = now_ms();
    let (mut alice, mut bob) = tokio::join!(
        Script::start(&s.gw.url, &["--login-hint", "alice", "--tool", "api_whoami"]),
        Script::start(&s.gw.url, &["--login-hint", "bob", "--tool", "api_whoami"]),
    );
    let mut seen: HashMap<&str, HashSet<String>> = HashMap::new();
    let mut last = (String::new(), String::new());
    for round in 0..4 {
        if round > 0 {
            until_expired(&s.idp, &last.0).await;
            until_expired(&s.idp, &last.1).await;
            s.idp.fault("hang", 2).await;
        }
        // The first pair refreshes (both at once); the rest are served from the vault.
        for _ in 0..4 {
            last = tokio::join!(alice.call_ok(), bob.call_ok());
            for (user, token) in [("alice", &last.0), ("bob", &last.1)] {
                assert_eq!(jwt_sub(token), user, "round {round}: {user} got another's token");
                seen.entry(user).or_default().insert(token.clone());
            }
        }
    }
    for script in [alice, bob] {
        let summary = script.quit().await;
        assert_eq!(summary["logins"], 1, "{summary}");
        assert_eq!(summary["errors"], 0, "{summary}");
    }
    for (user, tokens) in &seen {
        assert!(tokens.len() >= 4, "{user}: a token per round, but {}", tokens.len());
        for t in tokens {
            assert_eq!(s.idp.check(t).await.1.as_deref(), Some(*user), "the IdP disagrees");
        }
    }
    // And from the backend's side: each request was one of the two users', with a token the
    // IdP issued to that user, valid on arrival; a backend session belongs to one user.
    let requests = users_requests(backend_requests(&s.backend).await);
    let users: Vec<_> = requests.iter().filter(|r| r.at >= started).collect();
    assert!(users.len() >= 32, "{} backend requests", users.len());
    let mut owners = HashMap::new();
    for r in users {
        let token = r.token.as_deref().unwrap_or_else(|| panic!("{} without a token", r.method));
        let (_, sub) = s.idp.check(token).await;
        let sub = sub.unwrap_or_else(|| panic!("{} with a token the IdP never issued", r.method));
        assert!(sub == "alice" || sub == "bob", "{} by {sub}", r.method);
        assert_eq!(sub, jwt_sub(token));
        assert!(r.at < jwt_exp_ms(token), "{} carried an expired token", r.method);
        if let Some(session) = &r.session {
            let owner = owners.entry(session.clone()).or_insert_with(|| sub.clone());
            assert_eq!(*owner, sub, "backend session {session} carried two users' tokens");
        }
    }
    assert!(owners.len() >= 2, "one backend session per user: {owners:?}");
    let stats = s.idp.stats().await;
    assert_eq!(stats.code_grants, 2);
    assert!(stats.refresh_grants >= 6, "a refresh per user and round: {stats:?}");
    assert_eq!(stats.replays, 0);
    assert_eq!(stats.rejected, 0);
}

/// Per-principal catalog: with a backend whose tools depend on who asks, each user lists
/// `api_whoami_<their upstream sub>` and not the other's, can call their own, and cannot call
/// the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_sees_only_their_own_tools() {
    let s = stack(3600).await;
    let (mut alice, mut bob) = tokio::join!(
        Script::start(&s.gw.url, &["--login-hint", "alice", "--tool", "api_whoami_alice"]),
        Script::start(&s.gw.url, &["--login-hint", "bob", "--tool", "api_whoami_bob"]),
    );
    for (me, other, script) in [("alice", "bob", &mut alice), ("bob", "alice", &mut bob)] {
        let own = script.call_ok().await;
        assert_eq!(jwt_sub(&own), me);
        let listed = script.send("list").await;
        let names: Vec<&str> =
            listed["tools"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
        assert!(names.contains(&format!("api_whoami_{me}").as_str()), "{me}: {names:?}");
        assert!(!names.contains(&format!("api_whoami_{other}").as_str()), "{me}: {names:?}");
        assert!(names.contains(&"api_whoami"), "{me}: {names:?}");
        let theirs = script.send(&format!("call api_whoami_{other}")).await;
        let error = theirs["error"].as_str().unwrap_or_else(|| panic!("{me} called it: {theirs}"));
        assert!(error.contains("Unknown tool"), "{me} calling {other}'s tool: {error}");
    }
    for script in [alice, bob] {
        let summary = script.quit().await;
        assert_eq!(summary["logins"], 1, "{summary}");
    }
}

/// IdP down when the user's catalog has to be listed with their token (here their first call;
/// likewise after their cached catalog was dropped for idleness, or a `list_changed`): that
/// call needs a refresh too, and fails like any other that does, with 503 + Retry-After
/// (-32005), not as an unknown tool; the user stays logged in, and once the IdP is back
/// (and the listing's retry delay has passed) the calls succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_down_when_the_users_catalog_needs_a_refresh() {
    let s = stack(2).await;
    let mut script = Script::start(&s.gw.url, &["--tool", "api_whoami"]).await;
    // Legacy: the login happened at `initialize`, before any command; no call yet.
    let logged_in = script.state().await;
    assert_eq!(logged_in["logins"], 1, "{logged_in}");
    let first = latest_token(&s.idp, "johndoe").await.expect("an upstream token after the login");
    until_expired(&s.idp, &first).await;
    s.idp.down().await;

    let failed = script.call().await;
    assert!(!failed["error"].is_null(), "call succeeded: {failed}");
    let during = script.state().await;
    assert_eq!(during["statuses"]["503"], 1, "the SDK's call: {failed} {during}");
    let raw = script.raw().await;
    assert_eq!(raw["raw"], 503, "{raw}");
    assert!(raw["retry_after"].is_string(), "no Retry-After: {raw}");
    assert_eq!(error_code(&raw), -32005, "{raw}");

    s.idp.up().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let c = script.call().await;
        if c["error"].is_null() {
            assert_eq!(jwt_sub(&bearer_of_whoami(&c)), "johndoe");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "calls still fail: {c}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let summary = script.quit().await;
    assert_eq!(summary["logins"], 1, "logged out by an IdP outage: {summary}");
    assert_eq!(summary["token"], logged_in["token"], "the SDK dropped its vmcp token");
    // Until the listing was retried, the calls failed as the first did: 503s, nothing else.
    let statuses = summary["statuses"].as_object().unwrap();
    assert_eq!(statuses["401"], 1, "only the first request was challenged: {statuses:?}");
    let other = statuses.keys().find(|k| !["200", "202", "401", "503"].contains(&k.as_str()));
    assert!(other.is_none(), "{statuses:?}");
    let stats = s.idp.stats().await;
    assert_eq!(stats.code_grants, 1);
    assert_eq!(stats.replays, 0);
}

/// The grant dies before the user's first call (here a revocation; likewise an expired refresh
/// token after a long idle): that call needs the user's backend session and catalog opened with
/// a refresh that cannot happen. It gets 401 with a `resource_metadata` challenge, not
/// "backend unavailable", and the call right after the new login goes through (the SDK's own
/// retry), rather than the dead listing being remembered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_dead_before_the_first_call_sends_the_user_to_log_in_again() {
    let s = stack(2).await;
    let mut script = Script::start(&s.gw.url, &["--tool", "api_whoami"]).await;
    // Legacy: the login happened at `initialize`, before any command; no call yet.
    let before = script.state().await;
    assert_eq!(before["logins"], 1, "{before}");
    let first = latest_token(&s.idp, "johndoe").await.expect("an upstream token after the login");
    assert!(s.idp.revoke("johndoe").await >= 1, "nothing to revoke");
    until_expired(&s.idp, &first).await;

    let raw = script.raw().await;
    assert_login_challenge(&raw, &s.gw.base);
    let after = script.call_ok().await;
    assert_eq!(s.idp.check(&after).await, (true, Some("johndoe".into())));
    let state = script.state().await;
    assert_eq!(state["logins"], 2, "one new login, and its retry went through: {state}");
    assert_eq!(state["statuses"]["401"], 2, "the first request and the dead grant: {state}");
    let summary = script.quit().await;
    assert_eq!(summary["errors"], 0, "{summary}");
    let stats = s.idp.stats().await;
    assert_eq!(stats.code_grants, 2);
    assert_eq!(stats.replays, 0);
}
