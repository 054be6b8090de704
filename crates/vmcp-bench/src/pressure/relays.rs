//! The aggressors of the bounds on what waits for a client's answer: server-to-client requests
//! relayed to Legacy sessions and never answered (`maxPendingRelays*`), and Modern calls parked
//! on `input_required` and never resumed (`maxParkedCalls*`). Both call `sl_test_sampling` on the
//! Legacy SSE fixture `sl`, whose sampling request is what waits.

use anyhow::bail;
use serde_json::{Value, json};

use super::aggressor::{Ctx, Pacer, Tally, end_all};
use super::client::{Events, Mcp, failure_text, limit_of};

fn sampling_call() -> Value {
    json!({ "name": "sl_test_sampling", "arguments": { "prompt": "never answered" } })
}

/// What one sampling call in a Legacy session came to.
enum Relay {
    /// The sampling request reached the client: the relay is pending while this stream is held.
    Pending(Events),
    /// The call was answered instead (a refusal, or something else).
    Answered(u16, Value),
}

async fn relay(c: &Mcp) -> anyhow::Result<Relay> {
    let (id, mut ev) = c.start("tools/call", sampling_call(), true, None).await?;
    let first = tokio::time::timeout(std::time::Duration::from_secs(15), ev.next()).await;
    let Ok(first) = first else { bail!("no message in 15s") };
    match first? {
        Some(m) if m.get("method").and_then(Value::as_str) == Some("sampling/createMessage") => {
            Ok(Relay::Pending(ev))
        }
        Some(m) if m.get("id") == Some(&json!(id)) => Ok(Relay::Answered(ev.status, m)),
        Some(m) => bail!("HTTP {}: unexpected first message {m}", ev.status),
        None => bail!("HTTP {}: empty response", ev.status),
    }
}

/// Whether a call's answer is the backend's sampling refused for `key`: the fixture turns the
/// -32601 it got into an `isError` result quoting the message, which names the key.
fn refused_for(m: &Value, key: &str) -> bool {
    failure_text(m).is_some_and(|t| t.contains(&format!("server.limits.{key})")))
}

/// Relays sampling requests to Legacy sessions and never answers them, until the backend's
/// request is refused for `maxPendingRelaysPerSession` (one session) or `maxPendingRelays`
/// (several sessions); then keeps calling.
pub async fn pending(ctx: &Ctx, t: &Tally, mut pacer: Pacer, total: bool) -> anyhow::Result<()> {
    let l = &ctx.limits;
    let per_key = "maxPendingRelaysPerSession";
    let (sessions, key) = if total {
        (l.max_pending_relays / l.max_pending_relays_per_session + 1, "maxPendingRelays")
    } else {
        (1, per_key)
    };
    let mut clients = Vec::new();
    for n in 0..sessions {
        clients.push(ctx.session(n, true).await?);
    }
    let mut held = Vec::new();
    let mut hit = None;
    'open: for (n, c) in clients.iter().enumerate() {
        for _ in 0..=l.max_pending_relays_per_session {
            if pacer.stopped() {
                break 'open;
            }
            match relay(c).await? {
                Relay::Pending(ev) => {
                    t.hold(1);
                    held.push(ev);
                }
                Relay::Answered(_, m) if refused_for(&m, key) => {
                    t.refused();
                    hit = Some(n);
                    break 'open;
                }
                Relay::Answered(_, m) if total && refused_for(&m, per_key) => break,
                Relay::Answered(s, m) => {
                    t.other(format!("HTTP {s}: {m}"));
                    break 'open;
                }
            }
        }
    }
    if let Some(n) = hit {
        while pacer.next().await {
            match relay(&clients[n]).await {
                Ok(Relay::Pending(ev)) => {
                    t.admitted();
                    t.hold(1);
                    held.push(ev);
                }
                Ok(Relay::Answered(_, m)) if refused_for(&m, key) => t.refused(),
                Ok(Relay::Answered(s, m)) => t.other(format!("HTTP {s}: {m}")),
                Err(e) => t.other(format!("{e:#}")),
            }
        }
    }
    drop(held);
    end_all(clients).await;
    if hit.is_none() {
        bail!("{key} was not hit");
    }
    Ok(())
}

/// A Modern sampling call: `true` if it was parked (`input_required`), else its answer.
async fn park(c: &Mcp) -> anyhow::Result<Result<(), (u16, Value)>> {
    let (id, mut ev) = c
        .start("tools/call", sampling_call(), true, Some(std::time::Duration::from_secs(15)))
        .await?;
    let m = ev.reply(id).await?;
    let parked = m.get("result").and_then(|r| r.get("resultType")).and_then(Value::as_str)
        == Some("input_required");
    Ok(if parked { Ok(()) } else { Err((ev.status, m)) })
}

/// Parks Modern calls (never resumed) until `maxParkedCallsPerPrincipal` (one principal) or
/// `maxParkedCalls` (several) refuses; then keeps calling. Parked calls end at the backend's
/// timeout, so no cleanup is needed.
pub async fn parked(ctx: &Ctx, t: &Tally, mut pacer: Pacer, total: bool) -> anyhow::Result<()> {
    let l = &ctx.limits;
    let per_key = "maxParkedCallsPerPrincipal";
    let (principals, key) = if total {
        (l.max_parked_calls / l.max_parked_calls_per_principal + 1, "maxParkedCalls")
    } else {
        (1, per_key)
    };
    let clients = (0..principals).map(|n| ctx.aggressor(n)).collect::<anyhow::Result<Vec<_>>>()?;
    let mut hit = None;
    'open: for (n, c) in clients.iter().enumerate() {
        for _ in 0..=l.max_parked_calls_per_principal {
            if pacer.stopped() {
                break 'open;
            }
            match park(c).await? {
                Ok(()) => t.hold(1),
                Err((_, m)) if limit_of(&m) == Some(key) => {
                    t.refused();
                    hit = Some(n);
                    break 'open;
                }
                Err((_, m)) if total && limit_of(&m) == Some(per_key) => break,
                Err((s, m)) => {
                    t.other(format!("HTTP {s}: {m}"));
                    break 'open;
                }
            }
        }
    }
    let Some(n) = hit else { bail!("{key} was not hit") };
    while pacer.next().await {
        match park(&clients[n]).await {
            Ok(Ok(())) => {
                t.admitted();
                t.hold(1);
            }
            Ok(Err((200, m))) if limit_of(&m) == Some(key) => t.refused(),
            Ok(Err((s, m))) => t.other(format!("HTTP {s}: {m}")),
            Err(e) => t.other(format!("{e:#}")),
        }
    }
    Ok(())
}
