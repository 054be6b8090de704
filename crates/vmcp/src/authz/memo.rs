//! Memoised principals and decisions, so that a caller's second call to a tool costs a hash and
//! two cache lookups instead of building Cedar entities and evaluating policies again.
//!
//! Why this is sound: a Cedar decision is a pure function of the policies, the static entities
//! (`entitiesJson`), the principal (built from the token's claims), the action, the resource
//! entity and the context (the claims, plus `arg_*` when policies read arguments). Policies and
//! static entities belong to one [`super::Authz`], which a reload replaces whole, memo included.
//! So a memo keyed by everything else that varies returns exactly what evaluation would:
//!
//! - the principal is keyed by the SHA-256 of the bearer token (the token fixes its claims; the
//!   token itself is never kept), or, for anonymous callers, by the current Unix second
//!   (ToolHive's anonymous claims carry `iat`/`exp` from the clock);
//! - a decision adds the item: kind, advertised name or URI, backend, and the four tool
//!   annotation hints, which are all of the catalog that reaches the resource entity.
//!
//! Not memoised: decisions on requests whose arguments the policies read (`arg_*`), and
//! everything under `primaryUpstreamProvider` (the claims come from an upstream token that
//! refreshes under the same client token).
//!
//! Bounds: [`MAX_SUBJECTS`] principals and [`MAX_DECISIONS`] decisions, each entry dropped
//! after [`TTL`]; a full cache evicts the least useful entry (an evicted entry is evaluated
//! again, never wrong).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Subject;
use super::entities::{self, Kind};
use crate::auth::Caller;

/// Principals held at once.
pub const MAX_SUBJECTS: u64 = 10_000;
/// Decisions held at once.
pub const MAX_DECISIONS: u64 = 100_000;
/// Longest time an entry is kept (frees memory of callers who went away).
pub const TTL: Duration = Duration::from_secs(300);

/// Who asked, as a cache key (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Who {
    /// Anonymous, during this Unix second.
    Anonymous(u64),
    /// The SHA-256 of the bearer token.
    Token([u8; 32]),
}

impl Who {
    /// The key of `caller`, when its principal can be memoised.
    pub(super) fn of(caller: &Caller, now_secs: u64) -> Option<Who> {
        match caller {
            Caller::Anonymous => Some(Who::Anonymous(now_secs)),
            Caller::User(id) => Some(Who::Token(Sha256::digest(id.token.expose()).into())),
            Caller::System | Caller::Teardown(_) => None,
        }
    }
}

/// One decision's key: the caller and every input of the resource entity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DecisionKey {
    who: Who,
    kind: Kind,
    id: Box<str>,
    backend: Option<Box<str>>,
    hints: [Option<bool>; 4],
}

/// The memo of one `Authz`.
pub(super) struct Memo {
    subjects: moka::sync::Cache<Who, Arc<Subject>>,
    decisions: moka::sync::Cache<DecisionKey, bool>,
}

impl Memo {
    pub(super) fn new() -> Memo {
        Memo {
            subjects: moka::sync::Cache::builder()
                .max_capacity(MAX_SUBJECTS)
                .time_to_live(TTL)
                .build(),
            decisions: moka::sync::Cache::builder()
                .max_capacity(MAX_DECISIONS)
                .time_to_live(TTL)
                .build(),
        }
    }

    pub(super) fn subject(&self, who: &Who) -> Option<Arc<Subject>> {
        self.subjects.get(who)
    }

    pub(super) fn keep_subject(&self, who: Who, subject: Arc<Subject>) {
        self.subjects.insert(who, subject);
    }

    pub(super) fn decision(
        &self,
        who: &Who,
        kind: Kind,
        item: &entities::Item<'_>,
    ) -> Option<bool> {
        self.decisions.get(&key(who, kind, item))
    }

    pub(super) fn keep_decision(
        &self,
        who: &Who,
        kind: Kind,
        item: &entities::Item<'_>,
        allowed: bool,
    ) {
        self.decisions.insert(key(who, kind, item), allowed);
    }
}

fn key(who: &Who, kind: Kind, item: &entities::Item<'_>) -> DecisionKey {
    DecisionKey {
        who: who.clone(),
        kind,
        id: item.id.into(),
        backend: item.backend.map(Into::into),
        hints: entities::hints(item.annotations.and_then(Value::as_object)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::identity::{Identity, Secret};

    fn user(token: &str) -> Caller {
        Caller::User(Arc::new(Identity {
            issuer: "https://idp".into(),
            subject: "same-sub".into(),
            claims: serde_json::Map::new(),
            token: Secret::new(token.to_owned()),
            expires_at: None,
            scopes: Vec::new(),
        }))
    }

    #[test]
    fn a_decision_is_found_only_under_every_input_it_was_made_with() {
        let memo = Memo::new();
        let read_only = serde_json::json!({ "readOnlyHint": true });
        let writes = serde_json::json!({ "readOnlyHint": false });
        let item = |annotations, backend| entities::Item {
            id: "t",
            backend,
            annotations: Some(annotations),
            args: &[],
        };
        let a = Who::of(&user("token-a"), 0).unwrap();
        memo.keep_decision(&a, Kind::Tool, &item(&read_only, Some("b")), true);
        assert_eq!(memo.decision(&a, Kind::Tool, &item(&read_only, Some("b"))), Some(true));
        // Another token of the same subject: its claims may differ.
        let b = Who::of(&user("token-b"), 0).unwrap();
        assert_eq!(memo.decision(&b, Kind::Tool, &item(&read_only, Some("b"))), None);
        // Another annotation, backend or kind is another resource entity.
        assert_eq!(memo.decision(&a, Kind::Tool, &item(&writes, Some("b"))), None);
        assert_eq!(memo.decision(&a, Kind::Tool, &item(&read_only, None)), None);
        assert_eq!(memo.decision(&a, Kind::Prompt, &item(&read_only, Some("b"))), None);
        // Anonymous claims carry the clock: another second is another principal.
        let anon = Who::of(&Caller::Anonymous, 7).unwrap();
        memo.keep_decision(&anon, Kind::Tool, &item(&read_only, Some("b")), true);
        let later = Who::of(&Caller::Anonymous, 8).unwrap();
        assert_eq!(memo.decision(&later, Kind::Tool, &item(&read_only, Some("b"))), None);
        assert_eq!(Who::of(&Caller::System, 0), None);
    }
}
