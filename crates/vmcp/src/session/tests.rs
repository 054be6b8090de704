//! Unit tests of the session map: limits, tracking, and the shared record.

use std::time::Instant;

use super::*;
use crate::protocol::Id;

fn binding(sub: &str) -> Binding {
    Binding::Principal { issuer: "iss".into(), subject: sub.into() }
}

fn sessions(limits: LimitsConfig) -> Sessions {
    Sessions::new(limits, Arc::new(MemorySessionStore::default()))
}

async fn open(s: &Sessions, who: &str) -> Result<Arc<Session>, LimitError> {
    let created =
        s.create(binding(who), "2025-11-25".into(), serde_json::json!({}), serde_json::json!({}));
    created.await.map_err(|e| match e {
        CreateError::Limit(l) => l,
        CreateError::Store(e) => panic!("store: {e}"),
    })
}

#[tokio::test]
async fn session_caps_total_and_per_principal() {
    let s = sessions(LimitsConfig {
        max_sessions: 3,
        max_sessions_per_principal: 2,
        ..Default::default()
    });
    let a1 = open(&s, "a").await.unwrap();
    open(&s, "a").await.unwrap();
    assert_eq!(
        open(&s, "a").await.err(),
        Some(LimitError::SessionsPerPrincipal { limit: 2 }),
        "third of one principal"
    );
    open(&s, "b").await.unwrap();
    assert_eq!(open(&s, "c").await.err(), Some(LimitError::Sessions { limit: 3 }));
    assert_eq!(s.len(), 3, "a refused create adds nothing");
    s.remove(&a1.id, &binding("a")).await.unwrap();
    open(&s, "c").await.expect("a freed slot is usable again");
    // The per-principal count follows removals and drains.
    assert_eq!(open(&s, "a").await.err(), Some(LimitError::Sessions { limit: 3 }));
    assert_eq!(s.drain().len(), 3);
    open(&s, "a").await.unwrap();
    open(&s, "a").await.expect("the drained sessions left no count behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_requests_leave_nothing_tracked() {
    // Before the fix the task was spawned and only then tracked: a task that finished first
    // untracked nothing and the later track left an entry behind forever. On a multi-thread
    // runtime that happened for a good share of these immediately-ready tasks.
    let s = sessions(LimitsConfig::default());
    let session = open(&s, "a").await.unwrap();
    for i in 0..2000 {
        let permit = s.admit(&session.binding, Some(&session)).unwrap();
        let task = session.spawn_request(Id::Number(i), permit, async {});
        task.await.unwrap();
    }
    // The permit is dropped when the task's future is dropped, right after it completes.
    assert_eq!(session.tracked(), 0, "in_flight entries leaked");
    assert_eq!(s.in_flight(), 0);
}

#[tokio::test]
async fn a_reused_id_does_not_untrack_the_other_request() {
    let s = sessions(LimitsConfig::default());
    let session = open(&s, "a").await.unwrap();
    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let first = session.spawn_request(
        Id::Number(1),
        s.admit(&session.binding, Some(&session)).unwrap(),
        async {
            let _ = wait.await;
        },
    );
    // The client reuses id 1 while the first request runs; the entry is now the second's.
    let second = session.spawn_request(
        Id::Number(1),
        s.admit(&session.binding, Some(&session)).unwrap(),
        std::future::pending::<()>(),
    );
    release.send(()).unwrap();
    first.await.unwrap();
    assert_eq!(session.tracked(), 1, "the first request removed the second one's entry");
    assert!(session.cancel(&Id::Number(1)), "the running request stays cancellable");
    assert!(second.await.unwrap_err().is_cancelled());
    assert_eq!(s.in_flight(), 0, "aborted tasks give their slots back");
}

#[tokio::test]
async fn in_flight_caps_refuse_and_give_back() {
    let s = sessions(LimitsConfig {
        max_in_flight: 3,
        max_in_flight_per_session: 2,
        ..Default::default()
    });
    let a = open(&s, "a").await.unwrap();
    let who = a.binding.clone();
    let p1 = s.admit(&who, Some(&a)).unwrap();
    let _p2 = s.admit(&who, Some(&a)).unwrap();
    assert_eq!(s.admit(&who, Some(&a)).err(), Some(LimitError::InFlightPerSession { limit: 2 }));
    assert_eq!(s.in_flight(), 2, "a refused per-session admit gives the global slot back");
    let _p3 = s.admit(&who, None).unwrap();
    assert_eq!(s.admit(&who, None).err(), Some(LimitError::InFlight { limit: 3 }));
    drop(p1);
    s.admit(&who, Some(&a)).expect("slot returned on drop");
}

#[tokio::test]
async fn one_principal_cannot_take_every_slot() {
    let s = sessions(LimitsConfig {
        max_in_flight: 4,
        max_in_flight_per_principal: 2,
        ..Default::default()
    });
    let user = |n: &str| Binding::Principal { issuer: "i".into(), subject: n.into() };
    let (a, b) = (user("a"), user("b"));
    let _a1 = s.admit(&a, None).unwrap();
    let _a2 = s.admit(&a, None).unwrap();
    assert_eq!(s.admit(&a, None).err(), Some(LimitError::InFlightPerPrincipal { limit: 2 }));
    assert_eq!(s.in_flight(), 2, "a refused per-principal admit gives the global slot back");
    let _b1 = s.admit(&b, None).expect("another principal still gets in");
}

#[tokio::test]
async fn pending_relays_are_capped_across_sessions_and_given_back() {
    let s = sessions(LimitsConfig { max_pending_relays: 2, ..Default::default() });
    let a = open(&s, "a").await.unwrap();
    let b = open(&s, "b").await.unwrap();
    let (tx1, _rx1) = tokio::sync::oneshot::channel();
    let (tx2, _rx2) = tokio::sync::oneshot::channel();
    let (tx3, _rx3) = tokio::sync::oneshot::channel();
    let first = a.add_relay(PendingRelay::Local(tx1)).unwrap();
    b.add_relay(PendingRelay::Local(tx2)).unwrap();
    let (tx, _rx) = tokio::sync::oneshot::channel();
    assert_eq!(
        a.add_relay(PendingRelay::Local(tx)).err(),
        Some(LimitError::PendingRelays { limit: 2 })
    );
    // An answered relay gives its slot back to every session.
    assert!(a.take_relay(&first).is_some());
    b.add_relay(PendingRelay::Local(tx3)).expect("the answered relay freed its slot");
    // A closed session's relays go too.
    b.close();
    let (tx4, _rx4) = tokio::sync::oneshot::channel();
    a.add_relay(PendingRelay::Local(tx4)).expect("the closed session freed its slots");
}

#[tokio::test]
async fn relays_streams_and_subscriptions_are_capped() {
    let s = sessions(LimitsConfig {
        max_pending_relays_per_session: 2,
        max_streams_per_session: 1,
        max_subscriptions_per_session: 1,
        ..Default::default()
    });
    let a = open(&s, "a").await.unwrap();
    let (tx1, _rx1) = tokio::sync::oneshot::channel();
    let (tx2, rx2) = tokio::sync::oneshot::channel();
    let (tx3, _rx3) = tokio::sync::oneshot::channel();
    a.add_relay(PendingRelay::Local(tx1)).unwrap();
    a.add_relay(PendingRelay::Local(tx2)).unwrap();
    let (tx, _rx) = tokio::sync::oneshot::channel();
    assert_eq!(
        a.add_relay(PendingRelay::Local(tx)).err(),
        Some(LimitError::PendingRelaysPerSession { limit: 2 })
    );
    // A relay nobody waits for any more is dropped, freeing its slot.
    drop(rx2);
    a.add_relay(PendingRelay::Local(tx3)).expect("abandoned relay freed its slot");

    let stream = a.open_stream().unwrap();
    assert_eq!(a.open_stream().err(), Some(LimitError::StreamsPerSession { limit: 1 }));
    drop(stream);
    a.open_stream().expect("closed stream freed its slot");

    assert_eq!(a.subscribe("x://1"), Ok(true));
    assert_eq!(a.subscribe("x://1"), Ok(false), "a repeat is not a new subscription");
    assert_eq!(a.subscribe("x://2"), Err(LimitError::SubscriptionsPerSession { limit: 1 }));
}

#[tokio::test]
async fn expired_relays_are_dropped() {
    let s = sessions(LimitsConfig {
        pending_relay_timeout: std::time::Duration::from_millis(1),
        max_pending_relays_per_session: 1,
        ..Default::default()
    });
    let a = open(&s, "a").await.unwrap();
    let (tx, _rx) = tokio::sync::oneshot::channel();
    let id = a.add_relay(PendingRelay::Local(tx)).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert!(a.take_relay(&id).is_none(), "an expired relay is not answered");
    let (tx, _rx2) = tokio::sync::oneshot::channel();
    a.add_relay(PendingRelay::Local(tx)).expect("expired relay freed its slot");
}

// ---------------------------------------------------------------------------------------------
// The shared record: two `Sessions` on one store stand for two replicas.
// ---------------------------------------------------------------------------------------------

/// A memory store that fails every call while `down` is set.
#[derive(Default)]
struct Flaky {
    inner: MemorySessionStore,
    down: std::sync::atomic::AtomicBool,
}

impl Flaky {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("down for the test".into()));
        }
        Ok(())
    }
}

type Fut<'a, T> = futures::future::BoxFuture<'a, Result<T, StoreError>>;

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

use std::time::Duration;

/// Two replicas sharing one store, with `limits` (a short idle timeout makes `refresh` short).
fn replicas(limits: LimitsConfig) -> (Sessions, Sessions, Arc<Flaky>) {
    let store = Arc::new(Flaky::default());
    let a = Sessions::new(limits.clone(), store.clone());
    let b = Sessions::new(limits, store.clone());
    (a, b, store)
}

fn short_idle() -> LimitsConfig {
    LimitsConfig { session_idle_timeout: Duration::from_millis(400), ..Default::default() }
}

async fn restored(s: &Sessions, id: &str, who: &str) -> Arc<Session> {
    match s.get(id, &binding(who)).await {
        Ok(Got::Restored(s)) => s,
        Ok(Got::Live(_) | Got::Updated { .. }) => panic!("held already"),
        Ok(Got::Gone(_)) => panic!("gone"),
        Err(e) => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn another_replica_restores_the_session_with_its_state() {
    let (a, b, _) = replicas(LimitsConfig::default());
    let created = a.create(
        binding("alice"),
        "2025-06-18".into(),
        serde_json::json!({ "sampling": {} }),
        serde_json::json!({ "name": "c" }),
    );
    let s = created.await.unwrap();
    assert!(s.subscribe("test://x").unwrap());
    assert!(s.set_log_level("error"));
    s.flush().await;
    let r = restored(&b, &s.id, "alice").await;
    assert_eq!(r.id, s.id);
    assert_eq!((r.protocol_version.as_str(), r.log_level()), ("2025-06-18", "error"));
    assert_eq!(r.client_capabilities, serde_json::json!({ "sampling": {} }));
    assert_eq!(r.client_info, serde_json::json!({ "name": "c" }));
    assert!(r.is_subscribed("test://x"));
    assert_eq!(r.created_at, s.created_at);
    assert!(matches!(b.get(&s.id, &binding("alice")).await, Ok(Got::Live(_))), "held now");
    assert_eq!(b.len(), 1);
}

#[tokio::test]
async fn unflushed_changes_stay_local_and_a_flush_writes_them() {
    let (a, b, _) = replicas(LimitsConfig::default());
    let s = open(&a, "alice").await.unwrap();
    s.subscribe("test://x").unwrap();
    let early = restored(&b, &s.id, "alice").await;
    assert!(!early.is_subscribed("test://x"), "not written yet");
    s.flush().await;
    let c = sessions_on(&b);
    assert!(restored(&c, &s.id, "alice").await.is_subscribed("test://x"));
}

/// A third replica on `other`'s store.
fn sessions_on(other: &Sessions) -> Sessions {
    Sessions::new(LimitsConfig::default(), other.store.clone())
}

#[tokio::test]
async fn another_principal_gets_forbidden_and_nothing_is_restored() {
    let (a, b, _) = replicas(LimitsConfig::default());
    let s = open(&a, "alice").await.unwrap();
    assert_eq!(b.get(&s.id, &binding("mallory")).await.err(), Some(Lookup::Forbidden));
    assert_eq!(b.remove(&s.id, &binding("mallory")).await.err(), Some(Lookup::Forbidden));
    assert!(b.is_empty());
    assert_eq!(b.get("no-such-id", &binding("alice")).await.err(), Some(Lookup::NotFound));
    restored(&b, &s.id, "alice").await;
}

#[tokio::test]
async fn restoring_counts_against_the_session_limits() {
    let limits = LimitsConfig { max_sessions_per_principal: 1, ..Default::default() };
    let (a, b, _) = replicas(limits);
    let s = open(&a, "alice").await.unwrap();
    open(&b, "alice").await.unwrap();
    assert_eq!(
        b.get(&s.id, &binding("alice")).await.err(),
        Some(Lookup::Limit(LimitError::SessionsPerPrincipal { limit: 1 }))
    );
    assert_eq!(b.len(), 1, "the refused restore took no slot");
}

#[tokio::test]
async fn delete_on_one_replica_ends_the_other_copy_within_the_refresh() {
    let (a, b, _) = replicas(short_idle());
    let s = open(&a, "alice").await.unwrap();
    restored(&b, &s.id, "alice").await;
    assert!(b.remove(&s.id, &binding("alice")).await.unwrap().is_some());
    assert!(b.is_empty());
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match a.get(&s.id, &binding("alice")).await {
            Ok(Got::Live(_)) => assert!(Instant::now() < until, "A never noticed"),
            Ok(Got::Gone(gone)) => {
                assert!(gone.closed().is_cancelled(), "the local copy ended");
                break;
            }
            _ => panic!("a held session is Live or Gone"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(a.is_empty());
    assert_eq!(a.get(&s.id, &binding("alice")).await.err(), Some(Lookup::NotFound));
}

#[tokio::test]
async fn delete_of_a_session_held_elsewhere_only_deletes_the_record() {
    let (a, b, _) = replicas(LimitsConfig::default());
    let s = open(&a, "alice").await.unwrap();
    assert!(b.remove(&s.id, &binding("alice")).await.unwrap().is_none());
    assert_eq!(b.get(&s.id, &binding("alice")).await.err(), Some(Lookup::NotFound));
    assert_eq!(b.remove(&s.id, &binding("alice")).await.err(), Some(Lookup::NotFound));
}

#[tokio::test]
async fn a_write_after_delete_does_not_bring_the_record_back() {
    let (a, b, _) = replicas(LimitsConfig::default());
    let s = open(&a, "alice").await.unwrap();
    s.subscribe("test://x").unwrap();
    a.remove(&s.id, &binding("alice")).await.unwrap();
    s.flush().await;
    assert_eq!(b.get(&s.id, &binding("alice")).await.err(), Some(Lookup::NotFound));
}

#[tokio::test]
async fn idle_expiry_deletes_the_record_unless_another_replica_uses_it() {
    let (a, b, store) = replicas(short_idle());
    let s = open(&a, "alice").await.unwrap();
    let t = open(&a, "alice").await.unwrap();
    // `t` is used on B (restored there and touched), `s` nowhere.
    restored(&b, &t.id, "alice").await;
    let until = Instant::now() + Duration::from_secs(5);
    let mut ended = Vec::new();
    while ended.len() < 2 {
        // Keep `t` busy on B until A's copies have expired.
        let _ = b.get(&t.id, &binding("alice")).await;
        ended.extend(a.expire(Duration::from_millis(400)).await);
        assert!(Instant::now() < until, "A's copies never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(a.is_empty());
    assert_eq!(store.inner.len(), 1, "only the record in use elsewhere is left");
    assert_eq!(a.get(&s.id, &binding("alice")).await.err(), Some(Lookup::NotFound));
    assert!(matches!(a.get(&t.id, &binding("alice")).await, Ok(Got::Restored(_))));
}

#[tokio::test]
async fn drain_leaves_records_for_other_replicas() {
    let (a, b, _) = replicas(LimitsConfig::default());
    let s = open(&a, "alice").await.unwrap();
    let drained = a.drain();
    assert_eq!(drained.len(), 1);
    assert!(drained[0].closed().is_cancelled());
    assert!(a.is_empty());
    restored(&b, &s.id, "alice").await;
}

#[tokio::test]
async fn a_failing_store_refuses_create_and_unknown_ids_but_not_held_sessions() {
    let (a, b, store) = replicas(short_idle());
    let held = open(&a, "alice").await.unwrap();
    let elsewhere = open(&b, "alice").await.unwrap();
    store.down.store(true, Ordering::SeqCst);
    let created =
        a.create(binding("alice"), "2025-11-25".into(), Default::default(), Default::default());
    assert!(matches!(created.await, Err(CreateError::Store(StoreError::Unavailable(_)))));
    assert_eq!(a.len(), 1, "no half-created session");
    assert!(matches!(a.get(&elsewhere.id, &binding("alice")).await, Err(Lookup::Unavailable(_))));
    assert!(matches!(a.remove(&held.id, &binding("alice")).await, Err(Lookup::Unavailable(_))));
    // A held session keeps working, also when its touch is due and fails.
    held.link.force_due();
    assert!(matches!(a.get(&held.id, &binding("alice")).await, Ok(Got::Live(_))));
    store.down.store(false, Ordering::SeqCst);
    restored(&a, &elsewhere.id, "alice").await;
}

#[tokio::test]
async fn oversize_client_data_is_refused_before_taking_a_slot() {
    let s = sessions(LimitsConfig::default());
    let info = serde_json::json!({ "name": "x".repeat(record::MAX_RECORD_BYTES) });
    let created = s.create(binding("a"), "2025-11-25".into(), serde_json::json!({}), info);
    assert!(matches!(
        created.await,
        Err(CreateError::Store(StoreError::Record(record::RecordError::TooLarge(_))))
    ));
    assert!(s.is_empty());
}

#[tokio::test]
async fn a_held_copy_takes_over_changes_made_on_another_replica() {
    let (a, b, _) = replicas(short_idle());
    let s = open(&a, "alice").await.unwrap();
    s.subscribe("test://old").unwrap();
    s.flush().await;
    let on_b = restored(&b, &s.id, "alice").await;
    on_b.unsubscribe("test://old");
    on_b.subscribe("test://new").unwrap();
    on_b.set_log_level("critical");
    on_b.flush().await;
    // Before its refresh is due, A serves its copy as it is.
    assert!(matches!(a.get(&s.id, &binding("alice")).await, Ok(Got::Live(_))));
    s.link.force_due();
    match a.get(&s.id, &binding("alice")).await {
        Ok(Got::Updated { session, added, removed }) => {
            assert_eq!(
                (added, removed),
                (vec!["test://new".to_owned()], vec!["test://old".to_owned()])
            );
            assert!(session.is_subscribed("test://new") && !session.is_subscribed("test://old"));
            assert_eq!(session.log_level(), "critical");
        }
        _ => panic!("A did not take the change over"),
    }
    // A change of A's own not yet written is not overwritten: A's write comes after.
    s.subscribe("test://mine").unwrap();
    s.link.force_due();
    assert!(matches!(a.get(&s.id, &binding("alice")).await, Ok(Got::Live(_))));
    assert!(s.is_subscribed("test://mine"));
}

#[tokio::test]
async fn a_local_store_keeps_no_record_and_never_ends_a_held_session() {
    // Refresh due every 10 ms: a store asked "is it still there?" would say no and end it.
    let limits =
        LimitsConfig { session_idle_timeout: Duration::from_millis(40), ..Default::default() };
    let s = Sessions::new(limits, Arc::new(LocalSessionStore));
    let a = open(&s, "a").await.unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(15)).await;
        match s.get(&a.id, &binding("a")).await {
            Ok(Got::Live(held)) => assert!(Arc::ptr_eq(&held, &a)),
            Ok(_) => panic!("the held session changed"),
            Err(e) => panic!("the held session was lost: {e:?}"),
        }
    }
    assert_eq!(s.get("0".repeat(64).as_str(), &binding("a")).await.err(), Some(Lookup::NotFound));
    assert!(s.remove(&a.id, &binding("a")).await.unwrap().is_some());
    assert_eq!(s.len(), 0);
}
