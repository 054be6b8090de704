//! The session bus on Redis pub/sub ([`crate::session::SessionBus`]): a replica publishes a
//! session's notification on `<prefix>ev:<sha256 of the session id>`; the replica holding the
//! session's GET stream is subscribed to that channel while the stream is open.
//!
//! Publishing uses the shared connection (`PUBLISH`, within the command deadline). Subscribing
//! needs a connection of its own, which one task owns: it connects only while some stream
//! listens, subscribes and unsubscribes as streams open and close (it reconciles the channels
//! listened on here with those subscribed at Redis, so no request to change them can be lost
//! or pile up), and after a lost connection reconnects with backoff (50 ms doubling to 1 s) and
//! subscribes everything again.
//!
//! What the bus does not do: keep messages. Pub/sub delivers to whoever is subscribed at that
//! moment; a notification published while Redis is down, or while the stream is between
//! replicas, is lost, as it would be for a client with no stream open. Redis pub/sub ignores
//! the database number, so `keyPrefix` is what keeps two gateways on one Redis apart.
//!
//! Invariant: the task ends when the bus is dropped; every Redis call it makes has a deadline.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use futures::future::BoxFuture;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::Redis;
use crate::session::bus::{Channels, Listener, SessionBus};
use crate::session::{StoreError, StoreKey};

/// First pause after a failed connection; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Notifications between replicas over Redis pub/sub.
pub struct RedisBus {
    redis: Redis,
    channels: Arc<Channels>,
    /// Ends the subscriber task with the bus.
    _stop: DropGuard,
}

impl RedisBus {
    /// A bus on `redis`; must be created inside a Tokio runtime. Connects once a stream listens.
    pub fn new(redis: Redis) -> Self {
        let channels = Arc::new(Channels::default());
        let stop = CancellationToken::new();
        tokio::spawn(subscriber(redis.clone(), channels.clone(), stop.clone()));
        Self { redis, channels, _stop: stop.drop_guard() }
    }

    fn channel(&self, key: &StoreKey) -> String {
        self.redis.key("ev", &[key.as_str()])
    }
}

impl SessionBus for RedisBus {
    fn publish<'a>(
        &'a self,
        key: &'a StoreKey,
        message: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let cmd = redis::cmd("PUBLISH").arg(self.channel(key)).arg(message).clone();
            let _receivers: i64 =
                self.redis.query(&cmd).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
            Ok(())
        })
    }

    fn listen<'a>(&'a self, key: &'a StoreKey) -> BoxFuture<'a, Listener> {
        Box::pin(async move {
            let (listener, mut live) = self.channels.join(key.as_str());
            // A stream opens without its bus rather than not at all: local notifications still
            // flow, and the subscriber keeps trying.
            let confirmed = tokio::time::timeout(self.redis.timeout, live.wait_for(|l| *l)).await;
            if !matches!(confirmed, Ok(Ok(_))) {
                tracing::warn!(
                    "a GET stream opened before its session bus channel was subscribed at Redis"
                );
            }
            listener
        })
    }
}

/// The subscriber task: connected while anyone listens, until `stop`.
async fn subscriber(redis: Redis, channels: Arc<Channels>, stop: CancellationToken) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        while channels.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = channels.changed.notified() => {}
            }
        }
        let connect = tokio::time::timeout(redis.connect_timeout, redis.client.get_async_pubsub());
        let pubsub = tokio::select! {
            _ = stop.cancelled() => return,
            c = connect => c,
        };
        match pubsub {
            Ok(Ok(pubsub)) => {
                backoff = FIRST_BACKOFF;
                let ended = serve(&redis, &channels, pubsub, &stop).await;
                channels.all_down();
                match ended {
                    Ended::Stopped => return,
                    Ended::Idle => continue,
                    Ended::Lost(why) => {
                        tracing::warn!(reason = %why, "session bus connection lost")
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "session bus cannot connect to Redis"),
            Err(_) => tracing::warn!("session bus: no connection to Redis within the deadline"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// How serving one connection ended.
enum Ended {
    /// The bus was dropped.
    Stopped,
    /// Nobody listens any more: the connection is given back until someone does.
    Idle,
    /// The connection failed, for this reason.
    Lost(String),
}

/// Serves one connection: keeps its subscriptions equal to the channels listened on here and
/// hands messages over.
async fn serve(
    redis: &Redis,
    channels: &Channels,
    pubsub: redis::aio::PubSub,
    stop: &CancellationToken,
) -> Ended {
    let (mut sink, mut stream) = pubsub.split();
    let prefix = redis.key("ev", &[""]);
    let mut subscribed: HashSet<String> = HashSet::new();
    loop {
        let wanted: HashSet<String> = channels.names().into_iter().collect();
        let add: Vec<String> = wanted.difference(&subscribed).cloned().collect();
        if !add.is_empty() {
            let names: Vec<String> = add.iter().map(|n| format!("{prefix}{n}")).collect();
            match tokio::time::timeout(redis.timeout, sink.subscribe(&names)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Ended::Lost(e.to_string()),
                Err(_) => return Ended::Lost("SUBSCRIBE timed out".into()),
            }
            channels.set_live(add.iter().map(|n| n.as_str()), true);
            subscribed.extend(add);
        }
        let gone: Vec<String> = subscribed.difference(&wanted).cloned().collect();
        if !gone.is_empty() {
            let names: Vec<String> = gone.iter().map(|n| format!("{prefix}{n}")).collect();
            match tokio::time::timeout(redis.timeout, sink.unsubscribe(&names)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Ended::Lost(e.to_string()),
                Err(_) => return Ended::Lost("UNSUBSCRIBE timed out".into()),
            }
            for g in &gone {
                subscribed.remove(g);
            }
        }
        if subscribed.is_empty() && channels.is_empty() {
            return Ended::Idle;
        }
        tokio::select! {
            _ = stop.cancelled() => return Ended::Stopped,
            _ = channels.changed.notified() => {}
            m = stream.next() => match m {
                Some(m) => {
                    if let Some(name) = m.get_channel_name().strip_prefix(&prefix) {
                        channels.deliver(name, m.get_payload_bytes());
                    }
                }
                None => return Ended::Lost("connection closed".into()),
            },
        }
    }
}
