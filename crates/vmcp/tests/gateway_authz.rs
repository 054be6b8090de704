//! Cedar authorization (`incomingAuth.authz`) end to end: ToolHive's documented policies allow and
//! deny what ToolHive documents, lists show only what the caller may use, group and role claims
//! (flat, URL-style and nested) become the principal's parents, and ToolHive's example policies
//! load with ToolHive's meaning and a warning naming the reason and the line.
//!
//! Users are tokens minted by the in-process IdP; the backend is a stdio fixture `fx`, so its
//! tools are advertised as `fx_<tool>` (the default prefix) and policies name them so, as
//! ToolHive's vMCP does (it authorizes the advertised name).

mod common;

use common::local_idp::{AUDIENCE, LocalIdp};
use common::*;
use serde_json::{Value, json};

/// The policies ToolHive documents in `docs/authz.md` ("Example policies", "Using JWT claims",
/// "Using tool arguments"), with the tool, prompt and resource names of the fixture. `has`
/// guards where a claim may be absent: without them, a token lacking the claim makes the
/// policy fail to evaluate, which denies the whole request (ToolHive's behaviour, tested below).
const DOCUMENTED: &[&str] = &[
    // Allow a specific tool / prompt / resource.
    r#"permit(principal, action == Action::"call_tool", resource == Tool::"fx_echo");"#,
    r#"permit(principal, action == Action::"get_prompt", resource == Prompt::"fx_test_simple_prompt");"#,
    r#"permit(principal, action == Action::"read_resource", resource == Resource::"test://static-text");"#,
    // Allow a specific client to call any tool.
    r#"permit(principal == Client::"user123", action == Action::"call_tool", resource);"#,
    // Roles from the token's claims.
    r#"permit(principal, action == Action::"call_tool", resource)
       when { principal has claim_roles && principal.claim_roles.contains("admin") };"#,
    // Tool arguments, on the resource and in the context.
    r#"forbid(principal, action == Action::"call_tool", resource == Tool::"fx_echo")
       when { resource has arg_message && resource.arg_message == "forbidden" };"#,
    r#"forbid(principal, action == Action::"call_tool", resource == Tool::"fx_echo")
       when { context has arg_message && context.arg_message == "also forbidden" };"#,
    // Groups (THVGroup parents from the group claim; entitiesJson makes eng part of staff).
    r#"permit(principal in THVGroup::"eng", action == Action::"call_tool", resource == Tool::"fx_test_simple_text");"#,
    r#"permit(principal in THVGroup::"staff", action == Action::"get_prompt", resource);"#,
    // Roles (roleClaimName, a nested claim) are parents too.
    r#"permit(principal in THVGroup::"auditor", action == Action::"read_resource", resource);"#,
    // Server and backend scope: resources are in MCP::"<gateway name>" and Backend::"<backend>".
    r#"permit(principal in THVGroup::"ops", action == Action::"call_tool", resource in Backend::"fx");"#,
    r#"permit(principal in THVGroup::"ops", action == Action::"read_resource", resource in MCP::"authz-gw");"#,
    // Tool annotations (from the catalog, here set by an override) on the resource.
    r#"forbid(principal, action == Action::"call_tool", resource)
       when { resource has destructiveHint && resource.destructiveHint };"#,
];

/// `[{THVGroup::"eng"} in THVGroup::"staff"]` as Cedar entity JSON.
const ENTITIES: &str = r#"[{"uid":{"type":"THVGroup","id":"eng"},"parents":[{"type":"THVGroup","id":"staff"}],"attrs":{}}]"#;

/// YAML for `policies:` (JSON strings are YAML double-quoted scalars).
fn policies(list: &[&str]) -> String {
    let items: Vec<String> = list.iter().map(|p| Value::from(*p).to_string()).collect();
    format!("[{}]", items.join(", "))
}

/// A gateway named `authz-gw` with OIDC from `idp`, the fixture `fx` and `authz` (YAML lines
/// under `authz:`, indented four spaces).
fn gateway(idp: &LocalIdp, authz: &str) -> Gateway {
    Gateway::start(&format!(
        "name: authz-gw\nincomingAuth:\n  type: oidc\n  oidc:\n    issuer: {}\n    audience: {AUDIENCE}\n  authz:\n{authz}\
         aggregation:\n  tools:\n    - workload: fx\n      overrides:\n        fail:\n          annotations: {{destructiveHint: true}}\n\
         backends:\n{}",
        idp.url,
        stdio_backend("fx"),
    ))
}

/// A Legacy client with a token carrying `claims`.
async fn user(gw: &Gateway, idp: &LocalIdp, claims: Value) -> Client {
    let mut c = gw.client();
    c.bearer = Some(idp.mint(claims));
    c.legacy_init().await;
    c
}

/// Claims `{sub, <claim>: value}`.
fn with_claim(sub: &str, claim: &str, value: Value) -> Value {
    let mut v = json!({ "sub": sub });
    v[claim] = value;
    v
}

fn names(r: &Reply, key: &str, field: &str) -> Vec<String> {
    let mut v: Vec<String> = r.result()[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {}", r.msg()))
        .iter()
        .filter_map(|t| t[field].as_str().map(str::to_owned))
        .collect();
    v.sort();
    v
}

async fn tools(c: &Client) -> Vec<String> {
    names(&c.call("tools/list", json!({})).await, "tools", "name")
}

async fn prompts(c: &Client) -> Vec<String> {
    names(&c.call("prompts/list", json!({})).await, "prompts", "name")
}

async fn resources(c: &Client) -> Vec<String> {
    names(&c.call("resources/list", json!({})).await, "resources", "uri")
}

/// Asserts a refusal: JSON-RPC -32006 `Unauthorized` and HTTP 403.
#[track_caller]
fn assert_denied(r: &Reply) {
    assert_eq!(r.status, 403, "{:?}", r.message);
    assert_eq!(r.error_code(), -32006, "{}", r.msg());
    assert_eq!(r.error()["message"], "Unauthorized", "{}", r.msg());
}

async fn call(c: &Client, tool: &str, arguments: Value) -> Reply {
    c.call("tools/call", json!({ "name": tool, "arguments": arguments })).await
}

/// Waits until the fixture's tools are in the catalog (the gateway answers before discovery).
async fn settled(c: &Client) {
    poll(std::time::Duration::from_secs(20), "fixture tools listed", || async {
        let r = c.call("resources/templates/list", json!({})).await;
        (r.result()["resourceTemplates"].as_array().is_some_and(|a| !a.is_empty())).then_some(())
    })
    .await;
}

#[tokio::test]
async fn documented_policies_allow_and_deny_what_toolhive_documents() {
    let idp = LocalIdp::start();
    let authz = format!(
        "    type: cedar\n    policies: {}\n    entitiesJson: '{ENTITIES}'\n    roleClaimName: realm_access.roles\n",
        policies(DOCUMENTED)
    );
    let gw = gateway(&idp, &authz);

    // A user with no groups or roles: only what the policies name.
    let alice = user(&gw, &idp, json!({ "sub": "alice" })).await;
    settled(&alice).await;
    assert_eq!(tools(&alice).await, ["fx_echo"]);
    assert_eq!(prompts(&alice).await, ["fx_test_simple_prompt"]);
    assert_eq!(resources(&alice).await, ["test://static-text"]);
    // Templates are not filtered (as in ToolHive); reads through them are decided per URI.
    let t = alice.call("resources/templates/list", json!({})).await;
    assert_eq!(t.result()["resourceTemplates"].as_array().map(Vec::len), Some(1));

    assert_eq!(call(&alice, "fx_echo", json!({ "message": "hi" })).await.text(), "Echo: hi");
    assert_denied(&call(&alice, "fx_echo", json!({ "message": "forbidden" })).await);
    assert_denied(&call(&alice, "fx_echo", json!({ "message": "also forbidden" })).await);
    assert_denied(&call(&alice, "fx_sleep", json!({ "ms": 1 })).await);
    // Denial wins over "unknown": the name's existence is not revealed.
    assert_denied(&call(&alice, "fx_no_such_tool", json!({})).await);
    let p = alice.call("prompts/get", json!({ "name": "fx_test_simple_prompt" })).await;
    assert!(p.result()["messages"].is_array(), "{}", p.msg());
    assert_denied(
        &alice
            .call(
                "prompts/get",
                json!({ "name": "fx_test_prompt_with_arguments", "arguments": { "arg1": "a", "arg2": "b" } }),
            )
            .await,
    );
    let r = alice.call("resources/read", json!({ "uri": "test://static-text" })).await;
    assert!(r.result()["contents"].is_array(), "{}", r.msg());
    assert_denied(&alice.call("resources/read", json!({ "uri": "test://static-binary" })).await);
    assert_denied(&alice.call("resources/read", json!({ "uri": "test://template/7/data" })).await);
    assert_denied(
        &alice.call("resources/subscribe", json!({ "uri": "test://watched-resource" })).await,
    );

    // The same decisions for a Modern (2026-07-28) client, also HTTP 403.
    let mut modern = gw.client();
    modern.bearer = Some(idp.mint(json!({ "sub": "alice" })));
    let m = modern
        .modern_call("tools/call", json!({ "name": "fx_sleep", "arguments": { "ms": 1 } }))
        .await;
    assert_denied(&m);
    let m = modern.modern_call("tools/list", json!({})).await;
    assert_eq!(names(&m, "tools", "name"), ["fx_echo"]);

    // A specific client may call any tool, except the destructive one (annotation override).
    let u123 = user(&gw, &idp, json!({ "sub": "user123" })).await;
    let all = tools(&u123).await;
    assert!(all.len() > 10 && all.contains(&"fx_sleep".to_owned()), "{all:?}");
    assert!(!all.contains(&"fx_fail".to_owned()), "destructive tool listed: {all:?}");
    assert_eq!(call(&u123, "fx_sleep", json!({ "ms": 1 })).await.text(), "Slept 1 ms");
    assert_denied(&call(&u123, "fx_fail", json!({})).await);

    // Roles claim (`claim_roles`).
    let admin = user(&gw, &idp, json!({ "sub": "root", "roles": ["admin"] })).await;
    assert_eq!(tools(&admin).await, tools(&u123).await);

    // Group claim `groups`: eng, and staff through entitiesJson.
    let bob = user(&gw, &idp, json!({ "sub": "bob", "groups": ["eng"] })).await;
    assert_eq!(tools(&bob).await, ["fx_echo", "fx_test_simple_text"]);
    // Every prompt (the fixture has five), through staff.
    let bob_prompts = prompts(&bob).await;
    assert_eq!(bob_prompts.len(), 5, "{bob_prompts:?}");
    assert_eq!(call(&bob, "fx_test_simple_text", json!({})).await.status, 200);

    // Role claim (`roleClaimName: realm_access.roles`, a nested path).
    let carol =
        user(&gw, &idp, json!({ "sub": "carol", "realm_access": { "roles": ["auditor"] } })).await;
    assert_eq!(
        resources(&carol).await,
        ["test://static-binary", "test://static-text", "test://watched-resource"]
    );
    let r = carol.call("resources/read", json!({ "uri": "test://template/7/data" })).await;
    assert!(r.result()["contents"].is_array(), "{}", r.msg());

    // Backend and server scope.
    let ops = user(&gw, &idp, json!({ "sub": "dave", "groups": ["ops"] })).await;
    let ops_tools = tools(&ops).await;
    assert_eq!(ops_tools.len(), all.len(), "{ops_tools:?}");
    assert_eq!(resources(&ops).await.len(), 3);
}

#[tokio::test]
async fn custom_group_claim_and_entity_type() {
    let idp = LocalIdp::start();
    let claim = "https://example.com/groups";
    let authz = format!(
        "    type: cedar\n    groupClaimName: \"{claim}\"\n    groupEntityType: Team\n    policies: {}\n",
        policies(&[
            r#"permit(principal in Team::"platform", action == Action::"call_tool", resource == Tool::"fx_echo");"#
        ])
    );
    let gw = gateway(&idp, &authz);
    let yes = user(&gw, &idp, with_claim("p", claim, json!(["platform"]))).await;
    settled(&yes).await;
    assert_eq!(tools(&yes).await, ["fx_echo"]);
    // The well-known `groups` claim is the fallback when the named claim is absent.
    let fallback = user(&gw, &idp, json!({ "sub": "q", "groups": ["platform"] })).await;
    assert_eq!(tools(&fallback).await, ["fx_echo"]);
    let no = user(&gw, &idp, with_claim("r", claim, json!(["other"]))).await;
    assert!(tools(&no).await.is_empty());
    assert_denied(&call(&no, "fx_echo", json!({ "message": "x" })).await);
}

/// ToolHive denies a request when any policy fails to evaluate (here: reading a claim the token
/// lacks, without `has`), even if another policy permits it. vmcp does the same.
#[tokio::test]
async fn an_evaluation_error_denies() {
    let idp = LocalIdp::start();
    let authz = format!(
        "    type: cedar\n    policies: {}\n",
        policies(&[
            r#"permit(principal, action == Action::"call_tool", resource == Tool::"fx_echo");"#,
            r#"permit(principal, action == Action::"call_tool", resource) when { principal.claim_level == "high" };"#,
        ])
    );
    let gw = gateway(&idp, &authz);
    let high = user(&gw, &idp, json!({ "sub": "h", "level": "high" })).await;
    settled(&high).await;
    assert!(tools(&high).await.len() > 10);
    let plain = user(&gw, &idp, json!({ "sub": "p" })).await;
    assert!(tools(&plain).await.is_empty());
    assert_denied(&call(&plain, "fx_echo", json!({ "message": "x" })).await);
}

/// `examples/vmcp-config.yaml` in ToolHive, its `authz` block verbatim.
const TOOLHIVE_VMCP_CONFIG: &str = r#"  authz:
    type: cedar
    policies:
      - |
        permit(
          principal,
          action == Action::"tools/call",
          resource
        );
"#;

/// `examples/operator/virtual-mcps/vmcp_inline_incoming_auth.yaml` in ToolHive, its inline
/// policies verbatim (re-indented).
const TOOLHIVE_OPERATOR_INLINE: &[&str] = &[
    "permit(\n  principal,\n  action == Action::\"tools/call\",\n  resource\n) when {\n  principal.role == \"developer\"\n};\n",
    "permit(\n  principal,\n  action == Action::\"resources/read\",\n  resource\n) when {\n  principal.role in [\"developer\", \"operator\"]\n};\n",
    "forbid(\n  principal,\n  action == Action::\"tools/call\",\n  resource\n) when {\n  resource.tool in [\"delete_file\", \"execute_command\"] &&\n  principal.role != \"admin\"\n};\n",
];

/// ToolHive's example policies name actions its authorizer never asks about (`tools/call`,
/// `resources/read`: it asks `call_tool`, `read_resource`), so under ToolHive they match nothing
/// and every call is denied. vmcp loads them with the same meaning, and warns naming the policy,
/// the line and the fix.
#[tokio::test]
async fn toolhive_example_policies_load_deny_as_in_toolhive_and_say_why() {
    let head = "name: gw\nbackends:\n  - name: a\n    transport: streamable-http\n    url: https://h/mcp\nincomingAuth:\n  type: anonymous\n";
    let cfg = vmcp::config::parse(&format!("{head}{TOOLHIVE_VMCP_CONFIG}"), "c.yaml")
        .unwrap_or_else(|e| panic!("refused: {e}"));
    let w = vmcp::config::validate_warnings(&cfg).join("\n");
    assert!(
        w.contains("incomingAuth.authz.policies[0]: line 3, column 21 of the policy: unknown action Action::\"tools/call\""),
        "{w}"
    );
    assert!(w.contains("did you mean Action::\"call_tool\"?"), "{w}");

    // The operator example: its unknown actions make every policy inert, so the type error in
    // two of them (`in` over strings) never comes into play, in ToolHive either.
    let text = format!(
        "{head}  authz:\n    type: cedar\n    policies: {}\n",
        policies(TOOLHIVE_OPERATOR_INLINE)
    );
    let cfg = vmcp::config::parse(&text, "c.yaml").unwrap_or_else(|e| panic!("refused: {e}"));
    let w = vmcp::config::validate_warnings(&cfg).join("\n");
    for (i, action, fix) in [
        (0, "tools/call", "call_tool"),
        (1, "resources/read", "read_resource"),
        (2, "tools/call", "call_tool"),
    ] {
        let needle = format!(
            "policies[{i}]: line 3, column 21 of the policy: unknown action Action::\"{action}\""
        );
        assert!(w.contains(&needle), "{needle}\n{w}");
        assert!(w.contains(&format!("did you mean Action::\"{fix}\"?")), "{w}");
    }

    // Served: the flagship example's policy permits nothing, as in ToolHive.
    let idp = LocalIdp::start();
    let authz = TOOLHIVE_VMCP_CONFIG.trim_start_matches("  authz:\n");
    let gw = gateway(&idp, authz);
    let anyone = user(&gw, &idp, json!({ "sub": "x" })).await;
    assert!(tools(&anyone).await.is_empty());
    assert_denied(&call(&anyone, "fx_echo", json!({ "message": "m" })).await);
}

/// ToolHive's example policies with ToolHive's real names (the action `call_tool`, the claim
/// `claim_role`, the tool's `name`, and `.contains` for membership, since Cedar's `in` takes
/// entities) do what their comments document.
#[tokio::test]
async fn toolhive_example_policies_with_toolhive_names_do_what_they_document() {
    // examples/vmcp-config.yaml: every tool call is allowed; nothing else.
    let idp = LocalIdp::start();
    let authz = format!(
        "    type: cedar\n    policies: {}\n",
        policies(&["permit(\n  principal,\n  action == Action::\"call_tool\",\n  resource\n);\n"])
    );
    let gw = gateway(&idp, &authz);
    let anyone = user(&gw, &idp, json!({ "sub": "x" })).await;
    settled(&anyone).await;
    assert!(tools(&anyone).await.len() > 10);
    assert_eq!(call(&anyone, "fx_echo", json!({ "message": "m" })).await.text(), "Echo: m");
    assert!(prompts(&anyone).await.is_empty());
    assert!(resources(&anyone).await.is_empty());
    assert_denied(&anyone.call("prompts/get", json!({ "name": "fx_test_simple_prompt" })).await);
    drop(gw);

    // The operator example: developers call tools, developers and operators read resources,
    // non-admins never use the dangerous tools (two fixture tools renamed to their names).
    let authz = format!(
        "    type: cedar\n    policies: {}\n",
        policies(&[
            "permit(principal, action == Action::\"call_tool\", resource) when {\n  principal has claim_role && principal.claim_role == \"developer\"\n};",
            "permit(principal, action == Action::\"read_resource\", resource) when {\n  principal has claim_role && [\"developer\", \"operator\"].contains(principal.claim_role)\n};",
            "forbid(principal, action == Action::\"call_tool\", resource) when {\n  [\"fx_delete_file\", \"fx_execute_command\"].contains(resource.name) &&\n  !(principal has claim_role && principal.claim_role == \"admin\")\n};",
        ])
    );
    let gw = Gateway::start(&format!(
        "name: authz-gw\nincomingAuth:\n  type: oidc\n  oidc:\n    issuer: {}\n    audience: {AUDIENCE}\n  authz:\n{authz}\
         aggregation:\n  tools:\n    - workload: fx\n      overrides:\n        fail: {{name: delete_file}}\n        sleep: {{name: execute_command}}\n\
         backends:\n{}",
        idp.url,
        stdio_backend("fx"),
    ));
    let dev = user(&gw, &idp, json!({ "sub": "d", "role": "developer" })).await;
    settled(&dev).await;
    let dev_tools = tools(&dev).await;
    assert!(dev_tools.contains(&"fx_echo".to_owned()), "{dev_tools:?}");
    assert!(
        !dev_tools.iter().any(|t| t == "fx_delete_file" || t == "fx_execute_command"),
        "{dev_tools:?}"
    );
    assert_denied(&call(&dev, "fx_execute_command", json!({ "ms": 1 })).await);
    assert_eq!(resources(&dev).await.len(), 3);
    let op = user(&gw, &idp, json!({ "sub": "o", "role": "operator" })).await;
    assert!(tools(&op).await.is_empty());
    assert_eq!(resources(&op).await.len(), 3);
    let viewer = user(&gw, &idp, json!({ "sub": "v", "role": "viewer" })).await;
    assert!(tools(&viewer).await.is_empty() && resources(&viewer).await.is_empty());
}

/// `type: none` (ToolHive's explicit "no authorization") loads and allows everything; an
/// anonymous gateway with Cedar sees the caller as `Client::"anonymous"`, as ToolHive does.
#[tokio::test]
async fn none_allows_everything_and_anonymous_is_a_client() {
    let gw = Gateway::start(&format!(
        "name: authz-gw\nincomingAuth:\n  type: anonymous\n  authz:\n    type: none\nbackends:\n{}",
        stdio_backend("fx")
    ));
    let mut c = gw.client();
    c.legacy_init().await;
    settled(&c).await;
    assert!(tools(&c).await.len() > 10);
    drop(gw);

    let gw = Gateway::start(&format!(
        "name: authz-gw\nincomingAuth:\n  type: anonymous\n  authz:\n    type: cedar\n    policies: {}\nbackends:\n{}",
        policies(&[
            r#"permit(principal == Client::"anonymous", action == Action::"call_tool", resource == Tool::"fx_echo") when { principal.claim_email == "anonymous@localhost" };"#
        ]),
        stdio_backend("fx")
    ));
    let mut c = gw.client();
    c.legacy_init().await;
    settled(&c).await;
    assert_eq!(tools(&c).await, ["fx_echo"]);
    assert_eq!(call(&c, "fx_echo", json!({ "message": "a" })).await.text(), "Echo: a");
    assert_denied(&call(&c, "fx_sleep", json!({ "ms": 1 })).await);
}
