//! The advertised lists as JSON text, encoded once per catalog: a list request copies each
//! item's bytes into the reply instead of cloning and re-serialising the catalog's values
//! (`tools/list` of 2,000 tools was bound by exactly that).
//!
//! Invariant: `encoded(kind)[i]` is `catalog.<kind>()[i]` serialised; a catalog is immutable, so
//! the text never goes stale. Derived data: clones start empty and equality ignores it.

use std::sync::OnceLock;

use serde_json::Value;
use serde_json::value::RawValue;

/// Which advertised list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

impl ListKind {
    /// The key of the list in its result (`tools`, `prompts`, ...).
    pub fn key(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::ResourceTemplates => "resourceTemplates",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// Each list's items as JSON, filled on first use.
#[derive(Default)]
pub(crate) struct Encoded {
    lists: [OnceLock<Vec<Box<RawValue>>>; 4],
}

impl Encoded {
    /// `items` (the catalog's list `kind`) encoded, item by item.
    pub(crate) fn get(&self, kind: ListKind, items: &[Value]) -> &[Box<RawValue>] {
        self.lists[kind.slot()]
            .get_or_init(|| items.iter().map(crate::protocol::jsonrpc::raw).collect())
    }
}

impl Clone for Encoded {
    fn clone(&self) -> Self {
        Encoded::default()
    }
}

impl PartialEq for Encoded {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Encoded")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_each_item_once_in_order() {
        let e = Encoded::default();
        let items = vec![serde_json::json!({ "name": "a" }), serde_json::json!({ "name": "b" })];
        let got: Vec<&str> = e.get(ListKind::Tools, &items).iter().map(|r| r.get()).collect();
        assert_eq!(got, [r#"{"name":"a"}"#, r#"{"name":"b"}"#]);
        // Filled once: a later call with other items returns what was encoded.
        assert_eq!(e.get(ListKind::Tools, &[]).len(), 2);
        assert!(e.get(ListKind::Prompts, &[]).is_empty());
        assert!(e.clone().lists[0].get().is_none(), "a clone starts empty");
    }
}
