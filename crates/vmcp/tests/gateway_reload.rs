//! Config reload: SIGHUP and `--watch-config` apply a valid new file without dropping what runs
//! on unchanged backends; an invalid file, or one changing a restart-only key, is refused and
//! the old config keeps serving.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// Replaces the config file in one step (as an editor or a ConfigMap update would).
fn write_config(dir: &TempDir, yaml: &str) {
    let tmp = dir.0.join("config.yaml.tmp");
    std::fs::write(&tmp, yaml).expect("writing the config");
    std::fs::rename(&tmp, dir.0.join("config.yaml")).expect("replacing the config");
}

fn start(dir: &TempDir, yaml: &str, env: &[(&str, &str)]) -> Gateway {
    write_config(dir, yaml);
    Gateway::start_dir(&dir.0, 0, env)
}

fn sighup(gw: &Gateway) {
    kill(Pid::from_raw(gw.pid()), Signal::SIGHUP).expect("SIGHUP");
}

/// The `/status` `config` group once `f` holds for it.
async fn config_status(gw: &Gateway, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    poll(Duration::from_secs(30), what, || async {
        let s = gw.status().await;
        f(&s["config"]).then(|| s["config"].clone())
    })
    .await
}

/// Waits until vmcp's log contains `needle`.
async fn log_line(gw: &Gateway, needle: &str) -> String {
    poll(Duration::from_secs(15), needle, || async {
        let err = gw.proc.stderr();
        err.lines().find(|l| l.contains(needle)).map(str::to_owned)
    })
    .await
}

/// Calls `keep_echo` back to back until `stop`, counting successes and failures (with the first
/// failures kept for the message).
struct Load {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

fn load(c: Client, modern: bool, stop: Arc<AtomicBool>) -> Load {
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (o, f, fs) = (ok.clone(), failed.clone(), failures.clone());
    let task = tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            let r = c.tool(modern, "keep_echo", json!({ "message": format!("m{n}") })).await;
            let good = r.message.as_ref().and_then(|m| m["result"]["content"][0]["text"].as_str())
                == Some(&format!("Echo: m{n}"));
            if good {
                o.fetch_add(1, Ordering::SeqCst);
            } else {
                f.fetch_add(1, Ordering::SeqCst);
                let mut fs = fs.lock().unwrap();
                if fs.len() < 5 {
                    fs.push(format!("status {} {:?}", r.status, r.message));
                }
            }
        }
    });
    Load { ok, failed, failures, task }
}

impl Load {
    async fn at_least(&self, n: u64, what: &str) {
        let ok = self.ok.clone();
        let target = ok.load(Ordering::SeqCst) + n;
        poll(Duration::from_secs(30), what, || {
            let ok = ok.clone();
            async move { (ok.load(Ordering::SeqCst) >= target).then_some(()) }
        })
        .await;
    }

    async fn finish(self, what: &str) -> u64 {
        self.task.await.expect("the load task");
        let failed = self.failed.load(Ordering::SeqCst);
        assert_eq!(failed, 0, "{what}: failed calls: {:?}", self.failures.lock().unwrap());
        self.ok.load(Ordering::SeqCst)
    }
}

fn yaml(backends: &[(&str, &Fixture)], extra: &str) -> String {
    let list: String = backends.iter().map(|(n, f)| http_backend(n, &f.url)).collect();
    format!("name: reload\nbackends:\n{list}{extra}")
}

/// Under load from a Legacy and a Modern client, a SIGHUP with a config that adds a backend,
/// removes one and changes the aggregation rules: no call to the unchanged backend fails, the
/// Legacy session and its backend session stay, the catalog changes and clients are told.
#[tokio::test]
async fn sighup_under_load_keeps_unchanged_backends_serving() {
    let keep = Fixture::http("legacy", "keep");
    let gone = Fixture::http("both", "gone");
    let added = Fixture::http("both", "added");
    let dir = TempDir::new("reload-load");
    let gw = start(&dir, &yaml(&[("keep", &keep), ("gone", &gone)], ""), &[]);

    let mut legacy = gw.client();
    let sid = legacy.legacy_init().await;
    let backend_session = backend_session_of(&legacy.tool(false, "keep_whoami", json!({})).await)
        .expect("a backend session at the Legacy backend");
    let mut stream = legacy.get_stream().await;
    assert!(stream.is_sse, "GET stream");
    let names = legacy.tool_names(false).await;
    assert!(names.contains(&"gone_echo".to_owned()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("added_")), "{names:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let loads = [load(legacy.clone(), false, stop.clone()), load(gw.client(), true, stop.clone())];
    for l in &loads {
        l.at_least(20, "calls before the reload").await;
    }

    // Added: `added`, its tools filtered; removed: `gone`; `keep` unchanged.
    let next = yaml(
        &[("keep", &keep), ("added", &added)],
        "aggregation:\n  tools:\n    - backend: added\n      filter: [echo]\n",
    );
    write_config(&dir, &next);
    sighup(&gw);
    let status = config_status(&gw, "generation 2", |c| c["generation"] == 2).await;
    assert!(status["lastReloadError"].is_null(), "{status}");
    let line = log_line(&gw, "config reloaded").await;
    for part in [r#"added=["added"]"#, r#"removed=["gone"]"#, r#"kept=["keep"]"#, "changed=[]"] {
        assert!(line.contains(part), "{part} in {line}");
    }

    for l in &loads {
        l.at_least(20, "calls after the reload").await;
    }
    stop.store(true, Ordering::SeqCst);
    let [a, b] = loads;
    let calls = a.finish("Legacy client").await + b.finish("Modern client").await;
    assert!(calls >= 80, "{calls} calls");

    // The catalog: the added backend's filtered tools, none of the removed one's.
    for modern in [false, true] {
        let names = legacy.tool_names(modern).await;
        assert!(names.contains(&"added_echo".to_owned()), "{names:?}");
        assert!(!names.contains(&"added_counter".to_owned()), "filtered: {names:?}");
        assert!(!names.iter().any(|n| n.starts_with("gone_")), "{names:?}");
        assert!(names.contains(&"keep_echo".to_owned()), "{names:?}");
    }
    let r = legacy.tool(false, "added_echo", json!({ "message": "new" })).await;
    assert_eq!(r.text(), "Echo: new");
    assert_eq!(
        legacy.tool(true, "gone_echo", json!({ "message": "x" })).await.error_code(),
        -32602
    );

    // The same client session, on the same backend session.
    assert_eq!(legacy.session.as_deref(), Some(sid.as_str()));
    let again = backend_session_of(&legacy.tool(false, "keep_whoami", json!({})).await);
    assert_eq!(again.as_deref(), Some(backend_session.as_str()), "backend session kept");

    // Clients were told.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = stream.next_within(left).await.expect("tools/list_changed on the GET stream");
        if m["method"] == "notifications/tools/list_changed" {
            break;
        }
    }
    let s = gw.status().await;
    let names: Vec<&str> =
        s["backends"].as_array().unwrap().iter().filter_map(|b| b["name"].as_str()).collect();
    assert_eq!(names, ["keep", "added"], "{s}");
}

/// A file that does not parse, and one naming an unknown backend, are refused with their errors
/// (file and line) in the log and `/status`; the old config keeps serving; a good file then
/// applies and clears the error.
#[tokio::test]
async fn invalid_files_are_refused_and_the_old_config_keeps_serving() {
    let keep = Fixture::http("both", "keep");
    let dir = TempDir::new("reload-invalid");
    let good = yaml(&[("keep", &keep)], "");
    let gw = start(&dir, &good, &[]);
    let c = gw.client();
    let file = dir.0.join("config.yaml").display().to_string();

    write_config(&dir, &format!("{good}aggregation: [unclosed\n"));
    sighup(&gw);
    let status = config_status(&gw, "a refused reload", |c| !c["lastReloadError"].is_null()).await;
    let error = status["lastReloadError"].as_str().unwrap();
    assert!(error.starts_with(&format!("{file}:")), "{error}");
    assert_eq!(status["generation"], 1);
    log_line(&gw, "config reload refused").await;
    assert_eq!(c.tool(true, "keep_echo", json!({ "message": "a" })).await.text(), "Echo: a");

    let bad_ref =
        format!("{good}outgoingAuth:\n  backends:\n    nope:\n      type: unauthenticated\n");
    write_config(&dir, &bad_ref);
    sighup(&gw);
    let status = config_status(&gw, "the unknown backend refused", |c| {
        c["lastReloadError"].as_str().is_some_and(|e| e.contains("unknown backend \"nope\""))
    })
    .await;
    let error = status["lastReloadError"].as_str().unwrap();
    assert!(error.contains(&format!("{file}:")), "file and line: {error}");
    assert!(error.contains("outgoingAuth.backends.nope"), "{error}");
    assert_eq!(status["generation"], 1);
    assert_eq!(c.tool(true, "keep_echo", json!({ "message": "b" })).await.text(), "Echo: b");
    assert_eq!(gw.backend_status("keep").await["connectAttempts"], 1, "not restarted");

    write_config(&dir, &format!("{good}metadata:\n  env: fixed\n"));
    sighup(&gw);
    let status = config_status(&gw, "generation 2", |c| c["generation"] == 2).await;
    assert!(status["lastReloadError"].is_null(), "{status}");
    assert_eq!(gw.status().await["metadata"]["env"], "fixed");
    assert_eq!(gw.backend_status("keep").await["connectAttempts"], 1, "kept");
}

/// Changing a key that needs a restart refuses the whole reload, naming each such key; nothing
/// else in the file is applied.
#[tokio::test]
async fn restart_only_keys_are_refused_by_name() {
    let keep = Fixture::http("both", "keep");
    let added = Fixture::http("both", "added");
    let dir = TempDir::new("reload-restart");
    let gw = start(&dir, &yaml(&[("keep", &keep)], ""), &[]);
    let next = yaml(
        &[("keep", &keep), ("added", &added)],
        "server:\n  pageSize: 3\n  limits:\n    maxSessions: 9\n",
    );
    write_config(&dir, &next);
    sighup(&gw);
    let status = config_status(&gw, "a refused reload", |c| !c["lastReloadError"].is_null()).await;
    let error = status["lastReloadError"].as_str().unwrap();
    assert!(error.contains("server.pageSize"), "{error}");
    assert!(error.contains("server.limits.maxSessions"), "{error}");
    assert_eq!(status["generation"], 1);
    let names = gw.client().tool_names(true).await;
    assert!(!names.iter().any(|n| n.starts_with("added_")), "nothing applied: {names:?}");
    let s = gw.status().await;
    assert_eq!(s["backends"].as_array().unwrap().len(), 1, "{s}");
}

/// With `--watch-config` (here through `VMCP_WATCH_CONFIG`), a change to the file is applied
/// without a signal; a backend whose settings changed is replaced by a new one.
#[tokio::test]
async fn watched_file_is_reloaded_without_a_signal() {
    let keep = Fixture::http("both", "keep");
    let added = Fixture::http("both", "added");
    let dir = TempDir::new("reload-watch");
    let gw = start(&dir, &yaml(&[("keep", &keep)], ""), &[("VMCP_WATCH_CONFIG", "true")]);
    let c = gw.client();
    assert_eq!(c.tool(true, "keep_echo", json!({ "message": "a" })).await.text(), "Echo: a");

    let next = yaml(&[("keep", &keep), ("added", &added)], "")
        .replace(&format!("url: {}\n", keep.url), &format!("url: {}\n    timeout: 7s\n", keep.url));
    write_config(&dir, &next);
    config_status(&gw, "generation 2", |c| c["generation"] == 2).await;
    log_line(&gw, "config file changed").await;
    let line = log_line(&gw, "config reloaded").await;
    assert!(line.contains(r#"changed=["keep"]"#) && line.contains(r#"added=["added"]"#), "{line}");
    assert_eq!(c.tool(true, "added_echo", json!({ "message": "b" })).await.text(), "Echo: b");
    assert_eq!(c.tool(true, "keep_echo", json!({ "message": "c" })).await.text(), "Echo: c");
}

/// The layers follow a reload: new Cedar policies apply to the next request, the audit log
/// stays the same open file (its block unchanged), and a rate-limit bucket keeps its level.
#[tokio::test]
async fn reload_applies_new_policies_and_keeps_audit_and_buckets() {
    let keep = Fixture::http("both", "keep");
    let dir = TempDir::new("reload-layers");
    let audit_log = dir.0.join("audit.log");
    let layers = |policy: &str| {
        format!(
            "incomingAuth:\n  type: anonymous\n  authz:\n    type: cedar\n    policies:\n      - '{policy}'\n\
             audit:\n  logFile: {}\n  eventTypes: [mcp_tool_call]\n\
             rateLimiting:\n  shared:\n    maxTokens: 3\n    refillPeriod: 1h\n",
            audit_log.display()
        )
    };
    let permit = r#"permit(principal, action == Action::"call_tool", resource);"#;
    let gw = start(&dir, &yaml(&[("keep", &keep)], &layers(permit)), &[]);
    let c = gw.client();
    assert_eq!(c.tool(true, "keep_echo", json!({ "message": "a" })).await.text(), "Echo: a");

    let forbid =
        r#"forbid(principal, action == Action::"call_tool", resource == Tool::"keep_echo");"#;
    let both = format!("{permit}'\n      - '{forbid}");
    write_config(&dir, &yaml(&[("keep", &keep)], &layers(&both)));
    sighup(&gw);
    config_status(&gw, "generation 2", |c| c["generation"] == 2).await;
    let denied = c.tool(true, "keep_echo", json!({ "message": "b" })).await;
    assert_eq!(denied.error_code(), -32006, "{denied:?}");
    assert_eq!(c.tool(true, "keep_counter", json!({})).await.text(), "1");

    // Three tokens for the whole hour: two calls took one each before and after the reload
    // (the denied one too: rate limits come first), so this is the last one.
    let limited = c.tool(true, "keep_counter", json!({})).await;
    assert_eq!(limited.error_code(), 429, "the bucket was refilled by the reload: {limited:?}");

    // One audit file across the reload, every call in it.
    let lines = poll(Duration::from_secs(10), "4 audit events", || async {
        let text = std::fs::read_to_string(&audit_log).unwrap_or_default();
        let n = text.lines().count();
        (n >= 4).then_some(n)
    })
    .await;
    assert_eq!(lines, 4);
}
