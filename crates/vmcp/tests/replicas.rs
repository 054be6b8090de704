//! Three vmcp replicas behind a round-robin proxy (`replicas/proxy.rs`), sharing one
//! `redis-server` (`sessionStorage: {provider: redis}`) and one Streamable HTTP backend (a
//! `vmcp-fixture http` all three call, as in production). Issue 11's proof:
//! - Legacy and Modern clients' calls spread over every replica and all succeed;
//! - `kill -9` of a replica under load: its Legacy sessions continue on the others; the only
//!   failures are calls in flight on it at the kill, each a transport error (or a retryable
//!   JSON-RPC error), at most one per concurrent client;
//! - Redis restarted under load: while it is down, a Legacy session the serving replica does not
//!   hold gets `503` fast with "session store unavailable"; afterwards every session stored
//!   before continues, on every replica;
//! - `SIGTERM` of a replica under load: the call in flight on it finishes, no call fails, the
//!   replica exits, and its sessions go on on the others;
//! - a notification reaches a Legacy session's GET stream whichever replica holds it (Redis
//!   pub/sub), also after the stream reconnects to another replica;
//! - OAuth through the embedded authorization server across the replicas (`replicas/login.rs`):
//!   one login, and upstream tokens refreshed once per expiry across replicas, never a replayed
//!   refresh token.
//!
//! The proxy retries a request on the next replica only when connecting fails (the request was
//! never sent); a failure after sending is the client's to retry (`502`, `x-proxy-error`).

mod common;
#[path = "replicas/harness.rs"]
mod harness;
#[path = "replicas/login.rs"]
mod login;
#[path = "replicas/proxy.rs"]
mod proxy;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::login::{backend_requests, jwt_exp_ms, now_ms};
use common::redis::RedisServer;
use common::*;
use harness::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_both_eras_spread_over_three_replicas() {
    let redis = RedisServer::start();
    let cluster = Cluster::start(&redis).await;

    // One client alone moves through every replica in turn: a Legacy session initialized on
    // one replica continues on the other two.
    let (c, _) = cluster.legacy().await;
    let mut seen = BTreeSet::new();
    for i in 0..6 {
        let d = echo(&c, false, &format!("alone-{i}")).await;
        ok(&d, "a lone Legacy call");
        seen.insert(d.replica.unwrap());
    }
    assert_eq!(seen.len(), 3, "one Legacy session served by every replica: {seen:?}");

    // Then three Legacy and three Modern clients at once, 60 calls per era.
    let mut tasks = Vec::new();
    for w in 0..6 {
        let modern = w % 2 == 1;
        let c = if modern { cluster.client() } else { cluster.legacy().await.0 };
        tasks.push(tokio::spawn(async move {
            let mut by_replica = [0u32; 3];
            for i in 0..20 {
                let d = echo(&c, modern, &format!("w{w}-{i}")).await;
                ok(&d, if modern { "a Modern call" } else { "a Legacy call" });
                by_replica[d.replica.unwrap()] += 1;
            }
            (modern, by_replica)
        }));
    }
    let mut per_era: HashMap<bool, [u32; 3]> = HashMap::new();
    for t in tasks {
        let (modern, by) = t.await.unwrap();
        let e = per_era.entry(modern).or_default();
        for i in 0..3 {
            e[i] += by[i];
        }
    }
    for (modern, by) in &per_era {
        assert_eq!(by.iter().sum::<u32>(), 60);
        assert!(by.iter().all(|&n| n > 0), "modern={modern}: calls per replica {by:?}");
    }
    let served = cluster.proxy.served();
    assert!(served.iter().all(|&n| n > 10), "requests per replica {served:?}");
    assert_eq!(cluster.proxy.refused(), vec![0, 0, 0]);
    // One record per Legacy session (4), under the shared prefix.
    assert_eq!(redis.keys("rr:sess:*").lines().count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_loses_only_its_calls_in_flight() {
    const VICTIM: usize = 1;
    const SLEEP_MS: u64 = 10_000;
    let redis = RedisServer::start();
    let mut cluster = Cluster::start(&redis).await;
    // Six Legacy sessions; `initialize` + `initialized` take two requests, so the sessions are
    // initialized on replicas 0, 2, 1, 0, 2, 1.
    let mut sessions = Vec::new();
    for _ in 0..6 {
        sessions.push(cluster.legacy().await);
    }
    let on_victim: Vec<String> = sessions
        .iter()
        .filter(|(_, r)| *r == VICTIM)
        .map(|(c, _)| c.session.clone().unwrap())
        .collect();
    assert_eq!(on_victim.len(), 2, "{:?}", sessions.iter().map(|s| s.1).collect::<Vec<_>>());

    // Three long calls, routed one to each replica before anything else runs: the one on the
    // victim is in flight at the kill.
    let sleepers = long_calls(&cluster, SLEEP_MS).await;
    let clients = callers(&cluster, &sessions);
    let concurrency = clients.len();
    let (stop, ok_calls) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let workers = load(clients, &stop, &ok_calls);
    calls_pass(&ok_calls, 0, 60, "60 calls before the kill").await;

    let victim = cluster.replicas[VICTIM].pid();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    // Dead (a zombie at most): its sockets are closed, new connections are refused.
    poll(Duration::from_secs(10), "the killed replica to be gone", || async {
        (!alive(victim)).then_some(())
    })
    .await;
    let dead_at = Instant::now();
    let at_kill = ok_calls.load(Ordering::SeqCst);
    calls_pass(&ok_calls, at_kill, 90, "90 calls after the kill").await;
    stop.store(true, Ordering::SeqCst);
    let mut all = Vec::new();
    for (w, t) in workers.into_iter().enumerate() {
        for d in t.await.unwrap() {
            all.push((w, d));
        }
    }
    assert!(cluster.replicas[VICTIM].proc.exited());

    let mut failed = 0;
    for (w, d) in &all {
        match &d.outcome {
            Outcome::Ok => {}
            Outcome::Transport(_) | Outcome::Retryable(_) => {
                failed += 1;
                assert_eq!(d.replica, Some(VICTIM), "worker {w}: a failure off the victim: {d:?}");
                assert!(d.started < dead_at, "worker {w}: failed after the kill: {d:?}");
            }
            Outcome::Wrong(m) => panic!("worker {w}: wrong answer: {m}"),
        }
        if d.started > dead_at {
            assert!(matches!(d.outcome, Outcome::Ok), "worker {w}: after the kill: {d:?}");
            assert_ne!(d.replica, Some(VICTIM), "worker {w}: served by the dead replica");
        }
    }
    assert!(failed <= concurrency, "{failed} failures, {concurrency} callers");
    assert!(cluster.proxy.refused()[VICTIM] > 0, "the proxy never skipped the dead replica");
    // The long call on the victim failed at the kill, not at its end; the others finished.
    let mut on_victim = 0;
    for t in sleepers {
        let d = t.await.unwrap();
        if d.replica == Some(VICTIM) {
            on_victim += 1;
            assert!(matches!(d.outcome, Outcome::Transport(_)), "{d:?}");
            assert!(d.took < Duration::from_millis(SLEEP_MS), "{d:?}");
        } else {
            ok(&d, "a long call on a surviving replica");
        }
    }
    assert_eq!(on_victim, 1, "one long call was on the victim");
    // Sessions initialized on the dead replica continue on the others.
    for (c, r) in sessions.iter().filter(|(_, r)| *r == VICTIM) {
        for i in 0..4 {
            let d = echo(c, false, &format!("after-{i}")).await;
            ok(&d, &format!("a session of replica {r} after its death"));
            assert_ne!(d.replica, Some(VICTIM));
        }
    }
    let failures: Vec<_> = all
        .iter()
        .filter(|(_, d)| !matches!(d.outcome, Outcome::Ok))
        .map(|(_, d)| (&d.outcome, d.replica))
        .collect();
    eprintln!(
        "kill -9 under load: {} calls, {failed} failed {failures:?}; requests per replica {:?}",
        all.len(),
        cluster.proxy.served()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_under_load_refuses_fast_then_recovers_every_session() {
    let mut redis = RedisServer::persistent();
    let cluster = Cluster::start(&redis).await;
    // Warm sessions: alone on the proxy, each session's requests visit every replica in turn,
    // so every replica holds a copy.
    let mut warm = Vec::new();
    for s in 0..3 {
        let (c, _) = cluster.legacy().await;
        for i in 0..3 {
            ok(&echo(&c, false, &format!("warm-{s}-{i}")).await, "a warm session");
        }
        warm.push(c);
    }
    // Cold sessions: initialized straight on replica k, so only k holds them; the others know
    // them only by their record in Redis.
    let mut cold = Vec::new();
    for (k, gw) in cluster.replicas.iter().enumerate() {
        let mut c = gw.client();
        c.legacy_init().await;
        c.url = cluster.proxy.url.clone();
        cold.push((c, k));
    }

    let mut clients: Vec<(Client, bool)> = warm.iter().map(|c| (c.clone(), false)).collect();
    clients.extend((0..2).map(|_| (cluster.client(), true)));
    let (stop, ok_calls) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let workers = load(clients, &stop, &ok_calls);
    calls_pass(&ok_calls, 0, 30, "30 calls before Redis stops").await;

    tokio::task::block_in_place(|| redis.stop());
    assert!(!redis.ping());
    // The outage lasts until every replica has tried to touch a record it holds (due each
    // second of use) and failed: held sessions are served through failed touches.
    poll(Duration::from_secs(15), "every replica to fail a touch", || async {
        let failed = |gw: &Gateway| {
            (gw.proc.stderr() + &gw.proc.lines().join("\n"))
                .contains("cannot touch a session record")
        };
        cluster.replicas.iter().all(failed).then_some(())
    })
    .await;
    // A cold session: its own replica serves it; the others refuse it fast, retryably, with
    // the store named, never 404.
    for (c, k) in &cold {
        let mut refused_by = BTreeSet::new();
        for attempt in 0.. {
            assert!(attempt < 60, "cold session of {k}: refusals only from {refused_by:?}");
            let d = echo(c, false, &format!("down-{attempt}")).await;
            assert!(d.took < Duration::from_secs(3), "took {:?}: {d:?}", d.took);
            let r = d.replica.unwrap_or_else(|| panic!("no replica: {d:?}"));
            if r == *k {
                ok(&d, "a session its replica holds, Redis down");
                continue;
            }
            assert_eq!(d.status, 503, "{d:?}");
            assert_eq!(d.headers["retry-after"], "1", "{d:?}");
            let Outcome::Retryable(m) = &d.outcome else { panic!("not retryable: {d:?}") };
            assert_eq!(m["error"]["code"], -32603, "{m}");
            let msg = m["error"]["message"].as_str().unwrap();
            assert!(msg.starts_with("session store unavailable"), "{m}");
            assert!(!msg.contains(&redis.address()), "the store's address in {m}");
            refused_by.insert(r);
            if refused_by.len() == 2 {
                break;
            }
        }
    }
    // No session is created without its record.
    let mut c = cluster.client();
    let t = Instant::now();
    let id = c.id();
    let init = request(
        id,
        "initialize",
        json!({ "protocolVersion": LEGACY, "capabilities": {},
                "clientInfo": { "name": "replicas", "version": "1" } }),
    );
    let ev = c.open(c.post().json(&init)).await;
    assert_eq!(ev.status, 503, "initialize with Redis down");
    assert!(ev.headers.get("mcp-session-id").is_none());
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
    let during = ok_calls.load(Ordering::SeqCst);

    tokio::task::block_in_place(|| redis.restart());
    // Every session stored before the outage continues on every replica, including those that
    // never held it (restored from the persisted record).
    for (cold_c, k) in &cold {
        for (j, gw) in cluster.replicas.iter().enumerate() {
            let mut d = cold_c.clone();
            d.url = gw.url.clone();
            let what = format!("the cold session of replica {k} on replica {j} after the restart");
            poll(Duration::from_secs(15), &what, || async {
                matches!(echo(&d, false, "back").await.outcome, Outcome::Ok).then_some(())
            })
            .await;
        }
    }
    c.session = None;
    let (_fresh, _) = cluster.legacy().await;
    calls_pass(&ok_calls, during, 30, "30 calls after Redis is back").await;
    stop.store(true, Ordering::SeqCst);
    // The load ran through the outage: sessions every replica holds, and Modern calls, which
    // need no store here, never failed.
    let mut calls = 0;
    for t in workers {
        for d in t.await.unwrap() {
            ok(&d, "a warm session or Modern call through the outage");
            calls += 1;
        }
    }
    assert_eq!(redis.keys("rr:sess:*").lines().count(), 7, "3 warm, 3 cold, 1 new");
    eprintln!("Redis restart under load: {calls} calls, all passed");
}

/// OAuth across replicas: the official Python SDK logs in once through the proxy (registration,
/// authorization, callback and token exchange each land on whichever replica the proxy picks),
/// then makes 20 concurrent calls, and 20 more after the upstream token expired: the burst,
/// spread over three replicas, makes exactly one refresh (a lease in Redis), and no rotated
/// refresh token is ever replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_login_and_one_refresh_per_expiry_across_replicas() {
    let redis = RedisServer::start();
    let s = login::auth_cluster(&redis, 3).await;
    let args =
        ["--tool", "api_whoami", "--seconds", "3", "--interval", "3.5", "--concurrency", "20"];
    let out = common::login::login(&s.proxy.url, &args).await;
    assert_eq!(out.summary["logins"], 1, "{}", out.summary);
    assert_eq!(out.summary["errors"], 0, "{:?}", out.calls);
    assert_eq!(out.calls.len(), 40);
    let tokens = login::tokens(&out);
    let (first, second): (BTreeSet<_>, BTreeSet<_>) =
        (tokens[..20].iter().collect(), tokens[20..].iter().collect());
    assert_eq!(first.len(), 1, "one upstream token for the first burst");
    assert_eq!(second.len(), 1, "one refreshed upstream token for the second burst");
    assert!(first.is_disjoint(&second), "the second burst used the expired token");
    let stats = s.idp.stats().await;
    assert_eq!(stats.code_grants, 1, "one upstream login");
    assert_eq!(stats.refresh_grants, 1, "refreshes for one expiry across three replicas");
    assert_eq!(stats.replays, 0, "a rotated refresh token was replayed");
    assert_eq!(stats.rejected, 0);
    let served = s.proxy.served();
    assert!(served.iter().all(|&n| n >= 5), "requests per replica {served:?}");
    // No upstream token reaches any replica's log.
    for (i, gw) in s.replicas.iter().enumerate() {
        let log = gw.proc.stderr() + &gw.proc.lines().join("\n");
        for t in first.iter().chain(&second) {
            assert!(!log.contains(t.as_str()), "replica {i} logged an upstream token");
        }
    }
}

/// Logged in through the proxy for several upstream token lifetimes in the stateless era
/// (2026-07-28), three callers at once: every call passes with one login, never a replayed
/// refresh token, and no more refreshes than one per token lifetime across the three replicas
/// (three replicas refreshing on their own would make about three times as many).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modern_login_lasts_through_lifetimes_across_replicas() {
    const TTL_MS: u64 = 4000;
    // A token is refreshed `refresh_margin` (a fifth of its life, at least 0.5 s) before it
    // expires, and its `exp` (whole seconds) may be up to a second early: it serves this long.
    const SERVES_MS: u64 = TTL_MS - 1000 - TTL_MS / 5;
    let redis = RedisServer::start();
    let s = login::auth_cluster(&redis, TTL_MS / 1000).await;
    let started = Instant::now();
    let since = now_ms();
    let args = [
        "--mode",
        MODERN,
        "--tool",
        "api_whoami",
        "--seconds",
        "10",
        "--interval",
        "0.2",
        "--concurrency",
        "3",
    ];
    let out = common::login::login(&s.proxy.url, &args).await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    assert_eq!(out.summary["logins"], 1, "{}", out.summary);
    assert_eq!(out.summary["errors"], 0, "{:?}", out.calls);
    let seen: BTreeSet<String> = login::tokens(&out).into_iter().collect();
    let stats = s.idp.stats().await;
    assert_eq!(stats.code_grants, 1, "one upstream login");
    assert_eq!(stats.replays, 0, "a rotated refresh token was replayed");
    assert_eq!(stats.rejected, 0);
    let most = elapsed_ms / SERVES_MS + 1;
    let r = stats.refresh_grants;
    assert!(r <= most, "{r} refreshes in {elapsed_ms} ms, at most {most}");
    assert!(r >= 2, "{r} refreshes in {elapsed_ms} ms");
    assert!(seen.len() as u64 <= r + 1, "{} tokens, {r} refreshes", seen.len());
    let served = s.proxy.served();
    assert!(served.iter().all(|&n| n >= 10), "requests per replica {served:?}");
    // Whichever replica sent it, every backend request for the user carried a token valid
    // when it arrived. Before the login, each replica opened its own backend session (as
    // itself: never with a user's token); those are not the user's.
    let (before, after): (Vec<_>, Vec<_>) =
        backend_requests(&s.backend).await.into_iter().partition(|r| r.at < since);
    let own: BTreeSet<_> = before.iter().filter_map(|r| r.session.clone()).collect();
    assert_eq!(own.len(), 3, "one backend session per replica: {before:?}");
    let (system, requests): (Vec<_>, Vec<_>) =
        after.into_iter().partition(|r| r.session.as_ref().is_some_and(|s| own.contains(s)));
    assert!(system.iter().all(|r| r.token.is_none()), "a user's token on a replica's own session");
    assert!(requests.len() >= out.calls.len(), "{} backend requests", requests.len());
    for r in &requests {
        let token = r.token.as_deref().unwrap_or_else(|| panic!("no token: {r:?}"));
        assert!(r.at < jwt_exp_ms(token), "an expired upstream token reached the backend: {r:?}");
    }
    eprintln!(
        "modern login across replicas: {} calls in {elapsed_ms} ms, {r} refreshes (at most \
         {most}), {} tokens, requests per replica {served:?}",
        out.calls.len(),
        seen.len()
    );
}

/// Three Modern `s_sleep` calls of `ms`, routed one to each replica (round robin) before this
/// returns.
async fn long_calls(cluster: &Cluster, ms: u64) -> Vec<tokio::task::JoinHandle<Done>> {
    let routed = cluster.proxy.routed();
    let slept = format!("Slept {ms} ms");
    let calls = (0..3)
        .map(|_| {
            let (c, slept) = (cluster.client(), slept.clone());
            tokio::spawn(async move {
                call_tool(&c, true, "s_sleep", json!({ "ms": ms }), &slept).await
            })
        })
        .collect();
    poll(Duration::from_secs(10), "the long calls to be routed", || async {
        (cluster.proxy.routed() == routed + 3).then_some(())
    })
    .await;
    calls
}

/// The load's callers: every Legacy session, and three Modern clients.
fn callers(cluster: &Cluster, sessions: &[(Client, usize)]) -> Vec<(Client, bool)> {
    let mut clients: Vec<(Client, bool)> =
        sessions.iter().map(|(c, _)| (c.clone(), false)).collect();
    clients.extend((0..3).map(|_| (cluster.client(), true)));
    clients
}

/// Reads `stream` until a `notifications/resources/updated` for `uri` arrives.
async fn updated_within(stream: &mut Events, uri: &str, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(tokio::time::Instant::now()) {
        match stream.next_within(left).await {
            None => return false,
            Some(m) if m["method"] == "notifications/resources/updated" => {
                return m["params"]["uri"] == uri;
            }
            Some(_) => {}
        }
    }
    false
}

/// Touches `uri` through `c` until `stream` hears of it (at most 20 tries).
async fn hears_update(c: &Client, stream: &mut Events, uri: &str) -> bool {
    for _ in 0..20 {
        let r = c.tool(false, "s_touch_resource", json!({ "uri": uri })).await;
        assert!(r.msg().get("error").is_none(), "{:?}", r.message);
        if updated_within(stream, uri, Duration::from_millis(500)).await {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_the_stream_whichever_replica_holds_it() {
    const URI: &str = "test://static-text";
    let redis = RedisServer::start();
    let cluster = Cluster::start(&redis).await;
    let on = |i: usize, c: &Client| {
        let mut c = c.clone();
        c.url = cluster.replicas[i].url.clone();
        c
    };
    // Opened on replica 0, its GET stream on replica 1, then subscribed on replica 2: only
    // replica 2's backend session carries the subscription, so its updates reach the stream on
    // replica 1 through Redis or not at all.
    let mut c = Client::new(&cluster.replicas[0].url);
    c.legacy_init().await;
    let mut stream = on(1, &c).get_stream().await;
    assert_eq!(stream.status, 200);
    let r = on(2, &c).call("resources/subscribe", json!({ "uri": URI })).await;
    assert!(r.msg().get("error").is_none(), "{:?}", r.message);
    assert!(hears_update(&on(2, &c), &mut stream, URI).await, "no update reached replica 1");

    // The client reconnects its stream to another replica: updates follow it there.
    drop(stream);
    let mut stream = on(0, &c).get_stream().await;
    assert_eq!(stream.status, 200);
    assert!(hears_update(&on(2, &c), &mut stream, URI).await, "no update reached replica 0");
    // One channel while one stream is open, named by the hash of the session id, never the id.
    let key = vmcp::session::StoreKey::of(c.session.as_deref().unwrap());
    assert_eq!(redis.channels("rr:ev:*"), vec![format!("rr:ev:{}", key.as_str())]);
    drop(stream);
    poll(Duration::from_secs(10), "the channel to go with its stream", || async {
        redis.channels("rr:ev:*").is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_replica_and_leaves_its_sessions_to_the_others() {
    const VICTIM: usize = 2;
    const SLEEP_MS: u64 = 3_000;
    let redis = RedisServer::start();
    let cluster = Cluster::start(&redis).await;
    let mut sessions = Vec::new();
    for _ in 0..6 {
        sessions.push(cluster.legacy().await);
    }
    assert!(sessions.iter().any(|(_, r)| *r == VICTIM));

    // Long calls, one routed to each replica: the victim's is in flight at SIGTERM.
    let sleepers = long_calls(&cluster, SLEEP_MS).await;
    let clients = callers(&cluster, &sessions);
    let (stop, ok_calls) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let workers = load(clients, &stop, &ok_calls);
    calls_pass(&ok_calls, 0, 60, "60 calls before SIGTERM").await;

    let victim = cluster.replicas[VICTIM].pid();
    let term_at = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let at_term = ok_calls.load(Ordering::SeqCst);
    calls_pass(&ok_calls, at_term, 90, "90 calls after SIGTERM").await;

    // The call in flight on the draining replica finished, in full, and so did the others.
    let mut on_victim = 0;
    for t in sleepers {
        let d = t.await.unwrap();
        on_victim += usize::from(d.replica == Some(VICTIM));
        ok(&d, "a long call in flight at SIGTERM");
    }
    assert_eq!(on_victim, 1, "one long call was on the draining replica");
    // Then the replica exits by itself, well within its grace period.
    poll(Duration::from_secs(20), "the drained replica to exit", || async {
        (!alive(victim)).then_some(())
    })
    .await;
    let exited_after = term_at.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut all = Vec::new();
    for t in workers {
        all.extend(t.await.unwrap());
    }
    // Nothing failed: requests in progress were answered, new ones went elsewhere (a closed
    // listener refuses the connection, and the proxy tries the next replica).
    let failed: Vec<_> = all.iter().filter(|d| !matches!(d.outcome, Outcome::Ok)).collect();
    assert!(failed.is_empty(), "calls failed during the drain: {failed:?}");
    assert!(all.iter().any(|d| d.started > term_at && d.replica != Some(VICTIM)));
    // Every session, the victim's included, goes on on the others.
    for (c, r) in &sessions {
        let d = echo(c, false, &format!("after-term-{r}")).await;
        ok(&d, &format!("a session of replica {r} after the drain"));
        assert_ne!(d.replica, Some(VICTIM));
    }
    eprintln!(
        "SIGTERM under load: {} calls, none failed; the replica exited {exited_after:?} after \
         the signal; requests per replica {:?}",
        all.len(),
        cluster.proxy.served()
    );
}
