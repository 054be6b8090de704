//! Checks of the `obo` and `xaa` blocks (ToolHive's `validateBackendAuthStrategy` rules, plus
//! what its strategies refuse at startup), and their warnings. References to upstreams are
//! checked against `authserver-config.yaml` here too, as for `upstream_inject` in
//! `authserver/cross.rs`.
//!
//! Findings never quote a secret value: they name the key that holds it.

use super::{Findings, one_secret};
use crate::auth::outgoing::{XAA_SUBJECT_TOKEN_TYPE, xaa_url_problem};
use crate::config::Config;
use crate::config::auth::{OboConfig, XaaConfig};
use crate::config::authserver::FILE_NAME;
use crate::config::load::suggest;
use crate::config::locate::{index_path, key_path};

/// The `obo` block at `p` (`<strategy>.obo`).
pub(super) fn check_obo(cfg: &Config, o: &OboConfig, p: &str, f: &mut Findings<'_>) {
    let at = |k| key_path(p, k);
    match o.token_url.as_str() {
        "" => f.report(at("tokenUrl"), "required: the IdP's token endpoint"),
        url => {
            if let Some(problem) = xaa_url_problem(url, false) {
                f.report(at("tokenUrl"), problem);
            }
        }
    }
    if o.client_id.trim().is_empty() {
        f.report(at("clientId"), "required: the gateway's client id at the IdP");
    }
    one_secret(
        f,
        p,
        o.client_secret.as_ref().map(|s| s.expose()),
        o.client_secret_env.as_deref(),
        "clientSecret",
        "clientSecretEnv",
    );
    if o.scopes.is_empty() && o.audience.as_deref().is_none_or(|a| a.trim().is_empty()) {
        f.report(p, "audience or scopes is required: what the exchanged token is for");
    }
    empty_scopes(&o.scopes, &at("scopes"), f);
    if o.cache_skew_seconds.is_some_and(|s| s < 0) {
        f.report(at("cacheSkewSeconds"), "must not be negative");
    }
    if let Some(name) = o.subject_token_provider_name.as_deref().filter(|n| !n.is_empty())
        && let Some(problem) = upstream_problem(cfg, name, "subjectTokenProviderName")
    {
        f.report(at("subjectTokenProviderName"), problem);
    }
}

/// The `xaa` block at `p` (`<strategy>.xaa`).
pub(super) fn check_xaa(cfg: &Config, x: &XaaConfig, p: &str, f: &mut Findings<'_>) {
    let at = |k| key_path(p, k);
    let urls = [
        ("idpTokenUrl", &x.idp_token_url, false, "the IdP's token endpoint (step 1)"),
        (
            "targetTokenUrl",
            &x.target_token_url,
            x.insecure_target_token_url,
            "the token endpoint of the backend's authorization server (step 2)",
        ),
    ];
    for (key, url, insecure, what) in urls {
        if url.is_empty() {
            f.report(at(key), format!("required: {what}"));
        } else if let Some(problem) = xaa_url_problem(url, insecure) {
            f.report(at(key), problem);
        }
    }
    if x.target_audience.trim().is_empty() {
        f.report(
            at("targetAudience"),
            "required: the issuer of the backend's authorization server (the ID-JAG's audience)",
        );
    }
    if let Some(r) = x.target_resource.as_deref().filter(|r| !r.is_empty()) {
        match reqwest::Url::parse(r) {
            Err(e) => f.report(at("targetResource"), format!("not an absolute URI {r:?}: {e}")),
            Ok(u) if u.fragment().is_some() => {
                f.report(at("targetResource"), "must not have a fragment (RFC 8707)")
            }
            Ok(_) => {}
        }
    }
    if let Some(t) = x.subject_token_type.as_deref().filter(|t| !t.is_empty())
        && t != XAA_SUBJECT_TOKEN_TYPE
    {
        f.report(
            at("subjectTokenType"),
            format!("unsupported {t:?}; only {XAA_SUBJECT_TOKEN_TYPE:?} is accepted"),
        );
    }
    client_pair(
        f,
        p,
        x.idp_client_id.as_deref(),
        x.idp_client_secret.as_ref().map(|s| s.expose()),
        x.idp_client_secret_env.as_deref(),
        ["idpClientId", "idpClientSecret", "idpClientSecretEnv"],
    );
    client_pair(
        f,
        p,
        x.target_client_id.as_deref(),
        x.target_client_secret.as_ref().map(|s| s.expose()),
        x.target_client_secret_env.as_deref(),
        ["targetClientId", "targetClientSecret", "targetClientSecretEnv"],
    );
    empty_scopes(&x.scopes, &at("scopes"), f);
    match (x.subject_provider_name.as_deref().filter(|n| !n.is_empty()), &cfg.auth_server) {
        (Some(name), _) => {
            if let Some(problem) = upstream_problem(cfg, name, "subjectProviderName") {
                f.report(at("subjectProviderName"), problem);
            }
        }
        // ToolHive refuses to guess here too (`ErrAmbiguousSubjectProvider`).
        (None, Some(auth)) if auth.upstreams.len() > 1 => f.report(
            p,
            format!(
                "subjectProviderName is required: {FILE_NAME} has several upstreams ({}); name \
                 the one whose ID token is exchanged",
                auth.upstream_names().join(", ")
            ),
        ),
        _ => {}
    }
}

/// A client id and its secret for one xaa step: both or neither (the inline secret wins over
/// the environment variable when both are given, as in ToolHive; warned about).
fn client_pair(
    f: &mut Findings<'_>,
    p: &str,
    id: Option<&str>,
    inline: Option<&str>,
    env: Option<&str>,
    [id_key, inline_key, env_key]: [&str; 3],
) {
    let has_id = id.is_some_and(|i| !i.trim().is_empty());
    if id.is_some() && !has_id {
        f.report(key_path(p, id_key), "must not be empty");
    }
    if inline == Some("") {
        f.report(key_path(p, inline_key), "must not be empty");
    }
    if env.is_some_and(|e| e.trim().is_empty()) {
        f.report(key_path(p, env_key), "must not be empty");
    }
    match (has_id, inline.is_some() || env.is_some()) {
        (false, true) => {
            let key = if inline.is_some() { inline_key } else { env_key };
            f.report(key_path(p, key), format!("a client secret needs {id_key}"));
        }
        (true, false) => f.report(
            key_path(p, id_key),
            format!("needs {env_key} (an environment variable holding the secret) or {inline_key}"),
        ),
        _ => {}
    }
}

fn empty_scopes(scopes: &[String], p: &str, f: &mut Findings<'_>) {
    for (i, s) in scopes.iter().enumerate() {
        if s.trim().is_empty() {
            f.report(index_path(p, i), "must not be empty");
        }
    }
}

/// Why `name` (the value of `key`) does not name an upstream of the authorization server, if it
/// does not.
pub(super) fn upstream_problem(cfg: &Config, name: &str, key: &str) -> Option<String> {
    let Some(auth) = &cfg.auth_server else {
        return Some(format!(
            "names an upstream of the embedded authorization server, but there is none: add \
             {FILE_NAME} beside this file, or remove {key}"
        ));
    };
    if auth.upstream(name).is_some() {
        return None;
    }
    let names = auth.upstream_names();
    Some(match suggest(name, names.iter().copied()) {
        Some(s) => format!("unknown upstream {name:?}; did you mean {s:?}?"),
        None if names.is_empty() => format!("unknown upstream {name:?}; {FILE_NAME} has none"),
        None => format!("unknown upstream {name:?}; configured upstreams: {}", names.join(", ")),
    })
}

/// Legal but risky `obo` / `xaa` settings of the strategy at `p`, as `path: message` lines.
pub(super) fn warnings(
    cfg: &Config,
    p: &str,
    obo: Option<&OboConfig>,
    xaa: Option<&XaaConfig>,
    out: &mut Vec<String>,
) {
    let inline = |key: &str, env_key: &str| {
        format!("{p}.{key}: a secret written in the config file; prefer {env_key}")
    };
    if let Some(o) = obo {
        if o.client_secret.is_some() {
            out.push(inline("obo.clientSecret", "clientSecretEnv"));
        }
        if cfg.auth_server.is_some()
            && o.subject_token_provider_name.as_deref().is_none_or(str::is_empty)
        {
            out.push(format!(
                "{p}.obo: without subjectTokenProviderName the assertion is the token the caller \
                 presents, which vmcp's authorization server issued; the IdP will refuse it"
            ));
        }
    }
    let Some(x) = xaa else { return };
    let pairs = [
        (
            "idpClientSecret",
            "idpClientSecretEnv",
            x.idp_client_secret.is_some(),
            &x.idp_client_secret_env,
        ),
        (
            "targetClientSecret",
            "targetClientSecretEnv",
            x.target_client_secret.is_some(),
            &x.target_client_secret_env,
        ),
    ];
    for (key, env_key, has_inline, env) in pairs {
        if has_inline && env.is_some() {
            out.push(format!(
                "{p}.xaa.{env_key}: ignored, {key} is given too and wins (as in ToolHive); give one"
            ));
        } else if has_inline {
            out.push(inline(&format!("xaa.{key}"), env_key));
        }
    }
    if x.insecure_target_token_url && x.target_token_url.starts_with("http://") {
        out.push(format!(
            "{p}.xaa.insecureTargetTokenUrl: the target grant goes over plain http; never in \
             production"
        ));
    }
    if x.target_client_id.as_deref().is_none_or(str::is_empty) {
        out.push(format!(
            "{p}.xaa: no targetClientId, so step 2 carries no client authentication; most \
             authorization servers refuse that"
        ));
    }
    if cfg.auth_server.is_none() {
        out.push(format!(
            "{p}.xaa: without {FILE_NAME} the subject is the token the caller presents, sent as \
             an ID token; clients must present their ID token"
        ));
    }
}
