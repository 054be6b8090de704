//! `vmcp-fixture`: the MCP server vmcp's tests, conformance runs and demos use
//! as a backend.
//!
//! This module only parses the command line and wires the handler
//! ([`server::Fixture`]) to a transport: stdio, or streamable HTTP at `/mcp`.
//! Everything the server *does* lives in `server.rs` (protocol surface),
//! `conformance.rs` (what the official conformance suite calls) and
//! `extra.rs` (tools for vmcp's own tests and benchmarks).

mod conformance;
mod extra;
mod server;

use std::{io::Write, sync::Arc};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use rmcp::{
    ServiceExt,
    transport::{
        StreamableHttpServerConfig, StreamableHttpService,
        streamable_http_server::session::local::LocalSessionManager,
    },
};

use crate::server::{Fixture, Settings, Shared};

#[derive(Parser, Debug)]
#[command(name = "vmcp-fixture", version, about = "MCP server fixture for vmcp")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Server name reported in serverInfo.
    #[arg(long, global = true, default_value = "vmcp-fixture")]
    name: String,
    /// Which protocol era(s) to serve.
    #[arg(long, global = true, value_enum, default_value_t = Era::Both)]
    era: Era,
    /// Number of synthetic echo tools (`synthetic_0..N-1`) to add, for benchmarks.
    #[arg(long, global = true, default_value_t = 0)]
    tools: usize,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve MCP over stdin/stdout.
    Stdio,
    /// Serve MCP over streamable HTTP at `/mcp`.
    Http {
        /// Port to listen on; 0 picks a free one.
        #[arg(long)]
        port: u16,
        /// Address to bind.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Answer POSTs with plain JSON instead of an SSE stream when possible.
        #[arg(long)]
        json_response: bool,
    },
}

/// Protocol eras the fixture can serve.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Era {
    /// Only `initialize`-based sessions (protocol versions up to 2025-11-25).
    Legacy,
    /// Only stateless 2026-07-28 requests.
    Modern,
    /// Both, as rmcp allows on one endpoint.
    Both,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Logs go to stderr: stdout is the protocol channel for stdio and the
    // "listening on" line for HTTP, and tests parse both.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    let shared = Arc::new(Shared::new(Settings {
        name: cli.name,
        era: cli.era,
        synthetic_tools: cli.tools,
    }));

    match cli.command {
        Command::Stdio => {
            let service = Fixture::new(shared)
                .serve(rmcp::transport::stdio())
                .await
                .context("starting the stdio server")?;
            service.waiting().await.context("serving stdio")?;
        }
        Command::Http {
            port,
            host,
            json_response,
        } => {
            let listener = tokio::net::TcpListener::bind((host.as_str(), port))
                .await
                .with_context(|| format!("binding {host}:{port}"))?;
            let addr = listener.local_addr().context("reading the bound address")?;
            let router = http_router(shared, json_response);
            // Tests wait for exactly this line before connecting.
            let host_part = if addr.is_ipv6() {
                format!("[{}]", addr.ip())
            } else {
                addr.ip().to_string()
            };
            let mut stdout = std::io::stdout();
            writeln!(
                stdout,
                "listening on http://{host_part}:{}/mcp",
                addr.port()
            )?;
            stdout.flush()?;
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
                .context("serving HTTP")?;
        }
    }
    Ok(())
}

/// Builds the axum router serving the fixture at `/mcp`.
pub fn http_router(shared: Arc<Shared>, json_response: bool) -> axum::Router {
    let era = shared.settings.era;
    let config = StreamableHttpServerConfig::default()
        // The modern era has no sessions at all: every request is stateless.
        .with_legacy_session_mode(era != Era::Modern)
        .with_json_response(json_response)
        // Short keep-alives keep idle streams visible in tests without noise.
        .with_sse_keep_alive(Some(std::time::Duration::from_secs(15)));
    let service = StreamableHttpService::new(
        move || Ok(Fixture::new(shared.clone())),
        LocalSessionManager::default().into(),
        config,
    );
    axum::Router::new().nest_service("/mcp", service)
}
