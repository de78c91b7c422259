//! The HTTP side of the fake model APIs (`blobhub-fake-anthropic`, `blobhub-fake-openai`): what
//! does not depend on which API is faked. A fake is an [`Api`] (routing and the script's replies)
//! served by [`Fake`], which owns the listener on 127.0.0.1, records every request in arrival
//! order ([`RecordedRequest`], with wall-clock timestamps a benchmark can subtract from the
//! BlobHub emulator's), lets tests wait for a number of requests without polling, and ends
//! `STALL` streams on demand. [`standalone`] is the `main` of both fakes' binaries.

mod body;
pub mod raw_client;
mod record;
mod server;
pub mod standalone;

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use body::{Body, json_response, response, sse_response};
pub use record::{RecordedRequest, now_us};
pub use server::Server;

/// One faked API: its routes and replies. The request has been recorded when `respond` runs.
pub trait Api: Send + Sync + 'static {
    /// The binary's name, for messages (`blobhub-fake-anthropic`).
    const NAME: &'static str;

    /// Whether `request` calls the model (`POST /v1/messages`, `POST /v1/responses`).
    fn is_model_call(request: &RecordedRequest) -> bool;

    /// The response to `request`.
    fn respond(&self, server: &Server, request: &RecordedRequest) -> hyper::Response<Body>;
}

/// Why a fake could not start or a wait failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("opening the record file {}: {source}", path.display())]
    RecordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("waited {waited:?} for {wanted} requests, got {got}")]
    Timeout {
        wanted: usize,
        got: usize,
        waited: Duration,
    },
}

/// Where to listen and whether to keep a log file.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Append every request to this file as a JSON line ([`RecordedRequest::to_json`]).
    pub record: Option<PathBuf>,
}

/// A running fake. Dropping it stops the server, ends every connection and every stalled stream.
pub struct Fake<A: Api> {
    addr: SocketAddr,
    server: Arc<Server>,
    task: JoinHandle<()>,
    _api: std::marker::PhantomData<fn() -> A>,
}

impl<A: Api> Drop for Fake<A> {
    fn drop(&mut self) {
        self.task.abort();
        // Stalled streams hold their own task; release them too, so nothing waits on a client.
        self.release_stalls();
    }
}

impl<A: Api + Default> Fake<A> {
    /// Starts on a free port of 127.0.0.1.
    pub async fn start() -> Result<Fake<A>, Error> {
        Fake::start_api(A::default()).await
    }

    pub async fn start_with(options: Options) -> Result<Fake<A>, Error> {
        Fake::start_api_with(A::default(), options).await
    }
}

impl<A: Api> Fake<A> {
    /// Starts `api` on a free port of 127.0.0.1.
    pub async fn start_api(api: A) -> Result<Fake<A>, Error> {
        Fake::start_api_with(api, Options::default()).await
    }

    pub async fn start_api_with(api: A, options: Options) -> Result<Fake<A>, Error> {
        let file = match &options.record {
            Some(path) => Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| Error::RecordFile {
                        path: path.clone(),
                        source,
                    })?,
            ),
            None => None,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], options.port));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        let server = Arc::new(Server::new(record::Recorder::new(A::NAME, file)));
        let task = tokio::spawn(server::serve(listener, server.clone(), Arc::new(api)));
        Ok(Fake {
            addr,
            server,
            task,
            _api: std::marker::PhantomData,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server.recorder.requests()
    }

    /// The calls of the model endpoint so far ([`Api::is_model_call`]).
    pub fn model_calls(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(A::is_model_call)
            .collect()
    }

    /// Waits until at least `n` requests arrived (woken by each arrival, no polling), then returns
    /// them all.
    pub async fn wait_for_requests(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<RecordedRequest>, Error> {
        let mut count = self.server.recorder.subscribe();
        let reached = tokio::time::timeout(timeout, count.wait_for(|&c| c >= n)).await;
        match reached {
            Ok(Ok(_)) => Ok(self.requests()),
            _ => Err(Error::Timeout {
                wanted: n,
                got: self.requests().len(),
                waited: timeout,
            }),
        }
    }

    /// Ends every stream a `STALL` holds open now (without its final event, as a dropped
    /// connection would look to the client).
    pub fn release_stalls(&self) {
        self.server.stall_release.send_modify(|g| *g += 1);
    }
}
