//! Request and response data for audit events: secrets redacted, then cut to `maxDataSize`.
//!
//! Redaction runs on the whole value before it is cut, so a cut never leaves the start of a
//! secret behind. Redacted: the value of any key that names a credential (authorization,
//! password, secret, API key, cookie, credential, private key, and `*token` except
//! `progressToken`), any string that is a `Bearer`/`Basic` credential or looks like a JWT, and
//! every occurrence of the caller's own bearer token wherever it appears.

use serde_json::Value;
use serde_json::value::RawValue;

/// What a redacted value becomes.
pub const REDACTED: &str = "[REDACTED]";

/// What a key names a credential by, once separators are dropped and it is lowercased.
const PARTS: &[&str] = &[
    "authorization",
    "password",
    "passwd",
    "passphrase",
    "secret",
    "apikey",
    "cookie",
    "credential",
    "privatekey",
    "bearer",
];

/// Whether the value under `key` is a credential.
fn sensitive_key(key: &str) -> bool {
    let k: String = key
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect();
    PARTS.iter().any(|p| k.contains(p)) || (k.ends_with("token") && k != "progresstoken")
}

/// Whether `s` is a credential on its own.
fn sensitive_string(s: &str) -> bool {
    let lower = s.get(..7).map(str::to_ascii_lowercase);
    let scheme = lower.as_deref().is_some_and(|p| p == "bearer " || p.starts_with("basic "));
    scheme || looks_like_jwt(s)
}

/// Three base64url segments, the first a JSON object (`eyJ`).
fn looks_like_jwt(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && s.starts_with("eyJ")
        && parts[..2].iter().all(|p| p.len() >= 4)
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Redacts `v` in place; `token` is the caller's own bearer token, if any.
pub fn redact(v: &mut Value, token: Option<&str>) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if sensitive_key(k) && !val.is_null() {
                    *val = Value::String(REDACTED.into());
                } else {
                    redact(val, token);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| redact(i, token)),
        Value::String(s) => {
            if sensitive_string(s) {
                *s = REDACTED.into();
            } else if let Some(t) = token.filter(|t| t.len() >= 8)
                && s.contains(t)
            {
                *s = s.replace(t, REDACTED);
            }
        }
        _ => {}
    }
}

/// Whether [`redact`] would leave the JSON `text` as it is, told from the text alone (so the
/// common case needs no decoding). Conservative: `false` whenever it cannot be sure.
///
/// Sound because: without a backslash, every string's text is its value; a sensitive key's
/// normalised form (separators dropped, lowercased) is a substring of the whole text's
/// normalised form, and so is any `*token` key, which is allowed only as exactly
/// `"progresstoken"`; a credential-shaped string starts right after a quote; the caller's token
/// appears verbatim.
pub fn unchanged(text: &str, token: Option<&str>) -> bool {
    if text.contains('\\') || text.contains("\"eyJ") {
        return false;
    }
    if token.is_some_and(|t| t.len() >= 8 && text.contains(t)) {
        return false;
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("\"bearer ") || lower.contains("\"basic ") {
        return false;
    }
    let norm: String = text
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect();
    if PARTS.iter().any(|p| norm.contains(p)) {
        return false;
    }
    norm.match_indices("token").all(|(i, _)| {
        norm.get(..i).is_some_and(|b| b.ends_with("\"progress"))
            && norm.get(i + 5..).is_some_and(|a| a.starts_with('"'))
    })
}

/// `text` (JSON that [`unchanged`] cleared) as audit data, cut to `max` bytes like [`capture`].
pub fn capture_clean(text: Box<RawValue>, max: usize) -> (Box<RawValue>, usize, bool) {
    let size = text.get().len();
    if size <= max {
        return (text, size, false);
    }
    cut(text.get(), max, size)
}

/// `v` redacted and, when its JSON is longer than `max` bytes, cut to its first `max` bytes (as
/// a string, like ToolHive's data that does not parse). Returns the data as JSON text, its full
/// size and whether it was cut.
pub fn capture(mut v: Value, token: Option<&str>, max: usize) -> (Box<RawValue>, usize, bool) {
    redact(&mut v, token);
    let text = v.to_string();
    let size = text.len();
    if size <= max {
        return (raw(text), size, false);
    }
    cut(&text, max, size)
}

/// The first `max` bytes of `text` (at a character boundary), as a JSON string.
fn cut(text: &str, max: usize, size: usize) -> (Box<RawValue>, usize, bool) {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = serde_json::to_string(&text[..end]).unwrap_or_default();
    (raw(cut), size, true)
}

/// JSON text we produced as a raw value (`null` if it somehow is not JSON).
fn raw(text: String) -> Box<RawValue> {
    RawValue::from_string(text).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unchanged_agrees_with_redact() {
        let token = "opaque-token-123456";
        let cases = [
            json!({ "name": "echo", "arguments": { "message": "hi" }, "_meta": { "progressToken": 1 } }),
            json!({ "arguments": { "progress_token": "x", "text": "a token word" } }),
            json!({ "arguments": { "Pass-Word": "x" } }),
            json!({ "arguments": { "xprogressToken": "x" } }),
            json!({ "arguments": { "note": "Bearer abc" } }),
            json!({ "arguments": { "note": "basic dXNlcjpwYXNz" } }),
            json!({ "arguments": { "jwt": "eyJhbGciOi.eyJzdWIiOi.sig" } }),
            json!({ "arguments": { "mine": format!("x{token}y") } }),
            json!({ "arguments": { "a\"b": "c\\d" } }),
            json!({ "arguments": { "\u{212a}ey": "kelvin", "api\u{212a}ey": "v" } }),
            json!({ "arguments": { "list": [1, "two", { "deep": "Cookie" }] } }),
            json!({ "arguments": { "COOKIE": null } }),
        ];
        for v in cases {
            let text = v.to_string();
            let mut r = v.clone();
            redact(&mut r, Some(token));
            if unchanged(&text, Some(token)) {
                assert_eq!(r, v, "cleared but redaction changes it: {text}");
            }
        }
        // The common case is cleared.
        let plain = json!({ "name": "echo", "arguments": { "message": "hi" }, "_meta": { "progressToken": 1 } });
        assert!(unchanged(&plain.to_string(), Some(token)));
        assert!(!unchanged(&json!({ "token": 1 }).to_string(), None));
    }

    #[test]
    fn credentials_are_redacted_by_key_and_shape() {
        let token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
        let mut v = json!({
            "name": "login",
            "arguments": {
                "Authorization": "Bearer abc",
                "password": "hunter2",
                "client_secret": "s3",
                "x-api-key": "k",
                "apiKey": "k",
                "access_token": "at",
                "refreshToken": "rt",
                "nested": [{ "Cookie": "c=1" }, { "note": format!("my token is {token}!") }],
                "header": "Basic dXNlcjpwYXNz",
                "jwt": token,
                "maxTokens": 5,
                "query": "weather",
                "empty_password": null,
            },
            "_meta": { "progressToken": 7 },
        });
        redact(&mut v, Some(token));
        let a = &v["arguments"];
        for key in [
            "Authorization",
            "password",
            "client_secret",
            "x-api-key",
            "apiKey",
            "access_token",
            "refreshToken",
            "header",
            "jwt",
        ] {
            assert_eq!(a[key], REDACTED, "{key}");
        }
        assert_eq!(a["nested"][0]["Cookie"], REDACTED);
        assert_eq!(a["nested"][1]["note"], "my token is [REDACTED]!");
        assert_eq!(a["maxTokens"], 5, "a count, not a credential");
        assert_eq!(a["query"], "weather");
        assert!(a["empty_password"].is_null());
        assert_eq!(v["_meta"]["progressToken"], 7);
        assert!(!v.to_string().contains(token));
    }

    #[test]
    fn capture_cuts_after_redacting() {
        let big = "é".repeat(600_000);
        let v = json!({ "arguments": { "password": big.clone(), "text": big } });
        let (data, size, cut) = capture(v, None, 1024);
        assert!(cut && size > 1_000_000);
        let data: Value = serde_json::from_str(data.get()).unwrap();
        let s = data.as_str().unwrap();
        assert!(s.len() <= 1024 && s.len() > 1020, "{}", s.len());
        assert!(s.starts_with(r#"{"arguments":{"password":"[REDACTED]","text":"éé"#), "{s}");
        let (data, _, cut) = capture(json!({ "a": 1 }), None, 1024);
        assert!(!cut);
        assert_eq!(data.get(), r#"{"a":1}"#);
    }
}
