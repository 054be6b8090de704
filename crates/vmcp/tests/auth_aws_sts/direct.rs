//! The strategy through its API (`OutgoingAuth::apply`), against moto: one assumption for
//! concurrent requests of one principal, no credentials for system work, a caller without a
//! token refused, an STS that does not answer bounded and named, and no secret in `Debug`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use vmcp::auth::current::CurrentIdentities;
use vmcp::auth::identity::Secret;
use vmcp::auth::outgoing::{OutgoingAuth, OutgoingAuthError, Sources};
use vmcp::auth::{Caller, Identity};
use vmcp::config::BackendAuthConfig;

use super::{Aws, DEV};

fn build(sts: &str, identities: &Arc<CurrentIdentities>) -> OutgoingAuth {
    let cfg: BackendAuthConfig = serde_json::from_value(json!({
        "type": "aws_sts",
        "awsSts": {
            "region": "us-east-1",
            "stsEndpoint": sts,
            "roleMappings": [{ "claim": "dev", "roleArn": DEV }],
        },
    }))
    .unwrap();
    let sources =
        Sources { identities: identities.clone(), http: reqwest::Client::new(), upstream: None };
    OutgoingAuth::from_config(&cfg, "aws", &sources).unwrap()
}

fn user(sub: &str, token: &str) -> Caller {
    let claims: serde_json::Map<String, Value> =
        serde_json::from_value(json!({ "sub": sub, "groups": ["dev"] })).unwrap();
    Caller::User(Arc::new(Identity {
        issuer: "https://idp.example".into(),
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
