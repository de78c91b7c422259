//! What a recorded request says in the Messages API's terms.

use blobhub_fake_http::RecordedRequest;

use crate::script::{self, Prompt};

/// The Messages API's reading of a [`RecordedRequest`].
pub trait MessagesRequest {
    /// The text of the last `user` message (its last text block, trimmed): the prompt the script
    /// saw. `None` when that message holds tool results only.
    fn last_user_text(&self) -> Option<String>;
    /// The prompt as the script saw it, tool results included.
    fn prompt(&self) -> Prompt;
    /// Whether this is a Messages API call (`POST /v1/messages`, any query).
    fn is_messages_call(&self) -> bool;
}

impl MessagesRequest for RecordedRequest {
    fn last_user_text(&self) -> Option<String> {
        match script::prompt_of(&self.body) {
            Prompt::Text(text) => Some(text),
            Prompt::ToolResult { .. } => None,
        }
    }

    fn prompt(&self) -> Prompt {
        script::prompt_of(&self.body)
    }

    fn is_messages_call(&self) -> bool {
        self.method == "POST" && self.path == "/v1/messages"
    }
}
