//! Per-principal catalogs, for backends reached with the caller's own credentials
//! ("user-bound": `passthrough`, `token_exchange`; see `OutgoingAuth::is_user_bound`).
//!
//! Such a backend may refuse to list anything without a user's token, or list different things
//! per user. It is left out of the shared catalog and discovered per principal, with the
//! credentials of that principal's own request. A principal's catalog is [`build`](super::build)
//! over the shared backends' lists plus that principal's lists of the user-bound ones, in config
//! order, so conflict resolution, filters and overrides give exactly the names they would give
//! had all been discovered together.
//!
//! Lifecycle of one principal's entry, keyed by its [`Binding`]:
//! - built on the principal's first request that needs a catalog (a list or a call); concurrent
//!   first requests wait for one build (a mutex per entry);
//! - merged again, without I/O, when the shared catalog changes;
//! - a user-bound backend's lists are fetched again when that backend comes up, goes down or
//!   reports `list_changed` (its epoch moves): at once for every cached principal, in the
//!   background ([`refresh`], as `Caller::Teardown(binding)`, which resolves the principal's
//!   current credentials the way session teardown does), or by the principal's next request,
//!   whichever comes first. A list_changed rarely says whose list changed (it usually arrives on
//!   the gateway's own connection), so every cached principal's lists of that backend are
//!   fetched again, and only principals whose catalog actually changed are told;
//! - a fetch that fails keeps the lists fetched before (or none) and is tried again no sooner
//!   than [`RETRY`] later; it never fails the request that needed the catalog. One refused
//!   because the principal must log in again is tried at their next request: only a new login
//!   mends it, the request right after that login must see it mended, and asking costs nothing
//!   meanwhile (the credentials fail before anything is sent);
//! - dropped after `idle` without requests, and the least recently used is dropped beyond
//!   `max_principals` ([`PrincipalLimits`]).
//!
//! Invariants: the cache holds catalog data keyed by binding, never a credential or an identity
//! (discovery takes the caller as an argument); each fetch is bounded by the backend's request
//! timeout; a principal is told of a change (`list_changed`) only when its own catalog changed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::live::{Changed, LiveCatalog, Notice, Shared, same};
use super::{BackendLists, Catalog, Unlisted, UnlistedCause, build_with};
use crate::auth::{Binding, Caller};
use crate::backend::State;
use crate::backend::registry::Backends;
use crate::config::AggregationConfig;

/// Default bound on cached principal catalogs.
pub const DEFAULT_MAX_PRINCIPALS: u64 = 10_000;
/// Default time after which a principal's catalog with no requests is dropped.
pub const DEFAULT_PRINCIPAL_IDLE: Duration = Duration::from_secs(600);
/// How soon a user-bound backend whose lists could not all be fetched for a principal is asked
/// again for that principal.
pub const RETRY: Duration = super::live::DISCOVERY_RETRY;
/// Principals refreshed at once in the background after a user-bound backend changed.
const REFRESH_CONCURRENCY: usize = 4;

/// Bounds of the per-principal cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrincipalLimits {
    /// Principals whose catalogs are kept (least recently used dropped first). Default
    /// [`DEFAULT_MAX_PRINCIPALS`].
    pub max_principals: u64,
    /// A principal's catalog is dropped after this long without a request. Default
    /// [`DEFAULT_PRINCIPAL_IDLE`].
    pub idle: Duration,
}

impl Default for PrincipalLimits {
    fn default() -> Self {
        Self { max_principals: DEFAULT_MAX_PRINCIPALS, idle: DEFAULT_PRINCIPAL_IDLE }
    }
}

/// The catalogs of principals (see the module docs).
pub(super) struct Principals {
    aggregation: AggregationConfig,
    /// Every backend's position in config order.
    rank: HashMap<Arc<str>, usize>,
    /// The user-bound backends, in config order.
    bound: Vec<Arc<str>>,
    /// Per user-bound backend: moves whenever its lists may have changed for everyone.
    epochs: Vec<AtomicU64>,
    cache: moka::future::Cache<Binding, Arc<Entry>>,
    /// Wakes the background refresh.
    dirty: tokio::sync::Notify,
}

/// One principal's catalog: published whole, rebuilt by one task at a time.
#[derive(Default)]
struct Entry {
    view: ArcSwapOption<View>,
    build: tokio::sync::Mutex<()>,
}

struct View {
    /// The shared catalog generation this was merged with.
    shared: u64,
    /// Per user-bound backend (as in `Principals::bound`).
    slots: Vec<Slot>,
    catalog: Arc<Catalog>,
}

/// One user-bound backend's lists for one principal.
#[derive(Clone)]
struct Slot {
    /// `None`: the backend was not ready.
    lists: Option<BackendLists>,
    /// The backend's epoch when these were fetched.
    epoch: u64,
    /// Some list failed: ask again from then on.
    retry_at: Option<Instant>,
    /// Why the last fetch failed, if it did.
    failure: Option<Unlisted>,
}

impl Slot {
    fn stale(&self, epoch: u64, now: &mut Option<Instant>) -> bool {
        self.epoch != epoch
            || self.retry_at.is_some_and(|at| at <= *now.get_or_insert_with(Instant::now))
    }
}

impl Principals {
    /// `None` when no backend in `order` (name, user-bound) is user-bound.
    pub(super) fn new(
        aggregation: &AggregationConfig,
        order: &[(Arc<str>, bool)],
        limits: PrincipalLimits,
    ) -> Option<Self> {
        let bound: Vec<Arc<str>> =
            order.iter().filter(|(_, b)| *b).map(|(n, _)| n.clone()).collect();
        if bound.is_empty() {
            return None;
        }
        let cache = moka::future::Cache::builder()
            .max_capacity(limits.max_principals)
            .time_to_idle(limits.idle)
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .build();
        Some(Self {
            aggregation: aggregation.clone(),
            rank: order.iter().enumerate().map(|(i, (n, _))| (n.clone(), i)).collect(),
            epochs: bound.iter().map(|_| AtomicU64::new(0)).collect(),
            bound,
            cache,
            dirty: tokio::sync::Notify::new(),
        })
    }

    pub(super) fn is_bound(&self, name: &str) -> bool {
        self.bound.iter().any(|b| &**b == name)
    }

    /// Cached principals. Counted rather than `entry_count`, which lags until moka's housekeeping
    /// runs; at most `max_principals` steps, for `/status`.
    pub(super) fn len(&self) -> u64 {
        self.cache.iter().count() as u64
    }

    /// A user-bound backend came up, went down or reported `list_changed`: every principal's
    /// lists of it are stale.
    pub(super) fn backend_changed(&self, name: &str) {
        if let Some(i) = self.bound.iter().position(|b| &**b == name) {
            self.epochs[i].fetch_add(1, Ordering::AcqRel);
            self.dirty.notify_one();
        }
    }

    fn epoch(&self, i: usize) -> u64 {
        self.epochs.get(i).map_or(0, |e| e.load(Ordering::Acquire))
    }

    fn fresh(&self, view: &View, shared: u64) -> bool {
        let mut now = None;
        view.shared == shared
            && view.slots.iter().enumerate().all(|(i, s)| !s.stale(self.epoch(i), &mut now))
    }

    /// The catalog of `binding`, as its request by `caller` needs it.
    pub(super) async fn catalog(
        &self,
        live: &LiveCatalog,
        backends: &Backends,
        binding: Binding,
        caller: &Caller,
    ) -> Arc<Catalog> {
        let entry = match self.cache.get(&binding).await {
            Some(e) => e,
            None => self.cache.get_with(binding.clone(), async { Arc::default() }).await,
        };
        if let Some(view) = entry.view.load().as_ref()
            && self.fresh(view, live.current.load().generation)
        {
            return view.catalog.clone();
        }
        self.rebuild(live, backends, &entry, binding, caller).await
    }

    /// The catalog `binding` saw last, if cached.
    pub(super) async fn cached(&self, binding: &Binding) -> Option<Arc<Catalog>> {
        let entry = self.cache.get(binding).await?;
        entry.view.load().as_ref().map(|v| v.catalog.clone())
    }

    /// Fetches what is stale, merges, publishes; tells the principal when its catalog changed.
    async fn rebuild(
        &self,
        live: &LiveCatalog,
        backends: &Backends,
        entry: &Entry,
        binding: Binding,
        caller: &Caller,
    ) -> Arc<Catalog> {
        let _one = entry.build.lock().await;
        let old = entry.view.load_full();
        if let Some(view) = &old
            && self.fresh(view, live.current.load().generation)
        {
            return view.catalog.clone();
        }
        // A background refresh that fails leaves the slot as it was (still stale), so the
        // principal's next request tries at once with its own credentials.
        let background = matches!(caller, Caller::Teardown(_));
        let mut now = None;
        let slots = futures::future::join_all(self.bound.iter().enumerate().map(|(i, name)| {
            let epoch = self.epoch(i);
            let previous = old.as_ref().and_then(|v| v.slots.get(i));
            let stale = previous.is_none_or(|p| p.stale(epoch, &mut now));
            async move {
                match previous {
                    Some(p) if !stale => p.clone(),
                    _ => {
                        let fresh = fetch(backends, name, caller, previous, epoch).await;
                        match previous {
                            Some(p) if background && fresh.failure.is_some() => p.clone(),
                            _ => fresh,
                        }
                    }
                }
            }
        }))
        .await;
        let shared = live.current.load_full();
        let catalog = Arc::new(self.merge(&shared, &slots));
        let lists_changed = old.as_ref().is_some_and(|v| !same_slots(&v.slots, &slots));
        let changed = match &old {
            Some(v) if lists_changed => Changed::between(&v.catalog, &catalog),
            // A first build was seen by nobody; a shared change was announced to everyone.
            _ => Changed::default(),
        };
        entry.view.store(Some(Arc::new(View {
            shared: shared.generation,
            slots,
            catalog: catalog.clone(),
        })));
        if changed.any() {
            let _ = live.changes.send(Notice { to: Some(binding), changed });
        }
        catalog
    }

    /// The shared backends' lists and this principal's, in config order, built into one catalog.
    fn merge(&self, shared: &Shared, slots: &[Slot]) -> Catalog {
        let mut all: Vec<&BackendLists> = shared.lists.iter().collect();
        all.extend(slots.iter().filter_map(|s| s.lists.as_ref()));
        all.sort_by_key(|l| self.rank.get(&l.backend).copied().unwrap_or(usize::MAX));
        let unlisted = slots.iter().filter_map(|s| s.failure.clone()).collect();
        build_with(&self.aggregation, &all, unlisted)
    }
}

/// One user-bound backend's lists as `caller`, within the backend's request timeout.
async fn fetch(
    backends: &Backends,
    name: &Arc<str>,
    caller: &Caller,
    previous: Option<&Slot>,
    epoch: u64,
) -> Slot {
    let absent = Slot { lists: None, epoch, retry_at: None, failure: None };
    let Some(backend) = backends.get(name) else { return absent };
    if backend.state() != State::Ready {
        return absent;
    }
    let previous = previous.and_then(|p| p.lists.as_ref());
    let discovery = super::discover::discover_as(caller, name, &backend, previous);
    let timeout = backends.timeout(name);
    let (lists, failure) = match tokio::time::timeout(timeout, discovery).await {
        Ok(found) => found,
        Err(_) => {
            tracing::warn!(backend = %name, "discovery for a principal timed out");
            let kept = previous
                .cloned()
                .unwrap_or_else(|| BackendLists { backend: name.clone(), ..Default::default() });
            let reason = format!("listing did not finish within {timeout:?}");
            let cause = UnlistedCause::Unavailable;
            (kept, Some(Unlisted { backend: name.clone(), reason, cause }))
        }
    };
    let retry_at = failure.as_ref().map(|f| match f.cause {
        UnlistedCause::Reauthenticate => Instant::now(),
        _ => Instant::now() + RETRY,
    });
    Slot { lists: Some(lists), epoch, retry_at, failure }
}

fn same_slots(a: &[Slot], b: &[Slot]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (&x.lists, &y.lists) {
            (Some(x), Some(y)) => same(x, y),
            (None, None) => true,
            _ => false,
        })
}

/// Fetches the stale lists of every cached principal after a user-bound backend changed, so its
/// clients hear of it, until `stop` fires. Each principal is refreshed with its current
/// credentials (`Caller::Teardown(binding)`, resolved when sent), never stored ones.
pub(super) async fn refresh(
    live: Arc<LiveCatalog>,
    p: Arc<Principals>,
    backends: Arc<Backends>,
    stop: CancellationToken,
) {
    let p = &p;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = p.dirty.notified() => {}
        }
        // Iterating does not count as use, so refreshing keeps no idle principal alive.
        let entries: Vec<(Arc<Binding>, Arc<Entry>)> = p.cache.iter().collect();
        let round = futures::stream::iter(entries).for_each_concurrent(
            REFRESH_CONCURRENCY,
            |(binding, entry)| {
                let (live, backends) = (&live, &backends);
                async move {
                    if entry.view.load().is_none() {
                        // Its first build is under way, with its own request's caller.
                        return;
                    }
                    let binding = Binding::clone(&binding);
                    let caller = Caller::Teardown(binding.clone());
                    p.rebuild(live, backends, &entry, binding, &caller).await;
                }
            },
        );
        tokio::select! {
            _ = stop.cancelled() => return,
            () = round => {}
        }
    }
}

#[cfg(test)]
#[path = "principal_tests.rs"]
mod tests;
