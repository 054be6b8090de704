//! A ToolHive config means the same to vmcp: ToolHive's own e2e overrides config advertises the
//! names ToolHive's test expects, `manual` refuses to start on unresolved conflicts (and serves
//! once the suggested overrides are added), and under `priority` the lower-priority backend's
//! prompts stay, prefixed.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// The config of ToolHive's e2e test
/// `test/e2e/thv-operator/virtualmcp/virtualmcp_aggregation_overrides_test.go` (backend
/// `yardstick-override`, tool `echo` renamed `custom_echo_tool`, filter by the new name), with
/// the fixture standing in for yardstick. That test expects `yardstick-override_custom_echo_tool`
/// with the new description, and no `yardstick-override_echo`.
#[tokio::test]
async fn toolhive_e2e_overrides_config_advertises_toolhive_s_names() {
    let yaml = format!(
        "name: test-vmcp-overrides\nbackends:\n{}aggregation:
  conflictResolution: prefix
  tools:
    - workload: yardstick-override
      filter: [custom_echo_tool]
      overrides:
        echo:
          name: custom_echo_tool
          description: A renamed echo tool with custom description
",
        stdio_backend("yardstick-override")
    );
    let gw = Gateway::start(&yaml);
    let c = client_for(&gw, false).await;
    let r = c.call("tools/list", json!({})).await;
    assert_eq!(r.tool_names(), ["yardstick-override_custom_echo_tool"]);
    assert_eq!(
        r.result()["tools"][0]["description"],
        "A renamed echo tool with custom description"
    );
    assert_eq!(c.tool_names(true).await, ["yardstick-override_custom_echo_tool"]);
    for modern in [false, true] {
        let r = c
            .tool(
                modern,
                "yardstick-override_custom_echo_tool",
                json!({ "message": "override_test_123" }),
            )
            .await;
        assert_eq!(r.text(), "Echo: override_test_123", "modern={modern}");
    }
    let status = gw.status().await;
    assert_eq!(status["problems"], json!([]), "{status}");
}

/// Runs `vmcp serve` on `yaml` and waits (bounded) for it to exit; returns its exit code and
/// stderr.
fn serve_until_exit(yaml: &str, within: Duration) -> (Option<i32>, String) {
    let config = temp_path("manual", "yaml");
    std::fs::write(&config, yaml).expect("writing the config");
    let mut child = Command::new(vmcp_bin())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .args(["--port", "0"])
        .env("VMCP_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning vmcp");
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for vmcp") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&config);
            panic!("vmcp serve did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    let _ = std::fs::remove_file(&config);
    (status.code(), stderr)
}

#[tokio::test]
async fn manual_refuses_unresolved_conflicts_and_serves_with_the_suggested_overrides() {
    let backends = format!("{}{}", stdio_backend("a"), stdio_backend("b"));
    let yaml =
        format!("name: th\nbackends:\n{backends}aggregation:\n  conflictResolution: manual\n");
    let (code, stderr) = serve_until_exit(&yaml, Duration::from_secs(60));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("refusing to start: aggregation.conflictResolution is manual"),
        "{stderr}"
    );
    assert!(
        stderr.contains("tool name 'echo' is claimed by backend 'a' and backend 'b'"),
        "{stderr}"
    );
    assert!(stderr.contains("{workload: b, overrides: {echo: {name: b_echo}}}"), "{stderr}");

    // Every conflicting name, from the refusal; then the fix it suggests.
    let conflicting: Vec<String> = stderr
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- tool name '"))
        .filter_map(|rest| rest.split_once('\'').map(|(name, _)| name.to_owned()))
        .collect();
    assert!(conflicting.len() > 1 && conflicting.contains(&"echo".to_owned()), "{stderr}");
    let overrides: String =
        conflicting.iter().map(|t| format!("        {t}: {{name: b_{t}}}\n")).collect();
    let yaml = format!(
        "name: th\nbackends:\n{backends}aggregation:\n  conflictResolution: manual\n  tools:\n    - workload: b\n      overrides:\n{overrides}"
    );
    let gw = Gateway::start(&yaml);
    let c = client_for(&gw, false).await;
    let names = c.tool_names(false).await;
    for t in &conflicting {
        assert!(names.contains(t), "{t} (from a) missing: {names:?}");
        assert!(names.contains(&format!("b_{t}")), "b_{t} missing: {names:?}");
    }
    assert_eq!(names.len(), 2 * conflicting.len(), "{names:?}");
    assert_eq!(c.tool(false, "b_echo", json!({ "message": "m" })).await.text(), "Echo: m");
    // Only the two copies' shared resource URIs are left to report.
    let status = gw.status().await;
    let problems = status["problems"].as_array().cloned().unwrap_or_default();
    assert!(problems.iter().all(|p| p.as_str().unwrap_or("").starts_with("resource")), "{status}");
}

fn prompt_names(r: &Reply) -> Vec<String> {
    r.result()["prompts"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn priority_keeps_the_lower_priority_backend_s_prompts_prefixed() {
    let yaml = format!(
        "name: th\nbackends:\n{}{}aggregation:\n  conflictResolution: priority\n  conflictResolutionConfig:\n    priorityOrder: [a]\n",
        stdio_backend("a"),
        stdio_backend("b")
    );
    let gw = Gateway::start(&yaml);
    let c = client_for(&gw, false).await;
    let r = c.call("prompts/list", json!({})).await;
    let names = prompt_names(&r);
    assert!(names.contains(&"test_simple_prompt".to_owned()), "{names:?}");
    assert!(names.contains(&"b_test_simple_prompt".to_owned()), "{names:?}");
    // Every prompt of `b` is there, prefixed: as many as `a`'s bare ones.
    let bare = names.iter().filter(|n| !n.starts_with("b_")).count();
    assert_eq!(names.len(), 2 * bare, "{names:?}");
    let got = c.call("prompts/get", json!({ "name": "b_test_simple_prompt" })).await;
    let messages: &Value = &got.result()["messages"];
    assert!(messages.as_array().is_some_and(|m| !m.is_empty()), "{:?}", got.message);
    let status = gw.status().await;
    let problems = status["problems"].as_array().cloned().unwrap_or_default();
    assert!(problems.iter().all(|p| !p.as_str().unwrap_or("").starts_with("prompt")), "{status}");
}
