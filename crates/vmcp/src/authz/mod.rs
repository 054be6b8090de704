//! Cedar authorization (`incomingAuth.authz: {type: cedar}`), with ToolHive's entity model so
//! its policies work unchanged (see [`entities`]).
//!
//! Two entry points, each called from one place: [`Authz::admit`] from `layer::serve` for every
//! request (tool calls, prompt gets, resource reads and subscriptions are decided; protocol
//! methods and lists pass; any other method is denied, as in ToolHive), and [`visible`] from
//! each list handler, which keeps only the items the caller could use: tools it may call,
//! prompts it may get, resources it may read. Resource templates are not filtered (ToolHive
//! does not either); reads through them are decided per URI. A denied request gets JSON-RPC
//! error -32006 (`Unauthorized`), which the HTTP edge answers with 403.
//!
//! Decisions follow ToolHive: default deny, `forbid` wins, and an error while evaluating any
//! policy denies the request (a policy reading a claim the token lacks without `has` denies).
//!
//! Invariants: policies are parsed and validated once, at start ([`compile`]); a caller's
//! principal and decisions are memoised per token hash ([`memo`], which says why that returns
//! exactly what evaluation would); otherwise the entities are built once per request (one set
//! for a whole list). Nothing here keeps a token or an identity; the upstream token of
//! `primaryUpstreamProvider` is fetched per request ([`upstream`]).

pub mod compile;
pub mod entities;
mod memo;
mod upstream;

use std::borrow::Cow;
use std::sync::Arc;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityUid, PolicySet, Request,
    RestrictedExpression,
};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use self::entities::{Item, Kind, Types};
use self::memo::{Memo, Who};
use crate::auth::Caller;
use crate::catalog::Catalog;
use crate::config::authz::{AuthzConfig, AuthzKind};
use crate::dispatch::Cx;
use crate::gateway::Gateway;
use crate::layer::{Op, Target};
use crate::protocol::ErrorObject;
use crate::protocol::jsonrpc::code;

/// Why authorization could not be set up (the loader reports the same problems, located).
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct AuthzError(pub Vec<compile::CompileError>);

/// The compiled policies and what evaluation needs; shared by every request.
pub struct Authz {
    policies: PolicySet,
    statics: Entities,
    types: Types,
    /// The gateway's `name`: resources are children of `MCP::"<name>"`.
    server: String,
    group_claim: Option<String>,
    role_claim: Option<String>,
    primary_upstream: Option<String>,
    uses_args: bool,
    authorizer: Authorizer,
    memo: Memo,
}

/// The JSON-RPC error of a denied request (HTTP 403). It says nothing about the policy: the
/// decision's reasons can name claims and other items.
pub fn denied() -> ErrorObject {
    ErrorObject::new(code::ACCESS_DENIED, "Unauthorized")
}

/// Which list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    /// `tools/list`: tools the caller may call.
    Tools,
    /// `prompts/list`: prompts the caller may get.
    Prompts,
    /// `resources/list`: resources the caller may read.
    Resources,
}

/// Who is asking, as Cedar sees it: built once per request.
struct Subject {
    uid: EntityUid,
    entity: Entity,
    /// `claim_*` pairs, for the context.
    claims: Vec<(String, RestrictedExpression)>,
}

impl Authz {
    /// Builds the authorizer for `incomingAuth.authz`; `None` when there is no authorization
    /// (no block, or `type: none`).
    pub fn from_config(config: &crate::config::Config) -> Result<Option<Authz>, AuthzError> {
        let Some(cfg) = &config.incoming_auth.authz else { return Ok(None) };
        if cfg.kind == AuthzKind::None {
            return Ok(None);
        }
        Authz::new(cfg, &config.name).map(Some)
    }

    /// Compiles `cfg` for the gateway called `server`.
    pub fn new(cfg: &AuthzConfig, server: &str) -> Result<Authz, AuthzError> {
        let compiled = compile::compile(cfg, server).map_err(AuthzError)?;
        for w in &compiled.warnings {
            tracing::warn!("{w}");
        }
        Ok(Authz {
            policies: compiled.policies,
            statics: compiled.entities,
            types: Types::new(compiled.group_type),
            server: server.to_owned(),
            group_claim: cfg.group_claim_name.clone().filter(|s| !s.is_empty()),
            role_claim: cfg.role_claim_name.clone().filter(|s| !s.is_empty()),
            primary_upstream: cfg.primary_upstream_provider().map(str::to_owned),
            uses_args: compiled.uses_args,
            authorizer: Authorizer::new(),
            memo: Memo::new(),
        })
    }

    /// Decides whether the request `op` may go on to dispatch.
    pub async fn admit(
        &self,
        gw: &Gateway,
        cx: &Cx,
        op: &Op<'_>,
        params: Option<&RawValue>,
    ) -> Result<(), ErrorObject> {
        let (kind, id, backend) = match (&op.target, op.method) {
            (Target::Tool { name, backend }, _) => (Kind::Tool, name.as_str(), backend),
            (Target::Prompt { name, backend }, _) => (Kind::Prompt, name.as_str(), backend),
            (Target::Resource { uri, backend }, _) => (Kind::Resource, uri.as_str(), backend),
            (Target::None, method) if always_allowed(method) => return Ok(()),
            // A call without its name or URI: dispatch refuses it before any backend.
            (Target::None, m) if NAMED.contains(&m) => return Ok(()),
            (Target::None, method) => {
                tracing::debug!(method, "method denied: not an MCP operation authorization knows");
                return Err(denied());
            }
        };
        // The catalog the target was resolved in (`layer::Op::read`): not resolved again.
        let annotations = match (kind, &op.catalog) {
            (Kind::Tool, Some(catalog)) => {
                tool_entry(catalog, id).and_then(|t| t.get("annotations"))
            }
            _ => None,
        };
        let args = match (self.uses_args, kind) {
            (true, Kind::Tool | Kind::Prompt) => arguments(params),
            _ => Vec::new(),
        };
        let item = Item { id, backend: backend.as_deref(), annotations, args: &args };
        let who = self.who(&cx.caller);
        // Arguments are not in the memo's key: decisions that read them are not memoised.
        let memo = who.as_ref().filter(|_| args.is_empty() && !self.uses_args);
        let allowed = match memo.and_then(|w| self.memo.decision(w, kind, &item)) {
            Some(allowed) => allowed,
            None => {
                let subject = self.subject(gw, &cx.caller, who.as_ref()).await?;
                let allowed =
                    self.decide(&subject, kind, std::slice::from_ref(&item)).first() == Some(&true);
                if let Some(w) = memo {
                    self.memo.keep_decision(w, kind, &item, allowed);
                }
                allowed
            }
        };
        if allowed { Ok(()) } else { Err(denied()) }
    }

    /// The memo key of `caller`; `None` when nothing about it may be memoised.
    fn who(&self, caller: &Caller) -> Option<Who> {
        // Under `primaryUpstreamProvider` the claims come from an upstream token that
        // refreshes while the client's token stays the same.
        if self.primary_upstream.is_some() {
            return None;
        }
        Who::of(caller, now_secs())
    }

    /// The caller as a Cedar principal: its token's claims (or its upstream token's), groups
    /// and roles.
    async fn subject(
        &self,
        gw: &Gateway,
        caller: &Caller,
        who: Option<&Who>,
    ) -> Result<Arc<Subject>, ErrorObject> {
        if let Some(subject) = who.and_then(|w| self.memo.subject(w)) {
            return Ok(subject);
        }
        let anonymous;
        let request: &Map<String, Value> = match caller {
            Caller::User(id) => &id.claims,
            Caller::Anonymous => {
                // The memo key's second, so the memoised principal is that second's.
                let now = match who {
                    Some(Who::Anonymous(secs)) => *secs,
                    _ => now_secs(),
                };
                anonymous = anonymous_claims(now);
                &anonymous
            }
            // Work with no client request behind it never reaches authorization.
            Caller::System | Caller::Teardown(_) => return Err(denied()),
        };
        let claims = match (&self.primary_upstream, &gw.auth_server) {
            (None, _) => Cow::Borrowed(request),
            (Some(provider), Some(e)) => {
                upstream::claims(caller, request, &e.issuer, provider, &*e.tokens).await?
            }
            (Some(_), None) => return Err(denied()),
        };
        // ToolHive's principal is the claims' `sub`; none: no principal, denied.
        let sub = match (claims.get("sub").and_then(Value::as_str), caller) {
            (Some(s), _) if !s.is_empty() => s.to_owned(),
            (_, Caller::User(id)) if self.primary_upstream.is_none() && !id.subject.is_empty() => {
                id.subject.clone()
            }
            _ => return Err(denied()),
        };
        let groups =
            entities::groups(&claims, self.group_claim.as_deref(), self.role_claim.as_deref());
        let attrs = entities::claim_attrs(&claims);
        let entity = entities::principal(&self.types, &sub, &attrs, &groups).ok_or_else(denied)?;
        let subject = Arc::new(Subject { uid: entity.uid(), entity, claims: attrs });
        if let Some(w) = who {
            self.memo.keep_subject(w.clone(), subject.clone());
        }
        Ok(subject)
    }

    /// One decision per item of a list (no arguments): memoised ones looked up, the rest
    /// decided together against one entity set, then memoised.
    async fn decide_memoised(
        &self,
        gw: &Gateway,
        cx: &Cx,
        who: Option<&Who>,
        kind: Kind,
        items: &[Item<'_>],
    ) -> Result<Vec<bool>, ErrorObject> {
        let Some(w) = who else {
            let subject = self.subject(gw, &cx.caller, None).await?;
            return Ok(self.decide(&subject, kind, items));
        };
        let mut decisions: Vec<Option<bool>> =
            items.iter().map(|i| self.memo.decision(w, kind, i)).collect();
        let missing: Vec<usize> = (0..items.len()).filter(|&i| decisions[i].is_none()).collect();
        if !missing.is_empty() {
            let subject = self.subject(gw, &cx.caller, who).await?;
            let unknown: Vec<Item<'_>> = missing
                .iter()
                .filter_map(|&i| items.get(i))
                .map(|i| Item { args: &[], ..*i })
                .collect();
            let fresh = self.decide(&subject, kind, &unknown);
            for ((&i, item), allowed) in missing.iter().zip(&unknown).zip(fresh) {
                self.memo.keep_decision(w, kind, item, allowed);
                if let Some(slot) = decisions.get_mut(i) {
                    *slot = Some(allowed);
                }
            }
        }
        Ok(decisions.into_iter().map(|d| d == Some(true)).collect())
    }

    /// One decision per item, all against one entity set built for this request.
    fn decide(&self, subject: &Subject, kind: Kind, items: &[Item<'_>]) -> Vec<bool> {
        let (action, action_entity) = entities::action(&self.types, kind);
        let resources = items
            .iter()
            .filter_map(|i| entities::resource(&self.types, kind, &self.server, i))
            .collect::<Vec<_>>();
        // Request entities replace `entitiesJson` ones with the same id, as in ToolHive.
        let request_entities =
            std::iter::once(subject.entity.clone()).chain(action_entity).chain(resources);
        let entities = match self.statics.clone().upsert_entities(request_entities, None) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "authorization entities could not be built; denied");
                return vec![false; items.len()];
            }
        };
        items
            .iter()
            .map(|item| {
                let context = subject.claims.iter().chain(item.args.iter()).cloned();
                let Ok(context) = Context::from_pairs(context) else { return false };
                let resource = entities::resource_uid(&self.types, kind, item.id);
                let Ok(request) =
                    Request::new(subject.uid.clone(), action.clone(), resource, context, None)
                else {
                    return false;
                };
                let response = self.authorizer.is_authorized(&request, &self.policies, &entities);
                let errors = response.diagnostics().errors().count();
                if errors > 0 {
                    // The errors can quote claim values: count only.
                    tracing::debug!(errors, item = item.id, "policy evaluation errors: denied");
                }
                response.decision() == Decision::Allow && errors == 0
            })
            .collect()
    }
}

/// Methods with nothing to decide (ToolHive's always-allowed list, plus the lists, which are
/// filtered instead).
fn always_allowed(method: &str) -> bool {
    matches!(
        method,
        "initialize"
            | "ping"
            | "server/discover"
            | "subscriptions/listen"
            | "logging/setLevel"
            | "completion/complete"
            | "roots/list"
            | "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
    ) || method.starts_with("notifications/")
}

/// Methods that name an item; without the name they are dispatch's to refuse.
const NAMED: [&str; 5] =
    ["tools/call", "prompts/get", "resources/read", "resources/subscribe", "resources/unsubscribe"];

/// Seconds since the Unix epoch.
fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// ToolHive's anonymous identity at `now`: principal `Client::"anonymous"` with these claims.
fn anonymous_claims(now: u64) -> Map<String, Value> {
    let v = serde_json::json!({
        "sub": "anonymous",
        "iss": "toolhive-local",
        "aud": "toolhive",
        "exp": now + 24 * 3600,
        "iat": now,
        "nbf": now,
        "email": "anonymous@localhost",
        "name": "Anonymous User",
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// `arg_*` attributes from a request's `arguments`.
fn arguments(params: Option<&RawValue>) -> Vec<(String, RestrictedExpression)> {
    #[derive(serde::Deserialize)]
    struct P {
        #[serde(default)]
        arguments: Option<Map<String, Value>>,
    }
    params
        .and_then(|p| serde_json::from_str::<P>(p.get()).ok())
        .and_then(|p| p.arguments)
        .map(|a| entities::arg_attrs(&a))
        .unwrap_or_default()
}

/// The advertised tool called `name` (the catalog's list is sorted by name).
fn tool_entry<'a>(catalog: &'a Catalog, name: &str) -> Option<&'a Value> {
    let tools = catalog.tools();
    fn name_of(t: &Value) -> &str {
        t.get("name").and_then(Value::as_str).unwrap_or_default()
    }
    tools.binary_search_by(|t| name_of(t).cmp(name)).ok().and_then(|i| tools.get(i))
}

/// The positions of the items of `list` the caller may use, for the list handlers: `None` (all
/// of them) without authorization. A caller whose principal cannot be built (no upstream token, ...) gets that
/// error rather than a list.
pub async fn visible(
    gw: &Gateway,
    cx: &Cx,
    list: List,
    catalog: &Catalog,
) -> Result<Option<Vec<usize>>, ErrorObject> {
    let (items, kind, key) = match list {
        List::Tools => (catalog.tools(), Kind::Tool, "name"),
        List::Prompts => (catalog.prompts(), Kind::Prompt, "name"),
        List::Resources => (catalog.resources(), Kind::Resource, "uri"),
    };
    let Some(authz) = gw.layers.load().authz.clone() else { return Ok(None) };
    let who = authz.who(&cx.caller);
    // Items without a name or URI cannot be decided on: left out.
    let (positions, candidates): (Vec<usize>, Vec<Item<'_>>) = items
        .iter()
        .enumerate()
        .filter_map(|(i, v)| {
            let id = v.get(key)?.as_str()?;
            let backend = match kind {
                Kind::Tool => catalog.tool(id).map(|r| &*r.backend),
                Kind::Prompt => catalog.prompt(id).map(|r| &*r.backend),
                Kind::Resource => catalog.resource(id).map(|b| &**b),
            };
            let annotations = if kind == Kind::Tool { v.get("annotations") } else { None };
            Some((i, Item { id, backend, annotations, args: &[] }))
        })
        .unzip();
    let decisions = authz.decide_memoised(gw, cx, who.as_ref(), kind, &candidates).await?;
    let kept = positions
        .into_iter()
        .zip(decisions)
        .filter_map(|(i, allowed)| allowed.then_some(i))
        .collect::<Vec<_>>();
    Ok(Some(kept))
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
