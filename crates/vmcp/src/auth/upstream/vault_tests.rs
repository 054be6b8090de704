//! Vault behaviour against a scripted refresher (the real IdP is in `tests/upstream_vault.rs`).

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;

use super::*;
use crate::auth::upstream::RefreshError;

/// Answers refreshes from a script (then with fresh rotated tokens), after `delay`.
#[derive(Default)]
struct Fake {
    calls: AtomicUsize,
    presented: Mutex<Vec<String>>,
    script: Mutex<VecDeque<Result<TokenSet, RefreshError>>>,
    delay: Duration,
}

fn tokens(access: &str, refresh: Option<&str>, life: Option<Duration>) -> TokenSet {
    TokenSet {
        access_token: Secret::new(access),
        refresh_token: refresh.map(Secret::new),
        id_token: None,
        expires_at: life.map(|l| SystemTime::now() + l),
        scope: None,
    }
}

impl TokenRefresher for Fake {
    fn refresh<'a>(
        &'a self,
        _upstream: &'a str,
        current: &'a TokenSet,
    ) -> BoxFuture<'a, Result<TokenSet, RefreshError>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let rt = current.refresh_token.as_ref().map(|s| s.expose().to_string());
            self.presented.lock().unwrap().push(rt.unwrap_or_default());
            tokio::time::sleep(self.delay).await;
            let next = self.script.lock().unwrap().pop_front();
            next.unwrap_or_else(|| {
                Ok(tokens(&format!("a{n}"), Some(&format!("r{n}")), Some(Duration::from_secs(60))))
            })
        })
    }
}

fn vault(fake: Arc<Fake>) -> Vault {
    let options = VaultOptions { retry_backoff: Duration::from_millis(5), ..Default::default() };
    Vault::with_options(
        fake,
        Arc::new(MemoryTokenStore::default()),
        VaultKey::generate().unwrap(),
        options,
    )
}

/// A grant whose access token is already expired.
fn expiring(refresh: Option<&str>) -> TokenSet {
    tokens("a0", refresh, Some(Duration::ZERO))
}

#[tokio::test]
async fn one_refresh_for_a_burst() {
    let fake = Arc::new(Fake { delay: Duration::from_millis(50), ..Default::default() });
    let v = vault(fake.clone());
    v.store("u", "idp", expiring(Some("r0"))).await.unwrap();
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let v = v.clone();
            tokio::spawn(async move { v.access_token("u", "idp").await })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap().expose(), "a1");
    }
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    assert_eq!(v.stats().refreshed, 1);
    // Fresh now: no more refreshes.
    assert_eq!(v.access_token("u", "idp").await.unwrap().expose(), "a1");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn rotated_refresh_token_is_used_next_and_old_one_kept_without_rotation() {
    let fake = Arc::new(Fake::default());
    fake.script.lock().unwrap().push_back(Ok(tokens("a1", Some("r1"), Some(Duration::ZERO))));
    fake.script.lock().unwrap().push_back(Ok(tokens("a2", None, Some(Duration::ZERO))));
    let v = vault(fake.clone());
    v.store("u", "idp", expiring(Some("r0"))).await.unwrap();
    assert_eq!(v.access_token("u", "idp").await.unwrap().expose(), "a1");
    assert_eq!(v.access_token("u", "idp").await.unwrap().expose(), "a2");
    assert_eq!(v.access_token("u", "idp").await.unwrap().expose(), "a3");
    assert_eq!(*fake.presented.lock().unwrap(), ["r0", "r1", "r1"]);
}

#[tokio::test]
async fn dead_grant_is_dropped() {
    let fake = Arc::new(Fake::default());
    fake.script.lock().unwrap().push_back(Err(RefreshError::Dead("invalid_grant".into())));
    let v = vault(fake.clone());
    v.store("u", "idp", expiring(Some("r0"))).await.unwrap();
    assert!(v.holds("u", "idp").await);
    let e = v.access_token("u", "idp").await.unwrap_err();
    assert!(matches!(e, TokenError::Reauthenticate { .. }), "{e:?}");
    assert!(!v.holds("u", "idp").await);
    assert!(matches!(v.access_token("u", "idp").await, Err(TokenError::Reauthenticate { .. })));
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    assert_eq!(v.stats().dead_grants, 1);
}

#[tokio::test]
async fn transient_failures_are_retried_then_reported_and_the_grant_kept() {
    let fake = Arc::new(Fake::default());
    for _ in 0..2 {
        fake.script.lock().unwrap().push_back(Err(RefreshError::Transient("503".into())));
    }
    let v = vault(fake.clone());
    v.store("u", "idp", expiring(Some("r0"))).await.unwrap();
    assert_eq!(v.access_token("u", "idp").await.unwrap().expose(), "a3");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 3);

    v.store("u", "idp", expiring(Some("r9"))).await.unwrap();
    for _ in 0..3 {
        fake.script.lock().unwrap().push_back(Err(RefreshError::Transient("503".into())));
    }
    let e = v.access_token("u", "idp").await.unwrap_err();
    assert!(matches!(e, TokenError::Unavailable { .. }), "{e:?}");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 6);
    assert!(v.holds("u", "idp").await);
    assert_eq!(v.access_token("u", "idp").await.unwrap().expose(), "a7");
    assert_eq!(fake.presented.lock().unwrap()[3..], ["r9", "r9", "r9", "r9"]);
    let s = v.stats();
    assert_eq!((s.transient_failures, s.unavailable, s.refreshed), (5, 1, 2));
}

#[tokio::test]
async fn lost_answer_is_never_replayed() {
    let fake = Arc::new(Fake::default());
    fake.script.lock().unwrap().push_back(Err(RefreshError::Lost("reset".into())));
    let v = vault(fake.clone());
    v.store("u", "idp", expiring(Some("r0"))).await.unwrap();
    assert!(matches!(v.access_token("u", "idp").await, Err(TokenError::Reauthenticate { .. })));
    assert!(matches!(v.access_token("u", "idp").await, Err(TokenError::Reauthenticate { .. })));
    assert_eq!(*fake.presented.lock().unwrap(), ["r0"]);
    assert_eq!(v.stats().lost_responses, 1);
}

#[tokio::test]
async fn tokens_without_expiry_or_refresh() {
    let fake = Arc::new(Fake::default());
    let v = vault(fake.clone());
    v.store("u", "forever", tokens("f", None, None)).await.unwrap();
    assert_eq!(v.access_token("u", "forever").await.unwrap().expose(), "f");
    v.store("u", "short", tokens("s", None, Some(Duration::ZERO))).await.unwrap();
    // Past its expiry and nothing to refresh it with.
    assert!(!v.holds("u", "short").await);
    assert!(matches!(v.access_token("u", "short").await, Err(TokenError::Reauthenticate { .. })));
    assert!(matches!(v.access_token("u", "none").await, Err(TokenError::Reauthenticate { .. })));
    assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
    v.forget("u").await;
    assert!(!v.holds("u", "forever").await);
}

#[tokio::test]
async fn a_caller_giving_up_does_not_lose_the_rotated_token() {
    let fake = Arc::new(Fake { delay: Duration::from_millis(100), ..Default::default() });
    let v = vault(fake.clone());
    v.store("u", "idp", expiring(Some("r0"))).await.unwrap();
    let gave_up = tokio::time::timeout(Duration::from_millis(10), v.access_token("u", "idp")).await;
    assert!(gave_up.is_err());
    // The refresh goes on and stores r1; the next caller gets its access token.
    assert_eq!(v.access_token("u", "idp").await.unwrap().expose(), "a1");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn entries_are_bound_to_their_key() {
    let store = Arc::new(MemoryTokenStore::default());
    let fake = Arc::new(Fake::default());
    let v = Vault::new(fake, store.clone(), VaultKey::generate().unwrap());
    v.store("alice", "idp", tokens("alice-token", None, None)).await.unwrap();
    // An entry moved under another user does not open: dropped, that user logs in.
    let blob = store.get("alice", "idp").await.unwrap().unwrap();
    store.put("bob", "idp", blob, None).await.unwrap();
    assert!(matches!(v.access_token("bob", "idp").await, Err(TokenError::Reauthenticate { .. })));
    assert_eq!(store.get("bob", "idp").await.unwrap(), None);
    assert_eq!(v.access_token("alice", "idp").await.unwrap().expose(), "alice-token");
}

#[tokio::test]
async fn an_unexpired_token_is_used_while_the_idp_is_down() {
    let fake = Arc::new(Fake::default());
    for _ in 0..3 {
        fake.script.lock().unwrap().push_back(Err(RefreshError::Transient("down".into())));
    }
    let v = vault(fake.clone());
    // Issued 10 s ago, 1 s left: inside its refresh margin (2.2 s), not expired.
    let t = tokens("still-good", Some("r0"), Some(Duration::from_secs(1)));
    let r = Record::new(&t, SystemTime::now() - Duration::from_secs(10));
    v.inner.save("u", "idp", &r).await.unwrap();
    assert_eq!(v.access_token("u", "idp").await.unwrap().expose(), "still-good");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
    assert_eq!(v.stats().unavailable, 1);
}
