//! The pieces of an audit event, named as ToolHive names them (`toolhive-core/audit`): event
//! types, subjects, the delegation chain, outcomes, timestamps and ids.

use serde_json::{Map, Value};

use crate::auth::Caller;
use crate::protocol::ErrorObject;
use crate::protocol::jsonrpc::code;

/// Longest string taken from a token claim, client info or header into an event.
const MAX_FIELD: usize = 256;

/// `s` cut to [`MAX_FIELD`] bytes (at a character boundary).
pub fn field(s: &str) -> String {
    let mut end = s.len().min(MAX_FIELD);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// ToolHive's event type for an MCP method (`mapMCPMethodToEventType`).
pub fn event_type(method: &str) -> &'static str {
    match method {
        "initialize" => "mcp_initialize",
        "tools/call" => "mcp_tool_call",
        "tools/list" => "mcp_tools_list",
        "resources/read" => "mcp_resource_read",
        "resources/list" => "mcp_resources_list",
        "prompts/get" => "mcp_prompt_get",
        "prompts/list" => "mcp_prompts_list",
        "notifications/message" => "mcp_notification",
        "ping" => "mcp_ping",
        "logging/setLevel" => "mcp_logging",
        "completion/complete" => "mcp_completion",
        "notifications/roots/list_changed" => "mcp_roots_list_changed",
        _ => "mcp_request",
    }
}

/// ToolHive's target type for an event type.
pub fn target_type(event_type: &str) -> &'static str {
    match event_type {
        "mcp_tool_call" => "tool",
        "mcp_resource_read" => "resource",
        "mcp_prompt_get" => "prompt",
        _ => "endpoint",
    }
}

/// ToolHive's outcome rule on the HTTP status vmcp answers with: 2xx `success` (or
/// `application_error` for a JSON-RPC error when `detect`), 401/403 `denied`, other 4xx
/// `failure`, 5xx `error`.
pub fn outcome(status: u16, error: Option<&ErrorObject>, detect: bool) -> &'static str {
    match status {
        200..=299 if error.is_some() && detect => "application_error",
        200..=299 => "success",
        401 | 403 => "denied",
        400..=499 => "failure",
        500.. => "error",
        _ => "success",
    }
}

/// The HTTP status vmcp answers a dispatched request with, when it is answered with plain JSON
/// (mirrors `http/stream.rs` `respond`).
pub fn status_of(error: Option<&ErrorObject>, modern: bool) -> u16 {
    let Some(e) = error else { return 200 };
    match e.code {
        code::REAUTHENTICATE => 401,
        code::ACCESS_DENIED => 403,
        code::RATE_LIMITED => 429,
        code::CREDENTIALS_UNAVAILABLE => 503,
        code::HEADER_MISMATCH
        | code::MISSING_REQUIRED_CLIENT_CAPABILITY
        | code::UNSUPPORTED_PROTOCOL_VERSION
            if modern =>
        {
            400
        }
        code::METHOD_NOT_FOUND if modern => 404,
        _ => 200,
    }
}

/// ToolHive's `subjects`: `user_id` (sub), `user` (name, preferred_username or email, else
/// `anonymous`), `client_name` and `client_version` (token claims, else the MCP `clientInfo`);
/// vmcp adds `issuer`.
pub fn subjects(caller: &Caller, client_info: Option<&Value>) -> Map<String, Value> {
    let mut out = Map::new();
    let mut put = |k: &str, v: &str| {
        out.insert(k.to_owned(), Value::String(field(v)));
    };
    let claim = |claims: &Map<String, Value>, k: &str| {
        claims.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
    };
    let mut client: (Option<String>, Option<String>) = (None, None);
    let mut user = None;
    if let Caller::User(id) = caller {
        put("user_id", &id.subject);
        put("issuer", &id.issuer);
        user = ["name", "preferred_username", "email"].iter().find_map(|k| claim(&id.claims, k));
        client = (claim(&id.claims, "client_name"), claim(&id.claims, "client_version"));
    }
    put("user", user.as_deref().unwrap_or("anonymous"));
    let info = |k: &str| client_info.and_then(|i| i.get(k)).and_then(Value::as_str);
    if let Some(name) = client.0.as_deref().or_else(|| info("name")) {
        put("client_name", name);
    }
    if let Some(version) = client.1.as_deref().or_else(|| info("version")) {
        put("client_version", version);
    }
    out
}

/// The RFC 8693 delegation chain of the caller's token (`act`), at most `max_depth` hops,
/// outermost first, in toolhive-core's schema; `None` without an `act` claim.
pub fn delegation(caller: &Caller, max_depth: usize) -> Option<Value> {
    let Caller::User(id) = caller else { return None };
    let mut current = id.claims.get("act")?;
    let mut chain = Vec::new();
    let (mut omitted, mut malformed) = (0usize, None::<&str>);
    loop {
        let Some(hop) = current.as_object() else {
            malformed.get_or_insert(if chain.is_empty() {
                "act_not_object"
            } else {
                "nested_act_not_object"
            });
            break;
        };
        if chain.len() >= max_depth {
            omitted += 1;
        } else {
            let mut out = Map::new();
            for (key, reason) in [("iss", "iss_not_string"), ("sub", "sub_not_string")] {
                match hop.get(key) {
                    Some(Value::String(s)) => {
                        out.insert(key.into(), Value::String(field(s)));
                    }
                    Some(_) => {
                        malformed.get_or_insert(reason);
                    }
                    None => {}
                }
            }
            chain.push(Value::Object(out));
        }
        match hop.get("act") {
            Some(Value::Null) | None => break,
            Some(next) => current = next,
        }
        // Tokens are bounded in size, but not the patience of a loop: stop counting somewhere.
        if omitted > 1000 {
            break;
        }
    }
    let mut d = serde_json::json!({
        "chain": chain,
        "truncated": omitted > 0,
        "omitted": omitted,
        "malformed": malformed.is_some(),
    });
    if let Some(reason) = malformed {
        d["malformedReason"] = Value::String(reason.into());
    }
    Some(d)
}

/// A random (version 4) UUID, for `audit_id`.
pub fn uuid() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = String::with_capacity(36);
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(x >> 4)]));
        out.push(char::from(HEX[usize::from(x & 0x0f)]));
    }
    out
}

/// `t` as RFC 3339 in UTC with `digits` fractional digits (3 or 6).
pub fn rfc3339(t: std::time::SystemTime, digits: u32) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let frac = d.subsec_nanos() / 10u32.pow(9 - digits.min(9));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{frac:0w$}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        w = digits as usize
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::json;

    use super::*;
    use crate::auth::Identity;
    use crate::auth::identity::Secret;

    fn user(claims: Value) -> Caller {
        Caller::User(Arc::new(Identity {
            issuer: "https://idp".into(),
            subject: "u-1".into(),
            claims: claims.as_object().cloned().unwrap_or_default(),
            token: Secret::new("tok"),
            expires_at: None,
            scopes: vec![],
        }))
    }

    #[test]
    fn timestamps_and_ids() {
        let t = UNIX_EPOCH + Duration::from_micros(1_765_795_112_164_124);
        assert_eq!(rfc3339(t, 6), "2025-12-15T10:38:32.164124Z");
        assert_eq!(rfc3339(t, 3), "2025-12-15T10:38:32.164Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400), 3),
            "2000-02-29T00:00:00.000Z"
        );
        let id = uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!([8, 13, 18, 23].iter().all(|&i| &id[i..=i] == "-"), "{id}");
        assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()), "{id}");
        assert_ne!(uuid(), id);
    }

    #[test]
    fn subjects_as_toolhive_plus_issuer() {
        let s =
            subjects(&user(json!({ "preferred_username": "alice", "client_name": "cli" })), None);
        assert_eq!(
            Value::Object(s),
            json!({ "user_id": "u-1", "issuer": "https://idp", "user": "alice", "client_name": "cli" })
        );
        let info = json!({ "name": "inspector", "version": "1.2" });
        let s = subjects(&Caller::Anonymous, Some(&info));
        assert_eq!(
            Value::Object(s),
            json!({ "user": "anonymous", "client_name": "inspector", "client_version": "1.2" })
        );
    }

    #[test]
    fn delegation_chain() {
        let c = user(
            json!({ "act": { "sub": "agent-1", "iss": "https://a", "act": { "sub": "agent-2", "act": { "sub": 3 } } } }),
        );
        assert_eq!(
            delegation(&c, 10).unwrap(),
            json!({ "chain": [{ "iss": "https://a", "sub": "agent-1" }, { "sub": "agent-2" }, {}],
                    "truncated": false, "omitted": 0, "malformed": true, "malformedReason": "sub_not_string" })
        );
        let d = delegation(&c, 1).unwrap();
        assert_eq!((d["truncated"].clone(), d["omitted"].clone()), (json!(true), json!(2)));
        assert_eq!(delegation(&user(json!({})), 10), None);
        assert_eq!(
            delegation(&user(json!({ "act": "x" })), 10).unwrap()["malformedReason"],
            "act_not_object"
        );
    }

    #[test]
    fn outcomes_follow_the_http_status() {
        let e = ErrorObject::new(-32602, "bad");
        assert_eq!(outcome(200, None, true), "success");
        assert_eq!(outcome(200, Some(&e), true), "application_error");
        assert_eq!(outcome(200, Some(&e), false), "success");
        let limited = ErrorObject::new(code::RATE_LIMITED, "slow down");
        assert_eq!(outcome(status_of(Some(&limited), false), Some(&limited), true), "failure");
        let denied = ErrorObject::new(code::ACCESS_DENIED, "no");
        assert_eq!(outcome(status_of(Some(&denied), true), Some(&denied), true), "denied");
        let gone = ErrorObject::new(code::CREDENTIALS_UNAVAILABLE, "later");
        assert_eq!(outcome(status_of(Some(&gone), false), Some(&gone), true), "error");
        let nf = ErrorObject::new(code::METHOD_NOT_FOUND, "?");
        assert_eq!(outcome(status_of(Some(&nf), true), Some(&nf), true), "failure");
        assert_eq!(outcome(status_of(Some(&nf), false), Some(&nf), true), "application_error");
    }
}
