//! Authentication: who the caller is (incoming) and what credentials each backend request carries
//! (outgoing).
//!
//! Invariant: identity travels as an explicit [`Caller`] argument. No connection, pool, session or
//! transport stores a credential; a session stores only its [`Binding`].

pub mod current;
pub mod identity;
pub mod incoming;
pub mod outgoing;

pub use identity::{Binding, Caller, Identity};
