//! What a recorded request says in the Responses API's terms.

use blobhub_fake_http::RecordedRequest;
use serde_json::Value;

use crate::script::{self, Prompt};

/// The Responses API's reading of a [`RecordedRequest`].
pub trait ResponsesRequest {
    /// The last text of the last `user` message, trimmed: the prompt the script saw. `None` when
    /// the input ends with a tool's output.
    fn last_user_text(&self) -> Option<String>;
    /// The request's `input` items.
    fn input(&self) -> &[Value];
    /// The prompt as the script saw it, tool outputs included.
    fn prompt(&self) -> Prompt;
    /// Whether this is a Responses API call (`POST /v1/responses`).
    fn is_responses_call(&self) -> bool;
}

impl ResponsesRequest for RecordedRequest {
    fn last_user_text(&self) -> Option<String> {
        match script::prompt_of(&self.body) {
            Prompt::Text(text) => Some(text),
            Prompt::ToolOutput(_) => None,
        }
    }

    fn input(&self) -> &[Value] {
        script::input(&self.body)
    }

    fn prompt(&self) -> Prompt {
        script::prompt_of(&self.body)
    }

    fn is_responses_call(&self) -> bool {
        self.method == "POST" && self.path == "/v1/responses"
    }
}
