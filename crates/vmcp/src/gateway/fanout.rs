//! Hands backend notifications meant for a Legacy session's GET stream to the replica that holds
//! the stream, when that is not this one (see `session::bus`).
//!
//! Every backend event this replica receives is matched against the sessions it holds, with the
//! same filter a GET stream applies ([`crate::session::Session::wants`]); for each session that
//! wants it and has no GET stream here, the notification is published on the session's bus
//! channel. A replica holding the stream listens there; if none does, the message is dropped by
//! the bus, as a notification for a session with no stream is on one replica.
//!
//! Invariants: a notification is published only for sessions bound to the principal whose
//! backend session, child or stream it came on (or to everyone's, for a shared one), under that
//! session's binding; publishes go one at a time, in the order the events came, each within
//! the store's deadline.

use std::sync::{Arc, Weak};

use tokio::sync::broadcast;

use super::Gateway;
use crate::backend::BackendEvent;
use crate::session::{Session, SessionBus, bus};

/// Runs until the gateway stops or is dropped.
pub(super) async fn run(
    gw: Weak<Gateway>,
    bus: Arc<dyn SessionBus>,
    mut events: broadcast::Receiver<BackendEvent>,
) {
    loop {
        let event = {
            let Some(g) = gw.upgrade() else { return };
            let stop = g.stop.clone();
            drop(g);
            tokio::select! {
                _ = stop.cancelled() => return,
                e = events.recv() => e,
            }
        };
        let e = match event {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(lost = n, "notifications for other replicas' streams were dropped");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(g) = gw.upgrade() else { return };
        let targets = g.sessions.matching(|s| !s.has_stream() && s.wants(&e));
        drop(g);
        for s in targets {
            publish(&*bus, &s, &e).await;
        }
    }
}

async fn publish(bus: &dyn SessionBus, session: &Session, e: &BackendEvent) {
    let Some(message) = bus::encode(&session.binding, &e.notification) else {
        tracing::warn!(session = session.key, "a notification too large for the session bus");
        return;
    };
    if let Err(err) = bus.publish(session.store_key(), message).await {
        tracing::warn!(
            session = session.key,
            method = %e.notification.method,
            error = %err,
            "could not hand a notification to the replica holding the session's stream"
        );
    }
}
