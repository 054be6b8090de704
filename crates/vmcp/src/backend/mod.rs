//! Backends: the MCP servers behind the gateway, and the transports that reach them.
//!
//! Each backend is one [`Backend`] whatever its transport. Transports:
//! - [`streamable_http`]: MCP Streamable HTTP, either era (probed with `server/discover`, falling
//!   back to `initialize`);
//! - [`sse`]: legacy HTTP+SSE (a GET event stream plus POSTs to the announced endpoint);
//! - [`stdio`]: one child process per backend, shared by every client session.
//!
//! The two message-stream transports (SSE and stdio) share [`mux`], which rewrites request ids and
//! progress tokens so many client requests can share one backend session.
//!
//! Invariants:
//! - Every operation that reaches a backend takes the [`Caller`] of the client request behind it;
//!   no transport stores credentials.
//! - A backend call never re-runs `initialize`; sessions and connections are reused.
//! - Dropping a request future before it completes cancels the request at the backend
//!   (`notifications/cancelled`).

pub mod health;
pub mod limit;
pub mod mux;
pub mod pool;
pub mod probe;
pub mod registry;
pub mod sse;
pub mod stdio;
pub mod streamable_http;

pub use crate::auth::outgoing::OutgoingAuth;
pub use streamable_http::ListenError;

use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::auth::Caller;
use crate::protocol::{Era, ErrorObject, Message, Notification};

/// Longest wait between two reconnect attempts (or stdio restarts) of a backend that is down: a
/// backend that comes back after a long outage is back in service within about this long.
/// Attempts are cheap (a refused TCP connect, or a process spawn).
pub const RECONNECT_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// What a backend said about itself when the gateway connected.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// Negotiated protocol version.
    pub protocol_version: String,
    /// The era that version belongs to.
    pub era: Era,
    /// `capabilities` object.
    pub capabilities: serde_json::Value,
    /// `serverInfo` (`name`, `version`, ...).
    pub server_info: serde_json::Value,
    /// `instructions`, if any.
    pub instructions: Option<String>,
}

/// Per-request context: where the backend's in-flight messages for this request go, and the
/// client's protocol metadata for Modern backends.
pub struct CallContext {
    /// Notifications related to this request (progress, logging) and server-to-client requests
    /// (sampling, elicitation, roots) the backend sends while serving it. A server-to-client
    /// request keeps the backend's id; answer it with [`Backend::respond`].
    pub events: mpsc::Sender<Message>,
    /// The client's `_meta` protocol fields (protocol version, capabilities, client info, log
    /// level), merged into the request for Modern backends. `None` uses the gateway's defaults.
    pub client_meta: Option<serde_json::Map<String, serde_json::Value>>,
    /// For `tools/call`: the called tool's input schema, whose `x-mcp-header` annotations name the
    /// `Mcp-Param-*` headers a Modern backend expects.
    pub tool_schema: Option<std::sync::Arc<serde_json::Value>>,
    /// The Legacy client session behind this request (its number, not its id), so transports
    /// that keep a backend session per client session use that client's.
    pub session: Option<u64>,
    /// Client headers on the `passthroughHeaders` allow-list, for HTTP backends.
    pub headers: Forwarded,
}

/// Client headers forwarded to a backend (already filtered by `passthroughHeaders`).
pub type Forwarded = std::sync::Arc<[(http::HeaderName, http::HeaderValue)]>;

/// Adds forwarded client headers to an outgoing request (before credentials, which win).
pub fn forward_headers(
    mut request: reqwest::RequestBuilder,
    headers: &Forwarded,
) -> reqwest::RequestBuilder {
    for (name, value) in headers.iter() {
        request = request.header(name, value);
    }
    request
}

impl CallContext {
    /// A context sending this request's messages to `events`.
    pub fn new(events: mpsc::Sender<Message>) -> Self {
        Self {
            events,
            client_meta: None,
            tool_schema: None,
            session: None,
            headers: Forwarded::from([]),
        }
    }

    /// A context whose events are dropped (discovery, lists).
    pub fn detached() -> Self {
        let (events, _) = mpsc::channel(1);
        Self::new(events)
    }
}

/// A backend's answer to a request.
#[derive(Debug)]
pub enum Reply {
    /// `result`, raw.
    Result(Box<RawValue>),
    /// A JSON-RPC error from the backend.
    Error(ErrorObject),
}

/// Why a request could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend is down or not yet connected.
    #[error("backend {backend} is unavailable: {reason}")]
    Unavailable {
        /// Backend name.
        backend: String,
        /// Why.
        reason: String,
    },
    /// Transport failure mid-request (connection reset, process exited, bad framing).
    #[error("backend {backend}: {reason}")]
    Transport {
        /// Backend name.
        backend: String,
        /// What happened.
        reason: String,
    },
    /// Outgoing credentials could not be resolved.
    #[error(transparent)]
    Auth(#[from] crate::auth::outgoing::OutgoingAuthError),
    /// vmcp ran out of a local resource (file descriptors, buffers, memory) for this request.
    /// Says nothing about the backend: it fails this request only and never counts against the
    /// backend's health.
    #[error("backend {backend}: {reason}")]
    Exhausted {
        /// Backend name.
        backend: String,
        /// What ran out.
        reason: String,
    },
    /// The backend refused the credentials a session was opened with (HTTP 401 or 403 to
    /// `initialize` or `server/discover`).
    #[error("backend {backend} refused the credentials (HTTP {status})")]
    Refused {
        /// Backend name.
        backend: String,
        /// 401 or 403.
        status: u16,
    },
}

impl BackendError {
    /// The HTTP status a transport error reports (`HTTP 502 Bad Gateway`), if any.
    pub fn http_status(&self) -> Option<u16> {
        let BackendError::Transport { reason, .. } = self else { return None };
        reason.strip_prefix("HTTP ")?.get(..3)?.parse().ok()
    }

    /// Whether this failure says the backend is in trouble (and so counts against its health):
    /// a transport failure (connection, framing, HTTP 5xx, timeout). Not an HTTP 4xx (about the
    /// request or its credentials), not "unavailable" (the gateway is not connected, or out of
    /// room for another session: nothing was sent), not a credential failure (the caller's).
    pub fn counts_against_health(&self) -> bool {
        matches!(self, BackendError::Transport { .. })
            && !self.http_status().is_some_and(|s| (400..500).contains(&s))
    }

    /// Whether the transport gave up because the request took too long.
    pub fn is_timeout(&self) -> bool {
        matches!(self, BackendError::Transport { reason, .. } if reason.starts_with("timed out"))
    }
}

/// Connection state, for `/status` and routing decisions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Connecting for the first time or after a failure.
    Connecting,
    /// Connected and initialized.
    Ready,
    /// Down; retried with backoff.
    Down,
    /// Shut down by the gateway.
    Stopped,
}

/// Backend-level notifications not tied to any request (list_changed, resources/updated,
/// logging), fanned out by the gateway.
pub type EventSender = tokio::sync::broadcast::Sender<BackendEvent>;

/// A backend-level notification, tagged with the backend it came from.
#[derive(Debug, Clone)]
pub struct BackendEvent {
    /// Backend name.
    pub backend: std::sync::Arc<str>,
    /// The client session whose backend session it came on; `None` for shared sessions.
    pub session: Option<u64>,
    /// The principal whose backend session, child or stream it came on; `None` when it is
    /// shared by all. Only that principal's sessions may receive it.
    pub principal: Option<crate::auth::Binding>,
    /// The notification as the backend sent it.
    pub notification: Notification,
}

/// Who shares a message-stream backend's session, by its isolation mode.
fn isolated_scope(mode: crate::config::Isolation, session: Option<u64>) -> SessionScope {
    use crate::config::Isolation;
    match (mode, session) {
        (Isolation::Shared, _) => SessionScope::Shared,
        (Isolation::PerSession, Some(_)) => SessionScope::Client,
        (Isolation::PerPrincipal | Isolation::PerSession, _) => SessionScope::Principal,
    }
}

/// Who shares the backend session a request runs on (see [`Backend::session_scope`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionScope {
    /// The client session's own.
    Client,
    /// Its principal's: every client of that principal.
    Principal,
    /// Everyone's.
    Shared,
    /// No backend session: a Modern backend, stateless.
    Stateless,
}

/// See [`Backend::kind`].
enum Kind<'a> {
    Http(&'a streamable_http::HttpBackend),
    Stream(&'a str, Result<std::sync::Arc<mux::Mux>, BackendError>, &'a pool::Isolated),
}

/// A connected backend, whatever its transport.
pub enum Backend {
    /// Streamable HTTP.
    Http(streamable_http::HttpBackend),
    /// Legacy HTTP+SSE.
    Sse(sse::SseBackend),
    /// Child process.
    Stdio(stdio::StdioBackend),
}

impl Backend {
    /// Sends a request and waits for its reply. Messages the backend sends while serving it go to
    /// `ctx.events`. Dropping the future cancels the request at the backend.
    pub async fn request(
        &self,
        caller: &Caller,
        method: &str,
        params: Option<Box<RawValue>>,
        ctx: CallContext,
    ) -> Result<Reply, BackendError> {
        // A client span around the request (within a client request only); the transports
        // send its `traceparent` (`telemetry::inject`).
        crate::telemetry::backend_call(method, async move {
            let (_, shared, isolated) = match self.kind() {
                Kind::Http(b) => return b.request(caller, method, params, ctx).await,
                Kind::Stream(name, shared, isolated) => (name, shared, isolated),
            };
            let mux = isolated.mux_for(shared, caller, ctx.session).await?;
            mux.request(caller, method, params, ctx).await
        })
        .await
    }

    /// Sends a notification (on the backend session of client session `session`, where the
    /// transport keeps one per client).
    pub async fn notify(
        &self,
        caller: &Caller,
        session: Option<u64>,
        method: &str,
        params: Option<Box<RawValue>>,
    ) -> Result<(), BackendError> {
        let (shared, isolated) = match self.kind() {
            Kind::Http(b) => return b.notify(caller, session, method, params).await,
            Kind::Stream(_, shared, isolated) => (shared, isolated),
        };
        match isolated.mux_existing(|| shared, caller, session)? {
            Some(mux) => mux.notify(caller, method, params).await,
            // No connection runs for this client: nothing there to tell.
            None => Ok(()),
        }
    }

    /// Answers a server-to-client request the backend sent (its id is the backend's own) on the
    /// backend session it came from.
    pub async fn respond(
        &self,
        caller: &Caller,
        session: Option<u64>,
        response: Message,
    ) -> Result<(), BackendError> {
        let (name, shared, isolated) = match self.kind() {
            Kind::Http(b) => return b.respond(caller, session, response).await,
            Kind::Stream(name, shared, isolated) => (name, shared, isolated),
        };
        match isolated.mux_existing(|| shared, caller, session)? {
            Some(mux) => mux.respond(caller, response).await,
            None => Err(BackendError::Unavailable {
                backend: name.to_owned(),
                reason: "the connection that asked has ended".into(),
            }),
        }
    }

    /// How requests reach the backend: an HTTP backend pools its sessions its own way; a stdio
    /// or SSE backend is its name, its own connection (or why there is none) and which
    /// connection serves whom.
    fn kind(&self) -> Kind<'_> {
        match self {
            Backend::Http(b) => Kind::Http(b),
            Backend::Stdio(b) => Kind::Stream(b.name(), b.mux(), b.isolated()),
            Backend::Sse(b) => Kind::Stream(b.name(), b.mux(), b.isolated()),
        }
    }

    /// What the backend said at connect; `None` while not connected.
    pub fn info(&self) -> Option<ServerInfo> {
        self.status().get().info.map(|i| (*i).clone())
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.status().get().state
    }

    /// The server info as a request by `caller` sees it: a backend that waits for a user's
    /// credentials to connect ([`Status::awaiting_user`]) connects with `caller`'s now.
    pub async fn info_as(&self, caller: &Caller) -> Result<Option<ServerInfo>, BackendError> {
        match self {
            Backend::Http(b) => b.info_as(caller).await,
            _ => Ok(self.info()),
        }
    }

    /// The last connection error, for `/status`.
    pub fn last_error(&self) -> Option<String> {
        self.status().get().last_error
    }

    /// Waits until the backend is ready or `State::Down` after its first attempt.
    pub async fn first_attempt(&self) {
        self.status().first_attempt().await
    }

    /// Adds (`on`) or removes a resource URI on the notification stream of a Modern backend
    /// (2026-07-28 has no `resources/subscribe`), as `caller`: on a backend whose credentials are
    /// the user's, each principal's URIs go on a stream of its own, and the answer says whether
    /// the backend accepted them. Other backends ignore it.
    pub async fn listen_resource(
        &self,
        caller: &Caller,
        uri: &str,
        on: bool,
    ) -> Result<(), streamable_http::ListenError> {
        match self {
            Backend::Http(b) => b.listen_resource(caller, uri, on).await,
            _ => Ok(()),
        }
    }

    /// Principals holding a subscription stream of their own at a Modern HTTP backend.
    pub fn principal_listens(&self) -> Option<usize> {
        match self {
            Backend::Http(b) => Some(b.principal_listens()),
            _ => None,
        }
    }

    /// Whether this backend's outgoing credentials are the caller's own (HTTP transports).
    pub fn user_bound(&self) -> bool {
        match self {
            Backend::Http(b) => b.user_bound(),
            _ => false,
        }
    }

    /// Ends the backend session serving client session `session`, if the transport keeps one.
    /// `caller` is the principal's current caller (`Caller::Teardown`), never a stored one.
    pub async fn end_session(&self, caller: &Caller, session: u64) {
        match self {
            Backend::Http(b) => b.end_session(caller, session).await,
            Backend::Stdio(b) => b.isolated().end_session(session),
            Backend::Sse(b) => b.isolated().end_session(session),
        }
    }

    /// For stdio: the isolation mode and the number of dedicated children, for `/status`.
    pub fn isolation(&self) -> Option<serde_json::Value> {
        let (mode, dedicated, in_flight) = match self {
            Backend::Stdio(b) => b.isolated().report(b.mux().ok().as_ref()),
            Backend::Sse(b) => b.isolated().report(b.mux().ok().as_ref()),
            Backend::Http(_) => return None,
        };
        // `clientProcesses`: dedicated children (stdio) or streams (SSE).
        Some(serde_json::json!({
            "mode": mode,
            "clientProcesses": dedicated,
            "inFlight": in_flight,
        }))
    }

    /// Whose backend session serves requests of a client session `session` (`None`: a Modern
    /// client), and so where state such a client sets at the backend (log level, resource
    /// subscriptions) lives.
    pub fn session_scope(&self, session: Option<u64>) -> SessionScope {
        match self {
            Backend::Http(b) if b.status().get().info.is_some_and(|i| i.era == Era::Modern) => {
                SessionScope::Stateless
            }
            Backend::Http(_) if session.is_some() => SessionScope::Client,
            Backend::Http(_) => SessionScope::Principal,
            Backend::Sse(b) => isolated_scope(b.isolated().mode(), session),
            Backend::Stdio(b) => isolated_scope(b.isolated().mode(), session),
        }
    }

    /// The transport's config name.
    pub fn transport_name(&self) -> &'static str {
        match self {
            Backend::Http(_) => "streamable-http",
            Backend::Sse(_) => "sse",
            Backend::Stdio(_) => "stdio",
        }
    }

    /// A feed of status changes.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<Snapshot> {
        self.status().subscribe()
    }

    /// The transport's connection status.
    pub fn status(&self) -> &Status {
        match self {
            Backend::Http(b) => b.status(),
            Backend::Sse(b) => b.status(),
            Backend::Stdio(b) => b.status(),
        }
    }

    /// Stops the backend: ends its session, kills its process (TERM, then KILL).
    pub async fn shutdown(&self) {
        match self {
            Backend::Http(b) => b.shutdown().await,
            Backend::Sse(b) => b.shutdown().await,
            Backend::Stdio(b) => b.shutdown().await,
        }
    }
}

/// Everything a transport needs to start: the backend's config and the gateway-wide pieces.
#[derive(Debug, Clone)]
pub struct BackendSpec {
    /// Backend name.
    pub name: std::sync::Arc<str>,
    /// Its configuration.
    pub config: crate::config::BackendConfig,
    /// Per-request timeout (applied by the gateway around each request; transports use it for
    /// connect and handshake).
    pub timeout: std::time::Duration,
    /// Outgoing authentication for HTTP transports.
    pub auth: crate::auth::outgoing::OutgoingAuth,
    /// Where backend-level notifications go.
    pub events: EventSender,
    /// stdio: which clients share a child process (resolved: config or the auth-based default).
    pub isolation: crate::config::Isolation,
    /// Reply size and session limits (HTTP transports).
    pub limits: limit::BackendLimits,
}

/// Connection status shared between a transport's tasks and readers. Cheap to read.
#[derive(Debug)]
pub struct Status {
    tx: tokio::sync::watch::Sender<Snapshot>,
    /// Messages from the backend dropped (or server-to-client requests refused) because the
    /// client request they belong to could not be known for certain (see [`mux`]).
    pub unroutable: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// One reading of a backend's status.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// State.
    pub state: State,
    /// What the backend said at connect, while connected (shared: every request reads it).
    pub info: Option<std::sync::Arc<ServerInfo>>,
    /// Last connection or transport error.
    pub last_error: Option<String>,
    /// Connection attempts so far.
    pub attempts: u32,
}

impl Default for Status {
    fn default() -> Self {
        let (tx, _) = tokio::sync::watch::channel(Snapshot {
            state: State::Connecting,
            info: None,
            last_error: None,
            attempts: 0,
        });
        Self { tx, unroutable: Default::default() }
    }
}

impl Status {
    /// Records a successful connect.
    pub fn ready(&self, info: ServerInfo) {
        self.tx.send_modify(|s| {
            s.state = State::Ready;
            s.info = Some(std::sync::Arc::new(info));
            s.attempts += 1;
        });
    }

    /// Records that the backend refused the gateway's own connection for want of a user's
    /// credentials: it is up (ready) but its server info is learned with its first user's
    /// request.
    pub fn awaiting_user(&self, why: impl Into<String>) {
        let why = why.into();
        self.tx.send_modify(|s| {
            if s.state != State::Stopped {
                s.state = State::Ready;
            }
            s.info = None;
            s.last_error = Some(why);
            s.attempts += 1;
        });
    }

    /// Records a failed connect or a lost connection.
    pub fn down(&self, error: impl Into<String>) {
        let error = error.into();
        self.tx.send_modify(|s| {
            if s.state != State::Stopped {
                s.state = State::Down;
            }
            s.info = None;
            s.last_error = Some(error);
            s.attempts += 1;
        });
    }

    /// Records that a reconnect is under way.
    pub fn connecting(&self) {
        self.tx.send_modify(|s| {
            if s.state != State::Stopped {
                s.state = State::Connecting;
            }
        });
    }

    /// Records shutdown.
    pub fn stopped(&self) {
        self.tx.send_modify(|s| {
            s.state = State::Stopped;
            s.info = None;
        });
    }

    /// The current reading.
    pub fn get(&self) -> Snapshot {
        self.tx.borrow().clone()
    }

    /// Waits until the first connection attempt has finished, either way.
    pub async fn first_attempt(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|s| s.attempts > 0 || s.state == State::Stopped).await;
    }

    /// How many messages were dropped for want of a certain owner.
    pub fn unroutable(&self) -> u64 {
        self.unroutable.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits for the next change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Snapshot> {
        self.tx.subscribe()
    }
}

/// Params of the `initialize` request the gateway sends to Legacy backends. The gateway declares
/// the client capabilities it can relay to its own clients.
pub fn initialize_params() -> Box<RawValue> {
    crate::protocol::jsonrpc::raw(&serde_json::json!({
        "protocolVersion": crate::protocol::LATEST_LEGACY_VERSION,
        "capabilities": { "sampling": {}, "elicitation": {}, "roots": { "listChanged": true } },
        "clientInfo": { "name": "vmcp", "version": env!("CARGO_PKG_VERSION") },
    }))
}

/// Reads an `initialize` result.
pub fn parse_initialize_result(result: &RawValue) -> Result<ServerInfo, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Init {
        protocol_version: String,
        #[serde(default)]
        capabilities: serde_json::Value,
        #[serde(default)]
        server_info: serde_json::Value,
        #[serde(default)]
        instructions: Option<String>,
    }
    let init: Init = serde_json::from_str(result.get())
        .map_err(|e| format!("invalid initialize result: {e}"))?;
    Ok(ServerInfo {
        era: Era::of(&init.protocol_version),
        protocol_version: init.protocol_version,
        capabilities: init.capabilities,
        server_info: init.server_info,
        instructions: init.instructions,
    })
}
