//! The two servers under test, as child processes: started, waited for (bounded, by their ready
//! lines) and always stopped, because [`Server`] terminates its process on drop.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How much of a child's stderr is kept for error messages.
const STDERR_TAIL: usize = 8 * 1024;

/// A running server process; SIGTERM (then SIGKILL) when dropped.
pub struct Server {
    name: String,
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// Removed on drop (the generated config, for vmcp).
    temp_file: Option<PathBuf>,
    /// `http://HOST:PORT/mcp`.
    pub url: String,
}

impl Server {
    fn spawn(name: &str, mut cmd: Command, temp_file: Option<PathBuf>) -> anyhow::Result<Server> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("starting {name} ({cmd:?})"))?;
        let (tx, lines) = mpsc::channel();
        // Both pipes are drained for the child's whole life, so it never blocks writing logs.
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut err) = child.stderr.take() {
            let tail = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    match err.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let Ok(mut t) = tail.lock() else { break };
                            t.push_str(&String::from_utf8_lossy(&buf[..n]));
                            if t.len() > 2 * STDERR_TAIL {
                                let mut cut = t.len() - STDERR_TAIL;
                                while !t.is_char_boundary(cut) {
                                    cut += 1;
                                }
                                t.drain(..cut);
                            }
                        }
                    }
                }
            });
        }
        Ok(Server { name: name.to_owned(), child, lines, stderr, temp_file, url: String::new() })
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The end of what the process wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        let t = self.stderr.lock().map(|t| t.clone()).unwrap_or_default();
        let start = t.len().saturating_sub(2048);
        t.get(start..).unwrap_or(&t).to_owned()
    }

    /// Waits (until `deadline`) for a stdout line satisfying `want`; earlier lines are skipped.
    fn wait_line(
        &mut self,
        deadline: Instant,
        want: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if want(&line) => return Ok(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    bail!("{} not ready in time; stderr:\n{}", self.name, self.stderr_tail())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // Give the stderr reader a moment to collect the last words.
                    std::thread::sleep(Duration::from_millis(100));
                    let status = self.child.try_wait().ok().flatten();
                    bail!(
                        "{} closed its stdout before it was ready (exit {status:?}); stderr:\n{}",
                        self.name,
                        self.stderr_tail()
                    )
                }
            }
        }
    }

    /// `vmcp-fixture http --port 0 --json-response --era both`.
    pub fn fixture(bin: &Path, ready_within: Duration) -> anyhow::Result<Server> {
        let args = ["--json-response", "--era", "both", "--name", "bench-fixture"];
        Server::fixture_with(bin, &args, ready_within)
    }

    /// `vmcp-fixture http --port 0 --host 127.0.0.1` with `args`.
    pub fn fixture_with(
        bin: &Path,
        args: &[&str],
        ready_within: Duration,
    ) -> anyhow::Result<Server> {
        let mut cmd = Command::new(bin);
        cmd.args(["http", "--port", "0", "--host", "127.0.0.1"]).args(args);
        let mut s = Server::spawn("vmcp-fixture", cmd, None)?;
        let line =
            s.wait_line(Instant::now() + ready_within, |l| l.starts_with("listening on "))?;
        s.url = line.trim_start_matches("listening on ").trim().to_owned();
        Ok(s)
    }

    /// `vmcp serve --config <yaml written to a temp file> --port 0`.
    pub fn vmcp_config(bin: &Path, yaml: &str, ready_within: Duration) -> anyhow::Result<Server> {
        // One file per vmcp started (the `auth` preset starts two).
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("vmcp-bench-{}-{seq}.yaml", std::process::id());
        let config = std::env::temp_dir().join(name);
        std::fs::write(&config, yaml)
            .with_context(|| format!("writing the config {}", config.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve").arg("--config").arg(&config);
        cmd.args(["--host", "127.0.0.1", "--port", "0"]);
        let mut s = Server::spawn("vmcp", cmd, Some(config))?;
        let deadline = Instant::now() + ready_within;
        let line = s.wait_line(deadline, |l| l.contains(" listening on http://"))?;
        s.url = line
            .split_once("listening on ")
            .map(|(_, u)| u.trim().to_owned())
            .context("no URL in vmcp's listening line")?;
        // The summary's last line is the catalog's; the router is served right after it.
        let catalog = s.wait_line(deadline, |l| l.trim_start().starts_with("catalog:"))?;
        if catalog.contains("catalog: 0 tools") {
            bail!("vmcp has no tools ({}); stderr:\n{}", catalog.trim(), s.stderr_tail());
        }
        Ok(s)
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL.
    fn stop(&mut self, grace: Duration) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
        if let Some(f) = &self.temp_file {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Resident memory of a process (`VmRSS` and `VmHWM`, KiB) from `/proc/<pid>/status`.
pub fn memory_kib(pid: i32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (user + system, all threads) a process has used so far.
pub fn cpu_time(pid: i32) -> Option<Duration> {
    // `/proc/<pid>/stat` counts in USER_HZ ticks, which Linux fixes at 100 per second.
    const TICK: Duration = Duration::from_millis(10);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ...`: comm may hold spaces, so count fields after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11); // state is field 3; utime is field 14
    let utime: u32 = fields.next()?.parse().ok()?;
    let stime: u32 = fields.next()?.parse().ok()?;
    Some(TICK * (utime + stime))
}
