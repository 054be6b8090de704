//! Conflict resolution: turns the visible tools (or prompts) of all backends into advertised
//! names, following `aggregation.conflictResolution`.
//!
//! A claim is the override name or else the original name, as it would be advertised (that is,
//! after [`sanitize`]); items with equal claims contest one name.
//!
//! - `prefix`: every item becomes `prefix(backend) + original`; an override name is kept as is.
//! - `priority`: a name claimed by one backend stays bare. A name claimed by several goes to the
//!   claimant ranked first in `priorityOrder`; every other claimant loses its item (as in
//!   ToolHive). If no claimant is ranked, the claimants fall back to `prefix`.
//! - `manual`: a name claimed by one item stays bare; a name claimed by several items (overrides
//!   included) is dropped for all of them.
//!
//! Then every name goes through [`sanitize`] (prefixed names too); if two items still share an
//! advertised name, the one from the earlier backend (config order), then with the smaller
//! original name, keeps it.
//!
//! Invariants: the output is a pure function of the candidate *set* (input order is irrelevant),
//! names are valid and unique, and every dropped item leaves a problem.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

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
    /// True if `base` came from an override, which no strategy may rename.
    pub pinned: bool,
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

/// Resolves `candidates` of one kind ("tool" or "prompt"); returns them sorted by advertised name.
pub(super) fn resolve(
    config: &AggregationConfig,
    backends: &[Arc<str>],
    kind: &str,
    candidates: Vec<Candidate>,
    problems: &mut Vec<String>,
) -> Vec<Resolved> {
    let format =
        config.conflict_resolution_config.prefix_format.as_deref().unwrap_or(DEFAULT_PREFIX_FORMAT);
    let backend_name = |i: usize| backends.get(i).map_or("?", |b| &**b);
    let prefixed = |c: &Candidate| {
        if c.pinned {
            c.base.clone()
        } else {
            prefix(format, backend_name(c.backend)) + &c.original
        }
    };
    // Position in priorityOrder per backend index; unranked backends get None.
    let rank: Vec<Option<usize>> = backends
        .iter()
        .map(|b| config.conflict_resolution_config.priority_order.iter().position(|p| **p == **b))
        .collect();
    let rank_of = |c: &Candidate| rank.get(c.backend).copied().flatten();

    // Claims are compared after sanitizing, so `get weather` and `get_weather` contest the same
    // advertised name under `priority` and `manual` instead of colliding blindly afterwards.
    let mut groups: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for c in candidates {
        groups.entry(sanitize(&c.base)).or_default().push(c);
    }

    let mut proposed: Vec<(String, Candidate)> = Vec::new();
    for (base, group) in groups {
        let first_backend = group.first().map(|c| c.backend);
        let contested = group.iter().any(|c| Some(c.backend) != first_backend);
        match config.conflict_resolution {
            ConflictResolution::Prefix => {
                proposed.extend(group.into_iter().map(|c| (prefixed(&c), c)));
            }
            ConflictResolution::Priority if !contested => {
                proposed.extend(group.into_iter().map(|c| (base.clone(), c)));
            }
            ConflictResolution::Priority => match group.iter().filter_map(rank_of).min() {
                Some(top) => {
                    let winner = group.iter().find(|c| rank_of(c) == Some(top)).map(|c| c.backend);
                    for c in group {
                        if rank_of(&c) == Some(top) {
                            proposed.push((base.clone(), c));
                        } else {
                            problems.push(format!(
                                "{kind} '{}' from backend '{}' dropped: name '{base}' goes to \
                                 higher-priority backend '{}'",
                                c.original,
                                backend_name(c.backend),
                                winner.map_or("?", backend_name),
                            ));
                        }
                    }
                }
                None => proposed.extend(group.into_iter().map(|c| (prefixed(&c), c))),
            },
            ConflictResolution::Manual if group.len() == 1 => {
                proposed.extend(group.into_iter().map(|c| (base.clone(), c)));
            }
            ConflictResolution::Manual => {
                let mut claimants: Vec<String> = group
                    .iter()
                    .map(|c| format!("{}/{}", backend_name(c.backend), c.original))
                    .collect();
                claimants.sort();
                problems.push(format!(
                    "{kind} name '{base}' is claimed by {}; dropped for all (add overrides to \
                     resolve)",
                    claimants.join(", ")
                ));
            }
        }
    }

    // Sanitize, then let the earliest (backend, original) keep each advertised name.
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
                backend_name(c.backend),
                prev.original,
                backend_name(prev.backend),
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
