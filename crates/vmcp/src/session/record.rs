//! [`SessionRecord`]: what another replica needs to continue a Legacy client session, in the
//! compact, versioned JSON a shared store keeps.
//!
//! What is in it: the binding (issuer and subject: who may use the session, never a token), the
//! negotiated protocol version, the client's capabilities and `clientInfo`, its resource
//! subscriptions, its log level and when it was created.
//!
//! What is not:
//! - The session id. The record is stored under a hash of the id ([`super::store::StoreKey`]);
//!   the id is a bearer handle, so whoever can read the store must not be able to use a record
//!   to take over the session.
//! - Per-backend session ids. A replica that continues a session opens its own backend sessions,
//!   as the bound principal, on first use (the pool does this for any new client session key).
//!   Resuming another replica's backend sessions would put two processes on one backend
//!   session: its GET stream (notifications, server-to-client requests) would reach only one of
//!   them, its teardown by one would break the other, and stdio and SSE backends' sessions are
//!   process-local and cannot be resumed at all. Re-opening costs one `initialize` per backend
//!   and replica and is correct for every transport.
//! - Anything in flight: relays awaiting the client's answer, running requests, GET streams.
//!
//! Versioning: `v` is [`RECORD_VERSION`]. Fields added later must have defaults, so older
//! records still read (unknown fields are ignored, so newer records read too); a change older
//! replicas could misread bumps `v`, and a record with a newer `v` is refused
//! ([`RecordError::Version`]) rather than guessed at.

use serde::{Deserialize, Serialize};

use crate::auth::Binding;

/// The record layout this build writes and reads.
pub const RECORD_VERSION: u32 = 1;

/// Largest encoded record accepted (64 KiB): client capabilities and `clientInfo` are client
/// input, and a shared store holds one record per session. Real clients send well under 1 KiB.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// Why a record could not be written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Larger than [`MAX_RECORD_BYTES`] once encoded.
    #[error("session record of {0} bytes exceeds the limit of {MAX_RECORD_BYTES} bytes")]
    TooLarge(usize),
    /// Written by a newer vmcp with a layout this one does not know.
    #[error("session record version {0} is newer than this vmcp understands ({RECORD_VERSION})")]
    Version(u32),
    /// Not a session record.
    #[error("session record is malformed: {0}")]
    Malformed(String),
}

/// The shared form of one Legacy client session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Layout version ([`RECORD_VERSION`]).
    #[serde(rename = "v")]
    pub version: u32,
    /// Who opened the session.
    #[serde(rename = "b", with = "binding_form")]
    pub binding: Binding,
    /// Negotiated protocol version.
    #[serde(rename = "pv")]
    pub protocol_version: String,
    /// The client's declared capabilities.
    #[serde(rename = "cc", default)]
    pub client_capabilities: serde_json::Value,
    /// The client's `clientInfo`.
    #[serde(rename = "ci", default)]
    pub client_info: serde_json::Value,
    /// Resource URIs the session subscribed to, sorted.
    #[serde(rename = "s", default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<String>,
    /// The level set with `logging/setLevel`, if any.
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// When the session was created (seconds since the Unix epoch).
    #[serde(rename = "t")]
    pub created_at: u64,
}

impl SessionRecord {
    /// Compact JSON, refused beyond [`MAX_RECORD_BYTES`].
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let bytes = serde_json::to_vec(self).map_err(|e| RecordError::Malformed(e.to_string()))?;
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        Ok(bytes)
    }

    /// Reads what [`SessionRecord::encode`] wrote (this version or an older one).
    pub fn decode(bytes: &[u8]) -> Result<SessionRecord, RecordError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        #[derive(Deserialize)]
        struct Version {
            v: u32,
        }
        let v: Version =
            serde_json::from_slice(bytes).map_err(|e| RecordError::Malformed(e.to_string()))?;
        if v.v > RECORD_VERSION {
            return Err(RecordError::Version(v.v));
        }
        serde_json::from_slice(bytes).map_err(|e| RecordError::Malformed(e.to_string()))
    }
}

/// The binding as stored: `null` for anonymous, `{"i": issuer, "s": subject}` for a principal.
pub(super) mod binding_form {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::auth::Binding;

    #[derive(Serialize, Deserialize)]
    struct Principal {
        i: String,
        s: String,
    }

    pub fn serialize<S: Serializer>(b: &Binding, s: S) -> Result<S::Ok, S::Error> {
        match b {
            Binding::Anonymous => None::<Principal>.serialize(s),
            Binding::Principal { issuer, subject } => {
                Some(Principal { i: issuer.clone(), s: subject.clone() }).serialize(s)
            }
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Binding, D::Error> {
        Ok(match Option::<Principal>::deserialize(d)? {
            None => Binding::Anonymous,
            Some(p) => Binding::Principal { issuer: p.i, subject: p.s },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> SessionRecord {
        SessionRecord {
            version: RECORD_VERSION,
            binding: Binding::Principal { issuer: "https://idp".into(), subject: "alice".into() },
            protocol_version: "2025-11-25".into(),
            client_capabilities: serde_json::json!({ "sampling": {} }),
            client_info: serde_json::json!({ "name": "c", "version": "1" }),
            subscriptions: vec!["test://a".into(), "test://b".into()],
            log_level: Some("warning".into()),
            created_at: 1_700_000_000,
        }
    }

    #[test]
    fn round_trips_both_bindings() {
        let r = record();
        assert_eq!(SessionRecord::decode(&r.encode().unwrap()).unwrap(), r);
        let anon = SessionRecord { binding: Binding::Anonymous, log_level: None, ..record() };
        assert_eq!(SessionRecord::decode(&anon.encode().unwrap()).unwrap(), anon);
    }

    #[test]
    fn holds_no_token_and_no_session_id() {
        let json: serde_json::Value = serde_json::from_slice(&record().encode().unwrap()).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 8, "{keys:?}");
        for k in keys {
            assert!(["v", "b", "pv", "cc", "ci", "s", "l", "t"].contains(&k), "unexpected {k}");
        }
        assert_eq!(json["b"], serde_json::json!({ "i": "https://idp", "s": "alice" }));
        assert!(json["b"].as_object().unwrap().len() == 2, "a binding is issuer and subject only");
    }

    #[test]
    fn is_compact() {
        let bytes = record().encode().unwrap();
        assert!(!bytes.contains(&b'\n') && !bytes.windows(2).any(|w| w == b": "));
        assert!(bytes.len() < 250, "{} bytes", bytes.len());
    }

    #[test]
    fn newer_versions_and_garbage_are_refused_older_fields_default() {
        let mut json = serde_json::to_value(record()).unwrap();
        json["v"] = 2.into();
        let bytes = serde_json::to_vec(&json).unwrap();
        assert_eq!(SessionRecord::decode(&bytes), Err(RecordError::Version(2)));
        assert!(matches!(SessionRecord::decode(b"[1]"), Err(RecordError::Malformed(_))));
        // A minimal v1 record (no subscriptions, level, capabilities) reads with defaults, and
        // fields it does not know are ignored.
        let minimal = br#"{"v":1,"b":null,"pv":"2025-06-18","t":5,"future":true}"#;
        let r = SessionRecord::decode(minimal).unwrap();
        assert_eq!((r.binding, r.subscriptions.len(), r.log_level), (Binding::Anonymous, 0, None));
    }

    #[test]
    fn oversize_records_are_refused() {
        let big = SessionRecord {
            client_info: serde_json::json!({ "name": "x".repeat(MAX_RECORD_BYTES) }),
            ..record()
        };
        assert!(matches!(big.encode(), Err(RecordError::TooLarge(n)) if n > MAX_RECORD_BYTES));
    }
}
