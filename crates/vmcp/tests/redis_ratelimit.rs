//! The rate-limit store on a real redis-server: the memory store's behaviour, shared by two
//! instances ("replicas"), failing fast while Redis is down and recovering by itself.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use vmcp::auth::Binding;
use vmcp::ratelimit::store::{Bucket, Check, Decision, Key, RateLimitStore};
use vmcp::store::Redis;
use vmcp::store::ratelimit::RedisRateLimitStore;

fn store(server: &RedisServer, prefix: &str) -> RedisRateLimitStore {
    RedisRateLimitStore::new(Redis::new(&server.settings(prefix)).unwrap())
}

fn bucket(max: u32, period: Duration) -> Bucket {
    Bucket { max_tokens: max, refill_period: period }
}

fn check(key: Key, b: Bucket) -> Check {
    Check { key, bucket: b }
}

fn user(sub: &str) -> Binding {
    Binding::Principal { issuer: "https://idp:1".into(), subject: sub.into() }
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn a_burst_drains_the_bucket_and_time_refills_it() {
    let r = RedisServer::start();
    let s = store(&r, "t1:");
    let c = [check(Key::Shared, bucket(3, HOUR))];
    for _ in 0..3 {
        assert_eq!(s.consume(&c).await.unwrap(), Decision::Allowed);
    }
    let Decision::Limited { index: 0, retry_after } = s.consume(&c).await.unwrap() else {
        panic!("allowed over the burst")
    };
    // One token per 1200 s.
    assert!(retry_after > Duration::from_secs(1190) && retry_after <= Duration::from_secs(1200));
    // A fast bucket refills: 2 tokens per 200 ms.
    let fast = [check(Key::Shared, bucket(2, Duration::from_millis(200)))];
    assert_eq!(s.consume(&fast).await.unwrap(), Decision::Allowed);
    assert_eq!(s.consume(&fast).await.unwrap(), Decision::Allowed);
    let Decision::Limited { retry_after, .. } = s.consume(&fast).await.unwrap() else {
        panic!("allowed over the burst")
    };
    assert!(retry_after <= Duration::from_millis(100), "{retry_after:?}");
    let t = Instant::now();
    common::poll(Duration::from_secs(5), "refill", || async {
        (s.consume(&fast).await.unwrap() == Decision::Allowed).then_some(())
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn all_or_nothing_across_buckets_and_users_apart() {
    let r = RedisServer::start();
    let s = store(&r, "t2:");
    let shared = check(Key::Shared, bucket(10, HOUR));
    let tool = check(Key::SharedTool(Arc::from("echo")), bucket(1, HOUR));
    assert_eq!(s.consume(&[shared.clone(), tool.clone()]).await.unwrap(), Decision::Allowed);
    for _ in 0..5 {
        let d = s.consume(&[shared.clone(), tool.clone()]).await.unwrap();
        assert!(matches!(d, Decision::Limited { index: 1, .. }), "{d:?}");
    }
    // The refused calls did not drain the shared bucket: 9 left.
    for _ in 0..9 {
        assert_eq!(s.consume(std::slice::from_ref(&shared)).await.unwrap(), Decision::Allowed);
    }
    assert!(matches!(s.consume(&[shared]).await.unwrap(), Decision::Limited { index: 0, .. }));

    let a = [check(Key::User(user("alice")), bucket(1, HOUR))];
    let b = [check(Key::User(user("bob")), bucket(1, HOUR))];
    let a_tool = [check(Key::UserTool(Arc::from("echo"), user("alice")), bucket(1, HOUR))];
    assert_eq!(s.consume(&a).await.unwrap(), Decision::Allowed);
    assert!(matches!(s.consume(&a).await.unwrap(), Decision::Limited { .. }));
    assert_eq!(s.consume(&b).await.unwrap(), Decision::Allowed);
    assert_eq!(s.consume(&a_tool).await.unwrap(), Decision::Allowed);
    // A bucket whose size changed starts over.
    let a2 = [check(Key::User(user("alice")), bucket(2, HOUR))];
    assert_eq!(s.consume(&a2).await.unwrap(), Decision::Allowed);
}

#[tokio::test]
async fn two_replicas_share_one_bucket() {
    let r = RedisServer::start();
    let (one, two) = (Arc::new(store(&r, "t3:")), Arc::new(store(&r, "t3:")));
    let c = [check(Key::Shared, bucket(20, HOUR))];
    // 60 concurrent calls, half through each replica: exactly 20 get through.
    let mut tasks = Vec::new();
    for i in 0..60 {
        let s = if i % 2 == 0 { one.clone() } else { two.clone() };
        let c = c.clone();
        tasks.push(tokio::spawn(async move { s.consume(&c).await.unwrap() }));
    }
    let mut allowed = 0;
    for t in tasks {
        if t.await.unwrap() == Decision::Allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 20);
    // Another prefix is another gateway: its own bucket.
    let other = store(&r, "t3-other:");
    assert_eq!(other.consume(&c).await.unwrap(), Decision::Allowed);
}

#[tokio::test]
async fn redis_down_fails_fast_and_recovery_needs_no_restart() {
    let mut r = RedisServer::start();
    let s = store(&r, "t4:");
    let c = [check(Key::Shared, bucket(100, HOUR))];
    assert_eq!(s.consume(&c).await.unwrap(), Decision::Allowed);
    r.stop();
    for _ in 0..3 {
        let t = Instant::now();
        let e = s.consume(&c).await.unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
        assert!(e.to_string().contains("unavailable"), "{e}");
    }
    r.restart();
    common::poll(Duration::from_secs(10), "the store works again", || async {
        s.consume(&c).await.ok().filter(|d| *d == Decision::Allowed)
    })
    .await;
}

#[tokio::test]
async fn a_store_that_never_connected_fails_fast_then_connects() {
    // Nothing listens yet: vmcp starts while Redis is down.
    let port = common::free_port();
    let mut settings = vmcp::store::RedisSettings::new("127.0.0.1", port);
    settings.key_prefix = "t5:".into();
    let s = RedisRateLimitStore::new(Redis::new(&settings).unwrap());
    let c = [check(Key::Shared, bucket(1, HOUR))];
    let t = Instant::now();
    assert!(s.consume(&c).await.is_err());
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
    let _r = RedisServer::start_on(port);
    common::poll(Duration::from_secs(10), "the store connects", || async {
        s.consume(&c).await.ok().filter(|d| *d == Decision::Allowed)
    })
    .await;
}
