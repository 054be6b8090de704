//! `vmcp-bench`: what vmcp adds to a tool call.
//!
//! Starts a `vmcp-fixture` (streamable HTTP, JSON responses, both eras) and a `vmcp serve` with
//! that fixture as its only backend (`fx`, so its tools are `fx_*`), both on loopback. Then, for
//! each concurrency level, runs a closed-loop load of `tools/call echo` against the fixture
//! directly and `tools/call fx_echo` through vmcp, and reports throughput, latency percentiles,
//! the latency vmcp adds, CPU per request and vmcp's memory, as a Markdown table (and JSON with
//! `--out`). Every reply is checked; failures are counted. Both servers are stopped at the end,
//! whatever happens.
//!
//! `vmcp-bench pressure` measures instead a healthy client's latency before and while each
//! `server.limits` bound is held hit by an aggressor (see the `pressure` module).

mod load;
mod pressure;
mod procs;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use serde::Serialize;

use crate::load::{Era, RunResult};
use crate::procs::{Server, cpu_time, memory_kib};

/// Load-tests a vmcp-fixture directly and through vmcp, over loopback.
#[derive(Debug, Parser)]
#[command(name = "vmcp-bench", version, about)]
struct Args {
    /// Another mode than the default comparison.
    #[command(subcommand)]
    command: Option<Mode>,
    /// The `vmcp` binary [default: next to this executable].
    #[arg(long, global = true)]
    vmcp: Option<PathBuf>,
    /// The `vmcp-fixture` binary [default: next to this executable].
    #[arg(long, global = true)]
    fixture: Option<PathBuf>,
    /// Measured time per target and concurrency level (e.g. `10s`, `500ms`, `1m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up before each measurement.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Concurrency levels (workers, each with its own connection and session).
    #[arg(long, default_value = "1,16,64", value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: Vec<u16>,
    /// Protocol era the workers speak.
    #[arg(long, value_enum, default_value_t = Era::Legacy)]
    era: Era,
    /// Also write the results as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// YAML appended to the generated vmcp config (top-level blocks such as `telemetry`,
    /// `audit`, `rateLimiting`, or `incomingAuth`), to measure what they cost.
    #[arg(long)]
    config_extra: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum Mode {
    /// A healthy client's latency before and while each `server.limits` bound is hit.
    Pressure(pressure::PressureArgs),
}

fn parse_duration(s: &str) -> Result<Duration, String> {
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

#[derive(Debug, Serialize)]
struct Report {
    vmcp_bench: &'static str,
    era: Era,
    duration_s: f64,
    warmup_s: f64,
    machine: Machine,
    /// vmcp's resident memory (KiB).
    vmcp_memory: Memory,
    rows: Vec<Row>,
    /// A few error messages, if any request failed.
    error_samples: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Machine {
    nproc: usize,
    kernel: String,
    cpu: String,
}

#[derive(Debug, Serialize)]
struct Memory {
    /// `VmRSS` once ready, before any load.
    idle_rss_kib: Option<u64>,
    /// `VmRSS` after the last run.
    after_rss_kib: Option<u64>,
    /// `VmHWM` (peak RSS) after the last run.
    peak_rss_kib: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Row {
    /// `direct` (the fixture) or `vmcp` (through the gateway).
    target: &'static str,
    concurrency: u16,
    /// Successful requests started in the measured window.
    requests: u64,
    /// Failed requests started in the measured window.
    errors: u64,
    /// Failed requests during the warm-up.
    warmup_errors: u64,
    /// Workers that could not set up their session.
    setup_errors: u64,
    throughput_rps: f64,
    latency_us: Option<Latency>,
    /// vmcp row minus direct row at the same level.
    added_us: Option<Added>,
    /// CPU time per request (successful or not) during the window, µs.
    cpu_us_per_request: CpuPerRequest,
    /// vmcp's `VmRSS` right after this run (KiB), for vmcp rows.
    vmcp_rss_kib: Option<u64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

#[derive(Debug, Serialize)]
struct Added {
    p50: f64,
    p99: f64,
}

#[derive(Debug, Serialize)]
struct CpuPerRequest {
    vmcp: Option<f64>,
    fixture: Option<f64>,
}

/// Nearest-rank percentile of sorted nanoseconds, in µs.
fn percentile_us(sorted: &[u64], p: f64) -> f64 {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    let i = rank.clamp(1, n) - 1;
    sorted.get(i).map_or(f64::NAN, |&ns| ns as f64 / 1000.0)
}

fn latency(sorted: &[u64]) -> Option<Latency> {
    let max = *sorted.last()?;
    Some(Latency {
        p50: percentile_us(sorted, 50.0),
        p90: percentile_us(sorted, 90.0),
        p99: percentile_us(sorted, 99.0),
        max: max as f64 / 1000.0,
    })
}

fn machine() -> Machine {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    Machine { nproc, kernel, cpu }
}

/// A binary given on the command line, or the one next to this executable.
fn binary(given: Option<PathBuf>, name: &str) -> anyhow::Result<PathBuf> {
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

/// CPU time of the given processes; `None` where unreadable.
fn cpu_sample(pids: &[i32]) -> Vec<Option<Duration>> {
    pids.iter().map(|&p| cpu_time(p)).collect()
}

/// Per-request CPU (µs) of each process between two samples.
fn cpu_per_request(
    before: &Option<Vec<Option<Duration>>>,
    after: &Option<Vec<Option<Duration>>>,
    i: usize,
    requests: u64,
) -> Option<f64> {
    let b = (*before.as_ref()?.get(i)?)?;
    let a = (*after.as_ref()?.get(i)?)?;
    if requests == 0 {
        return None;
    }
    Some(a.saturating_sub(b).as_secs_f64() * 1e6 / requests as f64)
}

/// One load run, with the servers' CPU sampled around the measured window.
async fn measure(
    args: &Args,
    url: &str,
    tool: &str,
    concurrency: u16,
    pids: &[i32],
) -> (RunResult, Option<Vec<Option<Duration>>>, Option<Vec<Option<Duration>>>) {
    let mut before = None;
    let mut after = None;
    let result = load::run(
        url,
        tool,
        args.era,
        usize::from(concurrency),
        args.warmup,
        args.duration,
        |open| {
            let s = Some(cpu_sample(pids));
            if open {
                before = s;
            } else {
                after = s;
            }
        },
    )
    .await;
    (result, before, after)
}

async fn bench(args: &Args) -> anyhow::Result<Report> {
    let vmcp_bin = binary(args.vmcp.clone(), "vmcp")?;
    let fixture_bin = binary(args.fixture.clone(), "vmcp-fixture")?;
    if args.concurrency.is_empty() {
        bail!("--concurrency needs at least one level");
    }

    // Started blocking (bounded waits on their ready lines); dropped (stopped) on every exit path.
    let fixture = Server::fixture(&fixture_bin, Duration::from_secs(20))?;
    let extra = match &args.config_extra {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => String::new(),
    };
    let vmcp = Server::vmcp(&vmcp_bin, &fixture.url, &extra, Duration::from_secs(30))?;
    eprintln!("fixture {} (pid {})", fixture.url, fixture.pid());
    eprintln!("vmcp    {} (pid {})", vmcp.url, vmcp.pid());
    // vmcp first, fixture second: the order of the CPU samples.
    let pids = [vmcp.pid(), fixture.pid()];

    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss_kib = memory_kib(vmcp.pid()).map(|(rss, _)| rss);

    let mut rows = Vec::new();
    let mut error_samples = Vec::new();
    for &c in &args.concurrency {
        let mut direct_latency = None;
        for (target, url, tool) in
            [("direct", fixture.url.as_str(), "echo"), ("vmcp", vmcp.url.as_str(), "fx_echo")]
        {
            eprintln!(
                "{target:>6} c={c:<4} {:?} warm-up + {:?} ({:?})",
                args.warmup, args.duration, args.era
            );
            let (r, before, after) = measure(args, url, tool, c, &pids).await;
            let requests = r.latencies_ns.len() as u64;
            let attempts = requests + r.errors;
            let lat = latency(&r.latencies_ns);
            let via = target == "vmcp";
            let added = match (via, direct_latency, lat) {
                (true, Some(d), Some(v)) => {
                    let (d, v): (Latency, Latency) = (d, v);
                    Some(Added { p50: v.p50 - d.p50, p99: v.p99 - d.p99 })
                }
                _ => None,
            };
            if !via {
                direct_latency = lat;
            }
            for e in &r.error_samples {
                if error_samples.len() < 20 {
                    error_samples.push(format!("{target} c={c}: {e}"));
                }
            }
            if r.errors + r.warmup_errors + r.setup_errors > 0 {
                eprintln!(
                    "  errors: {} measured, {} warm-up, {} setup; e.g. {:?}",
                    r.errors,
                    r.warmup_errors,
                    r.setup_errors,
                    r.error_samples.first()
                );
            }
            rows.push(Row {
                target,
                concurrency: c,
                requests,
                errors: r.errors,
                warmup_errors: r.warmup_errors,
                setup_errors: r.setup_errors,
                throughput_rps: requests as f64 / r.window.as_secs_f64(),
                latency_us: lat,
                added_us: added,
                cpu_us_per_request: CpuPerRequest {
                    vmcp: if via { cpu_per_request(&before, &after, 0, attempts) } else { None },
                    fixture: cpu_per_request(&before, &after, 1, attempts),
                },
                vmcp_rss_kib: if via { memory_kib(vmcp.pid()).map(|(rss, _)| rss) } else { None },
            });
        }
    }
    let mem = memory_kib(vmcp.pid());
    Ok(Report {
        vmcp_bench: env!("CARGO_PKG_VERSION"),
        era: args.era,
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        machine: machine(),
        vmcp_memory: Memory {
            idle_rss_kib,
            after_rss_kib: mem.map(|m| m.0),
            peak_rss_kib: mem.map(|m| m.1),
        },
        rows,
        error_samples,
    })
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "?".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "".to_owned(), |v| format!("{v:.decimals$}"))
}

fn markdown(r: &Report) -> String {
    let mut s = format!(
        "era {}, {}s measured after {}s warm-up per row; {} CPUs ({}), Linux {}\n\n",
        format!("{:?}", r.era).to_lowercase(),
        r.duration_s,
        r.warmup_s,
        r.machine.nproc,
        r.machine.cpu,
        r.machine.kernel
    );
    s.push_str(
        "| target | conc. | requests | errors | req/s | p50 µs | p90 µs | p99 µs | max µs | added p50 µs | added p99 µs | CPU µs/req vmcp | CPU µs/req fixture |\n",
    );
    s.push_str("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for row in &r.rows {
        let l = row.latency_us;
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.target,
            row.concurrency,
            row.requests,
            row.errors,
            row.throughput_rps,
            opt(l.map(|l| l.p50), 0),
            opt(l.map(|l| l.p90), 0),
            opt(l.map(|l| l.p99), 0),
            opt(l.map(|l| l.max), 0),
            opt(row.added_us.as_ref().map(|a| a.p50), 0),
            opt(row.added_us.as_ref().map(|a| a.p99), 0),
            opt(row.cpu_us_per_request.vmcp, 0),
            opt(row.cpu_us_per_request.fixture, 0),
        ));
    }
    s.push_str(&format!(
        "\nvmcp RSS: {} idle, {} after the runs (peak {})\n",
        mib(r.vmcp_memory.idle_rss_kib),
        mib(r.vmcp_memory.after_rss_kib),
        mib(r.vmcp_memory.peak_rss_kib)
    ));
    let other: u64 = r.rows.iter().map(|x| x.warmup_errors + x.setup_errors).sum();
    if other > 0 {
        s.push_str(&format!("\n{other} more errors during warm-up or session setup\n"));
    }
    if !r.error_samples.is_empty() {
        s.push_str("\nerror samples:\n");
        for e in &r.error_samples {
            s.push_str(&format!("- {e}\n"));
        }
    }
    s
}

fn write_json(path: &Path, r: &Report) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(r).context("serializing the results")?;
    std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(Mode::Pressure(p)) = &args.command {
        return pressure::main(args.vmcp.clone(), args.fixture.clone(), p).await;
    }
    // Ctrl-C drops the run, and with it the servers' guards.
    let result = tokio::select! {
        r = bench(&args) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vmcp-bench: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    print!("{}", markdown(&report));
    if let Some(out) = &args.out
        && let Err(e) = write_json(out, &report)
    {
        eprintln!("vmcp-bench: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    let errors: u64 = report.rows.iter().map(|r| r.errors + r.warmup_errors + r.setup_errors).sum();
    if errors > 0 {
        eprintln!("vmcp-bench: {errors} requests failed");
        return std::process::ExitCode::from(3);
    }
    std::process::ExitCode::SUCCESS
}
