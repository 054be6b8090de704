//! The `obo` (Entra on-behalf-of) and `xaa` (cross-app access, ID-JAG) outgoing strategies
//! against stand-in token endpoints that check every parameter (`obo_xaa_support`), a backend
//! that records the `Authorization` header it gets, and, once, the whole gateway with a
//! `vmcp-fixture` backend; then their configuration keys and load-time checks.

mod common;
mod obo_xaa_support;

#[path = "auth_obo_xaa/config.rs"]
mod config;
#[path = "auth_obo_xaa/xaa.rs"]
mod xaa;

use xaa::xaa_stubs;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use obo_xaa_support::*;
use serde_json::{Value, json};
use vmcp::auth::current::CurrentIdentities;
use vmcp::auth::identity::Secret;
use vmcp::auth::outgoing::{OutgoingAuth, OutgoingAuthError, Sources, UpstreamSource};
use vmcp::auth::upstream::{TokenSet, UpstreamTokens, Vault};
use vmcp::auth::{Caller, Identity};
use vmcp::config::BackendAuthConfig;

const OBO_SECRET: &str = "obo-client-secret-VALUE";
const IDP_SECRET: &str = "xaa-idp-secret-VALUE";
const TARGET_SECRET: &str = "xaa-target-secret-VALUE";
const TARGET_AS: &str = "https://as.backend.example";
const TARGET_RESOURCE: &str = "https://backend.example/mcp";

fn identity(subject: &str, token: &str) -> Arc<Identity> {
    identity_of("https://idp.example", subject, token)
}

fn identity_of(issuer: &str, subject: &str, token: &str) -> Arc<Identity> {
    Arc::new(Identity {
        issuer: issuer.into(),
        subject: subject.into(),
        claims: serde_json::Map::new(),
        token: Secret::new(token),
        expires_at: Some(SystemTime::now() + Duration::from_secs(3600)),
        scopes: vec![],
    })
}

fn user(subject: &str, token: &str) -> Caller {
    Caller::User(identity(subject, token))
}

struct World {
    backend_url: String,
    seen: Seen,
    identities: Arc<CurrentIdentities>,
    http: reqwest::Client,
    upstream: Option<UpstreamSource>,
}

impl World {
    async fn start() -> World {
        let (backend_url, seen) = serve_backend().await;
        World {
            backend_url,
            seen,
            identities: Arc::new(CurrentIdentities::default()),
            http: reqwest::Client::new(),
            upstream: None,
        }
    }

    fn sources(&self) -> Sources {
        Sources {
            identities: self.identities.clone(),
            http: self.http.clone(),
            upstream: self.upstream.clone(),
        }
    }

    fn build(&self, cfg: Value) -> Result<OutgoingAuth, String> {
        let cfg: BackendAuthConfig = serde_json::from_value(cfg).unwrap();
        OutgoingAuth::from_config(&cfg, "api", &self.sources()).map_err(|e| e.to_string())
    }

    /// One backend request as `caller`, tagged `tag`: the `Authorization` the backend saw.
    async fn send(
        &self,
        auth: &OutgoingAuth,
        caller: &Caller,
        tag: &str,
    ) -> Result<Option<String>, OutgoingAuthError> {
        let req = self.http.post(&self.backend_url).header("x-caller", tag);
        let resp = auth.apply(caller, req).await?.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let seen = self.seen.lock().unwrap();
        Ok(seen.iter().rev().find(|(t, _)| t == tag).unwrap().1.clone())
    }
}

// ---------------------------------------------------------------------------------------------
// obo

/// An IdP stub expecting exactly Entra's on-behalf-of request for scope `scope`.
async fn obo_idp(scope: &str) -> (Arc<Stub>, String) {
    let stub = Arc::new(Stub::new(
        Kind::Obo,
        &[("grant_type", JWT_BEARER), ("requested_token_use", "on_behalf_of"), ("scope", scope)],
        ClientCheck::Post { id: "gateway-app".into(), secret: OBO_SECRET.into() },
    ));
    let url = serve_stub(stub.clone()).await;
    (stub, url)
}

fn obo_config(token_url: &str) -> Value {
    json!({
        "type": "obo",
        "obo": {
            "tokenUrl": token_url,
            "clientId": "gateway-app",
            "clientSecret": OBO_SECRET,
            "audience": "api://ignored-when-scopes-are-set",
            "scopes": ["api://backend/.default", "offline_access"],
        }
    })
}

fn obo_token(n: usize, assertion: &str) -> Option<String> {
    Some(format!("Bearer obo-{n}-for-{}", prefix(assertion)))
}

#[tokio::test]
async fn obo_sends_the_on_behalf_of_token() {
    let w = World::start().await;
    let (idp, url) = obo_idp("api://backend/.default offline_access").await;
    let auth = w.build(obo_config(&url)).unwrap();
    let got = w.send(&auth, &user("alice", "alice-token-1"), "o1").await.unwrap();
    assert_eq!(got, obo_token(1, "alice-token-1"));
    assert_eq!(idp.mismatches(), Vec::<String>::new());
    assert_eq!(*idp.subjects.lock().unwrap(), ["alice-token-1"]);
    assert!(auth.is_user_bound());
}

/// Without `scopes`, `audience` is the exchange target (ToolHive's rule).
#[tokio::test]
async fn obo_scope_falls_back_to_the_audience() {
    let w = World::start().await;
    let (idp, url) = obo_idp("api://backend-app-id").await;
    let mut cfg = obo_config(&url);
    cfg["obo"]["scopes"] = json!([]);
    cfg["obo"]["audience"] = json!("api://backend-app-id");
    let auth = w.build(cfg).unwrap();
    let got = w.send(&auth, &user("alice", "alice-token-1"), "a1").await.unwrap();
    assert_eq!(got, obo_token(1, "alice-token-1"));
    assert_eq!(idp.mismatches(), Vec::<String>::new());
}

#[tokio::test]
async fn obo_is_cached_per_caller_token() {
    let w = World::start().await;
    let (idp, url) = obo_idp("api://backend/.default offline_access").await;
    let auth = w.build(obo_config(&url)).unwrap();
    let alice = user("alice", "alice-token-1");
    for tag in ["c1", "c2", "c3"] {
        assert_eq!(w.send(&auth, &alice, tag).await.unwrap(), obo_token(1, "alice-token-1"));
    }
    assert_eq!(idp.calls(), 1, "one IdP call for repeated calls of one caller");
    // Bob never gets Alice's token, and a refreshed token of Alice is exchanged anew.
    let bob = w.send(&auth, &user("bob", "bob-token-1"), "c4").await.unwrap();
    assert_eq!(bob, obo_token(2, "bob-token-1"));
    let alice2 = w.send(&auth, &user("alice", "alice-token-2"), "c5").await.unwrap();
    assert_eq!(alice2, obo_token(3, "alice-token-2"));
    assert_eq!(idp.calls(), 3);
    assert_eq!(idp.mismatches(), Vec::<String>::new());
}

/// `cacheSkewSeconds` as long as the token's life: never reused.
#[tokio::test]
async fn obo_cache_skew_shortens_reuse() {
    let w = World::start().await;
    let (idp, url) = obo_idp("api://backend/.default offline_access").await;
    let mut cfg = obo_config(&url);
    cfg["obo"]["cacheSkewSeconds"] = json!(3600);
    let auth = w.build(cfg).unwrap();
    let alice = user("alice", "alice-token-1");
    assert_eq!(w.send(&auth, &alice, "k1").await.unwrap(), obo_token(1, "alice-token-1"));
    assert_eq!(w.send(&auth, &alice, "k2").await.unwrap(), obo_token(2, "alice-token-1"));
    assert_eq!(idp.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn obo_single_flight_under_concurrency() {
    let w = Arc::new(World::start().await);
    let (idp, url) = obo_idp("api://backend/.default offline_access").await;
    *idp.delay.lock().unwrap() = Duration::from_millis(300);
    let auth = w.build(obo_config(&url)).unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (w, auth) = (w.clone(), auth.clone());
            tokio::spawn(async move {
                w.send(&auth, &user("alice", "alice-token-1"), &format!("s{i}")).await.unwrap()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), obo_token(1, "alice-token-1"));
    }
    assert_eq!(idp.calls(), 1, "20 concurrent calls of one caller share one IdP request");
}

#[tokio::test]
async fn obo_invalid_grant_means_reauthenticate() {
    let w = World::start().await;
    let (idp, url) = obo_idp("api://backend/.default offline_access").await;
    idp.set_mode(Mode::InvalidGrant);
    let auth = w.build(obo_config(&url)).unwrap();
    let e = w.send(&auth, &user("alice", "alice-token-SECRETISH"), "g1").await.unwrap_err();
    let OutgoingAuthError::Reauthenticate(m) = &e else { panic!("{e:?}") };
    assert_eq!(
        m,
        "on-behalf-of exchange for backend \"api\": the token endpoint refused the caller's token: invalid_grant (HTTP 400)"
    );
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains("SECRETISH") && !shown.contains(OBO_SECRET), "{shown}");
    assert!(w.seen.lock().unwrap().is_empty(), "no request reaches the backend");
}

#[tokio::test]
async fn obo_idp_down_is_unavailable_and_named() {
    let w = World::start().await;
    let dead = format!("http://127.0.0.1:{}/token", common::free_port());
    let auth = w.build(obo_config(&dead)).unwrap();
    let e = w.send(&auth, &user("alice", "alice-token-1"), "d1").await.unwrap_err();
    let OutgoingAuthError::Unavailable(m) = &e else { panic!("{e:?}") };
    assert_eq!(
        m,
        "on-behalf-of exchange for backend \"api\": cannot connect to the token endpoint"
    );

    // A server error, then a slow IdP bounded by the timeout.
    let (idp, url) = obo_idp("api://backend/.default offline_access").await;
    idp.set_mode(Mode::ServerError);
    let auth = w.build(obo_config(&url)).unwrap();
    let e = w.send(&auth, &user("alice", "alice-token-1"), "d2").await.unwrap_err();
    let OutgoingAuthError::Unavailable(m) = &e else { panic!("{e:?}") };
    assert_eq!(m, "on-behalf-of exchange for backend \"api\" failed: HTTP 503");
    // Remembered for a few seconds: the recovered IdP is not asked again at once.
    idp.set_mode(Mode::Ok);
    assert!(w.send(&auth, &user("alice", "alice-token-1"), "d3").await.is_err());
    assert_eq!(idp.calls(), 1);

    idp.set_mode(Mode::Slow);
    let auth = auth.with_exchange_timeout(Duration::from_millis(300));
    let e = w.send(&auth, &user("alice", "alice-token-1"), "d4").await.unwrap_err();
    let OutgoingAuthError::Unavailable(m) = &e else { panic!("{e:?}") };
    assert_eq!(m, "on-behalf-of exchange for backend \"api\": no answer within 300ms");
}

#[tokio::test]
async fn obo_needs_a_user_and_uses_the_latest_identity_for_teardown() {
    let w = World::start().await;
    let (idp, url) = obo_idp("api://backend/.default offline_access").await;
    let auth = w.build(obo_config(&url)).unwrap();
    assert_eq!(w.send(&auth, &Caller::System, "u1").await.unwrap(), None);
    let e = w.send(&auth, &Caller::Anonymous, "u2").await.unwrap_err();
    assert!(
        matches!(&e, OutgoingAuthError::Reauthenticate(m) if m == "on-behalf-of exchange needs an authenticated caller"),
        "{e:?}"
    );
    assert_eq!(idp.calls(), 0);
    let old = identity("alice", "alice-old");
    w.identities.record(&old);
    w.identities.record(&identity("alice", "alice-new"));
    let teardown = Caller::Teardown(Caller::User(old).binding());
    assert_eq!(w.send(&auth, &teardown, "u3").await.unwrap(), obo_token(1, "alice-new"));
}

// ---------------------------------------------------------------------------------------------
// Building the strategies; secrets.

#[tokio::test]
async fn build_errors_name_keys_and_variables_never_values() {
    let w = World::start().await;
    let x = xaa_stubs().await;
    let mut cfg = obo_config("https://login.example/t/oauth2/v2.0/token");
    cfg["obo"].as_object_mut().unwrap().remove("clientSecret");
    cfg["obo"]["clientSecretEnv"] = json!("VMCP_TEST_OBO_UNSET");
    assert_eq!(
        w.build(cfg).unwrap_err(),
        "backend \"api\": environment variable VMCP_TEST_OBO_UNSET is not set"
    );
    let mut cfg = obo_config("https://login.example/token");
    cfg["obo"]["clientSecretEnv"] = json!("X");
    let e = w.build(cfg).unwrap_err();
    assert_eq!(
        e,
        "backend \"api\": give either `obo.clientSecret` or `obo.clientSecretEnv`, not both"
    );
    assert_eq!(
        w.build(json!({ "type": "obo" })).unwrap_err(),
        "backend \"api\": outgoing auth type obo needs a `obo` block"
    );
    let mut cfg = x.config();
    cfg["xaa"]["targetClientId"] = json!(null);
    assert_eq!(
        w.build(cfg).unwrap_err(),
        "backend \"api\": a client secret needs `xaa.targetClientId`"
    );
    let mut cfg = x.config();
    cfg["xaa"]["idpTokenUrl"] = json!("http://idp.example/token");
    assert_eq!(
        w.build(cfg).unwrap_err(),
        "backend \"api\": xaa.idpTokenUrl: URL \"http://idp.example/token\" must use https (http only on a loopback host)"
    );
    let mut cfg = x.config();
    cfg["xaa"]["subjectProviderName"] = json!("corp");
    assert_eq!(
        w.build(cfg).unwrap_err(),
        "backend \"api\": xaa.subjectProviderName needs the embedded authorization server (authserver-config.yaml beside the config file)"
    );
}

#[tokio::test]
async fn debug_never_shows_secrets() {
    let w = World::start().await;
    let (_idp, url) = obo_idp("api://backend/.default offline_access").await;
    let obo = w.build(obo_config(&url)).unwrap();
    w.send(&obo, &user("alice", "alice-token-XYZ"), "s1").await.unwrap();
    let x = xaa_stubs().await;
    let xaa = w.build(x.config()).unwrap();
    w.send(&xaa, &user("alice", "alice-id-XYZ"), "s2").await.unwrap();
    let debug = format!("{obo:?} {xaa:?}");
    assert!(debug.contains("Obo {") && debug.contains("gateway-app"), "{debug}");
    assert!(debug.contains("Xaa {") && debug.contains("gw-at-as"), "{debug}");
    for secret in [OBO_SECRET, IDP_SECRET, TARGET_SECRET, "XYZ", "obo-1", "xaa-1"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
}

// ---------------------------------------------------------------------------------------------
// End to end: a gateway whose backend gets the on-behalf-of token of each caller.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_sends_the_obo_token_to_the_backend() {
    use common::local_idp::{AUDIENCE, LocalIdp};
    let idp = LocalIdp::start();
    let (stub, token_url) = obo_idp("api://fixture/.default").await;
    let h = common::Fixture::http("legacy", "h");
    let gw = common::Gateway::start_env(
        &format!(
            "name: obo\nincomingAuth:\n  type: oidc\n  oidc:\n    issuer: {}\n    audience: {AUDIENCE}\n\
             outgoingAuth:\n  backends:\n    h:\n      type: obo\n      obo:\n        \
             tokenUrl: {token_url}\n        clientId: gateway-app\n        \
             clientSecretEnv: VMCP_TEST_OBO_SECRET\n        scopes: [api://fixture/.default]\n\
             backends:\n{}",
            idp.url,
            common::http_backend("h", &h.url),
        ),
        &[("VMCP_TEST_OBO_SECRET", OBO_SECRET)],
    );
    let mut c = gw.client();
    let alice = idp.token("alice");
    c.bearer = Some(alice.clone());
    c.legacy_init().await;
    let r = c.tool(false, "h_whoami", json!({})).await;
    let seen = common::whoami_of(&r)["authorization"].as_str().map(str::to_owned);
    let want = format!("Bearer obo-1-for-{}", prefix(&alice));
    assert_eq!(seen.as_deref(), Some(want.as_str()));
    assert_eq!(stub.mismatches(), Vec::<String>::new());
    assert_eq!(*stub.subjects.lock().unwrap(), [alice.as_str()], "listing and the call share one");

    // Another caller gets its own.
    let mut c2 = gw.client();
    let bob = idp.token("bob");
    c2.bearer = Some(bob.clone());
    c2.legacy_init().await;
    let r = c2.tool(false, "h_whoami", json!({})).await;
    let seen = common::whoami_of(&r)["authorization"].as_str().unwrap_or_default().to_owned();
    assert_eq!(seen, format!("Bearer obo-2-for-{}", prefix(&bob)));
    let log = gw.proc.stderr();
    assert!(!log.contains(OBO_SECRET) && !log.contains(&alice), "secrets in the log");
}
