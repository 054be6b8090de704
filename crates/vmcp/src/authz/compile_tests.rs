use super::*;
use crate::config::authz::{AuthzConfig, AuthzKind};

fn cfg(policies: &[&str]) -> AuthzConfig {
    AuthzConfig {
        kind: AuthzKind::Cedar,
        policies: policies.iter().map(|p| (*p).to_owned()).collect(),
        entities_json: None,
        primary_upstream_provider: None,
        group_claim_name: None,
        role_claim_name: None,
        group_entity_type: None,
    }
}

fn errors(c: &AuthzConfig) -> Vec<CompileError> {
    match compile(c, "gw") {
        Ok(_) => panic!("compiled"),
        Err(e) => e,
    }
}

#[test]
fn toolhive_policies_compile() {
    let c = compile(
        &cfg(&[
            r#"permit(principal, action == Action::"call_tool", resource == Tool::"weather");"#,
            r#"permit(principal == Client::"user123", action == Action::"call_tool", resource);"#,
            r#"permit(principal, action == Action::"call_tool", resource) when { principal.claim_roles.contains("admin") };"#,
            r#"permit(principal, action == Action::"call_tool", resource == Tool::"calculator") when { resource.arg_operation == "add" || context.arg_operation == "subtract" };"#,
            r#"permit(principal in THVGroup::"eng", action in [Action::"get_prompt", Action::"read_resource"], resource in MCP::"gw");"#,
            r#"forbid(principal, action, resource) when { resource has readOnlyHint && !resource.readOnlyHint };"#,
            r#"permit(principal in PlatformRole::"admin", action, resource);"#,
        ]),
        "gw",
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(c.uses_args);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let c = compile(&cfg(&["permit(principal, action, resource);"]), "gw").unwrap();
    assert!(!c.uses_args);
}

#[test]
fn parse_errors_name_the_policy_and_the_line_inside_it() {
    let e = errors(&cfg(&[
        "permit(principal, action, resource);",
        "permit(\n  principal,\n  action == Action::\"call_tool\"\n  resource\n);",
    ]));
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].policy, Some(1));
    assert!(e[0].message.starts_with("line 4, column 3 of the policy: "), "{}", e[0].message);
    assert!(e[0].to_string().starts_with("incomingAuth.authz.policies[1]: line 4"), "{}", e[0]);
}

#[test]
fn schema_errors_are_located_too() {
    let e = errors(&cfg(&[
        "permit(principal, action, resource);",
        "permit(principal, action == Action::\"call_tool\", resource)\nwhen { resource.name.contains(\"x\") };",
    ]));
    assert!(e.iter().all(|e| e.policy == Some(1)), "{e:?}");
    assert!(
        e[0].message.starts_with("line 2, column 8 of the policy: unexpected type"),
        "{}",
        e[0].message
    );
}

#[test]
fn unknown_actions_load_inert_with_a_warning_and_the_fix() {
    let c =
        compile(&cfg(&[r#"permit(principal, action == Action::"tools/call", resource);"#]), "gw")
            .unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(
        c.warnings[0].starts_with(
            "incomingAuth.authz.policies[0]: line 1, column 37 of the policy: unknown action"
        ),
        "{}",
        c.warnings[0]
    );
    assert!(c.warnings[0].ends_with("did you mean Action::\"call_tool\"?"), "{}", c.warnings[0]);
    // Inert: its type errors are not reported either (they could never be evaluated).
    let c = compile(
        &cfg(&[
            r#"permit(principal, action in [Action::"read_resource", Action::"write"], resource)
                  when { principal.claim_role in ["a"] };"#,
        ]),
        "gw",
    )
    .unwrap();
    assert!(c.warnings[0].contains("Action::\"write\""), "{:?}", c.warnings);
    // ToolHive's list actions load, with a warning that nothing evaluates them.
    let c =
        compile(&cfg(&[r#"permit(principal, action == Action::"list_tools", resource);"#]), "gw")
            .unwrap();
    assert!(c.warnings[0].contains("never evaluated"), "{:?}", c.warnings);
}

#[test]
fn group_entity_type_and_entities_are_checked() {
    let mut c = cfg(&[r#"permit(principal in Team::"a", action, resource);"#]);
    c.group_entity_type = Some("Team".into());
    assert_eq!(compile(&c, "gw").unwrap().group_type.to_string(), "Team");
    for bad in ["Platform::Group", "Tool", "1abc", "has space"] {
        c.group_entity_type = Some(bad.into());
        let e = errors(&c);
        assert_eq!(e[0].key, "groupEntityType", "{bad}: {e:?}");
    }
    c.group_entity_type = None;
    c.entities_json = Some("[{\"uid\": 3}]".into());
    assert_eq!(errors(&c)[0].key, "entitiesJson");
    c.entities_json = Some(
        r#"[{"uid":{"type":"Team","id":"a"},"parents":[{"type":"Team","id":"b"}],"attrs":{}}]"#
            .into(),
    );
    assert!(compile(&c, "gw").is_ok());
}

#[test]
fn the_schema_is_valid() {
    assert!(Schema::from_json_value(schema_json("THVGroup")).is_ok());
}
