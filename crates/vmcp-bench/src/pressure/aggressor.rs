//! What every aggressor shares: the bounds, the context (gateway URL, tokens, limits), the tally
//! of what the gateway answered, and the paced probe loop that keeps a bound hit.
//!
//! An aggressor first takes what the bound allows (sessions, streams, slow calls, ...) until the
//! gateway refuses, then probes at `rate` per second until told to stop, counting each documented
//! refusal and anything else it was answered. It ends what it holds before returning.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use super::client::{Mcp, limit_of, short};
use crate::idp::LocalIdp;

/// Error samples kept per scenario.
const SAMPLES: usize = 5;

/// The bounds the pressure run hits, in the order it hits them.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Bound {
    #[value(name = "maxUriLength")]
    UriLength,
    #[value(name = "maxSessions")]
    Sessions,
    #[value(name = "maxSessionsPerPrincipal")]
    SessionsPerPrincipal,
    #[value(name = "maxInFlight")]
    InFlight,
    #[value(name = "maxInFlightPerPrincipal")]
    InFlightPerPrincipal,
    #[value(name = "maxInFlightPerSession")]
    InFlightPerSession,
    #[value(name = "maxStreamsPerSession")]
    StreamsPerSession,
    #[value(name = "maxSubscriptionsPerSession")]
    SubscriptionsPerSession,
    #[value(name = "maxListenStreams")]
    ListenStreams,
    #[value(name = "maxListenStreamsPerPrincipal")]
    ListenStreamsPerPrincipal,
    #[value(name = "maxPendingRelaysPerSession")]
    PendingRelaysPerSession,
    #[value(name = "maxPendingRelays")]
    PendingRelays,
    #[value(name = "maxParkedCallsPerPrincipal")]
    ParkedCallsPerPrincipal,
    #[value(name = "maxParkedCalls")]
    ParkedCalls,
}

impl Bound {
    pub const ALL: [Bound; 14] = [
        Bound::UriLength,
        Bound::Sessions,
        Bound::SessionsPerPrincipal,
        Bound::InFlight,
        Bound::InFlightPerPrincipal,
        Bound::InFlightPerSession,
        Bound::StreamsPerSession,
        Bound::SubscriptionsPerSession,
        Bound::ListenStreams,
        Bound::ListenStreamsPerPrincipal,
        Bound::PendingRelaysPerSession,
        Bound::PendingRelays,
        Bound::ParkedCallsPerPrincipal,
        Bound::ParkedCalls,
    ];

    /// The `server.limits` key.
    pub fn key(self) -> &'static str {
        match self {
            Bound::UriLength => "maxUriLength",
            Bound::Sessions => "maxSessions",
            Bound::SessionsPerPrincipal => "maxSessionsPerPrincipal",
            Bound::InFlight => "maxInFlight",
            Bound::InFlightPerPrincipal => "maxInFlightPerPrincipal",
            Bound::InFlightPerSession => "maxInFlightPerSession",
            Bound::StreamsPerSession => "maxStreamsPerSession",
            Bound::SubscriptionsPerSession => "maxSubscriptionsPerSession",
            Bound::ListenStreams => "maxListenStreams",
            Bound::ListenStreamsPerPrincipal => "maxListenStreamsPerPrincipal",
            Bound::PendingRelaysPerSession => "maxPendingRelaysPerSession",
            Bound::PendingRelays => "maxPendingRelays",
            Bound::ParkedCallsPerPrincipal => "maxParkedCallsPerPrincipal",
            Bound::ParkedCalls => "maxParkedCalls",
        }
    }

    /// What the aggressor does, for the report.
    pub fn attack(self) -> &'static str {
        match self {
            Bound::UriLength => "`resources/read` of a 1 MiB URI, repeatedly",
            Bound::Sessions => "`initialize` from 5 principals until 503",
            Bound::SessionsPerPrincipal => "`initialize` from 1 principal until 429",
            Bound::InFlight => "`fx_sleep` 2 s calls (Modern, 4 principals) filling every slot",
            Bound::InFlightPerPrincipal => {
                "`fx_sleep` 2 s calls (Modern, 1 principal) filling its share"
            }
            Bound::InFlightPerSession => "`fx_sleep` 2 s calls filling one session",
            Bound::StreamsPerSession => "`GET /mcp` streams on one session until 429",
            Bound::SubscriptionsPerSession => "`resources/subscribe` of new URIs in one session",
            Bound::ListenStreams => "`subscriptions/listen` from 6 principals until 503",
            Bound::ListenStreamsPerPrincipal => "`subscriptions/listen` from 1 principal until 429",
            Bound::PendingRelaysPerSession => "sampling calls never answered, one session",
            Bound::PendingRelays => "sampling calls never answered, 5 sessions",
            Bound::ParkedCallsPerPrincipal => "Modern sampling calls parked, 1 principal",
            Bound::ParkedCalls => "Modern sampling calls parked, 5 principals",
        }
    }

    /// The documented answer to a refused request (docs/operations.md#limits).
    pub fn expected(self) -> &'static str {
        match self {
            Bound::UriLength => "200, -32602",
            Bound::Sessions | Bound::InFlight | Bound::ListenStreams => "503, -32600",
            Bound::SessionsPerPrincipal
            | Bound::InFlightPerPrincipal
            | Bound::InFlightPerSession
            | Bound::StreamsPerSession
            | Bound::ListenStreamsPerPrincipal => "429, -32600",
            Bound::SubscriptionsPerSession => "200, -32600",
            Bound::PendingRelaysPerSession | Bound::PendingRelays => {
                "backend gets -32601 naming the key"
            }
            Bound::ParkedCallsPerPrincipal | Bound::ParkedCalls => "200, -32600",
        }
    }
}

/// The limits the generated config sets.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub max_uri_length: usize,
    pub max_sessions: usize,
    pub max_sessions_per_principal: usize,
    pub max_in_flight: usize,
    pub max_in_flight_per_principal: usize,
    pub max_in_flight_per_session: usize,
    pub max_streams_per_session: usize,
    pub max_subscriptions_per_session: usize,
    pub max_listen_streams: usize,
    pub max_listen_streams_per_principal: usize,
    pub max_pending_relays_per_session: usize,
    pub max_pending_relays: usize,
    pub max_parked_calls_per_principal: usize,
    pub max_parked_calls: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_uri_length: 8192,
            max_sessions: 200,
            max_sessions_per_principal: 50,
            max_in_flight: 64,
            max_in_flight_per_principal: 16,
            max_in_flight_per_session: 8,
            max_streams_per_session: 2,
            max_subscriptions_per_session: 16,
            max_listen_streams: 50,
            max_listen_streams_per_principal: 10,
            max_pending_relays_per_session: 4,
            max_pending_relays: 16,
            max_parked_calls_per_principal: 4,
            max_parked_calls: 16,
        }
    }
}

impl Limits {
    /// The value of `bound`.
    pub fn of(&self, bound: Bound) -> usize {
        match bound {
            Bound::UriLength => self.max_uri_length,
            Bound::Sessions => self.max_sessions,
            Bound::SessionsPerPrincipal => self.max_sessions_per_principal,
            Bound::InFlight => self.max_in_flight,
            Bound::InFlightPerPrincipal => self.max_in_flight_per_principal,
            Bound::InFlightPerSession => self.max_in_flight_per_session,
            Bound::StreamsPerSession => self.max_streams_per_session,
            Bound::SubscriptionsPerSession => self.max_subscriptions_per_session,
            Bound::ListenStreams => self.max_listen_streams,
            Bound::ListenStreamsPerPrincipal => self.max_listen_streams_per_principal,
            Bound::PendingRelaysPerSession => self.max_pending_relays_per_session,
            Bound::PendingRelays => self.max_pending_relays,
            Bound::ParkedCallsPerPrincipal => self.max_parked_calls_per_principal,
            Bound::ParkedCalls => self.max_parked_calls,
        }
    }

    /// The `server.limits` block of the config.
    pub fn yaml(&self) -> String {
        let mut s = String::from("server:\n  limits:\n");
        for b in Bound::ALL {
            s.push_str(&format!("    {}: {}\n", b.key(), self.of(b)));
        }
        s
    }
}

/// What an aggressor's requests were answered with.
#[derive(Default)]
pub struct Tally {
    /// What the aggressor holds now (sessions, streams, calls in flight, relays, parked calls).
    pub held: AtomicI64,
    /// Documented refusals of the bound.
    pub refusals: AtomicU64,
    /// Requests the gateway admitted after the bound was first hit (a slot came free).
    pub admitted: AtomicU64,
    /// Any other answer (wrong status or error, transport failure).
    pub unexpected: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Tally {
    pub fn refused(&self) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
    }

    pub fn admitted(&self) {
        self.admitted.fetch_add(1, Ordering::Relaxed);
    }

    pub fn hold(&self, n: i64) {
        self.held.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts an unexpected answer and keeps a sample of it.
    pub fn other(&self, what: impl std::fmt::Display) {
        self.unexpected.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut s) = self.samples.lock()
            && s.len() < SAMPLES
        {
            s.push(short(&what.to_string()));
        }
    }

    pub fn samples(&self) -> Vec<String> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Classifies a reply that should be a refusal of `key` with HTTP `status`.
    pub fn expect_refusal(&self, got: &anyhow::Result<(u16, Value)>, status: u16, key: &str) {
        match got {
            Ok((s, msg)) if *s == status && limit_of(msg) == Some(key) => self.refused(),
            Ok((s, msg)) => self.other(format!("HTTP {s}: {msg}")),
            Err(e) => self.other(format!("{e:#}")),
        }
    }
}

/// What each scenario gets.
pub struct Ctx {
    pub url: String,
    pub http: reqwest::Client,
    pub idp: Arc<LocalIdp>,
    pub limits: Limits,
    /// Probes per second, once the bound is hit.
    pub rate: u32,
}

impl Ctx {
    /// A client for the aggressor principal `aggressor-<n>`.
    pub fn aggressor(&self, n: usize) -> anyhow::Result<Mcp> {
        let token = self.idp.token(&format!("aggressor-{n}"))?;
        Ok(Mcp::new(&self.http, &self.url, Some(token)))
    }

    /// A Legacy session of `aggressor-<n>`; an error if it is refused.
    pub async fn session(&self, n: usize, sampling: bool) -> anyhow::Result<Mcp> {
        let mut c = self.aggressor(n)?;
        let (status, msg) = c.initialize(sampling).await?;
        if status != 200 || !c.has_session() {
            anyhow::bail!("initialize of aggressor-{n}: HTTP {status}: {msg}");
        }
        Ok(c)
    }
}

/// Paces probes at `rate` per second until the run is told to stop.
pub struct Pacer {
    tick: tokio::time::Interval,
    stop: watch::Receiver<bool>,
}

impl Pacer {
    pub fn new(rate: u32, stop: watch::Receiver<bool>) -> Pacer {
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Pacer { tick, stop }
    }

    /// Waits for the next probe's turn; `false` once the run is told to stop.
    pub async fn next(&mut self) -> bool {
        if *self.stop.borrow() {
            return false;
        }
        tokio::select! {
            changed = self.stop.changed() => changed.is_ok() && !*self.stop.borrow(),
            _ = self.tick.tick() => !*self.stop.borrow(),
        }
    }

    /// The stop signal, for tasks of the aggressor.
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }

    /// Whether the run was told to stop.
    pub fn stopped(&self) -> bool {
        *self.stop.borrow()
    }
}

/// Ends Legacy sessions (best effort: the gateway also ends them at shutdown).
pub async fn end_all(sessions: Vec<Mcp>) {
    let deletes = sessions.into_iter().map(|mut c| async move { c.delete().await });
    let mut set = tokio::task::JoinSet::new();
    for d in deletes {
        set.spawn(d);
    }
    while set.join_next().await.is_some() {}
}
