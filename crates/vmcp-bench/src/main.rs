//! `vmcp-bench`: what vmcp adds, measured against direct in one run.
//!
//! By default (`--preset call`) it starts a `vmcp-fixture` (streamable HTTP, JSON responses, both
//! eras) and a `vmcp serve` with that fixture as its only backend (`fx`, so its tools are
//! `fx_*`), both on loopback. Then, for each concurrency level, runs a closed-loop load of
//! `tools/call echo` against the fixture directly and `tools/call fx_echo` through vmcp, and
//! reports throughput, latency percentiles, the latency vmcp adds, CPU per request and vmcp's
//! memory, as a Markdown table (and JSON with `--out`). Every reply is checked; failures are
//! counted. Every process started is stopped at the end, whatever happens.
//!
//! The other presets (`list`, `init`, `sessions`, `auth`; see the `presets` module) measure the
//! other issue-12 figures the same way, and `--url`/`--direct-url` drive any MCP endpoint
//! instead of starting anything. `vmcp-bench pressure` measures instead a healthy client's
//! latency before and while each `server.limits` bound is held hit by an aggressor (see the
//! `pressure` module).

mod idp;
mod load;
mod presets;
mod pressure;
mod procs;
mod redis_info;
mod report;
mod sessions;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use reqwest::header::{HeaderName, HeaderValue};

use crate::load::Era;
use crate::presets::Preset;

/// Load-tests a vmcp-fixture directly and through vmcp, over loopback.
#[derive(Debug, Parser)]
#[command(name = "vmcp-bench", version, about)]
pub struct Args {
    /// Another mode than the default comparison.
    #[command(subcommand)]
    command: Option<Mode>,
    /// The `vmcp` binary [default: next to this executable].
    #[arg(long, global = true)]
    pub vmcp: Option<PathBuf>,
    /// The `vmcp-fixture` binary [default: next to this executable].
    #[arg(long, global = true)]
    pub fixture: Option<PathBuf>,
    /// What to measure: `call` (tools/call), `list` (tools/list of 20 backends x 100 tools vs one
    /// backend of 2,000), `init` (Legacy handshake through 5 backends vs direct), `sessions`
    /// (memory of N idle Legacy sessions), `auth` (tools/call with OIDC tokens vs anonymous).
    #[arg(long, value_enum, default_value_t = Preset::Call)]
    pub preset: Preset,
    /// Measured time per target and concurrency level (e.g. `10s`, `500ms`, `1m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured warm-up before each measurement.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Concurrency levels (workers, each with its own connection and session).
    #[arg(long, default_value = "1,16,64", value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: Vec<u16>,
    /// Protocol era the workers speak (`init` and `sessions` are Legacy only).
    #[arg(long, value_enum, default_value_t = Era::Legacy)]
    pub era: Era,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// YAML appended to every generated vmcp config (top-level blocks such as `telemetry`,
    /// `audit`, `rateLimiting`, or `incomingAuth`), to measure what they cost.
    #[arg(long)]
    pub config_extra: Option<PathBuf>,
    /// Drive this MCP endpoint (another gateway, or a vmcp started elsewhere) instead of starting
    /// vmcp. With `--url` or `--direct-url`, nothing is started and only the given URLs are
    /// measured.
    #[arg(long)]
    pub url: Option<String>,
    /// The direct baseline to compare `--url` with (e.g. the backend behind it).
    #[arg(long)]
    pub direct_url: Option<String>,
    /// `NAME:VALUE` header on every request to `--url` (repeatable), e.g. `Authorization: Bearer
    /// ...`. Values are never printed.
    #[arg(long = "header", value_parser = parse_header)]
    pub headers: Vec<HeaderArg>,
    /// `NAME:VALUE` header on every request to `--direct-url` (repeatable).
    #[arg(long = "direct-header", value_parser = parse_header)]
    pub direct_headers: Vec<HeaderArg>,
    /// The process serving `--url`, for its CPU per call and memory.
    #[arg(long)]
    pub pid: Option<i32>,
    /// The process serving `--direct-url`, for its CPU per call.
    #[arg(long)]
    pub direct_pid: Option<i32>,
    /// `call`/`auth`: the tool called through the gateway; its reply must be `Echo: <message>`.
    #[arg(long, default_value = "fx_echo")]
    pub tool: String,
    /// `call`/`auth`: the tool called directly.
    #[arg(long, default_value = "echo")]
    pub direct_tool: String,
    /// `list` with `--url`: the number of tools every reply must list [default: any, not zero].
    #[arg(long)]
    pub expect_tools: Option<usize>,
    /// `list` with `--direct-url`: the same for the direct baseline.
    #[arg(long)]
    pub direct_expect_tools: Option<usize>,
    /// Backends behind the started vmcp [default: 20 for `list`, 5 for `init`, 1 otherwise].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=200))]
    pub backends: Option<u16>,
    /// `list`: synthetic tools per backend (the direct fixture serves backends x this).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub tools_per_backend: u32,
    /// `sessions`: idle Legacy sessions to open.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=2_000_000))]
    pub sessions: u32,
    /// `sessions`: connections opening (and then closing) them in parallel.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub openers: u16,
    /// `sessions`: vmcp replicas to start (sessions are spread over them, each opener's
    /// connection to one replica); give them a shared `sessionStorage` with `--config-extra`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub replicas: u16,
    /// `sessions`: the Redis (`host:port`) whose `used_memory` to report per session.
    #[arg(long)]
    pub redis: Option<String>,
    /// `auth`: users (principals) whose tokens the workers use, round-robin.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub users: u16,
}

/// A `--header NAME:VALUE`; its value is marked sensitive and never shown.
#[derive(Clone)]
pub struct HeaderArg {
    pub name: HeaderName,
    pub value: HeaderValue,
}

impl std::fmt::Debug for HeaderArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: [redacted]", self.name)
    }
}

fn parse_header(s: &str) -> Result<HeaderArg, String> {
    let (name, value) = s.split_once(':').ok_or("expected NAME:VALUE")?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("{:?} is not a header name", name.trim()))?;
    let mut value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of {name} is not a valid header value"))?;
    value.set_sensitive(true);
    Ok(HeaderArg { name, value })
}

#[derive(Debug, clap::Subcommand)]
enum Mode {
    /// A healthy client's latency before and while each `server.limits` bound is hit.
    Pressure(pressure::PressureArgs),
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?}: expected e.g. 10s, 500ms, 1m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unit must be ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// A binary given on the command line, or the one next to this executable.
pub fn binary(given: Option<PathBuf>, name: &str) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(p) => p,
        None => std::env::current_exe()
            .context("locating this executable")?
            .parent()
            .ok_or_else(|| anyhow!("this executable has no directory"))?
            .join(name),
    };
    if !path.is_file() {
        bail!(
            "no {name} at {} (build it with `cargo build --release -p vmcp -p vmcp-fixture`, or pass --{})",
            path.display(),
            name.trim_start_matches("vmcp-")
        );
    }
    Ok(path)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(Mode::Pressure(p)) = &args.command {
        return pressure::main(args.vmcp.clone(), args.fixture.clone(), p).await;
    }
    // Ctrl-C drops the run, and with it the servers' guards.
    let result = tokio::select! {
        r = presets::bench(&args) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vmcp-bench: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    print!("{}", report::markdown(&report));
    if let Some(out) = &args.out
        && let Err(e) = report::write_json(out, &report)
    {
        eprintln!("vmcp-bench: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    let errors = report.errors();
    if errors > 0 {
        eprintln!("vmcp-bench: {errors} requests failed");
        return std::process::ExitCode::from(3);
    }
    std::process::ExitCode::SUCCESS
}
