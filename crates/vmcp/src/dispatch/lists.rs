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
use crate::catalog::{Catalog, ListKind, range};
use crate::gateway::Gateway;
use crate::protocol::jsonrpc::raw;
use crate::protocol::{SUPPORTED_VERSIONS, meta, params};

/// One page of a list, written from the catalog's encoded items (see `catalog/encoded.rs`).
struct Page<'a> {
    key: &'static str,
    items: Vec<&'a RawValue>,
    next: Option<String>,
    modern: bool,
}

impl serde::Serialize for Page<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry(self.key, &self.items)?;
        if let Some(next) = &self.next {
            m.serialize_entry("nextCursor", next)?;
        }
        if self.modern {
            // As `modern_fields`, in this order.
            m.serialize_entry("resultType", "complete")?;
            m.serialize_entry("ttlMs", &0)?;
            m.serialize_entry("cacheScope", "private")?;
        }
        m.end()
    }
}

/// A page of `catalog`'s list `kind`, of the items at `visible` (`None`: all).
fn list(
    gw: &Gateway,
    cx: &Cx,
    params: Option<&RawValue>,
    catalog: &Catalog,
    kind: ListKind,
    visible: Option<Vec<usize>>,
) -> Outcome {
    // partialFailureMode: fail: no partial lists.
    if let Some(e) = gw.partial_failure_error() {
        return Err(e);
    }
    let cursor = params::get_str(params, "cursor");
    let encoded = catalog.encoded(kind);
    let len = visible.as_ref().map_or(encoded.len(), Vec::len);
    let (r, next) = range(len, cursor.as_deref(), gw.page_size)
        .map_err(|_| invalid_params("invalid cursor"))?;
    let items: Vec<&RawValue> = match &visible {
        None => encoded.get(r).unwrap_or_default().iter().map(|b| &**b).collect(),
        Some(at) => at
            .get(r)
            .unwrap_or_default()
            .iter()
            .filter_map(|&i| encoded.get(i).map(|b| &**b))
            .collect(),
    };
    Ok(raw(&Page { key: kind.key(), items, next, modern: cx.is_modern() }))
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
    let visible = crate::authz::visible(gw, cx, List::Tools, &catalog).await?;
    list(gw, cx, params, &catalog, ListKind::Tools, visible)
}

/// `prompts/list`.
pub async fn prompts(gw: &Gateway, cx: &Cx, params: Option<&RawValue>) -> Outcome {
    let catalog = super::catalog(gw, cx).await;
    let visible = crate::authz::visible(gw, cx, List::Prompts, &catalog).await?;
    list(gw, cx, params, &catalog, ListKind::Prompts, visible)
}

/// `resources/list`.
pub async fn resources(gw: &Gateway, cx: &Cx, params: Option<&RawValue>) -> Outcome {
    let catalog = super::catalog(gw, cx).await;
    let visible = crate::authz::visible(gw, cx, List::Resources, &catalog).await?;
    list(gw, cx, params, &catalog, ListKind::Resources, visible)
}

/// `resources/templates/list`.
pub async fn templates(gw: &Gateway, cx: &Cx, params: Option<&RawValue>) -> Outcome {
    let catalog = super::catalog(gw, cx).await;
    list(gw, cx, params, &catalog, ListKind::ResourceTemplates, None)
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
