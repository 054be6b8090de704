//! Faults a backend can show, for the gateway's session tests, as a layer around `/mcp`:
//! - `--get-status CODE`: every GET (the legacy notification stream) is answered with CODE
//!   (e.g. 405, "this server offers no GET stream");
//! - `POST /test/forget-sessions`: every session id issued so far becomes unknown (404 from now
//!   on, as after a server restart that kept the port), and their open GET streams end.
//!
//! The layer sits inside the request log, so refused requests are logged too.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use crate::server::lock;

/// Fault settings and the state forgetting needs.
#[derive(Default)]
pub struct Faults {
    /// Status every GET gets instead of a stream.
    pub get_status: Option<StatusCode>,
    /// Session ids the server handed out.
    issued: Mutex<HashSet<String>>,
    /// Session ids it pretends not to know.
    forgotten: Mutex<HashSet<String>>,
    /// Bumped on each forget; open GET streams end when it changes.
    generation: tokio::sync::watch::Sender<u64>,
}

impl Faults {
    pub fn new(get_status: Option<u16>) -> anyhow::Result<Self> {
        let get_status = get_status.map(StatusCode::from_u16).transpose()?;
        Ok(Self { get_status, ..Self::default() })
    }
}

/// The layer: refuses what the faults say, and remembers issued session ids.
pub async fn layer(State(faults): State<Arc<Faults>>, request: Request, next: Next) -> Response {
    let is_get = request.method() == Method::GET;
    if is_get && let Some(status) = faults.get_status {
        return status.into_response();
    }
    let session =
        request.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(s) = &session
        && lock(&faults.forgotten).contains(s)
    {
        return (StatusCode::NOT_FOUND, "Session not found").into_response();
    }
    let response = next.run(request).await;
    if let Some(id) = response.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()) {
        lock(&faults.issued).insert(id.to_owned());
    }
    if !(is_get && session.is_some() && response.status().is_success()) {
        return response;
    }
    // A stream of a session that gets forgotten ends with it.
    let mut changed = faults.generation.subscribe();
    let (parts, body) = response.into_parts();
    let body = body.into_data_stream().take_until(async move {
        let _ = changed.changed().await;
    });
    Response::from_parts(parts, Body::from_stream(body))
}

/// `POST /test/forget-sessions`.
pub async fn forget(State(faults): State<Arc<Faults>>) -> String {
    let issued: Vec<String> = lock(&faults.issued).drain().collect();
    let n = issued.len();
    lock(&faults.forgotten).extend(issued);
    faults.generation.send_modify(|g| *g += 1);
    format!("forgot {n} sessions")
}
