//! `caBundlePath` over a real TLS handshake: a backend and an OIDC provider behind a private CA
//! are reached when their key points at the CA's PEM, and refused (certificate unknown) when it
//! does not, since the CA is in no system trust store.

mod common;

use std::time::Duration;

use common::local_idp::{AUDIENCE, LocalIdp};
use common::tls::TlsFront;
use common::{Fixture, Gateway, TempDir, poll};
use serde_json::json;

fn write_ca(dir: &TempDir, front: &TlsFront) -> String {
    let path = dir.0.join("ca.pem");
    std::fs::write(&path, &front.ca_pem).expect("writing the CA");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_behind_a_private_ca_is_reached_with_its_ca_bundle_only() {
    let fixture = Fixture::http("legacy", "tls");
    let front = TlsFront::bind().forward(fixture.port);
    let dir = TempDir::new("tls-backend");
    let ca = write_ca(&dir, &front);
    let url = format!("{}/mcp", front.url);
    let gw = Gateway::start(&format!(
        "name: gw\nbackends:\n  \
         - name: trusted\n    transport: streamable-http\n    url: {url}\n    caBundlePath: {ca}\n  \
         - name: untrusted\n    transport: streamable-http\n    url: {url}\n"
    ));

    let mut c = gw.client();
    c.legacy_init().await;
    let r = c.tool(false, "trusted_echo", json!({ "message": "over tls" })).await;
    assert_eq!(r.text(), "Echo: over tls");

    // The same server without the bundle: the handshake fails on the unknown issuer, and the
    // backend says so instead of serving.
    let status = poll(Duration::from_secs(20), "untrusted backend down with a TLS error", || {
        let gw = &gw;
        async move {
            let s = gw.backend_status("untrusted").await;
            let err = s["lastError"].as_str().unwrap_or_default().to_lowercase();
            (s["state"] != "ready" && err.contains("certificate")).then_some(s)
        }
    })
    .await;
    assert_ne!(status["state"], "ready", "{status}");
    let tools = c.call("tools/list", json!({})).await;
    let names: Vec<&str> = tools.result()["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"trusted_echo"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("untrusted_")), "{names:?}");
}

fn oidc_gateway(idp: &LocalIdp, backend: &Fixture, ca: Option<&str>) -> Gateway {
    let bundle = ca.map(|p| format!("    caBundlePath: {p}\n")).unwrap_or_default();
    Gateway::start(&format!(
        "name: gw\nbackends:\n  - name: b\n    transport: streamable-http\n    url: {}\n\
         incomingAuth:\n  type: oidc\n  oidc:\n    issuer: {}\n    audience: {AUDIENCE}\n{bundle}",
        backend.url, idp.url
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_provider_behind_a_private_ca_is_trusted_with_its_ca_bundle_only() {
    let front = TlsFront::bind();
    let (idp, idp_port) = LocalIdp::start_behind(&front.url);
    let front = front.forward(idp_port);
    let backend = Fixture::http("legacy", "b");
    let dir = TempDir::new("tls-idp");
    let ca = write_ca(&dir, &front);
    let token = idp.token("alice");

    // With the bundle: discovery and the JWKS are fetched over TLS and the token is accepted.
    let gw = oidc_gateway(&idp, &backend, Some(&ca));
    let mut c = gw.client();
    c.bearer = Some(token.clone());
    c.legacy_init().await;
    assert_eq!(c.tool(false, "b_echo", json!({ "message": "hi" })).await.text(), "Echo: hi");
    drop(gw);

    // Without it the provider's certificate is unknown: no key can be fetched, so the same
    // valid token is not accepted.
    let gw = oidc_gateway(&idp, &backend, None);
    let r = reqwest::Client::new()
        .post(&gw.url)
        .header("Authorization", format!("Bearer {token}"))
        .header("Accept", "application/json, text/event-stream")
        .json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                        "clientInfo": { "name": "t", "version": "1" } }
        }))
        .send()
        .await
        .expect("POST initialize");
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("cannot verify tokens right now"), "{body}");
    assert!(gw.proc.stderr().contains("UnknownIssuer"), "{}", gw.proc.stderr());
}
