//! The closed-loop load: workers that each hold one HTTP/1.1 connection (one `reqwest::Client`)
//! and, for the Legacy era, one MCP session, and repeat one operation ([`Op`]: a `tools/call`, a
//! `tools/list`, or a whole Legacy handshake) back to back, checking every reply.

mod client;

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use tokio::sync::Barrier;
use tokio::time::Instant;

pub use client::{McpClient, Op};

/// The Modern protocol version (stateless requests).
pub const MODERN: &str = "2026-07-28";
/// The Legacy protocol version (`initialize` sessions).
pub const LEGACY: &str = "2025-11-25";

/// Error samples kept per run (every error is counted; only these are kept as text).
const ERROR_SAMPLES: usize = 5;

/// Which protocol era the workers speak.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Era {
    /// `initialize`, then requests on the `Mcp-Session-Id` session.
    Legacy,
    /// Stateless 2026-07-28 requests.
    Modern,
}

/// What a run drives: where, what, and with which headers.
#[derive(Clone, Debug)]
pub struct Workload {
    pub url: String,
    pub op: Op,
    pub era: Era,
    /// Header sets; worker `w` sends set `w % len` on every request (none if empty). Several
    /// sets are several users (the `auth` preset's bearer tokens).
    pub headers: Vec<HeaderMap>,
}

/// What one load run measured.
#[derive(Debug, Default)]
pub struct RunResult {
    /// Latencies (ns) of the successful requests started in the measured window.
    pub latencies_ns: Vec<u64>,
    /// Failed requests started in the measured window.
    pub errors: u64,
    /// Failed requests started during the warm-up (not in `errors`, but reported).
    pub warmup_errors: u64,
    /// Workers that could not set up their session (they sent no load).
    pub setup_errors: u64,
    /// The measured window (wall time).
    pub window: Duration,
    /// A few error messages.
    pub error_samples: Vec<String>,
    /// Items in the last checked reply (`tools/list`), if any.
    pub items: Option<usize>,
    /// Body size of the last checked reply (bytes).
    pub reply_bytes: Option<usize>,
}

/// The phases every worker follows.
struct Plan {
    work: Workload,
    /// Set when all workers are connected: the warm-up starts then.
    start: Barrier,
    warmup: Duration,
    duration: Duration,
}

/// Runs `concurrency` workers on `work`: warm-up, then the measured window. `on_window` is
/// called right when the window opens and right after it closes (to sample the servers' CPU
/// time).
pub async fn run(
    work: &Workload,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    mut on_window: impl FnMut(bool),
) -> RunResult {
    let plan = Arc::new(Plan {
        work: work.clone(),
        start: Barrier::new(concurrency + 1),
        warmup,
        duration,
    });
    let mut tasks = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let plan = plan.clone();
        tasks.push(tokio::spawn(worker(w, plan)));
    }
    // Session setup is not measured; workers are released together.
    plan.start.wait().await;
    let t0 = Instant::now();
    tokio::time::sleep_until(t0 + warmup).await;
    on_window(true);
    tokio::time::sleep_until(t0 + warmup + duration).await;
    on_window(false);

    let mut out = RunResult { window: duration, ..Default::default() };
    for t in tasks {
        match t.await {
            Ok(w) => {
                out.latencies_ns.extend(w.latencies_ns);
                out.errors += w.errors;
                out.warmup_errors += w.warmup_errors;
                out.setup_errors += u64::from(w.setup_failed);
                out.items = out.items.or(w.items);
                out.reply_bytes = out.reply_bytes.or(w.reply_bytes);
                for e in w.error_samples {
                    if out.error_samples.len() < ERROR_SAMPLES {
                        out.error_samples.push(e);
                    }
                }
            }
            Err(e) => {
                out.setup_errors += 1;
                if out.error_samples.len() < ERROR_SAMPLES {
                    out.error_samples.push(format!("worker task failed: {e}"));
                }
            }
        }
    }
    out.latencies_ns.sort_unstable();
    out
}

#[derive(Default)]
struct WorkerResult {
    latencies_ns: Vec<u64>,
    errors: u64,
    warmup_errors: u64,
    setup_failed: bool,
    error_samples: Vec<String>,
    items: Option<usize>,
    reply_bytes: Option<usize>,
}

async fn worker(w: usize, plan: Arc<Plan>) -> WorkerResult {
    let mut out = WorkerResult::default();
    let work = &plan.work;
    let headers = match work.headers.len() {
        0 => HeaderMap::new(),
        n => work.headers[w % n].clone(),
    };
    let client = match McpClient::new(&work.url, work.era, headers) {
        Ok(c) => Some(c),
        Err(e) => {
            out.error_samples.push(format!("worker {w}: {e:#}"));
            None
        }
    };
    let mut client = match client {
        Some(mut c) => match c.prepare(&work.op).await {
            Ok(()) => Some(c),
            Err(e) => {
                out.error_samples.push(format!("worker {w} setup: {e:#}"));
                None
            }
        },
        None => None,
    };
    // Every worker reaches the barrier, even a failed one, so the run cannot deadlock.
    plan.start.wait().await;
    let Some(c) = client.as_mut() else {
        out.setup_failed = true;
        return out;
    };
    let t0 = Instant::now();
    let open = t0 + plan.warmup;
    let close = open + plan.duration;
    let mut seq: u64 = 0;
    loop {
        let started = Instant::now();
        if started >= close {
            break;
        }
        seq += 1;
        let message = format!("w{w}-{seq}");
        let result = c.step(&work.op, &message).await;
        let measured = started >= open;
        match result {
            Ok(step) => {
                out.items = step.items;
                out.reply_bytes = Some(step.bytes);
                if measured {
                    let ns = u64::try_from(step.latency.as_nanos()).unwrap_or(u64::MAX);
                    out.latencies_ns.push(ns);
                }
            }
            Err(e) => {
                if measured {
                    out.errors += 1;
                } else {
                    out.warmup_errors += 1;
                }
                if out.error_samples.len() < ERROR_SAMPLES {
                    out.error_samples.push(format!("worker {w}: {e:#}"));
                }
                // Do not spin on a dead server.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    c.close().await;
    out
}

#[cfg(test)]
mod tests {
    //! Wrong replies are counted as errors and never timed, against a stub server on loopback
    //! that answers every request with a well-formed but wrong result.

    use super::*;
    use serde_json::{Value, json};

    /// Serves `answer(request)` for every POST; returns its URL. The server task ends with the
    /// test's runtime.
    async fn stub(answer: fn(&Value) -> Value) -> String {
        let app = axum::Router::new().route(
            "/mcp",
            axum::routing::post(move |body: axum::Json<Value>| async move {
                axum::Json(answer(&body.0))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    async fn run_against(url: &str, op: Op) -> RunResult {
        let work = Workload { url: url.to_owned(), op, era: Era::Modern, headers: Vec::new() };
        let window = Duration::from_millis(200);
        run(&work, 2, Duration::from_millis(50), window, |_| {}).await
    }

    #[tokio::test]
    async fn a_wrong_echo_is_an_error_not_a_sample() {
        let url = stub(|req| {
            json!({ "jsonrpc": "2.0", "id": req["id"],
                    "result": { "content": [{ "type": "text", "text": "Echo: someone else" }] } })
        })
        .await;
        let r = run_against(&url, Op::Call { tool: "echo".into() }).await;
        assert!(r.latencies_ns.is_empty(), "{} wrong replies were timed", r.latencies_ns.len());
        assert!(r.errors > 0, "no error counted");
        assert!(
            r.error_samples.iter().any(|e| e.contains("unexpected reply")),
            "{:?}",
            r.error_samples
        );
    }

    #[tokio::test]
    async fn a_list_of_the_wrong_length_is_an_error() {
        let url = stub(|req| {
            json!({ "jsonrpc": "2.0", "id": req["id"],
                    "result": { "tools": [{ "name": "a", "inputSchema": {} }] } })
        })
        .await;
        let r = run_against(&url, Op::List { expect: Some(2) }).await;
        assert!(r.latencies_ns.is_empty() && r.errors > 0, "{r:?}");
        assert!(r.error_samples.iter().any(|e| e.contains("1 tools listed, expected 2")));
        // The right length passes.
        let r = run_against(&url, Op::List { expect: Some(1) }).await;
        assert!(r.errors == 0 && !r.latencies_ns.is_empty(), "{r:?}");
        assert_eq!(r.items, Some(1));
    }

    #[tokio::test]
    async fn a_reply_to_another_id_is_an_error() {
        let url = stub(|_| json!({ "jsonrpc": "2.0", "id": -1, "result": { "tools": [] } })).await;
        let r = run_against(&url, Op::List { expect: None }).await;
        assert!(r.latencies_ns.is_empty() && r.errors > 0, "{r:?}");
        assert!(r.error_samples.iter().any(|e| e.contains("another id")), "{:?}", r.error_samples);
    }
}
