//! Stand-in token endpoints for the `obo` and `xaa` tests: an IdP that answers Entra's
//! on-behalf-of grant or the first xaa step (an ID-JAG for an ID token), and the backend's
//! authorization server that answers the second xaa step. Each checks every parameter of every
//! request (the exact set of form keys and their values, and the client authentication) and
//! records what is wrong; tests assert nothing was. Plus a backend that records the
//! `Authorization` header of each request.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";

/// First 8 hex digits of the SHA-256 of a token: how answers name the token they were for.
pub fn prefix(token: &str) -> String {
    Sha256::digest(token.as_bytes())[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// `Basic base64(id:secret)` (both plain: the tests' values need no form encoding).
pub fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

/// Which token endpoint a stub is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// Entra on-behalf-of: subject in `assertion`.
    Obo,
    /// xaa step 1: subject in `subject_token`; answers an ID-JAG.
    XaaIdp,
    /// xaa step 2: the ID-JAG in `assertion`; answers an access token.
    XaaTarget,
    /// A client credentials grant (the gateway's own token): no subject.
    ClientCredentials,
}

/// How a stub answers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Ok,
    InvalidGrant,
    ServerError,
    Slow,
    /// XaaIdp: `issued_token_type` is an access token.
    WrongIssuedType,
    /// XaaIdp: the ID-JAG's `aud` is another server.
    WrongAudience,
    /// XaaIdp: the ID-JAG has no `resource`.
    NoResource,
    /// XaaIdp: `token_type` Bearer instead of N_A.
    BearerTokenType,
}

/// How the gateway must authenticate.
#[derive(Clone, Debug)]
pub enum ClientCheck {
    /// No `Authorization` header, no client credentials in the form.
    None,
    /// This exact `Authorization` header, nothing in the form.
    Basic(String),
    /// `client_id` and `client_secret` in the form, no `Authorization` header.
    Post { id: String, secret: String },
}

pub struct Stub {
    pub kind: Kind,
    pub calls: AtomicUsize,
    pub mode: Mutex<Mode>,
    /// Added before each answer, so concurrent misses overlap.
    pub delay: Mutex<Duration>,
    /// Every form key and value expected besides the subject (`assertion` / `subject_token`).
    pub expect: BTreeMap<&'static str, String>,
    pub client: ClientCheck,
    /// XaaIdp: `aud` and `resource` of the ID-JAGs minted. XaaTarget: the `aud` required.
    pub audience: String,
    pub resource: Option<String>,
    pub expires_in: u64,
    /// What was wrong with requests (empty when all were right).
    pub mismatches: Mutex<Vec<String>>,
    /// Subjects received, in order.
    pub subjects: Mutex<Vec<String>>,
}

impl Stub {
    pub fn new(kind: Kind, expect: &[(&'static str, &str)], client: ClientCheck) -> Stub {
        Stub {
            kind,
            calls: AtomicUsize::new(0),
            mode: Mutex::new(Mode::Ok),
            delay: Mutex::new(Duration::ZERO),
            expect: expect.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            client,
            audience: String::new(),
            resource: None,
            expires_in: 3600,
            mismatches: Mutex::default(),
            subjects: Mutex::default(),
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn mismatches(&self) -> Vec<String> {
        self.mismatches.lock().unwrap().clone()
    }

    fn subject_key(&self) -> Option<&'static str> {
        match self.kind {
            Kind::Obo | Kind::XaaTarget => Some("assertion"),
            Kind::XaaIdp => Some("subject_token"),
            Kind::ClientCredentials => None,
        }
    }

    /// Everything wrong with one request, and its subject.
    fn check(&self, headers: &HeaderMap, body: &str) -> (Vec<String>, String) {
        let mut wrong = Vec::new();
        let pairs: Vec<(String, String)> = reqwest::Url::parse(&format!("http://stub/?{body}"))
            .map(|u| u.query_pairs().into_owned().collect())
            .unwrap_or_default();
        let mut form: HashMap<String, String> = HashMap::new();
        for (k, v) in pairs {
            if form.insert(k.clone(), v).is_some() {
                wrong.push(format!("{k} sent twice"));
            }
        }
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
        if content_type != Some("application/x-www-form-urlencoded") {
            wrong.push(format!("content-type {content_type:?}"));
        }
        let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
        match &self.client {
            ClientCheck::None | ClientCheck::Post { .. } if authorization.is_some() => {
                wrong.push("unexpected Authorization header".into())
            }
            ClientCheck::Basic(want) if authorization != Some(want.as_str()) => {
                wrong.push(format!("Authorization {authorization:?}, want {want:?}"))
            }
            _ => {}
        }
        if let ClientCheck::Post { id, secret } = &self.client {
            if form.remove("client_id").as_ref() != Some(id) {
                wrong.push("client_id missing or wrong".into());
            }
            if form.remove("client_secret").as_ref() != Some(secret) {
                wrong.push("client_secret missing or wrong".into());
            }
        }
        let subject = match self.subject_key() {
            Some(key) => {
                let subject = form.remove(key).unwrap_or_default();
                if subject.is_empty() {
                    wrong.push(format!("no {key}"));
                }
                subject
            }
            None => String::new(),
        };
        let got: BTreeMap<&str, &str> =
            form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let want: BTreeMap<&str, &str> =
            self.expect.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if got != want {
            wrong.push(format!("form {got:?}, want {want:?} besides the subject"));
        }
        if self.kind == Kind::XaaTarget {
            // The assertion must be an ID-JAG the IdP stub minted for this server.
            match claims(&subject) {
                Some((h, c)) if h["typ"] == "oauth-id-jag+jwt" && c["aud"] == *self.audience => {}
                other => wrong.push(format!("assertion is not an ID-JAG for us: {other:?}")),
            }
        }
        (wrong, subject)
    }
}

/// Header and claims of an unsigned-looking JWT.
pub fn claims(jwt: &str) -> Option<(Value, Value)> {
    let mut p = jwt.split('.');
    let d = |s: &str| serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(s).ok()?).ok();
    Some((d(p.next()?)?, d(p.next()?)?))
}

/// An ID-JAG-shaped JWT (its signature is not checked by anyone here).
pub fn jwt(header: Value, claims: Value) -> String {
    let e = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.c2lnbmF0dXJl", e(header), e(claims))
}

async fn token(State(stub): State<Arc<Stub>>, headers: HeaderMap, body: String) -> Response {
    let n = stub.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let (wrong, subject) = stub.check(&headers, &body);
    stub.subjects.lock().unwrap().push(subject.clone());
    let delay = *stub.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    if !wrong.is_empty() {
        stub.mismatches.lock().unwrap().extend(wrong);
        let e = json!({ "error": "invalid_request" });
        return (StatusCode::BAD_REQUEST, axum::Json(e)).into_response();
    }
    let mode = *stub.mode.lock().unwrap();
    match mode {
        Mode::Slow => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        Mode::ServerError => return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response(),
        Mode::InvalidGrant => {
            let e = json!({
                "error": "invalid_grant",
                // A careless server echoes the token; it must not reach the gateway's errors.
                "error_description": format!("assertion {subject} is expired"),
            });
            return (StatusCode::BAD_REQUEST, axum::Json(e)).into_response();
        }
        _ => {}
    }
    let p = prefix(&subject);
    let answer = match stub.kind {
        Kind::Obo => json!({
            "access_token": format!("obo-{n}-for-{p}"),
            "token_type": "Bearer",
            "expires_in": stub.expires_in,
        }),
        Kind::XaaIdp => {
            let aud = if mode == Mode::WrongAudience {
                "https://other-as.example"
            } else {
                &stub.audience
            };
            let mut c = json!({ "iss": "https://idp.example", "sub": p, "aud": aud, "jti": format!("jag-{n}") });
            if let (Some(r), false) = (&stub.resource, mode == Mode::NoResource) {
                c["resource"] = json!(r);
            }
            let issued = if mode == Mode::WrongIssuedType {
                "urn:ietf:params:oauth:token-type:access_token"
            } else {
                ID_JAG
            };
            let token_type = if mode == Mode::BearerTokenType { "Bearer" } else { "N_A" };
            json!({
                "access_token": jwt(json!({"alg": "ES256", "typ": "oauth-id-jag+jwt"}), c),
                "issued_token_type": issued,
                "token_type": token_type,
                "expires_in": 300,
            })
        }
        Kind::ClientCredentials => json!({
            "access_token": format!("cc-{n}"),
            "token_type": "Bearer",
            "expires_in": stub.expires_in,
        }),
        Kind::XaaTarget => {
            let sub = claims(&subject).map(|(_, c)| c["sub"].as_str().unwrap_or("").to_owned());
            json!({
                "access_token": format!("xaa-{n}-for-{}", sub.unwrap_or_default()),
                "token_type": "Bearer",
                "expires_in": stub.expires_in,
            })
        }
    };
    axum::Json(answer).into_response()
}

pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// Serves `stub` at `/token`; returns its URL.
pub async fn serve_stub(stub: Arc<Stub>) -> String {
    let addr = serve(Router::new().route("/token", post(token)).with_state(stub)).await;
    format!("http://{addr}/token")
}

/// (`X-Caller`, `Authorization`) of every request, in arrival order.
pub type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

async fn backend(State(seen): State<Seen>, headers: HeaderMap) -> StatusCode {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    seen.lock().unwrap().push((get("x-caller").unwrap_or_default(), get("authorization")));
    StatusCode::OK
}

/// A backend recording `Authorization`; returns its URL and what it saw.
pub async fn serve_backend() -> (String, Seen) {
    let seen = Seen::default();
    let addr = serve(Router::new().route("/mcp", post(backend)).with_state(seen.clone())).await;
    (format!("http://{addr}/mcp"), seen)
}
