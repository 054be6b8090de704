//! Outgoing authentication against a local RFC 8693 token endpoint (with fault injection) and a
//! backend that records the `Authorization` header of every request it gets.
//!
//! The property at the heart of it: the credentials a backend sees come from the request being
//! made (or, for teardown, the principal's latest identity), never from an earlier one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use serde_json::json;
use sha2::{Digest, Sha256};
use vmcp::auth::current::CurrentIdentities;
use vmcp::auth::identity::Secret;
use vmcp::auth::outgoing::{OutgoingAuth, OutgoingAuthError, Sources, for_backend};
use vmcp::auth::{Binding, Caller, Identity};
use vmcp::config::{BackendAuthConfig, OutgoingAuthConfig};

const CLIENT_SECRET: &str = "gw-client-secret-VALUE";

// ---------------------------------------------------------------------------------------------
// The token endpoint.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ok,
    Slow,
    ServerError,
    InvalidGrant,
}

struct Idp {
    calls: AtomicUsize,
    mode: Mutex<Mode>,
    /// Added before every answer, to make concurrent misses overlap.
    delay: Mutex<Duration>,
    /// The form and `Authorization` header of the last request.
    last: Mutex<Option<(HashMap<String, String>, String)>>,
    expires_in: u64,
}

async fn token_endpoint(State(idp): State<Arc<Idp>>, headers: HeaderMap, body: String) -> Response {
    let n = idp.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let form: HashMap<String, String> = decode_form(&body).into_iter().collect();
    let auth =
        headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    *idp.last.lock().unwrap() = Some((form.clone(), auth));
    let delay = *idp.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let mode = *idp.mode.lock().unwrap();
    match mode {
        Mode::Slow => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Mode::ServerError => (StatusCode::SERVICE_UNAVAILABLE, "down").into_response(),
        Mode::InvalidGrant => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({
                "error": "invalid_grant",
                // A careless server might echo the token; it must not reach our errors.
                "error_description": format!("subject token {} is expired", form["subject_token"]),
            })),
        )
            .into_response(),
        Mode::Ok => {
            let subject = form.get("subject_token").cloned().unwrap_or_default();
            axum::Json(json!({
                "access_token": format!("exchanged-{n}-for-{}", prefix(&subject)),
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": idp.expires_in,
            }))
            .into_response()
        }
    }
}

/// First 8 hex digits of the SHA-256 of a token.
fn prefix(token: &str) -> String {
    Sha256::digest(token.as_bytes())[..4].iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_form(body: &str) -> Vec<(String, String)> {
    fn unescape(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (unescape(k), unescape(v))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The backend.

/// (`X-Caller`, `Authorization`) of every request, in arrival order.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

async fn backend_endpoint(State(seen): State<Seen>, headers: HeaderMap) -> StatusCode {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    seen.lock().unwrap().push((get("x-caller").unwrap_or_default(), get("authorization")));
    StatusCode::OK
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

struct World {
    idp: Arc<Idp>,
    token_url: String,
    backend_url: String,
    seen: Seen,
    identities: Arc<CurrentIdentities>,
    http: reqwest::Client,
}

impl World {
    fn sources(&self) -> Sources {
        Sources { identities: self.identities.clone(), http: self.http.clone(), upstream: None }
    }

    async fn start() -> World {
        Self::start_with(3600).await
    }

    async fn start_with(expires_in: u64) -> World {
        let idp = Arc::new(Idp {
            calls: AtomicUsize::new(0),
            mode: Mutex::new(Mode::Ok),
            delay: Mutex::new(Duration::ZERO),
            last: Mutex::new(None),
            expires_in,
        });
        let idp_addr =
            serve(Router::new().route("/token", post(token_endpoint)).with_state(idp.clone()))
                .await;
        let seen: Seen = Arc::default();
        let backend_addr =
            serve(Router::new().route("/mcp", post(backend_endpoint)).with_state(seen.clone()))
                .await;
        World {
            idp,
            token_url: format!("http://{idp_addr}/token"),
            backend_url: format!("http://{backend_addr}/mcp"),
            seen,
            identities: Arc::new(CurrentIdentities::default()),
            http: reqwest::Client::new(),
        }
    }

    fn calls(&self) -> usize {
        self.idp.calls.load(Ordering::SeqCst)
    }

    fn set_mode(&self, mode: Mode) {
        *self.idp.mode.lock().unwrap() = mode;
    }

    fn auth(&self, cfg: serde_json::Value) -> OutgoingAuth {
        let cfg: BackendAuthConfig = serde_json::from_value(cfg).unwrap();
        OutgoingAuth::from_config(&cfg, "api", &self.sources()).unwrap()
    }

    fn exchange_auth(&self) -> OutgoingAuth {
        self.auth(json!({
            "type": "token_exchange",
            "tokenExchange": {
                "tokenUrl": self.token_url,
                "clientId": "gateway",
                "clientSecret": CLIENT_SECRET,
                "audience": "api-backend",
                "scopes": ["read", "write"],
                "resource": "https://api.example/mcp",
            }
        }))
    }

    /// Sends one request to the backend as `caller`, tagged `tag`; returns the `Authorization`
    /// header the backend saw.
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
        let (_, authz) = seen.iter().rev().find(|(t, _)| t == tag).unwrap();
        Ok(authz.clone())
    }
}

fn identity(subject: &str, token: &str, lifetime: Duration) -> Arc<Identity> {
    Arc::new(Identity {
        issuer: "https://idp.example".into(),
        subject: subject.into(),
        claims: serde_json::Map::new(),
        token: Secret::new(token),
        expires_at: Some(SystemTime::now() + lifetime),
        scopes: vec![],
    })
}

fn user(subject: &str, token: &str) -> Caller {
    Caller::User(identity(subject, token, Duration::from_secs(3600)))
}

fn exchanged(n: usize, subject_token: &str) -> Option<String> {
    Some(format!("Bearer exchanged-{n}-for-{}", prefix(subject_token)))
}

// ---------------------------------------------------------------------------------------------
// Static and forwarded credentials.

#[tokio::test]
async fn header_injection_inline_and_from_env() {
    let w = World::start().await;
    let inline = w.auth(json!({
        "type": "header_injection",
        "headerInjection": { "headerName": "Authorization", "headerValue": "Bearer static-inline" },
    }));
    for caller in [Caller::Anonymous, Caller::System, user("alice", "alice-token")] {
        assert_eq!(
            w.send(&inline, &caller, "h1").await.unwrap().as_deref(),
            Some("Bearer static-inline")
        );
    }
    assert!(!format!("{inline:?}").contains("static-inline"), "{inline:?}");

    // SAFETY: no other test reads or writes this variable.
    unsafe { std::env::set_var("VMCP_TEST_OUTGOING_API_KEY", "key-from-env-VALUE") };
    let env = w.auth(json!({
        "type": "header_injection",
        "headerInjection": { "headerName": "X-API-Key", "headerValueEnv": "VMCP_TEST_OUTGOING_API_KEY" },
    }));
    let req = w.http.post(&w.backend_url).header("x-caller", "h2");
    let req = env.apply(&Caller::System, req).await.unwrap().build().unwrap();
    assert_eq!(req.headers()["x-api-key"], "key-from-env-VALUE");
    assert!(req.headers()["x-api-key"].is_sensitive());
    assert!(!format!("{env:?}").contains("key-from-env"), "{env:?}");
}

#[tokio::test]
async fn header_injection_env_errors_name_the_variable_not_the_value() {
    let w = World::start().await;
    let cfg = |var: &str| -> BackendAuthConfig {
        serde_json::from_value(json!({
            "type": "header_injection",
            "headerInjection": { "headerName": "X-API-Key", "headerValueEnv": var },
        }))
        .unwrap()
    };
    let build = |var: &str| {
        OutgoingAuth::from_config(&cfg(var), "api", &w.sources()).unwrap_err().to_string()
    };
    assert_eq!(
        build("VMCP_TEST_OUTGOING_UNSET"),
        "backend \"api\": environment variable VMCP_TEST_OUTGOING_UNSET is not set"
    );
    // SAFETY: no other test reads or writes this variable.
    unsafe { std::env::set_var("VMCP_TEST_OUTGOING_BAD", "secret-VALUE\nwith newline") };
    let e = build("VMCP_TEST_OUTGOING_BAD");
    assert!(e.contains("VMCP_TEST_OUTGOING_BAD"), "{e}");
    assert!(!e.contains("secret-VALUE"), "{e}");
}

#[tokio::test]
async fn passthrough_forwards_the_callers_own_token() {
    let w = World::start().await;
    let auth = w.auth(json!({ "type": "passthrough" }));
    let got = w.send(&auth, &user("alice", "alice-token-1"), "p1").await.unwrap();
    assert_eq!(got.as_deref(), Some("Bearer alice-token-1"));
    let got = w.send(&auth, &user("alice", "alice-token-2"), "p2").await.unwrap();
    assert_eq!(got.as_deref(), Some("Bearer alice-token-2"));
    assert_eq!(w.send(&auth, &Caller::Anonymous, "p3").await.unwrap(), None);
    assert_eq!(w.send(&auth, &Caller::System, "p4").await.unwrap(), None);
    assert!(!format!("{auth:?}").contains("alice"));
}

// ---------------------------------------------------------------------------------------------
// Token exchange.

#[tokio::test]
async fn token_exchange_sends_the_exchanged_token() {
    let w = World::start().await;
    let auth = w.exchange_auth();
    let got = w.send(&auth, &user("alice", "alice-token-1"), "t1").await.unwrap();
    assert_eq!(got, exchanged(1, "alice-token-1"));

    let (form, basic) = w.idp.last.lock().unwrap().clone().unwrap();
    let want = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("subject_token", "alice-token-1"),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token"),
        ("requested_token_type", "urn:ietf:params:oauth:token-type:access_token"),
        ("audience", "api-backend"),
        ("scope", "read write"),
        ("resource", "https://api.example/mcp"),
    ];
    let want: HashMap<String, String> =
        want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(form, want);
    let creds =
        base64::engine::general_purpose::STANDARD.encode(format!("gateway:{CLIENT_SECRET}"));
    assert_eq!(basic, format!("Basic {creds}"));
}

#[tokio::test]
async fn token_exchange_without_a_client_sends_no_client_authentication() {
    // ToolHive: only tokenUrl is required; without a client id and secret, no client
    // authentication goes out. A client id alone is not authentication either.
    let w = World::start().await;
    for (i, te) in [
        json!({ "tokenUrl": w.token_url, "subjectTokenType": "id_token" }),
        json!({ "tokenUrl": w.token_url, "clientId": "public", "subjectTokenType": "id_token" }),
    ]
    .into_iter()
    .enumerate()
    {
        let auth = w.auth(json!({ "type": "token_exchange", "tokenExchange": te }));
        let tag = format!("pub{i}");
        let got = w.send(&auth, &user("alice", "alice-id-token"), &tag).await.unwrap();
        assert!(got.is_some_and(|v| v.starts_with("Bearer exchanged-")));
        let (form, basic) = w.idp.last.lock().unwrap().clone().unwrap();
        assert_eq!(basic, "", "no client authentication header");
        assert!(!form.contains_key("client_id") && !form.contains_key("client_secret"));
        assert_eq!(form["subject_token_type"], "urn:ietf:params:oauth:token-type:id_token");
        // System work has no client to get a token of its own with: no credentials.
        assert_eq!(w.send(&auth, &Caller::System, &format!("sys{i}")).await.unwrap(), None);
    }
}

#[tokio::test]
async fn token_exchange_short_token_types_become_urns() {
    let w = World::start().await;
    for (short, urn) in [
        ("access_token", "urn:ietf:params:oauth:token-type:access_token"),
        ("id_token", "urn:ietf:params:oauth:token-type:id_token"),
        ("jwt", "urn:ietf:params:oauth:token-type:jwt"),
        ("urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:jwt"),
    ] {
        let auth = w.auth(json!({
            "type": "token_exchange",
            "tokenExchange": { "tokenUrl": w.token_url, "subjectTokenType": short },
        }));
        w.send(&auth, &user("alice", &format!("tok-{short}")), short).await.unwrap();
        let (form, _) = w.idp.last.lock().unwrap().clone().unwrap();
        assert_eq!(form["subject_token_type"], urn, "{short}");
    }
}

#[tokio::test]
async fn token_exchange_refuses_a_secret_without_client_and_unknown_token_types() {
    let w = World::start().await;
    let build = |te: serde_json::Value| {
        let cfg: BackendAuthConfig =
            serde_json::from_value(json!({ "type": "token_exchange", "tokenExchange": te }))
                .unwrap();
        OutgoingAuth::from_config(&cfg, "api", &w.sources()).unwrap_err().to_string()
    };
    let e = build(json!({ "tokenUrl": w.token_url, "clientSecret": CLIENT_SECRET }));
    assert!(e.contains("needs tokenExchange.clientId"), "{e}");
    assert!(!e.contains(CLIENT_SECRET), "{e}");
    let e = build(json!({ "tokenUrl": w.token_url, "subjectTokenType": "refresh_token" }));
    assert!(e.contains("subjectTokenType") && e.contains("refresh_token"), "{e}");
}

#[tokio::test]
async fn same_subject_token_is_exchanged_once() {
    let w = World::start().await;
    let auth = w.exchange_auth();
    let alice = user("alice", "alice-token-1");
    assert_eq!(w.send(&auth, &alice, "c1").await.unwrap(), exchanged(1, "alice-token-1"));
    assert_eq!(w.send(&auth, &alice, "c2").await.unwrap(), exchanged(1, "alice-token-1"));
    // Another `Identity` value with the same token bytes: the cache is keyed by the token.
    let again = user("alice", "alice-token-1");
    assert_eq!(w.send(&auth, &again, "c3").await.unwrap(), exchanged(1, "alice-token-1"));
    assert_eq!(w.calls(), 1);
}

#[tokio::test]
async fn a_new_subject_token_is_exchanged_anew() {
    let w = World::start().await;
    let auth = w.exchange_auth();
    let got = w.send(&auth, &user("alice", "alice-token-1"), "n1").await.unwrap();
    assert_eq!(got, exchanged(1, "alice-token-1"));
    // Alice's client refreshed her token: the backend must see the exchange of the new one,
    // never the cached exchange of the old.
    let got = w.send(&auth, &user("alice", "alice-token-2"), "n2").await.unwrap();
    assert_eq!(got, exchanged(2, "alice-token-2"));
    assert_eq!(w.calls(), 2);
}

#[tokio::test]
async fn teardown_uses_the_principals_latest_identity() {
    let w = World::start().await;
    let auth = w.exchange_auth();
    let old = identity("alice", "alice-token-old", Duration::from_secs(600));
    let new = identity("alice", "alice-token-new", Duration::from_secs(3600));
    // The session was opened (and its token exchanged) with the old token.
    w.identities.record(&old);
    let got = w.send(&auth, &Caller::User(old.clone()), "d0").await.unwrap();
    assert_eq!(got, exchanged(1, "alice-token-old"));
    w.identities.record(&new);

    let teardown = Caller::Teardown(Caller::User(old).binding());
    let got = w.send(&auth, &teardown, "d1").await.unwrap();
    assert_eq!(got, exchanged(2, "alice-token-new"));

    // Nobody recorded for this principal: no credentials to use.
    let stranger = Caller::Teardown(Binding::Principal {
        issuer: "https://idp.example".into(),
        subject: "mallory".into(),
    });
    let e = w.send(&auth, &stranger, "d2").await.unwrap_err();
    assert!(matches!(e, OutgoingAuthError::Reauthenticate(_)), "{e:?}");
}

#[tokio::test]
async fn concurrent_callers_each_get_their_own_exchange_once() {
    let w = Arc::new(World::start().await);
    *w.idp.delay.lock().unwrap() = Duration::from_millis(300);
    let auth = w.exchange_auth();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (w, auth) = (w.clone(), auth.clone());
        tasks.push(tokio::spawn(async move {
            let p = i % 10;
            let caller = user(&format!("user-{p}"), &format!("token-of-user-{p}"));
            let req = w.http.post(&w.backend_url).header("x-caller", format!("user-{p}"));
            let resp = auth.apply(&caller, req).await.unwrap().send().await.unwrap();
            assert_eq!(resp.status(), 200);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(w.calls(), 10, "concurrent misses for one subject must share one exchange");
    let seen = w.seen.lock().unwrap();
    assert_eq!(seen.len(), 50);
    let mut per_user: HashMap<&str, &str> = HashMap::new();
    for (tag, authz) in seen.iter() {
        let authz = authz.as_deref().unwrap();
        let p = tag.strip_prefix("user-").unwrap();
        let want_suffix = format!("-for-{}", prefix(&format!("token-of-user-{p}")));
        assert!(
            authz.starts_with("Bearer exchanged-") && authz.ends_with(&want_suffix),
            "{tag}: {authz}"
        );
        // One exchanged token per user, used by all five of that user's requests.
        assert_eq!(*per_user.entry(tag).or_insert(authz), authz, "{tag}");
    }
    assert_eq!(per_user.len(), 10);
}

#[tokio::test]
async fn short_lived_exchanged_tokens_are_not_reused_past_their_lifetime() {
    // expires_in 2s → reused for 1.8s at most (10% margin for short tokens).
    let w = World::start_with(2).await;
    let auth = w.exchange_auth();
    let alice = user("alice", "alice-token-1");
    assert_eq!(w.send(&auth, &alice, "e1").await.unwrap(), exchanged(1, "alice-token-1"));
    assert_eq!(w.send(&auth, &alice, "e2").await.unwrap(), exchanged(1, "alice-token-1"));
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(w.send(&auth, &alice, "e3").await.unwrap(), exchanged(2, "alice-token-1"));
}

/// An anonymous client request cannot be exchanged for anything: it must authenticate.
/// Background work (`Caller::System`) never borrows a user's token: it gets the gateway's own, by
/// a client credentials grant with the strategy's client (as ToolHive's health checks do), or,
/// when the endpoint will not grant one, goes without credentials.
#[tokio::test]
async fn exchange_needs_an_authenticated_caller() {
    let w = World::start().await;
    let auth = w.exchange_auth();
    match w.send(&auth, &Caller::Anonymous, "a").await {
        Err(OutgoingAuthError::Reauthenticate(m)) => {
            assert_eq!(m, "token exchange needs an authenticated caller")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.calls(), 0);
    let system = w.send(&auth, &Caller::System, "b").await.expect("system request goes out");
    assert_eq!(system, Some(format!("Bearer exchanged-1-for-{}", prefix(""))));
    let (form, client) = w.idp.last.lock().unwrap().clone().expect("a grant");
    assert_eq!(form.get("grant_type").map(String::as_str), Some("client_credentials"));
    assert!(!form.contains_key("subject_token"), "{form:?}");
    assert!(client.starts_with("Basic "), "the gateway's client authenticates: {client}");
    // Cached: the next System request asks for nothing.
    w.send(&auth, &Caller::System, "c").await.unwrap();
    assert_eq!(w.calls(), 1);

    let w = World::start().await;
    w.set_mode(Mode::ServerError);
    let auth = w.exchange_auth();
    let system = w.send(&auth, &Caller::System, "d").await.expect("system request goes out");
    assert_eq!(system, None, "no token of its own: background work carries no credentials");
}

#[tokio::test]
async fn invalid_grant_means_reauthenticate() {
    let w = World::start().await;
    w.set_mode(Mode::InvalidGrant);
    let auth = w.exchange_auth();
    let e = w.send(&auth, &user("alice", "alice-token-SECRETISH"), "g1").await.unwrap_err();
    let OutgoingAuthError::Reauthenticate(m) = &e else { panic!("{e:?}") };
    assert!(m.contains("invalid_grant"), "{m}");
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains("SECRETISH") && !shown.contains(CLIENT_SECRET), "{shown}");
    assert!(w.seen.lock().unwrap().is_empty(), "no request reaches the backend");
}

#[tokio::test]
async fn server_errors_are_unavailable_and_negatively_cached() {
    let w = World::start().await;
    w.set_mode(Mode::ServerError);
    let auth = w.exchange_auth();
    let alice = user("alice", "alice-token-1");
    let e = w.send(&auth, &alice, "s1").await.unwrap_err();
    assert!(matches!(&e, OutgoingAuthError::Unavailable(m) if m.contains("HTTP 503")), "{e:?}");
    assert_eq!(w.calls(), 1);

    // The endpoint recovers, but the failure is remembered for a few seconds for this key.
    w.set_mode(Mode::Ok);
    let e = w.send(&auth, &alice, "s2").await.unwrap_err();
    assert!(matches!(e, OutgoingAuthError::Unavailable(_)), "{e:?}");
    assert_eq!(w.calls(), 1, "a negatively cached failure makes no request");

    // Other callers are not affected by Alice's cached failure.
    let got = w.send(&auth, &user("bob", "bob-token-1"), "s3").await.unwrap();
    assert_eq!(got, exchanged(2, "bob-token-1"));

    // After the window, Alice's token is exchanged again.
    tokio::time::sleep(Duration::from_millis(5300)).await;
    assert_eq!(w.send(&auth, &alice, "s4").await.unwrap(), exchanged(3, "alice-token-1"));
}

#[tokio::test]
async fn a_slow_endpoint_is_bounded_by_the_timeout() {
    let w = World::start().await;
    w.set_mode(Mode::Slow);
    let auth = w.exchange_auth().with_exchange_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let e = w.send(&auth, &user("alice", "alice-token-1"), "w1").await.unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let OutgoingAuthError::Unavailable(m) = &e else { panic!("{e:?}") };
    assert!(m.contains("no answer within 300ms"), "{m}");
}

#[tokio::test]
async fn secrets_never_show_in_debug_or_errors() {
    let w = World::start().await;
    let auth = w.exchange_auth();
    let debug = format!("{auth:?}");
    assert!(debug.contains("TokenExchange") && debug.contains("gateway"), "{debug}");
    assert!(!debug.contains(CLIENT_SECRET), "{debug}");
    // After a successful exchange the cache holds tokens; Debug still shows none.
    w.send(&auth, &user("alice", "alice-token-XYZ"), "x1").await.unwrap();
    let debug = format!("{auth:?}");
    assert!(!debug.contains("alice-token-XYZ") && !debug.contains("exchanged-"), "{debug}");

    // Every failure mode, with distinctive tokens.
    for mode in [Mode::ServerError, Mode::InvalidGrant] {
        w.set_mode(mode);
        let e = w.send(&auth, &user("bob", "bob-token-XYZ"), "x2").await.unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("bob-token-XYZ") && !shown.contains(CLIENT_SECRET), "{shown}");
        let auth = w.exchange_auth(); // fresh cache: no negative entry from the previous mode
        let e = w.send(&auth, &user("bob", "bob-token-XYZ"), "x3").await.unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("bob-token-XYZ") && !shown.contains(CLIENT_SECRET), "{shown}");
    }
    // An endpoint nobody listens on.
    let dead: BackendAuthConfig = serde_json::from_value(json!({
        "type": "token_exchange",
        "tokenExchange": { "tokenUrl": "http://127.0.0.1:9/token", "clientId": "gateway", "clientSecret": CLIENT_SECRET },
    }))
    .unwrap();
    let dead = OutgoingAuth::from_config(&dead, "api", &w.sources()).unwrap();
    let e = w.send(&dead, &user("bob", "bob-token-XYZ"), "x4").await.unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(matches!(e, OutgoingAuthError::Unavailable(_)), "{shown}");
    assert!(!shown.contains("bob-token-XYZ") && !shown.contains(CLIENT_SECRET), "{shown}");

    // Configuration errors name keys, not values.
    let both: BackendAuthConfig = serde_json::from_value(json!({
        "type": "token_exchange",
        "tokenExchange": {
            "tokenUrl": w.token_url, "clientId": "gateway",
            "clientSecret": CLIENT_SECRET, "clientSecretEnv": "SOME_VAR",
        },
    }))
    .unwrap();
    let e = OutgoingAuth::from_config(&both, "api", &w.sources()).unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(shown.contains("not both") && !shown.contains(CLIENT_SECRET), "{shown}");
}

#[tokio::test]
async fn for_backend_picks_the_named_entry_then_the_default() {
    let w = World::start().await;
    let cfg: OutgoingAuthConfig = serde_json::from_value(json!({
        "source": "inline",
        "default": { "type": "passthrough" },
        "backends": {
            "keyed": {
                "type": "header_injection",
                "headerInjection": { "headerName": "X-API-Key", "headerValue": "k1" },
            },
        },
    }))
    .unwrap();
    let keyed = for_backend(&cfg, "keyed", &w.sources()).unwrap();
    let other = for_backend(&cfg, "other", &w.sources()).unwrap();
    assert!(format!("{keyed:?}").contains("HeaderInjection"));
    assert_eq!(
        w.send(&other, &user("alice", "alice-token"), "f1").await.unwrap().as_deref(),
        Some("Bearer alice-token")
    );
    let none = for_backend(&OutgoingAuthConfig::default(), "x", &w.sources()).unwrap();
    assert_eq!(w.send(&none, &user("alice", "alice-token"), "f2").await.unwrap(), None);
}
