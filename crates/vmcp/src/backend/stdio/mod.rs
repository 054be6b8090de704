//! The stdio transport: MCP servers run as child processes speaking newline-delimited JSON-RPC
//! on stdin/stdout.
//!
//! Every stdio backend has the gateway's own child, kept running by a supervisor that restarts it
//! with backoff: discovery, catalog refreshes and `/status` use it, and so does every client when
//! the backend's `isolation` is `shared`. With `perPrincipal` or `perSession`, client requests go
//! to children of their own ([`super::pool`]), keyed by the request's owner.
//!
//! Invariants:
//! - Requests are accepted only while the gateway's child is Ready; otherwise they fail at once
//!   with [`BackendError::Unavailable`] (no queueing).
//! - A request reaches the child of its owner (or the shared one); answers to server-to-client
//!   requests and notifications go to the child the request ran on and never start one.
//! - Stdio backends get no per-request credentials, only their static `env`; the caller decides
//!   which child serves a request and is passed to the mux for cancellation.
//! - No child outlives the backend: shutdown stops the supervisor and every pooled child and
//!   returns once their process groups are gone (see [`child`]).

mod child;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::mux::{Backoff, Mux, Routing};
use super::pool::{Connector, Isolated, Pool, Run};
use super::{BackendError, BackendSpec, Status};
use crate::config::{DEFAULT_MAX_PROCESSES, DEFAULT_PROCESS_IDLE_TIMEOUT};

/// A backend reached over stdio.
pub struct StdioBackend {
    shared: Arc<Shared>,
    supervisor: super::mux::Supervisor,
    /// Which child serves whom; dedicated children unless `isolation: shared`.
    isolated: Isolated,
}

struct Shared {
    spec: BackendSpec,
    status: Status,
    /// The gateway's child's mux while it is Ready.
    conn: super::mux::Current,
    /// The gateway's child's pid (0 when none).
    pid: AtomicU32,
    stop: CancellationToken,
}

impl StdioBackend {
    /// Starts the supervisor, which spawns the gateway's child and keeps it running. Must be
    /// called inside a Tokio runtime.
    pub fn start(spec: BackendSpec) -> Self {
        let status = Status::default();
        let stop = CancellationToken::new();
        let isolated = Isolated::new(spec.isolation, || {
            Pool::new(
                spec.name.clone(),
                Arc::new(ChildConnector { spec: spec.clone() }),
                ("maxProcesses", spec.config.max_processes.unwrap_or(DEFAULT_MAX_PROCESSES)),
                spec.config.process_idle_timeout.unwrap_or(DEFAULT_PROCESS_IDLE_TIMEOUT),
                status.unroutable.clone(),
                stop.child_token(),
            )
        });
        let shared = Arc::new(Shared {
            spec,
            status,
            conn: Default::default(),
            pid: AtomicU32::new(0),
            stop,
        });
        let supervisor =
            super::mux::Supervisor::spawn(shared.stop.clone(), supervise(shared.clone()));
        Self { shared, supervisor, isolated }
    }

    /// The gateway's own child's session (shared by every client with `isolation: shared`), or
    /// why there is none.
    pub fn mux(&self) -> Result<Arc<Mux>, BackendError> {
        self.shared.conn.ready(&self.shared.spec.name, &self.shared.status)
    }

    /// Which child serves whom.
    pub fn isolated(&self) -> &Isolated {
        &self.isolated
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.shared.spec.name
    }

    /// The pids (also process group ids) of every running child: the gateway's and the
    /// dedicated ones.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = self.isolated.pids();
        pids.extend(self.pid());
        pids
    }

    /// The pid of the gateway's child (also its process group id), for diagnostics.
    pub fn pid(&self) -> Option<u32> {
        match self.shared.pid.load(Ordering::Relaxed) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// Connection status (state, server info, last error, change feed).
    pub fn status(&self) -> &Status {
        &self.shared.status
    }

    /// See [`super::Backend::shutdown`]. Stops the supervisor and every dedicated child; returns
    /// once every process group is gone and reaped. Idempotent; concurrent calls all wait.
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
        run_once(&shared).await;
        if shared.stop.is_cancelled() {
            return;
        }
        let delay = backoff.delay(started.elapsed());
        tracing::info!(backend = %shared.spec.name, ?delay, "stdio backend down; restarting");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shared.stop.cancelled() => return,
        }
        shared.status.connecting();
    }
}

/// One run of the gateway's child. Returns once it is over and the process group is gone;
/// status is Down (with the reason) unless the backend is stopping.
async fn run_once(shared: &Shared) {
    let routing = Routing { owner: None, unroutable: shared.status.unroutable.clone() };
    let r = child::Run { spec: &shared.spec, routing, stop: &shared.stop, pid: &shared.pid };
    child::run(
        r,
        |mux, info| {
            tracing::info!(backend = %shared.spec.name, version = %info.protocol_version, "stdio backend ready");
            // Connection first: readers react to Ready at once and must find it.
            shared.conn.set(Some(mux.clone()));
            shared.status.ready(info);
        },
        |why| {
            shared.conn.set(None);
            if let Some(reason) = why {
                tracing::warn!(backend = %shared.spec.name, %reason, "stdio backend down");
                shared.status.down(reason);
            }
        },
    )
    .await;
}

/// Runs one dedicated child for the pool.
struct ChildConnector {
    spec: BackendSpec,
}

impl Connector for ChildConnector {
    fn run<'a>(&'a self, run: Run<'a>) -> futures::future::BoxFuture<'a, ()> {
        let Run { routing, stop, pid, ready, gone } = run;
        let r = child::Run { spec: &self.spec, routing, stop, pid };
        Box::pin(child::run(r, |mux, _info| ready(mux), gone))
    }
}
