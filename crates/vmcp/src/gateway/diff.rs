//! Which changes a config reload refuses: keys whose value is built into something that lives as
//! long as the process (the listener and router, the session store, incoming authentication, the
//! authorization server, the log filter).
//!
//! Restart-only keys (also listed in `docs/configuration.md`):
//! - `name` (clients got it as `serverInfo` when they connected);
//! - `server.*` (allowed hosts and origins and the body limit are built into the router,
//!   `limits` size the session store, `connections` the accept loop, `pageSize` cursors clients
//!   hold);
//! - `incomingAuth.*` except `authz` (who a principal is, and so every session's binding;
//!   the policies are rebuilt on every reload);
//! - `operational.logLevel` (the log filter is raised once, at start);
//! - `telemetry` (its exporters and instruments are registered once; a change of a `headers`
//!   value alone is not seen, since values never reach `Debug`);
//! - `authserver-config.yaml` (the embedded authorization server, its keys and stores).
//!
//! The `serve` flags (`--host`, `--port`, `--session-ttl`) are not in the file; a reload applies
//! `--session-ttl` to the new file as at start.
//!
//! Config types have no `PartialEq` (some hold secrets that never leave them); values are
//! compared by their `Debug` text, which is fine for these keys: none holds an inline secret.

use crate::config::Config;

/// The restart-only keys whose value differs between `old` and `new`, as key paths
/// (`server.limits.maxSessions`), in a stable order.
pub fn restart_only(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |key: &str, a: String, b: String| {
        if a != b {
            out.extend(changed_keys(key, &a, &b));
        }
    };
    check("name", dbg(&old.name), dbg(&new.name));
    let (s, t) = (&old.server, &new.server);
    check("server.allowedHosts", dbg(&s.allowed_hosts), dbg(&t.allowed_hosts));
    check("server.allowedOrigins", dbg(&s.allowed_origins), dbg(&t.allowed_origins));
    check(
        "server.maxRequestBodyBytes",
        dbg(&s.max_request_body_bytes),
        dbg(&t.max_request_body_bytes),
    );
    check("server.pageSize", dbg(&s.page_size), dbg(&t.page_size));
    check("server.limits", dbg(&s.limits), dbg(&t.limits));
    check("server.connections", dbg(&s.connections), dbg(&t.connections));
    let (i, j) = (&old.incoming_auth, &new.incoming_auth);
    check("incomingAuth.type", dbg(&i.kind), dbg(&j.kind));
    check("incomingAuth.oidc", dbg(&i.oidc), dbg(&j.oidc));
    check(
        "incomingAuth.allowAnonymousNonLoopback",
        dbg(&i.allow_anonymous_non_loopback),
        dbg(&j.allow_anonymous_non_loopback),
    );
    check(
        "operational.logLevel",
        dbg(&crate::config::debug_logging(old)),
        dbg(&crate::config::debug_logging(new)),
    );
    check("telemetry", dbg(&old.telemetry), dbg(&new.telemetry));
    check("sessionStorage", dbg(&old.session_storage), dbg(&new.session_storage));
    if dbg(&old.auth_server) != dbg(&new.auth_server) {
        out.push(crate::config::authserver::FILE_NAME.to_owned());
    }
    out
}

fn dbg<T: std::fmt::Debug>(v: &T) -> String {
    format!("{v:?}")
}

/// The keys under `key` that differ: the struct fields whose `Debug` text differs (in
/// camelCase, one level down), or `key` itself when either side is not a struct.
fn changed_keys(key: &str, a: &str, b: &str) -> Vec<String> {
    let (Some(fa), Some(fb)) = (fields(a), fields(b)) else { return vec![key.to_owned()] };
    let names: Vec<&str> = fa.iter().map(|(n, _)| n.as_str()).collect();
    if names != fb.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>() {
        return vec![key.to_owned()];
    }
    let out: Vec<String> = fa
        .iter()
        .zip(&fb)
        .filter(|((_, x), (_, y))| x != y)
        .map(|((n, _), _)| format!("{key}.{}", camel(n)))
        .collect();
    if out.is_empty() { vec![key.to_owned()] } else { out }
}

/// The top-level fields of a derived `Debug` text `Name { a: 1, b: [..] }` (`Some(x)` around it
/// is looked through), `None` for anything else.
fn fields(text: &str) -> Option<Vec<(String, String)>> {
    let text = text.strip_prefix("Some(").and_then(|t| t.strip_suffix(')')).unwrap_or(text);
    let open = text.find(" { ")?;
    let body = text.get(open + 3..)?.strip_suffix(" }")?;
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut escaped, mut start) = (0usize, false, false, 0usize);
    let mut push = |part: &str| -> Option<()> {
        let (name, value) = part.split_once(": ")?;
        out.push((name.trim().to_owned(), value.to_owned()));
        Some(())
    };
    for (i, c) in body.char_indices() {
        if quoted {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            '{' | '[' | '(' => depth += 1,
            '}' | ']' | ')' => depth = depth.checked_sub(1)?,
            ',' if depth == 0 => {
                push(body.get(start..i)?)?;
                start = i + 1;
            }
            _ => {}
        }
    }
    push(body.get(start..)?)?;
    Some(out)
}

/// `max_sessions` → `maxSessions`.
fn camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut up = false;
    for c in snake.chars() {
        match c {
            '_' => up = true,
            c if up => {
                out.extend(c.to_uppercase());
                up = false;
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        crate::config::parse(yaml, "t").unwrap()
    }

    const BASE: &str = "name: g\nbackends:\n  - name: a\n    transport: streamable-http\n    url: http://127.0.0.1:1/mcp\n";

    #[test]
    fn reloadable_changes_are_not_restart_only() {
        let old = config(BASE);
        let new = config(&format!(
            "{BASE}  - name: b\n    transport: streamable-http\n    url: http://127.0.0.1:2/mcp\n\
             metadata:\n  env: x\npassthroughHeaders: [X-Trace]\n\
             operational:\n  timeouts:\n    default: 5s\n\
             aggregation:\n  conflictResolution: priority\n  conflictResolutionConfig:\n    priorityOrder: [a, b]\n"
        ));
        assert_eq!(restart_only(&old, &new), Vec::<String>::new());
    }

    #[test]
    fn restart_only_changes_are_named_by_key() {
        let old = config(BASE);
        let new = config(&format!(
            "{BASE}server:\n  pageSize: 5\n  limits:\n    maxSessions: 7\n  allowedHosts: [example.com]\n"
        ))
        .clone();
        let mut new = new;
        new.name = "other".into();
        assert_eq!(
            restart_only(&old, &new),
            ["name", "server.allowedHosts", "server.pageSize", "server.limits.maxSessions"]
        );
    }

    #[test]
    fn debug_fields_are_split_at_the_top_level_only() {
        let f = fields(r#"Some(A { x: "a, b\" }", y: [1, 2], z: B { w: 1 } })"#).unwrap();
        let names: Vec<&str> = f.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x", "y", "z"]);
        assert_eq!(f[2].1, "B { w: 1 }");
        assert!(fields("None").is_none());
        assert_eq!(camel("allow_anonymous_non_loopback"), "allowAnonymousNonLoopback");
    }
}
