//! Counting open `subscriptions/listen` streams (2026-07-28), in total and per principal.
//!
//! Invariant: a stream holds its slots from the moment it is admitted until its
//! [`ListenPermit`] drops, whichever way the stream ends; a principal's entry disappears when its
//! last stream closes, so the map holds only principals with a stream open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::limit::{LimitError, Permit, Slot};
use crate::auth::Binding;

/// Open listen streams.
#[derive(Default)]
pub(super) struct ListenStreams {
    total: Arc<std::sync::atomic::AtomicUsize>,
    per_principal: Arc<Mutex<HashMap<Binding, usize>>>,
}

/// One admitted listen stream; dropping it gives its slots back.
pub struct ListenPermit {
    _total: Slot,
    binding: Binding,
    per_principal: Arc<Mutex<HashMap<Binding, usize>>>,
}

impl Drop for ListenPermit {
    fn drop(&mut self) {
        let mut map = self.per_principal.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.binding) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.binding);
            }
        }
    }
}

impl ListenStreams {
    /// Admits one stream of `binding`, unless `total` or `per_principal` streams are open.
    pub(super) fn open(
        &self,
        binding: &Binding,
        total: usize,
        per_principal: usize,
    ) -> Result<ListenPermit, LimitError> {
        let slot = Permit::acquire(&self.total, total)
            .ok_or(LimitError::ListenStreams { limit: total })?;
        let mut map = self.per_principal.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(binding.clone()).or_insert(0);
        if *n >= per_principal {
            // `slot` drops here and gives the global slot back.
            return Err(LimitError::ListenStreamsPerPrincipal { limit: per_principal });
        }
        *n += 1;
        Ok(ListenPermit {
            _total: slot,
            binding: binding.clone(),
            per_principal: self.per_principal.clone(),
        })
    }

    /// Streams open, all principals together.
    pub(super) fn open_count(&self) -> usize {
        self.total.load(std::sync::atomic::Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(s: &str) -> Binding {
        Binding::Principal { issuer: "i".into(), subject: s.into() }
    }

    #[test]
    fn per_principal_and_total_caps_and_release() {
        let l = ListenStreams::default();
        let a1 = l.open(&who("a"), 3, 2).unwrap();
        let _a2 = l.open(&who("a"), 3, 2).unwrap();
        assert_eq!(
            l.open(&who("a"), 3, 2).err(),
            Some(LimitError::ListenStreamsPerPrincipal { limit: 2 })
        );
        // The refused stream gave its global slot back.
        let b1 = l.open(&who("b"), 3, 2).unwrap();
        assert_eq!(l.open(&who("c"), 3, 2).err(), Some(LimitError::ListenStreams { limit: 3 }));
        drop(a1);
        let _a3 = l.open(&who("a"), 3, 2).unwrap();
        drop(b1);
        assert_eq!(l.open_count(), 2);
        assert!(!l.per_principal.lock().unwrap().contains_key(&who("b")));
    }
}
