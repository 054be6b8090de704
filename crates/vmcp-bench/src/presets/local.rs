//! Each preset's processes on loopback: the fixtures, the vmcp config written for them, and the
//! targets driven.
//!
//! - `call`: one fixture; `direct` calls `echo` on it, `vmcp` calls `fx_echo` through a vmcp
//!   with it as backend `fx` (the original comparison).
//! - `list`: `--backends` (20) fixtures with `--tools-per-backend` (100) synthetic tools each
//!   behind vmcp, each filtered to its synthetic tools so vmcp lists exactly backends x tools;
//!   `direct` is one more fixture with all of them (it also lists its 37 built-in tools: the
//!   fixture cannot leave them out). Every reply must list the expected count.
//! - `init`: `--backends` (5) fixtures behind vmcp; `direct` is one more fixture.
//! - `sessions`: one fixture behind a vmcp whose `maxSessions` and `maxSessionsPerPrincipal`
//!   are raised to `--sessions` + 64 (all anonymous clients are one principal).
//! - `auth`: one fixture behind two vmcps, one anonymous (`vmcp`) and one verifying ES256 JWTs
//!   from an in-process OIDC provider (`vmcp-oidc`, `--users` principals whose tokens the workers
//!   use in turn).
//!
//! Fixtures answer with JSON and serve both eras. `--config-extra` is appended to every vmcp
//! config.

use std::time::Duration;

use anyhow::Context;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

use super::{Preset, Setup, Target};
use crate::Args;
use crate::idp::{self, LocalIdp};
use crate::load::{Op, Workload};
use crate::procs::Server;

/// How long a fixture may take to print its ready line.
const FIXTURE_READY: Duration = Duration::from_secs(20);
/// How long vmcp may take to discover its backends and print its summary.
const VMCP_READY: Duration = Duration::from_secs(60);
/// Sessions allowed beyond `--sessions` (the readiness probe's, and slack).
const SESSION_SLACK: u32 = 64;

/// `backends:` entries: the first is `fx` (so `fx_echo` stays the call target), then `b01`, ...
fn backends_yaml(urls: &[String]) -> String {
    let mut s = String::from("backends:\n");
    for (i, url) in urls.iter().enumerate() {
        let name = backend_name(i);
        s.push_str(&format!("  - name: {name}\n    transport: streamable-http\n    url: {url}\n"));
    }
    s
}

fn backend_name(i: usize) -> String {
    if i == 0 { "fx".to_owned() } else { format!("b{i:02}") }
}

/// Keeps only each backend's synthetic tools, so vmcp lists backends x `tools` of them.
fn synthetic_filter(backends: usize, tools: u32) -> String {
    let names: Vec<String> = (0..tools).map(|i| format!("synthetic_{i}")).collect();
    let list = names.join(", ");
    let mut s = String::from("aggregation:\n  tools:\n");
    for i in 0..backends {
        s.push_str(&format!("    - backend: {}\n      filter: [{list}]\n", backend_name(i)));
    }
    s
}

fn fixture(bin: &std::path::Path, tools: Option<u32>) -> anyhow::Result<Server> {
    let n = tools.map(|t| t.to_string());
    let mut a = vec!["--json-response", "--era", "both", "--name", "bench-fixture"];
    if let Some(n) = &n {
        a.extend(["--tools", n.as_str()]);
    }
    Server::fixture_with(bin, &a, FIXTURE_READY)
}

/// Names of the `sessions` preset's replicas after the first (`--replicas` is at most 16).
const REPLICA_NAMES: [&str; 15] = [
    "vmcp-2", "vmcp-3", "vmcp-4", "vmcp-5", "vmcp-6", "vmcp-7", "vmcp-8", "vmcp-9", "vmcp-10",
    "vmcp-11", "vmcp-12", "vmcp-13", "vmcp-14", "vmcp-15", "vmcp-16",
];

fn target(name: &'static str, url: &str, op: Op, args: &Args) -> Target {
    Target {
        name,
        work: Workload { url: url.to_owned(), op, era: args.era, headers: Vec::new() },
        gateway: None,
        backends: Vec::new(),
    }
}

/// Starts what `args.preset` needs and returns its targets.
pub fn setup(args: &Args) -> anyhow::Result<Setup> {
    let vmcp_bin = crate::binary(args.vmcp.clone(), "vmcp")?;
    let fixture_bin = crate::binary(args.fixture.clone(), "vmcp-fixture")?;
    let extra = match &args.config_extra {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => String::new(),
    };
    let backends = usize::from(args.backends.unwrap_or(match args.preset {
        Preset::List => 20,
        Preset::Init => 5,
        _ => 1,
    }));
    let tools = args.tools_per_backend;
    let mut s = Setup {
        targets: Vec::new(),
        pairs: vec![("direct", "vmcp", args.preset.goal())],
        notes: Vec::new(),
        memory_pid: None,
        status_url: None,
        servers: Vec::new(),
        idp: None,
    };
    // Processes are pushed into `s` as they start, so an error stops those already running.
    let synthetic = (args.preset == Preset::List).then_some(tools);
    let mut backend_urls = Vec::new();
    let mut backend_pids = Vec::new();
    for _ in 0..backends {
        let f = fixture(&fixture_bin, synthetic)?;
        backend_urls.push(f.url.clone());
        backend_pids.push(f.pid());
        s.servers.push(f);
    }
    // The direct fixture: the first backend, or one of its own where it must differ.
    let (direct_url, direct_pid) = match args.preset {
        Preset::List | Preset::Init => {
            let all = synthetic.map(|t| t.saturating_mul(backends as u32));
            let f = fixture(&fixture_bin, all)?;
            let got = (f.url.clone(), f.pid());
            s.servers.push(f);
            got
        }
        _ => (backend_urls[0].clone(), backend_pids[0]),
    };
    let mut yaml = format!("name: vmcp-bench\n{}", backends_yaml(&backend_urls));
    match args.preset {
        Preset::List => yaml.push_str(&synthetic_filter(backends, tools)),
        Preset::Sessions => {
            let max = args.sessions.saturating_add(SESSION_SLACK);
            yaml.push_str(&format!(
                "server:\n  limits:\n    maxSessions: {max}\n    maxSessionsPerPrincipal: {max}\n"
            ));
        }
        _ => {}
    }
    let vmcp = Server::vmcp_config(&vmcp_bin, &format!("{yaml}{extra}"), VMCP_READY)?;
    let (vmcp_url, vmcp_pid) = (vmcp.url.clone(), vmcp.pid());
    s.memory_pid = Some(vmcp_pid);
    s.status_url = Some(vmcp_url.trim_end_matches("/mcp").to_owned() + "/status");
    s.servers.push(vmcp);

    let expect = (backends as u32).saturating_mul(tools) as usize;
    let (direct_op, vmcp_op) = match args.preset {
        Preset::Call | Preset::Auth => {
            (Op::Call { tool: args.direct_tool.clone() }, Op::Call { tool: args.tool.clone() })
        }
        // The direct count (with the fixture's built-in tools) is learnt by the first probe.
        Preset::List => (Op::List { expect: None }, Op::List { expect: Some(expect) }),
        Preset::Init | Preset::Sessions => (Op::Init, Op::Init),
    };
    let mut direct = target("direct", &direct_url, direct_op, args);
    direct.backends = vec![direct_pid];
    let mut via = target("vmcp", &vmcp_url, vmcp_op.clone(), args);
    via.gateway = Some(vmcp_pid);
    via.backends = backend_pids.clone();
    if args.preset != Preset::Sessions {
        s.notes.push(format!("direct: vmcp-fixture {direct_url} (pid {direct_pid})"));
    }
    s.notes.push(format!(
        "vmcp: {vmcp_url} (pid {vmcp_pid}), {backends} fixture backend(s){}",
        match args.preset {
            Preset::List => format!(", {tools} synthetic tools each (filtered to them)"),
            Preset::Sessions =>
                format!(", maxSessions(PerPrincipal) {}", args.sessions + SESSION_SLACK),
            _ => String::new(),
        }
    ));
    if args.preset != Preset::Sessions {
        s.targets.push(direct);
    }
    s.targets.push(via);

    if args.preset == Preset::Auth {
        let idp = LocalIdp::start()?;
        let auth = format!(
            "incomingAuth:\n  type: oidc\n  oidc:\n    issuer: {}\n    audience: {}\n",
            idp.issuer,
            idp::AUDIENCE
        );
        let vmcp = Server::vmcp_config(&vmcp_bin, &format!("{yaml}{auth}{extra}"), VMCP_READY)?;
        let mut oidc = target("vmcp-oidc", &vmcp.url, vmcp_op, args);
        oidc.gateway = Some(vmcp.pid());
        oidc.backends = backend_pids;
        for u in 0..args.users {
            let token = idp.token(&format!("user-{u}"))?;
            let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
                .context("a token that is not a header value")?;
            v.set_sensitive(true);
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, v);
            oidc.work.headers.push(h);
        }
        s.notes.push(format!(
            "vmcp-oidc: {} (pid {}), incomingAuth oidc (ES256, in-process provider), {} users' tokens round-robin",
            vmcp.url,
            vmcp.pid(),
            args.users
        ));
        s.targets.push(oidc);
        s.pairs.push(("vmcp", "vmcp-oidc", "req/s >= 0.9"));
        s.servers.push(vmcp);
        s.idp = Some(idp);
    }
    if args.preset == Preset::Sessions {
        s.pairs.clear();
        for name in REPLICA_NAMES.iter().take(usize::from(args.replicas).saturating_sub(1)) {
            let vmcp = Server::vmcp_config(&vmcp_bin, &format!("{yaml}{extra}"), VMCP_READY)?;
            let mut replica = target(name, &vmcp.url, Op::Init, args);
            replica.gateway = Some(vmcp.pid());
            s.notes.push(format!("{name}: {} (pid {}), same config", vmcp.url, vmcp.pid()));
            s.targets.push(replica);
            s.servers.push(vmcp);
        }
    }
    Ok(s)
}
