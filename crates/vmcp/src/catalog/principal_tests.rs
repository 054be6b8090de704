//! Unit tests of per-principal catalogs: merging, staleness, epochs, change feeds.

use serde_json::json;

use super::*;
use crate::catalog::build;

fn lists(backend: &str, tools: &[&str]) -> BackendLists {
    BackendLists {
        backend: Arc::from(backend),
        tools: tools.iter().map(|t| json!({ "name": t, "inputSchema": {} })).collect(),
        ..Default::default()
    }
}

fn order(names: &[(&str, bool)]) -> Vec<(Arc<str>, bool)> {
    names.iter().map(|(n, b)| (Arc::from(*n), *b)).collect()
}

fn slot(l: Option<BackendLists>) -> Slot {
    Slot { lists: l, epoch: 0, retry_at: None, failure: None }
}

#[test]
fn nothing_user_bound_means_no_principal_catalogs() {
    let agg = AggregationConfig::default();
    assert!(Principals::new(&agg, &order(&[("a", false)]), Default::default()).is_none());
    let p = Principals::new(&agg, &order(&[("a", false), ("b", true)]), Default::default());
    let p = p.expect("b is user-bound");
    assert!(p.is_bound("b") && !p.is_bound("a") && !p.is_bound("c"));
}

/// A principal's catalog is exactly the catalog of all lists in config order, whatever the
/// strategy: user-bound lists take part in conflict resolution like any other.
#[test]
fn merge_equals_building_everything_in_config_order() {
    for strategy in [json!({}), json!({ "conflictResolution": "priority" })] {
        let agg: AggregationConfig = serde_json::from_value(strategy).unwrap();
        let names = order(&[("a", false), ("u", true), ("c", false)]);
        let p = Principals::new(&agg, &names, Default::default()).unwrap();
        let (a, u, c) = (lists("a", &["x", "y"]), lists("u", &["x", "me"]), lists("c", &["x"]));
        let shared = Shared {
            catalog: Arc::new(build(&agg, &[a.clone(), c.clone()])),
            lists: vec![a.clone(), c.clone()],
            generation: 1,
        };
        let merged = p.merge(&shared, &[slot(Some(u.clone()))]);
        assert_eq!(merged, build(&agg, &[a.clone(), u, c.clone()]), "{agg:?}");
        // A backend that was not ready contributes nothing.
        assert_eq!(p.merge(&shared, &[slot(None)]), build(&agg, &[a, c]));
    }
}

#[test]
fn slots_go_stale_on_a_new_epoch_or_when_a_retry_is_due() {
    let mut now = None;
    let fresh = slot(Some(lists("u", &[])));
    assert!(!fresh.stale(0, &mut now));
    assert!(fresh.stale(1, &mut now), "the backend changed since");
    let later = Slot { retry_at: Some(Instant::now() + Duration::from_secs(60)), ..fresh.clone() };
    assert!(!later.stale(0, &mut None), "a failed fetch waits for its retry");
    let due = Slot { retry_at: Some(Instant::now()), ..fresh.clone() };
    assert!(due.stale(0, &mut None));
    assert!(same_slots(std::slice::from_ref(&fresh), &[slot(Some(lists("u", &[])))]));
    assert!(!same_slots(&[fresh], &[slot(None)]));
}

#[test]
fn backend_changed_moves_only_that_backends_epoch() {
    let agg = AggregationConfig::default();
    let p = Principals::new(&agg, &order(&[("u", true), ("v", true)]), Default::default());
    let p = p.unwrap();
    p.backend_changed("v");
    p.backend_changed("not-bound");
    assert_eq!((p.epoch(0), p.epoch(1)), (0, 1));
}

fn principal(sub: &str) -> Binding {
    Binding::Principal { issuer: "https://idp".into(), subject: sub.into() }
}

#[tokio::test]
async fn a_feed_carries_shared_notices_and_its_own_principals_only() {
    let live = LiveCatalog::default();
    let mut alice = live.changes_for(principal("alice"));
    let only_tools = Changed { tools: true, ..Default::default() };
    let only_prompts = Changed { prompts: true, ..Default::default() };
    let _ = live.changes.send(Notice { to: Some(principal("bob")), changed: only_tools });
    let _ = live.changes.send(Notice { to: Some(principal("alice")), changed: only_prompts });
    let _ = live.changes.send(Notice { to: None, changed: only_tools });
    assert_eq!(alice.recv().await.unwrap(), only_prompts, "bob's notice is skipped");
    assert_eq!(alice.recv().await.unwrap(), only_tools);
    // A listener that fell behind is told everything may have changed.
    for _ in 0..2000 {
        let _ = live.changes.send(Notice { to: None, changed: only_tools });
    }
    assert_eq!(alice.recv().await.unwrap(), Changed::ALL);
}
