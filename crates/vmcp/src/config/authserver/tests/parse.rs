//! Reading the file: ToolHive's own output loads unchanged, Go's zero values, schema errors.

use std::time::Duration;

use super::{AUTH, MAIN, auth_problems, ok, problems, temp_dir};
use crate::config::authserver::{SecretRef, StorageKind, UpstreamKind};

/// What ToolHive's operator writes for a VirtualMCPServer with an embedded authorization server
/// (`BuildAuthServerRunConfig` marshalled by gopkg.in/yaml.v3: four-space indents, `[]` for
/// empty lists without omitempty, secrets as env var names and mounted files).
const OPERATOR_OUTPUT: &str = "\
schema_version: v0.1.0
issuer: https://vmcp.example.com
signing_key_config:
    key_dir: /etc/toolhive/authserver/keys
    signing_key_file: key-0.pem
    fallback_key_files:
        - key-1.pem
hmac_secret_files:
    - /etc/toolhive/authserver/hmac/hmac-0
    - /etc/toolhive/authserver/hmac/hmac-1
token_lifespans:
    access_token_lifespan: 1h
    refresh_token_lifespan: 168h
    auth_code_lifespan: 10m
upstreams:
    - name: okta
      type: oidc
      oidc_config:
        issuer_url: https://example.okta.com/oauth2/default
        client_id: 0oa1b2c3d4e5f6g7h8i9
        client_secret_env_var: TOOLHIVE_UPSTREAM_CLIENT_SECRET_OKTA
        redirect_uri: https://vmcp.example.com/mcp/oauth/callback
        scopes:
            - openid
            - profile
            - offline_access
        additional_authorization_params:
            prompt: consent
    - name: github
      type: oauth2
      oauth2_config:
        authorization_endpoint: https://github.com/login/oauth/authorize
        token_endpoint: https://github.com/login/oauth/access_token
        client_id: Iv1.0123456789abcdef
        client_secret_env_var: TOOLHIVE_UPSTREAM_CLIENT_SECRET_GITHUB
        redirect_uri: https://vmcp.example.com/mcp/oauth/callback
        scopes:
            - repo
            - read:user
        userinfo:
            endpoint_url: https://api.github.com/user
            http_method: GET
            additional_headers:
                Accept: application/vnd.github+json
            field_mapping:
                subject_fields:
                    - id
                    - login
                name_fields:
                    - name
                    - login
                email_fields:
                    - email
scopes_supported:
    - openid
    - profile
    - email
    - offline_access
allowed_audiences:
    - https://vmcp.example.com/mcp
disable_upstream_token_injection: false
insecure_allow_http: false
";

/// The main config the operator writes beside it (ToolHive's vMCP keys we accept).
const OPERATOR_MAIN: &str = "\
name: gw
groupRef: engineering
backends:
  - name: github
    transport: streamable-http
    url: https://api.githubcopilot.com/mcp
incomingAuth:
  type: oidc
  oidc:
    issuer: https://vmcp.example.com
    audience: https://vmcp.example.com/mcp
    resource: https://vmcp.example.com/mcp
outgoingAuth:
  source: inline
  backends:
    github:
      type: upstream_inject
      upstreamInject:
        providerName: github
";

#[test]
fn operator_output_parses_unchanged() {
    // On this machine the mounted secret files do not exist: exactly those are reported.
    assert_eq!(
        problems(OPERATOR_MAIN, OPERATOR_OUTPUT),
        [
            "authserver-config.yaml:5:5: signing_key_config.signing_key_file: cannot read \
             /etc/toolhive/authserver/keys/key-0.pem: No such file or directory (os error 2)",
            "authserver-config.yaml:7:11: signing_key_config.fallback_key_files[0]: cannot read \
             /etc/toolhive/authserver/keys/key-1.pem: No such file or directory (os error 2)",
            "authserver-config.yaml:9:7: hmac_secret_files[0]: cannot read \
             /etc/toolhive/authserver/hmac/hmac-0: No such file or directory (os error 2)",
            "authserver-config.yaml:10:7: hmac_secret_files[1]: cannot read \
             /etc/toolhive/authserver/hmac/hmac-1: No such file or directory (os error 2)",
        ]
    );

    // With the files in place, the same text loads and means what it means to ToolHive.
    let dir = temp_dir();
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    let pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    std::fs::write(dir.join("keys/key-0.pem"), pem).unwrap();
    std::fs::write(dir.join("keys/key-1.pem"), pem).unwrap();
    std::fs::write(dir.join("hmac-0"), [7u8; 32]).unwrap();
    std::fs::write(dir.join("hmac-1"), [8u8; 48]).unwrap();
    let text = OPERATOR_OUTPUT
        .replace("/etc/toolhive/authserver/keys", &dir.join("keys").display().to_string())
        .replace("/etc/toolhive/authserver/hmac", &dir.display().to_string());
    let cfg = ok(OPERATOR_MAIN, &text);
    let Some(auth) = &cfg.auth_server else { panic!("no auth server") };
    assert_eq!(auth.schema_version, "v0.1.0");
    assert_eq!(auth.issuer, "https://vmcp.example.com");
    let (key, fallback) = auth.signing_key_paths().unwrap();
    assert_eq!(key, dir.join("keys/key-0.pem"));
    assert_eq!(fallback, [dir.join("keys/key-1.pem")]);
    let (current, rotated) = auth.hmac_secret_paths().unwrap();
    assert_eq!(current, dir.join("hmac-0"));
    assert_eq!(rotated, [dir.join("hmac-1")]);
    assert_eq!(auth.access_token_lifespan(), Duration::from_secs(3600));
    assert_eq!(auth.refresh_token_lifespan(), Duration::from_secs(168 * 3600));
    assert_eq!(auth.auth_code_lifespan(), Duration::from_secs(600));
    assert_eq!(auth.upstream_names(), ["okta", "github"]);
    assert_eq!(auth.default_subject_provider(), "okta");

    let okta = auth.upstream("okta").unwrap();
    assert_eq!(okta.kind, UpstreamKind::Oidc);
    assert_eq!(okta.client_id(), Some("0oa1b2c3d4e5f6g7h8i9"));
    assert_eq!(okta.client_secret(), Some(SecretRef::Env("TOOLHIVE_UPSTREAM_CLIENT_SECRET_OKTA")));
    assert_eq!(okta.scopes(), ["openid", "profile", "offline_access"]);
    let o = okta.oidc_config.as_ref().unwrap();
    assert_eq!(o.issuer_url, "https://example.okta.com/oauth2/default");
    assert_eq!(o.additional_authorization_params["prompt"], "consent");
    assert_eq!(auth.redirect_uri(okta), "https://vmcp.example.com/mcp/oauth/callback");

    let gh = auth.upstream("github").unwrap();
    let g = gh.oauth2_config.as_ref().unwrap();
    assert_eq!(g.token_endpoint, "https://github.com/login/oauth/access_token");
    let ui = g.userinfo.as_ref().unwrap();
    assert_eq!(ui.http_method.as_deref(), Some("GET"));
    assert_eq!(ui.additional_headers["Accept"], "application/vnd.github+json");
    assert_eq!(ui.field_mapping.as_ref().unwrap().subject_fields, ["id", "login"]);
    assert_eq!(gh.scopes(), ["repo", "read:user"]);

    assert_eq!(auth.scopes_supported(), ["openid", "profile", "email", "offline_access"]);
    assert_eq!(auth.allowed_audiences, ["https://vmcp.example.com/mcp"]);
    assert_eq!(auth.storage_kind(), StorageKind::Memory);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn go_zero_values_and_defaults() {
    // `null`, `key:` with no value and `""` mean "not set", as they do to Go; a zero lifespan
    // means the default.
    let text = "\
schema_version:
issuer: http://localhost:8080
authorization_endpoint_base_url: ''
delegation_token_lifespan: \"\"
token_lifespans:
  access_token_lifespan: 1h30m
  refresh_token_lifespan: 0s
  auth_code_lifespan: 300s
upstreams:
  - name:
    type: oidc
    oidc_config:
      issuer_url: http://localhost:9000
      client_id: vmcp
      client_secret_file: ''
      redirect_uri: null
      scopes:
      additional_authorization_params: null
scopes_supported: null
baseline_client_scopes: []
allowed_audiences: [http://localhost:8080/mcp]
storage: {type: ''}
cimd: {enabled: false, cache_max_size: 0, cache_fallback_ttl: 0s}
trusted_issuers: []
delegate_clients: null
force_confidential_redirect_uris: []
";
    let main = MAIN
        .replace("https://vmcp.example.com/mcp", "http://localhost:8080/mcp")
        .replace("https://vmcp.example.com", "http://localhost:8080")
        .replace("providerName: github", "providerName: ''");
    let cfg = ok(&main, text);
    let auth = cfg.auth_server.as_ref().unwrap();
    assert_eq!(auth.access_token_lifespan(), Duration::from_secs(5400));
    assert_eq!(auth.refresh_token_lifespan(), Duration::from_secs(7 * 24 * 3600));
    assert_eq!(auth.auth_code_lifespan(), Duration::from_secs(300));
    assert_eq!(auth.upstream_names(), ["default"]);
    assert!(auth.upstream("").is_some());
    let up = &auth.upstreams[0];
    assert_eq!(up.client_secret(), None);
    assert_eq!(up.scopes(), ["openid", "offline_access"]);
    assert_eq!(auth.redirect_uri(up), "http://localhost:8080/oauth/callback");
    assert_eq!(auth.scopes_supported(), ["openid", "profile", "email", "offline_access"]);
    assert!(auth.signing_key_paths().is_none());
    assert!(auth.hmac_secret_paths().is_none());
}

#[test]
fn unknown_keys_suggest_the_snake_case_key() {
    let text = AUTH.replace("issuer:", "isuer:");
    assert_eq!(
        auth_problems(&text),
        ["authserver-config.yaml:1:1: isuer: unknown key; did you mean \"issuer\"?"]
    );
    let text = AUTH.replace("client_id:", "clientId:");
    assert_eq!(
        auth_problems(&text),
        ["authserver-config.yaml:9:7: upstreams[0].oauth2_config.clientId: unknown key; did \
             you mean \"client_id\"?"]
    );
    let text = AUTH.replace("endpoint_url:", "endpoint_uri:");
    assert_eq!(
        auth_problems(&text),
        ["authserver-config.yaml:12:9: upstreams[0].oauth2_config.userinfo.endpoint_uri: \
             unknown key; did you mean \"endpoint_url\"?"]
    );
}

#[test]
fn bad_values_are_located() {
    let text = AUTH.replace("type: oauth2", "type: oauth");
    assert_eq!(
        auth_problems(&text),
        ["authserver-config.yaml:5:11: upstreams[0].type: unknown value \"oauth\"; did you \
             mean \"oauth2\"? (allowed: oidc, oauth2)"]
    );
    let text = AUTH.replace("    type: oauth2\n", "");
    assert_eq!(
        auth_problems(&text),
        ["authserver-config.yaml:4:5: upstreams[0]: missing key \"type\""]
    );
    let text = format!("{AUTH}token_lifespans:\n  access_token_lifespan: 3600\n");
    let ps = auth_problems(&text);
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert!(
        ps[0].starts_with(
            "authserver-config.yaml:14:26: token_lifespans.access_token_lifespan: invalid \
             duration \"3600\""
        ),
        "{ps:?}"
    );
    let text = format!("{AUTH}token_lifespans:\n  access_token_lifespan: -1h\n");
    assert_eq!(
        auth_problems(&text),
        ["authserver-config.yaml:14:26: token_lifespans.access_token_lifespan: invalid \
             duration \"-1h\": must not be negative"]
    );
    let text = format!("{AUTH}cimd:\n  cache_max_size: -1\n");
    let ps = auth_problems(&text);
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert!(ps[0].starts_with("authserver-config.yaml:14:19: cimd.cache_max_size: "), "{ps:?}");
}

#[test]
fn syntax_errors_and_empty_files_name_the_file() {
    let ps = auth_problems("issuer: x\n  bad: indent\n");
    assert_eq!(ps.len(), 1);
    assert!(ps[0].starts_with("authserver-config.yaml:2:6: invalid YAML"), "{ps:?}");
    assert_eq!(
        auth_problems("# nothing yet\n"),
        ["authserver-config.yaml: the file is empty; expected at least `issuer`, `upstreams` \
             and `allowed_audiences`"]
    );
}

#[test]
fn secrets_never_reach_debug() {
    let text = AUTH.replace(
        "endpoint_url: https://api.github.com/user",
        "endpoint_url: https://api.github.com/user\n        additional_headers: {X-Api-Key: \
         hunter2-SECRET}",
    );
    let cfg = ok(MAIN, &text);
    let debug = format!("{cfg:?}");
    assert!(debug.contains("X-Api-Key"), "{debug}");
    assert!(!debug.contains("hunter2"), "{debug}");
}
