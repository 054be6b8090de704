//! The catalog gives a ToolHive config ToolHive's meaning: one test per rule of
//! `pkg/vmcp/aggregator` (filters after overrides, prefixed overrides, prompt naming per
//! strategy, manual conflicts, `defaultToolVisibility`), plus vmcp's deliberate differences.

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;

fn cfg(v: Value) -> AggregationConfig {
    serde_json::from_value(v).expect("valid aggregation config")
}

fn backend(name: &str, tools: &[&str], prompts: &[&str]) -> BackendLists {
    BackendLists {
        backend: Arc::from(name),
        tools: tools.iter().map(|t| json!({ "name": t, "description": "orig" })).collect(),
        prompts: prompts.iter().map(|p| json!({ "name": p })).collect(),
        ..Default::default()
    }
}

fn names(list: &[Value]) -> Vec<&str> {
    list.iter().map(|v| v["name"].as_str().expect("advertised name")).collect()
}

fn tool_route(c: &Catalog, advertised: &str) -> Option<(String, String)> {
    c.tool(advertised).map(|r| (r.backend.to_string(), r.original.clone()))
}

fn prompt_route(c: &Catalog, advertised: &str) -> Option<(String, String)> {
    c.prompt(advertised).map(|r| (r.backend.to_string(), r.original.clone()))
}

fn r(backend: &str, original: &str) -> Option<(String, String)> {
    Some((backend.to_owned(), original.to_owned()))
}

/// ToolHive's e2e test `virtualmcp_aggregation_overrides_test.go`: the filter names the tool
/// after its override, and under `prefix` the new name is prefixed.
#[test]
fn toolhive_e2e_overrides_config() {
    let config = cfg(json!({
        "conflictResolution": "prefix",
        "tools": [{
            "workload": "yardstick-override",
            "filter": ["custom_echo_tool"],
            "overrides": { "echo": {
                "name": "custom_echo_tool",
                "description": "A renamed echo tool with custom description"
            } }
        }]
    }));
    let c = build(&config, &[backend("yardstick-override", &["echo", "other"], &[])]);
    assert_eq!(names(c.tools()), ["yardstick-override_custom_echo_tool"]);
    assert_eq!(c.tools()[0]["description"], "A renamed echo tool with custom description");
    assert_eq!(
        tool_route(&c, "yardstick-override_custom_echo_tool"),
        r("yardstick-override", "echo")
    );
    assert_eq!(tool_route(&c, "yardstick-override_echo"), None);
    assert!(c.problems().is_empty(), "{:?}", c.problems());
}

#[test]
fn filter_by_the_original_name_of_a_renamed_tool_hides_it() {
    let config = cfg(json!({ "tools": [{
        "workload": "a", "filter": ["echo", "keep"], "overrides": { "echo": { "name": "shout" } }
    }] }));
    let c = build(&config, &[backend("a", &["echo", "keep", "drop"], &[])]);
    assert_eq!(names(c.tools()), ["a_keep"]);
}

#[test]
fn empty_filter_filters_nothing() {
    let config = cfg(json!({ "tools": [{ "workload": "a", "filter": [] }] }));
    let c = build(&config, &[backend("a", &["x", "y"], &[])]);
    assert_eq!(names(c.tools()), ["a_x", "a_y"]);
}

#[test]
fn prefix_applies_to_override_names_with_the_configured_format() {
    let config = cfg(json!({
        "conflictResolutionConfig": { "prefixFormat": "{workload}." },
        "tools": [{ "workload": "gh", "overrides": { "search": { "name": "find" } } }]
    }));
    let c = build(&config, &[backend("gh", &["search", "get"], &["p"])]);
    assert_eq!(names(c.tools()), ["gh.find", "gh.get"]);
    assert_eq!(tool_route(&c, "gh.find"), r("gh", "search"));
    assert_eq!(names(c.prompts()), ["gh.p"]);
}

#[test]
fn prompts_are_prefixed_under_prefix_and_manual() {
    for strategy in ["prefix", "manual"] {
        let config = cfg(json!({
            "conflictResolution": strategy,
            "conflictResolutionConfig": { "prefixFormat": "{workload}-" }
        }));
        let c = build(&config, &[backend("a", &[], &["p", "q"]), backend("b", &[], &["p"])]);
        assert_eq!(names(c.prompts()), ["a-p", "a-q", "b-p"], "{strategy}");
        assert_eq!(prompt_route(&c, "b-p"), r("b", "p"));
        assert!(c.problems().is_empty(), "{strategy}: {:?}", c.problems());
    }
}

#[test]
fn priority_prompts_bare_for_ranked_backends_prefixed_for_the_rest() {
    let config = cfg(json!({
        "conflictResolution": "priority",
        "conflictResolutionConfig": { "priorityOrder": ["b", "a"], "prefixFormat": "{workload}." }
    }));
    let c = build(
        &config,
        &[
            backend("a", &[], &["p", "only_a"]),
            backend("b", &[], &["p"]),
            backend("c", &[], &["p"]),
        ],
    );
    // Ranked `b` beats ranked `a` for the bare name; unranked `c` stays prefixed (not dropped),
    // with `prefixFormat`.
    assert_eq!(names(c.prompts()), ["c.p", "only_a", "p"]);
    assert_eq!(prompt_route(&c, "p"), r("b", "p"));
    assert_eq!(prompt_route(&c, "c.p"), r("c", "p"));
    assert_eq!(c.problems().len(), 1, "{:?}", c.problems());
    assert!(c.problems()[0].contains("prompt 'p' from backend 'a' dropped"), "{:?}", c.problems());
}

#[test]
fn priority_prompt_of_an_unranked_backend_survives_alone() {
    // The lower-priority backend's prompts stay, prefixed, even when the ranked one has the same.
    let config = cfg(json!({
        "conflictResolution": "priority",
        "conflictResolutionConfig": { "priorityOrder": ["a"] }
    }));
    let c = build(&config, &[backend("a", &[], &["p"]), backend("b", &[], &["p"])]);
    assert_eq!(names(c.prompts()), ["b_p", "p"]);
    assert!(c.problems().is_empty(), "{:?}", c.problems());
}

#[test]
fn ambiguous_prompt_names_are_dropped_for_every_claimant() {
    // Backend "a" prompt "b_p" and backend "a_b" prompt "p" both compose "a_b_p": nobody may
    // own it.
    let c = build(
        &AggregationConfig::default(),
        &[backend("a", &[], &["b_p", "ok"]), backend("a_b", &[], &["p"])],
    );
    assert_eq!(names(c.prompts()), ["a_ok"]);
    assert_eq!(c.problems().len(), 1, "{:?}", c.problems());
    assert!(c.problems()[0].starts_with("prompt name 'a_b_p' is claimed by"));

    // A prefixed name meeting a ranked backend's bare name: also ambiguous.
    let config = cfg(json!({
        "conflictResolution": "priority",
        "conflictResolutionConfig": { "priorityOrder": ["b"] }
    }));
    let c = build(&config, &[backend("a", &[], &["x"]), backend("b", &[], &["a_x"])]);
    assert!(c.prompts().is_empty(), "{:?}", names(c.prompts()));
}

#[test]
fn prompt_names_do_not_depend_on_other_backends() {
    for strategy in
        [json!({ "conflictResolution": "prefix" }), json!({ "conflictResolution": "manual" })]
    {
        let config = cfg(strategy);
        let alone = build(&config, &[backend("a", &[], &["p"])]);
        let together = build(&config, &[backend("a", &[], &["p"]), backend("b", &[], &["p"])]);
        assert_eq!(prompt_route(&alone, "a_p"), prompt_route(&together, "a_p"));
        assert!(prompt_route(&alone, "a_p").is_some());
    }
}

#[test]
fn manual_conflicts_are_reported_with_claimants() {
    let config = cfg(json!({
        "conflictResolution": "manual",
        "tools": [{ "workload": "a", "overrides": { "y": { "name": "z" } } }]
    }));
    let c = build(&config, &[backend("a", &["x", "y"], &[]), backend("b", &["x", "z", "w"], &[])]);
    assert_eq!(names(c.tools()), ["w"]);
    let got: Vec<(&str, Vec<(String, String)>)> = c
        .conflicts()
        .iter()
        .map(|k| {
            let who = k.claimants.iter().map(|(b, o)| (b.to_string(), o.clone())).collect();
            (k.name.as_str(), who)
        })
        .collect();
    let pair = |b: &str, o: &str| (b.to_owned(), o.to_owned());
    assert_eq!(
        got,
        [("x", vec![pair("a", "x"), pair("b", "x")]), ("z", vec![pair("a", "y"), pair("b", "z")])]
    );
    // Each is also a problem, with the fix.
    assert_eq!(c.problems().len(), 2, "{:?}", c.problems());
    assert!(c.problems().iter().all(|p| p.contains("Fix: give all but one a new name")));
}

#[test]
fn manual_overrides_resolve_and_keep_names_bare() {
    let config = cfg(json!({
        "conflictResolution": "manual",
        "tools": [
            { "workload": "a", "overrides": { "x": { "name": "x_from_a" } } },
        ]
    }));
    let c = build(&config, &[backend("a", &["x"], &[]), backend("b", &["x"], &[])]);
    assert_eq!(names(c.tools()), ["x", "x_from_a"]);
    assert_eq!(tool_route(&c, "x"), r("b", "x"));
    assert!(c.conflicts().is_empty());
}

#[test]
fn priority_fallback_uses_the_default_prefix_not_prefix_format() {
    let config = cfg(json!({
        "conflictResolution": "priority",
        "conflictResolutionConfig": { "priorityOrder": ["c"], "prefixFormat": "{workload}." }
    }));
    let c = build(&config, &[backend("a", &["x"], &[]), backend("b", &["x"], &[])]);
    assert_eq!(names(c.tools()), ["a_x", "b_x"]);
}

#[test]
fn priority_override_names_are_claims_like_any_other() {
    let config = cfg(json!({
        "conflictResolution": "priority",
        "conflictResolutionConfig": { "priorityOrder": ["b"] },
        "tools": [{ "workload": "a", "overrides": { "find": { "name": "search" } } }]
    }));
    let c = build(&config, &[backend("a", &["find"], &[]), backend("b", &["search"], &[])]);
    assert_eq!(names(c.tools()), ["search"]);
    assert_eq!(tool_route(&c, "search"), r("b", "search"));

    // Two unranked claimants: both prefixed, the override name included.
    let config = cfg(json!({
        "conflictResolution": "priority",
        "conflictResolutionConfig": { "priorityOrder": ["c"] },
        "tools": [{ "workload": "a", "overrides": { "find": { "name": "search" } } }]
    }));
    let c = build(&config, &[backend("a", &["find"], &[]), backend("b", &["search"], &[])]);
    assert_eq!(names(c.tools()), ["a_search", "b_search"]);
    assert_eq!(tool_route(&c, "a_search"), r("a", "find"));
}

#[test]
fn default_tool_visibility_deny_hides_backends_without_an_entry() {
    let config = cfg(json!({
        "defaultToolVisibility": "deny",
        "tools": [{ "workload": "a" }, { "workload": "c", "filter": ["y"] }]
    }));
    let mut b = backend("b", &["x"], &["p"]);
    b.resources.push(json!({ "uri": "file:///r" }));
    let c = build(&config, &[backend("a", &["x"], &[]), b, backend("c", &["x", "y"], &[])]);
    assert_eq!(names(c.tools()), ["a_x", "c_y"]);
    // Tools only: b's prompts and resources stay.
    assert_eq!(names(c.prompts()), ["b_p"]);
    assert_eq!(c.counts().resources, 1);

    let allow =
        build(&cfg(json!({ "defaultToolVisibility": "allow" })), &[backend("b", &["x"], &[])]);
    assert_eq!(names(allow.tools()), ["b_x"]);
}

/// vmcp's deliberate difference: hidden tools take no part in conflict resolution (ToolHive
/// resolves before hiding, so a hidden higher-priority tool would take the name from a visible
/// one and nobody would advertise it). `vmcp validate` warns about it.
#[test]
fn hidden_tools_do_not_compete_for_names() {
    let config = cfg(json!({
        "conflictResolution": "priority",
        "conflictResolutionConfig": { "priorityOrder": ["a", "b"] },
        "tools": [{ "workload": "a", "filter": ["other"] }]
    }));
    let c = build(&config, &[backend("a", &["x", "other"], &[]), backend("b", &["x"], &[])]);
    assert_eq!(names(c.tools()), ["other", "x"]);
    assert_eq!(tool_route(&c, "x"), r("b", "x"));

    let config = cfg(json!({
        "conflictResolution": "manual",
        "tools": [{ "workload": "a", "excludeAll": true }]
    }));
    let c = build(&config, &[backend("a", &["x"], &[]), backend("b", &["x"], &[])]);
    assert_eq!(names(c.tools()), ["x"]);
    assert!(c.conflicts().is_empty());
}
