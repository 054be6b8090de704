//! JSON-RPC 2.0 envelopes with raw bodies.
//!
//! The gateway reads only the envelope (`id`, `method`) and keeps `params`, `result` and `error.data`
//! as raw JSON, so relaying a message decodes and re-encodes no more than it must.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// JSON-RPC error codes used by the gateway.
pub mod code {
    /// Invalid JSON was received.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON sent is not a valid request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// The method does not exist or is not available.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Invalid method parameters.
    pub const INVALID_PARAMS: i64 = -32602;
    /// Internal error.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// The resource does not exist (SEP-2164).
    pub const RESOURCE_NOT_FOUND: i64 = -32002;
    /// 2026-07-28: HTTP headers disagree with the body.
    pub const HEADER_MISMATCH: i64 = -32020;
    /// 2026-07-28: the request needs a client capability the client did not declare.
    pub const MISSING_REQUIRED_CLIENT_CAPABILITY: i64 = -32021;
    /// 2026-07-28: the requested protocol version is not supported.
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
    /// Gateway: the backend that serves this item is unavailable.
    pub const BACKEND_UNAVAILABLE: i64 = -32001;
    /// Gateway: the backend did not answer in time.
    pub const BACKEND_TIMEOUT: i64 = -32003;
    /// Gateway: the caller's credentials were refused on the way to the backend (e.g. a token
    /// exchange answered `invalid_grant`); the client must authenticate again (HTTP 401).
    pub const REAUTHENTICATE: i64 = -32004;
    /// Gateway: the caller's upstream identity provider cannot refresh their token right now;
    /// the caller stays logged in and should retry (HTTP 503).
    pub const CREDENTIALS_UNAVAILABLE: i64 = -32005;
    /// Gateway: the caller is authenticated but may not reach the backend (e.g. no AWS role maps
    /// to its claims, or STS refused it the role); logging in again would not help (HTTP 403).
    pub const ACCESS_DENIED: i64 = -32006;
    /// Gateway: a `rateLimiting` bucket is empty; `data.retryAfterMs` says when to retry (HTTP
    /// 429 with `Retry-After`). ToolHive's code, outside the reserved range like HTTP 429.
    pub const RATE_LIMITED: i64 = 429;
}

/// A request id: a number or a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    /// Numeric id.
    Number(i64),
    /// String id.
    String(String),
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Number(n) => write!(f, "{n}"),
            Id::String(s) => write!(f, "{s:?}"),
        }
    }
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorObject {
    /// Error code.
    pub code: i64,
    /// Human-readable message.
    pub message: String,
    /// Extra data, kept raw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
}

impl ErrorObject {
    /// An error without data.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), data: None }
    }

    /// An error with structured data.
    pub fn with_data(code: i64, message: impl Into<String>, data: &serde_json::Value) -> Self {
        let data = serde_json::value::to_raw_value(data).ok();
        Self { code, message: message.into(), data }
    }
}

/// Any JSON-RPC message, classified by its envelope.
#[derive(Debug, Clone)]
pub enum Message {
    /// Has `method` and `id`.
    Request(Request),
    /// Has `method`, no `id`.
    Notification(Notification),
    /// Has `id` and `result`.
    Response(Response),
    /// Has `error` (and usually `id`).
    Error(ErrorResponse),
}

/// A request.
#[derive(Debug, Clone, Serialize)]
pub struct Request {
    /// Always "2.0".
    pub jsonrpc: V2,
    /// Request id.
    pub id: Id,
    /// Method name.
    pub method: String,
    /// Parameters, raw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<Box<RawValue>>,
}

/// A notification.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    /// Always "2.0".
    pub jsonrpc: V2,
    /// Method name.
    pub method: String,
    /// Parameters, raw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<Box<RawValue>>,
}

/// A successful response.
#[derive(Debug, Clone, Serialize)]
pub struct Response {
    /// Always "2.0".
    pub jsonrpc: V2,
    /// The id of the request answered.
    pub id: Id,
    /// The result, raw.
    pub result: Box<RawValue>,
}

/// An error response.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorResponse {
    /// Always "2.0".
    pub jsonrpc: V2,
    /// The id of the request answered; `null` when it could not be read.
    pub id: Option<Id>,
    /// The error.
    pub error: ErrorObject,
}

/// The `"jsonrpc": "2.0"` marker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct V2;

impl Serialize for V2 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("2.0")
    }
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON at all.
    #[error("parse error: {0}")]
    Json(String),
    /// JSON, but not a JSON-RPC 2.0 message.
    #[error("invalid request: {message}")]
    Invalid {
        /// The id, if one could be read, so the error can echo it.
        id: Option<Id>,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
struct Envelope {
    jsonrpc: Option<String>,
    #[serde(default)]
    id: Option<Box<RawValue>>,
    method: Option<String>,
    #[serde(default)]
    params: Option<Box<RawValue>>,
    #[serde(default)]
    result: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<ErrorObject>,
}

impl Message {
    /// Reads one message from JSON text.
    pub fn parse(text: &[u8]) -> Result<Message, ParseError> {
        let env: Envelope =
            serde_json::from_slice(text).map_err(|e| classify_serde_error(text, e))?;
        let id = match &env.id {
            None => None,
            Some(raw) if raw.get() == "null" => None,
            Some(raw) => Some(serde_json::from_str::<Id>(raw.get()).map_err(|_| {
                ParseError::Invalid { id: None, message: "id must be a string or a number".into() }
            })?),
        };
        if env.jsonrpc.as_deref() != Some("2.0") {
            return Err(ParseError::Invalid { id, message: "jsonrpc must be \"2.0\"".into() });
        }
        match (env.method, id, env.result, env.error) {
            (Some(method), Some(id), None, None) => {
                Ok(Message::Request(Request { jsonrpc: V2, id, method, params: env.params }))
            }
            (Some(method), None, None, None) => {
                Ok(Message::Notification(Notification { jsonrpc: V2, method, params: env.params }))
            }
            (None, Some(id), Some(result), None) => {
                Ok(Message::Response(Response { jsonrpc: V2, id, result }))
            }
            (None, id, None, Some(error)) => {
                Ok(Message::Error(ErrorResponse { jsonrpc: V2, id, error }))
            }
            (_, id, _, _) => Err(ParseError::Invalid {
                id,
                message: "not a request, notification or response".into(),
            }),
        }
    }

    /// Serializes the message to JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let out = match self {
            Message::Request(m) => serde_json::to_vec(m),
            Message::Notification(m) => serde_json::to_vec(m),
            Message::Response(m) => serde_json::to_vec(m),
            Message::Error(m) => serde_json::to_vec(m),
        };
        // Serializing these plain structs of strings, numbers and raw JSON cannot fail.
        out.unwrap_or_default()
    }

    /// The id, for requests and responses.
    pub fn id(&self) -> Option<&Id> {
        match self {
            Message::Request(r) => Some(&r.id),
            Message::Response(r) => Some(&r.id),
            Message::Error(e) => e.id.as_ref(),
            Message::Notification(_) => None,
        }
    }
}

fn classify_serde_error(text: &[u8], e: serde_json::Error) -> ParseError {
    if e.is_syntax() || e.is_eof() {
        return ParseError::Json(e.to_string());
    }
    // Valid JSON of the wrong shape: still try to echo the id.
    let id = serde_json::from_slice::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("id").cloned())
        .and_then(|v| serde_json::from_value::<Id>(v).ok());
    ParseError::Invalid { id, message: e.to_string() }
}

impl Response {
    /// A response with the given raw result.
    pub fn new(id: Id, result: Box<RawValue>) -> Self {
        Self { jsonrpc: V2, id, result }
    }
}

impl ErrorResponse {
    /// An error response.
    pub fn new(id: Option<Id>, error: ErrorObject) -> Self {
        Self { jsonrpc: V2, id, error }
    }
}

impl Request {
    /// A request.
    pub fn new(id: Id, method: impl Into<String>, params: Option<Box<RawValue>>) -> Self {
        Self { jsonrpc: V2, id, method: method.into(), params }
    }
}

impl Notification {
    /// A notification.
    pub fn new(method: impl Into<String>, params: Option<Box<RawValue>>) -> Self {
        Self { jsonrpc: V2, method: method.into(), params }
    }
}

/// Serializes a value into raw JSON; for the gateway's own small result objects.
pub fn raw(value: &impl Serialize) -> Box<RawValue> {
    serde_json::value::to_raw_value(value)
        .unwrap_or_else(|_| RawValue::from_string("null".into()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_messages() {
        let m = Message::parse(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).unwrap();
        assert!(
            matches!(m, Message::Request(ref r) if r.id == Id::Number(1) && r.method == "ping")
        );
        let m =
            Message::parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert!(matches!(m, Message::Notification(_)));
        let m = Message::parse(br#"{"jsonrpc":"2.0","id":"a","result":{"x":[1,2]}}"#).unwrap();
        assert!(matches!(m, Message::Response(ref r) if r.result.get() == r#"{"x":[1,2]}"#));
        let m = Message::parse(br#"{"jsonrpc":"2.0","id":3,"error":{"code":-1,"message":"m"}}"#)
            .unwrap();
        assert!(matches!(m, Message::Error(ref e) if e.error.code == -1));
    }

    #[test]
    fn rejects_bad_messages() {
        assert!(matches!(Message::parse(b"{nope"), Err(ParseError::Json(_))));
        assert!(matches!(
            Message::parse(br#"{"jsonrpc":"1.0","id":7,"method":"x"}"#),
            Err(ParseError::Invalid { id: Some(Id::Number(7)), .. })
        ));
        assert!(matches!(
            Message::parse(br#"{"jsonrpc":"2.0","id":7,"method":5}"#),
            Err(ParseError::Invalid { id: Some(Id::Number(7)), .. })
        ));
        assert!(matches!(Message::parse(br#"[1]"#), Err(ParseError::Invalid { .. })));
    }

    #[test]
    fn round_trips_raw_params() {
        let text = br#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"a","arguments":{"b":[1,{"c":null}]}}}"#;
        let m = Message::parse(text).unwrap();
        assert_eq!(m.to_bytes(), text.to_vec());
    }
}
