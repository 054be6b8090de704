//! The upstream token vault's storage in Redis: [`RedisTokenStore`] ([`TokenStore`]: sealed
//! blobs only, the vault encrypts before anything leaves the process) and
//! [`RedisRefreshLease`] ([`RefreshLease`]: one replica refreshes a grant at a time).
//!
//! An entry is the string `vault:<user>:<upstream>` with `PX` until its `useless_after`; the set
//! `vault-idx:<user>` lists a user's upstreams so that a logout drops them all in one script
//! (it expires with the longest-lived entry, or never while one has no expiry). The lease is
//! `vault-lease:<user>:<upstream>`, `SET NX PX`, released only by its holder (compare and
//! delete in one script).

use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;

use super::{Redis, StorageError, part};
use crate::auth::upstream::{LeaseHolder, RefreshLease, StoreError, TokenStore};

/// KEYS: entry, index. ARGV: blob, upstream (encoded), px (0: no expiry).
const PUT: &str = r"
local px = tonumber(ARGV[3])
local existed = redis.call('EXISTS', KEYS[2])
if px > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', px)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('SADD', KEYS[2], ARGV[2])
if px == 0 then
  redis.call('PERSIST', KEYS[2])
elseif existed == 0 then
  redis.call('PEXPIRE', KEYS[2], px)
else
  local ttl = redis.call('PTTL', KEYS[2])
  if ttl >= 0 and ttl < px then redis.call('PEXPIRE', KEYS[2], px) end
end
return 1
";

/// KEYS: index. ARGV: the prefix of the user's entry keys (`...vault:<user>:`).
const DELETE_USER: &str = r"
local members = redis.call('SMEMBERS', KEYS[1])
for _, m in ipairs(members) do redis.call('DEL', ARGV[1] .. m) end
redis.call('DEL', KEYS[1])
return #members
";

/// KEYS: lease. ARGV: holder. Deletes the lease only if `holder` holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

fn store_error(e: StorageError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Sealed vault entries in Redis, shared by replicas. Bounded by expiry: an entry lives until
/// its `useless_after` (an access token without a refresh token) or until logout / a dead grant.
pub struct RedisTokenStore {
    redis: Redis,
    put: redis::Script,
    delete_user: redis::Script,
}

impl RedisTokenStore {
    /// Entries in `redis`.
    pub fn new(redis: Redis) -> Self {
        Self { redis, put: redis::Script::new(PUT), delete_user: redis::Script::new(DELETE_USER) }
    }

    fn entry(&self, user: &str, upstream: &str) -> String {
        self.redis.key("vault", &[user, upstream])
    }

    fn index(&self, user: &str) -> String {
        self.redis.key("vault-idx", &[user])
    }
}

impl TokenStore for RedisTokenStore {
    fn get<'a>(
        &'a self,
        user: &'a str,
        upstream: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(async move {
            let cmd = redis::cmd("GET").arg(self.entry(user, upstream)).to_owned();
            self.redis.query::<Option<Vec<u8>>>(&cmd).await.map_err(store_error)
        })
    }

    fn put<'a>(
        &'a self,
        user: &'a str,
        upstream: &'a str,
        blob: Vec<u8>,
        useless_after: Option<SystemTime>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let px = match useless_after {
                None => 0,
                Some(t) => match t.duration_since(SystemTime::now()) {
                    Ok(d) => super::px(d),
                    // Useless already: nothing to keep.
                    Err(_) => return self.delete(user, upstream).await,
                },
            };
            let keys = [self.entry(user, upstream), self.index(user)];
            let args = [blob, part(upstream).into_bytes(), px.to_string().into_bytes()];
            self.redis.eval::<i64, _>(&self.put, &keys, &args).await.map_err(store_error)?;
            Ok(())
        })
    }

    fn delete<'a>(
        &'a self,
        user: &'a str,
        upstream: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.atomic().del(self.entry(user, upstream)).srem(self.index(user), part(upstream));
            self.redis.pipeline::<()>(&pipe).await.map_err(store_error)
        })
    }

    fn delete_user<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let keys = [self.index(user)];
            let base = format!("{}:", self.redis.key("vault", &[user]));
            let args = [base];
            self.redis
                .eval::<i64, _>(&self.delete_user, &keys, &args)
                .await
                .map_err(store_error)?;
            Ok(())
        })
    }
}

/// The refresh lease in Redis.
pub struct RedisRefreshLease {
    redis: Redis,
    release: redis::Script,
}

impl RedisRefreshLease {
    /// Leases in `redis`.
    pub fn new(redis: Redis) -> Self {
        Self { redis, release: redis::Script::new(RELEASE) }
    }

    fn key(&self, user: &str, upstream: &str) -> String {
        self.redis.key("vault-lease", &[user, upstream])
    }
}

impl RefreshLease for RedisRefreshLease {
    fn try_acquire<'a>(
        &'a self,
        user: &'a str,
        upstream: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<LeaseHolder>, StoreError>> {
        Box::pin(async move {
            let holder = LeaseHolder::random();
            let ms = super::px(ttl);
            let cmd = redis::cmd("SET")
                .arg(self.key(user, upstream))
                .arg(&holder.0)
                .arg("NX")
                .arg("PX")
                .arg(ms)
                .to_owned();
            let set: Option<String> = self.redis.query(&cmd).await.map_err(store_error)?;
            Ok(set.map(|_| holder))
        })
    }

    fn release<'a>(
        &'a self,
        user: &'a str,
        upstream: &'a str,
        holder: &'a LeaseHolder,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let keys = [self.key(user, upstream)];
            let args = [holder.0.clone()];
            if let Err(e) = self.redis.eval::<i64, _>(&self.release, &keys, &args).await {
                // The lease expires by itself; others wait at most its TTL.
                tracing::warn!(%user, %upstream, error = %e, "refresh lease not released");
            }
        })
    }
}
