//! Two vmcp processes sharing one redis-server (`sessionStorage: {provider: redis}`): calls
//! through both count against one `rateLimiting.shared` bucket; with Redis down a call is
//! refused fast with "rate-limit storage unavailable"; Redis back, calls pass again without
//! restarting vmcp. A Legacy session opened on one replica continues on the other, and ends
//! on both when either deletes it.

mod common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::*;
use serde_json::{Value, json};

fn gateway(redis: &RedisServer, password_file: Option<&std::path::Path>) -> Gateway {
    let pw =
        password_file.map(|p| format!("  passwordFile: {}\n", p.display())).unwrap_or_default();
    Gateway::start(&format!(
        "name: replicas\nbackends:\n{}sessionStorage:\n  provider: redis\n  address: {}\n  \
         keyPrefix: 'e2e:'\n{pw}rateLimiting:\n  shared: {{ maxTokens: 6, refillPeriod: 1h }}\n",
        stdio_backend("s"),
        redis.address(),
    ))
}

async fn echo(c: &Client, modern: bool) -> Value {
    let params = json!({ "name": "s_echo", "arguments": { "message": "hi" } });
    let id = c.id();
    let b = if modern {
        c.modern_post(id, "tools/call", params)
    } else {
        c.post().json(&request(id, "tools/call", params))
    };
    c.open(b).await.next().await
}

fn allowed(v: &Value) -> bool {
    v["result"]["content"][0]["text"] == "Echo: hi"
}

#[tokio::test]
async fn two_replicas_count_against_one_bucket() {
    let mut redis = RedisServer::with_password("e2e-pw");
    let pw = TempDir::new("redis-pw");
    let pw_file = pw.0.join("password");
    std::fs::write(&pw_file, "e2e-pw\n").unwrap();
    let (one, two) = (gateway(&redis, Some(&pw_file)), gateway(&redis, Some(&pw_file)));
    let mut a = one.client();
    a.legacy_init().await;
    let b = two.client();
    let mut passed = 0;
    for i in 0..12 {
        let r = if i % 2 == 0 { echo(&a, false).await } else { echo(&b, true).await };
        if allowed(&r) {
            passed += 1;
        } else {
            assert_eq!(r["error"]["code"], 429, "{r}");
            assert_eq!(r["error"]["data"]["limit"], "rateLimiting.shared", "{r}");
        }
    }
    assert_eq!(passed, 6, "one bucket of 6 across both replicas");

    // Redis gone: refused fast with the storage named, on either replica.
    redis.stop();
    for (c, modern) in [(&a, false), (&b, true)] {
        let t = Instant::now();
        let r = echo(c, modern).await;
        assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
        assert_eq!(r["error"]["code"], -32603, "{r}");
        assert_eq!(r["error"]["message"], "rate-limit storage unavailable", "{r}");
        assert_eq!(r["error"]["data"]["retryable"], true, "{r}");
    }
    // Redis back (empty: it kept nothing): a full bucket, no vmcp restart.
    redis.restart();
    poll(Duration::from_secs(15), "calls to pass again", || async {
        allowed(&echo(&b, true).await).then_some(())
    })
    .await;
    assert!(allowed(&echo(&a, false).await));
    // The password never reaches the log.
    for gw in [&one, &two] {
        let log = gw.proc.stderr() + &gw.proc.lines().join("\n");
        assert!(log.contains("shared storage: redis"), "{log}");
        assert!(!log.contains("e2e-pw"), "password in the log");
    }
}

#[tokio::test]
async fn a_legacy_session_continues_on_the_other_replica() {
    let redis = RedisServer::start();
    let (one, two) = (gateway(&redis, None), gateway(&redis, None));
    let mut a = one.client();
    let sid = a.legacy_init().await;
    let mut b = two.client();
    b.session = Some(sid.clone());
    assert!(allowed(&echo(&b, false).await), "the session continues on replica two");
    assert!(allowed(&echo(&a, false).await), "and still on replica one");
    // The record is in Redis under the hash of the id, never the id itself.
    let keys = redis.keys("e2e:sess:*");
    assert_eq!(keys.lines().count(), 1, "{keys}");
    assert!(!keys.contains(&sid), "the session id is a key: {keys}");
    // Deleted on two: gone on one too, within the staleness bound (1 s).
    let status = b.authed(b.http.delete(&b.url).header("mcp-session-id", &sid)).send().await;
    assert!(status.unwrap().status().is_success());
    poll(Duration::from_secs(5), "replica one to see the session ended", || async {
        let r = a.post().json(&request(a.id(), "ping", json!({}))).send().await.ok()?;
        (r.status() == 404).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_wrong_password_fails_calls_not_the_start() {
    let redis = RedisServer::with_password("right");
    let pw = TempDir::new("redis-pw");
    let pw_file = pw.0.join("password");
    std::fs::write(&pw_file, "wrong").unwrap();
    let gw = gateway(&redis, Some(&pw_file));
    let c = gw.client();
    let r = echo(&c, true).await;
    assert_eq!(r["error"]["message"], "rate-limit storage unavailable", "{r}");
    let log = gw.proc.stderr() + &gw.proc.lines().join("\n");
    assert!(!log.contains("wrong"), "password in the log:\n{log}");
}

/// Two vmcp processes with the embedded authorization server on one Redis: the config they
/// share (issuer = the first one's address), with shared signing and vault keys.
fn auth_replicas(redis: &RedisServer) -> (Gateway, Gateway, TempDir, TempDir) {
    let keys = TempDir::new("redis-keys");
    let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    std::fs::write(keys.0.join("signing.pem"), key).unwrap();
    std::fs::write(keys.0.join("hmac"), [7u8; 32]).unwrap();
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let config = format!(
        "name: replicas\nbackends:\n{}incomingAuth:\n  type: oidc\n  oidc:\n    issuer: {issuer}\n    \
         audience: {issuer}/mcp\nsessionStorage:\n  provider: redis\n  address: {}\n  keyPrefix: 'as-e2e:'\n",
        stdio_backend("s"),
        redis.address(),
    );
    let auth = format!(
        "issuer: {issuer}\nallowed_audiences: [{issuer}/mcp]\nsigning_key_config:\n  \
         signing_key_file: {k}/signing.pem\nhmac_secret_files: [{k}/hmac]\nupstreams:\n  \
         - name: corp\n    type: oauth2\n    oauth2_config:\n      \
         authorization_endpoint: http://127.0.0.1:9/authorize\n      \
         token_endpoint: http://127.0.0.1:9/token\n      client_id: vmcp\n      \
         identity_from_token:\n        subject_path: sub\n",
        k = keys.0.display(),
    );
    let dirs = (TempDir::new("redis-a"), TempDir::new("redis-b"));
    for d in [&dirs.0, &dirs.1] {
        std::fs::write(d.0.join("config.yaml"), &config).unwrap();
        std::fs::write(d.0.join("authserver-config.yaml"), &auth).unwrap();
    }
    let a = Gateway::start_dir(&dirs.0.0, port, &[]);
    let b = Gateway::start_dir(&dirs.1.0, free_port(), &[]);
    (a, b, dirs.0, dirs.1)
}

#[tokio::test]
async fn a_client_registered_on_one_replica_logs_in_on_the_other() {
    let redis = RedisServer::start();
    let (a, b, _da, _db) = auth_replicas(&redis);
    let http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let cb = "http://127.0.0.1:4444/callback";
    let r = http
        .post(format!("{}/oauth/register", a.base))
        .json(&json!({ "redirect_uris": [cb], "client_name": "App" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let client_id = r.json::<Value>().await.unwrap()["client_id"].as_str().unwrap().to_owned();
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let authorize = |base: &str, client: &str| {
        format!(
            "{base}/oauth/authorize?response_type=code&client_id={}&redirect_uri={}&state=s1&\
             code_challenge={}&code_challenge_method=S256",
            enc(client),
            enc(cb),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        )
    };
    // The other replica knows the client and sends the browser to the upstream.
    let r = http.get(authorize(&b.base, &client_id)).send().await.unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("http://127.0.0.1:9/authorize?"), "{location}");
    // An unknown client is refused on either.
    let r = http.get(authorize(&a.base, "nobody")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // The pending login is in Redis, sealed: the upstream state is a key, the verifier is not
    // readable there.
    let state = reqwest::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let mut redis_cli = std::net::TcpStream::connect(("127.0.0.1", redis.port())).unwrap();
    use std::io::{Read as _, Write as _};
    let key = format!("as-e2e:as:pending:{state}");
    write!(redis_cli, "*2\r\n$6\r\nEXISTS\r\n${}\r\n{key}\r\n", key.len()).unwrap();
    let mut buf = [0u8; 16];
    let n = redis_cli.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b":1\r\n", "pending login {key} not in Redis");
}
