//! Identity end to end: bearer tokens at the front door, sessions bound to the principal, and the
//! invariant at the heart of the product: the credentials on every backend request are those of
//! the client request that caused it, fresh, including on session teardown.
//!
//! Tokens come from an OIDC provider inside the test process (`common::local_idp`), so these tests
//! need nothing installed. One interop test uses a real provider, `oauth2-mock-server`
//! (`common::idp`, Node 22 found by `common::tools`), and fails without it.

mod common;

use std::time::Duration;

use common::idp::Idp;
use common::local_idp::{AUDIENCE, LocalIdp};
use common::*;
use serde_json::{Value, json};

/// A gateway requiring tokens from the issuer at `issuer`, passing each caller's token through to the Legacy HTTP
/// fixture `h`, with a stdio fixture `s` that gets no credentials.
fn gateway(issuer: &str, h: &Fixture, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "name: auth\nincomingAuth:\n  type: oidc\n  oidc:\n    issuer: {}\n    audience: {AUDIENCE}\n\
         outgoingAuth:\n  backends:\n    h: {{ type: passthrough }}\nbackends:\n{}{}{extra}",
        issuer,
        http_backend("h", &h.url),
        stdio_backend("s"),
    ))
}

fn authorization_seen(r: &Reply) -> Option<String> {
    whoami_of(r).get("authorization").and_then(Value::as_str).map(str::to_owned)
}

async fn raw_post(url: &str, bearer: Option<&str>) -> reqwest::Response {
    let mut b = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}));
    if let Some(t) = bearer {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.send().await.expect("POST")
}

#[tokio::test]
async fn tokens_are_required_and_checked() {
    let idp = LocalIdp::start();
    let h = Fixture::http("legacy", "h");
    let gw = gateway(&idp.url, &h, "");

    let resp = raw_post(&gw.url, None).await;
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(challenge.contains("resource_metadata=\""), "{challenge}");
    // The challenge names a metadata document a client can fetch.
    let advertised =
        challenge.split("resource_metadata=\"").nth(1).and_then(|r| r.split('"').next()).unwrap();
    let doc: Value = reqwest::get(advertised).await.unwrap().json().await.unwrap();
    assert_eq!(doc["authorization_servers"], json!([idp.url]), "{advertised}: {doc}");

    // RFC 9728 metadata, plain and path-suffixed.
    for path in
        ["/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"]
    {
        let doc: Value =
            reqwest::get(format!("{}{path}", gw.base)).await.unwrap().json().await.unwrap();
        assert_eq!(doc["authorization_servers"], json!([idp.url]), "{path}: {doc}");
    }

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let bad = [
        ("expired", idp.mint(json!({ "exp": now - 3600, "iat": now - 7200, "nbf": now - 7200 }))),
        ("not yet valid", idp.mint(json!({ "nbf": now + 3600 }))),
        ("wrong audience", idp.mint(json!({ "aud": "someone-else" }))),
        ("wrong issuer", idp.mint(json!({ "iss": "http://127.0.0.1:1" }))),
        ("alg none", idp.unsigned(json!({}))),
        ("forged", idp.forged(json!({}))),
        ("garbage", "not-a-token".to_owned()),
    ];
    for (what, t) in &bad {
        let resp = raw_post(&gw.url, Some(t)).await;
        assert_eq!(resp.status(), 401, "{what}");
        let challenge = resp.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(challenge.contains("error=\"invalid_token\""), "{what}: {challenge}");
    }
    let good = idp.token("alice");
    assert_eq!(raw_post(&gw.url, Some(&good)).await.status(), 200);
    // Nothing above leaked a token into the gateway's log.
    let log = gw.proc.stderr();
    for (_, t) in &bad {
        assert!(!log.contains(t.as_str()), "a token reached the log");
    }
    assert!(!log.contains(&good), "a token reached the log");
}

#[tokio::test]
async fn sessions_belong_to_their_principal() {
    let idp = LocalIdp::start();
    let h = Fixture::http("legacy", "h");
    let gw = gateway(&idp.url, &h, "");
    let mut alice = gw.client();
    alice.bearer = Some(idp.token("alice"));
    alice.legacy_init().await;

    // A refreshed token of the same principal keeps the session.
    alice.bearer = Some(idp.token("alice"));
    let r = alice.tool(false, "s_echo", json!({ "message": "hi" })).await;
    assert_eq!(r.text(), "Echo: hi");

    // Another principal cannot use or end it; the session survives.
    let mut mallory = alice.clone();
    mallory.bearer = Some(idp.token("mallory"));
    let resp = mallory
        .post()
        .json(&json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(mallory.delete_session().await, 403);
    let r = alice.tool(false, "s_echo", json!({ "message": "still mine" })).await;
    assert_eq!(r.text(), "Echo: still mine");
}

/// The regression the product exists for: within one session the client's token changes and each
/// backend request, and the teardown of the backend session, carries the newest token.
#[tokio::test]
async fn each_backend_request_carries_the_callers_current_token() {
    let idp = LocalIdp::start();
    let h = Fixture::http("legacy", "h");
    let gw = gateway(&idp.url, &h, "");
    let mut c = gw.client();
    c.bearer = Some(idp.token("alice"));
    c.legacy_init().await;
    let mut backend_session = None;
    for round in 0..3 {
        let t = idp.token("alice");
        c.bearer = Some(t.clone());
        let r = c.tool(false, "h_whoami", json!({})).await;
        assert_eq!(authorization_seen(&r), Some(format!("Bearer {t}")), "round {round}");
        // Same backend session all along: the token is not a property of the session.
        let s = backend_session_of(&r);
        if round > 0 {
            assert_eq!(s, backend_session, "round {round}");
        }
        backend_session = s;
        // The stdio backend is configured without credentials and gets none.
        let r = c.tool(false, "s_whoami", json!({})).await;
        assert_eq!(whoami_of(&r), json!({}));
    }
    // Teardown: the backend session's DELETE carries the principal's newest token.
    let last = idp.token("alice");
    c.bearer = Some(last.clone());
    assert_eq!(c.delete_session().await, 200);
    let mut log_client = Client::new(&h.url);
    log_client.legacy_init().await;
    let log: Value =
        serde_json::from_str(&log_client.tool(false, "request_log", json!({})).await.text())
            .unwrap();
    let delete = log
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["method"] == "DELETE" && e["session"] == json!(backend_session))
        .unwrap_or_else(|| panic!("no DELETE of {backend_session:?} in {log}"));
    assert_eq!(delete["authorization"], json!(format!("Bearer {last}")));
}

/// Many principals interleaved: nobody ever sees another's credentials.
#[tokio::test]
async fn interleaved_principals_never_see_each_others_credentials() {
    let idp = LocalIdp::start();
    let h = Fixture::http("legacy", "h");
    let gw = gateway(&idp.url, &h, "");
    let mut tasks = Vec::new();
    for p in 0..10 {
        for modern in [false, true] {
            let mut c = gw.client();
            let sub = format!("user-{p}");
            let tokens: Vec<String> = (0..4).map(|_| idp.token(&sub)).collect();
            tasks.push(tokio::spawn(async move {
                if !modern {
                    c.bearer = Some(tokens[0].clone());
                    c.legacy_init().await;
                }
                for t in tokens {
                    c.bearer = Some(t.clone());
                    let r = c.tool(modern, "h_whoami", json!({})).await;
                    assert_eq!(authorization_seen(&r), Some(format!("Bearer {t}")));
                }
            }));
        }
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("in time")
            .expect("no mix-up");
    }
}

/// Headers on `passthroughHeaders` reach HTTP backends (either era) with each request; others do
/// not, and stdio backends get none.
#[tokio::test]
async fn passthrough_headers_reach_http_backends() {
    let h = Fixture::http("legacy", "h");
    let m = Fixture::http("modern", "m");
    let gw = Gateway::start(&format!(
        "name: fwd\npassthroughHeaders: [X-Tenant-Id]\nbackends:\n{}{}{}",
        http_backend("h", &h.url),
        http_backend("m", &m.url),
        stdio_backend("s")
    ));
    let mut c = gw.client();
    c.legacy_init().await;
    for modern in [false, true] {
        for (n, tenant) in [("h", "acme"), ("m", "globex")] {
            let id = c.id();
            let params = json!({ "name": format!("{n}_whoami"), "arguments": {} });
            let req = if modern {
                c.modern_post(id, "tools/call", params)
            } else {
                c.post().json(&json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params }))
            };
            let resp =
                req.header("x-tenant-id", tenant).header("x-other", "nope").send().await.unwrap();
            let r = Events::from_response(resp).await.reply(id, Duration::from_secs(10)).await;
            let seen = whoami_of(&r);
            assert_eq!(seen["x-tenant-id"], tenant, "modern={modern} {n}: {seen}");
            assert!(seen.get("x-other").is_none(), "modern={modern} {n}: {seen}");
        }
    }
    let r = c.tool(false, "s_whoami", json!({})).await;
    assert_eq!(whoami_of(&r), json!({}));
}

type Revoked = std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>;

/// A local RFC 8693 endpoint: exchanges `subject_token` for `exchanged:<subject_token>`, or
/// answers `invalid_grant` for subject tokens in the returned revocation set.
async fn exchange_endpoint() -> (String, tokio::task::JoinHandle<()>, Revoked) {
    use axum::response::IntoResponse;
    async fn token(
        axum::extract::State(revoked): axum::extract::State<Revoked>,
        body: String,
    ) -> axum::response::Response {
        // The form, decoded by the URL parser (a test stub needs nothing more).
        let form: std::collections::HashMap<String, String> =
            reqwest::Url::parse(&format!("http://stub/?{body}"))
                .map(|u| u.query_pairs().into_owned().collect())
                .unwrap_or_default();
        let subject = form.get("subject_token").cloned().unwrap_or_default();
        if revoked.lock().unwrap().contains(&subject)
            || form.get("grant_type").map(String::as_str)
                != Some("urn:ietf:params:oauth:grant-type:token-exchange")
        {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                axum::Json(json!({ "error": "invalid_grant" })),
            )
                .into_response();
        }
        axum::Json(json!({
            "access_token": format!("exchanged:{subject}"),
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "token_type": "Bearer",
            "expires_in": 300,
        }))
        .into_response()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let revoked = Revoked::default();
    let app =
        axum::Router::new().route("/token", axum::routing::post(token)).with_state(revoked.clone());
    (url, tokio::spawn(async move { axum::serve(listener, app).await.unwrap() }), revoked)
}

/// With token exchange, each backend request carries the exchange of that request's token: a new
/// token of the same principal in the same session is exchanged anew.
#[tokio::test]
async fn token_exchange_follows_the_callers_token() {
    let idp = LocalIdp::start();
    let (token_url, _server, revoked) = exchange_endpoint().await;
    let h = Fixture::http("legacy", "h");
    let gw = Gateway::start_env(
        &format!(
            "name: tx\nincomingAuth:\n  type: oidc\n  oidc:\n    issuer: {}\n    audience: {AUDIENCE}\n\
             outgoingAuth:\n  backends:\n    h:\n      type: token_exchange\n      tokenExchange:\n        \
             tokenUrl: {token_url}\n        clientId: vmcp\n        clientSecretEnv: VMCP_TEST_EXCHANGE_SECRET\n        \
             audience: backend-h\nbackends:\n{}",
            idp.url,
            http_backend("h", &h.url),
        ),
        &[("VMCP_TEST_EXCHANGE_SECRET", "exchange-client-secret-value")],
    );
    let mut c = gw.client();
    c.bearer = Some(idp.token("alice"));
    c.legacy_init().await;
    for _ in 0..3 {
        let t = idp.token("alice");
        c.bearer = Some(t.clone());
        let r = c.tool(false, "h_whoami", json!({})).await;
        assert_eq!(authorization_seen(&r), Some(format!("Bearer exchanged:{t}")));
    }
    // The exchange refuses the caller's token (invalid_grant): the client is told to sign in
    // again (401 with a challenge), and its session is unharmed.
    let t = idp.token("alice");
    revoked.lock().unwrap().insert(t.clone());
    c.bearer = Some(t);
    let id = c.id();
    let resp = c
        .post()
        .json(&json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call", "params": { "name": "h_whoami", "arguments": {} } }))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let challenge = resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(status, 401, "{:?}", resp.text().await);
    let challenge = challenge.unwrap_or_default();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    c.bearer = Some(idp.token("alice"));
    let r = c.tool(false, "h_whoami", json!({})).await;
    assert!(authorization_seen(&r).is_some_and(|a| a.starts_with("Bearer exchanged:")));
}

/// Secrets (tokens, client secrets, header values) never reach the log, even at trace level and
/// while things fail.
#[tokio::test]
async fn secrets_never_reach_the_log() {
    let idp = LocalIdp::start();
    let h = Fixture::http("legacy", "h");
    // An exchange endpoint nobody listens on: every exchange fails.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gw = Gateway::start_env(
        &format!(
            "name: secrets\nincomingAuth:\n  type: oidc\n  oidc:\n    issuer: {}\n    audience: {AUDIENCE}\n\
             outgoingAuth:\n  backends:\n    h:\n      type: header_injection\n      headerInjection:\n        \
             headerName: X-Api-Key\n        headerValueEnv: VMCP_TEST_HEADER_SECRET\n    s:\n      \
             type: token_exchange\n      tokenExchange:\n        tokenUrl: http://{dead}/token\n        \
             clientId: vmcp\n        clientSecretEnv: VMCP_TEST_EXCHANGE_SECRET\n\
             backends:\n{}  - name: s\n    transport: streamable-http\n    url: {}\n",
            idp.url,
            http_backend("h", &h.url),
            h.url,
        ),
        &[
            ("VMCP_LOG", "trace"),
            ("VMCP_TEST_HEADER_SECRET", "header-secret-value-123"),
            ("VMCP_TEST_EXCHANGE_SECRET", "exchange-secret-value-456"),
        ],
    );
    let good = idp.token("alice");
    let mut c = gw.client();
    c.bearer = Some(good.clone());
    c.legacy_init().await;
    let r = c.tool(false, "h_whoami", json!({})).await;
    assert_eq!(whoami_of(&r)["x-api-key"], "header-secret-value-123");
    // A failing exchange, a bad token, a forged one.
    let r = c.tool(false, "s_whoami", json!({})).await;
    assert!(r.msg().get("error").is_some(), "{:?}", r.message);
    let forged = idp.forged(json!({}));
    let mut bad = c.clone();
    bad.bearer = Some(forged.clone());
    let resp = bad
        .post()
        .json(&json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let log = gw.proc.stderr();
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "the log is not verbose: {log}");
    for secret in
        [good.as_str(), forged.as_str(), "header-secret-value-123", "exchange-secret-value-456"]
    {
        assert!(!log.contains(secret), "a secret reached the log");
    }
    // Signatures alone must not leak either.
    for t in [&good, &forged] {
        let signature = t.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "a token signature reached the log");
    }
}

/// Required scopes (`requiredScopes`, a vmcp addition): a token without them is refused with 403
/// `insufficient_scope`, naming them. `scopes` is only advertised, in every challenge.
#[tokio::test]
async fn missing_scopes_are_forbidden() {
    let idp = LocalIdp::start();
    let gw = Gateway::start(&format!(
        "name: scoped\nincomingAuth:\n  type: oidc\n  oidc:\n    issuer: {}\n    audience: {AUDIENCE}\n    \
         scopes: [mcp:advertised]\n    requiredScopes: [mcp:tools]\nbackends:\n{}",
        idp.url,
        stdio_backend("s"),
    ));
    let without = idp.mint(json!({ "scope": "openid" }));
    let resp = raw_post(&gw.url, Some(&without)).await;
    assert_eq!(resp.status(), 403);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.contains("error=\"insufficient_scope\""), "{challenge}");
    assert!(challenge.contains("mcp:tools"), "{challenge}");
    let with = idp.mint(json!({ "scope": "openid mcp:tools" }));
    assert_eq!(raw_post(&gw.url, Some(&with)).await.status(), 200);
    let resp = raw_post(&gw.url, None).await;
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.contains("scope=\"mcp:advertised\""), "{challenge}");
}

/// Interop with a real provider, `oauth2-mock-server` (RS256, its own discovery and JWKS): the
/// gateway accepts its tokens and passes the caller's current one on; its attack tokens (another
/// key, `alg: none`, HS256 keyed with the public key) are refused.
#[tokio::test]
async fn a_real_providers_tokens_work_end_to_end() {
    let idp = Idp::launch().await;
    let h = Fixture::http("legacy", "h");
    let gw = gateway(&idp.url, &h, "");
    let mut c = gw.client();
    c.bearer = Some(idp.token(json!({ "claims": { "jti": "first" } })).await);
    c.legacy_init().await;
    let t = idp.token(json!({ "claims": { "jti": "second" } })).await;
    c.bearer = Some(t.clone());
    let r = c.tool(false, "h_whoami", json!({})).await;
    assert_eq!(authorization_seen(&r), Some(format!("Bearer {t}")));
    for (what, body) in [
        ("forged", json!({ "forge": true })),
        ("alg none", json!({ "alg": "none" })),
        ("HS256 keyed with the public key", json!({ "alg": "HS256" })),
    ] {
        let bad = idp.token(body).await;
        assert_eq!(raw_post(&gw.url, Some(&bad)).await.status(), 401, "{what}");
    }
}
