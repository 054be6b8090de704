//! The strategy through its API (`OutgoingAuth::apply`), against moto: one assumption for
//! concurrent requests of one principal, no credentials for system work, a caller without a
//! token refused, an STS that does not answer bounded and named, no secret in `Debug`, and with
//! vmcp's authorization server the web identity token taken from the upstream token vault.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use vmcp::auth::current::CurrentIdentities;
use vmcp::auth::identity::Secret;
use vmcp::auth::outgoing::{OutgoingAuth, OutgoingAuthError, Sources, UpstreamSource};
use vmcp::auth::upstream::{TokenSet, UpstreamTokens, Vault};
use vmcp::auth::{Caller, Identity};
use vmcp::config::BackendAuthConfig;

use super::{Aws, DEV};

fn build(sts: &str, identities: &Arc<CurrentIdentities>) -> OutgoingAuth {
    build_with(sts, identities, None, json!(null)).unwrap()
}

fn build_with(
    sts: &str,
    identities: &Arc<CurrentIdentities>,
    upstream: Option<UpstreamSource>,
    provider: Value,
) -> Result<OutgoingAuth, String> {
    let cfg: BackendAuthConfig = serde_json::from_value(json!({
        "type": "aws_sts",
        "awsSts": {
            "region": "us-east-1",
            "stsEndpoint": sts,
            "roleMappings": [{ "claim": "dev", "roleArn": DEV }],
            "subjectProviderName": provider,
        },
    }))
    .unwrap();
    let sources =
        Sources { identities: identities.clone(), http: reqwest::Client::new(), upstream };
    OutgoingAuth::from_config(&cfg, "aws", &sources).map_err(|e| e.to_string())
}

fn user(sub: &str, token: &str) -> Caller {
    user_of("https://idp.example", sub, token)
}

fn user_of(issuer: &str, sub: &str, token: &str) -> Caller {
    let claims: serde_json::Map<String, Value> =
        serde_json::from_value(json!({ "sub": sub, "groups": ["dev"] })).unwrap();
    Caller::User(Arc::new(Identity {
        issuer: issuer.into(),
        subject: sub.into(),
        claims,
        token: Secret::new(token),
        expires_at: Some(SystemTime::now() + Duration::from_secs(3600)),
        scopes: vec![],
    }))
}

/// The headers `auth` puts on a POST to `url` for `caller`.
async fn signed(
    auth: &OutgoingAuth,
    caller: &Caller,
    url: &str,
) -> Result<reqwest::Request, OutgoingAuthError> {
    let http = reqwest::Client::new();
    let req = http.post(url).header("content-type", "application/json").body("{}");
    Ok(auth.apply(caller, req).await?.build().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_assumption_for_concurrent_requests_and_none_for_system_work() {
    let aws = Aws::start();
    let ids = Arc::new(CurrentIdentities::default());
    let auth = build(&aws.sts, &ids);
    assert!(auth.is_user_bound());
    let erin = user("erin", "erin-web-identity-token");
    let reqs = futures::future::join_all((0..8).map(|_| signed(&auth, &erin, &aws.backend))).await;
    let keys: Vec<String> = reqs
        .into_iter()
        .map(|r| {
            let r = r.unwrap();
            let a = r.headers()["authorization"].to_str().unwrap().to_owned();
            assert!(r.headers().contains_key("x-amz-security-token"));
            a.split('/').next().unwrap().to_owned()
        })
        .collect();
    assert!(keys.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
    let issued = aws.issued().await;
    assert_eq!(issued.len(), 1, "single flight: {issued:#?}");
    assert_eq!(issued[0]["token"], "erin-web-identity-token");

    // System work carries no credentials (and asks STS nothing); an anonymous caller is refused.
    let r = signed(&auth, &Caller::System, &aws.backend).await.unwrap();
    assert!(!r.headers().contains_key("authorization"));
    let e = signed(&auth, &Caller::Anonymous, &aws.backend).await.unwrap_err();
    assert!(matches!(e, OutgoingAuthError::Reauthenticate(_)), "{e:?}");
    assert_eq!(aws.issued().await.len(), 1);

    let debug = format!("{auth:?}");
    assert!(debug.contains("AwsSts") && debug.contains("us-east-1"), "{debug}");
    assert!(!debug.contains("erin-web-identity-token"), "{debug}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sts_that_does_not_answer_is_bounded_and_named() {
    // Accepts connections, never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let ids = Arc::new(CurrentIdentities::default());
    let auth = build(&url, &ids).with_exchange_timeout(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let e =
        signed(&auth, &user("frank", "frank-token"), "http://127.0.0.1:9/mcp").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let OutgoingAuthError::Unavailable(m) = &e else { panic!("{e:?}") };
    assert!(m.contains(DEV) && m.contains("\"aws\""), "{m}");
    assert!(!m.contains("frank-token"), "{m}");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_authorization_server_the_token_comes_from_the_vault() {
    const VMCP: &str = "https://vmcp.example";
    let aws = Aws::start();
    let vault = Vault::in_memory(Arc::new(crate::common::NoRefresh)).unwrap();
    let set = |at: &str| TokenSet {
        access_token: Secret::new(at),
        refresh_token: None,
        id_token: None,
        expires_at: None,
        scope: None,
    };
    vault.store("ivy", "corp", set("corp-access-token")).await.unwrap();
    vault.store("ivy", "other", set("other-access-token")).await.unwrap();
    let upstream = UpstreamSource {
        issuer: VMCP.into(),
        tokens: Arc::new(vault),
        default_provider: "corp".into(),
    };
    let ids = Arc::new(CurrentIdentities::default());
    let ivy = user_of(VMCP, "ivy", "vmcp-issued-token");

    // Unset: the first upstream's access token, not the token vmcp issued.
    let auth = build_with(&aws.sts, &ids, Some(upstream.clone()), json!(null)).unwrap();
    signed(&auth, &ivy, &aws.backend).await.unwrap();
    // Named: that upstream's.
    let auth = build_with(&aws.sts, &ids, Some(upstream.clone()), json!("other")).unwrap();
    signed(&auth, &ivy, &aws.backend).await.unwrap();
    let tokens: Vec<Value> = aws.issued().await.iter().map(|i| i["token"].clone()).collect();
    assert_eq!(tokens, [json!("corp-access-token"), json!("other-access-token")]);

    // A user with no grant at that upstream must log in again; a caller of another issuer has
    // no upstream tokens.
    let auth = build_with(&aws.sts, &ids, Some(upstream), json!("missing")).unwrap();
    let e = signed(&auth, &ivy, &aws.backend).await.unwrap_err();
    assert!(matches!(e, OutgoingAuthError::Reauthenticate(_)), "{e:?}");
    let e = signed(&auth, &user("ivy", "t"), &aws.backend).await.unwrap_err();
    assert!(matches!(e, OutgoingAuthError::Reauthenticate(_)), "{e:?}");
    assert_eq!(aws.issued().await.len(), 2);

    // Naming an upstream without an authorization server is a startup error.
    let e = build_with(&aws.sts, &ids, None, json!("corp")).unwrap_err();
    assert!(
        e.contains("awsSts.subjectProviderName needs the embedded authorization server"),
        "{e}"
    );
}
