//! Every `vmcp-bench` preset end to end with very short windows and tiny sizes, and `--url`
//! driving an endpoint the test started: each ran, checked its replies and reported no error.
//! No timing is asserted: the figures belong in `docs/benchmarks.md`, from a release build.
//!
//! The runs take turns (one lock): each starts several processes on two shared cores.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use serde_json::Value;

use common::servers;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const CONCURRENCY: [u64; 2] = [1, 2];

/// A finished run: the JSON report and what the bench printed.
struct Run {
    report: Value,
    stdout: String,
    stderr: String,
}

/// `vmcp-bench <args> --out <tmp>` with short windows; asserts it exited 0.
fn bench(name: &str, args: &[&str]) -> Run {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (vmcp, fixture) = servers();
    let out = std::env::temp_dir().join(format!("vmcp-bench-{name}-{}.json", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_vmcp-bench"))
        .args(["--duration", "300ms", "--warmup", "100ms", "--concurrency", "1,2"])
        .args(args)
        .arg("--out")
        .arg(&out)
        .arg("--vmcp")
        .arg(&vmcp)
        .arg("--fixture")
        .arg(&fixture)
        .output()
        .expect("running vmcp-bench");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(
        run.status.success(),
        "{name}: exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        run.status
    );
    let text = std::fs::read_to_string(&out)
        .unwrap_or_else(|e| panic!("{name}: no JSON report ({e}); stderr:\n{stderr}"));
    let _ = std::fs::remove_file(&out);
    Run { report: serde_json::from_str(&text).expect("JSON report"), stdout, stderr }
}

/// The row of `target` at concurrency `c`.
fn row<'a>(r: &'a Run, target: &str, c: u64) -> &'a Value {
    let rows = r.report["rows"].as_array().expect("rows");
    rows.iter()
        .find(|x| x["target"] == target && x["concurrency"] == c)
        .unwrap_or_else(|| panic!("no {target} row at c={c}:\n{}", r.stdout))
}

/// Every target measured at every level, with checked replies and not one error.
fn assert_clean(r: &Run, targets: &[&str]) {
    let rows = r.report["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), targets.len() * CONCURRENCY.len(), "rows:\n{}", r.stdout);
    for t in targets {
        for c in CONCURRENCY {
            let x = row(r, t, c);
            assert!(x["requests"].as_u64() > Some(0), "{t} c={c} made no request: {x}");
            for e in ["errors", "warmup_errors", "setup_errors"] {
                assert_eq!(x[e], 0, "{t} c={c}: {e}: {x}\nstderr:\n{}", r.stderr);
            }
        }
    }
    assert_eq!(r.report["error_samples"], Value::Array(vec![]), "{}", r.stdout);
}

/// Ratios of `candidate` over `baseline` at every level.
fn assert_ratios(r: &Run, baseline: &str, candidate: &str) {
    let ratios = r.report["ratios"].as_array().expect("ratios");
    for c in CONCURRENCY {
        let x = ratios
            .iter()
            .find(|x| {
                x["baseline"] == baseline && x["candidate"] == candidate && x["concurrency"] == c
            })
            .unwrap_or_else(|| panic!("no {candidate}/{baseline} ratio at c={c}:\n{}", r.stdout));
        assert!(x["throughput"].as_f64().is_some_and(|v| v > 0.0), "{x}");
        assert!(x["p50"].as_f64().is_some_and(|v| v > 0.0), "{x}");
    }
}

#[test]
fn call_is_the_default_preset_and_reports_cpu_per_call() {
    let r = bench("call", &[]);
    assert_eq!(r.report["preset"], "call");
    assert_clean(&r, &["direct", "vmcp"]);
    assert_ratios(&r, "direct", "vmcp");
    for c in CONCURRENCY {
        let cpu = &row(&r, "vmcp", c)["cpu_us_per_request"];
        assert!(cpu["vmcp"].as_f64().is_some(), "no vmcp CPU per call at c={c}: {cpu}");
        assert!(cpu["fixture"].as_f64().is_some(), "no fixture CPU per call at c={c}: {cpu}");
    }
}

#[test]
fn list_preset_lists_every_backends_tools() {
    let args =
        ["--preset", "list", "--era", "modern", "--backends", "3", "--tools-per-backend", "10"];
    let r = bench("list", &args);
    assert_clean(&r, &["direct", "vmcp"]);
    assert_ratios(&r, "direct", "vmcp");
    for c in CONCURRENCY {
        assert_eq!(row(&r, "vmcp", c)["items"], 30, "3 backends x 10 tools");
        // The direct fixture also lists its built-in tools.
        assert!(row(&r, "direct", c)["items"].as_u64() > Some(30));
        assert!(row(&r, "vmcp", c)["cpu_us_per_request"]["vmcp"].as_f64().is_some());
    }
}

#[test]
fn init_preset_runs_whole_legacy_handshakes() {
    let r = bench("init", &["--preset", "init", "--backends", "2"]);
    assert_clean(&r, &["direct", "vmcp"]);
    assert_ratios(&r, "direct", "vmcp");
}

#[test]
fn sessions_preset_opens_and_closes_every_session() {
    let r = bench("sessions", &["--preset", "sessions", "--sessions", "200", "--openers", "4"]);
    let s = &r.report["sessions"];
    assert_eq!(s["opened"], 200, "{}", r.stdout);
    assert_eq!(s["open_errors"], 0, "{s}\n{}", r.stderr);
    // The gateway's own count agrees with the bench's.
    assert_eq!(s["status_sessions"], 200, "{s}");
    assert_eq!(s["closed"], 200, "{s}");
    assert_eq!(s["close_errors"], 0, "{s}\n{}", r.stderr);
    assert!(s["bytes_per_session"].as_f64().is_some(), "{s}");
    assert!(s["rss_before_kib"].as_u64() > Some(0), "{s}");
}

/// A `redis-server` on a free loopback port, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let bin = std::env::var("VMCP_REDIS_SERVER")
            .expect("VMCP_REDIS_SERVER is not set: run scripts/install-test-tools.sh");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Redis { child, port }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sessions_preset_spreads_sessions_over_replicas_on_redis() {
    let redis = Redis::start();
    let extra = std::env::temp_dir().join(format!("vmcp-bench-redis-{}.yaml", std::process::id()));
    std::fs::write(
        &extra,
        format!(
            "sessionStorage:\n  provider: redis\n  address: 127.0.0.1:{}\n  keyPrefix: 'smoke:'\n",
            redis.port
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", redis.port);
    let r = bench(
        "sessions-replicas",
        &[
            "--preset",
            "sessions",
            "--sessions",
            "300",
            "--openers",
            "6",
            "--replicas",
            "3",
            "--redis",
            &addr,
            "--config-extra",
            extra.to_str().unwrap(),
        ],
    );
    let _ = std::fs::remove_file(&extra);
    let s = &r.report["sessions"];
    assert_eq!(s["opened"], 300, "{}", r.stdout);
    assert_eq!((s["open_errors"].as_u64(), s["close_errors"].as_u64()), (Some(0), Some(0)), "{s}");
    let replicas = s["replicas"].as_array().expect("per-replica figures");
    assert_eq!(replicas.len(), 3, "{s}");
    // Two openers per replica: each holds its share, and its /status agrees.
    for rep in replicas {
        assert!(rep["opened"].as_u64() > Some(0), "{s}");
        assert_eq!(rep["status_sessions"], rep["opened"], "{s}");
    }
    let sum: u64 = replicas.iter().filter_map(|r| r["opened"].as_u64()).sum();
    assert_eq!(sum, 300, "{s}");
    assert!(s["redis_bytes_per_session"].as_f64().is_some_and(|b| b > 0.0), "{s}");
}

#[test]
fn auth_preset_calls_with_tokens_and_anonymously() {
    let r = bench("auth", &["--preset", "auth", "--era", "modern", "--users", "3"]);
    assert_clean(&r, &["direct", "vmcp", "vmcp-oidc"]);
    assert_ratios(&r, "vmcp", "vmcp-oidc");
    assert!(!r.stdout.contains("Bearer") && !r.stderr.contains("Bearer"), "{}", r.stdout);
}

/// A fixture the test starts, stopped on drop.
struct Fixture {
    child: Child,
    url: String,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fixture() -> Fixture {
    let (_, bin) = servers();
    let mut child = Command::new(bin)
        .args(["http", "--port", "0", "--json-response"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting vmcp-fixture");
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).expect("ready line");
    let url = line.trim().strip_prefix("listening on ").expect("listening line").to_owned();
    Fixture { child, url }
}

#[test]
fn any_url_is_driven_with_its_headers_and_their_values_are_not_printed() {
    let f = fixture();
    let secret = "s3cr3t-header-value";
    let header = format!("X-Bench-Token: {secret}");
    let args = ["--url", &f.url, "--tool", "echo", "--header", &header, "--direct-url", &f.url];
    let r = bench("url", &args);
    assert_clean(&r, &["direct", "url"]);
    assert_ratios(&r, "direct", "url");
    let json = r.report.to_string();
    assert!(json.contains("x-bench-token"), "the header's name is reported: {json}");
    for text in [&r.stdout, &r.stderr, &json] {
        assert!(!text.contains(secret), "a header value was printed:\n{text}");
    }
}
