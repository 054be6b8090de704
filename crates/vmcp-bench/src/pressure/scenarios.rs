//! The aggressors of the bounds a client hits with plain requests: URI length, sessions,
//! in-flight requests, GET streams, subscriptions and listen streams. (Relayed and parked calls
//! are in `relays.rs`.)

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::aggressor::{Bound, Ctx, Pacer, Tally, end_all};
use super::client::{Events, Mcp, error_code, limit_of};
use super::relays;

/// How long each in-flight-holding call sleeps at the backend.
const HOLD_MS: u64 = 2000;
/// A refused holder tries again after this (it is a retry pace, not a wait for readiness).
const HOLDER_RETRY: Duration = Duration::from_millis(100);
/// Bound on reading the first message of a stream the aggressor holds.
const FIRST_MESSAGE: Duration = Duration::from_secs(15);

/// Runs the aggressor of `bound` until `stop` turns true, then ends what it holds.
pub async fn run(
    bound: Bound,
    ctx: Arc<Ctx>,
    t: Arc<Tally>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let pacer = Pacer::new(ctx.rate, stop);
    match bound {
        Bound::UriLength => uri_length(&ctx, &t, pacer).await,
        Bound::Sessions => sessions(&ctx, &t, pacer, true).await,
        Bound::SessionsPerPrincipal => sessions(&ctx, &t, pacer, false).await,
        Bound::InFlight => in_flight(&ctx, &t, pacer, Holders::Total).await,
        Bound::InFlightPerPrincipal => in_flight(&ctx, &t, pacer, Holders::Principal).await,
        Bound::InFlightPerSession => in_flight(&ctx, &t, pacer, Holders::Session).await,
        Bound::StreamsPerSession => get_streams(&ctx, &t, pacer).await,
        Bound::SubscriptionsPerSession => subscriptions(&ctx, &t, pacer).await,
        Bound::ListenStreams => listen(&ctx, &t, pacer, true).await,
        Bound::ListenStreamsPerPrincipal => listen(&ctx, &t, pacer, false).await,
        Bound::PendingRelaysPerSession => relays::pending(&ctx, &t, pacer, false).await,
        Bound::PendingRelays => relays::pending(&ctx, &t, pacer, true).await,
        Bound::ParkedCallsPerPrincipal => relays::parked(&ctx, &t, pacer, false).await,
        Bound::ParkedCalls => relays::parked(&ctx, &t, pacer, true).await,
    }
}

/// `resources/read` of a 1 MiB URI, answered 200 with -32602 naming `maxUriLength`.
async fn uri_length(ctx: &Ctx, t: &Tally, mut pacer: Pacer) -> anyhow::Result<()> {
    let c = ctx.session(0, false).await?;
    let uri = format!("test://template/{}/data", "a".repeat(1 << 20));
    while pacer.next().await {
        match c.call("resources/read", json!({ "uri": uri })).await {
            Ok((200, m))
                if error_code(&m) == Some(-32602)
                    && m.to_string().contains("server.limits.maxUriLength") =>
            {
                t.refused()
            }
            Ok((s, m)) => t.other(format!("HTTP {s}: {m}")),
            Err(e) => t.other(format!("{e:#}")),
        }
    }
    end_all(vec![c]).await;
    Ok(())
}

/// Opens Legacy sessions until `maxSessions` (503, from several principals) or
/// `maxSessionsPerPrincipal` (429, one principal) refuses, then keeps asking for more.
async fn sessions(ctx: &Ctx, t: &Tally, mut pacer: Pacer, total: bool) -> anyhow::Result<()> {
    let l = &ctx.limits;
    let (principals, status, key) = if total {
        (l.max_sessions / l.max_sessions_per_principal + 1, 503, "maxSessions")
    } else {
        (1, 429, "maxSessionsPerPrincipal")
    };
    let mut held = Vec::new();
    let result = open_sessions(ctx, t, &mut held, principals, status, key).await;
    if let Ok(n) = result {
        while pacer.next().await {
            let mut c = ctx.aggressor(n)?;
            match c.initialize(false).await {
                Ok((200, _)) if c.has_session() => {
                    t.admitted();
                    t.hold(1);
                    held.push(c);
                }
                got => t.expect_refusal(&got, status, key),
            }
        }
    }
    end_all(held).await;
    result.map(|_| ())
}

/// Opens sessions round-robin over `principals` until the bound refuses; returns the principal
/// that was refused by it (it still has room under its own share).
async fn open_sessions(
    ctx: &Ctx,
    t: &Tally,
    held: &mut Vec<Mcp>,
    principals: usize,
    status: u16,
    key: &str,
) -> anyhow::Result<usize> {
    let mut room = vec![true; principals];
    loop {
        let mut progressed = false;
        for (n, has_room) in room.iter_mut().enumerate() {
            if !*has_room {
                continue;
            }
            let mut c = ctx.aggressor(n)?;
            let (s, msg) = c.initialize(false).await?;
            if s == 200 && c.has_session() {
                t.hold(1);
                held.push(c);
                progressed = true;
            } else if s == status && limit_of(&msg) == Some(key) {
                t.refused();
                return Ok(n);
            } else if s == 429 && limit_of(&msg) == Some("maxSessionsPerPrincipal") {
                *has_room = false;
            } else {
                t.other(format!("HTTP {s}: {msg}"));
                bail!("initialize answered HTTP {s}: {msg}");
            }
        }
        if !progressed {
            bail!("every principal is at its share and {key} was not hit");
        }
    }
}

/// Whose in-flight slots an aggressor fills.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Holders {
    /// `maxInFlight`: Modern calls of 4 principals (each within its share).
    Total,
    /// `maxInFlightPerPrincipal`: Modern calls of one principal.
    Principal,
    /// `maxInFlightPerSession`: calls in one Legacy session.
    Session,
}

/// Fills the in-flight slots with slow `fx_sleep` calls (see [`Holders`]); probes with `ping`
/// (Legacy) or `tools/list` (Modern), as the holders' principal (or a fifth one for the total).
async fn in_flight(
    ctx: &Ctx,
    t: &Arc<Tally>,
    mut pacer: Pacer,
    who: Holders,
) -> anyhow::Result<()> {
    let l = &ctx.limits;
    let (holders, status, key) = match who {
        Holders::Total => (l.max_in_flight, 503, "maxInFlight"),
        Holders::Principal => (l.max_in_flight_per_principal, 429, "maxInFlightPerPrincipal"),
        Holders::Session => (l.max_in_flight_per_session, 429, "maxInFlightPerSession"),
    };
    let total = who != Holders::Session;
    let session = if total { None } else { Some(ctx.session(0, false).await?) };
    let mut tasks = JoinSet::new();
    for i in 0..holders {
        let c = match (&session, who) {
            (Some(s), _) => s.clone(),
            (None, Holders::Principal) => ctx.aggressor(0)?,
            (None, _) => ctx.aggressor(i % 4)?,
        };
        let (t, mut stop) = (t.clone(), pacer.receiver());
        tasks.spawn(async move {
            let sleep = json!({ "name": "fx_sleep", "arguments": { "ms": HOLD_MS } });
            while !*stop.borrow() {
                match c.call("tools/call", sleep.clone()).await {
                    Ok((200, m)) if m.get("result").is_some() => {}
                    got => {
                        t.expect_refusal(&got, status, key);
                        tokio::select! {
                            _ = tokio::time::sleep(HOLDER_RETRY) => {}
                            _ = stop.changed() => {}
                        }
                    }
                }
            }
        });
    }
    t.hold(holders as i64);
    let probe = match (&session, who) {
        (Some(s), _) => s.clone(),
        (None, Holders::Principal) => ctx.aggressor(0)?,
        (None, _) => ctx.aggressor(holders)?,
    };
    let method = if total { "tools/list" } else { "ping" };
    while pacer.next().await {
        match probe.call(method, json!({})).await {
            Ok((200, m)) if m.get("result").is_some() => t.admitted(),
            got => t.expect_refusal(&got, status, key),
        }
    }
    // Dropping the holders' requests closes their connections; the gateway cancels the calls.
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    end_all(session.into_iter().collect()).await;
    Ok(())
}

/// Reads the first message of a stream (or refusal), bounded.
async fn first(ev: &mut Events) -> anyhow::Result<Value> {
    match tokio::time::timeout(FIRST_MESSAGE, ev.next()).await {
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) => bail!("HTTP {}: empty response", ev.status),
        Ok(Err(e)) => Err(e),
        Err(_) => bail!("HTTP {}: no message in {FIRST_MESSAGE:?}", ev.status),
    }
}

/// Opens `GET /mcp` streams on one session until 429 `maxStreamsPerSession`, and keeps trying.
async fn get_streams(ctx: &Ctx, t: &Tally, mut pacer: Pacer) -> anyhow::Result<()> {
    let key = "maxStreamsPerSession";
    let c = ctx.session(0, false).await?;
    let mut held = Vec::new();
    let mut hit = false;
    while !hit && !pacer.stopped() {
        if held.len() > ctx.limits.max_streams_per_session {
            t.other(format!("{} GET streams open, over the limit", held.len()));
            break;
        }
        let mut ev = c.get_stream().await?;
        if ev.status == 200 {
            t.hold(1);
            held.push(ev);
            continue;
        }
        let got = first(&mut ev).await.map(|m| (ev.status, m));
        t.expect_refusal(&got, 429, key);
        hit = got.as_ref().is_ok_and(|(s, m)| *s == 429 && limit_of(m) == Some(key));
        if !hit {
            break;
        }
    }
    while hit && pacer.next().await {
        match c.get_stream().await {
            Ok(ev) if ev.status == 200 => {
                t.admitted();
                t.hold(1);
                held.push(ev);
            }
            Ok(mut ev) => {
                let got = first(&mut ev).await.map(|m| (ev.status, m));
                t.expect_refusal(&got, 429, key);
            }
            Err(e) => t.other(format!("{e:#}")),
        }
    }
    drop(held);
    end_all(vec![c]).await;
    Ok(())
}

/// Subscribes one session to new URIs until 200 -32600 `maxSubscriptionsPerSession`, and keeps
/// subscribing new ones.
async fn subscriptions(ctx: &Ctx, t: &Tally, mut pacer: Pacer) -> anyhow::Result<()> {
    let key = "maxSubscriptionsPerSession";
    let c = ctx.session(0, false).await?;
    let mut i = 0usize;
    let subscribe = async |i: &mut usize| {
        *i += 1;
        c.call("resources/subscribe", json!({ "uri": format!("test://template/{i}/data") })).await
    };
    let mut hit = false;
    while !hit && !pacer.stopped() && i <= ctx.limits.max_subscriptions_per_session {
        match subscribe(&mut i).await {
            Ok((200, m)) if m.get("result").is_some() => t.hold(1),
            got => {
                t.expect_refusal(&got, 200, key);
                hit = got.as_ref().is_ok_and(|(_, m)| limit_of(m) == Some(key));
                if !hit {
                    break;
                }
            }
        }
    }
    while hit && pacer.next().await {
        match subscribe(&mut i).await {
            Ok((200, m)) if m.get("result").is_some() => {
                t.admitted();
                t.hold(1);
            }
            got => t.expect_refusal(&got, 200, key),
        }
    }
    end_all(vec![c]).await;
    if !hit {
        bail!("{key} was not hit after {i} subscriptions");
    }
    Ok(())
}

/// Opens `subscriptions/listen` streams until 503 `maxListenStreams` (several principals) or
/// 429 `maxListenStreamsPerPrincipal` (one), and keeps asking for more.
async fn listen(ctx: &Ctx, t: &Tally, mut pacer: Pacer, total: bool) -> anyhow::Result<()> {
    let l = &ctx.limits;
    let per_key = "maxListenStreamsPerPrincipal";
    let (principals, status, key) = if total {
        (l.max_listen_streams / l.max_listen_streams_per_principal + 1, 503, "maxListenStreams")
    } else {
        (1, 429, per_key)
    };
    let clients = (0..principals).map(|n| ctx.aggressor(n)).collect::<anyhow::Result<Vec<_>>>()?;
    let params = json!({ "notifications": { "toolsListChanged": true } });
    let open = async |c: &Mcp| -> anyhow::Result<(u16, Value, Events)> {
        let (_, mut ev) = c.start("subscriptions/listen", params.clone(), false, None).await?;
        let m = first(&mut ev).await?;
        Ok((ev.status, m, ev))
    };
    let mut held = Vec::new();
    let mut room = vec![true; principals];
    let mut hit = None;
    'open: while hit.is_none() && !pacer.stopped() {
        let mut progressed = false;
        for (n, c) in clients.iter().enumerate() {
            if !room[n] {
                continue;
            }
            let (s, m, ev) = open(c).await?;
            if s == 200 && m.get("error").is_none() {
                t.hold(1);
                held.push(ev);
                progressed = true;
            } else if s == status && limit_of(&m) == Some(key) {
                t.refused();
                hit = Some(n);
                break 'open;
            } else if total && s == 429 && limit_of(&m) == Some(per_key) {
                room[n] = false;
            } else {
                t.other(format!("HTTP {s}: {m}"));
                break 'open;
            }
        }
        if !progressed {
            break;
        }
    }
    if let Some(n) = hit {
        while pacer.next().await {
            match open(&clients[n]).await {
                Ok((200, m, ev)) if m.get("error").is_none() => {
                    t.admitted();
                    t.hold(1);
                    held.push(ev);
                }
                Ok((s, m, _)) => t.expect_refusal(&Ok((s, m)), status, key),
                Err(e) => t.other(format!("{e:#}")),
            }
        }
    }
    drop(held);
    if hit.is_none() {
        bail!("{key} was not hit");
    }
    Ok(())
}
