//! The authorization server end to end over HTTP: registration, authorization with PKCE through
//! the stand-in upstream IdP(s), codes, tokens, refresh rotation and the replay defences, and
//! vmcp's verifier on the tokens it issued.

mod authserver_support;

use authserver_support::*;
use serde_json::Value;
use vmcp::auth::server::VerifyError;

const CB: &str = "http://127.0.0.1:9/callback";

fn code_form<'a>(
    client: &'a str,
    code: &'a str,
    verifier: &'a str,
    redirect_uri: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "authorization_code"),
        ("client_id", client),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ]
}

#[tokio::test]
async fn login_token_refresh_and_refresh_replay() {
    let h = Harness::start(&["corp"], |_| {}).await;
    let client = h.register(&[CB]).await;
    let (verifier, challenge) = pkce();
    let q = h.authorize(&client, CB, &challenge, &[]).await;
    assert_eq!(q["state"], "client-state");
    assert_eq!(q["iss"], h.issuer, "RFC 9207 iss");
    assert_eq!(h.fed.visits(), ["corp"]);

    let (status, body, headers) = h.token(&code_form(&client, &q["code"], &verifier, CB)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "openid profile email offline_access");
    let access = body["access_token"].as_str().unwrap();
    let refresh = body["refresh_token"].as_str().unwrap().to_string();

    let t = h.server.verify_access_token(access, RESOURCE).unwrap();
    assert_eq!(t.audience, [RESOURCE]);
    assert_eq!(t.client_id.as_deref(), Some(client.as_str()));
    assert_eq!(t.claims["email"], "alice@example.com");
    assert_eq!(t.claims["iss"], Value::String(h.issuer.clone()));
    // The vault got the upstream tokens under the vmcp user id, which is the token's subject.
    assert!(h.vault.tokens.lock().unwrap().contains_key(&(t.subject.clone(), "corp".into())));
    assert_ne!(t.subject, "alice", "sub is vmcp's own id for (upstream, subject), as in ToolHive");

    // Refresh rotates; the access token keeps the user and may narrow the scope.
    let (status, body, _) = h
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client),
            ("refresh_token", &refresh),
            ("scope", "openid"),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "openid");
    let refresh2 = body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh2, refresh);
    let t2 =
        h.server.verify_access_token(body["access_token"].as_str().unwrap(), RESOURCE).unwrap();
    assert_eq!(
        (t2.subject.as_str(), t2.scopes.as_slice()),
        (t.subject.as_str(), &["openid".to_string()][..])
    );

    // Widening is refused, and costs nothing: refresh2 still works afterwards.
    let (status, body, _) = h
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client),
            ("refresh_token", &refresh2),
            ("scope", "openid admin"),
        ])
        .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")));

    // Replaying the first refresh token revokes the family: refresh2 dies with it.
    let replay =
        [("grant_type", "refresh_token"), ("client_id", &client), ("refresh_token", &refresh)];
    let (status, body, _) = h.token(&replay).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    let again =
        [("grant_type", "refresh_token"), ("client_id", &client), ("refresh_token", &refresh2)];
    let (status, body, _) = h.token(&again).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
}

#[tokio::test]
async fn code_replay_revokes_what_it_issued() {
    let h = Harness::start(&["corp"], |_| {}).await;
    let client = h.register(&[CB]).await;
    let (verifier, challenge) = pkce();
    let q = h.authorize(&client, CB, &challenge, &[]).await;
    let form = code_form(&client, &q["code"], &verifier, CB);
    let (status, body, _) = h.token(&form).await;
    assert_eq!(status, 200);
    let refresh = body["refresh_token"].as_str().unwrap().to_string();
    let (status, body, headers) = h.token(&form).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(headers["cache-control"], "no-store");
    let (status, _, _) = h
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client),
            ("refresh_token", &refresh),
        ])
        .await;
    assert_eq!(status, 400, "the refresh token from the replayed code is revoked");
}

#[tokio::test]
async fn wrong_verifier_wrong_client_and_wrong_redirect_are_refused() {
    let h = Harness::start(&["corp"], |_| {}).await;
    let client = h.register(&[CB]).await;
    let other = h.register(&[CB]).await;
    for (who, redirect, bad_verifier) in [
        (client.as_str(), CB, true),
        (other.as_str(), CB, false),
        (client.as_str(), "http://127.0.0.1:9/other", false),
    ] {
        let (verifier, challenge) = pkce();
        let q = h.authorize(&client, CB, &challenge, &[]).await;
        let v = if bad_verifier { pkce().0 } else { verifier };
        let (status, body, _) = h.token(&code_form(who, &q["code"], &v, redirect)).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    }
    // Missing verifier: invalid_request.
    let (_, challenge) = pkce();
    let q = h.authorize(&client, CB, &challenge, &[]).await;
    let (status, body, _) = h
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client),
            ("code", &q["code"]),
            ("redirect_uri", CB),
        ])
        .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")));
}

#[tokio::test]
async fn plain_pkce_and_missing_pkce_are_refused_by_redirect() {
    let h = Harness::start(&["corp"], |_| {}).await;
    let client = h.register(&[CB]).await;
    for extra in ["&code_challenge=abc&code_challenge_method=plain", "", "&code_challenge=abc"] {
        let url = format!(
            "{}/oauth/authorize?response_type=code&client_id={client}&redirect_uri={}&state=s1{extra}",
            h.issuer,
            urlencode(CB)
        );
        let r = h.http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 302, "{extra}");
        let q = query_of(&location(&r));
        assert_eq!(q["error"], "invalid_request", "{extra}");
        assert_eq!((q["state"].as_str(), q["iss"].as_str()), ("s1", h.issuer.as_str()));
    }
    assert!(h.fed.visits().is_empty(), "nobody was sent upstream");
}

#[tokio::test]
async fn untrusted_redirect_uris_get_400_never_a_redirect() {
    let h = Harness::start(&["corp"], |_| {}).await;
    let client = h.register(&[CB]).await;
    let (_, challenge) = pkce();
    for (client_id, redirect) in [
        (client.as_str(), "https://evil.example.com/callback"),
        (client.as_str(), "http://127.0.0.1:9/callback/x"),
        ("no-such-client", CB),
    ] {
        let url = format!(
            "{}/oauth/authorize?response_type=code&client_id={client_id}&redirect_uri={}&code_challenge={challenge}&code_challenge_method=S256",
            h.issuer,
            urlencode(redirect)
        );
        let r = h.http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 400, "{redirect}");
        assert!(r.headers().get("location").is_none());
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].is_string());
    }
}

#[tokio::test]
async fn loopback_redirects_match_any_port() {
    let h = Harness::start(&["corp"], |_| {}).await;
    let client = h.register(&["http://127.0.0.1/callback", "http://localhost/cb"]).await;
    for requested in ["http://127.0.0.1:54321/callback", "http://localhost:8123/cb"] {
        let (access, _) = h.login(&client, requested).await;
        h.server.verify_access_token(&access, RESOURCE).unwrap();
    }
}

#[tokio::test]
async fn two_upstreams_then_a_second_login_skips_the_held_one() {
    let h = Harness::start(&["corp", "github"], |_| {}).await;
    let client = h.register(&[CB]).await;
    let (access, _) = h.login(&client, CB).await;
    assert_eq!(h.fed.visits(), ["corp", "github"]);
    let sub = h.server.verify_access_token(&access, RESOURCE).unwrap().subject;
    {
        let vault = h.vault.tokens.lock().unwrap();
        assert!(vault.contains_key(&(sub.clone(), "corp".into())));
        assert!(vault.contains_key(&(sub.clone(), "github".into())));
    }
    // Second login: the first upstream always (it says who the user is), github is held.
    let (access2, _) = h.login(&client, CB).await;
    assert_eq!(h.fed.visits(), ["corp", "github", "corp"]);
    assert_eq!(h.server.verify_access_token(&access2, RESOURCE).unwrap().subject, sub);
}

#[tokio::test]
async fn upstream_refusal_reaches_the_client_and_unknown_state_is_400() {
    let h = Harness::start(&["corp", "github"], |_| {}).await;
    h.fed.state.refuse.lock().unwrap().push("github".into());
    let client = h.register(&[CB]).await;
    let (_, challenge) = pkce();
    let q = h.authorize(&client, CB, &challenge, &[]).await;
    assert_eq!(q["error"], "access_denied");
    assert_eq!((q["state"].as_str(), q["iss"].as_str()), ("client-state", h.issuer.as_str()));
    assert!(!q.contains_key("code"));
    let r = h.http.get(h.url("/oauth/callback?state=nope&code=x")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());
}

#[tokio::test]
async fn resource_becomes_the_audience() {
    const OTHER: &str = "https://other.example.com/mcp";
    let h = Harness::start(&["corp"], |s| s.allowed_audiences.push(OTHER.into())).await;
    let client = h.register(&[CB]).await;
    let (verifier, challenge) = pkce();
    let q = h.authorize(&client, CB, &challenge, &[("resource", OTHER)]).await;
    let mut form = code_form(&client, &q["code"], &verifier, CB);
    form.push(("resource", OTHER));
    let (status, body, _) = h.token(&form).await;
    assert_eq!(status, 200, "{body}");
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(h.server.verify_access_token(access, OTHER).unwrap().audience, [OTHER]);
    assert_eq!(
        h.server.verify_access_token(access, RESOURCE).unwrap_err(),
        VerifyError::WrongAudience
    );

    // With two resources served, one must be named; an unknown one is refused.
    for extra in [vec![], vec![("resource", "https://unknown.example.com/mcp")]] {
        let q = h.authorize(&client, CB, &challenge, &extra).await;
        assert_eq!(q["error"], "invalid_target");
    }
    // The token request may repeat the resource, not change it.
    let (verifier, challenge) = pkce();
    let q = h.authorize(&client, CB, &challenge, &[("resource", OTHER)]).await;
    let mut form = code_form(&client, &q["code"], &verifier, CB);
    form.push(("resource", RESOURCE));
    let (status, body, _) = h.token(&form).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_target")));
}

#[tokio::test]
async fn tokens_of_another_server_or_forged_are_refused() {
    let h = Harness::start(&["corp"], |_| {}).await;
    let other = Harness::start(&["corp"], |_| {}).await;
    let client = h.register(&[CB]).await;
    let (access, _) = h.login(&client, CB).await;
    // Another vmcp with its own (ephemeral) key: unknown key, and another issuer anyway.
    assert!(other.server.verify_access_token(&access, RESOURCE).is_err());
    let mut parts: Vec<String> = access.split('.').map(String::from).collect();
    parts[2] = parts[2].chars().rev().collect();
    assert!(h.server.verify_access_token(&parts.join("."), RESOURCE).is_err());
    assert!(h.server.verify_access_token("garbage", RESOURCE).is_err());
}

pub fn urlencode(s: &str) -> String {
    reqwest::Url::parse_with_params("http://x/", &[("v", s)]).unwrap().query().unwrap()[2..]
        .to_string()
}
