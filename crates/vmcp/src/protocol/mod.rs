//! The MCP wire protocol as the gateway sees it: JSON-RPC envelopes, the two protocol eras,
//! per-request `_meta`, the standard HTTP headers and the spec's error shapes.
//!
//! Invariant: nothing here performs I/O or knows about backends or sessions; it only reads and
//! writes messages.

pub mod headers;
pub mod jsonrpc;
pub mod meta;
pub mod params;

pub use jsonrpc::{ErrorObject, ErrorResponse, Id, Message, Notification, Request, Response};

/// `MCP-Protocol-Version` header.
pub const HEADER_PROTOCOL_VERSION: &str = "mcp-protocol-version";
/// `Mcp-Session-Id` header (Legacy era).
pub const HEADER_SESSION_ID: &str = "mcp-session-id";
/// `Mcp-Method` header (2026-07-28).
pub const HEADER_METHOD: &str = "mcp-method";
/// `Mcp-Name` header (2026-07-28).
pub const HEADER_NAME: &str = "mcp-name";
/// `Last-Event-ID` header.
pub const HEADER_LAST_EVENT_ID: &str = "last-event-id";

/// The stateless revision.
pub const MODERN_VERSION: &str = "2026-07-28";
/// The newest revision with `initialize` and sessions.
pub const LATEST_LEGACY_VERSION: &str = "2025-11-25";
/// Revisions with `initialize`, newest first. A client asking for another gets the newest.
pub const LEGACY_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// Every revision the gateway serves, newest first.
pub const SUPPORTED_VERSIONS: &[&str] =
    &["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// The two protocol eras, which differ in lifecycle (sessions vs stateless requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Era {
    /// 2025-11-25 and older: `initialize`, `Mcp-Session-Id`, server-to-client requests.
    Legacy,
    /// 2026-07-28: stateless requests carrying `_meta`, `server/discover`, multi-round-trip requests.
    Modern,
}

impl Era {
    /// The era a protocol version belongs to.
    pub fn of(version: &str) -> Era {
        if version >= MODERN_VERSION { Era::Modern } else { Era::Legacy }
    }
}

/// The legacy version to answer an `initialize` asking for `requested`.
pub fn negotiate_legacy(requested: &str) -> &'static str {
    LEGACY_VERSIONS.iter().copied().find(|v| *v == requested).unwrap_or(LATEST_LEGACY_VERSION)
}

/// Methods removed in 2026-07-28; a Modern request for them is "method not found".
pub const REMOVED_IN_MODERN: &[&str] = &[
    "initialize",
    "ping",
    "logging/setLevel",
    "resources/subscribe",
    "resources/unsubscribe",
    "notifications/initialized",
];
