//! `vmcp-bench pressure`: a healthy client's latency while each `server.limits` bound is hit.
//!
//! Starts an in-process OIDC provider, a `vmcp-fixture` with JSON responses (`fx`), a Legacy SSE
//! fixture for relayed and parked calls (`sl`), and a `vmcp serve` requiring tokens from that
//! provider with small limits ([`Limits`]). A healthy client (principal `healthy`, its own
//! Legacy session) calls `fx_echo` back to back. For each bound: the healthy client is measured
//! for `--duration` (*before*); an aggressor (principals `aggressor-N`) takes what the bound
//! allows until the gateway refuses, and keeps probing at `--rate`; once the first refusal is
//! seen the healthy client is measured again (*during*); then the aggressor stops and ends what
//! it holds, and the gateway is polled (`/status`) until it holds nothing of it.
//!
//! Everything started is stopped whatever happens: the processes and the provider on drop, the
//! aggressor's tasks when their handles drop. Waits poll, each with a deadline.

mod aggressor;
mod client;
mod healthy;
mod relays;
mod report;
mod scenarios;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::time::Instant;

pub use aggressor::Bound;
use aggressor::{Ctx, Limits, Tally};
use client::Mcp;
use report::{AggressorCount, Row};
pub use report::{Report, markdown};

use crate::procs::Server;

/// How long an aggressor may take to hit its bound.
const HIT_WITHIN: Duration = Duration::from_secs(60);
/// How long an aggressor may take to end what it holds once told to stop.
const STOP_WITHIN: Duration = Duration::from_secs(30);
/// How long the gateway may take to let go of what an aggressor held.
const SETTLE_WITHIN: Duration = Duration::from_secs(45);
/// Polling step of the waits above.
const POLL: Duration = Duration::from_millis(20);

/// Options of `vmcp-bench pressure`.
#[derive(Debug, clap::Args)]
pub struct PressureArgs {
    /// Measured time of the healthy client before, and again during, each bound's pressure.
    #[arg(long, default_value = "5s", value_parser = crate::parse_duration)]
    pub duration: Duration,
    /// Unmeasured healthy calls once at the start.
    #[arg(long, default_value = "1s", value_parser = crate::parse_duration)]
    pub warmup: Duration,
    /// Aggressor probes per second once a bound is hit (each probe one request or stream).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub rate: u32,
    /// Only these bounds [default: all].
    #[arg(long, value_delimiter = ',', value_enum)]
    pub bounds: Vec<Bound>,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The generated config: an OIDC front door, `fx` and `sl`, and `limits`.
fn config(issuer: &str, fx: &str, sl: &str, limits: &Limits) -> String {
    format!(
        "name: vmcp-bench-pressure\n\
         incomingAuth:\n  type: oidc\n  oidc:\n    issuer: {issuer}\n    audience: {}\n\
         backends:\n  - name: fx\n    transport: streamable-http\n    url: {fx}\n\
         \x20 - name: sl\n    transport: streamable-http\n    url: {sl}\n{}",
        crate::idp::AUDIENCE,
        limits.yaml()
    )
}

/// `/status` of the gateway, if it answers.
async fn status(http: &reqwest::Client, status_url: &str) -> Option<Value> {
    let r = http.get(status_url).timeout(Duration::from_secs(5)).send().await.ok()?;
    r.json().await.ok()
}

/// Polls `/status` until the gateway holds only the healthy client's session.
async fn settle(http: &reqwest::Client, status_url: &str) -> bool {
    let deadline = Instant::now() + SETTLE_WITHIN;
    while Instant::now() < deadline {
        if let Some(s) = status(http, status_url).await
            && s["sessions"].as_u64() == Some(1)
            && s["inFlight"].as_u64() == Some(0)
            && s["listenStreams"].as_u64() == Some(0)
        {
            return true;
        }
        tokio::time::sleep(POLL).await;
    }
    false
}

/// The healthy client's session; retried until the gateway serves (it may still be binding its
/// router right after printing its summary).
async fn healthy_client(url: &str, token: String) -> anyhow::Result<Mcp> {
    let http = reqwest::Client::builder()
        .http1_only()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .build()
        .context("building the healthy client")?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut c = Mcp::new(&http, url, Some(token.clone()));
        let got = c.initialize(false).await;
        match got {
            Ok((200, _)) if c.has_session() => return Ok(c),
            _ if Instant::now() < deadline => tokio::time::sleep(POLL).await,
            Ok((s, m)) => bail!("the healthy client's initialize: HTTP {s}: {m}"),
            Err(e) => return Err(e.context("the healthy client's initialize")),
        }
    }
}

/// Runs the pressure scenarios against freshly started servers.
pub async fn run(
    vmcp_bin: &Path,
    fixture_bin: &Path,
    args: &PressureArgs,
) -> anyhow::Result<Report> {
    let bounds = if args.bounds.is_empty() { Bound::ALL.to_vec() } else { args.bounds.clone() };
    let limits = Limits::default();
    let idp = Arc::new(crate::idp::LocalIdp::start()?);
    let fx = Server::fixture(fixture_bin, Duration::from_secs(20))?;
    let sl_args = ["--era", "legacy", "--name", "bench-relay"];
    let sl = Server::fixture_with(fixture_bin, &sl_args, Duration::from_secs(20))?;
    let yaml = config(&idp.issuer, &fx.url, &sl.url, &limits);
    let vmcp = Server::vmcp_config(vmcp_bin, &yaml, Duration::from_secs(30))?;
    eprintln!("vmcp {} (pid {}), fixtures {} and {}", vmcp.url, vmcp.pid(), fx.url, sl.url);
    let status_url = vmcp.url.trim_end_matches("/mcp").to_owned() + "/status";

    let healthy = healthy_client(&vmcp.url, idp.token("healthy")?).await?;
    let ctx = Arc::new(Ctx {
        url: vmcp.url.clone(),
        http: client::http_client()?,
        idp: idp.clone(),
        limits: limits.clone(),
        rate: args.rate,
    });
    let warm = healthy::measure(&healthy, args.warmup).await;
    if warm.errors > 0 {
        bail!("the healthy client fails with no pressure: {:?}", warm.error_samples);
    }

    let mut rows = Vec::new();
    for bound in bounds {
        eprintln!("{}: {} before, then {}", bound.key(), fmt(args.duration), bound.attack());
        let row = scenario(bound, &ctx, &healthy, &status_url, args).await;
        if let Some(e) = &row.failure {
            eprintln!("  {e}");
        }
        rows.push(row);
    }
    drop(vmcp);
    Ok(Report::new(args, limits, rows))
}

/// `vmcp-bench pressure`: the report on stdout; exit status 3 if a bound was not hit or the
/// healthy client failed.
pub async fn main(
    vmcp: Option<PathBuf>,
    fixture: Option<PathBuf>,
    p: &PressureArgs,
) -> std::process::ExitCode {
    let run = async {
        let vmcp = crate::binary(vmcp, "vmcp")?;
        let fixture = crate::binary(fixture, "vmcp-fixture")?;
        run(&vmcp, &fixture, p).await
    };
    let result = tokio::select! {
        r = run => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vmcp-bench pressure: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    print!("{}", markdown(&report));
    if let Some(out) = &p.out {
        let written = serde_json::to_string_pretty(&report)
            .context("serializing the results")
            .and_then(|j| std::fs::write(out, j + "\n").context("writing the results"));
        if let Err(e) = written {
            eprintln!("vmcp-bench pressure: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    }
    if !report.problems().is_empty() {
        return std::process::ExitCode::from(3);
    }
    std::process::ExitCode::SUCCESS
}

fn fmt(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// One bound: healthy before, aggressor up, healthy during, aggressor down, gateway settled.
async fn scenario(
    bound: Bound,
    ctx: &Arc<Ctx>,
    healthy: &Mcp,
    status_url: &str,
    args: &PressureArgs,
) -> Row {
    let before = healthy::measure(healthy, args.duration).await;
    let tally = Arc::new(Tally::default());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut task = tokio::spawn(scenarios::run(bound, ctx.clone(), tally.clone(), stop_rx));
    let mut failure = None;

    // Wait for the first refusal (or the aggressor giving up).
    let deadline = Instant::now() + HIT_WITHIN;
    let hit = loop {
        if tally.refusals.load(Ordering::Relaxed) > 0 {
            break true;
        }
        if task.is_finished() || Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(POLL).await;
    };
    let (during, at_start, gateway) = if hit {
        let at_start = AggressorCount::of(&tally);
        let during = healthy::measure(healthy, args.duration).await;
        let gateway = status(&ctx.http, status_url).await;
        (Some(during), Some(at_start), gateway)
    } else {
        failure = Some(format!("{} was not hit within {HIT_WITHIN:?}", bound.key()));
        (None, None, None)
    };
    let _ = stop.send(true);
    match tokio::time::timeout(STOP_WITHIN, &mut task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => {
            failure.get_or_insert_with(|| format!("aggressor: {e:#}"));
        }
        Ok(Err(e)) => {
            failure.get_or_insert_with(|| format!("aggressor task: {e}"));
        }
        Err(_) => {
            task.abort();
            failure.get_or_insert_with(|| format!("aggressor did not stop within {STOP_WITHIN:?}"));
        }
    }
    let end = AggressorCount::of(&tally);
    let settled = settle(&ctx.http, status_url).await;
    Row::new(bound, &ctx.limits, before, during, at_start, end, gateway, settled, &tally, failure)
}
