//! Placeholder: being written.

use serde_json::value::RawValue;

use super::{BackendError, BackendSpec, CallContext, Reply, ServerInfo, State, Status};
use crate::auth::Caller;
use crate::protocol::Message;

/// A backend reached over sse.
pub struct SseBackend {
    spec: BackendSpec,
    status: Status,
}

impl SseBackend {
    /// Starts connecting in the background.
    pub fn start(spec: BackendSpec) -> Self {
        let status = Status::default();
        status.down("not implemented");
        Self { spec, status }
    }

    fn unavailable(&self) -> BackendError {
        BackendError::Unavailable {
            backend: self.spec.name.to_string(),
            reason: "not implemented".into(),
        }
    }

    /// See [`super::Backend::request`].
    pub async fn request(
        &self,
        _caller: &Caller,
        _method: &str,
        _params: Option<Box<RawValue>>,
        _ctx: CallContext,
    ) -> Result<Reply, BackendError> {
        Err(self.unavailable())
    }

    /// See [`super::Backend::notify`].
    pub async fn notify(
        &self,
        _caller: &Caller,
        _method: &str,
        _params: Option<Box<RawValue>>,
    ) -> Result<(), BackendError> {
        Err(self.unavailable())
    }

    /// See [`super::Backend::respond`].
    pub async fn respond(&self, _caller: &Caller, _response: Message) -> Result<(), BackendError> {
        Err(self.unavailable())
    }

    /// See [`super::Backend::info`].
    pub fn info(&self) -> Option<ServerInfo> {
        self.status.get().info
    }
    /// See [`super::Backend::state`].
    pub fn state(&self) -> State {
        self.status.get().state
    }
    /// See [`super::Backend::last_error`].
    pub fn last_error(&self) -> Option<String> {
        self.status.get().last_error
    }
    /// See [`super::Backend::watch`].
    pub fn watch(&self) -> tokio::sync::watch::Receiver<super::Snapshot> {
        self.status.subscribe()
    }

    /// See [`super::Backend::first_attempt`].
    pub async fn first_attempt(&self) {
        self.status.first_attempt().await
    }
    /// See [`super::Backend::shutdown`].
    pub async fn shutdown(&self) {
        self.status.stopped()
    }
}
