//! Cedar entities and values from a request, in ToolHive's naming so its policies work unchanged:
//!
//! - principal `Client::"<sub>"`, every claim as attribute `claim_<name>`, its groups and roles
//!   as parents of the group entity type (default `THVGroup`);
//! - resource `Tool::"<advertised name>"`, `Prompt::"<advertised name>"` or
//!   `Resource::"<uri>"`, with `name`, `operation`, `feature` (a resource also `uri`, a tool its
//!   annotation hints), the call's arguments as `arg_<name>`, and as parents `MCP::"<gateway
//!   name>"` and, a vmcp addition, `Backend::"<backend>"` (also attribute `backend`);
//! - context: the same `claim_*` and `arg_*` attributes.
//!
//! Values convert as ToolHive's do: strings, booleans, numbers as `decimal` (Go decodes JSON
//! numbers as floats), arrays as sets, objects as records; nesting deeper than [`MAX_DEPTH`] and
//! nulls are dropped. An argument that is an array, object or null becomes only
//! `arg_<name>_present: true`.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use serde_json::{Map, Value};

/// Deepest nesting of arrays and objects converted from a claim (ToolHive's bound); deeper
/// parts are dropped. Claims may come from an upstream token read without verification.
pub const MAX_DEPTH: usize = 10;

/// Group claims tried, in order, when `groupClaimName` is unset or absent from the token.
pub const DEFAULT_GROUP_CLAIMS: [&str; 3] = ["groups", "roles", "cognito:groups"];

/// A claim or argument value as Cedar sees it; `None` when it has no Cedar form.
pub fn value(v: &Value, depth: usize) -> Option<RestrictedExpression> {
    if depth > MAX_DEPTH {
        return None;
    }
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(RestrictedExpression::new_bool(*b)),
        Value::String(s) => Some(RestrictedExpression::new_string(s.clone())),
        Value::Number(n) => decimal(n).map(RestrictedExpression::new_decimal),
        Value::Array(items) => {
            Some(RestrictedExpression::new_set(items.iter().filter_map(|i| value(i, depth + 1))))
        }
        Value::Object(m) => RestrictedExpression::new_record(
            m.iter().filter_map(|(k, v)| Some((k.clone(), value(v, depth + 1)?))),
        )
        .ok(),
    }
}

/// A JSON number as a Cedar decimal literal (four fractional digits, within i64 / 10^4), as
/// ToolHive converts its float64 claims; `None` out of range.
pub fn decimal(n: &serde_json::Number) -> Option<String> {
    let scaled: i128 = if let Some(i) = n.as_i64() {
        i128::from(i) * 10_000
    } else if let Some(u) = n.as_u64() {
        i128::from(u) * 10_000
    } else {
        let f = n.as_f64()? * 10_000.0;
        if !f.is_finite() || f.abs() >= 9.2e18 {
            return None;
        }
        f.round() as i128
    };
    if scaled > i128::from(i64::MAX) || scaled < i128::from(i64::MIN) {
        return None;
    }
    let sign = if scaled < 0 { "-" } else { "" };
    let abs = scaled.unsigned_abs();
    Some(format!("{sign}{}.{:04}", abs / 10_000, abs % 10_000))
}

/// `claim_<name>` for every claim that has a Cedar form.
pub fn claim_attrs(claims: &Map<String, Value>) -> Vec<(String, RestrictedExpression)> {
    claims.iter().filter_map(|(k, v)| Some((format!("claim_{k}"), value(v, 0)?))).collect()
}

/// `arg_<name>` for string, boolean and number arguments; `arg_<name>_present: true` for the
/// others (ToolHive notes only their presence).
pub fn arg_attrs(args: &Map<String, Value>) -> Vec<(String, RestrictedExpression)> {
    args.iter()
        .filter_map(|(k, v)| match v {
            Value::String(_) | Value::Bool(_) | Value::Number(_) => {
                Some((format!("arg_{k}"), value(v, 0)?))
            }
            _ => Some((format!("arg_{k}_present"), RestrictedExpression::new_bool(true))),
        })
        .collect()
}

/// A claim by top-level name (URL-style names contain dots), else by dot path
/// (`realm_access.roles`).
fn resolve<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return None;
    }
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// The strings of an array claim; `None` when absent or not an array (an empty array is
/// `Some`: the IdP said "no groups", so no fallback).
fn strings(claims: &Map<String, Value>, name: &str) -> Option<Vec<String>> {
    let items = resolve(claims, name)?.as_array()?;
    Some(items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
}

/// The caller's groups (from `group_claim`, else the first of [`DEFAULT_GROUP_CLAIMS`] present)
/// and roles (from `role_claim`), first occurrence kept.
pub fn groups(
    claims: &Map<String, Value>,
    group_claim: Option<&str>,
    role_claim: Option<&str>,
) -> Vec<String> {
    let mut found = group_claim.and_then(|c| strings(claims, c));
    if found.is_none() {
        found = DEFAULT_GROUP_CLAIMS.iter().find_map(|c| strings(claims, c));
    }
    let roles = role_claim.and_then(|c| strings(claims, c)).unwrap_or_default();
    let mut seen = HashSet::new();
    found.unwrap_or_default().into_iter().chain(roles).filter(|g| seen.insert(g.clone())).collect()
}

/// The entity types vmcp builds, parsed once.
#[derive(Clone)]
pub struct Types {
    /// `Client`.
    pub client: EntityTypeName,
    /// `Action`.
    pub action: EntityTypeName,
    /// `Tool`.
    pub tool: EntityTypeName,
    /// `Prompt`.
    pub prompt: EntityTypeName,
    /// `Resource`.
    pub resource: EntityTypeName,
    /// `MCP`.
    pub mcp: EntityTypeName,
    /// `Backend`.
    pub backend: EntityTypeName,
    /// `groupEntityType`.
    pub group: EntityTypeName,
}

impl Types {
    /// The fixed names, and `group`.
    pub fn new(group: EntityTypeName) -> Types {
        let t = |s: &str| EntityTypeName::from_str(s).unwrap_or_else(|_| group.clone());
        Types {
            client: t("Client"),
            action: t("Action"),
            tool: t("Tool"),
            prompt: t("Prompt"),
            resource: t("Resource"),
            mcp: t("MCP"),
            backend: t("Backend"),
            group,
        }
    }
}

/// `Type::"id"`.
pub fn uid(ty: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
}

/// The principal `Client::"<sub>"` with `claim_*` attributes and group parents.
pub fn principal(
    types: &Types,
    sub: &str,
    claims: &[(String, RestrictedExpression)],
    groups: &[String],
) -> Option<Entity> {
    let parents = groups.iter().map(|g| uid(&types.group, g)).collect();
    Entity::new(uid(&types.client, sub), claims.iter().cloned().collect(), parents).ok()
}

/// What kind of item a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `tools/call`.
    Tool,
    /// `prompts/get`.
    Prompt,
    /// `resources/read` (and subscribe / unsubscribe).
    Resource,
}

impl Kind {
    /// The Cedar action id (ToolHive's).
    pub fn action(self) -> &'static str {
        match self {
            Kind::Tool => super::compile::CALL_TOOL,
            Kind::Prompt => super::compile::GET_PROMPT,
            Kind::Resource => super::compile::READ_RESOURCE,
        }
    }

    fn type_name(self, types: &Types) -> &EntityTypeName {
        match self {
            Kind::Tool => &types.tool,
            Kind::Prompt => &types.prompt,
            Kind::Resource => &types.resource,
        }
    }
}

/// One item to decide on: its name (a URI for resources), backend, a tool's annotations, the
/// call's `arg_*` attributes.
#[derive(Clone, Copy)]
pub struct Item<'a> {
    /// Advertised name, or URI.
    pub id: &'a str,
    /// The backend that serves it, when known.
    pub backend: Option<&'a str>,
    /// A tool's `annotations` object, as the catalog advertises it (never the client's).
    pub annotations: Option<&'a Value>,
    /// `arg_*` attributes (empty for list filtering, as in ToolHive).
    pub args: &'a [(String, RestrictedExpression)],
}

const HINTS: [&str; 4] = ["readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"];

/// The boolean annotation hints of a tool, in [`HINTS`] order: all a resource entity takes
/// from its annotations.
pub fn hints(annotations: Option<&Map<String, Value>>) -> [Option<bool>; 4] {
    HINTS.map(|h| annotations.and_then(|a| a.get(h)).and_then(Value::as_bool))
}

/// The action entity (`operation` attribute set to its id, as ToolHive does).
pub fn action(types: &Types, kind: Kind) -> (EntityUid, Option<Entity>) {
    let id = uid(&types.action, kind.action());
    let attrs = HashMap::from([(
        "operation".to_owned(),
        RestrictedExpression::new_string(kind.action().to_owned()),
    )]);
    let entity = Entity::new(id.clone(), attrs, HashSet::new()).ok();
    (id, entity)
}

/// The resource entity for `item`, child of `MCP::"<server>"` and its backend.
pub fn resource(types: &Types, kind: Kind, server: &str, item: &Item<'_>) -> Option<Entity> {
    let s = |v: &str| RestrictedExpression::new_string(v.to_owned());
    let mut attrs: HashMap<String, RestrictedExpression> = HashMap::new();
    // Annotations first, arguments next, the standard attributes last: those always win.
    let hints = hints(item.annotations.and_then(Value::as_object));
    for (hint, value) in HINTS.iter().zip(hints) {
        if let Some(b) = value {
            attrs.insert((*hint).to_owned(), RestrictedExpression::new_bool(b));
        }
    }
    attrs.extend(item.args.iter().cloned());
    let (operation, feature) = match kind {
        Kind::Tool => ("call", "tool"),
        Kind::Prompt => ("get", "prompt"),
        Kind::Resource => ("read", "resource"),
    };
    attrs.insert("name".into(), s(item.id));
    attrs.insert("operation".into(), s(operation));
    attrs.insert("feature".into(), s(feature));
    if kind == Kind::Resource {
        attrs.insert("uri".into(), s(item.id));
    }
    let mut parents = HashSet::from([uid(&types.mcp, server)]);
    if let Some(b) = item.backend {
        attrs.insert("backend".into(), s(b));
        parents.insert(uid(&types.backend, b));
    }
    Entity::new(resource_uid(types, kind, item.id), attrs, parents).ok()
}

/// `Tool::"<name>"`, `Prompt::"<name>"` or `Resource::"<uri>"`.
pub fn resource_uid(types: &Types, kind: Kind, id: &str) -> EntityUid {
    uid(kind.type_name(types), id)
}

#[cfg(test)]
#[path = "entities_tests.rs"]
mod tests;
