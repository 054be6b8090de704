//! Two vmcp processes sharing one redis-server (`sessionStorage: {provider: redis}`): calls
//! through both count against one `rateLimiting.shared` bucket; with Redis down a call is
//! refused fast with "rate-limit storage unavailable"; Redis back, calls pass again without
//! restarting vmcp.

mod common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::*;
use serde_json::{Value, json};

fn gateway(redis: &RedisServer, password_file: Option<&std::path::Path>) -> Gateway {
    let pw =
        password_file.map(|p| format!("  passwordFile: {}\n", p.display())).unwrap_or_default();
    Gateway::start(&format!(
        "name: replicas\nbackends:\n{}sessionStorage:\n  provider: redis\n  address: {}\n  \
         keyPrefix: 'e2e:'\n{pw}rateLimiting:\n  shared: {{ maxTokens: 6, refillPeriod: 1h }}\n",
        stdio_backend("s"),
        redis.address(),
    ))
}

async fn echo(c: &Client, modern: bool) -> Value {
    let params = json!({ "name": "s_echo", "arguments": { "message": "hi" } });
    let id = c.id();
    let b = if modern {
        c.modern_post(id, "tools/call", params)
    } else {
        c.post().json(&request(id, "tools/call", params))
    };
    c.open(b).await.next().await
}

fn allowed(v: &Value) -> bool {
    v["result"]["content"][0]["text"] == "Echo: hi"
}

#[tokio::test]
async fn two_replicas_count_against_one_bucket() {
    let mut redis = RedisServer::with_password("e2e-pw");
    let pw = TempDir::new("redis-pw");
    let pw_file = pw.0.join("password");
    std::fs::write(&pw_file, "e2e-pw\n").unwrap();
    let (one, two) = (gateway(&redis, Some(&pw_file)), gateway(&redis, Some(&pw_file)));
    let mut a = one.client();
    a.legacy_init().await;
    let b = two.client();
    let mut passed = 0;
    for i in 0..12 {
        let r = if i % 2 == 0 { echo(&a, false).await } else { echo(&b, true).await };
        if allowed(&r) {
            passed += 1;
        } else {
            assert_eq!(r["error"]["code"], 429, "{r}");
            assert_eq!(r["error"]["data"]["limit"], "rateLimiting.shared", "{r}");
        }
    }
    assert_eq!(passed, 6, "one bucket of 6 across both replicas");

    // Redis gone: refused fast with the storage named, on either replica.
    redis.stop();
    for (c, modern) in [(&a, false), (&b, true)] {
        let t = Instant::now();
        let r = echo(c, modern).await;
        assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
        assert_eq!(r["error"]["code"], -32603, "{r}");
        assert_eq!(r["error"]["message"], "rate-limit storage unavailable", "{r}");
        assert_eq!(r["error"]["data"]["retryable"], true, "{r}");
    }
    // Redis back (empty: it kept nothing): a full bucket, no vmcp restart.
    redis.restart();
    poll(Duration::from_secs(15), "calls to pass again", || async {
        allowed(&echo(&b, true).await).then_some(())
    })
    .await;
    assert!(allowed(&echo(&a, false).await));
    // The password never reaches the log.
    for gw in [&one, &two] {
        let log = gw.proc.stderr() + &gw.proc.lines().join("\n");
        assert!(log.contains("shared storage: redis"), "{log}");
        assert!(!log.contains("e2e-pw"), "password in the log");
    }
}

#[tokio::test]
async fn a_wrong_password_fails_calls_not_the_start() {
    let redis = RedisServer::with_password("right");
    let pw = TempDir::new("redis-pw");
    let pw_file = pw.0.join("password");
    std::fs::write(&pw_file, "wrong").unwrap();
    let gw = gateway(&redis, Some(&pw_file));
    let c = gw.client();
    let r = echo(&c, true).await;
    assert_eq!(r["error"]["message"], "rate-limit storage unavailable", "{r}");
    let log = gw.proc.stderr() + &gw.proc.lines().join("\n");
    assert!(!log.contains("wrong"), "password in the log:\n{log}");
}
