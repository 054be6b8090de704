//! The upstream token vault on a real redis-server: the token store's behaviour, two vaults
//! ("replicas") sharing one Redis and one key, a refresh done once across both (the lease), and
//! Redis down / back.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::poll;
use common::redis::RedisServer;
use common::upstream_idp::UpstreamIdp;
use serde_json::json;
use vmcp::auth::identity::Secret;
use vmcp::auth::upstream::{
    ProviderKind, ProviderSettings, RefreshLease, TokenError, TokenSet, TokenStore, UpstreamTokens,
    Upstreams, Vault, VaultKey, VaultOptions,
};
use vmcp::store::Redis;
use vmcp::store::tokens::{RedisRefreshLease, RedisTokenStore};

const UPSTREAM: &str = "corp";

fn tokens_of(redis: &RedisServer, prefix: &str) -> RedisTokenStore {
    RedisTokenStore::new(Redis::new(&redis.settings(prefix)).unwrap())
}

#[tokio::test]
async fn token_store_behaviour_and_two_replicas() {
    let r = RedisServer::start();
    let (a, b) = (tokens_of(&r, "v1:"), tokens_of(&r, "v1:"));
    // Names with the separator cannot collide.
    a.put("u:1", "x", vec![1], None).await.unwrap();
    a.put("u", "1:x", vec![2], None).await.unwrap();
    assert_eq!(b.get("u:1", "x").await.unwrap(), Some(vec![1]));
    assert_eq!(b.get("u", "1:x").await.unwrap(), Some(vec![2]));
    // Replacing; binary blobs come back as they went in.
    let blob: Vec<u8> = (0..=255).collect();
    b.put("u:1", "x", blob.clone(), None).await.unwrap();
    assert_eq!(a.get("u:1", "x").await.unwrap(), Some(blob));
    // Expiry from useless_after; one already past is not kept.
    let soon = SystemTime::now() + Duration::from_millis(300);
    a.put("carol", "x", vec![3], Some(soon)).await.unwrap();
    a.put("carol", "y", vec![4], Some(SystemTime::now() - Duration::from_secs(1))).await.unwrap();
    assert_eq!(b.get("carol", "x").await.unwrap(), Some(vec![3]));
    assert_eq!(b.get("carol", "y").await.unwrap(), None);
    poll(Duration::from_secs(5), "the entry to expire", || async {
        b.get("carol", "x").await.unwrap().is_none().then_some(())
    })
    .await;
    // delete and delete_user, seen by the other replica.
    a.put("dave", "x", vec![5], None).await.unwrap();
    a.put("dave", "y", vec![6], Some(SystemTime::now() + Duration::from_secs(60))).await.unwrap();
    b.delete("dave", "x").await.unwrap();
    assert_eq!(a.get("dave", "x").await.unwrap(), None);
    assert_eq!(a.get("dave", "y").await.unwrap(), Some(vec![6]));
    a.put("dave", "x", vec![7], None).await.unwrap();
    b.delete_user("dave").await.unwrap();
    assert_eq!(a.get("dave", "x").await.unwrap(), None);
    assert_eq!(a.get("dave", "y").await.unwrap(), None);
    // Other users untouched.
    assert_eq!(a.get("u", "1:x").await.unwrap(), Some(vec![2]));
}

#[tokio::test]
async fn token_store_fails_fast_while_redis_is_down_and_recovers() {
    let mut r = RedisServer::start();
    let s = tokens_of(&r, "v2:");
    s.put("u", "x", vec![1], None).await.unwrap();
    r.stop();
    let t = Instant::now();
    let e = s.get("u", "x").await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
    assert!(e.to_string().starts_with("upstream token store unavailable"), "{e}");
    let t = Instant::now();
    assert!(s.put("u", "x", vec![2], None).await.is_err());
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
    r.restart();
    poll(Duration::from_secs(10), "the store to work again", || async {
        s.put("u", "x", vec![3], None).await.ok()
    })
    .await;
    assert_eq!(s.get("u", "x").await.unwrap(), Some(vec![3]));
}

#[tokio::test]
async fn the_lease_has_one_holder_and_only_it_releases() {
    let r = RedisServer::start();
    let one = RedisRefreshLease::new(Redis::new(&r.settings("v3:")).unwrap());
    let two = RedisRefreshLease::new(Redis::new(&r.settings("v3:")).unwrap());
    let ttl = Duration::from_secs(30);
    let h = one.try_acquire("u", "x", ttl).await.unwrap().expect("free lease");
    assert_eq!(two.try_acquire("u", "x", ttl).await.unwrap(), None);
    // Another key is another lease.
    assert!(two.try_acquire("u", "y", ttl).await.unwrap().is_some());
    // A stranger's release does nothing.
    two.release("u", "x", &vmcp::auth::upstream::LeaseHolder("nope".into())).await;
    assert_eq!(two.try_acquire("u", "x", ttl).await.unwrap(), None);
    one.release("u", "x", &h).await;
    let h2 = two.try_acquire("u", "x", Duration::from_millis(200)).await.unwrap().unwrap();
    // An expired lease is free again (its holder died).
    poll(Duration::from_secs(5), "the lease to expire", || async {
        one.try_acquire("u", "x", ttl).await.unwrap()
    })
    .await;
    // The old holder's late release does not free the new holder's lease.
    two.release("u", "x", &h2).await;
    assert_eq!(two.try_acquire("u", "x", ttl).await.unwrap(), None);
}

fn oidc(idp: &UpstreamIdp) -> ProviderSettings {
    ProviderSettings {
        name: UPSTREAM.into(),
        kind: ProviderKind::Oidc {
            issuer_url: idp.url.clone(),
            subject_claim: None,
            userinfo: None,
        },
        client_id: "vmcp-upstream".into(),
        client_secret: Some(Secret::new("s3cret")),
        redirect_uri: Some("http://127.0.0.1:9/oauth/callback".into()),
        scopes: vec![],
        additional_authorization_params: Default::default(),
        client_auth: None,
        insecure_allow_http: false,
    }
}

/// A vault as one replica builds it: its own connection, the shared key.
fn replica(r: &RedisServer, upstreams: &Upstreams) -> Vault {
    let redis = Redis::new(&r.settings("v4:")).unwrap();
    Vault::shared(
        Arc::new(upstreams.clone()),
        Arc::new(RedisTokenStore::new(redis.clone())),
        Arc::new(RedisRefreshLease::new(redis)),
        VaultKey::from_bytes(&[7u8; 32]).unwrap(),
        VaultOptions::default(),
    )
}

/// Tokens as a login would store them: from the IdP, through a real code grant.
async fn logged_in(idp: &UpstreamIdp, upstreams: &Upstreams, user: &str) -> TokenSet {
    use base64::Engine as _;
    use sha2::Digest as _;
    use vmcp::auth::upstream::{AuthorizationRequest, Federation};
    let redirect = "http://127.0.0.1:9/oauth/callback";
    let verifier = "v".repeat(64);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let req = AuthorizationRequest {
        redirect_uri: redirect,
        state: "st",
        code_challenge: &challenge,
        nonce: "n",
    };
    let url = upstreams.authorization_url(UPSTREAM, req).await.unwrap();
    let browser =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let resp = browser.get(format!("{url}&login_hint={user}")).send().await.unwrap();
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let back = reqwest::Url::parse(&location).unwrap();
    let code = back.query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    let _ = idp;
    upstreams.exchange_code(UPSTREAM, &code, &verifier, redirect, "n").await.unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_is_done_once_across_two_replicas() {
    let r = RedisServer::start();
    let idp = UpstreamIdp::launch().await;
    idp.config(json!({"accessTtl": 2, "rotate": true})).await;
    let upstreams = Upstreams::new(vec![oidc(&idp)], reqwest::Client::new()).unwrap();
    let (a, b) = (replica(&r, &upstreams), replica(&r, &upstreams));
    let tokens = logged_in(&idp, &upstreams, "alice").await;
    let first = tokens.access_token.expose().to_string();
    a.store("alice", UPSTREAM, tokens).await.unwrap();
    // The other replica reads what the first stored.
    assert_eq!(b.access_token("alice", UPSTREAM).await.unwrap().expose(), first);
    assert!(b.holds("alice", UPSTREAM).await);
    poll(Duration::from_secs(20), "the access token to expire", || async {
        (!idp.check(&first).await.0).then_some(())
    })
    .await;
    // A burst on both replicas at once: one refresh at the IdP, one token for everyone.
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let v = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { v.access_token("alice", UPSTREAM).await })
        })
        .collect();
    let mut got = HashSet::new();
    for c in calls {
        got.insert(c.await.unwrap().unwrap().expose().to_string());
    }
    assert_eq!(got.len(), 1, "every caller got the one refreshed token");
    let token = got.into_iter().next().unwrap();
    assert_eq!(idp.check(&token).await, (true, Some("alice".into())));
    let stats = idp.stats().await;
    assert_eq!((stats.refresh_grants, stats.replays), (1, 0));
    assert_eq!(a.stats().refreshed + b.stats().refreshed, 1);

    // Replicas taking turns across several rotations: never a replayed refresh token.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    while idp.stats().await.refresh_grants < 4 {
        assert!(Instant::now() < deadline, "refreshes too slow");
        let v = if n % 2 == 0 { &a } else { &b };
        let t = v.access_token("alice", UPSTREAM).await.unwrap();
        assert_eq!(idp.check(t.expose()).await, (true, Some("alice".into())));
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = idp.stats().await;
    assert_eq!((stats.replays, stats.rejected), (0, 0));
    assert_eq!(a.stats().refreshed + b.stats().refreshed, stats.refresh_grants);

    // Logout on one replica is seen by the other.
    a.forget("alice").await;
    let e = b.access_token("alice", UPSTREAM).await.unwrap_err();
    assert!(matches!(e, TokenError::Reauthenticate { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_with_redis_down_answers_unavailable_fast() {
    let mut r = RedisServer::start();
    let idp = UpstreamIdp::launch().await;
    let upstreams = Upstreams::new(vec![oidc(&idp)], reqwest::Client::new()).unwrap();
    let v = replica(&r, &upstreams);
    let tokens = logged_in(&idp, &upstreams, "bob").await;
    v.store("bob", UPSTREAM, tokens.clone()).await.unwrap();
    r.stop();
    let t = Instant::now();
    let e = v.access_token("bob", UPSTREAM).await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
    assert!(matches!(e, TokenError::Unavailable { .. }), "{e:?}");
    r.restart();
    // Nothing persisted across that restart (no snapshot): the user logs in again, and it works.
    poll(Duration::from_secs(10), "the vault to store again", || async {
        v.store("bob", UPSTREAM, tokens.clone()).await.ok()
    })
    .await;
    assert_eq!(
        v.access_token("bob", UPSTREAM).await.unwrap().expose(),
        tokens.access_token.expose()
    );
}
