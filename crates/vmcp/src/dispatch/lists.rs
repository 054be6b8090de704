//! Answers from the catalog: the list methods (paged) and `server/discover`.
//!
//! Lists come from the catalog the caller sees ([`super::catalog`]): the shared one, or its
//! principal's when some backend is user-bound. A cursor is an offset into that same list.
//! With `partialFailureMode: fail`, a list fails (naming the backends) while any backend is out
//! of service. With authorization, `tools`, `prompts` and `resources` list only what the
//! caller may use ([`crate::authz::visible`], before paging, so cursors stay stable).

use serde_json::Value;
use serde_json::value::RawValue;

use super::{Cx, Outcome, invalid_params};
use crate::authz::List;
use crate::catalog::page;
use crate::gateway::Gateway;
use crate::protocol::jsonrpc::raw;
use crate::protocol::{SUPPORTED_VERSIONS, meta, params};

fn list(gw: &Gateway, cx: &Cx, params: Option<&RawValue>, key: &str, items: &[Value]) -> Outcome {
    // partialFailureMode: fail: no partial lists.
    if let Some(e) = gw.partial_failure_error() {
        return Err(e);
    }
    let cursor = params::get_str(params, "cursor");
    let (items, next) = page(items, cursor.as_deref(), gw.page_size)
        .map_err(|_| invalid_params("invalid cursor"))?;
    let mut result = serde_json::Map::new();
    result.insert(key.into(), Value::Array(items.to_vec()));
    if let Some(next) = next {
        result.insert("nextCursor".into(), next.into());
    }
    if cx.is_modern() {
        modern_fields(&mut result);
    }
    Ok(raw(&result))
}

/// Fields every 2026-07-28 result carries, and the caching hints (SEP-2549). The catalog can
/// change at any time (list_changed), so clients are told not to cache, and the lists may be a
/// principal's own (user-bound backends), so never to share them: `cacheScope` is `private`
/// (the only other value, `public`, would let an intermediary serve them to anyone).
pub(super) fn modern_fields(result: &mut serde_json::Map<String, Value>) {
    result.entry("resultType").or_insert("complete".into());
    result.entry("ttlMs").or_insert(0.into());
    result.entry("cacheScope").or_insert("private".into());
}

/// `tools/list`.
pub async fn tools(gw: &Gateway, cx: &Cx, params: Option<&RawValue>) -> Outcome {
    let catalog = super::catalog(gw, cx).await;
    let items = crate::authz::visible(gw, cx, List::Tools, &catalog).await?;
    list(gw, cx, params, "tools", &items)
}

/// `prompts/list`.
pub async fn prompts(gw: &Gateway, cx: &Cx, params: Option<&RawValue>) -> Outcome {
    let catalog = super::catalog(gw, cx).await;
    let items = crate::authz::visible(gw, cx, List::Prompts, &catalog).await?;
    list(gw, cx, params, "prompts", &items)
}

/// `resources/list`.
pub async fn resources(gw: &Gateway, cx: &Cx, params: Option<&RawValue>) -> Outcome {
    let catalog = super::catalog(gw, cx).await;
    let items = crate::authz::visible(gw, cx, List::Resources, &catalog).await?;
    list(gw, cx, params, "resources", &items)
}

/// `resources/templates/list`.
pub async fn templates(gw: &Gateway, cx: &Cx, params: Option<&RawValue>) -> Outcome {
    list(gw, cx, params, "resourceTemplates", super::catalog(gw, cx).await.resource_templates())
}

/// `server/discover`: the gateway's own versions and capabilities.
pub fn discover(gw: &Gateway) -> Box<RawValue> {
    raw(&serde_json::json!({
        "resultType": "complete",
        "supportedVersions": SUPPORTED_VERSIONS,
        "capabilities": gw.capabilities(),
        "ttlMs": 0,
        "cacheScope": "private",
        "_meta": { meta::KEY_SERVER_INFO: gw.server_info() },
    }))
}
