//! Semantic checks on `incomingAuth`, `outgoingAuth` and `passthroughHeaders`: what serde cannot
//! express (a strategy's block matching its type, one secret source, URLs, header names that are
//! safe to set or forward, references to configured backends).
//!
//! Findings never quote a secret value: they name the key that holds it. The `obo` and `xaa`
//! blocks are checked in [`grants`], `awsSts` in [`aws_sts`].

mod aws_sts;
mod grants;

use super::auth::{BackendAuthConfig, BackendAuthKind, IncomingAuthKind};
use super::load::suggest;
use super::locate::{Index, index_path, key_path};
use super::validate::Finding;
use super::{BackendConfig, Config};

fn kind_name(k: BackendAuthKind) -> &'static str {
    match k {
        BackendAuthKind::Unauthenticated => "unauthenticated",
        BackendAuthKind::HeaderInjection => "header_injection",
        BackendAuthKind::TokenExchange => "token_exchange",
        BackendAuthKind::Passthrough => "passthrough",
        BackendAuthKind::UpstreamInject => "upstream_inject",
        BackendAuthKind::Obo => "obo",
        BackendAuthKind::Xaa => "xaa",
        BackendAuthKind::AwsSts => "aws_sts",
    }
}

struct Findings<'a> {
    index: &'a Index,
    out: Vec<Finding>,
}

impl Findings<'_> {
    fn report(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.out.push(Finding { path: path.into(), message: message.into() });
    }
}

/// Runs every auth check. `names` are the configured backend names.
pub(crate) fn check(cfg: &Config, names: &[&str], index: &Index) -> Vec<Finding> {
    let mut f = Findings { index, out: Vec::new() };
    check_incoming(cfg, &mut f);
    let out = &cfg.outgoing_auth;
    if let Some(d) = &out.default {
        check_strategy(cfg, d, "outgoingAuth.default", &mut f);
    }
    for (name, b) in &out.backends {
        let p = key_path("outgoingAuth.backends", name);
        if !names.contains(&name.as_str()) {
            let hint = match suggest(name, names.iter().copied()) {
                Some(s) => format!("; did you mean {s:?}?"),
                None if names.is_empty() => "; no backends are configured".to_owned(),
                None => format!("; configured backends: {}", names.join(", ")),
            };
            f.report(&p, format!("unknown backend {name:?}{hint}"));
        }
        check_strategy(cfg, b, &p, &mut f);
    }
    check_passthrough_headers(cfg, &mut f);
    f.out
}

fn check_incoming(cfg: &Config, f: &mut Findings<'_>) {
    let inc = &cfg.incoming_auth;
    match (inc.kind, &inc.oidc) {
        (IncomingAuthKind::Oidc, None) => {
            f.report("incomingAuth.oidc", "required when type is oidc (at least issuer and audience)")
        }
        (IncomingAuthKind::Local, _) => {
            f.report("incomingAuth.type", super::auth::LOCAL_REFUSED);
            return;
        }
        (IncomingAuthKind::Anonymous, Some(_)) => f.report(
            "incomingAuth.oidc",
            "set, but type is anonymous, so no token is checked: set `type: oidc`, or remove `oidc`",
        ),
        _ => {}
    }
    let Some(oidc) = &inc.oidc else { return };
    let urls = [
        ("issuer", Some(&oidc.issuer)),
        ("jwksUrl", oidc.jwks_url.as_ref()),
        ("introspectionUrl", oidc.introspection_url.as_ref()),
    ];
    for (key, url) in urls {
        let Some(url) = url else { continue };
        if let Some(problem) = url_problem(url) {
            f.report(key_path("incomingAuth.oidc", key), problem);
        } else if let Ok(u) = reqwest::Url::parse(url)
            && let Some(why) = crate::auth::incoming::scheme_refusal(&u, oidc.insecure_allow_http)
        {
            // What `serve` would refuse when it fetches the URL, said at load.
            f.report(key_path("incomingAuth.oidc", key), why);
        }
    }
    if oidc.audience.trim().is_empty() {
        f.report("incomingAuth.oidc.audience", "must not be empty");
    }
}

/// One strategy (`outgoingAuth.default` or `outgoingAuth.backends.<name>`) at `p`.
fn check_strategy(cfg: &Config, b: &BackendAuthConfig, p: &str, f: &mut Findings<'_>) {
    let kind = kind_name(b.kind);
    let hi_path = key_path(p, "headerInjection");
    let te_path = key_path(p, "tokenExchange");
    if b.kind != BackendAuthKind::HeaderInjection && b.header_injection.is_some() {
        f.report(&hi_path, format!("only used when type is header_injection, but type is {kind}"));
    }
    if b.kind != BackendAuthKind::TokenExchange && b.token_exchange.is_some() {
        f.report(&te_path, format!("only used when type is token_exchange, but type is {kind}"));
    }
    let ui_path = key_path(p, "upstreamInject");
    if b.kind != BackendAuthKind::UpstreamInject && b.upstream_inject.is_some() {
        f.report(&ui_path, format!("only used when type is upstream_inject, but type is {kind}"));
    }
    let (obo_path, xaa_path) = (key_path(p, "obo"), key_path(p, "xaa"));
    if b.kind != BackendAuthKind::Obo && b.obo.is_some() {
        f.report(&obo_path, format!("only used when type is obo, but type is {kind}"));
    }
    if b.kind != BackendAuthKind::Xaa && b.xaa.is_some() {
        f.report(&xaa_path, format!("only used when type is xaa, but type is {kind}"));
    }
    let aws_path = key_path(p, "awsSts");
    if b.kind != BackendAuthKind::AwsSts && b.aws_sts.is_some() {
        f.report(&aws_path, format!("only used when type is aws_sts, but type is {kind}"));
    }
    match b.kind {
        BackendAuthKind::AwsSts => match &b.aws_sts {
            None => f.report(
                &aws_path,
                "required when type is aws_sts (region, and fallbackRoleArn or roleMappings)",
            ),
            Some(a) => aws_sts::check(cfg, a, &aws_path, f),
        },
        BackendAuthKind::Obo => match &b.obo {
            None => f.report(
                &obo_path,
                "required when type is obo (tokenUrl, clientId, clientSecretEnv, and audience or \
                 scopes)",
            ),
            Some(o) => grants::check_obo(cfg, o, &obo_path, f),
        },
        BackendAuthKind::Xaa => match &b.xaa {
            None => f.report(
                &xaa_path,
                "required when type is xaa (idpTokenUrl, targetTokenUrl and targetAudience)",
            ),
            Some(x) => grants::check_xaa(cfg, x, &xaa_path, f),
        },
        BackendAuthKind::HeaderInjection => match &b.header_injection {
            None => f.report(
                &hi_path,
                "required when type is header_injection (headerName and headerValueEnv)",
            ),
            Some(hi) => {
                let np = key_path(&hi_path, "headerName");
                match header_name_problem(&hi.header_name) {
                    Some(problem) => f.report(&np, problem),
                    None => {
                        if let Some(why) = reserved(&hi.header_name)
                            .filter(|_| !hi.header_name.eq_ignore_ascii_case("authorization"))
                        {
                            f.report(
                                &np,
                                format!("{:?} cannot be injected: {why}", hi.header_name),
                            );
                        }
                    }
                }
                one_secret(
                    f,
                    &hi_path,
                    hi.header_value.as_ref().map(|s| s.expose()),
                    hi.header_value_env.as_deref(),
                    "headerValue",
                    "headerValueEnv",
                );
                if hi
                    .header_value
                    .as_ref()
                    .is_some_and(|v| http::HeaderValue::try_from(v.expose()).is_err())
                {
                    f.report(
                        key_path(&hi_path, "headerValue"),
                        "not a valid header value (control characters or line breaks)",
                    );
                }
            }
        },
        BackendAuthKind::TokenExchange => match &b.token_exchange {
            None => f.report(&te_path, "required when type is token_exchange (at least tokenUrl)"),
            Some(te) => {
                if let Some(problem) = url_problem(&te.token_url) {
                    f.report(key_path(&te_path, "tokenUrl"), problem);
                }
                // As ToolHive: the client (id and secret) is optional, but a secret needs an id.
                let has_secret = te.client_secret.is_some() || te.client_secret_env.is_some();
                if te.client_id.trim().is_empty() {
                    if has_secret {
                        f.report(
                            key_path(&te_path, "clientId"),
                            "required when clientSecret or clientSecretEnv is given",
                        );
                    }
                } else if has_secret {
                    one_secret(
                        f,
                        &te_path,
                        te.client_secret.as_ref().map(|s| s.expose()),
                        te.client_secret_env.as_deref(),
                        "clientSecret",
                        "clientSecretEnv",
                    );
                }
                if let Err(problem) = te.subject_token_urn() {
                    f.report(key_path(&te_path, "subjectTokenType"), problem);
                }
            }
        },
        // Whether `providerName` names an upstream is checked with the authorization server's
        // file (`authserver/cross.rs`).
        BackendAuthKind::UpstreamInject if b.upstream_inject.is_none() => f.report(
            &ui_path,
            "required when type is upstream_inject (providerName: the upstream of the \
             authorization server whose token the backend gets)",
        ),
        BackendAuthKind::Unauthenticated
        | BackendAuthKind::Passthrough
        | BackendAuthKind::UpstreamInject => {}
    }
}

/// Exactly one of an inline secret (`inline_key`) and an environment variable (`env_key`).
fn one_secret(
    f: &mut Findings<'_>,
    p: &str,
    inline: Option<&str>,
    env: Option<&str>,
    inline_key: &str,
    env_key: &str,
) {
    match (inline, env) {
        (Some(_), Some(_)) => f.report(
            key_path(p, env_key),
            format!("give either {inline_key} or {env_key}, not both"),
        ),
        (None, None) => f.report(
            p,
            format!(
                "{env_key} (an environment variable holding the secret) or {inline_key} is required"
            ),
        ),
        (Some(""), None) => f.report(key_path(p, inline_key), "must not be empty"),
        (None, Some(var)) if var.trim().is_empty() => {
            f.report(key_path(p, env_key), "must not be empty")
        }
        _ => {}
    }
}

fn check_passthrough_headers(cfg: &Config, f: &mut Findings<'_>) {
    for (i, name) in cfg.passthrough_headers.iter().enumerate() {
        let p = index_path("passthroughHeaders", i);
        if let Some(problem) = header_name_problem(name) {
            f.report(&p, problem);
        } else if let Some(why) = reserved(name) {
            f.report(&p, format!("{name:?} cannot be passed through: {why}"));
        } else if let Some(j) =
            cfg.passthrough_headers[..i].iter().position(|n| n.eq_ignore_ascii_case(name))
        {
            let first = index_path("passthroughHeaders", j);
            let line =
                f.index.pos(&first).map(|p| format!(" (line {})", p.line)).unwrap_or_default();
            f.report(&p, format!("{name:?} is already listed at {first}{line}"));
        }
    }
}

/// Why `name` is not a valid HTTP header name, if it is not.
fn header_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".to_owned());
    }
    http::HeaderName::try_from(name)
        .err()
        .map(|_| format!("invalid header name {name:?}: use letters, digits and -"))
}

/// Why the gateway must not copy or set `name` on backend requests, if it must not.
fn reserved(name: &str) -> Option<&'static str> {
    let n = name.to_ascii_lowercase();
    const HOP_BY_HOP: [&str; 7] = [
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
    ];
    if HOP_BY_HOP.contains(&n.as_str()) || n.starts_with("proxy-") {
        Some("it is a hop-by-hop header, about one connection only")
    } else if n == "host" || n == "content-length" {
        Some("the gateway sets it for each backend request")
    } else if n == "forwarded" || n.starts_with("x-forwarded-") || n == "x-real-ip" {
        Some("it describes a client connection, and backends may trust it")
    } else if n == "authorization" {
        Some("credentials go through outgoingAuth (type passthrough forwards the caller's token)")
    } else if matches!(
        n.as_str(),
        "mcp-session-id" | "mcp-protocol-version" | "mcp-method" | "mcp-name"
    ) || n.starts_with("mcp-param-")
    {
        Some("it is an MCP protocol header, which the gateway sets for each backend")
    } else {
        None
    }
}

/// Why `url` cannot be an identity provider endpoint, if it cannot.
fn url_problem(url: &str) -> Option<String> {
    match reqwest::Url::parse(url) {
        Err(e) => Some(format!("invalid URL {url:?}: {e}")),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            Some(format!("URL {url:?} must start with http:// or https://"))
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => Some(format!("URL {url:?} has no host")),
        Ok(_) => None,
    }
}

/// Legal but risky auth settings, as `path: message` lines.
pub(crate) fn warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let out_auth = &cfg.outgoing_auth;
    let strategies =
        out_auth.default.iter().map(|d| ("outgoingAuth.default".to_owned(), d)).chain(
            out_auth.backends.iter().map(|(n, b)| (key_path("outgoingAuth.backends", n), b)),
        );
    for (p, b) in strategies {
        if b.header_injection.as_ref().is_some_and(|h| h.header_value.is_some()) {
            out.push(format!(
                "{p}.headerInjection.headerValue: a secret written in the config file; prefer headerValueEnv"
            ));
        }
        if b.token_exchange.as_ref().is_some_and(|t| t.client_secret.is_some()) {
            out.push(format!(
                "{p}.tokenExchange.clientSecret: a secret written in the config file; prefer clientSecretEnv"
            ));
        }
        let obo = b.obo.as_ref().filter(|_| b.kind == BackendAuthKind::Obo);
        let xaa = b.xaa.as_ref().filter(|_| b.kind == BackendAuthKind::Xaa);
        grants::warnings(cfg, &p, obo, xaa, &mut out);
        if b.kind == BackendAuthKind::AwsSts {
            aws_sts::warnings(cfg, &p, &mut out);
        }
    }
    // Passthrough, per backend that ends up using it.
    for b in &cfg.backends {
        let (p, strategy) = match out_auth.backends.get(&b.name) {
            Some(s) => (key_path("outgoingAuth.backends", &b.name), s),
            None => match &out_auth.default {
                Some(s) => ("outgoingAuth.default".to_owned(), s),
                None => continue,
            },
        };
        if strategy.kind != BackendAuthKind::Passthrough {
            continue;
        }
        if let Some(w) = passthrough_warning(cfg, b) {
            out.push(format!("{p}: {w}"));
        }
    }
    out
}

fn passthrough_warning(cfg: &Config, b: &BackendConfig) -> Option<String> {
    let name = &b.name;
    let Some(oidc) = cfg
        .incoming_auth
        .oidc
        .as_ref()
        .filter(|_| cfg.incoming_auth.kind == IncomingAuthKind::Oidc)
    else {
        return Some(format!(
            "passthrough for backend {name:?}, but incomingAuth is anonymous: no token is forwarded"
        ));
    };
    let aud = oidc.audience.as_str();
    let for_backend = aud == name
        || b.url.as_deref().is_some_and(|u| u.trim_end_matches('/') == aud.trim_end_matches('/'));
    (!for_backend).then(|| {
        format!(
            "passthrough forwards the caller's token to backend {name:?}, but its audience is {aud:?} \
             (the gateway); the backend should reject it; prefer token_exchange"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::validate::tests::problems;
    use super::super::{parse, validate_warnings};

    fn got(ps: &[(Option<usize>, String, String)]) -> Vec<(Option<usize>, &str, &str)> {
        ps.iter().map(|(l, p, m)| (*l, p.as_str(), m.as_str())).collect()
    }

    fn warnings(text: &str) -> Vec<String> {
        match parse(text, "t.yaml") {
            Ok(cfg) => validate_warnings(&cfg),
            Err(e) => panic!("{e}"),
        }
    }

    // Lines 1-8.
    const BACKENDS: &str = "\
name: gw
backends:
  - name: files
    transport: stdio
    command: mcp-files
  - name: web
    transport: streamable-http
    url: http://localhost:9000/mcp
";

    #[test]
    fn unknown_backend_in_outgoing_auth() {
        let text = format!(
            "{BACKENDS}outgoingAuth:\n  backends:\n    webb:\n      type: unauthenticated\n    zzz:\n      type: unauthenticated\n"
        );
        let ps = problems(&text);
        assert_eq!(
            got(&ps),
            [
                (
                    Some(11),
                    "outgoingAuth.backends.webb",
                    "unknown backend \"webb\"; did you mean \"web\"?"
                ),
                (
                    Some(13),
                    "outgoingAuth.backends.zzz",
                    "unknown backend \"zzz\"; configured backends: files, web"
                ),
            ]
        );
    }

    #[test]
    fn header_injection_blocks() {
        let text = format!(
            "{BACKENDS}outgoingAuth:
  backends:
    web:
      type: header_injection
    files:
      type: header_injection
      headerInjection:
        headerName: 'X API Key'
        headerValue: k
        headerValueEnv: KEY
  default:
    type: header_injection
    headerInjection:
      headerName: Mcp-Session-Id
"
        );
        let ps = problems(&text);
        assert_eq!(
            got(&ps),
            [
                (
                    Some(11),
                    "outgoingAuth.backends.web.headerInjection",
                    "required when type is header_injection (headerName and headerValueEnv)"
                ),
                (
                    Some(16),
                    "outgoingAuth.backends.files.headerInjection.headerName",
                    "invalid header name \"X API Key\": use letters, digits and -"
                ),
                (
                    Some(18),
                    "outgoingAuth.backends.files.headerInjection.headerValueEnv",
                    "give either headerValue or headerValueEnv, not both"
                ),
                (
                    Some(21),
                    "outgoingAuth.default.headerInjection",
                    "headerValueEnv (an environment variable holding the secret) or headerValue is required"
                ),
                (
                    Some(22),
                    "outgoingAuth.default.headerInjection.headerName",
                    "\"Mcp-Session-Id\" cannot be injected: it is an MCP protocol header, which the gateway sets for each backend"
                ),
            ]
        );
    }

    #[test]
    fn token_exchange_blocks() {
        let text = format!(
            "{BACKENDS}outgoingAuth:
  backends:
    web:
      type: token_exchange
    files:
      type: token_exchange
      tokenExchange:
        tokenUrl: ftp://idp/token
        clientSecretEnv: S
        subjectTokenType: refresh_token
"
        );
        let ps = problems(&text);
        assert_eq!(
            got(&ps),
            [
                (
                    Some(11),
                    "outgoingAuth.backends.web.tokenExchange",
                    "required when type is token_exchange (at least tokenUrl)"
                ),
                (
                    Some(15),
                    "outgoingAuth.backends.files.tokenExchange.clientId",
                    "required when clientSecret or clientSecretEnv is given"
                ),
                (
                    Some(16),
                    "outgoingAuth.backends.files.tokenExchange.tokenUrl",
                    "URL \"ftp://idp/token\" must start with http:// or https://"
                ),
                (
                    Some(18),
                    "outgoingAuth.backends.files.tokenExchange.subjectTokenType",
                    "\"refresh_token\" is not a token type: use access_token, id_token or jwt (or their RFC 8693 URNs)"
                ),
            ]
        );
    }

    #[test]
    fn token_exchange_needs_only_token_url() {
        let text = format!(
            "{BACKENDS}outgoingAuth:
  default:
    type: token_exchange
    tokenExchange:
      tokenUrl: https://sts.example/token
      subjectTokenType: id_token
  backends:
    web:
      type: token_exchange
      tokenExchange:
        tokenUrl: https://idp/token
        clientId: public-client
"
        );
        assert!(parse(&text, "t.yaml").is_ok());
    }

    #[test]
    fn strategy_block_must_match_type() {
        let text = format!(
            "{BACKENDS}outgoingAuth:
  default:
    type: passthrough
    tokenExchange:
      tokenUrl: https://idp/token
      clientId: gw
      clientSecretEnv: S
    headerInjection:
      headerName: X-Key
      headerValueEnv: K
"
        );
        let ps = problems(&text);
        assert_eq!(
            got(&ps),
            [
                (
                    Some(12),
                    "outgoingAuth.default.tokenExchange",
                    "only used when type is token_exchange, but type is passthrough"
                ),
                (
                    Some(16),
                    "outgoingAuth.default.headerInjection",
                    "only used when type is header_injection, but type is passthrough"
                ),
            ]
        );
    }

    #[test]
    fn incoming_local_is_refused_precisely() {
        let ps = problems(&format!("{BACKENDS}incomingAuth:\n  type: local\n"));
        assert_eq!(ps.len(), 1, "{ps:?}");
        assert_eq!(ps[0].1, "incomingAuth.type");
        assert!(ps[0].2.contains("not supported") && ps[0].2.contains("anonymous"), "{ps:?}");
    }

    #[test]
    fn incoming_oidc() {
        let ps = problems(&format!("{BACKENDS}incomingAuth:\n  type: oidc\n"));
        assert_eq!(
            got(&ps),
            [(
                Some(9),
                "incomingAuth.oidc",
                "required when type is oidc (at least issuer and audience)"
            )]
        );

        let text = format!(
            "{BACKENDS}incomingAuth:
  type: oidc
  oidc:
    issuer: idp.example
    audience: gw
    jwksUrl: file:///keys.json
    introspectionUrl: https://idp.example/introspect
"
        );
        let ps = problems(&text);
        assert_eq!(
            got(&ps),
            [
                (
                    Some(12),
                    "incomingAuth.oidc.issuer",
                    "invalid URL \"idp.example\": relative URL without a base"
                ),
                (
                    Some(14),
                    "incomingAuth.oidc.jwksUrl",
                    "URL \"file:///keys.json\" must start with http:// or https://"
                ),
            ]
        );

        // Plain HTTP to a non-loopback host is what `serve` refuses: said at load, naming the
        // key that allows it; loopback and `insecureAllowHttp: true` pass.
        let http = |extra: &str| {
            problems(&format!(
                "{BACKENDS}incomingAuth:\n  type: oidc\n  oidc:\n    issuer: http://idp.example\n    \
                 audience: gw\n    jwksUrl: http://127.0.0.1:9/jwks\n{extra}"
            ))
        };
        assert_eq!(
            got(&http("")),
            [(
                Some(12),
                "incomingAuth.oidc.issuer",
                "http:// is only allowed for loopback hosts or with insecureAllowHttp"
            )]
        );
        let allowed = format!(
            "{BACKENDS}incomingAuth:\n  type: oidc\n  oidc:\n    issuer: http://idp.example\n    \
             audience: gw\n    insecureAllowHttp: true\n"
        );
        assert!(super::super::parse(&allowed, "t.yaml").is_ok());

        let ps = problems(&format!(
            "{BACKENDS}incomingAuth:\n  oidc:\n    issuer: https://idp\n    audience: gw\n"
        ));
        assert_eq!(
            got(&ps),
            [(
                Some(10),
                "incomingAuth.oidc",
                "set, but type is anonymous, so no token is checked: set `type: oidc`, or remove `oidc`"
            )]
        );
    }

    #[test]
    fn passthrough_headers() {
        let text = format!(
            "{BACKENDS}passthroughHeaders:
  - X-Tenant
  - Connection
  - host
  - X-Forwarded-For
  - Authorization
  - Mcp-Session-Id
  - Mcp-Param-Region
  - Proxy-Authorization
  - 'Bad Header'
  - x-tenant
"
        );
        let ps = problems(&text);
        let hop = "it is a hop-by-hop header, about one connection only";
        assert_eq!(
            got(&ps),
            [
                (
                    Some(11),
                    "passthroughHeaders[1]",
                    &*format!("\"Connection\" cannot be passed through: {hop}")
                ),
                (
                    Some(12),
                    "passthroughHeaders[2]",
                    "\"host\" cannot be passed through: the gateway sets it for each backend request"
                ),
                (
                    Some(13),
                    "passthroughHeaders[3]",
                    "\"X-Forwarded-For\" cannot be passed through: it describes a client connection, and backends may trust it"
                ),
                (
                    Some(14),
                    "passthroughHeaders[4]",
                    "\"Authorization\" cannot be passed through: credentials go through outgoingAuth (type passthrough forwards the caller's token)"
                ),
                (
                    Some(15),
                    "passthroughHeaders[5]",
                    "\"Mcp-Session-Id\" cannot be passed through: it is an MCP protocol header, which the gateway sets for each backend"
                ),
                (
                    Some(16),
                    "passthroughHeaders[6]",
                    "\"Mcp-Param-Region\" cannot be passed through: it is an MCP protocol header, which the gateway sets for each backend"
                ),
                (
                    Some(17),
                    "passthroughHeaders[7]",
                    &*format!("\"Proxy-Authorization\" cannot be passed through: {hop}")
                ),
                (
                    Some(18),
                    "passthroughHeaders[8]",
                    "invalid header name \"Bad Header\": use letters, digits and -"
                ),
                (
                    Some(19),
                    "passthroughHeaders[9]",
                    "\"x-tenant\" is already listed at passthroughHeaders[0] (line 10)"
                ),
            ]
        );
    }

    #[test]
    fn valid_auth_config_is_accepted() {
        let text = format!(
            "{BACKENDS}incomingAuth:
  type: oidc
  oidc:
    issuer: https://idp.example
    audience: https://gw.example/mcp
outgoingAuth:
  source: inline
  default:
    type: unauthenticated
  backends:
    web:
      type: token_exchange
      tokenExchange:
        tokenUrl: https://idp.example/token
        clientId: gw
        clientSecretEnv: GW_SECRET
        audience: web
        scopes: [read]
    files:
      type: header_injection
      headerInjection:
        headerName: Authorization
        headerValueEnv: FILES_TOKEN
passthroughHeaders: [X-Tenant, Accept-Language]
"
        );
        assert_eq!(warnings(&text), Vec::<String>::new());
    }

    #[test]
    fn auth_warnings() {
        let text = format!(
            "{BACKENDS}incomingAuth:
  type: oidc
  oidc:
    issuer: https://idp.example
    audience: https://gw.example/mcp
outgoingAuth:
  default:
    type: passthrough
  backends:
    files:
      type: header_injection
      headerInjection:
        headerName: X-Key
        headerValue: inline-SECRET
"
        );
        let w = warnings(&text);
        assert_eq!(
            w,
            [
                "outgoingAuth.backends.files.headerInjection.headerValue: a secret written in the config file; prefer headerValueEnv",
                "outgoingAuth.default: passthrough forwards the caller's token to backend \"web\", but its audience is \"https://gw.example/mcp\" (the gateway); the backend should reject it; prefer token_exchange",
            ]
        );
        assert!(!w.concat().contains("inline-SECRET"));

        // The gateway's audience is the backend's own URL: a token meant for it.
        let text = format!(
            "{BACKENDS}incomingAuth:
  type: oidc
  oidc:
    issuer: https://idp.example
    audience: http://localhost:9000/mcp
outgoingAuth:
  backends:
    web:
      type: passthrough
"
        );
        assert_eq!(warnings(&text), Vec::<String>::new());

        let text =
            format!("{BACKENDS}outgoingAuth:\n  backends:\n    web:\n      type: passthrough\n");
        assert_eq!(
            warnings(&text),
            [
                "outgoingAuth.backends.web: passthrough for backend \"web\", but incomingAuth is anonymous: no token is forwarded"
            ]
        );
    }
}
