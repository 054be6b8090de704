//! Tests of [`super`]: ToolHive's documented forms, CEL's error rules, refusals with positions.

use super::*;
use serde_json::json;

fn claims() -> Map<String, Value> {
    json!({
        "sub": "user123",
        "groups": ["dev", "admins"],
        "tier": 2,
        "org": { "name": "acme", "teams": ["red"] },
        "email_verified": true,
    })
    .as_object()
    .unwrap()
    .clone()
}

fn m(src: &str) -> bool {
    Matcher::parse(src).unwrap_or_else(|e| panic!("{src}: {e}")).matches(&claims())
}

#[test]
fn toolhive_documented_forms() {
    assert!(m(r#""admins" in claims["groups"]"#));
    assert!(m(r#"claims["sub"] == "user123" && !("act" in claims)"#));
    assert!(!m(r#"claims["sub"] == "user123" && "sub" in claims && !("sub" in claims)"#));
    assert!(!m(r#""ops" in claims["groups"]"#));
}

#[test]
fn operators_and_access() {
    assert!(m("claims.org.name == 'acme'"));
    assert!(m(r#""red" in claims["org"]["teams"]"#));
    assert!(m("claims.tier == 2 && claims.tier != 3"));
    assert!(m("claims.email_verified"));
    assert!(m("claims.sub in ['a', 'user123']"));
    assert!(m("(false || claims.tier == 2) && true"));
    assert!(!m("claims.tier == '2'"), "no conversion across types");
    assert!(m("[1, 'x'] == [1, 'x']"));
}

#[test]
fn errors_mean_no_match_unless_absorbed() {
    // A missing key is an error: no match...
    assert!(!m("claims.missing == 'x'"));
    assert!(!m("!(claims.missing == 'x')"));
    // ...unless the other side of && / || decides.
    assert!(!m("claims.missing == 'x' && false"));
    assert!(m("claims.missing == 'x' || true"));
    assert!(m("true || claims.missing"));
    // Not a boolean: no match.
    assert!(!m("claims.sub"));
    assert!(!m("'x' in claims.sub"));
}

#[test]
fn unsupported_is_refused_with_its_place() {
    let e = |src: &str| Matcher::parse(src).unwrap_err();
    assert_eq!(e("size(claims.groups) == 1"), "at 1: function calls (size()) are not supported");
    assert_eq!(
        e("claims.groups.exists(g, g == 'x')"),
        "at 15: method calls (exists()) are not supported"
    );
    assert_eq!(e("claims.tier > 1"), "at 13: '>' is not supported");
    assert_eq!(
        e("request.sub == 'x'"),
        "at 1: unknown name \"request\" (only `claims` is defined)"
    );
    assert_eq!(e("claims['a'"), "at 11: expected \"]\"");
    assert_eq!(e("'abc"), "at 1: unterminated string");
    assert_eq!(e("claims.tier == 1.5"), "at 16: only whole non-negative numbers are supported");
    assert_eq!(e("claims == "), "at 11: unexpected end of the expression");
    assert_eq!(e("true false"), "at 6: unexpected text after the expression");
    assert_eq!(e(&"(".repeat(40)), format!("nested deeper than {MAX_DEPTH} levels"));
    assert!(e(&"x".repeat(MAX_SOURCE + 1)).contains("longer than"));
}
