//! What a run reports: one row per target and concurrency level, the ratios of each compared
//! pair (with the issue-12 target they are read against), the `sessions` preset's memory
//! figures, as Markdown (stdout) and JSON (`--out`).
//!
//! The JSON keeps the fields of the original `call` report (`era`, `vmcp_memory`, `rows` with
//! `target`, `cpu_us_per_request.vmcp|fixture`, ...) and adds to them.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::load::Era;
use crate::presets::Preset;
use crate::sessions::SessionsResult;

#[derive(Debug, Serialize)]
pub struct Report {
    pub vmcp_bench: &'static str,
    pub preset: Preset,
    pub era: Era,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub machine: Machine,
    /// What was driven (processes started, or URLs given; header names only).
    pub setup: Vec<String>,
    /// The first gateway's resident memory (KiB), when it is a known local process.
    pub vmcp_memory: Memory,
    pub rows: Vec<Row>,
    /// Candidate over baseline, per compared pair and concurrency level.
    pub ratios: Vec<Ratio>,
    /// The `sessions` preset's figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<SessionsResult>,
    /// A few error messages, if any request failed.
    pub error_samples: Vec<String>,
}

impl Report {
    /// Every failed or unchecked request, setup included.
    pub fn errors(&self) -> u64 {
        let rows: u64 = self.rows.iter().map(|r| r.errors + r.warmup_errors + r.setup_errors).sum();
        rows + self.sessions.as_ref().map_or(0, SessionsResult::errors)
    }
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub kernel: String,
    pub cpu: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Memory {
    /// `VmRSS` once ready, before any load.
    pub idle_rss_kib: Option<u64>,
    /// `VmRSS` after the last run.
    pub after_rss_kib: Option<u64>,
    /// `VmHWM` (peak RSS) after the last run.
    pub peak_rss_kib: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Row {
    /// `direct` (the fixture), `vmcp` (through the gateway), `vmcp-oidc` (through a gateway
    /// verifying tokens), or `url` (`--url`).
    pub target: String,
    pub concurrency: u16,
    /// Successful requests started in the measured window.
    pub requests: u64,
    /// Failed requests started in the measured window.
    pub errors: u64,
    /// Failed requests during the warm-up.
    pub warmup_errors: u64,
    /// Workers that could not set up their session.
    pub setup_errors: u64,
    pub throughput_rps: f64,
    pub latency_us: Option<Latency>,
    /// This row minus the `direct` row at the same level.
    pub added_us: Option<Added>,
    /// CPU time per request (successful or not) during the window, µs.
    pub cpu_us_per_request: CpuPerRequest,
    /// The gateway's `VmRSS` right after this run (KiB), for gateway rows.
    pub vmcp_rss_kib: Option<u64>,
    /// Items per reply (`tools/list`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<usize>,
    /// Body size of a reply (bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_bytes: Option<usize>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Serialize)]
pub struct Added {
    pub p50: f64,
    pub p99: f64,
}

#[derive(Debug, Serialize)]
pub struct CpuPerRequest {
    /// The row's gateway process.
    pub vmcp: Option<f64>,
    /// The backend processes, together.
    pub fixture: Option<f64>,
}

/// `candidate` over `baseline` at one concurrency level.
#[derive(Debug, Serialize)]
pub struct Ratio {
    pub baseline: String,
    pub candidate: String,
    pub concurrency: u16,
    pub throughput: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    /// The issue-12 target this pair is read against.
    pub target: &'static str,
}

/// Nearest-rank percentile of sorted nanoseconds, in µs.
fn percentile_us(sorted: &[u64], p: f64) -> f64 {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    let i = rank.clamp(1, n) - 1;
    sorted.get(i).map_or(f64::NAN, |&ns| ns as f64 / 1000.0)
}

pub fn latency(sorted: &[u64]) -> Option<Latency> {
    let max = *sorted.last()?;
    Some(Latency {
        p50: percentile_us(sorted, 50.0),
        p90: percentile_us(sorted, 90.0),
        p99: percentile_us(sorted, 99.0),
        max: max as f64 / 1000.0,
    })
}

/// The ratio of `pair` at every level both targets were measured at.
pub fn ratios(rows: &[Row], baseline: &str, candidate: &str, target: &'static str) -> Vec<Ratio> {
    let div = |a: f64, b: f64| (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b);
    let mut out = Vec::new();
    for b in rows.iter().filter(|r| r.target == baseline) {
        let Some(c) = rows.iter().find(|r| r.target == candidate && r.concurrency == b.concurrency)
        else {
            continue;
        };
        let (bl, cl) = (b.latency_us, c.latency_us);
        out.push(Ratio {
            baseline: baseline.to_owned(),
            candidate: candidate.to_owned(),
            concurrency: b.concurrency,
            throughput: div(c.throughput_rps, b.throughput_rps),
            p50: bl.zip(cl).and_then(|(b, c)| div(c.p50, b.p50)),
            p99: bl.zip(cl).and_then(|(b, c)| div(c.p99, b.p99)),
            target,
        });
    }
    out
}

pub fn machine() -> Machine {
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

pub fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "?".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "".to_owned(), |v| format!("{v:.decimals$}"))
}

pub fn markdown(r: &Report) -> String {
    let timing = if r.sessions.is_some() {
        String::new()
    } else {
        format!(", {}s measured after {}s warm-up per row", r.duration_s, r.warmup_s)
    };
    let mut s = format!(
        "preset {}, era {}{timing}; {} CPUs ({}), Linux {}\n\n",
        r.preset.name(),
        format!("{:?}", r.era).to_lowercase(),
        r.machine.nproc,
        r.machine.cpu,
        r.machine.kernel
    );
    for line in &r.setup {
        s.push_str(&format!("- {line}\n"));
    }
    if !r.setup.is_empty() {
        s.push('\n');
    }
    if !r.rows.is_empty() {
        rows_table(&mut s, r);
    }
    if let Some(sessions) = &r.sessions {
        s.push_str(&sessions.markdown());
    }
    if !r.ratios.is_empty() {
        s.push_str("\n| candidate / baseline | conc. | req/s ratio | p50 ratio | p99 ratio | issue-12 target |\n");
        s.push_str("|---|--:|--:|--:|--:|---|\n");
        for x in &r.ratios {
            s.push_str(&format!(
                "| {} / {} | {} | {} | {} | {} | {} |\n",
                x.candidate,
                x.baseline,
                x.concurrency,
                opt(x.throughput, 2),
                opt(x.p50, 2),
                opt(x.p99, 2),
                x.target
            ));
        }
    }
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

fn rows_table(s: &mut String, r: &Report) {
    let items = r.rows.iter().any(|x| x.items.is_some());
    s.push_str(
        "| target | conc. | requests | errors | req/s | p50 µs | p90 µs | p99 µs | max µs | added p50 µs | added p99 µs | CPU µs/req vmcp | CPU µs/req fixture |",
    );
    s.push_str(if items { " items | reply bytes |\n" } else { "\n" });
    s.push_str("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    s.push_str(if items { "--:|--:|\n" } else { "\n" });
    for row in &r.rows {
        let l = row.latency_us;
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
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
        if items {
            let n = |v: Option<usize>| v.map_or_else(String::new, |v| v.to_string());
            s.push_str(&format!(" {} | {} |", n(row.items), n(row.reply_bytes)));
        }
        s.push('\n');
    }
    s.push_str(&format!(
        "\nvmcp RSS: {} idle, {} after the runs (peak {})\n",
        mib(r.vmcp_memory.idle_rss_kib),
        mib(r.vmcp_memory.after_rss_kib),
        mib(r.vmcp_memory.peak_rss_kib)
    ));
}

pub fn write_json(path: &Path, r: &Report) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(r).context("serializing the results")?;
    std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
}
