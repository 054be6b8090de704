//! The OTLP exporters' HTTP client: our reqwest 0.13 client behind `opentelemetry_http`'s
//! `HttpClient` (opentelemetry-otlp's own reqwest feature would pull a second reqwest).
//!
//! The SDK's batch span processor and periodic metric reader export from their own threads,
//! outside the tokio runtime; each export is therefore spawned onto the runtime the gateway runs
//! on (its handle is taken at build time) and awaited through its join handle.
//!
//! Invariant: every export has a deadline ([`EXPORT_TIMEOUT`], whole request and body) and a
//! bounded answer ([`MAX_ANSWER_BYTES`]); errors name no URL (its query could carry a secret)
//! and no header.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};

/// Longest one export may take, connect to last byte of the answer.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest collector answer read (OTLP answers are a few bytes; partial-success messages short).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Sends OTLP exports with the gateway's reqwest client on the gateway's runtime.
#[derive(Clone)]
pub struct ReqwestClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for ReqwestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReqwestClient")
    }
}

impl ReqwestClient {
    /// A client trusting the system roots plus `bundle`, on the current runtime. `None` outside
    /// a tokio runtime.
    pub fn new(bundle: Option<&crate::config::ca_bundle::CaBundle>) -> Option<ReqwestClient> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        // No redirects: export headers are often credentials.
        let builder = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        let client = crate::config::ca_bundle::CaBundle::apply(bundle, builder).build().ok()?;
        Some(ReqwestClient { client, runtime })
    }
}

async fn send(client: reqwest::Client, request: Request<Bytes>) -> Result<Response<Bytes>, String> {
    let (parts, body) = request.into_parts();
    let url = reqwest::Url::parse(&parts.uri.to_string()).map_err(|_| "bad collector URL")?;
    let mut req = client.request(parts.method, url).body(body);
    for (name, value) in &parts.headers {
        req = req.header(name, value);
    }
    let resp = req.send().await.map_err(|e| e.without_url().to_string())?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = crate::backend::limit::read_body(resp, MAX_ANSWER_BYTES)
        .await
        .map_err(|_| format!("collector answered {status} with an unreadable or oversize body"))?;
    let mut out = Response::new(bytes);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

impl HttpClient for ReqwestClient {
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        // The reqwest client's timeout bounds the task; no tokio timer here, as this future is
        // polled by the SDK's own thread, outside the runtime.
        let task = self.runtime.spawn(send(self.client.clone(), request));
        Box::pin(async move {
            match task.await {
                Ok(Ok(resp)) => Ok(resp),
                Ok(Err(e)) => Err(e.into()),
                Err(_) => Err("export task failed".into()),
            }
        })
    }
}
