//! The `aws_sts` outgoing strategy end to end: the real `vmcp` binary, tokens from an OIDC
//! provider in this process (`common/local_idp.rs`), moto as STS and, in front of a
//! `vmcp-fixture` backend, a reverse proxy that checks every SigV4 signature with botocore and
//! the credentials moto issued (`tests/support/aws_sts_backend.py`, one Python process; it
//! needs `moto[server]` in the Python of `VMCP_PYTHON` / `.tools/py`, which
//! `scripts/install-test-tools.sh` installs; without it these tests fail).
//!
//! Proven here: each user's role comes from its claims (priority wins), its POSTs, its GET
//! stream and its DELETE are signed with credentials assumed for that role with its own token,
//! a signed request whose body or headers change afterwards is refused, a refreshed token is
//! used for the next assumption once the cached credentials near their expiry (moto is told to
//! issue short-lived ones), no expired credential is ever sent, a caller whose claims map
//! to no role is refused with 403 before STS is asked, STS refusing a role is a 403 naming it
//! (an expired token a 401), and no token, secret key or session token reaches vmcp's trace
//! log. The config keys (ToolHive's example
//! included) are checked in `auth_aws_sts/config.rs`; single flight, system work, an
//! unanswering STS and `Debug` through the API in `auth_aws_sts/direct.rs`.

mod common;

#[path = "auth_aws_sts/config.rs"]
mod config;
#[path = "auth_aws_sts/direct.rs"]
mod direct;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::local_idp::{AUDIENCE, LocalIdp};
use serde_json::{Value, json};

const DEV: &str = "arn:aws:iam::123456789012:role/Dev";
const ADMIN: &str = "arn:aws:iam::123456789012:role/Admin";
const ROOT: &str = "arn:aws:iam::123456789012:role/Root";

/// moto + the checking proxy, in front of a fixture.
struct Aws {
    _proc: common::Proc,
    sts: String,
    backend: String,
    control: String,
    http: reqwest::Client,
    _fixture: common::Fixture,
}

impl Aws {
    fn start() -> Aws {
        let fixture = common::Fixture::http("legacy", "aws");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/support/aws_sts_backend.py");
        let mut cmd = Command::new(common::tools::python());
        cmd.arg(&script).args(["--upstream", &fixture.url]);
        let mut proc = common::Proc::start("aws_sts_backend.py", cmd);
        let deadline = Instant::now() + Duration::from_secs(60);
        let line = loop {
            if let Some(l) = proc.lines().into_iter().find(|l| l.starts_with('{')) {
                break l;
            }
            assert!(
                !proc.exited(),
                "aws_sts_backend.py exited before it listened (is moto[server] installed in \
                 VMCP_PYTHON? scripts/install-test-tools.sh installs it):\n{}",
                proc.stderr()
            );
            assert!(
                Instant::now() < deadline,
                "aws_sts_backend.py did not start:\n{}",
                proc.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let v: Value = serde_json::from_str(&line).unwrap();
        let s = |k: &str| v[k].as_str().unwrap().to_owned();
        Aws {
            sts: s("sts"),
            backend: s("backend"),
            control: s("control"),
            _proc: proc,
            http: reqwest::Client::new(),
            _fixture: fixture,
        }
    }

    async fn get(&self, path: &str) -> Value {
        let r = self.http.get(format!("{}{path}", self.control)).send().await.unwrap();
        r.json().await.unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self.http.post(format!("{}{path}", self.control)).json(&body).send().await.unwrap();
        r.json().await.unwrap()
    }

    /// Every request the proxy saw.
    async fn log(&self) -> Vec<Value> {
        self.get("/ctl/log").await.as_array().unwrap().clone()
    }

    /// Every assumption moto answered.
    async fn issued(&self) -> Vec<Value> {
        self.get("/ctl/issued").await.as_array().unwrap().clone()
    }

    async fn issued_for(&self, key: &str) -> Value {
        self.issued().await.into_iter().find(|i| i["key"] == key).unwrap_or(Value::Null)
    }
}

/// The gateway, logging everything (`VMCP_LOG=trace`, the AWS SDK's and signer's events
/// included), so that the tests can check no secret reaches its log.
fn gateway(idp: &LocalIdp, aws: &Aws) -> common::Gateway {
    common::Gateway::start_env(
        &format!(
            "name: aws\n\
         incomingAuth:\n  type: oidc\n  oidc:\n    issuer: {}\n    audience: {AUDIENCE}\n\
         outgoingAuth:\n  backends:\n    aws:\n      type: aws_sts\n      awsSts:\n        \
         region: us-east-1\n        service: aws-mcp\n        stsEndpoint: {}\n        \
         sessionDuration: 900\n        roleMappings:\n          \
         - claim: dev\n            roleArn: {DEV}\n          \
         - claim: admins\n            roleArn: {ADMIN}\n            priority: 1\n          \
         - matcher: 'claims[\"sub\"] == \"root\" && !(\"act\" in claims)'\n            \
         roleArn: {ROOT}\n            priority: 0\n\
         backends:\n{}",
            idp.url,
            aws.sts,
            common::http_backend("aws", &aws.backend),
        ),
        &[("VMCP_LOG", "trace")],
    )
}

/// Neither a web identity token nor any issued secret or session token is in vmcp's log.
async fn assert_no_secret_logged(gw: &common::Gateway, aws: &Aws, tokens: &[&str]) {
    let log = gw.proc.stderr();
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "not a trace log");
    for t in tokens {
        assert!(!log.contains(t), "a caller's token is in vmcp's log");
    }
    let issued = aws.issued().await;
    assert!(!issued.is_empty());
    for i in issued {
        for k in ["secret", "session_token"] {
            let v = i[k].as_str().unwrap();
            assert!(!log.contains(v), "an issued {k} is in vmcp's log");
        }
    }
}

fn token(idp: &LocalIdp, sub: &str, groups: &[&str]) -> String {
    idp.mint(json!({ "sub": sub, "groups": groups }))
}

/// A Legacy client of `gw` with `bearer`, initialized.
async fn client(gw: &common::Gateway, bearer: &str) -> common::Client {
    let mut c = gw.client();
    c.bearer = Some(bearer.to_owned());
    c.legacy_init().await;
    c
}

/// The access key of the last signed `tools/call` the backend accepted.
async fn last_call_key(aws: &Aws) -> String {
    let log = aws.log().await;
    let e = log
        .iter()
        .rev()
        .find(|e| e["rpc"] == "tools/call")
        .unwrap_or_else(|| panic!("no tools/call reached the backend: {log:#?}"));
    assert_eq!(e["verdict"], "ok", "{e}");
    e["key"].as_str().unwrap().to_owned()
}

/// No signed request was refused: every credential vmcp sent was valid and unexpired, and
/// every signature matched.
async fn assert_no_refusal(aws: &Aws) {
    let bad: Vec<Value> = aws
        .log()
        .await
        .into_iter()
        .filter(|e| e["verdict"] != "ok" && e["verdict"] != "unsigned")
        .collect();
    assert!(bad.is_empty(), "the backend refused signed requests: {bad:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_gets_its_role_and_every_request_is_signed() {
    let idp = LocalIdp::start();
    let aws = Aws::start();
    let gw = gateway(&idp, &aws);

    let alice_token = token(&idp, "alice", &["dev"]);
    let mut alice = client(&gw, &alice_token).await;
    let r = alice.tool(false, "aws_whoami", json!({})).await;
    r.result();
    let alice_key = last_call_key(&aws).await;

    // Bob is in both groups: `admins` has priority 1, `dev` none, so Admin.
    let bob_token = token(&idp, "bob", &["dev", "admins"]);
    let bob = client(&gw, &bob_token).await;
    let r = bob.tool(false, "aws_whoami", json!({})).await;
    r.result();
    let bob_key = last_call_key(&aws).await;
    assert_ne!(alice_key, bob_key, "two users share credentials");

    let a = aws.issued_for(&alice_key).await;
    assert_eq!((a["role"].as_str(), a["session"].as_str()), (Some(DEV), Some("alice")), "{a}");
    assert_eq!(a["token"], alice_token.as_str(), "alice's role was assumed with her token");
    assert_eq!(a["asked_duration"], 900);
    let b = aws.issued_for(&bob_key).await;
    assert_eq!((b["role"].as_str(), b["session"].as_str()), (Some(ADMIN), Some("bob")), "{b}");
    assert_eq!(b["token"], bob_token.as_str());
    // One assumption each: listing, opening the backend session and the call share it.
    assert_eq!(aws.issued().await.len(), 2, "{:#?}", aws.issued().await);

    // A log level makes vmcp open alice's own GET stream at the backend: signed, as her.
    let r = alice.call("logging/setLevel", json!({ "level": "debug" })).await;
    r.result();
    common::poll(Duration::from_secs(10), "alice's signed GET stream", || async {
        let log = aws.log().await;
        log.iter().any(|e| e["http"] == "GET" && e["key"] == alice_key.as_str()).then_some(())
    })
    .await;

    // Ending her session ends her backend session: a signed DELETE.
    assert_eq!(alice.delete_session().await, 200);
    alice.session = None;
    common::poll(Duration::from_secs(10), "alice's signed DELETE", || async {
        let log = aws.log().await;
        log.iter().any(|e| e["http"] == "DELETE" && e["key"] == alice_key.as_str()).then_some(())
    })
    .await;
    assert_no_refusal(&aws).await;
    // Every tools/call was signed (the proxy refuses unsigned ones).
    let log = aws.log().await;
    assert!(log.iter().filter(|e| e["rpc"] == "tools/call").all(|e| e["verdict"] == "ok"));

    // The checker is not a rubber stamp: the last accepted request, replayed as it was, passes;
    // with one byte of the body or one signed header changed after signing, it is refused.
    let last = aws.get("/ctl/last/POST").await;
    assert_eq!(aws.post("/ctl/replay", last.clone()).await["status"], 200, "{last}");
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut body = b64.decode(last["body_b64"].as_str().unwrap()).unwrap();
    assert!(!body.is_empty(), "the last request has a body: {last}");
    let mut tampered = last.clone();
    body[0] ^= 0x20;
    tampered["body_b64"] = b64.encode(&body).into();
    let v = aws.post("/ctl/replay", tampered).await;
    assert_eq!((v["status"].as_i64(), v["why"].as_str()), (Some(403), Some("signature mismatch")));
    let mut tampered = last.clone();
    tampered["headers"]["content-type"] = "text/plain".into();
    let v = aws.post("/ctl/replay", tampered).await;
    assert_eq!(v["status"], 403, "{v}");

    assert_no_secret_logged(&gw, &aws, &[&alice_token, &bob_token]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshed_token_is_used_once_the_credentials_near_expiry() {
    let idp = LocalIdp::start();
    let aws = Aws::start();
    // STS now issues credentials that expire 4 s after issue (vmcp asks for 900 s).
    aws.post("/ctl/lifetime", json!({ "seconds": 4 })).await;
    let gw = gateway(&idp, &aws);

    let first = token(&idp, "alice", &["dev"]);
    let mut c = client(&gw, &first).await;
    let r = c.tool(false, "aws_whoami", json!({})).await;
    r.result();
    let k1 = last_call_key(&aws).await;
    assert_eq!(aws.issued_for(&k1).await["token"], first.as_str());

    // The client refreshes its token mid-session: the cached credentials still serve it.
    let second = token(&idp, "alice", &["dev"]);
    assert_ne!(first, second);
    c.bearer = Some(second.clone());
    c.tool(false, "aws_whoami", json!({})).await;
    assert_eq!(last_call_key(&aws).await, k1, "credentials re-assumed before they were due");

    // Once they near expiry, the next request assumes the role again, with the refreshed token.
    let k2 = common::poll(Duration::from_secs(20), "newly assumed credentials", || async {
        let r = c.tool(false, "aws_whoami", json!({})).await;
        r.result();
        let k = last_call_key(&aws).await;
        (k != k1).then_some(k)
    })
    .await;
    let i = aws.issued_for(&k2).await;
    assert_eq!(i["token"], second.as_str(), "re-assumed with the refreshed token: {i}");
    assert_eq!(i["role"], DEV);
    // No request ever carried expired (or otherwise refused) credentials.
    assert_no_refusal(&aws).await;
    assert_no_secret_logged(&gw, &aws, &[&first, &second]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_that_map_to_no_role_are_refused() {
    let idp = LocalIdp::start();
    let aws = Aws::start();
    let gw = gateway(&idp, &aws);

    let carol = client(&gw, &token(&idp, "carol", &["guests"])).await;
    let (id, ev) =
        carol.start("tools/call", json!({ "name": "aws_whoami", "arguments": {} })).await;
    assert_eq!(ev.status, 403, "refused as forbidden, not as a login problem");
    let r = ev.reply(id, Duration::from_secs(10)).await;
    assert_eq!(r.error_code(), -32006, "{:?}", r.message);
    let m = r.error()["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        m.contains("aws")
            && m.contains("no roleMappings entry matches the caller's \"groups\" claim"),
        "{m}"
    );
    // Refused before STS was asked, and nothing reached the backend as carol.
    assert!(aws.issued().await.iter().all(|i| i["session"] != "carol"));
    assert!(aws.log().await.iter().all(|e| e["session"] != "carol"));

    // A user with a mapped group is served by the same gateway meanwhile.
    let dave = client(&gw, &token(&idp, "dave", &["dev"])).await;
    let r = dave.tool(false, "aws_whoami", json!({})).await;
    r.result();
    // A matcher maps `root` (no groups at all) to its own role.
    let root = client(&gw, &token(&idp, "root", &[])).await;
    root.tool(false, "aws_whoami", json!({})).await.result();
    let key = last_call_key(&aws).await;
    assert_eq!(aws.issued_for(&key).await["role"], ROOT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_refusals_name_the_role() {
    let idp = LocalIdp::start();
    let aws = Aws::start();
    // STS refuses the Admin role (its trust policy, say) and calls Dev's tokens expired.
    aws.post("/ctl/refuse", json!({ "role": ADMIN, "code": "AccessDenied" })).await;
    let gw = gateway(&idp, &aws);

    let admin = client(&gw, &token(&idp, "gina", &["admins"])).await;
    let (id, ev) =
        admin.start("tools/call", json!({ "name": "aws_whoami", "arguments": {} })).await;
    let status = ev.status;
    let r = ev.reply(id, Duration::from_secs(10)).await;
    assert_eq!(status, 403, "{:?}", r.message);
    assert_eq!(r.error_code(), -32006, "{:?}", r.message);
    let m = r.error()["message"].as_str().unwrap_or_default().to_owned();
    assert!(m.contains(ADMIN) && m.contains("AccessDenied"), "{m}");
    assert!(!m.contains("refused by the test"), "STS's own message is not relayed: {m}");

    aws.post("/ctl/refuse", json!({ "role": DEV, "code": "ExpiredTokenException" })).await;
    let dev = client(&gw, &token(&idp, "hal", &["dev"])).await;
    let (id, ev) = dev.start("tools/call", json!({ "name": "aws_whoami", "arguments": {} })).await;
    assert_eq!(ev.status, 401, "an expired token means: sign in again");
    assert!(ev.headers.contains_key("www-authenticate"));
    let r = ev.reply(id, Duration::from_secs(10)).await;
    assert_eq!(r.error_code(), -32004, "{:?}", r.message);
    let m = r.error()["message"].as_str().unwrap_or_default().to_owned();
    assert!(m.contains(DEV), "{m}");
    // Nothing was issued, so nothing was signed.
    assert!(aws.issued().await.is_empty());
    assert!(aws.log().await.iter().all(|e| e["signed"] == false));
}
