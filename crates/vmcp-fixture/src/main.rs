//! `vmcp-fixture`: the MCP server vmcp's tests, conformance runs and demos use
//! as a backend.
//!
//! This module only parses the command line and wires the handler
//! ([`server::Fixture`]) to a transport: stdio, or streamable HTTP at `/mcp`.
//! Everything the server *does* lives in `server.rs` (protocol surface),
//! `conformance.rs` (what the official conformance suite calls) and
//! `extra.rs` (tools for vmcp's own tests and benchmarks), `users.rs` (tools that
//! depend on the caller, `--user-tools`).

mod conformance;
mod extra;
mod fault;
mod faults;
mod server;
mod users;

use std::{io::Write, sync::Arc};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use rmcp::{
    ServiceExt,
    transport::{
        StreamableHttpServerConfig, StreamableHttpService,
        streamable_http_server::session::local::LocalSessionManager,
    },
};

use crate::server::{Fixture, Settings, Shared};

#[derive(Parser, Debug)]
#[command(name = "vmcp-fixture", version, about = "MCP server fixture for vmcp")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Server name reported in serverInfo.
    #[arg(long, global = true, default_value = "vmcp-fixture")]
    name: String,
    /// Which protocol era(s) to serve.
    #[arg(long, global = true, value_enum, default_value_t = Era::Both)]
    era: Era,
    /// Number of synthetic echo tools (`synthetic_0..N-1`) to add, for benchmarks.
    #[arg(long, global = true, default_value_t = 0)]
    tools: usize,
    /// Extra tools with these names (comma-separated or repeated), each answering with the
    /// server's `--name` and its arguments as JSON: stand-ins for a real server's tools.
    #[arg(long, global = true, value_delimiter = ',')]
    named_tools: Vec<String>,
    /// Act as a backend whose tools depend on the caller (HTTP only): `tools/list` and
    /// `tools/call` without `Authorization: Bearer` get HTTP 401; with a token, `tools/list` adds
    /// `whoami_<sub>` and `add_user_tool` (`sub` read from the JWT payload, unverified).
    /// `GET /test/stats` counts `tools/list` requests by `sub`.
    #[arg(long, global = true)]
    user_tools: bool,
    /// Act as a backend that wants a user's token for everything (HTTP only): any request to
    /// `/mcp` without `Authorization: Bearer`, `initialize` and `server/discover` included, gets
    /// HTTP 401.
    #[arg(long, global = true)]
    require_token: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve MCP over stdin/stdout.
    Stdio,
    /// Serve MCP over streamable HTTP at `/mcp`.
    Http {
        /// Port to listen on; 0 picks a free one.
        #[arg(long)]
        port: u16,
        /// Address to bind.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Answer POSTs with plain JSON instead of an SSE stream when possible.
        #[arg(long)]
        json_response: bool,
        /// Never answer these requests (fault injection for tests; repeatable).
        #[arg(long, value_enum)]
        hang_on: Vec<fault::HangOn>,
        /// Answer every GET with this HTTP status instead of a stream (e.g. 405).
        #[arg(long)]
        get_status: Option<u16>,
    },
}

/// Protocol eras the fixture can serve.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Era {
    /// Only `initialize`-based sessions (protocol versions up to 2025-11-25).
    Legacy,
    /// Only stateless 2026-07-28 requests.
    Modern,
    /// Both, as rmcp allows on one endpoint.
    Both,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Logs go to stderr: stdout is the protocol channel for stdio and the
    // "listening on" line for HTTP, and tests parse both.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    let shared = Arc::new(Shared::new(Settings {
        name: cli.name,
        era: cli.era,
        synthetic_tools: cli.tools,
        named_tools: cli.named_tools,
        user_tools: cli.user_tools,
        require_token: cli.require_token,
    }));

    match cli.command {
        Command::Stdio => {
            let service = Fixture::new(shared)
                .serve(rmcp::transport::stdio())
                .await
                .context("starting the stdio server")?;
            service.waiting().await.context("serving stdio")?;
        }
        Command::Http { port, host, json_response, hang_on, get_status } => {
            let faults = Arc::new(faults::Faults::new(get_status)?);
            let listener = tokio::net::TcpListener::bind((host.as_str(), port))
                .await
                .with_context(|| format!("binding {host}:{port}"))?;
            let addr = listener.local_addr().context("reading the bound address")?;
            let router = fault::layer(http_router(shared, json_response, faults), hang_on);
            // Tests wait for exactly this line before connecting.
            let host_part =
                if addr.is_ipv6() { format!("[{}]", addr.ip()) } else { addr.ip().to_string() };
            let mut stdout = std::io::stdout();
            writeln!(stdout, "listening on http://{host_part}:{}/mcp", addr.port())?;
            stdout.flush()?;
            // Without TCP_NODELAY, multi-piece replies on reused connections stall ~40 ms.
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
                .context("serving HTTP")?;
        }
    }
    Ok(())
}

/// Builds the axum router serving the fixture at `/mcp`.
pub fn http_router(
    shared: Arc<Shared>,
    json_response: bool,
    faults: Arc<faults::Faults>,
) -> axum::Router {
    let era = shared.settings.era;
    let shared_for_log = shared.clone();
    let users = shared.users.clone();
    let user_tools = shared.settings.user_tools;
    let config = StreamableHttpServerConfig::default()
        // The modern era has no sessions at all: every request is stateless.
        .with_legacy_session_mode(era != Era::Modern)
        .with_json_response(json_response)
        // Short keep-alives keep idle streams visible in tests without noise.
        .with_sse_keep_alive(Some(std::time::Duration::from_secs(15)));
    let service = StreamableHttpService::new(
        move || Ok(Fixture::new(shared.clone())),
        LocalSessionManager::default().into(),
        config,
    );
    let mut mcp = axum::Router::new().nest_service("/mcp", service);
    if user_tools {
        mcp = mcp.layer(axum::middleware::from_fn_with_state(users.clone(), users::layer));
    }
    if shared_for_log.settings.require_token {
        mcp = mcp.layer(axum::middleware::from_fn(require_token));
    }
    let stats = axum::Router::new().route("/test/stats", axum::routing::get(users::stats));
    let log = shared_for_log.clone();
    let requests = axum::Router::new().route(
        "/test/requests",
        axum::routing::get(move || {
            let log = log.clone();
            async move { axum::Json(serde_json::Value::Array(log.request_log())) }
        }),
    );
    mcp.route("/test/forget-sessions", axum::routing::post(faults::forget))
        .layer(axum::middleware::from_fn_with_state(faults.clone(), faults::layer))
        .with_state(faults)
        .merge(stats.with_state(users))
        .merge(requests)
        .layer(axum::middleware::from_fn_with_state(shared_for_log, record_request))
}

/// `--require-token`: 401 for a request without a bearer token.
async fn require_token(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let bearer = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer ") && v.len() > 7);
    if !bearer {
        use axum::response::IntoResponse;
        return (
            axum::http::StatusCode::UNAUTHORIZED,
            [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required",
        )
            .into_response();
    }
    next.run(request).await
}

/// Records who called (method, session, `Authorization`) for the `request_log` tool, so tests can
/// see the credentials of requests that carry no tool call, such as a session's DELETE.
async fn record_request(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    // Built in its own scope: a borrow of the request must not live across the await.
    let entry = {
        let header = |name: &str| {
            request.headers().get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        // Arrival time in ms, so tests can tell whether a credential was valid when it came.
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        serde_json::json!({
            "method": request.method().as_str(),
            "path": request.uri().path(),
            "at": at,
            "session": header("mcp-session-id"),
            "authorization": header("authorization"),
            // Modern requests name their JSON-RPC method in a header.
            "mcpMethod": header("mcp-method"),
            // W3C trace context the caller propagated (the gateway's telemetry).
            "traceparent": header("traceparent"),
        })
    };
    shared.log_request(entry);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    //! End-to-end checks over real HTTP: the fixture on a free port, driven
    //! with stateless 2026-07-28 requests (one POST each, no session).

    use super::*;
    use serde_json::{Value, json};

    async fn start() -> String {
        start_with(false).await
    }

    async fn start_with(user_tools: bool) -> String {
        let shared = Arc::new(Shared::new(Settings {
            name: "test-fixture".into(),
            era: Era::Both,
            synthetic_tools: 2,
            named_tools: vec!["create_pr".into()],
            user_tools,
            require_token: false,
        }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = http_router(shared, false, Default::default());
        tokio::spawn(axum::serve(listener, router).into_future());
        format!("http://{addr}/mcp")
    }

    /// Calls a tool and returns the JSON-RPC response, from JSON or SSE.
    async fn call(url: &str, tool: &str, args: Value, headers: &[(&str, &str)]) -> Value {
        let params = json!({ "name": tool, "arguments": args });
        let (status, response) = send(url, "tools/call", params, headers).await;
        assert_eq!(status, 200, "{response}");
        response
    }

    /// Sends one stateless request; returns the HTTP status and the JSON-RPC response (`null` when
    /// there is none).
    async fn send(
        url: &str,
        method: &str,
        mut params: Value,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": { "name": "t", "version": "1" }
        });
        let name = params.get("name").and_then(Value::as_str).map(str::to_owned);
        let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
        let mut request = reqwest::Client::new()
            .post(url)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method)
            .json(&body);
        if let Some(name) = name {
            request = request.header("mcp-name", name);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        if status == 401 {
            return (status, Value::Null);
        }
        text.lines()
            .map(|l| l.strip_prefix("data:").unwrap_or(l).trim())
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v.get("id") == Some(&json!(1)))
            .map(|v| (status, v))
            .unwrap_or_else(|| panic!("no response in {text}"))
    }

    fn first_text(response: &Value) -> &str {
        response["result"]["content"][0]["text"].as_str().unwrap_or_default()
    }

    #[tokio::test]
    async fn echo_whoami_counter_over_http() {
        let url = start().await;

        let echo = call(&url, "echo", json!({ "message": "hi" }), &[]).await;
        assert_eq!(first_text(&echo), "Echo: hi");

        let who =
            call(&url, "whoami", json!({}), &[("authorization", "Bearer t0k"), ("x-tenant", "a")])
                .await;
        let who: Value = serde_json::from_str(first_text(&who)).expect("whoami JSON");
        assert_eq!(who["authorization"], "Bearer t0k");
        assert_eq!(who["x-tenant"], "a");

        let one = call(&url, "counter", json!({}), &[]).await;
        let two = call(&url, "counter", json!({}), &[]).await;
        assert_eq!((first_text(&one), first_text(&two)), ("1", "2"));

        let fail = call(&url, "fail", json!({ "code": -32001 }), &[]).await;
        assert_eq!(fail["error"]["code"], -32001);

        let synthetic = call(&url, "synthetic_1", json!({ "value": "v" }), &[]).await;
        assert_eq!(first_text(&synthetic), r#"{"value":"v"}"#);

        let named = call(&url, "create_pr", json!({ "title": "t" }), &[]).await;
        let named: Value = serde_json::from_str(first_text(&named)).expect("named tool JSON");
        assert_eq!(named, json!({ "server": "test-fixture", "arguments": { "title": "t" } }));
    }

    fn token(sub: &str) -> String {
        use base64::Engine as _;
        let enc = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.unsigned", enc(json!({ "alg": "none" })), enc(json!({ "sub": sub })))
    }

    fn names(list: &Value) -> Vec<String> {
        list["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("no tools in {list}"))
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect()
    }

    #[tokio::test]
    async fn user_tools_need_a_token_and_differ_per_user() {
        let url = start_with(true).await;
        let (status, _) = send(&url, "tools/list", json!({}), &[]).await;
        assert_eq!(status, 401);
        let (status, _) = send(&url, "tools/call", json!({ "name": "echo" }), &[]).await;
        assert_eq!(status, 401);

        let alice = format!("Bearer {}", token("alice"));
        let bob = format!("Bearer {}", token("bob"));
        let (_, list) = send(&url, "tools/list", json!({}), &[("authorization", &alice)]).await;
        let list = names(&list);
        assert!(list.contains(&"whoami_alice".to_owned()) && list.contains(&"echo".to_owned()));
        assert!(!list.contains(&"whoami_bob".to_owned()), "{list:?}");

        let who = call(&url, "whoami_alice", json!({}), &[("authorization", &alice)]).await;
        let who: Value = serde_json::from_str(first_text(&who)).expect("whoami JSON");
        assert_eq!(who["authorization"], alice.as_str());
        let theirs = call(&url, "whoami_alice", json!({}), &[("authorization", &bob)]).await;
        assert!(theirs.get("error").is_some(), "{theirs}");

        call(&url, "add_user_tool", json!({ "name": "mine" }), &[("authorization", &bob)]).await;
        let (_, list) = send(&url, "tools/list", json!({}), &[("authorization", &bob)]).await;
        assert!(names(&list).contains(&"mine".to_owned()));
        let (_, list) = send(&url, "tools/list", json!({}), &[("authorization", &alice)]).await;
        assert!(!names(&list).contains(&"mine".to_owned()));

        let stats: Value = reqwest::get(url.replace("/mcp", "/test/stats"))
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats JSON");
        assert_eq!(stats["toolsList"], json!({ "": 1, "alice": 2, "bob": 1 }), "{stats}");
    }
}
