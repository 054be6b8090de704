//! `rateLimiting`: token buckets on `tools/call` (see `crate::ratelimit`).
//!
//! The schema is ToolHive's (`pkg/ratelimit/types`): `shared` (one bucket for everyone),
//! `perUser` (one bucket per authenticated principal) and `tools[]` (`name`, `shared`,
//! `perUser`: extra buckets for calls of one tool, by its advertised name). A bucket is
//! `{maxTokens, refillPeriod}`: `maxTokens` calls at once, refilled evenly over `refillPeriod`.
//! A call must get a token from every bucket that applies to it.
//!
//! ToolHive's vMCP keeps buckets in Redis (`sessionStorage`) and refuses the block without it;
//! vmcp keeps them in memory, per process, without it, and in Redis, shared by every replica,
//! with `sessionStorage: {provider: redis}`.
//!
//! Invariant: a `RateLimitConfig` that leaves `load` has at least one bucket, every bucket has
//! `maxTokens >= 1` and a non-zero `refillPeriod`, and tool names are unique.

use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::validate::Finding;

/// `rateLimiting`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitConfig {
    /// One bucket shared by every caller.
    #[serde(default)]
    pub shared: Option<BucketConfig>,
    /// One bucket per authenticated principal (anonymous callers have none).
    #[serde(default)]
    pub per_user: Option<BucketConfig>,
    /// Extra buckets for calls of one tool.
    #[serde(default)]
    pub tools: Vec<ToolRateLimitConfig>,
}

/// A token bucket: `maxTokens` calls at once, refilled evenly over `refillPeriod`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BucketConfig {
    /// Capacity: the burst a full bucket allows.
    pub max_tokens: i64,
    /// Time to refill an empty bucket (Go duration).
    #[serde(with = "duration")]
    pub refill_period: Duration,
}

/// `rateLimiting.tools[]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolRateLimitConfig {
    /// The tool's advertised name (as clients call it, after prefixing and overrides).
    pub name: String,
    /// One bucket for this tool shared by every caller.
    #[serde(default)]
    pub shared: Option<BucketConfig>,
    /// One bucket for this tool per authenticated principal.
    #[serde(default)]
    pub per_user: Option<BucketConfig>,
}

fn check_bucket(b: &BucketConfig, path: &str, out: &mut Vec<Finding>) {
    if b.max_tokens < 1 || b.max_tokens > i64::from(u32::MAX) {
        out.push(Finding {
            path: format!("{path}.maxTokens"),
            message: format!("must be between 1 and {}", u32::MAX),
        });
    }
    if b.refill_period.is_zero() {
        out.push(Finding {
            path: format!("{path}.refillPeriod"),
            message: "must be greater than zero".into(),
        });
    }
}

/// Checks the block.
pub(crate) fn check(rl: &RateLimitConfig) -> Vec<Finding> {
    const P: &str = "rateLimiting";
    let mut out = Vec::new();
    if rl.shared.is_none() && rl.per_user.is_none() && rl.tools.is_empty() {
        out.push(Finding {
            path: P.into(),
            message: "at least one of shared, perUser or tools must be configured".into(),
        });
    }
    if let Some(b) = &rl.shared {
        check_bucket(b, &format!("{P}.shared"), &mut out);
    }
    if let Some(b) = &rl.per_user {
        check_bucket(b, &format!("{P}.perUser"), &mut out);
    }
    let mut seen = std::collections::HashSet::new();
    for (i, t) in rl.tools.iter().enumerate() {
        let p = format!("{P}.tools[{i}]");
        if t.name.is_empty() {
            out.push(Finding { path: format!("{p}.name"), message: "must not be empty".into() });
        } else if !seen.insert(t.name.as_str()) {
            out.push(Finding {
                path: format!("{p}.name"),
                message: format!("duplicate tool {:?}: one entry per tool", t.name),
            });
        }
        if t.shared.is_none() && t.per_user.is_none() {
            out.push(Finding {
                path: p.clone(),
                message: "at least one of shared or perUser must be configured".into(),
            });
        }
        if let Some(b) = &t.shared {
            check_bucket(b, &format!("{p}.shared"), &mut out);
        }
        if let Some(b) = &t.per_user {
            check_bucket(b, &format!("{p}.perUser"), &mut out);
        }
    }
    out
}

/// Advisory lines: per-user buckets that can never apply.
pub fn warnings(rl: &RateLimitConfig, anonymous: bool) -> Vec<String> {
    let per_user = rl.per_user.is_some() || rl.tools.iter().any(|t| t.per_user.is_some());
    if anonymous && per_user {
        vec![
            "rateLimiting: perUser buckets apply to authenticated callers only; with anonymous \
             incomingAuth only the shared buckets limit calls"
                .to_owned(),
        ]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::super::validate::tests::problems;
    use super::super::{parse, validate_warnings};
    use super::*;

    const HEAD: &str = "name: gw\nbackends:\n  - name: a\n    transport: streamable-http\n    url: https://h/mcp\n";

    #[test]
    fn toolhive_schema_parses() {
        let text = format!(
            "{HEAD}rateLimiting:\n  shared: {{maxTokens: 100, refillPeriod: 1m0s}}\n  \
             perUser: {{maxTokens: 10, refillPeriod: 30s}}\n  tools:\n    - name: a_echo\n      \
             perUser: {{maxTokens: 2, refillPeriod: 1h}}\n"
        );
        let cfg = parse(&text, "t.yaml").unwrap();
        let rl = cfg.rate_limiting.unwrap();
        assert_eq!(
            rl.shared,
            Some(BucketConfig { max_tokens: 100, refill_period: Duration::from_secs(60) })
        );
        assert_eq!(rl.per_user.unwrap().max_tokens, 10);
        assert_eq!(rl.tools[0].name, "a_echo");
        assert_eq!(rl.tools[0].per_user.as_ref().unwrap().refill_period.as_secs(), 3600);
        assert!(rl.tools[0].shared.is_none());
    }

    #[test]
    fn bad_values_name_key_and_line() {
        let ps = problems(&format!(
            "{HEAD}rateLimiting:\n  shared: {{maxTokens: 0, refillPeriod: 0s}}\n  tools:\n    \
             - name: t\n    - name: t\n      shared: {{maxTokens: 1, refillPeriod: 1s}}\n"
        ));
        let got: Vec<_> = ps.iter().map(|(l, p, _)| (*l, p.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(7), "rateLimiting.shared.maxTokens"),
                (Some(7), "rateLimiting.shared.refillPeriod"),
                (Some(9), "rateLimiting.tools[0]"),
                (Some(10), "rateLimiting.tools[1].name"),
            ],
            "{ps:#?}"
        );
        let ps = problems(&format!("{HEAD}rateLimiting: {{}}\n"));
        assert_eq!(ps[0].1, "rateLimiting");
        assert!(ps[0].2.starts_with("at least one of shared"), "{}", ps[0].2);
        // A bucket needs both keys.
        let err = match parse(&format!("{HEAD}rateLimiting:\n  shared: {{maxTokens: 1}}\n"), "t") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        };
        assert!(err.contains("refillPeriod"), "{err}");
    }

    #[test]
    fn per_user_without_authentication_is_a_warning() {
        let text = format!("{HEAD}rateLimiting:\n  perUser: {{maxTokens: 1, refillPeriod: 1s}}\n");
        let w = validate_warnings(&parse(&text, "t.yaml").unwrap());
        assert!(w.iter().any(|l| l.starts_with("rateLimiting: perUser buckets")), "{w:?}");
    }
}
