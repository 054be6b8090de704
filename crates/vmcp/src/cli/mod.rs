//! The command line: `vmcp serve`, `vmcp validate`, `vmcp init`, `vmcp version`, with
//! ToolHive's global `--config` and `--debug`.
//!
//! This is the composition root: the config is loaded and split here, and each part gets only its
//! own piece.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::catalog::live::settle;
use crate::config;
use crate::gateway::Gateway;
use crate::http::server::Server;

mod init;
pub mod reload;
mod shutdown;

/// vmcp: many MCP servers behind one endpoint.
#[derive(Debug, Parser)]
#[command(name = "vmcp", version, about)]
pub struct Cli {
    /// Configuration file (YAML); before or after the subcommand, as in ToolHive's `vmcp`.
    /// For `init`, where to write the starter config (default: standard output).
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// Log at debug level (`VMCP_LOG`, when set, wins).
    #[arg(long, global = true)]
    pub debug: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port to listen on (0 picks a free one).
        #[arg(long, short, default_value_t = 4483)]
        port: u16,
        /// Idle time after which a session ends (Go duration, e.g. "30m"); overrides
        /// `server.limits.sessionIdleTimeout`.
        #[arg(long, value_parser = parse_ttl)]
        session_ttl: Option<Duration>,
        /// Write audit events (ToolHive's switch): with ToolHive's defaults to standard output
        /// when the config has no `audit` block, else with that block's settings (the flag wins
        /// over its `enabled: false`).
        #[arg(long)]
        enable_audit: bool,
        /// Reload the config when the file's content changes (checked every 2 seconds), as on
        /// SIGHUP. Sees Kubernetes ConfigMap updates (symlink swaps) too.
        #[arg(long, env = "VMCP_WATCH_CONFIG")]
        watch_config: bool,
    },
    /// Check a configuration file, and `authserver-config.yaml` beside it when present, and exit
    /// (status 0 when valid, 1 when not).
    Validate,
    /// Write a commented starter configuration for the given backends: each a URL
    /// (`http(s)://…`, a path ending in `/sse` is legacy HTTP+SSE) or a command line (stdio),
    /// optionally prefixed `NAME=`.
    Init {
        /// Backends, e.g. `http://127.0.0.1:8080/mcp` or `files=npx -y @scope/server /tmp`.
        backends: Vec<String>,
        /// The gateway's name.
        #[arg(long, default_value = "vmcp")]
        name: String,
        /// Where to write it (alias of `--config`; default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Print the version.
    Version,
}

impl Cli {
    /// The log filter when `VMCP_LOG` is unset.
    pub fn default_log_level(&self) -> &'static str {
        if self.debug { "debug" } else { "info" }
    }
}

/// Switches logging to debug level, for `operational.logLevel: debug`; `None` when the filter is
/// fixed by `VMCP_LOG` or `--debug`.
pub type DebugSwitch = Option<Box<dyn FnOnce() + Send>>;

/// Runs the command line; the exit code is the result.
pub async fn run(cli: Cli, debug_switch: DebugSwitch) -> anyhow::Result<u8> {
    let config = cli.config;
    let needs_config = |config: Option<PathBuf>| {
        config.ok_or_else(|| anyhow::anyhow!("no configuration file given: use --config FILE"))
    };
    match cli.command {
        Command::Version => {
            println!("vmcp {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        Command::Validate => Ok(validate(&needs_config(config)?)),
        Command::Init { backends, name, output, force } => {
            match init::run(&name, &backends, output.or(config).as_deref(), force) {
                Ok(()) => Ok(0),
                Err(e) => {
                    eprintln!("vmcp init: {e}");
                    Ok(2)
                }
            }
        }
        Command::Serve { host, port, session_ttl, enable_audit, watch_config } => {
            let path = needs_config(config)?;
            let overrides = reload::Overrides { session_ttl, enable_audit };
            let source = reload::Source::new(&path, overrides, watch_config);
            serve(&path, &host, port, source, debug_switch).await
        }
    }
}

fn validate(path: &std::path::Path) -> u8 {
    match config::load(path) {
        Ok(cfg) => {
            for w in config::validate_warnings(&cfg) {
                eprintln!("warning: {w}");
            }
            println!("{}: valid ({})", path.display(), summary(&cfg));
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// What `vmcp validate` found: "3 backends", and "authorization server: 2 upstreams" when
/// `authserver-config.yaml` was loaded.
fn summary(cfg: &config::Config) -> String {
    let backends = cfg.backends.len();
    let mut out = format!("{backends} backend{}", if backends == 1 { "" } else { "s" });
    if let Some(auth) = &cfg.auth_server {
        let n = auth.upstreams.len();
        out.push_str(&format!(
            "; authorization server: {n} upstream{}",
            if n == 1 { "" } else { "s" }
        ));
    }
    out
}

/// `--session-ttl`: a Go duration longer than zero.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    match config::duration::parse(text)? {
        d if d.is_zero() => Err("must be longer than zero".into()),
        d => Ok(d),
    }
}

async fn serve(
    path: &std::path::Path,
    host: &str,
    port: u16,
    source: reload::Source,
    debug_switch: DebugSwitch,
) -> anyhow::Result<u8> {
    let cfg = match reload::load(path, source.overrides()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(1);
        }
    };
    if config::debug_logging(&cfg)
        && let Some(raise) = debug_switch
    {
        raise();
        tracing::debug!("operational.logLevel: debug");
    }
    if source.overrides().enable_audit {
        tracing::info!("audit logging enabled (--enable-audit)");
    }
    for w in config::validate_warnings(&cfg) {
        tracing::warn!("{w}");
    }
    warn_fd_limit(cfg.server.connections.max_connections);
    let addr: SocketAddr =
        match format!("{host}:{port}").parse().or_else(|_| format!("[{host}]:{port}").parse()) {
            Ok(a) => a,
            Err(_) => {
                eprintln!("--host {host:?} is not an IP address");
                return Ok(2);
            }
        };
    let listener = match bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            return Ok(1);
        }
    };
    let local = listener.local_addr()?;
    if cfg.incoming_auth.kind == crate::config::IncomingAuthKind::Anonymous
        && !local.ip().is_loopback()
        && !cfg.incoming_auth.allow_anonymous_non_loopback
    {
        eprintln!(
            "refusing to serve anonymous clients on {local}: set incomingAuth.type: oidc, listen on \
             a loopback address, or set incomingAuth.allowAnonymousNonLoopback: true"
        );
        return Ok(2);
    }
    // Installed before any backend child exists: from here on a signal goes through the
    // orderly shutdown below, even during start-up (the default disposition would kill vmcp
    // between spawning a child and watching for signals).
    let mut signals = shutdown::Signals::install();
    let hangups = reload::Hangups::install();
    let gw = match Gateway::start(&cfg) {
        Ok(gw) => gw,
        Err(e) => {
            eprintln!("{e}");
            return Ok(1);
        }
    };
    let connections = &cfg.server.connections;
    let signal = tokio::select! {
        _ = settle(&gw.backends, &gw.catalog, Duration::from_secs(10)) => None,
        s = signals.recv() => Some(s),
    };
    let mut server = None;
    // As ToolHive's manual resolver: unresolved conflicts fail. Only the first catalog can stop
    // vmcp; later ones are left out and listed in `/status` problems.
    let conflicts = gw.catalog.load().conflicts().to_vec();
    let refused = signal.is_none() && !conflicts.is_empty();
    if refused {
        eprintln!("{}", crate::catalog::refusal(&conflicts));
    }
    let signal = match signal {
        Some(s) => Some(s),
        None if refused => None,
        None => {
            print_summary(&gw, local);
            let app = crate::http::router(gw.clone(), &cfg.server);
            server = Some(Server::start(listener, app, connections));
            tokio::spawn(reload::run(gw.clone(), source, hangups));
            Some(signals.recv().await)
        }
    };
    let signal = signal.map_or_else(|| "refused".to_owned(), |s| s.to_string());
    tracing::info!(%signal, grace = ?connections.shutdown_grace_period, "shutting down");
    // A second signal exits at once, whatever the orderly path is waiting for.
    let backends = gw.backends.clone();
    tokio::spawn(async move {
        let again = signals.recv().await;
        shutdown::force_exit(&backends, again)
    });
    // Long-lived streams (Legacy GET streams, `subscriptions/listen`) end now: they would
    // otherwise hold every drained connection until the grace period is over.
    gw.stop.cancel();
    if let Some(mut server) = server {
        server.drain().await;
        server.finish(connections.shutdown_grace_period).await;
    }
    gw.shutdown(connections.backend_shutdown_timeout).await;
    // Spans and metrics still queued go out now, within the same deadline.
    gw.layers.load().telemetry.shutdown(connections.backend_shutdown_timeout).await;
    // Backends that missed their deadline may have left a process group behind.
    shutdown::kill_stdio_groups(&gw.backends);
    tracing::info!("stopped");
    Ok(if refused { 1 } else { 0 })
}

fn print_summary(gw: &Gateway, addr: SocketAddr) {
    let counts = gw.catalog.load().counts();
    println!("vmcp {} listening on http://{addr}/mcp", env!("CARGO_PKG_VERSION"));
    for (name, b) in gw.backends.iter() {
        let state = serde_json::to_value(b.state())
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let detail = match (b.info(), b.last_error()) {
            (Some(i), _) => format!(
                "{} ({})",
                i.protocol_version,
                serde_json::to_value(i.era)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
            (None, Some(e)) => e,
            (None, None) => String::new(),
        };
        let name = &*name;
        println!("  backend {name:<20} {:<16} {state:<10} {detail}", b.transport_name());
    }
    println!(
        "  catalog: {} tools, {} resources, {} resource templates, {} prompts",
        counts.tools, counts.resources, counts.resource_templates, counts.prompts
    );
}

/// Connections the kernel queues for `accept` (capped by `net.core.somaxconn`): those arriving
/// while vmcp is at `maxConnections` or out of descriptors wait here. `TcpListener::bind` would
/// use 128 (mio's, like std's), and the handshakes of connections beyond are dropped.
const LISTEN_BACKLOG: u32 = 1024;

/// The client listener: `SO_REUSEADDR` as `TcpListener::bind` sets it, and [`LISTEN_BACKLOG`].
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Descriptors kept for all but client connections (backend connections and pipes, the
/// listener, the runtime) when `maxConnections` is checked against the open-file limit.
const FD_RESERVE: u64 = 100;

/// Warns when `maxConnections` client connections would leave fewer than [`FD_RESERVE`] of the
/// soft open-file limit (`ulimit -n`) for the rest: vmcp could run out of descriptors before it
/// reaches the cap (see docs/operations.md, client connections).
fn warn_fd_limit(max_connections: usize) {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
    let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) else { return };
    if soft != RLIM_INFINITY && (max_connections as u64).saturating_add(FD_RESERVE) > soft {
        tracing::warn!(
            max_connections,
            open_file_limit = soft,
            "server.connections.maxConnections leaves under {FD_RESERVE} of the open-file limit \
             (ulimit -n) for backends: out of descriptors, new connections wait and a request \
             needing a new backend connection fails; raise ulimit -n or lower maxConnections"
        );
    }
}
