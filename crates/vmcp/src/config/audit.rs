//! `audit`: one structured JSON event per MCP operation (see `crate::audit`).
//!
//! The keys, meanings and defaults are ToolHive's (`pkg/audit/config.go`): `includeRequestData`
//! and `includeResponseData` off, `detectApplicationErrors` on, `maxDataSize` 1024 bytes (0 means
//! the default), `maxDelegationDepth` 10, events to standard output unless `logFile` names a
//! file, every event type unless `eventTypes` lists some, `excludeEventTypes` winning over it.
//!
//! `enabled`: ToolHive's operator writes the block only when `enabled: true`, and its standalone
//! `vmcp` audits whenever the block is present. vmcp audits when the block is present and
//! `enabled` is not `false` (a warning says so when it is), or when `serve --enable-audit` is
//! given.
//!
//! Invariant: an `AuditConfig` that leaves `load` names only known event types and has usable
//! sizes.

use std::path::PathBuf;

use serde::Deserialize;

use super::validate::Finding;

/// Default `maxDataSize` (ToolHive's): 1 KiB of request or response data per event.
pub const DEFAULT_MAX_DATA_SIZE: usize = 1024;
/// Default `maxDelegationDepth` (ToolHive's): `act` hops recorded per event.
pub const DEFAULT_MAX_DELEGATION_DEPTH: usize = 10;
/// The component `--enable-audit` sets (ToolHive's `vmcp serve --enable-audit`).
pub const CLI_COMPONENT: &str = "vmcp-server";

/// Every event type ToolHive accepts in `eventTypes` and `excludeEventTypes`.
pub const EVENT_TYPES: &[&str] = &[
    "mcp_initialize",
    "mcp_tool_call",
    "mcp_tools_list",
    "mcp_resource_read",
    "mcp_resources_list",
    "mcp_prompt_get",
    "mcp_prompts_list",
    "mcp_notification",
    "mcp_ping",
    "mcp_logging",
    "mcp_completion",
    "mcp_roots_list_changed",
    "vmcp_workflow_started",
    "vmcp_workflow_completed",
    "vmcp_workflow_failed",
    "vmcp_workflow_timed_out",
    "vmcp_workflow_step_started",
    "vmcp_workflow_step_completed",
    "vmcp_workflow_step_failed",
    "vmcp_workflow_step_skipped",
    "mcp_request",
    "http_request",
];

/// `audit`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditConfig {
    /// Whether events are written; absent means yes when the block is present (see the module
    /// docs).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The `component` of every event; default: the gateway's `name`.
    #[serde(default)]
    pub component: Option<String>,
    /// Event types to write; empty means all.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Event types never written (wins over `eventTypes`).
    #[serde(default)]
    pub exclude_event_types: Vec<String>,
    /// Adds the request (method and params, secrets redacted, cut to `maxDataSize`) as
    /// `data.request`.
    #[serde(default)]
    pub include_request_data: bool,
    /// Adds the result or error (secrets redacted, cut to `maxDataSize`) as `data.response`.
    #[serde(default)]
    pub include_response_data: bool,
    /// Whether a JSON-RPC error answered with HTTP 200 is `application_error` (default) rather
    /// than `success`.
    #[serde(default)]
    pub detect_application_errors: Option<bool>,
    /// Largest `data.request` / `data.response`, in bytes of JSON; 0 means the default.
    #[serde(default)]
    pub max_data_size: Option<i64>,
    /// Most RFC 8693 `act` hops recorded in `delegation`.
    #[serde(default)]
    pub max_delegation_depth: Option<i64>,
    /// File the events are appended to (created with mode 0600); empty or absent: standard
    /// output.
    #[serde(default)]
    pub log_file: Option<PathBuf>,
}

impl AuditConfig {
    /// What `--enable-audit` turns on when the file has no `audit` block: ToolHive's defaults,
    /// component `vmcp-server`.
    pub fn cli_default() -> AuditConfig {
        AuditConfig {
            enabled: Some(true),
            component: Some(CLI_COMPONENT.to_owned()),
            ..AuditConfig::default()
        }
    }

    /// Whether events are written.
    pub fn is_enabled(&self) -> bool {
        self.enabled != Some(false)
    }

    /// `detectApplicationErrors`, defaulted.
    pub fn detect_application_errors(&self) -> bool {
        self.detect_application_errors.unwrap_or(true)
    }

    /// `maxDataSize`, defaulted (validated non-negative at load).
    pub fn max_data_size(&self) -> usize {
        match self.max_data_size {
            Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
            _ => DEFAULT_MAX_DATA_SIZE,
        }
    }

    /// `maxDelegationDepth`, defaulted (validated positive at load).
    pub fn max_delegation_depth(&self) -> usize {
        match self.max_delegation_depth {
            Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
            _ => DEFAULT_MAX_DELEGATION_DEPTH,
        }
    }

    /// The file events go to; `None` for standard output.
    pub fn log_file(&self) -> Option<&std::path::Path> {
        self.log_file.as_deref().filter(|p| !p.as_os_str().is_empty())
    }

    /// Whether events of `event_type` are written (ToolHive's `ShouldAuditEvent`).
    pub fn wants(&self, event_type: &str) -> bool {
        if self.exclude_event_types.iter().any(|t| t == event_type) {
            return false;
        }
        self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type)
    }
}

/// Checks the block.
pub(crate) fn check(audit: &AuditConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    for (key, list) in
        [("eventTypes", &audit.event_types), ("excludeEventTypes", &audit.exclude_event_types)]
    {
        for (i, t) in list.iter().enumerate() {
            if !EVENT_TYPES.contains(&t.as_str()) {
                let hint = match super::load::suggest(t, EVENT_TYPES.iter().copied()) {
                    Some(s) => format!("; did you mean {s:?}?"),
                    None => format!("; known types: {}", EVENT_TYPES.join(", ")),
                };
                out.push(Finding {
                    path: format!("audit.{key}[{i}]"),
                    message: format!("unknown event type {t:?}{hint}"),
                });
            }
        }
    }
    if audit.max_data_size.is_some_and(|n| n < 0) {
        out.push(Finding {
            path: "audit.maxDataSize".into(),
            message: "must not be negative (0 means the default, 1024)".into(),
        });
    }
    if audit.max_delegation_depth.is_some_and(|n| n <= 0) {
        out.push(Finding {
            path: "audit.maxDelegationDepth".into(),
            message: "must be at least 1".into(),
        });
    }
    out
}

/// Advisory lines.
pub fn warnings(audit: &AuditConfig) -> Vec<String> {
    let mut out = Vec::new();
    if !audit.is_enabled() {
        out.push(
            "audit.enabled: false: no audit events are written (ToolHive's standalone vmcp \
             audits whenever the block is present; vmcp follows the key, like ToolHive's \
             operator)"
                .to_owned(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::validate::tests::problems;
    use super::super::{parse, validate_warnings};
    use super::*;

    const HEAD: &str = "name: gw\nbackends:\n  - name: a\n    transport: streamable-http\n    url: https://h/mcp\n";

    fn audit_of(text: &str) -> AuditConfig {
        match parse(&format!("{HEAD}{text}"), "t.yaml") {
            Ok(cfg) => cfg.audit.expect("audit block"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn toolhive_keys_and_defaults() {
        let a = audit_of("audit: {}\n");
        assert!(a.is_enabled());
        assert!(a.detect_application_errors());
        assert_eq!(a.max_data_size(), 1024);
        assert_eq!(a.max_delegation_depth(), 10);
        assert_eq!(a.log_file(), None);
        assert!(a.wants("mcp_tool_call"));
        let a = audit_of(
            "audit:\n  enabled: true\n  component: gw-audit\n  eventTypes: [mcp_tool_call, mcp_ping]\n  \
             excludeEventTypes: [mcp_ping]\n  includeRequestData: true\n  includeResponseData: true\n  \
             detectApplicationErrors: false\n  maxDataSize: 0\n  maxDelegationDepth: 3\n  \
             logFile: /var/log/vmcp-audit.log\n",
        );
        assert_eq!(a.component.as_deref(), Some("gw-audit"));
        assert!(a.wants("mcp_tool_call"));
        assert!(!a.wants("mcp_ping"), "exclusion wins");
        assert!(!a.wants("mcp_tools_list"), "not listed");
        assert!(a.include_request_data && a.include_response_data);
        assert!(!a.detect_application_errors());
        assert_eq!(a.max_data_size(), 1024, "0 means the default");
        assert_eq!(a.max_delegation_depth(), 3);
        assert_eq!(a.log_file(), Some(std::path::Path::new("/var/log/vmcp-audit.log")));
        assert_eq!(audit_of("audit:\n  logFile: ''\n").log_file(), None);
    }

    #[test]
    fn bad_values_name_key_and_line() {
        let ps = problems(&format!(
            "{HEAD}audit:\n  eventTypes: [mcp_tool_cal]\n  excludeEventTypes: [nope]\n  \
             maxDataSize: -1\n  maxDelegationDepth: 0\n"
        ));
        let got: Vec<_> = ps.iter().map(|(l, p, _)| (*l, p.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(7), "audit.eventTypes[0]"),
                (Some(8), "audit.excludeEventTypes[0]"),
                (Some(9), "audit.maxDataSize"),
                (Some(10), "audit.maxDelegationDepth"),
            ],
            "{ps:#?}"
        );
        assert!(ps[0].2.contains("did you mean \"mcp_tool_call\""), "{}", ps[0].2);
        let err = match parse(&format!("{HEAD}audit:\n  logfile: x\n"), "t.yaml") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        };
        assert_eq!(err, "t.yaml:7:3: audit.logfile: unknown key; did you mean \"logFile\"?");
    }

    #[test]
    fn disabled_is_a_warning() {
        let cfg = parse(&format!("{HEAD}audit:\n  enabled: false\n"), "t.yaml").unwrap();
        assert!(!cfg.audit.as_ref().unwrap().is_enabled());
        let w = validate_warnings(&cfg);
        assert!(w.iter().any(|l| l.starts_with("audit.enabled: false")), "{w:?}");
    }

    #[test]
    fn cli_default_is_toolhives() {
        let a = AuditConfig::cli_default();
        assert!(a.is_enabled());
        assert_eq!(a.component.as_deref(), Some("vmcp-server"));
        assert!(!a.include_request_data && !a.include_response_data);
        assert_eq!(a.max_data_size(), 1024);
    }
}
