//! The client-facing HTTP/1.1 server under the router: the accept loop, per-connection timeouts,
//! the connection cap, and draining at shutdown (`server.connections`).
//!
//! hyper's own `header_read_timeout` is not used: since hyper 1.4 it also runs while a kept-alive
//! connection waits for its next request, which would make the idle timeout the header timeout.
//! Each connection instead tracks its phase ([`Phase`]) and is closed by its own task when the
//! phase's deadline passes.
//!
//! Invariants:
//! - At most `maxConnections` client connections are open. At the cap the loop stops accepting,
//!   as HAProxy's `maxconn` and nginx's `worker_connections` do: new connections wait in the
//!   kernel's listen backlog (and are served when a slot frees) instead of being accepted only to
//!   be closed, which a client would see as a failed request.
//! - A connection that has not delivered its first request's headers `headerReadTimeout` after
//!   accept, a kept-alive one that has not finished the next request's headers
//!   `headerReadTimeout` after its first byte, and one idle between requests for `idleTimeout`
//!   are closed. A request in progress (from its headers to the end of its response, streams
//!   included) is never cut by these timers; backend timeouts and shutdown bound it. Only its
//!   body is timed: a body not received in full `bodyReadTimeout` after the handler starts
//!   reading it gets the connection dropped without an answer.
//! - An accept error never ends the loop and never makes it spin: errors of one connection are
//!   skipped, anything else (EMFILE, ENFILE, ENOBUFS, ENOMEM) backs off, 5 ms doubling to 1 s,
//!   like Go's `net/http`. Connections already open are served meanwhile.
//! - Drain ([`Server::drain`]) closes the listening socket and lets requests in progress finish.
//!   It first takes the connections already waiting in the socket's backlog (closing it would
//!   reset them, and their clients may have sent a request already: a load balancer that picked
//!   this replica a moment before would see it fail). A connection that has not started a
//!   request gets [`DRAIN_FIRST_REQUEST`] to start one, which is answered, then closes; a
//!   kept-alive connection between requests closes at once. Abort ([`Server::finish`] after the grace period)
//!   answers requests still waiting for their response with 503 and drops every connection
//!   still open [`ABORT_FLUSH`] later.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::ConnectionsConfig;

/// After abort, how long connections get to write their 503 (or the end of a response) before
/// they are dropped; also how long a closing kept-alive connection gets to flush.
pub const ABORT_FLUSH: Duration = Duration::from_secs(1);
/// At drain, how long a connection with no request yet gets to start one (default 1 s).
pub const DRAIN_FIRST_REQUEST: Duration = Duration::from_secs(1);
/// First and longest pause after an accept error that is not one connection's.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Shortest interval between two "connection limit reached" warnings.
const CAP_WARN_EVERY: Duration = Duration::from_secs(10);

/// The running server: its accept loop and its connections.
pub struct Server {
    drain: CancellationToken,
    abort: CancellationToken,
    connections: TaskTracker,
    accept: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Starts accepting on `listener` and serving `app` on each connection.
    pub fn start(listener: TcpListener, app: Router, cfg: &ConnectionsConfig) -> Server {
        let drain = CancellationToken::new();
        let abort = CancellationToken::new();
        let connections = TaskTracker::new();
        let app = app.layer(axum::middleware::from_fn_with_state(abort.clone(), unless_aborted));
        let shared = Arc::new(Shared {
            app,
            header_read_timeout: cfg.header_read_timeout,
            idle_timeout: cfg.idle_timeout,
            body_read_timeout: cfg.body_read_timeout,
            drain: drain.clone(),
            abort: abort.clone(),
        });
        let slots = Arc::new(Semaphore::new(cfg.max_connections.min(Semaphore::MAX_PERMITS)));
        let accept = tokio::spawn(accept_loop(
            listener,
            shared,
            slots,
            cfg.max_connections,
            connections.clone(),
        ));
        Server { drain, abort, connections, accept: Some(accept) }
    }

    /// Stops accepting (the listening socket is closed when this returns) and asks every
    /// connection to finish: those without a request in progress close now, the others after
    /// their response.
    pub async fn drain(&mut self) {
        self.drain.cancel();
        if let Some(accept) = self.accept.take()
            && let Err(e) = accept.await
        {
            tracing::warn!(error = %e, "accept loop failed");
        }
        self.connections.close();
    }

    /// Waits up to `grace` for every connection to close; then aborts the rest (503 to requests
    /// still waiting, connections dropped [`ABORT_FLUSH`] later). Returns how many connections
    /// were still open at the end of the grace period. Call after [`Server::drain`].
    pub async fn finish(&self, grace: Duration) -> usize {
        if tokio::time::timeout(grace, self.connections.wait()).await.is_ok() {
            return 0;
        }
        let left = self.connections.len();
        tracing::warn!(
            connections = left,
            ?grace,
            "grace period over; aborting requests in progress"
        );
        self.abort.cancel();
        // Each connection task ends by ABORT_FLUSH after abort; the margin is for scheduling.
        let _ = tokio::time::timeout(ABORT_FLUSH * 2, self.connections.wait()).await;
        left
    }
}

/// What every connection task needs.
struct Shared {
    app: Router,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    body_read_timeout: Duration,
    drain: CancellationToken,
    abort: CancellationToken,
}

/// Answers 503 instead of a response that is not ready when the gateway aborts at shutdown.
async fn unless_aborted(
    State(abort): State<CancellationToken>,
    request: Request,
    next: Next,
) -> Response {
    tokio::select! {
        response = next.run(request) => response,
        _ = abort.cancelled() => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONNECTION, "close")],
            "vmcp is shutting down",
        )
            .into_response(),
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    max: usize,
    connections: TaskTracker,
) {
    let mut backoff: Option<Duration> = None;
    // At most one cap warning per CAP_WARN_EVERY: under sustained load every accept hits it.
    let mut cap_warned: Option<Instant> = None;
    'accept: loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if cap_warned.is_none_or(|t| t.elapsed() >= CAP_WARN_EVERY) {
                    cap_warned = Some(Instant::now());
                    tracing::warn!(
                        max_connections = max,
                        "connection limit reached; new connections wait in the listen backlog"
                    );
                }
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        // The semaphore is never closed.
                        Err(_) => break 'accept,
                    },
                    _ = shared.drain.cancelled() => break 'accept,
                }
            }
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shared.drain.cancelled() => break 'accept,
        };
        match accepted {
            Ok((tcp, peer)) => {
                backoff = None;
                // Replies are written in pieces (headers, SSE events): without TCP_NODELAY a
                // reused connection waits on the peer's delayed ACK for each later piece.
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
                tracing::trace!(%peer, "connection accepted");
                connections.spawn(serve_connection(tcp, peer, shared.clone(), permit));
            }
            Err(e) if is_connection_error(&e) => {
                tracing::debug!(error = %e, "accept: connection failed before it was accepted");
            }
            Err(e) => {
                let delay = backoff.map_or(ACCEPT_BACKOFF_MIN, |d| (d * 2).min(ACCEPT_BACKOFF_MAX));
                backoff = Some(delay);
                tracing::warn!(error = %e, retry_in = ?delay, "accept failed; backing off");
                drop(permit);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shared.drain.cancelled() => break 'accept,
                }
            }
        }
    }
    take_backlog(listener, &shared, &slots, &connections);
}

/// Serves the connections waiting in the listen backlog at drain (as many as there are free
/// slots), so that closing the listener resets none of them. Reads the socket directly: the
/// reactor may not have reported them yet.
fn take_backlog(
    listener: TcpListener,
    shared: &Arc<Shared>,
    slots: &Arc<Semaphore>,
    connections: &TaskTracker,
) {
    let Ok(listener) = listener.into_std() else { return };
    let mut taken = 0usize;
    while let Ok(permit) = slots.clone().try_acquire_owned() {
        let Ok((tcp, peer)) = listener.accept() else { break };
        let tcp = match tcp.set_nonblocking(true).and_then(|()| TcpStream::from_std(tcp)) {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(error = %e, "a connection from the backlog could not be served");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        taken += 1;
        connections.spawn(serve_connection(tcp, peer, shared.clone(), permit));
    }
    if taken > 0 {
        tracing::debug!(connections = taken, "served the listen backlog at drain");
    }
}

/// Errors that concern only the connection being accepted (the peer gave up); the listener is
/// fine and the next accept may proceed at once.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted)
}

/// Where a connection is in its request cycle; each phase but `Busy` has a deadline.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Accepted at this instant; no request yet (header timeout from accept).
    Fresh(Instant),
    /// A request is in progress (headers read, response not finished).
    Busy,
    /// Between requests since this instant (idle timeout).
    Idle(Instant),
    /// The next request's first byte arrived at this instant (header timeout).
    Reading(Instant),
}

/// A connection's phase, shared by its reader, its responses and its task.
struct Activity {
    state: Mutex<ActivityState>,
    /// Wakes the connection task when the phase changes.
    changed: Notify,
}

struct ActivityState {
    phase: Phase,
    /// A request body stopped arriving before its deadline: the connection is dropped.
    body_stalled: bool,
    in_flight: usize,
    /// Whether any request began on this connection (a response may have been written).
    served: bool,
}

impl Activity {
    fn new() -> Self {
        Self {
            state: Mutex::new(ActivityState {
                phase: Phase::Fresh(Instant::now()),
                body_stalled: false,
                in_flight: 0,
                served: false,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        // The state is plain data and every update is complete before unlock; a poisoned
        // lock (a panic elsewhere) leaves it consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        let mut s = self.lock();
        s.in_flight += 1;
        s.served = true;
        s.phase = Phase::Busy;
        drop(s);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    fn bytes_read(&self) {
        let mut s = self.lock();
        if let Phase::Idle(_) = s.phase {
            s.phase = Phase::Reading(Instant::now());
            drop(s);
            self.changed.notify_one();
        }
    }

    /// When the current phase runs out, and what it is.
    fn deadline(&self, shared: &Shared) -> Option<(Instant, &'static str)> {
        self.deadline_with(shared.header_read_timeout, shared.idle_timeout)
    }

    fn deadline_with(&self, header: Duration, idle: Duration) -> Option<(Instant, &'static str)> {
        match self.lock().phase {
            Phase::Busy => None,
            Phase::Fresh(t) | Phase::Reading(t) => {
                Some((t + header, "request headers not received in time"))
            }
            Phase::Idle(t) => Some((t + idle, "idle")),
        }
    }

    fn stall(&self) {
        self.lock().body_stalled = true;
        self.changed.notify_one();
    }

    fn body_stalled(&self) -> bool {
        self.lock().body_stalled
    }

    fn busy(&self) -> bool {
        self.lock().in_flight > 0
    }

    fn served(&self) -> bool {
        self.lock().served
    }
}

/// One request in progress; dropped with its response body (or with the request, if it never
/// produced one).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            s.phase = Phase::Idle(Instant::now());
        }
        drop(s);
        self.0.changed.notify_one();
    }
}

/// A response body that holds its request's [`InFlight`] until hyper is done with it.
struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that must arrive in full within `limit` of the handler's first read.
struct TimedBody {
    body: Incoming,
    limit: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    activity: Arc<Activity>,
}

impl hyper::body::Body for TimedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let limit = this.limit;
        let deadline = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if deadline.as_mut().poll(cx).is_ready() {
            // No error to the handler (it would answer one); the connection task drops the
            // connection, and this future with it.
            this.activity.stall();
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The router as a hyper service, marking each request in flight.
#[derive(Clone)]
struct Service {
    app: Router,
    /// The client's address, for handlers that limit per address (client registration).
    peer: std::net::SocketAddr,
    activity: Arc<Activity>,
    body_read_timeout: Duration,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Service {
    type Response = hyper::Response<TrackedBody>;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        // Tests wait for this line to know a request is in progress.
        tracing::trace!(method = %request.method(), path = request.uri().path(), "request started");
        let in_flight = self.activity.begin();
        let activity = self.activity.clone();
        let limit = self.body_read_timeout;
        let mut request = request.map(|body| TimedBody { body, limit, deadline: None, activity });
        request.extensions_mut().insert(axum::extract::ConnectInfo(self.peer));
        let response = self.app.clone().oneshot(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| TrackedBody { body, _in_flight: in_flight }))
        })
    }
}

/// The client socket, reporting the first byte of each request after an idle spell.
struct Watched {
    tcp: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Serves one connection until the client closes it, a timeout closes it, or shutdown does.
/// Holds its slot (`_permit`) until then.
async fn serve_connection(
    tcp: TcpStream,
    peer: std::net::SocketAddr,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched { tcp, activity: activity.clone() });
    let service = Service {
        app: shared.app.clone(),
        peer,
        activity: activity.clone(),
        body_read_timeout: shared.body_read_timeout,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Our own timers close silent connections (see the module docs); hyper's would also close
    // idle kept-alive ones at the header timeout.
    builder.keep_alive(true).header_read_timeout(None);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    // Set once this connection is being closed: after this instant it is dropped.
    let mut hard_close: Option<Instant> = None;
    // Set at drain on a connection with no request yet: by then it must have started one.
    let mut first_request_by: Option<Instant> = None;
    let mut draining = false;
    let mut aborted = false;
    loop {
        // A change between reading the deadline and waiting is not missed: `notify_one` leaves
        // a permit when nobody waits.
        let changed = activity.changed.notified();
        // Once closing, only the hard deadline counts (a passed phase deadline would fire
        // again at once).
        let deadline = match (hard_close, first_request_by) {
            (Some(h), _) => Some((h, "closing")),
            (None, Some(f)) => Some((f, "no request after drain")),
            (None, None) => activity.deadline(&shared),
        };
        let sleep_until =
            deadline.map_or_else(|| Instant::now() + Duration::from_secs(3600), |d| d.0);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
                return;
            }
            _ = changed => {
                if activity.body_stalled() {
                    // Dropped without an answer, like a connection whose headers never came.
                    tracing::debug!("closing client connection: request body not received in time");
                    return;
                }
                if first_request_by.is_some() && activity.served() {
                    // Its request arrived: answered, then closed.
                    first_request_by = None;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = tokio::time::sleep_until(sleep_until), if deadline.is_some() => {
                let Some((_, why)) = deadline else { continue };
                if hard_close.is_some_and(|h| Instant::now() >= h) {
                    tracing::debug!("client connection dropped");
                    return;
                }
                if first_request_by.is_some_and(|f| Instant::now() >= f) {
                    if !activity.served() {
                        tracing::debug!("closing client connection: no request after drain");
                        return;
                    }
                    first_request_by = None;
                    conn.as_mut().graceful_shutdown();
                    continue;
                }
                // The phase may have changed while the timer fired; only a passed deadline
                // of the current phase closes.
                if activity.deadline(&shared).is_some_and(|(t, _)| Instant::now() >= t) {
                    tracing::debug!(reason = why, "closing client connection");
                    if !activity.served() {
                        // Nothing was ever written: drop at once.
                        return;
                    }
                    conn.as_mut().graceful_shutdown();
                    hard_close.get_or_insert(Instant::now() + ABORT_FLUSH);
                }
            }
            _ = shared.drain.cancelled(), if !draining => {
                draining = true;
                if !activity.served() && !activity.busy() {
                    // Accepted, no request yet: the client may be sending it now.
                    first_request_by = Some(Instant::now() + DRAIN_FIRST_REQUEST);
                    continue;
                }
                // hyper closes an idle connection at once and a busy one after its response.
                conn.as_mut().graceful_shutdown();
            }
            _ = shared.abort.cancelled(), if !aborted => {
                aborted = true;
                let h = Instant::now() + ABORT_FLUSH;
                hard_close = Some(hard_close.map_or(h, |c| c.min(h)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(75);

    fn deadline(a: &Activity) -> Option<(Instant, &'static str)> {
        a.deadline_with(HEADER, IDLE)
    }

    /// `f`'s result with the instants just before and after it.
    fn timed<T>(f: impl FnOnce() -> T) -> (Instant, T, Instant) {
        let before = Instant::now();
        let t = f();
        (before, t, Instant::now())
    }

    #[test]
    fn phases_and_their_deadlines() {
        let (t0, a, t1) = timed(|| Arc::new(Activity::new()));
        // A new connection: the header timeout runs from accept, and bytes do not restart it.
        let (fresh, why) = deadline(&a).expect("a new connection has a deadline");
        assert!(fresh >= t0 + HEADER && fresh <= t1 + HEADER);
        assert_eq!(why, "request headers not received in time");
        a.bytes_read();
        assert_eq!(deadline(&a).map(|d| d.0), Some(fresh));
        assert!(!a.served());
        // A request in progress has no deadline.
        let request = a.begin();
        assert!(deadline(&a).is_none() && a.busy() && a.served());
        a.bytes_read();
        assert!(deadline(&a).is_none());
        // Done: idle from the end of the response.
        let (t0, (), t1) = timed(|| drop(request));
        let (idle, why) = deadline(&a).expect("an idle connection has a deadline");
        assert!(idle >= t0 + IDLE && idle <= t1 + IDLE);
        assert_eq!(why, "idle");
        assert!(!a.busy());
        // The next request's first byte starts the header timeout.
        let (t0, (), t1) = timed(|| a.bytes_read());
        let (reading, why) = deadline(&a).expect("a request being read has a deadline");
        assert!(reading >= t0 + HEADER && reading <= t1 + HEADER);
        assert_eq!(why, "request headers not received in time");
        // Later bytes of the same headers do not extend it.
        a.bytes_read();
        assert_eq!(deadline(&a).map(|d| d.0), Some(reading));
        assert!(!a.body_stalled());
        a.stall();
        assert!(a.body_stalled());
    }

    #[test]
    fn connection_errors_are_told_from_listener_errors() {
        use std::io::{Error, ErrorKind};
        assert!(is_connection_error(&Error::from(ErrorKind::ConnectionAborted)));
        assert!(is_connection_error(&Error::from(ErrorKind::ConnectionReset)));
        // EMFILE, ENFILE: back off.
        assert!(!is_connection_error(&Error::from_raw_os_error(24)));
        assert!(!is_connection_error(&Error::from_raw_os_error(23)));
    }
}
