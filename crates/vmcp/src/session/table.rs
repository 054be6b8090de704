//! The live sessions of this process by id, with a count per principal kept beside them, so
//! that `maxSessionsPerPrincipal` is checked in constant time rather than by scanning every
//! session under the write lock (which made opening the n-th session cost O(n)).
//!
//! Invariant: `per_principal[b]` is the number of sessions in `by_id` bound to `b`; a binding
//! with none has no entry.

use std::collections::HashMap;
use std::sync::Arc;

use super::Session;
use crate::auth::Binding;

#[derive(Default)]
pub(super) struct Table {
    by_id: HashMap<String, Arc<Session>>,
    per_principal: HashMap<Binding, usize>,
}

impl Table {
    pub(super) fn get(&self, id: &str) -> Option<&Arc<Session>> {
        self.by_id.get(id)
    }

    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Arc<Session>> {
        self.by_id.values()
    }

    /// Sessions bound to `binding`.
    pub(super) fn count(&self, binding: &Binding) -> usize {
        self.per_principal.get(binding).copied().unwrap_or(0)
    }

    pub(super) fn insert(&mut self, session: Arc<Session>) {
        let binding = session.binding.clone();
        if let Some(old) = self.by_id.insert(session.id.clone(), session) {
            self.forget(&old.binding);
        }
        *self.per_principal.entry(binding).or_insert(0) += 1;
    }

    pub(super) fn remove(&mut self, id: &str) -> Option<Arc<Session>> {
        let old = self.by_id.remove(id)?;
        self.forget(&old.binding);
        Some(old)
    }

    pub(super) fn drain(&mut self) -> Vec<Arc<Session>> {
        self.per_principal.clear();
        self.by_id.drain().map(|(_, s)| s).collect()
    }

    fn forget(&mut self, binding: &Binding) {
        if let Some(n) = self.per_principal.get_mut(binding) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_principal.remove(binding);
            }
        }
    }
}
