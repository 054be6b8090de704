//! `rateLimiting` end to end: a burst above a bucket gets the documented error (JSON-RPC 429
//! with `data.retryAfterMs`, HTTP 429 with `Retry-After`) in both eras, while another user is
//! unaffected; only `tools/call` counts; shared and per-tool buckets; a bucket refills.

mod common;

use std::time::Duration;

use common::local_idp::{AUDIENCE, LocalIdp};
use common::*;
use serde_json::{Value, json};

/// A gateway behind `idp` with a stdio fixture `s` and the given `rateLimiting` block lines.
fn gateway(idp: &LocalIdp, limits: &str) -> Gateway {
    Gateway::start(&format!(
        "name: limited\nincomingAuth:\n  type: oidc\n  oidc:\n    issuer: {}\n    audience: {AUDIENCE}\n\
         backends:\n{}rateLimiting:\n{limits}",
        idp.url,
        stdio_backend("s"),
    ))
}

/// A `tools/call` of `s_echo`, with the HTTP status and headers.
async fn echo(c: &Client, modern: bool) -> (u16, reqwest::header::HeaderMap, Value) {
    let params = json!({ "name": "s_echo", "arguments": { "message": "hi" } });
    let id = c.id();
    let b = if modern {
        c.modern_post(id, "tools/call", params)
    } else {
        c.post().json(&request(id, "tools/call", params))
    };
    let mut ev = c.open(b).await;
    let (status, headers) = (ev.status, ev.headers.clone());
    (status, headers, ev.next().await)
}

fn assert_allowed(r: &(u16, reqwest::header::HeaderMap, Value)) {
    assert_eq!(r.0, 200, "{}", r.2);
    assert_eq!(r.2["result"]["content"][0]["text"], "Echo: hi", "{}", r.2);
}

/// Checks the documented refusal and returns `data.retryAfterMs`.
fn assert_limited(r: &(u16, reqwest::header::HeaderMap, Value), limit: &str) -> u64 {
    let (status, headers, msg) = r;
    assert_eq!(*status, 429, "{msg}");
    let e = &msg["error"];
    assert_eq!(e["code"], 429, "{msg}");
    let message = e["message"].as_str().unwrap_or_default();
    assert!(message.starts_with(&format!("Rate limit exceeded ({limit})")), "{msg}");
    assert_eq!(e["data"]["limit"], limit, "{msg}");
    let ms = e["data"]["retryAfterMs"].as_u64().expect("retryAfterMs");
    let secs = e["data"]["retryAfterSeconds"].as_u64().expect("retryAfterSeconds");
    assert_eq!(secs, ms.div_ceil(1000), "{msg}");
    let retry_after = headers.get("retry-after").and_then(|v| v.to_str().ok());
    assert_eq!(retry_after, Some(secs.to_string().as_str()), "{msg}");
    ms
}

#[tokio::test]
async fn a_burst_over_the_per_user_bucket_is_refused_and_another_user_is_not() {
    let idp = LocalIdp::start();
    let gw = gateway(&idp, "  perUser: { maxTokens: 3, refillPeriod: 1h }\n");
    let new = |sub: &'static str, modern: bool| {
        let mut c = gw.client();
        c.bearer = Some(idp.token(sub));
        async move {
            if !modern {
                c.legacy_init().await;
            }
            c
        }
    };
    let alice = new("alice", false).await;
    let alice_modern = new("alice", true).await;
    let bob = new("bob", false).await;

    // Lists do not count.
    for _ in 0..5 {
        assert!(!alice.tool_names(false).await.is_empty());
    }
    // Alice's three tokens, spent from both eras: one bucket per principal.
    assert_allowed(&echo(&alice, false).await);
    assert_allowed(&echo(&alice_modern, true).await);
    assert_allowed(&echo(&alice, false).await);
    let ms = assert_limited(&echo(&alice, false).await, "rateLimiting.perUser");
    // One token per 20 minutes.
    assert!(ms > 19 * 60 * 1000 && ms <= 20 * 60 * 1000, "{ms}");
    assert_limited(&echo(&alice_modern, true).await, "rateLimiting.perUser");

    // Bob has his own bucket, untouched by Alice's burst.
    for _ in 0..3 {
        assert_allowed(&echo(&bob, false).await);
    }
    assert_limited(&echo(&bob, false).await, "rateLimiting.perUser");

    // A refused call changes nothing else: the session still serves.
    assert!(!alice.tool_names(false).await.is_empty());
}

#[tokio::test]
async fn shared_and_per_tool_buckets_and_refill() {
    let idp = LocalIdp::start();
    // s_echo: 2 calls per second for everyone together; other tools unlimited.
    let gw = gateway(
        &idp,
        "  tools:\n    - name: s_echo\n      shared: { maxTokens: 2, refillPeriod: 1s }\n",
    );
    let mut a = gw.client();
    a.bearer = Some(idp.token("alice"));
    a.legacy_init().await;
    let mut b = gw.client();
    b.bearer = Some(idp.token("bob"));
    b.legacy_init().await;

    // Drain the bucket (a token may come back meanwhile: keep calling until refused).
    let limited = poll(Duration::from_secs(10), "a refusal", || async {
        let r = echo(&a, false).await;
        (r.0 == 429).then_some(r)
    })
    .await;
    let ms = assert_limited(&limited, "rateLimiting.tools[s_echo].shared");
    assert!(ms <= 500, "half a second per token: {ms}");
    // Shared: Bob is refused too, unless a token just came back.
    let r = echo(&b, false).await;
    if r.0 == 429 {
        assert_limited(&r, "rateLimiting.tools[s_echo].shared");
    }
    // Other tools are not limited.
    for _ in 0..5 {
        let r = a.tool(false, "s_whoami", json!({})).await;
        assert!(r.msg().get("error").is_none(), "{:?}", r.message);
    }
    // The bucket refills: a retry after the hint succeeds.
    poll(Duration::from_secs(10), "a token back", || async {
        let r = echo(&a, false).await;
        (r.0 == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn anonymous_callers_share_the_shared_bucket_only() {
    let gw = Gateway::start(&format!(
        "name: anon\nbackends:\n{}rateLimiting:\n  shared: {{ maxTokens: 2, refillPeriod: 1h }}\n  \
         perUser: {{ maxTokens: 1, refillPeriod: 1h }}\n",
        stdio_backend("s")
    ));
    let mut a = gw.client();
    a.legacy_init().await;
    let b = gw.client();
    // perUser does not apply to anonymous callers: two calls pass, the shared bucket ends it.
    assert_allowed(&echo(&a, false).await);
    assert_allowed(&echo(&b, true).await);
    assert_limited(&echo(&a, false).await, "rateLimiting.shared");
    assert_limited(&echo(&b, true).await, "rateLimiting.shared");
}
