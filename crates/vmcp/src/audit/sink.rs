//! Where audit lines go: a dedicated writer thread behind a bounded queue.
//!
//! The request path only ever calls [`Sink::send`], which never waits: when the queue is full
//! (the file is slow, blocked, or the disk is full) the line is dropped and counted, and a
//! warning is logged at most once per [`WARN_INTERVAL`]. The thread takes every line queued
//! and writes them in one `write_all` per [`BATCH_BYTES`] (whole lines, never interleaved),
//! and counts lines it could not write.
//!
//! Why not a channel: waking the writer for every line costs the request path a system call
//! and a context switch. Here the request path only pushes under a short lock; the writer is
//! woken only when it has gone idle, and while lines keep coming it writes what gathered every
//! [`LINGER`]. A line reaches the file at most about `LINGER` after it was queued.
//!
//! Bounds: [`QUEUE_LINES`] lines and [`QUEUE_BYTES`] bytes waiting at most.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Lines waiting to be written, at most.
pub const QUEUE_LINES: usize = 4096;
/// Bytes waiting to be written, at most (64 MiB).
pub const QUEUE_BYTES: usize = 64 << 20;
/// Bytes the writer gathers into one write at most (a single longer line is written alone).
pub const BATCH_BYTES: usize = 256 << 10;
/// How long a busy writer lets lines gather between two writes.
pub const LINGER: Duration = Duration::from_millis(5);
/// Shortest time between two warnings about dropped or unwritten lines.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Counters shown in `/status`.
#[derive(Default)]
pub struct Stats {
    /// Lines written.
    pub written: AtomicU64,
    /// Lines dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Lines the writer could not write (I/O error).
    pub failed: AtomicU64,
    /// Bytes waiting in the queue.
    queued_bytes: AtomicUsize,
    /// Lines waiting in the queue.
    queued: AtomicUsize,
}

impl Stats {
    /// Lines waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

/// Rate-limits one kind of warning.
struct Throttle {
    start: Instant,
    /// Milliseconds since `start` of the last warning, plus one (0: never).
    last: AtomicU64,
}

impl Throttle {
    fn new() -> Throttle {
        Throttle { start: Instant::now(), last: AtomicU64::new(0) }
    }

    /// Whether to warn now.
    fn ready(&self) -> bool {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
        let last = self.last.load(Ordering::Relaxed);
        let interval = WARN_INTERVAL.as_millis() as u64;
        (last == 0 || now.saturating_sub(last) >= interval)
            && self.last.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

/// Where the writer thread writes.
pub enum Target {
    /// Standard output.
    Stdout,
    /// A file opened at start (created with mode 0600, appended to).
    File(std::fs::File),
    /// A FIFO, opened by the writer thread (opening blocks until a reader comes).
    Fifo(PathBuf),
}

impl Target {
    /// Opens `path` (or standard output): a regular file now, so a bad path stops start-up; a
    /// FIFO later, in the writer thread.
    pub fn open(path: Option<&Path>) -> std::io::Result<Target> {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        let Some(path) = path else { return Ok(Target::Stdout) };
        if std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo()) {
            return Ok(Target::Fifo(path.to_owned()));
        }
        let file = std::fs::OpenOptions::new().append(true).create(true).mode(0o600).open(path)?;
        Ok(Target::File(file))
    }
}

/// Lines between the request path and the writer.
#[derive(Default)]
struct Queue {
    lines: Mutex<Vec<String>>,
    /// The writer is parked waiting for a line: the next sender wakes it.
    idle: AtomicBool,
    /// The sink is gone: the writer writes what is left and ends.
    closed: AtomicBool,
}

impl Queue {
    fn lines(&self) -> MutexGuard<'_, Vec<String>> {
        self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The sending side, held by the auditor.
pub struct Sink {
    queue: Arc<Queue>,
    writer: std::thread::Thread,
    stats: Arc<Stats>,
    drops: Throttle,
}

impl Sink {
    /// Starts the writer thread.
    pub fn start(target: Target) -> std::io::Result<Sink> {
        let queue = Arc::new(Queue::default());
        let stats = Arc::new(Stats::default());
        let (thread_queue, thread_stats) = (queue.clone(), stats.clone());
        let handle = std::thread::Builder::new()
            .name("vmcp-audit".into())
            .spawn(move || write_lines(target, &thread_queue, &thread_stats))?;
        Ok(Sink { queue, writer: handle.thread().clone(), stats, drops: Throttle::new() })
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Queues one line (without its newline); never waits.
    pub fn send(&self, line: String) {
        let len = line.len();
        let s = &self.stats;
        let room = s.queued_bytes.fetch_add(len, Ordering::Relaxed) + len <= QUEUE_BYTES;
        let count = s.queued.fetch_add(1, Ordering::Relaxed) + 1;
        let sent = room && count <= QUEUE_LINES;
        if sent {
            self.queue.lines().push(line);
            if self.queue.idle.swap(false, Ordering::SeqCst) {
                self.writer.unpark();
            }
        } else {
            s.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            s.queued.fetch_sub(1, Ordering::Relaxed);
            let dropped = s.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if self.drops.ready() {
                tracing::warn!(
                    dropped,
                    "audit events dropped: the audit log is not keeping up (queue of {QUEUE_LINES} \
                     events full); see `audit` in /status"
                );
            }
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::SeqCst);
        self.writer.unpark();
    }
}

fn write_lines(target: Target, queue: &Queue, stats: &Stats) {
    let failures = Throttle::new();
    // Counts lines that never reach a file.
    let lost = |lines: Vec<String>| {
        for line in lines {
            stats.queued_bytes.fetch_sub(line.len(), Ordering::Relaxed);
            stats.queued.fetch_sub(1, Ordering::Relaxed);
            stats.failed.fetch_add(1, Ordering::Relaxed);
        }
    };
    let mut file = match target {
        Target::Stdout => None,
        Target::File(f) => Some(f),
        // Blocks until a reader opens the FIFO; meanwhile the queue fills and lines are dropped.
        Target::Fifo(path) => match std::fs::OpenOptions::new().append(true).open(&path) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot open the audit log");
                // Keep draining so the counters say what happened.
                while !queue.closed.load(Ordering::SeqCst) {
                    lost(std::mem::take(&mut *queue.lines()));
                    std::thread::park_timeout(LINGER * 20);
                }
                lost(std::mem::take(&mut *queue.lines()));
                return;
            }
        },
    };
    let mut batch = String::new();
    loop {
        let lines = std::mem::take(&mut *queue.lines());
        if lines.is_empty() {
            if queue.closed.load(Ordering::SeqCst) {
                return;
            }
            queue.idle.store(true, Ordering::SeqCst);
            // A line pushed before `idle` was set woke nobody: look once more before parking.
            if queue.lines().is_empty() && !queue.closed.load(Ordering::SeqCst) {
                std::thread::park();
            }
            queue.idle.store(false, Ordering::SeqCst);
            continue;
        }
        let mut pending = lines.into_iter().peekable();
        while pending.peek().is_some() {
            batch.clear();
            let mut count = 0u64;
            while let Some(line) = pending.next_if(|_| batch.len() < BATCH_BYTES) {
                stats.queued_bytes.fetch_sub(line.len(), Ordering::Relaxed);
                stats.queued.fetch_sub(1, Ordering::Relaxed);
                batch.push_str(&line);
                batch.push('\n');
                count += 1;
            }
            let result = match &mut file {
                Some(f) => f.write_all(batch.as_bytes()),
                None => std::io::stdout().lock().write_all(batch.as_bytes()),
            };
            match result {
                Ok(()) => {
                    stats.written.fetch_add(count, Ordering::Relaxed);
                }
                Err(e) => {
                    let failed = stats.failed.fetch_add(count, Ordering::Relaxed) + count;
                    if failures.ready() {
                        tracing::warn!(error = %e, failed, "audit events could not be written");
                    }
                }
            }
        }
        // Let the next lines gather rather than waking for each (see the module doc).
        if !queue.closed.load(Ordering::SeqCst) {
            std::thread::sleep(LINGER);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn lines_are_appended_whole() {
        let path = std::env::temp_dir().join(format!("vmcp-audit-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let sink = Sink::start(Target::open(Some(&path)).unwrap()).unwrap();
        for i in 0..100 {
            sink.send(format!("{{\"n\":{i}}}"));
        }
        wait("100 lines written", || sink.stats().written.load(Ordering::Relaxed) == 100);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 100);
        assert_eq!(lines[99], "{\"n\":99}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_full_disk_counts_failures_and_never_blocks() {
        let sink = Sink::start(Target::open(Some(Path::new("/dev/full"))).unwrap()).unwrap();
        let start = Instant::now();
        for _ in 0..10_000 {
            sink.send("x".repeat(100));
        }
        assert!(start.elapsed() < Duration::from_secs(2), "send waited");
        let s = sink.stats();
        wait("every line accounted for", || {
            s.failed.load(Ordering::Relaxed) + s.dropped.load(Ordering::Relaxed) == 10_000
        });
        assert_eq!(s.written.load(Ordering::Relaxed), 0);
        assert!(s.failed.load(Ordering::Relaxed) > 0);
    }
}
