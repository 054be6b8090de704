//! Start-up checks of [`AuthServer::new`].

use std::sync::Arc;

use futures::future::BoxFuture;

use super::*;
use crate::auth::identity::Secret;
use crate::auth::upstream::{
    AuthorizationRequest, FederationError, TokenError, TokenSet, UpstreamIdentity,
};

struct Names(Vec<&'static str>);

impl Federation for Names {
    fn upstreams(&self) -> Vec<String> {
        self.0.iter().map(|s| s.to_string()).collect()
    }
    fn authorization_url<'a>(
        &'a self,
        _: &'a str,
        _: AuthorizationRequest<'a>,
    ) -> BoxFuture<'a, Result<String, FederationError>> {
        Box::pin(async { Err(FederationError::UnknownUpstream("x".into())) })
    }
    fn exchange_code<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a str,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<(TokenSet, UpstreamIdentity), FederationError>> {
        Box::pin(async { Err(FederationError::UnknownUpstream("x".into())) })
    }
}

struct NoVault;

impl UpstreamTokens for NoVault {
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
        _: &'a str,
        u: &'a str,
    ) -> BoxFuture<'a, Result<Secret, TokenError>> {
        Box::pin(async move {
            Err(TokenError::Reauthenticate { upstream: u.into(), reason: "none".into() })
        })
    }
    fn holds<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async { false })
    }
    fn forget<'a>(&'a self, _: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

fn settings() -> Settings {
    let mut s = Settings::new("https://vmcp.example.com");
    s.allowed_audiences = vec!["https://vmcp.example.com/mcp".into()];
    s
}

fn build(s: Settings, names: Vec<&'static str>) -> Result<Arc<AuthServer>, AuthServerError> {
    AuthServer::new(
        s,
        Arc::new(Names(names)),
        Arc::new(NoVault),
        Arc::new(MemoryAuthStore::default()),
        cimd_http_client(),
    )
}

#[test]
fn start_up_checks() {
    let srv = build(settings(), vec!["corp"]).unwrap();
    assert_eq!(srv.issuer(), "https://vmcp.example.com");
    assert!(!format!("{srv:?}").contains("PRIVATE"));
    assert!(matches!(build(settings(), vec![]), Err(AuthServerError::Upstreams(_))));
    assert!(matches!(build(settings(), vec!["a", "a"]), Err(AuthServerError::Upstreams(_))));
    let mut s = settings();
    s.callback_url = Some("https://vmcp.example.com/oauth/token".into());
    assert!(matches!(build(s, vec!["corp"]), Err(AuthServerError::Settings(_))));
    let mut s = settings();
    s.signing_key = Some(Secret::new("not a key"));
    assert!(matches!(build(s, vec!["corp"]), Err(AuthServerError::Keys(_))));
    let mut s = settings();
    s.clients.push(StaticClient {
        client_id: "c".into(),
        redirect_uris: vec!["http://127.0.0.1/cb".into()],
        scopes: vec!["admin".into()],
        client_name: None,
    });
    assert!(matches!(build(s, vec!["corp"]), Err(AuthServerError::Settings(_))));
    // Per-upstream callback URLs each get a route.
    let mut s = settings();
    s.upstream_callback_urls.insert("github".into(), "https://vmcp.example.com/gh/callback".into());
    let srv = build(s, vec!["corp", "github"]).unwrap();
    let routes = srv.routes().unwrap();
    assert!(routes.iter().any(|(p, _)| p == "/gh/callback"));
    assert!(routes.iter().any(|(p, _)| p == "/oauth/callback"));
    let _ = srv.router();
}
