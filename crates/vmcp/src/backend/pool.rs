//! Connections of one message-stream backend (stdio children, SSE streams) dedicated to one
//! principal (`isolation: perPrincipal`) or one client session (`perSession`), started on first
//! use and stopped when idle. The transport supplies a [`Connector`] that runs one connection;
//! [`Isolated`] decides which connection a request uses.
//!
//! Invariants:
//! - A connection serves only requests whose [`Owner`] is its key, so everything it sends belongs
//!   to that owner; its mux knows the owner and tags backend-level events with the client session.
//! - At most `max` connections are starting or serving; when full, the least recently used idle
//!   one (no request in flight) is stopped to make room, and if none is idle the request fails at
//!   once with [`BackendError::Unavailable`] naming the limit (no queueing).
//! - A connection with no request in flight for `idle` is stopped; one that ends is forgotten at
//!   once, and the next request for its owner starts a new one.
//! - Each key starts one connection at a time: concurrent first requests wait for the same start,
//!   which runs in its own task so a caller that gives up cannot orphan it.
//! - [`Pool::shutdown`] stops every connection and returns once each has cleaned up (a child's
//!   process group is gone).
//! - The slot map sits behind a `std::sync::Mutex` held for map operations only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use futures::future::BoxFuture;

use crate::auth::Caller;
use crate::backend::BackendError;
use crate::backend::mux::{Mux, Owner, Routing};
use crate::config::Isolation;

/// Told the mux once a connection is usable.
pub type OnReady<'a> = Box<dyn FnOnce(&Arc<Mux>) + Send + 'a>;
/// Told why a connection ended (`None`: stopped).
pub type OnGone<'a> = Box<dyn FnOnce(Option<&str>) + Send + 'a>;

/// What one run of a pooled connection gets.
pub struct Run<'a> {
    /// How its unsolicited messages are attributed (its owner).
    pub routing: Routing,
    /// Ends the run.
    pub stop: &'a CancellationToken,
    /// Where a child's pid is published (0 when none); unused by network connections.
    pub pid: &'a AtomicU32,
    /// Called once the connection is usable.
    pub ready: OnReady<'a>,
    /// Called as soon as the run ends, with why (`None`: stopped), before its mux is closed.
    pub gone: OnGone<'a>,
}

/// Runs one connection of a backend, start to clean end.
pub trait Connector: Send + Sync + 'static {
    /// Connects, hands the mux to `run.ready`, serves until the connection ends or `run.stop`
    /// fires, tells `run.gone`, cleans up.
    fn run<'a>(&'a self, run: Run<'a>) -> BoxFuture<'a, ()>;
}

/// How far a child's start has got.
#[derive(Clone)]
enum Start {
    Starting,
    Ready(Arc<Mux>),
    Failed(String),
}

/// One owner's child.
struct Slot {
    state: watch::Sender<Start>,
    stop: CancellationToken,
    pid: AtomicU32,
    /// Milliseconds since the pool's epoch at the last request.
    last_used: AtomicU64,
}

impl Slot {
    fn mux(&self) -> Option<Arc<Mux>> {
        match &*self.state.borrow() {
            Start::Ready(mux) => Some(mux.clone()),
            _ => None,
        }
    }

    /// Whether it can be stopped without failing anyone: started and nothing in flight.
    fn idle(&self) -> bool {
        self.mux().is_some_and(|m| m.in_flight() == 0)
    }
}

struct Inner {
    backend: Arc<str>,
    connector: Arc<dyn Connector>,
    /// The config key of `max`, for the error when it is hit.
    max_key: &'static str,
    max: usize,
    unroutable: Arc<AtomicU64>,
    stop: CancellationToken,
    tracker: TaskTracker,
    slots: Mutex<HashMap<Owner, Arc<Slot>>>,
    epoch: Instant,
}

impl Inner {
    fn slots(&self) -> MutexGuard<'_, HashMap<Owner, Arc<Slot>>> {
        // Every critical section is a single map operation, so a poisoned lock is still sound.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Drops `slot` from the map if it is still the one for `owner`.
    fn forget(&self, owner: &Owner, slot: &Arc<Slot>) {
        let mut slots = self.slots();
        if slots.get(owner).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(owner);
        }
    }

    fn unavailable(&self, reason: String) -> BackendError {
        BackendError::Unavailable { backend: self.backend.to_string(), reason }
    }
}

/// The dedicated children of one stdio backend.
pub struct Pool {
    inner: Arc<Inner>,
}

impl Pool {
    /// A pool of `backend`'s connections run by `connector`, holding at most `max` (the config key
    /// `max_key`) and stopping those idle for `idle`. `stop` ends every connection (the
    /// backend's shutdown).
    pub fn new(
        backend: Arc<str>,
        connector: Arc<dyn Connector>,
        (max_key, max): (&'static str, usize),
        idle: Duration,
        unroutable: Arc<AtomicU64>,
        stop: CancellationToken,
    ) -> Self {
        let inner = Arc::new(Inner {
            backend,
            connector,
            max_key,
            max: max.max(1),
            unroutable,
            stop,
            tracker: TaskTracker::new(),
            slots: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        });
        inner.tracker.spawn(reap(Arc::downgrade(&inner), inner.stop.clone(), idle));
        Self { inner }
    }

    /// The mux of `owner`'s child, starting one if it has none.
    pub async fn acquire(&self, owner: &Owner) -> Result<Arc<Mux>, BackendError> {
        let inner = &self.inner;
        if inner.stop.is_cancelled() {
            return Err(inner.unavailable("shut down".into()));
        }
        let slot = {
            let mut slots = inner.slots();
            match slots.get(owner) {
                Some(slot) => slot.clone(),
                None => {
                    if slots.len() >= inner.max && !evict_one(&mut slots) {
                        return Err(inner.unavailable(format!(
                            "all {} client connections are busy ({})",
                            inner.max, inner.max_key
                        )));
                    }
                    let slot = Arc::new(Slot {
                        state: watch::channel(Start::Starting).0,
                        stop: inner.stop.child_token(),
                        pid: AtomicU32::new(0),
                        last_used: AtomicU64::new(inner.now_ms()),
                    });
                    slots.insert(owner.clone(), slot.clone());
                    inner.tracker.spawn(run(inner.clone(), owner.clone(), slot.clone()));
                    slot
                }
            }
        };
        slot.last_used.store(inner.now_ms(), Ordering::Relaxed);
        let mut rx = slot.state.subscribe();
        let started = rx.wait_for(|s| !matches!(s, Start::Starting)).await.map(|s| s.clone());
        match started {
            Ok(Start::Ready(mux)) => Ok(mux),
            Ok(Start::Failed(reason)) => {
                Err(inner.unavailable(format!("starting a connection for this client: {reason}")))
            }
            // The run ended without a word: only on shutdown.
            Ok(Start::Starting) | Err(_) => Err(inner.unavailable("shut down".into())),
        }
    }

    /// The mux of `owner`'s running child, if it has one (answers and notifications go only to
    /// a child that exists; they never start one).
    pub fn existing(&self, owner: &Owner) -> Option<Arc<Mux>> {
        self.inner.slots().get(owner).and_then(|s| s.mux())
    }

    /// Stops the children of every owner `matches` picks (a client session that ended).
    pub fn end(&self, matches: impl Fn(&Owner) -> bool) {
        let ended: Vec<Arc<Slot>> = {
            let mut slots = self.inner.slots();
            let owners: Vec<Owner> = slots.keys().filter(|o| matches(o)).cloned().collect();
            owners.iter().filter_map(|o| slots.remove(o)).collect()
        };
        for slot in ended {
            slot.stop.cancel();
        }
    }

    /// Connections starting or serving.
    pub fn count(&self) -> usize {
        self.inner.slots().len()
    }

    /// The pids (process group ids) of the running children.
    pub fn pids(&self) -> Vec<u32> {
        let slots = self.inner.slots();
        slots.values().map(|s| s.pid.load(Ordering::Relaxed)).filter(|&p| p != 0).collect()
    }

    /// Requests in flight on all children.
    pub fn in_flight(&self) -> usize {
        self.inner.slots().values().filter_map(|s| s.mux()).map(|m| m.in_flight()).sum()
    }

    /// Stops every child and waits until their process groups are gone.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }
}

/// Stops the least recently used idle child to make room; `false` when none is idle.
fn evict_one(slots: &mut HashMap<Owner, Arc<Slot>>) -> bool {
    let victim = slots
        .iter()
        .filter(|(_, s)| s.idle())
        .min_by_key(|(_, s)| s.last_used.load(Ordering::Relaxed))
        .map(|(o, _)| o.clone());
    match victim.and_then(|o| slots.remove(&o)) {
        Some(slot) => {
            slot.stop.cancel();
            true
        }
        None => false,
    }
}

/// One connection's life: started for `owner`, gone from the map the moment it ends.
async fn run(inner: Arc<Inner>, owner: Owner, slot: Arc<Slot>) {
    let routing = Routing { owner: Some(owner.clone()), unroutable: inner.unroutable.clone() };
    let ready = |mux: &Arc<Mux>| {
        tracing::info!(
            backend = %inner.backend,
            pid = slot.pid.load(Ordering::Relaxed),
            session = ?owner.session,
            "connection started for a client"
        );
        slot.state.send_replace(Start::Ready(mux.clone()));
    };
    let gone = |why: Option<&str>| {
        inner.forget(&owner, &slot);
        if let Some(reason) = why {
            tracing::info!(backend = %inner.backend, %reason, "client connection ended");
        }
        // Also releases the mux of a run that was ready.
        slot.state.send_replace(Start::Failed(why.unwrap_or("stopped").to_owned()));
    };
    let r = Run {
        routing,
        stop: &slot.stop,
        pid: &slot.pid,
        ready: Box::new(ready),
        gone: Box::new(gone),
    };
    inner.connector.run(r).await;
}

/// Stops children idle for longer than `idle`, checking a few times per period.
async fn reap(inner: std::sync::Weak<Inner>, stop: CancellationToken, idle: Duration) {
    let every = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        let now = inner.now_ms();
        let idle_ms = idle.as_millis() as u64;
        let expired: Vec<Arc<Slot>> = {
            let mut slots = inner.slots();
            let owners: Vec<Owner> = slots
                .iter()
                .filter(|(_, s)| {
                    s.idle() && now.saturating_sub(s.last_used.load(Ordering::Relaxed)) >= idle_ms
                })
                .map(|(o, _)| o.clone())
                .collect();
            owners.iter().filter_map(|o| slots.remove(o)).collect()
        };
        for slot in expired {
            tracing::debug!(backend = %inner.backend, "idle client connection stopped");
            slot.stop.cancel();
        }
    }
}

/// A backend's isolation mode and, unless it is `shared`, its pool of dedicated connections:
/// which connection each request, answer and notification uses.
pub struct Isolated {
    mode: Isolation,
    pool: Option<Pool>,
}

impl Isolated {
    /// `mode`, with `pool()` building the pool when the mode needs one.
    pub fn new(mode: Isolation, pool: impl FnOnce() -> Pool) -> Self {
        let pool = (mode != Isolation::Shared).then(pool);
        Self { mode, pool }
    }

    /// The mode.
    pub fn mode(&self) -> Isolation {
        self.mode
    }

    /// Whose connection a request by `caller` for client session `session` runs on; `None`: the
    /// shared one (the gateway's own work always is).
    fn owner(&self, caller: &Caller, session: Option<u64>) -> Option<Owner> {
        match (self.mode, caller) {
            (_, Caller::System) | (Isolation::Shared, _) => None,
            (Isolation::PerPrincipal, _) => Some(Owner::of(caller, None)),
            (Isolation::PerSession, _) => Some(Owner::of(caller, session)),
        }
    }

    /// The connection a request runs on: `shared` (the gateway's own, which must be up: its being
    /// down means the backend is down), or its owner's (started on first use).
    pub async fn mux_for(
        &self,
        shared: Result<Arc<Mux>, BackendError>,
        caller: &Caller,
        session: Option<u64>,
    ) -> Result<Arc<Mux>, BackendError> {
        let shared = shared?;
        match (&self.pool, self.owner(caller, session)) {
            (Some(pool), Some(owner)) => pool.acquire(&owner).await,
            _ => Ok(shared),
        }
    }

    /// The connection an answer or notification for `caller` goes to: the one its requests run
    /// on, if it is up (`None` when it is not: nothing is started for it).
    pub fn mux_existing(
        &self,
        shared: impl FnOnce() -> Result<Arc<Mux>, BackendError>,
        caller: &Caller,
        session: Option<u64>,
    ) -> Result<Option<Arc<Mux>>, BackendError> {
        match (&self.pool, self.owner(caller, session)) {
            (Some(pool), Some(owner)) => Ok(pool.existing(&owner)),
            _ => shared().map(Some),
        }
    }

    /// Stops the connection dedicated to client session `session` (`perSession`); a principal's
    /// (`perPrincipal`) lives on until idle.
    pub fn end_session(&self, session: u64) {
        if let (Some(pool), Isolation::PerSession) = (&self.pool, self.mode) {
            pool.end(|o| o.session == Some(session));
        }
    }

    /// The mode, dedicated connections starting or serving, and requests in flight on them and
    /// on `shared` (the gateway's own connection).
    pub fn report(&self, shared: Option<&Arc<Mux>>) -> (Isolation, usize, usize) {
        let (count, in_flight) = self.pool.as_ref().map_or((0, 0), |p| (p.count(), p.in_flight()));
        (self.mode, count, in_flight + shared.map_or(0, |m| m.in_flight()))
    }

    /// The pids of dedicated children.
    pub fn pids(&self) -> Vec<u32> {
        self.pool.as_ref().map(Pool::pids).unwrap_or_default()
    }

    /// Stops every dedicated connection and waits for their cleanup.
    pub async fn shutdown(&self) {
        if let Some(pool) = &self.pool {
            pool.shutdown().await;
        }
    }
}
