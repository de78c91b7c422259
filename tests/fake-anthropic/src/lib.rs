//! A fake Anthropic Messages API on 127.0.0.1, scripted by the prompt, so the real Claude Code CLI
//! can be driven in tests and benchmarks with no network and no model.
//!
//! Point the CLI at it with `ANTHROPIC_BASE_URL=<base_url>` and any `ANTHROPIC_API_KEY`. It
//! serves `POST /v1/messages` (any query string; the CLI sends `?beta=true`) as the real API's
//! server-sent-event stream when the body says `"stream": true`, and as one JSON message
//! otherwise. `HEAD` of any path and `GET /` or `/api/hello` answer 200; other paths 404.
//!
//! # Script
//!
//! The reply is chosen by the **prompt**: the last text block, trimmed, of the last message with
//! role `user`. Messages with role `system` are skipped, and so are `<system-reminder>` text
//! blocks beside tool results (the CLI puts reminders before the prompt in its first user message,
//! which is why the *last* block counts).
//!
//! | prompt | reply |
//! |---|---|
//! | anything else | the text `Hello from fake Anthropic (<n> msgs).`, `<n>` = the request's message count |
//! | `THINK <text>` | a thinking block holding `<text>` (with a signature), then the text `Thought about: <text>` |
//! | `TOOL:Bash <command>` | a `Bash` tool call, input `{"command": <command>, "description": …}` |
//! | `TOOL:Write <path> <content>` | a `Write` tool call, input `{"file_path": <path>, "content": <content>}` |
//! | `ASK <question>` | a call of `mcp__blobhub__ask_user`, input `{"question": <question>}` |
//! | `FAIL:<status>` | HTTP `<status>` with `{"type":"error","error":{"type":"overloaded_error","message":"fake failure <status>"}}` (the error type follows the status: 429 `rate_limit_error`, 500 `api_error`, …) |
//! | `FAIL_ONCE:<status> <rest>` | `FAIL:<status>` the first time this exact prompt is seen, then as `<rest>` |
//! | `STALL` | `message_start`, then the stream stays open until the client goes away, [`FakeAnthropic::release_stalls`] or drop |
//! | *(tool results only)* | the text `Tool result seen: <first 200 characters of the result>`, or `Tool error seen: …` when `is_error` is true |
//!
//! A keyword needs its space: `THINKING` is plain text.
//!
//! # Timestamps
//!
//! Each [`RecordedRequest`] has `received_at_us` (arrival) and `response_end_us` (the whole
//! response handed to the connection), in wall-clock microseconds since 1970: the clock of the
//! BlobHub emulator's `created_at`, so the two can be subtracted (the `claude` part of
//! `host/benches/harness.rs` does).
//!
//! # Use
//!
//! ```no_run
//! # async fn demo() -> Result<(), blobhub_fake_anthropic::Error> {
//! use std::time::Duration;
//! let fake = blobhub_fake_anthropic::FakeAnthropic::start().await?;
//! // run `claude -p hello` with ANTHROPIC_BASE_URL=fake.base_url() ...
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
pub struct FakeAnthropic {
    addr: SocketAddr,
    state: Arc<server::State>,
    server: JoinHandle<()>,
}

impl Drop for FakeAnthropic {
    fn drop(&mut self) {
        self.server.abort();
        // Stalled streams hold their own task; release them too, so nothing waits on a client.
        self.release_stalls();
    }
}

impl FakeAnthropic {
    /// Starts on a free port of 127.0.0.1.
    pub async fn start() -> Result<FakeAnthropic, Error> {
        FakeAnthropic::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Result<FakeAnthropic, Error> {
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
        Ok(FakeAnthropic {
            addr,
            state,
            server,
        })
    }

    /// `http://127.0.0.1:PORT`, for `ANTHROPIC_BASE_URL`.
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

    /// The `POST /v1/messages` requests so far.
    pub fn messages_calls(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(RecordedRequest::is_messages_call)
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

    /// Ends every stream a `STALL` holds open now (without `message_stop`, as a dropped
    /// connection would look to the client).
    pub fn release_stalls(&self) {
        self.state.stall_release.send_modify(|g| *g += 1);
    }
}
