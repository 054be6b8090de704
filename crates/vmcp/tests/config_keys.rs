//! ToolHive keys vmcp implements, against the real binary: `metadata` (top level and per backend)
//! in `/status`, and `operational.logLevel: debug` raising the log filter unless `VMCP_LOG` is set.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn status_shows_metadata() {
    let yaml = format!(
        "name: gw\nmetadata:\n  team: platform\n  env: prod\nbackends:\n{}    metadata: {{region: eu}}\n{}",
        stdio_backend("a"),
        stdio_backend("b")
    );
    let gw = Gateway::start(&yaml);
    let s = gw.status().await;
    assert_eq!(s["metadata"], json!({"team": "platform", "env": "prod"}));
    assert_eq!(gw.backend_status("a").await["metadata"], json!({"region": "eu"}));
    assert_eq!(gw.backend_status("b").await["metadata"], json!({}));
}

/// Runs `vmcp serve` on `yaml` with `VMCP_LOG` as given (or unset) until a line of its stdout or
/// stderr matches `until` (the test fails if none does), then stops it and returns everything it
/// wrote, read to the end.
fn output_until(yaml: &str, vmcp_log: Option<&str>, until: &str) -> String {
    let config = temp_path("config", "yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut cmd = Command::new(vmcp_bin());
    cmd.arg("serve").arg("--config").arg(&config).args(["--port", "0"]);
    match vmcp_log {
        Some(v) => cmd.env("VMCP_LOG", v),
        None => cmd.env_remove("VMCP_LOG"),
    };
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
    let stderr: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
    for pipe in [stdout, stderr] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut seen = String::new();
    let found = loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(until) {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    // Both pipes are at their end once the readers hang up: everything written is in `seen`.
    for line in rx.iter() {
        seen.push_str(&line);
        seen.push('\n');
    }
    assert!(found, "no {until:?} in vmcp's output:\n{seen}");
    seen
}

#[test]
fn log_level_debug_raises_the_filter_unless_vmcp_log_is_set() {
    let yaml =
        format!("name: gw\noperational:\n  logLevel: debug\nbackends:\n{}", stdio_backend("a"));
    output_until(&yaml, None, "operational.logLevel: debug");
    // VMCP_LOG wins: vmcp serves, and the debug line (logged before it listens) is absent.
    let seen = output_until(&yaml, Some("info"), "listening on http://");
    assert!(!seen.contains("operational.logLevel: debug"), "{seen}");
}
