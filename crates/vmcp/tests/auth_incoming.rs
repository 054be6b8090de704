//! Incoming authentication against a real OIDC provider: `oauth2-mock-server` behind
//! `tests/support/oidc-mock.mjs`, run with Node 22.
//!
//! Node and the package are found by `common::tools` (`VMCP_NODE`, or `<repo>/.tools` as
//! `scripts/install-test-tools.sh` fills it); without them the tests fail, naming what is missing.

use std::sync::{Arc, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod common;

use serde_json::{Value, json};
use vmcp::auth::incoming::{
    AuthFailure, OidcAuthenticator, protected_resource_metadata, www_authenticate,
    www_authenticate_with_scopes,
};
use vmcp::config::auth::OidcConfig;

const AUDIENCE: &str = "vmcp-test";
const SECRET_ENV: &str = "VMCP_TEST_AUTH_INCOMING_CLIENT_SECRET";

use common::idp::{CLIENT_ID, CLIENT_SECRET, Idp};

/// Authenticator settings for this IdP.
trait IdpConfig {
    fn config(&self, extra: Value) -> OidcConfig;
    fn authenticator(&self, extra: Value) -> OidcAuthenticator;
}

impl IdpConfig for Idp {
    fn config(&self, extra: Value) -> OidcConfig {
        let mut cfg = json!({"issuer": self.url, "audience": AUDIENCE});
        for (k, v) in extra.as_object().unwrap() {
            cfg[k] = v.clone();
        }
        serde_json::from_value(cfg).unwrap()
    }

    fn authenticator(&self, extra: Value) -> OidcAuthenticator {
        OidcAuthenticator::new(&self.config(extra), reqwest::Client::new()).unwrap()
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Asserts the failure is `InvalidToken` mentioning `needle`, and leaks nothing.
fn assert_invalid(
    result: Result<Arc<vmcp::auth::Identity>, AuthFailure>,
    needle: &str,
    token: &str,
) {
    match result {
        Err(f @ AuthFailure::InvalidToken(_)) => {
            assert_no_leak(&f, token);
            let AuthFailure::InvalidToken(m) = &f else { unreachable!() };
            assert!(m.contains(needle), "expected {needle:?} in {m:?}");
        }
        other => panic!("expected InvalidToken({needle}), got {other:?}"),
    }
}

fn assert_no_leak(f: &AuthFailure, token: &str) {
    let texts = [
        format!("{f}"),
        format!("{f:?}"),
        www_authenticate(f, "https://gw.example/.well-known/oauth-protected-resource"),
    ];
    for t in texts {
        assert!(!t.contains(token), "token leaked: {t}");
        // Not even the signature segment.
        if let Some(sig) = token.rsplit('.').next().filter(|s| s.len() > 8) {
            assert!(!t.contains(sig), "signature leaked: {t}");
        }
        assert!(!t.contains(CLIENT_SECRET), "secret leaked: {t}");
    }
}

fn set_secret_env() {
    static ONCE: Once = Once::new();
    // SAFETY: set once, before any authenticator of this process reads it, under `Once`; the
    // variable is unique to this test binary and nothing else reads the environment
    // concurrently at that point except other tests' `Once`-guarded callers.
    ONCE.call_once(|| unsafe { std::env::set_var(SECRET_ENV, CLIENT_SECRET) });
}

#[tokio::test]
async fn valid_token_yields_identity() {
    let idp = Idp::launch().await;
    let auth = idp.authenticator(json!({}));
    let token = idp
        .token(json!({"claims": {"sub": "alice", "scope": "mcp:read mcp:write", "tenant": "t1"}, "expiresIn": 600}))
        .await;
    let id = auth.authenticate(Some(&bearer(&token))).await.unwrap();
    assert_eq!(id.issuer, idp.url);
    assert_eq!(id.subject, "alice");
    assert_eq!(id.scopes, vec!["mcp:read", "mcp:write"]);
    assert_eq!(id.claims["tenant"], "t1");
    assert_eq!(id.token.expose(), token);
    let exp = id.expires_at.unwrap().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(exp.abs_diff(now() + 600) <= 5, "exp {exp}");

    // `scp` as an array; lowercase scheme.
    let token = idp.token(json!({"claims": {"sub": "bob", "scp": ["a", "b"]}})).await;
    let id = auth.authenticate(Some(&format!("bearer {token}"))).await.unwrap();
    assert_eq!((id.subject.as_str(), id.scopes.clone()), ("bob", vec!["a".into(), "b".into()]));

    // Keys were discovered once and cached.
    assert_eq!(idp.stats().await, (1, 1, 0));
}

#[tokio::test]
async fn rejected_tokens() {
    let idp = Idp::launch().await;
    let auth = idp.authenticator(json!({}));

    let t = idp.token(json!({"expiresIn": -3600})).await;
    assert_invalid(auth.authenticate(Some(&bearer(&t))).await, "expired", &t);

    // Within the default 60s skew an expired token still passes; nbf in the future does not.
    let t = idp.token(json!({"expiresIn": -20})).await;
    auth.authenticate(Some(&bearer(&t))).await.unwrap();
    let t = idp.token(json!({"claims": {"nbf": now() + 3600}})).await;
    assert_invalid(auth.authenticate(Some(&bearer(&t))).await, "nbf", &t);

    let t = idp.token(json!({"claims": {"aud": "someone-else"}})).await;
    assert_invalid(auth.authenticate(Some(&bearer(&t))).await, "audience", &t);
    let t = idp.token(json!({"claims": {"aud": ["someone-else", AUDIENCE]}})).await;
    auth.authenticate(Some(&bearer(&t))).await.unwrap();

    let t = idp.token(json!({"claims": {"iss": "https://evil.example"}})).await;
    assert_invalid(auth.authenticate(Some(&bearer(&t))).await, "issuer", &t);

    let t = idp.token(json!({"claims": {"sub": null}})).await;
    assert_invalid(auth.authenticate(Some(&bearer(&t))).await, "sub", &t);

    // Signed by another key under the same kid.
    let t = idp.token(json!({"forge": true})).await;
    assert_invalid(auth.authenticate(Some(&bearer(&t))).await, "signature", &t);

    let t = idp.token(json!({"alg": "none"})).await;
    assert_invalid(auth.authenticate(Some(&bearer(&t))).await, "none", &t);

    // HMAC with the public key as the secret.
    let t = idp.token(json!({"alg": "HS256"})).await;
    assert_invalid(auth.authenticate(Some(&bearer(&t))).await, "HS256", &t);

    // Tampered payload.
    let good = idp.token(json!({})).await;
    let mut parts: Vec<&str> = good.split('.').collect();
    let other = idp.token(json!({"claims": {"sub": "mallory"}})).await;
    parts[1] = other.split('.').nth(1).unwrap();
    let t = parts.join(".");
    assert_invalid(auth.authenticate(Some(&bearer(&t))).await, "signature", &t);

    // Unknown kid.
    let t = idp.token(json!({"forge": true, "kid": "nope"})).await;
    assert_invalid(auth.authenticate(Some(&bearer(&t))).await, "unknown signing key", &t);

    // No credentials, other schemes, opaque tokens without introspection.
    assert_eq!(auth.authenticate(None).await.unwrap_err(), AuthFailure::Missing);
    assert_eq!(
        auth.authenticate(Some("Basic dXNlcjpwdw==")).await.unwrap_err(),
        AuthFailure::Missing
    );
    assert_invalid(auth.authenticate(Some("Bearer opaque-abc")).await, "not a JWT", "opaque-abc");
    assert_invalid(auth.authenticate(Some("Bearer a b")).await, "malformed", "a b");
}

#[tokio::test]
async fn required_scopes() {
    let idp = Idp::launch().await;
    let auth = idp.authenticator(json!({"requiredScopes": ["mcp:admin", "mcp:read"]}));
    let t = idp.token(json!({"claims": {"scope": "mcp:read"}})).await;
    let err = auth.authenticate(Some(&bearer(&t))).await.unwrap_err();
    assert_eq!(
        err,
        AuthFailure::InsufficientScope { required: vec!["mcp:admin".into(), "mcp:read".into()] }
    );
    assert_no_leak(&err, &t);
    let t = idp.token(json!({"claims": {"scope": "mcp:read other mcp:admin"}})).await;
    auth.authenticate(Some(&bearer(&t))).await.unwrap();
    let t = idp.token(json!({"claims": {"scp": ["mcp:admin", "mcp:read"]}})).await;
    auth.authenticate(Some(&bearer(&t))).await.unwrap();
}

/// `scopes` only advertises (ToolHive's meaning): a token without them is accepted.
#[tokio::test]
async fn advertised_scopes_are_not_enforced() {
    let idp = Idp::launch().await;
    let auth = idp.authenticator(json!({"scopes": ["mcp:admin"]}));
    let t = idp.token(json!({"claims": {"scope": "other"}})).await;
    auth.authenticate(Some(&bearer(&t))).await.unwrap();
    assert_eq!(auth.advertised_scopes(), ["mcp:admin"]);
}

#[tokio::test]
async fn key_rotation() {
    let idp = Idp::launch().await;
    let auth = idp.authenticator(json!({}));
    let old = idp.token(json!({})).await;
    auth.authenticate(Some(&bearer(&old))).await.unwrap();
    assert_eq!(idp.stats().await.1, 1);

    // A token by a new key: refetched once on the unknown kid; the old key is still served.
    let kid = idp.rotate(false).await;
    let new = idp.token(json!({"kid": kid})).await;
    auth.authenticate(Some(&bearer(&new))).await.unwrap();
    auth.authenticate(Some(&bearer(&old))).await.unwrap();
    assert_eq!(idp.stats().await.1, 2);

    // Another rotation within 10s: refetches are rate limited, the new kid is unknown for now.
    idp.rotate(false).await;
    let newer = idp.token(json!({})).await;
    assert_invalid(auth.authenticate(Some(&bearer(&newer))).await, "unknown signing key", &newer);
    assert_eq!(idp.stats().await.1, 2);

    // Without the rate limit it is picked up; a fresh authenticator after the old keys are
    // dropped refuses the old token and takes the new one.
    let fast = idp.authenticator(json!({})).with_min_refetch_interval(Duration::ZERO);
    fast.authenticate(Some(&bearer(&old))).await.unwrap();
    fast.authenticate(Some(&bearer(&newer))).await.unwrap();
    let newest_kid = idp.rotate(true).await;
    let newest = idp.token(json!({"kid": newest_kid})).await;
    let fresh = idp.authenticator(json!({}));
    fresh.authenticate(Some(&bearer(&newest))).await.unwrap();
    assert_invalid(fresh.authenticate(Some(&bearer(&old))).await, "unknown signing key", &old);
}

#[tokio::test]
async fn idp_down_serves_cached_keys() {
    let mut idp = Idp::launch().await;
    let auth = idp.authenticator(json!({}));
    let before = idp.token(json!({})).await;
    auth.authenticate(Some(&bearer(&before))).await.unwrap();
    let later = idp.token(json!({"claims": {"sub": "later"}})).await;
    let unknown = idp.token(json!({"forge": true, "kid": "unknown"})).await;
    let never_used = idp.authenticator(json!({}));
    let cfg_jwks = idp.config(json!({"jwksUrl": format!("{}/jwks", idp.url)}));
    idp.kill();

    // Cached keys keep working; an unknown kid is an invalid token, not an outage.
    assert_eq!(auth.authenticate(Some(&bearer(&later))).await.unwrap().subject, "later");
    auth.authenticate(Some(&bearer(&before))).await.unwrap();
    assert_invalid(auth.authenticate(Some(&bearer(&unknown))).await, "unknown", &unknown);

    // No keys at all and the IdP down: unavailable (discovery and direct jwksUrl alike).
    let err = never_used.authenticate(Some(&bearer(&later))).await.unwrap_err();
    assert!(matches!(err, AuthFailure::Unavailable(_)), "{err:?}");
    assert_no_leak(&err, &later);
    let direct = OidcAuthenticator::new(&cfg_jwks, reqwest::Client::new()).unwrap();
    let err = direct.authenticate(Some(&bearer(&later))).await.unwrap_err();
    assert!(matches!(err, AuthFailure::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn idp_late_start_is_retried() {
    // Discovery fails while the IdP is down and is retried (after a short backoff) once it is up.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg: OidcConfig = serde_json::from_value(
        json!({"issuer": format!("http://127.0.0.1:{port}"), "audience": AUDIENCE}),
    )
    .unwrap();
    let auth = OidcAuthenticator::new(&cfg, reqwest::Client::new()).unwrap();
    // {"alg":"RS256","kid":"k"}.{}.sig
    let early = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.e30.c2ln";
    let err = auth.authenticate(Some(&bearer(early))).await.unwrap_err();
    assert!(matches!(err, AuthFailure::Unavailable(_)), "{err:?}");

    // Within the (one second) backoff the failure is remembered: nothing connects to the port.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let err = auth.authenticate(Some(&bearer(early))).await.unwrap_err();
    assert!(matches!(err, AuthFailure::Unavailable(_)), "{err:?}");
    let accepted = listener.accept();
    assert!(
        accepted.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "the IdP was asked again within the backoff: {accepted:?}"
    );
    drop(listener);

    // Once the IdP is up (Node may take longer than the backoff to start), discovery is retried.
    let idp = Idp::launch_on(port).await;
    let token = idp.token(json!({})).await;
    let id = common::poll(Duration::from_secs(10), "discovery to be retried", || {
        let (auth, token) = (&auth, &token);
        async move { auth.authenticate(Some(&bearer(token))).await.ok() }
    })
    .await;
    assert_eq!(id.subject, "alice");
    assert_eq!(idp.stats().await, (1, 1, 0));
}

#[tokio::test]
async fn concurrent_misses_share_one_fetch() {
    let idp = Idp::launch().await;
    idp.post("/test/config", json!({"jwksDelayMs": 300})).await;

    // First load: 20 concurrent requests, one discovery, one JWKS fetch.
    let auth = idp.authenticator(json!({}));
    let t1 = idp.token(json!({})).await;
    let results = futures::future::join_all((0..20).map(|_| {
        let auth = auth.clone();
        let h = bearer(&t1);
        tokio::spawn(async move { auth.authenticate(Some(&h)).await })
    }))
    .await;
    assert!(results.into_iter().all(|r| r.unwrap().is_ok()));
    assert_eq!(idp.stats().await, (1, 1, 0));

    // Unknown kid after a rotation: 20 concurrent misses, one refetch.
    let kid = idp.rotate(false).await;
    let t2 = idp.token(json!({"kid": kid})).await;
    let results = futures::future::join_all((0..20).map(|_| {
        let auth = auth.clone();
        let h = bearer(&t2);
        tokio::spawn(async move { auth.authenticate(Some(&h)).await })
    }))
    .await;
    assert!(results.into_iter().all(|r| r.unwrap().is_ok()));
    assert_eq!(idp.stats().await, (1, 2, 0));

    // Many distinct unknown kids at once still cost at most one fetch.
    let forged: Vec<String> = futures::future::join_all(
        (0..10).map(|i| idp.token(json!({"forge": true, "kid": format!("bogus-{i}")}))),
    )
    .await;
    let results = futures::future::join_all(forged.iter().map(|t| {
        let auth = auth.clone();
        let h = bearer(t);
        tokio::spawn(async move { auth.authenticate(Some(&h)).await })
    }))
    .await;
    assert!(results.into_iter().all(|r| matches!(r.unwrap(), Err(AuthFailure::InvalidToken(_)))));
    assert_eq!(idp.stats().await.1, 2, "rate limited within 10s of the last refetch");
}

#[tokio::test]
async fn introspection_of_opaque_tokens() {
    let idp = Idp::launch().await;
    set_secret_env();
    let extra = json!({
        "introspectionUrl": format!("{}/introspect", idp.url),
        "clientId": CLIENT_ID,
        "clientSecretEnv": SECRET_ENV,
        "requiredScopes": ["mcp:read"],
    });
    let auth = idp.authenticator(extra.clone());

    let active = idp
        .opaque(true, json!({"sub": "carol", "scope": "mcp:read x", "exp": now() + 600, "aud": AUDIENCE, "iss": idp.url}))
        .await;
    let id = auth.authenticate(Some(&bearer(&active))).await.unwrap();
    assert_eq!((id.subject.as_str(), id.issuer.as_str()), ("carol", idp.url.as_str()));
    assert_eq!(id.scopes, vec!["mcp:read", "x"]);
    assert!(id.expires_at.is_some());
    assert_eq!(idp.stats().await.2, 1);
    // Cached: the second call does not reach the IdP.
    let again = auth.authenticate(Some(&bearer(&active))).await.unwrap();
    assert_eq!(again.subject, "carol");
    assert_eq!(idp.stats().await.2, 1);

    let inactive = idp.opaque(false, json!({"sub": "dave"})).await;
    assert_invalid(auth.authenticate(Some(&bearer(&inactive))).await, "not active", &inactive);
    assert_invalid(
        auth.authenticate(Some(&bearer("never-issued"))).await,
        "not active",
        "never-issued",
    );
    // Inactive results are not cached.
    let n = idp.stats().await.2;
    assert_invalid(auth.authenticate(Some(&bearer(&inactive))).await, "not active", &inactive);
    assert_eq!(idp.stats().await.2, n + 1);

    let expired =
        idp.opaque(true, json!({"sub": "e", "scope": "mcp:read", "exp": now() - 3600})).await;
    assert_invalid(auth.authenticate(Some(&bearer(&expired))).await, "expired", &expired);
    let wrong_aud =
        idp.opaque(true, json!({"sub": "e", "scope": "mcp:read", "aud": "other"})).await;
    assert_invalid(auth.authenticate(Some(&bearer(&wrong_aud))).await, "audience", &wrong_aud);
    let wrong_iss = idp
        .opaque(true, json!({"sub": "e", "scope": "mcp:read", "iss": "https://evil.example"}))
        .await;
    assert_invalid(auth.authenticate(Some(&bearer(&wrong_iss))).await, "issuer", &wrong_iss);
    let no_scope = idp.opaque(true, json!({"sub": "e", "scope": "other"})).await;
    let err = auth.authenticate(Some(&bearer(&no_scope))).await.unwrap_err();
    assert_eq!(err, AuthFailure::InsufficientScope { required: vec!["mcp:read".into()] });
    // `sub` falls back to `username`.
    let by_user = idp.opaque(true, json!({"username": "erin", "scope": "mcp:read"})).await;
    assert_eq!(auth.authenticate(Some(&bearer(&by_user))).await.unwrap().subject, "erin");

    // JWTs still go through the JWKS with introspection configured.
    let jwt = idp.token(json!({"claims": {"scope": "mcp:read"}})).await;
    auth.authenticate(Some(&bearer(&jwt))).await.unwrap();

    // Wrong client credentials: the IdP refuses, which is an outage, not a bad token.
    let mut bad = extra.clone();
    bad["clientId"] = json!("someone");
    let bad_auth = idp.authenticator(bad);
    let err = bad_auth.authenticate(Some(&bearer(&by_user))).await.unwrap_err();
    assert!(matches!(err, AuthFailure::Unavailable(_)), "{err:?}");
    assert_no_leak(&err, &by_user);

    // Missing secret variable: a configuration error that names the variable, not a value.
    let mut missing = extra;
    missing["clientSecretEnv"] = json!("VMCP_TEST_DEFINITELY_UNSET_VARIABLE");
    let err = OidcAuthenticator::new(&idp.config(missing), reqwest::Client::new()).unwrap_err();
    assert!(err.to_string().contains("VMCP_TEST_DEFINITELY_UNSET_VARIABLE"));
}

#[tokio::test]
async fn debug_and_errors_leak_nothing() {
    let idp = Idp::launch().await;
    set_secret_env();
    let auth = idp.authenticator(json!({
        "introspectionUrl": format!("{}/introspect", idp.url),
        "clientId": CLIENT_ID,
        "clientSecretEnv": SECRET_ENV,
    }));
    let token = idp.token(json!({})).await;
    let id = auth.authenticate(Some(&bearer(&token))).await.unwrap();
    let opaque = idp.opaque(true, json!({"sub": "x"})).await;
    auth.authenticate(Some(&bearer(&opaque))).await.unwrap();
    for text in [format!("{auth:?}"), format!("{id:?}")] {
        assert!(!text.contains(CLIENT_SECRET), "{text}");
        assert!(!text.contains(&token), "{text}");
        assert!(!text.contains(&opaque), "{text}");
    }
    assert!(format!("{auth:?}").contains(&idp.url));

    // Every failure kind, with a token in play.
    let forged = idp.token(json!({"forge": true})).await;
    let mut failures = Vec::new();
    for t in [forged.as_str(), "garbage.garbage.garbage", "opaque-never-issued"] {
        failures.push((auth.authenticate(Some(&bearer(t))).await.unwrap_err(), t.to_string()));
    }
    let mut idp = idp;
    let dead = idp.authenticator(json!({
        "introspectionUrl": format!("{}/introspect", idp.url),
        "clientId": CLIENT_ID,
        "clientSecretEnv": SECRET_ENV,
    }));
    idp.kill();
    for t in [token.as_str(), opaque.as_str()] {
        let err = dead.authenticate(Some(&bearer(t))).await.unwrap_err();
        assert!(matches!(err, AuthFailure::Unavailable(_)), "{err:?}");
        failures.push((err, t.to_string()));
    }
    for (f, t) in &failures {
        assert_no_leak(f, t);
    }
}

#[test]
fn www_authenticate_format() {
    let rm = "https://gw.example/.well-known/oauth-protected-resource/mcp";
    assert_eq!(
        www_authenticate(&AuthFailure::Missing, rm),
        format!("Bearer resource_metadata=\"{rm}\"")
    );
    assert_eq!(
        www_authenticate(&AuthFailure::InvalidToken("token expired".into()), rm),
        format!(
            "Bearer resource_metadata=\"{rm}\", error=\"invalid_token\", error_description=\"token expired\""
        )
    );
    assert_eq!(
        www_authenticate(
            &AuthFailure::InsufficientScope { required: vec!["a".into(), "b:c".into()] },
            rm
        ),
        format!(
            "Bearer resource_metadata=\"{rm}\", error=\"insufficient_scope\", scope=\"a b:c\", \
             error_description=\"requires scope a b:c\""
        )
    );
    assert_eq!(
        www_authenticate(&AuthFailure::Unavailable("down".into()), rm),
        format!("Bearer resource_metadata=\"{rm}\"")
    );
    // Advertised scopes go in every challenge but insufficient_scope, which names the required.
    let adv = vec!["mcp:read".to_string(), "mcp:write".to_string()];
    assert_eq!(
        www_authenticate_with_scopes(&AuthFailure::Missing, rm, &adv),
        format!("Bearer resource_metadata=\"{rm}\", scope=\"mcp:read mcp:write\"")
    );
    assert_eq!(
        www_authenticate_with_scopes(
            &AuthFailure::InsufficientScope { required: vec!["a".into()] },
            rm,
            &adv
        ),
        format!(
            "Bearer resource_metadata=\"{rm}\", error=\"insufficient_scope\", scope=\"a\", \
             error_description=\"requires scope a\""
        )
    );
    // Quotes and backslashes in a description cannot break out of the quoted string.
    let h = www_authenticate(&AuthFailure::InvalidToken("a\"b\\c\r\nd".into()), rm);
    assert!(h.ends_with("error_description=\"a'b'c??d\""), "{h}");
}

#[test]
fn metadata_document() {
    let cfg: OidcConfig = serde_json::from_value(json!({
        "issuer": "https://idp.example",
        "audience": "vmcp",
        "resource": "https://gw.example/mcp",
        "scopes": ["mcp:read", "mcp:write"],
    }))
    .unwrap();
    assert_eq!(
        protected_resource_metadata(&cfg),
        json!({
            "resource": "https://gw.example/mcp",
            "authorization_servers": ["https://idp.example"],
            "scopes_supported": ["mcp:read", "mcp:write"],
            "bearer_methods_supported": ["header"],
        })
    );
    let auth = OidcAuthenticator::new(&cfg, reqwest::Client::new()).unwrap();
    assert_eq!(auth.resource(), "https://gw.example/mcp");

    let cfg: OidcConfig =
        serde_json::from_value(json!({"issuer": "https://idp.example", "audience": "vmcp"}))
            .unwrap();
    assert_eq!(
        protected_resource_metadata(&cfg),
        json!({
            "resource": "vmcp",
            "authorization_servers": ["https://idp.example"],
            "bearer_methods_supported": ["header"],
        })
    );
    assert_eq!(OidcAuthenticator::new(&cfg, reqwest::Client::new()).unwrap().resource(), "vmcp");
}

#[test]
fn config_errors() {
    let mk = |v: Value| -> OidcConfig { serde_json::from_value(v).unwrap() };
    let http = reqwest::Client::new;
    for (cfg, needle) in [
        (json!({"issuer": "", "audience": "a"}), "issuer"),
        (json!({"issuer": "https://i", "audience": ""}), "audience"),
        (json!({"issuer": "not a url", "audience": "a"}), "issuer"),
        (json!({"issuer": "https://i", "audience": "a", "allowedAlgorithms": ["HS256"]}), "HS256"),
        (json!({"issuer": "https://i", "audience": "a", "allowedAlgorithms": ["none"]}), "none"),
        (json!({"issuer": "https://i", "audience": "a", "jwksUrl": "ftp://x"}), "jwksUrl"),
    ] {
        let err = OidcAuthenticator::new(&mk(cfg), http()).unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
    let ok = mk(
        json!({"issuer": "https://i", "audience": "a", "allowedAlgorithms": ["ES256", "EdDSA"], "clockSkew": "10m"}),
    );
    OidcAuthenticator::new(&ok, http()).unwrap();
}

/// ToolHive's network rules: `http://` only on loopback or with `insecureAllowHttp`; private
/// addresses only with `jwksAllowPrivateIp` or `protectedResourceAllowPrivateIp`.
#[test]
fn network_rules() {
    let mk = |v: Value| -> OidcConfig { serde_json::from_value(v).unwrap() };
    let build = |v: Value| OidcAuthenticator::new(&mk(v), reqwest::Client::new());
    let err = build(json!({"issuer": "http://idp.example", "audience": "a"})).unwrap_err();
    assert!(err.to_string().contains("insecureAllowHttp"), "{err}");
    build(json!({"issuer": "http://idp.example", "audience": "a", "insecureAllowHttp": true}))
        .unwrap();
    build(json!({"issuer": "http://127.0.0.1:1", "audience": "a"})).unwrap();
    let err = build(json!({"issuer": "https://idp.example", "audience": "a",
        "jwksUrl": "https://10.0.0.7/keys"}))
    .unwrap_err();
    assert!(err.to_string().contains("jwksUrl") && err.to_string().contains("private"), "{err}");
    for flag in ["jwksAllowPrivateIp", "protectedResourceAllowPrivateIp"] {
        build(json!({"issuer": "https://idp.example", "audience": "a",
            "introspectionUrl": "https://192.168.1.2/introspect", flag: true}))
        .unwrap();
    }
}

/// A discovery document cannot send the key fetch somewhere the rules refuse.
#[tokio::test]
async fn discovered_jwks_uri_obeys_the_rules() {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let doc = json!({"issuer": issuer, "jwks_uri": "http://idp.example/jwks"});
    let app = axum::Router::new()
        .route("/.well-known/openid-configuration", get(move || async move { axum::Json(doc) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let cfg: OidcConfig =
        serde_json::from_value(json!({"issuer": issuer, "audience": "a"})).unwrap();
    let auth =
        OidcAuthenticator::new(&cfg, vmcp::auth::incoming::idp_client(&cfg).unwrap()).unwrap();
    // A well-formed (unsigned-checked later) JWT shape: the key lookup fails first.
    let jwt = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.eyJzdWIiOiJ4In0.c2ln";
    let err = auth.authenticate(Some(&bearer(jwt))).await.unwrap_err();
    match err {
        AuthFailure::Unavailable(m) => assert!(m.contains("jwks_uri refused"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ca_bundle_path() {
    let mk = |path: &str| -> OidcConfig {
        serde_json::from_value(
            json!({"issuer": "https://i", "audience": "a", "caBundlePath": path}),
        )
        .unwrap()
    };
    let dir = std::env::temp_dir().join(format!("vmcp-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.pem");
    let err = vmcp::auth::incoming::idp_client(&mk(missing.to_str().unwrap())).unwrap_err();
    assert!(err.to_string().contains("caBundlePath"), "{err}");
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let err = vmcp::auth::incoming::idp_client(&mk(junk.to_str().unwrap())).unwrap_err();
    assert!(err.to_string().contains("certificate") || err.to_string().contains("PEM"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
