//! Resource subscriptions of one principal at a Modern backend whose outgoing credentials are
//! the user's own.
//!
//! A 2026-07-28 backend has no `resources/subscribe`: a client's interest in a resource rides on a
//! `subscriptions/listen` stream. The gateway's own stream runs as `Caller::System`, which a
//! user-bound backend cannot authorise (it may refuse it, or allow what the user may not see).
//! So each principal subscribed to such a backend gets a stream of its own, opened with the
//! credentials of the request that changed the set (or, when it must reopen with no request
//! behind it, the principal's latest ones), carrying only that principal's URIs. The backend's
//! acknowledgement says which URIs it accepted: a URI it left out is refused to the subscriber.
//!
//! Invariants:
//! - a stream carries one principal's URIs and credentials; what it hears is tagged with that
//!   principal and reaches only that principal's sessions;
//! - changes to one principal's set are applied in order by one task, so a subscribe and an
//!   unsubscribe racing each other never leave the backend out of step with the gateway's count;
//! - streams are bounded by `operational.backendSessions.maxPerBackend` per backend, and a task
//!   ends (closing its stream) when its principal's set is empty;
//! - the stream holds no credential: each (re)open resolves one.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use sse_stream::SseByteStream;
use tokio::sync::{mpsc, oneshot};

use super::Inner;
use super::post::{Post, PostError};
use crate::auth::{Binding, Caller};
use crate::backend::limit::sse_bytes;
use crate::backend::{BackendError, BackendEvent, ServerInfo};
use crate::protocol::jsonrpc::code;
use crate::protocol::{self, ErrorObject, Id, Message, Request};

/// Changes waiting for a principal's task; callers beyond this wait (bounded by their timeout).
const QUEUE: usize = 32;
const RETRY_START: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The principals' listen tasks of one backend.
pub(super) struct PrincipalListens {
    tasks: Mutex<HashMap<Binding, mpsc::Sender<Change>>>,
    max: usize,
}

/// One subscriber more or less for a URI, with the credentials to (re)open the stream.
struct Change {
    caller: Caller,
    uri: String,
    on: bool,
    done: oneshot::Sender<Result<(), ListenError>>,
}

/// Why a subscription change did not take.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The backend could not be reached or failed.
    #[error(transparent)]
    Backend(BackendError),
    /// The backend refused the subscription (its error, or an acknowledgement without the URI).
    #[error("{}", .0.message)]
    Refused(ErrorObject),
}

impl From<BackendError> for ListenError {
    fn from(e: BackendError) -> Self {
        ListenError::Backend(e)
    }
}

impl PrincipalListens {
    pub fn new(max: usize) -> Self {
        Self { tasks: Mutex::new(HashMap::new()), max }
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<Binding, mpsc::Sender<Change>>> {
        // Each critical section is one map operation, so a poisoned lock is still sound.
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Open principal streams, for `/status`.
    pub fn len(&self) -> usize {
        self.tasks().len()
    }
}

impl Inner {
    /// Adds (`on`) or removes `uri` on the listen stream of `caller`'s principal, answering once
    /// the backend accepted or refused the changed stream.
    pub(super) async fn listen_as(
        self: &Arc<Self>,
        info: &ServerInfo,
        caller: &Caller,
        uri: &str,
        on: bool,
    ) -> Result<(), ListenError> {
        let binding = caller.binding();
        // A task that just ended may drop the change unread: the next attempt starts a new one.
        for _ in 0..3 {
            let Some(tx) = self.principal_task(info, &binding, on)? else { return Ok(()) };
            let (done, answer) = oneshot::channel();
            let change = Change { caller: caller.clone(), uri: uri.to_owned(), on, done };
            if tx.send(change).await.is_err() {
                continue;
            }
            match answer.await {
                Ok(outcome) => return outcome,
                Err(_) if self.stop.is_cancelled() => break,
                Err(_) => continue,
            }
        }
        Err(self.unavailable("the subscription stream could not be started").into())
    }

    /// The task of `binding`, started when a subscriber arrives; `None` when someone leaves a
    /// principal with no task (nothing to remove).
    fn principal_task(
        self: &Arc<Self>,
        info: &ServerInfo,
        binding: &Binding,
        on: bool,
    ) -> Result<Option<mpsc::Sender<Change>>, BackendError> {
        let listens = &self.principals;
        let mut tasks = listens.tasks();
        if let Some(tx) = tasks.get(binding) {
            return Ok(Some(tx.clone()));
        }
        if !on {
            return Ok(None);
        }
        if tasks.len() >= listens.max {
            return Err(self.unavailable(format!(
                "{} principals already hold subscriptions at this backend \
                 (operational.backendSessions.maxPerBackend)",
                listens.max
            )));
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tasks.insert(binding.clone(), tx.clone());
        let task = Task {
            inner: Arc::downgrade(self),
            info: info.clone(),
            binding: binding.clone(),
            uris: BTreeSet::new(),
        };
        tokio::spawn(task.run(rx));
        Ok(Some(tx))
    }

    /// Opens a `subscriptions/listen` stream for `uris` as `caller` and reads its
    /// acknowledgement: the stream and the URIs the backend accepted.
    async fn open_listen(
        &self,
        info: &ServerInfo,
        caller: &Caller,
        uris: &BTreeSet<String>,
    ) -> Result<(Events, BTreeSet<String>), ListenError> {
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let filter = serde_json::json!({ "notifications": { "resourceSubscriptions": uris } });
        let params = self.outgoing_params(info, Some(protocol::jsonrpc::raw(&filter)), None)?;
        let body =
            Message::Request(Request::new(Id::Number(id), "subscriptions/listen", params.clone()));
        let post = Post {
            method: Some("subscriptions/listen"),
            params: params.as_deref(),
            stream: true,
            ..Post::plain(info, None, &body)
        };
        let resp = match self.post(caller, post).await {
            Ok(resp) => resp,
            Err(PostError::Status(_, Some(Message::Error(e)))) => {
                return Err(self.refused(uris, &e.error.message));
            }
            Err(PostError::Status(status, _)) => {
                return Err(self.refused(uris, &format!("HTTP {status}")));
            }
            Err(e) => return Err(e.into_backend(&self.spec.name).into()),
        };
        let mut events: Events =
            Box::pin(SseByteStream::new(sse_bytes(resp, self.spec.limits.max_reply_bytes)));
        let first = tokio::time::timeout(self.spec.timeout, next_message(&mut events)).await;
        match first {
            Ok(Some(Message::Notification(n)))
                if n.method == "notifications/subscriptions/acknowledged" =>
            {
                #[derive(serde::Deserialize, Default)]
                #[serde(rename_all = "camelCase")]
                struct Filter {
                    #[serde(default)]
                    resource_subscriptions: BTreeSet<String>,
                }
                #[derive(serde::Deserialize)]
                struct Ack {
                    #[serde(default)]
                    notifications: Filter,
                }
                let accepted = n
                    .params
                    .as_deref()
                    .and_then(|p| serde_json::from_str::<Ack>(p.get()).ok())
                    .map(|a| a.notifications.resource_subscriptions)
                    .unwrap_or_default();
                Ok((events, accepted))
            }
            Ok(Some(Message::Error(e))) => Err(self.refused(uris, &e.error.message)),
            Ok(_) => Err(self
                .unavailable("the subscription stream ended before it was acknowledged")
                .into()),
            Err(_) => Err(BackendError::Transport {
                backend: self.spec.name.to_string(),
                reason: format!(
                    "subscriptions/listen was not acknowledged within {:?}",
                    self.spec.timeout
                ),
            }
            .into()),
        }
    }

    /// The backend said no to a stream carrying `uris`.
    fn refused(&self, uris: &BTreeSet<String>, why: &str) -> ListenError {
        let uris: Vec<&str> = uris.iter().map(String::as_str).collect();
        ListenError::Refused(ErrorObject::new(
            code::INVALID_REQUEST,
            format!(
                "backend {}: subscription to {} refused: {why}",
                self.spec.name,
                uris.join(", ")
            ),
        ))
    }
}

type Events = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<sse_stream::Sse, sse_stream::Error>> + Send>,
>;

/// The next JSON-RPC message on a stream; `None` when it ended or failed.
async fn next_message(events: &mut Events) -> Option<Message> {
    while let Some(Ok(event)) = events.next().await {
        let Some(data) = event.data.filter(|d| !d.is_empty()) else { continue };
        if let Ok(msg) = Message::parse(data.as_bytes()) {
            return Some(msg);
        }
    }
    None
}

/// One principal's stream and the URIs it carries.
struct Task {
    inner: Weak<Inner>,
    info: ServerInfo,
    binding: Binding,
    uris: BTreeSet<String>,
}

impl Task {
    async fn run(mut self, mut changes: mpsc::Receiver<Change>) {
        let mut stream: Option<Events> = None;
        let mut retry = RETRY_START;
        // The task starts for a change on its way: it must not end before reading it.
        let mut begun = false;
        loop {
            let Some(inner) = self.inner.upgrade() else { return };
            if begun
                && self.uris.is_empty()
                && stream.is_none()
                && self.end_if_idle(&inner, &changes)
            {
                return;
            }
            // Reopen a lost stream after a pause, with the principal's latest credentials.
            let lost = stream.is_none() && !self.uris.is_empty();
            let reopen = async move {
                if !lost {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(retry).await;
            };
            tokio::select! {
                _ = inner.stop.cancelled() => return,
                change = changes.recv() => {
                    let Some(change) = change else { return };
                    begun = true;
                    let answer = self.apply(&inner, &mut stream, &change).await;
                    let _ = change.done.send(answer);
                }
                msg = async {
                    match stream.as_mut() {
                        Some(s) => next_message(s).await,
                        None => std::future::pending().await,
                    }
                } => match msg {
                    Some(Message::Notification(n)) => self.pass_on(&inner, n),
                    Some(_) => {}
                    None => stream = None,
                },
                _ = reopen => {
                    let caller = Caller::Teardown(self.binding.clone());
                    match inner.open_listen(&self.info, &caller, &self.uris).await {
                        Ok((s, accepted)) => {
                            self.uris = accepted;
                            stream = Some(s);
                            retry = RETRY_START;
                        }
                        Err(e) => {
                            tracing::debug!(backend = %inner.spec.name, error = %e, "a principal's subscription stream could not be reopened");
                            retry = (retry * 2).min(RETRY_MAX);
                        }
                    }
                }
            }
        }
    }

    /// Applies one change, reopening the stream with the changed set as the change's caller.
    async fn apply(
        &mut self,
        inner: &Inner,
        stream: &mut Option<Events>,
        change: &Change,
    ) -> Result<(), ListenError> {
        let mut wanted = self.uris.clone();
        let changed =
            if change.on { wanted.insert(change.uri.clone()) } else { wanted.remove(&change.uri) };
        if !changed && (stream.is_some() || wanted.is_empty()) {
            return Ok(());
        }
        if wanted.is_empty() {
            // The last URI left: close the stream (dropping it ends the request).
            self.uris.clear();
            *stream = None;
            return Ok(());
        }
        match inner.open_listen(&self.info, &change.caller, &wanted).await {
            Ok((s, accepted)) => {
                let refused = change.on && !accepted.contains(&change.uri);
                // A stream carrying nothing is not worth its connection.
                *stream = (!accepted.is_empty()).then_some(s);
                self.uris = accepted;
                if refused {
                    let set = BTreeSet::from([change.uri.clone()]);
                    return Err(inner.refused(&set, "the backend did not accept it"));
                }
                Ok(())
            }
            // The old stream (if any) keeps carrying the old set; an unsubscribe still counts as
            // done: a URI nobody wants any more is filtered out at delivery.
            Err(e) if change.on => Err(e),
            Err(_) => {
                self.uris = wanted;
                Ok(())
            }
        }
    }

    /// A resource update goes to this principal's subscribed sessions; nothing else on this
    /// stream was asked for.
    fn pass_on(&self, inner: &Inner, n: protocol::Notification) {
        if n.method != "notifications/resources/updated" {
            return;
        }
        let _ = inner.spec.events.send(BackendEvent {
            backend: inner.spec.name.clone(),
            session: None,
            principal: Some(self.binding.clone()),
            notification: n,
        });
    }

    /// With nothing to carry and no change waiting, leaves the map (so a later subscriber
    /// starts afresh) and says the task may end.
    fn end_if_idle(&self, inner: &Inner, changes: &mpsc::Receiver<Change>) -> bool {
        let mut tasks = inner.principals.tasks();
        if !changes.is_empty() {
            return false;
        }
        tasks.remove(&self.binding);
        true
    }
}
