//! Everything the official MCP conformance suite's server scenarios call:
//! the `test_*` tools, `test://` resources and templates, the `test_*`
//! prompts and completion values, with the exact names, texts and behaviours
//! the scenarios check (`@modelcontextprotocol/conformance` 0.2.0-alpha.12).
//!
//! Sampling and elicitation use server-to-client requests on legacy
//! sessions (`test_sampling`, `test_elicitation*`) and `input_required`
//! results (SEP-2322 multi round-trip requests) on 2026-07-28
//! (`test_input_required_result_*`), because each scenario set only exercises
//! its own era's mechanism.

#![allow(deprecated)] // Logging is deprecated in 2026-07-28 but still served.

use std::{sync::atomic::Ordering, time::Duration};

use rmcp::{ErrorData, RoleServer, model::*, service::RequestContext};
use serde_json::{Map, Value, json};

use crate::server::{Fixture, from_json, is_modern};

/// A 1x1 red PNG.
pub const TEST_IMAGE: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// A 44-byte WAV header with no samples (silence).
pub const TEST_AUDIO: &str = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQAAAAA=";

/// The JSON Schema 2020-12 tool's input schema, exactly as the
/// `json-schema-2020-12` scenario expects it to come back from `tools/list`.
fn json_schema_2020_12() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {
            "address": {
                "$anchor": "addressDef",
                "type": "object",
                "properties": { "street": { "type": "string" }, "city": { "type": "string" } }
            }
        },
        "properties": {
            "name": { "type": "string" },
            "address": { "$ref": "#/$defs/address" },
            "contactMethod": { "type": "string", "enum": ["phone", "email"] },
            "phone": { "type": "string" },
            "email": { "type": "string" }
        },
        "allOf": [{ "anyOf": [{ "required": ["phone"] }, { "required": ["email"] }] }],
        "if": {
            "properties": { "contactMethod": { "const": "phone" } },
            "required": ["contactMethod"]
        },
        "then": { "required": ["phone"] },
        "else": { "required": ["email"] },
        "additionalProperties": false
    })
}

fn no_args() -> Value {
    json!({ "type": "object", "properties": {} })
}

/// The conformance tools, `test_simple_text` first because header-validation
/// scenarios call the first listed tool with empty arguments.
pub fn tools() -> Vec<Tool> {
    let defs: Vec<(&str, &str, Value)> = vec![
        ("test_simple_text", "Returns simple text content", no_args()),
        ("test_image_content", "Returns image content", no_args()),
        ("test_audio_content", "Returns audio content", no_args()),
        ("test_embedded_resource", "Returns embedded resource content", no_args()),
        ("test_multiple_content_types", "Returns text, image and resource content", no_args()),
        ("test_tool_with_logging", "Sends three log notifications while running", no_args()),
        ("test_error_handling", "Always returns a tool error", no_args()),
        ("test_tool_with_progress", "Reports progress notifications", no_args()),
        (
            "test_sampling",
            "Requests LLM sampling from the client",
            json!({
                "type": "object",
                "properties": { "prompt": { "type": "string", "description": "The prompt to send" } },
                "required": ["prompt"]
            }),
        ),
        (
            "test_elicitation",
            "Requests user input from the client",
            json!({
                "type": "object",
                "properties": { "message": { "type": "string", "description": "The message to show" } },
                "required": ["message"]
            }),
        ),
        (
            "test_elicitation_sep1034_defaults",
            "Elicitation with default values (SEP-1034)",
            no_args(),
        ),
        ("test_elicitation_sep1330_enums", "Elicitation with enum schemas (SEP-1330)", no_args()),
        (
            "json_schema_2020_12_tool",
            "Tool with JSON Schema 2020-12 features",
            json_schema_2020_12(),
        ),
        ("test_reconnection", "Takes a moment, for SSE reconnection tests", no_args()),
        (
            "test_custom_headers",
            "Echoes an argument that is mirrored into the Mcp-Param-Region header (SEP-2243)",
            json!({
                "type": "object",
                "properties": {
                    "region": { "type": "string", "description": "A region", "x-mcp-header": "Region" }
                },
                "required": ["region"]
            }),
        ),
        ("test_input_required_result_elicitation", "Asks for a name via input_required", no_args()),
        (
            "test_input_required_result_sampling",
            "Asks for a sampling answer via input_required",
            no_args(),
        ),
        (
            "test_input_required_result_list_roots",
            "Asks for the client's roots via input_required",
            no_args(),
        ),
        (
            "test_input_required_result_request_state",
            "Round-trips a sealed requestState",
            no_args(),
        ),
        (
            "test_input_required_result_multiple_inputs",
            "Asks for elicitation, sampling and roots at once",
            no_args(),
        ),
        (
            "test_input_required_result_multi_round",
            "Two input_required rounds before completing",
            no_args(),
        ),
        ("test_input_required_result_tampered_state", "Rejects a tampered requestState", no_args()),
        (
            "test_input_required_result_capabilities",
            "Only asks for input the client declared",
            no_args(),
        ),
        ("test_missing_capability", "Needs the sampling client capability", no_args()),
        (
            "test_streaming_elicitation",
            "Asks for input via input_required, never a server request",
            no_args(),
        ),
        ("test_logging_tool", "Logs only when the request asks for a logLevel", no_args()),
        ("test_trigger_tool_change", "Adds a tool and announces tools/list_changed", no_args()),
        (
            "test_trigger_prompt_change",
            "Adds a prompt and announces prompts/list_changed",
            no_args(),
        ),
    ];
    defs.into_iter()
        .filter_map(|(name, description, schema)| match schema {
            Value::Object(schema) => Some(Tool::new(name, description, schema)),
            _ => None,
        })
        .collect()
}

fn text(s: impl Into<String>) -> ContentBlock {
    ContentBlock::text(s)
}

fn ok(content: Vec<ContentBlock>) -> Option<Result<CallToolResponse, ErrorData>> {
    Some(Ok(CallToolResult::success(content).into()))
}

/// Handles a conformance tool call; `None` means the name is not one of ours.
pub async fn call_tool(
    fixture: &Fixture,
    request: &CallToolRequestParams,
    cx: &RequestContext<RoleServer>,
) -> Option<Result<CallToolResponse, ErrorData>> {
    let args = request.arguments.clone().unwrap_or_default();
    let arg = |name: &str| args.get(name).and_then(Value::as_str).map(str::to_owned);
    match request.name.as_ref() {
        "test_simple_text" => ok(vec![text("This is a simple text response for testing.")]),
        "test_image_content" => ok(vec![ContentBlock::image(TEST_IMAGE, "image/png")]),
        "test_audio_content" => ok(vec![ContentBlock::audio(TEST_AUDIO, "audio/wav")]),
        "test_embedded_resource" => ok(vec![ContentBlock::resource(text_contents(
            "test://embedded-resource",
            "text/plain",
            "This is an embedded resource content.",
        ))]),
        "test_multiple_content_types" => ok(vec![
            text("Multiple content types test:"),
            ContentBlock::image(TEST_IMAGE, "image/png"),
            ContentBlock::resource(text_contents(
                "test://mixed-content-resource",
                "application/json",
                r#"{"test":"data","value":123}"#,
            )),
        ]),
        "test_tool_with_logging" => {
            for (i, message) in
                ["Tool execution started", "Tool processing data", "Tool execution completed"]
                    .into_iter()
                    .enumerate()
            {
                if i > 0 {
                    // The scenario checks that notifications arrive spread over the call.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                fixture.log(cx, LoggingLevel::Info, message).await;
            }
            ok(vec![text("Logging test completed")])
        }
        "test_logging_tool" => {
            fixture.log(cx, LoggingLevel::Info, "test_logging_tool ran").await;
            ok(vec![text("Logging tool completed")])
        }
        "test_error_handling" => Some(Ok(CallToolResult::error(vec![text(
            "This tool intentionally returns an error for testing",
        )])
        .into())),
        "test_tool_with_progress" => {
            let token = cx.meta.get_progress_token();
            for (i, (progress, message)) in
                [(0.0, "Starting"), (50.0, "Halfway"), (100.0, "Complete")].into_iter().enumerate()
            {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if let Some(token) = &token {
                    let param = ProgressNotificationParam::new(token.clone(), progress)
                        .with_total(100.0)
                        .with_message(message);
                    if let Err(e) = cx.peer.notify_progress(param).await {
                        tracing::debug!("progress notification failed: {e}");
                    }
                }
            }
            ok(vec![text("Progress test completed")])
        }
        "test_sampling" => {
            Some(sampling(cx, request, &arg("prompt").unwrap_or_else(|| "Hello".into())).await)
        }
        "test_elicitation" => {
            let message =
                arg("message").unwrap_or_else(|| "Please provide your information".into());
            let schema = json!({
                "type": "object",
                "properties": {
                    "username": { "type": "string", "description": "User's response" },
                    "email": { "type": "string", "description": "User's email address" }
                },
                "required": ["username", "email"]
            });
            Some(elicit(cx, request, &message, schema, "User response").await)
        }
        "test_elicitation_sep1034_defaults" => {
            let schema = json!({
                "type": "object",
                "properties": {
                    "name": { "type": "string", "description": "User's name", "default": "John Doe" },
                    "age": { "type": "integer", "description": "User's age", "default": 30 },
                    "score": { "type": "number", "description": "User's score", "default": 95.5 },
                    "status": {
                        "type": "string",
                        "description": "User's status",
                        "enum": ["active", "inactive", "pending"],
                        "default": "active"
                    },
                    "verified": { "type": "boolean", "description": "Whether user is verified", "default": true }
                }
            });
            Some(
                elicit(
                    cx,
                    request,
                    "Please provide values (all have defaults)",
                    schema,
                    "Elicitation completed",
                )
                .await,
            )
        }
        "test_elicitation_sep1330_enums" => {
            let schema = json!({
                "type": "object",
                "properties": {
                    "untitledSingle": { "type": "string", "enum": ["option1", "option2", "option3"] },
                    "titledSingle": {
                        "type": "string",
                        "oneOf": [
                            { "const": "value1", "title": "First Option" },
                            { "const": "value2", "title": "Second Option" },
                            { "const": "value3", "title": "Third Option" }
                        ]
                    },
                    "legacyEnum": {
                        "type": "string",
                        "enum": ["opt1", "opt2", "opt3"],
                        "enumNames": ["Option One", "Option Two", "Option Three"]
                    },
                    "untitledMulti": {
                        "type": "array",
                        "items": { "type": "string", "enum": ["option1", "option2", "option3"] }
                    },
                    "titledMulti": {
                        "type": "array",
                        "items": {
                            "anyOf": [
                                { "const": "value1", "title": "First Choice" },
                                { "const": "value2", "title": "Second Choice" },
                                { "const": "value3", "title": "Third Choice" }
                            ]
                        }
                    }
                }
            });
            Some(
                elicit(
                    cx,
                    request,
                    "Test enum schema improvements",
                    schema,
                    "Elicitation completed",
                )
                .await,
            )
        }
        "json_schema_2020_12_tool" => {
            ok(vec![text(format!("Hello, {}!", arg("name").unwrap_or_else(|| "world".into())))])
        }
        "test_reconnection" => {
            tokio::time::sleep(Duration::from_millis(100)).await;
            ok(vec![text("Reconnection test completed")])
        }
        "test_custom_headers" => {
            ok(vec![text(format!("region={}", arg("region").unwrap_or_default()))])
        }
        // Each trigger adds a new item, so the list really changes every time (an aggregator
        // that compares lists, like vmcp, only announces real changes).
        "test_trigger_tool_change" => {
            let n = fixture.shared.triggers.fetch_add(1, Ordering::SeqCst);
            fixture.shared.add_tool(&format!("test_triggered_tool_{n}")).await;
            ok(vec![text("Tool list changed")])
        }
        "test_trigger_prompt_change" => {
            let n = fixture.shared.triggers.fetch_add(1, Ordering::SeqCst);
            fixture.shared.add_prompt(&format!("test_triggered_prompt_{n}")).await;
            ok(vec![text("Prompt list changed")])
        }
        "test_missing_capability" => {
            let has_sampling = cx.client_capabilities().is_some_and(|c| c.sampling.is_some());
            let missing = || -> Result<CallToolResponse, ErrorData> {
                let required: ClientCapabilities = from_json(json!({ "sampling": {} }))?;
                Err(ErrorData::missing_required_client_capability(required))
            };
            if !has_sampling {
                return Some(missing());
            }
            // On a Legacy session the tool really samples, so a peer that declared sampling at
            // initialize but cannot sample now (a gateway bridging a 2026-07-28 client that did
            // not declare it) refuses the request and the call fails the same way.
            if !is_modern(cx) {
                let ask = sampling_request("Say anything", 10);
                if ask_peer(cx, &ask).await.is_err() {
                    return Some(missing());
                }
            }
            ok(vec![text("The client declared sampling")])
        }
        name if name.starts_with("test_input_required_result_")
            || name == "test_streaming_elicitation" =>
        {
            if is_modern(cx) {
                Some(mrtr_tool(fixture, name, request, cx))
            } else {
                Some(legacy_input_tool(name, request, cx).await)
            }
        }
        _ => None,
    }
}

fn text_contents(uri: &str, mime: &str, body: &str) -> ResourceContents {
    ResourceContents::TextResourceContents {
        uri: uri.into(),
        mime_type: Some(mime.into()),
        text: body.into(),
        meta: None,
    }
}

/// `test_sampling`: a real `sampling/createMessage` request on a legacy session; on 2026-07-28,
/// which has no server-to-client requests, the same question as an `input_required` round.
async fn sampling(
    cx: &RequestContext<RoleServer>,
    request: &CallToolRequestParams,
    prompt: &str,
) -> Result<CallToolResponse, ErrorData> {
    let ask = json!({
        "messages": [{ "role": "user", "content": { "type": "text", "text": prompt } }],
        "maxTokens": 100
    });
    if is_modern(cx) {
        return match request.input_responses.as_ref().and_then(|r| r.get("sampling")) {
            Some(answer) => Ok(sampled_text(answer).into()),
            None => Ok(input_required(
                json!({ "sampling": { "method": "sampling/createMessage", "params": ask } }),
                None,
            )?
            .into()),
        };
    }
    let params: CreateMessageRequestParams = from_json(ask)?;
    Ok(match cx.peer.create_message(params).await {
        Ok(result) => sampled_text(&serde_json::to_value(&result).unwrap_or_default()).into(),
        Err(e) => CallToolResult::error(vec![text(format!("Sampling error: {e}"))]).into(),
    })
}

fn sampled_text(value: &Value) -> CallToolResult {
    let answer = first_text(&value["content"])
        .or_else(|| first_text(&value["message"]["content"]))
        .unwrap_or_else(|| "No text response".into());
    CallToolResult::success(vec![text(format!("LLM response: {answer}"))])
}

/// Finds the first text in a content block or list of blocks.
fn first_text(content: &Value) -> Option<String> {
    match content {
        Value::Array(items) => items.iter().find_map(first_text),
        Value::Object(o) => o.get("text").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// Elicitation: a real `elicitation/create` request on a legacy session; on 2026-07-28 the same
/// question as an `input_required` round.
async fn elicit(
    cx: &RequestContext<RoleServer>,
    request: &CallToolRequestParams,
    message: &str,
    schema: Value,
    label: &str,
) -> Result<CallToolResponse, ErrorData> {
    let ask = json!({ "message": message, "requestedSchema": schema });
    if is_modern(cx) {
        return match request.input_responses.as_ref().and_then(|r| r.get("elicitation")) {
            Some(answer) => Ok(elicited_text(answer, label).into()),
            None => Ok(input_required(
                json!({ "elicitation": { "method": "elicitation/create", "params": ask } }),
                None,
            )?
            .into()),
        };
    }
    let params: ElicitRequestParams = from_json(ask)?;
    Ok(match cx.peer.create_elicitation(params).await {
        Ok(result) => {
            elicited_text(&serde_json::to_value(&result).unwrap_or_default(), label).into()
        }
        Err(e) => CallToolResult::error(vec![text(format!("Elicitation error: {e}"))]).into(),
    })
}

fn elicited_text(value: &Value, label: &str) -> CallToolResult {
    let action = value["action"].as_str().unwrap_or("unknown").to_owned();
    let content = value.get("content").cloned().unwrap_or(Value::Null);
    CallToolResult::success(vec![text(format!("{label}: action={action}, content={content}"))])
}

// ---------------------------------------------------------------------------
// SEP-2322 input_required (multi round-trip) tools, 2026-07-28 only.
// ---------------------------------------------------------------------------

fn elicitation_request(message: &str, property: &str, ty: &str) -> Value {
    json!({
        "method": "elicitation/create",
        "params": {
            "message": message,
            "requestedSchema": {
                "type": "object",
                "properties": { property: { "type": ty } },
                "required": [property]
            }
        }
    })
}

fn sampling_request(prompt: &str, max_tokens: u32) -> Value {
    json!({
        "method": "sampling/createMessage",
        "params": {
            "messages": [{ "role": "user", "content": { "type": "text", "text": prompt } }],
            "maxTokens": max_tokens
        }
    })
}

fn roots_request() -> Value {
    json!({ "method": "roots/list", "params": {} })
}

/// Builds an `input_required` result from a JSON map of requests.
fn input_required(
    requests: Value,
    state: Option<String>,
) -> Result<InputRequiredResult, ErrorData> {
    let requests: InputRequests = from_json(requests)?;
    Ok(InputRequiredResult::new(Some(requests), state))
}

/// The accepted content of an elicitation response, if `key` holds one.
fn accepted<'a>(
    responses: Option<&'a InputResponses>,
    key: &str,
) -> Option<&'a Map<String, Value>> {
    let response = responses?.get(key)?.as_object()?;
    if response.get("action").and_then(Value::as_str) != Some("accept") {
        return None;
    }
    response.get("content")?.as_object()
}

fn accepted_str(responses: Option<&InputResponses>, key: &str, field: &str) -> Option<String> {
    accepted(responses, key)?.get(field)?.as_str().map(str::to_owned)
}

/// The answer text of a sampling response under `key`.
fn sampled(responses: Option<&InputResponses>, key: &str) -> Option<String> {
    first_text(responses?.get(key)?.as_object()?.get("content")?)
}

/// The root URIs of a `roots/list` response under `key`.
fn roots(responses: Option<&InputResponses>, key: &str) -> Option<Vec<String>> {
    let list = responses?.get(key)?.as_object()?.get("roots")?.as_array()?;
    Some(
        list.iter()
            .filter_map(|r| r.get("uri").and_then(Value::as_str).map(str::to_owned))
            .collect(),
    )
}

fn done(message: String) -> Result<CallToolResponse, ErrorData> {
    Ok(CallToolResult::success(vec![text(message)]).into())
}

/// Opens a sealed `requestState`, bound to the tool name so state from one
/// tool cannot be replayed against another.
fn open_state(fixture: &Fixture, tool: &str, state: &str) -> Result<Value, ErrorData> {
    fixture.shared.codec.open_json_with::<Value>(state, tool.as_bytes()).map_err(|e| {
        ErrorData::invalid_params(format!("requestState failed its integrity check: {e}"), None)
    })
}

fn seal_state(fixture: &Fixture, tool: &str, state: Value) -> Result<String, ErrorData> {
    fixture
        .shared
        .codec
        .seal_json_with(&state, &SealOptions::new().associated_data(tool.as_bytes()))
        .map_err(|e| ErrorData::internal_error(format!("sealing requestState: {e}"), None))
}

/// The `test_input_required_result_*` tools. Missing or malformed responses
/// are answered with a fresh `input_required` result re-asking for them, as
/// SEP-2322 recommends, rather than an error.
fn mrtr_tool(
    fixture: &Fixture,
    name: &str,
    request: &CallToolRequestParams,
    cx: &RequestContext<RoleServer>,
) -> Result<CallToolResponse, ErrorData> {
    let responses = request.input_responses.as_ref();
    // A state that is present must verify, whatever the round.
    let state = match request.request_state.as_deref() {
        Some(s) => Some(open_state(fixture, name, s)?),
        None => None,
    };
    match name {
        "test_input_required_result_elicitation" | "test_streaming_elicitation" => {
            if name == "test_streaming_elicitation"
                && cx.client_capabilities().is_none_or(|c| c.elicitation.is_none())
            {
                let required: ClientCapabilities = from_json(json!({ "elicitation": {} }))?;
                return Err(ErrorData::missing_required_client_capability(required));
            }
            match accepted_str(responses, "user_name", "name") {
                Some(user) => done(format!("Hello, {user}!")),
                None => Ok(input_required(
                    json!({ "user_name": elicitation_request("What is your name?", "name", "string") }),
                    None,
                )?
                .into()),
            }
        }
        "test_input_required_result_sampling" => match sampled(responses, "capital_question") {
            Some(answer) => done(format!("LLM response: {answer}")),
            None => Ok(input_required(
                json!({ "capital_question": sampling_request("What is the capital of France?", 100) }),
                None,
            )?
            .into()),
        },
        "test_input_required_result_list_roots" => match roots(responses, "client_roots") {
            Some(uris) => done(format!("Client roots: {}", uris.join(", "))),
            None => Ok(input_required(json!({ "client_roots": roots_request() }), None)?.into()),
        },
        "test_input_required_result_request_state" | "test_input_required_result_tampered_state" => {
            let confirmed = accepted(responses, "confirm").and_then(|c| c.get("ok")).and_then(Value::as_bool);
            match (state, confirmed) {
                (Some(_), Some(ok)) => done(format!("state-ok: requestState verified, ok={ok}")),
                _ => {
                    let sealed = seal_state(fixture, name, json!({ "round": 1 }))?;
                    let mut confirm = elicitation_request("Please confirm", "ok", "boolean");
                    confirm["params"]["requestedSchema"]["properties"]["ok"] = json!({ "type": "boolean" });
                    Ok(input_required(json!({ "confirm": confirm }), Some(sealed))?.into())
                }
            }
        }
        "test_input_required_result_multiple_inputs" => {
            let user = accepted_str(responses, "user_name", "name");
            let greeting = sampled(responses, "greeting");
            let client_roots = roots(responses, "client_roots");
            match (state, user, greeting, client_roots) {
                (Some(_), Some(user), Some(greeting), Some(uris)) => done(format!(
                    "Hello, {user}! Greeting: {greeting}. Roots: {}",
                    uris.join(", ")
                )),
                _ => {
                    let sealed = seal_state(fixture, name, json!({ "round": 1 }))?;
                    Ok(input_required(
                        json!({
                            "user_name": elicitation_request("What is your name?", "name", "string"),
                            "greeting": sampling_request("Generate a greeting", 50),
                            "client_roots": roots_request()
                        }),
                        Some(sealed),
                    )?
                    .into())
                }
            }
        }
        "test_input_required_result_multi_round" => {
            let round = state.as_ref().and_then(|s| s["round"].as_u64());
            let step1 = || -> Result<CallToolResponse, ErrorData> {
                let sealed = seal_state(fixture, name, json!({ "round": 1 }))?;
                Ok(input_required(
                    json!({ "step1": elicitation_request("Step 1: What is your name?", "name", "string") }),
                    Some(sealed),
                )?
                .into())
            };
            match round {
                Some(1) => match accepted_str(responses, "step1", "name") {
                    Some(user) => {
                        let sealed = seal_state(fixture, name, json!({ "round": 2, "name": user }))?;
                        Ok(input_required(
                            json!({ "step2": elicitation_request("Step 2: What is your favorite color?", "color", "string") }),
                            Some(sealed),
                        )?
                        .into())
                    }
                    None => step1(),
                },
                Some(2) => {
                    let user = state.as_ref().and_then(|s| s["name"].as_str()).unwrap_or("").to_owned();
                    match accepted_str(responses, "step2", "color") {
                        Some(color) => done(format!("Hello, {user}! Your favorite color is {color}.")),
                        None => {
                            let sealed = seal_state(fixture, name, json!({ "round": 2, "name": user }))?;
                            Ok(input_required(
                                json!({ "step2": elicitation_request("Step 2: What is your favorite color?", "color", "string") }),
                                Some(sealed),
                            )?
                            .into())
                        }
                    }
                }
                _ => step1(),
            }
        }
        "test_input_required_result_capabilities" => {
            if responses.is_some_and(|r| !r.is_empty()) {
                return done("Received the requested input".into());
            }
            let caps = cx.client_capabilities();
            let mut requests = Map::new();
            if caps.as_ref().is_some_and(|c| c.sampling.is_some()) {
                requests.insert("capital_question".into(), sampling_request("What is the capital of France?", 100));
            }
            if caps.as_ref().is_some_and(|c| c.elicitation.is_some()) {
                requests.insert(
                    "user_name".into(),
                    elicitation_request("What is your name?", "name", "string"),
                );
            }
            if caps.as_ref().is_some_and(|c| c.roots.is_some()) {
                requests.insert("client_roots".into(), roots_request());
            }
            if requests.is_empty() {
                return done("The client declared no capability this tool could use".into());
            }
            Ok(input_required(Value::Object(requests), None)?.into())
        }
        _ => Err(ErrorData::invalid_params(format!("Unknown tool: {name}"), None)),
    }
}

// ---------------------------------------------------------------------------
// The same tools on a Legacy session: real server-to-client requests.
// ---------------------------------------------------------------------------

/// Times a Legacy-era tool asks again for an answer it did not get (or could not use), as the
/// Modern tools re-ask with a fresh `input_required` round.
const LEGACY_ASKS: usize = 3;

/// Sends one input request (`{method, params}`, as in `inputRequests`) to the peer as a real
/// server-to-client request and returns its result as JSON.
async fn ask_peer(cx: &RequestContext<RoleServer>, request: &Value) -> Result<Value, String> {
    let params = request.get("params").cloned().unwrap_or_else(|| json!({}));
    let result = match request["method"].as_str() {
        Some("elicitation/create") => {
            let params: ElicitRequestParams =
                from_json(params).map_err(|e| e.message.to_string())?;
            serde_json::to_value(
                cx.peer.create_elicitation(params).await.map_err(|e| e.to_string())?,
            )
        }
        Some("sampling/createMessage") => {
            let params: CreateMessageRequestParams =
                from_json(params).map_err(|e| e.message.to_string())?;
            serde_json::to_value(cx.peer.create_message(params).await.map_err(|e| e.to_string())?)
        }
        Some("roots/list") => {
            serde_json::to_value(cx.peer.list_roots().await.map_err(|e| e.to_string())?)
        }
        other => return Err(format!("no such input request: {other:?}")),
    };
    result.map_err(|e| e.to_string())
}

/// The answers to `requests` (key → input request): those the call already carries in
/// `inputResponses` and `read` accepts are kept (a bridging gateway may pass a 2026-07-28
/// client's up-front answers along); the others are asked of the peer, all at once, again while
/// `read` rejects an answer, at most [`LEGACY_ASKS`] times.
async fn legacy_answers(
    cx: &RequestContext<RoleServer>,
    request: &CallToolRequestParams,
    requests: &[(&str, Value)],
    read: impl Fn(&InputResponses, &str) -> bool,
) -> Result<InputResponses, ErrorData> {
    let mut answers: InputResponses = request.input_responses.clone().unwrap_or_default();
    for _ in 0..LEGACY_ASKS {
        let missing: Vec<&(&str, Value)> =
            requests.iter().filter(|(key, _)| !read(&answers, key)).collect();
        if missing.is_empty() {
            return Ok(answers);
        }
        let asked = futures::future::join_all(missing.iter().map(|(_, r)| ask_peer(cx, r))).await;
        for ((key, _), answer) in missing.iter().zip(asked) {
            match answer {
                Ok(v) => answers.insert((*key).to_owned(), v),
                Err(e) => {
                    tracing::debug!("input request {key} failed: {e}");
                    answers.remove(*key)
                }
            };
        }
    }
    let missing: Vec<&str> =
        requests.iter().filter(|(key, _)| !read(&answers, key)).map(|(k, _)| *k).collect();
    if missing.is_empty() {
        return Ok(answers);
    }
    Err(ErrorData::invalid_params(format!("no usable answer to {}", missing.join(", ")), None))
}

/// Whether `key` holds a usable answer to the input request `request`.
fn usable(answers: &InputResponses, key: &str, request: &Value) -> bool {
    let answers = Some(answers);
    match request["method"].as_str() {
        Some("sampling/createMessage") => sampled(answers, key).is_some(),
        Some("roots/list") => roots(answers, key).is_some(),
        _ => {
            let field = request["params"]["requestedSchema"]["required"][0].as_str().unwrap_or("");
            accepted(answers, key).is_some_and(|c| c.contains_key(field))
        }
    }
}

/// The `test_input_required_result_*` tools on a Legacy session: the same questions as their
/// 2026-07-28 versions, as real server-to-client requests (which a gateway bridging a
/// 2026-07-28 client turns back into `input_required` rounds). There is no `requestState` of
/// the fixture's own here: the call stays open between rounds.
async fn legacy_input_tool(
    name: &str,
    request: &CallToolRequestParams,
    cx: &RequestContext<RoleServer>,
) -> Result<CallToolResponse, ErrorData> {
    let name_q = || ("user_name", elicitation_request("What is your name?", "name", "string"));
    let mut requests: Vec<(&str, Value)> = match name {
        "test_input_required_result_elicitation" | "test_streaming_elicitation" => vec![name_q()],
        "test_input_required_result_sampling" => {
            vec![("capital_question", sampling_request("What is the capital of France?", 100))]
        }
        "test_input_required_result_list_roots" => vec![("client_roots", roots_request())],
        "test_input_required_result_request_state"
        | "test_input_required_result_tampered_state" => {
            vec![("confirm", elicitation_request("Please confirm", "ok", "boolean"))]
        }
        "test_input_required_result_multiple_inputs" => vec![
            name_q(),
            ("greeting", sampling_request("Generate a greeting", 50)),
            ("client_roots", roots_request()),
        ],
        "test_input_required_result_multi_round" => {
            vec![("step1", elicitation_request("Step 1: What is your name?", "name", "string"))]
        }
        "test_input_required_result_capabilities" => {
            // A Legacy server cannot tell which of these the client will answer: it asks all
            // three at once and is content with any answer.
            let asks = [
                ("capital_question", sampling_request("What is the capital of France?", 100)),
                name_q(),
                ("client_roots", roots_request()),
            ];
            if request.input_responses.as_ref().is_some_and(|r| !r.is_empty()) {
                return done("Received the requested input".into());
            }
            let answered =
                futures::future::join_all(asks.iter().map(|(_, r)| ask_peer(cx, r))).await;
            return match answered.iter().filter(|a| a.is_ok()).count() {
                0 => done("The client answered none of the requests".into()),
                _ => done("Received the requested input".into()),
            };
        }
        _ => return Err(ErrorData::invalid_params(format!("Unknown tool: {name}"), None)),
    };
    let check = requests.clone();
    let read = move |a: &InputResponses, key: &str| {
        check.iter().find(|(k, _)| *k == key).is_some_and(|(_, r)| usable(a, key, r))
    };
    let answers = legacy_answers(cx, request, &requests, &read).await?;
    let a = Some(&answers);
    match name {
        "test_input_required_result_sampling" => {
            done(format!("LLM response: {}", sampled(a, "capital_question").unwrap_or_default()))
        }
        "test_input_required_result_list_roots" => done(format!(
            "Client roots: {}",
            roots(a, "client_roots").unwrap_or_default().join(", ")
        )),
        "test_input_required_result_request_state"
        | "test_input_required_result_tampered_state" => {
            let ok = accepted(a, "confirm").and_then(|c| c.get("ok")).and_then(Value::as_bool);
            done(format!("state-ok: confirmed in the open call, ok={}", ok.unwrap_or(false)))
        }
        "test_input_required_result_multiple_inputs" => done(format!(
            "Hello, {}! Greeting: {}. Roots: {}",
            accepted_str(a, "user_name", "name").unwrap_or_default(),
            sampled(a, "greeting").unwrap_or_default(),
            roots(a, "client_roots").unwrap_or_default().join(", ")
        )),
        "test_input_required_result_multi_round" => {
            let user = accepted_str(a, "step1", "name").unwrap_or_default();
            requests = vec![(
                "step2",
                elicitation_request("Step 2: What is your favorite color?", "color", "string"),
            )];
            let check = requests.clone();
            let read = move |a: &InputResponses, key: &str| {
                check.iter().find(|(k, _)| *k == key).is_some_and(|(_, r)| usable(a, key, r))
            };
            let answers = legacy_answers(cx, request, &requests, &read).await?;
            let color = accepted_str(Some(&answers), "step2", "color").unwrap_or_default();
            done(format!("Hello, {user}! Your favorite color is {color}."))
        }
        _ => done(format!("Hello, {}!", accepted_str(a, "user_name", "name").unwrap_or_default())),
    }
}

// ---------------------------------------------------------------------------
// Resources, prompts, completion.
// ---------------------------------------------------------------------------

pub fn resources() -> Result<Vec<Resource>, ErrorData> {
    from_json(json!([
        {
            "uri": "test://static-text",
            "name": "Static Text Resource",
            "description": "A static text resource for testing",
            "mimeType": "text/plain"
        },
        {
            "uri": "test://static-binary",
            "name": "Static Binary Resource",
            "description": "A static binary resource (a PNG image) for testing",
            "mimeType": "image/png"
        },
        {
            "uri": "test://watched-resource",
            "name": "Watched Resource",
            "description": "A resource clients may subscribe to",
            "mimeType": "text/plain"
        }
    ]))
}

pub fn resource_templates() -> Result<Vec<ResourceTemplate>, ErrorData> {
    from_json(json!([{
        "uriTemplate": "test://template/{id}/data",
        "name": "Template Resource",
        "description": "A resource template with an id parameter",
        "mimeType": "application/json"
    }]))
}

pub fn read_resource(uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let contents = match uri {
        "test://static-text" => {
            text_contents(uri, "text/plain", "This is the content of the static text resource.")
        }
        "test://watched-resource" => text_contents(uri, "text/plain", "Watched resource content."),
        "test://static-binary" => ResourceContents::BlobResourceContents {
            uri: uri.into(),
            mime_type: Some("image/png".into()),
            blob: TEST_IMAGE.into(),
            meta: None,
        },
        _ => match uri.strip_prefix("test://template/").and_then(|s| s.strip_suffix("/data")) {
            Some(id) if !id.is_empty() && !id.contains('/') => {
                let body =
                    json!({ "id": id, "templateTest": true, "data": format!("Data for ID: {id}") });
                text_contents(uri, "application/json", &body.to_string())
            }
            // rmcp turns this code into -32602 for 2026-07-28 peers (SEP-2164).
            _ => {
                return Err(ErrorData::resource_not_found(
                    "Resource not found",
                    Some(json!({ "uri": uri })),
                ));
            }
        },
    };
    Ok(ReadResourceResult::new(vec![contents]))
}

pub fn prompts() -> Result<Vec<Prompt>, ErrorData> {
    from_json(json!([
        { "name": "test_simple_prompt", "description": "A simple prompt without arguments" },
        {
            "name": "test_prompt_with_arguments",
            "description": "A prompt with required arguments",
            "arguments": [
                { "name": "arg1", "description": "First test argument", "required": true },
                { "name": "arg2", "description": "Second test argument", "required": true }
            ]
        },
        {
            "name": "test_prompt_with_embedded_resource",
            "description": "A prompt embedding a resource",
            "arguments": [
                { "name": "resourceUri", "description": "URI of the resource to embed", "required": true }
            ]
        },
        { "name": "test_prompt_with_image", "description": "A prompt with image content" },
        { "name": "test_input_required_result_prompt", "description": "A prompt that asks for context via input_required" }
    ]))
}

pub async fn get_prompt(
    fixture: &Fixture,
    request: GetPromptRequestParams,
    cx: &RequestContext<RoleServer>,
) -> Result<GetPromptResponse, ErrorData> {
    let args = request.arguments.clone().unwrap_or_default();
    let arg = |name: &str| args.get(name).and_then(Value::as_str).unwrap_or("").to_owned();
    let messages = match request.name.as_str() {
        "test_simple_prompt" => json!([
            { "role": "user", "content": { "type": "text", "text": "This is a simple prompt for testing." } }
        ]),
        "test_prompt_with_arguments" => json!([{
            "role": "user",
            "content": {
                "type": "text",
                "text": format!("Prompt with arguments: arg1='{}', arg2='{}'", arg("arg1"), arg("arg2"))
            }
        }]),
        "test_prompt_with_embedded_resource" => {
            let uri = match arg("resourceUri") {
                u if u.is_empty() => "test://static-text".to_owned(),
                u => u,
            };
            json!([
                {
                    "role": "user",
                    "content": {
                        "type": "resource",
                        "resource": { "uri": uri, "mimeType": "text/plain", "text": "Embedded resource content for testing." }
                    }
                },
                { "role": "user", "content": { "type": "text", "text": "Please process the embedded resource above." } }
            ])
        }
        "test_prompt_with_image" => json!([
            { "role": "user", "content": { "type": "image", "data": TEST_IMAGE, "mimeType": "image/png" } },
            { "role": "user", "content": { "type": "text", "text": "Please analyze the image above." } }
        ]),
        "test_input_required_result_prompt" => {
            let ask =
                || elicitation_request("What context should the prompt use?", "context", "string");
            let mut given =
                accepted_str(request.input_responses.as_ref(), "user_context", "context");
            // On a Legacy session the same question is a real elicitation request.
            if given.is_none() && !is_modern(cx) {
                for _ in 0..LEGACY_ASKS {
                    let answer = ask_peer(cx, &ask()).await.map_err(|e| {
                        ErrorData::invalid_params(format!("elicitation failed: {e}"), None)
                    });
                    let answers: InputResponses =
                        [("user_context".to_owned(), answer?)].into_iter().collect();
                    given = accepted_str(Some(&answers), "user_context", "context");
                    if given.is_some() {
                        break;
                    }
                }
            }
            match given {
                Some(context) => json!([{
                    "role": "user",
                    "content": { "type": "text", "text": format!("Prompt using context: {context}") }
                }]),
                None => {
                    return Ok(input_required(json!({ "user_context": ask() }), None)?.into());
                }
            }
        }
        name if fixture.shared.has_added_prompt(name) => json!([
            { "role": "user", "content": { "type": "text", "text": "This prompt was added at runtime." } }
        ]),
        name => {
            return Err(ErrorData::invalid_params(
                format!("Unknown prompt: {name}"),
                Some(json!({ "name": name })),
            ));
        }
    };
    // `resultType` is required on 2026-07-28; rmcp strips it for older peers.
    let result =
        json!({ "resultType": "complete", "description": request.name, "messages": messages });
    Ok(from_json::<GetPromptResult>(result)?.into())
}

pub fn complete(request: &CompleteRequestParams) -> Result<CompleteResult, ErrorData> {
    let candidates: &[&str] = match request.argument.name.as_str() {
        "arg1" | "arg2" => &["paris", "park", "party", "test", "testValue1"],
        "id" => &["1", "2", "3", "123"],
        "resourceUri" => &["test://static-text", "test://static-binary"],
        _ => &[],
    };
    let prefix = request.argument.value.as_str();
    let values: Vec<String> =
        candidates.iter().filter(|c| c.starts_with(prefix)).map(|c| (*c).to_owned()).collect();
    from_json(json!({
        "resultType": "complete",
        "completion": { "values": values, "total": values.len(), "hasMore": false }
    }))
}
