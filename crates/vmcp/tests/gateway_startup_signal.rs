//! A termination signal that arrives while vmcp is still starting (a stdio backend spawned but
//! not yet initialized) goes through the orderly shutdown: vmcp exits 0 and leaves no child
//! behind, even one that ignores SIGTERM.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{alive, children_of, temp_path, vmcp_bin};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Kills vmcp if a test fails before it has exited.
struct Vmcp(Child);

impl Drop for Vmcp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts vmcp on a config whose only backend runs `script` (a child that never answers
/// `initialize`) and returns it with the backend's pid, once that child exists.
fn start_with_silent_backend(script: &str) -> (Vmcp, i32) {
    let config = temp_path("startup-signal", "yaml");
    let yaml = format!(
        "name: startup-signal\nbackends:\n  - name: silent\n    transport: stdio\n    command: sh\n    args: [\"-c\", {script:?}]\n"
    );
    std::fs::write(&config, yaml).unwrap();
    let child = Command::new(vmcp_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let vmcp = Vmcp(child);
    let pid = vmcp.0.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(20);
    let backend = loop {
        // The backend is `sh` exec'ing `sleep`, in its own process group under vmcp.
        if let Some(&c) = children_of(pid).first() {
            break c;
        }
        assert!(Instant::now() < deadline, "vmcp started no backend child");
        std::thread::sleep(Duration::from_millis(20));
    };
    (vmcp, backend)
}

/// Waits (bounded) for vmcp to exit and returns its exit code.
fn exit_code(vmcp: &mut Vmcp, within: Duration) -> i32 {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = vmcp.0.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "vmcp did not exit within {within:?} of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_gone(pid: i32, within: Duration) {
    let deadline = Instant::now() + within;
    while alive(pid) {
        assert!(Instant::now() < deadline, "backend child {pid} outlived vmcp");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_during_startup_stops_vmcp_and_its_backend() {
    let (mut vmcp, backend) = start_with_silent_backend("exec sleep 300");
    kill(Pid::from_raw(vmcp.0.id() as i32), Signal::SIGTERM).unwrap();
    // The backend's initialize would wait much longer than this: the signal must cut it short.
    assert_eq!(exit_code(&mut vmcp, Duration::from_secs(10)), 0, "orderly exit status");
    wait_gone(backend, Duration::from_secs(5));
}

#[test]
fn a_backend_that_ignores_sigterm_is_killed_after_its_deadline() {
    // `trap '' TERM` makes the shell ignore SIGTERM; `sleep` in the foreground inherits that.
    let (mut vmcp, backend) = start_with_silent_backend("trap '' TERM; sleep 300");
    kill(Pid::from_raw(vmcp.0.id() as i32), Signal::SIGTERM).unwrap();
    // server.connections.backendShutdownTimeout (5 s) bounds the wait, then the group is killed.
    assert_eq!(exit_code(&mut vmcp, Duration::from_secs(15)), 0, "orderly exit status");
    wait_gone(backend, Duration::from_secs(5));
}
