//! Log in once: a real client (the official Python SDK's OAuth client) registers with vmcp's
//! embedded authorization server, logs in through it to a real upstream IdP
//! (`oauth2-mock-server` behind `tests/support/upstream-idp.mjs`), and calls a tool whose backend
//! (`vmcp-fixture --user-tools`, which refuses everything without a bearer token) reports the
//! `Authorization` it received: the user's current upstream access token, refreshed by vmcp's
//! vault as it expires, never a stale one, without a second login.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::login::*;
use common::*;

/// Logs in once with the SDK in `mode` and calls `api_whoami` every 0.2 s for `seconds` (upstream
/// tokens live 2 s); checks that every call reached the backend with the user's current upstream
/// token, the client logged in once, and refresh tokens were never replayed. Returns the calls
/// and when the login started.
async fn logged_in_throughout(s: &Stack, mode: &str, seconds: u32) -> (Outcome, u64) {
    let started = now_ms();
    let secs = seconds.to_string();
    let args =
        ["--mode", mode, "--list", "--tool", "api_whoami", "--seconds", &secs, "--interval", "0.2"];
    let out = login(&s.gw.url, &args).await;
    // The user's own tool is listed: the backend's catalog was discovered with their token.
    let tools = out.tools.as_ref().expect("a tool list");
    assert!(tools.iter().any(|t| t == "api_whoami_johndoe"), "{tools:?}");
    assert_eq!(out.summary["logins"], 1, "a second login happened: {}", out.summary);
    assert_eq!(out.summary["errors"], 0, "{:?}", out.calls.iter().find(|c| !c["error"].is_null()));
    let seen: HashSet<String> = out.calls.iter().map(bearer_of_whoami).collect();
    // ~5 calls a second (fewer on a loaded machine).
    let calls = seconds as usize * 5 / 2;
    assert!(out.calls.len() >= calls, "{} calls", out.calls.len());
    // seconds / 2 lifetimes passed: the backend saw the token change with each refresh.
    let lifetimes = seconds as usize / 2;
    let least = (lifetimes * 4).div_ceil(5);
    assert!(
        seen.len() >= least,
        "only {} distinct upstream tokens reached the backend",
        seen.len()
    );
    let stats = s.idp.stats().await;
    assert_eq!(stats.code_grants, 1, "one upstream login");
    assert!(stats.refresh_grants as usize >= least, "{} refreshes", stats.refresh_grants);
    assert_eq!(stats.replays, 0, "a rotated refresh token was replayed");
    assert_eq!(stats.rejected, 0, "the IdP rejected a refresh");
    // The figures, for the record (`cargo test --test gateway_login -- --nocapture`).
    eprintln!(
        "{mode}: {seconds} s, {} calls, {} distinct upstream tokens at the backend, {} refreshes, \
         {} login(s), {} replays",
        out.calls.len(),
        seen.len(),
        stats.refresh_grants,
        out.summary["logins"],
        stats.replays
    );
    (out, started)
}

/// Every backend request from `since` on carries a token that was valid when it arrived.
async fn all_tokens_valid_on_arrival(s: &Stack, since: u64, least: usize) -> Vec<BackendRequest> {
    // Besides the gateway's own session (no user, no credentials), every request from the
    // login on is the user's: the call, the listing, the teardown.
    let requests = users_requests(backend_requests(&s.backend).await);
    let users: Vec<_> = requests.into_iter().filter(|r| r.at >= since).collect();
    assert!(users.len() >= least, "{} backend requests", users.len());
    for r in &users {
        let Some(token) = r.token.as_deref() else {
            let log: Vec<_> = users.iter().map(|r| (&r.method, r.at, r.token.is_some())).collect();
            panic!("{} at {} without credentials; since {since}: {log:?}", r.method, r.at);
        };
        let exp = jwt_exp_ms(token);
        assert!(r.at < exp, "{} at {} carried a token that expired at {exp}", r.method, r.at);
    }
    users
}

/// The daily re-login cannot happen: upstream tokens live 2 s, one client session calls for
/// 20+ lifetimes; every call reaches the backend with the user's current upstream token, every
/// backend request (listing and teardown included) carries a token valid when it arrived, the
/// client logs in once, and rotating refresh tokens are never replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_login_lasts_through_twenty_upstream_token_lifetimes() {
    let s = stack(2).await;
    let (out, started) = logged_in_throughout(&s, "legacy", 42).await;
    // The session has ended (the SDK deletes it on exit): its teardown reaches the backend.
    poll(Duration::from_secs(10), "the backend session's DELETE", || async {
        let r = backend_requests(&s.backend).await;
        r.iter().any(|r| r.method == "DELETE").then_some(())
    })
    .await;
    all_tokens_valid_on_arrival(&s, started, out.calls.len()).await;
}

/// The same in the stateless era (2026-07-28), over 5 lifetimes: no client session, each request
/// stands alone, and each still reaches the backend with the user's current upstream token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_login_lasts_through_upstream_token_lifetimes_in_the_stateless_era() {
    let s = stack(2).await;
    let (out, started) = logged_in_throughout(&s, MODERN, 10).await;
    let statuses = &out.summary["statuses"];
    assert_eq!(statuses["401"], 1, "only the first request was challenged: {statuses}");
    all_tokens_valid_on_arrival(&s, started, out.calls.len()).await;
}

/// 20 concurrent calls just after the upstream token expired cause exactly one refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_after_expiry_makes_one_refresh() {
    let s = stack(3).await;
    // Log in, call once, wait past the token's life, then 20 calls at once.
    let out = login(
        &s.gw.url,
        &["--tool", "api_whoami", "--seconds", "3", "--interval", "3.5", "--concurrency", "20"],
    )
    .await;
    assert_eq!(out.summary["logins"], 1);
    assert_eq!(out.summary["errors"], 0, "{:?}", out.calls);
    assert_eq!(out.calls.len(), 40);
    // The second burst came after the first token expired: exactly one refresh served it.
    let stats = s.idp.stats().await;
    assert_eq!(stats.refresh_grants, 1, "refreshes for one burst");
    assert_eq!(stats.replays, 0);
}

/// Teardown after hours, short: a Legacy session left idle until its upstream token expired,
/// then ended by the client. The backend session's DELETE goes out for the user with a token
/// refreshed for it (never the expired one the session last used), valid when it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_torn_down_with_a_fresh_upstream_token() {
    let s = stack(2).await;
    let mut script = Script::start(&s.gw.url, &["--tool", "api_whoami"]).await;
    let last = script.call_ok().await;
    until_expired(&s.idp, &last).await;
    let expired_at = now_ms();
    let refreshes = s.idp.stats().await.refresh_grants;
    let summary = script.quit().await;
    assert_eq!(summary["logins"], 1, "{summary}");

    let delete = poll(Duration::from_secs(10), "the backend session's DELETE", || async {
        let r = backend_requests(&s.backend).await;
        r.into_iter().find(|r| r.method == "DELETE")
    })
    .await;
    assert!(delete.at >= expired_at, "the DELETE came before the token expired");
    let token = delete.token.as_deref().expect("the DELETE carried no credentials");
    assert_ne!(token, last, "the DELETE replayed the session's last (expired) token");
    assert!(delete.at < jwt_exp_ms(token), "the DELETE's token had expired when it arrived");
    let (_, sub) = s.idp.check(token).await;
    assert_eq!(sub.as_deref(), Some("johndoe"), "the DELETE carried someone else's token");
    let stats = s.idp.stats().await;
    assert_eq!(stats.refresh_grants, refreshes + 1, "one refresh for the teardown");
    assert_eq!(stats.replays, 0);
}

/// A Legacy client that sets a log level has its backend session's GET stream held open for it
/// (log messages arrive there). That stream is the user's, opened without a request of theirs
/// behind it: it must carry the user's current upstream token, as any request for them does,
/// not go without credentials (a backend that wants the user's token would refuse it, and the
/// user's log messages would never arrive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_backend_stream_carries_their_upstream_token() {
    let s = stack(3600).await;
    let mut script = Script::start(&s.gw.url, &["--tool", "api_whoami"]).await;
    script.call_ok().await;
    let set = script.send("loglevel debug").await;
    assert!(set["error"].is_null(), "{set}");
    let get = poll(Duration::from_secs(10), "the user's backend GET stream", || async {
        let r = users_requests(backend_requests(&s.backend).await);
        r.into_iter().find(|r| r.method == "GET")
    })
    .await;
    let token = get.token.as_deref().expect("the user's GET stream went without credentials");
    assert_eq!(s.idp.check(token).await, (true, Some("johndoe".into())));
    assert!(get.at < jwt_exp_ms(token));
    let summary = script.quit().await;
    assert_eq!(summary["logins"], 1, "{summary}");
}
