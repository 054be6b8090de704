//! ToolHive keys that vmcp recognises but handles its own way: features that are not available
//! yet (refused with a message naming the feature, never "unknown key"), ToolHive's values for
//! `operational.logLevel` and `backends[].type`, and group discovery (`groupRef`,
//! `outgoingAuth.source: discovered`), which needs ToolHive's runtime.
//!
//! A block of a missing feature is an error, not a warning: a gateway that silently skipped
//! `rateLimiting` would serve what the file says it must not.

use super::Config;
use super::locate::{Index, index_path, key_path};
use super::validate::Finding;

/// Keys of features vmcp does not have yet, with what each one is.
const NOT_YET: &[(&str, &str)] = &[
    ("optimizer", "the tool optimizer (find_tool/call_tool) is"),
    ("codeMode", "code mode (execute_tool_script) is"),
    ("compositeTools", "composite tools are"),
    ("compositeToolRefs", "composite tool definitions (VirtualMCPCompositeToolDefinition) are"),
];

/// The only `operational.logLevel` ToolHive accepts (empty means info).
const LOG_DEBUG: &str = "debug";
/// The only `backends[].type` ToolHive accepts besides empty.
const TYPE_ENTRY: &str = "entry";

/// Whether the config asks for debug logging (`operational.logLevel: debug`).
pub fn debug_logging(cfg: &Config) -> bool {
    cfg.operational.log_level.as_deref() == Some(LOG_DEBUG)
}

/// Errors: blocks of missing features, values ToolHive would refuse, discovery without backends.
pub(super) fn check(cfg: &Config, index: &Index) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut report = |path: String, message: String| out.push(Finding { path, message });
    // The index, not the parsed value: `audit:` with nothing under it is still the block.
    for (key, what) in NOT_YET {
        if index.pos(key).is_some() {
            report(
                (*key).to_owned(),
                format!(
                    "{what} not available in vmcp yet; remove the block (it would be ignored \
                     otherwise)"
                ),
            );
        }
    }
    if let Some(level) = cfg.operational.log_level.as_deref()
        && !level.is_empty()
        && level != LOG_DEBUG
    {
        report(
            "operational.logLevel".to_owned(),
            format!(
                "unknown value {level:?}; the only value is \"debug\" (as in ToolHive; leave it \
                 out for info, or set VMCP_LOG for other levels)"
            ),
        );
    }
    for (i, b) in cfg.backends.iter().enumerate() {
        if let Some(kind) = b.kind.as_deref()
            && !kind.is_empty()
            && kind != TYPE_ENTRY
        {
            report(
                key_path(&index_path("backends", i), "type"),
                format!("unknown value {kind:?}; the only value is \"entry\" (or leave it out)"),
            );
        }
    }
    if cfg.backends.is_empty() {
        let discovery = if cfg.group_ref.is_some() {
            Some("groupRef")
        } else if cfg.outgoing_auth.source.as_deref() == Some("discovered") {
            Some("outgoingAuth.source")
        } else {
            None
        };
        if let Some(key) = discovery {
            report(
                key.to_owned(),
                "backend discovery needs ToolHive's runtime (its Kubernetes operator or a \
                 ToolHive group); vmcp does not discover backends: list them under `backends:`"
                    .to_owned(),
            );
        }
    }
    out
}

/// Advisory lines for keys that are accepted but change nothing here.
pub(super) fn warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if cfg.backends.is_empty() {
        return out;
    }
    if let Some(group) = &cfg.group_ref {
        out.push(format!(
            "groupRef: {group:?} is ignored; vmcp serves the backends listed under `backends` \
             and does not discover group members"
        ));
    }
    if cfg.outgoing_auth.source.as_deref() == Some("discovered") {
        out.push(
            "outgoingAuth.source: \"discovered\" is ignored; outgoing auth comes from \
             outgoingAuth.default and outgoingAuth.backends"
                .to_owned(),
        );
    }
    for b in &cfg.backends {
        if b.ca_bundle_path.is_some() && b.url.as_deref().is_some_and(|u| u.starts_with("http:")) {
            out.push(format!(
                "backend {:?}: caBundlePath is unused, the URL is plain http://",
                b.name
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::validate::tests::problems;
    use super::super::{parse, validate_warnings};
    use super::*;

    const HEAD: &str = "name: gw\nbackends:\n  - name: a\n    transport: streamable-http\n    url: https://h/mcp\n";

    fn ok(text: &str) -> Config {
        match parse(text, "t.yaml") {
            Ok(cfg) => cfg,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn implemented_keys_parse() {
        let text = format!(
            "{HEAD}    type: entry\n    metadata: {{env: prod, region: eu}}\n\
             metadata:\n  team: platform\noperational:\n  logLevel: debug\n"
        );
        let cfg = ok(&text);
        assert_eq!(cfg.metadata["team"], "platform");
        assert_eq!(cfg.backends[0].metadata["region"], "eu");
        assert_eq!(cfg.backends[0].kind.as_deref(), Some("entry"));
        assert!(debug_logging(&cfg));
        // Empty values mean "unset", as in ToolHive.
        let cfg = ok(&format!("{HEAD}    type: ''\noperational:\n  logLevel: ''\n"));
        assert!(!debug_logging(&cfg));
        assert!(!debug_logging(&ok(HEAD)));
    }

    #[test]
    fn refused_values() {
        let ps = problems(&format!("{HEAD}    type: mcpserver\noperational:\n  logLevel: info\n"));
        let got: Vec<_> = ps.iter().map(|(l, p, _)| (*l, p.as_str())).collect();
        assert_eq!(got, [(Some(6), "backends[0].type"), (Some(8), "operational.logLevel")]);
        assert_eq!(
            ps[0].2,
            "unknown value \"mcpserver\"; the only value is \"entry\" (or leave it out)"
        );
        assert!(
            ps[1].2.starts_with("unknown value \"info\"; the only value is \"debug\""),
            "{}",
            ps[1].2
        );
    }

    #[test]
    fn each_missing_feature_has_its_message_and_line() {
        let cases = [
            ("optimizer", "the tool optimizer (find_tool/call_tool) is not available"),
            ("codeMode", "code mode (execute_tool_script) is not available"),
            ("compositeTools", "composite tools are not available"),
            ("compositeToolRefs", "composite tool definitions"),
        ];
        for (key, start) in cases {
            // A mapping, a list and an empty value are all the block.
            for value in [" {enabled: true}", "\n  - name: x", ""] {
                let ps = problems(&format!("{HEAD}{key}:{value}\n"));
                assert_eq!(ps.len(), 1, "{key}: {ps:?}");
                let (line, path, msg) = &ps[0];
                assert_eq!((*line, path.as_str()), (Some(6), key));
                assert!(msg.starts_with(start), "{key}: {msg}");
                assert!(
                    msg.ends_with("; remove the block (it would be ignored otherwise)"),
                    "{msg}"
                );
            }
        }
        // Cedar authorization is implemented now: the block loads.
        let text = format!(
            "{HEAD}incomingAuth:\n  type: anonymous\n  authz:\n    type: cedar\n    policies: ['permit(principal, action, resource);']\n"
        );
        assert!(ok(&text).incoming_auth.authz.is_some());
    }

    #[test]
    fn the_full_message_has_file_line_and_column() {
        let err = match parse(&format!("{HEAD}optimizer:\n  enabled: true\n"), "c.yaml") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        };
        assert_eq!(
            err,
            "c.yaml:6:1: optimizer: the tool optimizer (find_tool/call_tool) is not available in \
             vmcp yet; remove the block (it would be ignored otherwise)"
        );
    }

    #[test]
    fn discovery_without_backends_is_refused() {
        let ps = problems("name: gw\ngroupRef: engineering\n");
        assert_eq!((ps[0].0, ps[0].1.as_str()), (Some(2), "groupRef"));
        assert!(ps[0].2.starts_with("backend discovery needs ToolHive's runtime"), "{}", ps[0].2);
        assert!(ps[0].2.ends_with("list them under `backends:`"), "{}", ps[0].2);

        let ps = problems("name: gw\noutgoingAuth:\n  source: discovered\n");
        assert_eq!((ps[0].0, ps[0].1.as_str()), (Some(3), "outgoingAuth.source"));

        // No backends and no discovery asked for: valid, as before.
        ok("name: gw\n");
    }

    #[test]
    fn discovery_with_backends_is_a_warning() {
        let cfg = ok(&format!("groupRef: eng\noutgoingAuth:\n  source: discovered\n{HEAD}"));
        let w = validate_warnings(&cfg);
        assert!(w.iter().any(|l| l.starts_with("groupRef: \"eng\" is ignored")), "{w:?}");
        assert!(
            w.iter().any(|l| l.starts_with("outgoingAuth.source: \"discovered\" is ignored")),
            "{w:?}"
        );
    }

    /// ToolHive's own example config: every not-yet key it uses gets its message, not "unknown key"
    /// (its `telemetry` and `authz` blocks load: both are implemented).
    #[test]
    fn toolhive_example_config() {
        let text = "\
name: engineering-vmcp
groupRef: engineering-team
incomingAuth:
  type: oidc
  oidc:
    issuer: https://keycloak.example.com/realms/myrealm
    clientId: vmcp-client
    audience: vmcp
  authz:
    type: cedar
    policies: ['permit(principal, action, resource);']
outgoingAuth:
  source: inline
telemetry:
  endpoint: localhost:4317
  serviceName: engineering-vmcp
";
        let ps = problems(text);
        let got: Vec<_> = ps.iter().map(|(l, p, _)| (*l, p.as_str())).collect();
        assert_eq!(got, [(Some(2), "groupRef")], "{ps:#?}");
    }
}
