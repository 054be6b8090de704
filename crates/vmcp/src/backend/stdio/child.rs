//! One run of a stdio child process: spawn it in its own process group, `initialize`, serve
//! newline-delimited JSON-RPC through a [`Mux`] until it exits, a pipe breaks or the run is
//! stopped; then close the mux (pending requests fail at once), terminate the whole group and reap
//! the child.
//!
//! Invariants:
//! - When [`run`] returns, no process of the child's group survives and the child is reaped: TERM
//!   to the group, up to 2s grace, KILL to the group, wait.
//! - The child gets SIGKILL if the gateway dies without cleaning up (`PR_SET_PDEATHSIG`), and
//!   `kill_on_drop` covers a dropped run.
//! - stderr is always drained (logged at debug level), so the child never blocks on a full pipe.
//! - stdout lines are bounded by `operational.maxBackendReplyBytes`; a longer one is skipped,
//!   and the request it answers (its `id` read from the line's first bytes) fails at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::auth::Caller;
use crate::backend::mux::{Mux, Outbound, Routing};
use crate::backend::{BackendError, BackendSpec, ServerInfo};
use crate::protocol::Message;

/// How much of an overlong line is kept, to find the id of the request it answers.
const HEAD_KEPT: usize = 256;
/// Bytes kept from the end of an over-long line, where the `id` is when a server writes it after
/// the `result`.
const TAIL_KEPT: usize = 64;
/// Longest stderr line logged whole.
const MAX_STDERR_LINE: usize = 64 * 1024;
/// Grace period between TERM and KILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// What one run of a child needs.
pub(super) struct Run<'a> {
    /// The backend.
    pub spec: &'a BackendSpec,
    /// How the child's unsolicited messages are attributed.
    pub routing: Routing,
    /// Ends the run.
    pub stop: &'a CancellationToken,
    /// Where the running child's pid is published (0 when none).
    pub pid: &'a AtomicU32,
}

/// One run of the child: spawn, handshake, serve. `ready` gets the mux once the handshake is
/// done. `gone` is told why the run ended (`None`: stopped) as soon as it ends, before the mux is
/// closed and the group torn down, so callers stop routing to it first. Returns once the process
/// group is gone.
pub(super) async fn run(
    r: Run<'_>,
    ready: impl FnOnce(&Arc<Mux>, ServerInfo) + Send,
    gone: impl FnOnce(Option<&str>) + Send,
) {
    let name = &r.spec.name;
    let mut child = match spawn(r.spec) {
        Ok(child) => child,
        Err(reason) => {
            tracing::warn!(backend = %name, %reason, "stdio backend failed to start");
            gone(Some(&reason));
            return;
        }
    };
    let pid = child.id().unwrap_or(0);
    r.pid.store(pid, Ordering::Relaxed);
    // `process_group(0)` makes the child the leader of a group whose id is its pid.
    let pgid = Pid::from_raw(pid as i32);

    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (Some(stdin), Some(stdout), Some(stderr)) = (stdin, stdout, stderr) else {
        // Cannot happen with all three piped; clean up rather than panic.
        gone(Some("child pipes unavailable"));
        terminate_group(&mut child, pgid).await;
        r.pid.store(0, Ordering::Relaxed);
        return;
    };
    // Detached on purpose: it ends at EOF, once every process of the group has closed stderr.
    tokio::spawn(log_stderr(stderr, name.clone()));
    let (tx, rx) = mpsc::channel(256);
    let mut writer = tokio::spawn(write_stdin(stdin, rx));
    let mux = Arc::new(Mux::new(
        name.clone(),
        Arc::new(StdinOutbound { tx, backend: name.clone() }),
        r.spec.events.clone(),
        r.routing,
    ));
    let limit = r.spec.limits.max_reply_bytes;
    let mut reader = tokio::spawn(read_stdout(stdout, (*mux).clone(), name.clone(), limit));

    let outcome = tokio::select! {
        _ = r.stop.cancelled() => None,
        reason = serve(r.spec, &mux, ready) => Some(reason),
        status = child.wait() => Some(match status {
            Ok(status) => format!("process exited: {status}"),
            Err(e) => format!("waiting for process: {e}"),
        }),
        reason = &mut reader => Some(reason.unwrap_or_else(|e| format!("stdout reader failed: {e}"))),
        reason = &mut writer => Some(reason.unwrap_or_else(|e| format!("stdin writer failed: {e}"))),
    };

    // Stop routing to this run first, so new requests fail fast while the group is torn down.
    gone(outcome.as_deref());
    mux.close(outcome.as_deref().unwrap_or("backend shut down"));
    reader.abort();
    writer.abort();
    terminate_group(&mut child, pgid).await;
    r.pid.store(0, Ordering::Relaxed);
}

fn spawn(spec: &BackendSpec) -> Result<Child, String> {
    let config = &spec.config;
    let program = config.command.as_deref().ok_or("no command configured")?;
    let mut cmd = Command::new(program);
    cmd.args(&config.args)
        .envs(&config.env)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Its own group, so the whole tree can be signalled; killed if the gateway drops it.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &config.cwd {
        cmd.current_dir(cwd);
    }
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which is
    // async-signal-safe. Should the gateway die without its cleanup (SIGKILL, a crash), the
    // kernel then kills the child instead of leaving it orphaned.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    cmd.spawn().map_err(|e| format!("spawning {program}: {e}"))
}

/// Handshake, then hand the mux to `ready` and serve until the run ends elsewhere (this never
/// returns after a successful handshake). Returns why the handshake failed.
async fn serve(
    spec: &BackendSpec,
    mux: &Arc<Mux>,
    ready: impl FnOnce(&Arc<Mux>, ServerInfo),
) -> String {
    match mux.initialize(spec.timeout).await {
        Err(reason) => return reason,
        Ok(info) => ready(mux, info),
    }
    std::future::pending().await
}

/// TERM the group, give it [`TERM_GRACE`] to exit, KILL whatever is left, reap the child.
async fn terminate_group(child: &mut Child, pgid: Pid) {
    if pgid.as_raw() <= 0 {
        // Never signal group 0 (our own) or -1 (everything).
        let _ = child.kill().await;
        return;
    }
    let _ = killpg(pgid, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + TERM_GRACE;
    // Reap the leader first: an unreaped zombie would keep the group looking alive.
    let _ = tokio::time::timeout_at(deadline, child.wait()).await;
    while tokio::time::Instant::now() < deadline && killpg(pgid, None).is_ok() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ESRCH when the group is already empty; nothing else can fail here.
    let _ = killpg(pgid, Signal::SIGKILL);
    if let Err(e) = child.wait().await {
        tracing::warn!(pid = pgid.as_raw(), error = %e, "reaping stdio backend failed");
    }
}

/// Writes queued messages to the child's stdin; returns why it stopped.
async fn write_stdin(mut stdin: ChildStdin, mut rx: mpsc::Receiver<Vec<u8>>) -> String {
    while let Some(line) = rx.recv().await {
        if let Err(e) = stdin.write_all(&line).await {
            return format!("writing to stdin: {e}");
        }
        if let Err(e) = stdin.flush().await {
            return format!("writing to stdin: {e}");
        }
    }
    "stdin closed".into()
}

/// Reads stdout line by line into the mux, each line at most `limit` bytes; returns why it
/// stopped.
async fn read_stdout(
    stdout: impl AsyncRead + Unpin,
    mux: Mux,
    backend: Arc<str>,
    limit: usize,
) -> String {
    let mut reader = BufReader::new(stdout);
    let (mut line, mut tail) = (Vec::new(), Vec::new());
    loop {
        match read_line(&mut reader, &mut line, &mut tail, limit).await {
            Err(e) => return format!("reading stdout: {e}"),
            Ok(Line::Eof) => return "stdout closed".into(),
            Ok(Line::TooLong) => {
                tracing::warn!(backend = %backend, limit, "stdout line too long; skipped");
                // Its request would otherwise wait for a reply that never comes.
                if let Some(id) = leading_id(&line).or_else(|| trailing_id(&tail)) {
                    let reason = crate::backend::limit::TooLarge { limit }.to_string();
                    mux.fail(id, BackendError::Transport { backend: backend.to_string(), reason });
                }
            }
            Ok(Line::Complete) => {
                let text = line.trim_ascii();
                if text.is_empty() {
                    continue;
                }
                match Message::parse(text) {
                    Ok(message) => mux.handle_incoming(message),
                    Err(e) => tracing::warn!(
                        backend = %backend,
                        error = %e,
                        line = %String::from_utf8_lossy(&text[..text.len().min(200)]),
                        "non-JSON-RPC line on stdout; skipped"
                    ),
                }
            }
        }
    }
}

async fn log_stderr(stderr: impl AsyncRead + Unpin, backend: Arc<str>) {
    let mut reader = BufReader::new(stderr);
    let (mut line, mut tail) = (Vec::new(), Vec::new());
    loop {
        match read_line(&mut reader, &mut line, &mut tail, MAX_STDERR_LINE).await {
            Err(_) | Ok(Line::Eof) => return,
            Ok(Line::TooLong) => tracing::debug!(backend = %backend, "stderr: (long line skipped)"),
            Ok(Line::Complete) => {
                tracing::debug!(backend = %backend, "stderr: {}", String::from_utf8_lossy(line.trim_ascii_end()));
            }
        }
    }
}

/// How [`read_line`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A line (possibly the unterminated last one) is in the buffer, without its newline.
    Complete,
    /// The line exceeded the limit and was discarded.
    TooLong,
    /// End of stream, nothing read.
    Eof,
}

/// Reads one `\n`-terminated line into `buf` (cleared first), holding at most `max` bytes. A
/// longer line is consumed whole and reported as [`Line::TooLong`], with only its first
/// [`HEAD_KEPT`] bytes left in `buf` and its last [`TAIL_KEPT`] in `tail`.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    tail: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    buf.clear();
    tail.clear();
    let mut too_long = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (too_long, buf.is_empty()) {
                (true, _) => Line::TooLong,
                (false, true) => Line::Eof,
                (false, false) => Line::Complete,
            });
        }
        let (chunk, consumed, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                let keep = HEAD_KEPT.min(max);
                let room = keep.saturating_sub(buf.len()).min(chunk.len());
                buf.extend_from_slice(&chunk[..room]);
                buf.truncate(keep);
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        tail.extend_from_slice(&chunk[chunk.len().saturating_sub(TAIL_KEPT)..]);
        let excess = tail.len().saturating_sub(TAIL_KEPT);
        tail.drain(..excess);
        reader.consume(consumed);
        if done {
            return Ok(if too_long { Line::TooLong } else { Line::Complete });
        }
    }
}

/// The numeric `id` of a JSON-RPC message, read from the first bytes of its line: found when it
/// is a top-level key before any nested object or array, as common SDKs write it. Only numeric ids
/// matter here: the mux's own are numbers.
fn leading_id(head: &[u8]) -> Option<i64> {
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(head.get(..e.valid_up_to())?).ok()?,
    };
    let mut rest = valid.trim_start().strip_prefix('{')?;
    loop {
        let (key, after) = json_string(rest.trim_start())?;
        rest = after.trim_start().strip_prefix(':')?.trim_start();
        if key == "id" {
            let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '-'))?;
            return rest[..end].parse().ok();
        }
        if rest.starts_with('"') {
            rest = json_string(rest)?.1;
        } else if rest.starts_with(['{', '[']) {
            return None;
        } else {
            rest = &rest[rest.find([',', '}'])?..];
        }
        rest = rest.trim_start().strip_prefix(',')?;
    }
}

/// The numeric `id` of a JSON-RPC message whose last key it is (`..."id":7}`), read from the
/// last bytes of its line.
fn trailing_id(tail: &[u8]) -> Option<i64> {
    let text = String::from_utf8_lossy(tail);
    let rest = text.trim_end().strip_suffix('}')?.trim_end();
    let start = rest.rfind(|c: char| !(c.is_ascii_digit() || c == '-'))? + 1;
    let number: i64 = rest[start..].parse().ok()?;
    let key = rest[..start].trim_end().strip_suffix(':')?.trim_end();
    key.ends_with("\"id\"").then_some(number)
}

/// A JSON string at the start of `s`: its raw contents (escapes left as they are) and the rest.
fn json_string(s: &str) -> Option<(&str, &str)> {
    let body = s.strip_prefix('"')?;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = true,
            (false, '"') => return Some((&body[..i], &body[i + 1..])),
            _ => {}
        }
    }
    None
}

/// Sends messages by queueing lines for the stdin writer.
struct StdinOutbound {
    tx: mpsc::Sender<Vec<u8>>,
    backend: Arc<str>,
}

impl Outbound for StdinOutbound {
    fn send<'a>(
        &'a self,
        _caller: &'a Caller,
        _headers: &'a crate::backend::Forwarded,
        message: Message,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let mut line = message.to_bytes();
            // Raw bodies keep the sender's formatting. In valid JSON a newline byte can only be
            // insignificant whitespace (inside strings it is escaped), so a space is equivalent
            // and keeps the message on one line.
            for b in line.iter_mut().filter(|b| **b == b'\n') {
                *b = b' ';
            }
            line.push(b'\n');
            self.tx.send(line).await.map_err(|_| BackendError::Transport {
                backend: self.backend.to_string(),
                reason: "stdin closed".into(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_ids_are_found_before_nested_values() {
        let id = |s: &str| leading_id(s.as_bytes());
        assert_eq!(id(r#"{"jsonrpc":"2.0","id":42,"result":{"content":[{"type":"te"#), Some(42));
        assert_eq!(id(r#"{ "id" : 7 , "jsonrpc": "2.0""#), Some(7));
        assert_eq!(id(r#"{"jsonrpc":"2.0","x":"a\"id\":3","id":5,"#), Some(5));
        assert_eq!(id(r#"{"jsonrpc":"2.0","result":{"id":9},"id":1}"#), None);
        assert_eq!(id(r#"{"jsonrpc":"2.0","id":"s","result""#), None);
        assert_eq!(id(r#"{"jsonrpc":"2.0","id":12"#), None); // cut inside the number
        assert_eq!(id("not json"), None);
    }

    #[test]
    fn trailing_ids_are_found_after_the_result() {
        assert_eq!(trailing_id(br#"xxxx"]}},"id":42}"#), Some(42));
        assert_eq!(trailing_id(b"xx\"}, \"id\" : -3 }\n"), Some(-3));
        assert_eq!(trailing_id(br#"xxxx"]}},"idx":42}"#), None);
        assert_eq!(trailing_id(br#","id":"a"}"#), None);
        assert_eq!(trailing_id(br#"{"value":42}"#), None);
    }

    #[tokio::test]
    async fn reads_lines_with_a_limit() {
        let input: &[u8] = b"one\n\nthis-is-long\ntwo\nlast";
        let mut r = BufReader::with_capacity(4, input);
        let (mut buf, mut tail) = (Vec::new(), Vec::new());
        let mut got = Vec::new();
        loop {
            let l = read_line(&mut r, &mut buf, &mut tail, 8).await.unwrap();
            if l == Line::TooLong {
                assert_eq!(tail, b"this-is-long", "the line's end is kept");
            }
            if l == Line::Eof {
                break;
            }
            got.push((format!("{l:?}"), String::from_utf8(buf.clone()).unwrap()));
        }
        let expect = [
            ("Complete", "one"),
            ("Complete", ""),
            ("TooLong", "this-is-"),
            ("Complete", "two"),
            ("Complete", "last"),
        ];
        let expect: Vec<_> = expect.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        assert_eq!(got, expect);
    }
}
