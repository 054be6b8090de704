//! Per-request `_meta` of the 2026-07-28 revision (SEP-2575): reading and checking the protocol
//! version, client capabilities, client info and log level a stateless request carries.

use serde::Deserialize;
use serde_json::value::RawValue;

/// `_meta` key: protocol version of this request.
pub const KEY_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key: the client's capabilities.
pub const KEY_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key: the client's name and version.
pub const KEY_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// `_meta` key: minimum log level the client wants for this request.
pub const KEY_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
/// `_meta` key on results: the server's name and version.
pub const KEY_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// `_meta` key on listen-stream notifications.
pub const KEY_SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// The `_meta` fields of a stateless request that the gateway reads. Others are relayed untouched.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// `io.modelcontextprotocol/protocolVersion`.
    pub protocol_version: Option<String>,
    /// `io.modelcontextprotocol/clientCapabilities`, when it is an object.
    pub client_capabilities: Option<serde_json::Map<String, serde_json::Value>>,
    /// `io.modelcontextprotocol/clientInfo`.
    pub client_info: Option<serde_json::Value>,
    /// `io.modelcontextprotocol/logLevel`.
    pub log_level: Option<String>,
    /// `progressToken`.
    pub progress_token: Option<serde_json::Value>,
    /// The whole `_meta` object, as sent.
    pub raw: Option<serde_json::Map<String, serde_json::Value>>,
}

impl RequestMeta {
    /// Reads `params._meta` from raw params (absent or malformed `_meta` gives an empty value).
    pub fn from_params(params: Option<&RawValue>) -> RequestMeta {
        #[derive(Deserialize)]
        struct P {
            #[serde(rename = "_meta")]
            meta: Option<serde_json::Map<String, serde_json::Value>>,
        }
        let Some(meta) =
            params.and_then(|p| serde_json::from_str::<P>(p.get()).ok()).and_then(|p| p.meta)
        else {
            return RequestMeta::default();
        };
        RequestMeta {
            protocol_version: meta
                .get(KEY_PROTOCOL_VERSION)
                .and_then(|v| v.as_str())
                .map(Into::into),
            client_capabilities: meta
                .get(KEY_CLIENT_CAPABILITIES)
                .and_then(|v| v.as_object())
                .cloned(),
            client_info: meta.get(KEY_CLIENT_INFO).cloned(),
            log_level: meta.get(KEY_LOG_LEVEL).and_then(|v| v.as_str()).map(Into::into),
            progress_token: meta.get("progressToken").cloned(),
            raw: Some(meta),
        }
    }

    /// Required keys that are missing or malformed for a 2026-07-28 request.
    pub fn missing_required(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if self.protocol_version.is_none() {
            missing.push(KEY_PROTOCOL_VERSION);
        }
        if self.client_capabilities.is_none() {
            missing.push(KEY_CLIENT_CAPABILITIES);
        }
        missing
    }

    /// Whether the client declared the named capability (e.g. `sampling`, `elicitation`, `roots`).
    pub fn has_capability(&self, name: &str) -> bool {
        self.client_capabilities.as_ref().is_some_and(|c| c.contains_key(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_meta() {
        let p = RawValue::from_string(
            r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"sampling":{}},"progressToken":5}}"#.into(),
        )
        .unwrap();
        let m = RequestMeta::from_params(Some(&p));
        assert_eq!(m.protocol_version.as_deref(), Some("2026-07-28"));
        assert!(m.has_capability("sampling"));
        assert!(!m.has_capability("elicitation"));
        assert_eq!(m.progress_token, Some(serde_json::json!(5)));
        assert!(m.missing_required().is_empty());
        assert_eq!(RequestMeta::from_params(None).missing_required().len(), 2);
    }
}
