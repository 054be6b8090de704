//! Tests of the in-memory store: single use, replay and reuse detection, bounds.

use std::time::Duration;

use super::*;
use crate::auth::identity::Secret;
use crate::auth::server::store::{ClientRequest, UserInfo};

fn request() -> ClientRequest {
    ClientRequest {
        client_id: "c1".into(),
        redirect_uri: "http://127.0.0.1:9/cb".into(),
        redirect_uri_sent: true,
        state: Some("s".into()),
        code_challenge: "x".repeat(43),
        scopes: vec!["openid".into()],
        resource: None,
    }
}

fn user() -> UserInfo {
    UserInfo { id: "u".into(), name: None, email: None }
}

fn pending(expires_at: u64) -> PendingAuthorization {
    PendingAuthorization {
        request: request(),
        upstream: "idp".into(),
        callback_url: "http://127.0.0.1/oauth/callback".into(),
        upstream_verifier: Secret::new("v"),
        nonce: "n".into(),
        visited: vec![],
        user: None,
        expires_at,
    }
}

fn family(id: &str, hash: &str) -> RefreshFamily {
    RefreshFamily {
        family_id: id.into(),
        client_id: "c1".into(),
        user: user(),
        scopes: vec![],
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
        client_name: None,
        grant_types: vec![],
        issued_at,
        source: ClientSource::Registered,
    }
}

#[tokio::test]
async fn pending_is_single_use_and_expires() {
    let s = MemoryAuthStore::default();
    s.put_pending("a".into(), pending(now_secs() + 60)).await.unwrap();
    assert!(s.take_pending("a").await.unwrap().is_some());
    assert!(s.take_pending("a").await.unwrap().is_none());
    s.put_pending("b".into(), pending(now_secs() - 1)).await.unwrap();
    assert!(s.take_pending("b").await.unwrap().is_none());
}

#[tokio::test]
async fn pending_is_bounded() {
    let s = MemoryAuthStore::new(&Bounds { max_pending_authorizations: 2, ..Bounds::default() });
    s.put_pending("a".into(), pending(now_secs() + 60)).await.unwrap();
    s.put_pending("b".into(), pending(now_secs() + 60)).await.unwrap();
    let e = s.put_pending("c".into(), pending(now_secs() + 60)).await.unwrap_err();
    assert!(matches!(e, StoreError::Capacity(_)));
    s.take_pending("a").await.unwrap();
    s.put_pending("c".into(), pending(now_secs() + 60)).await.unwrap();
}

#[tokio::test]
async fn codes_are_single_use_and_replay_names_the_family() {
    let s = MemoryAuthStore::default();
    let rec = CodeRecord {
        request: request(),
        user: user(),
        family_id: "f".into(),
        expires_at: now_secs() + 60,
    };
    s.put_code("h".into(), rec.clone()).await.unwrap();
    assert_eq!(s.take_code("h").await.unwrap(), CodeTake::Fresh(Box::new(rec)));
    assert_eq!(s.take_code("h").await.unwrap(), CodeTake::Replayed { family_id: "f".into() });
    assert_eq!(s.take_code("nope").await.unwrap(), CodeTake::Unknown);
    let old = CodeRecord {
        request: request(),
        user: user(),
        family_id: "g".into(),
        expires_at: now_secs() - 1,
    };
    s.put_code("old".into(), old).await.unwrap();
    assert_eq!(s.take_code("old").await.unwrap(), CodeTake::Unknown);
}

#[tokio::test]
async fn rotation_and_reuse_revokes_the_family() {
    let s = MemoryAuthStore::default();
    s.put_family(family("f", "t0")).await.unwrap();
    assert!(s.family_by_token("t0").await.unwrap().is_some());
    // Another client cannot rotate it.
    let exp = now_secs() + 3600;
    assert_eq!(s.rotate_refresh("t0", "c2", "t1".into(), exp).await.unwrap(), Rotation::Invalid);
    let Rotation::Rotated(f) = s.rotate_refresh("t0", "c1", "t1".into(), exp).await.unwrap() else {
        panic!("not rotated")
    };
    assert_eq!(f.current_hash, "t1");
    assert!(s.family_by_token("t0").await.unwrap().is_none());
    // Replaying t0 revokes everything: t1 is dead too.
    assert_eq!(
        s.rotate_refresh("t0", "c1", "t2".into(), exp).await.unwrap(),
        Rotation::Reused { family_id: "f".into() }
    );
    assert!(s.family_by_token("t1").await.unwrap().is_none());
    assert_eq!(s.rotate_refresh("t1", "c1", "t3".into(), exp).await.unwrap(), Rotation::Invalid);
}

#[tokio::test]
async fn retired_hashes_per_family_are_bounded() {
    let s = MemoryAuthStore::default();
    s.put_family(family("f", "t0")).await.unwrap();
    let exp = now_secs() + 3600;
    for i in 0..40 {
        let r = s.rotate_refresh(&format!("t{i}"), "c1", format!("t{}", i + 1), exp).await.unwrap();
        assert!(matches!(r, Rotation::Rotated(_)));
    }
    let tokens = s.inner.lock().unwrap().tokens.len();
    assert_eq!(tokens, RETIRED_PER_FAMILY + 1);
    s.revoke_family("f").await.unwrap();
    assert!(s.inner.lock().unwrap().tokens.is_empty());
}

#[tokio::test]
async fn families_are_bounded() {
    let s = MemoryAuthStore::new(&Bounds { max_refresh_families: 1, ..Bounds::default() });
    s.put_family(family("f", "t0")).await.unwrap();
    assert!(matches!(s.put_family(family("g", "u0")).await, Err(StoreError::Capacity(_))));
}

#[tokio::test]
async fn clients_evict_only_old_registrations() {
    let bounds =
        Bounds { max_clients: 2, min_client_age: Duration::from_secs(3600), ..Bounds::default() };
    let s = MemoryAuthStore::new(&bounds);
    let now = now_secs();
    s.put_client(client("old", now - 7200)).await.unwrap();
    s.put_client(client("young", now)).await.unwrap();
    // Room is made by dropping "old"; then both remaining are young: capacity.
    s.put_client(client("new", now)).await.unwrap();
    assert!(s.client("old").await.unwrap().is_none());
    assert!(s.client("young").await.unwrap().is_some());
    assert!(matches!(s.put_client(client("more", now)).await, Err(StoreError::Capacity(_))));
    // Re-registering a known id needs no room.
    s.put_client(client("new", now)).await.unwrap();
}

#[tokio::test]
async fn user_ids_are_stable_per_upstream_identity() {
    let s = MemoryAuthStore::new(&Bounds { max_users: 2, ..Bounds::default() });
    let a = s.user_id("idp", "alice").await.unwrap();
    assert_eq!(a, s.user_id("idp", "alice").await.unwrap());
    assert_ne!(a, s.user_id("other", "alice").await.unwrap());
    assert_eq!(a.len(), 36);
    assert_eq!(&a[14..15], "4");
    // Bounded: a third identity forgets one.
    s.user_id("idp", "bob").await.unwrap();
    assert_eq!(s.inner.lock().unwrap().users.len(), 2);
}
