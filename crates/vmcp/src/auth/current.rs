//! The freshest verified identity of each principal, for work that has no client request behind
//! it (session teardown): it resolves the principal's credentials as they are *now*, never as
//! they were when a session was opened.
//!
//! Invariant: an entry is replaced by every newer request of the same principal and dropped once
//! its token has expired; nothing here is keyed by session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::{Binding, Caller, Identity};

/// Latest identity per principal.
#[derive(Default)]
pub struct CurrentIdentities {
    map: Mutex<HashMap<Binding, Arc<Identity>>>,
}

impl CurrentIdentities {
    /// Records the identity of an authenticated request (the newest wins).
    pub fn record(&self, identity: &Arc<Identity>) {
        let binding = Binding::Principal {
            issuer: identity.issuer.clone(),
            subject: identity.subject.clone(),
        };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let newer = map.get(&binding).is_none_or(|old| identity.expires_at >= old.expires_at);
        if newer {
            map.insert(binding, identity.clone());
        }
        // Keep the map from growing with principals who left.
        if map.len() > 1024 {
            let now = SystemTime::now();
            map.retain(|_, id| id.expires_at.is_none_or(|e| e > now));
        }
    }

    /// The identity whose credentials a backend request by `caller` should carry: the request's
    /// own, or for teardown the principal's latest unexpired one.
    pub fn resolve(&self, caller: &Caller) -> Option<Arc<Identity>> {
        match caller {
            Caller::User(id) => Some(id.clone()),
            Caller::Teardown(binding) => {
                let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
                let id = map.get(binding)?;
                id.expires_at.is_none_or(|e| e > SystemTime::now()).then(|| id.clone())
            }
            Caller::Anonymous | Caller::System => None,
        }
    }
}
