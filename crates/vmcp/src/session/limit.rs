//! Counted slots and the error for a limit that was hit.
//!
//! Invariant: a slot is taken with a compare-and-swap that never goes past the limit, and given
//! back exactly once, when its [`Permit`] drops.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use crate::auth::Binding;

/// A limit of `server.limits` that refused a request. The message names the key, so an operator
/// seeing it in a client log knows what to raise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// `maxSessions`.
    #[error(
        "too many sessions: the gateway holds at most {limit} (server.limits.maxSessions); try again later"
    )]
    Sessions {
        /// The limit.
        limit: usize,
    },
    /// `maxSessionsPerPrincipal`.
    #[error(
        "too many sessions for this principal: at most {limit} (server.limits.maxSessionsPerPrincipal); end one with DELETE first"
    )]
    SessionsPerPrincipal {
        /// The limit.
        limit: usize,
    },
    /// `maxInFlight`.
    #[error(
        "too many requests in flight: the gateway handles at most {limit} at once (server.limits.maxInFlight); retry later"
    )]
    InFlight {
        /// The limit.
        limit: usize,
    },
    /// `maxInFlightPerPrincipal`.
    #[error(
        "too many requests in flight for this principal: at most {limit} at once (server.limits.maxInFlightPerPrincipal); retry later"
    )]
    InFlightPerPrincipal {
        /// The limit.
        limit: usize,
    },
    /// `maxInFlightPerSession`.
    #[error(
        "too many requests in flight in this session: at most {limit} at once (server.limits.maxInFlightPerSession)"
    )]
    InFlightPerSession {
        /// The limit.
        limit: usize,
    },
    /// `maxStreamsPerSession`.
    #[error(
        "too many GET streams open for this session: at most {limit} (server.limits.maxStreamsPerSession)"
    )]
    StreamsPerSession {
        /// The limit.
        limit: usize,
    },
    /// `maxPendingRelaysPerSession`.
    #[error(
        "too many requests waiting for this client's answer: at most {limit} (server.limits.maxPendingRelaysPerSession)"
    )]
    PendingRelaysPerSession {
        /// The limit.
        limit: usize,
    },
    /// `maxPendingRelays`.
    #[error(
        "too many requests waiting for clients' answers: the gateway holds at most {limit} (server.limits.maxPendingRelays)"
    )]
    PendingRelays {
        /// The limit.
        limit: usize,
    },
    /// `maxSubscriptionsPerSession`.
    #[error(
        "too many resource subscriptions: at most {limit} per session (server.limits.maxSubscriptionsPerSession)"
    )]
    SubscriptionsPerSession {
        /// The limit.
        limit: usize,
    },
    /// `maxListenStreams`.
    #[error(
        "too many listen streams open: the gateway holds at most {limit} (server.limits.maxListenStreams); retry later"
    )]
    ListenStreams {
        /// The limit.
        limit: usize,
    },
    /// `maxListenStreamsPerPrincipal`.
    #[error(
        "too many listen streams open for this principal: at most {limit} (server.limits.maxListenStreamsPerPrincipal); close one first"
    )]
    ListenStreamsPerPrincipal {
        /// The limit.
        limit: usize,
    },
    /// `maxParkedCalls`.
    #[error(
        "too many calls waiting for client input: the gateway holds at most {limit} (server.limits.maxParkedCalls); retry later"
    )]
    ParkedCalls {
        /// The limit.
        limit: usize,
    },
    /// `maxParkedCallsPerPrincipal`.
    #[error(
        "too many calls waiting for this principal's input: at most {limit} (server.limits.maxParkedCallsPerPrincipal)"
    )]
    ParkedCallsPerPrincipal {
        /// The limit.
        limit: usize,
    },
}

impl LimitError {
    /// Whether the limit is the gateway's as a whole (HTTP 503: the server is busy) rather than
    /// one client's (HTTP 429: that client is asking too much).
    pub fn is_global(&self) -> bool {
        matches!(
            self,
            Self::Sessions { .. }
                | Self::InFlight { .. }
                | Self::ParkedCalls { .. }
                | Self::ListenStreams { .. }
                | Self::PendingRelays { .. }
        )
    }

    /// The `server.limits` key that was hit.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Sessions { .. } => "maxSessions",
            Self::SessionsPerPrincipal { .. } => "maxSessionsPerPrincipal",
            Self::InFlight { .. } => "maxInFlight",
            Self::InFlightPerPrincipal { .. } => "maxInFlightPerPrincipal",
            Self::InFlightPerSession { .. } => "maxInFlightPerSession",
            Self::StreamsPerSession { .. } => "maxStreamsPerSession",
            Self::PendingRelaysPerSession { .. } => "maxPendingRelaysPerSession",
            Self::PendingRelays { .. } => "maxPendingRelays",
            Self::SubscriptionsPerSession { .. } => "maxSubscriptionsPerSession",
            Self::ListenStreams { .. } => "maxListenStreams",
            Self::ListenStreamsPerPrincipal { .. } => "maxListenStreamsPerPrincipal",
            Self::ParkedCalls { .. } => "maxParkedCalls",
            Self::ParkedCallsPerPrincipal { .. } => "maxParkedCallsPerPrincipal",
        }
    }

    /// The JSON-RPC error for the client: -32600 (the request cannot be accepted now), with the
    /// key and the limit in `data` for programs.
    pub fn to_error(&self) -> crate::protocol::ErrorObject {
        let limit = match self {
            Self::Sessions { limit }
            | Self::SessionsPerPrincipal { limit }
            | Self::InFlight { limit }
            | Self::InFlightPerPrincipal { limit }
            | Self::InFlightPerSession { limit }
            | Self::StreamsPerSession { limit }
            | Self::PendingRelaysPerSession { limit }
            | Self::PendingRelays { limit }
            | Self::SubscriptionsPerSession { limit }
            | Self::ListenStreams { limit }
            | Self::ListenStreamsPerPrincipal { limit }
            | Self::ParkedCalls { limit }
            | Self::ParkedCallsPerPrincipal { limit } => *limit,
        };
        crate::protocol::ErrorObject::with_data(
            crate::protocol::jsonrpc::code::INVALID_REQUEST,
            self.to_string(),
            &serde_json::json!({ "limit": self.key(), "value": limit }),
        )
    }
}

/// One taken slot of a counter.
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Slots held by one admitted request or stream; dropping it gives them all back.
pub struct Permit {
    _slots: Vec<Slot>,
}

impl Permit {
    /// Takes one slot of `counter` if fewer than `limit` are taken.
    pub(super) fn acquire(counter: &Arc<AtomicUsize>, limit: usize) -> Option<Slot> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1))
            .ok()
            .map(|_| Slot(counter.clone()))
    }

    pub(super) fn new(slots: Vec<Slot>) -> Self {
        Self { _slots: slots }
    }
}

/// One counter per principal (requests in flight), created on first use. Lookups share a read
/// lock; a counter nobody holds and that stands at zero is swept once the map is large, under
/// the write lock, so the map stays bounded by the principals with requests in flight.
#[derive(Default)]
pub struct PerPrincipal {
    map: RwLock<HashMap<Binding, Arc<AtomicUsize>>>,
}

/// Past this many principals, idle counters are swept before another is added.
const SWEEP_AT: usize = 1024;

impl PerPrincipal {
    /// Takes one slot of `binding`'s counter if fewer than `limit` are taken.
    pub fn acquire(&self, binding: &Binding, limit: usize) -> Option<Slot> {
        let existing = self.map.read().unwrap_or_else(|e| e.into_inner()).get(binding).cloned();
        let counter = match existing {
            Some(c) => c,
            None => {
                let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
                if map.len() >= SWEEP_AT {
                    // Only the map holds it and it counts nothing: no request is using it.
                    map.retain(|_, c| Arc::strong_count(c) > 1 || c.load(Ordering::Acquire) > 0);
                }
                map.entry(binding.clone()).or_default().clone()
            }
        };
        Permit::acquire(&counter, limit)
    }

    /// Principals with a counter (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stop_at_the_limit_and_come_back_on_drop() {
        let counter = Arc::new(AtomicUsize::new(0));
        let a = Permit::acquire(&counter, 2).unwrap();
        let b = Permit::acquire(&counter, 2).unwrap();
        assert!(Permit::acquire(&counter, 2).is_none());
        assert_eq!(counter.load(Ordering::Acquire), 2);
        drop(Permit::new(vec![a]));
        assert_eq!(counter.load(Ordering::Acquire), 1);
        let _c = Permit::acquire(&counter, 2).unwrap();
        drop(b);
        assert_eq!(counter.load(Ordering::Acquire), 1);
    }

    #[test]
    fn messages_name_the_key() {
        let e = LimitError::SessionsPerPrincipal { limit: 3 };
        assert!(e.to_string().contains("server.limits.maxSessionsPerPrincipal"));
        assert!(e.to_string().contains('3'));
        assert!(!e.is_global());
        assert!(LimitError::InFlight { limit: 1 }.is_global());
        let obj = serde_json::to_value(e.to_error()).unwrap();
        assert_eq!(obj["data"]["limit"], "maxSessionsPerPrincipal");
        assert_eq!(obj["code"], -32600);
    }

    #[test]
    fn per_principal_counters_cap_each_principal_and_are_swept() {
        let who = |s: &str| Binding::Principal { issuer: "i".into(), subject: s.into() };
        let p = PerPrincipal::default();
        let a1 = p.acquire(&who("a"), 2).unwrap();
        let _a2 = p.acquire(&who("a"), 2).unwrap();
        assert!(p.acquire(&who("a"), 2).is_none(), "a is at its limit");
        let _b = p.acquire(&who("b"), 2).unwrap();
        drop(a1);
        assert!(p.acquire(&who("a"), 2).is_some(), "a's slot came back");
        for n in 0..SWEEP_AT + 10 {
            drop(p.acquire(&who(&n.to_string()), 1));
        }
        assert!(p.len() <= SWEEP_AT + 1, "idle counters are swept: {}", p.len());
    }
}
