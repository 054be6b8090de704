//! [`RateLimitStore`] in Redis: token buckets shared by every replica.
//!
//! One Lua script takes a token from every bucket of a call or from none, atomically (Redis runs
//! a script alone), on Redis's clock (`TIME`), so replicas with skewed clocks agree. A bucket is
//! a hash (`t`: tokens, `ts`: last update in ms) refilled lazily as in the memory store; its key
//! expires when the bucket would be full again, which is what a missing bucket means, so Redis
//! holds only buckets that are refilling. The key is the SHA-256 of the bucket's identity and
//! size: a bucket whose configuration changes starts over, and no principal's issuer or subject
//! is written into a key name.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sha2::{Digest as _, Sha256};

use super::Redis;
use crate::auth::Binding;
use crate::ratelimit::store::{Check, Decision, Key, RateLimitStore, StoreError};

/// KEYS: buckets. ARGV: per bucket, `max_tokens` then `refill_period` in ms.
/// Returns `{0, 0}` when allowed, else `{index (1-based) of the first empty bucket, wait ms}`.
const CONSUME: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tokens = {}
local refused, wait = 0, 0
for i = 1, #KEYS do
  local max, period = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local rate = max / period
  local v = redis.call('HMGET', KEYS[i], 't', 'ts')
  local n = max
  if v[1] and v[2] then
    n = math.min(max, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * rate)
  end
  tokens[i] = n
  if n < 1 then
    if refused == 0 then refused = i end
    wait = math.max(wait, math.ceil((1 - n) / rate))
  end
end
if refused > 0 then return {refused, wait} end
for i = 1, #KEYS do
  local max, period = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local n = tokens[i] - 1
  redis.call('HSET', KEYS[i], 't', tostring(n), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil((max - n) * period / max) + 1)
end
return {0, 0}
";

/// Token buckets in Redis.
pub struct RedisRateLimitStore {
    redis: Redis,
    script: redis::Script,
}

impl RedisRateLimitStore {
    /// Buckets in `redis`.
    pub fn new(redis: Redis) -> Self {
        Self { redis, script: redis::Script::new(CONSUME) }
    }

    fn key(&self, c: &Check) -> String {
        let mut h = Sha256::new();
        let mut field = |s: &str| {
            h.update((s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        };
        fn binding(b: &Binding) -> (&str, &str) {
            match b {
                Binding::Anonymous => ("", ""),
                Binding::Principal { issuer, subject } => (issuer.as_str(), subject.as_str()),
            }
        }
        match &c.key {
            Key::Shared => field("shared"),
            Key::SharedTool(t) => {
                field("tool");
                field(t);
            }
            Key::User(b) => {
                field("user");
                let (i, s) = binding(b);
                field(i);
                field(s);
            }
            Key::UserTool(t, b) => {
                field("user-tool");
                field(t);
                let (i, s) = binding(b);
                field(i);
                field(s);
            }
        }
        field(&c.bucket.max_tokens.to_string());
        field(&c.bucket.refill_period.as_millis().to_string());
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        self.redis.key("rl", &[&hex])
    }
}

impl RateLimitStore for RedisRateLimitStore {
    fn consume<'a>(&'a self, checks: &'a [Check]) -> BoxFuture<'a, Result<Decision, StoreError>> {
        Box::pin(async move {
            if checks.is_empty() {
                return Ok(Decision::Allowed);
            }
            let keys: Vec<String> = checks.iter().map(|c| self.key(c)).collect();
            let mut args = Vec::with_capacity(2 * checks.len());
            for c in checks {
                // Whole milliseconds, at least 1 (validated non-zero).
                let ms = c.bucket.refill_period.as_millis().max(1);
                args.push(c.bucket.max_tokens.to_string());
                args.push(ms.to_string());
            }
            let (index, wait): (i64, i64) = self
                .redis
                .eval::<_, String>(&self.script, &keys, &args)
                .await
                .map_err(|e| StoreError(e.to_string()))?;
            if index <= 0 {
                return Ok(Decision::Allowed);
            }
            Ok(Decision::Limited {
                index: usize::try_from(index - 1).unwrap_or(0),
                retry_after: Duration::from_millis(u64::try_from(wait).unwrap_or(1).max(1)),
            })
        })
    }
}

/// Puts `layers`' rate limits on Redis when `redis` is given: at start (`kept` is `None`) and
/// after a reload rebuilt them (`kept`: the ones before, left alone when the reload kept them).
pub fn share(
    layers: &mut crate::layer::Layers,
    config: &crate::config::Config,
    redis: Option<&Redis>,
    kept: Option<&Arc<crate::ratelimit::RateLimits>>,
) {
    let (Some(redis), Some(cfg), Some(rl)) = (redis, &config.rate_limiting, &layers.rate_limits)
    else {
        return;
    };
    if kept.is_some_and(|k| Arc::ptr_eq(k, rl)) {
        return;
    }
    let store = Arc::new(RedisRateLimitStore::new(redis.clone()));
    layers.rate_limits = Some(Arc::new(crate::ratelimit::RateLimits::with_store(cfg, store)));
}
