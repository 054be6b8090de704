//! The strategies that read a user's upstream token from the vault: `upstream_inject`, and
//! `token_exchange` once an authorization server runs (`subjectProviderName`, else the first
//! upstream). The vault here is a scripted stand-in implementing the `UpstreamTokens` contract;
//! the real vault is tested in `upstream_vault.rs` and end to end in `gateway_login.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use futures::future::BoxFuture;
use serde_json::json;
use vmcp::auth::current::CurrentIdentities;
use vmcp::auth::identity::Secret;
use vmcp::auth::outgoing::{OutgoingAuth, OutgoingAuthError, Sources, UpstreamSource};
use vmcp::auth::upstream::{TokenError, TokenSet, UpstreamTokens};
use vmcp::auth::{Binding, Caller, Identity};
use vmcp::config::BackendAuthConfig;

const ISSUER: &str = "https://vmcp.example";

/// Tokens per (user, upstream), or a failure to answer with.
#[derive(Default)]
struct FakeVault {
    tokens: Mutex<HashMap<(String, String), Result<String, TokenError>>>,
}

impl FakeVault {
    fn set(&self, user: &str, upstream: &str, outcome: Result<&str, TokenError>) {
        self.tokens
            .lock()
            .unwrap()
            .insert((user.into(), upstream.into()), outcome.map(str::to_owned));
    }
}

impl UpstreamTokens for FakeVault {
    fn store<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: TokenSet,
    ) -> BoxFuture<'a, Result<(), TokenError>> {
        Box::pin(async { Ok(()) })
    }

    fn access_token<'a>(
        &'a self,
        user: &'a str,
        upstream: &'a str,
    ) -> BoxFuture<'a, Result<Secret, TokenError>> {
        let found = self.tokens.lock().unwrap().get(&(user.into(), upstream.into())).cloned();
        Box::pin(async move {
            match found {
                Some(r) => r.map(Secret::new),
                None => Err(TokenError::Reauthenticate {
                    upstream: upstream.into(),
                    reason: "no grant held".into(),
                }),
            }
        })
    }

    fn holds<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async { true })
    }

    fn forget<'a>(&'a self, _: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

fn sources(vault: &Arc<FakeVault>) -> Sources {
    Sources {
        identities: Arc::new(CurrentIdentities::default()),
        http: reqwest::Client::new(),
        upstream: Some(UpstreamSource {
            issuer: ISSUER.into(),
            tokens: vault.clone(),
            default_provider: "corp".into(),
        }),
    }
}

fn user(issuer: &str, subject: &str) -> Caller {
    Caller::User(Arc::new(Identity {
        issuer: issuer.into(),
        subject: subject.into(),
        claims: serde_json::Map::new(),
        token: Secret::new(format!("vmcp-token-of-{subject}")),
        expires_at: Some(SystemTime::now() + Duration::from_secs(3600)),
        scopes: vec![],
    }))
}

fn strategy(cfg: serde_json::Value, vault: &Arc<FakeVault>) -> OutgoingAuth {
    let cfg: BackendAuthConfig = serde_json::from_value(cfg).unwrap();
    OutgoingAuth::from_config(&cfg, "api", &sources(vault)).unwrap()
}

/// The `Authorization` header `auth` puts on a request for `caller`.
async fn authorization(
    auth: &OutgoingAuth,
    caller: &Caller,
) -> Result<Option<String>, OutgoingAuthError> {
    let req = reqwest::Client::new().post("http://127.0.0.1:9/mcp");
    let req = auth.apply(caller, req).await?.build().unwrap();
    Ok(req.headers().get("authorization").map(|v| v.to_str().unwrap().to_owned()))
}

#[tokio::test]
async fn upstream_inject_sends_each_users_own_current_upstream_token() {
    let vault = Arc::new(FakeVault::default());
    vault.set("alice", "github", Ok("gh-alice-1"));
    vault.set("bob", "github", Ok("gh-bob-1"));
    vault.set("alice", "corp", Ok("corp-alice"));
    let auth = strategy(
        json!({ "type": "upstream_inject", "upstreamInject": { "providerName": "github" } }),
        &vault,
    );
    assert!(auth.is_user_bound());
    let alice = user(ISSUER, "alice");
    assert_eq!(authorization(&auth, &alice).await.unwrap().as_deref(), Some("Bearer gh-alice-1"));
    assert_eq!(
        authorization(&auth, &user(ISSUER, "bob")).await.unwrap().as_deref(),
        Some("Bearer gh-bob-1")
    );
    // Read per request: the vault's current token, never one seen before.
    vault.set("alice", "github", Ok("gh-alice-2"));
    assert_eq!(authorization(&auth, &alice).await.unwrap().as_deref(), Some("Bearer gh-alice-2"));
    // Teardown resolves the principal's token now, from the vault.
    let teardown =
        Caller::Teardown(Binding::Principal { issuer: ISSUER.into(), subject: "alice".into() });
    assert_eq!(
        authorization(&auth, &teardown).await.unwrap().as_deref(),
        Some("Bearer gh-alice-2")
    );
    // System work has no user: no credentials rather than anyone's.
    assert_eq!(authorization(&auth, &Caller::System).await.unwrap(), None);
    assert!(!format!("{auth:?}").contains("gh-"), "{auth:?}");
}

#[tokio::test]
async fn upstream_inject_refuses_callers_without_a_vault_entry() {
    let vault = Arc::new(FakeVault::default());
    vault.set("alice", "github", Ok("gh-alice"));
    vault.set(
        "carol",
        "github",
        Err(TokenError::Unavailable { upstream: "github".into(), reason: "IdP down".into() }),
    );
    let auth = strategy(
        json!({ "type": "upstream_inject", "upstreamInject": { "providerName": "github" } }),
        &vault,
    );
    // A token from another issuer names no vault entry, even with a matching subject.
    let e = authorization(&auth, &user("https://other.example", "alice")).await.unwrap_err();
    assert!(matches!(e, OutgoingAuthError::Reauthenticate(_)), "{e:?}");
    let e = authorization(&auth, &Caller::Anonymous).await.unwrap_err();
    assert!(matches!(e, OutgoingAuthError::Reauthenticate(_)), "{e:?}");
    // No grant held: log in again.
    let e = authorization(&auth, &user(ISSUER, "bob")).await.unwrap_err();
    assert!(matches!(e, OutgoingAuthError::Reauthenticate(_)), "{e:?}");
    // The IdP is down: unavailable, not a logout.
    let e = authorization(&auth, &user(ISSUER, "carol")).await.unwrap_err();
    assert!(matches!(e, OutgoingAuthError::UpstreamUnavailable(_)), "{e:?}");
    assert!(e.to_string().contains("github"), "{e}");
}

/// An RFC 8693 endpoint that answers with a token naming the subject token it got.
async fn exchange_endpoint() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    async fn token(
        State(seen): State<Arc<Mutex<Vec<String>>>>,
        body: String,
    ) -> axum::Json<serde_json::Value> {
        let subject = body
            .split('&')
            .find_map(|kv| kv.strip_prefix("subject_token="))
            .unwrap_or_default()
            .to_owned();
        seen.lock().unwrap().push(subject.clone());
        axum::Json(json!({
            "access_token": format!("exchanged-{subject}"),
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "token_type": "Bearer",
            "expires_in": 300,
        }))
    }
    let app = Router::new().route("/token", post(token)).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/token"), seen)
}

#[tokio::test]
async fn token_exchange_exchanges_the_users_upstream_token() {
    let (url, seen) = exchange_endpoint().await;
    let vault = Arc::new(FakeVault::default());
    vault.set("alice", "corp", Ok("corp-alice"));
    vault.set("alice", "github", Ok("gh-alice"));
    let exchange = |subject_provider: Option<&str>| {
        let mut te = json!({ "tokenUrl": url, "clientId": "gw", "clientSecret": "s3cret" });
        if let Some(p) = subject_provider {
            te["subjectProviderName"] = p.into();
        }
        strategy(json!({ "type": "token_exchange", "tokenExchange": te }), &vault)
    };
    let alice = user(ISSUER, "alice");
    // Without subjectProviderName: the first upstream's token (ToolHive's default).
    let first = exchange(None);
    assert_eq!(
        authorization(&first, &alice).await.unwrap().as_deref(),
        Some("Bearer exchanged-corp-alice")
    );
    let named = exchange(Some("github"));
    assert_eq!(
        authorization(&named, &alice).await.unwrap().as_deref(),
        Some("Bearer exchanged-gh-alice")
    );
    // The caller's own vmcp token never went to the exchange.
    assert_eq!(*seen.lock().unwrap(), ["corp-alice", "gh-alice"]);
}

/// A token endpoint that redirects (307) is not followed: the form, with the client secret and
/// the user's token, never reaches the place it points to.
#[tokio::test]
async fn token_endpoints_are_not_followed_through_redirects() {
    use axum::response::IntoResponse;
    let (target, seen) = exchange_endpoint().await;
    async fn redirect(State(to): State<String>) -> axum::response::Response {
        axum::response::Redirect::temporary(&to).into_response()
    }
    let app = Router::new().route("/token", post(redirect)).with_state(target);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let vault = Arc::new(FakeVault::default());
    vault.set("alice", "corp", Ok("corp-alice"));
    let cfg: BackendAuthConfig = serde_json::from_value(json!({
        "type": "token_exchange",
        "tokenExchange": { "tokenUrl": format!("http://{addr}/token"), "clientId": "gw", "clientSecret": "s3cret" },
    }))
    .unwrap();
    // The client the gateway builds for token endpoints.
    let sources =
        Sources { http: vmcp::auth::token_client(Duration::from_secs(5)), ..sources(&vault) };
    let auth = OutgoingAuth::from_config(&cfg, "api", &sources).unwrap();
    let e = authorization(&auth, &user(ISSUER, "alice")).await.unwrap_err();
    assert!(!e.to_string().contains("s3cret") && !e.to_string().contains("corp-alice"), "{e}");
    assert!(seen.lock().unwrap().is_empty(), "the redirect was followed");
}
