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

async fn anon(gw: &Gateway) -> Client {
    let mut c = gw.client();
    c.legacy_init().await;
    c
}

async fn listed(url: &str) -> BTreeSet<String> {
    let mut c = Client::new(url);
    c.legacy_init().await;
    c.tool_names(false).await.into_iter().collect()
}

/// The stand-in that answered `client`'s `tools/call` of `name`.
async fn served_by(client: &Client, name: &str) -> String {
    let text = client.tool(false, name, json!({})).await.text();
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
        assert_eq!(served_by(&anon(&gw).await, &format!("{name}_{tool}")).await, s.name, "{file}");
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
    assert_eq!(served_by(&anon(&gw).await, "add").await, first_yardstick.name, "{file}");
    assert_eq!(served_by(&anon(&gw).await, "fetch").await, "fetch", "{file}");
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
    assert_eq!(served_by(&anon(&gw).await, "add").await, "y1");
    assert_eq!(served_by(&anon(&gw).await, "longecho").await, "y2");
    assert_eq!(served_by(&anon(&gw).await, "fetch").await, "fetch");
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

/// `examples/vmcp-config.yaml`, ToolHive's flagship example, with its two servers as backends.
fn flagship(github: &Stand, jira: &Stand) -> String {
    let mut yaml = example("vmcp-config");
    yaml += "backends:\n";
    yaml += &common::http_backend("github", &github.fx.url);
    yaml += &common::http_backend("jira", &jira.fx.url);
    yaml
}

/// The secrets the flagship example reads from the environment.
const FLAGSHIP_ENV: &[(&str, &str)] =
    &[("GITHUB_API_TOKEN", "gh-token"), ("VMCP_CLIENT_SECRET", "client-secret")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flagship_example_loads_and_means_what_it_means_in_toolhive() {
    let github = Stand::start("github", "create_pr,merge_pr,list_issues");
    let jira = Stand::start("jira", "create_issue");
    let yaml = flagship(&github, &jira);

    // `vmcp validate` accepts it as it is; the warnings name what does nothing here.
    let dir = common::TempDir::new("toolhive-flagship");
    let path = dir.0.join("config.yaml");
    std::fs::write(&path, &yaml).expect("writing the config");
    let out = Command::new(vmcp_bin())
        .args(["validate", "--config"])
        .arg(&path)
        .envs(FLAGSHIP_ENV.iter().copied())
        .output()
        .expect("running vmcp validate");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("groupRef"), "{text}");
    assert!(text.contains("did you mean Action::\"call_tool\"?"), "{text}");

    // Served (its identity provider is unreachable here: the issuer is swapped for a local one,
    // which mints tokens for the example's audience).
    let idp = common::local_idp::LocalIdp::start();
    let served = |yaml: &str| {
        let yaml = yaml.replace("https://keycloak.example.com/realms/myrealm", &idp.url);
        Gateway::start_env(&yaml, FLAGSHIP_ENV)
    };
    let client = |gw: &Gateway| {
        let mut c = gw.client();
        c.bearer = Some(idp.mint(json!({ "sub": "dev", "aud": "vmcp" })));
        c
    };

    // Its policy names `Action::"tools/call"`, which ToolHive's authorizer never asks about:
    // it permits nothing, so nothing is listed and every call is denied, as in ToolHive.
    let gw = served(&yaml);
    let mut c = client(&gw);
    c.legacy_init().await;
    assert!(c.tool_names(false).await.is_empty());
    let denied = c.tool(false, "github_merge_pr", json!({})).await;
    assert_eq!(denied.error_code(), -32006, "{denied:?}");
    drop(gw);

    // With the action it means (`call_tool`), the aggregation shows: `filter` applies to the
    // names after overrides (so the renamed `create_pr` is filtered out), and under `prefix`
    // overridden names are prefixed too.
    let gw = served(&yaml.replace("Action::\"tools/call\"", "Action::\"call_tool\""));
    let mut c = client(&gw);
    c.legacy_init().await;
    let names: BTreeSet<String> = c.tool_names(false).await.into_iter().collect();
    let github_tools: BTreeSet<&str> =
        names.iter().filter(|n| n.starts_with("github_")).map(String::as_str).collect();
    assert_eq!(github_tools, BTreeSet::from(["github_merge_pr", "github_list_issues"]));
    assert!(names.contains("jira_jira_create_issue"), "{names:?}");
    assert!(!names.contains("jira_create_issue"), "{names:?}");
    let mut expected_jira: BTreeSet<String> =
        listed(&jira.fx.url).await.into_iter().map(|t| format!("jira_{t}")).collect();
    expected_jira.remove("jira_create_issue");
    expected_jira.insert("jira_jira_create_issue".into());
    let jira_tools: BTreeSet<String> =
        names.iter().filter(|n| n.starts_with("jira_")).cloned().collect();
    assert_eq!(jira_tools, expected_jira);
    assert_eq!(served_by(&c, "github_merge_pr").await, "github");
    assert_eq!(served_by(&c, "jira_jira_create_issue").await, "jira");
}
