//! Fault injection at the HTTP edge: `--hang-on` makes the fixture never answer some requests, so
//! tests can check that vmcp's deadlines hold when a backend goes silent (session teardown,
//! shutdown).
//!
//! Invariant: a hung request is simply never answered (the handler waits forever); nothing else
//! about the server changes, so other requests are served as usual.

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use clap::ValueEnum;

/// What the fixture can be told never to answer.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum HangOn {
    /// `resources/unsubscribe` requests.
    Unsubscribe,
    /// HTTP `DELETE /mcp` (ending a session).
    Delete,
}

/// Wraps `router` so that the requests named in `hang` are never answered.
pub fn layer(router: axum::Router, hang: Vec<HangOn>) -> axum::Router {
    if hang.is_empty() {
        return router;
    }
    router.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        let hang = hang.clone();
        async move { hang_or_run(&hang, req, next).await }
    }))
}

async fn hang_or_run(hang: &[HangOn], req: Request, next: Next) -> Response {
    if req.method() == http::Method::DELETE && hang.contains(&HangOn::Delete) {
        return std::future::pending().await;
    }
    if req.method() != http::Method::POST || !hang.contains(&HangOn::Unsubscribe) {
        return next.run(req).await;
    }
    // The method is in the body: read it, look, and hand the same bytes on.
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 * 1024 * 1024).await else {
        return axum::response::IntoResponse::into_response(http::StatusCode::PAYLOAD_TOO_LARGE);
    };
    let method = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("method").and_then(|m| m.as_str()).map(str::to_owned));
    if method.as_deref() == Some("resources/unsubscribe") {
        return std::future::pending().await;
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}
