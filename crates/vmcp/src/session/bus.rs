//! Notifications for a Legacy session's GET stream held by another replica.
//!
//! Each replica that serves a session opens its own backend sessions, so a backend's
//! notification for the session (a resource update, a log message) reaches the replica whose
//! backend session it came on, which need not be the one holding the client's GET stream. The
//! replica holding a stream listens on the session's channel ([`SessionBus::listen`]); a replica
//! that has a notification for a session whose stream it does not hold publishes it there
//! (`gateway/fanout.rs`). Channels are named by the session's [`StoreKey`], never its id.
//!
//! [`Channels`] is the local half every bus shares: who listens on which channel here, and the
//! hand-over to them. [`MemoryBus`] connects the gateways of one process (tests); Redis's
//! pub/sub is `crate::store::bus`.
//!
//! Invariants:
//! - A message names the binding of the session it is for ([`encode`]); a stream delivers it only
//!   to a session with that binding.
//! - Each channel keeps at most [`CHANNEL_CAPACITY`] undelivered messages per listener; a listener
//!   that falls further behind loses the oldest, and says so in the log.
//! - A message larger than [`MAX_MESSAGE_BYTES`] is neither sent nor delivered.
//! - A channel exists while it has a listener; the last listener's drop removes it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{Notify, broadcast, watch};

use super::store::{StoreError, StoreKey};
use crate::auth::Binding;
use crate::protocol::Notification;

/// Messages a listener may fall behind by before it loses the oldest (default 64).
pub const CHANNEL_CAPACITY: usize = 64;
/// Largest message sent or delivered (1 MiB): a notification is a backend's, bounded by
/// `maxBackendReplyBytes` on arrival, and the bus is no place for bulk data.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Carries notifications between the replicas serving one session.
pub trait SessionBus: Send + Sync {
    /// Sends `message` (from [`encode`]) to whoever listens for session `key`, anywhere.
    fn publish<'a>(
        &'a self,
        key: &'a StoreKey,
        message: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Listens for session `key` until the [`Listener`] drops. Returns once the bus confirmed
    /// the subscription, or after its deadline (then messages flow once it is confirmed).
    fn listen<'a>(&'a self, key: &'a StoreKey) -> BoxFuture<'a, Listener>;
}

#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    #[serde(rename = "b", with = "super::record::binding_form")]
    binding: Binding,
    #[serde(rename = "n", borrow)]
    notification: &'a RawValue,
}

/// A notification for a session bound to `binding`, as the bus carries it; `None` when it
/// exceeds [`MAX_MESSAGE_BYTES`].
pub fn encode(binding: &Binding, notification: &Notification) -> Option<Vec<u8>> {
    let n = serde_json::value::to_raw_value(notification).ok()?;
    let bytes = serde_json::to_vec(&Wire { binding: binding.clone(), notification: &n }).ok()?;
    (bytes.len() <= MAX_MESSAGE_BYTES).then_some(bytes)
}

/// The notification in `message` if it is meant for a session bound to `binding`.
pub fn decode(message: &[u8], binding: &Binding) -> Option<Notification> {
    let wire: Wire<'_> = serde_json::from_slice(message).ok()?;
    if wire.binding != *binding {
        return None;
    }
    match crate::protocol::Message::parse(wire.notification.get().as_bytes()).ok()? {
        crate::protocol::Message::Notification(n) => Some(n),
        _ => None,
    }
}

struct Entry {
    tx: broadcast::Sender<Arc<[u8]>>,
    listeners: usize,
    /// Whether the bus confirmed this channel's subscription.
    live: watch::Sender<bool>,
}

/// The channels listened on in this process.
#[derive(Default)]
pub struct Channels {
    map: Mutex<HashMap<String, Entry>>,
    /// Woken when a channel is added or removed (the Redis bus subscribes accordingly).
    pub changed: Notify,
}

impl Channels {
    /// Adds a listener on channel `name`; the receiver says when the channel is live.
    pub fn join(self: &Arc<Self>, name: &str) -> (Listener, watch::Receiver<bool>) {
        let mut map = lock(&self.map);
        let entry = map.entry(name.to_owned()).or_insert_with(|| Entry {
            tx: broadcast::channel(CHANNEL_CAPACITY).0,
            listeners: 0,
            live: watch::channel(false).0,
        });
        entry.listeners += 1;
        let listener = Listener {
            rx: entry.tx.subscribe(),
            _membership: Membership { channels: self.clone(), name: name.to_owned() },
        };
        let live = entry.live.subscribe();
        let new = entry.listeners == 1;
        drop(map);
        if new {
            self.changed.notify_one();
        }
        (listener, live)
    }

    /// Hands `message` to the listeners of channel `name`, if any.
    pub fn deliver(&self, name: &str, message: &[u8]) {
        if message.len() > MAX_MESSAGE_BYTES {
            tracing::warn!(bytes = message.len(), "dropped an oversized session bus message");
            return;
        }
        if let Some(e) = lock(&self.map).get(name) {
            let _ = e.tx.send(Arc::from(message));
        }
    }

    /// Names of the channels with a listener.
    pub fn names(&self) -> Vec<String> {
        lock(&self.map).keys().cloned().collect()
    }

    /// Whether no channel has a listener.
    pub fn is_empty(&self) -> bool {
        lock(&self.map).is_empty()
    }

    /// Marks channels `names` live (or, with `live` false, all of them not).
    pub fn set_live<'a>(&self, names: impl IntoIterator<Item = &'a str>, live: bool) {
        let map = lock(&self.map);
        for n in names {
            if let Some(e) = map.get(n) {
                e.live.send_replace(live);
            }
        }
    }

    /// Marks every channel not live (the bus's connection was lost).
    pub fn all_down(&self) {
        for e in lock(&self.map).values() {
            e.live.send_replace(false);
        }
    }

    fn leave(&self, name: &str) {
        let mut map = lock(&self.map);
        let gone = match map.get_mut(name) {
            Some(e) => {
                e.listeners -= 1;
                e.listeners == 0
            }
            None => false,
        };
        if gone {
            map.remove(name);
            drop(map);
            self.changed.notify_one();
        }
    }
}

/// Leaves the channel when dropped.
struct Membership {
    channels: Arc<Channels>,
    name: String,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.channels.leave(&self.name);
    }
}

/// One stream's subscription to its session's channel.
pub struct Listener {
    rx: broadcast::Receiver<Arc<[u8]>>,
    _membership: Membership,
}

impl Listener {
    /// The next message; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<Arc<[u8]>> {
        loop {
            match self.rx.recv().await {
                Ok(m) => return Some(m),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(lost = n, "a GET stream fell behind its session bus channel");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// The bus of the gateways in one process (several gateways on one [`super::MemorySessionStore`]).
#[derive(Default)]
pub struct MemoryBus {
    channels: Arc<Channels>,
}

impl SessionBus for MemoryBus {
    fn publish<'a>(
        &'a self,
        key: &'a StoreKey,
        message: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.channels.deliver(key.as_str(), &message);
        Box::pin(std::future::ready(Ok(())))
    }

    fn listen<'a>(&'a self, key: &'a StoreKey) -> BoxFuture<'a, Listener> {
        let (listener, _) = self.channels.join(key.as_str());
        Box::pin(std::future::ready(listener))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Binding {
        Binding::Principal { issuer: "https://idp".into(), subject: "alice".into() }
    }

    fn updated(uri: &str) -> Notification {
        let params = serde_json::value::to_raw_value(&serde_json::json!({ "uri": uri })).unwrap();
        Notification::new("notifications/resources/updated", Some(params))
    }

    #[test]
    fn a_message_reaches_only_a_session_of_its_binding() {
        let m = encode(&alice(), &updated("test://a")).unwrap();
        let n = decode(&m, &alice()).unwrap();
        assert_eq!(n.method, "notifications/resources/updated");
        assert_eq!(n.params.unwrap().get(), r#"{"uri":"test://a"}"#);
        let bob = Binding::Principal { issuer: "https://idp".into(), subject: "bob".into() };
        assert!(decode(&m, &bob).is_none());
        assert!(decode(&m, &Binding::Anonymous).is_none());
        assert!(decode(b"not json", &alice()).is_none());
    }

    #[test]
    fn oversized_messages_are_not_encoded() {
        let big = "x".repeat(MAX_MESSAGE_BYTES);
        assert!(encode(&alice(), &updated(&big)).is_none());
    }

    #[tokio::test]
    async fn channels_live_while_listened_and_deliver_to_every_listener() {
        let bus = MemoryBus::default();
        let key = StoreKey::of("s1");
        let mut a = bus.listen(&key).await;
        let mut b = bus.listen(&key).await;
        bus.publish(&key, b"one".to_vec()).await.unwrap();
        assert_eq!(&*a.recv().await.unwrap(), b"one");
        assert_eq!(&*b.recv().await.unwrap(), b"one");
        // Another session's channel is a different channel.
        bus.publish(&StoreKey::of("s2"), b"other".to_vec()).await.unwrap();
        drop(a);
        assert_eq!(bus.channels.names(), vec![key.as_str().to_owned()]);
        drop(b);
        assert!(bus.channels.is_empty());
        // Publishing with nobody listening is not an error.
        bus.publish(&key, b"lost".to_vec()).await.unwrap();
    }

    #[tokio::test]
    async fn a_listener_that_falls_behind_keeps_the_newest() {
        let bus = MemoryBus::default();
        let key = StoreKey::of("s1");
        let mut l = bus.listen(&key).await;
        for i in 0..CHANNEL_CAPACITY + 5 {
            bus.publish(&key, i.to_string().into_bytes()).await.unwrap();
        }
        assert_eq!(&*l.recv().await.unwrap(), b"5");
    }
}
