//! Rate limits (`rateLimiting`): token buckets on `tools/call`, as ToolHive's vMCP applies them.
//!
//! What counts, as in ToolHive (`pkg/vmcp/ratelimit/decorator.go`, `pkg/ratelimit/limiter.go`):
//! only `tools/call`, under the tool's advertised name (the name the client called, before it is
//! mapped to the backend's own; `tools[].name` means that name too). A call needs a token from
//! `shared`, from `perUser` (keyed by the caller's principal, issuer and subject), and from its
//! tool's `shared` and `perUser` buckets when `tools` lists it; it gets one from each or from
//! none ([`store`]). Anonymous callers have no per-user buckets: only shared ones apply.
//!
//! Where buckets live: in memory by default ([`memory`]); with `sessionStorage: {provider:
//! redis}` in Redis, shared by every replica (`crate::store::ratelimit`). A store that cannot
//! decide (Redis down or too slow, see `crate::store` for the deadline) fails the call with
//! JSON-RPC error -32603 "rate-limit storage unavailable" and `data.retryable: true`: ToolHive
//! lets such calls through, but limits that vanish whenever Redis does would let a burst reach
//! every backend at once; the call is refused fast and the client may retry.
//!
//! A refused call gets JSON-RPC error [`code::RATE_LIMITED`] (429, ToolHive's code) with
//! `data.retryAfterMs`, `data.retryAfterSeconds` (ToolHive's key) and `data.limit` (which
//! bucket), and HTTP 429 with `Retry-After` (`http/stream.rs`).
//!
//! Invariant: keys hold names and bindings, never a credential; the in-memory store is bounded
//! ([`memory::DEFAULT_MAX_KEYS`]).

pub mod memory;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::auth::Caller;
use crate::config::RateLimitConfig;
use crate::config::rate_limit::BucketConfig;
use crate::layer::{Op, Target};
use crate::protocol::ErrorObject;
use crate::protocol::jsonrpc::code;
use store::{Bucket, Check, Decision, Key, RateLimitStore};

/// The buckets of one configured tool.
#[derive(Debug, Clone, Copy, Default)]
struct ToolBuckets {
    shared: Option<Bucket>,
    per_user: Option<Bucket>,
}

/// The rate-limit layer.
pub struct RateLimits {
    shared: Option<Bucket>,
    per_user: Option<Bucket>,
    tools: HashMap<Arc<str>, ToolBuckets>,
    store: Arc<dyn RateLimitStore>,
    refused: AtomicU64,
}

fn bucket(b: &BucketConfig) -> Bucket {
    // Validated at load: 1 <= maxTokens <= u32::MAX, refillPeriod > 0.
    Bucket {
        max_tokens: u32::try_from(b.max_tokens.max(1)).unwrap_or(u32::MAX),
        refill_period: b.refill_period.max(Duration::from_nanos(1)),
    }
}

impl RateLimits {
    /// The layer for `cfg`, with buckets in memory.
    pub fn from_config(cfg: &RateLimitConfig) -> RateLimits {
        RateLimits::with_store(cfg, Arc::new(memory::MemoryStore::default()))
    }

    /// The layer for `cfg`, with buckets in `store`.
    pub fn with_store(cfg: &RateLimitConfig, store: Arc<dyn RateLimitStore>) -> RateLimits {
        let tools = cfg
            .tools
            .iter()
            .map(|t| {
                let b = ToolBuckets {
                    shared: t.shared.as_ref().map(bucket),
                    per_user: t.per_user.as_ref().map(bucket),
                };
                (Arc::from(t.name.as_str()), b)
            })
            .collect();
        RateLimits {
            shared: cfg.shared.as_ref().map(bucket),
            per_user: cfg.per_user.as_ref().map(bucket),
            tools,
            store,
            refused: AtomicU64::new(0),
        }
    }

    /// Calls refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The buckets a call of `tool` by `caller` needs, each with the config key it comes from.
    fn checks(&self, caller: &Caller, tool: &str) -> (Vec<Check>, Vec<String>) {
        let mut checks = Vec::with_capacity(4);
        let mut labels = Vec::with_capacity(4);
        let mut add = |key: Key, bucket: Bucket, label: String| {
            checks.push(Check { key, bucket });
            labels.push(label);
        };
        if let Some(b) = self.shared {
            add(Key::Shared, b, "rateLimiting.shared".into());
        }
        let tool_entry = self.tools.get_key_value(tool);
        if let Some((name, t)) = tool_entry
            && let Some(b) = t.shared
        {
            add(Key::SharedTool(name.clone()), b, format!("rateLimiting.tools[{name}].shared"));
        }
        // Only a verified principal has per-user buckets.
        if let Caller::User(_) = caller {
            let who = caller.binding();
            if let Some(b) = self.per_user {
                add(Key::User(who.clone()), b, "rateLimiting.perUser".into());
            }
            if let Some((name, t)) = tool_entry
                && let Some(b) = t.per_user
            {
                add(
                    Key::UserTool(name.clone(), who),
                    b,
                    format!("rateLimiting.tools[{name}].perUser"),
                );
            }
        }
        (checks, labels)
    }

    /// Takes the tokens `op` needs, or says how long to wait. Only `tools/call` counts.
    pub async fn check(&self, caller: &Caller, op: &Op<'_>) -> Result<(), ErrorObject> {
        let Target::Tool { name, .. } = &op.target else { return Ok(()) };
        if op.method != "tools/call" {
            return Ok(());
        }
        let (checks, labels) = self.checks(caller, name);
        if checks.is_empty() {
            return Ok(());
        }
        match self.store.consume(&checks).await {
            Ok(Decision::Allowed) => Ok(()),
            Ok(Decision::Limited { index, retry_after }) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                let label = labels.get(index).map(String::as_str).unwrap_or("rateLimiting");
                Err(limited(label, retry_after))
            }
            Err(e) => {
                tracing::warn!(tool = %name, error = %e, "rate limit check failed; call refused");
                Err(storage_unavailable())
            }
        }
    }
}

/// The error for a call refused by the bucket `label`.
pub fn limited(label: &str, retry_after: Duration) -> ErrorObject {
    let ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX).max(1);
    let secs = ms.div_ceil(1000);
    ErrorObject::with_data(
        code::RATE_LIMITED,
        format!("Rate limit exceeded ({label}); retry after {secs}s"),
        &serde_json::json!({ "retryAfterMs": ms, "retryAfterSeconds": secs, "limit": label }),
    )
}

/// The error for a call whose buckets could not be read (see the module doc).
pub fn storage_unavailable() -> ErrorObject {
    ErrorObject::with_data(
        code::INTERNAL_ERROR,
        "rate-limit storage unavailable",
        &serde_json::json!({ "retryable": true }),
    )
}

/// Seconds to put in `Retry-After` for a [`code::RATE_LIMITED`] error (at least 1).
pub fn retry_after_secs(e: &ErrorObject) -> u64 {
    e.data
        .as_deref()
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d.get()).ok())
        .and_then(|d| d.get("retryAfterSeconds").and_then(serde_json::Value::as_u64))
        .unwrap_or(1)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Identity;
    use crate::auth::identity::Secret;

    fn cfg(text: &str) -> RateLimitConfig {
        let yaml = format!("name: gw\nrateLimiting:\n{text}");
        crate::config::parse(&yaml, "t.yaml").unwrap().rate_limiting.unwrap()
    }

    fn user(sub: &str) -> Caller {
        Caller::User(Arc::new(Identity {
            issuer: "https://idp".into(),
            subject: sub.into(),
            claims: Default::default(),
            token: Secret::new("t"),
            expires_at: None,
            scopes: vec![],
        }))
    }

    fn call(tool: &str) -> Op<'static> {
        Op {
            method: "tools/call",
            target: Target::Tool { name: tool.into(), backend: None },
            started: std::time::Instant::now(),
            catalog: None,
        }
    }

    #[tokio::test]
    async fn per_user_and_per_tool_buckets() {
        let rl = RateLimits::from_config(&cfg(
            "  perUser: {maxTokens: 2, refillPeriod: 1h}\n  tools:\n    - name: slow\n      \
             shared: {maxTokens: 1, refillPeriod: 1h}\n",
        ));
        let (alice, bob) = (user("alice"), user("bob"));
        assert!(rl.check(&alice, &call("echo")).await.is_ok());
        assert!(rl.check(&alice, &call("echo")).await.is_ok());
        let e = rl.check(&alice, &call("echo")).await.unwrap_err();
        assert_eq!(e.code, 429);
        assert!(e.message.starts_with("Rate limit exceeded (rateLimiting.perUser)"), "{e:?}");
        let data: serde_json::Value = serde_json::from_str(e.data.as_ref().unwrap().get()).unwrap();
        assert_eq!(data["limit"], "rateLimiting.perUser");
        assert!(data["retryAfterMs"].as_u64().unwrap() > 1_700_000, "{data}");
        assert_eq!(data["retryAfterSeconds"], 1800);
        assert_eq!(retry_after_secs(&e), 1800);
        // Bob is unaffected; the shared tool bucket applies to everyone, anonymous included.
        assert!(rl.check(&bob, &call("slow")).await.is_ok());
        let e = rl.check(&Caller::Anonymous, &call("slow")).await.unwrap_err();
        assert!(e.message.contains("rateLimiting.tools[slow].shared"), "{e:?}");
        // Anonymous callers have no per-user bucket.
        for _ in 0..5 {
            assert!(rl.check(&Caller::Anonymous, &call("echo")).await.is_ok());
        }
        // Other methods never count.
        let list = Op { method: "tools/list", target: Target::None, ..call("x") };
        for _ in 0..5 {
            assert!(rl.check(&alice, &list).await.is_ok());
        }
        assert_eq!(rl.refused(), 2);
    }
}
