//! ToolHive's own example configs (`tests/data/toolhive/`, each with its origin) load in vmcp and
//! mean what they mean in ToolHive: served with fixture backends standing in for the examples'
//! MCP servers, each advertises the tool names ToolHive's aggregation gives and routes them to
//! the same backends. Examples whose features vmcp does not have yet are refused with a message
//! naming the feature.
//!
//! The operator examples' `spec.config` is taken verbatim; the operator discovers backends from
//! a group, so the test adds `name` and static `backends` (every stand-in over streamable HTTP).

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{Client, Fixture, Gateway, vmcp_bin};
use serde_json::{Value, json};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/toolhive");

fn example(file: &str) -> String {
    std::fs::read_to_string(format!("{DATA}/{file}.yaml")).expect("reading the example")
}

/// A fixture standing in for one of the examples' servers; its `--named-tools` tools answer
/// with `name`.
struct Stand {
    name: &'static str,
    fx: Fixture,
}

impl Stand {
    fn start(name: &'static str, tools: &str) -> Stand {
        Stand { name, fx: Fixture::http_args(0, "both", name, &["--named-tools", tools]) }
    }
}

/// Two yardsticks (as in the examples, the same server twice) and a fetch server.
fn stand_ins() -> (Stand, Stand, Stand) {
    const YARDSTICK: &str = "add,longecho,sampleLLM";
    (Stand::start("y1", YARDSTICK), Stand::start("fetch", "fetch"), Stand::start("y2", YARDSTICK))
}

/// The example with `name` and `backends` (config name → stand-in) added.
fn config(file: &str, backends: &[(&str, &Stand)]) -> String {
    let mut yaml = format!("name: {file}\nbackends:\n");
    for (name, s) in backends {
        yaml += &common::http_backend(name, &s.fx.url);
    }
    yaml + &example(file)
}

async fn listed(url: &str) -> BTreeSet<String> {
    let mut c = Client::new(url);
    c.legacy_init().await;
    c.tool_names(false).await.into_iter().collect()
}

/// The stand-in that answered `tools/call` of `name` through `gw`.
async fn served_by(gw: &Gateway, name: &str) -> String {
    let mut c = gw.client();
    c.legacy_init().await;
    let text = c.tool(false, name, json!({})).await.text();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{name}: {text}"));
    v["server"].as_str().unwrap_or_else(|| panic!("{name}: {text}")).to_owned()
}

/// Under `prefix` with `{workload}_`: every tool of every backend, as `<backend>_<tool>`,
/// routed to that backend.
async fn assert_prefixed(file: &str, backends: &[(&str, &Stand)]) {
    let gw = Gateway::start(&config(file, backends));
    let mut expected = BTreeSet::new();
    for (name, s) in backends {
        expected.extend(listed(&s.fx.url).await.into_iter().map(|t| format!("{name}_{t}")));
    }
    assert_eq!(listed(&gw.url).await, expected, "{file}");
    for (name, s) in backends {
        let tool = if s.name == "fetch" { "fetch" } else { "add" };
        assert_eq!(served_by(&gw, &format!("{name}_{tool}")).await, s.name, "{file}");
    }
}

/// Under `priority`: every tool once, unprefixed; a name several backends have goes to the
/// first of `order` that has it.
async fn assert_priority(file: &str, backends: &[(&str, &Stand)], first_yardstick: &Stand) {
    let gw = Gateway::start(&config(file, backends));
    let mut expected = BTreeSet::new();
    for (_, s) in backends {
        expected.extend(listed(&s.fx.url).await);
    }
    assert_eq!(listed(&gw.url).await, expected, "{file}");
    assert_eq!(served_by(&gw, "add").await, first_yardstick.name, "{file}");
    assert_eq!(served_by(&gw, "fetch").await, "fetch", "{file}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_resolution_examples_advertise_what_toolhive_advertises() {
    let (y1, fetch, y2) = stand_ins();
    let three = [("yardstick-sse", &y1), ("fetch", &fetch), ("yardstick-streamable", &y2)];

    assert_prefixed("vmcp_conflict_resolution--vmcp-prefix-strategy", &three).await;
    // priorityOrder: yardstick-sse, fetch, yardstick-streamable.
    assert_priority("vmcp_conflict_resolution--vmcp-priority-strategy", &three, &y1).await;
    // priorityOrder: yardstick-streamable, fetch, yardstick-sse.
    assert_priority("vmcp_production_full--production-vmcp", &three, &y2).await;

    // `manual`: each backend filtered to the tools named for it; nothing left in conflict.
    let file = "vmcp_conflict_resolution--vmcp-manual-strategy";
    let gw = Gateway::start(&config(file, &three));
    let expected: BTreeSet<String> =
        ["echo", "add", "fetch", "longecho", "sampleLLM"].map(String::from).into();
    assert_eq!(listed(&gw.url).await, expected);
    assert_eq!(served_by(&gw, "add").await, "y1");
    assert_eq!(served_by(&gw, "longecho").await, "y2");
    assert_eq!(served_by(&gw, "fetch").await, "fetch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_examples_advertise_what_toolhive_advertises() {
    let (y1, fetch, y2) = stand_ins();
    let three = [("yardstick-sse", &y1), ("fetch", &fetch), ("yardstick-streamable", &y2)];
    assert_prefixed("vmcp_inline_incoming_auth--inline-auth-vmcp", &three).await;
    assert_prefixed("vmcp_simple_discovered--simple-vmcp", &[("yardstick-simple", &y1)]).await;
    assert_prefixed("vmcp_with_oidcconfig_ref--shared-auth-vmcp", &[("yardstick", &y2)]).await;
    assert_prefixed(
        "vmcp_with_telemetry_ref--telemetry-demo-vmcp",
        &[("yardstick-telemetry", &y1), ("fetch", &fetch)],
    )
    .await;
    // Its optimizer is set outside `spec.config`: the aggregation alone is plain prefixing.
    assert_prefixed(
        "vmcp_optimizer_quickstart--optimizer-vmcp",
        &[("yardstick", &y1), ("fetch", &fetch)],
    )
    .await;
}

/// `vmcp validate` of the example (with its servers added as backends): exit code and output.
fn validate(file: &str) -> (i32, String) {
    let dir = common::TempDir::new("toolhive-example");
    let path = dir.0.join("config.yaml");
    let mut yaml = format!("name: {file}\nbackends:\n");
    for name in ["fetch", "yardstick-sse", "yardstick-streamable", "yardstick", "osv"] {
        yaml += &common::http_backend(name, "http://127.0.0.1:9/mcp");
    }
    yaml += &example(file);
    std::fs::write(&path, yaml).expect("writing the config");
    let out = Command::new(vmcp_bin())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .expect("running vmcp validate");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn examples_with_features_vmcp_lacks_are_refused_naming_the_feature() {
    let cases = [
        ("composite_tool_simple--vmcp-simple-composite", "compositeToolRefs"),
        ("composite_tool_complex--vmcp-data-processor", "compositeToolRefs"),
        ("composite_tool_with_elicitations--vmcp-interactive-deploy", "compositeToolRefs"),
        ("vmcp_codemode--codemode-vmcp", "codeMode"),
        ("vmcp_optimizer_all_options--optimizer-vmcp", "optimizer"),
        ("vmcp_optimizer_openai--optimizer-vmcp", "optimizer"),
    ];
    for (file, key) in cases {
        let (code, out) = validate(file);
        assert_ne!(code, 0, "{file} validated:\n{out}");
        assert!(out.contains(key) && out.contains("not available"), "{file}: {out}");
        assert!(!out.contains("unknown field"), "{file}: {out}");
    }
}
