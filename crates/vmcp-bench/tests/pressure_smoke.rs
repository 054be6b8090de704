//! `vmcp-bench pressure` end to end with very short windows: every bound is hit (the aggressor
//! saw at least one documented refusal) and the healthy client saw no error. No timing is
//! asserted: the figures belong in `docs/benchmarks.md`, from a release build.

mod common;

use std::process::Command;

use serde_json::Value;

use common::servers;

#[test]
fn every_bound_is_hit_and_the_healthy_client_is_served() {
    let (vmcp, fixture) = servers();
    let out = std::env::temp_dir().join(format!("vmcp-bench-pressure-{}.json", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_vmcp-bench"))
        .arg("pressure")
        .args(["--duration", "300ms", "--warmup", "100ms", "--rate", "100"])
        .arg("--out")
        .arg(&out)
        .arg("--vmcp")
        .arg(&vmcp)
        .arg("--fixture")
        .arg(&fixture)
        .output()
        .expect("running vmcp-bench pressure");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    let text = std::fs::read_to_string(&out)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stdout:\n{stdout}\nstderr:\n{stderr}"));
    let _ = std::fs::remove_file(&out);
    let report: Value = serde_json::from_str(&text).expect("JSON report");
    let rows = report["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 14, "one row per bound:\n{stdout}");
    for row in rows {
        let bound = row["bound"].as_str().unwrap_or_default();
        let refusals = row["refusalsBeforeWindow"].as_u64().unwrap_or(0)
            + row["refusalsDuring"].as_u64().unwrap_or(0);
        assert!(refusals > 0, "{bound} was not hit: {row}\n{stderr}");
        assert!(row["failure"].is_null(), "{bound}: {}\n{stderr}", row["failure"]);
        for phase in ["before", "during"] {
            let p = &row[phase];
            assert_eq!(p["errors"], 0, "{bound}: the healthy client failed {phase}: {p}");
            assert!(p["ok"].as_u64() > Some(0) || bound == "maxInFlight", "{bound} {phase}: {p}");
            // Only a total in-flight bound is shared with the healthy client.
            if bound != "maxInFlight" {
                assert_eq!(p["refused"], 0, "{bound}: the healthy client was refused {phase}: {p}");
            }
        }
    }
    assert!(run.status.success(), "exit {:?}; stdout:\n{stdout}\nstderr:\n{stderr}", run.status);
}
