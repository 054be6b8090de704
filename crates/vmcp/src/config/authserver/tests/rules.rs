//! Each validation rule of the authorization server file, with its exact located message.

use super::{AUTH, MAIN, auth_problems, load, ok, problems, temp_dir};

/// The problems located in `authserver-config.yaml` when `auth` is loaded with [`MAIN`] whose
/// issuer is replaced by `issuer` (so the cross-file issuer check stays quiet).
fn with_issuer(issuer: &str, auth: &str) -> Vec<String> {
    let main = match issuer {
        "" => MAIN.to_owned(),
        _ => MAIN.replace("issuer: https://vmcp.example.com", &format!("issuer: {issuer}")),
    };
    match load(&main, auth) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .problems()
            .iter()
            .map(ToString::to_string)
            .filter(|p| p.starts_with("authserver-config.yaml"))
            .collect(),
    }
}

/// [`AUTH`] with its issuer replaced.
fn auth_issuer(issuer: &str) -> String {
    AUTH.replace("issuer: https://vmcp.example.com", &format!("issuer: '{issuer}'"))
}

#[test]
fn issuer_form() {
    let at = "authserver-config.yaml:1:1: issuer:";
    let cases = [
        (
            "",
            format!(
                "{at} must not be empty; the authorization server's URL (the `iss` of its tokens) is required"
            ),
        ),
        (
            "vmcp.example.com",
            format!("{at} invalid URL \"vmcp.example.com\": relative URL without a base"),
        ),
        (
            "ftp://vmcp.example.com",
            format!("{at} URL \"ftp://vmcp.example.com\" must start with https://"),
        ),
        (
            "http://vmcp.example.com",
            format!(
                "{at} http:// is allowed only for a loopback host (localhost, 127.0.0.1, ::1) or with insecure_allow_http: true; use https://"
            ),
        ),
        ("https://vmcp.example.com?tenant=a", format!("{at} must not have a query (?...)")),
        ("https://vmcp.example.com#x", format!("{at} must not have a fragment (#...)")),
        ("https://user@vmcp.example.com", format!("{at} must not contain credentials (user@host)")),
        ("https://vmcp.example.com/", format!("{at} must not end with a slash")),
    ];
    for (issuer, want) in cases {
        assert_eq!(with_issuer(issuer, &auth_issuer(issuer)), [want], "issuer {issuer:?}");
    }
    // Loopback hosts may use http; so may any host with insecure_allow_http.
    for issuer in ["http://localhost:8080", "http://127.0.0.1:8080/as", "http://[::1]:8080"] {
        assert_eq!(with_issuer(issuer, &auth_issuer(issuer)), Vec::<String>::new(), "{issuer}");
    }
    let text = format!("{}insecure_allow_http: true\n", auth_issuer("http://vmcp.internal"));
    assert_eq!(with_issuer("http://vmcp.internal", &text), Vec::<String>::new());

    let text = AUTH.replace("issuer: https://vmcp.example.com\n", "");
    assert_eq!(
        with_issuer("https://vmcp.example.com", &text),
        ["authserver-config.yaml:1:1: issuer: missing; the authorization server's URL (the \
             `iss` of its tokens) is required"]
    );
}

#[test]
fn token_lifespans_bounds() {
    let text = format!(
        "{AUTH}token_lifespans:\n  access_token_lifespan: 30s\n  refresh_token_lifespan: 721h\n  \
         auth_code_lifespan: 15m\n"
    );
    assert_eq!(
        auth_problems(&text),
        [
            "authserver-config.yaml:14:3: token_lifespans.access_token_lifespan: 30s is out of \
             bounds: must be from 1m to 24h",
            "authserver-config.yaml:15:3: token_lifespans.refresh_token_lifespan: 721h is out of \
             bounds: must be from 1h to 720h",
            "authserver-config.yaml:16:3: token_lifespans.auth_code_lifespan: 15m is out of \
             bounds: must be from 30s to 10m",
        ]
    );
    let text = format!(
        "{AUTH}token_lifespans:\n  access_token_lifespan: 24h\n  refresh_token_lifespan: 720h\n  \
         auth_code_lifespan: 30s\n"
    );
    ok(MAIN, &text);
}

#[test]
fn hmac_secrets_and_signing_keys() {
    let dir = temp_dir();
    let (short, good, pem, not_pem) =
        (dir.join("short"), dir.join("good"), dir.join("k.pem"), dir.join("k.txt"));
    std::fs::write(&short, [1u8; 31]).unwrap();
    std::fs::write(&good, [1u8; 32]).unwrap();
    std::fs::write(&pem, "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n")
        .unwrap();
    std::fs::write(&not_pem, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        .unwrap();
    let d = dir.display();
    let text = format!(
        "{AUTH}hmac_secret_files: ['', {d}/good, '', {d}/short, {d}/none]\nsigning_key_config:\n  \
         key_dir: {d}\n  signing_key_file: k.txt\n  fallback_key_files: [k.pem, none.pem]\n"
    );
    assert_eq!(
        auth_problems(&text),
        [
            "authserver-config.yaml:13:21: hmac_secret_files[0]: must not be empty: the first \
             file holds the current secret"
                .to_owned(),
            format!(
                "authserver-config.yaml:13:{}: hmac_secret_files[3]: {d}/short holds 31 bytes; \
                 an HMAC secret needs at least 32 (e.g. `openssl rand -base64 32`)",
                36 + d.to_string().len()
            ),
            format!(
                "authserver-config.yaml:13:{}: hmac_secret_files[4]: cannot read {d}/none: No \
                 such file or directory (os error 2)",
                44 + 2 * d.to_string().len()
            ),
            format!(
                "authserver-config.yaml:16:3: signing_key_config.signing_key_file: {d}/k.txt is \
                 not a PEM private key (no \"-----BEGIN ... PRIVATE KEY-----\" line)"
            ),
            format!(
                "authserver-config.yaml:17:31: signing_key_config.fallback_key_files[1]: cannot \
                 read {d}/none.pem: No such file or directory (os error 2)"
            ),
        ]
    );
    let text = format!("{AUTH}signing_key_config:\n  key_dir: {d}\n");
    assert_eq!(
        auth_problems(&text),
        ["authserver-config.yaml:13:1: signing_key_config.signing_key_file: required when \
             key_dir or fallback_key_files is given (without it an ephemeral key would sign, and \
             they would be ignored)"]
    );
    let text = format!(
        "{AUTH}hmac_secret_files: [{d}/good, {d}/good]\nsigning_key_config:\n  \
         signing_key_file: {d}/k.pem\n"
    );
    ok(MAIN, &text);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn audiences_and_scopes() {
    let text = AUTH
        .replace(
            "allowed_audiences: [https://vmcp.example.com/mcp]",
            "allowed_audiences: [https://vmcp.example.com/mcp, '', urn:x, 'https://a.example/#f']",
        )
        .replace(
            "upstreams:",
            "scopes_supported: [openid, 'é']\nbaseline_client_scopes: [openid, email]\nupstreams:",
        );
    assert_eq!(
        auth_problems(&text),
        [
            "authserver-config.yaml:2:51: allowed_audiences[1]: must not be empty",
            "authserver-config.yaml:2:55: allowed_audiences[2]: resource URI \"urn:x\" must start \
             with http:// or https://",
            "authserver-config.yaml:2:62: allowed_audiences[3]: resource URI \
             \"https://a.example/#f\" must not have a fragment (#...)",
            "authserver-config.yaml:3:28: scopes_supported[1]: invalid scope \"é\": no spaces, \
             quotes, backslashes or non-ASCII characters",
            "authserver-config.yaml:4:34: baseline_client_scopes[1]: \"email\" is not in \
             scopes_supported: openid, é",
        ]
    );
    // Without scopes_supported, baseline scopes are checked against the default set.
    let text =
        AUTH.replace("upstreams:", "baseline_client_scopes: [offline_access, repo]\nupstreams:");
    assert_eq!(
        auth_problems(&text),
        ["authserver-config.yaml:3:42: baseline_client_scopes[1]: \"repo\" is not in \
             scopes_supported (default): openid, profile, email, offline_access"]
    );
    let text = AUTH.replace("allowed_audiences: [https://vmcp.example.com/mcp]\n", "");
    let ps = problems(MAIN, &text);
    assert_eq!(
        ps.last().map(String::as_str),
        Some(
            "authserver-config.yaml:1:1: allowed_audiences: at least one is required: the \
             resource URIs (RFC 8707) tokens may be issued for, normally \
             incomingAuth.oidc.audience of the main config"
        ),
        "{ps:#?}"
    );
}

#[test]
fn unsupported_settings_are_refused_when_set() {
    let text = format!(
        "{AUTH}authorization_endpoint_base_url: https://login.example.com
delegation_token_lifespan: 15m
trusted_issuers:
  - issuer_url: https://login.example-idp.com
    expected_audience: https://vmcp.example.com/mcp
allow_confidential_client_registration: true
force_confidential_redirect_uris: [https://client.example.com/cb]
delegate_clients:
  - client_id: reporting-delegate
    client_secret_env_var: REPORTING_DELEGATE_CLIENT_SECRET
    scopes: [openid]
    audiences: [https://vmcp.example.com/mcp]
cimd: {{enabled: true, cache_fallback_ttl: 0s}}
storage:
  type: redis
  redis_config: {{addr: 'redis:6379', auth_type: aclUser, key_prefix: 'thv:auth:'}}
"
    );
    let text = text.replace(
        "      userinfo:",
        "      dcr_config: {discovery_url: https://idp.example.com/.well-known/openid-configuration}\n      userinfo:",
    );
    assert_eq!(
        auth_problems(&text),
        [
            "authserver-config.yaml:11:7: upstreams[0].oauth2_config.dcr_config: not supported \
             by vmcp yet (dynamic client registration at the upstream); remove it",
            "authserver-config.yaml:15:1: delegation_token_lifespan: not supported by vmcp yet \
             (RFC 8693 delegation tokens); remove it",
            "authserver-config.yaml:16:1: trusted_issuers: not supported by vmcp yet (external \
             issuers for RFC 8693 and RFC 7523 grants); remove it",
            "authserver-config.yaml:19:1: allow_confidential_client_registration: not supported \
             by vmcp yet (registration of confidential clients; vmcp registers public clients \
             with PKCE); remove it",
            "authserver-config.yaml:20:1: force_confidential_redirect_uris: not supported by vmcp \
             yet (registration of confidential clients); remove it",
            "authserver-config.yaml:21:1: delegate_clients: not supported by vmcp yet \
             (pre-registered RFC 8693 delegate clients); remove it",
            "authserver-config.yaml:26:23: cimd.cache_fallback_ttl: must be greater than zero",
            "authserver-config.yaml:28:3: storage.type: not supported yet: storage.type redis \
             (Redis storage comes with scale-out)",
        ]
    );
    let text = format!("{AUTH}storage:\n  type: memory\n  redis_config: {{addr: 'redis:6379'}}\n");
    assert_eq!(
        auth_problems(&text),
        ["authserver-config.yaml:15:3: storage.redis_config: only used when storage.type is \
             redis, but it is memory"]
    );
}
