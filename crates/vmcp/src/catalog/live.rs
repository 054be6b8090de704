//! The live catalog: discovery from backends, rebuilt and swapped whole when anything changes.
//!
//! A discovery task watches every backend. When one becomes ready or reports `list_changed`, its
//! lists are fetched again (as `Caller::System`); when one goes down, its lists are dropped. Each
//! time, a new [`Catalog`] is built from all current lists and published atomically; readers never
//! lock. Clients are told which kinds of list changed.
//!
//! Backends reached with the caller's own credentials ("user-bound": `passthrough`,
//! `token_exchange`) are not discovered here: as `Caller::System` they would get no credentials
//! and fail. They are discovered per principal ([`super::principal`]); this task only tells the
//! principals' catalogs when such a backend comes up, goes down or reports `list_changed`.
//!
//! Change notices go to every client for the shared catalog, and to one principal's clients for
//! that principal's catalog ([`LiveCatalog::changes_for`]).
//!
//! A backend is listed while it is in service ([`Backends::in_service`]): connected, not
//! unhealthy, its circuit breaker not open. When it leaves service its items leave the catalog
//! (clients get `list_changed`) but stay *known*: [`LiveCatalog::known`] still routes them, so
//! a call to one is refused as "backend unavailable", never as an unknown name.
//!
//! Invariant: a backend's failure only removes that backend's items.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::principal::{PrincipalLimits, Principals};
use super::{BackendLists, Catalog, build};
use crate::auth::{Binding, Caller};
use crate::backend::registry::Backends;
use crate::backend::{BackendEvent, State};
use crate::config::AggregationConfig;

pub use super::discover::discover_as;

/// Which advertised lists changed in one rebuild.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changed {
    /// `tools` changed.
    pub tools: bool,
    /// `resources` or templates changed.
    pub resources: bool,
    /// `prompts` changed.
    pub prompts: bool,
}

impl Changed {
    /// Everything may have changed (a listener fell behind).
    pub const ALL: Changed = Changed { tools: true, resources: true, prompts: true };

    /// What differs between two catalogs.
    pub fn between(prev: &Catalog, next: &Catalog) -> Changed {
        Changed {
            tools: prev.tools() != next.tools(),
            resources: prev.resources() != next.resources()
                || prev.resource_templates() != next.resource_templates(),
            prompts: prev.prompts() != next.prompts(),
        }
    }

    /// Whether anything changed.
    pub fn any(&self) -> bool {
        *self != Changed::default()
    }
}

/// The shared catalog as published, with the lists it was built from (in config order) and its
/// number, so a principal's catalog knows when to merge again.
pub(super) struct Shared {
    pub catalog: Arc<Catalog>,
    pub lists: Vec<BackendLists>,
    pub generation: u64,
}

/// A change notice: to everyone (`to: None`, the shared catalog changed) or to one principal.
#[derive(Debug, Clone)]
pub(super) struct Notice {
    pub to: Option<Binding>,
    pub changed: Changed,
}

/// Notice of a change to the catalog one principal sees (see [`LiveCatalog::changes_for`]).
pub struct ChangeFeed {
    rx: broadcast::Receiver<Notice>,
    binding: Binding,
}

impl ChangeFeed {
    /// The next change to this principal's catalog. A feed that fell behind gets
    /// [`Changed::ALL`] (some notices were lost: anything may have changed).
    pub async fn recv(&mut self) -> Result<Changed, broadcast::error::RecvError> {
        loop {
            match self.rx.recv().await {
                Ok(n) if n.to.as_ref().is_none_or(|b| *b == self.binding) => return Ok(n.changed),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return Ok(Changed::ALL),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Change notices buffered per listener; a listener further behind gets [`Changed::ALL`].
const NOTICES: usize = 1024;

/// The published catalog, the principals' catalogs, and their change feed.
pub struct LiveCatalog {
    pub(super) current: ArcSwap<Shared>,
    pub(super) changes: broadcast::Sender<Notice>,
    /// How many backends currently have their lists in the catalog.
    discovered: tokio::sync::watch::Sender<usize>,
    /// `None` when no backend is user-bound: every caller reads the shared catalog. Replaced by
    /// a reload that changes the backends or the aggregation rules.
    pub(super) principals: ArcSwapOption<Principals>,
    /// Built from the last lists of every shared backend ever listed, in service or not.
    known: ArcSwap<Catalog>,
}

impl Default for LiveCatalog {
    fn default() -> Self {
        Self {
            current: ArcSwap::from_pointee(Shared {
                catalog: Arc::new(Catalog::empty()),
                lists: Vec::new(),
                generation: 0,
            }),
            changes: broadcast::channel(NOTICES).0,
            discovered: tokio::sync::watch::channel(0).0,
            principals: ArcSwapOption::empty(),
            known: ArcSwap::from_pointee(Catalog::empty()),
        }
    }
}

impl LiveCatalog {
    /// A live catalog for `backends`: the user-bound ones among them
    /// ([`Backends::user_bound`]) get per-principal catalogs, within `limits`. Pass
    /// `user_bound: false` to treat every backend as shared (an anonymous gateway has no
    /// principals).
    pub fn new(
        aggregation: &AggregationConfig,
        backends: &Backends,
        user_bound: bool,
        limits: PrincipalLimits,
    ) -> Self {
        let principals = Principals::new(aggregation, &order(backends, user_bound), limits);
        Self { principals: ArcSwapOption::from(principals.map(Arc::new)), ..Self::default() }
    }

    /// After a reload: the catalog under the new `aggregation` rules and `backends`, built from
    /// the lists in `seed` (the unchanged backends' current lists and the new ones' first), and
    /// published at once, so no request sees an empty or partial catalog. With `reset`, the
    /// principals' catalogs start afresh (rebuilt on each principal's next request) and every
    /// client is told its lists may have changed.
    pub fn reconfigure(
        &self,
        aggregation: &AggregationConfig,
        backends: &Backends,
        user_bound: bool,
        limits: PrincipalLimits,
        seed: &Seed,
        reset: bool,
    ) {
        let names: Vec<Arc<str>> = backends.iter().map(|(n, _)| n).collect();
        let everything: Vec<&BackendLists> =
            names.iter().filter_map(|n| seed.known.get(n)).collect();
        self.known.store(Arc::new(super::build_from(aggregation, &everything)));
        let had_principals = self.principals.load().is_some();
        if reset {
            let next = Principals::new(aggregation, &order(backends, user_bound), limits);
            self.principals.store(next.map(Arc::new));
        }
        let ordered: Vec<BackendLists> =
            names.iter().filter_map(|n| seed.lists.get(n).cloned()).collect();
        self.publish(build(aggregation, &ordered), ordered);
        if reset && (had_principals || self.principals.load().is_some()) {
            let _ = self.changes.send(Notice { to: None, changed: Changed::ALL });
        }
        self.discovered.send_replace(seed.lists.len());
    }

    /// The shared catalog (a cheap snapshot; hold it for one request). What anonymous callers
    /// see; a principal's own is [`LiveCatalog::for_caller`].
    pub fn load(&self) -> Arc<Catalog> {
        self.current.load().catalog.clone()
    }

    /// The catalog `caller` sees: the shared one, or, when some backend is user-bound and the
    /// caller is a principal, that principal's (built on its first request, refreshed when
    /// stale, with this caller's credentials). Never fails: a user-bound backend that cannot be
    /// listed for this principal just contributes nothing (or what it listed before).
    pub async fn for_caller(&self, backends: &Backends, caller: &Caller) -> Arc<Catalog> {
        if self.principals.load().is_none() {
            return self.load();
        }
        match (self.principals.load_full(), caller) {
            (Some(p), Caller::User(id)) => {
                let binding =
                    Binding::Principal { issuer: id.issuer.clone(), subject: id.subject.clone() };
                // Boxed: a discovery is a deep future (every backend's auth and transport).
                Box::pin(p.catalog(self, backends, binding, caller)).await
            }
            (Some(_), Caller::Teardown(binding)) => self.cached(binding).await,
            _ => self.load(),
        }
    }

    /// The catalog the principal `binding` last saw, without discovering anything (teardown):
    /// its cached catalog, else the shared one.
    pub async fn cached(&self, binding: &Binding) -> Arc<Catalog> {
        match self.principals.load_full() {
            Some(p) => p.cached(binding).await.unwrap_or_else(|| self.load()),
            None => self.load(),
        }
    }

    /// Notices of changes to the catalog the principal `binding` sees: the shared catalog's,
    /// and its own.
    pub fn changes_for(&self, binding: Binding) -> ChangeFeed {
        ChangeFeed { rx: self.changes.subscribe(), binding }
    }

    /// The catalog as it would be with every shared backend ever listed in service: where a
    /// name the current catalog lacks came from (its backend is out of service now).
    pub fn known(&self) -> Arc<Catalog> {
        self.known.load_full()
    }

    /// Whether `name` is discovered per principal rather than in the shared catalog.
    pub fn is_user_bound(&self, name: &str) -> bool {
        self.principals.load().as_ref().is_some_and(|p| p.is_bound(name))
    }

    /// Principals whose catalogs are cached now (for `/status`).
    pub fn principal_catalogs(&self) -> u64 {
        self.principals.load().as_ref().map_or(0, |p| p.len())
    }

    fn publish(&self, next: Catalog, lists: Vec<BackendLists>) {
        let prev = self.current.load_full();
        let changed = Changed::between(&prev.catalog, &next);
        for p in next.problems() {
            tracing::warn!(problem = %p, "catalog");
        }
        let generation = prev.generation + 1;
        self.current.store(Arc::new(Shared { catalog: Arc::new(next), lists, generation }));
        if changed.any() {
            let _ = self.changes.send(Notice { to: None, changed });
        }
    }
}

/// The backends in config order, each with whether it gets per-principal catalogs.
fn order(backends: &Backends, user_bound: bool) -> Vec<(Arc<str>, bool)> {
    backends.iter().map(|(n, _)| (n.clone(), user_bound && backends.user_bound(&n))).collect()
}

/// What discovery knows, handed from one discovery task to the next across a reload so the
/// catalog never starts empty.
#[derive(Debug, Default, Clone)]
pub struct Seed {
    /// The lists of every shared backend in service, by name.
    pub lists: HashMap<Arc<str>, BackendLists>,
    /// The last lists of every shared backend ever listed, in service or not.
    pub known: HashMap<Arc<str>, BackendLists>,
    /// User-bound backends: whether each was in service when last seen.
    pub ready: HashMap<Arc<str>, bool>,
}

impl Seed {
    /// The lists as published now (when a discovery task could not hand over its own).
    fn published(live: &LiveCatalog) -> Seed {
        let lists: HashMap<Arc<str>, BackendLists> =
            live.current.load().lists.iter().map(|l| (l.backend.clone(), l.clone())).collect();
        Seed { known: lists.clone(), lists, ready: HashMap::new() }
    }

    /// Forgets backend `name` (removed), or only its current lists (`keep_known`: changed, so
    /// its old items still route to "backend unavailable" until the new object lists them).
    pub fn forget(&mut self, name: &str, keep_known: bool) {
        self.lists.remove(name);
        self.ready.remove(name);
        if !keep_known {
            self.known.remove(name);
        }
    }

    /// Records the first lists of a backend a reload started.
    pub fn insert(&mut self, lists: BackendLists) {
        self.known.insert(lists.backend.clone(), lists.clone());
        self.lists.insert(lists.backend.clone(), lists);
    }
}

/// A running discovery task (see [`run_discovery`]), stopped by a reload to hand its [`Seed`]
/// to the next.
pub struct Discovery {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Seed>,
    live: Arc<LiveCatalog>,
}

impl Discovery {
    /// Starts discovery of `backends` (their current set) under `aggregation`, from `seed`,
    /// until this is stopped or `parent` fires.
    pub fn spawn(
        backends: Arc<Backends>,
        aggregation: AggregationConfig,
        live: Arc<LiveCatalog>,
        events: &crate::backend::EventSender,
        parent: &CancellationToken,
        seed: Seed,
    ) -> Discovery {
        let stop = parent.child_token();
        let task = tokio::spawn(run_discovery(
            backends,
            aggregation,
            live.clone(),
            events.subscribe(),
            stop.clone(),
            seed,
        ));
        Discovery { stop, task, live }
    }

    /// Stops the task and returns what it knew.
    pub async fn stop(self) -> Seed {
        self.stop.cancel();
        match self.task.await {
            Ok(seed) => seed,
            Err(_) => Seed::published(&self.live),
        }
    }
}

/// Runs discovery until `stop` fires, starting from `seed` (what an earlier discovery knew);
/// returns what it knows then.
pub async fn run_discovery(
    backends: Arc<Backends>,
    aggregation: AggregationConfig,
    live: Arc<LiveCatalog>,
    mut events: broadcast::Receiver<BackendEvent>,
    stop: CancellationToken,
    seed: Seed,
) -> Seed {
    let principals = live.principals.load_full();
    if let Some(p) = &principals {
        tokio::spawn(super::principal::refresh(
            live.clone(),
            p.clone(),
            backends.clone(),
            stop.clone(),
        ));
    }
    let Seed { mut lists, mut known, mut ready } = seed;
    // One stream of "this backend may have changed" signals: state changes and list_changed.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Arc<str>>(256);
    for entry in backends.snapshot().entries() {
        let (name, backend, tx, stop) =
            (entry.name.clone(), entry.backend.clone(), tx.clone(), stop.clone());
        let mut health = entry.health.subscribe();
        tokio::spawn(async move {
            let mut watch = backend.watch();
            loop {
                let _ = tx.send(name.clone()).await;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = watch.changed() => if r.is_err() { return },
                    r = health.changed() => if r.is_err() { return },
                }
            }
        });
    }
    loop {
        let (name, listed) = tokio::select! {
            _ = stop.cancelled() => break,
            n = rx.recv() => match n { Some(n) => (n, false), None => break },
            e = events.recv() => match e {
                Ok(e) if e.notification.method.ends_with("/list_changed") => (e.backend, true),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            },
        };
        let Some(backend) = backends.get(&name) else { continue };
        if let Some(p) = principals.as_ref().filter(|p| p.is_bound(&name)) {
            // Only readiness matters here (not every reconnect attempt while it is down).
            let up = backends.in_service(&name);
            if ready.insert(name.clone(), up) != Some(up) || listed {
                p.backend_changed(&name);
            }
            continue;
        }
        let fresh = if backends.in_service(&name) {
            let discovery = discover_as(&Caller::System, &name, &backend, lists.get(&name));
            let (found, failure) = tokio::select! {
                // A reload stops discovery mid-listing: what was listed before stands.
                _ = stop.cancelled() => break,
                r = discovery => r,
            };
            if failure.is_some() {
                // A list failed (kept from before, if there was one): ask again shortly.
                let (tx, name, stop) = (tx.clone(), name.clone(), stop.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(DISCOVERY_RETRY) => { let _ = tx.send(name).await; }
                    }
                });
            }
            Some(found)
        } else {
            None
        };
        let changed = match fresh {
            Some(l) => lists.insert(name.clone(), l.clone()).is_none_or(|old| !same(&old, &l)),
            None => lists.remove(&name).is_some(),
        };
        if changed {
            if let Some(l) = lists.get(&name) {
                known.insert(name.clone(), l.clone());
            }
            let names: Vec<Arc<str>> = backends.iter().map(|(n, _)| n).collect();
            let everything: Vec<&BackendLists> =
                names.iter().filter_map(|n| known.get(n)).collect();
            live.known.store(Arc::new(super::build_from(&aggregation, &everything)));
            let ordered: Vec<BackendLists> =
                names.iter().filter_map(|n| lists.get(n).cloned()).collect();
            live.publish(build(&aggregation, &ordered), ordered);
        }
        live.discovered.send_replace(lists.len());
    }
    Seed { lists, known, ready }
}

pub(super) fn same(a: &BackendLists, b: &BackendLists) -> bool {
    a.tools == b.tools
        && a.resources == b.resources
        && a.resource_templates == b.resource_templates
        && a.prompts == b.prompts
}

/// How soon a backend whose lists could not all be fetched is asked again.
pub(super) const DISCOVERY_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// Fetches every list a backend advertises, as `Caller::System`. A list that fails keeps its
/// previous value (or is empty) and makes the result incomplete.
pub async fn discover(
    name: &Arc<str>,
    backend: &crate::backend::Backend,
    previous: Option<&BackendLists>,
) -> (BackendLists, bool) {
    let (lists, failure) = discover_as(&Caller::System, name, backend, previous).await;
    (lists, failure.is_none())
}

/// Waits for all backends' first connection attempts, bounded by `timeout`, then until every
/// ready shared backend's lists are in the catalog (user-bound ones are discovered per
/// principal, later). Used at startup so the first clients see a full catalog.
pub async fn settle(backends: &Backends, live: &LiveCatalog, timeout: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    let first = futures::stream::iter(backends.iter())
        .for_each_concurrent(None, |(_, b)| async move { b.first_attempt().await });
    let _ = tokio::time::timeout_at(deadline, first).await;
    let mut discovered = live.discovered.subscribe();
    let ready = backends
        .iter()
        .filter(|(n, b)| b.state() == State::Ready && !live.is_user_bound(n))
        .count();
    let _ = tokio::time::timeout_at(deadline, discovered.wait_for(|n| *n >= ready)).await;
}
