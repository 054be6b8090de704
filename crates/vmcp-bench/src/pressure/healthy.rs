//! The healthy client: one Legacy session of its own principal calling `fx_echo` back to back,
//! every reply checked. A refusal naming a `server.limits` key is counted apart from errors:
//! a total bound (`maxInFlight`) is shared by every client, so when an aggressor holds all of it
//! the healthy client is refused too, by design.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::client::{Mcp, limit_of, short};
use crate::report::{Latency, latency};

const SAMPLES: usize = 5;

/// What the healthy client saw in one window.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Phase {
    /// Calls answered with the right echo.
    pub ok: u64,
    /// Calls refused by a `server.limits` bound (the keys are in `refused_by`).
    pub refused: u64,
    pub refused_by: BTreeSet<String>,
    /// Anything else: wrong answers, other errors, timeouts.
    pub errors: u64,
    /// Latency of the successful calls (µs).
    pub latency_us: Option<Latency>,
    pub error_samples: Vec<String>,
}

/// Calls `fx_echo` back to back for `window`.
pub async fn measure(c: &Mcp, window: Duration) -> Phase {
    let mut out = Phase::default();
    let mut ns = Vec::new();
    let end = Instant::now() + window;
    let mut seq = 0u64;
    let error = |out: &mut Phase, what: String| {
        out.errors += 1;
        if out.error_samples.len() < SAMPLES {
            out.error_samples.push(short(&what));
        }
    };
    while Instant::now() < end {
        seq += 1;
        let message = format!("healthy-{seq}");
        let started = Instant::now();
        let r = c
            .call("tools/call", json!({ "name": "fx_echo", "arguments": { "message": message } }))
            .await;
        let elapsed = started.elapsed();
        match r {
            Ok((200, m)) if echo_text(&m) == Some(&format!("Echo: {message}")) => {
                out.ok += 1;
                ns.push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
            }
            Ok((s, m)) => match limit_of(&m) {
                Some(key) => {
                    out.refused += 1;
                    out.refused_by.insert(key.to_owned());
                }
                None => error(&mut out, format!("HTTP {s}: {m}")),
            },
            Err(e) => error(&mut out, format!("{e:#}")),
        }
    }
    ns.sort_unstable();
    out.latency_us = latency(&ns);
    out
}

fn echo_text(m: &Value) -> Option<&String> {
    match m.get("result")?.get("content")?.get(0)?.get("text")? {
        Value::String(s) => Some(s),
        _ => None,
    }
}
