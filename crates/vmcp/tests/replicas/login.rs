//! The login stack across replicas: a real upstream IdP ([`UpstreamIdp`]: access tokens live a
//! few seconds, refresh tokens rotate and a replay is counted), a backend that wants the user's
//! upstream token (`vmcp-fixture --user-tools`), and three vmcp replicas with the embedded
//! authorization server on one Redis behind the [`Proxy`], whose address is the issuer: the
//! client only ever sees the load balancer. The replicas share the signing key and the HMAC
//! secret (the vault's key is derived from it), as a deployment must.

use serde_json::json;

use super::common::login::*;
use super::common::redis::RedisServer;
use super::common::upstream_idp::UpstreamIdp;
use super::common::*;
use super::proxy::Proxy;

pub(crate) struct AuthCluster {
    pub(crate) proxy: Proxy,
    pub(crate) replicas: Vec<Gateway>,
    pub(crate) idp: UpstreamIdp,
    pub(crate) backend: Fixture,
    _dirs: Vec<TempDir>,
}

/// Starts the stack; upstream access tokens live `access_ttl` seconds.
pub(crate) async fn auth_cluster(redis: &RedisServer, access_ttl: u64) -> AuthCluster {
    let idp = UpstreamIdp::launch().await;
    idp.config(json!({ "accessTtl": access_ttl, "rotate": true })).await;
    let backend = Fixture::http_args(0, "legacy", "api", &["--user-tools"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let keys = TempDir::new("replica-keys");
    let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    std::fs::write(keys.0.join("signing.pem"), key).unwrap();
    std::fs::write(keys.0.join("hmac"), [7u8; 32]).unwrap();
    let config = format!(
        "name: login\nbackends:\n{}incomingAuth:\n  type: oidc\n  oidc:\n    issuer: {issuer}\n    \
         audience: {issuer}/mcp\noutgoingAuth:\n  backends:\n    api:\n      type: upstream_inject\n      \
         upstreamInject:\n        providerName: corp\nsessionStorage:\n  provider: redis\n  \
         address: {}\n  keyPrefix: 'rr-auth:'\n",
        http_backend("api", &backend.url),
        redis.address(),
    );
    let auth = format!(
        "issuer: {issuer}\nallowed_audiences: [{issuer}/mcp]\nsigning_key_config:\n  \
         signing_key_file: {k}/signing.pem\nhmac_secret_files: [{k}/hmac]\nupstreams:\n  \
         - name: corp\n    type: oidc\n    oidc_config:\n      issuer_url: {idp}\n      \
         client_id: vmcp-gateway\n",
        k = keys.0.display(),
        idp = idp.url,
    );
    let mut dirs = vec![keys];
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let d = TempDir::new("replica-auth");
        std::fs::write(d.0.join("config.yaml"), &config).unwrap();
        std::fs::write(d.0.join("authserver-config.yaml"), &auth).unwrap();
        replicas.push(Gateway::start_dir(&d.0, free_port(), &[]));
        dirs.push(d);
    }
    let proxy = Proxy::start_with(listener, replicas.iter().map(|g| g.base.clone()).collect());
    AuthCluster { proxy, replicas, idp, backend, _dirs: dirs }
}

/// The upstream tokens the calls of a login run reached the backend with, in order.
pub(crate) fn tokens(out: &Outcome) -> Vec<String> {
    out.calls.iter().map(bearer_of_whoami).collect()
}
