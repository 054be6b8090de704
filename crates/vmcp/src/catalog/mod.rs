//! The catalog: the one immutable view of every backend's tools, resources, resource templates
//! and prompts that the gateway advertises and routes with.
//!
//! [`build`] is pure and deterministic: the same config and the same backend lists give the same
//! catalog, whatever order each backend listed its items in. The backend slice is in config order,
//! and that order is the tie-breaker wherever one is needed. Building never fails: whatever cannot
//! be advertised (malformed items, unresolved name conflicts) is left out and described in
//! [`Catalog::problems`].
//!
//! Invariants of a built [`Catalog`]:
//! - advertised lists are sorted by name (tools, prompts) or URI (resources, templates), unique;
//! - every advertised tool or prompt name is 1–64 chars of `[A-Za-z0-9_.-]` and routes to the
//!   (backend, original name) it came from; hidden tools are neither advertised nor routable;
//! - resource URIs and templates are advertised exactly as the backend sent them.
//!
//! Naming follows ToolHive's aggregator (see `resolve` and `docs/configuration.md`).
//!
//! Layout: `collect` (intake, tool rules), `resolve` (conflict strategies), `conflict` (unresolved
//! `manual` conflicts), `names` (name rules), `template` (URI template matching), `page`
//! (pagination), `discover` (fetching a backend's lists as a given caller), `live` (the published
//! shared catalog and its discovery loop), `principal` (catalogs of principals, for backends
//! reached with the user's own credentials).

mod collect;
mod conflict;
mod discover;
mod encoded;
pub mod live;
mod names;
mod page;
pub mod principal;
mod resolve;
mod template;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod toolhive_tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

pub use conflict::{Conflict, refusal};
pub use encoded::ListKind;
pub use names::{MAX_NAME_LEN, is_valid as is_valid_name};
pub use page::{InvalidCursor, page, range};
pub use template::UriTemplate;

use crate::config::AggregationConfig;

/// What one backend returned from discovery.
#[derive(Debug, Clone, Default)]
pub struct BackendLists {
    /// Backend name (unique; used in prefixes, routes and problems).
    pub backend: Arc<str>,
    /// `Tool` objects exactly as the backend sent them.
    pub tools: Vec<Value>,
    /// `Resource` objects.
    pub resources: Vec<Value>,
    /// `ResourceTemplate` objects.
    pub resource_templates: Vec<Value>,
    /// `Prompt` objects.
    pub prompts: Vec<Value>,
}

/// Where an advertised tool or prompt goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The backend that serves it.
    pub backend: Arc<str>,
    /// The name that backend knows it by.
    pub original: String,
    /// A tool's `inputSchema`, shared (every `tools/call` reads it for `Mcp-Param-*` headers).
    pub schema: Option<Arc<Value>>,
}

/// A user-bound backend whose lists could not (all) be fetched for the principal whose catalog
/// this is: a name the catalog lacks may be one of its items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlisted {
    /// The backend.
    pub backend: Arc<str>,
    /// Why (no credential or token in it).
    pub reason: String,
    /// What the caller should make of it.
    pub cause: UnlistedCause,
}

/// Why a user-bound backend could not be listed for a principal, as the caller should take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnlistedCause {
    /// The backend failed, timed out or could not be reached.
    Unavailable,
    /// The backend refused this caller's credentials for good: it must authenticate again.
    Reauthenticate,
    /// The caller's upstream credentials cannot be refreshed right now (their identity provider
    /// is down): still logged in, try again later.
    CredentialsUnavailable,
    /// The caller may not reach this backend (its claims map to no role, or the credential
    /// service refused it): logging in again would not help.
    Forbidden,
}

/// Sizes of the advertised lists, for logs and `/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Advertised tools.
    pub tools: usize,
    /// Advertised resources.
    pub resources: usize,
    /// Advertised resource templates.
    pub resource_templates: usize,
    /// Advertised prompts.
    pub prompts: usize,
}

/// The aggregated, immutable catalog. Build it with [`build`].
///
/// `PartialEq` lets the gateway tell whether a rebuild changed anything (and so whether to send
/// `list_changed` notifications).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    tools: Vec<Value>,
    tool_routes: HashMap<String, Route>,
    prompts: Vec<Value>,
    prompt_routes: HashMap<String, Route>,
    resources: Vec<Value>,
    resource_owners: HashMap<String, Arc<str>>,
    resource_templates: Vec<Value>,
    template_owners: HashMap<String, Arc<str>>,
    /// Templates in matching order: backend config order, then template text.
    matchers: Vec<(UriTemplate, Arc<str>)>,
    problems: Vec<String>,
    /// Unresolved tool name conflicts (`manual` only), also described in `problems`.
    conflicts: Vec<Conflict>,
    /// In a principal's catalog: user-bound backends its last fetch failed for.
    unlisted: Vec<Unlisted>,
    /// The lists as JSON, for list replies.
    encoded: encoded::Encoded,
}

impl Catalog {
    /// A catalog with nothing in it (before the first discovery).
    pub fn empty() -> Catalog {
        Catalog::default()
    }

    /// Advertised tools (renamed, overrides applied), sorted by advertised name.
    pub fn tools(&self) -> &[Value] {
        &self.tools
    }

    /// Advertised resources, as the backends sent them, sorted by URI.
    pub fn resources(&self) -> &[Value] {
        &self.resources
    }

    /// Advertised resource templates, as the backends sent them, sorted by URI template.
    pub fn resource_templates(&self) -> &[Value] {
        &self.resource_templates
    }

    /// Advertised prompts (renamed), sorted by advertised name.
    pub fn prompts(&self) -> &[Value] {
        &self.prompts
    }

    /// The list `kind`.
    pub fn list(&self, kind: ListKind) -> &[Value] {
        match kind {
            ListKind::Tools => &self.tools,
            ListKind::Prompts => &self.prompts,
            ListKind::Resources => &self.resources,
            ListKind::ResourceTemplates => &self.resource_templates,
        }
    }

    /// The list `kind` as JSON, item by item (encoded on first use, then kept).
    pub fn encoded(&self, kind: ListKind) -> &[Box<serde_json::value::RawValue>] {
        self.encoded.get(kind, self.list(kind))
    }

    /// The route for an advertised tool name (`tools/call`).
    pub fn tool(&self, advertised: &str) -> Option<&Route> {
        self.tool_routes.get(advertised)
    }

    /// The input schema of an advertised tool (its `x-mcp-header` annotations drive the
    /// `Mcp-Param-*` headers), shared with the catalog.
    pub fn tool_schema(&self, advertised: &str) -> Option<Arc<Value>> {
        self.tool_routes.get(advertised)?.schema.clone()
    }

    /// The route for an advertised prompt name (`prompts/get`, prompt completion).
    pub fn prompt(&self, advertised: &str) -> Option<&Route> {
        self.prompt_routes.get(advertised)
    }

    /// The backend for a `resources/read` or `resources/subscribe` URI: the owner of the listed
    /// resource with exactly that URI, else of the first template that matches it (templates are
    /// tried in backend config order, then by template text).
    pub fn resource(&self, uri: &str) -> Option<&Arc<str>> {
        self.resource_owners
            .get(uri)
            .or_else(|| self.matchers.iter().find(|(t, _)| t.matches(uri)).map(|(_, b)| b))
    }

    /// The backend that advertised exactly this URI template (`completion/complete` with a
    /// `ref/resource` reference).
    pub fn template(&self, uri_template: &str) -> Option<&Arc<str>> {
        self.template_owners.get(uri_template)
    }

    /// What was left out and why, sorted: unresolved conflicts, duplicates, malformed items.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// Tool names several tools claim under `conflictResolution: manual` (none of them is
    /// advertised), sorted by name. `vmcp serve` refuses to start while the first catalog has
    /// any; each is also in [`Catalog::problems`].
    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }

    /// In a principal's catalog, the user-bound backends that could not be listed for that
    /// principal last time (in config order); empty otherwise.
    pub fn unlisted(&self) -> &[Unlisted] {
        &self.unlisted
    }

    /// How many advertised items one backend serves.
    pub fn counts_for(&self, backend: &str) -> Counts {
        let routes =
            |m: &HashMap<String, Route>| m.values().filter(|r| &*r.backend == backend).count();
        let owned = |m: &HashMap<String, Arc<str>>| m.values().filter(|b| &***b == backend).count();
        Counts {
            tools: routes(&self.tool_routes),
            resources: owned(&self.resource_owners),
            resource_templates: owned(&self.template_owners),
            prompts: routes(&self.prompt_routes),
        }
    }

    /// Sizes of the advertised lists.
    pub fn counts(&self) -> Counts {
        Counts {
            tools: self.tools.len(),
            resources: self.resources.len(),
            resource_templates: self.resource_templates.len(),
            prompts: self.prompts.len(),
        }
    }
}

/// Builds the catalog from the discovery results of `backends`, given in config order.
///
/// Never fails; see [`Catalog::problems`] for what was left out.
pub fn build(config: &AggregationConfig, backends: &[BackendLists]) -> Catalog {
    let refs: Vec<&BackendLists> = backends.iter().collect();
    build_from(config, &refs)
}

/// [`build`] over borrowed lists (a principal's catalog merges the shared backends' lists with
/// its own without copying them first).
pub(crate) fn build_from(config: &AggregationConfig, backends: &[&BackendLists]) -> Catalog {
    build_with(config, backends, Vec::new())
}

/// [`build_from`], noting the user-bound backends that could not be listed.
pub(crate) fn build_with(
    config: &AggregationConfig,
    backends: &[&BackendLists],
    unlisted: Vec<Unlisted>,
) -> Catalog {
    let names: Vec<Arc<str>> = backends.iter().map(|b| b.backend.clone()).collect();
    let mut problems = Vec::new();
    let mut tools = Vec::new();
    let mut prompts = Vec::new();
    // BTreeMap: keyed by URI, so the advertised lists come out sorted; the first backend (config
    // order) to claim a URI keeps it.
    let mut resources: BTreeMap<String, (usize, Value)> = BTreeMap::new();
    let mut templates: BTreeMap<String, (usize, Value)> = BTreeMap::new();

    for (i, b) in backends.iter().enumerate() {
        let name = &*b.backend;
        let listed = collect::intake(name, "tool", "name", &b.tools, &mut problems);
        tools.extend(collect::apply_tool_rules(config, i, name, listed, &mut problems));

        let listed = collect::intake(name, "prompt", "name", &b.prompts, &mut problems);
        prompts.extend(listed.into_iter().map(|(original, value)| resolve::Candidate {
            backend: i,
            base: original.clone(),
            original,
            value,
        }));

        let listed = collect::intake(name, "resource", "uri", &b.resources, &mut problems);
        claim_uris(&mut resources, listed, i, &names, "resource", &mut problems);
        let listed = collect::intake(
            name,
            "resource template",
            "uriTemplate",
            &b.resource_templates,
            &mut problems,
        );
        claim_uris(&mut templates, listed, i, &names, "resource template", &mut problems);
    }

    let mut conflicts = Vec::new();
    let tools = resolve::resolve_tools(config, &names, tools, &mut problems, &mut conflicts);
    let prompts = resolve::resolve_prompts(config, &names, prompts, &mut problems);
    let (tools, tool_routes) = routes(tools, &names);
    let (prompts, prompt_routes) = routes(prompts, &names);
    let (resources, resource_owners) = owners(resources, &names);

    let mut matchers: Vec<(usize, UriTemplate, Arc<str>)> = Vec::with_capacity(templates.len());
    for (uri_template, (i, _)) in &templates {
        if let Some(owner) = names.get(*i) {
            matchers.push((*i, UriTemplate::parse(uri_template), owner.clone()));
        }
    }
    // Stable sort: template text order (from the BTreeMap) within each backend.
    matchers.sort_by_key(|(i, _, _)| *i);
    let matchers = matchers.into_iter().map(|(_, t, b)| (t, b)).collect();
    let (resource_templates, template_owners) = owners(templates, &names);

    problems.sort();
    Catalog {
        tools,
        tool_routes,
        prompts,
        prompt_routes,
        resources,
        resource_owners,
        resource_templates,
        template_owners,
        matchers,
        problems,
        conflicts,
        unlisted,
        encoded: Default::default(),
    }
}

/// Adds `listed` (one backend's unique URIs) to `claimed`, unless an earlier backend has them.
fn claim_uris(
    claimed: &mut BTreeMap<String, (usize, Value)>,
    listed: Vec<(String, Value)>,
    backend: usize,
    names: &[Arc<str>],
    kind: &str,
    problems: &mut Vec<String>,
) {
    let name = |i: usize| names.get(i).map_or("?", |b| &**b);
    for (uri, value) in listed {
        if let Some((owner, _)) = claimed.get(&uri) {
            problems.push(format!(
                "{kind} '{uri}' from backend '{}' dropped: already provided by backend '{}'",
                name(backend),
                name(*owner),
            ));
            continue;
        }
        claimed.insert(uri, (backend, value));
    }
}

/// Splits resolved items into the advertised list and the name → route index.
fn routes(
    resolved: Vec<resolve::Resolved>,
    names: &[Arc<str>],
) -> (Vec<Value>, HashMap<String, Route>) {
    let mut list = Vec::with_capacity(resolved.len());
    let mut index = HashMap::with_capacity(resolved.len());
    for r in resolved {
        let Some(backend) = names.get(r.backend) else { continue };
        let schema = r.value.get("inputSchema").cloned().map(Arc::new);
        index
            .insert(r.advertised, Route { backend: backend.clone(), original: r.original, schema });
        list.push(r.value);
    }
    (list, index)
}

/// Splits claimed URIs into the advertised list (URI order) and the URI → backend index.
fn owners(
    claimed: BTreeMap<String, (usize, Value)>,
    names: &[Arc<str>],
) -> (Vec<Value>, HashMap<String, Arc<str>>) {
    let mut list = Vec::with_capacity(claimed.len());
    let mut index = HashMap::with_capacity(claimed.len());
    for (uri, (i, value)) in claimed {
        let Some(backend) = names.get(i) else { continue };
        index.insert(uri, backend.clone());
        list.push(value);
    }
    (list, index)
}
