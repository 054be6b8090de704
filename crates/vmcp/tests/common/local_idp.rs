//! An OIDC provider inside the test process, for the identity invariant tests: no Node needed.
//!
//! At start it generates an ES256 (P-256) key, serves `/.well-known/openid-configuration` and
//! `/jwks` from axum on a free loopback port (on its own thread and runtime, so it answers
//! whatever the test's runtime is doing), and mints tokens with chosen claims. Stopped on drop.
//!
//! The interop tests keep the real provider (`oauth2-mock-server`, [`super::idp`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The audience tokens carry unless a test says otherwise.
pub const AUDIENCE: &str = "vmcp-test";
const KID: &str = "local-1";

/// The provider; its server stops when dropped.
pub struct LocalIdp {
    /// The issuer, `http://127.0.0.1:PORT`.
    pub url: String,
    /// The loopback port it serves plain HTTP on.
    port: u16,
    key: EncodingKey,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A fresh P-256 key: its signing form and its public JWK under `kid`.
fn generate(kid: &str) -> (EncodingKey, Value) {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("generate key");
    let pkcs8 = pair.to_pkcs8v1().expect("pkcs8");
    // Uncompressed point: 0x04 || x || y.
    let point = pair.public_key().as_ref();
    assert_eq!((point.len(), point[0]), (65, 4), "unexpected public key form");
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
        "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..]),
    });
    (EncodingKey::from_ec_der(pkcs8.as_ref()), jwk)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

impl LocalIdp {
    /// Generates the key and serves discovery and JWKS; returns once the server listens.
    pub fn start() -> LocalIdp {
        Self::start_as(None)
    }

    /// [`LocalIdp::start`], the provider known by `issuer` (its discovery document and tokens
    /// say so) instead of its own address: a provider behind a TLS front, say. Returns it and
    /// the port it serves plain HTTP on.
    pub fn start_behind(issuer: &str) -> (LocalIdp, u16) {
        let idp = Self::start_as(Some(issuer));
        let port = idp.port;
        (idp, port)
    }

    fn start_as(issuer: Option<&str>) -> LocalIdp {
        let (key, jwk) = generate(KID);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = issuer.map_or_else(|| format!("http://127.0.0.1:{port}"), str::to_owned);
        let discovery = json!({
            "issuer": url,
            "jwks_uri": format!("{url}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        });
        let jwks = json!({ "keys": [jwk] });
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || async move { axum::Json(discovery) }),
            )
            .route("/jwks", axum::routing::get(move || async move { axum::Json(jwks) }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                // Bound above, so the port is taken and accepting before `start` returns.
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    r = axum::serve(listener, app) => r.unwrap(),
                    _ = stopped => {}
                }
            });
            // Dropping the runtime ends open connections too.
        });
        LocalIdp { url, port, key, stop: Some(stop), thread: Some(thread) }
    }

    /// The claims a token carries unless `claims` overrides them (a `null` removes one): this
    /// issuer, `sub` alice, [`AUDIENCE`], valid for an hour, and a unique `jti`, so that no two
    /// tokens are equal even within one second.
    fn claims(&self, claims: Value) -> Value {
        static JTI: AtomicU64 = AtomicU64::new(0);
        let now = now();
        let mut c = json!({
            "iss": self.url, "sub": "alice", "aud": AUDIENCE,
            "iat": now, "nbf": now, "exp": now + 3600,
            "jti": format!("local-{}", JTI.fetch_add(1, Ordering::Relaxed)),
        });
        for (k, v) in claims.as_object().expect("claims is an object") {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn sign(key: &EncodingKey, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(KID.into());
        jsonwebtoken::encode(&header, claims, key).expect("sign")
    }

    /// A valid token with `claims` over the defaults (see [`LocalIdp::claims`]).
    pub fn mint(&self, claims: Value) -> String {
        Self::sign(&self.key, &self.claims(claims))
    }

    /// A fresh valid token for `sub`.
    pub fn token(&self, sub: &str) -> String {
        self.mint(json!({ "sub": sub }))
    }

    /// A token like [`LocalIdp::mint`]'s but signed by another key under the same `kid`.
    pub fn forged(&self, claims: Value) -> String {
        Self::sign(&generate(KID).0, &self.claims(claims))
    }

    /// A token with `alg: none` and no signature.
    pub fn unsigned(&self, claims: Value) -> String {
        let header = json!({ "alg": "none", "kid": KID, "typ": "JWT" });
        let enc = |v: &Value| B64.encode(v.to_string());
        format!("{}.{}.", enc(&header), enc(&self.claims(claims)))
    }
}

impl Drop for LocalIdp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
