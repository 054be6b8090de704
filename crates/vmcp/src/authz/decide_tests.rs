//! Decisions through the real Cedar evaluator, without a gateway.

use serde_json::json;

use super::*;
use crate::config::authz::AuthzConfig;

fn authz(policies: &[&str], entities: Option<&str>) -> Authz {
    let cfg = AuthzConfig {
        kind: AuthzKind::Cedar,
        policies: policies.iter().map(|p| (*p).to_owned()).collect(),
        entities_json: entities.map(str::to_owned),
        primary_upstream_provider: None,
        group_claim_name: None,
        role_claim_name: Some("roles".into()),
        group_entity_type: None,
    };
    Authz::new(&cfg, "gw").unwrap_or_else(|e| panic!("{e}"))
}

fn subject(a: &Authz, claims: Value) -> Arc<Subject> {
    let Value::Object(claims) = claims else { panic!() };
    let groups = entities::groups(&claims, a.group_claim.as_deref(), a.role_claim.as_deref());
    let attrs = entities::claim_attrs(&claims);
    let sub = claims["sub"].as_str().unwrap();
    let entity = entities::principal(&a.types, sub, &attrs, &groups).unwrap();
    Arc::new(Subject { uid: entity.uid(), entity, claims: attrs })
}

fn tool<'a>(id: &'a str, backend: Option<&'a str>) -> Item<'a> {
    Item { id, backend, annotations: None, args: &[] }
}

#[test]
fn groups_roles_and_entity_hierarchies_decide() {
    let a = authz(
        &[
            r#"permit(principal in THVGroup::"staff", action == Action::"call_tool", resource == Tool::"a");"#,
            r#"permit(principal in THVGroup::"admin", action == Action::"call_tool", resource in Backend::"b");"#,
            r#"forbid(principal, action, resource == Tool::"c");"#,
        ],
        Some(
            r#"[{"uid":{"type":"THVGroup","id":"eng"},"parents":[{"type":"THVGroup","id":"staff"}],"attrs":{}}]"#,
        ),
    );
    let items = [tool("a", Some("x")), tool("b1", Some("b")), tool("c", Some("b"))];
    let eng = subject(&a, json!({ "sub": "e", "groups": ["eng"] }));
    assert_eq!(a.decide(&eng, Kind::Tool, &items), [true, false, false]);
    // A role (roleClaimName) is a parent like a group; a parent entity need not be declared.
    let admin = subject(&a, json!({ "sub": "r", "roles": ["admin"] }));
    assert_eq!(a.decide(&admin, Kind::Tool, &items), [false, true, false]);
    let nobody = subject(&a, json!({ "sub": "n" }));
    assert_eq!(a.decide(&nobody, Kind::Tool, &items), [false, false, false]);
    // The same name as a prompt is another entity: not permitted by tool policies.
    assert_eq!(a.decide(&eng, Kind::Prompt, &[tool("a", None)]), [false]);
}

#[test]
fn an_evaluation_error_in_any_policy_denies() {
    let a = authz(
        &[
            r#"permit(principal, action == Action::"call_tool", resource);"#,
            r#"forbid(principal, action, resource) when { principal.claim_level == "low" };"#,
        ],
        None,
    );
    let with = subject(&a, json!({ "sub": "w", "level": "high" }));
    let without = subject(&a, json!({ "sub": "o" }));
    assert_eq!(a.decide(&with, Kind::Tool, &[tool("t", None)]), [true]);
    assert_eq!(a.decide(&without, Kind::Tool, &[tool("t", None)]), [false]);
}

#[test]
fn request_entities_replace_static_ones_as_in_toolhive() {
    // entitiesJson gives Tool::"t" an owner, but the request's Tool::"t" replaces it.
    let a = authz(
        &[
            r#"permit(principal, action == Action::"call_tool", resource) when { resource has owner };"#,
        ],
        Some(r#"[{"uid":{"type":"Tool","id":"t"},"parents":[],"attrs":{"owner":"x"}}]"#),
    );
    let s = subject(&a, json!({ "sub": "s" }));
    assert_eq!(a.decide(&s, Kind::Tool, &[tool("t", None)]), [false]);
}

#[test]
fn arguments_and_decimal_claims_reach_the_policies() {
    let a = authz(
        &[r#"permit(principal, action == Action::"call_tool", resource == Tool::"calc")
             when { resource.arg_op == "add" && context.arg_n.lessThan(decimal("10.0"))
                    && principal.claim_level.greaterThanOrEqual(decimal("2.0")) };"#],
        None,
    );
    let s = subject(&a, json!({ "sub": "s", "level": 3 }));
    let ok = entities::arg_attrs(&match json!({ "op": "add", "n": 4 }) {
        Value::Object(m) => m,
        _ => panic!(),
    });
    let big = entities::arg_attrs(&match json!({ "op": "add", "n": 40 }) {
        Value::Object(m) => m,
        _ => panic!(),
    });
    let item = |args| Item { id: "calc", backend: None, annotations: None, args };
    assert_eq!(a.decide(&s, Kind::Tool, &[item(&ok)]), [true]);
    assert_eq!(a.decide(&s, Kind::Tool, &[item(&big)]), [false]);
    assert!(a.uses_args);
}

#[test]
fn method_classes() {
    for m in ["initialize", "ping", "tools/list", "resources/templates/list", "notifications/x"] {
        assert!(always_allowed(m), "{m}");
    }
    for m in ["tools/call", "tasks/list", "sampling/createMessage", "bogus"] {
        assert!(!always_allowed(m), "{m}");
    }
}
