//! The `sessions` preset: open N idle Legacy sessions (`initialize` + `notifications/initialized`
//! each, checked) over `openers` parallel connections, and report the gateway's resident memory
//! (`VmRSS`) before and after, per session, and the time to open them; then close them all with
//! `DELETE` (also checked and timed) and report the memory left.
//!
//! Sessions are idle: no call is made on them, so no backend session is opened (vmcp opens those
//! on a session's first request). Where the gateway's `/status` is known, its session count must
//! equal the sessions opened. The session ids are held by the bench (about 40 bytes each).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::Serialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::load::{Era, McpClient};
use crate::procs::{cpu_time, memory_kib};
use crate::report::mib;

/// An opener gives up after this many failures in a row (the gateway is refusing or gone).
const GIVE_UP_AFTER: u32 = 50;
/// Error samples kept.
const SAMPLES: usize = 5;

/// What the `sessions` preset measured.
#[derive(Debug, Default, Serialize)]
pub struct SessionsResult {
    pub requested: u32,
    pub openers: u16,
    pub opened: u64,
    pub open_errors: u64,
    /// Wall time to open them all.
    pub open_s: f64,
    /// When each tenth of the sessions was open (s from the start): a per-session cost that
    /// grows with the number of live sessions shows as widening steps.
    pub open_tenths_s: Vec<f64>,
    /// The gateway's `VmRSS` before, after opening, after closing, and its peak (KiB).
    pub rss_before_kib: Option<u64>,
    pub rss_open_kib: Option<u64>,
    pub rss_closed_kib: Option<u64>,
    pub peak_rss_kib: Option<u64>,
    /// (`rss_open` - `rss_before`) / `opened`, bytes.
    pub bytes_per_session: Option<f64>,
    /// The gateway's CPU per session opened (µs), both requests.
    pub cpu_us_per_open: Option<f64>,
    /// `sessions` in the gateway's `/status` once opened, where known.
    pub status_sessions: Option<u64>,
    pub closed: u64,
    pub close_errors: u64,
    pub close_s: f64,
    pub error_samples: Vec<String>,
    /// Each gateway's share, when sessions were spread over several (replicas).
    pub replicas: Vec<ReplicaResult>,
    /// Redis `used_memory` before and with the sessions open (bytes), with `--redis`.
    pub redis_before_bytes: Option<u64>,
    pub redis_open_bytes: Option<u64>,
    /// (`redis_open` - `redis_before`) / `opened`, bytes.
    pub redis_bytes_per_session: Option<f64>,
}

/// One gateway's share of the sessions.
#[derive(Debug, Default, Serialize)]
pub struct ReplicaResult {
    pub url: String,
    pub opened: u64,
    pub rss_before_kib: Option<u64>,
    pub rss_open_kib: Option<u64>,
    /// (`rss_open` - `rss_before`) / `opened` on this gateway, bytes.
    pub bytes_per_session: Option<f64>,
    /// Sessions in this gateway's `/status` once opened.
    pub status_sessions: Option<u64>,
}

impl SessionsResult {
    /// Failed opens and closes, and a `/status` count that disagrees with the sessions opened.
    pub fn errors(&self) -> u64 {
        let status = self.status_sessions.is_some_and(|s| s != self.opened);
        let replicas =
            self.replicas.iter().filter(|r| r.status_sessions.is_some_and(|s| s != r.opened));
        self.open_errors + self.close_errors + u64::from(status) + replicas.count() as u64
    }

    pub fn markdown(&self) -> String {
        let kib = |v: Option<u64>| mib(v);
        let per = self.bytes_per_session.map_or_else(|| "?".into(), |b| format!("{b:.0} B"));
        let rate =
            |n: u64, s: f64| if s > 0.0 { format!("{:.0}/s", n as f64 / s) } else { "?".into() };
        let mut s = String::from(
            "| sessions | opened | open errors | open time | open rate | RSS before | RSS open | per session | CPU µs/open | /status sessions | closed | close errors | close time | RSS closed | peak RSS |\n",
        );
        s.push_str("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} s | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s | {} | {} |\n",
            self.requested,
            self.opened,
            self.open_errors,
            self.open_s,
            rate(self.opened, self.open_s),
            kib(self.rss_before_kib),
            kib(self.rss_open_kib),
            per,
            self.cpu_us_per_open.map_or_else(String::new, |c| format!("{c:.0}")),
            self.status_sessions.map_or_else(String::new, |n| n.to_string()),
            self.closed,
            self.close_errors,
            self.close_s,
            kib(self.rss_closed_kib),
            kib(self.peak_rss_kib),
        ));
        if !self.replicas.is_empty() {
            s.push_str(
                "\n| replica | opened | RSS before | RSS open | per session | /status sessions |\n",
            );
            s.push_str("|---|--:|--:|--:|--:|--:|\n");
            for r in &self.replicas {
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    r.url,
                    r.opened,
                    kib(r.rss_before_kib),
                    kib(r.rss_open_kib),
                    r.bytes_per_session.map_or_else(|| "?".into(), |b| format!("{b:.0} B")),
                    r.status_sessions.map_or_else(String::new, |n| n.to_string()),
                ));
            }
        }
        if let (Some(b), Some(o)) = (self.redis_before_bytes, self.redis_open_bytes) {
            s.push_str(&format!(
                "\nRedis used_memory: {:.1} MB before, {:.1} MB open: {} per session\n",
                b as f64 / 1e6,
                o as f64 / 1e6,
                self.redis_bytes_per_session.map_or_else(|| "?".into(), |b| format!("{b:.0} B")),
            ));
        }
        if !self.open_tenths_s.is_empty() {
            let steps: Vec<String> = self.open_tenths_s.iter().map(|t| format!("{t:.1}")).collect();
            s.push_str(&format!("\nseconds until each tenth was open: {}\n", steps.join(", ")));
        }
        s
    }
}

/// Where the sessions are opened (one of several replicas, or the only gateway).
pub struct Gateway<'a> {
    pub url: &'a str,
    pub headers: HeaderMap,
    /// The gateway's process, for memory and CPU.
    pub pid: Option<i32>,
    /// Its `/status`, for its own session count.
    pub status_url: Option<String>,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    samples: Vec<String>,
}

impl Tally {
    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.samples.len() < SAMPLES {
            self.samples.push(what);
        }
    }
}

/// Opens `n` sessions over `openers` connections, measures, then closes them. With several
/// gateways (replicas), opener `w` talks to gateway `w % len` only, as a connection-level load
/// balancer (a Kubernetes Service) spreads them; `redis` (`host:port`) is sampled for its
/// `used_memory`.
pub async fn run(gws: &[Gateway<'_>], n: u32, openers: u16, redis: Option<&str>) -> SessionsResult {
    let mut out = SessionsResult { requested: n, openers, ..Default::default() };
    let mem = |pid: Option<i32>| pid.and_then(memory_kib);
    let before: Vec<Option<u64>> = gws.iter().map(|g| mem(g.pid).map(|m| m.0)).collect();
    out.rss_before_kib = sum(&before);
    let cpu_before: Vec<_> = gws.iter().map(|g| g.pid.and_then(cpu_time)).collect();
    if let Some(r) = redis {
        out.redis_before_bytes = crate::redis_info::used_memory(r).await;
    }

    let next = Arc::new(AtomicU32::new(0));
    let progress = Arc::new(Progress::new(n));
    let per_replica: Arc<Vec<AtomicU64>> =
        Arc::new(gws.iter().map(|_| AtomicU64::new(0)).collect());
    let held: Arc<Mutex<Vec<(usize, String)>>> =
        Arc::new(Mutex::new(Vec::with_capacity(n as usize)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..openers {
        let r = usize::from(w) % gws.len().max(1);
        let Some(gw) = gws.get(r) else { break };
        let (next, held, progress, per_replica) =
            (next.clone(), held.clone(), progress.clone(), per_replica.clone());
        let (url, headers) = (gw.url.to_owned(), gw.headers.clone());
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            let mut c = match McpClient::new(&url, Era::Legacy, headers) {
                Ok(c) => c,
                Err(e) => {
                    t.error(format!("opener {w}: {e:#}"));
                    return t;
                }
            };
            let mut mine = Vec::new();
            let mut failing = 0;
            while next.fetch_add(1, Ordering::Relaxed) < n && failing < GIVE_UP_AFTER {
                match c.connect().await {
                    Ok(_) => {
                        failing = 0;
                        t.ok += 1;
                        per_replica[r].fetch_add(1, Ordering::Relaxed);
                        progress.opened(started);
                        mine.extend(c.take_session().map(|s| (r, s)));
                    }
                    Err(e) => {
                        failing += 1;
                        // A session the gateway made before a later step failed is still held.
                        mine.extend(c.take_session().map(|s| (r, s)));
                        t.error(format!("opener {w}: {e:#}"));
                    }
                }
            }
            held.lock().await.extend(mine);
            t
        }));
    }
    let opened = collect(tasks, &mut out.error_samples).await;
    out.open_s = started.elapsed().as_secs_f64();
    out.open_tenths_s = progress.tenths();
    (out.opened, out.open_errors) = (opened.ok, opened.errors);
    let open: Vec<Option<u64>> = gws.iter().map(|g| mem(g.pid).map(|m| m.0)).collect();
    out.rss_open_kib = sum(&open);
    if let Some(r) = redis {
        out.redis_open_bytes = crate::redis_info::used_memory(r).await;
        if let (Some(b), Some(o)) = (out.redis_before_bytes, out.redis_open_bytes)
            && out.opened > 0
        {
            out.redis_bytes_per_session = Some((o as f64 - b as f64) / out.opened as f64);
        }
    }
    let cpu: Vec<_> = gws
        .iter()
        .zip(&cpu_before)
        .map(|(g, b)| Some(g.pid.and_then(cpu_time)?.saturating_sub((*b)?)))
        .collect();
    if cpu.iter().all(Option::is_some) && out.opened > 0 {
        let total: f64 = cpu.iter().flatten().map(Duration::as_secs_f64).sum();
        out.cpu_us_per_open = Some(total * 1e6 / out.opened as f64);
    }
    if let (Some(b), Some(a)) = (out.rss_before_kib, out.rss_open_kib)
        && out.opened > 0
    {
        out.bytes_per_session = Some((a as f64 - b as f64) * 1024.0 / out.opened as f64);
    }
    let mut counts = Vec::new();
    for g in gws {
        counts.push(match &g.status_url {
            Some(u) => status_sessions(u).await,
            None => None,
        });
    }
    out.status_sessions = counts.iter().copied().sum::<Option<u64>>();
    if gws.len() > 1 {
        for (i, g) in gws.iter().enumerate() {
            let opened = per_replica[i].load(Ordering::Relaxed);
            out.replicas.push(ReplicaResult {
                url: g.url.to_owned(),
                opened,
                rss_before_kib: before[i],
                rss_open_kib: open[i],
                bytes_per_session: match (before[i], open[i]) {
                    (Some(b), Some(a)) if opened > 0 => {
                        Some((a as f64 - b as f64) * 1024.0 / opened as f64)
                    }
                    _ => None,
                },
                status_sessions: counts[i],
            });
        }
    }
    eprintln!(
        "opened {} sessions in {:.1} s ({} errors); closing them",
        out.opened, out.open_s, out.open_errors
    );

    let ids = std::mem::take(&mut *held.lock().await);
    let ids = Arc::new(Mutex::new(ids));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..openers {
        let ids = ids.clone();
        let gws: Vec<(String, HeaderMap)> =
            gws.iter().map(|g| (g.url.to_owned(), g.headers.clone())).collect();
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            let mut clients = Vec::new();
            for (url, headers) in gws {
                match McpClient::new(&url, Era::Legacy, headers) {
                    Ok(c) => clients.push(c),
                    Err(e) => {
                        t.error(format!("closer {w}: {e:#}"));
                        return t;
                    }
                }
            }
            let mut failing = 0;
            while failing < GIVE_UP_AFTER {
                let Some((r, id)) = ids.lock().await.pop() else { break };
                let Some(c) = clients.get_mut(r) else { break };
                c.set_session(id);
                match c.delete().await {
                    Ok(()) => {
                        failing = 0;
                        t.ok += 1;
                    }
                    Err(e) => {
                        failing += 1;
                        t.error(format!("closer {w}: {e:#}"));
                    }
                }
            }
            t
        }));
    }
    let closed = collect(tasks, &mut out.error_samples).await;
    out.close_s = started.elapsed().as_secs_f64();
    (out.closed, out.close_errors) = (closed.ok, closed.errors);
    // Sessions an opener held but no closer reached (closers gave up) are close errors too.
    out.close_errors += ids.lock().await.len() as u64;
    let m: Vec<_> = gws.iter().map(|g| mem(g.pid)).collect();
    out.rss_closed_kib = sum(&m.iter().map(|m| m.map(|m| m.0)).collect::<Vec<_>>());
    out.peak_rss_kib = sum(&m.iter().map(|m| m.map(|m| m.1)).collect::<Vec<_>>());
    out
}

/// The sum when every part is known.
fn sum(parts: &[Option<u64>]) -> Option<u64> {
    parts.iter().copied().sum()
}

/// Records when each tenth of `n` sessions was open.
struct Progress {
    n: u32,
    opened: AtomicU32,
    tenths: std::sync::Mutex<Vec<f64>>,
}

impl Progress {
    fn new(n: u32) -> Progress {
        Progress { n, opened: AtomicU32::new(0), tenths: std::sync::Mutex::new(Vec::new()) }
    }

    fn opened(&self, since: Instant) {
        let k = self.opened.fetch_add(1, Ordering::Relaxed) + 1;
        // Crossing k * 10 / n: one of ten steps (integer maths, so every step is seen once).
        if (u64::from(k) * 10 / u64::from(self.n)) > (u64::from(k - 1) * 10 / u64::from(self.n))
            && let Ok(mut t) = self.tenths.lock()
        {
            t.push(since.elapsed().as_secs_f64());
        }
    }

    fn tenths(&self) -> Vec<f64> {
        let mut t = self.tenths.lock().map(|t| t.clone()).unwrap_or_default();
        t.sort_by(f64::total_cmp);
        t
    }
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Tally>>, samples: &mut Vec<String>) -> Tally {
    let mut all = Tally::default();
    for t in tasks {
        match t.await {
            Ok(t) => {
                all.ok += t.ok;
                all.errors += t.errors;
                for s in t.samples {
                    if samples.len() < SAMPLES {
                        samples.push(s);
                    }
                }
            }
            Err(e) => all.error(format!("task failed: {e}")),
        }
    }
    samples.extend(all.samples.drain(..).take(SAMPLES.saturating_sub(samples.len())));
    all
}

/// The gateway's live session count from `/status`.
async fn status_sessions(url: &str) -> Option<u64> {
    let http =
        reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().ok()?;
    let v: serde_json::Value = http.get(url).send().await.ok()?.json().await.ok()?;
    v.get("sessions")?.as_u64()
}
