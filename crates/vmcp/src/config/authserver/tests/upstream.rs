//! The rules on `upstreams[]`, with their exact located messages.

use super::{AUTH, MAIN, auth_problems, ok, problems, temp_dir};

#[test]
fn upstream_names() {
    assert_eq!(
        auth_problems(
            "issuer: https://vmcp.example.com\nallowed_audiences: [https://vmcp.example.com/mcp]\n"
        ),
        [
            "config.yaml:16:9: outgoingAuth.backends.github.upstreamInject.providerName: unknown \
             upstream \"github\"; authserver-config.yaml has no upstreams",
            "authserver-config.yaml:1:1: upstreams: at least one upstream identity provider is \
             required (users sign in there)",
        ]
    );
    let up = |name: &str| {
        format!(
            "  - {name}type: oidc\n    oidc_config: {{issuer_url: https://idp.example.com, \
             client_id: vmcp}}\n"
        )
    };
    let text = format!(
        "issuer: https://vmcp.example.com\nallowed_audiences: [https://vmcp.example.com/mcp]\n\
         upstreams:\n{}{}{}{}{}",
        up(""),
        up("name: default\n    "),
        up("name: GitHub\n    "),
        up("name: github\n    "),
        up("name: github\n    "),
    );
    assert_eq!(
        auth_problems(&text),
        [
            "authserver-config.yaml:4:5: upstreams[0].name: missing; every upstream needs a name \
             when there are several",
            "authserver-config.yaml:6:5: upstreams[1].name: \"default\" is the name of a single \
             unnamed upstream; with several, use a descriptive name",
            "authserver-config.yaml:9:5: upstreams[2].name: invalid upstream name \"GitHub\": use \
             lowercase letters, digits and '-', starting and ending with a letter or digit",
            "authserver-config.yaml:15:5: upstreams[4].name: duplicate upstream name \"github\", \
             first used by upstreams[3] (line 12)",
        ]
    );
}

#[test]
fn upstream_block_must_match_type() {
    let text = AUTH.replace("type: oauth2", "type: oidc");
    assert_eq!(
        auth_problems(&text),
        [
            "authserver-config.yaml:4:5: upstreams[0].oidc_config: required when type is oidc",
            "authserver-config.yaml:6:5: upstreams[0].oauth2_config: only used when type is \
             oauth2, but type is oidc",
        ]
    );
}

#[test]
fn oidc_upstream() {
    let text = "\
issuer: https://vmcp.example.com
allowed_audiences: [https://vmcp.example.com/mcp]
upstreams:
  - type: oidc
    oidc_config:
      issuer_url: http://idp.example.com
      client_secret_file: /nonexistent/secret
      client_secret_env_var: IDP_SECRET
      redirect_uri: https://vmcp.example.com/cb#frag
      scopes: [openid, 'bad scope']
      subject_claim: oid.sub
      additional_authorization_params: {access_type: offline, nonce: x}
";
    let main = MAIN.replace("providerName: github", "providerName: default");
    assert_eq!(
        problems(&main, text),
        [
            "authserver-config.yaml:5:5: upstreams[0].oidc_config.client_id: missing; vmcp's \
             client ID at the provider is required",
            "authserver-config.yaml:6:7: upstreams[0].oidc_config.issuer_url: http:// is allowed \
             only for a loopback host (localhost, 127.0.0.1, ::1) or with insecure_allow_http: \
             true; use https://",
            "authserver-config.yaml:8:7: upstreams[0].oidc_config.client_secret_env_var: give \
             either client_secret_file or client_secret_env_var, not both",
            "authserver-config.yaml:9:7: upstreams[0].oidc_config.redirect_uri: URL \
             \"https://vmcp.example.com/cb#frag\" must not have a fragment (#...)",
            "authserver-config.yaml:10:24: upstreams[0].oidc_config.scopes[1]: invalid scope \
             \"bad scope\": no spaces, quotes, backslashes or non-ASCII characters",
            "authserver-config.yaml:11:7: upstreams[0].oidc_config.subject_claim: \"oid.sub\" is \
             not a claim name: start with a letter or '_', then letters, digits and '_'",
            "authserver-config.yaml:12:63: \
             upstreams[0].oidc_config.additional_authorization_params.nonce: \"nonce\" is set by \
             vmcp itself and cannot be overridden",
        ]
    );
    // The upstream's own insecure_allow_http admits its http URLs.
    let text = text
        .replace("      client_secret_file: /nonexistent/secret\n", "      client_id: vmcp\n")
        .replace("#frag", "")
        .replace(", 'bad scope'", "")
        .replace("oid.sub", "oid")
        .replace(", nonce: x", "")
        .replace("scopes: [openid]", "scopes: [openid]\n      insecure_allow_http: true");
    ok(&main, &text);
}

#[test]
fn oauth2_upstream() {
    let text = "\
issuer: https://vmcp.example.com
allowed_audiences: [https://vmcp.example.com/mcp]
upstreams:
  - name: github
    type: oauth2
    oauth2_config:
      token_endpoint: not a url
      redirect_uri: ftp://vmcp.example.com/cb
      userinfo:
        endpoint_url: http://api.github.com/user
        http_method: PUT
        additional_headers: {'Bad Header': x}
      token_response_mapping: {scope_path: scope}
      identity_from_token: {name_path: login}
";
    assert_eq!(
        auth_problems(text),
        [
            "authserver-config.yaml:6:5: upstreams[0].oauth2_config.authorization_endpoint: \
             missing; the provider's authorization URL is required",
            "authserver-config.yaml:6:5: upstreams[0].oauth2_config.client_id: missing; vmcp's \
             client ID at the provider is required",
            "authserver-config.yaml:7:7: upstreams[0].oauth2_config.token_endpoint: invalid URL \
             \"not a url\": relative URL without a base",
            "authserver-config.yaml:8:7: upstreams[0].oauth2_config.redirect_uri: URL \
             \"ftp://vmcp.example.com/cb\" must start with https://",
            "authserver-config.yaml:10:9: upstreams[0].oauth2_config.userinfo.endpoint_url: \
             http:// is allowed only for a loopback host (localhost, 127.0.0.1, ::1) or with \
             insecure_allow_http: true; use https://",
            "authserver-config.yaml:11:9: upstreams[0].oauth2_config.userinfo.http_method: \
             \"PUT\": must be GET or POST",
            "authserver-config.yaml:12:30: \
             upstreams[0].oauth2_config.userinfo.additional_headers.Bad Header: invalid header \
             name \"Bad Header\": use letters, digits and -",
            "authserver-config.yaml:13:7: \
             upstreams[0].oauth2_config.token_response_mapping.access_token_path: missing; the \
             path of the access token in the token response is required",
            "authserver-config.yaml:14:7: \
             upstreams[0].oauth2_config.identity_from_token.subject_path: missing; the path of \
             the user's identifier in the token response is required",
        ]
    );
}

#[test]
fn client_secret_file_is_read() {
    let dir = temp_dir();
    let (empty, secret) = (dir.join("empty"), dir.join("secret"));
    std::fs::write(&empty, "\n  \n").unwrap();
    std::fs::write(&secret, "s3cret-VALUE\n").unwrap();
    let with_file = |path: &std::path::Path| {
        AUTH.replace(
            "client_secret_env_var: GITHUB_CLIENT_SECRET",
            &format!("client_secret_file: {}", path.display()),
        )
    };
    let ps = auth_problems(&with_file(&empty));
    assert_eq!(
        ps,
        [format!(
            "authserver-config.yaml:10:7: upstreams[0].oauth2_config.client_secret_file: {} is \
             empty",
            empty.display()
        )]
    );
    let ps = auth_problems(&with_file(&dir.join("missing")));
    assert_eq!(
        ps,
        [format!(
            "authserver-config.yaml:10:7: upstreams[0].oauth2_config.client_secret_file: cannot \
             read {}: No such file or directory (os error 2)",
            dir.join("missing").display()
        )]
    );
    let cfg = ok(MAIN, &with_file(&secret));
    assert!(!format!("{cfg:?}").contains("s3cret"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn rules_the_upstream_runtime_shares() {
    // What the upstream runtime (`auth::upstream::ProviderSettings`) would refuse at start is
    // reported by validation already.
    let text = "\
issuer: https://vmcp.example.com
allowed_audiences: [https://vmcp.example.com/mcp]
upstreams:
  - type: oidc
    oidc_config:
      issuer_url: https://idp.example.com
      client_id: vmcp
      scopes: [profile, email]
      userinfo_override:
        endpoint_url: https://idp.example.com/userinfo
        additional_headers: {Authorization: Bearer x}
";
    let main = MAIN.replace("providerName: github", "providerName: default");
    assert_eq!(
        problems(&main, text),
        [
            "authserver-config.yaml:8:7: upstreams[0].oidc_config.scopes: must include openid: \
             an OIDC upstream's identity comes from its ID token",
            "authserver-config.yaml:11:30: \
             upstreams[0].oidc_config.userinfo_override.additional_headers.Authorization: \
             Authorization is set by vmcp (the user's access token)",
        ]
    );
    let text = AUTH.replace(
        "      userinfo:\n        endpoint_url: https://api.github.com/user\n",
        "      token_response_mapping: {access_token_path: authed_user..token, scope_path: \
         scope}\n      identity_from_token: {subject_path: authed_user.id, email_path: '.email'}\n",
    );
    assert_eq!(
        auth_problems(&text),
        [
            "authserver-config.yaml:11:32: \
             upstreams[0].oauth2_config.token_response_mapping.access_token_path: \
             \"authed_user..token\" is not a dotted path (an empty segment between dots)",
            "authserver-config.yaml:12:59: \
             upstreams[0].oauth2_config.identity_from_token.email_path: \".email\" is not a \
             dotted path (an empty segment between dots)",
        ]
    );
}
