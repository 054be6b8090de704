//! Resource subscriptions through the gateway: per-client backend sessions (Legacy HTTP), shared
//! backend sessions (stdio, reference counted), and Modern backends (the subscription rides on the
//! gateway's listen stream), for Legacy clients (GET stream) and Modern clients (listen stream).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const URI: &str = "test://static-text";

/// Reads `stream` until a `notifications/resources/updated` for `URI` arrives (or time runs out).
async fn updated_within(stream: &mut Events, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(tokio::time::Instant::now())?;
        let msg = stream.next_within(left).await?;
        if msg["method"] == "notifications/resources/updated" && msg["params"]["uri"] == URI {
            return Some(msg);
        }
    }
}

/// A Legacy client subscribed through vmcp hears about updates; one that is not, does not; after
/// unsubscribing, neither does the first.
async fn legacy_clients(yaml: &str, backend: &str) {
    let gw = Gateway::start(yaml);
    let mut a = gw.client();
    a.legacy_init().await;
    let mut b = gw.client();
    b.legacy_init().await;
    let r = a.call("resources/subscribe", json!({ "uri": URI })).await;
    assert!(r.msg().get("error").is_none(), "{backend}: {:?}", r.message);
    let mut a_stream = a.get_stream().await;
    let mut b_stream = b.get_stream().await;
    let touch = format!("{backend}_touch_resource");
    // The backend may take a moment to carry the subscription (a listen stream reopens).
    let mut got = None;
    for _ in 0..20 {
        b.tool(false, &touch, json!({ "uri": URI })).await;
        got = updated_within(&mut a_stream, Duration::from_millis(500)).await;
        if got.is_some() {
            break;
        }
    }
    assert!(got.is_some(), "{backend}: the subscribed client never heard of the update");
    assert!(
        updated_within(&mut b_stream, Duration::from_millis(500)).await.is_none(),
        "{backend}: a client that did not subscribe got the update"
    );
    let r = a.call("resources/unsubscribe", json!({ "uri": URI })).await;
    assert!(r.msg().get("error").is_none(), "{backend}: {:?}", r.message);
    // Drain what may still be in flight, then check silence.
    while updated_within(&mut a_stream, Duration::from_millis(300)).await.is_some() {}
    b.tool(false, &touch, json!({ "uri": URI })).await;
    assert!(
        updated_within(&mut a_stream, Duration::from_millis(700)).await.is_none(),
        "{backend}: an unsubscribed client still got updates"
    );
}

#[tokio::test]
async fn legacy_http_backend_per_client_session() {
    let f = Fixture::http("legacy", "h");
    legacy_clients(&format!("name: s\nbackends:\n{}", http_backend("h", &f.url)), "h").await;
}

#[tokio::test]
async fn stdio_backend_shared_session() {
    legacy_clients(&format!("name: s\nbackends:\n{}", stdio_backend("s")), "s").await;
}

#[tokio::test]
async fn modern_http_backend_via_listen_stream() {
    let f = Fixture::http("modern", "m");
    legacy_clients(&format!("name: s\nbackends:\n{}", http_backend("m", &f.url)), "m").await;
}

/// A Modern client's `subscriptions/listen` with `resourceSubscriptions` gets the update, tagged
/// with its subscription id, whatever the backend's era.
#[tokio::test]
async fn modern_client_listen_stream_carries_resource_updates() {
    for era in ["legacy", "modern"] {
        let f = Fixture::http(era, "x");
        let gw = Gateway::start(&format!("name: s\nbackends:\n{}", http_backend("x", &f.url)));
        let c = gw.client();
        let (id, mut stream) = c
            .modern_start(
                "subscriptions/listen",
                json!({ "notifications": { "resourceSubscriptions": [URI] } }),
            )
            .await;
        let ack = stream.next().await;
        assert_eq!(ack["method"], "notifications/subscriptions/acknowledged", "{era}: {ack}");
        assert_eq!(ack["params"]["notifications"]["resourceSubscriptions"], json!([URI]), "{era}");
        let mut got = None;
        for _ in 0..20 {
            c.tool(true, "x_touch_resource", json!({ "uri": URI })).await;
            got = updated_within(&mut stream, Duration::from_millis(500)).await;
            if got.is_some() {
                break;
            }
        }
        let got = got.unwrap_or_else(|| panic!("{era}: no update on the listen stream"));
        assert_eq!(
            got["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
            json!(id),
            "{era}"
        );
    }
}

/// A subscription the backend refuses is refused to the client and leaves nothing behind: the
/// same client asking again, and another client sharing the backend session, are each asked
/// about at the backend again (and refused), never waved through on a stale count.
#[tokio::test]
async fn a_refused_subscription_is_rolled_back() {
    let gw = Gateway::start(&format!("name: subs\nbackends:\n{}", stdio_backend("st")));
    let refused = "test://template/refused/data";
    let mut a = gw.client();
    a.legacy_init().await;
    let mut b = gw.client();
    b.legacy_init().await;
    for (who, c) in [("a", &a), ("a again", &a), ("b", &b)] {
        let r = c.call("resources/subscribe", json!({ "uri": refused })).await;
        let e = r.error();
        assert!(e["message"].as_str().unwrap_or("").contains("refused"), "{who}: {e}");
    }
    // An accepted one still works, and unsubscribing the refused one is a no-op, not an error.
    let r = a.call("resources/subscribe", json!({ "uri": URI })).await;
    assert!(r.msg().get("error").is_none(), "{:?}", r.message);
    let r = a.call("resources/unsubscribe", json!({ "uri": refused })).await;
    assert!(r.msg().get("error").is_none(), "{:?}", r.message);
}

/// The bearer tokens of the `subscriptions/listen` requests `backend` received (`None`: without
/// one).
async fn listen_tokens(backend: &Fixture) -> Vec<Option<String>> {
    common::login::backend_requests(backend)
        .await
        .into_iter()
        .filter(|r| r.mcp_method.as_deref() == Some("subscriptions/listen"))
        .map(|r| r.token)
        .collect()
}

/// A Modern backend that gets the user's own credentials authorises each principal's
/// subscriptions: each principal's URIs ride on a stream opened with that principal's token
/// (never on the gateway's own), a URI the backend does not accept is refused to the subscriber
/// who asked and leaves nothing behind, and a principal's stream closes when its last
/// subscription ends.
#[tokio::test]
async fn modern_backend_with_user_credentials_listens_per_principal() {
    use common::local_idp::{AUDIENCE, LocalIdp};
    let idp = LocalIdp::start();
    let f = Fixture::http("modern", "m");
    let gw = Gateway::start(&format!(
        "name: s\nincomingAuth:\n  type: oidc\n  oidc:\n    issuer: {}\n    audience: {AUDIENCE}\n\
         outgoingAuth:\n  backends:\n    m: {{ type: passthrough }}\nbackends:\n{}",
        idp.url,
        http_backend("m", &f.url),
    ));
    let (alice_token, bob_token) = (idp.token("alice"), idp.token("bob"));
    let mut alice = gw.client();
    alice.bearer = Some(alice_token.clone());
    alice.legacy_init().await;
    let mut bob = gw.client();
    bob.bearer = Some(bob_token.clone());
    bob.legacy_init().await;

    // Both subscribe: the backend sees one listen stream per principal, each with its own token.
    for c in [&alice, &bob] {
        let r = c.call("resources/subscribe", json!({ "uri": URI })).await;
        assert!(r.msg().get("error").is_none(), "{:?}", r.message);
    }
    let tokens = listen_tokens(&f).await;
    for t in [&alice_token, &bob_token] {
        assert!(
            tokens.iter().any(|seen| seen.as_deref() == Some(t.as_str())),
            "no listen stream carried a subscriber's token: {tokens:?}"
        );
    }
    assert_eq!(gw.backend_status("m").await["principalListenStreams"], 2);

    // Alice hears about the update on her GET stream.
    let mut a_stream = alice.get_stream().await;
    let mut got = None;
    for _ in 0..20 {
        bob.tool(false, "m_touch_resource", json!({ "uri": URI })).await;
        got = updated_within(&mut a_stream, Duration::from_millis(500)).await;
        if got.is_some() {
            break;
        }
    }
    assert!(got.is_some(), "a subscribed principal never heard of the update");

    // A URI the backend does not accept is refused to the one who asked, every time.
    let refused = "test://template/refused/data";
    for _ in 0..2 {
        let r = bob.call("resources/subscribe", json!({ "uri": refused })).await;
        let e = r.error();
        assert!(e["message"].as_str().unwrap_or("").contains("refused"), "{e}");
    }

    // The last subscription of a principal ends its stream.
    for c in [&alice, &bob] {
        let r = c.call("resources/unsubscribe", json!({ "uri": URI })).await;
        assert!(r.msg().get("error").is_none(), "{:?}", r.message);
    }
    poll(Duration::from_secs(5), "principal streams to close", || async {
        (gw.backend_status("m").await["principalListenStreams"] == 0).then_some(())
    })
    .await;
}

/// A Legacy backend forgets its sessions (a restart on the same port): a client's backend
/// session that carries a subscription is renewed at once and subscribed again, so the client
/// keeps hearing about updates without sending anything.
#[tokio::test]
async fn a_forgotten_backend_session_keeps_its_subscriptions() {
    let f = Fixture::http("legacy", "h");
    let gw = Gateway::start(&format!("name: s\nbackends:\n{}", http_backend("h", &f.url)));
    let mut a = gw.client();
    a.legacy_init().await;
    let mut b = gw.client();
    b.legacy_init().await;
    let r = a.call("resources/subscribe", json!({ "uri": URI })).await;
    assert!(r.msg().get("error").is_none(), "{:?}", r.message);
    let mut a_stream = a.get_stream().await;
    let resp = reqwest::Client::new()
        .post(f.url.replace("/mcp", "/test/forget-sessions"))
        .send()
        .await
        .expect("forget");
    assert!(resp.status().is_success());
    let mut got = None;
    for _ in 0..20 {
        b.tool(false, "h_touch_resource", json!({ "uri": URI })).await;
        got = updated_within(&mut a_stream, Duration::from_millis(500)).await;
        if got.is_some() {
            break;
        }
    }
    assert!(got.is_some(), "the subscription did not survive the backend forgetting its session");
}
