//! Configuration: ToolHive's `obo` and `xaa` keys load unchanged, and each load-time check
//! reports its place in the file (`FILE:LINE:COL: path: message`).

use super::*;

use vmcp::config::{ConfigError, parse, parse_with_auth_server, validate_warnings};

/// Lines 1-8: two HTTP backends.
const BACKENDS: &str = "\
name: gw
backends:
  - name: a
    transport: streamable-http
    url: http://127.0.0.1:9001/mcp
  - name: b
    transport: streamable-http
    url: http://127.0.0.1:9002/mcp
";

/// Lines 9-13 after [`BACKENDS`]: `oidc` with the issuer of [`auth_file`].
const INCOMING: &str = "\
incomingAuth:
  type: oidc
  oidc:
    issuer: http://127.0.0.1:4483
    audience: http://127.0.0.1:4483/mcp
";

/// `authserver-config.yaml` with the upstreams `names`.
fn auth_file(names: &[&str]) -> String {
    let mut s = "issuer: http://127.0.0.1:4483\nallowed_audiences: [http://127.0.0.1:4483/mcp]\nupstreams:\n".to_owned();
    for n in names {
        s += &format!(
            "  - name: {n}\n    type: oidc\n    oidc_config:\n      issuer_url: http://127.0.0.1:8099\n      client_id: vmcp-gateway\n"
        );
    }
    s
}

/// Warnings about the main file (not those about the authorization server's own file).
fn main_warnings(cfg: &vmcp::config::Config) -> Vec<String> {
    let own = "authserver-config.yaml: ";
    validate_warnings(cfg).into_iter().filter(|w| !w.starts_with(own)).collect()
}

/// Every problem of an invalid config, as `vmcp validate` prints it.
fn problems(result: Result<vmcp::config::Config, ConfigError>) -> Vec<String> {
    match result {
        Err(ConfigError::Invalid(ps)) => ps.iter().map(|p| p.to_string()).collect(),
        Err(e) => panic!("not a semantic error: {e}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn toolhive_obo_and_xaa_keys_load_unchanged() {
    let text = format!(
        "{BACKENDS}{INCOMING}outgoingAuth:
  backends:
    a:
      type: obo
      obo:
        tokenUrl: https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token
        clientId: gw-app
        clientSecretEnv: OBO_SECRET
        audience: api://a
        scopes: [api://a/.default]
        subjectTokenProviderName: corp
        cacheSkewSeconds: 45
    b:
      type: xaa
      xaa:
        idpTokenUrl: https://idp.example/oauth2/v1/token
        idpClientId: gw-idp
        idpClientSecretEnv: IDP_SECRET
        targetTokenUrl: http://as.internal:8080/token
        insecureTargetTokenUrl: true
        targetClientId: gw-b
        targetClientSecretEnv: B_SECRET
        targetAudience: https://as.internal
        targetResource: https://b.example/mcp
        scopes: [read, write]
        subjectProviderName: corp
        subjectTokenType: urn:ietf:params:oauth:token-type:id_token
"
    );
    let cfg =
        parse_with_auth_server(&text, "vmcp.yaml", &auth_file(&["corp"]), "authserver-config.yaml")
            .unwrap_or_else(|e| panic!("{e}"));
    let out = &cfg.outgoing_auth.backends;
    let o = out["a"].obo.as_ref().unwrap();
    assert_eq!(
        o.token_url,
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    );
    assert_eq!(o.client_id, "gw-app");
    assert_eq!(o.client_secret_env.as_deref(), Some("OBO_SECRET"));
    assert_eq!(o.audience.as_deref(), Some("api://a"));
    assert_eq!(o.scopes, ["api://a/.default"]);
    assert_eq!(o.subject_token_provider_name.as_deref(), Some("corp"));
    assert_eq!(o.cache_skew_seconds, Some(45));
    let x = out["b"].xaa.as_ref().unwrap();
    assert_eq!(x.idp_token_url, "https://idp.example/oauth2/v1/token");
    assert_eq!(x.idp_client_id.as_deref(), Some("gw-idp"));
    assert_eq!(x.idp_client_secret_env.as_deref(), Some("IDP_SECRET"));
    assert_eq!(x.target_token_url, "http://as.internal:8080/token");
    assert!(x.insecure_target_token_url);
    assert_eq!(x.target_client_id.as_deref(), Some("gw-b"));
    assert_eq!(x.target_client_secret_env.as_deref(), Some("B_SECRET"));
    assert_eq!(x.target_audience, "https://as.internal");
    assert_eq!(x.target_resource.as_deref(), Some("https://b.example/mcp"));
    assert_eq!(x.scopes, ["read", "write"]);
    assert_eq!(x.subject_provider_name.as_deref(), Some("corp"));
    assert_eq!(x.subject_token_type.as_deref(), Some(ID_TOKEN));
    assert_eq!(
        main_warnings(&cfg),
        [
            "outgoingAuth.backends.b.xaa.insecureTargetTokenUrl: the target grant goes over plain http; never in production"
        ]
    );
}

#[test]
fn obo_checks_point_at_the_line() {
    let text = format!(
        "{BACKENDS}outgoingAuth:
  default:
    type: obo
  backends:
    a:
      type: obo
      obo:
        tokenUrl: http://login.example/token
        clientSecret: s
        clientSecretEnv: S
        scopes: ['']
        subjectTokenProviderName: corp
        cacheSkewSeconds: -1
    b:
      type: passthrough
      obo:
        tokenUrl: https://login.example/token
      xaa:
        idpTokenUrl: https://idp.example/token
"
    );
    let a = "outgoingAuth.backends.a.obo";
    assert_eq!(
        problems(parse(&text, "vmcp.yaml")),
        [
            "vmcp.yaml:10:3: outgoingAuth.default.obo: required when type is obo (tokenUrl, clientId, clientSecretEnv, and audience or scopes)".to_owned(),
            format!("vmcp.yaml:15:7: {a}.clientId: required: the gateway's client id at the IdP"),
            format!("vmcp.yaml:16:9: {a}.tokenUrl: URL \"http://login.example/token\" must use https (http only on a loopback host)"),
            format!("vmcp.yaml:18:9: {a}.clientSecretEnv: give either clientSecret or clientSecretEnv, not both"),
            format!("vmcp.yaml:19:18: {a}.scopes[0]: must not be empty"),
            format!("vmcp.yaml:20:9: {a}.subjectTokenProviderName: names an upstream of the embedded authorization server, but there is none: add authserver-config.yaml beside this file, or remove subjectTokenProviderName"),
            format!("vmcp.yaml:21:9: {a}.cacheSkewSeconds: must not be negative"),
            "vmcp.yaml:24:7: outgoingAuth.backends.b.obo: only used when type is obo, but type is passthrough".to_owned(),
            "vmcp.yaml:26:7: outgoingAuth.backends.b.xaa: only used when type is xaa, but type is passthrough".to_owned(),
        ]
    );

    // Neither audience nor scopes; no secret at all.
    let text = format!(
        "{BACKENDS}outgoingAuth:
  backends:
    a:
      type: obo
      obo:
        tokenUrl: https://login.example/token
        clientId: gw
"
    );
    assert_eq!(
        problems(parse(&text, "vmcp.yaml")),
        [
            "vmcp.yaml:13:7: outgoingAuth.backends.a.obo: clientSecretEnv (an environment variable holding the secret) or clientSecret is required",
            "vmcp.yaml:13:7: outgoingAuth.backends.a.obo: audience or scopes is required: what the exchanged token is for",
        ]
    );
}

#[test]
fn xaa_checks_point_at_the_line() {
    let text = format!(
        "{BACKENDS}outgoingAuth:
  backends:
    a:
      type: xaa
      xaa:
        idpTokenUrl: http://idp.example/token
        idpClientSecretEnv: IDP_SECRET
        targetTokenUrl: https://as.example/token#frag
        targetClientId: gw
        targetResource: not a uri
        subjectTokenType: urn:ietf:params:oauth:token-type:access_token
        subjectProviderName: corp
    b:
      type: xaa
"
    );
    let a = "outgoingAuth.backends.a.xaa";
    assert_eq!(
        problems(parse(&text, "vmcp.yaml")),
        [
            format!("vmcp.yaml:13:7: {a}.targetAudience: required: the issuer of the backend's authorization server (the ID-JAG's audience)"),
            format!("vmcp.yaml:14:9: {a}.idpTokenUrl: URL \"http://idp.example/token\" must use https (http only on a loopback host)"),
            format!("vmcp.yaml:15:9: {a}.idpClientSecretEnv: a client secret needs idpClientId"),
            format!("vmcp.yaml:16:9: {a}.targetTokenUrl: URL \"https://as.example/token#frag\" must not have a fragment"),
            format!("vmcp.yaml:17:9: {a}.targetClientId: needs targetClientSecretEnv (an environment variable holding the secret) or targetClientSecret"),
            format!("vmcp.yaml:18:9: {a}.targetResource: not an absolute URI \"not a uri\": relative URL without a base"),
            format!("vmcp.yaml:19:9: {a}.subjectTokenType: unsupported \"urn:ietf:params:oauth:token-type:access_token\"; only \"urn:ietf:params:oauth:token-type:id_token\" is accepted"),
            format!("vmcp.yaml:20:9: {a}.subjectProviderName: names an upstream of the embedded authorization server, but there is none: add authserver-config.yaml beside this file, or remove subjectProviderName"),
            "vmcp.yaml:21:5: outgoingAuth.backends.b.xaa: required when type is xaa (idpTokenUrl, targetTokenUrl and targetAudience)".to_owned(),
        ]
    );

    // Required keys absent; plain http allowed on loopback, and anywhere for the target with
    // insecureTargetTokenUrl.
    let text = format!(
        "{BACKENDS}outgoingAuth:
  backends:
    a:
      type: xaa
      xaa: {{}}
    b:
      type: xaa
      xaa:
        idpTokenUrl: http://127.0.0.1:8080/token
        targetTokenUrl: http://as.internal/token
        insecureTargetTokenUrl: true
        targetAudience: https://as.internal
"
    );
    let a = "outgoingAuth.backends.a.xaa";
    assert_eq!(
        problems(parse(&text, "vmcp.yaml")),
        [
            format!("vmcp.yaml:13:7: {a}.idpTokenUrl: required: the IdP's token endpoint (step 1)"),
            format!(
                "vmcp.yaml:13:7: {a}.targetTokenUrl: required: the token endpoint of the backend's authorization server (step 2)"
            ),
            format!(
                "vmcp.yaml:13:7: {a}.targetAudience: required: the issuer of the backend's authorization server (the ID-JAG's audience)"
            ),
        ]
    );
}

#[test]
fn upstream_references_are_checked_against_the_authorization_server() {
    let text = format!(
        "{BACKENDS}{INCOMING}outgoingAuth:
  backends:
    a:
      type: obo
      obo:
        tokenUrl: https://login.example/token
        clientId: gw
        clientSecretEnv: S
        audience: api://a
        subjectTokenProviderName: corpp
    b:
      type: xaa
      xaa:
        idpTokenUrl: https://idp.example/token
        targetTokenUrl: https://as.example/token
        targetAudience: https://as.example
"
    );
    let auth = auth_file(&["corp", "github"]);
    assert_eq!(
        problems(parse_with_auth_server(&text, "vmcp.yaml", &auth, "authserver-config.yaml")),
        [
            "vmcp.yaml:23:9: outgoingAuth.backends.a.obo.subjectTokenProviderName: unknown upstream \"corpp\"; did you mean \"corp\"?",
            "vmcp.yaml:26:7: outgoingAuth.backends.b.xaa: subjectProviderName is required: authserver-config.yaml has several upstreams (corp, github); name the one whose ID token is exchanged",
        ]
    );
}

#[test]
fn risky_settings_are_warned_about() {
    // Without an authorization server.
    let text = format!(
        "{BACKENDS}outgoingAuth:
  backends:
    a:
      type: obo
      obo:
        tokenUrl: https://login.example/token
        clientId: gw
        clientSecret: inline-SECRET
        scopes: [api://a/.default]
    b:
      type: xaa
      xaa:
        idpTokenUrl: https://idp.example/token
        idpClientId: gw
        idpClientSecret: inline-IDP-SECRET
        idpClientSecretEnv: IDP_SECRET
        targetTokenUrl: https://as.example/token
        targetAudience: https://as.example
"
    );
    let cfg = parse(&text, "vmcp.yaml").unwrap_or_else(|e| panic!("{e}"));
    let w = validate_warnings(&cfg);
    assert_eq!(
        w,
        [
            "outgoingAuth.backends.a.obo.clientSecret: a secret written in the config file; prefer clientSecretEnv",
            "outgoingAuth.backends.b.xaa.idpClientSecretEnv: ignored, idpClientSecret is given too and wins (as in ToolHive); give one",
            "outgoingAuth.backends.b.xaa: no targetClientId, so step 2 carries no client authentication; most authorization servers refuse that",
            "outgoingAuth.backends.b.xaa: without authserver-config.yaml the subject is the token the caller presents, sent as an ID token; clients must present their ID token",
        ]
    );
    assert!(!w.concat().contains("inline-"));

    // With one: obo without subjectTokenProviderName would send vmcp's own token.
    let text = format!(
        "{BACKENDS}{INCOMING}outgoingAuth:
  backends:
    a:
      type: obo
      obo:
        tokenUrl: https://login.example/token
        clientId: gw
        clientSecretEnv: S
        scopes: [api://a/.default]
"
    );
    let cfg =
        parse_with_auth_server(&text, "vmcp.yaml", &auth_file(&["corp"]), "authserver-config.yaml")
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        main_warnings(&cfg),
        [
            "outgoingAuth.backends.a.obo: without subjectTokenProviderName the assertion is the token the caller presents, which vmcp's authorization server issued; the IdP will refuse it"
        ]
    );
}
