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
//! use blobhub_fake_openai::ResponsesRequest;
//! let fake = blobhub_fake_openai::FakeOpenai::start().await?;
//! // run `codex exec` with a provider whose base_url is fake.base_url() + "/v1" ...
//! let requests = fake.wait_for_requests(1, Duration::from_secs(10)).await?;
//! assert_eq!(requests[0].last_user_text().as_deref(), Some("hello"));
//! # Ok(()) }
//! ```

mod api;
mod record;
pub mod script;
pub mod stream;

pub use api::Openai;
pub use blobhub_fake_http::{Error, Options, RecordedRequest};
pub use record::ResponsesRequest;
pub use script::{Prompt, Reply};

/// A running fake OpenAI API ([`blobhub_fake_http::Fake`]): `FakeOpenai::start()`, `base_url()`
/// (the provider's `base_url` is this plus `/v1`), `model_calls()` for the `POST /v1/responses`
/// requests. Dropping it stops the server, ends every connection and every stalled stream.
pub type FakeOpenai = blobhub_fake_http::Fake<Openai>;
