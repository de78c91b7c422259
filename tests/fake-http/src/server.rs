//! The HTTP/1.1 accept loop and what every request goes through before the [`Api`] answers it:
//! stamping, recording, and stamping the response's end.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Api;
use crate::body::{Body, Stamped};
use crate::record::{self, RecordedRequest, Recorder};

/// What the connections share, and what an [`Api`] may use while answering.
pub struct Server {
    pub(crate) recorder: Recorder,
    /// Bumped to end every stalled stream; dropped (with the server) to end them for good.
    pub(crate) stall_release: watch::Sender<u64>,
    next_id: AtomicU64,
}

impl Server {
    pub(crate) fn new(recorder: Recorder) -> Server {
        Server {
            recorder,
            stall_release: watch::Sender::new(0),
            next_id: AtomicU64::new(1),
        }
    }

    /// 1, 2, 3, … across the fake's life: for message, call and request ids.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Marks `prompt` as answered; true when it had been answered before (`FAIL_ONCE`).
    pub fn seen_before(&self, prompt: &str) -> bool {
        self.recorder.seen_before(prompt)
    }

    /// Changes each time the stalled streams are to end ([`crate::Fake::release_stalls`]).
    pub fn stall_releases(&self) -> watch::Receiver<u64> {
        self.stall_release.subscribe()
    }
}

/// Serves until the task is aborted; aborting drops the `JoinSet`, which ends every connection.
pub(crate) async fn serve<A: Api>(listener: TcpListener, server: Arc<Server>, api: Arc<A>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (server, api) = (server.clone(), api.clone());
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(server.clone(), api.clone(), req));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn handle<A: Api>(
    server: Arc<Server>,
    api: Arc<A>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    // Stamped before the body is read, as the emulator stamps its requests.
    let received_at_us = record::now_us();
    let (parts, body) = req.into_parts();
    let mut headers = std::collections::BTreeMap::<String, String>::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let request = RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        received_at_us,
        response_end_us: None,
    };
    let index = server.recorder.record(request.clone());
    let response = api.respond(&server, &request);
    let (parts, body) = response.into_parts();
    let body = Stamped::new(body, server, index).boxed();
    Ok(Response::from_parts(parts, body))
}
