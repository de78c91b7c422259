//! The HTTP/1.1 server: accept loop, routing, and the Responses endpoint that turns a request into
//! the script's reply.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::record::{RecordedRequest, Recorder};
use crate::script::{self, Prompt, Reply};
use crate::stream::{self, Ids};

pub type Body = BoxBody<Bytes, Infallible>;

/// What the connections share.
pub struct State {
    pub recorder: Recorder,
    /// Bumped to end every stalled stream; dropped (with the server) to end them for good.
    pub stall_release: watch::Sender<u64>,
    next_id: AtomicU64,
}

impl State {
    pub fn new(recorder: Recorder) -> State {
        State {
            recorder,
            stall_release: watch::Sender::new(0),
            next_id: AtomicU64::new(1),
        }
    }
}

/// Serves until the task is aborted; aborting drops the `JoinSet`, which ends every connection.
pub async fn serve(listener: TcpListener, state: Arc<State>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(state.clone(), req));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
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
        received_at_us: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64),
    };
    state.recorder.record(request.clone());
    Ok(respond(&state, &request))
}

fn respond(state: &State, request: &RecordedRequest) -> Response<Body> {
    match (request.method.as_str(), request.path.as_str()) {
        ("POST", "/v1/responses") => responses(state, &request.body),
        (_, path) => json_response(
            404,
            &stream::error_body(
                404,
                &format!("the fake serves POST /v1/responses, not {path}"),
            ),
        ),
    }
}

fn responses(state: &State, body: &Value) -> Response<Body> {
    let n = state.next_id.fetch_add(1, Ordering::Relaxed);
    let ids = Ids {
        n,
        model: body["model"].as_str().unwrap_or("gpt-fake").to_owned(),
    };
    let prompt = script::prompt_of(body);
    let seen_before = match &prompt {
        Prompt::Text(text) => state.recorder.seen_before(text),
        Prompt::ToolOutput(_) => false,
    };
    let reply = script::reply(&prompt, script::input(body).len(), seen_before);
    if let Reply::Fail(status) = reply {
        return json_response(
            status,
            &stream::error_body(status, &format!("fake failure {status}")),
        );
    }
    let (tx, rx) = mpsc::channel(16);
    let events = stream::events(&reply, &ids);
    let mut release = state.stall_release.subscribe();
    let stall = reply == Reply::Stall;
    tokio::spawn(async move {
        for event in events {
            if tx.send(Bytes::from(event.to_sse())).await.is_err() {
                return;
            }
        }
        if stall {
            // Hold the stream open: it ends when the client goes away (hyper drops the body),
            // when the stalls are released, or when the server is dropped.
            tokio::select! {
                () = tx.closed() => {}
                _ = release.changed() => {}
            }
        }
    });
    response(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .header("x-request-id", format!("req_fake_{n:06}"))
        .body(SseBody(rx).boxed())
        .expect("valid")
}

fn response(status: u16) -> hyper::http::response::Builder {
    Response::builder().status(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY))
}

fn json_response(status: u16, body: &Value) -> Response<Body> {
    response(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .expect("valid")
}

/// A response body fed by a channel: each message is one chunk, the channel's end is the body's.
struct SseBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}
