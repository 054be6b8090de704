//! Conflict resolution: turns the visible tools and the prompts of all backends into advertised
//! names, following `aggregation.conflictResolution` the way ToolHive's resolvers do
//! (`pkg/vmcp/aggregator/{prefix,priority,manual}_resolver.go`, `capability_conflicts.go`).
//!
//! A tool's *claim* is its name after overrides; tools with equal claims (after [`sanitize`])
//! contest one name.
//!
//! Tools:
//! - `prefix`: every tool becomes `prefix(backend) + claim`, override names included.
//! - `priority`: a claim made by one backend stays bare. A contested claim goes to the claimant
//!   ranked first in `priorityOrder`; every other claimant loses its tool. If no claimant is
//!   ranked, they all get the default prefix `{backend}_` (not `prefixFormat`, as in ToolHive).
//! - `manual`: a claim made by one tool stays bare; a claim made by several is a [`Conflict`]:
//!   none of them is advertised (`vmcp serve` refuses to start on one; see `conflict`).
//!
//! Prompts have no overrides (ToolHive has none) and never depend on what other backends list:
//! under `prefix` and `manual` every prompt is `prefix(backend) + name`; under `priority`,
//! backends in `priorityOrder` keep bare names and the others stay prefixed. A name claimed by
//! several backends that are all in `priorityOrder` goes to the first of them; any other shared
//! name is ambiguous and dropped for every claimant.
//!
//! Then every name goes through [`sanitize`]; if two items still share an advertised name, the
//! one from the earlier backend (config order), then with the smaller original name, keeps it.
//!
//! Invariants: the output is a pure function of the candidate *set* (input order is irrelevant),
//! names are valid and unique, and every dropped item leaves a problem.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::conflict::Conflict;
use super::names::{DEFAULT_PREFIX_FORMAT, prefix, sanitize};
use crate::config::{AggregationConfig, ConflictResolution};

/// A visible item before resolution.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    /// Index of the backend in config order.
    pub backend: usize,
    /// The name the backend uses; routing sends this back.
    pub original: String,
    /// The name it claims: the override name if any, else `original`.
    pub base: String,
    /// The object to advertise, overrides applied, `name` not yet set.
    pub value: Value,
}

/// An item that made it into the catalog.
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    pub advertised: String,
    pub backend: usize,
    pub original: String,
    /// `value` with `name` set to `advertised`.
    pub value: Value,
}

/// What the strategies need to know about the configured backends.
struct Naming<'a> {
    backends: &'a [Arc<str>],
    /// `prefixFormat`, or the default.
    format: &'a str,
    /// Position in `priorityOrder` per backend index; unranked backends get `None`.
    rank: Vec<Option<usize>>,
}

impl<'a> Naming<'a> {
    fn new(config: &'a AggregationConfig, backends: &'a [Arc<str>]) -> Self {
        let crc = &config.conflict_resolution_config;
        let rank =
            backends.iter().map(|b| crc.priority_order.iter().position(|p| **p == **b)).collect();
        let format = crc.prefix_format.as_deref().unwrap_or(DEFAULT_PREFIX_FORMAT);
        Naming { backends, format, rank }
    }

    fn name(&self, i: usize) -> &'a str {
        self.backends.get(i).map_or("?", |b| &**b)
    }

    fn rank(&self, c: &Candidate) -> Option<usize> {
        self.rank.get(c.backend).copied().flatten()
    }
}

/// Groups candidates by their sanitized claim, so `get weather` and `get_weather` contest one
/// name instead of colliding blindly afterwards.
fn group(candidates: Vec<Candidate>, claim: impl Fn(&Candidate) -> String) -> Groups {
    let mut groups: Groups = BTreeMap::new();
    for c in candidates {
        groups.entry(sanitize(&claim(&c))).or_default().push(c);
    }
    groups
}

type Groups = BTreeMap<String, Vec<Candidate>>;

/// Resolves the visible tools; returns them sorted by advertised name. Unresolved `manual`
/// conflicts go to `conflicts` (and, described, to `problems`).
pub(super) fn resolve_tools(
    config: &AggregationConfig,
    backends: &[Arc<str>],
    candidates: Vec<Candidate>,
    problems: &mut Vec<String>,
    conflicts: &mut Vec<Conflict>,
) -> Vec<Resolved> {
    let n = Naming::new(config, backends);
    let mut proposed: Vec<(String, Candidate)> = Vec::new();
    for (claim, group) in group(candidates, |c| c.base.clone()) {
        let first_backend = group.first().map(|c| c.backend);
        let contested = group.iter().any(|c| Some(c.backend) != first_backend);
        match config.conflict_resolution {
            ConflictResolution::Prefix => proposed.extend(
                group.into_iter().map(|c| (prefix(n.format, n.name(c.backend)) + &c.base, c)),
            ),
            ConflictResolution::Priority if !contested => {
                proposed.extend(group.into_iter().map(|c| (claim.clone(), c)));
            }
            ConflictResolution::Priority => match group.iter().filter_map(|c| n.rank(c)).min() {
                Some(top) => {
                    let winner = group.iter().find(|c| n.rank(c) == Some(top)).map(|c| c.backend);
                    for c in group {
                        if n.rank(&c) == Some(top) {
                            proposed.push((claim.clone(), c));
                        } else {
                            problems.push(format!(
                                "tool '{}' from backend '{}' dropped: name '{claim}' goes to \
                                 higher-priority backend '{}'",
                                c.original,
                                n.name(c.backend),
                                winner.map_or("?", |w| n.name(w)),
                            ));
                        }
                    }
                }
                None => proposed.extend(
                    group
                        .into_iter()
                        .map(|c| (prefix(DEFAULT_PREFIX_FORMAT, n.name(c.backend)) + &c.base, c)),
                ),
            },
            ConflictResolution::Manual if group.len() == 1 => {
                proposed.extend(group.into_iter().map(|c| (claim.clone(), c)));
            }
            ConflictResolution::Manual => {
                let mut claimants: Vec<(usize, String)> =
                    group.into_iter().map(|c| (c.backend, c.original)).collect();
                claimants.sort();
                let claimants =
                    claimants.into_iter().map(|(i, o)| (Arc::from(n.name(i)), o)).collect();
                let conflict = Conflict { name: claim, claimants };
                problems.push(conflict.describe());
                conflicts.push(conflict);
            }
        }
    }
    finish("tool", &n, proposed, problems)
}

/// Resolves the prompts (see the module docs); returns them sorted by advertised name.
pub(super) fn resolve_prompts(
    config: &AggregationConfig,
    backends: &[Arc<str>],
    candidates: Vec<Candidate>,
    problems: &mut Vec<String>,
) -> Vec<Resolved> {
    let n = Naming::new(config, backends);
    let priority = config.conflict_resolution == ConflictResolution::Priority;
    // Only under `priority` does a ranked backend keep bare prompt names.
    let listed = |c: &Candidate| if priority { n.rank(c) } else { None };
    let claim = |c: &Candidate| match listed(c) {
        Some(_) => c.original.clone(),
        None => prefix(n.format, n.name(c.backend)) + &c.original,
    };
    let mut proposed: Vec<(String, Candidate)> = Vec::new();
    for (name, group) in group(candidates, claim) {
        if group.len() == 1 {
            proposed.extend(group.into_iter().map(|c| (name.clone(), c)));
            continue;
        }
        let ranks: Option<Vec<usize>> = group.iter().map(listed).collect();
        let Some(top) = ranks.and_then(|r| r.into_iter().min()) else {
            // Someone unranked shares the name: nobody owns it (granting it to one would hand it
            // whatever clients and policies knew of the other).
            let mut claimants: Vec<String> = group
                .iter()
                .map(|c| format!("backend '{}' (prompt '{}')", n.name(c.backend), c.original))
                .collect();
            claimants.sort();
            problems.push(format!(
                "prompt name '{name}' is claimed by {}; dropped for all (ambiguous, as in ToolHive)",
                claimants.join(" and ")
            ));
            continue;
        };
        let winner = group.iter().find(|c| listed(c) == Some(top)).map(|c| c.backend);
        for c in group {
            if listed(&c) == Some(top) {
                proposed.push((name.clone(), c));
            } else {
                problems.push(format!(
                    "prompt '{}' from backend '{}' dropped: name '{name}' goes to \
                     higher-priority backend '{}'",
                    c.original,
                    n.name(c.backend),
                    winner.map_or("?", |w| n.name(w)),
                ));
            }
        }
    }
    finish("prompt", &n, proposed, problems)
}

/// Sanitizes the proposed names, then lets the earliest (backend, original) keep each one.
fn finish(
    kind: &str,
    n: &Naming<'_>,
    proposed: Vec<(String, Candidate)>,
    problems: &mut Vec<String>,
) -> Vec<Resolved> {
    let mut named: Vec<(String, Candidate)> =
        proposed.into_iter().map(|(name, c)| (sanitize(&name), c)).collect();
    named.sort_by(|(a, x), (b, y)| (a, x.backend, &x.original).cmp(&(b, y.backend, &y.original)));
    let mut out: Vec<Resolved> = Vec::with_capacity(named.len());
    for (advertised, c) in named {
        if let Some(prev) = out.last().filter(|p| p.advertised == advertised) {
            problems.push(format!(
                "{kind} '{}' from backend '{}' dropped: advertised name '{advertised}' already \
                 taken by '{}' from backend '{}'",
                c.original,
                n.name(c.backend),
                prev.original,
                n.name(prev.backend),
            ));
            continue;
        }
        let mut value = c.value;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("name".to_owned(), Value::String(advertised.clone()));
        }
        out.push(Resolved { advertised, backend: c.backend, original: c.original, value });
    }
    out
}
