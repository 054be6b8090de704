//! Counts of token grants at backends' token endpoints (RFC 8693 token exchange, on-behalf-of,
//! ID-JAG), by backend and outcome, for the `vmcp.token.exchanges` counter.
//!
//! Process-wide, because grants run where no request context may exist (teardown); bounded by
//! the configured backends (two entries each). Recorded only once telemetry is on.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

static COUNTS: Mutex<BTreeMap<(String, bool), u64>> = Mutex::new(BTreeMap::new());

/// One grant at `backend`'s token endpoint ended (`ok`: a token came back). Cached answers are
/// not grants and are not counted.
pub fn record(backend: &str, ok: bool) {
    if !super::ANY_ACTIVE.load(Ordering::Relaxed) {
        return;
    }
    let mut counts = COUNTS.lock().unwrap_or_else(|e| e.into_inner());
    *counts.entry((backend.to_owned(), ok)).or_default() += 1;
}

/// The counts so far.
pub(super) fn snapshot() -> Vec<((String, bool), u64)> {
    let counts = COUNTS.lock().unwrap_or_else(|e| e.into_inner());
    counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
}
