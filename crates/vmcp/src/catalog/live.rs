//! The live catalog: discovery from backends, rebuilt and swapped whole when anything changes.
//!
//! A discovery task watches every backend. When one becomes ready or reports `list_changed`, its
//! lists are fetched again (as `Caller::System`); when one goes down, its lists are dropped. Each
//! time, a new [`Catalog`] is built from all current lists and published atomically; readers never
//! lock. Clients are told which kinds of list changed.
//!
//! Invariant: a backend's failure only removes that backend's items.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use futures::StreamExt;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{BackendLists, Catalog, build};
use crate::auth::Caller;
use crate::backend::registry::Backends;
use crate::backend::{Backend, BackendEvent, CallContext, Reply, State};
use crate::config::AggregationConfig;
use crate::protocol::jsonrpc::raw;

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

/// The published catalog and its change feed.
pub struct LiveCatalog {
    current: ArcSwap<Catalog>,
    changes: broadcast::Sender<Changed>,
    /// How many backends currently have their lists in the catalog.
    discovered: tokio::sync::watch::Sender<usize>,
}

impl Default for LiveCatalog {
    fn default() -> Self {
        Self {
            current: ArcSwap::from_pointee(Catalog::empty()),
            changes: broadcast::channel(64).0,
            discovered: tokio::sync::watch::channel(0).0,
        }
    }
}

impl LiveCatalog {
    /// The current catalog (a cheap snapshot; hold it for one request).
    pub fn load(&self) -> Arc<Catalog> {
        self.current.load_full()
    }

    /// Subscribes to change notices.
    pub fn subscribe(&self) -> broadcast::Receiver<Changed> {
        self.changes.subscribe()
    }

    fn publish(&self, next: Catalog) {
        let prev = self.current.load();
        let changed = Changed {
            tools: prev.tools() != next.tools(),
            resources: prev.resources() != next.resources()
                || prev.resource_templates() != next.resource_templates(),
            prompts: prev.prompts() != next.prompts(),
        };
        for p in next.problems() {
            tracing::warn!(problem = %p, "catalog");
        }
        self.current.store(Arc::new(next));
        if changed != Changed::default() {
            let _ = self.changes.send(changed);
        }
    }
}

/// Runs discovery until `stop` fires.
pub async fn run_discovery(
    backends: Arc<Backends>,
    aggregation: AggregationConfig,
    live: Arc<LiveCatalog>,
    mut events: broadcast::Receiver<BackendEvent>,
    stop: CancellationToken,
) {
    let mut lists: HashMap<Arc<str>, BackendLists> = HashMap::new();
    // One stream of "this backend may have changed" signals: state changes and list_changed.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Arc<str>>(256);
    for (name, backend) in backends.iter() {
        let (name, backend, tx, stop) = (name.clone(), backend.clone(), tx.clone(), stop.clone());
        tokio::spawn(async move {
            let mut watch = backend.watch();
            loop {
                let _ = tx.send(name.clone()).await;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = watch.changed() => if r.is_err() { return },
                }
            }
        });
    }
    loop {
        let name = tokio::select! {
            _ = stop.cancelled() => return,
            n = rx.recv() => match n { Some(n) => n, None => return },
            e = events.recv() => match e {
                Ok(e) if e.notification.method.ends_with("/list_changed") => e.backend,
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        let Some(backend) = backends.get(&name) else { continue };
        let fresh = if backend.state() == State::Ready {
            let (found, complete) = discover(&name, backend, lists.get(&name)).await;
            if !complete {
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
            let ordered: Vec<BackendLists> =
                backends.iter().filter_map(|(n, _)| lists.get(n).cloned()).collect();
            live.publish(build(&aggregation, &ordered));
        }
        live.discovered.send_replace(lists.len());
    }
}

fn same(a: &BackendLists, b: &BackendLists) -> bool {
    a.tools == b.tools
        && a.resources == b.resources
        && a.resource_templates == b.resource_templates
        && a.prompts == b.prompts
}

/// How soon a backend whose lists could not all be fetched is asked again.
const DISCOVERY_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// Fetches every list a backend advertises. A list that fails keeps its previous value (or is
/// empty) and makes the result incomplete.
pub async fn discover(
    name: &Arc<str>,
    backend: &Backend,
    previous: Option<&BackendLists>,
) -> (BackendLists, bool) {
    let caps = backend.info().map(|i| i.capabilities).unwrap_or(Value::Null);
    let has = |k: &str| caps.get(k).is_some_and(|v| !v.is_null());
    let (tools, resources, templates, prompts) = futures::join!(
        list_if(has("tools"), name, backend, "tools/list", "tools"),
        list_if(has("resources"), name, backend, "resources/list", "resources"),
        list_if(has("resources"), name, backend, "resources/templates/list", "resourceTemplates"),
        list_if(has("prompts"), name, backend, "prompts/list", "prompts"),
    );
    let complete =
        tools.is_some() && resources.is_some() && templates.is_some() && prompts.is_some();
    let keep = |fresh: Option<Vec<Value>>, old: fn(&BackendLists) -> &Vec<Value>| {
        fresh.unwrap_or_else(|| previous.map(old).cloned().unwrap_or_default())
    };
    let lists = BackendLists {
        backend: name.clone(),
        tools: keep(tools, |l| &l.tools),
        resources: keep(resources, |l| &l.resources),
        resource_templates: keep(templates, |l| &l.resource_templates),
        prompts: keep(prompts, |l| &l.prompts),
    };
    (lists, complete)
}

/// One list, or `None` when fetching it failed (logged).
async fn list_if(
    enabled: bool,
    name: &str,
    backend: &Backend,
    method: &str,
    key: &str,
) -> Option<Vec<Value>> {
    if !enabled {
        return Some(Vec::new());
    }
    match list_all(backend, method, key).await {
        Ok(items) => Some(items),
        Err(e) => {
            tracing::warn!(backend = name, method, error = %e, "discovery failed");
            None
        }
    }
}

/// Follows `nextCursor` through every page (bounded, against a backend that never stops).
async fn list_all(backend: &Backend, method: &str, key: &str) -> Result<Vec<Value>, String> {
    const MAX_PAGES: usize = 100;
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let params: Option<Box<RawValue>> =
            cursor.as_ref().map(|c| raw(&serde_json::json!({ "cursor": c })));
        let reply = backend
            .request(&Caller::System, method, params, CallContext::detached())
            .await
            .map_err(|e| e.to_string())?;
        let result = match reply {
            Reply::Result(r) => r,
            Reply::Error(e) => return Err(format!("{} ({})", e.message, e.code)),
        };
        let mut page: serde_json::Map<String, Value> = serde_json::from_str(result.get())
            .map_err(|e| format!("unreadable {method} result: {e}"))?;
        if let Some(Value::Array(list)) = page.remove(key) {
            items.extend(list);
        }
        match page.remove("nextCursor") {
            Some(Value::String(c)) if !c.is_empty() => cursor = Some(c),
            _ => return Ok(items),
        }
    }
    Ok(items)
}

/// Waits for all backends' first connection attempts, bounded by `timeout`, then until every
/// ready backend's lists are in the catalog. Used at startup so the first clients see a full
/// catalog.
pub async fn settle(backends: &Backends, live: &LiveCatalog, timeout: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    let first = futures::stream::iter(backends.iter())
        .for_each_concurrent(None, |(_, b)| async move { b.first_attempt().await });
    let _ = tokio::time::timeout_at(deadline, first).await;
    let mut discovered = live.discovered.subscribe();
    let ready = backends.iter().filter(|(_, b)| b.state() == State::Ready).count();
    let _ = tokio::time::timeout_at(deadline, discovered.wait_for(|n| *n >= ready)).await;
}
