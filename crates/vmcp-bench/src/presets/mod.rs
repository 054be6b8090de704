//! The presets: what is driven, how each reply is checked, and which pairs are compared.
//!
//! A preset sets up [`Target`]s (a URL, an operation, header sets, and the processes whose CPU
//! is charged to it), either by starting vmcp and fixtures on loopback (`local`), or from
//! `--url`/`--direct-url` (nothing started). Every target is probed until it answers correctly
//! (bounded), then each concurrency level runs every target in turn with the same closed loop
//! (`load`), sampling the CPU time of the target's processes around the measured window. The
//! `sessions` preset opens sessions instead (`crate::sessions`).

mod local;

use std::time::Duration;

use anyhow::bail;
use reqwest::header::HeaderMap;
use serde::Serialize;
use tokio::time::Instant;

use crate::Args;
use crate::idp::LocalIdp;
use crate::load::{self, Era, McpClient, Op, RunResult, Workload};
use crate::procs::{Server, cpu_time, memory_kib};
use crate::report::{self, Added, CpuPerRequest, Latency, Memory, Report, Row};
use crate::sessions;

/// How long a target may take to answer its first checked request.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// Pause between readiness probes.
const PROBE_EVERY: Duration = Duration::from_millis(50);

/// What to measure.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// `tools/call` direct and through vmcp.
    Call,
    /// `tools/list` of 20 backends x 100 tools through vmcp vs one backend of 2,000 direct.
    List,
    /// Legacy `initialize` (+ `notifications/initialized`, `DELETE`) through vmcp with 5 backends
    /// vs direct.
    Init,
    /// Resident memory of N idle Legacy sessions.
    Sessions,
    /// `tools/call` through vmcp with OIDC tokens vs anonymous.
    Auth,
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::Call => "call",
            Preset::List => "list",
            Preset::Init => "init",
            Preset::Sessions => "sessions",
            Preset::Auth => "auth",
        }
    }

    /// The issue-12 target a gateway-over-direct ratio is read against.
    fn goal(self) -> &'static str {
        match self {
            Preset::Call | Preset::Auth => "req/s >= 0.60 at 32 conn.; p50 <= 1.5x at 1 conn.",
            Preset::List | Preset::Init => "p50 <= 1.2x",
            Preset::Sessions => "",
        }
    }
}

/// One thing driven.
pub struct Target {
    /// `direct`, `vmcp`, `vmcp-oidc` or `url`.
    pub name: &'static str,
    pub work: Workload,
    /// The gateway process serving it (the "vmcp" CPU column), if known.
    pub gateway: Option<i32>,
    /// The backend processes behind it (the "fixture" CPU column, summed).
    pub backends: Vec<i32>,
}

/// What a preset set up; the processes and the provider stop when it is dropped.
pub struct Setup {
    pub targets: Vec<Target>,
    /// (baseline, candidate, issue-12 target) compared in the ratio table.
    pub pairs: Vec<(&'static str, &'static str, &'static str)>,
    /// What was started or given, for the report.
    pub notes: Vec<String>,
    /// The gateway whose memory is reported.
    pub memory_pid: Option<i32>,
    /// The gateway's `/status`, where known (the `sessions` preset checks its count).
    pub status_url: Option<String>,
    pub servers: Vec<Server>,
    pub idp: Option<LocalIdp>,
}

/// Runs the preset `args.preset` and reports.
pub async fn bench(args: &Args) -> anyhow::Result<Report> {
    if args.concurrency.is_empty() {
        bail!("--concurrency needs at least one level");
    }
    if matches!(args.preset, Preset::Init | Preset::Sessions) && args.era != Era::Legacy {
        bail!("--preset {} measures Legacy sessions: drop --era modern", args.preset.name());
    }
    if args.replicas > 1
        && (args.preset != Preset::Sessions || args.url.is_some() || args.direct_url.is_some())
    {
        bail!("--replicas is for --preset sessions with vmcp started by the bench (no --url)");
    }
    let mut setup = if args.url.is_some() || args.direct_url.is_some() {
        from_urls(args)?
    } else {
        local::setup(args)?
    };
    for t in &setup.targets {
        eprintln!("{:>9} {}", t.name, t.work.url);
    }
    for t in &mut setup.targets {
        ready(t).await?;
    }
    let idle_rss_kib = setup.memory_pid.and_then(memory_kib).map(|(rss, _)| rss);
    let mut report = Report {
        vmcp_bench: env!("CARGO_PKG_VERSION"),
        preset: args.preset,
        era: args.era,
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        machine: report::machine(),
        setup: setup.notes.clone(),
        vmcp_memory: Memory { idle_rss_kib, ..Default::default() },
        rows: Vec::new(),
        ratios: Vec::new(),
        sessions: None,
        error_samples: Vec::new(),
    };
    if args.preset == Preset::Sessions {
        let gws: Vec<sessions::Gateway<'_>> = setup
            .targets
            .iter()
            .filter(|t| t.name != "direct")
            .map(|t| sessions::Gateway {
                url: &t.work.url,
                headers: t.work.headers.first().cloned().unwrap_or_default(),
                pid: t.gateway,
                // A vmcp this bench started: its `/status` beside `/mcp`.
                status_url: setup
                    .status_url
                    .as_ref()
                    .map(|_| t.work.url.trim_end_matches("/mcp").to_owned() + "/status"),
            })
            .collect();
        if gws.is_empty() {
            bail!("--preset sessions needs a gateway (--url, or none to start vmcp)");
        }
        eprintln!(
            "opening {} sessions over {} connections to {} gateway(s)",
            args.sessions,
            args.openers,
            gws.len()
        );
        let s = sessions::run(&gws, args.sessions, args.openers, args.redis.as_deref()).await;
        report.error_samples.extend(s.error_samples.iter().cloned());
        report.sessions = Some(s);
    } else {
        load_rows(args, &setup, &mut report).await;
    }
    for (b, c, goal) in &setup.pairs {
        report.ratios.extend(report::ratios(&report.rows, b, c, goal));
    }
    let mem = setup.memory_pid.and_then(memory_kib);
    report.vmcp_memory.after_rss_kib = mem.map(|m| m.0);
    report.vmcp_memory.peak_rss_kib = mem.map(|m| m.1);
    drop(setup);
    Ok(report)
}

/// Every target at every level, in turn.
async fn load_rows(args: &Args, setup: &Setup, report: &mut Report) {
    for &c in &args.concurrency {
        let mut direct_latency: Option<Latency> = None;
        for t in &setup.targets {
            eprintln!(
                "{:>9} c={c:<4} {:?} warm-up + {:?} ({:?})",
                t.name, args.warmup, args.duration, args.era
            );
            let (r, cpu) = measure(args, t, c).await;
            let requests = r.latencies_ns.len() as u64;
            let attempts = requests + r.errors;
            let lat = report::latency(&r.latencies_ns);
            let added = match (t.name, direct_latency, lat) {
                ("direct", ..) => None,
                (_, Some(d), Some(v)) => Some(Added { p50: v.p50 - d.p50, p99: v.p99 - d.p99 }),
                _ => None,
            };
            if t.name == "direct" {
                direct_latency = lat;
            }
            for e in &r.error_samples {
                if report.error_samples.len() < 20 {
                    report.error_samples.push(format!("{} c={c}: {e}", t.name));
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
            let per = |d: Option<Duration>| {
                d.filter(|_| attempts > 0).map(|d| d.as_secs_f64() * 1e6 / attempts as f64)
            };
            report.rows.push(Row {
                target: t.name.to_owned(),
                concurrency: c,
                requests,
                errors: r.errors,
                warmup_errors: r.warmup_errors,
                setup_errors: r.setup_errors,
                throughput_rps: requests as f64 / r.window.as_secs_f64(),
                latency_us: lat,
                added_us: added,
                cpu_us_per_request: CpuPerRequest { vmcp: per(cpu.0), fixture: per(cpu.1) },
                vmcp_rss_kib: t.gateway.and_then(memory_kib).map(|(rss, _)| rss),
                items: r.items,
                reply_bytes: r.reply_bytes,
            });
        }
    }
}

/// CPU time of the gateway and of the backends (summed); `None` where unreadable.
fn cpu_sample(t: &Target) -> (Option<Duration>, Option<Duration>) {
    let gateway = t.gateway.and_then(cpu_time);
    let backends = if t.backends.is_empty() {
        None
    } else {
        t.backends.iter().map(|&p| cpu_time(p)).sum::<Option<Duration>>()
    };
    (gateway, backends)
}

/// One load run, with the target's processes' CPU sampled around the measured window: the
/// gateway's and the backends' CPU time during it.
async fn measure(
    args: &Args,
    t: &Target,
    c: u16,
) -> (RunResult, (Option<Duration>, Option<Duration>)) {
    let mut before = (None, None);
    let mut after = (None, None);
    let result = load::run(&t.work, usize::from(c), args.warmup, args.duration, |open| {
        if open {
            before = cpu_sample(t);
        } else {
            after = cpu_sample(t);
        }
    })
    .await;
    let delta = |a: Option<Duration>, b: Option<Duration>| Some(a?.saturating_sub(b?));
    (result, (delta(after.0, before.0), delta(after.1, before.1)))
}

/// Probes a target until one step of its operation succeeds (bounded); a `tools/list` target
/// with no expected count then expects the count it first saw.
async fn ready(t: &mut Target) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_WITHIN;
    let headers = t.work.headers.first().cloned().unwrap_or_default();
    let mut last = None;
    while Instant::now() < deadline {
        let mut c = McpClient::new(&t.work.url, t.work.era, headers.clone())?;
        let got = match c.prepare(&t.work.op).await {
            Ok(()) => c.step(&t.work.op, "probe").await,
            Err(e) => Err(e),
        };
        c.close().await;
        match got {
            Ok(step) => {
                if let Op::List { expect: expect @ None } = &mut t.work.op {
                    *expect = step.items;
                }
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
    let e = last.map(|e| format!("{e:#}")).unwrap_or_default();
    bail!("{} ({}) did not answer correctly within {READY_WITHIN:?}: {e}", t.name, t.work.url)
}

/// Header sets from `--header` arguments (one set: every worker sends them).
fn header_sets(given: &[crate::HeaderArg]) -> Vec<HeaderMap> {
    if given.is_empty() {
        return Vec::new();
    }
    let mut h = HeaderMap::new();
    for a in given {
        h.append(a.name.clone(), a.value.clone());
    }
    vec![h]
}

/// Targets from `--direct-url` and `--url`; nothing is started.
fn from_urls(args: &Args) -> anyhow::Result<Setup> {
    let op = |tool: &str, expect: Option<usize>| -> anyhow::Result<Op> {
        Ok(match args.preset {
            Preset::Call => Op::Call { tool: tool.to_owned() },
            Preset::List => Op::List { expect },
            Preset::Init | Preset::Sessions => Op::Init,
            Preset::Auth => bail!(
                "--preset auth starts its own gateways; against a URL, run --preset call twice \
                 (--url with --header 'Authorization: Bearer ...', and without)"
            ),
        })
    };
    let mut setup = Setup {
        targets: Vec::new(),
        pairs: Vec::new(),
        notes: Vec::new(),
        memory_pid: args.pid,
        status_url: None,
        servers: Vec::new(),
        idp: None,
    };
    let names = |h: &[crate::HeaderArg]| {
        let n: Vec<String> = h.iter().map(|a| a.name.to_string()).collect();
        if n.is_empty() { String::new() } else { format!(" with headers {}", n.join(", ")) }
    };
    if let Some(url) = &args.direct_url {
        setup.targets.push(Target {
            name: "direct",
            work: Workload {
                url: url.clone(),
                op: op(&args.direct_tool, args.direct_expect_tools)?,
                era: args.era,
                headers: header_sets(&args.direct_headers),
            },
            gateway: None,
            backends: args.direct_pid.into_iter().collect(),
        });
        setup.notes.push(format!("direct: {url}{}", names(&args.direct_headers)));
    }
    if let Some(url) = &args.url {
        setup.targets.push(Target {
            name: "url",
            work: Workload {
                url: url.clone(),
                op: op(&args.tool, args.expect_tools)?,
                era: args.era,
                headers: header_sets(&args.headers),
            },
            gateway: args.pid,
            backends: Vec::new(),
        });
        setup.notes.push(format!("url: {url}{}", names(&args.headers)));
        if args.direct_url.is_some() {
            setup.pairs.push(("direct", "url", args.preset.goal()));
        }
    }
    if args.preset == Preset::Sessions && args.url.is_none() {
        bail!("--preset sessions needs --url (the gateway to open sessions on)");
    }
    Ok(setup)
}
