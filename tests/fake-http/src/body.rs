//! Response bodies: JSON, a server-sent-event stream fed by a task (which a `STALL` holds open),
//! and the wrapper that stamps a response's end in the request log.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper::{Response, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::record;
use crate::server::Server;

pub type Body = BoxBody<Bytes, Infallible>;

/// A response builder with `status` (an impossible status becomes 502).
pub fn response(status: u16) -> hyper::http::response::Builder {
    Response::builder().status(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY))
}

/// `body` as JSON with `status` and the extra `headers`.
pub fn json_response(status: u16, body: &Value, headers: &[(&str, &str)]) -> Response<Body> {
    let mut builder = response(status).header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .expect("valid")
}

/// A 200 event stream of `chunks` (each already in SSE form), with `content_type` and the extra
/// `headers`. With `stall`, the stream stays open after the last chunk until the client goes
/// away, the stalls are released ([`crate::Fake::release_stalls`]) or the fake is dropped.
pub fn sse_response(
    server: &Server,
    chunks: Vec<String>,
    stall: bool,
    content_type: &str,
    headers: &[(&str, &str)],
) -> Response<Body> {
    let (tx, rx) = mpsc::channel(16);
    let mut release = server.stall_releases();
    tokio::spawn(async move {
        for chunk in chunks {
            if tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
        }
        if stall {
            tokio::select! {
                () = tx.closed() => {}
                _ = release.changed() => {}
            }
        }
    });
    let mut builder = response(200)
        .header("content-type", content_type)
        .header("cache-control", "no-cache");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(SseBody(rx).boxed()).expect("valid")
}

/// A response body that stamps its request's `response_end_us` once its last frame has been
/// taken. Hyper stops polling a body that says it has ended (a full or empty body), so the end
/// is seen either as `None` or as `is_end_stream` after a frame, or at once for an empty body.
pub(crate) struct Stamped {
    inner: Body,
    stamp: Option<(Arc<Server>, usize)>,
}

impl Stamped {
    pub(crate) fn new(inner: Body, server: Arc<Server>, index: usize) -> Stamped {
        let mut body = Stamped {
            inner,
            stamp: Some((server, index)),
        };
        if hyper::body::Body::is_end_stream(&body.inner) {
            body.ended();
        }
        body
    }

    fn ended(&mut self) {
        if let Some((server, index)) = self.stamp.take() {
            server.recorder.response_ended(index, record::now_us());
        }
    }
}

impl hyper::body::Body for Stamped {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.ended(),
            Poll::Ready(Some(_)) if self.inner.is_end_stream() => self.ended(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
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
