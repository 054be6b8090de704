//! Checks between the main config and `authserver-config.yaml`, reported on the main file's keys
//! (ToolHive's `ValidateAuthServerIntegration`):
//!
//! - with an authorization server, `incomingAuth` is `oidc` with the server's `issuer`, and an
//!   `audience` the server may issue tokens for (`allowed_audiences`): otherwise no token it
//!   issues is ever accepted;
//! - `upstreamInject.providerName` and `tokenExchange.subjectProviderName` name a configured
//!   upstream (an empty `providerName` means `default`, as in ToolHive).

use super::{AuthServerConfig, DEFAULT_UPSTREAM_NAME, FILE_NAME};
use crate::config::Config;
use crate::config::auth::{BackendAuthConfig, BackendAuthKind, IncomingAuthKind};
use crate::config::load::suggest;
use crate::config::locate::key_path;
use crate::config::validate::Finding;

/// Every strategy with its key path: `outgoingAuth.default`, then `outgoingAuth.backends.<name>`.
pub(crate) fn strategies(cfg: &Config) -> Vec<(String, &BackendAuthConfig)> {
    let out = &cfg.outgoing_auth;
    out.default
        .iter()
        .map(|d| ("outgoingAuth.default".to_owned(), d))
        .chain(out.backends.iter().map(|(n, b)| (key_path("outgoingAuth.backends", n), b)))
        .collect()
}

/// Runs the cross-file checks.
pub(crate) fn check(cfg: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut report = |path: String, message: String| out.push(Finding { path, message });
    for (p, s) in strategies(cfg) {
        match (s.kind, &s.upstream_inject, &s.token_exchange) {
            (BackendAuthKind::UpstreamInject, Some(ui), _) => {
                let path = key_path(&key_path(&p, "upstreamInject"), "providerName");
                if let Some(msg) = upstream_ref(cfg.auth_server.as_ref(), &ui.provider_name, true) {
                    report(path, msg);
                }
            }
            (BackendAuthKind::TokenExchange, _, Some(te)) => {
                let Some(name) = &te.subject_provider_name else { continue };
                let path = key_path(&key_path(&p, "tokenExchange"), "subjectProviderName");
                if let Some(msg) = upstream_ref(cfg.auth_server.as_ref(), name, false) {
                    report(path, msg);
                }
            }
            _ => {}
        }
    }
    if let Some(auth) = &cfg.auth_server {
        check_incoming(cfg, auth, &mut report);
    }
    out
}

/// Why `name` does not name an upstream of `auth`, if it does not. `inject`: the reference is
/// `upstreamInject.providerName` (else `tokenExchange.subjectProviderName`).
fn upstream_ref(auth: Option<&AuthServerConfig>, name: &str, inject: bool) -> Option<String> {
    let Some(auth) = auth else {
        return Some(if inject {
            format!(
                "upstream_inject needs the embedded authorization server: add {FILE_NAME} beside \
                 this file"
            )
        } else {
            format!(
                "names an upstream of the embedded authorization server, but there is none: add \
                 {FILE_NAME} beside this file, or remove subjectProviderName"
            )
        });
    };
    if auth.upstream(name).is_some() {
        return None;
    }
    let names = auth.upstream_names();
    let known = if names.is_empty() {
        format!("{FILE_NAME} has no upstreams")
    } else {
        format!("configured upstreams: {}", names.join(", "))
    };
    if name.is_empty() {
        return Some(format!(
            "empty, which means {DEFAULT_UPSTREAM_NAME:?} (a single unnamed upstream); {known}"
        ));
    }
    Some(match suggest(name, names.iter().copied()) {
        Some(s) => format!("unknown upstream {name:?}; did you mean {s:?}?"),
        None => format!("unknown upstream {name:?}; {known}"),
    })
}

/// `incomingAuth` must accept the tokens the authorization server issues.
fn check_incoming(cfg: &Config, auth: &AuthServerConfig, report: &mut impl FnMut(String, String)) {
    let inc = &cfg.incoming_auth;
    if inc.kind != IncomingAuthKind::Oidc {
        report(
            "incomingAuth.type".to_owned(),
            format!(
                "must be oidc when {FILE_NAME} is present: the gateway checks the tokens its \
                 authorization server issues (oidc.issuer {:?})",
                auth.issuer
            ),
        );
        return;
    }
    // A missing `oidc` block is reported by the incoming auth checks.
    let Some(oidc) = &inc.oidc else { return };
    if !auth.issuer.is_empty() && oidc.issuer != auth.issuer {
        report(
            "incomingAuth.oidc.issuer".to_owned(),
            format!(
                "must be the issuer of {FILE_NAME}, {:?}: the gateway would reject every token \
                 its authorization server issues",
                auth.issuer
            ),
        );
    }
    if !oidc.audience.is_empty()
        && !auth.allowed_audiences.is_empty()
        && !auth.allowed_audiences.contains(&oidc.audience)
    {
        report(
            "incomingAuth.oidc.audience".to_owned(),
            format!(
                "{:?} is not in allowed_audiences of {FILE_NAME} ({}): the authorization server \
                 would never issue a token for this gateway",
                oidc.audience,
                auth.allowed_audiences.join(", ")
            ),
        );
    }
}

/// Legal but suspicious combinations of the two files, as `path: message` lines.
pub(crate) fn warnings(cfg: &Config) -> Vec<String> {
    let (Some(_), Some(oidc)) = (&cfg.auth_server, &cfg.incoming_auth.oidc) else {
        return Vec::new();
    };
    match &oidc.resource {
        Some(r) if *r != oidc.audience => vec![format!(
            "incomingAuth.oidc.resource: {r:?} differs from audience {:?}: clients ask the \
             authorization server for tokens for the resource, and the gateway accepts only the \
             audience",
            oidc.audience
        )],
        _ => Vec::new(),
    }
}
