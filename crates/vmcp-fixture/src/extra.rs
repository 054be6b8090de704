//! Tools for vmcp's own integration tests, demos and benchmarks: `echo`,
//! `whoami`, `sleep`, `fail`, `crash`, `counter`, `notify_list_changed`, the
//! runtime-added tools, and the `synthetic_N` tools behind `--tools N`.
//!
//! None of these names collide with the conformance suite's (`test_*`).

use std::{sync::atomic::Ordering, time::Duration};

use rmcp::{ErrorData, RoleServer, model::*, service::RequestContext};
use serde_json::{Map, Value, json};

use crate::server::Fixture;

fn tool(name: &str, description: &str, schema: Value) -> Tool {
    let schema = match schema {
        Value::Object(o) => o,
        _ => Map::new(),
    };
    Tool::new(name.to_owned(), description.to_owned(), schema)
}

fn no_args() -> Value {
    json!({ "type": "object", "properties": {} })
}

pub fn tools() -> Vec<Tool> {
    vec![
        tool(
            "echo",
            "Returns `Echo: <message>`",
            json!({
                "type": "object",
                "properties": { "message": { "type": "string", "description": "Text to echo" } },
                "required": ["message"]
            }),
        ),
        tool(
            "whoami",
            "Returns the HTTP request headers this call arrived with (authorization, mcp-session-id and x-*), as JSON; {} over stdio",
            no_args(),
        ),
        tool(
            "sleep",
            "Sleeps for `ms` milliseconds, then returns; stops early if the call is cancelled",
            json!({
                "type": "object",
                "properties": { "ms": { "type": "integer", "minimum": 0, "description": "Milliseconds to sleep" } },
                "required": ["ms"]
            }),
        ),
        tool(
            "fail",
            "Answers with a JSON-RPC error (default code -32603; `code` and `message` override it)",
            json!({
                "type": "object",
                "properties": {
                    "code": { "type": "integer", "description": "JSON-RPC error code" },
                    "message": { "type": "string", "description": "Error message" }
                }
            }),
        ),
        tool("crash", "Exits the fixture process with status 1", no_args()),
        tool("counter", "Returns a per-process counter incremented by each call", no_args()),
        tool(
            "notify_list_changed",
            "Adds the tool `dynamic_tool` and sends notifications/tools/list_changed",
            no_args(),
        ),
        tool(
            "request_log",
            "The HTTP requests this server received (method, mcp-session-id, authorization), oldest first",
            no_args(),
        ),
        tool(
            "touch_resource",
            "Sends notifications/resources/updated for `uri` to the sessions and listen streams subscribed to it",
            json!({ "type": "object", "properties": { "uri": { "type": "string" } }, "required": ["uri"] }),
        ),
    ]
}

/// The `synthetic_<i>` tool, which echoes its arguments.
pub fn synthetic_tool(i: usize) -> Tool {
    tool(
        &format!("synthetic_{i}"),
        "Synthetic benchmark tool: returns its arguments as JSON text",
        json!({
            "type": "object",
            "properties": { "value": { "type": "string", "description": "Anything" } }
        }),
    )
}

/// A `--named-tools` tool: returns `{"server": <--name>, "arguments": ...}` as JSON text, so a
/// test sees which backend a gateway routed it to.
pub fn named_tool(name: &str) -> Tool {
    tool(
        name,
        "Stand-in for a real server's tool: returns the server name and its arguments as JSON",
        json!({ "type": "object" }),
    )
}

/// A tool added at runtime (`dynamic_tool`, `test_triggered_tool_N`).
pub fn added_tool(name: &str) -> Tool {
    tool(name, "Added at runtime; returns a fixed text", no_args())
}

fn text(s: impl Into<String>) -> Result<CallToolResult, ErrorData> {
    Ok(CallToolResult::success(vec![ContentBlock::text(s)]))
}

/// Handles an extra tool call; `None` means the name is not one of ours.
pub async fn call_tool(
    fixture: &Fixture,
    request: &CallToolRequestParams,
    cx: &RequestContext<RoleServer>,
) -> Option<Result<CallToolResult, ErrorData>> {
    let args = request.arguments.clone().unwrap_or_default();
    let name = request.name.as_ref();
    Some(match name {
        "echo" => match args.get("message").and_then(Value::as_str) {
            Some(message) => text(format!("Echo: {message}")),
            None => Err(ErrorData::invalid_params("echo needs a string `message`", None)),
        },
        "whoami" => text(whoami(cx).to_string()),
        "sleep" => {
            let Some(ms) = args.get("ms").and_then(Value::as_u64) else {
                return Some(Err(ErrorData::invalid_params(
                    "sleep needs an integer `ms` >= 0",
                    None,
                )));
            };
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(ms)) => text(format!("Slept {ms} ms")),
                _ = cx.ct.cancelled() => {
                    // The client gave up; the answer is never delivered, so any error will do.
                    Err(ErrorData::internal_error("sleep cancelled", None))
                }
            }
        }
        "fail" => {
            let code = args
                .get("code")
                .and_then(Value::as_i64)
                .and_then(|c| i32::try_from(c).ok())
                .unwrap_or(ErrorCode::INTERNAL_ERROR.0);
            let message = args
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("Intentional failure from the fail tool")
                .to_owned();
            Err(ErrorData::new(ErrorCode(code), message, None))
        }
        "crash" => {
            tracing::warn!("crash tool called: exiting with status 1");
            std::process::exit(1)
        }
        "counter" => {
            let n = fixture.shared.counter.fetch_add(1, Ordering::SeqCst) + 1;
            text(n.to_string())
        }
        "notify_list_changed" => {
            fixture.shared.add_tool("dynamic_tool").await;
            text("Added dynamic_tool; sent notifications/tools/list_changed")
        }
        "request_log" => text(Value::Array(fixture.shared.request_log()).to_string()),
        "touch_resource" => match args.get("uri").and_then(Value::as_str) {
            Some(uri) => {
                let sent = fixture.shared.touch(uri).await;
                text(format!(
                    "Sent notifications/resources/updated for {uri} to {sent} subscribers"
                ))
            }
            None => Err(ErrorData::invalid_params("touch_resource needs a string `uri`", None)),
        },
        _ if name.starts_with("synthetic_")
            && name["synthetic_".len()..]
                .parse::<usize>()
                .is_ok_and(|i| i < fixture.shared.settings.synthetic_tools) =>
        {
            text(Value::Object(args).to_string())
        }
        _ if fixture.shared.settings.named_tools.iter().any(|n| n == name) => {
            text(json!({ "server": fixture.shared.settings.name, "arguments": args }).to_string())
        }
        _ if fixture.shared.has_added_tool(name) => text(format!("{name} called")),
        _ => return None,
    })
}

/// The HTTP headers of the current request that tests care about:
/// `authorization`, `mcp-session-id` (which backend session served the call) and every `x-*`
/// header. Empty over stdio.
pub(crate) fn whoami(cx: &RequestContext<RoleServer>) -> Value {
    let mut headers = Map::new();
    if let Some(parts) = cx.extensions.get::<http::request::Parts>() {
        for (name, value) in &parts.headers {
            let name = name.as_str();
            if name == "authorization" || name == "mcp-session-id" || name.starts_with("x-") {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                // Repeated headers become arrays so none is lost.
                match headers.get_mut(name) {
                    Some(Value::Array(list)) => list.push(Value::String(value)),
                    Some(existing) => {
                        let first = existing.take();
                        *existing = Value::Array(vec![first, Value::String(value)]);
                    }
                    None => {
                        headers.insert(name.to_owned(), Value::String(value));
                    }
                }
            }
        }
    }
    Value::Object(headers)
}
