//! The upstream identity providers and the token vault against a real OIDC provider
//! (`oauth2-mock-server` behind `tests/support/upstream-idp.mjs`): login, transparent refresh
//! across short token lifetimes, single flight, rotation without replay, and the IdP's faults.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::poll;
use common::upstream_idp::UpstreamIdp;
use serde_json::json;
use sha2::{Digest, Sha256};
use vmcp::auth::identity::Secret;
use vmcp::auth::upstream::{
    AuthorizationRequest, Federation, FederationError, ProviderKind, ProviderSettings, TokenError,
    TokenSet, UpstreamIdentity, UpstreamTokens, Upstreams, UserInfo, Vault,
};

const UPSTREAM: &str = "corp";
const CLIENT_ID: &str = "vmcp-upstream";
const REDIRECT: &str = "http://127.0.0.1:9/oauth/callback";
const WAIT: Duration = Duration::from_secs(20);

fn oidc(idp: &UpstreamIdp, secret: Option<&str>) -> ProviderSettings {
    ProviderSettings {
        name: UPSTREAM.into(),
        kind: ProviderKind::Oidc {
            issuer_url: idp.url.clone(),
            subject_claim: None,
            userinfo: None,
        },
        client_id: CLIENT_ID.into(),
        client_secret: secret.map(Secret::new),
        redirect_uri: Some(REDIRECT.into()),
        scopes: vec![],
        additional_authorization_params: Default::default(),
        client_auth: None,
        insecure_allow_http: false,
    }
}

struct Setup {
    idp: UpstreamIdp,
    upstreams: Upstreams,
    vault: Vault,
}

async fn setup_with(config: serde_json::Value, timeout: Duration) -> Setup {
    let idp = UpstreamIdp::launch().await;
    idp.config(config).await;
    let upstreams = Upstreams::new(vec![oidc(&idp, Some("s3cret"))], reqwest::Client::new())
        .unwrap()
        .with_timeout(timeout);
    let vault = Vault::in_memory(Arc::new(upstreams.clone())).unwrap();
    Setup { idp, upstreams, vault }
}

async fn setup(config: serde_json::Value) -> Setup {
    setup_with(config, Duration::from_secs(10)).await
}

/// The browser's part: follow the authorization URL to the IdP (which approves at once) and
/// read the code from its redirect.
async fn authorize(url: &str, user: &str, state: &str) -> String {
    let browser =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let resp = browser.get(format!("{url}&login_hint={user}")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 302, "authorization endpoint answered {}", resp.status());
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(REDIRECT), "{location}");
    let back = reqwest::Url::parse(&location).unwrap();
    let q = |k: &str| back.query_pairs().find(|(n, _)| n == k).map(|(_, v)| v.into_owned());
    assert_eq!(q("state").as_deref(), Some(state));
    q("code").expect("a code")
}

fn pkce() -> (String, String) {
    let verifier: String = (0..64).map(|_| format!("{:x}", rand::random::<u8>() & 0xf)).collect();
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// A full login of `user` at `federation`'s upstream `name`: authorization URL, code exchange.
async fn login_at(
    federation: &dyn Federation,
    name: &str,
    user: &str,
) -> Result<(TokenSet, UpstreamIdentity), FederationError> {
    let (verifier, challenge) = pkce();
    let state = format!("state-{user}");
    let nonce = format!("nonce-{user}");
    let req = AuthorizationRequest {
        redirect_uri: REDIRECT,
        state: &state,
        code_challenge: &challenge,
        nonce: &nonce,
    };
    let url = federation.authorization_url(name, req).await?;
    let code = authorize(&url, user, &state).await;
    federation.exchange_code(name, &code, &verifier, REDIRECT, &nonce).await
}

/// Logs `user` in and stores the tokens; returns the first access token.
async fn login(s: &Setup, user: &str) -> String {
    let (tokens, identity) = login_at(&s.upstreams, UPSTREAM, user).await.unwrap();
    assert_eq!(identity.subject, user);
    let first = tokens.access_token.expose().to_string();
    s.vault.store(user, UPSTREAM, tokens).await.unwrap();
    first
}

/// Waits until the IdP no longer accepts `token`.
async fn until_expired(idp: &UpstreamIdp, token: &str) {
    poll(WAIT, "the access token to expire", || async {
        (!idp.check(token).await.0).then_some(())
    })
    .await;
}

/// The vault's current token for `user`, which the IdP must accept as `user`'s.
async fn fresh(s: &Setup, user: &str) -> String {
    let t = s.vault.access_token(user, UPSTREAM).await.unwrap();
    assert_eq!(s.idp.check(t.expose()).await, (true, Some(user.to_string())), "token handed out");
    t.expose().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_then_transparent_refresh_across_lifetimes() {
    let s = setup(json!({"accessTtl": 2, "rotate": true})).await;
    let (tokens, identity) = login_at(&s.upstreams, UPSTREAM, "alice").await.unwrap();
    assert_eq!(s.upstreams.upstreams(), vec![UPSTREAM.to_string()]);
    // The ID token carries no name/email: the discovered userinfo endpoint fills them in.
    assert_eq!(identity.name.as_deref(), Some("User alice"));
    assert_eq!(identity.email.as_deref(), Some("alice@example.com"));
    assert!(tokens.refresh_token.is_some() && tokens.id_token.is_some());
    assert!(!format!("{tokens:?}").contains(tokens.access_token.expose()));
    s.vault.store("alice", UPSTREAM, tokens).await.unwrap();
    assert!(s.vault.holds("alice", UPSTREAM).await);
    assert_eq!(s.idp.stats().await.client_auth.as_deref(), Some("basic"));

    let mut seen = HashSet::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.idp.stats().await.refresh_grants < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no three refreshes within {WAIT:?}");
        seen.insert(fresh(&s, "alice").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen.insert(fresh(&s, "alice").await);
    let idp = s.idp.stats().await;
    assert!(seen.len() >= 4, "tokens seen: {}", seen.len());
    assert_eq!(s.vault.stats().refreshed, idp.refresh_grants);
    assert_eq!((idp.replays, idp.rejected), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_after_expiry_makes_one_refresh() {
    let s = setup(json!({"accessTtl": 2, "rotate": true})).await;
    let first = login(&s, "alice").await;
    until_expired(&s.idp, &first).await;
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let v = s.vault.clone();
            tokio::spawn(async move { v.access_token("alice", UPSTREAM).await })
        })
        .collect();
    let mut got = HashSet::new();
    for c in calls {
        got.insert(c.await.unwrap().unwrap().expose().to_string());
    }
    assert_eq!(got.len(), 1, "every caller got the one refreshed token");
    let token = got.into_iter().next().unwrap();
    assert_eq!(s.idp.check(&token).await, (true, Some("alice".into())));
    assert_eq!(s.idp.stats().await.refresh_grants, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_refresh_tokens_are_never_replayed_and_users_never_mixed() {
    let s = Arc::new(setup(json!({"accessTtl": 1, "rotate": true})).await);
    login(&s, "alice").await;
    login(&s, "bob").await;
    let workers: Vec<_> = ["alice", "bob", "alice", "bob", "alice", "bob"]
        .into_iter()
        .map(|user| {
            let s = s.clone();
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
                while s.idp.stats().await.refresh_grants < 24 {
                    assert!(tokio::time::Instant::now() < deadline, "refreshes too slow");
                    fresh(&s, user).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let idp = s.idp.stats().await;
    assert!(idp.refresh_grants >= 24);
    assert_eq!((idp.replays, idp.rejected), (0, 0), "a refresh token was presented twice");
    let v = s.vault.stats();
    assert_eq!((v.dead_grants, v.lost_responses, v.unavailable), (0, 0, 0));
    assert_eq!(v.refreshed, idp.refresh_grants);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_down_then_back() {
    let s = setup(json!({"accessTtl": 2, "rotate": true})).await;
    let first = login(&s, "alice").await;
    s.idp.down().await;
    until_expired(&s.idp, &first).await;
    let e = s.vault.access_token("alice", UPSTREAM).await.unwrap_err();
    assert!(matches!(e, TokenError::Unavailable { .. }), "{e:?}");
    assert!(s.vault.holds("alice", UPSTREAM).await, "the grant is kept");
    let v = s.vault.stats();
    assert_eq!((v.transient_failures, v.unavailable), (3, 1));
    s.idp.up().await;
    fresh(&s, "alice").await;
    let idp = s.idp.stats().await;
    assert_eq!((idp.refresh_grants, idp.replays, idp.rejected), (1, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_with_the_same_refresh_token() {
    let s = setup(json!({"accessTtl": 2, "rotate": true})).await;
    let first = login(&s, "alice").await;
    s.idp.fault("503", 2).await;
    until_expired(&s.idp, &first).await;
    let second = fresh(&s, "alice").await;
    assert_eq!(s.idp.stats().await.refresh_grants, 3, "two 503s, then success");

    s.idp.fault("503", 3).await;
    until_expired(&s.idp, &second).await;
    let e = s.vault.access_token("alice", UPSTREAM).await.unwrap_err();
    assert!(matches!(e, TokenError::Unavailable { .. }), "{e:?}");
    fresh(&s, "alice").await;
    let idp = s.idp.stats().await;
    assert_eq!((idp.refresh_grants, idp.replays, idp.rejected), (7, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_grant_requires_a_new_login() {
    let s = setup(json!({"accessTtl": 2, "rotate": true})).await;
    let first = login(&s, "alice").await;
    s.idp.fault("invalid_grant", 1).await;
    until_expired(&s.idp, &first).await;
    let e = s.vault.access_token("alice", UPSTREAM).await.unwrap_err();
    assert!(matches!(e, TokenError::Reauthenticate { .. }), "{e:?}");
    assert!(!s.vault.holds("alice", UPSTREAM).await);
    assert!(matches!(
        s.vault.access_token("alice", UPSTREAM).await,
        Err(TokenError::Reauthenticate { .. })
    ));
    assert_eq!(s.idp.stats().await.refresh_grants, 1, "nothing sent for a dropped grant");

    // Revoked at the IdP (the user signed out everywhere).
    let again = login(&s, "alice").await;
    assert_eq!(s.idp.revoke("alice").await, 1);
    until_expired(&s.idp, &again).await;
    assert!(matches!(
        s.vault.access_token("alice", UPSTREAM).await,
        Err(TokenError::Reauthenticate { .. })
    ));
    assert_eq!(s.vault.stats().dead_grants, 2);
    // Logout.
    login(&s, "alice").await;
    s.vault.forget("alice").await;
    assert!(!s.vault.holds("alice", UPSTREAM).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_never_replayed() {
    let s =
        setup_with(json!({"accessTtl": 2, "rotate": true, "hangMs": 4000}), Duration::from_secs(1))
            .await;
    for (fault, user) in [("drop", "alice"), ("hang", "bob")] {
        let first = login(&s, user).await;
        s.idp.fault(fault, 1).await;
        until_expired(&s.idp, &first).await;
        let before = s.idp.stats().await.refresh_grants;
        let e = s.vault.access_token(user, UPSTREAM).await.unwrap_err();
        assert!(matches!(e, TokenError::Reauthenticate { .. }), "{fault}: {e:?}");
        assert!(matches!(
            s.vault.access_token(user, UPSTREAM).await,
            Err(TokenError::Reauthenticate { .. })
        ));
        let idp = s.idp.stats().await;
        assert_eq!(
            idp.refresh_grants,
            before + 1,
            "{fault}: the consumed token was presented again"
        );
        assert_eq!((idp.replays, idp.rejected), (0, 0));
    }
    assert_eq!(s.vault.stats().lost_responses, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_checks_nonce_and_pkce() {
    let s = setup(json!({})).await;
    let (verifier, challenge) = pkce();
    let req = |nonce| AuthorizationRequest {
        redirect_uri: REDIRECT,
        state: "st",
        code_challenge: &challenge,
        nonce,
    };
    let url = s.upstreams.authorization_url(UPSTREAM, req("n1")).await.unwrap();
    for (k, v) in [
        ("response_type", "code"),
        ("client_id", CLIENT_ID),
        ("code_challenge_method", "S256"),
        ("nonce", "n1"),
        ("scope", "openid offline_access"),
    ] {
        let u = reqwest::Url::parse(&url).unwrap();
        assert!(u.query_pairs().any(|(a, b)| a == k && b == v), "{k}={v} missing from {url}");
    }
    let code = authorize(&url, "alice", "st").await;
    let e =
        s.upstreams.exchange_code(UPSTREAM, &code, &verifier, REDIRECT, "n2").await.unwrap_err();
    assert!(
        matches!(&e, FederationError::Refused { reason, .. } if reason.contains("nonce")),
        "{e:?}"
    );

    let url = s.upstreams.authorization_url(UPSTREAM, req("n3")).await.unwrap();
    let code = authorize(&url, "alice", "st").await;
    let (wrong, _) = pkce();
    let e = s.upstreams.exchange_code(UPSTREAM, &code, &wrong, REDIRECT, "n3").await.unwrap_err();
    assert!(matches!(e, FederationError::Refused { .. }), "{e:?}");
    assert!(matches!(
        s.upstreams.authorization_url("nope", req("n")).await,
        Err(FederationError::UnknownUpstream(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_authentication_follows_the_metadata() {
    let idp = UpstreamIdp::launch().await;
    idp.config(json!({"authMethods": ["client_secret_post"]})).await;
    let http = reqwest::Client::new();
    let post = Upstreams::new(vec![oidc(&idp, Some("s3cret"))], http.clone()).unwrap();
    login_at(&post, UPSTREAM, "alice").await.unwrap();
    assert_eq!(idp.stats().await.client_auth.as_deref(), Some("post"));
    let public = Upstreams::new(vec![oidc(&idp, None)], http).unwrap();
    login_at(&public, UPSTREAM, "alice").await.unwrap();
    assert_eq!(idp.stats().await.client_auth.as_deref(), Some("none"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_upstream_with_userinfo() {
    let idp = UpstreamIdp::launch().await;
    idp.config(json!({"accessTtl": 2, "rotate": false})).await;
    let mut settings = oidc(&idp, Some("s3cret"));
    settings.name = "plain".into();
    settings.scopes = vec!["repo".into()];
    settings.kind = ProviderKind::OAuth2 {
        authorization_endpoint: format!("{}/authorize", idp.url),
        token_endpoint: format!("{}/token", idp.url),
        userinfo: Some(UserInfo {
            endpoint_url: format!("{}/userinfo", idp.url),
            http_method: Default::default(),
            additional_headers: [("X-Test".to_string(), "1".to_string())].into(),
            field_mapping: Default::default(),
        }),
        token_response_mapping: None,
        identity_from_token: None,
    };
    let upstreams = Upstreams::new(vec![settings], reqwest::Client::new()).unwrap();
    let (tokens, identity) = login_at(&upstreams, "plain", "carol").await.unwrap();
    assert_eq!(identity.subject, "carol");
    assert_eq!(identity.email.as_deref(), Some("carol@example.com"));
    let first = tokens.access_token.expose().to_string();
    let vault = Vault::in_memory(Arc::new(upstreams)).unwrap();
    vault.store("carol", "plain", tokens).await.unwrap();
    until_expired(&idp, &first).await;
    // Without rotation the IdP sends no new refresh token: the old one is kept and works again.
    for _ in 0..2 {
        let t = vault.access_token("carol", "plain").await.unwrap();
        assert_eq!(idp.check(t.expose()).await, (true, Some("carol".into())));
        until_expired(&idp, t.expose()).await;
    }
    let t = vault.access_token("carol", "plain").await.unwrap();
    assert!(idp.check(t.expose()).await.0);
    assert_eq!(idp.stats().await.refresh_grants, 3);
}
