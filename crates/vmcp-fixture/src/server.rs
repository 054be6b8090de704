//! The fixture's MCP handler: process-wide state, the capability set, and the
//! routing of each MCP method to the conformance or extra implementations.
//!
//! One [`Fixture`] value exists per legacy session (rmcp's HTTP service calls
//! the factory per session, and per request for stateless 2026-07-28 traffic);
//! everything that must outlive a session (the call counter, tools added at
//! runtime, open `subscriptions/listen` streams) lives in [`Shared`].

#![allow(deprecated)] // Logging and resources/subscribe are deprecated in 2026-07-28 but still served.

use std::{
    borrow::Cow,
    collections::BTreeSet,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::*,
    service::{NotificationContext, Peer, RequestContext, SubscriptionContext},
};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::{Era, conformance, extra};

/// Command-line settings the handler needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: String,
    pub era: Era,
    pub synthetic_tools: usize,
    /// `--named-tools`: echo tools under these names.
    pub named_tools: Vec<String>,
    /// `--user-tools`: tools need a bearer token, and each user has tools of its own.
    pub user_tools: bool,
    /// `--require-token`: every request to `/mcp` needs a bearer token (HTTP 401 without).
    pub require_token: bool,
}

/// A change to one of the server's lists or resources, fanned out to listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListChange {
    Tools,
    Prompts,
    /// The resource with this URI was updated.
    Resource(String),
}

/// The resource URIs one legacy session subscribed to.
type Subscriptions = Arc<Mutex<BTreeSet<String>>>;

/// State shared by every session and request of this process.
pub struct Shared {
    pub settings: Settings,
    /// Incremented by the `counter` tool; a reset tells tests the process restarted.
    pub counter: AtomicU64,
    /// Numbers the items `test_trigger_*_change` add.
    pub triggers: AtomicU64,
    /// The last HTTP requests (method, session, authorization), newest last.
    requests: Mutex<std::collections::VecDeque<serde_json::Value>>,
    /// Tools that never change, built once because `--tools N` can make the list long.
    static_tools: Vec<Tool>,
    /// Names of tools added at runtime (`dynamic_tool`, `test_triggered_tool_N`).
    added_tools: Mutex<BTreeSet<String>>,
    /// Names of prompts added at runtime (`test_triggered_prompt_N`).
    added_prompts: Mutex<BTreeSet<String>>,
    /// Feeds open 2026-07-28 `subscriptions/listen` streams.
    changes: broadcast::Sender<ListChange>,
    /// Peers of legacy sessions with their resource subscriptions, for notifications.
    peers: Mutex<Vec<(Peer<RoleServer>, Subscriptions)>>,
    /// Seals `requestState` so tampering is detected (SEP-2322).
    pub codec: RequestStateCodec,
    /// Per-user tools and counts (`--user-tools`).
    pub users: Arc<crate::users::Users>,
}

/// Locks a mutex, recovering from poisoning: the guarded data are plain sets
/// that stay consistent even if a holder panicked.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn new(settings: Settings) -> Self {
        let mut static_tools = conformance::tools();
        static_tools.extend(extra::tools());
        static_tools.extend((0..settings.synthetic_tools).map(extra::synthetic_tool));
        static_tools.extend(settings.named_tools.iter().map(|n| extra::named_tool(n)));
        let (changes, _) = broadcast::channel(64);
        // A per-process random key: state sealed by one fixture process is
        // meaningless to another, which is what a restart should look like.
        let key: [u8; 32] = rand::random();
        Self {
            settings,
            counter: AtomicU64::new(0),
            triggers: AtomicU64::new(0),
            requests: Mutex::default(),
            static_tools,
            added_tools: Mutex::default(),
            added_prompts: Mutex::default(),
            changes,
            peers: Mutex::default(),
            codec: RequestStateCodec::new(key.to_vec()),
            users: Arc::default(),
        }
    }

    /// Keeps a bounded log of HTTP requests for the `request_log` tool.
    pub fn log_request(&self, entry: serde_json::Value) {
        let mut log = lock(&self.requests);
        if log.len() >= 1000 {
            log.pop_front();
        }
        log.push_back(entry);
    }

    /// The request log, oldest first.
    pub fn request_log(&self) -> Vec<serde_json::Value> {
        lock(&self.requests).iter().cloned().collect()
    }

    /// Every tool currently offered, in a stable order.
    pub fn tools(&self) -> Vec<Tool> {
        let mut tools = self.static_tools.clone();
        tools.extend(lock(&self.added_tools).iter().map(|n| extra::added_tool(n)));
        tools
    }

    pub fn has_added_tool(&self, name: &str) -> bool {
        lock(&self.added_tools).contains(name)
    }

    pub fn has_added_prompt(&self, name: &str) -> bool {
        lock(&self.added_prompts).contains(name)
    }

    /// Adds a tool (idempotently) and tells every listener the list changed.
    pub async fn add_tool(&self, name: &str) {
        lock(&self.added_tools).insert(name.to_owned());
        self.announce(ListChange::Tools).await;
    }

    /// Tells every listener the tool list changed (a user's own tools did).
    pub async fn announce_tools(&self) {
        self.announce(ListChange::Tools).await;
    }

    /// Adds a prompt (idempotently) and tells every listener the list changed.
    pub async fn add_prompt(&self, name: &str) {
        lock(&self.added_prompts).insert(name.to_owned());
        self.announce(ListChange::Prompts).await;
    }

    /// Tells the sessions and listen streams subscribed to `uri` that it changed; returns how
    /// many legacy sessions were told.
    pub async fn touch(&self, uri: &str) -> usize {
        self.announce(ListChange::Resource(uri.to_owned())).await
    }

    /// Sends a list-changed or resource-updated notification to legacy sessions and listen
    /// streams; returns how many legacy sessions got it.
    async fn announce(&self, change: ListChange) -> usize {
        // No receivers is fine: nobody is listening.
        let _ = self.changes.send(change.clone());
        let peers: Vec<_> = {
            let mut peers = lock(&self.peers);
            peers.retain(|(p, _)| !p.is_transport_closed());
            peers.clone()
        };
        tracing::debug!(peers = peers.len(), ?change, "announcing a change");
        let mut told = 0;
        for (peer, subscriptions) in peers {
            let sent = match &change {
                ListChange::Tools => peer.notify_tool_list_changed().await,
                ListChange::Prompts => peer.notify_prompt_list_changed().await,
                ListChange::Resource(uri) if lock(&subscriptions).contains(uri) => {
                    peer.notify_resource_updated(ResourceUpdatedNotificationParam::new(uri.clone()))
                        .await
                }
                ListChange::Resource(_) => continue,
            };
            told += 1;
            if let Err(e) = sent {
                tracing::debug!("notification to a legacy peer failed: {e}");
            }
        }
        told
    }
}

/// The MCP handler. Cheap to clone; per-session state sits behind `Arc`s.
#[derive(Clone)]
pub struct Fixture {
    pub shared: Arc<Shared>,
    /// Level set by `logging/setLevel` in this legacy session; `None` logs everything.
    log_level: Arc<Mutex<Option<LoggingLevel>>>,
    /// URIs subscribed with `resources/subscribe` in this legacy session.
    subscriptions: Subscriptions,
    /// Whether this session's peer is in [`Shared`]'s list-changed audience.
    registered: Arc<AtomicBool>,
}

impl Fixture {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            log_level: Arc::default(),
            subscriptions: Arc::default(),
            registered: Arc::default(),
        }
    }

    /// Adds this legacy session's peer to the list-changed audience, once.
    fn register_peer(&self, peer: &Peer<RoleServer>) {
        if !self.registered.swap(true, Ordering::SeqCst) {
            tracing::debug!("registering a legacy session for list_changed notifications");
            lock(&self.shared.peers).push((peer.clone(), self.subscriptions.clone()));
        }
    }

    /// Sends a log message if the request's rules allow it.
    ///
    /// 2026-07-28 requests only get logs when they ask for them with
    /// `_meta.io.modelcontextprotocol/logLevel` (SEP-2575); legacy sessions
    /// use the level from `logging/setLevel`, defaulting to everything.
    pub async fn log(&self, cx: &RequestContext<RoleServer>, level: LoggingLevel, message: &str) {
        let minimum = if is_modern(cx) {
            match cx.meta.log_level() {
                Some(level) => Some(level),
                None => return,
            }
        } else {
            *lock(&self.log_level)
        };
        if minimum.is_some_and(|min| severity(level) < severity(min)) {
            return;
        }
        let param = LoggingMessageNotificationParam::new(level, json!(message))
            .with_logger(self.shared.settings.name.clone());
        if let Err(e) = cx.peer.notify_logging_message(param).await {
            tracing::debug!("log notification failed: {e}");
        }
    }
}

/// Whether this request is served under the 2026-07-28 (stateless) rules.
pub fn is_modern(cx: &RequestContext<RoleServer>) -> bool {
    cx.protocol_version().is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str())
}

fn severity(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

/// Deserializes a value built with `json!`; the fixture writes most results
/// as JSON so they read like the scenario texts they must match.
pub fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ErrorData> {
    serde_json::from_value(value).map_err(|e| {
        ErrorData::internal_error(format!("fixture built an invalid value: {e}"), None)
    })
}

impl ServerHandler for Fixture {
    fn get_info(&self) -> ServerInfo {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .enable_prompts()
            .enable_prompts_list_changed()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_logging()
            .enable_completions()
            .build();
        ServerInfo::new(capabilities)
            .with_server_info(Implementation::new(
                self.shared.settings.name.clone(),
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions("vmcp test fixture: conformance tools plus echo, whoami, sleep, fail, crash, counter, notify_list_changed.")
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        match self.shared.settings.era {
            Era::Legacy => {
                Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
            }
            Era::Modern => Cow::Owned(vec![ProtocolVersion::V_2026_07_28]),
            Era::Both => Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS),
        }
    }

    async fn on_initialized(&self, cx: NotificationContext<RoleServer>) {
        self.register_peer(&cx.peer);
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        *lock(&self.log_level) = Some(request.level);
        Ok(())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        cx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut tools = self.shared.tools();
        tools.extend(crate::users::tools_for(self, &cx));
        Ok(ListToolsResult::with_all_items(tools))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.shared.tools().into_iter().find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if !is_modern(&cx) {
            // rmcp handles `notifications/initialized` concurrently with the
            // requests after it, so a call can beat `on_initialized`.
            self.register_peer(&cx.peer);
        }
        if let Some(response) = conformance::call_tool(self, &request, &cx).await {
            return response;
        }
        if let Some(response) = extra::call_tool(self, &request, &cx).await {
            return response.map(CallToolResponse::from);
        }
        if let Some(response) = crate::users::call_tool(self, &request, &cx).await {
            return response.map(CallToolResponse::from);
        }
        Err(ErrorData::invalid_params(
            format!("Unknown tool: {}", request.name),
            Some(json!({ "name": request.name })),
        ))
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let mut prompts = conformance::prompts()?;
        for name in lock(&self.shared.added_prompts).iter() {
            prompts.push(Prompt::new(
                name.clone(),
                Some("Prompt added at runtime by test_trigger_prompt_change"),
                None,
            ));
        }
        Ok(ListPromptsResult::with_all_items(prompts))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        conformance::get_prompt(self, request, &cx).await
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(conformance::resources()?))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(conformance::resource_templates()?))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        conformance::read_resource(&request.uri).map(ReadResourceResponse::from)
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        // Lets tests see a backend refuse a subscription (as one that authorises it would).
        if request.uri.contains("/refused/") {
            return Err(ErrorData::invalid_request(
                format!("subscription to {} refused", request.uri),
                None,
            ));
        }
        self.register_peer(&cx.peer);
        lock(&self.subscriptions).insert(request.uri);
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        lock(&self.subscriptions).remove(&request.uri);
        Ok(())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        conformance::complete(&request)
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        // Accept what was asked, except resources a backend that authorises subscriptions would
        // refuse (the same ones `resources/subscribe` refuses); rmcp narrows the rest to the
        // advertised capabilities.
        let mut accepted = requested.clone();
        if let Some(uris) = accepted.resource_subscriptions.as_mut() {
            uris.retain(|u| !u.contains("/refused/"));
        }
        Some(accepted)
    }

    async fn listen(&self, subscription: SubscriptionContext) -> Result<(), ErrorData> {
        let mut changes = self.shared.changes.subscribe();
        let accepted = subscription.accepted().clone();
        loop {
            let change = tokio::select! {
                _ = subscription.cancelled() => return Ok(()),
                change = changes.recv() => change,
            };
            let sent = match change {
                Ok(ListChange::Tools) if accepted.tools_list_changed == Some(true) => {
                    subscription.sink().notify_tool_list_changed().await
                }
                Ok(ListChange::Prompts) if accepted.prompts_list_changed == Some(true) => {
                    subscription.sink().notify_prompt_list_changed().await
                }
                Ok(ListChange::Resource(uri))
                    if accepted
                        .resource_subscriptions
                        .as_ref()
                        .is_some_and(|s| s.contains(&uri)) =>
                {
                    subscription.sink().notify_resource_updated(uri).await
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            };
            if let Err(e) = sent {
                tracing::debug!("listen stream closed: {e}");
                return Ok(());
            }
        }
    }
}
