//! Fetching one backend's lists (tools, resources, templates, prompts), on behalf of a given
//! caller: `Caller::System` for the shared catalog, the principal's own caller for a user-bound
//! backend (see [`super::principal`]).
//!
//! Invariant: a list that fails keeps its previous value (or is empty) and marks the result
//! incomplete; nothing here fails anything else.

use std::sync::Arc;

use serde_json::Value;
use serde_json::value::RawValue;

use super::BackendLists;
use crate::auth::Caller;
use crate::backend::{Backend, CallContext, Reply};
use crate::protocol::jsonrpc::raw;

/// Pages followed per list, against a backend that never stops paging.
const MAX_PAGES: usize = 100;

/// Fetches every list a backend advertises as `caller`. A list that fails keeps its previous
/// value (or is empty) and makes the result incomplete (`false`).
pub async fn discover_as(
    caller: &Caller,
    name: &Arc<str>,
    backend: &Backend,
    previous: Option<&BackendLists>,
) -> (BackendLists, bool) {
    let caps = backend.info().map(|i| i.capabilities).unwrap_or(Value::Null);
    let has = |k: &str| caps.get(k).is_some_and(|v| !v.is_null());
    let list = |enabled, method, key| List { caller, name, backend, enabled, method, key };
    let (tools, resources, templates, prompts) = futures::join!(
        list(has("tools"), "tools/list", "tools").fetch(),
        list(has("resources"), "resources/list", "resources").fetch(),
        list(has("resources"), "resources/templates/list", "resourceTemplates").fetch(),
        list(has("prompts"), "prompts/list", "prompts").fetch(),
    );
    let complete =
        tools.is_some() && resources.is_some() && templates.is_some() && prompts.is_some();
    let keep = |fresh: Option<Vec<Value>>, old: fn(&BackendLists) -> &Vec<Value>| {
        fresh.unwrap_or_else(|| previous.map(old).cloned().unwrap_or_default())
    };
    let lists = BackendLists {
        backend: name.clone(),
        tools: keep(tools, |l| &l.tools),
        resources: keep(resources, |l| &l.resources),
        resource_templates: keep(templates, |l| &l.resource_templates),
        prompts: keep(prompts, |l| &l.prompts),
    };
    (lists, complete)
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
    /// The list, or `None` when fetching it failed (logged).
    async fn fetch(self) -> Option<Vec<Value>> {
        if !self.enabled {
            return Some(Vec::new());
        }
        match self.all().await {
            Ok(items) => Some(items),
            Err(e) => {
                let (backend, method) = (self.name, self.method);
                tracing::warn!(backend, method, error = %e, "discovery failed");
                None
            }
        }
    }

    /// Follows `nextCursor` through every page (at most [`MAX_PAGES`]).
    async fn all(&self) -> Result<Vec<Value>, String> {
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
                .map_err(|e| e.to_string())?;
            let result = match reply {
                Reply::Result(r) => r,
                Reply::Error(e) => return Err(format!("{} ({})", e.message, e.code)),
            };
            let mut page: serde_json::Map<String, Value> = serde_json::from_str(result.get())
                .map_err(|e| format!("unreadable {method} result: {e}"))?;
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
