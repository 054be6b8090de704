//! The front door: the axum router for `/mcp`, `/health`, `/status` and (with
//! `telemetry.enablePrometheusMetricsPath`) `/metrics`, with the Host/Origin guard
//! and the request body limit; `server.rs` is the accept loop and connection handling under it.
//!
//! Invariant: nothing here knows MCP methods; requests are classified (era, session) and handed to
//! `dispatch`.

pub mod auth;
mod guard;
mod listen;
mod mcp;
pub mod server;
mod status;
mod stream;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::config::ServerConfig;
use crate::gateway::Gateway;

pub use guard::HostGuard;

/// Default request body limit.
pub const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The gateway.
    pub gw: Arc<Gateway>,
    /// Largest accepted body.
    pub max_body: usize,
}

/// `/metrics`: the Prometheus text exposition (format 0.0.4).
async fn metrics(
    axum::extract::State(app): axum::extract::State<AppState>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let text = app.gw.layers.load().telemetry.prometheus_text().unwrap_or_default();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
        .into_response()
}

/// Builds the router.
pub fn router(gw: Arc<Gateway>, server: &ServerConfig) -> Router {
    let state =
        AppState { gw, max_body: server.max_request_body_bytes.unwrap_or(DEFAULT_MAX_BODY) };
    let guard = Arc::new(HostGuard::new(&server.allowed_hosts, &server.allowed_origins));
    let mut router = Router::new();
    // `telemetry.enablePrometheusMetricsPath`: Prometheus text, behind the guard like `/status`.
    if state.gw.layers.load().telemetry.serves_prometheus() {
        router = router.route("/metrics", get(metrics));
    }
    let router = router
        .route("/mcp", get(mcp::get).post(mcp::post).delete(mcp::delete))
        // `/status` names backends, their errors and the catalog's problems: not for a page a
        // browser was tricked into loading, so it sits behind the guard like `/mcp`.
        .route("/status", get(status::status))
        // `post` enforces `server.maxRequestBodyBytes` itself.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(guard, guard::check))
        // Routes added after the guard layer are not wrapped by it: liveness probes and OAuth
        // discovery must work whatever Host the prober or client uses.
        .route("/health", get(status::health))
        .route("/.well-known/oauth-protected-resource", get(status::resource_metadata))
        .route("/.well-known/oauth-protected-resource/{*path}", get(status::resource_metadata));
    let auth_server = state.gw.auth_server.as_ref().map(|e| e.server.router());
    let router = router.with_state(state);
    // The authorization server's pages are outside the guard too: browsers reach them from the
    // upstream IdP's and the client's origins.
    match auth_server {
        Some(r) => router.merge(r),
        None => router,
    }
}
