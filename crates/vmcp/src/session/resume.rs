//! The edge's session lookup: [`super::Sessions::get`] plus what a lookup leaves to the gateway:
//! a session restored from its record gets its resource subscriptions back at this replica's
//! backend sessions, and one whose subscriptions changed on another replica gets them changed
//! here, with the caller of the request that brought the news; a session ended on another
//! replica gets its backend sessions here ended.
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
            let uris = s.subscriptions();
            change(gw, caller, &s, &uris, true).await;
            Ok(s)
        }
        Got::Updated { session, added, removed } => {
            change(gw, caller, &session, &removed, false).await;
            change(gw, caller, &session, &added, true).await;
            Ok(session)
        }
        Got::Gone(s) => {
            end_elsewhere_ended(gw.clone(), s);
            Err(Lookup::NotFound)
        }
    }
}

/// Subscribes (`on`) or unsubscribes `uris` at their backends for this replica's copy of
/// `session`, as the client's own subscribe would. A refusal is logged and the session's set is
/// left as the record has it: the client asked for it, and another replica may deliver its
/// updates.
async fn change(gw: &Gateway, caller: &Caller, session: &Session, uris: &[String], on: bool) {
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
            let r = gw.subscriptions.change(caller, Some(session.key), target, uri, on).await;
            if let Err(e) = r {
                tracing::warn!(
                    session = session.key,
                    backend = %name,
                    subscribe = on,
                    error = %e.message,
                    "could not carry a subscription change over from the session store"
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
