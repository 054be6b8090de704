//! Semantic checks on a deserialized [`Config`]: what serde cannot express (uniqueness,
//! cross-references, transport requirements); `aggregation` is checked in
//! `aggregation_validate`.
//!
//! Every check runs and every problem is returned, so one edit cycle fixes them all. Findings
//! carry key paths in the form [`Index`] records; the loader turns them into lines.

use std::collections::HashMap;
use std::time::Duration;

use super::load::suggest;
use super::locate::{Index, index_path, key_path};
use super::{Config, TransportKind};

/// One semantic problem, before it is located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    /// Key path of the offending node (it may be absent from the file, e.g. a missing key).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Backends above this timeout are probably misconfigured (minutes written as seconds, etc.).
const SUSPICIOUS_TIMEOUT: Duration = Duration::from_secs(600);

/// Characters allowed in backend and tool names: they end up in tool names, which clients restrict.
pub(super) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

pub(super) const NAME_CHARS: &str = "use only letters, digits, '_', '.' and '-'";

fn transport_name(t: TransportKind) -> &'static str {
    match t {
        TransportKind::StreamableHttp => "streamable-http",
        TransportKind::Sse => "sse",
        TransportKind::Stdio => "stdio",
    }
}

/// Collects findings, with the index at hand to cite the line of an earlier duplicate.
pub(super) struct Checker<'a> {
    pub(super) index: &'a Index,
    findings: Vec<Finding>,
}

impl Checker<'_> {
    pub(super) fn report(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.findings.push(Finding { path: path.into(), message: message.into() });
    }

    /// " (line N)" for a node that exists in the file, else nothing.
    pub(super) fn at_line(&self, path: &str) -> String {
        self.index.pos(path).map(|p| format!(" (line {})", p.line)).unwrap_or_default()
    }

    /// `unknown backend "x"`, with a suggestion among the configured names.
    pub(super) fn unknown_backend(&mut self, path: String, name: &str, backends: &[&str]) {
        let hint = match suggest(name, backends.iter().copied()) {
            Some(s) => format!("; did you mean {s:?}?"),
            None if backends.is_empty() => "; no backends are configured".to_owned(),
            None => format!("; configured backends: {}", backends.join(", ")),
        };
        self.report(path, format!("unknown backend {name:?}{hint}"));
    }
}

/// Runs every semantic check.
pub(crate) fn check(cfg: &Config, index: &Index) -> Vec<Finding> {
    let mut c = Checker { index, findings: Vec::new() };
    if cfg.name.trim().is_empty() {
        let msg = if index.pos("name").is_some() { "must not be empty" } else { "missing" };
        c.report("name", format!("{msg}; the gateway needs a name (reported to clients)"));
    }
    let names = check_backends(cfg, &mut c);
    super::aggregation_validate::check(cfg, &names, &mut c);
    check_operational(cfg, &names, &mut c);
    c.findings.extend(super::auth_validate::check(cfg, &names, c.index));
    c.findings.extend(super::authserver::cross::check(cfg));
    c.findings.extend(super::backend_sessions::check(cfg, c.index));
    c.findings.extend(super::connections::check(&cfg.server.connections));
    if cfg.server.max_request_body_bytes == Some(0) {
        c.report("server.maxRequestBodyBytes", "must be greater than zero");
    }
    c.findings.extend(super::limits::check(&cfg.server.limits));
    c.findings.extend(super::failure_handling::check(&cfg.operational.failure_handling));
    c.findings.extend(super::toolhive_compat::check(cfg, c.index));
    c.findings.extend(cfg.audit.iter().flat_map(super::audit::check));
    c.findings.extend(cfg.rate_limiting.iter().flat_map(super::rate_limit::check));
    c.findings.extend(super::session_storage::check(cfg));
    if let Some(t) = &cfg.telemetry {
        c.findings.extend(super::telemetry::check(t));
    }
    c.findings.extend(super::authz::check(cfg));
    c.findings
}

/// Checks `backends` and returns the configured names, for reference checks elsewhere.
fn check_backends<'a>(cfg: &'a Config, c: &mut Checker<'_>) -> Vec<&'a str> {
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    for (i, b) in cfg.backends.iter().enumerate() {
        let p = index_path("backends", i);
        let name_path = key_path(&p, "name");
        if b.name.is_empty() {
            let msg =
                if c.index.pos(&name_path).is_some() { "must not be empty" } else { "missing" };
            c.report(&name_path, format!("{msg}; every backend needs a unique name"));
        } else if let Some(bad) = b.name.chars().find(|ch| !is_name_char(*ch)) {
            c.report(
                &name_path,
                format!("invalid backend name {:?} (character {bad:?}); {NAME_CHARS}", b.name),
            );
        }
        if !b.name.is_empty() {
            if let Some(&first) = first_seen.get(b.name.as_str()) {
                let first_path = key_path(&index_path("backends", first), "name");
                let line = c.at_line(&first_path);
                c.report(
                    &name_path,
                    format!(
                        "duplicate backend name {:?}, first used by backends[{first}]{line}",
                        b.name
                    ),
                );
            } else {
                first_seen.insert(&b.name, i);
            }
        }
        check_transport(b, &p, c);
        if b.timeout == Some(Duration::ZERO) {
            c.report(key_path(&p, "timeout"), "must be greater than zero");
        }
    }
    cfg.backends.iter().map(|b| b.name.as_str()).filter(|n| !n.is_empty()).collect()
}

/// What each transport needs, and what it does not use.
fn check_transport(b: &super::BackendConfig, p: &str, c: &mut Checker<'_>) {
    let t = transport_name(b.transport);
    if b.transport == TransportKind::Stdio {
        if b.command.as_deref().is_none_or(|s| s.trim().is_empty()) {
            c.report(key_path(p, "command"), "required for transport stdio (the program to run)");
        }
        if b.url.is_some() {
            c.report(
                key_path(p, "url"),
                "not used by stdio backends; remove it or change transport",
            );
        }
        if b.max_processes == Some(0) {
            c.report(key_path(p, "maxProcesses"), "must be at least 1");
        }
        if b.process_idle_timeout == Some(Duration::ZERO) {
            c.report(key_path(p, "processIdleTimeout"), "must be greater than zero");
        }
        return;
    }
    match b.url.as_deref() {
        None | Some("") => c.report(key_path(p, "url"), format!("required for transport {t}")),
        Some(url) => {
            if let Some(problem) = url_problem(url) {
                c.report(key_path(p, "url"), problem);
            }
        }
    }
    if b.transport == TransportKind::StreamableHttp && b.isolation.is_some() {
        c.report(
            key_path(p, "isolation"),
            "only stdio and sse backends take `isolation`; streamable-http backends keep a \
             backend session per client session and per principal already",
        );
    }
    // These keys only make sense for a child process; silently ignoring them would hide a
    // mistaken `transport`.
    let stdio_only = [
        ("command", b.command.is_some()),
        ("args", !b.args.is_empty()),
        ("env", !b.env.is_empty()),
        ("cwd", b.cwd.is_some()),
        ("maxProcesses", b.max_processes.is_some()),
        ("processIdleTimeout", b.process_idle_timeout.is_some()),
    ];
    for (key, given) in stdio_only {
        if given {
            c.report(
                key_path(p, key),
                format!("only stdio backends use `{key}`, but transport is {t}"),
            );
        }
    }
}

/// Why `url` cannot be a backend endpoint, if it cannot.
fn url_problem(url: &str) -> Option<String> {
    match reqwest::Url::parse(url) {
        Err(e) => Some(format!("invalid URL {url:?}: {e}")),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            Some(format!("URL {url:?} must start with http:// or https://"))
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => Some(format!("URL {url:?} has no host")),
        Ok(_) => None,
    }
}

fn check_operational(cfg: &Config, names: &[&str], c: &mut Checker<'_>) {
    let t = &cfg.operational.timeouts;
    if t.default.is_zero() {
        c.report("operational.timeouts.default", "must be greater than zero");
    }
    for (name, d) in &t.per_workload {
        let p = key_path("operational.timeouts.perWorkload", name);
        if !names.contains(&name.as_str()) {
            c.unknown_backend(p, name, names);
        } else if d.is_zero() {
            c.report(p, "must be greater than zero");
        }
    }
}

/// Legal but suspicious settings, as human-readable lines (no file positions: the config is
/// already valid and these are advisory).
pub fn validate_warnings(cfg: &Config) -> Vec<String> {
    let mut out = super::failure_handling::warnings(&cfg.operational.failure_handling);
    let long = |d: Duration| d > SUSPICIOUS_TIMEOUT;
    if long(cfg.operational.timeouts.default) {
        out.push(format!(
            "operational.timeouts.default: {:?} is over 10 minutes; clients usually give up sooner",
            cfg.operational.timeouts.default
        ));
    }
    for b in &cfg.backends {
        let d = cfg.backend_timeout(b);
        if long(d) && d != cfg.operational.timeouts.default {
            out.push(format!(
                "backend {:?}: timeout {d:?} is over 10 minutes; clients usually give up sooner",
                b.name
            ));
        }
    }
    out.extend(super::aggregation_validate::warnings(cfg));
    out.extend(super::toolhive_compat::warnings(cfg));
    out.extend(cfg.audit.iter().flat_map(super::audit::warnings));
    let anonymous = cfg.incoming_auth.kind == super::IncomingAuthKind::Anonymous;
    out.extend(cfg.rate_limiting.iter().flat_map(|rl| super::rate_limit::warnings(rl, anonymous)));
    if let Some(t) = &cfg.telemetry {
        out.extend(super::telemetry::warnings(t));
    }
    out.extend(super::authz::warnings(cfg));
    if cfg.server.allowed_hosts.iter().any(|h| h == "*") {
        out.push("server.allowedHosts: \"*\" disables DNS-rebinding protection".to_owned());
    }
    if cfg.server.allowed_origins.iter().any(|h| h == "*") {
        out.push("server.allowedOrigins: \"*\" lets any web page call the gateway".to_owned());
    }
    out.extend(super::auth_validate::warnings(cfg));
    out.extend(super::authserver::cross::warnings(cfg));
    if let Some(auth) = &cfg.auth_server {
        let file = super::authserver::FILE_NAME;
        out.extend(super::authserver::warnings(auth).into_iter().map(|w| format!("{file}: {w}")));
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::{ConfigError, parse};

    /// (line, path, message) of every problem `text` has; panics if it is accepted.
    pub(in crate::config) fn problems(text: &str) -> Vec<(Option<usize>, String, String)> {
        match parse(text, "t.yaml") {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(ConfigError::Invalid(ps)) => {
                ps.into_iter().map(|p| (p.line, p.path, p.message)).collect()
            }
            Err(e) => panic!("not a semantic error: {e}"),
        }
    }

    /// The single problem of `text`.
    fn one(text: &str) -> (Option<usize>, String, String) {
        let mut ps = problems(text);
        assert_eq!(ps.len(), 1, "{ps:#?}");
        ps.remove(0)
    }

    const BACKENDS: &str = "\
name: gw
backends:
  - name: files
    transport: stdio
    command: mcp-files
  - name: web
    transport: streamable-http
    url: http://localhost:9000/mcp
";

    #[test]
    fn missing_names() {
        let (line, path, msg) = one("backends: []\n");
        assert_eq!((line, path.as_str()), (Some(1), "name"));
        assert!(msg.starts_with("missing;"), "{msg}");

        let (line, path, msg) = one("name: gw\nbackends:\n  - transport: stdio\n    command: x\n");
        assert_eq!((line, path.as_str()), (Some(3), "backends[0].name"));
        assert!(msg.starts_with("missing;"), "{msg}");

        let (line, path, msg) = one("name: ''\n");
        assert_eq!((line, path.as_str()), (Some(1), "name"));
        assert!(msg.starts_with("must not be empty"), "{msg}");
    }

    #[test]
    fn duplicate_and_malformed_backend_names() {
        let text =
            format!("{BACKENDS}  - name: files\n    transport: sse\n    url: https://x/sse\n");
        let (line, path, msg) = one(&text);
        assert_eq!((line, path.as_str()), (Some(9), "backends[2].name"));
        assert_eq!(msg, "duplicate backend name \"files\", first used by backends[0] (line 3)");

        let (line, path, msg) =
            one("name: gw\nbackends:\n  - name: my files\n    transport: stdio\n    command: x\n");
        assert_eq!((line, path.as_str()), (Some(3), "backends[0].name"));
        assert!(msg.starts_with("invalid backend name \"my files\" (character ' ')"), "{msg}");
    }

    #[test]
    fn transport_requirements() {
        let (line, path, msg) = one("name: gw\nbackends:\n  - name: a\n    transport: stdio\n");
        assert_eq!((line, path.as_str()), (Some(3), "backends[0].command"));
        assert_eq!(msg, "required for transport stdio (the program to run)");

        let (line, path, msg) = one("name: gw\nbackends:\n  - name: a\n    transport: sse\n");
        assert_eq!(
            (line, path.as_str(), msg.as_str()),
            (Some(3), "backends[0].url", "required for transport sse")
        );

        let (line, path, msg) = one(
            "name: gw\nbackends:\n  - name: a\n    transport: streamable-http\n    url: ftp://host/mcp\n",
        );
        assert_eq!((line, path.as_str()), (Some(5), "backends[0].url"));
        assert_eq!(msg, "URL \"ftp://host/mcp\" must start with http:// or https://");

        let (line, path, msg) =
            one("name: gw\nbackends:\n  - name: a\n    transport: sse\n    url: localhost:8080\n");
        assert_eq!((line, path.as_str()), (Some(5), "backends[0].url"));
        assert!(msg.contains("must start with http:// or https://"), "{msg}");

        let text = "name: gw\nbackends:\n  - name: a\n    transport: sse\n    url: http://h/sse\n    command: x\n";
        let (line, path, msg) = one(text);
        assert_eq!((line, path.as_str()), (Some(6), "backends[0].command"));
        assert_eq!(msg, "only stdio backends use `command`, but transport is sse");
    }

    #[test]
    fn priority_order() {
        let text = format!(
            "{BACKENDS}aggregation:\n  conflictResolution: priority\n  conflictResolutionConfig:\n    \
             priorityOrder: [web, file]\n"
        );
        let (line, path, msg) = one(&text);
        assert_eq!(
            (line, path.as_str()),
            (Some(12), "aggregation.conflictResolutionConfig.priorityOrder[1]")
        );
        assert_eq!(msg, "unknown backend \"file\"; did you mean \"files\"?");

        let (line, path, msg) =
            one(&format!("{BACKENDS}aggregation:\n  conflictResolution: priority\n"));
        assert_eq!(
            (line, path.as_str()),
            (Some(9), "aggregation.conflictResolutionConfig.priorityOrder")
        );
        assert!(msg.starts_with("required when conflictResolution is priority"), "{msg}");
    }

    #[test]
    fn prefix_format() {
        let base =
            format!("{BACKENDS}aggregation:\n  conflictResolutionConfig:\n    prefixFormat: ");
        let (line, path, msg) = one(&format!("{base}\"mcp_\"\n"));
        assert_eq!(
            (line, path.as_str()),
            (Some(11), "aggregation.conflictResolutionConfig.prefixFormat")
        );
        assert!(msg.starts_with("must contain {backend}"), "{msg}");

        let (_, _, msg) = one(&format!("{base}\"{{backend}}: \"\n"));
        assert!(msg.starts_with("character ':' would end up in tool names"), "{msg}");

        let (_, _, msg) = one(&format!("{base}\"{{server}}_{{backend}}\"\n"));
        assert!(msg.starts_with("unknown placeholder"), "{msg}");

        assert!(parse(&format!("{base}\"{{workload}}.\"\n"), "t.yaml").is_ok());
    }

    #[test]
    fn tool_rules() {
        let text = format!(
            "{BACKENDS}aggregation:
  tools:
    - workload: web
      overrides:
        fetch: {{}}
        search: {{name: 'web search'}}
    - backend: webb
    - backend: web
      overrides:
        get: {{name: lookup}}
        find: {{name: lookup}}
"
        );
        let ps = problems(&text);
        let got: Vec<_> = ps.iter().map(|(l, p, _)| (*l, p.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(13), "aggregation.tools[0].overrides.fetch"),
                (Some(14), "aggregation.tools[0].overrides.search.name"),
                (Some(15), "aggregation.tools[1].backend"),
                (Some(16), "aggregation.tools[2].backend"),
                (Some(18), "aggregation.tools[2].overrides.get.name"),
            ],
            "{ps:#?}"
        );
        assert_eq!(ps[0].2, "override changes nothing; give name, description or annotations");
        assert!(ps[1].2.starts_with("invalid tool name \"web search\""), "{}", ps[1].2);
        assert_eq!(ps[2].2, "unknown backend \"webb\"; did you mean \"web\"?");
        assert_eq!(
            ps[3].2,
            "rules for backend \"web\" are already given at aggregation.tools[0].workload (line 11); merge them"
        );
        // BTreeMap order: `find` is seen before `get`, so `get` is the duplicate.
        assert!(
            ps[4].2.starts_with(
                "tool name \"lookup\" is already produced by aggregation.tools[2].overrides.find.name (line 19); two tools of one backend"
            ),
            "{}",
            ps[4].2
        );
    }

    #[test]
    fn long_override_name() {
        let long = "x".repeat(65);
        let text = format!(
            "{BACKENDS}aggregation:\n  tools:\n    - backend: web\n      overrides:\n        a: {{name: {long}}}\n"
        );
        let (line, path, msg) = one(&text);
        assert_eq!((line, path.as_str()), (Some(13), "aggregation.tools[0].overrides.a.name"));
        assert_eq!(msg, "tool name is 65 characters long; at most 64 are allowed");
    }

    #[test]
    fn timeouts_and_server() {
        let text = format!(
            "{BACKENDS}operational:\n  timeouts:\n    default: 0s\n    perWorkload:\n      web: 0s\n      nope: 5s\n\
             server:\n  maxRequestBodyBytes: 0\n"
        );
        let ps = problems(&text);
        let got: Vec<_> = ps.iter().map(|(l, p, m)| (*l, p.as_str(), m.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(11), "operational.timeouts.default", "must be greater than zero"),
                (Some(13), "operational.timeouts.perWorkload.web", "must be greater than zero"),
                (
                    Some(14),
                    "operational.timeouts.perWorkload.nope",
                    "unknown backend \"nope\"; configured backends: files, web"
                ),
                (Some(16), "server.maxRequestBodyBytes", "must be greater than zero"),
            ]
        );
    }

    #[test]
    fn all_problems_are_reported_one_per_line() {
        let text = "name: gw\nbackends:\n  - name: a\n    transport: stdio\n  - name: a\n    transport: sse\n";
        let err = match parse(text, "t.yaml") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        };
        assert_eq!(
            err,
            "t.yaml:3:5: backends[0].command: required for transport stdio (the program to run)\n\
             t.yaml:5:5: backends[1].name: duplicate backend name \"a\", first used by backends[0] (line 3)\n\
             t.yaml:5:5: backends[1].url: required for transport sse"
        );
    }

    #[test]
    fn warnings() {
        let text = format!("{BACKENDS}    timeout: 15m\nserver:\n  allowedHosts: ['*']\n");
        let cfg = match parse(&text, "t.yaml") {
            Ok(cfg) => cfg,
            Err(e) => panic!("{e}"),
        };
        let w = super::validate_warnings(&cfg);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("backend \"web\": timeout 900s is over 10 minutes"), "{w:?}");
        assert!(
            parse(BACKENDS, "t.yaml")
                .map(|c| super::validate_warnings(&c).is_empty())
                .unwrap_or(false)
        );
    }
}
