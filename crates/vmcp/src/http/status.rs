//! `/health` (liveness) and `/status` (what each backend is doing, its health and circuit
//! breaker, and the catalog's size).

use axum::Json;
use axum::extract::State;

use super::AppState;

/// Liveness: the process serves HTTP.
pub async fn health() -> &'static str {
    "ok"
}

/// Backends with transport, era, state and last error; catalog counts and problems.
pub async fn status(State(app): State<AppState>) -> Json<serde_json::Value> {
    let gw = &app.gw;
    let catalog = gw.catalog.load();
    let settings = gw.settings.load();
    let backends: Vec<serde_json::Value> = gw
        .backends
        .iter()
        .map(|(name, b)| {
            let info = b.info();
            serde_json::json!({
                "name": &*name,
                "transport": b.transport_name(),
                "state": b.state(),
                "era": info.as_ref().map(|i| i.era),
                "protocolVersion": info.as_ref().map(|i| i.protocol_version.clone()),
                "serverInfo": info.as_ref().map(|i| i.server_info.clone()),
                "lastError": b.last_error(),
                "unroutableMessages": b.status().unroutable(),
                "isolation": b.isolation(),
                // Modern backends with the user's credentials: one subscription stream each.
                "principalListenStreams": b.principal_listens(),
                // User-bound backends are discovered per principal: not counted in `counts`.
                "userBound": gw.catalog.is_user_bound(&name),
                "counts": catalog.counts_for(&name),
                // Connection attempts so far (reconnects included).
                "connectAttempts": b.status().get().attempts,
                // In the catalog: connected, not unhealthy, breaker not open.
                "inService": gw.backends.in_service(&name),
                // Health fed by calls and probes, and the circuit breaker.
                "health": gw.backends.health(&name).map(|h| h.report()),
                // `backends[].metadata`, as configured.
                "metadata": settings.backend_metadata.get(&*name).cloned().unwrap_or_default(),
            })
        })
        .collect();
    Json(serde_json::json!({
        "name": gw.name,
        "version": env!("CARGO_PKG_VERSION"),
        // The config's `metadata`, as configured.
        "metadata": settings.metadata,
        // The config generation in force and the last reload's outcome.
        "config": gw.config_status().report(),
        "sessions": gw.sessions.len(),
        "inFlight": gw.sessions.in_flight(),
        "listenStreams": gw.sessions.listen_streams(),
        "backends": backends,
        "authServer": gw.auth_server.as_ref().map(auth_server),
        "catalog": catalog.counts(),
        "principalCatalogs": gw.catalog.principal_catalogs(),
        "problems": catalog.problems(),
        // Audit events written, queued, dropped (queue full) and failed (I/O); null when off.
        "audit": gw.layers.load().audit.as_ref().map(|a| a.status()),
    }))
}

/// The embedded authorization server: its issuer and what its upstream token vault did.
fn auth_server(e: &crate::auth::embedded::Embedded) -> serde_json::Value {
    let v = e.vault.stats();
    serde_json::json!({
        "issuer": e.issuer,
        "vault": {
            "refreshed": v.refreshed,
            "transientFailures": v.transient_failures,
            "unavailable": v.unavailable,
            "refused": v.refused,
            "deadGrants": v.dead_grants,
            "lostResponses": v.lost_responses,
        },
    })
}

/// RFC 9728 protected resource metadata (404 when the gateway is anonymous).
pub async fn resource_metadata(State(app): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match app.gw.gatekeeper.metadata() {
        Some(doc) => Json(doc).into_response(),
        None => {
            (axum::http::StatusCode::NOT_FOUND, "authentication is not configured").into_response()
        }
    }
}
