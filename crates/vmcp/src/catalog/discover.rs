//! Fetching one backend's lists (tools, resources, templates, prompts), on behalf of a given
//! caller: `Caller::System` for the shared catalog, the principal's own caller for a user-bound
//! backend (see [`super::principal`]).
//!
//! Invariant: a list that fails keeps its previous value (or is empty) and marks the result
//! incomplete; nothing here fails anything else.

use std::sync::Arc;

use serde_json::Value;
use serde_json::value::RawValue;

use super::{BackendLists, Unlisted, UnlistedCause};
use crate::auth::Caller;
use crate::auth::outgoing::OutgoingAuthError;
use crate::backend::{Backend, BackendError, CallContext, Reply};
use crate::protocol::jsonrpc::raw;

/// Pages followed per list, against a backend that never stops paging.
const MAX_PAGES: usize = 100;

/// Fetches every list a backend advertises as `caller`. A list that fails keeps its previous
/// value (or is empty) and makes the result incomplete: the first failure is returned with it.
pub async fn discover_as(
    caller: &Caller,
    name: &Arc<str>,
    backend: &Backend,
    previous: Option<&BackendLists>,
) -> (BackendLists, Option<Unlisted>) {
    let info = match backend.info_as(caller).await {
        Ok(info) => info,
        Err(e) => {
            let failure =
                Unlisted { backend: name.clone(), reason: e.to_string(), cause: cause_of(&e) };
            let lists = previous
                .cloned()
                .unwrap_or_else(|| BackendLists { backend: name.clone(), ..Default::default() });
            return (lists, Some(failure));
        }
    };
    let caps = info.map(|i| i.capabilities).unwrap_or(Value::Null);
    let has = |k: &str| caps.get(k).is_some_and(|v| !v.is_null());
    let list = |enabled, method, key| List { caller, name, backend, enabled, method, key };
    let (tools, resources, templates, prompts) = futures::join!(
        list(has("tools"), "tools/list", "tools").fetch(),
        list(has("resources"), "resources/list", "resources").fetch(),
        list(has("resources"), "resources/templates/list", "resourceTemplates").fetch(),
        list(has("prompts"), "prompts/list", "prompts").fetch(),
    );
    let failure = [&tools, &resources, &templates, &prompts]
        .into_iter()
        .find_map(|r| r.as_ref().err().cloned());
    let keep = |fresh: Result<Vec<Value>, Unlisted>, old: fn(&BackendLists) -> &Vec<Value>| {
        fresh.unwrap_or_else(|_| previous.map(old).cloned().unwrap_or_default())
    };
    let lists = BackendLists {
        backend: name.clone(),
        tools: keep(tools, |l| &l.tools),
        resources: keep(resources, |l| &l.resources),
        resource_templates: keep(templates, |l| &l.resource_templates),
        prompts: keep(prompts, |l| &l.prompts),
    };
    (lists, failure)
}

/// What a caller should make of a backend failing to list for it.
fn cause_of(e: &BackendError) -> UnlistedCause {
    match e {
        BackendError::Auth(OutgoingAuthError::Reauthenticate(_))
        | BackendError::Refused { status: 401, .. } => UnlistedCause::Reauthenticate,
        BackendError::Auth(OutgoingAuthError::UpstreamUnavailable(_)) => {
            UnlistedCause::CredentialsUnavailable
        }
        BackendError::Auth(OutgoingAuthError::Forbidden(_)) | BackendError::Refused { .. } => {
            UnlistedCause::Forbidden
        }
        _ => UnlistedCause::Unavailable,
    }
}

/// One list method of one backend.
struct List<'a> {
    caller: &'a Caller,
    name: &'a str,
    backend: &'a Backend,
    enabled: bool,
    method: &'a str,
    key: &'a str,
}

impl List<'_> {
    /// The list, or why fetching it failed (logged).
    async fn fetch(self) -> Result<Vec<Value>, Unlisted> {
        if !self.enabled {
            return Ok(Vec::new());
        }
        self.all().await.map_err(|(reason, cause)| {
            let (backend, method) = (self.name, self.method);
            tracing::warn!(backend, method, error = %reason, "discovery failed");
            Unlisted { backend: Arc::from(backend), reason, cause }
        })
    }

    /// Follows `nextCursor` through every page (at most [`MAX_PAGES`]). An error says what the
    /// caller should make of it.
    async fn all(&self) -> Result<Vec<Value>, (String, UnlistedCause)> {
        let (method, key) = (self.method, self.key);
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params: Option<Box<RawValue>> =
                cursor.as_ref().map(|c| raw(&serde_json::json!({ "cursor": c })));
            let reply = self
                .backend
                .request(self.caller, method, params, CallContext::detached())
                .await
                .map_err(|e| (e.to_string(), cause_of(&e)))?;
            let failed = UnlistedCause::Unavailable;
            let result = match reply {
                Reply::Result(r) => r,
                Reply::Error(e) => return Err((format!("{} ({})", e.message, e.code), failed)),
            };
            let mut page: serde_json::Map<String, Value> = serde_json::from_str(result.get())
                .map_err(|e| (format!("unreadable {method} result: {e}"), failed))?;
            if let Some(Value::Array(list)) = page.remove(key) {
                items.extend(list);
            }
            match page.remove("nextCursor") {
                Some(Value::String(c)) if !c.is_empty() => cursor = Some(c),
                _ => return Ok(items),
            }
        }
        Ok(items)
    }
}
