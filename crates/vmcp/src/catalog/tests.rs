//! Whole-catalog tests: each strategy, tool rules, name rules as seen through `build`, resource
//! and template ownership, and property tests for determinism, name validity and routing.

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::config::AggregationConfig;

fn cfg(v: Value) -> AggregationConfig {
    serde_json::from_value(v).expect("valid aggregation config")
}

fn tool(name: &str) -> Value {
    json!({ "name": name, "inputSchema": { "type": "object" } })
}

fn backend(name: &str, tools: &[&str], prompts: &[&str]) -> BackendLists {
    BackendLists {
        backend: Arc::from(name),
        tools: tools.iter().map(|t| tool(t)).collect(),
        prompts: prompts.iter().map(|p| json!({ "name": p })).collect(),
        ..Default::default()
    }
}

fn names(list: &[Value]) -> Vec<&str> {
    list.iter().map(|v| v["name"].as_str().expect("advertised name")).collect()
}

fn route(c: &Catalog, advertised: &str) -> Option<(String, String)> {
    c.tool(advertised).map(|r| (r.backend.to_string(), r.original.clone()))
}

fn r(backend: &str, original: &str) -> Option<(String, String)> {
    Some((backend.to_owned(), original.to_owned()))
}

#[test]
fn empty_catalog() {
    let c = Catalog::empty();
    assert_eq!(c.counts(), Counts::default());
    assert!(c.tool("x").is_none() && c.prompt("x").is_none());
    assert!(c.resource("file:///x").is_none() && c.template("x://{a}").is_none());
    assert!(c.problems().is_empty());
    assert_eq!(build(&AggregationConfig::default(), &[]), c);
}

#[test]
fn prefix_is_the_default_and_renames_everything() {
    let c = build(
        &AggregationConfig::default(),
        &[backend("a", &["x", "y"], &["p"]), backend("b", &["x"], &["p"])],
    );
    assert_eq!(names(c.tools()), ["a_x", "a_y", "b_x"]);
    assert_eq!(names(c.prompts()), ["a_p", "b_p"]);
    assert_eq!(route(&c, "b_x"), r("b", "x"));
    assert_eq!(route(&c, "x"), None);
    let p = c.prompt("b_p").expect("prompt route");
    assert_eq!((&*p.backend, p.original.as_str()), ("b", "p"));
    assert!(c.problems().is_empty());
    // The rest of the tool object is untouched.
    assert_eq!(c.tools()[0]["inputSchema"], json!({ "type": "object" }));
}

#[test]
fn prefix_format_and_workload_alias() {
    let c = build(
        &cfg(json!({ "conflictResolutionConfig": { "prefixFormat": "{workload}.{backend}-" } })),
        &[backend("gh", &["x"], &["p"])],
    );
    assert_eq!(names(c.tools()), ["gh.gh-x"]);
    assert_eq!(names(c.prompts()), ["gh.gh-p"]);
}

#[test]
fn overrides_rename_describe_and_annotate() {
    let config = cfg(json!({
        "tools": [{
            "backend": "a",
            "overrides": {
                "x": {
                    "name": "renamed",
                    "description": "Better",
                    "annotations": { "title": "T", "readOnlyHint": true }
                },
                "y": { "description": "Only a description" },
                "missing": { "name": "ghost" }
            }
        }]
    }));
    let mut b = backend("a", &["x", "y"], &[]);
    b.tools[0]["annotations"] = json!({ "destructiveHint": true, "title": "Old" });
    let c = build(&config, &[b]);
    assert_eq!(names(c.tools()), ["a_renamed", "a_y"], "override names are prefixed too");
    let renamed = &c.tools()[0];
    assert_eq!(renamed["description"], "Better");
    assert_eq!(
        renamed["annotations"],
        json!({ "destructiveHint": true, "title": "T", "readOnlyHint": true })
    );
    assert_eq!(c.tools()[1]["description"], "Only a description");
    assert_eq!(route(&c, "a_renamed"), r("a", "x"));
    assert_eq!(route(&c, "renamed"), None);
    assert_eq!(route(&c, "a_ghost"), None);
}

#[test]
fn filters_hide_and_unroute() {
    let config = cfg(json!({
        "tools": [
            { "backend": "a", "filter": ["x", "z"], "overrides": { "y": { "name": "yy" } } },
            { "workload": "b", "excludeAll": true }
        ]
    }));
    let c = build(&config, &[backend("a", &["x", "y"], &["p"]), backend("b", &["x"], &["q"])]);
    assert_eq!(names(c.tools()), ["a_x"]);
    assert_eq!(route(&c, "yy"), None, "a hidden tool's override does not make it visible");
    assert_eq!(route(&c, "a_y"), None);
    assert_eq!(route(&c, "b_x"), None);
    assert_eq!(names(c.prompts()), ["a_p", "b_q"], "prompts are not filtered");
}

#[test]
fn exclude_all_tools_keeps_resources_and_prompts() {
    let mut b = backend("a", &["x"], &["p"]);
    b.resources.push(json!({ "uri": "file:///r" }));
    let c = build(&cfg(json!({ "excludeAllTools": true })), &[b]);
    assert_eq!(c.counts(), Counts { tools: 0, resources: 1, resource_templates: 0, prompts: 1 });
    assert_eq!(route(&c, "a_x"), None);
}

#[test]
fn priority_first_in_order_wins_and_others_stay_bare() {
    let config = cfg(json!({
        "conflictResolution": "priority",
        "conflictResolutionConfig": { "priorityOrder": ["b", "a"] }
    }));
    let c = build(&config, &[backend("a", &["x", "only_a"], &["p"]), backend("b", &["x"], &["p"])]);
    assert_eq!(names(c.tools()), ["only_a", "x"]);
    assert_eq!(route(&c, "x"), r("b", "x"));
    assert_eq!(route(&c, "only_a"), r("a", "only_a"));
    assert_eq!(names(c.prompts()), ["p"]);
    assert_eq!(c.prompt("p").map(|r| &*r.backend), Some("b"));
    assert_eq!(c.problems().len(), 2, "{:?}", c.problems());
    assert!(c.problems().iter().any(|p| p.contains("tool 'x' from backend 'a' dropped")));
}

#[test]
fn priority_ranked_claimant_beats_unranked_ones() {
    let config = cfg(json!({
        "conflictResolution": "priority",
        "conflictResolutionConfig": { "priorityOrder": ["c"] }
    }));
    let c = build(
        &config,
        &[backend("a", &["x"], &[]), backend("b", &["x"], &[]), backend("c", &["x"], &[])],
    );
    assert_eq!(names(c.tools()), ["x"]);
    assert_eq!(route(&c, "x"), r("c", "x"));
    assert_eq!(c.problems().len(), 2);
}

#[test]
fn priority_falls_back_to_prefix_among_unranked_backends() {
    let config = cfg(json!({
        "conflictResolution": "priority",
        "conflictResolutionConfig": { "priorityOrder": ["c"] }
    }));
    let c = build(
        &config,
        &[backend("a", &["x", "y"], &["p"]), backend("b", &["x"], &["p"]), backend("c", &[], &[])],
    );
    assert_eq!(names(c.tools()), ["a_x", "b_x", "y"]);
    assert_eq!(names(c.prompts()), ["a_p", "b_p"]);
    assert!(c.problems().is_empty());
}

#[test]
fn priority_override_name_competes_with_bare_names() {
    let config = cfg(json!({
        "conflictResolution": "priority",
        "conflictResolutionConfig": { "priorityOrder": ["a", "b"] },
        "tools": [{ "backend": "b", "overrides": { "search": { "name": "find" } } }]
    }));
    let c = build(&config, &[backend("a", &["find"], &[]), backend("b", &["search"], &[])]);
    assert_eq!(names(c.tools()), ["find"]);
    assert_eq!(route(&c, "find"), r("a", "find"));
    assert_eq!(c.problems().len(), 1);
}

#[test]
fn manual_drops_unresolved_conflicts_for_everyone() {
    let config = cfg(json!({ "conflictResolution": "manual" }));
    let c = build(&config, &[backend("a", &["x", "y"], &["p", "q"]), backend("b", &["x"], &["p"])]);
    assert_eq!(names(c.tools()), ["y"]);
    assert_eq!(names(c.prompts()), ["a_p", "a_q", "b_p"], "prompts are prefixed, never dropped");
    assert_eq!(route(&c, "x"), None);
    assert_eq!(c.problems().len(), 1, "{:?}", c.problems());
    assert!(c.problems()[0].starts_with("tool name 'x' is claimed by backend 'a' and backend 'b'"));
    assert_eq!(c.conflicts().len(), 1);
}

#[test]
fn manual_overrides_resolve_conflicts_and_can_create_them() {
    let config = cfg(json!({
        "conflictResolution": "manual",
        "tools": [
            { "backend": "a", "overrides": { "x": { "name": "a_x" }, "y": { "name": "z" } } }
        ]
    }));
    let c = build(&config, &[backend("a", &["x", "y"], &[]), backend("b", &["x", "z"], &[])]);
    assert_eq!(names(c.tools()), ["a_x", "x"]);
    assert_eq!(route(&c, "a_x"), r("a", "x"));
    assert_eq!(route(&c, "x"), r("b", "x"));
    assert_eq!(route(&c, "z"), None, "the override-made collision drops both");
    assert_eq!(c.problems().len(), 1);
}

#[test]
fn long_and_invalid_names_are_made_valid_and_still_route() {
    let long = "t".repeat(70);
    let c = build(
        &AggregationConfig::default(),
        &[backend("my server", &["get weather", &long], &["prompt/1"])],
    );
    let tools = names(c.tools());
    assert!(tools.contains(&"my_server_get_weather"));
    assert_eq!(route(&c, "my_server_get_weather"), r("my server", "get weather"));
    let hashed = tools.iter().find(|n| n.len() == MAX_NAME_LEN).expect("hashed name");
    assert!(hashed.starts_with("my_server_ttt"));
    assert_eq!(route(&c, hashed), r("my server", &long));
    assert_eq!(names(c.prompts()), ["my_server_prompt_1"]);
    assert!(
        c.tools()
            .iter()
            .chain(c.prompts())
            .all(|v| is_valid_name(v["name"].as_str().unwrap_or("")))
    );
}

#[test]
fn names_equal_after_sanitizing_contest_one_name() {
    let config = cfg(json!({
        "conflictResolution": "priority",
        "conflictResolutionConfig": { "priorityOrder": ["b"] }
    }));
    let c = build(&config, &[backend("a", &["a b", "a_b"], &[]), backend("b", &["a:b"], &[])]);
    assert_eq!(names(c.tools()), ["a_b"]);
    assert_eq!(route(&c, "a_b"), r("b", "a:b"), "priority decides, not sanitizing order");
    assert_eq!(c.problems().len(), 2, "{:?}", c.problems());

    let c = build(
        &cfg(json!({ "conflictResolution": "manual" })),
        &[backend("a", &["a b", "a_b"], &[])],
    );
    assert_eq!(c.counts().tools, 0, "manual: a sanitizing collision is a conflict too");
}

#[test]
fn remaining_collisions_go_to_the_first_backend_then_smallest_original() {
    let c = build(
        &AggregationConfig::default(),
        &[backend("a", &["b x", "b_x"], &[]), backend("a_b", &["x"], &[])],
    );
    // a_ + "b x" -> a_b_x, a_ + "b_x" -> a_b_x, a_b_ + "x" -> a_b_x.
    assert_eq!(names(c.tools()), ["a_b_x"]);
    assert_eq!(route(&c, "a_b_x"), r("a", "b x"));
    assert_eq!(c.problems().len(), 2, "{:?}", c.problems());
}

#[test]
fn prefixed_override_name_colliding_with_another_prefixed_name() {
    let config =
        cfg(json!({ "tools": [{ "backend": "a_b", "overrides": { "q": { "name": "x" } } }] }));
    let c = build(&config, &[backend("a", &["b_x"], &[]), backend("a_b", &["q"], &[])]);
    // a_ + "b_x" and a_b_ + "x" (q renamed): the earlier backend keeps the name.
    assert_eq!(names(c.tools()), ["a_b_x"]);
    assert_eq!(route(&c, "a_b_x"), r("a", "b_x"));
    assert_eq!(c.problems().len(), 1);
}

#[test]
fn resources_and_templates_first_backend_wins() {
    let mut a = backend("a", &[], &[]);
    a.resources = vec![json!({ "uri": "file:///z", "name": "z" }), json!({ "uri": "file:///s" })];
    a.resource_templates = vec![json!({ "uriTemplate": "repo://{owner}/{name}" })];
    let mut b = backend("b", &[], &[]);
    b.resources = vec![json!({ "uri": "file:///s", "from": "b" }), json!({ "uri": "file:///b" })];
    b.resource_templates = vec![
        json!({ "uriTemplate": "repo://{owner}/{name}", "from": "b" }),
        json!({ "uriTemplate": "file://{+path}" }),
        json!({ "uriTemplate": "repo://{owner}" }),
    ];
    let c = build(&AggregationConfig::default(), &[a, b]);
    let uris: Vec<_> = c.resources().iter().map(|v| v["uri"].as_str().unwrap_or("")).collect();
    assert_eq!(uris, ["file:///b", "file:///s", "file:///z"]);
    assert_eq!(c.resources()[1], json!({ "uri": "file:///s" }), "a's copy, untouched");
    let templates: Vec<_> =
        c.resource_templates().iter().map(|v| v["uriTemplate"].as_str().unwrap_or("")).collect();
    assert_eq!(templates, ["file://{+path}", "repo://{owner}", "repo://{owner}/{name}"]);
    assert_eq!(c.problems().len(), 2, "{:?}", c.problems());

    let owner = |uri: &str| c.resource(uri).map(|b| b.to_string());
    assert_eq!(owner("file:///s").as_deref(), Some("a"), "exact resource");
    assert_eq!(owner("file:///b").as_deref(), Some("b"));
    assert_eq!(owner("repo://acme/w").as_deref(), Some("a"), "a's template comes first");
    assert_eq!(owner("repo://acme").as_deref(), Some("b"));
    assert_eq!(owner("file:///anything/else").as_deref(), Some("b"), "{{+path}}");
    assert_eq!(owner("other://x"), None);
    assert_eq!(c.template("repo://{owner}/{name}").map(|b| &**b), Some("a"));
    assert_eq!(c.template("repo://acme/w"), None, "template lookup is exact");
}

#[test]
fn malformed_items_are_skipped_and_reported() {
    let b = BackendLists {
        backend: Arc::from("a"),
        tools: vec![json!({ "description": "no name" }), json!(42), tool("ok")],
        resources: vec![json!({ "uri": 1 })],
        resource_templates: vec![json!({ "uri": "wrong://key" })],
        prompts: vec![json!({ "name": null })],
    };
    let c = build(&AggregationConfig::default(), &[b]);
    assert_eq!(names(c.tools()), ["a_ok"]);
    assert_eq!(c.counts(), Counts { tools: 1, resources: 0, resource_templates: 0, prompts: 0 });
    assert_eq!(c.problems().len(), 5, "{:?}", c.problems());
}

#[test]
fn catalog_pages_round_trip() {
    let many: Vec<String> = (0..23).map(|i| format!("t{i:02}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let c = build(&AggregationConfig::default(), &[backend("a", &refs, &[])]);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (chunk, next) = page(c.tools(), cursor.as_deref(), 10).expect("valid cursor");
        seen.extend(names(chunk).into_iter().map(str::to_owned));
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), 23);
    assert_eq!(seen, names(c.tools()));
    assert_eq!(page(c.tools(), Some("garbage"), 10), Err(InvalidCursor));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    const BACKENDS: [&str; 3] = ["a", "b", "srv/1"];

    fn long(c: char) -> String {
        std::iter::repeat_n(c, 70).collect()
    }

    fn name_pool() -> Vec<String> {
        ["x", "y", "a_x", "b_x", "get weather", "get_weather", "é", "a"]
            .into_iter()
            .map(str::to_owned)
            .chain([long('l'), long('l') + "2", format!("{}é", long('m'))])
            .collect()
    }

    /// Backend lists drawn from a small name pool so collisions are common.
    fn lists() -> impl Strategy<Value = Vec<BackendLists>> {
        let pool = name_pool();
        let n = pool.len();
        let one = (
            proptest::collection::vec((0..n, 0..2u8), 0..8),
            proptest::collection::vec(0..n, 0..4),
            proptest::collection::vec(0..4usize, 0..3),
            proptest::collection::vec(0..3usize, 0..2),
        );
        proptest::collection::vec(one, 1..=3).prop_map(move |bs| {
            bs.into_iter()
                .enumerate()
                .map(|(i, (tools, prompts, resources, templates))| BackendLists {
                    backend: Arc::from(BACKENDS[i]),
                    tools: tools
                        .iter()
                        .map(|&(t, variant)| {
                            // Same name, different body: intake must pick one independently of order.
                            let mut v = tool(&pool[t]);
                            v["description"] = json!(variant);
                            v
                        })
                        .collect(),
                    prompts: prompts.iter().map(|&p| json!({ "name": pool[p] })).collect(),
                    resources: resources
                        .iter()
                        .map(|r| json!({ "uri": format!("file:///{r}"), "from": i }))
                        .collect(),
                    resource_templates: templates
                        .iter()
                        .map(|t| json!({ "uriTemplate": format!("t{t}://{{x}}"), "from": i }))
                        .collect(),
                })
                .collect()
        })
    }

    fn configs() -> impl Strategy<Value = AggregationConfig> {
        let flags = (any::<bool>(), any::<bool>(), any::<bool>());
        (0..3usize, proptest::collection::vec(0..3usize, 0..3), flags).prop_map(
            |(strategy, order, (overrides, filter, deny))| {
                let strategy = ["prefix", "priority", "manual"][strategy];
                let order: Vec<&str> = order.iter().map(|&i| BACKENDS[i]).collect();
                let mut rules = vec![];
                if overrides {
                    rules.push(json!({ "backend": "a", "overrides": {
                        "x": { "name": "y" }, "y": { "name": "b_x", "description": "d" }
                    }}));
                }
                if filter {
                    rules.push(json!({ "backend": "b", "filter": ["x", "get weather"] }));
                }
                cfg(json!({
                    "defaultToolVisibility": if deny { "deny" } else { "allow" },
                    "conflictResolution": strategy,
                    "conflictResolutionConfig": { "priorityOrder": order },
                    "tools": rules
                }))
            },
        )
    }

    /// Permutes every list with a seeded Fisher-Yates: same items, another order.
    fn reorder(backends: &[BackendLists], seed: u64) -> Vec<BackendLists> {
        let mut state = seed | 1;
        let mut shuffle = |v: &Vec<Value>| {
            let mut v = v.clone();
            for i in (1..v.len()).rev() {
                // xorshift64: any fixed generator will do, the seed comes from proptest.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                v.swap(i, (state % (i as u64 + 1)) as usize);
            }
            v
        };
        backends
            .iter()
            .map(|b| BackendLists {
                backend: b.backend.clone(),
                tools: shuffle(&b.tools),
                resources: shuffle(&b.resources),
                resource_templates: shuffle(&b.resource_templates),
                prompts: shuffle(&b.prompts),
            })
            .collect()
    }

    proptest! {
        #[test]
        fn build_ignores_item_order(config in configs(), backends in lists(), seed in any::<u64>()) {
            let c1 = build(&config, &backends);
            let c2 = build(&config, &reorder(&backends, seed));
            prop_assert_eq!(c1, c2);
        }

        #[test]
        fn advertised_names_are_valid_unique_and_sorted(config in configs(), backends in lists()) {
            let c = build(&config, &backends);
            for list in [c.tools(), c.prompts()] {
                let ns = names(list);
                prop_assert!(ns.iter().all(|n| is_valid_name(n)), "{:?}", ns);
                prop_assert!(ns.windows(2).all(|w| w[0] < w[1]), "{:?}", ns);
            }
        }

        #[test]
        fn every_advertised_item_routes_back(config in configs(), backends in lists()) {
            let c = build(&config, &backends);
            let has = |backend: &str, original: &str, prompts: bool| {
                backends.iter().filter(|b| &*b.backend == backend).any(|b| {
                    let list = if prompts { &b.prompts } else { &b.tools };
                    list.iter().any(|t| t["name"] == original)
                })
            };
            for t in names(c.tools()) {
                let route = c.tool(t);
                prop_assert!(route.is_some(), "no route for {}", t);
                if let Some(r) = route {
                    prop_assert!(has(&r.backend, &r.original, false), "{} -> {:?}", t, r);
                }
            }
            for p in names(c.prompts()) {
                let route = c.prompt(p);
                prop_assert!(route.is_some(), "no route for {}", p);
                if let Some(r) = route {
                    prop_assert!(has(&r.backend, &r.original, true), "{} -> {:?}", p, r);
                }
            }
            for res in c.resources() {
                let uri = res["uri"].as_str().unwrap_or("");
                let owner = c.resource(uri).map(|b| b.to_string());
                prop_assert_eq!(owner, Some(BACKENDS[res["from"].as_u64().unwrap_or(9) as usize].to_owned()));
            }
        }
    }
}
