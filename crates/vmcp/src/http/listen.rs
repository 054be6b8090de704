//! `subscriptions/listen` (2026-07-28): an SSE stream that starts with the acknowledgement of what
//! the gateway accepted, then carries the list_changed notifications and resource updates the
//! client asked for, each tagged with the subscription id (the listen request's id).
//!
//! Invariant: the resource subscriptions a stream adds are removed when the stream ends, with the
//! principal's teardown caller.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::response::Response;

use super::stream;
use crate::auth::Caller;
use crate::catalog::live::Changed;
use crate::dispatch::subscriptions::Target;
use crate::gateway::Gateway;
use crate::protocol::jsonrpc::raw;
use crate::protocol::meta::KEY_SUBSCRIPTION_ID;
use crate::protocol::{ErrorResponse, Message, Notification, Request, params};
use crate::session::{LimitError, ListenPermit};
use axum::http::StatusCode;

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    tools_list_changed: Option<bool>,
    #[serde(default)]
    prompts_list_changed: Option<bool>,
    #[serde(default)]
    resources_list_changed: Option<bool>,
    #[serde(default)]
    resource_subscriptions: Option<Vec<String>>,
}

/// Removes a stream's resource subscriptions when the stream is dropped.
struct Unsubscribe {
    gw: Arc<Gateway>,
    caller: Caller,
    uris: Vec<(Arc<str>, String)>,
    /// The stream's slots of `maxListenStreams`/`maxListenStreamsPerPrincipal`.
    _permit: ListenPermit,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let (gw, caller, uris) =
            (self.gw.clone(), self.caller.clone(), std::mem::take(&mut self.uris));
        if uris.is_empty() {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let timeout = gw.sessions.limits().teardown_timeout;
                for (name, uri) in uris {
                    if let Some(backend) = &gw.backends.get(&name) {
                        let target = Target { name: &name, backend, timeout };
                        let _ = gw.subscriptions.change(&caller, None, target, &uri, false).await;
                    }
                }
            });
        }
    }
}

/// Opens the listen stream for one Modern request.
pub async fn listen(gw: Arc<Gateway>, caller: Caller, req: Request) -> Response {
    let filter: Filter = req
        .params
        .as_deref()
        .and_then(|p| serde_json::from_str::<serde_json::Value>(p.get()).ok())
        .and_then(|v| v.get("notifications").cloned())
        .and_then(|n| serde_json::from_value(n).ok())
        .unwrap_or_default();
    let want = Changed {
        tools: filter.tools_list_changed == Some(true),
        prompts: filter.prompts_list_changed == Some(true),
        resources: filter.resources_list_changed == Some(true),
    };
    let permit = match gw.sessions.open_listen(&caller.binding()) {
        Ok(p) => p,
        Err(e) => {
            let status = if e.is_global() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::TOO_MANY_REQUESTS
            };
            return stream::json(
                status,
                &Message::Error(ErrorResponse::new(Some(req.id), e.to_error())),
            );
        }
    };
    // Subscribe what can be routed; what cannot is left out of the acknowledgement.
    let catalog = gw.catalog.for_caller(&gw.backends, &caller).await;
    let uris = filter.resource_subscriptions.unwrap_or_default();
    let limits = gw.sessions.limits();
    if uris.len() > limits.max_subscriptions_per_session {
        let e = LimitError::SubscriptionsPerSession { limit: limits.max_subscriptions_per_session };
        return stream::json(
            StatusCode::TOO_MANY_REQUESTS,
            &Message::Error(ErrorResponse::new(Some(req.id), e.to_error())),
        );
    }
    if let Some(Err(e)) =
        uris.iter().map(|u| crate::dispatch::check_uri(&gw, u)).find(Result::is_err)
    {
        return stream::json(
            StatusCode::BAD_REQUEST,
            &Message::Error(ErrorResponse::new(Some(req.id), e)),
        );
    }
    let mut subscribed = Vec::new();
    for uri in uris {
        let Some(name) = catalog.resource(&uri).cloned() else { continue };
        let Some(backend) = &gw.backends.get(&name) else { continue };
        let target = Target { name: &name, backend, timeout: gw.backends.timeout(&name) };
        if gw.subscriptions.change(&caller, None, target, &uri, true).await.is_ok() {
            subscribed.push((name, uri));
        }
    }
    let mut accepted = serde_json::Map::new();
    for (k, on) in [
        ("toolsListChanged", want.tools),
        ("promptsListChanged", want.prompts),
        ("resourcesListChanged", want.resources),
    ] {
        if on {
            accepted.insert(k.into(), true.into());
        }
    }
    if !subscribed.is_empty() {
        accepted.insert(
            "resourceSubscriptions".into(),
            subscribed.iter().map(|(_, u)| u.clone()).collect(),
        );
    }
    let sub_id = serde_json::to_value(&req.id).unwrap_or_default();
    let tag = move |method: &str, mut params: serde_json::Map<String, serde_json::Value>| {
        params.insert("_meta".into(), serde_json::json!({ KEY_SUBSCRIPTION_ID: sub_id.clone() }));
        Message::Notification(Notification::new(method, Some(raw(&params))))
    };
    let mut first = serde_json::Map::new();
    first.insert("notifications".into(), accepted.into());
    let ack = tag("notifications/subscriptions/acknowledged", first);
    let uris: Vec<String> = subscribed.iter().map(|(_, u)| u.clone()).collect();
    let binding = caller.binding();
    let guard = Unsubscribe {
        gw: gw.clone(),
        caller: Caller::Teardown(caller.binding()),
        uris: subscribed,
        _permit: permit,
    };
    let state = (
        gw.catalog.changes_for(caller.binding()),
        gw.events.subscribe(),
        gw.stop.clone(),
        VecDeque::<Message>::new(),
        guard,
    );
    let rest = futures::stream::unfold(
        state,
        move |(mut changes, mut events, stop, mut queue, guard)| {
            let (tag, uris, binding) = (tag.clone(), uris.clone(), binding.clone());
            async move {
                loop {
                    if let Some(m) = queue.pop_front() {
                        return Some((m, (changes, events, stop, queue, guard)));
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return None,
                        c = changes.recv() => {
                            // A feed that fell behind says everything changed.
                            let Ok(c) = c else { return None };
                            for (on, method) in [
                                (c.tools && want.tools, "notifications/tools/list_changed"),
                                (c.prompts && want.prompts, "notifications/prompts/list_changed"),
                                (c.resources && want.resources, "notifications/resources/list_changed"),
                            ] {
                                if on {
                                    queue.push_back(tag(method, serde_json::Map::new()));
                                }
                            }
                        }
                        e = events.recv() => if let Ok(e) = e
                            && e.session.is_none()
                            // Another principal's stream is none of this one's business.
                            && e.principal.as_ref().is_none_or(|p| *p == binding)
                            && e.notification.method == "notifications/resources/updated"
                            && let Some(uri) = params::get_str(e.notification.params.as_deref(), "uri")
                            && uris.contains(&uri)
                        {
                            let mut p = serde_json::Map::new();
                            p.insert("uri".into(), uri.into());
                            queue.push_back(tag("notifications/resources/updated", p));
                        },
                    }
                }
            }
        },
    );
    stream::sse(futures::StreamExt::chain(futures::stream::iter([ack]), rest))
}
