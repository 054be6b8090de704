//! The stdio transport against a real MCP server: `@modelcontextprotocol/server-everything` run by
//! Node 22, both found by `common/tools.rs` (`VMCP_NODE`, `VMCP_EVERYTHING`, or `<repo>/.tools`);
//! without them the tests fail.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use vmcp::auth::Caller;
use vmcp::backend::stdio::StdioBackend;
use vmcp::backend::{BackendError, BackendSpec, CallContext, OutgoingAuth, Reply, State};
use vmcp::config::{BackendConfig, TransportKind};
use vmcp::protocol::jsonrpc::raw;
use vmcp::protocol::{Message, Response};

#[path = "common/tools.rs"]
mod tools;

fn spec() -> BackendSpec {
    let (node, server) = (tools::node(), tools::everything());
    let (events, _) = tokio::sync::broadcast::channel(64);
    BackendSpec {
        name: Arc::from("everything"),
        config: BackendConfig {
            name: "everything".into(),
            transport: TransportKind::Stdio,
            url: None,
            command: Some(node),
            args: vec![server, "stdio".into()],
            env: Default::default(),
            cwd: None,
            timeout: None,
            isolation: None,
            max_processes: None,
            process_idle_timeout: None,
            kind: None,
            ca_bundle_path: None,
            ca_bundle: None,
            metadata: Default::default(),
        },
        timeout: Duration::from_secs(20),
        auth: OutgoingAuth::Unauthenticated,
        events,
        isolation: vmcp::config::Isolation::Shared,
        limits: Default::default(),
    }
}

async fn wait_state(b: &StdioBackend, want: State) {
    let mut rx = b.status().subscribe();
    tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|s| s.state == want))
        .await
        .unwrap_or_else(|_| {
            panic!("no {want:?} in time; last error {:?}", b.status().get().last_error)
        })
        .unwrap();
}

async fn started() -> StdioBackend {
    let b = StdioBackend::start(spec());
    wait_state(&b, State::Ready).await;
    b
}

fn result(r: Result<Reply, BackendError>) -> Value {
    match r.unwrap() {
        Reply::Result(r) => serde_json::from_str(r.get()).unwrap(),
        Reply::Error(e) => panic!("error reply: {e:?}"),
    }
}

async fn echo(b: &StdioBackend, message: &str) -> Result<Reply, BackendError> {
    let params = raw(&json!({"name": "echo", "arguments": {"message": message}}));
    b.mux()?.request(&Caller::Anonymous, "tools/call", Some(params), CallContext::detached()).await
}

fn text(v: &Value) -> &str {
    v["content"][0]["text"].as_str().unwrap()
}

#[tokio::test]
async fn handshake_list_and_echo() {
    let b = started().await;
    let info = b.status().get().info.unwrap();
    assert!(info.server_info["name"].is_string(), "{:?}", info.server_info);
    let tools = result(
        b.mux()
            .unwrap()
            .request(&Caller::Anonymous, "tools/list", None, CallContext::detached())
            .await,
    );
    let names: Vec<&str> =
        tools["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"echo"), "{names:?}");
    assert_eq!(text(&result(echo(&b, "hi").await)), "Echo: hi");
    b.shutdown().await;
}

#[tokio::test]
async fn concurrent_calls_get_their_own_answers() {
    let b = started().await;
    let b = Arc::new(b);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move {
                let v = result(echo(&b, &format!("m{i}")).await);
                assert_eq!(text(&v), format!("Echo: m{i}"));
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    b.shutdown().await;
}

async fn long_running(
    b: &StdioBackend,
    token: Value,
    events: mpsc::Sender<Message>,
) -> Result<Reply, BackendError> {
    let params = raw(&json!({
        "name": "trigger-long-running-operation",
        "arguments": {"duration": 1, "steps": 3},
        "_meta": {"progressToken": token},
    }));
    let ctx = CallContext::new(events);
    b.mux()?.request(&Caller::Anonymous, "tools/call", Some(params), ctx).await
}

#[tokio::test]
async fn progress_reaches_the_right_request() {
    let b = started().await;
    let (tx_a, mut rx_a) = mpsc::channel(64);
    let (tx_b, mut rx_b) = mpsc::channel(64);
    // Both clients use the same token: the mux must keep them apart.
    let (ra, rb) =
        tokio::join!(long_running(&b, json!("same"), tx_a), long_running(&b, json!(5), tx_b));
    result(ra);
    result(rb);
    for (rx, token) in [(&mut rx_a, json!("same")), (&mut rx_b, json!(5))] {
        let mut steps = Vec::new();
        while let Ok(m) = rx.try_recv() {
            let Message::Notification(n) = m else { continue };
            if n.method != "notifications/progress" {
                continue;
            }
            let p: Value = serde_json::from_str(n.params.unwrap().get()).unwrap();
            assert_eq!(p["progressToken"], token);
            steps.push(p["progress"].as_u64().unwrap());
        }
        assert_eq!(steps, vec![1, 2, 3]);
    }
    b.shutdown().await;
}

#[tokio::test]
async fn killed_child_fails_pending_and_restarts() {
    let b = started().await;
    let b = Arc::new(b);
    let old = b.pid().unwrap();
    let pending = tokio::spawn({
        let b = b.clone();
        async move {
            let (tx, _rx) = mpsc::channel(64);
            let params = raw(&json!({
                "name": "trigger-long-running-operation",
                "arguments": {"duration": 30, "steps": 1},
            }));
            let ctx = CallContext::new(tx);
            b.mux().unwrap().request(&Caller::Anonymous, "tools/call", Some(params), ctx).await
        }
    });
    // Let the request reach the child before killing it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut watch = b.status().subscribe();
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), pending).await.unwrap().unwrap();
    assert!(matches!(err, Err(BackendError::Transport { .. })), "{err:?}");
    tokio::time::timeout(Duration::from_secs(5), watch.wait_for(|s| s.state == State::Down))
        .await
        .unwrap()
        .unwrap();
    wait_state(&b, State::Ready).await;
    let new = b.pid().unwrap();
    assert_ne!(old, new);
    // The old group is gone, and the restarted child serves.
    assert!(killpg(Pid::from_raw(old as i32), None).is_err());
    assert_eq!(text(&result(echo(&b, "again").await)), "Echo: again");
    b.shutdown().await;
}

#[tokio::test]
async fn shutdown_leaves_no_process_and_is_idempotent() {
    let b = started().await;
    let pid = b.pid().unwrap() as i32;
    b.shutdown().await;
    assert!(killpg(Pid::from_raw(pid), None).is_err(), "process group {pid} survived");
    assert!(kill(Pid::from_raw(pid), None).is_err(), "child {pid} not reaped");
    assert!(b.pid().is_none());
    assert_eq!(b.status().get().state, State::Stopped);
    b.shutdown().await;
    assert!(matches!(echo(&b, "x").await, Err(BackendError::Unavailable { .. })));
}

#[tokio::test]
async fn missing_command_is_down_and_requests_fail_fast() {
    let mut spec = spec();
    spec.config.command = Some("/nonexistent/vmcp-test-binary".into());
    let b = StdioBackend::start(spec);
    b.status().first_attempt().await;
    assert_eq!(b.status().get().state, State::Down);
    assert!(b.status().get().last_error.unwrap().contains("spawning"));
    assert!(matches!(echo(&b, "x").await, Err(BackendError::Unavailable { .. })));
    b.shutdown().await;
    assert_eq!(b.status().get().state, State::Stopped);
}

#[tokio::test]
async fn list_changed_is_broadcast_and_sampling_reaches_the_request() {
    let spec = spec();
    let mut backend_events = spec.events.subscribe();
    let b = StdioBackend::start(spec);
    wait_state(&b, State::Ready).await;
    // server-everything registers its capability-dependent tools after `initialized` and says so.
    tokio::time::timeout(Duration::from_secs(10), async {
        while backend_events.recv().await.unwrap().notification.method
            != "notifications/tools/list_changed"
        {}
    })
    .await
    .expect("no tools/list_changed");

    let (tx, mut rx) = mpsc::channel(8);
    let params = raw(&json!({
        "name": "trigger-sampling-request",
        "arguments": {"prompt": "p", "maxTokens": 5},
    }));
    let mux = b.mux().unwrap();
    let call = mux.request(&Caller::Anonymous, "tools/call", Some(params), CallContext::new(tx));
    let answer = async {
        loop {
            match rx.recv().await.expect("no sampling request") {
                Message::Request(r) if r.method == "sampling/createMessage" => {
                    let result = raw(&json!({
                        "role": "assistant",
                        "content": {"type": "text", "text": "sampled-by-test"},
                        "model": "test",
                    }));
                    let response = Message::Response(Response::new(r.id, result));
                    b.mux().unwrap().respond(&Caller::Anonymous, response).await.unwrap();
                    return;
                }
                _ => continue,
            }
        }
    };
    let (reply, ()) = tokio::join!(call, answer);
    let v = result(reply);
    assert!(text(&v).contains("sampled-by-test"), "{v}");
    b.shutdown().await;
}

/// Live (non-zombie) processes whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // Fields after the parenthesised command: state, ppid, pgrp, ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            members.push(pid);
        }
    }
    members
}

#[tokio::test]
async fn whole_group_is_killed_including_children_that_ignore_term() {
    let mut spec = spec();
    // A shell that leaves a TERM-ignoring grandchild behind, then becomes the server.
    let node = spec.config.command.take().unwrap();
    let server = spec.config.args[0].clone();
    spec.config.command = Some("/bin/sh".into());
    spec.config.args = vec![
        "-c".into(),
        r#"(trap '' TERM; exec sleep 300) & exec "$0" "$1" stdio"#.into(),
        node,
        server,
    ];
    let b = StdioBackend::start(spec);
    wait_state(&b, State::Ready).await;
    let first = b.pid().unwrap();
    assert!(group_members(first).len() >= 2, "{:?}", group_members(first));

    // A crash of the leader: the restart must not leave the grandchild behind.
    let mut watch = b.status().subscribe();
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
    tokio::time::timeout(Duration::from_secs(5), watch.wait_for(|s| s.state == State::Down))
        .await
        .unwrap()
        .unwrap();
    wait_state(&b, State::Ready).await;
    let orphans = gone_within(first, Duration::from_secs(2)).await;
    assert!(orphans.is_empty(), "orphans: {orphans:?}");

    let second = b.pid().unwrap();
    assert!(group_members(second).len() >= 2);
    b.shutdown().await;
    // SIGKILL has been sent to the whole group; the kernel takes a moment to finish a member off.
    let survivors = gone_within(second, Duration::from_secs(2)).await;
    assert!(survivors.is_empty(), "survivors: {survivors:?}");
}

/// Polls until no live member of group `pgid` is left; returns those left at the deadline.
async fn gone_within(pgid: u32, within: Duration) -> Vec<u32> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = group_members(pgid);
        if left.is_empty() || tokio::time::Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
