//! Checks on `upstreams[]`: names (ToolHive's rule: one unnamed upstream is `default`, several
//! need distinct DNS-label names), the block matching `type`, required fields, URL schemes, the
//! client secret source, and authorization parameters vmcp sets itself.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::validate::{Checker, http_problem, read_bounded, scope_problem};
use super::{
    AuthServerConfig, DEFAULT_UPSTREAM_NAME, OAuth2Upstream, OidcUpstream, UpstreamKind,
    UserInfoConfig,
};
use crate::config::locate::{index_path, key_path};

/// Authorization request parameters vmcp sets itself (ToolHive's `ReservedAuthorizationParams`).
const RESERVED_PARAMS: [&str; 8] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
];

/// Longest redirect URI accepted (ToolHive's `MaxRedirectURILength`).
const MAX_REDIRECT_URI: usize = 2048;

pub(super) fn check_upstreams(cfg: &AuthServerConfig, c: &mut Checker<'_>) {
    if cfg.upstreams.is_empty() {
        c.report(
            "upstreams",
            "at least one upstream identity provider is required (users sign in there)",
        );
        return;
    }
    let several = cfg.upstreams.len() > 1;
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    for (i, up) in cfg.upstreams.iter().enumerate() {
        let p = index_path("upstreams", i);
        let name_path = key_path(&p, "name");
        if up.name.is_empty() {
            if several {
                c.required(name_path.clone(), "every upstream needs a name when there are several");
            }
        } else if several && up.name == DEFAULT_UPSTREAM_NAME {
            c.report(
                &name_path,
                "\"default\" is the name of a single unnamed upstream; with several, use a \
                 descriptive name",
            );
        } else if !is_dns_label(&up.name) {
            c.report(
                &name_path,
                format!(
                    "invalid upstream name {:?}: use lowercase letters, digits and '-', starting \
                     and ending with a letter or digit",
                    up.name
                ),
            );
        }
        if !up.name.is_empty() {
            match first_seen.get(up.name.as_str()) {
                Some(&first) => {
                    let first_path = key_path(&index_path("upstreams", first), "name");
                    let line = c
                        .index
                        .pos(&first_path)
                        .map(|p| format!(" (line {})", p.line))
                        .unwrap_or_default();
                    c.report(
                        &name_path,
                        format!(
                            "duplicate upstream name {:?}, first used by upstreams[{first}]{line}",
                            up.name
                        ),
                    );
                }
                None => {
                    first_seen.insert(&up.name, i);
                }
            }
        }
        let insecure = up.insecure_allow_http(cfg.insecure_allow_http);
        let kind = up.kind.as_str();
        let (oidc_path, oauth2_path) = (key_path(&p, "oidc_config"), key_path(&p, "oauth2_config"));
        match up.kind {
            UpstreamKind::Oidc => match &up.oidc_config {
                None => c.report(&oidc_path, "required when type is oidc"),
                Some(o) => check_oidc(o, &oidc_path, insecure, c),
            },
            UpstreamKind::OAuth2 => match &up.oauth2_config {
                None => c.report(&oauth2_path, "required when type is oauth2"),
                Some(o) => check_oauth2(o, &oauth2_path, insecure, c),
            },
        }
        if up.kind != UpstreamKind::Oidc && up.oidc_config.is_some() {
            c.report(&oidc_path, format!("only used when type is oidc, but type is {kind}"));
        }
        if up.kind != UpstreamKind::OAuth2 && up.oauth2_config.is_some() {
            c.report(&oauth2_path, format!("only used when type is oauth2, but type is {kind}"));
        }
    }
}

/// `^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`: names end up in storage keys.
fn is_dns_label(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    name.chars().all(|c| ok(c) || c == '-')
        && name.chars().next().is_some_and(ok)
        && name.chars().last().is_some_and(ok)
}

fn check_oidc(o: &OidcUpstream, p: &str, insecure: bool, c: &mut Checker<'_>) {
    endpoint(c, p, "issuer_url", &o.issuer_url, insecure, "the provider's issuer URL");
    if o.client_id.is_empty() {
        c.required(key_path(p, "client_id"), "vmcp's client ID at the provider is required");
    }
    let secret = (o.client_secret_file.as_deref(), o.client_secret_env_var.as_deref());
    common(c, p, secret, o.redirect_uri.as_deref(), insecure, &o.scopes);
    params(c, p, &o.additional_authorization_params);
    if !o.scopes.is_empty() && !o.scopes.iter().any(|s| s == "openid") {
        c.report(
            key_path(p, "scopes"),
            "must include openid: an OIDC upstream's identity comes from its ID token",
        );
    }
    if let Some(ui) = &o.userinfo_override {
        check_userinfo(ui, &key_path(p, "userinfo_override"), insecure, c);
    }
    if let Some(claim) = &o.subject_claim {
        let ok = claim.chars().next().is_some_and(|ch| ch.is_ascii_alphabetic() || ch == '_')
            && claim.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if !ok {
            c.report(
                key_path(p, "subject_claim"),
                format!(
                    "{claim:?} is not a claim name: start with a letter or '_', then letters, \
                     digits and '_'"
                ),
            );
        }
    }
}

fn check_oauth2(o: &OAuth2Upstream, p: &str, insecure: bool, c: &mut Checker<'_>) {
    let (auth, token) = (&o.authorization_endpoint, &o.token_endpoint);
    endpoint(c, p, "authorization_endpoint", auth, insecure, "the provider's authorization URL");
    endpoint(c, p, "token_endpoint", token, insecure, "the provider's token URL");
    if o.dcr_config.is_some() {
        c.unsupported(key_path(p, "dcr_config"), "dcr_config");
    } else if o.client_id.is_empty() {
        c.required(key_path(p, "client_id"), "vmcp's client ID at the provider is required");
    }
    let secret = (o.client_secret_file.as_deref(), o.client_secret_env_var.as_deref());
    common(c, p, secret, o.redirect_uri.as_deref(), insecure, &o.scopes);
    params(c, p, &o.additional_authorization_params);
    if let Some(ui) = &o.userinfo {
        check_userinfo(ui, &key_path(p, "userinfo"), insecure, c);
    }
    if let Some(m) = &o.token_response_mapping {
        let mp = key_path(p, "token_response_mapping");
        if m.access_token_path.is_empty() {
            c.required(
                key_path(&mp, "access_token_path"),
                "the path of the access token in the token response is required",
            );
        }
        let paths = [
            ("access_token_path", Some(&m.access_token_path)),
            ("scope_path", m.scope_path.as_ref()),
            ("refresh_token_path", m.refresh_token_path.as_ref()),
            ("expires_in_path", m.expires_in_path.as_ref()),
        ];
        dotted_paths(c, &mp, paths);
    }
    if let Some(m) = &o.identity_from_token {
        let mp = key_path(p, "identity_from_token");
        if m.subject_path.is_empty() {
            c.required(
                key_path(&mp, "subject_path"),
                "the path of the user's identifier in the token response is required",
            );
        }
        let paths = [
            ("subject_path", Some(&m.subject_path)),
            ("name_path", m.name_path.as_ref()),
            ("email_path", m.email_path.as_ref()),
        ];
        dotted_paths(c, &mp, paths);
    }
}

/// Dot-separated JSON paths (`authed_user.access_token`) have no empty segment.
fn dotted_paths<const N: usize>(c: &mut Checker<'_>, p: &str, paths: [(&str, Option<&String>); N]) {
    for (key, path) in paths {
        if let Some(path) = path.filter(|v| !v.is_empty() && v.split('.').any(str::is_empty)) {
            c.report(
                key_path(p, key),
                format!("{path:?} is not a dotted path (an empty segment between dots)"),
            );
        }
    }
}

/// `userinfo` (OAuth 2.0) or `userinfo_override` (OIDC) at `p`.
fn check_userinfo(ui: &UserInfoConfig, p: &str, insecure: bool, c: &mut Checker<'_>) {
    endpoint(c, p, "endpoint_url", &ui.endpoint_url, insecure, "the userinfo URL");
    if let Some(m) = ui.http_method.as_deref().filter(|m| !matches!(*m, "GET" | "POST")) {
        c.report(key_path(p, "http_method"), format!("{m:?}: must be GET or POST"));
    }
    let hp = key_path(p, "additional_headers");
    for (name, value) in &ui.additional_headers {
        let problem = match http::HeaderName::try_from(name.as_str()) {
            Err(_) => Some(format!("invalid header name {name:?}: use letters, digits and -")),
            // The access token goes there.
            Ok(h) if h == http::header::AUTHORIZATION => {
                Some("Authorization is set by vmcp (the user's access token)".to_owned())
            }
            // The value is not quoted: it may be a credential.
            Ok(_) if http::HeaderValue::from_str(value).is_err() => {
                Some("not a valid header value (control characters or line breaks)".to_owned())
            }
            Ok(_) => None,
        };
        if let Some(problem) = problem {
            c.report(key_path(&hp, name), problem);
        }
    }
}

/// A required provider URL `key` under `p`.
fn endpoint(c: &mut Checker<'_>, p: &str, key: &str, url: &str, insecure: bool, what: &str) {
    let path = key_path(p, key);
    if url.is_empty() {
        c.required(path, &format!("{what} is required"));
        return;
    }
    let problem = match reqwest::Url::parse(url) {
        Err(e) => Some(format!("invalid URL {url:?}: {e}")),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            Some(format!("URL {url:?} must start with https://"))
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => Some(format!("URL {url:?} has no host")),
        Ok(u) => http_problem(&u, insecure, "insecure_allow_http"),
    };
    if let Some(problem) = problem {
        c.report(path, problem);
    }
}

/// What OIDC and OAuth 2.0 upstreams share: the client secret source, `redirect_uri`, `scopes`.
fn common(
    c: &mut Checker<'_>,
    p: &str,
    (file, env): (Option<&Path>, Option<&str>),
    redirect_uri: Option<&str>,
    insecure: bool,
    scopes: &[String],
) {
    match (file, env) {
        (Some(_), Some(_)) => c.report(
            key_path(p, "client_secret_env_var"),
            "give either client_secret_file or client_secret_env_var, not both",
        ),
        (Some(file), None) => match read_bounded(file) {
            Err(e) => c.report(
                key_path(p, "client_secret_file"),
                format!("cannot read {}: {e}", file.display()),
            ),
            // An empty secret would silently make vmcp a public client.
            Ok(bytes) if bytes.trim_ascii().is_empty() => {
                c.report(key_path(p, "client_secret_file"), format!("{} is empty", file.display()))
            }
            Ok(_) => {}
        },
        _ => {}
    }
    if let Some(uri) = redirect_uri {
        let path = key_path(p, "redirect_uri");
        let problem = match reqwest::Url::parse(uri) {
            _ if uri.len() > MAX_REDIRECT_URI => {
                Some(format!("longer than {MAX_REDIRECT_URI} characters"))
            }
            Err(e) => Some(format!("invalid URL {uri:?}: {e}")),
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                Some(format!("URL {uri:?} must start with https://"))
            }
            Ok(u) if u.host_str().is_none_or(str::is_empty) => {
                Some(format!("URL {uri:?} has no host"))
            }
            Ok(u) if u.fragment().is_some() => {
                Some(format!("URL {uri:?} must not have a fragment (#...)"))
            }
            Ok(u) => http_problem(&u, insecure, "insecure_allow_http"),
        };
        if let Some(problem) = problem {
            c.report(path, problem);
        }
    }
    for (i, s) in scopes.iter().enumerate() {
        if let Some(problem) = scope_problem(s) {
            c.report(index_path(&key_path(p, "scopes"), i), problem);
        }
    }
}

/// `additional_authorization_params` must not override what vmcp sets.
fn params(c: &mut Checker<'_>, p: &str, params: &BTreeMap<String, String>) {
    let pp = key_path(p, "additional_authorization_params");
    for key in params.keys() {
        if RESERVED_PARAMS.contains(&key.as_str()) {
            c.report(
                key_path(&pp, key),
                format!("{key:?} is set by vmcp itself and cannot be overridden"),
            );
        }
    }
}
