//! The session bus on a real redis-server (`store::bus::RedisBus`): two buses ("replicas") on
//! one Redis carry a message from one to a listener on the other, only on the session's own
//! channel and only under the same key prefix; with a password; a listener survives a Redis
//! restart (the subscriber reconnects and subscribes again); a listener's channel is
//! unsubscribed when it drops.

mod common;

use std::time::Duration;

use common::poll;
use common::redis::RedisServer;
use vmcp::session::{SessionBus, StoreKey};
use vmcp::store::Redis;
use vmcp::store::bus::RedisBus;

fn bus(redis: &RedisServer, prefix: &str) -> RedisBus {
    RedisBus::new(Redis::new(&redis.settings(prefix)).unwrap())
}

async fn next(l: &mut vmcp::session::bus::Listener, within: Duration) -> Option<Vec<u8>> {
    tokio::time::timeout(within, l.recv()).await.ok().flatten().map(|m| m.to_vec())
}

#[tokio::test]
async fn a_message_crosses_replicas_on_its_session_channel_only() {
    let r = RedisServer::with_password("bus-pw");
    let (a, b, other_gateway) = (bus(&r, "g1:"), bus(&r, "g1:"), bus(&r, "g2:"));
    let (s1, s2) = (StoreKey::of("session-1"), StoreKey::of("session-2"));
    let mut on_b = b.listen(&s1).await;
    let mut other_session = b.listen(&s2).await;
    let mut other_prefix = other_gateway.listen(&s1).await;
    // `listen` returned once Redis confirmed the subscription: nothing published is lost.
    a.publish(&s1, b"hello".to_vec()).await.unwrap();
    assert_eq!(next(&mut on_b, Duration::from_secs(5)).await.as_deref(), Some(&b"hello"[..]));
    assert_eq!(next(&mut other_session, Duration::from_millis(200)).await, None);
    assert_eq!(next(&mut other_prefix, Duration::from_millis(200)).await, None);
    assert_eq!(r.channels("g1:ev:*").len(), 2);

    drop(on_b);
    drop(other_session);
    poll(Duration::from_secs(5), "b's channels to be unsubscribed", || async {
        r.channels("g1:ev:*").is_empty().then_some(())
    })
    .await;
    drop(other_prefix);
    // Publishing to nobody is fine.
    a.publish(&s1, b"nobody".to_vec()).await.unwrap();
}

#[tokio::test]
async fn a_listener_survives_a_redis_restart() {
    let mut r = RedisServer::start();
    let (a, b) = (bus(&r, "rs:"), bus(&r, "rs:"));
    let key = StoreKey::of("session");
    let mut l = b.listen(&key).await;
    a.publish(&key, b"before".to_vec()).await.unwrap();
    assert_eq!(next(&mut l, Duration::from_secs(5)).await.as_deref(), Some(&b"before"[..]));

    r.stop();
    assert!(a.publish(&key, b"lost".to_vec()).await.is_err(), "Redis is down");
    r.restart();
    // The subscriber reconnects and subscribes again by itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let _ = a.publish(&key, b"after".to_vec()).await;
        if next(&mut l, Duration::from_millis(100)).await.is_some_and(|m| m == b"after") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the listener never heard again");
    }
}
