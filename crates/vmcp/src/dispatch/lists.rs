//! Answers from the catalog: the list methods (paged) and `server/discover`.

use serde_json::Value;
use serde_json::value::RawValue;

use super::{Cx, Outcome, invalid_params};
use crate::catalog::page;
use crate::gateway::Gateway;
use crate::protocol::jsonrpc::raw;
use crate::protocol::{SUPPORTED_VERSIONS, meta, params};

fn list(gw: &Gateway, cx: &Cx, params: Option<&RawValue>, key: &str, items: &[Value]) -> Outcome {
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
/// change at any time (list_changed), so clients are told not to cache.
pub(super) fn modern_fields(result: &mut serde_json::Map<String, Value>) {
    result.entry("resultType").or_insert("complete".into());
    result.entry("ttlMs").or_insert(0.into());
    result.entry("cacheScope").or_insert("private".into());
}

/// `tools/list`.
pub fn tools(gw: &Gateway, cx: &Cx, params: Option<&RawValue>) -> Outcome {
    list(gw, cx, params, "tools", gw.catalog.load().tools())
}

/// `prompts/list`.
pub fn prompts(gw: &Gateway, cx: &Cx, params: Option<&RawValue>) -> Outcome {
    list(gw, cx, params, "prompts", gw.catalog.load().prompts())
}

/// `resources/list`.
pub fn resources(gw: &Gateway, cx: &Cx, params: Option<&RawValue>) -> Outcome {
    list(gw, cx, params, "resources", gw.catalog.load().resources())
}

/// `resources/templates/list`.
pub fn templates(gw: &Gateway, cx: &Cx, params: Option<&RawValue>) -> Outcome {
    list(gw, cx, params, "resourceTemplates", gw.catalog.load().resource_templates())
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
