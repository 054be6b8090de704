//! Compiling `incomingAuth.authz` once, at load: each policy parsed on its own (so an error's
//! line is the line inside that policy), the set validated against vmcp's schema
//! ([`schema_json`]), action names checked, `entitiesJson` parsed.
//!
//! The schema is *partial* (Cedar's `partial-validate`): the principal's attributes are the
//! token's claims and a tool's include its call's arguments, neither known in advance, so
//! those records are open. What it still catches: attributes of the wrong type (`resource.name
//! == 1`), operators applied to the wrong types, and, with the action check here, actions vmcp
//! never asks about (`Action::"tools/call"`), which would make a policy silently inert.

use std::str::FromStr;

use cedar_policy::{
    ActionConstraint, Entities, EntityTypeName, Policy, PolicyId, PolicySet, Schema,
    ValidationMode, Validator,
};
use miette::Diagnostic;

use crate::config::authz::AuthzConfig;

/// The actions vmcp evaluates, by MCP operation (ToolHive's names).
pub const CALL_TOOL: &str = "call_tool";
/// `prompts/get`.
pub const GET_PROMPT: &str = "get_prompt";
/// `resources/read`, `resources/subscribe`, `resources/unsubscribe`.
pub const READ_RESOURCE: &str = "read_resource";
/// ToolHive's list actions: known, never evaluated (lists are filtered per item instead).
const LIST_ACTIONS: [&str; 3] = ["list_tools", "list_prompts", "list_resources"];

/// Entity types vmcp builds itself (the group type is configurable and must differ).
const OWN_TYPES: [&str; 7] =
    ["Client", "Tool", "Prompt", "Resource", "FeatureType", "MCP", "Backend"];

/// A compiled authorization config.
pub struct Compiled {
    /// The policies, `policy0`, `policy1`, ... in config order.
    pub policies: PolicySet,
    /// `entitiesJson`.
    pub entities: Entities,
    /// `groupEntityType`.
    pub group_type: EntityTypeName,
    /// Whether any policy mentions `arg_`: only then are call arguments read.
    pub uses_args: bool,
    /// Advisory lines (loads, but probably not what was meant).
    pub warnings: Vec<String>,
}

/// One problem, located by policy index (and the line inside it, in the message) or key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// `policies[i]`, when the problem is in a policy.
    pub policy: Option<usize>,
    /// The key under `incomingAuth.authz` otherwise.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.policy {
            Some(i) => write!(f, "incomingAuth.authz.policies[{i}]: {}", self.message),
            None => write!(f, "incomingAuth.authz.{}: {}", self.key, self.message),
        }
    }
}

/// Compiles `cfg` (`type: cedar`); every problem is returned.
pub fn compile(cfg: &AuthzConfig, _server: &str) -> Result<Compiled, Vec<CompileError>> {
    let mut errors = Vec::new();
    let key_error = |key, message| CompileError { policy: None, key, message };
    let group_type = match group_type(cfg.group_entity_type()) {
        Ok(t) => Some(t),
        Err(message) => {
            errors.push(key_error("groupEntityType", message));
            None
        }
    };
    let mut policies = PolicySet::new();
    let mut warnings = Vec::new();
    // Policies naming an action vmcp never asks about: they load (as in ToolHive, where they
    // match nothing), with a warning, and are left out of schema validation, which would only
    // repeat that their action is unknown.
    let mut inert = std::collections::HashSet::new();
    for (i, text) in cfg.policies.iter().enumerate() {
        let policy_error = |message| CompileError { policy: Some(i), key: "policies", message };
        match Policy::parse(Some(PolicyId::new(format!("policy{i}"))), text) {
            Ok(policy) => {
                if let Err(message) = check_actions(&policy, text, &mut warnings, i) {
                    warnings.push(format!("incomingAuth.authz.policies[{i}]: {message}"));
                    inert.insert(i);
                }
                if let Err(e) = policies.add(policy) {
                    errors.push(policy_error(e.to_string()));
                }
            }
            Err(parse) => {
                for e in parse.iter() {
                    errors.push(policy_error(located(text, e, &e.to_string())));
                }
            }
        }
    }
    if let Some(group_type) = &group_type {
        match Schema::from_json_value(schema_json(&group_type.to_string())) {
            Ok(schema) => {
                let result = Validator::new(schema).validate(&policies, ValidationMode::Partial);
                for e in result.validation_errors() {
                    let i = index_of(e.policy_id());
                    if i.is_some_and(|i| inert.contains(&i)) {
                        continue;
                    }
                    let text = i.and_then(|i| cfg.policies.get(i)).map_or("", String::as_str);
                    let message = located(text, e, &e.to_string());
                    errors.push(CompileError { policy: i, key: "policies", message });
                }
                for w in result.validation_warnings() {
                    let i = index_of(w.policy_id());
                    let text = i.and_then(|i| cfg.policies.get(i)).map_or("", String::as_str);
                    let at = i.map(|i| format!("policies[{i}]: ")).unwrap_or_default();
                    warnings.push(format!(
                        "incomingAuth.authz.{at}{}",
                        located(text, w, &w.to_string())
                    ));
                }
            }
            // vmcp's own schema: a failure here is a bug, but say so rather than panic.
            Err(e) => errors.push(key_error("groupEntityType", format!("schema: {e}"))),
        }
    }
    let entities = match cfg.entities_json() {
        None => Entities::empty(),
        Some(json) => Entities::from_json_str(json, None).unwrap_or_else(|e| {
            errors.push(key_error("entitiesJson", format!("not Cedar entity JSON: {e}")));
            Entities::empty()
        }),
    };
    match (errors.is_empty(), group_type) {
        (true, Some(group_type)) => Ok(Compiled {
            policies,
            entities,
            group_type,
            uses_args: cfg.policies.iter().any(|p| p.contains("arg_")),
            warnings,
        }),
        _ => Err(errors),
    }
}

/// `groupEntityType` as a Cedar type name: one identifier (no namespace, as in ToolHive), not
/// one of vmcp's own types.
fn group_type(name: &str) -> Result<EntityTypeName, String> {
    if name.contains("::") {
        return Err(format!(
            "{name:?}: namespaced entity types are not supported (as in ToolHive)"
        ));
    }
    if OWN_TYPES.contains(&name) {
        return Err(format!("{name:?} is one of vmcp's own entity types; choose another name"));
    }
    EntityTypeName::from_str(name)
        .map_err(|_| format!("{name:?} is not a Cedar identifier (letters, digits and '_')"))
}

/// An action in a policy's scope that vmcp never asks about makes the policy inert: `Err`
/// with why (the caller warns; ToolHive loads such a policy too, and it matches nothing).
/// ToolHive's list actions load, with a warning that they are never evaluated.
fn check_actions(
    policy: &Policy,
    text: &str,
    warnings: &mut Vec<String>,
    i: usize,
) -> Result<(), String> {
    let uids = match policy.action_constraint() {
        ActionConstraint::Any => return Ok(()),
        ActionConstraint::Eq(uid) => vec![uid],
        ActionConstraint::In(uids) => uids,
    };
    for uid in uids {
        let id = uid.id().unescaped().to_owned();
        if LIST_ACTIONS.contains(&id.as_str()) {
            warnings.push(format!(
                "incomingAuth.authz.policies[{i}]: Action::{id:?} is never evaluated: lists are \
                 always answered, filtered through call_tool, get_prompt and read_resource \
                 (as in ToolHive)"
            ));
            continue;
        }
        if [CALL_TOOL, GET_PROMPT, READ_RESOURCE].contains(&id.as_str()) {
            continue;
        }
        let hint = match id.as_str() {
            "tools/call" => format!("; did you mean Action::\"{CALL_TOOL}\"?"),
            "prompts/get" => format!("; did you mean Action::\"{GET_PROMPT}\"?"),
            "resources/read" => format!("; did you mean Action::\"{READ_RESOURCE}\"?"),
            "tools/list" | "prompts/list" | "resources/list" => {
                "; lists need no policy: they show what call_tool, get_prompt and \
                 read_resource allow"
                    .to_owned()
            }
            _ => String::new(),
        };
        let at = text.find(&format!("{id:?}")).map(|o| line_col(text, o));
        let at =
            at.map(|(l, c)| format!("line {l}, column {c} of the policy: ")).unwrap_or_default();
        return Err(format!(
            "{at}unknown action Action::{id:?}: this policy never matches, so it permits or \
             forbids nothing (as in ToolHive); the actions are {CALL_TOOL}, {GET_PROMPT} and \
             {READ_RESOURCE}{hint}"
        ));
    }
    Ok(())
}

fn index_of(id: &PolicyId) -> Option<usize> {
    id.to_string().strip_prefix("policy")?.parse().ok()
}

/// `message`, prefixed with the line and column (inside the policy) of the diagnostic's first
/// label, and followed by its help.
fn located(text: &str, d: &dyn Diagnostic, message: &str) -> String {
    let offset = d.labels().and_then(|mut l| l.next()).map(|l| l.offset());
    // Cedar names the policy by id (`policy3`); the path already says which one.
    let message = match message.strip_prefix("for policy `") {
        Some(rest) => rest.split_once("`, ").map_or(message, |(_, m)| m),
        None => message,
    };
    let mut out = match offset {
        Some(o) => {
            let (line, col) = line_col(text, o);
            format!("line {line}, column {col} of the policy: {message}")
        }
        None => message.to_owned(),
    };
    if let Some(help) = d.help() {
        out.push_str(&format!(" ({help})"));
    }
    out
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// vmcp's entity model as a Cedar (JSON) schema, ToolHive's names: principal `Client` (in
/// groups of `group_type`), resources `Tool`, `Prompt`, `Resource` (in `MCP::"<name>"` and
/// `Backend::"<backend>"`), `FeatureType` for ToolHive's list actions. Records holding claims
/// or arguments are open.
pub fn schema_json(group_type: &str) -> serde_json::Value {
    use serde_json::json;
    let s = json!({ "type": "String" });
    let opt = |t: &str| json!({ "type": t, "required": false });
    let open = |attrs: serde_json::Value| json!({ "type": "Record", "attributes": attrs, "additionalAttributes": true });
    let item = |extra: serde_json::Value| {
        let mut attrs = json!({
            "name": s, "operation": s, "feature": s, "backend": opt("String"),
        });
        if let (Some(a), Some(e)) = (attrs.as_object_mut(), extra.as_object()) {
            a.extend(e.clone());
        }
        json!({ "memberOfTypes": ["MCP", "Backend"], "shape": open(attrs) })
    };
    let applies = |resource: &str| {
        json!({ "appliesTo": {
            "principalTypes": ["Client"],
            "resourceTypes": [resource],
            "context": open(json!({})),
        }})
    };
    json!({ "": {
        "entityTypes": {
            "Client": { "memberOfTypes": [group_type], "shape": open(json!({})) },
            group_type: { "shape": open(json!({})) },
            "MCP": { "shape": open(json!({})) },
            "Backend": { "shape": open(json!({})) },
            "Tool": item(json!({
                "readOnlyHint": opt("Boolean"),
                "destructiveHint": opt("Boolean"),
                "idempotentHint": opt("Boolean"),
                "openWorldHint": opt("Boolean"),
            })),
            "Prompt": item(json!({})),
            "Resource": item(json!({ "uri": s })),
            "FeatureType": { "shape": open(json!({ "type": s, "operation": s, "feature": s })) },
        },
        "actions": {
            CALL_TOOL: applies("Tool"),
            GET_PROMPT: applies("Prompt"),
            READ_RESOURCE: applies("Resource"),
            "list_tools": applies("FeatureType"),
            "list_prompts": applies("FeatureType"),
            "list_resources": applies("FeatureType"),
        },
    }})
}

#[cfg(test)]
#[path = "compile_tests.rs"]
mod tests;
