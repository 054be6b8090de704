//! Turning a request's work into an HTTP response: plain JSON when the answer comes without
//! interim messages, an SSE stream when notifications or server-to-client requests come first.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use tokio::sync::mpsc;

use crate::protocol::{ErrorObject, ErrorResponse, Id, Message};

type Outcome = Result<Box<serde_json::value::RawValue>, ErrorObject>;

/// The task handling one request. Legacy requests outlive a dropped connection (the spec makes
/// disconnection no cancellation); Modern requests are cancelled with it.
pub enum Task {
    /// Keeps running if the response is dropped.
    Detached(tokio::task::JoinHandle<Outcome>),
    /// Aborted if the response is dropped.
    Owned(tokio_util::task::AbortOnDropHandle<Outcome>),
}

impl std::future::Future for Task {
    type Output = Result<Outcome, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match &mut *self {
            Task::Detached(h) => std::pin::Pin::new(h).poll(cx),
            Task::Owned(h) => std::pin::Pin::new(h).poll(cx),
        }
    }
}

/// The JSON-RPC message answering `id` with `outcome`.
pub fn reply_message(
    id: Id,
    outcome: Result<Box<serde_json::value::RawValue>, ErrorObject>,
) -> Message {
    match outcome {
        Ok(result) => Message::Response(crate::protocol::Response::new(id, result)),
        Err(error) => Message::Error(ErrorResponse::new(Some(id), error)),
    }
}

/// A JSON body with the given status.
pub fn json(status: StatusCode, msg: &Message) -> Response {
    let mut resp = (status, msg.to_bytes()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// An SSE event carrying one message.
pub fn event(msg: &Message) -> Event {
    Event::default().event("message").data(String::from_utf8_lossy(&msg.to_bytes()))
}

/// An SSE response over a stream of messages.
pub fn sse(stream: impl Stream<Item = Message> + Send + 'static) -> Response {
    use futures::StreamExt;
    let events = stream.map(|m| Ok::<_, Infallible>(event(&m)));
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

/// Waits for either the final reply of `task` or its first interim message, and answers with JSON
/// or SSE accordingly. `status_of` picks the HTTP status of a JSON reply.
pub async fn respond(
    id: Id,
    mut out: mpsc::Receiver<Message>,
    mut task: Task,
    status_of: fn(&Result<Box<serde_json::value::RawValue>, ErrorObject>) -> StatusCode,
    challenge: Option<HeaderValue>,
) -> Response {
    let first = tokio::select! {
        biased;
        Some(msg) = out.recv() => msg,
        done = &mut task => {
            let outcome = done.unwrap_or_else(|e| Err(aborted(&e)));
            let reauthenticate = matches!(&outcome, Err(e) if e.code == crate::protocol::jsonrpc::code::REAUTHENTICATE);
            if reauthenticate && let Some(challenge) = challenge {
                // The caller's credentials were refused downstream: tell it to log in again.
                let mut resp = json(StatusCode::UNAUTHORIZED, &reply_message(id, outcome));
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
                return resp;
            }
            if matches!(&outcome, Err(e) if e.code == crate::protocol::jsonrpc::code::CREDENTIALS_UNAVAILABLE) {
                // The user's IdP is down: not a logout, a retry later.
                let mut resp = json(StatusCode::SERVICE_UNAVAILABLE, &reply_message(id, outcome));
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                return resp;
            }
            if let Err(e) = &outcome
                && e.code == crate::protocol::jsonrpc::code::RATE_LIMITED
            {
                // A `rateLimiting` bucket is empty: 429 with when to retry.
                let secs = crate::ratelimit::retry_after_secs(e);
                let mut resp = json(StatusCode::TOO_MANY_REQUESTS, &reply_message(id, outcome));
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
                return resp;
            }
            if matches!(&outcome, Err(e) if e.code == crate::protocol::jsonrpc::code::ACCESS_DENIED) {
                // Authenticated, but not allowed there: logging in again would not help.
                return json(StatusCode::FORBIDDEN, &reply_message(id, outcome));
            }
            let status = status_of(&outcome);
            return json(status, &reply_message(id, outcome));
        }
    };
    sse(async_stream(Some(first), out, task, id))
}

fn aborted(e: &tokio::task::JoinError) -> ErrorObject {
    if e.is_cancelled() {
        ErrorObject::new(crate::protocol::jsonrpc::code::INTERNAL_ERROR, "request cancelled")
    } else {
        ErrorObject::new(
            crate::protocol::jsonrpc::code::INTERNAL_ERROR,
            "internal error while handling the request",
        )
    }
}

fn async_stream(
    first: Option<Message>,
    out: mpsc::Receiver<Message>,
    task: Task,
    id: Id,
) -> impl Stream<Item = Message> + Send + 'static {
    enum St {
        Interim(mpsc::Receiver<Message>, Task),
        Done,
    }
    let head = futures::stream::iter(first);
    let tail = futures::stream::unfold((St::Interim(out, task), id), |(st, id)| async move {
        match st {
            St::Interim(mut out, task) => match out.recv().await {
                Some(m) => Some((m, (St::Interim(out, task), id))),
                None => {
                    // All interim messages are out; the reply is next.
                    let outcome = task.await.unwrap_or_else(|e| Err(aborted(&e)));
                    Some((reply_message(id.clone(), outcome), (St::Done, id)))
                }
            },
            St::Done => None,
        }
    });
    futures::StreamExt::chain(head, tail)
}

/// 200 for everything: Legacy errors travel in the body.
pub fn legacy_status(_: &Result<Box<serde_json::value::RawValue>, ErrorObject>) -> StatusCode {
    StatusCode::OK
}

/// 2026-07-28 maps protocol errors onto HTTP statuses.
pub fn modern_status(
    outcome: &Result<Box<serde_json::value::RawValue>, ErrorObject>,
) -> StatusCode {
    use crate::protocol::jsonrpc::code;
    match outcome {
        Ok(_) => StatusCode::OK,
        Err(e) => match e.code {
            code::HEADER_MISMATCH
            | code::MISSING_REQUIRED_CLIENT_CAPABILITY
            | code::UNSUPPORTED_PROTOCOL_VERSION => StatusCode::BAD_REQUEST,
            code::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
            _ => StatusCode::OK,
        },
    }
}
