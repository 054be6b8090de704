//! The legacy SSE transport against a real MCP server: `@modelcontextprotocol/server-everything`
//! in `sse` mode on a free loopback port. Node and the server are found by `common/tools.rs`
//! (see `transport_stdio.rs`); without them the tests fail.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vmcp::auth::Caller;
use vmcp::backend::sse::SseBackend;
use vmcp::backend::{BackendError, BackendSpec, CallContext, OutgoingAuth, Reply, State};
use vmcp::config::{BackendConfig, TransportKind};
use vmcp::protocol::jsonrpc::raw;

#[path = "common/tools.rs"]
mod tools;

/// The server process; killed and reaped when dropped, also when a test fails.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(port: Option<u16>) -> Server {
        let (node, script) = (tools::node(), tools::everything());
        let port = port.unwrap_or_else(|| {
            TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
        });
        let child = Command::new(node)
            .args([script.as_str(), "sse"])
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Server { child, port };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "server-everything did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/sse", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spec(url: String) -> BackendSpec {
    let (events, _) = tokio::sync::broadcast::channel(64);
    BackendSpec {
        name: Arc::from("everything-sse"),
        config: BackendConfig {
            name: "everything-sse".into(),
            transport: TransportKind::Sse,
            url: Some(url),
            command: None,
            args: vec![],
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

async fn wait_state(b: &SseBackend, want: State) {
    let mut rx = b.status().subscribe();
    tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|s| s.state == want))
        .await
        .unwrap_or_else(|_| {
            panic!("no {want:?} in time; last error {:?}", b.status().get().last_error)
        })
        .unwrap();
}

fn result(r: Result<Reply, BackendError>) -> Value {
    match r.unwrap() {
        Reply::Result(r) => serde_json::from_str(r.get()).unwrap(),
        Reply::Error(e) => panic!("error reply: {e:?}"),
    }
}

async fn echo(b: &SseBackend, message: &str) -> Result<Reply, BackendError> {
    let params = raw(&json!({"name": "echo", "arguments": {"message": message}}));
    b.mux()?.request(&Caller::Anonymous, "tools/call", Some(params), CallContext::detached()).await
}

#[tokio::test]
async fn handshake_list_and_echo() {
    let server = Server::start(None);
    let b = SseBackend::start(spec(server.url()));
    wait_state(&b, State::Ready).await;
    assert!(b.status().get().info.unwrap().server_info["name"].is_string());
    let tools = result(
        b.mux()
            .unwrap()
            .request(&Caller::Anonymous, "tools/list", None, CallContext::detached())
            .await,
    );
    let names: Vec<&str> =
        tools["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"echo"), "{names:?}");
    let v = result(echo(&b, "hi").await);
    assert_eq!(v["content"][0]["text"], "Echo: hi");
    // Concurrent calls share the stream and still get their own answers.
    let messages: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let calls = messages.iter().map(|m| echo(&b, m));
    for (i, r) in futures::future::join_all(calls).await.into_iter().enumerate() {
        assert_eq!(result(r)["content"][0]["text"], format!("Echo: m{i}"));
    }
    b.shutdown().await;
    b.shutdown().await;
    assert_eq!(b.status().get().state, State::Stopped);
    assert!(matches!(echo(&b, "x").await, Err(BackendError::Unavailable { .. })));
}

#[tokio::test]
async fn server_restart_fails_pending_and_reconnects() {
    let server = Server::start(None);
    let port = server.port;
    let b = Arc::new(SseBackend::start(spec(server.url())));
    wait_state(&b, State::Ready).await;
    let pending = tokio::spawn({
        let b = b.clone();
        async move {
            let params = raw(&json!({
                "name": "trigger-long-running-operation",
                "arguments": {"duration": 30, "steps": 1},
            }));
            b.mux()
                .unwrap()
                .request(&Caller::Anonymous, "tools/call", Some(params), CallContext::detached())
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(server);
    let err = tokio::time::timeout(Duration::from_secs(5), pending).await.unwrap().unwrap();
    assert!(matches!(err, Err(BackendError::Transport { .. })), "{err:?}");
    wait_state(&b, State::Down).await;
    let _server = Server::start(Some(port));
    wait_state(&b, State::Ready).await;
    assert_eq!(result(echo(&b, "back").await)["content"][0]["text"], "Echo: back");
    b.shutdown().await;
}

#[tokio::test]
async fn unreachable_server_is_down() {
    // A port nobody listens on: bound, then released.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let b = SseBackend::start(spec(format!("http://127.0.0.1:{port}/sse")));
    b.status().first_attempt().await;
    assert_eq!(b.status().get().state, State::Down);
    assert!(matches!(echo(&b, "x").await, Err(BackendError::Unavailable { .. })));
    b.shutdown().await;
}
