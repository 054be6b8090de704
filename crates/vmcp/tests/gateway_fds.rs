//! Running out of file descriptors hurts only the request that hit it (issue 6).
//!
//! vmcp runs under `prlimit --nofile=1024:` (a soft limit of 1,024 open files) in front of a
//! Legacy-era Streamable HTTP fixture, and is stormed by
//!
//! - 1,100 silent client connections, kept up for a few seconds (reopened as vmcp closes them),
//!   once with `maxConnections` below the limit (vmcp keeps descriptors in reserve) and once with
//!   the default `maxConnections` (10,000: vmcp really runs out and `accept` fails with `EMFILE`);
//! - 1,500 Legacy client sessions (initialize, one `tools/call`, a third of them ended with
//!   `DELETE`), 32 at a time, each with its own backend session.
//!
//! Throughout, `/health` is answered, a healthy client's `tools/call` succeeds (a request that
//! itself hit `EMFILE` may fail, with an error, never a hang) and the backend is never marked
//! down. The healthy client's latency before and during each storm is printed (`eprintln!`,
//! shown with `--nocapture`), never asserted.
//!
//! Re-measure: `cargo test -p vmcp --test gateway_fds -- --nocapture --test-threads 1`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// vmcp's soft limit of open files.
const NOFILE: u32 = 1024;
/// Silent connections in the idle-connection storms.
const IDLE: usize = 1100;
/// How long an idle-connection storm is kept up.
const STORM: Duration = Duration::from_secs(8);
/// Legacy sessions in the session storm, and how many run at once.
const SESSIONS: usize = 1500;
const CONCURRENCY: usize = 32;
/// Calls of the healthy client before each storm.
const BEFORE: usize = 100;

/// Config: one Legacy Streamable HTTP backend `h`, the given `server.connections` keys and a
/// per-principal session cap above the session storm (anonymous clients are one principal).
fn config(backend_url: &str, connections: &[&str]) -> String {
    let mut y = format!(
        "name: fds\nbackends:\n{}server:\n  limits:\n    maxSessionsPerPrincipal: 2000\n  connections:\n",
        http_backend("h", backend_url)
    );
    for c in connections {
        y.push_str(&format!("    {c}\n"));
    }
    if connections.is_empty() {
        y.push_str("    {}\n");
    }
    y
}

/// `host:port` of a gateway.
fn addr(gw: &Gateway) -> String {
    gw.base.trim_start_matches("http://").to_owned()
}

/// A client of `/health` and `/status` that keeps its connection open, so it is served while
/// vmcp accepts nothing new.
#[derive(Clone)]
struct Watcher {
    http: reqwest::Client,
    base: String,
}

impl Watcher {
    async fn new(gw: &Gateway) -> Watcher {
        let w = Watcher { http: reqwest::Client::new(), base: gw.base.clone() };
        assert_eq!(w.health().await, 200);
        w
    }

    async fn health(&self) -> u16 {
        let r = tokio::time::timeout(STEP, self.http.get(format!("{}/health", self.base)).send())
            .await
            .expect("/health answered in time")
            .expect("GET /health");
        r.status().as_u16()
    }

    /// Backend `h`'s `/status` entry, asserting it is ready and was never marked down since
    /// start (`lastError` keeps the last transport error, also after a recovery).
    async fn assert_backend_up(&self, when: &str) -> Value {
        let s: Value = tokio::time::timeout(STEP, async {
            self.http.get(format!("{}/status", self.base)).send().await?.json().await
        })
        .await
        .expect("/status answered in time")
        .expect("GET /status");
        let b = s["backends"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["name"] == "h").cloned())
            .unwrap_or_else(|| panic!("no backend h in {s}"));
        assert_eq!(b["state"], "ready", "{when}: backend h not ready: {b}");
        assert_eq!(b["lastError"], Value::Null, "{when}: backend h was marked down: {b}");
        s
    }
}

/// One `h_echo` call; its latency, or the error it got (a request that hit the descriptor limit
/// may fail, but must be answered).
async fn echo(c: &Client, n: usize) -> Result<Duration, String> {
    let t = Instant::now();
    let msg = format!("m{n}");
    let r = c.tool(false, "h_echo", json!({ "message": msg })).await;
    let took = t.elapsed();
    match &r.message {
        Some(m) if m.get("result").is_some() => {
            assert_eq!(r.text(), format!("Echo: {msg}"), "{m}");
            Ok(took)
        }
        Some(m) => Err(m["error"].to_string()),
        None => panic!("no answer to a tools/call: {r:?}"),
    }
}

/// `n` sequential echo calls, all of which must succeed.
async fn latencies(c: &Client, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(echo(c, i).await.unwrap_or_else(|e| panic!("call {i} failed: {e}")));
    }
    out
}

/// "p50 X ms, p99 Y ms over N calls".
fn summary(mut d: Vec<Duration>) -> String {
    if d.is_empty() {
        return "no calls".into();
    }
    d.sort();
    let at = |q: f64| d[((d.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} calls",
        at(0.5),
        at(0.99),
        at(1.0),
        d.len()
    )
}

/// A healthy Legacy client with a kept-alive connection.
async fn healthy(gw: &Gateway) -> Client {
    let c = client_for(gw, false).await;
    echo(&c, 0).await.expect("first call");
    c
}

/// What the idle-connection storm did.
#[derive(Default, Debug)]
struct StormCounts {
    /// Connections opened.
    opened: AtomicUsize,
    /// Connections vmcp closed (header-read timeout).
    closed: AtomicUsize,
    /// Connects that failed or timed out.
    failed: AtomicUsize,
}

/// `idle` silent connections to vmcp (process `pid`) at `addr` until `until`: each is reopened
/// as soon as vmcp closes it. Everything is dropped (closed) when the returned task ends.
///
/// The first connections are opened in batches, each once vmcp has accepted the previous one (or
/// stopped accepting: at its cap, or out of descriptors). All at once, they could overflow the
/// listen backlog, and connections whose handshake the kernel drops never reach vmcp.
fn idle_storm(
    addr: String,
    pid: i32,
    idle: usize,
    until: tokio::time::Instant,
) -> (tokio::task::JoinHandle<()>, Arc<StormCounts>) {
    const BATCH: usize = 50;
    let counts = Arc::new(StormCounts::default());
    let c = counts.clone();
    let task = tokio::spawn(async move {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..idle {
            let addr = addr.clone();
            let c = c.clone();
            let gate = gate.clone();
            set.spawn(async move {
                match tokio::time::timeout_at(until, gate.acquire()).await {
                    Ok(Ok(p)) => p.forget(),
                    _ => return,
                }
                while tokio::time::Instant::now() < until {
                    let mut tcp =
                        match tokio::time::timeout_at(until, TcpStream::connect(&addr)).await {
                            Ok(Ok(t)) => t,
                            Ok(Err(_)) => {
                                c.failed.fetch_add(1, Ordering::Relaxed);
                                // Loopback refusals are immediate: do not spin.
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                            Err(_) => return,
                        };
                    c.opened.fetch_add(1, Ordering::Relaxed);
                    let mut buf = [0u8; 64];
                    // Silent until vmcp closes the connection (or the storm ends).
                    match tokio::time::timeout_at(until, tcp.read(&mut buf)).await {
                        Ok(_) => {
                            c.closed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => return,
                    }
                }
            });
        }
        let fds = || open_fds(pid).unwrap_or(0);
        let mut released = 0;
        while released < idle && tokio::time::Instant::now() < until {
            let batch = BATCH.min(idle - released);
            let target = fds() + batch;
            gate.add_permits(batch);
            released += batch;
            // Until vmcp accepted the batch, or accepted nothing more for 100 ms.
            let (mut last, mut since) = (fds(), Instant::now());
            while tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let n = fds();
                if n >= target {
                    break;
                }
                if n > last {
                    (last, since) = (n, Instant::now());
                } else if since.elapsed() > Duration::from_millis(100) {
                    break;
                }
            }
        }
        while set.join_next().await.is_some() {}
    });
    (task, counts)
}

/// Storm 1: more silent connections than vmcp has descriptors, with `maxConnections` below the
/// limit, so vmcp never runs out: surplus connections wait in the listen backlog and the silent
/// ones are closed after `headerReadTimeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_storm_below_the_connection_cap_hurts_no_one() {
    let fixture = Fixture::http("legacy", "h");
    let gw = Gateway::start_fd_limited(
        &config(&fixture.url, &["maxConnections: 900", "headerReadTimeout: 3s"]),
        NOFILE,
    );
    let watch = Watcher::new(&gw).await;
    watch.assert_backend_up("before the storm").await;
    // 900 connections leave enough of 1,024 descriptors: no warning at start.
    assert!(!gw.proc.stderr().contains("open-file limit"), "{}", gw.proc.stderr());
    let c = healthy(&gw).await;
    let before = latencies(&c, BEFORE).await;
    eprintln!("idle storm (maxConnections 900): before: {}", summary(before));

    let until = tokio::time::Instant::now() + STORM;
    let (storm, counts) = idle_storm(addr(&gw), gw.pid(), IDLE, until);
    // The storm reached the cap: vmcp holds 900 connections.
    let pid = gw.pid();
    let stderr = || gw.proc.stderr();
    poll(Duration::from_secs(10), "vmcp at its connection cap", || {
        let hit = stderr().contains("connection limit reached");
        async move { hit.then_some(()) }
    })
    .await;
    let peak = open_fds(pid).unwrap_or(0);
    let mut during = Vec::new();
    let mut max_fds = peak;
    let mut fresh = Vec::new();
    let mut n = 0;
    while tokio::time::Instant::now() < until {
        n += 1;
        during.push(echo(&c, n).await.unwrap_or_else(|e| panic!("healthy call failed: {e}")));
        max_fds = max_fds.max(open_fds(pid).unwrap_or(0));
        if n % 20 == 0 {
            assert_eq!(watch.health().await, 200);
            watch.assert_backend_up("during the storm").await;
        }
        if n % 50 == 1 {
            // A new client (a new connection, queued behind the storm's) is served too.
            let t = Instant::now();
            let f = healthy(&gw).await;
            fresh.push(t.elapsed());
            drop(f);
        }
    }
    storm.await.expect("storm task");
    eprintln!(
        "idle storm (maxConnections 900): during: {}; new clients (connect+initialize+call): {}; \
         storm connections opened {}, closed by vmcp {}, failed {}; vmcp's open fds peaked at {max_fds}",
        summary(during),
        summary(fresh.clone()),
        counts.opened.load(Ordering::Relaxed),
        counts.closed.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
    );
    assert!(!fresh.is_empty(), "no new client was tried during the storm");
    assert!(max_fds < NOFILE as usize, "vmcp reached its descriptor limit ({max_fds})");
    // vmcp closed the silent connections (header-read timeout), and served everyone after.
    assert!(counts.closed.load(Ordering::Relaxed) >= 900, "{counts:?}");
    assert_eq!(watch.health().await, 200);
    watch.assert_backend_up("after the storm").await;
    healthy(&gw).await;
}

/// Storm 1 with the default `maxConnections` (10,000, far above the limit): vmcp really runs out
/// of descriptors. `accept` backs off, and a healthy client's call that needs a new backend
/// connection may fail with `EMFILE`, but the backend is not marked down (that would fail every
/// client's calls to it), and everything works again once the storm ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_a_backend_is_not_marked_down() {
    let fixture = Fixture::http("legacy", "h");
    let gw = Gateway::start_fd_limited(&config(&fixture.url, &["headerReadTimeout: 4s"]), NOFILE);
    let watch = Watcher::new(&gw).await;
    // vmcp said at start that 10,000 connections do not fit in 1,024 descriptors.
    let warned = gw.proc.stderr();
    assert!(
        warned.contains("maxConnections leaves under 100 of the open-file limit")
            && warned.contains("open_file_limit=1024"),
        "{warned}"
    );
    // Several healthy clients, so their concurrent calls need more backend connections than
    // the sequential calls before left in the pool.
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(healthy(&gw).await);
    }
    let before = latencies(&clients[0], BEFORE).await;
    eprintln!("idle storm (default maxConnections): before: {}", summary(before));

    let until = tokio::time::Instant::now() + STORM;
    let (storm, counts) = idle_storm(addr(&gw), gw.pid(), IDLE, until);
    let proc_stderr = || gw.proc.stderr();
    poll(Duration::from_secs(10), "vmcp out of descriptors", || {
        let hit = proc_stderr().contains("accept failed");
        async move { hit.then_some(()) }
    })
    .await;
    let mut during = Vec::new();
    let mut failed = Vec::new();
    let mut n = 0;
    while tokio::time::Instant::now() < until {
        n += 1;
        let round = futures::future::join_all(clients.iter().map(|c| echo(c, n))).await;
        for r in round {
            match r {
                Ok(d) => during.push(d),
                Err(e) => failed.push(e),
            }
        }
        assert_eq!(watch.health().await, 200);
        watch.assert_backend_up("during the storm").await;
    }
    storm.await.expect("storm task");
    eprintln!(
        "idle storm (default maxConnections): during: {} ({} calls failed{}); storm connections \
         opened {}, closed by vmcp {}, failed {}",
        summary(during),
        failed.len(),
        failed.first().map(|e| format!(", e.g. {e}")).unwrap_or_default(),
        counts.opened.load(Ordering::Relaxed),
        counts.closed.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
    );
    // Only requests that needed a descriptor at that moment failed, and said why.
    for e in &failed {
        assert!(e.contains("-32603") && e.contains("Too many open files"), "{e}");
    }
    // Once the storm is over, every client is served again.
    for c in &clients {
        poll(Duration::from_secs(10), "a healthy client's call succeeding", || async move {
            echo(c, 0).await.ok()
        })
        .await;
    }
    healthy(&gw).await;
    assert_eq!(watch.health().await, 200);
    watch.assert_backend_up("after the storm").await;
}

/// Storm 2: 1,500 Legacy sessions, each with its own backend session. An idle backend session
/// holds no GET stream (so no descriptor), so vmcp stays far below its limit; past
/// `operational.backendSessions.maxPerBackend` (1,000) the least recently used idle backend
/// sessions are evicted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_session_storm_does_not_run_out_of_descriptors() {
    let fixture = Fixture::http("legacy", "h");
    let gw = Gateway::start_fd_limited(&config(&fixture.url, &[]), NOFILE);
    let watch = Watcher::new(&gw).await;
    let c = healthy(&gw).await;
    let before = latencies(&c, BEFORE).await;
    eprintln!("session storm: before: {}", summary(before));

    let done = Arc::new(AtomicBool::new(false));
    let pid = gw.pid();
    // The healthy client, measured until the storm is over.
    let measure = {
        let c = c.clone();
        let done = done.clone();
        let watch = watch.clone();
        tokio::spawn(async move {
            let mut during = Vec::new();
            let mut max_fds = 0;
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut n = 0;
            // Paced, so the measuring is not itself a load on vmcp.
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                tick.tick().await;
                n += 1;
                during
                    .push(echo(&c, n).await.unwrap_or_else(|e| panic!("healthy call failed: {e}")));
                max_fds = max_fds.max(open_fds(pid).unwrap_or(0));
                if n % 25 == 0 {
                    assert_eq!(watch.health().await, 200);
                    watch.assert_backend_up("during the storm").await;
                }
            }
            (during, max_fds)
        })
    };
    // One HTTP client for all sessions (building one per session costs more than the session).
    let base = Client::new(&gw.url);
    let started = Instant::now();
    let ended: usize = futures::stream::iter(0..SESSIONS)
        .map(|i| {
            let mut s = base.clone();
            async move {
                s.legacy_init().await;
                echo(&s, i).await.unwrap_or_else(|e| panic!("session {i}'s call failed: {e}"));
                // A third end with DELETE; the rest stay open (idle).
                if i % 3 == 0 {
                    assert_eq!(s.delete_session().await, 200, "DELETE of session {i}");
                    1
                } else {
                    0
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .fold(0, |a, b| async move { a + b })
        .await;
    let storm_took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let (during, max_fds) = measure.await.expect("measuring task");
    let fds_after = open_fds(pid).unwrap_or(0);
    let status = watch.assert_backend_up("after the storm").await;
    eprintln!(
        "session storm: during: {}; {SESSIONS} sessions ({ended} ended with DELETE) in {:.1} s, \
         {CONCURRENCY} at a time; vmcp's open fds peaked at {max_fds}, {fds_after} after; \
         {} sessions open",
        summary(during),
        storm_took.as_secs_f64(),
        status["sessions"],
    );
    let open = status["sessions"].as_u64().expect("sessions in /status") as usize;
    assert!(
        open > SESSIONS - ended,
        "{open} sessions open, expected the {} not ended",
        SESSIONS - ended
    );
    assert!(max_fds < NOFILE as usize, "vmcp reached its descriptor limit ({max_fds})");
    // Open sessions cost no connection each.
    assert!(fds_after < 256, "{fds_after} descriptors open with {open} idle sessions");
    assert_eq!(watch.health().await, 200);
    healthy(&gw).await;
    echo(&c, 0).await.expect("the healthy client after the storm");
}
