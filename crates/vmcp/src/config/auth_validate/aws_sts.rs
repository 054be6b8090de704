//! Checks of the `awsSts` block: ToolHive's `ValidateConfig` rules (region, a role to assume,
//! well-formed role ARNs, exactly one of `claim` and `matcher`, session duration bounds), plus
//! matchers outside the CEL subset vmcp evaluates (refused with the construct and its place,
//! never ignored) and the vmcp extension `stsEndpoint`.

use super::grants::upstream_problem;
use super::{Findings, url_problem};
use crate::auth::outgoing::{AwsRoleMatcher, aws_role_arn_problem, aws_session_duration_problem};
use crate::config::Config;
use crate::config::auth::{AwsStsConfig, IncomingAuthKind};
use crate::config::locate::{index_path, key_path};

/// The `awsSts` block at `p` (`<strategy>.awsSts`).
pub(super) fn check(cfg: &Config, a: &AwsStsConfig, p: &str, f: &mut Findings<'_>) {
    let at = |k| key_path(p, k);
    if a.region.trim().is_empty() {
        f.report(at("region"), "required: the AWS region of STS and of the signature");
    }
    if a.service.as_deref().is_some_and(|s| s.trim().is_empty()) {
        f.report(at("service"), "must not be empty (unset means aws-mcp)");
    }
    let fallback = a.fallback_role_arn.as_deref().filter(|r| !r.is_empty());
    if fallback.is_none() && a.role_mappings.is_empty() {
        f.report(p, "fallbackRoleArn or roleMappings is required: the role to assume");
    }
    if let Some(problem) = fallback.and_then(aws_role_arn_problem) {
        f.report(at("fallbackRoleArn"), problem);
    }
    let mappings = at("roleMappings");
    for (i, m) in a.role_mappings.iter().enumerate() {
        let mp = index_path(&mappings, i);
        let claim = m.claim.as_deref().filter(|c| !c.is_empty());
        let matcher = m.matcher.as_deref().filter(|c| !c.is_empty());
        match (claim, matcher) {
            (None, None) => f.report(&mp, "claim or matcher is required"),
            (Some(_), Some(_)) => f.report(&mp, "give either claim or matcher, not both"),
            (None, Some(m)) => {
                if let Err(e) = AwsRoleMatcher::parse(m) {
                    f.report(
                        key_path(&mp, "matcher"),
                        format!("{e}: vmcp evaluates a subset of CEL (see docs/auth.md)"),
                    );
                }
            }
            (Some(_), None) => {}
        }
        if m.role_arn.is_empty() {
            f.report(key_path(&mp, "roleArn"), "required: the role this mapping assumes");
        } else if let Some(problem) = aws_role_arn_problem(&m.role_arn) {
            f.report(key_path(&mp, "roleArn"), problem);
        }
    }
    for (key, v) in [("roleClaim", &a.role_claim), ("sessionNameClaim", &a.session_name_claim)] {
        if v.as_deref().is_some_and(|c| c.trim().is_empty()) {
            f.report(at(key), "must not be empty");
        }
    }
    if let Some(problem) = a.session_duration.and_then(aws_session_duration_problem) {
        f.report(at("sessionDuration"), problem);
    }
    if let Some(problem) = a.sts_endpoint.as_deref().and_then(url_problem) {
        f.report(at("stsEndpoint"), problem);
    }
    if let Some(name) = a.subject_provider_name.as_deref().filter(|n| !n.is_empty())
        && let Some(problem) = upstream_problem(cfg, name, "subjectProviderName")
    {
        f.report(at("subjectProviderName"), problem);
    }
}

/// Legal but useless `aws_sts` settings of the strategy at `p`, as `path: message` lines.
pub(super) fn warnings(cfg: &Config, p: &str, out: &mut Vec<String>) {
    if cfg.incoming_auth.kind == IncomingAuthKind::Anonymous {
        out.push(format!(
            "{p}: aws_sts needs the caller's token, but incomingAuth is anonymous: every request \
             to the backend will be refused"
        ));
    }
}
