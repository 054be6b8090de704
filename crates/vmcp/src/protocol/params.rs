//! Editing request params without decoding them: only the top-level keys are read, every value
//! stays raw JSON. Used to rename a routed item and to add `_meta` for Modern backends.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;

use super::jsonrpc::raw;

type Top = BTreeMap<String, Box<RawValue>>;

fn top(params: Option<&RawValue>) -> Result<Top, String> {
    match params {
        None => Ok(Top::new()),
        Some(p) => {
            serde_json::from_str(p.get()).map_err(|_| "params must be an object".to_string())
        }
    }
}

/// Returns `params` with `key` set to `value`.
pub fn set(
    params: Option<&RawValue>,
    key: &str,
    value: &impl Serialize,
) -> Result<Box<RawValue>, String> {
    let mut map = top(params)?;
    map.insert(key.to_owned(), raw(value));
    Ok(raw(&map))
}

/// Reads one top-level string field.
pub fn get_str(params: Option<&RawValue>, key: &str) -> Option<String> {
    let map = top(params).ok()?;
    serde_json::from_str(map.get(key)?.get()).ok()
}

/// Returns `params` with its `_meta` object extended: keys in `always` replace what is there,
/// keys in `defaults` are added only where absent.
pub fn merge_meta(
    params: Option<&RawValue>,
    always: &serde_json::Map<String, serde_json::Value>,
    defaults: &serde_json::Map<String, serde_json::Value>,
) -> Result<Box<RawValue>, String> {
    let mut map = top(params)?;
    let mut meta: serde_json::Map<String, serde_json::Value> = match map.get("_meta") {
        Some(m) => {
            serde_json::from_str(m.get()).map_err(|_| "_meta must be an object".to_string())?
        }
        None => serde_json::Map::new(),
    };
    for (k, v) in always {
        meta.insert(k.clone(), v.clone());
    }
    for (k, v) in defaults {
        meta.entry(k.clone()).or_insert_with(|| v.clone());
    }
    map.insert("_meta".into(), raw(&meta));
    Ok(raw(&map))
}

/// Returns `params` without the listed top-level keys (e.g. `_meta` protocol fields a Legacy
/// backend would not understand).
pub fn strip_meta_keys(params: Option<&RawValue>, keys: &[&str]) -> Option<Box<RawValue>> {
    let p = params?;
    if !keys.iter().any(|k| p.get().contains(k)) {
        return Some(p.to_owned());
    }
    let mut map = top(Some(p)).ok()?;
    if let Some(m) = map.get("_meta")
        && let Ok(mut meta) =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(m.get())
    {
        for k in keys {
            meta.remove(*k);
        }
        if meta.is_empty() {
            map.remove("_meta");
        } else {
            map.insert("_meta".into(), raw(&meta));
        }
    }
    Some(raw(&map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rv(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.into()).unwrap()
    }

    #[test]
    fn sets_and_reads_fields_keeping_others_raw() {
        let p = rv(r#"{"name":"a_x","arguments":{"k":[1, 2]}}"#);
        let out = set(Some(&p), "name", &"x").unwrap();
        let v: serde_json::Value = serde_json::from_str(out.get()).unwrap();
        assert_eq!(v, json!({"name": "x", "arguments": {"k": [1, 2]}}));
        assert_eq!(get_str(Some(&out), "name").as_deref(), Some("x"));
        assert!(set(Some(&rv("[1]")), "name", &"x").is_err());
    }

    #[test]
    fn merges_meta() {
        let p = rv(r#"{"_meta":{"progressToken":1,"a":"client"}}"#);
        let always = json!({"a": "gw"}).as_object().cloned().unwrap();
        let defaults = json!({"b": 2, "progressToken": 9}).as_object().cloned().unwrap();
        let out = merge_meta(Some(&p), &always, &defaults).unwrap();
        let v: serde_json::Value = serde_json::from_str(out.get()).unwrap();
        assert_eq!(v, json!({"_meta": {"progressToken": 1, "a": "gw", "b": 2}}));
        let stripped = strip_meta_keys(Some(&out), &["a", "b", "progressToken"]).unwrap();
        assert_eq!(stripped.get(), "{}");
    }
}
