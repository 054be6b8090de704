//! `vmcp init`: a commented starter configuration from a list of backends.
//!
//! Each backend is given as a URL (`http(s)://…`; a path ending in `/sse` is a legacy HTTP+SSE
//! server, anything else Streamable HTTP) or as a command line (a stdio server), optionally
//! named `NAME=`. The file written always validates: it is parsed with the same loader as
//! `vmcp validate` before it is written, and an existing file is never overwritten without
//! `--force`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// How a backend is reached, as `init` understood its argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// `streamable-http` or `sse`, with its URL.
    Http { transport: &'static str, url: String },
    /// A command and its arguments (split on whitespace).
    Stdio { command: String, args: Vec<String> },
}

/// One backend of the starter config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub spec: Spec,
}

/// Why `init` wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0:?}: give a URL (http://…, https://…) or a command, optionally as NAME=…")]
    Empty(String),
    #[error("{0}: a backend command cannot hold quotes; put it in a script and name the script")]
    Quoted(String),
    #[error("two backends are named {0:?}; name them with NAME=…")]
    Duplicate(String),
    #[error("{0:?} is not a valid backend name: use letters, digits, '-' and '_'")]
    BadName(String),
    #[error("{0} exists; pass --force to overwrite it")]
    Exists(PathBuf),
    #[error("the generated config does not validate (please report this): {0}")]
    Invalid(String),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

/// Parses the backend arguments: `[NAME=]URL` or `[NAME=]COMMAND ARGS…`.
pub fn entries(args: &[String]) -> Result<Vec<Entry>, InitError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(args.len());
    for arg in args {
        let (name, rest) = split_name(arg);
        let rest = rest.trim();
        if rest.is_empty() {
            return Err(InitError::Empty(arg.clone()));
        }
        let spec = if rest.starts_with("http://") || rest.starts_with("https://") {
            let path = rest.split(['?', '#']).next().unwrap_or(rest).trim_end_matches('/');
            let transport = if path.ends_with("/sse") { "sse" } else { "streamable-http" };
            Spec::Http { transport, url: rest.to_owned() }
        } else {
            if rest.contains(['"', '\'']) {
                return Err(InitError::Quoted(arg.clone()));
            }
            let mut words = rest.split_whitespace().map(str::to_owned);
            let command = words.next().ok_or_else(|| InitError::Empty(arg.clone()))?;
            Spec::Stdio { command, args: words.collect() }
        };
        let name = match name {
            Some(n) if valid_name(n) => n.to_owned(),
            Some(n) => return Err(InitError::BadName(n.to_owned())),
            None => unique(derive_name(&spec), &seen),
        };
        if !seen.insert(name.clone()) {
            return Err(InitError::Duplicate(name));
        }
        out.push(Entry { name, spec });
    }
    Ok(out)
}

/// `NAME=rest` when what precedes `=` could be a name (a URL's query has `=` too, after `?`).
fn split_name(arg: &str) -> (Option<&str>, &str) {
    match arg.split_once('=') {
        Some((n, rest)) if !n.is_empty() && !n.contains([':', '/', ' ', '?']) => (Some(n), rest),
        _ => (None, arg),
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A name from the URL's host (and last path segment when it is not `mcp`/`sse`) or the
/// command's file name.
fn derive_name(spec: &Spec) -> String {
    let raw = match spec {
        Spec::Http { url, .. } => {
            let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = host.rsplit('@').next().unwrap_or(host);
            let (host, port) = host.split_once(':').unwrap_or((host, ""));
            let segment = path
                .split(['?', '#'])
                .next()
                .unwrap_or("")
                .split('/')
                .rfind(|s| !s.is_empty() && *s != "mcp" && *s != "sse");
            let numeric = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok();
            match segment {
                Some(s) => s.to_owned(),
                // An address says nothing about the server; its port tells two apart.
                None if numeric && !port.is_empty() => format!("mcp-{port}"),
                None if numeric => "mcp".to_owned(),
                None => host.split('.').next().unwrap_or(host).to_owned(),
            }
        }
        Spec::Stdio { command, args } => {
            let base = Path::new(command).file_name().and_then(|f| f.to_str()).unwrap_or(command);
            // `npx -y @scope/server-x` and `uvx mcp-server-y`: the package says more.
            let runner = matches!(base, "npx" | "uvx" | "pipx" | "bunx" | "node" | "python3");
            match args.iter().find(|a| !a.starts_with('-')).filter(|_| runner) {
                Some(pkg) => pkg.rsplit('/').next().unwrap_or(pkg).to_owned(),
                None => base.to_owned(),
            }
        }
    };
    let cleaned: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .collect();
    let cleaned = cleaned.trim_matches('-').to_ascii_lowercase();
    if cleaned.is_empty() { "backend".into() } else { cleaned }
}

fn unique(base: String, seen: &BTreeSet<String>) -> String {
    if !seen.contains(&base) {
        return base;
    }
    (2..).map(|n| format!("{base}-{n}")).find(|n| !seen.contains(n)).unwrap_or(base)
}

/// A YAML double-quoted scalar (JSON's string syntax is a subset of YAML's).
fn quoted(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The starter config: commented, anonymous on loopback, prefixed names.
pub fn render(name: &str, entries: &[Entry]) -> String {
    let mut out = String::from(
        "# Generated by `vmcp init`. Review it, then: vmcp validate --config FILE\n\
         #                                        vmcp serve --config FILE\n\
         # Every key: docs/configuration.md.\n\n",
    );
    out.push_str("# name: this gateway's name (serverInfo.name for clients).\n");
    out.push_str(&format!("name: {}\n\n", quoted(name)));
    out.push_str(
        "# incomingAuth: how clients authenticate to vmcp. anonymous is for local use: vmcp\n\
         # serves anonymous clients on loopback addresses only. For production use\n\
         # type: oidc (docs/auth.md).\n\
         incomingAuth:\n  type: anonymous\n\n\
         # outgoingAuth: how vmcp authenticates to each backend (docs/auth.md). None yet.\n\
         outgoingAuth:\n  source: inline\n\n\
         # aggregation: every tool and prompt is named after its backend, so names never\n\
         # collide; calls reach the backend under the original name.\n\
         aggregation:\n  conflictResolution: prefix\n  conflictResolutionConfig:\n    \
         prefixFormat: \"{workload}_\"\n\n",
    );
    out.push_str("# backends: the MCP servers behind vmcp.\n");
    if entries.is_empty() {
        out.push_str(
            "# Add some, e.g.:\n\
             #   - name: github\n#     transport: streamable-http\n#     url: http://127.0.0.1:8080/mcp\n\
             #   - name: files\n#     transport: stdio\n#     command: npx\n\
             #     args: [-y, \"@modelcontextprotocol/server-filesystem\", /tmp]\n\
             backends: []\n",
        );
        return out;
    }
    out.push_str("backends:\n");
    for e in entries {
        out.push_str(&format!("  - name: {}\n", quoted(&e.name)));
        match &e.spec {
            Spec::Http { transport, url } => {
                out.push_str(&format!("    transport: {transport}\n    url: {}\n", quoted(url)));
            }
            Spec::Stdio { command, args } => {
                out.push_str(&format!("    transport: stdio\n    command: {}\n", quoted(command)));
                if !args.is_empty() {
                    let args: Vec<String> = args.iter().map(|a| quoted(a)).collect();
                    out.push_str(&format!("    args: [{}]\n", args.join(", ")));
                }
            }
        }
    }
    out
}

/// Renders, checks and writes (or prints, without `output`) the starter config.
pub fn run(
    name: &str,
    backends: &[String],
    output: Option<&Path>,
    force: bool,
) -> Result<(), InitError> {
    let entries = entries(backends)?;
    let text = render(name, &entries);
    crate::config::parse(&text, "vmcp init").map_err(|e| InitError::Invalid(e.to_string()))?;
    let Some(path) = output.filter(|p| p.as_os_str() != "-") else {
        print!("{text}");
        return Ok(());
    };
    if path.exists() && !force {
        return Err(InitError::Exists(path.to_owned()));
    }
    std::fs::write(path, text).map_err(|e| InitError::Write(path.to_owned(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn urls_and_commands_become_named_backends() {
        let got = entries(&args(&[
            "http://127.0.0.1:8080/mcp",
            "https://tools.example.com/github/mcp",
            "http://legacy.local:9000/sse",
            "npx -y @modelcontextprotocol/server-everything",
            "files=/usr/bin/fs-server --root /tmp",
            "http://127.0.0.1:8081/mcp?x=1",
        ]))
        .unwrap();
        let names: Vec<&str> = got.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["mcp-8080", "github", "legacy", "server-everything", "files", "mcp-8081"],
            "{got:?}"
        );
        assert!(matches!(&got[2].spec, Spec::Http { transport: "sse", .. }));
        assert!(matches!(&got[0].spec, Spec::Http { transport: "streamable-http", .. }));
        assert_eq!(
            got[4].spec,
            Spec::Stdio { command: "/usr/bin/fs-server".into(), args: args(&["--root", "/tmp"]) }
        );
    }

    #[test]
    fn the_rendered_config_validates() {
        let e = entries(&args(&["a=http://127.0.0.1:1/mcp", "b=my-server --flag \\x"])).unwrap();
        let text = render("demo \"q\"", &e);
        let cfg = crate::config::parse(&text, "t").unwrap();
        assert_eq!(cfg.backends.len(), 2);
        let empty = render("demo", &[]);
        assert!(crate::config::parse(&empty, "t").unwrap().backends.is_empty());
    }

    #[test]
    fn bad_input_is_named() {
        assert!(matches!(entries(&args(&["x=a", "x=b"])), Err(InitError::Duplicate(_))));
        assert!(matches!(entries(&args(&["b@d=cmd"])), Err(InitError::BadName(_))));
        assert!(matches!(entries(&args(&["name="])), Err(InitError::Empty(_))));
        assert!(matches!(entries(&args(&["run 'a b'"])), Err(InitError::Quoted(_))));
    }
}
