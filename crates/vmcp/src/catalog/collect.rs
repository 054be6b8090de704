//! Intake of one backend's raw lists, and the per-backend tool rules (filters, overrides).
//!
//! Invariants: what leaves [`intake`] is a list of JSON objects with a non-empty string key
//! (`name`, `uri` or `uriTemplate`), unique by that key and sorted by it, so nothing downstream
//! depends on the order the backend listed its items in. Anything else is skipped with a problem;
//! backend input never causes a panic. [`apply_tool_rules`] only hides, renames and edits tools;
//! naming across backends is `resolve`'s job.

use serde_json::{Map, Value};

use super::resolve::Candidate;
use crate::config::{
    AggregationConfig, AnnotationOverrides, ToolOverride, ToolRules, ToolVisibility,
};

/// Keeps the items of `list` that are objects with a non-empty string `key` field, one per key.
///
/// `kind` names the list in problems ("tool", "resource", ...). When a backend lists the same key
/// twice, the item with the smallest JSON text wins: arbitrary, but independent of list order.
pub(super) fn intake(
    backend: &str,
    kind: &str,
    key: &str,
    list: &[Value],
    problems: &mut Vec<String>,
) -> Vec<(String, Value)> {
    let mut items: Vec<(String, &Value)> = Vec::with_capacity(list.len());
    for value in list {
        match value.get(key).and_then(Value::as_str) {
            Some(k) if !k.is_empty() => items.push((k.to_owned(), value)),
            _ => {
                problems.push(format!("{kind} from backend '{backend}' skipped: no string '{key}'"))
            }
        }
    }
    // JSON text only breaks ties, so large schemas are serialized only for duplicate keys.
    items.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.to_string().cmp(&b.1.to_string())));
    let mut out: Vec<(String, Value)> = Vec::with_capacity(items.len());
    for (k, value) in items {
        if out.last().is_some_and(|(prev, _)| *prev == k) {
            problems
                .push(format!("{kind} '{k}' from backend '{backend}' listed twice; one dropped"));
            continue;
        }
        out.push((k, value.clone()));
    }
    out
}

/// Applies `aggregation.excludeAllTools`, `defaultToolVisibility` and the `aggregation.tools`
/// entries for `backend` to its tools (as returned by [`intake`]), producing the candidates for
/// conflict resolution.
///
/// As in ToolHive: overrides rename first, and `filter` lists names *after* overrides; an empty
/// `filter` filters nothing; under `defaultToolVisibility: deny` a backend without an entry
/// contributes no tools. Several entries for one backend (which validation rejects) combine: a
/// tool is hidden if any entry hides it, and the first entry with an override for a tool
/// supplies that override.
pub(super) fn apply_tool_rules(
    config: &AggregationConfig,
    backend_index: usize,
    backend: &str,
    tools: Vec<(String, Value)>,
    problems: &mut Vec<String>,
) -> Vec<Candidate> {
    if config.exclude_all_tools {
        return Vec::new();
    }
    let rules: Vec<_> = config.tools.iter().filter(|r| r.backend == backend).collect();
    if rules.is_empty() && config.default_tool_visibility == ToolVisibility::Deny {
        return Vec::new();
    }
    if rules.iter().any(|r| r.exclude_all) {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(tools.len());
    for (original, mut value) in tools {
        let over = rules.iter().find_map(|r| r.overrides.get(&original));
        let name = over
            .and_then(|o| override_name(o, backend, &original, problems))
            .unwrap_or_else(|| original.clone());
        let listed = |r: &&ToolRules| match r.filter.as_deref() {
            None | Some([]) => true,
            Some(f) => f.contains(&name),
        };
        if !rules.iter().all(listed) {
            continue;
        }
        if let Some(over) = over {
            apply_override(&mut value, over);
        }
        out.push(Candidate { backend: backend_index, base: name, original, value });
    }
    out
}

/// The override's `name`, unless it is empty (which could never be advertised as given).
fn override_name(
    over: &ToolOverride,
    backend: &str,
    original: &str,
    problems: &mut Vec<String>,
) -> Option<String> {
    match over.name.as_deref() {
        Some("") => {
            problems.push(format!(
                "override of tool '{original}' on backend '{backend}': empty name ignored"
            ));
            None
        }
        other => other.map(str::to_owned),
    }
}

/// Sets the override's description and merges its annotations into `tool.annotations`.
/// The name is left alone: resolution sets the advertised name last.
fn apply_override(tool: &mut Value, over: &ToolOverride) {
    let Some(obj) = tool.as_object_mut() else { return };
    if let Some(description) = &over.description {
        obj.insert("description".to_owned(), Value::String(description.clone()));
    }
    if let Some(annotations) = &over.annotations {
        merge_annotations(obj, annotations);
    }
}

fn merge_annotations(tool: &mut Map<String, Value>, over: &AnnotationOverrides) {
    let fields = [
        ("title", over.title.clone().map(Value::String)),
        ("readOnlyHint", over.read_only_hint.map(Value::Bool)),
        ("destructiveHint", over.destructive_hint.map(Value::Bool)),
        ("idempotentHint", over.idempotent_hint.map(Value::Bool)),
        ("openWorldHint", over.open_world_hint.map(Value::Bool)),
    ];
    if fields.iter().all(|(_, v)| v.is_none()) {
        return;
    }
    let slot = tool.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
    // A backend that sent non-object annotations sent nothing usable; start afresh.
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    if let Some(annotations) = slot.as_object_mut() {
        for (key, value) in fields {
            if let Some(value) = value {
                annotations.insert(key.to_owned(), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn intake_skips_bad_items_and_dedups() {
        let mut problems = Vec::new();
        let list = vec![
            json!({ "name": "b", "v": 2 }),
            json!({ "name": 3 }),
            json!("not an object"),
            json!({ "name": "" }),
            json!({ "name": "a" }),
            json!({ "name": "b", "v": 1 }),
        ];
        let out = intake("x", "tool", "name", &list, &mut problems);
        let keys: Vec<_> = out.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(out[1].1, json!({ "name": "b", "v": 1 }), "smallest JSON text wins");
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    #[test]
    fn annotations_merge_field_by_field() {
        let mut tool = json!({
            "name": "t",
            "annotations": { "title": "Old", "readOnlyHint": false, "openWorldHint": true }
        });
        let over = ToolOverride {
            description: Some("new".into()),
            annotations: Some(AnnotationOverrides {
                read_only_hint: Some(true),
                destructive_hint: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        apply_override(&mut tool, &over);
        assert_eq!(
            tool,
            json!({
                "name": "t",
                "description": "new",
                "annotations": {
                    "title": "Old", "readOnlyHint": true, "destructiveHint": false,
                    "openWorldHint": true
                }
            })
        );
    }

    #[test]
    fn annotations_are_created_or_replaced_when_unusable() {
        let over = ToolOverride {
            annotations: Some(AnnotationOverrides {
                title: Some("T".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        for mut tool in [json!({ "name": "t" }), json!({ "name": "t", "annotations": 7 })] {
            apply_override(&mut tool, &over);
            assert_eq!(tool["annotations"], json!({ "title": "T" }));
        }
        // Empty annotation overrides do not invent an annotations object.
        let mut tool = json!({ "name": "t" });
        let over = ToolOverride { annotations: Some(Default::default()), ..Default::default() };
        apply_override(&mut tool, &over);
        assert_eq!(tool, json!({ "name": "t" }));
    }
}
