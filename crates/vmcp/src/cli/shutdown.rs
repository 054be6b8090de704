//! SIGINT/SIGTERM handling for `serve`: the first signal starts an orderly shutdown, a second one
//! exits at once.
//!
//! Invariant: no exit path leaves a stdio backend's process group behind. The orderly path stops
//! backends through `Gateway::shutdown` and then kills whatever group is left after its deadline;
//! the forced path kills every group with SIGKILL, synchronously, before `exit` (which runs no
//! destructors, so `kill_on_drop` would not fire, and it would reach only the group leader).

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};

use crate::backend::Backend;
use crate::backend::registry::Backends;

/// The termination signals, listened to from the moment this exists (so a signal during
/// start-up is not the default disposition, which would kill vmcp and leave its children).
pub struct Signals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Installs the handlers. One that cannot be installed is logged and never fires.
    pub fn install() -> Signals {
        let open = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(signal = name, error = %e, "cannot listen for signal");
                None
            }
        };
        Signals {
            interrupt: open(SignalKind::interrupt(), "SIGINT"),
            terminate: open(SignalKind::terminate(), "SIGTERM"),
        }
    }

    /// Waits for the next SIGINT or SIGTERM and returns it.
    pub async fn recv(&mut self) -> Signal {
        async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
            if let Some(s) = s
                && s.recv().await.is_some()
            {
                return;
            }
            // No handler, or its stream ended: this signal never arrives.
            std::future::pending().await
        }
        tokio::select! {
            _ = next(&mut self.interrupt) => Signal::SIGINT,
            _ = next(&mut self.terminate) => Signal::SIGTERM,
        }
    }
}

/// SIGKILLs the process group of every stdio backend's children (the gateway's own and those
/// dedicated to clients), those a reload retired included. Synchronous, so it can run right
/// before `exit`.
pub fn kill_stdio_groups(backends: &Backends) -> usize {
    let mut killed = 0;
    let retiring = backends.retiring().into_iter().map(|b| (std::sync::Arc::from("(retired)"), b));
    for (name, backend) in backends.iter().chain(retiring) {
        let name: std::sync::Arc<str> = name;
        let Backend::Stdio(b) = &*backend else { continue };
        for pid in b.pids() {
            // Never group 0 (our own) or 1; a pid that does not fit is not one we spawned.
            let Ok(pgid) = i32::try_from(pid) else { continue };
            if pgid <= 1 {
                continue;
            }
            // ESRCH: the group is already gone, which is the point.
            if killpg(Pid::from_raw(pgid), Signal::SIGKILL).is_ok() {
                tracing::warn!(backend = %name, pgid, "killed stdio backend process group");
                killed += 1;
            }
        }
    }
    killed
}

/// The second signal: kill the stdio groups and exit now with 128 + the signal's number.
pub fn force_exit(backends: &Backends, signal: Signal) -> ! {
    tracing::warn!(%signal, "second signal; exiting at once");
    kill_stdio_groups(backends);
    std::process::exit(128 + signal as i32)
}
