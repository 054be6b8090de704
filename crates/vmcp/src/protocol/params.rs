//! Editing request params without decoding them: only the top-level keys are read, every value
//! stays raw JSON. Used to rename a routed item and to add `_meta` for Modern backends.

use std::borrow::Cow;
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

/// A key as it appears in the JSON text: borrowed unless it has escapes.
#[derive(serde::Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

/// The top-level fields of an object, borrowed from its text (nothing copied); the last of
/// duplicate keys wins, as with a decoded map.
fn fields(object: &RawValue) -> Option<BTreeMap<Key<'_>, &RawValue>> {
    serde_json::from_str(object.get()).ok()
}

/// One top-level field, as raw JSON borrowed from `params`.
pub fn get<'a>(params: Option<&'a RawValue>, key: &str) -> Option<&'a RawValue> {
    fields(params?)?.get(&Key(Cow::Borrowed(key))).copied()
}

/// Reads one top-level string field.
pub fn get_str(params: Option<&RawValue>, key: &str) -> Option<String> {
    let map = fields(params?)?;
    let v = map.get(&Key(Cow::Borrowed(key)))?;
    serde_json::from_str::<Cow<'_, str>>(v.get()).ok().map(Cow::into_owned)
}

/// Whether `params._meta` already has `pinned` (key, string value) and every key of `required`:
/// then [`merge_meta`] with `pinned` in `always` and defaults for `required` would change nothing,
/// and the params can go on as they are. Reads the text without copying it.
pub fn meta_covers<'k>(
    params: Option<&RawValue>,
    pinned: (&str, &str),
    required: impl IntoIterator<Item = &'k str>,
) -> bool {
    let Some(meta) =
        params.and_then(fields).and_then(|p| p.get(&Key(Cow::Borrowed("_meta"))).copied())
    else {
        return false;
    };
    let Some(meta) = fields(meta) else { return false };
    let pinned_ok = meta
        .get(&Key(Cow::Borrowed(pinned.0)))
        .and_then(|v| serde_json::from_str::<Cow<'_, str>>(v.get()).ok())
        .is_some_and(|v| v == pinned.1);
    pinned_ok && required.into_iter().all(|k| meta.contains_key(&Key(Cow::Borrowed(k))))
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

    #[test]
    fn reads_fields_with_escapes_and_duplicates_as_a_decoder_would() {
        let p = rv(r#"{"n\u0061me":"first","name":"x\"y","other":{"name":"inner"}}"#);
        assert_eq!(get_str(Some(&p), "name").as_deref(), Some("x\"y"));
        assert_eq!(get_str(Some(&p), "missing"), None);
        assert_eq!(get_str(Some(&rv("[1]")), "name"), None);
        assert_eq!(get_str(None, "name"), None);
    }

    #[test]
    fn meta_covers_only_when_a_merge_would_change_nothing() {
        let p = rv(r#"{"name":"t","_meta":{"v":"2026","caps":{},"info":{"name":"c"},"x":1}}"#);
        assert!(meta_covers(Some(&p), ("v", "2026"), ["caps", "info"]));
        // The merge would replace the version, or add a missing key.
        assert!(!meta_covers(Some(&p), ("v", "2025"), ["caps"]));
        assert!(!meta_covers(Some(&p), ("v", "2026"), ["caps", "logLevel"]));
        assert!(!meta_covers(Some(&rv(r#"{"name":"t"}"#)), ("v", "2026"), []));
        assert!(!meta_covers(Some(&rv(r#"{"_meta":{"v":2026}}"#)), ("v", "2026"), []));
        assert!(!meta_covers(None, ("v", "2026"), []));
        // Cross-check with the merge itself.
        let always = json!({"v": "2026"}).as_object().cloned().unwrap();
        let defaults = json!({"caps": {"d": 1}, "info": {}}).as_object().cloned().unwrap();
        let merged = merge_meta(Some(&p), &always, &defaults).unwrap();
        let (a, b): (serde_json::Value, serde_json::Value) =
            (serde_json::from_str(merged.get()).unwrap(), serde_json::from_str(p.get()).unwrap());
        assert_eq!(a, b);
    }
}
