//! Checks and warnings for `aggregation`.
//!
//! The catalog gives a ToolHive config the meaning ToolHive gives it (`catalog::resolve`). Where
//! vmcp deliberately differs, the check or warning says so and why, so a user bringing a file
//! over learns of it from `vmcp validate` rather than from a client.

use std::collections::HashMap;

use super::locate::{index_path, key_path};
use super::validate::{Checker, NAME_CHARS, is_name_char};
use super::{Config, ConflictResolution, ToolVisibility};

/// Longest tool name MCP clients reliably accept.
const MAX_TOOL_NAME: usize = 64;

pub(super) fn check(cfg: &Config, names: &[&str], c: &mut Checker<'_>) {
    let agg = &cfg.aggregation;
    let crc = "aggregation.conflictResolutionConfig";
    if let Some(format) = &agg.conflict_resolution_config.prefix_format {
        let path = key_path(crc, "prefixFormat");
        let rest = format.replace("{backend}", "").replace("{workload}", "");
        if rest.len() == format.len() {
            c.report(
                &path,
                "must contain {backend} (or {workload}). ToolHive accepts a fixed prefix, but then \
                 every backend gets the same one and same-named tools of two backends collide \
                 (ToolHive keeps one of them arbitrarily); vmcp refuses rather than guess",
            );
        } else if rest.contains('{') {
            c.report(&path, "unknown placeholder; only {backend} and {workload} are supported");
        } else if let Some(bad) = rest.chars().find(|ch| !is_name_char(*ch)) {
            c.report(&path, format!("character {bad:?} would end up in tool names; {NAME_CHARS}"));
        }
    }

    let order = &agg.conflict_resolution_config.priority_order;
    let order_path = key_path(crc, "priorityOrder");
    if agg.conflict_resolution == ConflictResolution::Priority && order.is_empty() {
        c.report(
            &order_path,
            "required when conflictResolution is priority: list backends, highest priority first",
        );
    }
    let mut listed: HashMap<&str, usize> = HashMap::new();
    for (j, name) in order.iter().enumerate() {
        let p = index_path(&order_path, j);
        if !names.contains(&name.as_str()) {
            c.unknown_backend(p, name, names);
        } else if let Some(&first) = listed.get(name.as_str()) {
            c.report(p, format!("backend {name:?} is already listed at priorityOrder[{first}]"));
        } else {
            listed.insert(name, j);
        }
    }

    check_tool_rules(cfg, names, c);
}

fn check_tool_rules(cfg: &Config, names: &[&str], c: &mut Checker<'_>) {
    let manual = cfg.aggregation.conflict_resolution == ConflictResolution::Manual;
    let mut rules_for: HashMap<&str, String> = HashMap::new();
    // (backend, or "" under manual where names are global) and override name → the override
    // that produced it first.
    let mut produced: HashMap<(&str, &str), String> = HashMap::new();
    for (k, rules) in cfg.aggregation.tools.iter().enumerate() {
        let p = index_path("aggregation.tools", k);
        // ToolHive spells the key `workload`; point at whichever the file uses.
        let backend_path = if c.index.pos(&key_path(&p, "workload")).is_some() {
            key_path(&p, "workload")
        } else {
            key_path(&p, "backend")
        };
        if !names.contains(&rules.backend.as_str()) {
            c.unknown_backend(backend_path.clone(), &rules.backend, names);
        } else if let Some(first) = rules_for.get(rules.backend.as_str()) {
            let line = c.at_line(first);
            let msg = format!(
                "rules for backend {:?} are already given at {first}{line}; merge them",
                rules.backend
            );
            c.report(backend_path.clone(), msg);
        } else {
            rules_for.insert(&rules.backend, backend_path.clone());
        }

        for (tool, ov) in &rules.overrides {
            let op = key_path(&key_path(&p, "overrides"), tool);
            if ov.name.is_none() && ov.description.is_none() && ov.annotations.is_none() {
                c.report(&op, "override changes nothing; give name, description or annotations");
            }
            let Some(name) = ov.name.as_deref() else { continue };
            let np = key_path(&op, "name");
            let scope = if manual { "" } else { rules.backend.as_str() };
            if let Some(problem) = tool_name_problem(name) {
                c.report(&np, problem);
            } else if let Some(first) = produced.get(&(scope, name)) {
                let line = c.at_line(first);
                let why = if manual {
                    "under manual the two tools would conflict (ToolHive refuses to start on it)"
                } else {
                    "two tools of one backend cannot share a name (ToolHive accepts it and \
                     advertises one of them arbitrarily)"
                };
                c.report(
                    &np,
                    format!("tool name {name:?} is already produced by {first}{line}; {why}"),
                );
            } else {
                produced.insert((scope, name), np);
            }
        }
    }
    // Under `manual`, collisions with names the backends advertise are only known at run time:
    // `vmcp serve` refuses to start on them (see `catalog::conflict`).
}

/// Why `name` is not a valid MCP tool name, if it is not.
fn tool_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("must not be empty".to_owned())
    } else if name.chars().count() > MAX_TOOL_NAME {
        Some(format!(
            "tool name is {} characters long; at most {MAX_TOOL_NAME} are allowed",
            name.chars().count()
        ))
    } else {
        name.chars()
            .find(|ch| !is_name_char(*ch))
            .map(|bad| format!("invalid tool name {name:?} (character {bad:?}); {NAME_CHARS}"))
    }
}

/// Legal settings whose meaning may surprise, above all where vmcp deliberately differs from
/// ToolHive.
pub(super) fn warnings(cfg: &Config) -> Vec<String> {
    let agg = &cfg.aggregation;
    let crc = "aggregation.conflictResolutionConfig";
    let mut out = Vec::new();
    let strategy = agg.conflict_resolution;
    if strategy != ConflictResolution::Priority
        && !agg.conflict_resolution_config.priority_order.is_empty()
    {
        out.push(format!("{crc}.priorityOrder: ignored unless conflictResolution is priority"));
    }
    if agg.conflict_resolution_config.prefix_format.is_some() {
        match strategy {
            ConflictResolution::Prefix => {}
            ConflictResolution::Priority => out.push(format!(
                "{crc}.prefixFormat: under priority it names only the prompts of backends not in \
                 priorityOrder; tools that unranked backends share get the default {{backend}}_ \
                 (as in ToolHive)"
            )),
            ConflictResolution::Manual => out.push(format!(
                "{crc}.prefixFormat: under manual it names only prompts (every prompt is \
                 prefixed, as in ToolHive); tools keep their names"
            )),
        }
    }
    let hides = agg.exclude_all_tools
        || agg.default_tool_visibility == ToolVisibility::Deny
        || agg
            .tools
            .iter()
            .any(|r| r.exclude_all || r.filter.as_ref().is_some_and(|f| !f.is_empty()));
    if strategy != ConflictResolution::Prefix && hides {
        out.push(
            "aggregation: tools hidden by excludeAllTools, excludeAll, filter or \
             defaultToolVisibility take no part in conflict resolution in vmcp. In ToolHive they \
             do: under priority a hidden tool of a higher-priority backend takes the name from a \
             visible one (so nobody advertises it), and under manual a hidden tool's conflict \
             fails aggregation"
                .to_owned(),
        );
    }
    if strategy == ConflictResolution::Priority
        && agg.default_tool_visibility == ToolVisibility::Deny
    {
        for b in &agg.conflict_resolution_config.priority_order {
            if !agg.tools.iter().any(|r| r.backend == *b) {
                out.push(format!(
                    "{crc}.priorityOrder: backend {b:?} has no aggregation.tools entry, so under \
                     defaultToolVisibility deny it advertises no tools. ToolHive rejects this \
                     (its hidden tools could still win names); vmcp accepts it, since hidden \
                     tools win no names here"
                ));
            }
        }
    }
    if strategy == ConflictResolution::Manual {
        out.push(
            "aggregation.conflictResolution: manual: vmcp refuses to start when tools of its \
             first catalog conflict, as ToolHive fails on them. A conflict that appears later (a \
             backend's tool list changed) cannot stop the running gateway: those tools are left \
             out and listed in /status problems, while ToolHive, which aggregates on demand, fails \
             its requests"
                .to_owned(),
        );
    }
    for (k, rules) in agg.tools.iter().enumerate() {
        let p = index_path("aggregation.tools", k);
        let Some(filter) = &rules.filter else { continue };
        if filter.is_empty() {
            out.push(format!(
                "{p}.filter: an empty filter hides nothing (as in ToolHive); to hide every tool of \
                 {:?}, set excludeAll: true",
                rules.backend
            ));
        }
        for (j, entry) in filter.iter().enumerate() {
            let renamed = rules.overrides.get(entry).and_then(|o| o.name.as_deref());
            if let Some(new) = renamed.filter(|n| *n != entry && !filter.iter().any(|f| f == n)) {
                out.push(format!(
                    "{p}.filter[{j}]: filters match tool names after overrides (as in ToolHive); \
                     {entry:?} is renamed to {new:?} by overrides.{entry}, so this entry matches \
                     nothing and the tool is hidden; list {new:?} instead"
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::parse;

    const BACKENDS: &str = "\
name: gw
backends:
  - name: a
    transport: streamable-http
    url: http://localhost:9000/mcp
  - name: b
    transport: streamable-http
    url: http://localhost:9001/mcp
";

    fn warnings(aggregation: &str) -> Vec<String> {
        let text = format!("{BACKENDS}aggregation:\n{aggregation}");
        match parse(&text, "t.yaml") {
            Ok(cfg) => super::warnings(&cfg),
            Err(e) => panic!("{e}\n{text}"),
        }
    }

    fn problems(aggregation: &str) -> Vec<String> {
        let text = format!("{BACKENDS}aggregation:\n{aggregation}");
        super::super::validate::tests::problems(&text).into_iter().map(|(_, _, m)| m).collect()
    }

    #[test]
    fn fixed_prefix_is_refused_with_toolhive_s_behaviour_explained() {
        let ps = problems("  conflictResolutionConfig:\n    prefixFormat: mcp_\n");
        assert_eq!(ps.len(), 1, "{ps:?}");
        assert!(ps[0].contains("ToolHive accepts a fixed prefix"), "{}", ps[0]);
    }

    #[test]
    fn default_tool_visibility_values() {
        assert!(warnings("  defaultToolVisibility: deny\n").is_empty());
        assert!(warnings("  defaultToolVisibility: allow\n").is_empty());
        let text = format!("{BACKENDS}aggregation:\n  defaultToolVisibility: hide\n");
        let err = parse(&text, "t.yaml").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("allow") && err.contains("deny"), "{err}");
    }

    #[test]
    fn same_override_name_on_two_backends() {
        let rules = "  tools:\n    - workload: a\n      overrides: {x: {name: n}}\n    - workload: b\n      overrides: {y: {name: n}}\n";
        // Under prefix (and priority) each backend's names are its own.
        assert!(warnings(rules).is_empty());
        let ps = problems(&format!("  conflictResolution: manual\n{rules}"));
        assert_eq!(ps.len(), 1, "{ps:?}");
        assert!(ps[0].contains("ToolHive refuses to start"), "{}", ps[0]);
        // Within one backend it is an error under every strategy.
        let ps = problems(
            "  tools:\n    - workload: a\n      overrides: {x: {name: n}, y: {name: n}}\n",
        );
        assert!(ps[0].contains("two tools of one backend"), "{ps:?}");
    }

    #[test]
    fn deliberate_differences_are_warned_about() {
        let w = warnings("  conflictResolution: manual\n");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("cannot stop the running gateway"), "{w:?}");

        let w = warnings(
            "  conflictResolution: priority\n  defaultToolVisibility: deny\n  conflictResolutionConfig:\n    priorityOrder: [a, b]\n  tools:\n    - workload: b\n",
        );
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("take no part in conflict resolution"), "{w:?}");
        assert!(w[1].contains("backend \"a\"") && w[1].contains("ToolHive rejects"), "{w:?}");

        // Under prefix, hiding changes no names: nothing to say.
        assert!(warnings("  tools:\n    - workload: a\n      filter: [x]\n").is_empty());
    }

    #[test]
    fn filter_mistakes() {
        let w = warnings("  tools:\n    - workload: a\n      filter: []\n");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("aggregation.tools[0].filter: an empty filter hides nothing"));

        let w = warnings(
            "  tools:\n    - workload: a\n      filter: [echo]\n      overrides: {echo: {name: shout}}\n",
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("aggregation.tools[0].filter[0]:"), "{w:?}");
        assert!(w[0].contains("list \"shout\" instead"), "{w:?}");
        // Listing the new name is right; keeping the old one too is harmless.
        let w = warnings(
            "  tools:\n    - workload: a\n      filter: [echo, shout]\n      overrides: {echo: {name: shout}}\n",
        );
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn prefix_format_under_other_strategies() {
        let w = warnings(
            "  conflictResolution: priority\n  conflictResolutionConfig:\n    prefixFormat: '{workload}.'\n    priorityOrder: [a]\n",
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("names only the prompts of backends not in priorityOrder"));
    }
}
