//! Resource subscriptions, kept by the gateway across clients and backend kinds.
//!
//! Where a subscription lives at the backend depends on who shares the backend session the
//! request runs on ([`SessionScope`]):
//! - the client session's own (a Legacy HTTP backend serving a Legacy client, a `perSession`
//!   stdio child): the client's subscribe/unsubscribe go there as they are;
//! - a principal's, or everyone's (a Legacy HTTP backend serving Modern clients, `perPrincipal`
//!   or `shared` stdio children, SSE): every subscriber's `resources/subscribe` goes to the
//!   backend with that subscriber's own credentials, so the backend authorises each one, and
//!   counts only once it succeeded; `resources/unsubscribe` goes when the last subscriber of that
//!   session leaves. Counts are kept per (backend, principal, URI) for a principal's session and
//!   per (backend, URI) for a shared one, so one principal's leaving never unsubscribes another's
//!   session;
//! - a Modern backend has no `resources/subscribe`: its URIs ride on a `subscriptions/listen`
//!   stream, reference counted: the gateway's own, or, when the backend's credentials are the
//!   user's, a stream of the subscriber's principal opened with its credentials (so the backend
//!   authorises each principal, and updates reach only that principal).
//!
//! Changes to one (backend, principal, URI) run one at a time: a subscribe racing the last
//! unsubscribe of the same key would otherwise reach the backend in either order and leave it
//! unsubscribed while the gateway counts a subscriber.
//!
//! Invariants:
//! - backend calls made here carry the caller of the request that caused them, or
//!   `Caller::Teardown(binding)` when a session ends;
//! - a subscribe the backend refused leaves no count behind (the caller rolls back its session's
//!   record too);
//! - every backend call has a deadline ([`Target::timeout`]): these calls sit on the DELETE,
//!   idle-expiry and shutdown paths, where one silent backend must not stall the rest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::auth::{Binding, Caller};
use crate::backend::{Backend, CallContext, ListenError, Reply, SessionScope};
use crate::protocol::ErrorObject;
use crate::protocol::jsonrpc::{code, raw};

/// The backend a subscription change goes to, and how long to wait for it.
pub struct Target<'a> {
    /// The backend's name.
    pub name: &'a Arc<str>,
    /// The backend.
    pub backend: &'a Backend,
    /// Longest wait for its answer: the backend's timeout for a client's request, the teardown
    /// timeout when a session or stream ends.
    pub timeout: std::time::Duration,
}

/// Subscriber counts of backend sessions several clients share.
#[derive(Default)]
pub struct Subscriptions {
    counts: Mutex<HashMap<Key, usize>>,
    /// One turn per key with a change in progress; entries leave with their last holder.
    turns: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

/// The right to change one key's subscription; the next change of that key waits for it.
struct Turn<'a> {
    owner: &'a Subscriptions,
    key: Key,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut turns = self.owner.turns.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map holds it now: no one waits for this key.
        if turns.get(&self.key).is_some_and(|t| Arc::strong_count(t) == 1) {
            turns.remove(&self.key);
        }
    }
}

/// (backend, the principal whose session it is or `None` for a shared one, URI).
type Key = (Arc<str>, Option<Binding>, String);

impl Subscriptions {
    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<Key, usize>> {
        // Each critical section is one map operation, so a poisoned lock is still sound.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the turn of `key`. The map holds only keys being changed right now, so it is
    /// bounded by the requests in flight.
    async fn turn(&self, key: &Key) -> Turn<'_> {
        let lock = {
            let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
            turns.entry(key.clone()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        Turn { owner: self, key: key.clone(), guard: Some(guard) }
    }

    /// One subscriber more.
    fn add(&self, key: Key) -> usize {
        let mut counts = self.counts();
        let n = counts.entry(key).or_default();
        *n += 1;
        *n
    }

    /// One subscriber less; returns whether it was the last one.
    fn remove(&self, key: &Key) -> bool {
        let mut counts = self.counts();
        match counts.get_mut(key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                counts.remove(key);
                true
            }
            None => false,
        }
    }

    /// One subscriber more (`on`) or less for `uri` at the target backend. `session` is the
    /// Legacy client session asking, if any.
    pub async fn change(
        &self,
        caller: &Caller,
        session: Option<u64>,
        target: Target<'_>,
        uri: &str,
        on: bool,
    ) -> Result<(), ErrorObject> {
        let Target { name, backend, timeout } = target;
        let principal = match backend.session_scope(session) {
            SessionScope::Client => return send(caller, session, backend, uri, on, timeout).await,
            SessionScope::Stateless => {
                return self.listen(caller, Target { name, backend, timeout }, uri, on).await;
            }
            SessionScope::Principal => Some(caller.binding()),
            SessionScope::Shared => None,
        };
        let key = (name.clone(), principal, uri.to_owned());
        let _turn = self.turn(&key).await;
        if on {
            // Every subscriber asks with its own credentials; the backend treats a repeated
            // subscribe on one session as one subscription.
            send(caller, session, backend, uri, true, timeout).await?;
            self.add(key);
            Ok(())
        } else if self.remove(&key) {
            send(caller, session, backend, uri, false, timeout).await
        } else {
            Ok(())
        }
    }
}

impl Subscriptions {
    /// A Modern backend: the URI goes on (or off) a listen stream when its first subscriber
    /// comes (or its last leaves). A principal's own stream answers whether the backend
    /// accepted it; a refusal leaves no count.
    async fn listen(
        &self,
        caller: &Caller,
        target: Target<'_>,
        uri: &str,
        on: bool,
    ) -> Result<(), ErrorObject> {
        let Target { name, backend, timeout } = target;
        let principal = backend.user_bound().then(|| caller.binding());
        let key = (name.clone(), principal, uri.to_owned());
        let _turn = self.turn(&key).await;
        let first_or_last = if on { self.add(key.clone()) == 1 } else { self.remove(&key) };
        if !first_or_last {
            return Ok(());
        }
        let change = backend.listen_resource(caller, uri, on);
        let outcome = match tokio::time::timeout(timeout, change).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(ListenError::Refused(e))) => Err(e),
            Ok(Err(ListenError::Backend(e))) => Err(super::forward::backend_error(&e)),
            Err(_) => Err(ErrorObject::new(
                code::BACKEND_TIMEOUT,
                format!("backend {name} did not acknowledge the subscription within {timeout:?}"),
            )),
        };
        if on && outcome.is_err() {
            self.remove(&key);
        }
        // Leaving always succeeds for the client: a URI nobody wants is filtered at delivery.
        if on { outcome } else { Ok(()) }
    }
}

async fn send(
    caller: &Caller,
    session: Option<u64>,
    backend: &Backend,
    uri: &str,
    on: bool,
    timeout: std::time::Duration,
) -> Result<(), ErrorObject> {
    let method = if on { "resources/subscribe" } else { "resources/unsubscribe" };
    let mut ctx = CallContext::detached();
    ctx.session = session;
    let params = raw(&serde_json::json!({ "uri": uri }));
    // Dropping the request at the deadline cancels it at the backend, like any timed-out call.
    match tokio::time::timeout(timeout, backend.request(caller, method, Some(params), ctx)).await {
        Ok(Ok(Reply::Result(_))) => Ok(()),
        Ok(Ok(Reply::Error(e))) => Err(e),
        Ok(Err(e)) => Err(super::forward::backend_error(&e)),
        Err(_) => Err(ErrorObject::new(
            code::BACKEND_TIMEOUT,
            format!("the backend did not answer {method} within {timeout:?}"),
        )),
    }
}
