//! Harness for the `authserver_*` tests: vmcp's authorization server on a free loopback port, a
//! stand-in upstream IdP (an in-test axum endpoint that approves at once and redirects back
//! with a code, and a `Federation` that redeems those codes with PKCE checked), an in-memory
//! vault, and a client that follows redirects by hand.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::future::BoxFuture;
use reqwest::Url;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use vmcp::auth::identity::Secret;
use vmcp::auth::server::{AuthServer, MemoryAuthStore, Settings};
use vmcp::auth::upstream::{
    AuthorizationRequest, Federation, FederationError, TokenError, TokenSet, UpstreamIdentity,
    UpstreamTokens,
};

pub const RESOURCE: &str = "https://vmcp.example.com/mcp";

/// A PKCE verifier and its S256 challenge.
pub fn pkce() -> (String, String) {
    let verifier = format!("v{}", "x".repeat(50)) + &rand_suffix();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn rand_suffix() -> String {
    use rand::RngCore as _;
    let mut b = [0u8; 12];
    rand::rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// Serves `router` on a free loopback port (with the peer address in each request).
pub async fn serve_on(listener: TcpListener, router: axum::Router) {
    tokio::spawn(async move {
        axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .ok();
    });
}

pub async fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

// ---------------------------------------------------------------------------------------------
// The stand-in upstream IdP
// ---------------------------------------------------------------------------------------------

struct Issued {
    upstream: String,
    challenge: String,
    redirect_uri: String,
    nonce: String,
}

#[derive(Default)]
pub struct IdpState {
    codes: Mutex<HashMap<String, Issued>>,
    /// Upstream name → subject it reports.
    pub subjects: Mutex<HashMap<String, String>>,
    /// Upstreams whose login the user refuses.
    pub refuse: Mutex<Vec<String>>,
    /// Authorization requests seen, by upstream, in order.
    pub visits: Mutex<Vec<String>>,
    /// Codes redeemed, by upstream.
    pub exchanges: Mutex<Vec<String>>,
}

/// The upstream IdPs: `authorization_url` points at the in-test endpoint, which approves at
/// once and sends the browser back to vmcp's callback with a code.
pub struct TestFederation {
    pub names: Vec<String>,
    pub base: String,
    pub state: Arc<IdpState>,
}

#[derive(serde::Deserialize)]
struct AuthorizeQuery {
    state: String,
    redirect_uri: String,
    code_challenge: String,
    nonce: String,
}

async fn idp_authorize(
    State(st): State<Arc<IdpState>>,
    Path(upstream): Path<String>,
    Query(q): Query<AuthorizeQuery>,
) -> Response {
    st.visits.lock().unwrap().push(upstream.clone());
    let mut back = Url::parse(&q.redirect_uri).unwrap();
    if st.refuse.lock().unwrap().contains(&upstream) {
        back.query_pairs_mut().append_pair("error", "access_denied").append_pair("state", &q.state);
        return Redirect::to(back.as_str()).into_response();
    }
    let code = format!("code-{upstream}-{}", rand_suffix());
    st.codes.lock().unwrap().insert(
        code.clone(),
        Issued {
            upstream: upstream.clone(),
            challenge: q.code_challenge,
            redirect_uri: q.redirect_uri.clone(),
            nonce: q.nonce,
        },
    );
    back.query_pairs_mut().append_pair("code", &code).append_pair("state", &q.state);
    Redirect::to(back.as_str()).into_response()
}

impl TestFederation {
    /// Starts the IdP endpoint; every upstream reports subject `alice` unless told otherwise.
    pub async fn start(names: &[&str]) -> Arc<Self> {
        let state = Arc::new(IdpState::default());
        let router = axum::Router::new()
            .route("/authorize/{upstream}", get(idp_authorize))
            .with_state(state.clone());
        let (l, port) = listener().await;
        serve_on(l, router).await;
        Arc::new(Self {
            names: names.iter().map(|s| s.to_string()).collect(),
            base: format!("http://127.0.0.1:{port}"),
            state,
        })
    }

    pub fn visits(&self) -> Vec<String> {
        self.state.visits.lock().unwrap().clone()
    }
}

impl Federation for TestFederation {
    fn upstreams(&self) -> Vec<String> {
        self.names.clone()
    }

    fn authorization_url<'a>(
        &'a self,
        upstream: &'a str,
        request: AuthorizationRequest<'a>,
    ) -> BoxFuture<'a, Result<String, FederationError>> {
        Box::pin(async move {
            if !self.names.iter().any(|n| n == upstream) {
                return Err(FederationError::UnknownUpstream(upstream.into()));
            }
            let mut url = Url::parse(&format!("{}/authorize/{upstream}", self.base)).unwrap();
            url.query_pairs_mut()
                .append_pair("state", request.state)
                .append_pair("redirect_uri", request.redirect_uri)
                .append_pair("code_challenge", request.code_challenge)
                .append_pair("nonce", request.nonce);
            Ok(url.to_string())
        })
    }

    fn exchange_code<'a>(
        &'a self,
        upstream: &'a str,
        code: &'a str,
        code_verifier: &'a str,
        redirect_uri: &'a str,
        nonce: &'a str,
    ) -> BoxFuture<'a, Result<(TokenSet, UpstreamIdentity), FederationError>> {
        Box::pin(async move {
            let refused = |reason: &str| FederationError::Refused {
                upstream: upstream.into(),
                reason: reason.into(),
            };
            let issued =
                self.state.codes.lock().unwrap().remove(code).ok_or(refused("bad code"))?;
            let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(code_verifier.as_bytes()));
            if issued.upstream != upstream || issued.challenge != challenge {
                return Err(refused("PKCE or upstream mismatch"));
            }
            if issued.redirect_uri != redirect_uri || issued.nonce != nonce {
                return Err(refused("redirect_uri or nonce mismatch"));
            }
            self.state.exchanges.lock().unwrap().push(upstream.to_string());
            let subject = self
                .state
                .subjects
                .lock()
                .unwrap()
                .get(upstream)
                .cloned()
                .unwrap_or_else(|| "alice".into());
            let tokens = TokenSet {
                access_token: Secret::new(format!("{upstream}-at-{}", rand_suffix())),
                refresh_token: Some(Secret::new("rt")),
                id_token: None,
                expires_at: None,
                scope: None,
            };
            let who = UpstreamIdentity {
                subject,
                name: Some("Alice Example".into()),
                email: Some("alice@example.com".into()),
            };
            Ok((tokens, who))
        })
    }
}

/// The vault: (user, upstream) → tokens.
#[derive(Default)]
pub struct TestVault {
    pub tokens: Mutex<HashMap<(String, String), TokenSet>>,
}

impl UpstreamTokens for TestVault {
    fn store<'a>(
        &'a self,
        user: &'a str,
        upstream: &'a str,
        tokens: TokenSet,
    ) -> BoxFuture<'a, Result<(), TokenError>> {
        self.tokens.lock().unwrap().insert((user.into(), upstream.into()), tokens);
        Box::pin(async { Ok(()) })
    }

    fn access_token<'a>(
        &'a self,
        user: &'a str,
        upstream: &'a str,
    ) -> BoxFuture<'a, Result<Secret, TokenError>> {
        let t = self.tokens.lock().unwrap().get(&(user.into(), upstream.into())).cloned();
        Box::pin(async move {
            t.map(|t| t.access_token).ok_or(TokenError::Reauthenticate {
                upstream: upstream.into(),
                reason: "no grant".into(),
            })
        })
    }

    fn holds<'a>(&'a self, user: &'a str, upstream: &'a str) -> BoxFuture<'a, bool> {
        let held = self.tokens.lock().unwrap().contains_key(&(user.into(), upstream.into()));
        Box::pin(async move { held })
    }

    fn forget<'a>(&'a self, user: &'a str) -> BoxFuture<'a, ()> {
        self.tokens.lock().unwrap().retain(|(u, _), _| u != user);
        Box::pin(async {})
    }
}

// ---------------------------------------------------------------------------------------------
// vmcp's authorization server under test
// ---------------------------------------------------------------------------------------------

pub struct Harness {
    pub server: Arc<AuthServer>,
    pub issuer: String,
    /// Where this server listens, with the issuer's path (the issuer itself unless a test set
    /// another one).
    pub base: String,
    pub fed: Arc<TestFederation>,
    pub vault: Arc<TestVault>,
    pub http: reqwest::Client,
}

/// Settings for an issuer on `port` (path `path`, "" for none) serving [`RESOURCE`].
pub fn settings(port: u16, path: &str) -> Settings {
    let mut s = Settings::new(format!("http://127.0.0.1:{port}{path}"));
    s.allowed_audiences = vec![RESOURCE.into()];
    s
}

impl Harness {
    /// An authorization server for `upstreams`; `tune` adjusts its settings.
    pub async fn start(upstreams: &[&str], tune: impl FnOnce(&mut Settings)) -> Harness {
        Self::start_at("", upstreams, tune).await
    }

    pub async fn start_at(
        path: &str,
        upstreams: &[&str],
        tune: impl FnOnce(&mut Settings),
    ) -> Harness {
        let fed = TestFederation::start(upstreams).await;
        Self::start_with(path, fed, tune).await
    }

    pub async fn start_with(
        path: &str,
        fed: Arc<TestFederation>,
        tune: impl FnOnce(&mut Settings),
    ) -> Harness {
        let (l, port) = listener().await;
        let mut s = settings(port, path);
        tune(&mut s);
        let vault = Arc::new(TestVault::default());
        let store = Arc::new(MemoryAuthStore::new(&s.bounds));
        let issuer = s.issuer.clone();
        let base = format!("http://127.0.0.1:{port}{path}");
        let server =
            AuthServer::new(s, fed.clone(), vault.clone(), store, reqwest::Client::new()).unwrap();
        serve_on(l, server.router()).await;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap();
        Harness { server, issuer, base, fed, vault, http }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Registers a public client; returns its `client_id`.
    pub async fn register(&self, redirect_uris: &[&str]) -> String {
        let r = self
            .http
            .post(self.url("/oauth/register"))
            .json(&serde_json::json!({ "redirect_uris": redirect_uris, "client_name": "test" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        body["client_id"].as_str().unwrap().to_string()
    }

    /// GETs `url` and, while the answer is a redirect that does not lead to `stop_at`, follows
    /// it. Returns the last response and every URL visited.
    pub async fn follow(&self, url: &str, stop_at: &str) -> (reqwest::Response, Vec<String>) {
        let mut visited = vec![url.to_string()];
        let mut resp = self.http.get(url).send().await.unwrap();
        for _ in 0..20 {
            if !resp.status().is_redirection() {
                break;
            }
            let loc = location(&resp);
            if loc.starts_with(stop_at) {
                break;
            }
            visited.push(loc.clone());
            resp = self.http.get(&loc).send().await.unwrap();
        }
        (resp, visited)
    }

    /// Runs `/oauth/authorize` with `params` (client_id, redirect_uri and S256 PKCE added) up to
    /// the redirect back to `redirect_uri`; returns that Location's query parameters.
    pub async fn authorize(
        &self,
        client_id: &str,
        redirect_uri: &str,
        challenge: &str,
        extra: &[(&str, &str)],
    ) -> HashMap<String, String> {
        let mut url = Url::parse(&self.url("/oauth/authorize")).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", "client-state");
        for (k, v) in extra {
            url.query_pairs_mut().append_pair(k, v);
        }
        let (resp, _) = self.follow(url.as_str(), redirect_uri).await;
        assert_eq!(resp.status(), 302, "{}", resp.text().await.unwrap_or_default());
        let loc = location(&resp);
        assert!(loc.starts_with(redirect_uri), "{loc}");
        query_of(&loc)
    }

    /// POSTs a token request.
    pub async fn token(&self, form: &[(&str, &str)]) -> (u16, Value, reqwest::header::HeaderMap) {
        let r = self.http.post(self.url("/oauth/token")).form(form).send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body: Value = r.json().await.unwrap();
        (status, body, headers)
    }

    /// A whole login for a registered client: (access token, refresh token).
    pub async fn login(&self, client_id: &str, redirect_uri: &str) -> (String, Option<String>) {
        let (verifier, challenge) = pkce();
        let q = self.authorize(client_id, redirect_uri, &challenge, &[]).await;
        let code = q.get("code").expect("code");
        let (status, body, _) = self
            .token(&[
                ("grant_type", "authorization_code"),
                ("client_id", client_id),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", &verifier),
            ])
            .await;
        assert_eq!(status, 200, "{body}");
        (
            body["access_token"].as_str().unwrap().to_string(),
            body["refresh_token"].as_str().map(String::from),
        )
    }
}

pub fn location(resp: &reqwest::Response) -> String {
    resp.headers()[reqwest::header::LOCATION].to_str().unwrap().to_string()
}

pub fn query_of(url: &str) -> HashMap<String, String> {
    Url::parse(url).unwrap().query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}
