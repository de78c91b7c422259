//! A fake OpenAI Responses API on 127.0.0.1, scripted by the prompt, so the real Codex CLI can be
//! driven in tests and benchmarks with no network and no model.
//!
//! Point the CLI at it with a custom model provider (`base_url = "<base_url>/v1"`,
//! `wire_api = "responses"`, any key). It serves `POST /v1/responses` as the real API's
//! server-sent-event stream; other paths answer 404.
//!
//! # Script
//!
//! The reply is chosen by the **prompt**: the request's last input item when it is a tool's
//! output, else the last text part, trimmed, of the last message with role `user` (the CLI puts
//! developer messages and an environment-context message before the person's).
//!
//! | prompt | reply |
//! |---|---|
//! | anything else | the message `Hello from fake OpenAI (<n> input items).` |
//! | `THINK <text>` | a reasoning item whose summary is `<text>`, then the message `Thought about: <text>` |
//! | `TOOL:shell <command>` | an `exec_command` function call, arguments `{"cmd": <command>}` |
//! | `TOOL:shell! <command>` | the same, asking to run outside the sandbox (`sandbox_permissions: "require_escalated"`), so an `on-request` policy makes the CLI ask for approval |
//! | `TOOL:patch <path>` | an `apply_patch` custom tool call adding `<path>` (one line); Codex offers the tool only for model slugs it knows, such as `gpt-5.5` |
//! | `FAIL:<status>` | HTTP `<status>` with an OpenAI error body |
//! | `FAIL_ONCE:<status> <rest>` | `FAIL:<status>` the first time this exact prompt is seen, then as `<rest>` |
//! | `STALL` | `response.created`, then the stream stays open until the client goes away, [`FakeOpenai::release_stalls`] or drop |
//! | *(a tool's output)* | the message `Tool output seen: <first 200 characters of the output>` |
//!
//! Every response reports the same usage ([`stream::INPUT_TOKENS`] in, of which
//! [`stream::CACHED_TOKENS`] cached, [`stream::OUTPUT_TOKENS`] out).
//!
//! # Use
//!
//! ```no_run
//! # async fn demo() -> Result<(), blobhub_fake_openai::Error> {
//! use std::time::Duration;
//! let fake = blobhub_fake_openai::FakeOpenai::start().await?;
//! // run `codex exec` with a provider whose base_url is fake.base_url() + "/v1" ...
//! let requests = fake.wait_for_requests(1, Duration::from_secs(10)).await?;
//! assert_eq!(requests[0].last_user_text().as_deref(), Some("hello"));
//! # Ok(()) }
//! ```

mod record;
pub mod script;
mod server;
pub mod stream;

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use record::RecordedRequest;
pub use script::{Prompt, Reply};

/// Why the fake could not start or a wait failed.
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
pub struct FakeOpenai {
    addr: SocketAddr,
    state: Arc<server::State>,
    server: JoinHandle<()>,
}

impl Drop for FakeOpenai {
    fn drop(&mut self) {
        self.server.abort();
        // Stalled streams hold their own task; release them too, so nothing waits on a client.
        self.release_stalls();
    }
}

impl FakeOpenai {
    /// Starts on a free port of 127.0.0.1.
    pub async fn start() -> Result<FakeOpenai, Error> {
        FakeOpenai::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Result<FakeOpenai, Error> {
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
        let state = Arc::new(server::State::new(record::Recorder::new(file)));
        let server = tokio::spawn(server::serve(listener, state.clone()));
        Ok(FakeOpenai {
            addr,
            state,
            server,
        })
    }

    /// `http://127.0.0.1:PORT` (the provider's `base_url` is this plus `/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.recorder.requests()
    }

    /// The `POST /v1/responses` requests so far.
    pub fn responses_calls(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(RecordedRequest::is_responses_call)
            .collect()
    }

    /// Waits until at least `n` requests arrived (woken by each arrival, no polling), then returns
    /// them all.
    pub async fn wait_for_requests(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<RecordedRequest>, Error> {
        let mut count = self.state.recorder.subscribe();
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

    /// Ends every stream a `STALL` holds open now (without `response.completed`, as a dropped
    /// connection would look to the client).
    pub fn release_stalls(&self) {
        self.state.stall_release.send_modify(|g| *g += 1);
    }
}
