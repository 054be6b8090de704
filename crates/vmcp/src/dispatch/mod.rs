//! Dispatch: one handler per MCP method, on top of the catalog and the backends.
//!
//! The client edge (`http`) has already decided the era, checked the session or the per-request
//! `_meta`, and built the [`Cx`]. Here a request becomes either an answer from the catalog (lists,
//! discovery) or a call routed to one backend under the item's original name (`forward`).
//!
//! Every lookup (lists, routing a call, a resource's owner) uses the catalog the caller sees
//! ([`catalog`]): the shared one, or, when some backend is user-bound, its principal's, so a
//! principal only reaches the user-bound tools listed for it; another principal's are unknown.
//!
//! Invariant: handlers take the caller from `Cx` and pass it down; they never look identity up
//! anywhere else.

mod forward;
mod lists;
pub mod park;
pub mod subscriptions;

use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::auth::Caller;
use crate::gateway::Gateway;
use crate::protocol::jsonrpc::{code, raw};
use crate::protocol::meta::RequestMeta;
use crate::protocol::{ErrorObject, Message, params};
use crate::session::Session;

pub use forward::forward;

/// Who is asking, in which era, and where interim messages for this request go.
pub struct Cx {
    /// The caller of this request.
    pub caller: Caller,
    /// The client's era and its per-era state.
    pub client: Client,
    /// Notifications and server-to-client requests for the client, sent before the response on
    /// this request's stream.
    pub out: mpsc::Sender<Message>,
    /// This request's headers on the `passthroughHeaders` allow-list.
    pub headers: crate::backend::Forwarded,
    /// Where the request came from (peer address, user agent), for audit; no credential.
    pub source: crate::audit::Source,
}

/// The client side of a request.
// `RequestMeta` holds JSON maps, which are larger with serde_json's `preserve_order` (enabled by
// cedar-policy); one per request, so boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Client {
    /// A Legacy client with its session.
    Legacy(Arc<Session>),
    /// A Modern (stateless) client with its per-request `_meta`.
    Modern(RequestMeta),
}

impl Cx {
    /// The Legacy client session's key, whose backend sessions this request uses.
    pub fn session_key(&self) -> Option<u64> {
        match &self.client {
            Client::Legacy(s) => Some(s.key),
            Client::Modern(_) => None,
        }
    }

    /// Whether the client is Modern.
    pub fn is_modern(&self) -> bool {
        matches!(self.client, Client::Modern(_))
    }
}

/// The catalog this request's caller sees: the shared one (anonymous callers, or no user-bound
/// backend), else its principal's (built on first use with this request's caller).
pub async fn catalog(gw: &Gateway, cx: &Cx) -> Arc<crate::catalog::Catalog> {
    gw.catalog.for_caller(&gw.backends, &cx.caller).await
}

/// The outcome of one request.
pub type Outcome = Result<Box<RawValue>, ErrorObject>;

fn invalid_params(msg: impl Into<String>) -> ErrorObject {
    ErrorObject::new(code::INVALID_PARAMS, msg)
}

fn method_not_found(method: &str) -> ErrorObject {
    ErrorObject::new(code::METHOD_NOT_FOUND, format!("Method not found: {method}"))
}

/// Handles one client request.
pub async fn handle(gw: &Gateway, cx: &Cx, method: &str, params: Option<Box<RawValue>>) -> Outcome {
    match method {
        "ping" if !cx.is_modern() => Ok(raw(&serde_json::json!({}))),
        "tools/list" => lists::tools(gw, cx, params.as_deref()).await,
        "prompts/list" => lists::prompts(gw, cx, params.as_deref()).await,
        "resources/list" => lists::resources(gw, cx, params.as_deref()).await,
        "resources/templates/list" => lists::templates(gw, cx, params.as_deref()).await,
        "server/discover" => Ok(lists::discover(gw)),
        "tools/call" => {
            let name = params::get_str(params.as_deref(), "name")
                .ok_or_else(|| invalid_params("tools/call needs a string `name`"))?;
            let mut catalog = catalog(gw, cx).await;
            let route = match catalog.tool(&name).cloned() {
                Some(route) => route,
                None => {
                    let (route, known) = withdrawn(gw, |c| c.tool(&name).cloned(), |r| &r.backend)
                        .ok_or_else(|| {
                            unlisted(&catalog, invalid_params(format!("Unknown tool: {name}")))
                        })??;
                    catalog = known;
                    route
                }
            };
            let schema = catalog.tool_schema(&name);
            let params =
                params::set(params.as_deref(), "name", &route.original).map_err(invalid_params)?;
            forward::forward_with(gw, cx, &route.backend, method, Some(params), schema).await
        }
        "prompts/get" => {
            let name = params::get_str(params.as_deref(), "name")
                .ok_or_else(|| invalid_params("prompts/get needs a string `name`"))?;
            let catalog = catalog(gw, cx).await;
            let route = match catalog.prompt(&name).cloned() {
                Some(route) => route,
                None => {
                    withdrawn(gw, |c| c.prompt(&name).cloned(), |r| &r.backend)
                        .ok_or_else(|| {
                            unlisted(&catalog, invalid_params(format!("Unknown prompt: {name}")))
                        })??
                        .0
                }
            };
            let params =
                params::set(params.as_deref(), "name", &route.original).map_err(invalid_params)?;
            forward(gw, cx, &route.backend, method, Some(params)).await
        }
        "resources/read" => {
            let uri = params::get_str(params.as_deref(), "uri")
                .ok_or_else(|| invalid_params("resources/read needs a string `uri`"))?;
            check_uri(gw, &uri)?;
            let catalog = catalog(gw, cx).await;
            let backend = match catalog.resource(&uri).cloned() {
                Some(backend) => backend,
                None => {
                    withdrawn(gw, |c| c.resource(&uri).cloned(), |b| b)
                        .ok_or_else(|| unlisted(&catalog, resource_not_found(cx, &uri)))??
                        .0
                }
            };
            forward(gw, cx, &backend, method, params).await
        }
        "resources/subscribe" | "resources/unsubscribe" if !cx.is_modern() => {
            subscribe(gw, cx, method, params).await
        }
        "completion/complete" => complete(gw, cx, params).await,
        "logging/setLevel" if !cx.is_modern() => set_level(gw, cx, params).await,
        _ => Err(method_not_found(method)),
    }
}

/// A name the caller's catalog lacks but the gateway listed before: its backend left service
/// (down, unhealthy, breaker open). `None`: never listed. `Some(Err)`: the backend would refuse
/// the call (not connected, breaker open): -32001 naming it, why, and when it is retried, rather
/// than an unknown name. `Some(Ok)`: the backend takes calls (unhealthy but answering, or back
/// before the catalog caught up): route there (with the catalog that knows the name).
#[allow(clippy::type_complexity)]
fn withdrawn<T>(
    gw: &Gateway,
    lookup: impl Fn(&crate::catalog::Catalog) -> Option<T>,
    backend_of: impl Fn(&T) -> &str,
) -> Option<Result<(T, Arc<crate::catalog::Catalog>), ErrorObject>> {
    let known = gw.catalog.known();
    let found = lookup(&known)?;
    let backend = backend_of(&found);
    Some(match gw.backends.call_refusal(backend) {
        Some(why) => Err(forward::refused(backend, &why)),
        None => Ok((found, known)),
    })
}

/// Refuses a URI longer than `server.limits.maxUriLength` before it is matched against the
/// catalog's templates, so matching cost stays bounded whatever the client sends.
pub fn check_uri(gw: &Gateway, uri: &str) -> Result<(), ErrorObject> {
    uri_within(uri, gw.sessions.limits().max_uri_length)
}

fn uri_within(uri: &str, limit: usize) -> Result<(), ErrorObject> {
    if uri.len() <= limit {
        return Ok(());
    }
    Err(ErrorObject::with_data(
        code::INVALID_PARAMS,
        format!(
            "URI too long: {} bytes, the limit is {limit} bytes (server.limits.maxUriLength)",
            uri.len()
        ),
        &serde_json::json!({ "limit": "maxUriLength", "value": limit }),
    ))
}

/// A name the caller's catalog lacks: `unknown` as it is, unless a user-bound backend could not
/// be listed for this caller, which may be why. Then that failure is the error: -32001 (backend
/// unavailable), -32004 when the backend refused the caller's credentials for good (the client
/// is asked to authenticate again), or -32005 when the caller's upstream token could not be
/// refreshed for the listing (their IdP is down: a retry, not a logout), or -32006 when the
/// caller may not reach the backend at all (HTTP 403), naming the backends and why.
fn unlisted(catalog: &crate::catalog::Catalog, unknown: ErrorObject) -> ErrorObject {
    use crate::catalog::UnlistedCause;
    let failed = catalog.unlisted();
    if failed.is_empty() {
        return unknown;
    }
    let any = |cause| failed.iter().any(|u| u.cause == cause);
    let code = if any(UnlistedCause::Reauthenticate) {
        code::REAUTHENTICATE
    } else if any(UnlistedCause::CredentialsUnavailable) {
        code::CREDENTIALS_UNAVAILABLE
    } else if any(UnlistedCause::Forbidden) {
        code::ACCESS_DENIED
    } else {
        code::BACKEND_UNAVAILABLE
    };
    let why: Vec<String> = failed.iter().map(|u| format!("{} ({})", u.backend, u.reason)).collect();
    let message = format!(
        "{}; these backends could not be listed for this caller: {}",
        unknown.message,
        why.join(", ")
    );
    ErrorObject { code, message, data: unknown.data }
}

/// An unknown resource: -32002 in 2025-11-25, -32602 from 2026-07-28 on (SEP-2164); the URI
/// goes in `data` either way.
fn resource_not_found(cx: &Cx, uri: &str) -> ErrorObject {
    let code = if cx.is_modern() { code::INVALID_PARAMS } else { code::RESOURCE_NOT_FOUND };
    ErrorObject::with_data(
        code,
        format!("Resource not found: {uri}"),
        &serde_json::json!({ "uri": uri }),
    )
}

async fn subscribe(gw: &Gateway, cx: &Cx, method: &str, params: Option<Box<RawValue>>) -> Outcome {
    let Client::Legacy(session) = &cx.client else { return Err(method_not_found(method)) };
    let uri = params::get_str(params.as_deref(), "uri")
        .ok_or_else(|| invalid_params(format!("{method} needs a string `uri`")))?;
    check_uri(gw, &uri)?;
    let catalog = catalog(gw, cx).await;
    let name = catalog
        .resource(&uri)
        .cloned()
        .ok_or_else(|| unlisted(&catalog, resource_not_found(cx, &uri)))?;
    let backend = &gw.backends.get(&name).ok_or_else(|| {
        ErrorObject::new(code::INTERNAL_ERROR, format!("no backend named {name}"))
    })?;
    let on = method == "resources/subscribe";
    // Only a change in this session's set changes the backend's subscribers.
    let changed = if on {
        session.subscribe(&uri).map_err(|e| e.to_error())?
    } else {
        session.unsubscribe(&uri)
    };
    if changed {
        let target =
            subscriptions::Target { name: &name, backend, timeout: gw.backends.timeout(&name) };
        let result = gw.subscriptions.change(&cx.caller, Some(session.key), target, &uri, on).await;
        if let Err(e) = result {
            // The backend refused (or never answered): the session is not subscribed either.
            if on {
                session.unsubscribe(&uri);
            }
            return Err(e);
        }
    }
    Ok(raw(&serde_json::json!({})))
}

async fn complete(gw: &Gateway, cx: &Cx, params: Option<Box<RawValue>>) -> Outcome {
    #[derive(serde::Deserialize)]
    struct P {
        #[serde(rename = "ref")]
        reference: serde_json::Map<String, serde_json::Value>,
    }
    let p: P = params
        .as_deref()
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .ok_or_else(|| invalid_params("completion/complete needs a `ref` object"))?;
    let catalog = catalog(gw, cx).await;
    let kind = p.reference.get("type").and_then(|v| v.as_str()).unwrap_or_default();
    match kind {
        "ref/prompt" => {
            let name = p.reference.get("name").and_then(|v| v.as_str()).unwrap_or_default();
            let route = catalog.prompt(name).cloned().ok_or_else(|| {
                unlisted(&catalog, invalid_params(format!("Unknown prompt: {name}")))
            })?;
            let mut reference = p.reference.clone();
            reference.insert("name".into(), route.original.clone().into());
            let params =
                params::set(params.as_deref(), "ref", &reference).map_err(invalid_params)?;
            forward(gw, cx, &route.backend, "completion/complete", Some(params)).await
        }
        "ref/resource" => {
            let uri = p.reference.get("uri").and_then(|v| v.as_str()).unwrap_or_default();
            check_uri(gw, uri)?;
            let backend = catalog
                .template(uri)
                .or_else(|| catalog.resource(uri))
                .cloned()
                .ok_or_else(|| unlisted(&catalog, resource_not_found(cx, uri)))?;
            forward(gw, cx, &backend, "completion/complete", params).await
        }
        other => Err(invalid_params(format!("unknown completion reference type {other:?}"))),
    }
}

async fn set_level(gw: &Gateway, cx: &Cx, params: Option<Box<RawValue>>) -> Outcome {
    let Client::Legacy(session) = &cx.client else {
        return Err(method_not_found("logging/setLevel"));
    };
    let level = params::get_str(params.as_deref(), "level")
        .ok_or_else(|| invalid_params("logging/setLevel needs a string `level`"))?;
    if !session.set_log_level(&level) {
        return Err(invalid_params(format!("unknown log level {level:?}")));
    }
    // The gateway filters per session. Backends also filter at the source, but only one whose
    // session this client does not share with other principals is told: a shared connection's
    // level would change for everyone.
    for (name, backend) in gw.backends.iter() {
        let logs = backend.info().is_some_and(|i| i.capabilities.get("logging").is_some())
            && backend.session_scope(Some(session.key)) != crate::backend::SessionScope::Shared;
        if logs && backend.state() == crate::backend::State::Ready {
            let _ = forward(gw, cx, &name, "logging/setLevel", params.clone()).await;
        }
    }
    Ok(raw(&serde_json::json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_say_which_user_bound_backend_could_not_be_listed() {
        use crate::catalog::UnlistedCause::{CredentialsUnavailable, Reauthenticate, Unavailable};
        use crate::catalog::{Catalog, Unlisted, build_with};
        let config = crate::config::AggregationConfig::default();
        let unknown = || invalid_params("Unknown tool: u_x");
        let same = unlisted(&Catalog::empty(), unknown());
        assert_eq!((same.code, same.message.as_str()), (code::INVALID_PARAMS, "Unknown tool: u_x"));
        let down =
            |cause| Unlisted { backend: "u".into(), reason: "HTTP 401 Unauthorized".into(), cause };
        let e = unlisted(&build_with(&config, &[], vec![down(Unavailable)]), unknown());
        assert_eq!(e.code, code::BACKEND_UNAVAILABLE);
        assert!(e.message.starts_with("Unknown tool: u_x; "), "{}", e.message);
        assert!(e.message.contains("u (HTTP 401 Unauthorized)"), "{}", e.message);
        let catalog = build_with(&config, &[], vec![down(Unavailable), down(Reauthenticate)]);
        assert_eq!(unlisted(&catalog, unknown()).code, code::REAUTHENTICATE);
        // The user's IdP is down: a retry later (HTTP 503), unless another backend wants a login.
        let catalog =
            build_with(&config, &[], vec![down(Unavailable), down(CredentialsUnavailable)]);
        assert_eq!(unlisted(&catalog, unknown()).code, code::CREDENTIALS_UNAVAILABLE);
        let catalog =
            build_with(&config, &[], vec![down(CredentialsUnavailable), down(Reauthenticate)]);
        assert_eq!(unlisted(&catalog, unknown()).code, code::REAUTHENTICATE);
    }

    #[test]
    fn uri_cap_names_the_limit() {
        assert!(uri_within("file:///a", 9).is_ok());
        let e = uri_within(&"a".repeat(1 << 20), 8192).unwrap_err();
        assert_eq!(e.code, code::INVALID_PARAMS);
        assert!(e.message.contains("server.limits.maxUriLength"), "{}", e.message);
        assert!(e.message.contains("1048576 bytes"), "{}", e.message);
    }
}
