//! The client edge and shutdown, against the real binary: `/status` behind the Host/Origin guard,
//! header-read and idle timeouts, the connection cap, accept errors (EMFILE), the grace period
//! and the second signal.
//!
//! Timeouts are configured short; lower bounds ("not closed before") rely on timers never firing
//! early, upper bounds are generous. Readiness is always polled.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `host:port` of a gateway.
fn addr(gw: &Gateway) -> String {
    gw.base.trim_start_matches("http://").to_owned()
}

/// Config with no backends and the given `server.connections` lines (each "key: value").
fn config(connections: &[&str]) -> String {
    let mut y = "name: edge\nbackends: []\nserver:\n  connections:\n".to_owned();
    for c in connections {
        y.push_str(&format!("    {c}\n"));
    }
    y
}

/// Writes a GET on `tcp` and reads one response (headers and a Content-Length body), returning
/// the status. The connection stays open (keep-alive).
async fn get_on(tcp: &mut TcpStream, path: &str, host: &str) -> u16 {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("write request");
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0usize);
            if body.len() >= len {
                return head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("no status in {head:?}"));
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, tcp.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read response");
        assert!(n > 0, "connection closed before the response: {text:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A fresh connection's answer to one GET.
async fn get(gw: &Gateway, path: &str, host: &str) -> u16 {
    let mut tcp = TcpStream::connect(addr(gw)).await.expect("connect");
    get_on(&mut tcp, path, host).await
}

/// Waits until the server closes `tcp` (EOF or reset), failing after `within`.
async fn closed_within(tcp: &mut TcpStream, within: Duration) {
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(within, tcp.read(&mut chunk)).await {
            Err(_) => panic!("connection still open after {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            // Bytes a test did not expect; keep reading until the close.
            Ok(Ok(_)) => {}
        }
    }
}

/// Whether the server answers anything on `tcp` within `within`.
async fn silent_for(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut chunk = [0u8; 1024];
    tokio::time::timeout(within, tcp.read(&mut chunk)).await.is_err()
}

#[tokio::test]
async fn status_is_behind_the_host_guard() {
    let gw = Gateway::start("name: edge\nbackends: []\n");
    let port = addr(&gw).rsplit_once(':').map(|(_, p)| p.to_owned()).unwrap();
    assert_eq!(get(&gw, "/status", "evil.example.com").await, 403);
    assert_eq!(get(&gw, "/status", &format!("evil.example.com:{port}")).await, 403);
    assert_eq!(get(&gw, "/status", &format!("127.0.0.1:{port}")).await, 200);
    assert_eq!(get(&gw, "/status", "localhost").await, 200);
    // Probes and OAuth discovery stay open to any Host (404: no incoming auth configured).
    assert_eq!(get(&gw, "/health", "evil.example.com").await, 200);
    assert_eq!(get(&gw, "/.well-known/oauth-protected-resource", "evil.example.com").await, 404);
    // The JSON is still there for loopback callers.
    assert_eq!(gw.status().await["name"], "edge");
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_header_read_timeout() {
    let gw = Gateway::start(&config(&["headerReadTimeout: 600ms", "idleTimeout: 30s"]));
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(TcpStream::connect(addr(&gw)).await.expect("connect"));
    }
    // Slowloris: a header that never ends.
    let mut slow = TcpStream::connect(addr(&gw)).await.expect("connect");
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
    for tcp in silent.iter_mut().chain([&mut slow]) {
        closed_within(tcp, Duration::from_secs(10)).await;
    }
    let took = opened.elapsed();
    assert!(took >= Duration::from_millis(550), "closed after {took:?}, before the timeout");
    // Served clients are unaffected.
    assert_eq!(get(&gw, "/health", "localhost").await, 200);
}

#[tokio::test]
async fn a_stalled_request_body_gets_the_connection_dropped() {
    let gw = Gateway::start(&config(&["bodyReadTimeout: 700ms"]));
    let mut tcp = TcpStream::connect(addr(&gw)).await.expect("connect");
    let sent = Instant::now();
    tcp.write_all(
        b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"jsonrpc\":",
    )
    .await
    .unwrap();
    // Closed without an answer: no status line is ever read.
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk)).await {
            Err(_) => panic!("connection still open after 10s"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
    let took = sent.elapsed();
    assert!(got.is_empty(), "answered: {}", String::from_utf8_lossy(&got));
    assert!(took >= Duration::from_millis(650), "dropped after {took:?}, before the timeout");
    // A body sent in time is still served.
    let c = gw.client();
    assert_eq!(c.modern_call("tools/list", json!({})).await.result()["tools"], json!([]));
}

#[tokio::test]
async fn kept_alive_connections_close_after_the_idle_timeout_not_the_header_timeout() {
    let gw = Gateway::start(&config(&["headerReadTimeout: 600ms", "idleTimeout: 2500ms"]));
    let mut tcp = TcpStream::connect(addr(&gw)).await.expect("connect");
    assert_eq!(get_on(&mut tcp, "/health", "localhost").await, 200);
    // Longer than the header timeout between requests: the connection is idle, not late.
    assert!(silent_for(&mut tcp, Duration::from_millis(1200)).await, "closed while idle");
    assert_eq!(get_on(&mut tcp, "/health", "localhost").await, 200);
    let answered = Instant::now();
    closed_within(&mut tcp, Duration::from_secs(15)).await;
    let idle = answered.elapsed();
    assert!(idle >= Duration::from_millis(2400), "closed after {idle:?} idle, before the timeout");
}

#[tokio::test]
async fn at_the_connection_cap_new_connections_wait_until_a_slot_frees() {
    let gw = Gateway::start(&config(&[
        "maxConnections: 2",
        "headerReadTimeout: 30s",
        "idleTimeout: 30s",
    ]));
    // Two served, kept-alive connections hold both slots.
    let mut a = TcpStream::connect(addr(&gw)).await.expect("connect");
    assert_eq!(get_on(&mut a, "/health", "localhost").await, 200);
    let mut b = TcpStream::connect(addr(&gw)).await.expect("connect");
    assert_eq!(get_on(&mut b, "/health", "localhost").await, 200);
    // A third is not served: it waits in the listen backlog.
    let mut c = TcpStream::connect(addr(&gw)).await.expect("connect (backlog)");
    c.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    assert!(silent_for(&mut c, Duration::from_millis(800)).await, "served over the cap");
    // Existing clients still work.
    assert_eq!(get_on(&mut b, "/health", "localhost").await, 200);
    // A slot frees: the waiting connection is served.
    drop(a);
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(STEP, c.read(&mut buf))
        .await
        .expect("served once a slot freed")
        .expect("read");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let warned = gw.proc.stderr();
    assert!(warned.contains("connection limit reached"), "{warned}");
}

/// Runs `vmcp serve` with at most `nofile` open files (`prlimit`), so accept fails with EMFILE.
fn start_with_fd_limit(yaml: &str, nofile: u32) -> (Proc, String) {
    let config = temp_path("edge-emfile", "yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={nofile}:{nofile}"))
        .arg("--")
        .arg(vmcp_bin())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .args(["--port", "0"])
        .env("VMCP_LOG", "info");
    let proc = Proc::start("vmcp (fd limit)", cmd);
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        if let Some(l) = proc.lines().iter().find(|l| l.contains(" listening on http://")) {
            break l.split_once("listening on ").map(|(_, u)| u.trim().to_owned()).unwrap();
        }
        assert!(Instant::now() < deadline, "vmcp did not start: {}", proc.stderr());
        std::thread::sleep(Duration::from_millis(20));
    };
    let addr = url.trim_start_matches("http://").trim_end_matches("/mcp").to_owned();
    (proc, addr)
}

#[tokio::test]
async fn out_of_file_descriptors_the_accept_loop_backs_off_and_recovers() {
    /// Shows vmcp's log when the test fails.
    struct Logs(Proc);
    impl Drop for Logs {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!("---- vmcp stderr ----\n{}", self.0.stderr());
            }
        }
    }
    let (proc, addr) = start_with_fd_limit(
        &config(&["headerReadTimeout: 60s", "idleTimeout: 60s"]),
        // Enough for the runtime and a few connections; see the poll below.
        48,
    );
    let mut logs = Logs(proc);
    let proc = &mut logs.0;
    // A served connection from before the exhaustion.
    let mut served = poll(Duration::from_secs(10), "vmcp accepting", || {
        let addr = addr.clone();
        async move { TcpStream::connect(addr).await.ok() }
    })
    .await;
    assert_eq!(get_on(&mut served, "/health", "localhost").await, 200);
    // More silent connections than vmcp has descriptors for (the limit is 48 and vmcp uses
    // about a dozen itself); the rest wait in the listen backlog (1,024, or
    // `net.core.somaxconn` if lower), so no connect stalls on a full queue.
    let mut silent = Vec::new();
    for _ in 0..64 {
        silent.push(TcpStream::connect(&addr).await.expect("connect (backlog)"));
    }
    proc.wait_stderr(Duration::from_secs(20), "accept failed");
    // Backing off, not spinning: over a second, a handful of retries at most (5ms doubling).
    let count = |p: &Proc| p.stderr().matches("accept failed").count();
    let before = count(proc);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let retries = count(proc) - before;
    assert!(retries <= 12, "{retries} accept failures logged in one second");
    assert!(!proc.exited(), "vmcp exited: {}", proc.stderr());
    // Connections already open are served meanwhile.
    assert_eq!(get_on(&mut served, "/health", "localhost").await, 200);
    // Descriptors freed: the waiting connections and new ones are served again.
    drop(silent);
    let status = poll(Duration::from_secs(15), "a new connection served", || {
        let addr = addr.clone();
        async move {
            let mut tcp = TcpStream::connect(addr).await.ok()?;
            tcp.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").await.ok()?;
            let mut buf = [0u8; 256];
            let n = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf))
                .await
                .ok()?
                .ok()?;
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            head.starts_with("HTTP/1.1 200").then_some(head)
        }
    })
    .await;
    assert!(status.contains("ok"), "{status}");
}

/// Config with one stdio fixture backend `s` and the given connection keys.
fn with_stdio(connections: &[&str]) -> String {
    let mut y = format!("name: edge\nbackends:\n{}server:\n  connections:\n", stdio_backend("s"));
    for c in connections {
        y.push_str(&format!("    {c}\n"));
    }
    y
}

/// How many requests the gateway has started (its trace log).
fn started(gw: &Gateway) -> usize {
    gw.proc.stderr().matches("request started").count()
}

/// Starts a Modern `tools/call` of the fixture's `sleep` and waits until the gateway is working
/// on it. The returned task resolves to the HTTP status and body.
async fn call_sleep(gw: &Gateway, ms: u64) -> tokio::task::JoinHandle<(u16, String)> {
    let before = started(gw);
    let c = gw.client();
    let req =
        c.modern_post(1, "tools/call", json!({ "name": "s_sleep", "arguments": { "ms": ms } }));
    let task = tokio::spawn(async move {
        match req.send().await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    });
    poll(STEP, "the call in progress", || async { (started(gw) > before).then_some(()) }).await;
    task
}

const TRACE: (&str, &str) = ("VMCP_LOG", "info,vmcp::http::server=trace");

#[tokio::test]
async fn sigterm_lets_requests_finish_within_the_grace_period_then_exits() {
    let mut gw = Gateway::start_env(
        &with_stdio(&["shutdownGracePeriod: 2s", "backendShutdownTimeout: 3s"]),
        &[TRACE],
    );
    let kids = children_of(gw.pid());
    assert_eq!(kids.len(), 1, "one stdio child");
    let short = call_sleep(&gw, 500).await;
    let hung = call_sleep(&gw, 600_000).await;
    let signalled = Instant::now();
    kill(Pid::from_raw(gw.pid()), Signal::SIGTERM).unwrap();
    // The listener closes at once; the requests in progress go on.
    let gw_addr = addr(&gw);
    poll(Duration::from_secs(5), "new connections refused", || {
        let a = gw_addr.clone();
        async move { TcpStream::connect(a).await.is_err().then_some(()) }
    })
    .await;
    let (status, body) = tokio::time::timeout(STEP, short).await.expect("short call").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Slept 500 ms"), "{body}");
    // The hung one gets a clean 503 once the grace period is over.
    let (status, body) = tokio::time::timeout(STEP, hung).await.expect("hung call").unwrap();
    let answered = signalled.elapsed();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("shutting down"), "{body}");
    assert!(answered >= Duration::from_millis(1900), "answered after {answered:?}");
    poll(Duration::from_secs(10), "vmcp to exit", || {
        let done = gw.proc.exited();
        async move { done.then_some(()) }
    })
    .await;
    let took = signalled.elapsed();
    // grace (2s) + ABORT_FLUSH (1s) + the stdio child's stop (TERM, it exits at once) + slack.
    assert!(took < Duration::from_secs(7), "exit took {took:?}");
    assert!(kids.iter().all(|k| !alive(*k)), "stdio child {kids:?} outlived vmcp");
}

#[tokio::test]
async fn a_connection_opened_before_sigterm_gets_its_request_answered() {
    let mut gw = Gateway::start_env(&with_stdio(&["shutdownGracePeriod: 10s"]), &[TRACE]);
    // A call keeps the gateway draining while the test sends its late request.
    let long = call_sleep(&gw, 3_000).await;
    // Accepted before the signal, request not yet sent (a load balancer that picked this
    // replica a moment before the drain; or a request still on the wire).
    let mut early = TcpStream::connect(addr(&gw)).await.expect("connect");
    let mut idle = TcpStream::connect(addr(&gw)).await.expect("connect");
    assert_eq!(get_on(&mut idle, "/health", "localhost").await, 200);
    poll(STEP, "both connections accepted", || async {
        (gw.proc.stderr().matches("connection accepted").count() >= 3).then_some(())
    })
    .await;
    kill(Pid::from_raw(gw.pid()), Signal::SIGTERM).unwrap();
    gw.proc.wait_stderr(Duration::from_secs(5), "shutting down");
    // Refused from now on: a balancer tries the next replica.
    let a = addr(&gw);
    poll(STEP, "the listener to close", || {
        let a = a.clone();
        async move { TcpStream::connect(a).await.is_err().then_some(()) }
    })
    .await;
    // A kept-alive connection between requests closes at once ...
    closed_within(&mut idle, Duration::from_secs(2)).await;
    // ... one that has not sent its request yet gets it answered, then closes.
    // (The request comes a moment after the drain began, well within its window.)
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get_on(&mut early, "/health", "localhost").await, 200);
    closed_within(&mut early, Duration::from_secs(2)).await;
    let (status, body) = tokio::time::timeout(STEP, long).await.expect("long call").unwrap();
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_second_signal_exits_at_once_and_kills_stdio_children() {
    let mut gw = Gateway::start_env(&with_stdio(&["shutdownGracePeriod: 10m"]), &[TRACE]);
    let kids = children_of(gw.pid());
    assert_eq!(kids.len(), 1, "one stdio child");
    let hung = call_sleep(&gw, 600_000).await;
    kill(Pid::from_raw(gw.pid()), Signal::SIGTERM).unwrap();
    gw.proc.wait_stderr(Duration::from_secs(5), "shutting down");
    // Still draining: the grace period is ten minutes.
    assert!(!gw.proc.exited());
    let second = Instant::now();
    kill(Pid::from_raw(gw.pid()), Signal::SIGINT).unwrap();
    poll(Duration::from_secs(5), "vmcp to exit", || {
        let done = gw.proc.exited();
        async move { done.then_some(()) }
    })
    .await;
    let took = second.elapsed();
    assert!(took < Duration::from_secs(2), "second signal exit took {took:?}");
    assert!(gw.proc.stderr().contains("second signal"), "{}", gw.proc.stderr());
    // SIGKILLed synchronously before exit; the reap is init's.
    poll(Duration::from_secs(2), "stdio child gone", || {
        let left: Vec<i32> = kids.iter().copied().filter(|k| alive(*k)).collect();
        async move { left.is_empty().then_some(()) }
    })
    .await;
    let (status, _) = tokio::time::timeout(STEP, hung).await.expect("call ends").unwrap();
    assert_ne!(status, 200);
}

#[tokio::test]
async fn a_hung_backend_does_not_hold_shutdown_for_its_timeout() {
    let fixture = Fixture::http("legacy", "h");
    let yaml = format!(
        "name: edge\nbackends:\n{}    timeout: 10m\nserver:\n  connections:\n    \
         shutdownGracePeriod: 0s\n    backendShutdownTimeout: 1s\n",
        http_backend("h", &fixture.url)
    );
    let mut gw = Gateway::start(&yaml);
    assert_eq!(gw.backend_status("h").await["state"], "ready");
    // Frozen: the kernel still accepts its connections, nothing answers the session DELETE.
    kill(Pid::from_raw(fixture.proc.pid()), Signal::SIGSTOP).unwrap();
    let signalled = Instant::now();
    kill(Pid::from_raw(gw.pid()), Signal::SIGTERM).unwrap();
    poll(Duration::from_secs(15), "vmcp to exit", || {
        let done = gw.proc.exited();
        async move { done.then_some(()) }
    })
    .await;
    let took = signalled.elapsed();
    let _ = kill(Pid::from_raw(fixture.proc.pid()), Signal::SIGCONT);
    assert!(took < Duration::from_secs(5), "shutdown took {took:?} with a hung backend");
    assert!(
        gw.proc.stderr().contains("did not stop in time")
            || gw.proc.stderr().contains("took too long"),
        "{}",
        gw.proc.stderr()
    );
}
