//! The multiplexer shared by the message-stream transports (stdio and legacy SSE): many client
//! requests share one backend session, and replies come back asynchronously on one stream.
//!
//! One [`Mux`] lives for exactly one connection (one child process, one SSE stream). The transport
//! gives it an [`Outbound`] to send messages with and feeds it every message read from the
//! connection through [`Mux::handle_incoming`]; when the connection dies it calls [`Mux::close`].
//!
//! Invariants:
//! - Outgoing request ids are the mux's own (a counter); the backend never sees a client id, so
//!   requests from different clients cannot collide.
//! - A `progressToken` in `params._meta` is replaced by a token unique to the request, and the
//!   original is restored on the `notifications/progress` delivered to that request.
//! - Every pending request ends: with the backend's reply, with [`BackendError::Transport`] when
//!   the connection closes, or by its future being dropped, which removes the entry and sends
//!   `notifications/cancelled` to the backend.
//! - Every pending request records its [`Owner`] (principal and client session). A notification
//!   or server-to-client request without a progress token goes to the request it belongs to only
//!   when that is certain ([`Mux`] `attribute`): the single request in flight, or several that
//!   all belong to one client session. Otherwise it is dropped (a request is refused, so the
//!   backend never waits) and counted in `Status::unroutable`; it is never guessed or broadcast
//!   across sessions or principals.
//! - Every server-to-client request gets an answer: `ping` is answered here; others go to the
//!   request they belong to, or are refused with "method not found".
//! - The reader never blocks on a slow consumer: deliveries use `try_send`.
//! - The pending map sits behind a `std::sync::Mutex` that is only held for map operations, never
//!   across an await.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use super::{
    BackendError, BackendEvent, CallContext, EventSender, Forwarded, Reply, ServerInfo,
    initialize_params, parse_initialize_result,
};
use crate::auth::{Binding, Caller};
use crate::protocol::jsonrpc::{code, raw};
use crate::protocol::{ErrorObject, ErrorResponse, Id, Message, Notification, Request, Response};

/// Prefix of the progress tokens the mux puts on outgoing requests; the rest is the mux's id.
const TOKEN_PREFIX: &str = "vmcp-progress-";

/// How a transport puts one message on the wire.
///
/// `caller` is the identity of the client request behind the message ([`Caller::System`] for the
/// mux's own traffic: handshake, `ping` answers, refusals). Transports that attach credentials
/// must resolve them from it on every call and never keep them.
pub trait Outbound: Send + Sync + 'static {
    /// Sends one message. An error means the message did not reach the backend.
    fn send<'a>(
        &'a self,
        caller: &'a Caller,
        headers: &'a Forwarded,
        message: Message,
    ) -> BoxFuture<'a, Result<(), BackendError>>;
}

/// No forwarded headers: the mux's own traffic, notifications and responses.
fn none() -> Forwarded {
    Forwarded::from([])
}

/// The task that keeps a message-stream backend connected, and its stop signal.
pub struct Supervisor {
    stop: tokio_util::sync::CancellationToken,
    /// Taken by the first `shutdown`, which waits for the task to finish.
    handle: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Supervisor {
    /// Spawns `task`, which must return once `stop` is cancelled.
    pub fn spawn(
        stop: tokio_util::sync::CancellationToken,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        Self { stop, handle: tokio::sync::Mutex::new(Some(tokio::spawn(task))) }
    }

    /// Stops the task and waits for it (it cleans up on the way out), then records the stop.
    /// Idempotent; concurrent calls all wait for the first.
    pub async fn shutdown(&self, backend: &str, status: &super::Status) {
        self.stop.cancel();
        let mut handle = self.handle.lock().await;
        if let Some(h) = handle.take()
            && let Err(e) = h.await
        {
            tracing::warn!(backend, error = %e, "backend supervisor failed");
        }
        status.stopped();
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Without an explicit shutdown the task still stops and cleans up.
        self.stop.cancel();
    }
}

/// The mux of a message-stream backend's current connection, present while it is ready.
#[derive(Default)]
pub struct Current {
    conn: arc_swap::ArcSwapOption<Mux>,
}

impl Current {
    /// Sets (a new connection is ready) or clears (it is gone) the current mux.
    pub fn set(&self, mux: Option<Arc<Mux>>) {
        self.conn.store(mux);
    }

    /// The current mux, or why there is none (from `status`), as the error a caller gets.
    pub fn ready(&self, backend: &str, status: &super::Status) -> Result<Arc<Mux>, BackendError> {
        self.conn.load_full().ok_or_else(|| {
            let snapshot = status.get();
            let reason = match (snapshot.state, snapshot.last_error) {
                (super::State::Stopped, _) => "shut down".to_owned(),
                (_, Some(e)) => e,
                (state, None) => format!("{state:?}").to_lowercase(),
            };
            BackendError::Unavailable { backend: backend.to_owned(), reason }
        })
    }
}

/// Whom a request on a connection was made for: the principal (`None` for the gateway's own
/// work) and the Legacy client session, if any. Not a credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The principal; `None` for [`Caller::System`].
    pub principal: Option<Binding>,
    /// The Legacy client session; `None` for Modern clients and system work.
    pub session: Option<u64>,
}

impl Owner {
    /// The owner of a request made by `caller` for client session `session`.
    pub fn of(caller: &Caller, session: Option<u64>) -> Self {
        let principal = match caller {
            Caller::System => None,
            other => Some(other.binding()),
        };
        Self { principal, session }
    }
}

/// How a connection's unsolicited messages may be attributed.
#[derive(Clone, Default)]
pub struct Routing {
    /// The owner of a connection dedicated to one principal or client session; `None` when the
    /// connection is shared by everyone. Backend-level events carry its session.
    pub owner: Option<Owner>,
    /// Counts messages dropped (or requests refused) because their owner could not be known.
    pub unroutable: Arc<AtomicU64>,
}

/// A request waiting for its reply.
struct Pending {
    reply: oneshot::Sender<Result<Reply, BackendError>>,
    events: mpsc::Sender<Message>,
    /// The client's progress token, restored on progress notifications.
    progress_token: Option<Value>,
    owner: Owner,
}

struct Table {
    /// Keyed by the mux's id; ids grow, so the last entry is the most recently started request.
    pending: BTreeMap<i64, Pending>,
    /// Set by [`Mux::close`]: no new requests, the reason is what they fail with.
    closed: Option<String>,
}

struct Inner {
    backend: Arc<str>,
    outbound: Arc<dyn Outbound>,
    events: EventSender,
    routing: Routing,
    next_id: AtomicI64,
    table: Mutex<Table>,
}

impl Inner {
    fn table(&self) -> MutexGuard<'_, Table> {
        // A panic while holding this lock cannot leave the map inconsistent (every critical
        // section is a single map operation), so a poisoned lock is still usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn transport_error(&self, reason: impl Into<String>) -> BackendError {
        BackendError::Transport { backend: self.backend.to_string(), reason: reason.into() }
    }

    /// Sends a message in the background, for answers the reader must not wait on.
    fn send_detached(self: &Arc<Self>, caller: Caller, message: Message) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        let inner = self.clone();
        handle.spawn(async move {
            if let Err(e) = inner.outbound.send(&caller, &none(), message).await {
                tracing::debug!(backend = %inner.backend, error = %e, "mux: background send failed");
            }
        });
    }
}

/// One backend connection shared by many client requests. Cheap to clone.
#[derive(Clone)]
pub struct Mux {
    inner: Arc<Inner>,
}

impl Mux {
    /// A mux for a new connection of `backend`, sending with `outbound`; backend-level
    /// notifications go to `events`, attributed as `routing` says.
    pub fn new(
        backend: Arc<str>,
        outbound: Arc<dyn Outbound>,
        events: EventSender,
        routing: Routing,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                outbound,
                events,
                routing,
                next_id: AtomicI64::new(1),
                table: Mutex::new(Table { pending: BTreeMap::new(), closed: None }),
            }),
        }
    }

    /// Sends a request and waits for its reply. Dropping the future before the reply cancels the
    /// request at the backend.
    pub async fn request(
        &self,
        caller: &Caller,
        method: &str,
        params: Option<Box<RawValue>>,
        ctx: CallContext,
    ) -> Result<Reply, BackendError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (params, progress_token) = rewrite_progress_token(params, id);
        let (reply_tx, reply_rx) = oneshot::channel();
        let headers = ctx.headers.clone();
        {
            let mut table = self.inner.table();
            if let Some(reason) = &table.closed {
                return Err(self.inner.transport_error(reason.clone()));
            }
            let owner = Owner::of(caller, ctx.session);
            let pending = Pending { reply: reply_tx, events: ctx.events, progress_token, owner };
            table.pending.insert(id, pending);
        }
        let mut guard = PendingGuard { inner: &self.inner, id, caller, cancel_on_drop: true };
        let message = Message::Request(Request::new(Id::Number(id), method, params));
        if let Err(e) = self.inner.outbound.send(caller, &headers, message).await {
            // The backend never got it: nothing to cancel, just forget it.
            guard.cancel_on_drop = false;
            return Err(e);
        }
        let result = reply_rx.await;
        guard.cancel_on_drop = false;
        match result {
            Ok(reply) => reply,
            // The sender is dropped without a value only if the entry was removed by someone else
            // than the reader or `close`, which does not happen; report it as a transport failure.
            Err(_) => Err(self.inner.transport_error("connection closed")),
        }
    }

    /// Sends a notification.
    pub async fn notify(
        &self,
        caller: &Caller,
        method: &str,
        params: Option<Box<RawValue>>,
    ) -> Result<(), BackendError> {
        self.check_open()?;
        let message = Message::Notification(Notification::new(method, params));
        self.inner.outbound.send(caller, &none(), message).await
    }

    /// Sends an answer to a server-to-client request (its id is the backend's own).
    pub async fn respond(&self, caller: &Caller, response: Message) -> Result<(), BackendError> {
        self.check_open()?;
        self.inner.outbound.send(caller, &none(), response).await
    }

    fn check_open(&self) -> Result<(), BackendError> {
        match &self.inner.table().closed {
            Some(reason) => Err(self.inner.transport_error(reason.clone())),
            None => Ok(()),
        }
    }

    /// The handshake on a fresh connection: `initialize`, then `notifications/initialized`, all
    /// within `timeout`. Returns what the backend said, or why it failed.
    pub async fn initialize(&self, timeout: std::time::Duration) -> Result<ServerInfo, String> {
        let handshake = async {
            let params = Some(initialize_params());
            let reply = self
                .request(&Caller::System, "initialize", params, CallContext::detached())
                .await
                .map_err(|e| format!("initialize failed: {e}"))?;
            let info = match reply {
                Reply::Result(result) => parse_initialize_result(&result)?,
                Reply::Error(e) => {
                    return Err(format!("initialize rejected: {} ({})", e.message, e.code));
                }
            };
            self.notify(&Caller::System, "notifications/initialized", None)
                .await
                .map_err(|e| format!("notifications/initialized failed: {e}"))?;
            Ok(info)
        };
        tokio::time::timeout(timeout, handshake)
            .await
            .unwrap_or_else(|_| Err(format!("initialize timed out after {timeout:?}")))
    }

    /// Number of requests waiting for a reply.
    pub fn in_flight(&self) -> usize {
        self.inner.table().pending.len()
    }

    /// Marks the connection dead: every pending request fails now with
    /// [`BackendError::Transport`], and later ones fail at once. Idempotent.
    pub fn close(&self, reason: &str) {
        let drained = {
            let mut table = self.inner.table();
            if table.closed.is_none() {
                table.closed = Some(reason.to_owned());
            }
            std::mem::take(&mut table.pending)
        };
        for (_, pending) in drained {
            let _ = pending.reply.send(Err(self.inner.transport_error(reason)));
        }
    }

    /// Routes one message read from the connection.
    pub fn handle_incoming(&self, message: Message) {
        match message {
            Message::Response(r) => self.complete(&r.id, Reply::Result(r.result)),
            Message::Error(e) => match &e.id {
                Some(id) => self.complete(id, Reply::Error(e.error)),
                None => tracing::warn!(
                    backend = %self.inner.backend,
                    code = e.error.code,
                    message = %e.error.message,
                    "backend sent an error without id"
                ),
            },
            Message::Notification(n) => self.route_notification(n),
            Message::Request(r) => self.route_server_request(r),
        }
    }

    /// Fails pending request `id` (the mux's own): its reply arrived but could not be used.
    pub fn fail(&self, id: i64, error: BackendError) {
        let entry = self.inner.table().pending.remove(&id);
        if let Some(pending) = entry {
            let _ = pending.reply.send(Err(error));
        }
    }

    fn complete(&self, id: &Id, reply: Reply) {
        let entry = match id {
            Id::Number(n) => self.inner.table().pending.remove(n),
            Id::String(_) => None,
        };
        match entry {
            // The receiver may be gone if the request was dropped at the same moment; fine.
            Some(pending) => {
                let _ = pending.reply.send(Ok(reply));
            }
            None => tracing::debug!(
                backend = %self.inner.backend,
                %id,
                "reply for no pending request (cancelled or unknown)"
            ),
        }
    }

    fn route_notification(&self, n: Notification) {
        let method = n.method.as_str();
        if method == "notifications/progress" {
            self.route_progress(n);
            return;
        }
        let backend_level =
            method.ends_with("/list_changed") || method == "notifications/resources/updated";
        if !backend_level {
            if let Some(events) = self.attributed() {
                if let Err(e) = events.try_send(Message::Notification(n)) {
                    let dropped = e.into_inner();
                    tracing::debug!(backend = %self.inner.backend, message = ?dropped, "request events full or closed; notification dropped");
                }
                return;
            }
            // Nothing in flight it surely belongs to: only a connection dedicated to one client
            // session can hand it to that session's stream.
            if self.dedicated_session().is_none() {
                self.unroutable(method);
                return;
            }
        }
        // No receiver is fine: nobody is listening for backend events right now.
        let _ = self.inner.events.send(BackendEvent {
            backend: self.inner.backend.clone(),
            session: self.dedicated_session(),
            principal: self.inner.routing.owner.as_ref().and_then(|o| o.principal.clone()),
            notification: n,
        });
    }

    /// The client session this connection is dedicated to, if it is.
    fn dedicated_session(&self) -> Option<u64> {
        self.inner.routing.owner.as_ref().and_then(|o| o.session)
    }

    /// Counts a message whose owner cannot be known.
    fn unroutable(&self, method: &str) {
        self.inner.routing.unroutable.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(backend = %self.inner.backend, method, "message with no certain owner; dropped");
    }

    /// The events of the request an unsolicited message belongs to, when that is certain.
    fn attributed(&self) -> Option<mpsc::Sender<Message>> {
        let table = self.inner.table();
        attribute(&table.pending).and_then(|id| table.pending.get(&id)).map(|p| p.events.clone())
    }

    fn route_progress(&self, n: Notification) {
        let Some(mut params) = n
            .params
            .as_deref()
            .and_then(|p| serde_json::from_str::<Map<String, Value>>(p.get()).ok())
        else {
            return;
        };
        let id = params
            .get("progressToken")
            .and_then(Value::as_str)
            .and_then(|t| t.strip_prefix(TOKEN_PREFIX))
            .and_then(|t| t.parse::<i64>().ok());
        let Some(id) = id else {
            tracing::debug!(backend = %self.inner.backend, "progress with a token the mux did not issue; dropped");
            return;
        };
        let target = {
            let table = self.inner.table();
            table.pending.get(&id).map(|p| (p.events.clone(), p.progress_token.clone()))
        };
        let Some((events, Some(original))) = target else {
            tracing::debug!(backend = %self.inner.backend, id, "progress for no pending request; dropped");
            return;
        };
        params.insert("progressToken".into(), original);
        let message =
            Message::Notification(Notification::new(n.method, Some(raw(&Value::Object(params)))));
        if events.try_send(message).is_err() {
            tracing::debug!(backend = %self.inner.backend, id, "request events full or closed; progress dropped");
        }
    }

    fn route_server_request(&self, r: Request) {
        if r.method == "ping" {
            let pong = Message::Response(Response::new(r.id, raw(&serde_json::json!({}))));
            self.inner.send_detached(Caller::System, pong);
            return;
        }
        let (id, method) = (r.id.clone(), r.method.clone());
        let target = self.attributed();
        let delivered = match target {
            Some(events) => events.try_send(Message::Request(r)).is_ok(),
            None => {
                if self.in_flight() > 0 {
                    self.unroutable(&method);
                }
                false
            }
        };
        if !delivered {
            // Nobody can answer: refuse now so the backend never waits on us.
            tracing::debug!(backend = %self.inner.backend, method, "server-to-client request with no certain taker; refused");
            let refusal = Message::Error(ErrorResponse::new(
                Some(id),
                ErrorObject::new(
                    code::METHOD_NOT_FOUND,
                    format!("{method}: no client request it can be attributed to"),
                ),
            ));
            self.inner.send_detached(Caller::System, refusal);
        }
    }
}

/// The pending request an unsolicited message (no progress token) belongs to, when that is
/// certain: the only one in flight, or, when several are, the most recent of them if they all
/// belong to the same client session. Requests of Modern clients or system work from different
/// HTTP requests can never be told apart, so several of those give `None`.
fn attribute(pending: &BTreeMap<i64, Pending>) -> Option<i64> {
    let mut it = pending.iter();
    let (&first_id, first) = it.next()?;
    if pending.len() == 1 {
        return Some(first_id);
    }
    first.owner.session?;
    if pending.values().all(|p| p.owner == first.owner) {
        pending.keys().next_back().copied()
    } else {
        None
    }
}

/// Removes a pending entry when the request future ends or is dropped, and cancels the request at
/// the backend if it was dropped while the backend was still working on it.
struct PendingGuard<'a> {
    inner: &'a Arc<Inner>,
    id: i64,
    caller: &'a Caller,
    cancel_on_drop: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let (removed, closed) = {
            let mut table = self.inner.table();
            (table.pending.remove(&self.id).is_some(), table.closed.is_some())
        };
        if self.cancel_on_drop && removed && !closed {
            let params = raw(&serde_json::json!({
                "requestId": self.id,
                "reason": "request cancelled by the client",
            }));
            let message =
                Message::Notification(Notification::new("notifications/cancelled", Some(params)));
            // Cloning the caller into the task keeps it only until this one message is sent.
            self.inner.send_detached(self.caller.clone(), message);
        }
    }
}

/// Replaces `params._meta.progressToken` with a token naming request `id`; returns the new params
/// and the original token. Params without `_meta` pass through undecoded.
fn rewrite_progress_token(
    params: Option<Box<RawValue>>,
    id: i64,
) -> (Option<Box<RawValue>>, Option<Value>) {
    let Some(p) = params else { return (None, None) };
    // Cheap pre-check: most requests carry no `_meta`, and those are relayed byte for byte.
    if !p.get().contains("\"_meta\"") || !p.get().contains("progressToken") {
        return (Some(p), None);
    }
    let Ok(mut map) = serde_json::from_str::<Map<String, Value>>(p.get()) else {
        return (Some(p), None);
    };
    let Some(Value::Object(meta)) = map.get_mut("_meta") else { return (Some(p), None) };
    let Some(original) = meta.remove("progressToken") else { return (Some(p), None) };
    meta.insert("progressToken".into(), Value::String(format!("{TOKEN_PREFIX}{id}")));
    (Some(raw(&Value::Object(map))), Some(original))
}

/// Reconnect (or restart) delays for a transport's supervisor: 250ms doubling up to
/// [`super::RECONNECT_MAX`], back to 250ms after a connection that lasted [`Backoff::RESET_AFTER`]
/// (a process that crashes at once backs off; one that served a while, even if it crashes every
/// few seconds, comes back at once). The cap is low so a backend that returns after a long
/// outage is back within about a second.
#[derive(Debug)]
pub struct Backoff {
    next: std::time::Duration,
}

impl Backoff {
    const MIN: std::time::Duration = std::time::Duration::from_millis(250);
    const MAX: std::time::Duration = super::RECONNECT_MAX;
    /// A run this long (it connected, initialized and served) resets the delay.
    pub const RESET_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

    /// A fresh backoff.
    pub fn new() -> Self {
        Self { next: Self::MIN }
    }

    /// The delay before the next attempt, given how long the last connection lasted.
    pub fn delay(&mut self, last_run: std::time::Duration) -> std::time::Duration {
        if last_run >= Self::RESET_AFTER {
            self.next = Self::MIN;
        }
        let delay = self.next;
        self.next = (delay * 2).min(Self::MAX);
        delay
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    /// An in-memory transport: what the mux sends arrives on a channel.
    struct ChannelOut(mpsc::UnboundedSender<Message>);

    impl Outbound for ChannelOut {
        fn send<'a>(
            &'a self,
            _caller: &'a Caller,
            _headers: &'a Forwarded,
            message: Message,
        ) -> BoxFuture<'a, Result<(), BackendError>> {
            let r = self.0.send(message).map_err(|_| BackendError::Transport {
                backend: "t".into(),
                reason: "closed".into(),
            });
            Box::pin(async move { r })
        }
    }

    fn pair()
    -> (Mux, mpsc::UnboundedReceiver<Message>, tokio::sync::broadcast::Receiver<BackendEvent>) {
        pair_routed(Routing::default())
    }

    fn pair_routed(
        routing: Routing,
    ) -> (Mux, mpsc::UnboundedReceiver<Message>, tokio::sync::broadcast::Receiver<BackendEvent>)
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let (events, events_rx) = tokio::sync::broadcast::channel(16);
        (Mux::new("t".into(), Arc::new(ChannelOut(tx)), events, routing), rx, events_rx)
    }

    /// Starts a request by `caller` for client session `session`; returns its task, the id the
    /// backend saw and its events.
    async fn start(
        mux: &Mux,
        out: &mut mpsc::UnboundedReceiver<Message>,
        caller: Caller,
        session: Option<u64>,
    ) -> (tokio::task::JoinHandle<Result<Reply, BackendError>>, Id, mpsc::Receiver<Message>) {
        let (mut c, events) = ctx();
        c.session = session;
        let m = mux.clone();
        let task = tokio::spawn(async move { m.request(&caller, "tools/call", None, c).await });
        let Message::Request(r) = next_out(out).await else { panic!("expected a request") };
        (task, r.id, events)
    }

    fn user(subject: &str) -> Caller {
        Caller::Teardown(Binding::Principal { issuer: "i".into(), subject: subject.into() })
    }

    fn log() -> Message {
        Message::Notification(Notification::new(
            "notifications/message",
            Some(raw(&json!({"level": "info", "data": "x"}))),
        ))
    }

    fn sampling(id: i64) -> Message {
        Message::Request(Request::new(Id::Number(id), "sampling/createMessage", None))
    }

    fn params(v: Value) -> Option<Box<RawValue>> {
        Some(raw(&v))
    }

    fn ctx() -> (CallContext, mpsc::Receiver<Message>) {
        let (events, rx) = mpsc::channel(16);
        (CallContext::new(events), rx)
    }

    async fn next_out(rx: &mut mpsc::UnboundedReceiver<Message>) -> Message {
        tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap()
    }

    fn result_text(r: Result<Reply, BackendError>) -> String {
        match r.unwrap() {
            Reply::Result(r) => r.get().to_owned(),
            Reply::Error(e) => panic!("error reply {e:?}"),
        }
    }

    #[tokio::test]
    async fn rewrites_ids_and_matches_replies_out_of_order() {
        let (mux, mut out, _) = pair();
        let a = tokio::spawn({
            let mux = mux.clone();
            async move { mux.request(&Caller::System, "a", None, CallContext::detached()).await }
        });
        let Message::Request(ra) = next_out(&mut out).await else { panic!() };
        let b = tokio::spawn({
            let mux = mux.clone();
            async move { mux.request(&Caller::System, "b", None, CallContext::detached()).await }
        });
        let Message::Request(rb) = next_out(&mut out).await else { panic!() };
        assert_ne!(ra.id, rb.id);
        mux.handle_incoming(Message::Response(Response::new(rb.id, raw(&json!("B")))));
        mux.handle_incoming(Message::Response(Response::new(ra.id, raw(&json!("A")))));
        assert_eq!(result_text(a.await.unwrap()), "\"A\"");
        assert_eq!(result_text(b.await.unwrap()), "\"B\"");
        assert_eq!(mux.in_flight(), 0);
    }

    #[tokio::test]
    async fn progress_tokens_are_rewritten_and_restored() {
        let (mux, mut out, _) = pair();
        let (c, mut events) = ctx();
        let task = tokio::spawn({
            let mux = mux.clone();
            async move {
                mux.request(
                    &Caller::System,
                    "tools/call",
                    params(json!({"name": "x", "_meta": {"progressToken": 42}})),
                    c,
                )
                .await
            }
        });
        let Message::Request(r) = next_out(&mut out).await else { panic!() };
        let sent: Value = serde_json::from_str(r.params.as_ref().unwrap().get()).unwrap();
        let token = sent["_meta"]["progressToken"].clone();
        assert_ne!(token, json!(42));
        assert_eq!(sent["name"], "x");
        mux.handle_incoming(Message::Notification(Notification::new(
            "notifications/progress",
            params(json!({"progressToken": token, "progress": 1, "total": 2})),
        )));
        let Message::Notification(n) = events.recv().await.unwrap() else { panic!() };
        let p: Value = serde_json::from_str(n.params.unwrap().get()).unwrap();
        assert_eq!(p, json!({"progressToken": 42, "progress": 1, "total": 2}));
        mux.handle_incoming(Message::Response(Response::new(r.id, raw(&json!({})))));
        task.await.unwrap().unwrap();
    }

    #[test]
    fn params_without_meta_pass_through_untouched() {
        let p = RawValue::from_string(r#"{"b": 1,  "a":[2]}"#.into()).unwrap();
        let (out, token) = rewrite_progress_token(Some(p), 7);
        assert_eq!(out.unwrap().get(), r#"{"b": 1,  "a":[2]}"#);
        assert!(token.is_none());
    }

    #[tokio::test]
    async fn notifications_go_to_the_single_request_or_nowhere() {
        let routing = Routing::default();
        let (mux, mut out, mut backend_events) = pair_routed(routing.clone());
        // None in flight on a shared connection: nobody it surely belongs to; dropped, counted.
        mux.handle_incoming(log());
        assert_eq!(routing.unroutable.load(Ordering::Relaxed), 1);
        assert!(backend_events.try_recv().is_err());
        // One in flight: that request.
        let (task, id, mut events) = start(&mux, &mut out, user("a"), Some(1)).await;
        mux.handle_incoming(log());
        assert!(matches!(events.recv().await, Some(Message::Notification(_))));
        // list_changed is always backend-level.
        mux.handle_incoming(Message::Notification(Notification::new(
            "notifications/tools/list_changed",
            None,
        )));
        let e = backend_events.recv().await.unwrap();
        assert_eq!(e.notification.method, "notifications/tools/list_changed");
        assert_eq!(e.session, None);
        assert!(events.try_recv().is_err());
        mux.handle_incoming(Message::Response(Response::new(id, raw(&json!({})))));
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn messages_across_sessions_or_principals_are_dropped_not_guessed() {
        for (a, b) in [
            ((user("a"), Some(1)), (user("a"), Some(2))), // two sessions of one principal
            ((user("a"), Some(1)), (user("b"), Some(1))), // two principals
            ((user("a"), None), (user("a"), None)),       // two Modern requests
            ((Caller::System, None), (user("a"), Some(1))),
        ] {
            let routing = Routing::default();
            let (mux, mut out, mut backend_events) = pair_routed(routing.clone());
            let (ta, ia, mut ea) = start(&mux, &mut out, a.0, a.1).await;
            let (tb, ib, mut eb) = start(&mux, &mut out, b.0, b.1).await;
            mux.handle_incoming(log());
            mux.handle_incoming(sampling(77));
            // The request is refused so the backend does not wait.
            let Message::Error(e) = next_out(&mut out).await else { panic!("expected a refusal") };
            assert_eq!((e.id, e.error.code), (Some(Id::Number(77)), code::METHOD_NOT_FOUND));
            assert!(ea.try_recv().is_err() && eb.try_recv().is_err());
            assert!(backend_events.try_recv().is_err());
            assert_eq!(routing.unroutable.load(Ordering::Relaxed), 2);
            mux.handle_incoming(Message::Response(Response::new(ia, raw(&json!(1)))));
            mux.handle_incoming(Message::Response(Response::new(ib, raw(&json!(2)))));
            ta.await.unwrap().unwrap();
            tb.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn requests_of_one_session_share_its_messages() {
        let (mux, mut out, _) = pair();
        let (t1, i1, mut e1) = start(&mux, &mut out, user("a"), Some(4)).await;
        let (t2, i2, mut e2) = start(&mux, &mut out, user("a"), Some(4)).await;
        mux.handle_incoming(sampling(10));
        // Same client session: the most recent request takes it, with the backend's id.
        let Message::Request(s) = e2.recv().await.unwrap() else { panic!() };
        assert_eq!(s.id, Id::Number(10));
        assert!(e1.try_recv().is_err());
        mux.handle_incoming(Message::Response(Response::new(i1, raw(&json!(1)))));
        mux.handle_incoming(Message::Response(Response::new(i2, raw(&json!(2)))));
        t1.await.unwrap().unwrap();
        t2.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_dedicated_connection_tags_events_with_its_session() {
        let owner = Owner { principal: Some(Binding::Anonymous), session: Some(9) };
        let routing = Routing { owner: Some(owner), unroutable: Default::default() };
        let (mux, _out, mut backend_events) = pair_routed(routing.clone());
        mux.handle_incoming(log());
        let e = backend_events.recv().await.unwrap();
        assert_eq!(e.notification.method, "notifications/message");
        assert_eq!(e.session, Some(9));
        assert_eq!(routing.unroutable.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn progress_reaches_its_request_across_sessions() {
        let (mux, mut out, _) = pair();
        let (mut c, mut ea) = ctx();
        c.session = Some(1);
        let m = mux.clone();
        let ta = tokio::spawn(async move {
            m.request(&user("a"), "x", params(json!({"_meta": {"progressToken": "t"}})), c).await
        });
        let Message::Request(ra) = next_out(&mut out).await else { panic!() };
        let (tb, ib, mut eb) = start(&mux, &mut out, user("b"), Some(2)).await;
        let sent: Value = serde_json::from_str(ra.params.as_ref().unwrap().get()).unwrap();
        mux.handle_incoming(Message::Notification(Notification::new(
            "notifications/progress",
            params(json!({"progressToken": sent["_meta"]["progressToken"], "progress": 1})),
        )));
        let Message::Notification(n) = ea.recv().await.unwrap() else { panic!() };
        assert_eq!(n.method, "notifications/progress");
        assert!(eb.try_recv().is_err());
        mux.handle_incoming(Message::Response(Response::new(ra.id, raw(&json!(1)))));
        mux.handle_incoming(Message::Response(Response::new(ib, raw(&json!(2)))));
        ta.await.unwrap().unwrap();
        tb.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn server_requests_are_answered_or_refused() {
        let (mux, mut out, _) = pair();
        // ping is answered by the mux.
        mux.handle_incoming(Message::Request(Request::new(Id::String("p".into()), "ping", None)));
        let Message::Response(pong) = next_out(&mut out).await else { panic!() };
        assert_eq!(pong.id, Id::String("p".into()));
        // Nobody in flight: refused.
        mux.handle_incoming(Message::Request(Request::new(Id::Number(9), "roots/list", None)));
        let Message::Error(e) = next_out(&mut out).await else { panic!() };
        assert_eq!((e.id, e.error.code), (Some(Id::Number(9)), code::METHOD_NOT_FOUND));
        // One in flight: it gets it.
        let (t, id, mut events) = start(&mux, &mut out, user("a"), None).await;
        mux.handle_incoming(sampling(10));
        let Message::Request(s) = events.recv().await.unwrap() else { panic!() };
        assert_eq!(s.id, Id::Number(10));
        mux.handle_incoming(Message::Response(Response::new(id, raw(&json!(1)))));
        t.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn dropping_a_request_cancels_it() {
        let (mux, mut out, _) = pair();
        let m = mux.clone();
        let task = tokio::spawn(async move {
            m.request(&Caller::System, "slow", None, CallContext::detached()).await
        });
        let Message::Request(r) = next_out(&mut out).await else { panic!() };
        task.abort();
        let Message::Notification(n) = next_out(&mut out).await else { panic!() };
        assert_eq!(n.method, "notifications/cancelled");
        let p: Value = serde_json::from_str(n.params.unwrap().get()).unwrap();
        assert_eq!(serde_json::from_value::<Id>(p["requestId"].clone()).unwrap(), r.id);
        assert_eq!(mux.in_flight(), 0);
        // A late reply is ignored.
        mux.handle_incoming(Message::Response(Response::new(r.id, raw(&json!({})))));
    }

    /// A transport whose sends always fail, like a POST answered with 500.
    struct FailingOut;

    impl Outbound for FailingOut {
        fn send<'a>(
            &'a self,
            _caller: &'a Caller,
            _headers: &'a Forwarded,
            _message: Message,
        ) -> BoxFuture<'a, Result<(), BackendError>> {
            Box::pin(async {
                Err(BackendError::Transport {
                    backend: "t".into(),
                    reason: "POST returned 500".into(),
                })
            })
        }
    }

    #[tokio::test]
    async fn a_failed_send_fails_that_request_and_forgets_it() {
        let (events, _) = tokio::sync::broadcast::channel(1);
        let mux = Mux::new("t".into(), Arc::new(FailingOut), events, Routing::default());
        let err =
            mux.request(&Caller::System, "x", None, CallContext::detached()).await.unwrap_err();
        assert!(
            matches!(err, BackendError::Transport { ref reason, .. } if reason.contains("500"))
        );
        assert_eq!(mux.in_flight(), 0);
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::new();
        let short = Duration::from_millis(100);
        assert_eq!(b.delay(short), Duration::from_millis(250));
        assert_eq!(b.delay(short), Duration::from_millis(500));
        for _ in 0..20 {
            b.delay(short);
        }
        // Capped low: a backend back after a long outage is reconnected within a second.
        assert_eq!(b.delay(short), Duration::from_secs(1));
        assert_eq!(b.delay(Duration::from_secs(61)), Duration::from_millis(250));
    }

    #[test]
    fn a_process_crashing_every_few_seconds_restarts_at_once() {
        // It served three seconds each time: no growing delay (it used to reset only after a
        // minute up, so such a server spent most of its time waiting to restart).
        let mut b = Backoff::new();
        for _ in 0..10 {
            assert_eq!(b.delay(Duration::from_secs(3)), Duration::from_millis(250));
        }
    }

    #[tokio::test]
    async fn close_fails_pending_requests_fast() {
        let (mux, mut out, _) = pair();
        let m = mux.clone();
        let task = tokio::spawn(async move {
            m.request(&Caller::System, "slow", None, CallContext::detached()).await
        });
        let _ = next_out(&mut out).await;
        mux.close("process exited");
        let err = task.await.unwrap().unwrap_err();
        assert!(
            matches!(err, BackendError::Transport { ref reason, .. } if reason == "process exited")
        );
        // No cancellation is sent for a dead connection, and later requests fail at once.
        assert!(out.try_recv().is_err());
        let err =
            mux.request(&Caller::System, "x", None, CallContext::detached()).await.unwrap_err();
        assert!(matches!(err, BackendError::Transport { .. }));
    }
}
