//! Unresolved tool name conflicts under `conflictResolution: manual`, and how they are told to
//! the operator.
//!
//! ToolHive's manual resolver fails aggregation on such a conflict (`ErrUnresolvedConflicts`).
//! vmcp refuses to start when its first catalog has one ([`refusal`], used by `vmcp serve`); a
//! conflict that appears later cannot stop a running gateway, so its tools are left out and the
//! same text ([`Conflict::describe`]) is listed in `/status` problems.

use std::fmt::Write as _;
use std::sync::Arc;

/// A tool name that several tools claim under `manual`; none of them is advertised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The contested name (after overrides and the name rules).
    pub name: String,
    /// Who claims it: (backend, the backend's own tool name), in backend config order, then by
    /// tool name.
    pub claimants: Vec<(Arc<str>, String)>,
}

impl Conflict {
    /// One line: the name, its claimants, and the overrides that would resolve it (rename every
    /// claimant but the first; the suggested names use the default prefix).
    pub fn describe(&self) -> String {
        let who: Vec<String> = self
            .claimants
            .iter()
            .map(|(b, original)| {
                if *original == self.name {
                    format!("backend '{b}'")
                } else {
                    format!("backend '{b}' (its tool '{original}', renamed by an override)")
                }
            })
            .collect();
        let fixes: Vec<String> = self
            .claimants
            .iter()
            .skip(1)
            .map(|(b, original)| {
                format!("{{workload: {b}, overrides: {{{original}: {{name: {b}_{original}}}}}}}")
            })
            .collect();
        format!(
            "tool name '{}' is claimed by {}; none of them is advertised. Fix: give all but one a \
             new name under aggregation.tools, e.g. {}",
            self.name,
            who.join(" and "),
            fixes.join(", ")
        )
    }
}

/// What `vmcp serve` prints when it refuses to start on `conflicts` (non-empty).
pub fn refusal(conflicts: &[Conflict]) -> String {
    let mut out = format!(
        "refusing to start: aggregation.conflictResolution is manual and {} tool name{} {} \
         claimed by more than one tool (ToolHive also fails on unresolved conflicts):",
        conflicts.len(),
        if conflicts.len() == 1 { "" } else { "s" },
        if conflicts.len() == 1 { "is" } else { "are" },
    );
    for c in conflicts {
        let _ = write!(out, "\n  - {}", c.describe());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict(name: &str, claimants: &[(&str, &str)]) -> Conflict {
        Conflict {
            name: name.to_owned(),
            claimants: claimants.iter().map(|(b, t)| (Arc::from(*b), (*t).to_owned())).collect(),
        }
    }

    #[test]
    fn describe_names_claimants_and_the_fix() {
        let c = conflict("echo", &[("a", "echo"), ("b", "echo")]);
        assert_eq!(
            c.describe(),
            "tool name 'echo' is claimed by backend 'a' and backend 'b'; none of them is \
             advertised. Fix: give all but one a new name under aggregation.tools, e.g. \
             {workload: b, overrides: {echo: {name: b_echo}}}"
        );
        let c = conflict("z", &[("a", "y"), ("a", "z")]);
        let d = c.describe();
        assert!(d.contains("backend 'a' (its tool 'y', renamed by an override) and backend 'a'"));
        assert!(d.ends_with("{workload: a, overrides: {z: {name: a_z}}}"), "{d}");
    }

    #[test]
    fn refusal_lists_every_conflict() {
        let one = refusal(&[conflict("x", &[("a", "x"), ("b", "x")])]);
        assert!(one.contains("manual and 1 tool name is claimed"), "{one}");
        let two = refusal(&[
            conflict("x", &[("a", "x"), ("b", "x")]),
            conflict("y", &[("a", "y"), ("b", "y"), ("c", "y")]),
        ]);
        assert!(two.contains("2 tool names are claimed"), "{two}");
        assert_eq!(two.lines().count(), 3, "{two}");
        assert!(two.contains("{workload: c, overrides: {y: {name: c_y}}}"), "{two}");
    }
}
