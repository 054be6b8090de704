//! `incomingAuth.authz`: ToolHive vMCP's authorization block, same keys, same meaning.
//!
//! `type: cedar` evaluates Cedar `policies` (with `entitiesJson`) for every tool call, prompt
//! get and resource read, and filters the lists; `type: none` is ToolHive's explicit "no
//! authorization", the same as leaving the block out. The policies are compiled and checked
//! against vmcp's schema here, at load ([`check`]), so `vmcp validate` shows their errors with
//! the policy's index and the line inside it; [`crate::authz`] compiles them again at start.

use serde::Deserialize;

use super::Config;
use super::locate::{index_path, key_path};
use super::validate::Finding;

/// `incomingAuth.authz`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzConfig {
    /// `cedar` or `none`.
    #[serde(rename = "type")]
    pub kind: AuthzKind,
    /// Cedar policies, one per entry (ToolHive numbers them `policy0`, `policy1`, ...).
    #[serde(default)]
    pub policies: Vec<String>,
    /// Cedar entities as a JSON array (Cedar's entity JSON format), e.g. group hierarchies;
    /// empty or absent: none.
    #[serde(default)]
    pub entities_json: Option<String>,
    /// Take the claims from this upstream provider's access token (held by the embedded
    /// authorization server's token vault) instead of the token the client presented.
    #[serde(default)]
    pub primary_upstream_provider: Option<String>,
    /// The claim holding the caller's groups (a top-level name or a dot path such as
    /// `realm_access.roles`); absent or not in the token: `groups`, `roles`, `cognito:groups`.
    #[serde(default)]
    pub group_claim_name: Option<String>,
    /// The claim holding the caller's roles; absent: no roles.
    #[serde(default)]
    pub role_claim_name: Option<String>,
    /// Cedar entity type of the principal's parents made from groups and roles; default
    /// [`DEFAULT_GROUP_ENTITY_TYPE`].
    #[serde(default)]
    pub group_entity_type: Option<String>,
}

/// Default `groupEntityType` (ToolHive's).
pub const DEFAULT_GROUP_ENTITY_TYPE: &str = "THVGroup";

/// `incomingAuth.authz.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthzKind {
    /// Cedar policies.
    Cedar,
    /// No authorization (ToolHive's explicit form of leaving the block out).
    None,
}

impl AuthzConfig {
    /// The group entity type in force.
    pub fn group_entity_type(&self) -> &str {
        match self.group_entity_type.as_deref() {
            Some(t) if !t.is_empty() => t,
            _ => DEFAULT_GROUP_ENTITY_TYPE,
        }
    }

    /// `entitiesJson`, when it says anything.
    pub fn entities_json(&self) -> Option<&str> {
        self.entities_json.as_deref().filter(|s| !s.trim().is_empty())
    }

    /// `primaryUpstreamProvider`, when set.
    pub fn primary_upstream_provider(&self) -> Option<&str> {
        self.primary_upstream_provider.as_deref().filter(|s| !s.is_empty())
    }
}

const PATH: &str = "incomingAuth.authz";

/// Errors: missing policies, policies that do not compile or fail vmcp's schema, bad entities,
/// a `groupEntityType` that is no Cedar type name, an unknown `primaryUpstreamProvider`.
pub(super) fn check(cfg: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(authz) = &cfg.incoming_auth.authz else { return out };
    let mut report = |path: String, message: String| out.push(Finding { path, message });
    if authz.kind == AuthzKind::None {
        return out;
    }
    if authz.policies.is_empty() {
        report(
            key_path(PATH, "policies"),
            "required with `type: cedar` (at least one policy; for no authorization use \
             `type: none`)"
                .to_owned(),
        );
    }
    if let Some(provider) = authz.primary_upstream_provider() {
        let names: Vec<&str> = cfg
            .auth_server
            .iter()
            .flat_map(|a| a.upstreams.iter())
            .map(|u| if u.name.is_empty() { "default" } else { u.name.as_str() })
            .collect();
        if cfg.auth_server.is_none() {
            report(
                key_path(PATH, "primaryUpstreamProvider"),
                "needs the embedded authorization server (authserver-config.yaml beside this \
                 file): upstream tokens come from its vault"
                    .to_owned(),
            );
        } else if !names.contains(&provider) {
            report(
                key_path(PATH, "primaryUpstreamProvider"),
                format!(
                    "unknown upstream {provider:?}; authserver-config.yaml names: {}",
                    names.join(", ")
                ),
            );
        }
    }
    match crate::authz::compile::compile(authz, &cfg.name) {
        Ok(_) => {}
        Err(errors) => {
            for e in errors {
                let path = match e.policy {
                    Some(i) => index_path(&key_path(PATH, "policies"), i),
                    None => key_path(PATH, e.key),
                };
                report(path, e.message);
            }
        }
    }
    out
}

/// Advisory lines: what loads but cannot do what it seems to say.
pub(super) fn warnings(cfg: &Config) -> Vec<String> {
    let Some(authz) = &cfg.incoming_auth.authz else { return Vec::new() };
    if authz.kind == AuthzKind::None {
        return Vec::new();
    }
    crate::authz::compile::compile(authz, &cfg.name).map(|c| c.warnings).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::super::validate::tests::problems;

    const HEAD: &str = "name: gw\nbackends:\n  - name: a\n    transport: streamable-http\n    url: https://h/mcp\nincomingAuth:\n  type: anonymous\n  authz:\n";

    #[test]
    fn none_loads_and_cedar_needs_policies() {
        let cfg = parse(&format!("{HEAD}    type: none\n"), "t.yaml").unwrap();
        assert_eq!(cfg.incoming_auth.authz.map(|a| a.kind), Some(super::AuthzKind::None));
        let ps = problems(&format!("{HEAD}    type: cedar\n"));
        assert_eq!((ps[0].0, ps[0].1.as_str()), (Some(8), "incomingAuth.authz.policies"));
        assert!(ps[0].2.starts_with("required with `type: cedar`"), "{}", ps[0].2);
    }

    #[test]
    fn keys_and_values_are_checked() {
        let err = match parse(&format!("{HEAD}    type: cedar\n    policy: []\n"), "t.yaml") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        };
        assert!(err.starts_with("t.yaml:10:5: incomingAuth.authz.policy: unknown key"), "{err}");
        assert!(parse(&format!("{HEAD}    type: opa\n"), "t.yaml").is_err());
        let text = format!(
            "{HEAD}    type: cedar\n    policies: ['permit(principal, action, resource);']\n    \
             primaryUpstreamProvider: github\n    groupEntityType: 'A::B'\n"
        );
        let ps = problems(&text);
        let got: Vec<_> = ps.iter().map(|(l, p, _)| (*l, p.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(11), "incomingAuth.authz.primaryUpstreamProvider"),
                (Some(12), "incomingAuth.authz.groupEntityType")
            ],
            "{ps:?}"
        );
        assert!(ps[0].2.starts_with("needs the embedded authorization server"), "{}", ps[0].2);
    }
}
