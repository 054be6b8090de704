//! Checks between the two files, loading from disk, and warnings.

use super::{AUTH, MAIN, ok, problems, temp_dir};
use crate::config::{ConfigError, parse, validate_warnings};

#[test]
fn incoming_auth_must_accept_the_servers_tokens() {
    let anonymous = MAIN.replace("incomingAuth:\n  type: oidc\n  oidc:\n    issuer: https://vmcp.example.com\n    audience: https://vmcp.example.com/mcp\n", "");
    assert_eq!(
        problems(&anonymous, AUTH),
        ["config.yaml:1:1: incomingAuth.type: must be oidc when authserver-config.yaml is \
             present: the gateway checks the tokens its authorization server issues (oidc.issuer \
             \"https://vmcp.example.com\")"]
    );
    let other = MAIN
        .replace("issuer: https://vmcp.example.com", "issuer: https://idp.example.com")
        .replace(
            "audience: https://vmcp.example.com/mcp",
            "audience: https://other.example.com/mcp",
        );
    assert_eq!(
        problems(&other, AUTH),
        [
            "config.yaml:9:5: incomingAuth.oidc.issuer: must be the issuer of \
             authserver-config.yaml, \"https://vmcp.example.com\": the gateway would reject every \
             token its authorization server issues",
            "config.yaml:10:5: incomingAuth.oidc.audience: \"https://other.example.com/mcp\" is \
             not in allowed_audiences of authserver-config.yaml (https://vmcp.example.com/mcp): \
             the authorization server would never issue a token for this gateway",
        ]
    );
}

#[test]
fn upstream_inject_names_a_configured_upstream() {
    assert_eq!(
        match parse(MAIN, "config.yaml") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        },
        "config.yaml:16:9: outgoingAuth.backends.github.upstreamInject.providerName: \
         upstream_inject needs the embedded authorization server: add authserver-config.yaml \
         beside this file"
    );
    let cases = [
        (
            "providerName: githb",
            "config.yaml:16:9: outgoingAuth.backends.github.upstreamInject.providerName: unknown upstream \"githb\"; did you mean \"github\"?",
        ),
        (
            "providerName: okta",
            "config.yaml:16:9: outgoingAuth.backends.github.upstreamInject.providerName: unknown upstream \"okta\"; configured upstreams: github",
        ),
        (
            "providerName: ''",
            "config.yaml:16:9: outgoingAuth.backends.github.upstreamInject.providerName: empty, which means \"default\" (a single unnamed upstream); configured upstreams: github",
        ),
        (
            "{}",
            "config.yaml:15:7: outgoingAuth.backends.github.upstreamInject.providerName: empty, which means \"default\" (a single unnamed upstream); configured upstreams: github",
        ),
    ];
    for (replacement, want) in cases {
        let main = if replacement == "{}" {
            MAIN.replace("upstreamInject:\n        providerName: github", "upstreamInject: {}")
        } else {
            MAIN.replace("providerName: github", replacement)
        };
        assert_eq!(problems(&main, AUTH), [want], "{replacement}");
    }
    // A single unnamed upstream is "default", which an empty providerName means.
    let unnamed = AUTH.replace("  - name: github\n    type", "  - type");
    let cfg = ok(&MAIN.replace("providerName: github", "providerName: ''"), &unnamed);
    assert_eq!(cfg.auth_server.as_ref().map(|a| a.default_subject_provider()), Some("default"));
    ok(&MAIN.replace("providerName: github", "providerName: default"), &unnamed);
}

#[test]
fn upstream_inject_block() {
    let main = MAIN.replace("      upstreamInject:\n        providerName: github\n", "");
    assert_eq!(
        problems(&main, AUTH),
        ["config.yaml:13:5: outgoingAuth.backends.github.upstreamInject: required when type is \
             upstream_inject (providerName: the upstream of the authorization server whose token \
             the backend gets)"]
    );
    let main = MAIN.replace("type: upstream_inject", "type: passthrough");
    assert_eq!(
        problems(&main, AUTH),
        ["config.yaml:15:7: outgoingAuth.backends.github.upstreamInject: only used when type is \
             upstream_inject, but type is passthrough"]
    );
}

#[test]
fn subject_provider_name() {
    let main = |name: &str| {
        format!(
            "{MAIN}  default:\n    type: token_exchange\n    tokenExchange:\n      tokenUrl: \
             https://sts.example.com/token\n      clientId: vmcp\n      clientSecretEnv: STS_SECRET\n{name}"
        )
    };
    let path = "config.yaml:23:7: outgoingAuth.default.tokenExchange.subjectProviderName:";
    assert_eq!(
        problems(&main("      subjectProviderName: gihtub\n"), AUTH),
        [format!("{path} unknown upstream \"gihtub\"; did you mean \"github\"?")]
    );
    let without_inject = main("      subjectProviderName: github\n")
        .replace("  backends:\n    github:\n      type: upstream_inject\n      upstreamInject:\n        providerName: github\n", "");
    assert_eq!(
        match parse(&without_inject, "config.yaml") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        },
        "config.yaml:18:7: outgoingAuth.default.tokenExchange.subjectProviderName: names an \
         upstream of the embedded authorization server, but there is none: add \
         authserver-config.yaml beside this file, or remove subjectProviderName"
    );
    let cfg = ok(&main("      subjectProviderName: github\n"), AUTH);
    let te = cfg.outgoing_auth.default.as_ref().and_then(|d| d.token_exchange.as_ref());
    assert_eq!(te.and_then(|t| t.subject_provider_name.as_deref()), Some("github"));
    // Unset: the runtime uses the first upstream.
    let cfg = ok(&main(""), AUTH);
    assert_eq!(cfg.auth_server.as_ref().map(|a| a.default_subject_provider()), Some("github"));
}

#[test]
fn both_files_are_reported_together_in_file_order() {
    let main = MAIN.replace("    url: https://api.githubcopilot.com/mcp\n", "");
    let auth = AUTH.replace("client_id: Iv1.0123456789abcdef", "client_id: ''").replace(
        "issuer: https://vmcp.example.com\n",
        "issuer: https://vmcp.example.com\nscopes_supported: ['a b']\n",
    );
    assert_eq!(
        problems(&main, &auth),
        [
            "config.yaml:3:5: backends[0].url: required for transport streamable-http",
            "authserver-config.yaml:2:20: scopes_supported[0]: invalid scope \"a b\": no spaces, \
             quotes, backslashes or non-ASCII characters",
            "authserver-config.yaml:10:7: upstreams[0].oauth2_config.client_id: must not be \
             empty; vmcp's client ID at the provider is required",
        ]
    );
}

#[test]
fn load_reads_the_sibling_file() {
    let dir = temp_dir();
    let main_path = dir.join("config.yaml");
    std::fs::write(&main_path, MAIN.replace("github:\n      type: upstream_inject\n      upstreamInject:\n        providerName: github", "github:\n      type: unauthenticated")).unwrap();
    let cfg = crate::config::load(&main_path).unwrap();
    assert!(cfg.auth_server.is_none());

    std::fs::write(
        dir.join("authserver-config.yaml"),
        AUTH.replace("client_id: Iv1.0123456789abcdef", "client_id: ''"),
    )
    .unwrap();
    let err = match crate::config::load(&main_path) {
        Err(e) => e,
        Ok(_) => panic!("accepted"),
    };
    assert_eq!(
        err.to_string(),
        format!(
            "{}:9:7: upstreams[0].oauth2_config.client_id: must not be empty; vmcp's client ID \
             at the provider is required",
            dir.join("authserver-config.yaml").display()
        )
    );
    std::fs::write(dir.join("authserver-config.yaml"), AUTH).unwrap();
    let cfg = crate::config::load(&main_path).unwrap();
    assert_eq!(cfg.auth_server.as_ref().map(|a| a.upstream_names()), Some(vec!["github"]));

    // Present but unreadable is an error, not "no authorization server".
    std::fs::remove_file(dir.join("authserver-config.yaml")).unwrap();
    std::fs::create_dir(dir.join("authserver-config.yaml")).unwrap();
    match crate::config::load(&main_path) {
        Err(e @ ConfigError::Read { .. }) => assert_eq!(
            e.to_string(),
            format!(
                "{}: cannot read config: Is a directory (os error 21)",
                dir.join("authserver-config.yaml").display()
            )
        ),
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn warnings_name_the_file() {
    let main = MAIN.replace(
        "    audience: https://vmcp.example.com/mcp\n",
        "    audience: https://vmcp.example.com/mcp\n    resource: https://vmcp.example.com/\n",
    );
    let auth = AUTH
        .replace(
            "      userinfo:\n        endpoint_url: https://api.github.com/user\n",
            "      insecure_allow_http: true\n",
        )
        .replace(
            "upstreams:",
            "disable_upstream_token_injection: true\ninsecure_allow_http: true\nupstreams:",
        );
    let cfg = ok(&main, &auth);
    assert_eq!(
        validate_warnings(&cfg),
        [
            "incomingAuth.oidc.resource: \"https://vmcp.example.com/\" differs from audience \
             \"https://vmcp.example.com/mcp\": clients ask the authorization server for tokens for \
             the resource, and the gateway accepts only the audience",
            "authserver-config.yaml: signing_key_config: not set: an ephemeral signing key is \
             generated at start, so issued tokens stop validating when vmcp restarts",
            "authserver-config.yaml: hmac_secret_files: not set: the upstream token vault's key is \
             generated at start, so a store that outlives vmcp could not be read after a restart",
            "authserver-config.yaml: upstreams[0].oauth2_config: neither userinfo nor \
             identity_from_token is set: the user's subject is derived from each access token (it \
             changes at every sign-in) and there is no name or email",
            "authserver-config.yaml: upstreams[0].oauth2_config.insecure_allow_http: plain-HTTP \
             URLs are accepted for this upstream; for trusted networks only",
            "authserver-config.yaml: disable_upstream_token_injection: has no effect in vmcp (nor \
             in ToolHive's vMCP): upstream tokens reach a backend only through outgoingAuth type \
             upstream_inject",
            "authserver-config.yaml: insecure_allow_http: plain-HTTP URLs are accepted for the \
             issuer and every upstream; for trusted networks only",
        ]
    );
}
