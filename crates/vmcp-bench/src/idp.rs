//! An OIDC provider inside the bench process, so a run can use several principals (the pressure
//! run's healthy client is never the aggressor's principal; the `auth` preset's users) without
//! anything installed.
//!
//! It generates an ES256 (P-256) key, serves `/.well-known/openid-configuration` and `/jwks` on a
//! free loopback port from its own thread and runtime (so it answers whatever the load does to
//! the bench's runtime), and mints tokens for a chosen `sub`. Stopped on drop. The key lives only
//! in this process; tokens are never logged.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

/// The audience the gateway is configured with and tokens carry.
pub const AUDIENCE: &str = "vmcp-bench";
const KID: &str = "bench-1";
/// Token lifetime: far longer than any run.
const TOKEN_TTL_S: u64 = 4 * 3600;

/// The provider; its server stops when dropped.
pub struct LocalIdp {
    /// The issuer, `http://127.0.0.1:PORT`.
    pub issuer: String,
    key: EncodingKey,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LocalIdp {
    /// Generates the key and serves discovery and JWKS; returns once the port accepts.
    pub fn start() -> anyhow::Result<LocalIdp> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| anyhow!("generating the IdP key"))?;
        let pkcs8 = pair.to_pkcs8v1().map_err(|_| anyhow!("encoding the IdP key"))?;
        // Uncompressed point: 0x04 || x || y.
        let point = pair.public_key().as_ref();
        let (Some(x), Some(y)) = (point.get(1..33), point.get(33..65)) else {
            return Err(anyhow!("unexpected public key form"));
        };
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": KID,
            "x": B64.encode(x), "y": B64.encode(y),
        });
        let key = EncodingKey::from_ec_der(pkcs8.as_ref());

        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the IdP")?;
        listener.set_nonblocking(true)?;
        let issuer = format!("http://{}", listener.local_addr()?);
        let discovery = json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/jwks"),
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
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("the IdP's runtime")?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                // Bound above, so the port accepts before `start` returns.
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                tokio::select! {
                    r = axum::serve(listener, app) => if let Err(e) = r { eprintln!("IdP: {e}") },
                    _ = stopped => {}
                }
            });
        });
        Ok(LocalIdp { issuer, key, stop: Some(stop), thread: Some(thread) })
    }

    /// A token for `sub`, valid for hours.
    pub fn token(&self, sub: &str) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = json!({
            "iss": self.issuer, "sub": sub, "aud": AUDIENCE,
            "iat": now, "nbf": now, "exp": now + TOKEN_TTL_S,
        });
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(KID.into());
        jsonwebtoken::encode(&header, &claims, &self.key).context("signing a token")
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
