//! Tests of `authserver-config.yaml`: ToolHive files load unchanged, every rule's exact located
//! message, and the checks between the two files.

mod cross;
mod parse;
mod rules;
mod upstream;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::{Config, ConfigError, parse_with_auth_server};

/// A main config that fits an authorization server at `https://vmcp.example.com` (lines 1-16).
pub(super) const MAIN: &str = "\
name: gw
backends:
  - name: github
    transport: streamable-http
    url: https://api.githubcopilot.com/mcp
incomingAuth:
  type: oidc
  oidc:
    issuer: https://vmcp.example.com
    audience: https://vmcp.example.com/mcp
outgoingAuth:
  backends:
    github:
      type: upstream_inject
      upstreamInject:
        providerName: github
";

/// An authorization server file with one OAuth 2.0 upstream named `github` (lines 1-12).
pub(super) const AUTH: &str = "\
issuer: https://vmcp.example.com
allowed_audiences: [https://vmcp.example.com/mcp]
upstreams:
  - name: github
    type: oauth2
    oauth2_config:
      authorization_endpoint: https://github.com/login/oauth/authorize
      token_endpoint: https://github.com/login/oauth/access_token
      client_id: Iv1.0123456789abcdef
      client_secret_env_var: GITHUB_CLIENT_SECRET
      userinfo:
        endpoint_url: https://api.github.com/user
";

/// Parses `main` with `auth` as `authserver-config.yaml`.
pub(super) fn load(main: &str, auth: &str) -> Result<Config, ConfigError> {
    parse_with_auth_server(main, "config.yaml", auth, "authserver-config.yaml")
}

/// Every problem as printed (`FILE:LINE:COL: path: message`); panics when accepted.
pub(super) fn problems(main: &str, auth: &str) -> Vec<String> {
    match load(main, auth) {
        Ok(_) => panic!("accepted:\n{auth}"),
        Err(e) => e.problems().iter().map(ToString::to_string).collect(),
    }
}

/// The problems of `auth` with [`MAIN`].
pub(super) fn auth_problems(auth: &str) -> Vec<String> {
    problems(MAIN, auth)
}

/// Parses, panicking on any problem.
pub(super) fn ok(main: &str, auth: &str) -> Config {
    match load(main, auth) {
        Ok(cfg) => cfg,
        Err(e) => panic!("{e}\n---\n{auth}"),
    }
}

/// A fresh empty directory under the system temp directory.
pub(super) fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "vmcp-authserver-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
