//! The authorization server's other endpoints over HTTP: discovery (root and path issuers),
//! JWKS and key rotation, dynamic registration (rules and rate limit), client ID metadata
//! documents, and token endpoint errors.

mod authserver_support;

use std::time::Duration;

use authserver_support::*;
use axum::routing::get;
use serde_json::{Value, json};
use vmcp::auth::identity::Secret;
use vmcp::auth::server::pem::to_pem;

const CB: &str = "http://127.0.0.1:9/callback";

fn pem_es256() -> Secret {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .unwrap();
    Secret::new(to_pem("PRIVATE KEY", der.as_ref()))
}

fn pem_rsa() -> Secret {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    let der = KeyPair::generate(KeySize::Rsa2048).unwrap().as_der().unwrap();
    Secret::new(to_pem("PRIVATE KEY", der.as_ref()))
}

async fn get_json(h: &Harness, url: &str) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = h.http.get(url).send().await.unwrap();
    let (s, hd) = (r.status().as_u16(), r.headers().clone());
    (s, r.json().await.unwrap_or(Value::Null), hd)
}

#[tokio::test]
async fn discovery_documents() {
    let h = Harness::start(&["corp"], |s| s.cimd.enabled = true).await;
    let (status, m, headers) =
        get_json(&h, &h.url("/.well-known/oauth-authorization-server")).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("application/json"));
    assert_eq!(m["issuer"], h.issuer);
    for (k, path) in [
        ("authorization_endpoint", "/oauth/authorize"),
        ("token_endpoint", "/oauth/token"),
        ("registration_endpoint", "/oauth/register"),
        ("jwks_uri", "/.well-known/jwks.json"),
    ] {
        assert_eq!(m[k], h.url(path), "{k}");
    }
    assert_eq!(m["response_types_supported"], json!(["code"]));
    assert_eq!(m["grant_types_supported"], json!(["authorization_code", "refresh_token"]));
    assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(m["token_endpoint_auth_methods_supported"], json!(["none"]));
    assert_eq!(m["client_id_metadata_document_supported"], true);
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);
    let (status, o, _) = get_json(&h, &h.url("/.well-known/openid-configuration")).await;
    assert_eq!(status, 200);
    assert_eq!(o["issuer"], h.issuer);
    assert_eq!(o["id_token_signing_alg_values_supported"], json!(["ES256"]));
}

#[tokio::test]
async fn an_issuer_with_a_path_has_path_inserted_metadata_and_endpoints_under_it() {
    let h = Harness::start_at("/as", &["corp"], |_| {}).await;
    let origin = h.issuer.trim_end_matches("/as").to_string();
    for url in [
        format!("{origin}/.well-known/oauth-authorization-server/as"),
        format!("{origin}/.well-known/openid-configuration/as"),
        format!("{origin}/as/.well-known/openid-configuration"),
    ] {
        let (status, m, _) = get_json(&h, &url).await;
        assert_eq!((status, m["issuer"].as_str()), (200, Some(h.issuer.as_str())), "{url}");
        assert_eq!(m["token_endpoint"], format!("{}/oauth/token", h.issuer));
    }
    // The whole flow works under the path (callback `{issuer}/oauth/callback`).
    let client = h.register(&[CB]).await;
    let (access, _) = h.login(&client, CB).await;
    h.server.verify_access_token(&access, RESOURCE).unwrap();
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid_and_jwks_lists_both() {
    let (old, new) = (pem_rsa(), pem_es256());
    let fed = TestFederation::start(&["corp"]).await;
    let before = Harness::start_with("", fed.clone(), |s| s.signing_key = Some(old.clone())).await;
    let client = before.register(&[CB]).await;
    let (old_token, _) = before.login(&client, CB).await;

    // The same issuer restarted with a new current key and the old one as fallback.
    let issuer = before.issuer.clone();
    let after = Harness::start_with("", fed, |s| {
        // Its own callback (the issuer is `before`'s, but this test runs both side by side).
        s.callback_url = Some(format!("{}/oauth/callback", s.issuer));
        s.issuer = issuer.clone();
        s.signing_key = Some(new.clone());
        s.fallback_signing_keys = vec![old.clone()];
    })
    .await;
    let t = after.server.verify_access_token(&old_token, RESOURCE).unwrap();
    assert_eq!(t.client_id.as_deref(), Some(client.as_str()));

    let old_kid = jsonwebtoken::decode_header(&old_token).unwrap().kid.unwrap();
    let (_, served, headers) = get_json(&after, &after.url("/.well-known/jwks.json")).await;
    let keys = served["keys"].as_array().unwrap();
    let kids: Vec<&str> = keys.iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids.len(), 2, "{served}");
    assert_eq!(kids[1], old_kid, "the fallback is published after the current key");
    assert_eq!((keys[0]["kty"].as_str(), keys[1]["kty"].as_str()), (Some("EC"), Some("RSA")));
    assert!(keys.iter().all(|k| k.get("d").is_none()), "no private part");
    assert_eq!(after.server.jwks().keys.len(), 2);
    // New tokens are signed with the new key, and the old server does not know it.
    let (new_token, _) = after.login(&client_of(&after).await, CB).await;
    let new_kid = jsonwebtoken::decode_header(&new_token).unwrap().kid.unwrap();
    assert_eq!(new_kid, kids[0]);
    assert!(before.server.verify_access_token(&new_token, RESOURCE).is_err());
    assert!(headers["cache-control"].to_str().unwrap().contains("max-age"));
}

#[tokio::test]
async fn registration_rules() {
    let h = Harness::start(&["corp"], |s| s.bounds.registration_burst = 100).await;
    let post = |body: Value| {
        let h = &h;
        async move {
            let r = h.http.post(h.url("/oauth/register")).json(&body).send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap())
        }
    };
    let (status, ok) = post(json!({
        "redirect_uris": ["https://app.example.com/cb", "com.example.app:/oauth", "http://[::1]/cb"],
        "scope": "openid offline_access",
        "client_name": "App",
    }))
    .await;
    assert_eq!(status, 201, "{ok}");
    assert_eq!(ok["token_endpoint_auth_method"], "none");
    assert_eq!(ok["scope"], "openid offline_access");
    assert_eq!(ok["grant_types"], json!(["authorization_code", "refresh_token"]));
    assert!(ok.get("client_secret").is_none());
    // Extra grant types are dropped (what the Python SDK may ask for), nulls are absent.
    let (status, ok) = post(json!({
        "redirect_uris": [CB],
        "grant_types": ["authorization_code", "urn:ietf:params:oauth:grant-type:jwt-bearer"],
        "token_endpoint_auth_method": null,
        "scope": null,
        "application_type": "native",
    }))
    .await;
    assert_eq!(status, 201, "{ok}");
    assert_eq!(ok["grant_types"], json!(["authorization_code"]));
    for (body, error) in [
        (json!({"redirect_uris": []}), "invalid_redirect_uri"),
        (json!({"redirect_uris": ["http://app.example.com/cb"]}), "invalid_redirect_uri"),
        (json!({"redirect_uris": ["javascript:alert(1)"]}), "invalid_redirect_uri"),
        (
            json!({"redirect_uris": [CB], "token_endpoint_auth_method": "client_secret_basic"}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": [CB], "grant_types": ["client_credentials"]}),
            "invalid_client_metadata",
        ),
        (json!({"redirect_uris": [CB], "scope": "admin"}), "invalid_client_metadata"),
        (json!({"redirect_uris": [CB], "client_name": "x".repeat(257)}), "invalid_client_metadata"),
        (
            json!({"redirect_uris": (0..11).map(|i| format!("http://127.0.0.1/{i}")).collect::<Vec<_>>()}),
            "invalid_redirect_uri",
        ),
    ] {
        let (status, e) = post(body.clone()).await;
        assert_eq!((status, e["error"].as_str()), (400, Some(error)), "{body}");
    }
    let r = h.http.post(h.url("/oauth/register")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 400, "no JSON content type");
    let big = json!({"redirect_uris": [CB], "client_name": "x".repeat(70_000)});
    let r = h.http.post(h.url("/oauth/register")).json(&big).send().await.unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn registration_is_rate_limited_per_ip() {
    let h = Harness::start(&["corp"], |s| {
        s.bounds.registration_burst = 2;
        s.bounds.registration_refill_interval = Duration::from_secs(3600);
    })
    .await;
    h.register(&[CB]).await;
    h.register(&[CB]).await;
    let r = h
        .http
        .post(h.url("/oauth/register"))
        .json(&json!({"redirect_uris": [CB]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
}

#[tokio::test]
async fn token_endpoint_errors() {
    let h = Harness::start(&["corp"], |_| {}).await;
    let client = h.register(&[CB]).await;
    for (form, status, error) in [
        (
            vec![("grant_type", "password"), ("client_id", client.as_str())],
            400,
            "unsupported_grant_type",
        ),
        (
            vec![("grant_type", "authorization_code"), ("client_id", "nobody")],
            401,
            "invalid_client",
        ),
        (vec![("grant_type", "authorization_code")], 401, "invalid_client"),
        (
            vec![
                ("grant_type", "authorization_code"),
                ("client_id", client.as_str()),
                ("client_secret", "s"),
            ],
            401,
            "invalid_client",
        ),
        (
            vec![
                ("grant_type", "authorization_code"),
                ("client_id", client.as_str()),
                ("code", "nope"),
                ("code_verifier", "x"),
            ],
            400,
            "invalid_grant",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("client_id", client.as_str()),
                ("refresh_token", "nope"),
            ],
            400,
            "invalid_grant",
        ),
        (vec![("client_id", client.as_str())], 400, "invalid_request"),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("grant_type", "refresh_token"),
                ("client_id", client.as_str()),
            ],
            400,
            "invalid_request",
        ),
    ] {
        let (s, body, headers) = h.token(&form).await;
        assert_eq!((s, body["error"].as_str()), (status, Some(error)), "{form:?}");
        assert_eq!(headers["cache-control"], "no-store");
    }
    let r =
        h.http.post(h.url("/oauth/token")).json(&json!({"grant_type": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // HTTP Basic with a public client's id and an empty password is fine (then: bad code).
    let r = h
        .http
        .post(h.url("/oauth/token"))
        .basic_auth(&client, Some(""))
        .form(&[("grant_type", "authorization_code"), ("code", "nope"), ("code_verifier", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn client_id_metadata_documents() {
    // The client's document, served on loopback (http is allowed there, as in ToolHive).
    let (l, port) = listener().await;
    let doc_url = format!("http://127.0.0.1:{port}/client.json");
    let liar_url = format!("http://127.0.0.1:{port}/liar.json");
    let doc = doc_url.clone();
    let router = axum::Router::new()
        .route(
            "/client.json",
            get(move || {
                let doc = doc.clone();
                async move {
                    axum::Json(json!({
                        "client_id": doc,
                        "client_name": "CIMD app",
                        "redirect_uris": ["http://127.0.0.1/callback"],
                        "scope": "openid offline_access",
                    }))
                }
            }),
        )
        .route(
            "/liar.json",
            get(move || async move {
                axum::Json(
                    json!({"client_id": "https://someone.else/c.json", "redirect_uris": [CB]}),
                )
            }),
        );
    serve_on(l, router).await;

    let h = Harness::start(&["corp"], |s| s.cimd.enabled = true).await;
    let (access, refresh) = h.login(&doc_url, "http://127.0.0.1:4444/callback").await;
    let t = h.server.verify_access_token(&access, RESOURCE).unwrap();
    assert_eq!(t.client_id.as_deref(), Some(doc_url.as_str()));
    assert_eq!(t.scopes, ["openid", "offline_access"]);
    assert!(refresh.is_some());

    let (_, challenge) = pkce();
    for (client_id, redirect) in
        [(liar_url.as_str(), CB), (doc_url.as_str(), "http://127.0.0.1:9/elsewhere")]
    {
        let url = format!(
            "{}/oauth/authorize?response_type=code&client_id={}&redirect_uri={}&code_challenge={challenge}&code_challenge_method=S256",
            h.issuer,
            enc(client_id),
            enc(redirect),
        );
        let r = h.http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 400, "{client_id} {redirect}");
    }

    // Without CIMD enabled, a URL client id is just an unknown client.
    let off = Harness::start(&["corp"], |_| {}).await;
    let url = format!(
        "{}/oauth/authorize?response_type=code&client_id={}&redirect_uri={}&code_challenge={challenge}&code_challenge_method=S256",
        off.issuer,
        enc(&doc_url),
        enc("http://127.0.0.1/callback"),
    );
    assert_eq!(off.http.get(&url).send().await.unwrap().status(), 400);
}

#[tokio::test]
async fn configured_clients_work_without_registration() {
    let h = Harness::start(&["corp"], |s| {
        s.clients.push(vmcp::auth::server::StaticClient {
            client_id: "cli".into(),
            redirect_uris: vec!["http://localhost/cb".into()],
            scopes: vec!["openid".into()],
            client_name: Some("CLI".into()),
        })
    })
    .await;
    let (access, refresh) = h.login("cli", "http://localhost:7000/cb").await;
    assert_eq!(h.server.verify_access_token(&access, RESOURCE).unwrap().scopes, ["openid"]);
    assert!(refresh.is_none(), "no offline_access granted, no refresh token (as ToolHive)");
}

async fn client_of(h: &Harness) -> String {
    h.register(&[CB]).await
}

fn enc(s: &str) -> String {
    reqwest::Url::parse_with_params("http://x/", &[("v", s)]).unwrap().query().unwrap()[2..]
        .to_string()
}

#[tokio::test]
async fn cors_for_script_endpoints_and_body_limits() {
    let h = Harness::start(&["corp"], |_| {}).await;
    let pre = h
        .http
        .request(reqwest::Method::OPTIONS, h.url("/oauth/token"))
        .header("origin", "https://inspector.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert_eq!(pre.headers()["access-control-allow-origin"], "*");
    assert!(
        pre.headers()["access-control-allow-headers"].to_str().unwrap().contains("Authorization")
    );
    let meta = h.http.get(h.url("/.well-known/oauth-authorization-server")).send().await.unwrap();
    assert_eq!(meta.headers()["access-control-allow-origin"], "*");
    let page = h.http.get(h.url("/oauth/authorize")).send().await.unwrap();
    assert!(page.headers().get("access-control-allow-origin").is_none());
    // Every POST body is limited (64 KiB by default).
    let big = format!("grant_type=refresh_token&refresh_token={}", "x".repeat(70_000));
    let r = h
        .http
        .post(h.url("/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn full_tables_fail_only_the_request_that_hit_them() {
    let h = Harness::start(&["corp"], |s| {
        s.bounds.max_clients = 1;
        s.bounds.max_pending_authorizations = 1;
    })
    .await;
    let client = h.register(&[CB]).await;
    // The only registration is younger than min_client_age: no room, 503 with Retry-After.
    let r = h
        .http
        .post(h.url("/oauth/register"))
        .json(&json!({"redirect_uris": [CB]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "3600");
    // One login may be pending; a second gets temporarily_unavailable at its redirect URI.
    let (_, challenge) = pkce();
    let start = format!(
        "{}/oauth/authorize?response_type=code&client_id={client}&redirect_uri={}&code_challenge={challenge}&code_challenge_method=S256&state=s",
        h.issuer,
        enc(CB)
    );
    let first = h.http.get(&start).send().await.unwrap();
    assert!(location(&first).starts_with(&h.fed.base), "sent upstream");
    let second = h.http.get(&start).send().await.unwrap();
    let q = query_of(&location(&second));
    assert_eq!((q["error"].as_str(), q["state"].as_str()), ("temporarily_unavailable", "s"));
    // The first login still completes.
    let (resp, _) = h.follow(&location(&first), CB).await;
    assert!(query_of(&location(&resp)).contains_key("code"));
}
