use serde_json::json;

use super::*;

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

#[test]
fn numbers_are_decimals_as_in_toolhive() {
    let d = |v: Value| decimal(v.as_number().unwrap());
    assert_eq!(d(json!(3)).as_deref(), Some("3.0000"));
    assert_eq!(d(json!(-2)).as_deref(), Some("-2.0000"));
    assert_eq!(d(json!(1.5)).as_deref(), Some("1.5000"));
    assert_eq!(d(json!(0.12345)).as_deref(), Some("0.1235"));
    assert_eq!(d(json!(-0.5)).as_deref(), Some("-0.5000"));
    assert_eq!(d(json!(1_700_000_000u64)).as_deref(), Some("1700000000.0000"));
    assert_eq!(d(json!(u64::MAX)), None);
    assert_eq!(d(json!(1e300)), None);
}

#[test]
fn claims_and_arguments_get_toolhive_prefixes() {
    let claims = obj(json!({ "sub": "a", "roles": ["x", 1], "n": null, "org": { "id": "o" } }));
    let mut keys: Vec<String> = claim_attrs(&claims).into_iter().map(|(k, _)| k).collect();
    keys.sort();
    assert_eq!(keys, ["claim_org", "claim_roles", "claim_sub"]);
    let args =
        obj(json!({ "op": "add", "n": 2, "flag": true, "list": [1], "obj": {}, "none": null }));
    let mut keys: Vec<String> = arg_attrs(&args).into_iter().map(|(k, _)| k).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["arg_flag", "arg_list_present", "arg_n", "arg_none_present", "arg_obj_present", "arg_op"]
    );
}

#[test]
fn nesting_is_bounded() {
    let mut v = json!("leaf");
    for _ in 0..(MAX_DEPTH + 5) {
        v = json!([v]);
    }
    // Converts (the deep part dropped) instead of recursing without bound.
    assert!(value(&v, 0).is_some());
    assert!(value(&json!("x"), MAX_DEPTH + 1).is_none());
}

#[test]
fn groups_come_from_the_named_claim_else_the_defaults_and_roles_add() {
    let c = obj(json!({
        "groups": ["g1", "g2"],
        "https://example.com/groups": ["u1"],
        "realm_access": { "roles": ["r1", "g1"] },
        "cognito:groups": ["c1"],
        "scalar": "notalist",
    }));
    assert_eq!(groups(&c, None, None), ["g1", "g2"]);
    assert_eq!(groups(&c, Some("https://example.com/groups"), None), ["u1"]);
    // Absent or not a list: the defaults.
    assert_eq!(groups(&c, Some("missing"), None), ["g1", "g2"]);
    assert_eq!(groups(&c, Some("scalar"), None), ["g1", "g2"]);
    // Roles from a nested path, duplicates dropped.
    assert_eq!(groups(&c, None, Some("realm_access.roles")), ["g1", "g2", "r1"]);
    let only_cognito = obj(json!({ "cognito:groups": ["c1"] }));
    assert_eq!(groups(&only_cognito, None, None), ["c1"]);
    // An empty list means "no groups": no fallback.
    let empty = obj(json!({ "grp": [], "groups": ["g"] }));
    assert!(groups(&empty, Some("grp"), None).is_empty());
    assert!(groups(&Map::new(), None, Some("roles")).is_empty());
}

#[test]
fn entities_carry_toolhive_names_and_vmcp_parents() {
    let types = Types::new(EntityTypeName::from_str("THVGroup").unwrap());
    let claims = claim_attrs(&obj(json!({ "sub": "alice", "email": "a@x" })));
    let p = principal(&types, "alice", &claims, &["eng".to_owned()]).unwrap();
    assert_eq!(p.uid().to_string(), r#"Client::"alice""#);
    assert!(p.attr("claim_email").is_some());
    let json = p.to_json_value().unwrap();
    assert_eq!(json["parents"][0]["type"], "THVGroup", "{json}");
    assert_eq!(json["parents"][0]["id"], "eng", "{json}");

    let args = arg_attrs(&obj(json!({ "city": "Paris" })));
    let annotations = json!({ "readOnlyHint": true, "title": "ignored", "destructiveHint": "no" });
    let item = Item {
        id: "fx_weather",
        backend: Some("fx"),
        annotations: Some(&annotations),
        args: &args,
    };
    let r = resource(&types, Kind::Tool, "gw", &item).unwrap();
    let json = r.to_json_value().unwrap();
    assert_eq!(r.uid().to_string(), r#"Tool::"fx_weather""#);
    let attrs = &json["attrs"];
    assert_eq!(attrs["name"], "fx_weather");
    assert_eq!(attrs["operation"], "call");
    assert_eq!(attrs["feature"], "tool");
    assert_eq!(attrs["backend"], "fx");
    assert_eq!(attrs["arg_city"], "Paris");
    assert_eq!(attrs["readOnlyHint"], true);
    assert!(attrs.get("destructiveHint").is_none() && attrs.get("title").is_none(), "{json}");
    let mut parents: Vec<String> =
        json["parents"].as_array().unwrap().iter().map(|p| p["type"].to_string()).collect();
    parents.sort();
    assert_eq!(parents, ["\"Backend\"", "\"MCP\""]);

    // Standard attributes win over argument names.
    let args = vec![("name".to_owned(), RestrictedExpression::new_string("spoof".into()))];
    let item = Item { id: "file:///a", backend: None, annotations: None, args: &args };
    let r = resource(&types, Kind::Resource, "gw", &item).unwrap();
    let json = r.to_json_value().unwrap();
    assert_eq!(json["attrs"]["name"], "file:///a");
    assert_eq!(json["attrs"]["uri"], "file:///a");
    assert_eq!(json["parents"].as_array().map(Vec::len), Some(1));
    assert_eq!(r.uid().to_string(), r#"Resource::"file:///a""#);

    let (uid, entity) = action(&types, Kind::Prompt);
    assert_eq!(uid.to_string(), r#"Action::"get_prompt""#);
    assert!(entity.is_some());
}
