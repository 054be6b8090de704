//! The pressure run's results: one row per bound, as JSON and as a Markdown table.

use std::sync::atomic::Ordering;

use serde::Serialize;
use serde_json::Value;

use super::PressureArgs;
use super::aggressor::{Bound, Limits, Tally};
use super::healthy::Phase;
use crate::report::{Machine, machine};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub vmcp_bench: &'static str,
    pub duration_s: f64,
    pub rate_per_s: u32,
    pub machine: Machine,
    pub limits: Limits,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn new(args: &PressureArgs, limits: Limits, rows: Vec<Row>) -> Report {
        Report {
            vmcp_bench: env!("CARGO_PKG_VERSION"),
            duration_s: args.duration.as_secs_f64(),
            rate_per_s: args.rate,
            machine: machine(),
            limits,
            rows,
        }
    }

    /// Bounds that were not hit, aggressors that failed, and healthy calls that failed (a refusal
    /// by a bound the healthy client does not share counts as a failure too).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.rows {
            if let Some(f) = &r.failure {
                out.push(format!("{}: {f}", r.bound));
            }
            if r.refusals_during + r.refusals_before_window == 0 {
                out.push(format!("{}: no refusal seen", r.bound));
            }
            for (when, p) in [("before", Some(&r.before)), ("during", r.during.as_ref())] {
                let Some(p) = p else { continue };
                if p.errors > 0 {
                    out.push(format!("{}: {} healthy errors {when}", r.bound, p.errors));
                }
                let shared = r.bound == "maxInFlight" && when == "during";
                if p.refused > 0 && !shared {
                    out.push(format!("{}: healthy refused {when} by {:?}", r.bound, p.refused_by));
                }
            }
        }
        out
    }
}

/// The aggressor's counts at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct AggressorCount {
    pub held: i64,
    pub refusals: u64,
    pub admitted: u64,
    pub unexpected: u64,
}

impl AggressorCount {
    pub fn of(t: &Tally) -> AggressorCount {
        AggressorCount {
            held: t.held.load(Ordering::Relaxed),
            refusals: t.refusals.load(Ordering::Relaxed),
            admitted: t.admitted.load(Ordering::Relaxed),
            unexpected: t.unexpected.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub bound: &'static str,
    pub limit: usize,
    pub attack: &'static str,
    pub expected: &'static str,
    /// Refusals while the bound was being reached (before the healthy window).
    pub refusals_before_window: u64,
    /// Refusals during the healthy client's window and until the aggressor stopped.
    pub refusals_during: u64,
    /// Aggressor requests admitted after the bound was hit (a slot came free).
    pub admitted: u64,
    /// Aggressor requests answered otherwise than documented.
    pub unexpected: u64,
    pub unexpected_samples: Vec<String>,
    /// What the aggressor held at the end.
    pub held: i64,
    pub before: Phase,
    pub during: Option<Phase>,
    /// `sessions`, `inFlight`, `listenStreams` of `/status` at the end of the healthy window.
    pub gateway_during: Option<Value>,
    /// Whether the gateway let go of everything the aggressor held afterwards.
    pub settled: bool,
    pub failure: Option<String>,
}

impl Row {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        bound: Bound,
        limits: &Limits,
        before: Phase,
        during: Option<Phase>,
        at_start: Option<AggressorCount>,
        end: AggressorCount,
        gateway: Option<Value>,
        settled: bool,
        tally: &Tally,
        failure: Option<String>,
    ) -> Row {
        let start = at_start.unwrap_or(end);
        let gateway_during = gateway.map(|s| {
            serde_json::json!({
                "sessions": s["sessions"], "inFlight": s["inFlight"], "listenStreams": s["listenStreams"],
            })
        });
        Row {
            bound: bound.key(),
            limit: limits.of(bound),
            attack: bound.attack(),
            expected: bound.expected(),
            refusals_before_window: start.refusals,
            refusals_during: end.refusals - start.refusals,
            admitted: end.admitted,
            unexpected: end.unexpected,
            unexpected_samples: tally.samples(),
            held: end.held,
            before,
            during,
            gateway_during,
            settled,
            failure,
        }
    }
}

fn us(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.0}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a > 0.0 => format!("{:.2}", b / a),
        _ => "–".to_owned(),
    }
}

pub fn markdown(r: &Report) -> String {
    let mut s = format!(
        "healthy client: 1 Legacy session, `fx_echo` back to back, {}s before and {}s during each \
         bound; aggressor probes {}/s once the bound is hit; {} CPUs ({}), Linux {}\n\n",
        r.duration_s, r.duration_s, r.rate_per_s, r.machine.nproc, r.machine.cpu, r.machine.kernel
    );
    s.push_str(
        "| bound | limit | aggressor | refusals (documented answer) | other answers | healthy ok before / during | healthy refused / errors during | p50 µs before → during | p99 µs before → during | p50 ratio | p99 ratio |\n",
    );
    s.push_str("|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for row in &r.rows {
        let b = &row.before;
        let d = row.during.as_ref();
        let bl = b.latency_us;
        let dl = d.and_then(|d| d.latency_us);
        s.push_str(&format!(
            "| `{}` | {} | {} | {} ({}) | {} | {} / {} | {} / {} | {} → {} | {} → {} | {} | {} |\n",
            row.bound,
            row.limit,
            row.attack,
            row.refusals_before_window + row.refusals_during,
            row.expected,
            row.unexpected,
            b.ok,
            d.map_or(0, |d| d.ok),
            d.map_or(0, |d| d.refused),
            d.map_or(0, |d| d.errors) + b.errors,
            us(bl.map(|l| l.p50)),
            us(dl.map(|l| l.p50)),
            us(bl.map(|l| l.p99)),
            us(dl.map(|l| l.p99)),
            ratio(bl.map(|l| l.p50), dl.map(|l| l.p50)),
            ratio(bl.map(|l| l.p99), dl.map(|l| l.p99)),
        ));
    }
    let notes: Vec<String> = r
        .rows
        .iter()
        .flat_map(|row| {
            let mut n = Vec::new();
            if !row.settled {
                n.push(format!(
                    "`{}`: the gateway had not let go of everything 45s later",
                    row.bound
                ));
            }
            for e in &row.unexpected_samples {
                n.push(format!("`{}` aggressor got: {e}", row.bound));
            }
            for p in [Some(&row.before), row.during.as_ref()].into_iter().flatten() {
                for e in &p.error_samples {
                    n.push(format!("`{}` healthy client got: {e}", row.bound));
                }
            }
            n
        })
        .collect();
    if !notes.is_empty() {
        s.push_str("\nnotes:\n");
        for n in notes {
            s.push_str(&format!("- {n}\n"));
        }
    }
    for p in r.problems() {
        s.push_str(&format!("\nPROBLEM: {p}\n"));
    }
    s
}
