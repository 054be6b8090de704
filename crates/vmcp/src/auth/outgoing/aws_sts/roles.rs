//! Which role a caller assumes, and under which session name: pure functions of the
//! configuration and the caller's claims (ToolHive's `RoleMapper` and `ExtractSessionName`).
//!
//! - A mapping matches when its `claim` is an element of the role claim (a list) or a key of it
//!   (a map): ToolHive's `claim_value in claims[roleClaim]`, so a plain string claim matches
//!   nothing, as there. Or when its `matcher` (see [`super::matcher`]) is true. Among matches the lowest `priority` wins (unset: below every
//!   number), then the earliest in the list; no match gives `fallbackRoleArn`, else nothing.
//! - The session name is the `sessionNameClaim` claim's string value, made fit for STS's
//!   `RoleSessionName` (2 to 64 characters of `[A-Za-z0-9_+=,.@-]`): other characters become
//!   `_`, longer names are cut, a one-character name is padded with `_`.

use serde_json::{Map, Value};

use super::matcher::Matcher;

/// `sessionDuration` bounds (STS's own) and default, in seconds.
pub(crate) const MIN_SESSION_SECONDS: i64 = 900;
pub(crate) const MAX_SESSION_SECONDS: i64 = 43_200;
pub(crate) const DEFAULT_SESSION_SECONDS: i64 = 3600;
/// Defaults of `roleClaim`, `sessionNameClaim` and `service`.
pub(crate) const DEFAULT_ROLE_CLAIM: &str = "groups";
pub(crate) const DEFAULT_SESSION_NAME_CLAIM: &str = "sub";
pub(crate) const DEFAULT_SERVICE: &str = "aws-mcp";

const MAX_SESSION_NAME: usize = 64;

/// Why `arn` is not an IAM role ARN (`arn:<partition>:iam::<12 digits>:role/<path/name>`), if
/// it is not.
pub(crate) fn role_arn_problem(arn: &str) -> Option<String> {
    let mut parts = arn.splitn(6, ':');
    let fields: Vec<&str> = parts.by_ref().collect();
    let bad = |why: &str| Some(format!("{arn:?} is not an IAM role ARN: {why}"));
    let [prefix, partition, service, region, account, resource] = fields[..] else {
        return bad("expected arn:<partition>:iam::<account>:role/<name>");
    };
    if prefix != "arn" || partition.is_empty() {
        return bad("expected arn:<partition>:iam::<account>:role/<name>");
    }
    if service != "iam" {
        return bad("not an IAM ARN");
    }
    if !region.is_empty() {
        return bad("IAM ARNs have no region");
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return bad("the account id must be 12 digits");
    }
    match resource.strip_prefix("role/") {
        Some(name) if !name.is_empty() && !name.ends_with('/') => None,
        _ => bad("not a role (role/<name>)"),
    }
}

/// Why `seconds` is not a valid `sessionDuration`, if it is not.
pub(crate) fn session_duration_problem(seconds: i64) -> Option<String> {
    (!(MIN_SESSION_SECONDS..=MAX_SESSION_SECONDS).contains(&seconds)).then(|| {
        format!(
            "{seconds} is out of range: STS sessions last {MIN_SESSION_SECONDS} to \
             {MAX_SESSION_SECONDS} seconds"
        )
    })
}

/// What a `roleMappings` entry matches.
#[derive(Debug, Clone)]
pub(super) enum Rule {
    /// The role claim is this value or contains it.
    Claim(String),
    /// A matcher over all claims.
    Matcher(Matcher),
}

/// One `roleMappings` entry, ready to match.
#[derive(Debug, Clone)]
pub(super) struct Mapping {
    pub rule: Rule,
    pub role_arn: String,
    /// `None` ranks below every number.
    pub priority: Option<i64>,
}

/// The role choice of one backend.
#[derive(Debug, Clone)]
pub(super) struct Roles {
    pub mappings: Vec<Mapping>,
    pub fallback: Option<String>,
    pub role_claim: String,
}

/// Why no role could be chosen; the message names the claim, never a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NoRole(pub String);

impl Roles {
    /// The role for a caller with `claims`.
    pub(super) fn select(&self, claims: &Map<String, Value>) -> Result<&str, NoRole> {
        let value = claims.get(&self.role_claim);
        let matches = |m: &&Mapping| match (&m.rule, value) {
            (Rule::Matcher(x), _) => x.matches(claims),
            (Rule::Claim(c), Some(Value::Array(items))) => {
                items.iter().any(|i| i.as_str() == Some(c))
            }
            (Rule::Claim(c), Some(Value::Object(keys))) => keys.contains_key(c),
            (Rule::Claim(_), _) => false,
        };
        // `min_by_key` keeps the first of equal keys: config order breaks ties.
        let best = self
            .mappings
            .iter()
            .filter(matches)
            .min_by_key(|m| (m.priority.is_none(), m.priority.unwrap_or(0)));
        match (best, &self.fallback) {
            (Some(m), _) => Ok(&m.role_arn),
            (None, Some(f)) => Ok(f),
            (None, None) => Err(NoRole(format!(
                "no roleMappings entry matches the caller's {:?} claim and no fallbackRoleArn \
                 is configured",
                self.role_claim
            ))),
        }
    }
}

/// The `RoleSessionName` for a caller: the string value of `claim`, sanitised (see the module
/// docs). `None` when the claim is missing, empty or not a string.
pub(super) fn session_name(claims: &Map<String, Value>, claim: &str) -> Option<String> {
    let raw = claims.get(claim)?.as_str().filter(|s| !s.is_empty())?;
    let mut name: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) { c } else { '_' })
        .take(MAX_SESSION_NAME)
        .collect();
    if name.len() < 2 {
        name.push('_');
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn roles(fallback: Option<&str>) -> Roles {
        let m = |claim: &str, role: &str, priority| Mapping {
            rule: Rule::Claim(claim.into()),
            role_arn: role.into(),
            priority,
        };
        Roles {
            mappings: vec![
                m("dev", "arn:aws:iam::123456789012:role/Dev", None),
                m("ops", "arn:aws:iam::123456789012:role/Ops", Some(10)),
                m("admins", "arn:aws:iam::123456789012:role/Admin", Some(1)),
                m("ops", "arn:aws:iam::123456789012:role/Ops2", Some(10)),
                m("dev2", "arn:aws:iam::123456789012:role/Dev2", None),
            ],
            fallback: fallback.map(str::to_owned),
            role_claim: "groups".into(),
        }
    }

    #[test]
    fn lowest_priority_then_config_order() {
        let r = roles(None);
        let pick = |v| r.select(&claims(v)).map(str::to_owned);
        assert_eq!(
            pick(json!({"groups": ["dev", "ops", "admins"]})).unwrap(),
            "arn:aws:iam::123456789012:role/Admin"
        );
        // Equal priorities: the earlier entry.
        assert_eq!(pick(json!({"groups": ["ops"]})).unwrap(), "arn:aws:iam::123456789012:role/Ops");
        // Any number beats an unset priority.
        assert_eq!(
            pick(json!({"groups": ["dev", "ops"]})).unwrap(),
            "arn:aws:iam::123456789012:role/Ops"
        );
        // Two unset: config order.
        assert_eq!(
            pick(json!({"groups": ["dev2", "dev"]})).unwrap(),
            "arn:aws:iam::123456789012:role/Dev"
        );
        // CEL's `in`: a map's keys match, a plain string does not (as in ToolHive).
        assert_eq!(
            pick(json!({"groups": {"dev2": true}})).unwrap(),
            "arn:aws:iam::123456789012:role/Dev2"
        );
        assert!(pick(json!({"groups": "dev2"})).is_err());
        // Nothing matches and no fallback: refused, naming the claim.
        let e = pick(json!({"groups": ["guests"], "sub": "u"})).unwrap_err();
        assert!(e.0.contains("\"groups\"") && e.0.contains("fallbackRoleArn"), "{e:?}");
        assert!(pick(json!({"sub": "u"})).is_err());
        assert!(pick(json!({"groups": [1, {"dev": true}]})).is_err());
        let r = roles(Some("arn:aws:iam::123456789012:role/Fallback"));
        assert_eq!(
            r.select(&claims(json!({"groups": []}))).unwrap(),
            "arn:aws:iam::123456789012:role/Fallback"
        );
    }

    #[test]
    fn matchers_rank_with_claims() {
        let mut r = roles(None);
        r.mappings.push(Mapping {
            rule: Rule::Matcher(Matcher::parse(r#"claims.sub == "root""#).unwrap()),
            role_arn: "arn:aws:iam::123456789012:role/Root".into(),
            priority: Some(0),
        });
        let pick = |v| r.select(&claims(v)).map(str::to_owned);
        assert_eq!(
            pick(json!({"sub": "root", "groups": ["admins"]})).unwrap(),
            "arn:aws:iam::123456789012:role/Root"
        );
        assert_eq!(
            pick(json!({"sub": "u", "groups": ["admins"]})).unwrap(),
            "arn:aws:iam::123456789012:role/Admin"
        );
    }

    #[test]
    fn session_names_fit_sts() {
        let c = claims(json!({
            "sub": "user@example.com",
            "name": "Jo Bloggs / ops",
            "long": "x".repeat(100),
            "one": "a",
            "num": 7,
            "empty": "",
        }));
        assert_eq!(session_name(&c, "sub").unwrap(), "user@example.com");
        assert_eq!(session_name(&c, "name").unwrap(), "Jo_Bloggs___ops");
        assert_eq!(session_name(&c, "long").unwrap().len(), 64);
        assert_eq!(session_name(&c, "one").unwrap(), "a_");
        assert_eq!(session_name(&c, "num"), None);
        assert_eq!(session_name(&c, "empty"), None);
        assert_eq!(session_name(&c, "missing"), None);
        // Multi-byte characters are replaced one for one, so the cut stays within 64 bytes.
        assert_eq!(session_name(&claims(json!({"sub": "é".repeat(70)})), "sub").unwrap().len(), 64);
    }

    #[test]
    fn role_arns() {
        assert_eq!(role_arn_problem("arn:aws:iam::123456789012:role/Dev"), None);
        assert_eq!(role_arn_problem("arn:aws-cn:iam::123456789012:role/service-role/X"), None);
        for bad in [
            "",
            "Dev",
            "arn:aws:s3:::bucket",
            "arn:aws:iam::12345:role/Dev",
            "arn:aws:iam::123456789012:user/Dev",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam:us-east-1:123456789012:role/Dev",
        ] {
            assert!(role_arn_problem(bad).is_some(), "{bad}");
        }
        assert_eq!(session_duration_problem(900), None);
        assert_eq!(session_duration_problem(43_200), None);
        assert!(session_duration_problem(899).unwrap().contains("900 to 43200"));
        assert!(session_duration_problem(43_201).is_some());
    }
}
