//! The replica tests' harness: a [`Cluster`] (three vmcp replicas on one Redis and one
//! Streamable HTTP backend, behind the round-robin [`Proxy`]), one call classified by how it
//! ended ([`echo`] → [`Done`]), and concurrent callers ([`load`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::common::redis::RedisServer;
use super::common::*;
use super::proxy::{PROXY_ERROR, Proxy, REPLICA};
use serde_json::{Value, json};

/// A cluster: Redis, one shared backend, three replicas, the proxy in front.
pub(crate) struct Cluster {
    pub(crate) proxy: Proxy,
    pub(crate) replicas: Vec<Gateway>,
    _backend: Fixture,
}

impl Cluster {
    pub(crate) async fn start(redis: &RedisServer) -> Cluster {
        let backend = Fixture::http("both", "s");
        let config = format!(
            "name: replicas\nbackends:\n{}sessionStorage:\n  provider: redis\n  address: {}\n  \
             keyPrefix: 'rr:'\n",
            http_backend("s", &backend.url),
            redis.address(),
        );
        let replicas: Vec<Gateway> = (0..3).map(|_| Gateway::start(&config)).collect();
        let proxy = Proxy::start(replicas.iter().map(|g| g.base.clone()).collect()).await;
        Cluster { proxy, replicas, _backend: backend }
    }

    pub(crate) fn client(&self) -> Client {
        Client::new(&self.proxy.url)
    }

    /// A Legacy session opened through the proxy; returns the client and the replica that
    /// answered `initialize`.
    pub(crate) async fn legacy(&self) -> (Client, usize) {
        let mut c = self.client();
        let id = c.id();
        let body = request(
            id,
            "initialize",
            json!({ "protocolVersion": LEGACY, "capabilities": {},
                    "clientInfo": { "name": "replicas", "version": "1" } }),
        );
        let ev = c.open(c.post().json(&body)).await;
        let sid = ev.headers["mcp-session-id"].to_str().unwrap().to_owned();
        let replica = replica_of(&ev.headers).expect("x-replica on initialize");
        let reply = ev.reply(id, STEP).await;
        assert_eq!(reply.result()["protocolVersion"], LEGACY, "{:?}", reply.message);
        c.session = Some(sid);
        assert_eq!(c.notify("notifications/initialized", json!({})).await, 202);
        (c, replica)
    }
}

pub(crate) fn replica_of(h: &reqwest::header::HeaderMap) -> Option<usize> {
    h.get(REPLICA)?.to_str().ok()?.parse().ok()
}

/// How one call ended. (Payloads are read through `Debug`, in failure messages.)
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) enum Outcome {
    /// The right answer.
    Ok,
    /// No JSON-RPC answer: the connection or body failed, or the proxy's `502`.
    Transport(String),
    /// A JSON-RPC error with `data.retryable: true`, or in a `503` with `Retry-After`.
    Retryable(Value),
    /// Anything else: always a test failure.
    Wrong(String),
}

#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) outcome: Outcome,
    pub(crate) replica: Option<usize>,
    pub(crate) status: u16,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) started: Instant,
    pub(crate) took: Duration,
}

/// `s_echo` with a message unique to this call, Legacy (the client's session) or Modern.
pub(crate) async fn echo(c: &Client, modern: bool, tag: &str) -> Done {
    let args = json!({ "message": tag });
    call_tool(c, modern, "s_echo", args, &format!("Echo: {tag}")).await
}

/// `tools/call` of `tool`, Legacy (the client's session) or Modern; [`Outcome::Ok`] when the
/// first text content is `expect`.
pub(crate) async fn call_tool(
    c: &Client,
    modern: bool,
    tool: &str,
    arguments: Value,
    expect: &str,
) -> Done {
    let id = c.id();
    let params = json!({ "name": tool, "arguments": arguments });
    let b = if modern {
        c.modern_post(id, "tools/call", params)
    } else {
        c.post().json(&request(id, "tools/call", params))
    };
    let started = Instant::now();
    let done = |outcome, replica, status, headers| Done {
        outcome,
        replica,
        status,
        headers,
        started,
        took: started.elapsed(),
    };
    let resp = match tokio::time::timeout(STEP, b.send()).await {
        Err(_) => return done(Outcome::Transport("timeout".into()), None, 0, Default::default()),
        Ok(Err(e)) => return done(Outcome::Transport(e.to_string()), None, 0, Default::default()),
        Ok(Ok(r)) => r,
    };
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    let replica = replica_of(&headers);
    if headers.contains_key(PROXY_ERROR) {
        return done(Outcome::Transport(format!("proxy {status}")), replica, status, headers);
    }
    let reply = Events::from_response(resp).await.reply(id, STEP).await;
    let outcome = match &reply.message {
        None => Outcome::Transport(format!("no answer (status {status})")),
        Some(m) if m["result"]["content"][0]["text"] == expect => Outcome::Ok,
        // Retryable: said in the error, or by `503` with `Retry-After`.
        Some(m)
            if m["error"]["data"]["retryable"] == true
                || (status == 503 && headers.contains_key("retry-after")) =>
        {
            Outcome::Retryable(m.clone())
        }
        Some(m) => Outcome::Wrong(format!("status {status}: {m}")),
    };
    done(outcome, replica, status, headers)
}

/// Asserts a call succeeded.
pub(crate) fn ok(d: &Done, what: &str) {
    assert!(matches!(d.outcome, Outcome::Ok), "{what}: {d:?}");
}

/// Concurrent callers until `stop`: each a Legacy session (its `Client`) or a Modern client.
pub(crate) fn load(
    clients: Vec<(Client, bool)>,
    stop: &Arc<AtomicBool>,
    ok_calls: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<Vec<Done>>> {
    clients
        .into_iter()
        .enumerate()
        .map(|(w, (c, modern))| {
            let (stop, ok_calls) = (stop.clone(), ok_calls.clone());
            tokio::spawn(async move {
                let mut done = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let d = echo(&c, modern, &format!("w{w}-{i}")).await;
                    if matches!(d.outcome, Outcome::Ok) {
                        ok_calls.fetch_add(1, Ordering::SeqCst);
                    }
                    done.push(d);
                    i += 1;
                }
                done
            })
        })
        .collect()
}

/// Waits until `n` more calls succeeded than `from`.
pub(crate) async fn calls_pass(ok_calls: &AtomicU64, from: u64, n: u64, what: &str) -> u64 {
    poll(Duration::from_secs(60), what, || async {
        let now = ok_calls.load(Ordering::SeqCst);
        (now >= from + n).then_some(now)
    })
    .await
}
