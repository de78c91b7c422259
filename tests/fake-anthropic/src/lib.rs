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
//! use blobhub_fake_anthropic::MessagesRequest;
//! let fake = blobhub_fake_anthropic::FakeAnthropic::start().await?;
//! // run `claude -p hello` with ANTHROPIC_BASE_URL=fake.base_url() ...
//! let requests = fake.wait_for_requests(1, Duration::from_secs(10)).await?;
//! assert_eq!(requests[0].last_user_text().as_deref(), Some("hello"));
//! # Ok(()) }
//! ```

mod api;
mod record;
pub mod script;
pub mod stream;

pub use api::Anthropic;
pub use blobhub_fake_http::{Error, Options, RecordedRequest};
pub use record::MessagesRequest;
pub use script::{Prompt, Reply};

/// A running fake Anthropic API ([`blobhub_fake_http::Fake`]): `FakeAnthropic::start()`,
/// `base_url()` for `ANTHROPIC_BASE_URL`, `model_calls()` for the `POST /v1/messages` requests.
/// Dropping it stops the server, ends every connection and every stalled stream.
pub type FakeAnthropic = blobhub_fake_http::Fake<Anthropic>;
