//! The `vmcp` binary: parse the command line, set up logging, run.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, reload};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = vmcp::cli::Cli::parse();
    let from_env = EnvFilter::try_from_env("VMCP_LOG").ok();
    // `VMCP_LOG` and `--debug` fix the filter; otherwise the config's `operational.logLevel`,
    // read after logging is up, may still raise it to debug.
    let fixed = from_env.is_some() || cli.debug;
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(cli.default_log_level()));
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();
    let raise: vmcp::cli::DebugSwitch = if fixed {
        None
    } else {
        Some(Box::new(move || {
            if let Err(e) = handle.reload(EnvFilter::new("debug")) {
                eprintln!("vmcp: cannot switch logging to debug: {e}");
            }
        }))
    };
    match vmcp::cli::run(cli, raise).await {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("vmcp: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
