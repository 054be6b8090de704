//! `--user-tools`: the fixture acts as a backend whose tools depend on who asks, as one behind
//! user-bound outgoing auth (`passthrough`, `token_exchange`) may.
//!
//! - `tools/list` and `tools/call` without `Authorization: Bearer <token>` are refused with HTTP
//!   401 (other methods, the handshake and notification streams, are served as usual);
//! - with a token, `tools/list` adds `whoami_<sub>` (the caller's request headers, as `whoami`),
//!   `add_user_tool` (adds a tool to the caller's own list and announces a tools list change)
//!   and the tools added so far for that `sub`. `sub` is read from the token's payload *without
//!   verifying it*: this is a test fixture, and the gateway in front has verified the token;
//! - `GET /test/stats` counts the `tools/list` requests by `sub` (`""`: refused ones), so tests
//!   can see how often the gateway discovers per principal.
//!
//! Invariant: without the flag nothing here runs, and the fixture behaves as before.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rmcp::{ErrorData, RoleServer, model::*, service::RequestContext};
use serde_json::{Value, json};

use crate::server::{Fixture, lock};

/// Per-user state: tools added by `add_user_tool` and `tools/list` counts, both by `sub`.
#[derive(Default)]
pub struct Users {
    added: Mutex<BTreeMap<String, BTreeSet<String>>>,
    lists: Mutex<BTreeMap<String, u64>>,
}

/// The layer around `/mcp`: refuses tool requests without a bearer token and counts lists.
pub async fn layer(State(users): State<Arc<Users>>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let sub = bearer(request.headers()).map(|t| sub_of(&t));
    // The method is in the body: read it, look, and hand the same bytes on.
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 * 1024 * 1024).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let method = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("method").and_then(Value::as_str).map(str::to_owned));
    if method.as_deref() == Some("tools/list") {
        *lock(&users.lists).entry(sub.clone().unwrap_or_default()).or_default() += 1;
    }
    if matches!(method.as_deref(), Some("tools/list" | "tools/call")) && sub.is_none() {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "tools need the user's bearer token",
        )
            .into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// `GET /test/stats`: `{"toolsList": {"<sub>": n}}`.
pub async fn stats(State(users): State<Arc<Users>>) -> axum::Json<Value> {
    axum::Json(json!({ "toolsList": *lock(&users.lists) }))
}

/// The bearer token of a request, if it has one.
fn bearer(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))?;
    (!token.trim().is_empty()).then(|| token.trim().to_owned())
}

/// The `sub` claim of a JWT, unverified, made fit for a tool name; `anonymous` when the token is
/// not a JWT or has no `sub`.
fn sub_of(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap_or_default();
    let claims: Option<Value> = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let sub = claims.as_ref().and_then(|c| c.get("sub")).and_then(Value::as_str).unwrap_or("");
    let clean: String = sub
        .chars()
        .take(40)
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .collect();
    if clean.is_empty() { "anonymous".to_owned() } else { clean }
}

/// The `sub` of the request behind `cx` (HTTP only).
fn caller_sub(cx: &RequestContext<RoleServer>) -> Option<String> {
    let parts = cx.extensions.get::<http::request::Parts>()?;
    bearer(&parts.headers).map(|t| sub_of(&t))
}

fn tool(name: &str, description: &str, schema: Value) -> Tool {
    let schema = match schema {
        Value::Object(o) => o,
        _ => serde_json::Map::new(),
    };
    Tool::new(name.to_owned(), description.to_owned(), schema)
}

/// The tools only the caller of `cx` sees (none without the flag or a token).
pub fn tools_for(fixture: &Fixture, cx: &RequestContext<RoleServer>) -> Vec<Tool> {
    if !fixture.shared.settings.user_tools {
        return Vec::new();
    }
    let Some(sub) = caller_sub(cx) else { return Vec::new() };
    let none = json!({ "type": "object", "properties": {} });
    let mut tools = vec![
        tool(
            &format!("whoami_{sub}"),
            "Returns this call's request headers (only the user it is named after has it)",
            none.clone(),
        ),
        tool(
            "add_user_tool",
            "Adds the tool `name` to the caller's own list and sends notifications/tools/list_changed",
            json!({ "type": "object", "properties": { "name": { "type": "string" } }, "required": ["name"] }),
        ),
    ];
    let added = lock(&fixture.shared.users.added).get(&sub).cloned().unwrap_or_default();
    tools.extend(
        added.iter().map(|n| tool(n, "Added for one user; returns a fixed text", none.clone())),
    );
    tools
}

/// Handles a call to one of the caller's own tools; `None`: not one of them.
pub async fn call_tool(
    fixture: &Fixture,
    request: &CallToolRequestParams,
    cx: &RequestContext<RoleServer>,
) -> Option<Result<CallToolResult, ErrorData>> {
    if !fixture.shared.settings.user_tools {
        return None;
    }
    let sub = caller_sub(cx)?;
    let name = request.name.as_ref();
    let text = |s: String| Ok(CallToolResult::success(vec![ContentBlock::text(s)]));
    if name == format!("whoami_{sub}") {
        return Some(text(crate::extra::whoami(cx).to_string()));
    }
    if name == "add_user_tool" {
        let arg = request.arguments.as_ref().and_then(|a| a.get("name")).and_then(Value::as_str);
        let Some(new) = arg.filter(|n| !n.is_empty()) else {
            return Some(Err(ErrorData::invalid_params(
                "add_user_tool needs a string `name`",
                None,
            )));
        };
        lock(&fixture.shared.users.added).entry(sub.clone()).or_default().insert(new.to_owned());
        fixture.shared.announce_tools().await;
        return Some(text(format!("Added {new} for {sub}")));
    }
    let mine = lock(&fixture.shared.users.added).get(&sub).is_some_and(|s| s.contains(name));
    mine.then(|| text(format!("{name} called by {sub}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: Value) -> String {
        let enc =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.sig", enc(&json!({ "alg": "ES256" })), enc(&claims))
    }

    #[test]
    fn sub_is_read_without_verification_and_made_fit_for_names() {
        assert_eq!(sub_of(&jwt(json!({ "sub": "alice" }))), "alice");
        assert_eq!(sub_of(&jwt(json!({ "sub": "a@b.c" }))), "a_b_c");
        assert_eq!(sub_of(&jwt(json!({}))), "anonymous");
        assert_eq!(sub_of("opaque"), "anonymous");
    }

    #[test]
    fn bearer_needs_a_token() {
        let mut h = http::HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Basic x".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer t0k".parse().unwrap());
        assert_eq!(bearer(&h).as_deref(), Some("t0k"));
    }
}
