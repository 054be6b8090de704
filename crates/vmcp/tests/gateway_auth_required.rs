//! A backend that wants the user's own token for everything, `initialize` and `server/discover`
//! included, is up, not down: the gateway's own connection (no credentials) is refused, so it
//! connects with its first user's request and serves every user with their own token.

mod common;

use std::time::Duration;

use common::local_idp::{AUDIENCE, LocalIdp};
use common::*;
use serde_json::json;

fn gateway(idp: &LocalIdp, backend: &Fixture) -> Gateway {
    Gateway::start(&format!(
        "name: g\nincomingAuth:\n  type: oidc\n  oidc:\n    issuer: {}\n    audience: {AUDIENCE}\n\
         outgoingAuth:\n  backends:\n    t: {{ type: passthrough }}\nbackends:\n{}",
        idp.url,
        http_backend("t", &backend.url),
    ))
}

#[tokio::test]
async fn a_backend_refusing_the_gateways_own_connection_serves_its_users() {
    for era in ["legacy", "modern"] {
        let idp = LocalIdp::start();
        let t = Fixture::http_args(0, era, "t", &["--require-token"]);
        let gw = gateway(&idp, &t);
        let status = gw.backend_status("t").await;
        assert_eq!(status["state"], "ready", "{era}: {status}");
        assert!(
            status["lastError"].as_str().unwrap_or("").contains("first user's request"),
            "{era}: {status}"
        );

        for (who, modern) in [("alice", false), ("bob", true)] {
            let mut c = gw.client();
            c.bearer = Some(idp.token(who));
            if !modern {
                c.legacy_init().await;
            }
            let names = c.tool_names(modern).await;
            assert!(
                names.iter().any(|n| n == "t_echo"),
                "{era}/{who}: {names:?} {}\n{}",
                gw.status().await,
                gw.proc.stderr()
            );
            let r = c.tool(modern, "t_echo", json!({ "message": "hi" })).await;
            assert!(r.msg().get("result").is_some(), "{era}/{who}: {:?}", r.message);
        }
        // Learned from the first user: the era is known now.
        let status = gw.backend_status("t").await;
        assert_eq!(status["era"], era, "{status}");

        // Only the gateway's own attempts went without a token, and they were all refused.
        let log = common::login::backend_requests(&t).await;
        let users: Vec<_> = log.iter().filter(|r| r.token.is_some()).collect();
        assert!(!users.is_empty(), "{era}: no request carried a user's token");
        for r in &users {
            let sub = common::login::jwt_sub(r.token.as_deref().unwrap());
            assert!(sub == "alice" || sub == "bob", "{era}: {sub}");
        }
    }
}

/// Without user-bound credentials the same refusal means the backend is unusable: it is down,
/// with the refusal as its error.
#[tokio::test]
async fn without_user_credentials_a_refusing_backend_is_down() {
    let t = Fixture::http_args(0, "legacy", "t", &["--require-token"]);
    let gw = Gateway::start(&format!("name: g\nbackends:\n{}", http_backend("t", &t.url)));
    let status = poll(Duration::from_secs(10), "backend t down", || async {
        let s = gw.backend_status("t").await;
        (s["state"] == "down").then_some(s)
    })
    .await;
    assert!(status["lastError"].as_str().unwrap_or("").contains("401"), "{status}");
}
