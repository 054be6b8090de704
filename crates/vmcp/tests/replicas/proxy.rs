//! A round-robin HTTP load balancer for the replica tests, in-process on a free loopback port.
//!
//! Routing is per request, not per connection: each request goes to the next upstream in turn
//! over a fresh upstream connection (no pooling), so a client's keep-alive connection to the
//! proxy still spreads its requests over every replica, and no pooled connection to a killed
//! replica is ever reused.
//!
//! Failure policy (what a health-checking production LB does, without the health checks):
//! - connecting to an upstream fails (refused, timed out): the request was never sent, so it is
//!   tried on the next upstream; after every upstream refused, `502`.
//! - the upstream fails after the request was sent (reset, closed before the response): the
//!   request may have run, so it is not retried: `502` with `x-proxy-error: upstream`.
//! - the upstream dies while streaming the body: the client's body ends with an error (a
//!   transport error to the client).
//!
//! Every response carries `x-replica: <index>` (also on a `502` for a request that reached an
//! upstream), so tests know which replica served what.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Largest request body forwarded (MCP requests in these tests are small).
const MAX_BODY: usize = 1 << 20;
/// Bound on connecting to an upstream (loopback: refused at once when it is dead).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on the upstream's silence (headers or the next body chunk).
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Header naming the upstream that served a response.
pub const REPLICA: &str = "x-replica";
/// Header on a `502` the proxy itself answered.
pub const PROXY_ERROR: &str = "x-proxy-error";

/// Hop-by-hop headers (RFC 9110 §7.6.1) and those the client library recomputes.
const HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "upgrade",
    "host",
    "content-length",
];

struct Shared {
    upstreams: Vec<String>,
    next: AtomicUsize,
    served: Vec<AtomicU64>,
    refused: Vec<AtomicU64>,
    http: reqwest::Client,
}

/// The running proxy; stopped on drop.
pub struct Proxy {
    /// `http://127.0.0.1:PORT/mcp`.
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstreams` (`http://ADDR` each).
    pub async fn start(upstreams: Vec<String>) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_with(listener, upstreams)
    }

    /// The same on a listener bound beforehand (when the replicas' config needs the proxy's
    /// address, e.g. as the authorization server's issuer).
    pub fn start_with(listener: tokio::net::TcpListener, upstreams: Vec<String>) -> Proxy {
        let n = upstreams.len();
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let shared = Arc::new(Shared {
            upstreams,
            next: AtomicUsize::new(0),
            served: (0..n).map(|_| AtomicU64::new(0)).collect(),
            refused: (0..n).map(|_| AtomicU64::new(0)).collect(),
            http,
        });
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(forward).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Proxy { url: format!("http://{addr}/mcp"), shared, task }
    }

    /// Requests routed so far (each took the next upstream in turn).
    pub fn routed(&self) -> usize {
        self.shared.next.load(Ordering::SeqCst)
    }

    /// Requests each upstream answered (headers received), by index.
    pub fn served(&self) -> Vec<u64> {
        self.shared.served.iter().map(|c| c.load(Ordering::SeqCst)).collect()
    }

    /// Connections each upstream refused (the request then went to the next), by index.
    pub fn refused(&self) -> Vec<u64> {
        self.shared.refused.iter().map(|c| c.load(Ordering::SeqCst)).collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn bad_gateway(replica: Option<usize>, why: &str) -> Response {
    let mut r = (StatusCode::BAD_GATEWAY, why.to_owned()).into_response();
    r.headers_mut().insert(PROXY_ERROR, HeaderValue::from_static("upstream"));
    if let Some(i) = replica {
        r.headers_mut().insert(REPLICA, HeaderValue::from(i));
    }
    r
}

async fn forward(State(p): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
    };
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let n = p.upstreams.len();
    let start = p.next.fetch_add(1, Ordering::SeqCst);
    for k in 0..n {
        let i = (start + k) % n;
        let mut b = p
            .http
            .request(parts.method.clone(), format!("{}{path}", p.upstreams[i]))
            .body(body.clone());
        for (name, value) in &parts.headers {
            if !HOP.contains(&name.as_str()) {
                b = b.header(name, value);
            }
        }
        let resp = match b.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                p.refused[i].fetch_add(1, Ordering::SeqCst);
                continue;
            }
            Err(_) => return bad_gateway(Some(i), "upstream failed after the request was sent"),
        };
        p.served[i].fetch_add(1, Ordering::SeqCst);
        let mut out = Response::builder().status(resp.status());
        for (name, value) in resp.headers() {
            if !HOP.contains(&name.as_str()) {
                out = out.header(name, value);
            }
        }
        out = out.header(HeaderName::from_static(REPLICA), HeaderValue::from(i));
        return out
            .body(Body::from_stream(resp.bytes_stream()))
            .unwrap_or_else(|_| bad_gateway(Some(i), "unusable upstream response"));
    }
    bad_gateway(None, "every upstream refused the connection")
}
