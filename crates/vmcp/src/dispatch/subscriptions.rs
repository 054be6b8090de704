//! Resource subscriptions, kept by the gateway across clients and backend kinds.
//!
//! How a subscription reaches the backend depends on the backend:
//! - a Legacy HTTP backend serving a Legacy client gives that client its own backend session, so
//!   the client's subscribe/unsubscribe go there as they are;
//! - a backend session shared by many clients (stdio, SSE, or a Legacy HTTP backend serving Modern
//!   clients) is subscribed when the first subscriber arrives and unsubscribed when the last one
//!   leaves (reference counts per backend and URI);
//! - a Modern backend has no `resources/subscribe`: its URIs ride on the gateway's
//!   `subscriptions/listen` stream to it, also reference counted.
//!
//! Invariants:
//! - backend calls made here carry the caller of the request that caused them, or
//!   `Caller::Teardown(binding)` when a session ends;
//! - every backend call has a deadline ([`Target::timeout`]): these calls sit on the DELETE,
//!   idle-expiry and shutdown paths, where one silent backend must not stall the rest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::auth::Caller;
use crate::backend::{Backend, CallContext, Reply};
use crate::protocol::jsonrpc::{code, raw};
use crate::protocol::{Era, ErrorObject};

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

/// Subscriber counts for shared backend subscriptions.
#[derive(Default)]
pub struct Subscriptions {
    counts: Mutex<HashMap<(Arc<str>, String), usize>>,
}

enum Regime {
    PerClient,
    Shared,
    Listen,
}

fn regime(backend: &Backend, session: Option<u64>) -> Regime {
    match (backend.transport_name(), backend.info().map(|i| i.era)) {
        ("streamable-http", Some(Era::Modern)) => Regime::Listen,
        ("streamable-http", _) if session.is_some() => Regime::PerClient,
        _ => Regime::Shared,
    }
}

impl Subscriptions {
    /// Changes the count; returns whether the backend must be told (first in, last out).
    fn step(&self, name: &Arc<str>, uri: &str, on: bool) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let key = (name.clone(), uri.to_owned());
        let n = counts.entry(key.clone()).or_default();
        if on {
            *n += 1;
            *n == 1
        } else {
            *n = n.saturating_sub(1);
            let last = *n == 0;
            if last {
                counts.remove(&key);
            }
            last
        }
    }

    /// One subscriber more (`on`) or less for `uri` at backend `name`. `session` is the Legacy
    /// client session asking, if any.
    pub async fn change(
        &self,
        caller: &Caller,
        session: Option<u64>,
        target: Target<'_>,
        uri: &str,
        on: bool,
    ) -> Result<(), ErrorObject> {
        let Target { name, backend, timeout } = target;
        match regime(backend, session) {
            Regime::PerClient => send(caller, session, backend, uri, on, timeout).await,
            Regime::Shared => {
                if self.step(name, uri, on) {
                    send(caller, None, backend, uri, on, timeout).await
                } else {
                    Ok(())
                }
            }
            Regime::Listen => {
                if self.step(name, uri, on) {
                    backend.listen_resource(uri, on);
                }
                Ok(())
            }
        }
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
