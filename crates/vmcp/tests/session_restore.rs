//! Legacy sessions across replicas: two gateways in this process share one session store, each
//! in front of the same real backends (a Legacy `vmcp-fixture` and server-everything over
//! Streamable HTTP). A session started on A continues on B: calls work (on backend sessions B
//! opens itself), a subscription made on A is known on B (and one made on B reaches the copy A
//! holds), another principal is refused, a
//! DELETE on B ends it on A too, a store that fails gives 503, and A's shutdown leaves its
//! sessions to B. What cannot move (a parked call, a relay) fails cleanly on B.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::local_idp::{AUDIENCE, LocalIdp};
use common::*;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use vmcp::session::{MemorySessionStore, SessionRecord, SessionStore, StoreError, StoreKey};

const URI: &str = "test://static-text";

/// A memory store that fails every call while `down` is set.
#[derive(Default)]
struct Flaky {
    inner: MemorySessionStore,
    down: AtomicBool,
}

impl Flaky {
    fn check(&self) -> Result<(), StoreError> {
        match self.down.load(Ordering::SeqCst) {
            true => Err(StoreError::Unavailable("down for the test".into())),
            false => Ok(()),
        }
    }
}

type Fut<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

impl SessionStore for Flaky {
    fn put<'a>(&'a self, k: &'a StoreKey, r: &'a SessionRecord, t: Duration) -> Fut<'a, ()> {
        Box::pin(async move {
            self.check()?;
            self.inner.put(k, r, t).await
        })
    }
    fn get<'a>(&'a self, k: &'a StoreKey) -> Fut<'a, Option<SessionRecord>> {
        Box::pin(async move {
            self.check()?;
            self.inner.get(k).await
        })
    }
    fn touch<'a>(&'a self, k: &'a StoreKey, t: Duration) -> Fut<'a, Option<SessionRecord>> {
        Box::pin(async move {
            self.check()?;
            self.inner.touch(k, t).await
        })
    }
    fn delete<'a>(&'a self, k: &'a StoreKey) -> Fut<'a, ()> {
        Box::pin(async move {
            self.check()?;
            self.inner.delete(k).await
        })
    }
    fn delete_idle<'a>(&'a self, k: &'a StoreKey, t: Duration, m: Duration) -> Fut<'a, bool> {
        Box::pin(async move {
            self.check()?;
            self.inner.delete_idle(k, t, m).await
        })
    }
}

/// A gateway served from this process.
struct Replica {
    gw: Arc<vmcp::gateway::Gateway>,
    url: String,
    server: vmcp::http::server::Server,
}

impl Replica {
    async fn start(yaml: &str, store: Arc<dyn SessionStore>) -> Replica {
        let cfg = vmcp::config::parse(yaml, "session_restore.yaml").expect("config");
        let gw = vmcp::gateway::Gateway::start_with(&cfg, store).expect("gateway");
        vmcp::catalog::live::settle(&gw.backends, &gw.catalog, Duration::from_secs(20)).await;
        let app = vmcp::http::router(gw.clone(), &cfg.server);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
        let server = vmcp::http::server::Server::start(listener, app, &cfg.server.connections);
        Replica { gw, url, server }
    }

    /// `c`, talking to this replica (same session, same token).
    fn take(&self, c: &Client) -> Client {
        let mut c = c.clone();
        c.url = self.url.clone();
        c
    }

    /// What SIGTERM does: drain connections, then shut the gateway down.
    async fn stop(mut self) {
        self.gw.stop.cancel();
        self.server.drain().await;
        self.server.finish(Duration::from_secs(1)).await;
        self.gw.shutdown(Duration::from_secs(5)).await;
    }
}

/// The same backends behind every replica.
struct Backends {
    fixture: Fixture,
    _everything: Proc,
    everything_port: u16,
}

fn backends() -> Backends {
    let fixture = Fixture::http("legacy", "f");
    let (everything, everything_port) = serve_everything("streamableHttp");
    Backends { fixture, _everything: everything, everything_port }
}

fn yaml(b: &Backends, incoming: &str) -> String {
    format!(
        "name: replicas\n{incoming}backends:\n{}{}",
        http_backend("f", &b.fixture.url),
        http_backend("e", &format!("http://127.0.0.1:{}/mcp", b.everything_port)),
    )
}

async fn pair(b: &Backends, incoming: &str, store: Arc<dyn SessionStore>) -> (Replica, Replica) {
    let a = Replica::start(&yaml(b, incoming), store.clone()).await;
    let b = Replica::start(&yaml(b, incoming), store).await;
    (a, b)
}

fn ok(r: &Reply) {
    assert!(r.msg().get("error").is_none(), "{:?}", r.message);
}

/// Reads `stream` until a `notifications/resources/updated` for [`URI`] arrives.
async fn updated_within(stream: &mut Events, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let Some(left) = deadline.checked_duration_since(tokio::time::Instant::now()) else {
            return false;
        };
        match stream.next_within(left).await {
            None => return false,
            Some(m)
                if m["method"] == "notifications/resources/updated"
                    && m["params"]["uri"] == URI =>
            {
                return true;
            }
            Some(_) => {}
        }
    }
}

/// Touches [`URI`] through `c` until `stream` hears of it (at most 20 tries).
async fn hears_update(c: &Client, stream: &mut Events) -> bool {
    for _ in 0..20 {
        c.tool(false, "f_touch_resource", json!({ "uri": URI })).await;
        if updated_within(stream, Duration::from_millis(500)).await {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_started_on_a_continues_on_b() {
    let backends = backends();
    let (a, b) = pair(&backends, "", Arc::new(MemorySessionStore::default())).await;
    let mut on_a = Client::new(&a.url);
    on_a.legacy_init_with(json!({ "sampling": {} })).await;
    ok(&on_a.call("resources/subscribe", json!({ "uri": URI })).await);
    ok(&on_a.call("logging/setLevel", json!({ "level": "error" })).await);
    let first = backend_session_of(&on_a.tool(false, "f_whoami", json!({})).await);

    let on_b = b.take(&on_a);
    assert_eq!(b.gw.sessions.len(), 0);
    let r = on_b.tool(false, "f_echo", json!({ "message": "via b" })).await;
    assert_eq!(r.text(), "Echo: via b", "{:?}", r.message);
    let r = on_b.tool(false, "e_echo", json!({ "message": "via b" })).await;
    assert_eq!(r.text(), "Echo: via b", "{:?}", r.message);
    let restored = b.gw.sessions.all();
    assert_eq!(restored.len(), 1, "B restored the session");
    let s = &restored[0];
    assert_eq!(s.id, on_a.session.clone().unwrap(), "same id");
    assert!(s.is_subscribed(URI) && s.log_level() == "error", "A's subscription and level");
    assert_eq!(s.client_capabilities, json!({ "sampling": {} }));
    // B opened a backend session of its own, as the same principal: it never reuses A's.
    let second = backend_session_of(&on_b.tool(false, "f_whoami", json!({})).await);
    assert!(first.is_some() && second.is_some() && first != second, "{first:?} {second:?}");

    // The subscription made on A works on B: B re-subscribed its own backend session.
    let mut stream = on_b.get_stream().await;
    assert_eq!(stream.status, 200);
    assert!(
        hears_update(&on_b, &mut stream).await,
        "B never delivered an update for the subscription made on A"
    );

    // A keeps serving it too.
    ok(&on_a.call("ping", json!({})).await);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_made_on_b_reaches_the_copy_a_holds() {
    let backends = backends();
    let (a, b) = pair(&backends, "", Arc::new(MemorySessionStore::default())).await;
    let mut on_a = Client::new(&a.url);
    on_a.legacy_init().await;
    let on_b = b.take(&on_a);
    ok(&on_b.call("ping", json!({})).await);
    // Round robin: A holds a copy while B changes the session.
    ok(&on_b.call("resources/subscribe", json!({ "uri": URI })).await);
    poll(Duration::from_secs(10), "A's copy to take the subscription over", || async {
        ok(&on_a.call("ping", json!({})).await);
        a.gw.sessions.all()[0].is_subscribed(URI).then_some(())
    })
    .await;
    // A subscribed its own backend session too: its GET stream hears the updates.
    let mut stream = on_a.get_stream().await;
    assert!(
        hears_update(&on_a, &mut stream).await,
        "A never delivered an update for the subscription made on B"
    );
    ok(&on_b.call("resources/unsubscribe", json!({ "uri": URI })).await);
    poll(Duration::from_secs(10), "A's copy to drop the subscription", || async {
        ok(&on_a.call("ping", json!({})).await);
        (!a.gw.sessions.all()[0].is_subscribed(URI)).then_some(())
    })
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_b_hears_what_only_a_subscribed_to() {
    let backends = backends();
    let (a, b) = pair(&backends, "", Arc::new(MemorySessionStore::default())).await;
    let mut on_a = Client::new(&a.url);
    on_a.legacy_init().await;
    let on_b = b.take(&on_a);
    let mut stream = on_b.get_stream().await;
    assert_eq!(stream.status, 200);
    // Another session of the same principal, its stream on B too: none of this is its business.
    let mut other = Client::new(&b.url);
    other.legacy_init().await;
    let mut other_stream = other.get_stream().await;
    // Subscribed on A after B restored the session: only A's backend session carries it.
    ok(&on_a.call("resources/subscribe", json!({ "uri": URI })).await);
    assert!(
        hears_update(&on_a, &mut stream).await,
        "the update A received never reached the stream B holds"
    );
    let copy = b.gw.sessions.all().into_iter().find(|s| Some(&s.id) == on_a.session.as_ref());
    assert!(!copy.unwrap().is_subscribed(URI), "B's copy never learnt of it: the bus carried it");
    assert!(!updated_within(&mut other_stream, Duration::from_millis(300)).await);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_principal_is_refused_on_b_as_on_a() {
    let backends = backends();
    let idp = LocalIdp::start();
    let incoming = format!(
        "incomingAuth:\n  type: oidc\n  oidc:\n    issuer: {}\n    audience: {AUDIENCE}\n",
        idp.url
    );
    let (a, b) = pair(&backends, &incoming, Arc::new(MemorySessionStore::default())).await;
    let mut alice = Client::new(&a.url);
    alice.bearer = Some(idp.token("alice"));
    alice.legacy_init().await;

    let mut mallory = b.take(&alice);
    mallory.bearer = Some(idp.token("mallory"));
    let r = mallory.call("ping", json!({})).await;
    assert_eq!(r.status, 403, "{:?}", r.message);
    assert_eq!(mallory.delete_session().await, 403);
    let mut on_a = a.take(&mallory);
    on_a.session = alice.session.clone();
    assert_eq!(on_a.call("ping", json!({})).await.status, 403, "the same answer on A");
    assert_eq!(b.gw.sessions.len(), 0, "nothing restored for another principal");

    // Alice herself, with a fresh token, continues on B.
    let mut alice_b = b.take(&alice);
    alice_b.bearer = Some(idp.token("alice"));
    let r = alice_b.tool(false, "f_echo", json!({ "message": "mine" })).await;
    assert_eq!(r.text(), "Echo: mine", "{:?}", r.message);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_on_b_ends_the_session_on_a_too() {
    let backends = backends();
    let (a, b) = pair(&backends, "", Arc::new(MemorySessionStore::default())).await;
    let mut on_a = Client::new(&a.url);
    on_a.legacy_init().await;
    ok(&on_a.tool(false, "f_echo", json!({ "message": "x" })).await);
    let on_b = b.take(&on_a);
    assert_eq!(on_b.delete_session().await, 200);
    // A serves from its copy for at most a second, then learns from the store.
    poll(Duration::from_secs(10), "A to notice the DELETE", || async {
        (on_a.call("ping", json!({})).await.status == 404).then_some(())
    })
    .await;
    assert_eq!(a.gw.sessions.len(), 0, "A's copy ended");
    // And nothing brings it back, on either replica.
    for c in [&on_a, &on_b] {
        let r = c.call("ping", json!({})).await;
        assert_eq!((r.status, r.error_code()), (404, -32600), "{:?}", r.message);
    }
    assert_eq!(on_a.delete_session().await, 404);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_gives_503_and_changes_nothing() {
    let backends = backends();
    let store = Arc::new(Flaky::default());
    let (a, b) = pair(&backends, "", store.clone()).await;
    let mut on_a = Client::new(&a.url);
    on_a.legacy_init().await;
    let on_b = b.take(&on_a);
    store.down.store(true, Ordering::SeqCst);

    // B does not hold the session and cannot ask: 503, not 404.
    let (id, events) = on_b.start("ping", json!({})).await;
    assert_eq!(events.status, 503);
    assert_eq!(events.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let r = events.reply(id, STEP).await;
    assert_eq!(r.error_code(), -32603);
    assert!(r.error()["message"].as_str().unwrap().contains("session store unavailable"));
    assert_eq!(on_b.get_stream().await.status, 503);
    assert_eq!(on_b.delete_session().await, 503);
    // A new session cannot be created without its record: none is left half-made.
    let mut fresh = Client::new(&a.url);
    let id = fresh.id();
    let init = request(
        id,
        "initialize",
        json!({ "protocolVersion": LEGACY, "capabilities": {}, "clientInfo": { "name": "x" } }),
    );
    let events = fresh.open(fresh.post().json(&init)).await;
    assert_eq!(events.status, 503);
    assert!(events.headers.get("mcp-session-id").is_none());
    assert_eq!(a.gw.sessions.len(), 1, "no half-created session");
    // A still serves the session it holds.
    ok(&on_a.tool(false, "f_echo", json!({ "message": "still" })).await);

    store.down.store(false, Ordering::SeqCst);
    ok(&on_b.call("ping", json!({})).await);
    fresh.legacy_init().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_sessions_to_the_other_replica() {
    let backends = backends();
    let (a, b) = pair(&backends, "", Arc::new(MemorySessionStore::default())).await;
    let mut on_a = Client::new(&a.url);
    on_a.legacy_init().await;
    ok(&on_a.call("resources/subscribe", json!({ "uri": URI })).await);
    let on_b = b.take(&on_a);
    a.stop().await;
    let r = on_b.tool(false, "f_echo", json!({ "message": "after A" })).await;
    assert_eq!(r.text(), "Echo: after A", "{:?}", r.message);
    assert!(b.gw.sessions.all()[0].is_subscribed(URI));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_move_fails_cleanly_on_the_other_replica() {
    let backends = backends();
    let (a, b) = pair(&backends, "", Arc::new(MemorySessionStore::default())).await;
    let mut on_a = Client::new(&a.url);
    on_a.legacy_init().await;
    let on_b = b.take(&on_a);

    // An answer to a relay B never sent: the same error as any unknown relay.
    let answer = json!({ "jsonrpc": "2.0", "id": "vmcp-1", "result": {} });
    let events = on_b.open(on_b.post().json(&answer)).await;
    assert_eq!(events.status, 400);
    // Cancelling a request B does not run changes nothing.
    let cancel = json!({ "requestId": 77, "reason": "moved" });
    assert_eq!(on_b.notify("notifications/cancelled", cancel).await, 202);
    ok(&on_b.call("ping", json!({})).await);

    // A Modern retry of a call parked on another replica: a retryable error, at once.
    let modern = Client::new(&b.url);
    let params = json!({
        "name": "f_echo",
        "arguments": { "message": "x" },
        "inputResponses": {},
        "requestState": "vmcp-parked.0123456789abcdef",
    });
    let r = tokio::time::timeout(STEP, modern.modern_call("tools/call", params))
        .await
        .expect("an answer, not a hang");
    assert_eq!(r.error_code(), -32602, "{:?}", r.message);
    assert_eq!(r.error()["data"]["retryable"], Value::Bool(true), "{:?}", r.message);
    assert!(r.error()["message"].as_str().unwrap().contains("another replica"));
    a.stop().await;
    b.stop().await;
}
