//! The legacy HTTP+SSE transport (protocol 2024-11-05): a long-lived GET event stream carries the
//! backend's messages; the gateway POSTs its own messages to the endpoint the stream announces.
//! Client requests share the gateway's own stream through a [`Mux`], or, with `isolation:
//! perPrincipal | perSession`, get a stream (a backend session) of their own from a
//! [`super::pool::Pool`].
//!
//! A supervisor task owns the stream. Each connection: GET with `Accept: text/event-stream`, wait
//! for the `endpoint` event, `initialize` + `notifications/initialized` over the mux (replies come
//! back as `message` events), then serve until the stream ends. Then the connection's mux is
//! closed (pending requests fail at once) and the supervisor reconnects with backoff.
//!
//! Invariants:
//! - Every POST carries credentials resolved from the [`Caller`] of the message it sends, at the
//!   moment it is sent; the background GET and the gateway's own traffic use [`Caller::System`].
//!   Nothing here stores a credential.
//! - The announced endpoint must have the SSE URL's origin, so caller credentials are only ever
//!   sent to the configured server.
//! - Requests are accepted only while connected and initialized; otherwise they fail at once with
//!   [`BackendError::Unavailable`].
//! - One `reqwest::Client` per backend, so POSTs reuse connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use reqwest::Url;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use sse_stream::{Sse, SseByteStream};
use tokio_util::sync::CancellationToken;

use super::mux::{Backoff, Mux, Outbound, Routing};
use super::pool::{Connector, Isolated, Pool, Run};
use super::{BackendError, BackendSpec, Status};
use crate::auth::Caller;
use crate::auth::outgoing::OutgoingAuth;
use crate::protocol::Message;

/// The decoded event stream of one GET.
type Events = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Sse, sse_stream::Error>> + Send>>;

/// A backend reached over legacy HTTP+SSE.
pub struct SseBackend {
    shared: Arc<Shared>,
    supervisor: super::mux::Supervisor,
    /// Which stream serves whom; dedicated streams unless `isolation: shared`.
    isolated: Isolated,
}

struct Shared {
    spec: BackendSpec,
    status: Status,
    client: reqwest::Client,
    /// The current connection's mux while it is Ready.
    conn: super::mux::Current,
    stop: CancellationToken,
}

impl SseBackend {
    /// Starts the supervisor, which connects and keeps reconnecting. Must be called inside a
    /// Tokio runtime.
    pub fn start(spec: BackendSpec) -> Self {
        // No overall timeout on the client: the GET stream is meant to stay open. POSTs get the
        // backend's timeout per request.
        // `caBundlePath`: extra roots, checked at config load.
        let builder = crate::config::ca_bundle::CaBundle::apply(
            spec.config.ca_bundle.as_ref(),
            reqwest::Client::builder(),
        );
        let client = builder.connect_timeout(spec.timeout).build().unwrap_or_default();
        let shared = Arc::new(Shared {
            spec,
            status: Status::default(),
            client,
            conn: Default::default(),
            stop: CancellationToken::new(),
        });
        let limits = &shared.spec.limits;
        let isolated = Isolated::new(shared.spec.isolation, || {
            Pool::new(
                shared.spec.name.clone(),
                Arc::new(StreamConnector { shared: shared.clone() }),
                ("operational.backendSessions.maxPerBackend", limits.max_sessions),
                limits.session_idle,
                shared.status.unroutable.clone(),
                shared.stop.child_token(),
            )
        });
        let supervisor =
            super::mux::Supervisor::spawn(shared.stop.clone(), supervise(shared.clone()));
        Self { shared, supervisor, isolated }
    }

    /// Which stream serves whom.
    pub fn isolated(&self) -> &Isolated {
        &self.isolated
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.shared.spec.name
    }

    /// The session of the current connection, shared by every client request (see [`Mux`]), or
    /// why there is none.
    pub fn mux(&self) -> Result<Arc<Mux>, BackendError> {
        self.shared.conn.ready(&self.shared.spec.name, &self.shared.status)
    }

    /// Connection status (state, server info, last error, change feed).
    pub fn status(&self) -> &Status {
        &self.shared.status
    }

    /// See [`super::Backend::shutdown`]. Closes the stream (which ends the legacy session) and
    /// stops reconnecting. Idempotent; concurrent calls all wait for the first.
    pub async fn shutdown(&self) {
        let pool = self.isolated.shutdown();
        let supervisor = self.supervisor.shutdown(&self.shared.spec.name, &self.shared.status);
        futures::join!(pool, supervisor);
    }
}

async fn supervise(shared: Arc<Shared>) {
    let mut backoff = Backoff::new();
    loop {
        let started = Instant::now();
        if let Some(reason) = run_once(&shared).await {
            tracing::warn!(backend = %shared.spec.name, %reason, "sse backend down");
            shared.status.down(reason);
        }
        if shared.stop.is_cancelled() {
            return;
        }
        let delay = backoff.delay(started.elapsed());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shared.stop.cancelled() => return,
        }
        shared.status.connecting();
    }
}

/// One connection of the gateway's own stream. Returns why it ended, or `None` when stopping.
async fn run_once(shared: &Shared) -> Option<String> {
    let routing = Routing { owner: None, unroutable: shared.status.unroutable.clone() };
    let ready = |mux: &Arc<Mux>, info: super::ServerInfo| {
        tracing::info!(backend = %shared.spec.name, version = %info.protocol_version, "sse backend ready");
        // Connection first: readers react to Ready at once and must find it.
        shared.conn.set(Some(mux.clone()));
        shared.status.ready(info);
    };
    let gone = |_: Option<&str>| shared.conn.set(None);
    run_stream(shared, routing, &shared.stop, ready, gone).await
}

/// One stream: connect, handshake (then `ready`), serve until it ends or `stop` fires; `gone` is
/// told first when it ends, then the mux is closed. Returns why it ended, or `None` when stopped.
async fn run_stream(
    shared: &Shared,
    routing: Routing,
    stop: &CancellationToken,
    ready: impl FnOnce(&Arc<Mux>, super::ServerInfo) + Send,
    gone: impl FnOnce(Option<&str>) + Send,
) -> Option<String> {
    let connect = tokio::time::timeout(shared.spec.timeout, connect(shared));
    let connected = tokio::select! {
        _ = stop.cancelled() => None,
        r = connect => Some(match r {
            Err(_) => Err(format!("no endpoint event within {:?}", shared.spec.timeout)),
            Ok(r) => r,
        }),
    };
    let (events, endpoint) = match connected {
        None => {
            gone(None);
            return None;
        }
        Some(Err(reason)) => {
            gone(Some(&reason));
            return Some(reason);
        }
        Some(Ok(connected)) => connected,
    };
    let name = &shared.spec.name;
    let outbound = PostOutbound {
        client: shared.client.clone(),
        endpoint,
        auth: shared.spec.auth.clone(),
        timeout: shared.spec.timeout,
        backend: name.clone(),
    };
    let mux =
        Arc::new(Mux::new(name.clone(), Arc::new(outbound), shared.spec.events.clone(), routing));
    let mut reader = tokio::spawn(read_events(events, (*mux).clone(), name.clone()));
    let outcome = tokio::select! {
        _ = stop.cancelled() => None,
        reason = serve(shared, &mux, ready) => Some(reason),
        reason = &mut reader => Some(reason.unwrap_or_else(|e| format!("stream reader failed: {e}"))),
    };
    // Stop routing first so new requests fail fast, then fail the pending ones.
    gone(outcome.as_deref());
    mux.close(outcome.as_deref().unwrap_or("backend shut down"));
    // Dropping the reader's stream closes the GET, which ends the legacy session.
    reader.abort();
    outcome
}

/// Runs one dedicated stream for the pool.
struct StreamConnector {
    shared: Arc<Shared>,
}

impl Connector for StreamConnector {
    fn run<'a>(&'a self, run: Run<'a>) -> BoxFuture<'a, ()> {
        let Run { routing, stop, ready, gone, .. } = run;
        Box::pin(async move {
            run_stream(&self.shared, routing, stop, |mux, _| ready(mux), gone).await;
        })
    }
}

/// Opens the event stream and waits for the `endpoint` event.
async fn connect(shared: &Shared) -> Result<(Events, Url), String> {
    let raw_url = shared.spec.config.url.as_deref().ok_or("no url configured")?;
    let url = Url::parse(raw_url).map_err(|e| format!("invalid url: {e}"))?;
    let get = shared.client.get(url.clone()).header(ACCEPT, "text/event-stream");
    let get = shared.spec.auth.apply(&Caller::System, get).await.map_err(|e| e.to_string())?;
    let response = get.send().await.map_err(|e| format!("GET: {}", e.without_url()))?;
    if !response.status().is_success() {
        return Err(format!("GET returned {}", response.status()));
    }
    // Each event is capped (`operational.maxBackendReplyBytes`): a stream must not make the
    // gateway buffer without bound.
    let capped = super::limit::sse_bytes(response, shared.spec.limits.max_reply_bytes);
    let mut events: Events = Box::pin(SseByteStream::new(capped));
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| format!("event stream: {e}"))?;
        if event.event.as_deref() != Some("endpoint") {
            continue;
        }
        let data = event.data.unwrap_or_default();
        let endpoint = url.join(data.trim()).map_err(|e| format!("invalid endpoint: {e}"))?;
        // Caller credentials go on every POST; a stream must not redirect them elsewhere.
        if endpoint.origin() != url.origin() {
            return Err(format!(
                "endpoint on another origin: {}",
                endpoint.origin().ascii_serialization()
            ));
        }
        return Ok((events, endpoint));
    }
    Err("stream ended before the endpoint event".into())
}

/// Handshake, then hand the mux to `ready` and serve until the connection ends elsewhere (this
/// never returns after a successful handshake). Returns why the handshake failed.
async fn serve(
    shared: &Shared,
    mux: &Arc<Mux>,
    ready: impl FnOnce(&Arc<Mux>, super::ServerInfo),
) -> String {
    match mux.initialize(shared.spec.timeout).await {
        Err(reason) => return reason,
        Ok(info) => ready(mux, info),
    }
    std::future::pending().await
}

/// Feeds `message` events into the mux; returns why the stream ended.
async fn read_events(mut events: Events, mux: Mux, backend: Arc<str>) -> String {
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => return format!("event stream: {e}"),
        };
        match event.event.as_deref() {
            None | Some("message") => {}
            Some(other) => {
                tracing::debug!(backend = %backend, event = other, "ignoring sse event");
                continue;
            }
        }
        let Some(data) = event.data else { continue };
        if data.trim().is_empty() {
            continue;
        }
        match Message::parse(data.as_bytes()) {
            Ok(message) => mux.handle_incoming(message),
            Err(e) => {
                tracing::warn!(backend = %backend, error = %e, "invalid message event; skipped")
            }
        }
    }
    "event stream ended".into()
}

/// Sends messages by POSTing them to the announced endpoint, with credentials for the caller of
/// each message.
struct PostOutbound {
    client: reqwest::Client,
    endpoint: Url,
    auth: OutgoingAuth,
    timeout: Duration,
    backend: Arc<str>,
}

impl Outbound for PostOutbound {
    fn send<'a>(
        &'a self,
        caller: &'a Caller,
        headers: &'a super::Forwarded,
        message: Message,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let transport = |reason: String| BackendError::Transport {
                backend: self.backend.to_string(),
                reason,
            };
            let post = self
                .client
                .post(self.endpoint.clone())
                .header(CONTENT_TYPE, "application/json")
                .timeout(self.timeout)
                .body(message.to_bytes());
            let post = super::forward_headers(post, headers);
            let post = crate::telemetry::inject(post);
            let post = self.auth.apply(caller, post).await?;
            // `without_url`: the endpoint's query names the session; keep it out of errors.
            let response =
                post.send().await.map_err(|e| transport(format!("POST: {}", e.without_url())))?;
            let status = response.status();
            // Read the (small) body so the connection goes back to the pool.
            let _ = response.bytes().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(transport(format!("POST returned {status}")))
            }
        })
    }
}
