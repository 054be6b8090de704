//! Legacy session records in Redis ([`crate::session::SessionStore`]), so that a session
//! opened on one replica continues on any other.
//!
//! One string per session under `sess:<sha256 of the id>` holding the encoded record (at most
//! `session::record::MAX_RECORD_BYTES`), with the record's time to live as its expiry. `touch`
//! is `GETEX … PX`, and `delete_idle` compares `PTTL` with the time to live in one script, so
//! a replica whose copy went idle never deletes a session another replica used meanwhile.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::bus::RedisBus;
use super::{Redis, StorageError};
use crate::session::record::SessionRecord;
use crate::session::{SessionBus, SessionStore, StoreError, StoreKey};

/// Deletes the record unless it was put or touched less than `ARGV[2]` ms ago (its time left
/// says when: every put and touch sets the expiry to `ARGV[1]` ms). Returns 1 when no record
/// is left.
const DELETE_IDLE: &str = r"
local left = redis.call('PTTL', KEYS[1])
if left == -2 then return 1 end
if left >= 0 and (tonumber(ARGV[1]) - left) < tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[1])
return 1
";

/// The Redis session store.
pub struct RedisSessionStore {
    redis: Redis,
    delete_idle: redis::Script,
    /// Notifications between the replicas on this store.
    bus: Arc<RedisBus>,
}

impl RedisSessionStore {
    /// Session records in `redis`. Must be created inside a Tokio runtime (the bus's
    /// subscriber is a task).
    pub fn new(redis: Redis) -> Self {
        let bus = Arc::new(RedisBus::new(redis.clone()));
        Self { redis, delete_idle: redis::Script::new(DELETE_IDLE), bus }
    }

    fn key(&self, key: &StoreKey) -> String {
        self.redis.key("sess", &[key.as_str()])
    }
}

fn store_error(e: StorageError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn decode(bytes: Option<Vec<u8>>) -> Result<Option<SessionRecord>, StoreError> {
    bytes.map(|b| SessionRecord::decode(&b)).transpose().map_err(StoreError::from)
}

impl SessionStore for RedisSessionStore {
    fn put<'a>(
        &'a self,
        key: &'a StoreKey,
        record: &'a SessionRecord,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let bytes = record.encode()?;
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.key(key)).arg(bytes).arg("PX").arg(super::px(ttl));
            self.redis.query::<()>(&cmd).await.map_err(store_error)
        })
    }

    fn get<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<SessionRecord>, StoreError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("GET");
            cmd.arg(self.key(key));
            decode(self.redis.query::<Option<Vec<u8>>>(&cmd).await.map_err(store_error)?)
        })
    }

    fn touch<'a>(
        &'a self,
        key: &'a StoreKey,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<SessionRecord>, StoreError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("GETEX");
            cmd.arg(self.key(key)).arg("PX").arg(super::px(ttl));
            decode(self.redis.query::<Option<Vec<u8>>>(&cmd).await.map_err(store_error)?)
        })
    }

    fn delete<'a>(&'a self, key: &'a StoreKey) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("DEL");
            cmd.arg(self.key(key));
            self.redis.query::<()>(&cmd).await.map_err(store_error)
        })
    }

    fn delete_idle<'a>(
        &'a self,
        key: &'a StoreKey,
        ttl: Duration,
        min_idle: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let keys = [self.key(key)];
            let args = [super::px(ttl), u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX)];
            let gone: i64 =
                self.redis.eval(&self.delete_idle, &keys, &args).await.map_err(store_error)?;
            Ok(gone == 1)
        })
    }

    fn bus(&self) -> Option<Arc<dyn SessionBus>> {
        Some(self.bus.clone())
    }
}
