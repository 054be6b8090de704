//! The authorization server's store on a real redis-server: the memory store's behaviour
//! (single use, replay and reuse detection, bounds), across two instances ("replicas"), with
//! concurrent single use, sealed pending logins, and Redis down / back.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use vmcp::auth::identity::Secret;
use vmcp::auth::server::clients::{ClientRecord, ClientSource};
use vmcp::auth::server::oauth::now_secs;
use vmcp::auth::server::settings::Bounds;
use vmcp::auth::server::store::{
    AuthStore, ClientRequest, CodeRecord, CodeTake, PendingAuthorization, RefreshFamily, Rotation,
    StoreError, UserInfo,
};
use vmcp::auth::upstream::VaultKey;
use vmcp::store::Redis;
use vmcp::store::auth::RedisAuthStore;

fn store(r: &RedisServer, prefix: &str, bounds: &Bounds) -> RedisAuthStore {
    let key = VaultKey::from_bytes(&[9u8; 32]).unwrap();
    RedisAuthStore::new(Redis::new(&r.settings(prefix)).unwrap(), bounds, key)
}

fn request() -> ClientRequest {
    ClientRequest {
        client_id: "c1".into(),
        redirect_uri: "http://127.0.0.1:9/cb".into(),
        redirect_uri_sent: true,
        state: Some("s".into()),
        code_challenge: "x".repeat(43),
        scopes: vec!["openid".into()],
        resource: Some("http://127.0.0.1:1/mcp".into()),
    }
}

fn user() -> UserInfo {
    UserInfo { id: "u".into(), name: Some("U".into()), email: None }
}

fn pending(expires_at: u64) -> PendingAuthorization {
    PendingAuthorization {
        request: request(),
        upstream: "idp".into(),
        callback_url: "http://127.0.0.1/oauth/callback".into(),
        upstream_verifier: Secret::new("the-pkce-verifier"),
        nonce: "n".into(),
        visited: vec!["first".into()],
        user: Some(user()),
        expires_at,
    }
}

fn family(id: &str, hash: &str) -> RefreshFamily {
    RefreshFamily {
        family_id: id.into(),
        client_id: "c1".into(),
        user: user(),
        scopes: vec!["openid".into()],
        resource: None,
        current_hash: hash.into(),
        expires_at: now_secs() + 3600,
    }
}

fn client(id: &str, issued_at: u64) -> ClientRecord {
    ClientRecord {
        client_id: id.into(),
        redirect_uris: vec!["http://127.0.0.1/cb".into()],
        scopes: vec![],
        client_name: Some("n".into()),
        grant_types: vec!["authorization_code".into()],
        issued_at,
        source: ClientSource::Registered,
    }
}

/// Every key under `prefix` (test inspection; vmcp itself never scans).
async fn keys(r: &RedisServer, prefix: &str) -> Vec<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", r.port())).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let mut k: Vec<String> =
        redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut c).await.unwrap();
    k.sort();
    k
}

async fn raw(r: &RedisServer, key: &str) -> Vec<u8> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", r.port())).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let v: Option<Vec<u8>> = redis::cmd("GET").arg(key).query_async(&mut c).await.unwrap();
    v.unwrap_or_default()
}

#[tokio::test]
async fn pending_is_single_use_sealed_expires_and_bounded() {
    let r = RedisServer::start();
    let bounds = Bounds { max_pending_authorizations: 2, ..Bounds::default() };
    let (a, b) = (store(&r, "a1:", &bounds), store(&r, "a1:", &bounds));
    a.put_pending("st:1".into(), pending(now_secs() + 60)).await.unwrap();
    // Sealed: the verifier is not readable in Redis.
    let blob = raw(&r, "a1:as:pending:st%3A1").await;
    assert!(!blob.is_empty());
    assert!(!String::from_utf8_lossy(&blob).contains("the-pkce-verifier"));
    let got = b.take_pending("st:1").await.unwrap().expect("the other replica takes it");
    assert_eq!(got.upstream_verifier.expose(), "the-pkce-verifier");
    assert_eq!(
        (got.request, got.visited, got.user),
        (request(), vec!["first".into()], Some(user()))
    );
    assert!(a.take_pending("st:1").await.unwrap().is_none());
    a.put_pending("old".into(), pending(now_secs() - 1)).await.unwrap();
    assert!(b.take_pending("old").await.unwrap().is_none());
    // Bounded across replicas.
    a.put_pending("x".into(), pending(now_secs() + 60)).await.unwrap();
    b.put_pending("y".into(), pending(now_secs() + 60)).await.unwrap();
    let e = a.put_pending("z".into(), pending(now_secs() + 60)).await.unwrap_err();
    assert!(matches!(e, StoreError::Capacity(_)), "{e:?}");
    b.take_pending("x").await.unwrap();
    a.put_pending("z".into(), pending(now_secs() + 60)).await.unwrap();
    // A blob sealed under another key does not open (and is not served).
    let other = RedisAuthStore::new(
        Redis::new(&r.settings("a1:")).unwrap(),
        &bounds,
        VaultKey::from_bytes(&[1u8; 32]).unwrap(),
    );
    assert!(other.take_pending("z").await.unwrap().is_none());
}

#[tokio::test]
async fn a_code_is_spent_once_across_replicas_and_replay_names_the_family() {
    let r = RedisServer::start();
    let bounds = Bounds::default();
    let stores: Vec<Arc<RedisAuthStore>> =
        (0..2).map(|_| Arc::new(store(&r, "a2:", &bounds))).collect();
    let rec = CodeRecord {
        request: request(),
        user: user(),
        family_id: "fam".into(),
        expires_at: now_secs() + 60,
    };
    stores[0].put_code("h".into(), rec.clone()).await.unwrap();
    // 20 concurrent redemptions on two replicas: exactly one is fresh, the rest replays.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = stores[i % 2].clone();
            tokio::spawn(async move { s.take_code("h").await.unwrap() })
        })
        .collect();
    let mut fresh = 0;
    for t in tasks {
        match t.await.unwrap() {
            CodeTake::Fresh(got) => {
                assert_eq!(*got, rec);
                fresh += 1;
            }
            CodeTake::Replayed { family_id } => assert_eq!(family_id, "fam"),
            CodeTake::Unknown => panic!("unknown"),
        }
    }
    assert_eq!(fresh, 1);
    assert_eq!(stores[1].take_code("nope").await.unwrap(), CodeTake::Unknown);
    // Bounded: used codes count until forgotten.
    let small = store(&r, "a2b:", &Bounds { max_codes: 1, ..Bounds::default() });
    small.put_code("c1".into(), rec.clone()).await.unwrap();
    assert!(matches!(small.put_code("c2".into(), rec).await, Err(StoreError::Capacity(_))));
}

#[tokio::test]
async fn rotation_and_reuse_revoke_the_family_across_replicas() {
    let r = RedisServer::start();
    let bounds = Bounds::default();
    let (a, b) = (store(&r, "a3:", &bounds), store(&r, "a3:", &bounds));
    a.put_family(family("f", "t0")).await.unwrap();
    assert_eq!(b.family_by_token("t0").await.unwrap(), Some(family("f", "t0")));
    let exp = now_secs() + 3600;
    assert_eq!(b.rotate_refresh("t0", "c2", "t1".into(), exp).await.unwrap(), Rotation::Invalid);
    let Rotation::Rotated(f) = b.rotate_refresh("t0", "c1", "t1".into(), exp).await.unwrap() else {
        panic!("not rotated")
    };
    assert_eq!((f.current_hash.as_str(), f.expires_at, f.user), ("t1", exp, user()));
    assert!(a.family_by_token("t0").await.unwrap().is_none());
    assert!(a.family_by_token("t1").await.unwrap().is_some());
    // Replaying t0 on the other replica revokes everything: t1 is dead too.
    assert_eq!(
        a.rotate_refresh("t0", "c1", "t2".into(), exp).await.unwrap(),
        Rotation::Reused { family_id: "f".into() }
    );
    assert!(b.family_by_token("t1").await.unwrap().is_none());
    assert_eq!(b.rotate_refresh("t1", "c1", "t3".into(), exp).await.unwrap(), Rotation::Invalid);
    assert!(keys(&r, "a3:as:token").await.is_empty());
    assert!(keys(&r, "a3:as:family:").await.is_empty());

    // Concurrent rotations of one token: one wins; the losers present a retired token and
    // revoke the family, as reuse must.
    a.put_family(family("g", "u0")).await.unwrap();
    let (ra, rb) = tokio::join!(
        a.rotate_refresh("u0", "c1", "ua".into(), exp),
        b.rotate_refresh("u0", "c1", "ub".into(), exp)
    );
    let outcomes = [ra.unwrap(), rb.unwrap()];
    let rotated = outcomes.iter().filter(|o| matches!(o, Rotation::Rotated(_))).count();
    assert_eq!(rotated, 1, "{outcomes:?}");
    assert!(outcomes.contains(&Rotation::Reused { family_id: "g".into() }));
}

#[tokio::test]
async fn retired_hashes_and_families_are_bounded() {
    let r = RedisServer::start();
    let s = store(&r, "a4:", &Bounds::default());
    s.put_family(family("f", "t0")).await.unwrap();
    let exp = now_secs() + 3600;
    for i in 0..40 {
        let r = s.rotate_refresh(&format!("t{i}"), "c1", format!("t{}", i + 1), exp).await.unwrap();
        assert!(matches!(r, Rotation::Rotated(_)), "{r:?}");
    }
    assert_eq!(
        keys(&r, "a4:as:token:").await.len(),
        vmcp::auth::server::memory::RETIRED_PER_FAMILY + 1
    );
    // A token retired long ago is forgotten; one of the last 16 still revokes.
    assert_eq!(s.rotate_refresh("t1", "c1", "x".into(), exp).await.unwrap(), Rotation::Invalid);
    assert_eq!(
        s.rotate_refresh("t30", "c1", "x".into(), exp).await.unwrap(),
        Rotation::Reused { family_id: "f".into() }
    );
    assert!(keys(&r, "a4:as:token:").await.is_empty());
    // Every key expires.
    s.put_family(family("h", "v0")).await.unwrap();
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", r.port())).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    for k in keys(&r, "a4:as:").await.iter().filter(|k| !k.ends_with("families")) {
        let ttl: i64 = redis::cmd("PTTL").arg(k).query_async(&mut c).await.unwrap();
        assert!(ttl > 0, "{k} has no expiry");
    }
    let one = store(&r, "a4b:", &Bounds { max_refresh_families: 1, ..Bounds::default() });
    one.put_family(family("f", "t0")).await.unwrap();
    assert!(matches!(one.put_family(family("g", "u0")).await, Err(StoreError::Capacity(_))));
    one.revoke_family("f").await.unwrap();
    one.put_family(family("g", "u0")).await.unwrap();
}

#[tokio::test]
async fn clients_evict_only_old_registrations_and_users_are_stable() {
    let r = RedisServer::start();
    let bounds = Bounds {
        max_clients: 2,
        min_client_age: Duration::from_secs(3600),
        max_users: 2,
        ..Bounds::default()
    };
    let (s, t) = (store(&r, "a5:", &bounds), store(&r, "a5:", &bounds));
    let now = now_secs();
    s.put_client(client("https://c.example/old", now - 7200)).await.unwrap();
    t.put_client(client("young", now)).await.unwrap();
    s.put_client(client("new", now)).await.unwrap();
    assert!(t.client("https://c.example/old").await.unwrap().is_none());
    assert_eq!(t.client("young").await.unwrap(), Some(client("young", now)));
    assert!(matches!(t.put_client(client("more", now)).await, Err(StoreError::Capacity(_))));
    s.put_client(client("new", now)).await.unwrap();
    t.touch_client("new").await.unwrap();

    let a = s.user_id("idp", "alice").await.unwrap();
    assert_eq!(a, t.user_id("idp", "alice").await.unwrap());
    assert_ne!(a, s.user_id("other", "alice").await.unwrap());
    assert_eq!((a.len(), &a[14..15]), (36, "4"));
    // A subject with the separator is another identity.
    assert_ne!(s.user_id("idp:x", "y").await.unwrap(), s.user_id("idp", "x:y").await.unwrap());
    assert_eq!(keys(&r, "a5:as:user:").await.len(), 2, "bounded to max_users");
}

#[tokio::test]
async fn redis_down_fails_fast_and_recovers() {
    let mut r = RedisServer::start();
    let s = store(&r, "a6:", &Bounds::default());
    s.put_family(family("f", "t0")).await.unwrap();
    r.stop();
    let t = Instant::now();
    let e = s.family_by_token("t0").await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    let t = Instant::now();
    assert!(s.take_code("x").await.is_err());
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
    r.restart();
    common::poll(Duration::from_secs(10), "the store to work again", || async {
        s.put_family(family("g", "u0")).await.ok()
    })
    .await;
    assert!(s.family_by_token("u0").await.unwrap().is_some());
}
