//! The edge's session lookup: [`super::Sessions::get`] plus what a lookup leaves to the gateway: a
//! session restored from its record gets its resource subscriptions back at the backends, with
//! the caller of the request that restored it; a session ended on another replica gets its
//! backend sessions here ended.
//!
//! Invariant: backend calls here carry the caller of this request (re-subscribing) or
//! `Caller::Teardown` (ending), never a caller kept from earlier; each has a deadline.

use std::sync::Arc;

use super::{Got, Lookup, Session};
use crate::auth::Caller;
use crate::dispatch::subscriptions::Target;
use crate::gateway::Gateway;

/// The session `id` for this request's `caller` (see [`super::Sessions::get`]), with a restored one's
/// subscriptions re-established and an ended one's backend sessions being ended.
pub async fn resume(gw: &Arc<Gateway>, caller: &Caller, id: &str) -> Result<Arc<Session>, Lookup> {
    match gw.sessions.get(id, &caller.binding()).await? {
        Got::Live(s) => Ok(s),
        Got::Restored(s) => {
            resubscribe(gw, caller, &s).await;
            Ok(s)
        }
        Got::Gone(s) => {
            end_elsewhere_ended(gw.clone(), s);
            Err(Lookup::NotFound)
        }
    }
}

/// Subscribes the restored session's URIs at their backends (its backend sessions here are new).
/// A refusal is logged and the URI stays in the session's set: the client asked for it, and
/// another replica may deliver its updates.
async fn resubscribe(gw: &Gateway, caller: &Caller, session: &Session) {
    let uris = session.subscriptions();
    if uris.is_empty() {
        return;
    }
    let catalog = gw.catalog.for_caller(&gw.backends, caller).await;
    let changes = uris.iter().filter_map(|uri| {
        let name = catalog.resource(uri)?.clone();
        let backend = gw.backends.get(&name)?;
        Some(async move {
            let target =
                Target { name: &name, backend: &backend, timeout: gw.backends.timeout(&name) };
            let r = gw.subscriptions.change(caller, Some(session.key), target, uri, true).await;
            if let Err(e) = r {
                tracing::warn!(
                    session = session.key,
                    backend = %name,
                    error = %e.message,
                    "could not restore a subscription of a restored session"
                );
            }
        })
    });
    futures::future::join_all(changes).await;
}

/// Ends, in the background and within `teardownTimeout`, the backend sessions of a session
/// that ended on another replica.
fn end_elsewhere_ended(gw: Arc<Gateway>, session: Arc<Session>) {
    tokio::spawn(async move {
        let deadline = gw.sessions.limits().teardown_timeout;
        if tokio::time::timeout(deadline, gw.end_backend_sessions(&session)).await.is_err() {
            tracing::warn!(
                session = session.key,
                "backend teardown did not finish within {deadline:?}"
            );
        }
    });
}
