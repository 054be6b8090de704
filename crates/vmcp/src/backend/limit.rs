//! Limits on what the gateway reads from HTTP backends and how many sessions it keeps with them.
//!
//! A backend's reply is read through a cap: a JSON body larger than `max_reply_bytes`, or one SSE
//! event larger than it, fails the request at once with [`TooLarge`] (naming the config key)
//! instead of buffering without bound. The cap is checked while reading, so an endless event
//! fails as soon as it passes the limit, not when it ends.
//!
//! Invariant (design §2.8): everything a backend can make the gateway buffer is bounded.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};

/// The limits a transport applies, from `operational` (see `config/backend_sessions.rs`).
#[derive(Debug, Clone)]
pub struct BackendLimits {
    /// Largest JSON reply body or SSE event, in bytes.
    pub max_reply_bytes: usize,
    /// Most pooled backend sessions per backend (the gateway's own not counted).
    pub max_sessions: usize,
    /// A principal's idle backend session is ended after this long.
    pub session_idle: Duration,
}

impl Default for BackendLimits {
    fn default() -> Self {
        use crate::config::backend_sessions as d;
        Self {
            max_reply_bytes: d::DEFAULT_MAX_REPLY_BYTES,
            max_sessions: d::DEFAULT_MAX_PER_BACKEND,
            session_idle: d::DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl BackendLimits {
    /// The limits `config` asks for.
    pub fn from_config(config: &crate::config::OperationalConfig) -> Self {
        Self {
            max_reply_bytes: config.max_backend_reply_bytes(),
            max_sessions: config.backend_sessions.max_per_backend,
            session_idle: config.backend_sessions.idle_timeout,
        }
    }
}

/// A reply (or one event of it) went over the limit.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "backend reply exceeds the limit of {limit} bytes (operational.maxBackendReplyBytes); request abandoned"
)]
pub struct TooLarge {
    /// The limit, in bytes.
    pub limit: usize,
}

/// Why a capped read failed.
#[derive(Debug, thiserror::Error)]
pub enum CappedError {
    /// Over the limit.
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    /// The body itself failed.
    #[error("response body failed: {0}")]
    Body(String),
}

impl CappedError {
    /// Finds a [`TooLarge`] inside an SSE decoder's error, which wraps the byte stream's.
    pub fn too_large_in(e: &(dyn std::error::Error + 'static)) -> Option<TooLarge> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cur {
            if let Some(CappedError::TooLarge(t)) = err.downcast_ref::<CappedError>() {
                return Some(*t);
            }
            if let Some(t) = err.downcast_ref::<TooLarge>() {
                return Some(*t);
            }
            cur = err.source();
        }
        None
    }
}

/// Reads a whole (JSON) body, failing as soon as it passes `limit` bytes. A `Content-Length`
/// over the limit fails before anything is read.
pub async fn read_body(resp: reqwest::Response, limit: usize) -> Result<Bytes, CappedError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(TooLarge { limit }.into());
    }
    let mut body = resp.bytes_stream();
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| CappedError::Body(without_url(&e)))?;
        if out.len() + chunk.len() > limit {
            return Err(TooLarge { limit }.into());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

fn without_url(e: &reqwest::Error) -> String {
    let mut s = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s = inner.to_string();
        source = inner.source();
    }
    if s.is_empty() { "body error".into() } else { s }
}

/// The byte stream of an SSE response, failing with [`TooLarge`] once one event (the bytes
/// between two blank lines) passes `limit` bytes.
pub fn sse_bytes(
    resp: reqwest::Response,
    limit: usize,
) -> impl Stream<Item = Result<Bytes, CappedError>> + Send + Unpin + 'static {
    EventCap {
        inner: Box::pin(resp.bytes_stream()),
        limit,
        since: 0,
        line_ends: 0,
        last_cr: false,
        failed: false,
    }
}

/// Counts the bytes of the current event while passing chunks through unchanged.
struct EventCap<S> {
    inner: Pin<Box<S>>,
    limit: usize,
    /// Bytes since the last event boundary.
    since: usize,
    /// Consecutive line ends seen (two make a boundary).
    line_ends: u8,
    /// The previous byte was `\r` (so a `\n` now completes a CRLF, not a new line end).
    last_cr: bool,
    failed: bool,
}

impl<S> EventCap<S> {
    /// Advances the event-size count over `chunk`; `false` once the current event is too big.
    fn track(&mut self, chunk: &[u8]) -> bool {
        for &b in chunk {
            match b {
                b'\r' => {
                    self.line_ends = self.line_ends.saturating_add(1);
                    self.last_cr = true;
                }
                b'\n' => {
                    if !self.last_cr {
                        self.line_ends = self.line_ends.saturating_add(1);
                    }
                    self.last_cr = false;
                }
                _ => {
                    self.line_ends = 0;
                    self.last_cr = false;
                }
            }
            if self.line_ends >= 2 {
                self.since = 0;
            } else {
                self.since += 1;
                if self.since > self.limit {
                    return false;
                }
            }
        }
        true
    }
}

impl<S> Stream for EventCap<S>
where
    S: Stream<Item = reqwest::Result<Bytes>> + Send,
{
    type Item = Result<Bytes, CappedError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.failed {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if self.as_mut().get_mut().track(&chunk) {
                    Poll::Ready(Some(Ok(chunk)))
                } else {
                    self.failed = true;
                    Poll::Ready(Some(Err(TooLarge { limit: self.limit }.into())))
                }
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(CappedError::Body(without_url(&e))))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(limit: usize) -> EventCap<futures::stream::Empty<reqwest::Result<Bytes>>> {
        EventCap {
            inner: Box::pin(futures::stream::empty()),
            limit,
            since: 0,
            line_ends: 0,
            last_cr: false,
            failed: false,
        }
    }

    #[test]
    fn events_are_counted_one_by_one() {
        let mut c = cap(16);
        // Many small events in one chunk: fine, whatever their total.
        assert!(c.track(b"data: 0123456\n\ndata: 0123456\n\ndata: 0123456\r\n\r\n"));
        // One event split across chunks: counted across them.
        assert!(c.track(b"data: 01234"));
        assert!(!c.track(b"567890"));
    }

    #[test]
    fn line_endings() {
        let mut c = cap(13);
        // CR-only and CRLF boundaries both reset the count.
        assert!(c.track(b"data: abcde\r\rdata: abcde\r\n\r\ndata: abcde\n\n"));
        // A single line end inside an event is not a boundary.
        let mut c = cap(12);
        assert!(!c.track(b"data: ab\ndata: cd\n"));
    }

    #[test]
    fn the_error_names_the_key() {
        let e = TooLarge { limit: 10 };
        assert!(e.to_string().contains("operational.maxBackendReplyBytes"), "{e}");
        let wrapped: Box<dyn std::error::Error + Send + Sync> = Box::new(CappedError::from(e));
        assert!(CappedError::too_large_in(wrapped.as_ref()).is_some());
    }
}
