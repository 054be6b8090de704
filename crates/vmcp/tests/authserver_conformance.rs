//! The official MCP conformance suite's authorization server scenarios
//! (`@modelcontextprotocol/conformance`, `authorization` command:
//! `authorization-server-metadata-endpoint`, `authorization-code-grant`) against vmcp's
//! authorization server with the stand-in upstream IdP.
//!
//! The suite prints an authorization URL for a human and waits for the redirect on its own
//! callback server (`http://127.0.0.1:<port>/callback`); this test plays the browser: it follows
//! the URL through vmcp and the upstream by hand and delivers the final redirect.
//!
//! Node 22 and the suite are found as `common::tools` finds tools (`VMCP_NODE`,
//! `VMCP_CONFORMANCE`, or `<repo>/.tools`); without them the test fails, naming what is missing.
//!
//! What the suite needs from a running vmcp (for CI against the real binary):
//! `node $VMCP_CONFORMANCE authorization --url <issuer, exactly as configured> --client-id <id>
//! --resource <one of allowedAudiences> --port <P>`, no `--scenario` (then both scenarios run,
//! the code grant using the metadata the first one fetched; exit status 0 iff every check
//! passed), no `--client-secret` (public client). The client must be known to vmcp with the
//! redirect URI `http://127.0.0.1/callback` (any port matches on loopback) or
//! `http://127.0.0.1:<P>/callback`: a configured client, or one registered through
//! `/oauth/register` beforehand. `client_id_metadata_document_supported` is a WARNING unless CIMD
//! is enabled. The code-grant scenario prints the authorization URL (the line starting with
//! `<issuer>/oauth/authorize?`) and waits up to 5 minutes for a browser: something must GET
//! it, follow the redirects through vmcp and an auto-approving upstream IdP (for example
//! oauth2-mock-server), and GET the final redirect to `http://127.0.0.1:<P>/callback` once the
//! suite has printed `Callback server started`.

#[path = "common/tools.rs"]
mod tools;

mod authserver_support;

use std::process::Stdio;
use std::time::Duration;

use authserver_support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use vmcp::auth::server::StaticClient;

/// The client id the suite is given (`--client-id`).
const CLIENT_ID: &str = "conformance";

#[tokio::test]
async fn conformance_authorization_server_scenarios() {
    let (node, suite) = (tools::node(), tools::conformance());
    let h = Harness::start(&["corp"], |s| {
        s.cimd.enabled = true;
        s.clients.push(StaticClient {
            client_id: CLIENT_ID.into(),
            // Loopback: any port matches (RFC 8252 §7.3), so the suite's port need not be known.
            redirect_uris: vec!["http://127.0.0.1/callback".into()],
            scopes: vec![],
            client_name: Some("MCP conformance suite".into()),
        });
    })
    .await;
    let port = {
        let (l, p) = listener().await;
        drop(l);
        p
    };
    let mut child = tokio::process::Command::new(node)
        .arg(suite)
        .args(["authorization", "--url", &h.issuer, "--client-id", CLIENT_ID])
        .args(["--resource", RESOURCE, "--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let authorize = format!("{}/oauth/authorize?", h.issuer);
    let callback = format!("http://127.0.0.1:{port}/callback");
    let mut output = Vec::new();
    let run = async {
        // The suite prints the URL before its callback server listens, and says when it does.
        let (mut listening, mut deliver) = (false, None);
        while let Some(line) = lines.next_line().await.unwrap() {
            output.push(line.clone());
            if line.starts_with(&authorize) {
                // The browser: through vmcp and the upstream, up to the suite's callback.
                let (resp, _) = h.follow(&line, &callback).await;
                assert_eq!(resp.status(), 302, "{}", resp.text().await.unwrap_or_default());
                deliver = Some(location(&resp));
            }
            listening |= line
                .contains(&format!("Callback server started: {}", &callback[..callback.len() - 9]));
            if listening && let Some(url) = deliver.take() {
                let delivered = h.http.get(url).send().await.unwrap();
                assert!(delivered.status().is_success());
            }
        }
        child.wait().await.unwrap()
    };
    let status =
        tokio::time::timeout(Duration::from_secs(120), run).await.expect("suite timed out");
    let text = output.join("\n");
    eprintln!("{text}");
    assert!(status.success(), "conformance failed:\n{text}");
    assert!(text.contains("authorization-code-grant"), "{text}");
    assert!(!text.contains("FAILURE"), "{text}");
}
